/*
 * Reader of a MergeTree part's checksums.txt, following ClickHouse's
 * MergeTreeDataPartChecksums::read (src/Storages/MergeTree/
 * MergeTreeDataPartChecksum.cpp):
 *
 *   "checksums format version: N\n"
 *   N = 2: text:  "<count> files:\n" then per file
 *                 "<name>\n\tsize: <n>\n\thash: <lo> <hi>\n\tcompressed: <0|1>"
 *                 ["\n\tuncompressed size: <n>\n\tuncompressed hash: <lo> <hi>"] "\n"
 *   N = 3: the binary body below, uncompressed.
 *   N = 4: the binary body inside ClickHouse compressed blocks
 *          (16-byte CityHash128 of the block, method byte, u32 LE compressed
 *          size incl. the 9-byte header, u32 LE uncompressed size, payload).
 *   binary body: varuint count; per file: varuint name length, name,
 *          varuint file_size, 16-byte file_hash (low64 LE, high64 LE),
 *          1 byte is_compressed; if set: varuint uncompressed_size,
 *          16-byte uncompressed_hash.
 *
 * The file is small; it is read whole (refused above CHB_CHECKSUMS_MAX_FILE).
 */
#include "chb_checksums.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define CHB_CHECKSUMS_MAX_FILE (64u << 20)        /* checksums.txt itself */
#define CHB_CHECKSUMS_MAX_BODY ((size_t)256 << 20) /* decompressed body */

#define METHOD_NONE 0x02
#define METHOD_LZ4 0x82
#define METHOD_ZSTD 0x90

static const char header_prefix[] = "checksums format version: ";

/* ---- file input ---- */

static int read_whole(const char *path, unsigned char **out, size_t *out_len, chb_error *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return chb_error_errno(err, errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return chb_error_errno(err, e, "stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return chb_error_set(err, CHB_INVALID, "checksums file %s: not a regular file", path);
  }
  if ((unsigned long long)st.st_size > CHB_CHECKSUMS_MAX_FILE) {
    close(fd);
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: %lld bytes, more than the %u allowed",
                         path, (long long)st.st_size, CHB_CHECKSUMS_MAX_FILE);
  }
  /* One byte of slack so that a file growing under us is noticed. */
  size_t cap = (size_t)st.st_size + 1;
  unsigned char *buf = malloc(cap);
  if (!buf) {
    close(fd);
    return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
  }
  size_t len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      free(buf);
      close(fd);
      return chb_error_errno(err, e, "read", path);
    }
    if (n == 0)
      break;
    len += (size_t)n;
    if (len == cap) {
      free(buf);
      close(fd);
      return chb_error_set(err, CHB_CORRUPT, "checksums file %s: changed size while being read", path);
    }
  }
  close(fd);
  *out = buf;
  *out_len = len;
  return 0;
}

/* ---- little helpers ---- */

