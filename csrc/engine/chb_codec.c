/* Compression streams for zip entries; see chb_codec.h. */
#include "chb_codec.h"

#include <bzlib.h>
#include <limits.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

static const chb_codec_info codecs[] = {
    {"store", CHB_CODEC_STORE, 0, 0, 0},
    {"deflate", CHB_CODEC_DEFLATE, 0, 9, 6},
    {"bzip2", CHB_CODEC_BZIP2, 1, 9, 9},
    {"lzma", CHB_CODEC_LZMA, 0, 9, 6},
    {"xz", CHB_CODEC_XZ, 0, 9, 6},
    {"zstd", CHB_CODEC_ZSTD, 1, 22, 3},
};
#define NCODECS (sizeof codecs / sizeof codecs[0])

const chb_codec_info *chb_codec_list(size_t *n) {
  *n = NCODECS;
  return codecs;
}

const chb_codec_info *chb_codec_find(const char *name) {
  for (size_t i = 0; i < NCODECS; i++)
    if (strcmp(codecs[i].name, name) == 0) return &codecs[i];
  return NULL;
}

const chb_codec_info *chb_codec_by_id(int id) {
  for (size_t i = 0; i < NCODECS; i++)
    if (codecs[i].id == id) return &codecs[i];
  return NULL;
}

int chb_codec_resolve(const char *name, int has_level, int level,
                      const chb_codec_info **info, int *out_level, chb_error *err) {
  const chb_codec_info *c = chb_codec_find(name ? name : "deflate");
  if (!c)
    return chb_error_set(err, CHB_INVALID,
                         "unknown compression_method '%s' (valid: store, deflate, bzip2, "
                         "lzma, xz, zstd)", name);
  /* -1 is ClickHouse's own default for compression_level: the method's default. */
  if (!has_level || level == -1) {
    level = c->default_level;
  } else if (level < c->min_level || level > c->max_level) {
    return chb_error_set(err, CHB_INVALID,
                         "compression_level %d is out of range for %s (valid: %d..%d, "
                         "or -1 for the default %d)", level, c->name, c->min_level,
                         c->max_level, c->default_level);
  }
  *info = c;
  *out_level = level;
  return 0;
}

struct chb_codec {
  int id;
  int encode;
  int ended;
  uint64_t size;              /* decoder: declared uncompressed size */
  z_stream z;
  bz_stream bz;
  lzma_stream lz;
  ZSTD_CCtx *zc;
  ZSTD_DCtx *zd;
  int inited;                 /* the library stream needs its end call */
  /* lzma (zip method 14): the 9-byte header, written or parsed first */
  unsigned char hdr[4 + 255];
  size_t hdr_len, hdr_pos;
  int hdr_done;
};

static chb_codec *codec_alloc(int id, int encode, chb_error *err) {
  chb_codec *c = calloc(1, sizeof *c);
  if (!c) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a codec");
    return NULL;
  }
  c->id = id;
  c->encode = encode;
  c->lz = (lzma_stream)LZMA_STREAM_INIT;
  return c;
}

/*
 * Memory one LZMA or xz decoder may take. Its dictionary size comes from
 * the (untrusted) stream header: without a limit a 500-byte zip entry asks
 * for 4 GiB. xz -9 and 7-Zip's ultra level need 65 MiB.
 */
#define LZMA_DECODER_MEMLIMIT ((uint64_t)128 << 20)

