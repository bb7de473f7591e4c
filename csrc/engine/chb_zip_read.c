/* Zip archives, the reading half: entries listed and streamed, and one
 * process-wide cache of open readers shared by every thread; see
 * chb_zip_read.h. */
#include "chb_zip_read.h"
#include "chb_aes.h"
#include "chb_codec.h"
#include "chb_fs.h"
#include "chb_zip_cd.h"
#include "chb_zip_common.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <libdeflate.h>

#define RAW_BUF (256 * 1024)            /* compressed bytes per read */

/* ---- reader ------------------------------------------------------------ */

static void cache_release(chb_zip_reader *r);
static void cache_ref(chb_zip_reader *r);

struct chb_zip_reader {
  int fd;                     /* read with pread: any number of threads at once */
  chb_zip_cd cd;              /* the central directory, in pages (issue 14) */
  char *path;
  char *password;             /* NULL: none */
  size_t count;
  chb_zip_file *open_file;    /* a private reader's one open entry */
  char *stat_name;            /* chb_zip_reader_stat's name (one thread) */
  int shared;                 /* in the cache: entries open on many threads */
  long refs;                  /* shared: the cache's and each open entry's (cache_lock) */
};

struct chb_zip_file {
  chb_zip_reader *r;
  char *name;
  uint64_t data_at;           /* the next raw byte's offset in the archive */
  uint64_t size, comp_size, produced, raw_left, raw_total_left;
  int method, strength, check_crc;
  uint32_t crc_expect, crc;
  chb_codec *codec;           /* NULL: stored */
  chb_aes *aes;               /* NULL: not encrypted */
  unsigned char *in;
  size_t in_pos, in_len;
  int raw_done, codec_done, ended, broken;
  int holds_ref;              /* opened through the cache: closing gives its reader back */
  chb_error broken_err;
};

chb_zip_reader *chb_zip_reader_open(const char *path, const char *password, chb_error *err) {
  chb_zip_reader *r = calloc(1, sizeof *r);
  int oom = r == NULL;
  if (r) {
    r->fd = -1;
    r->path = chb_zip_dup(path, &oom);
    if (password && *password) r->password = chb_zip_dup(password, &oom);
  }
  if (oom) {
    chb_zip_reader_close(r);
    chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: out of memory", path);
    return NULL;
  }
  r->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (r->fd < 0) {
    chb_error_errno(err, errno, "cannot open zip archive", path);
    chb_zip_reader_close(r);
    return NULL;
  }
  if (chb_zip_cd_read(r->fd, path, CHB_CATALOG_BUDGET, &r->cd, err) != 0) {
    chb_zip_reader_close(r);
    return NULL;
  }
  r->count = chb_catalog_count(r->cd.entries);
  return r;
}

size_t chb_zip_reader_count(const chb_zip_reader *r) { return r->count; }
const char *chb_zip_reader_path(const chb_zip_reader *r) { return r->path; }

long chb_zip_reader_locate(chb_zip_reader *r, const char *name) {
  long i = chb_catalog_find(r->cd.entries, name, strlen(name));
  return i < 0 ? -1 : i;
}

/* Entry i's record: 0, or -1 with err set (out of range, or the catalog's
 * temporary file failed). */
static int entry_at(chb_zip_reader *r, size_t i, chb_zip_cd_entry *e, chb_error *err) {
  int rc = chb_catalog_get(r->cd.entries, i, e, NULL, 0, NULL);
  if (rc == -1) return chb_error_set(err, CHB_INVALID, "no entry %zu in zip archive %s", i, r->path);
  if (rc != 0) {
    const char *why = chb_catalog_error(r->cd.entries);
    return chb_error_set(err, CHB_ENOMEM, "cannot read the directory of zip archive %s: %s", r->path,
                         why ? why : "out of memory");
  }
  return 0;
}