static uint32_t get_u32le(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64le(const unsigned char *p) {
  return (uint64_t)get_u32le(p) | (uint64_t)get_u32le(p + 4) << 32;
}

typedef struct cursor {
  const unsigned char *p, *end;
} cursor;

/* ClickHouse's readVarUInt: 7 bits a byte, low first, at most 10 bytes. */
static int get_varuint(cursor *c, uint64_t *out) {
  uint64_t x = 0;
  for (int i = 0; i < 10; i++) {
    if (c->p >= c->end)
      return -1;
    unsigned char b = *c->p++;
    uint64_t bits = b & 0x7f;
    if (i == 9 && bits > 1)
      return -1;   /* would overflow 64 bits */
    x |= bits << (7 * i);
    if (!(b & 0x80)) {
      *out = x;
      return 0;
    }
  }
  return -1;
}

static int get_u128(cursor *c, chb_u128 *out) {
  if (c->end - c->p < 16)
    return -1;
  out->lo = get_u64le(c->p);
  out->hi = get_u64le(c->p + 8);
  c->p += 16;
  return 0;
}

static void free_files(chb_part_file *files, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(files[i].name);
  free(files);
}

static int cmp_name_ptr(const void *a, const void *b) {
  const chb_part_file *const *x = a, *const *y = b;
  return strcmp((*x)->name, (*y)->name);
}

/* Names must be unique (ClickHouse keeps them in a std::map). */
static int check_unique(const char *path, chb_part_file *files, size_t n, chb_error *err) {
  if (n < 2)
    return 0;
  const chb_part_file **v = malloc(n * sizeof *v);
  if (!v)
    return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
  for (size_t i = 0; i < n; i++)
    v[i] = &files[i];
  qsort(v, n, sizeof *v, cmp_name_ptr);
  for (size_t i = 1; i < n; i++) {
    if (strcmp(v[i - 1]->name, v[i]->name) == 0) {
      chb_error_set(err, CHB_CORRUPT, "checksums file %s: file %s listed twice", path, v[i]->name);
      free(v);
      return -1;
    }
  }
  free(v);
  return 0;
}

/* A name as a C string: non-empty, no NUL inside. */
static char *dup_name(const unsigned char *p, size_t len) {
  if (len == 0 || memchr(p, '\0', len))
    return NULL;
  char *s = malloc(len + 1);
  if (s) {
    memcpy(s, p, len);
    s[len] = '\0';
  }
  return s;
}

/* ---- version 3 body (binary), also the content of version 4 ---- */

static int parse_binary(const char *path, const unsigned char *body, size_t len,
                        chb_checksums *out, chb_error *err) {
  cursor c = {body, body + len};
  uint64_t count;
  if (get_varuint(&c, &count) != 0)
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: truncated file count", path);
  /* Every entry takes at least 19 bytes: this bounds the allocation. */
  if (count > (uint64_t)(c.end - c.p) / 19)
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: %llu files do not fit in %zu bytes",
                         path, (unsigned long long)count, (size_t)(c.end - c.p));
  chb_part_file *files = count ? calloc((size_t)count, sizeof *files) : NULL;
  if (count && !files)
    return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
  /* files is zeroed: on error free_files(files, count) frees what was set. */
  size_t n = 0;
  const char *what = NULL;
  for (; n < count; n++) {
    chb_part_file *f = &files[n];
    uint64_t name_len;
    if (get_varuint(&c, &name_len) != 0 || name_len > (uint64_t)(c.end - c.p)) {
      what = "truncated name";
      break;
    }
    if (name_len == 0 || memchr(c.p, '\0', (size_t)name_len)) {
      what = "empty name or NUL in name";
      break;
    }
    f->name = dup_name(c.p, (size_t)name_len);
    if (!f->name) {
      free_files(files, (size_t)count);
      return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
    }
    c.p += name_len;
    if (get_varuint(&c, &f->file_size) != 0 || get_u128(&c, &f->file_hash) != 0 || c.p >= c.end) {
      what = "truncated entry";
      break;
    }
    unsigned char flag = *c.p++;
    if (flag > 1) {
      what = "is_compressed is neither 0 nor 1";
      break;
    }
    f->is_compressed = flag;
    if (flag && (get_varuint(&c, &f->uncompressed_size) != 0 ||
                 get_u128(&c, &f->uncompressed_hash) != 0)) {
      what = "truncated uncompressed checksum";
      break;
    }
  }
  if (what) {
    free_files(files, (size_t)count);
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: %s (entry %zu of %llu)", path, what, n,
                         (unsigned long long)count);
  }
  if (c.p != c.end) {
    free_files(files, (size_t)count);
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: trailing bytes after the last of %llu entries",
                         path, (unsigned long long)count);
  }
  if (check_unique(path, files, n, err) != 0) {
    free_files(files, n);
    return -1;
  }
  out->count = n;
  out->files = files;
  return 0;
}

/* ---- version 4: ClickHouse compressed blocks ---- */