static int lzma_fail(chb_error *err, lzma_ret r, const char *what) {
  const char *name = "LZMA_PROG_ERROR";
  chb_code code = CHB_INVALID;
  switch (r) {
  case LZMA_MEM_ERROR: name = "LZMA_MEM_ERROR"; code = CHB_ENOMEM; break;
  case LZMA_MEMLIMIT_ERROR:
    name = "LZMA_MEMLIMIT_ERROR, the stream needs more than the 128 MiB a decoder may use";
    code = CHB_CORRUPT;
    break;
  case LZMA_FORMAT_ERROR: name = "LZMA_FORMAT_ERROR"; code = CHB_CORRUPT; break;
  case LZMA_OPTIONS_ERROR: name = "LZMA_OPTIONS_ERROR"; code = CHB_CORRUPT; break;
  case LZMA_DATA_ERROR: name = "LZMA_DATA_ERROR"; code = CHB_CORRUPT; break;
  case LZMA_BUF_ERROR: name = "LZMA_BUF_ERROR"; code = CHB_CORRUPT; break;
  case LZMA_UNSUPPORTED_CHECK: name = "LZMA_UNSUPPORTED_CHECK"; code = CHB_CORRUPT; break;
  default: break;
  }
  chb_error_set(err, code, "%s: %s (%d)", what, name, (int)r);
  err->sys = (int)r;
  return -1;
}

/* LZMA1 in zip: lc/lp/pb byte and dictionary size, as .lzma files have them. */
static void lzma_props_encode(const lzma_options_lzma *o, unsigned char p[5]) {
  p[0] = (unsigned char)((o->pb * 5 + o->lp) * 9 + o->lc);
  for (int i = 0; i < 4; i++) p[1 + i] = (unsigned char)(o->dict_size >> (8 * i));
}

static int lzma_props_decode(const unsigned char p[5], lzma_options_lzma *o) {
  unsigned d = p[0];
  if (d >= 9 * 5 * 5) return -1;
  memset(o, 0, sizeof *o);
  o->lc = d % 9;
  d /= 9;
  o->lp = d % 5;
  o->pb = d / 5;
  o->dict_size = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
  if (o->dict_size < LZMA_DICT_SIZE_MIN) o->dict_size = LZMA_DICT_SIZE_MIN;
  if (o->lc + o->lp > LZMA_LCLP_MAX) return -1;
  return 0;
}

/* The smallest dictionary (a power of two, >= 4 KiB) holding size bytes, if smaller. */
static void fit_dict(lzma_options_lzma *o, uint64_t size_hint) {
  uint32_t d = LZMA_DICT_SIZE_MIN;
  while (d < size_hint && d < o->dict_size) d <<= 1;
  if (d < o->dict_size) o->dict_size = d;
}