/* Entry i's name, malloc'd: NULL with err set. */
static char *entry_name(chb_zip_reader *r, size_t i, const chb_zip_cd_entry *e, chb_error *err) {
  char *name = malloc((size_t)e->name_len + 1);
  if (!name || chb_catalog_get(r->cd.entries, i, NULL, name, (size_t)e->name_len + 1, NULL) != 0) {
    free(name);
    chb_error_set(err, CHB_ENOMEM, "cannot read the directory of zip archive %s", r->path);
    return NULL;
  }
  return name;
}

int chb_zip_reader_stat(chb_zip_reader *r, size_t i, chb_zip_entry_info *out, chb_error *err) {
  chb_zip_cd_entry e;
  if (entry_at(r, i, &e, err) != 0) return -1;
  char *name = entry_name(r, i, &e, err);
  if (!name) return -1;
  free(r->stat_name);
  r->stat_name = name;
  out->name = name;
  out->size = e.size;
  out->compressed_size = e.comp_size;
  out->method = e.method;
  out->encrypted = e.strength;
  out->crc = e.crc;
  return 0;
}

void chb_zip_reader_close(chb_zip_reader *r) {
  if (!r) return;
  chb_zip_file_close(r->open_file);
  chb_zip_cd_free(&r->cd);
  if (r->fd >= 0) close(r->fd);
  free(r->stat_name);
  free(r->path);
  chb_zip_free_secret(r->password);
  free(r);
}