static int decompress_blocks(const char *path, const unsigned char *p, size_t len,
                             unsigned char **out, size_t *out_len, chb_error *err) {
  size_t total = 0, cap = 0;
  unsigned char *body = NULL;
  size_t off = 0;
  unsigned block = 0;
  for (; off < len; block++) {
    if (len - off < 16 + 9) {
      free(body);
      return chb_error_set(err, CHB_CORRUPT, "checksums file %s: block %u at offset %zu: truncated header",
                           path, block, off);
    }
    const unsigned char *h = p + off + 16;
    unsigned method = h[0];
    uint32_t csize = get_u32le(h + 1);
    uint32_t usize = get_u32le(h + 5);
    if (csize < 9 || csize > len - off - 16) {
      free(body);
      return chb_error_set(err, CHB_CORRUPT,
                           "checksums file %s: block %u at offset %zu: compressed size %u out of range",
                           path, block, off, (unsigned)csize);
    }
    chb_u128 stored = {get_u64le(p + off), get_u64le(p + off + 8)};
    chb_u128 actual = chb_cityhash128(h, csize);
    if (stored.lo != actual.lo || stored.hi != actual.hi) {
      char s1[33], s2[33];
      chb_u128_to_hex(stored, s1);
      chb_u128_to_hex(actual, s2);
      free(body);
      return chb_error_set(err, CHB_CORRUPT,
                           "checksums file %s: block %u at offset %zu: checksum mismatch (stored %s, computed %s)",
                           path, block, off, s1, s2);
    }
    if (usize > CHB_CHECKSUMS_MAX_BODY - total) {
      free(body);
      return chb_error_set(err, CHB_CORRUPT, "checksums file %s: block %u: uncompressed size %u too large",
                           path, block, (unsigned)usize);
    }
    if (total + usize > cap) {
      size_t ncap = cap ? cap : 4096;
      while (ncap < total + usize)
        ncap *= 2;
      unsigned char *nb = realloc(body, ncap);
      if (!nb) {
        free(body);
        return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
      }
      body = nb;
      cap = ncap;
    }
    const unsigned char *payload = h + 9;
    size_t plen = csize - 9;
    const char *bad = NULL;
    switch (method) {
    case METHOD_NONE:
      if (plen != usize)
        bad = "uncompressed block sizes disagree";
      else if (usize)
        memcpy(body + total, payload, usize);
      break;
    case METHOD_LZ4:
      if (plen > (size_t)LZ4_MAX_INPUT_SIZE || usize > (uint32_t)LZ4_MAX_INPUT_SIZE) {
        bad = "LZ4 block too large";
        break;
      }
      if (usize == 0) {
        /* ClickHouse would not write this; LZ4 of nothing is a single 0 token. */
        if (plen != 1 || payload[0] != 0)
          bad = "LZ4 data for an empty block";
        break;
      }
      if (LZ4_decompress_safe((const char *)payload, (char *)body + total, (int)plen, (int)usize) !=
          (int)usize)
        bad = "LZ4 data does not decompress to the stated size";
      break;
    case METHOD_ZSTD: {
      size_t r = ZSTD_decompress(body + total, usize, payload, plen);
      if (ZSTD_isError(r) || r != usize)
        bad = "ZSTD data does not decompress to the stated size";
      break;
    }
    default:
      free(body);
      return chb_error_set(err, CHB_CORRUPT,
                           "checksums file %s: block %u: unsupported compression method 0x%02x "
                           "(only LZ4 0x82, ZSTD 0x90 and none 0x02 are read)",
                           path, block, method);
    }
    if (bad) {
      free(body);
      return chb_error_set(err, CHB_CORRUPT, "checksums file %s: block %u at offset %zu: %s",
                           path, block, off, bad);
    }
    total += usize;
    off += 16 + (size_t)csize;
  }
  *out = body;
  *out_len = total;
  return 0;
}

/* ---- version 2: text ---- */

static int expect(cursor *c, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
    return -1;
  c->p += n;
  return 0;
}

/* ClickHouse's readText for unsigned integers: decimal digits. */
static int get_dec(cursor *c, uint64_t *out) {
  uint64_t x = 0;
  const unsigned char *start = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    unsigned d = (unsigned)(*c->p - '0');
    if (x > (UINT64_MAX - d) / 10)
      return -1;
    x = x * 10 + d;
    c->p++;
  }
  if (c->p == start)
    return -1;
  *out = x;
  return 0;
}

static int get_dec_u128(cursor *c, chb_u128 *out) {
  if (get_dec(c, &out->lo) != 0 || expect(c, " ") != 0 || get_dec(c, &out->hi) != 0)
    return -1;
  return 0;
}