chb_codec *chb_codec_encoder(int id, int level, uint64_t size_hint, int size_exact,
                             chb_error *err) {
  chb_codec *c = codec_alloc(id, 1, err);
  if (!c) return NULL;
  switch (id) {
  case CHB_CODEC_STORE:
    break;
  case CHB_CODEC_DEFLATE: {
    int r = deflateInit2(&c->z, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    if (r != Z_OK) {
      chb_error_set(err, r == Z_MEM_ERROR ? CHB_ENOMEM : CHB_INVALID,
                    "deflate: cannot start the compressor (%d)", r);
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_BZIP2: {
    /* Blocks of 100 kB * level: a small file needs no bigger block (same output). */
    if (size_hint != UINT64_MAX && size_hint / 100000 + 1 < (uint64_t)level)
      level = (int)(size_hint / 100000 + 1);
    int r = BZ2_bzCompressInit(&c->bz, level, 0, 0);
    if (r != BZ_OK) {
      chb_error_set(err, r == BZ_MEM_ERROR ? CHB_ENOMEM : CHB_INVALID,
                    "bzip2: cannot start the compressor (%d)", r);
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_LZMA: {
    lzma_options_lzma o;
    if (lzma_lzma_preset(&o, (uint32_t)level)) {
      chb_error_set(err, CHB_INVALID, "lzma: no preset %d", level);
      goto fail;
    }
    if (size_hint != UINT64_MAX) fit_dict(&o, size_hint);
    /* With the end marker (general purpose bit 1 in the entry), as 7-Zip and
     * minizip-ng (ClickHouse) write it: every reader stops on it. */
    o.ext_flags = LZMA_LZMA1EXT_ALLOW_EOPM;
    o.ext_size_low = UINT32_MAX;
    o.ext_size_high = UINT32_MAX;
    lzma_filter f[2] = {{LZMA_FILTER_LZMA1EXT, &o}, {LZMA_VLI_UNKNOWN, NULL}};
    lzma_ret r = lzma_raw_encoder(&c->lz, f);
    if (r != LZMA_OK) {
      lzma_fail(err, r, "lzma: cannot start the compressor");
      goto fail;
    }
    c->inited = 1;
    /* Zip's LZMA header: LZMA SDK version, properties size, properties. */
    c->hdr[0] = LZMA_VERSION_MAJOR;
    c->hdr[1] = LZMA_VERSION_MINOR;
    c->hdr[2] = 5;
    c->hdr[3] = 0;
    lzma_props_encode(&o, c->hdr + 4);
    c->hdr_len = 9;
    break;
  }
  case CHB_CODEC_XZ: {
    lzma_options_lzma o;
    if (lzma_lzma_preset(&o, (uint32_t)level)) {
      chb_error_set(err, CHB_INVALID, "xz: no preset %d", level);
      goto fail;
    }
    if (size_hint != UINT64_MAX) fit_dict(&o, size_hint);
    lzma_filter f[2] = {{LZMA_FILTER_LZMA2, &o}, {LZMA_VLI_UNKNOWN, NULL}};
    lzma_ret r = lzma_stream_encoder(&c->lz, f, LZMA_CHECK_CRC64);
    if (r != LZMA_OK) {
      lzma_fail(err, r, "xz: cannot start the compressor");
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_ZSTD: {
    c->zc = ZSTD_createCCtx();
    if (!c->zc) {
      chb_error_set(err, CHB_ENOMEM, "zstd: cannot allocate a compressor");
      goto fail;
    }
    size_t r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(r)) r = ZSTD_CCtx_setParameter(c->zc, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(r) && size_exact && size_hint != UINT64_MAX)
      r = ZSTD_CCtx_setPledgedSrcSize(c->zc, size_hint);
    if (ZSTD_isError(r)) {
      chb_error_set(err, CHB_INVALID, "zstd: %s", ZSTD_getErrorName(r));
      goto fail;
    }
    break;
  }
  default:
    chb_error_set(err, CHB_INVALID, "unsupported compression method %d", id);
    goto fail;
  }
  return c;
fail:
  chb_codec_free(c);
  return NULL;
}

int chb_codec_reset(chb_codec *c, uint64_t size_hint, int size_exact, chb_error *err) {
  if (!c->encode) return 1;
  if (c->id == CHB_CODEC_DEFLATE) {
    int r = deflateReset(&c->z);
    if (r != Z_OK) return chb_error_set(err, CHB_INVALID, "deflate: cannot reset the compressor (%d)", r);
  } else if (c->id == CHB_CODEC_ZSTD) {
    size_t r = ZSTD_CCtx_reset(c->zc, ZSTD_reset_session_only);
    if (!ZSTD_isError(r) && size_exact && size_hint != UINT64_MAX)
      r = ZSTD_CCtx_setPledgedSrcSize(c->zc, size_hint);
    if (ZSTD_isError(r)) return chb_error_set(err, CHB_INVALID, "zstd: %s", ZSTD_getErrorName(r));
  } else if (c->id != CHB_CODEC_STORE) {
    return 1;
  }
  c->ended = 0;
  return 0;
}

chb_codec *chb_codec_decoder(int id, uint64_t size, chb_error *err) {
  chb_codec *c = codec_alloc(id, 0, err);
  if (!c) return NULL;
  c->size = size;
  switch (id) {
  case CHB_CODEC_STORE:
    break;
  case CHB_CODEC_DEFLATE: {
    int r = inflateInit2(&c->z, -15);
    if (r != Z_OK) {
      chb_error_set(err, r == Z_MEM_ERROR ? CHB_ENOMEM : CHB_INVALID,
                    "deflate: cannot start the decompressor (%d)", r);
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_BZIP2: {
    int r = BZ2_bzDecompressInit(&c->bz, 0, 0);
    if (r != BZ_OK) {
      chb_error_set(err, r == BZ_MEM_ERROR ? CHB_ENOMEM : CHB_INVALID,
                    "bzip2: cannot start the decompressor (%d)", r);
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_LZMA:
    c->hdr_len = 4;           /* then the property bytes it announces */
    break;
  case CHB_CODEC_XZ: {
    lzma_ret r = lzma_stream_decoder(&c->lz, LZMA_DECODER_MEMLIMIT, 0);
    if (r != LZMA_OK) {
      lzma_fail(err, r, "xz: cannot start the decompressor");
      goto fail;
    }
    c->inited = 1;
    break;
  }
  case CHB_CODEC_ZSTD:
    c->zd = ZSTD_createDCtx();
    if (!c->zd) {
      chb_error_set(err, CHB_ENOMEM, "zstd: cannot allocate a decompressor");
      goto fail;
    }
    break;
  default:
    chb_error_set(err, CHB_INVALID, "unsupported compression method %d", id);
    goto fail;
  }
  return c;
fail:
  chb_codec_free(c);
  return NULL;
}

/* Starts the LZMA1 decoder once the zip LZMA header has been read. */
static int lzma_start_decoder(chb_codec *c, chb_error *err) {
  lzma_options_lzma o;
  if (c->hdr_len != 9 || lzma_props_decode(c->hdr + 4, &o) != 0)
    return chb_error_set(err, CHB_CORRUPT, "lzma: bad stream header");
  o.ext_flags = LZMA_LZMA1EXT_ALLOW_EOPM;
  lzma_set_ext_size(o, c->size);
  lzma_filter f[2] = {{LZMA_FILTER_LZMA1EXT, &o}, {LZMA_VLI_UNKNOWN, NULL}};
  uint64_t need = lzma_raw_decoder_memusage(f);
  if (need == UINT64_MAX || need > LZMA_DECODER_MEMLIMIT)
    return chb_error_set(err, CHB_CORRUPT,
                         "lzma: a dictionary of %u bytes needs more than the %u MiB a decoder may use",
                         (unsigned)o.dict_size, (unsigned)(LZMA_DECODER_MEMLIMIT >> 20));
  lzma_ret r = lzma_raw_decoder(&c->lz, f);
  if (r != LZMA_OK) return lzma_fail(err, r, "lzma: cannot start the decompressor");
  c->inited = 1;
  c->hdr_done = 1;
  return 0;
}

static int run_lzma(chb_codec *c, const unsigned char **in, size_t *in_len,
                    unsigned char **out, size_t *out_len, int finish, chb_error *err) {
  const char *what = c->id == CHB_CODEC_XZ ? "xz" : "lzma";
  if (c->id == CHB_CODEC_LZMA && !c->hdr_done) {
    if (c->encode) {
      size_t n = c->hdr_len - c->hdr_pos;
      if (n > *out_len) n = *out_len;
      memcpy(*out, c->hdr + c->hdr_pos, n);
      *out += n;
      *out_len -= n;
      c->hdr_pos += n;
      if (c->hdr_pos < c->hdr_len) return 0;
      c->hdr_done = 1;
    } else {
      while (c->hdr_pos < c->hdr_len && *in_len > 0) {
        c->hdr[c->hdr_pos++] = **in;
        (*in)++;
        (*in_len)--;
        if (c->hdr_pos == 4) {
          if (c->hdr[3] != 0 || c->hdr[2] != 5)
            return chb_error_set(err, CHB_CORRUPT, "lzma: unsupported property size %u",
                                 (unsigned)c->hdr[2] | (unsigned)c->hdr[3] << 8);
          c->hdr_len = 9;
        }
      }
      if (c->hdr_pos < c->hdr_len) {
        if (finish) return chb_error_set(err, CHB_CORRUPT, "lzma: truncated stream header");
        return 0;
      }
      if (lzma_start_decoder(c, err) != 0) return -1;
    }
  }
  c->lz.next_in = *in;
  c->lz.avail_in = *in_len;
  c->lz.next_out = *out;
  c->lz.avail_out = *out_len;
  lzma_ret r = lzma_code(&c->lz, finish && c->encode ? LZMA_FINISH : LZMA_RUN);
  size_t used = *in_len - c->lz.avail_in, made = *out_len - c->lz.avail_out;
  *in += used;
  *in_len -= used;
  *out += made;
  *out_len -= made;
  if (r == LZMA_STREAM_END) return 1;
  if (r == LZMA_OK) return 0;
  if (r == LZMA_BUF_ERROR && !(finish && !c->encode && *in_len == 0)) return 0;
  if (r == LZMA_BUF_ERROR) return chb_error_set(err, CHB_CORRUPT, "%s: truncated stream", what);
  return lzma_fail(err, r, c->encode ? "cannot compress" : "cannot decompress");
}

/* zlib and bzip2 take unsigned int lengths: feed at most 1 GiB a call. */
#define CHUNK_MAX (1u << 30)

static int run_deflate(chb_codec *c, const unsigned char **in, size_t *in_len,
                       unsigned char **out, size_t *out_len, int finish, chb_error *err) {
  unsigned in_n = *in_len > CHUNK_MAX ? CHUNK_MAX : (unsigned)*in_len;
  unsigned out_n = *out_len > CHUNK_MAX ? CHUNK_MAX : (unsigned)*out_len;
  c->z.next_in = (unsigned char *)*in;
  c->z.avail_in = in_n;
  c->z.next_out = *out;
  c->z.avail_out = out_n;
  int last = finish && in_n == *in_len;
  int r = c->encode ? deflate(&c->z, last ? Z_FINISH : Z_NO_FLUSH) : inflate(&c->z, Z_NO_FLUSH);
  size_t used = in_n - c->z.avail_in, made = out_n - c->z.avail_out;
  *in += used;
  *in_len -= used;
  *out += made;
  *out_len -= made;
  if (r == Z_STREAM_END) return 1;
  if (r == Z_OK) return 0;
  if (r == Z_BUF_ERROR) {
    if (!c->encode && finish && *in_len == 0 && used == 0 && made == 0 && out_n > 0)
      return chb_error_set(err, CHB_CORRUPT, "deflate: truncated stream");
    return 0;
  }
  if (r == Z_MEM_ERROR) return chb_error_set(err, CHB_ENOMEM, "deflate: out of memory");
  chb_error_set(err, CHB_CORRUPT, "deflate: %s (Z_DATA_ERROR)",
                c->z.msg ? c->z.msg : "invalid data");
  err->sys = r;
  return -1;
}

static int run_bzip2(chb_codec *c, const unsigned char **in, size_t *in_len,
                     unsigned char **out, size_t *out_len, int finish, chb_error *err) {
  unsigned in_n = *in_len > CHUNK_MAX ? CHUNK_MAX : (unsigned)*in_len;
  unsigned out_n = *out_len > CHUNK_MAX ? CHUNK_MAX : (unsigned)*out_len;
  c->bz.next_in = (char *)*in;
  c->bz.avail_in = in_n;
  c->bz.next_out = (char *)*out;
  c->bz.avail_out = out_n;
  int last = finish && in_n == *in_len;
  int r = c->encode ? BZ2_bzCompress(&c->bz, last ? BZ_FINISH : BZ_RUN)
                    : BZ2_bzDecompress(&c->bz);
  size_t used = in_n - c->bz.avail_in, made = out_n - c->bz.avail_out;
  *in += used;
  *in_len -= used;
  *out += made;
  *out_len -= made;
  if (r == BZ_STREAM_END) return 1;
  if (r == BZ_OK || r == BZ_RUN_OK || r == BZ_FINISH_OK || r == BZ_FLUSH_OK) {
    if (!c->encode && finish && *in_len == 0 && used == 0 && made == 0 && out_n > 0)
      return chb_error_set(err, CHB_CORRUPT, "bzip2: truncated stream");
    return 0;
  }
  if (r == BZ_MEM_ERROR) return chb_error_set(err, CHB_ENOMEM, "bzip2: out of memory");
  chb_error_set(err, r == BZ_DATA_ERROR || r == BZ_DATA_ERROR_MAGIC ? CHB_CORRUPT : CHB_INVALID,
                "bzip2: %s (%d)", r == BZ_DATA_ERROR_MAGIC ? "not a bzip2 stream"
                                  : r == BZ_DATA_ERROR ? "data is corrupt" : "stream error", r);
  err->sys = r;
  return -1;
}

static int run_zstd(chb_codec *c, const unsigned char **in, size_t *in_len,
                    unsigned char **out, size_t *out_len, int finish, chb_error *err) {
  ZSTD_inBuffer ib = {*in, *in_len, 0};
  ZSTD_outBuffer ob = {*out, *out_len, 0};
  size_t r = c->encode ? ZSTD_compressStream2(c->zc, &ob, &ib, finish ? ZSTD_e_end : ZSTD_e_continue)
                       : ZSTD_decompressStream(c->zd, &ob, &ib);
  *in += ib.pos;
  *in_len -= ib.pos;
  *out += ob.pos;
  *out_len -= ob.pos;
  if (ZSTD_isError(r)) {
    chb_error_set(err, c->encode ? CHB_INVALID : CHB_CORRUPT, "zstd: %s", ZSTD_getErrorName(r));
    return -1;
  }
  if (c->encode) return finish && r == 0 ? 1 : 0;
  if (r == 0) return 1;       /* a whole frame decoded (and its checksum checked) */
  if (finish && *in_len == 0 && ib.pos == 0 && ob.pos == 0 && ob.size > 0)
    return chb_error_set(err, CHB_CORRUPT, "zstd: truncated stream");
  return 0;
}

int chb_codec_run(chb_codec *c, const unsigned char **in, size_t *in_len,
                  unsigned char **out, size_t *out_len, int finish, chb_error *err) {
  if (c->ended) return 1;
  int r;
  switch (c->id) {
  case CHB_CODEC_STORE: {
    size_t n = *in_len < *out_len ? *in_len : *out_len;
    memcpy(*out, *in, n);
    *in += n;
    *in_len -= n;
    *out += n;
    *out_len -= n;
    r = finish && *in_len == 0 ? 1 : 0;
    break;
  }
  case CHB_CODEC_DEFLATE: r = run_deflate(c, in, in_len, out, out_len, finish, err); break;
  case CHB_CODEC_BZIP2: r = run_bzip2(c, in, in_len, out, out_len, finish, err); break;
  case CHB_CODEC_LZMA:
  case CHB_CODEC_XZ: r = run_lzma(c, in, in_len, out, out_len, finish, err); break;
  case CHB_CODEC_ZSTD: r = run_zstd(c, in, in_len, out, out_len, finish, err); break;
  default: return chb_error_set(err, CHB_INVALID, "unsupported compression method %d", c->id);
  }
  if (r == 1) c->ended = 1;
  return r;
}

void chb_codec_free(chb_codec *c) {
  if (!c) return;
  if (c->inited) {
    switch (c->id) {
    case CHB_CODEC_DEFLATE:
      if (c->encode) deflateEnd(&c->z);
      else inflateEnd(&c->z);
      break;
    case CHB_CODEC_BZIP2:
      if (c->encode) BZ2_bzCompressEnd(&c->bz);
      else BZ2_bzDecompressEnd(&c->bz);
      break;
    default:
      break;
    }
  }
  lzma_end(&c->lz);
  ZSTD_freeCCtx(c->zc);
  ZSTD_freeDCtx(c->zd);
  free(c);
}