/* Formats detail, then "<detail> in entry <name> of <archive>" into err. */
static int file_fail(chb_zip_file *f, chb_error *err, chb_code code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int file_fail(chb_zip_file *f, chb_error *err, chb_code code, const char *fmt, ...) {
  char detail[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  chb_error_set(err, code, "%s in entry %s of %s", detail, f->name, f->r->path);
  f->broken = 1;
  f->broken_err = *err;
  return -1;
}

/* Reads up to n raw (compressed, encrypted) bytes; fewer only at the end
 * of the entry's data. pread: the threads sharing a reader never wait on
 * each other. */
static ssize_t raw_read(chb_zip_file *f, unsigned char *buf, size_t n, chb_error *err) {
  if (n > f->raw_total_left) n = (size_t)f->raw_total_left;
  ssize_t got = chb_fs_pread_full(f->r->fd, buf, n, f->data_at);
  if (got < 0) return file_fail(f, err, CHB_EIO, "read error (%s)", strerror(errno));
  f->data_at += (uint64_t)got;
  f->raw_total_left -= (uint64_t)got;
  return got;
}

/* Finds the entry's data after its local header, which must agree with the
 * central record (its name) and leave the data inside the entries' area. */
static int locate_data(chb_zip_file *f, const chb_zip_cd_entry *e, chb_error *err) {
  size_t hlen = CHB_ZIP_LOCAL_LEN + (size_t)e->name_len;
  unsigned char *h = malloc(hlen);
  if (!h) return file_fail(f, err, CHB_ENOMEM, "out of memory");
  ssize_t got = chb_fs_pread_full(f->r->fd, h, hlen, e->header_offset);
  if (got < 0) {
    int e_no = errno;
    free(h);
    return file_fail(f, err, CHB_EIO, "read error (%s)", strerror(e_no));
  }
  int ok = (size_t)got == hlen && (h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24) == CHB_ZIP_LOCAL_SIG;
  uint16_t nlen = ok ? (uint16_t)(h[26] | h[27] << 8) : 0, xlen = ok ? (uint16_t)(h[28] | h[29] << 8) : 0;
  ok = ok && nlen == e->name_len && memcmp(h + CHB_ZIP_LOCAL_LEN, f->name, nlen) == 0;
  free(h);
  if (!ok) return file_fail(f, err, CHB_CORRUPT, "bad local header (it does not match the central directory)");
  uint64_t at = e->header_offset + CHB_ZIP_LOCAL_LEN + nlen + xlen;
  if (at > f->r->cd.cd_offset || e->comp_size > f->r->cd.cd_offset - at)
    return file_fail(f, err, CHB_CORRUPT, "data outside the archive's entries");
  f->data_at = at;
  f->raw_total_left = e->comp_size;
  return 0;
}

chb_zip_file *chb_zip_file_open_index(chb_zip_reader *r, size_t i, chb_error *err) {
  if (r->open_file) {
    chb_error_set(err, CHB_INVALID, "zip archive %s already has an open entry", r->path);
    return NULL;
  }
  chb_zip_cd_entry e;
  if (i >= r->count) {
    chb_error_set(err, CHB_INVALID, "no entry %zu in zip archive %s", i, r->path);
    return NULL;
  }
  if (entry_at(r, i, &e, err) != 0) return NULL;
  chb_zip_file *f = calloc(1, sizeof *f);
  if (!f || !(f->name = entry_name(r, i, &e, err))) {
    if (f) chb_error_set(err, CHB_ENOMEM, "cannot open entry %zu of %s: out of memory", i, r->path);
    free(f);
    return NULL;
  }
  f->r = r;
  if (r->shared) {            /* an open entry keeps its reader alive */
    cache_ref(r);
    f->holds_ref = 1;
  }
  f->size = e.size;
  f->comp_size = e.comp_size;
  f->method = e.method == 20 ? CHB_CODEC_ZSTD : e.method; /* 20: old zstd id */
  f->strength = e.strength;
  f->crc_expect = e.crc;
  f->crc = 0;
  f->check_crc = f->strength == 0 || e.crc != 0; /* AE-2 entries carry no CRC */
  f->raw_left = e.comp_size;
  if (f->strength < 0) {
    file_fail(f, err, CHB_INVALID, "unsupported encryption (only WinZip AES is read)");
    goto fail;
  }
  if (!chb_codec_by_id(f->method)) {
    file_fail(f, err, CHB_INVALID, "unsupported compression method %d", f->method);
    goto fail;
  }
  if (f->strength > 0 && !r->password) {
    file_fail(f, err, CHB_AUTH, "a password is needed (the data is encrypted)");
    goto fail;
  }
  if (locate_data(f, &e, err) != 0) goto fail;
  if (f->strength > 0) {
    unsigned char hdr[CHB_AES_SALT_MAX + CHB_AES_PV_LEN];
    size_t hlen = chb_aes_salt_len(f->strength) + CHB_AES_PV_LEN;
    if (e.comp_size < chb_aes_overhead(f->strength)) {
      file_fail(f, err, CHB_CORRUPT, "encrypted data too short");
      goto fail;
    }
    ssize_t n = raw_read(f, hdr, hlen, err);
    if (n < 0) goto fail;
    if ((size_t)n < hlen) {
      file_fail(f, err, CHB_CORRUPT, "data truncated");
      goto fail;
    }
    char what[600];
    snprintf(what, sizeof what, "entry %s of %s", f->name, r->path);
    f->aes = chb_aes_decrypter(f->strength, r->password, strlen(r->password), hdr, what, err);
    if (!f->aes) goto fail;
    f->raw_left = e.comp_size - chb_aes_overhead(f->strength);
  }
  if (f->method != CHB_CODEC_STORE) {
    chb_error cerr;
    f->codec = chb_codec_decoder(f->method, f->size, &cerr);
    f->in = malloc(RAW_BUF);
    if (!f->codec || !f->in) {
      if (!f->codec) file_fail(f, err, cerr.code, "%s", cerr.msg);
      else file_fail(f, err, CHB_ENOMEM, "out of memory");
      goto fail;
    }
  }
  if (!r->shared) r->open_file = f;
  return f;
fail:
  f->r = r;
  if (!r->shared) r->open_file = f;   /* so that close releases it the one way */
  chb_zip_file_close(f);
  return NULL;
}

chb_zip_file *chb_zip_file_open(chb_zip_reader *r, const char *name, chb_error *err) {
  long i = chb_zip_reader_locate(r, name);
  if (i < 0) {
    chb_error_set(err, CHB_ENOENT, "no entry %s in zip archive %s", name, r->path);
    return NULL;
  }
  return chb_zip_file_open_index(r, (size_t)i, err);
}

uint64_t chb_zip_file_size(const chb_zip_file *f) { return f->size; }

/* Reads the stored MAC (after the ciphertext) and compares: 1 match, 0 not, -1 error. */
static int mac_matches(chb_zip_file *f, chb_error *err) {
  unsigned char want[CHB_AES_MAC_LEN], got[CHB_AES_MAC_LEN];
  ssize_t n = raw_read(f, want, sizeof want, err);
  if (n < 0) return -1;
  if ((size_t)n < sizeof want) return file_fail(f, err, CHB_CORRUPT, "data truncated (no MAC)");
  if (chb_aes_mac(f->aes, got, err) != 0) return -1;
  unsigned char diff = 0;
  for (size_t i = 0; i < sizeof want; i++) diff |= (unsigned char)(want[i] ^ got[i]);
  return diff == 0;
}

/* A decompression failure of an encrypted entry: a MAC mismatch explains it better. */
static int explain_by_mac(chb_zip_file *f, chb_error *err) {
  if (!f->aes) return -1;
  chb_error keep = *err, merr;
  unsigned char *tmp = f->in ? f->in : NULL;
  unsigned char small[4096];
  size_t cap = tmp ? RAW_BUF : sizeof small;
  if (!tmp) tmp = small;
  while (f->raw_left > 0) {
    size_t n = f->raw_left < cap ? (size_t)f->raw_left : cap;
    ssize_t k = raw_read(f, tmp, n, &merr);
    if (k <= 0) break;
    f->raw_left -= (uint64_t)k;
    if (chb_aes_mac_update(f->aes, tmp, (size_t)k, &merr) != 0) break;
  }
  if (f->raw_left == 0 && mac_matches(f, &merr) == 0)
    return file_fail(f, err, CHB_AUTH, "authentication code (HMAC) mismatch: corrupted data");
  *err = keep;
  f->broken_err = keep;
  f->broken = 1;
  return -1;
}

static ssize_t finish_entry(chb_zip_file *f, chb_error *err) {
  if (f->aes) {
    int m = mac_matches(f, err);
    if (m < 0) return -1;
    if (m == 0) return file_fail(f, err, CHB_AUTH, "authentication code (HMAC) mismatch: corrupted data");
  }
  if (f->produced != f->size)
    return file_fail(f, err, CHB_CORRUPT, "size mismatch (%llu bytes declared, %llu read)",
                     (unsigned long long)f->size, (unsigned long long)f->produced);
  if (f->check_crc && f->crc != f->crc_expect)
    return file_fail(f, err, CHB_CORRUPT, "CRC-32 mismatch (expected %08x, got %08x)",
                     f->crc_expect, f->crc);
  f->ended = 1;
  return 0;
}

static ssize_t deliver(chb_zip_file *f, const unsigned char *p, size_t n, chb_error *err) {
  f->produced += n;
  if (f->produced > f->size)
    return file_fail(f, err, CHB_CORRUPT, "more data than the declared %llu bytes",
                     (unsigned long long)f->size);
  f->crc = libdeflate_crc32(f->crc, p, n);
  return (ssize_t)n;
}

ssize_t chb_zip_file_read(chb_zip_file *f, void *buf, size_t len, chb_error *err) {
  if (f->broken) {
    *err = f->broken_err;
    return -1;
  }
  if (f->ended || len == 0) return 0;
  unsigned char *out = buf;
  if (!f->codec) {
    if (f->raw_left == 0) return finish_entry(f, err);
    size_t n = len < f->raw_left ? len : (size_t)f->raw_left;
    ssize_t got = raw_read(f, out, n, err);
    if (got < 0) return -1;
    if (got == 0) return file_fail(f, err, CHB_CORRUPT, "data truncated");
    f->raw_left -= (uint64_t)got;
    if (f->aes && chb_aes_decrypt(f->aes, out, (size_t)got, err) != 0) return -1;
    return deliver(f, out, (size_t)got, err);
  }
  for (;;) {
    if (f->in_pos == f->in_len && !f->raw_done) {
      size_t n = f->raw_left < RAW_BUF ? (size_t)f->raw_left : RAW_BUF;
      if (n == 0) {
        f->raw_done = 1;
        f->in_pos = f->in_len = 0;
      } else {
        ssize_t got = raw_read(f, f->in, n, err);
        if (got < 0) return -1;
        if (got == 0) return file_fail(f, err, CHB_CORRUPT, "data truncated");
        if (f->aes && chb_aes_decrypt(f->aes, f->in, (size_t)got, err) != 0) return -1;
        f->in_pos = 0;
        f->in_len = (size_t)got;
        f->raw_left -= (uint64_t)got;
        if (f->raw_left == 0) f->raw_done = 1;
      }
    }
    const unsigned char *ip = f->in + f->in_pos;
    size_t il = f->in_len - f->in_pos, ol = len;
    unsigned char *op = out;
    int rc = 0;
    if (!f->codec_done) {
      chb_error cerr;
      rc = chb_codec_run(f->codec, &ip, &il, &op, &ol, f->raw_done, &cerr);
      if (rc < 0) {
        file_fail(f, err, cerr.code, "cannot decompress (%s)", cerr.msg);
        return explain_by_mac(f, err);
      }
      if (rc == 1) f->codec_done = 1;
    }
    size_t used = (size_t)(ip - (f->in + f->in_pos)), made = len - ol;
    f->in_pos += used;
    if (made > 0) return deliver(f, out, made, err);
    if (f->codec_done) {
      if (f->in_pos < f->in_len || f->raw_left > 0)
        return file_fail(f, err, CHB_CORRUPT, "data after the end of the compressed stream");
      return finish_entry(f, err);
    }
    if (f->raw_done && used == 0) {
      file_fail(f, err, CHB_CORRUPT, "compressed data truncated");
      return explain_by_mac(f, err);
    }
  }
}

void chb_zip_file_close(chb_zip_file *f) {
  if (!f) return;
  if (f->r && f->r->open_file == f) f->r->open_file = NULL;
  chb_codec_free(f->codec);
  chb_aes_free(f->aes);
  free(f->in);
  free(f->name);
  chb_zip_reader *r = f->holds_ref ? f->r : NULL;
  free(f);
  if (r) cache_release(r);
}

/* ---- the process-wide cache of open readers ------------------------------ */

/* Job workers come and go with each batch of a restore: a reader per
 * thread reopened the archive (parsed its whole central directory) in each
 * worker of each batch, and held one copy of it per thread. One cache for
 * the process opens an archive once and shares that reader (its catalog
 * locks itself; entries read by pread). An entry in use keeps its reader
 * alive (refs) after the cache lets it go. */

#define CACHE_SLOTS 4

typedef struct cache_slot {
  chb_zip_reader *r;          /* NULL: free */
  char *password;             /* "" for none */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  uint64_t used;
} cache_slot;

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cache_slot cache[CACHE_SLOTS];
static uint64_t cache_tick;

/* Drops one reference (cache_lock held); the last one closes the reader. */
static void unref_locked(chb_zip_reader *r) {
  if (--r->refs == 0) chb_zip_reader_close(r);
}

static void cache_release(chb_zip_reader *r) {
  pthread_mutex_lock(&cache_lock);
  unref_locked(r);
  pthread_mutex_unlock(&cache_lock);
}

static void cache_ref(chb_zip_reader *r) {
  pthread_mutex_lock(&cache_lock);
  r->refs++;
  pthread_mutex_unlock(&cache_lock);
}


static void slot_clear(cache_slot *s) {
  if (s->r) unref_locked(s->r);
  chb_zip_free_secret(s->password);
  memset(s, 0, sizeof *s);
}

void chb_zip_cache_clear(void) {
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS; i++) slot_clear(&cache[i]);
  pthread_mutex_unlock(&cache_lock);
}

/* The shared reader of `archive`, opened if needed, with a reference the
 * caller gives back by cache_release (or by closing the entry it opens). */
static chb_zip_reader *acquire(const char *archive, const char *password, chb_error *err) {
  if (!password) password = "";
  struct stat sb;
  if (stat(archive, &sb) != 0) {
    chb_error_errno(err, errno, "cannot open zip archive", archive);
    return NULL;
  }
  pthread_mutex_lock(&cache_lock);   /* held while opening: one thread parses the directory */
  cache_slot *hit = NULL, *victim = &cache[0];
  for (int i = 0; i < CACHE_SLOTS; i++) {
    cache_slot *s = &cache[i];
    if (s->r && s->dev == sb.st_dev && s->ino == sb.st_ino && s->size == sb.st_size &&
        s->mtime.tv_sec == sb.st_mtim.tv_sec && s->mtime.tv_nsec == sb.st_mtim.tv_nsec &&
        strcmp(chb_zip_reader_path(s->r), archive) == 0 && strcmp(s->password, password) == 0) {
      hit = s;
      break;
    }
    if (!s->r || (victim->r && s->used < victim->used)) victim = s;
  }
  if (!hit) {
    slot_clear(victim);
    chb_zip_reader *r = chb_zip_reader_open(archive, password, err);
    char *pw = r ? strdup(password) : NULL;
    if (!pw) {
      if (r) chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: out of memory", archive);
      chb_zip_reader_close(r);
      pthread_mutex_unlock(&cache_lock);
      return NULL;
    }
    r->shared = 1;
    r->refs = 1;              /* the cache's */
    victim->r = r;
    victim->password = pw;
    victim->dev = sb.st_dev;
    victim->ino = sb.st_ino;
    victim->size = sb.st_size;
    victim->mtime = sb.st_mtim;
    hit = victim;
  }
  hit->used = ++cache_tick;
  chb_zip_reader *r = hit->r;
  r->refs++;
  pthread_mutex_unlock(&cache_lock);
  return r;
}

chb_zip_reader *chb_zip_reader_shared(const char *path, const char *password, chb_error *err) {
  return acquire(path, password, err);
}

/* The backup is closed: its archive leaves the cache too (no directory
 * nor file handle kept after it, e.g. once it is deleted); entries still
 * open keep the reader until they are closed. */
void chb_zip_reader_release(chb_zip_reader *r) {
  if (!r) return;
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].r == r) slot_clear(&cache[i]);
  unref_locked(r);
  pthread_mutex_unlock(&cache_lock);
}

chb_zip_file *chb_zip_open_cached(const char *archive, const char *password,
                                  const char *entry, chb_error *err) {
  chb_zip_reader *r = acquire(archive, password, err);
  if (!r) return NULL;
  chb_zip_file *f = chb_zip_file_open(r, entry, err);   /* f holds its own reference */
  cache_release(r);
  return f;
}

int chb_zip_entry_size_cached(const char *archive, const char *password, const char *entry,
                              uint64_t *size, chb_error *err) {
  chb_zip_reader *r = acquire(archive, password, err);
  if (!r) return -1;
  int rc = 0;
  long at = chb_zip_reader_locate(r, entry);
  chb_zip_cd_entry e;
  if (at < 0) rc = chb_error_set(err, CHB_ENOENT, "no entry %s in zip archive %s", entry, archive);
  else if (entry_at(r, (size_t)at, &e, err) != 0) rc = -1;
  else *size = e.size;
  cache_release(r);
  return rc;
}