static int parse_text(const char *path, const unsigned char *body, size_t len,
                      chb_checksums *out, chb_error *err) {
  cursor c = {body, body + len};
  uint64_t count;
  if (get_dec(&c, &count) != 0 || expect(&c, " files:\n") != 0)
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: bad version 2 file count line", path);
  /* Every entry takes at least 37 bytes of text ("x\n\tsize: 0\n\thash: 0 0\n\tcompressed: 0\n"). */
  if (count > (uint64_t)(c.end - c.p) / 37)
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: %llu files do not fit in %zu bytes",
                         path, (unsigned long long)count, (size_t)(c.end - c.p));
  chb_part_file *files = count ? calloc((size_t)count, sizeof *files) : NULL;
  if (count && !files)
    return chb_error_set(err, CHB_ENOMEM, "checksums file %s: out of memory", path);
  size_t n = 0;
  int ok = 1;
  for (; n < count && ok; n++) {
    chb_part_file *f = &files[n];
    const unsigned char *name = c.p;
    while (c.p < c.end && *c.p != '\n' && *c.p != '\t')
      c.p++;
    f->name = dup_name(name, (size_t)(c.p - name));
    uint64_t flag = 0;
    ok = f->name && expect(&c, "\n\tsize: ") == 0 && get_dec(&c, &f->file_size) == 0 &&
         expect(&c, "\n\thash: ") == 0 && get_dec_u128(&c, &f->file_hash) == 0 &&
         expect(&c, "\n\tcompressed: ") == 0 && get_dec(&c, &flag) == 0 && flag <= 1;
    f->is_compressed = (int)flag;
    if (ok && flag)
      ok = expect(&c, "\n\tuncompressed size: ") == 0 && get_dec(&c, &f->uncompressed_size) == 0 &&
           expect(&c, "\n\tuncompressed hash: ") == 0 && get_dec_u128(&c, &f->uncompressed_hash) == 0;
    if (ok)
      ok = expect(&c, "\n") == 0;
  }
  if (ok && c.p != c.end)
    ok = 0;
  if (!ok) {
    free_files(files, (size_t)count);
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: malformed version 2 text near entry %zu",
                         path, n ? n - 1 : 0);
  }
  if (check_unique(path, files, n, err) != 0) {
    free_files(files, n);
    return -1;
  }
  out->count = n;
  out->files = files;
  return 0;
}

/* ---- entry point ---- */

int chb_checksums_parse(const char *path, const unsigned char *data, size_t len, chb_checksums *out,
                        chb_error *err) {
  out->count = 0;
  out->files = NULL;
  cursor c = {data, data + len};
  uint64_t version;
  if (expect(&c, header_prefix) != 0 || get_dec(&c, &version) != 0 || expect(&c, "\n") != 0)
    return chb_error_set(err, CHB_CORRUPT, "checksums file %s: missing \"%sN\" header line", path,
                         header_prefix);
  int rc;
  switch (version) {
  case 2:
    rc = parse_text(path, c.p, (size_t)(c.end - c.p), out, err);
    break;
  case 3:
    rc = parse_binary(path, c.p, (size_t)(c.end - c.p), out, err);
    break;
  case 4: {
    unsigned char *body = NULL;
    size_t body_len = 0;
    rc = decompress_blocks(path, c.p, (size_t)(c.end - c.p), &body, &body_len, err);
    if (rc == 0)
      rc = parse_binary(path, body ? body : c.p, body_len, out, err);
    free(body);
    break;
  }
  default:
    rc = chb_error_set(err, CHB_CORRUPT,
                       "checksums file %s: unsupported checksums format version %llu (2, 3 and 4 are read)",
                       path, (unsigned long long)version);
  }
  return rc;
}

int chb_checksums_read(const char *path, chb_checksums *out, chb_error *err) {
  out->count = 0;
  out->files = NULL;
  unsigned char *data = NULL;
  size_t len = 0;
  if (read_whole(path, &data, &len, err) != 0)
    return -1;
  int rc = chb_checksums_parse(path, data, len, out, err);
  free(data);
  return rc;
}

void chb_checksums_free(chb_checksums *c) {
  if (!c)
    return;
  free_files(c->files, c->count);
  c->files = NULL;
  c->count = 0;
}
