/* The zip container as a stream; see chb_zip_container.h. */
#include "chb_zip_container.h"
#include "chb_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define U32_MAX 0xffffffffu
#define U16_MAX 0xffffu
#define CD_BUF (64 * 1024)          /* central records kept in memory before spilling */
#define MADE_BY 0x033f              /* Unix, 6.3 (libzip's) */
#define EXT_ATTR (0100666u << 16)   /* -rw-rw-rw- (libzip's default) */
#define AES_METHOD 99
#define LOCAL_MAX (30 + 0xffff + 11 + 20)

struct chb_zipc {
  int fd;
  char *path;
  uint16_t dos_time, dos_date;
  unsigned char *buf;         /* output: bytes from buf_off not yet written */
  size_t cap, len;
  uint64_t buf_off;
  uint64_t entries;
  /* the entry being written */
  uint64_t local_off, data_start;
  uint32_t local_crc;
  /* central directory: in cd_buf, then spilled to cd_fd */
  unsigned char *cd_buf;
  size_t cd_len;
  int cd_fd;
  uint64_t cd_spilled;
  int cd_zip64;               /* a central record needed zip64 */
};

static void put16(unsigned char *p, unsigned v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int io_fail(chb_zipc *z, int errnum, const char *what, chb_error *err) {
  return chb_error_errno(err, errnum, what, z->path);
}

chb_zipc *chb_zipc_new(int fd, const char *path, time_t mtime, size_t bufsize, chb_error *err) {
  chb_zipc *z = calloc(1, sizeof *z);
  if (z) {
    z->fd = fd;
    z->cd_fd = -1;
    z->cap = bufsize < LOCAL_MAX ? LOCAL_MAX : bufsize;
    z->path = strdup(path);
    z->buf = malloc(z->cap);
    z->cd_buf = malloc(CD_BUF);
  }
  if (!z || !z->path || !z->buf || !z->cd_buf) {
    chb_zipc_free(z);
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a writer for zip archive %s", path);
    return NULL;
  }
  /* DOS time as libzip made it: local time, years before 1980 as 1980. */
  struct tm tm;
  if (localtime_r(&mtime, &tm)) {
    if (tm.tm_year < 80) tm.tm_year = 80;
    z->dos_date = (uint16_t)(((tm.tm_year - 80) << 9) + ((tm.tm_mon + 1) << 5) + tm.tm_mday);
    z->dos_time = (uint16_t)((tm.tm_hour << 11) + (tm.tm_min << 5) + (tm.tm_sec >> 1));
  } else {
    z->dos_date = (1 << 5) + 1;
  }
  return z;
}

uint64_t chb_zipc_count(const chb_zipc *z) { return z->entries; }
uint64_t chb_zipc_offset(const chb_zipc *z) { return z->buf_off + z->len; }

static int out_flush(chb_zipc *z, chb_error *err) {
  if (z->len && chb_fs_pwrite_all(z->fd, z->buf, z->len, z->buf_off) != 0)
    return io_fail(z, errno, "cannot write zip archive", err);
  z->buf_off += z->len;
  z->len = 0;
  return 0;
}

static int out_put(chb_zipc *z, const void *p, size_t n, chb_error *err) {
  if (z->len + n > z->cap && out_flush(z, err) != 0) return -1;
  if (n >= z->cap) {          /* big pieces go straight to the file */
    if (chb_fs_pwrite_all(z->fd, p, n, z->buf_off) != 0)
      return io_fail(z, errno, "cannot write zip archive", err);
    z->buf_off += n;
    return 0;
  }
  memcpy(z->buf + z->len, p, n);
  z->len += n;
  return 0;
}

/* Plain ASCII (libzip's test): printable bytes, CR, LF, tab. */
static int is_ascii(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (!((*p > 31 && *p < 128) || *p == '\r' || *p == '\n' || *p == '\t')) return 0;
  return 1;
}

static unsigned version_needed(const chb_zipc_entry *e, int zip64) {
  unsigned v;
  if (e->method == 14) v = 63;          /* LZMA */
  else if (e->aes) v = 51;
  else if (e->method == 12) v = 46;     /* bzip2 */
  else if (e->method == 8) v = 20;
  else v = 10;
  if (zip64 && v < 45) v = 45;
  return v;
}

static unsigned gp_flags(const chb_zipc_entry *e) {
  unsigned f = e->flags;
  if (e->aes) f |= 0x0001;
  if (!is_ascii(e->name)) f |= 0x0800;
  return f;
}

/* AES extra field: 11 bytes at p. */
static size_t put_aes(unsigned char *p, const chb_zipc_entry *e) {
  put16(p, 0x9901);
  put16(p + 2, 7);
  put16(p + 4, 2);            /* AE-2 */
  p[6] = 'A';
  p[7] = 'E';
  p[8] = (unsigned char)e->aes;
  put16(p + 9, e->method);
  return 11;
}

int chb_zipc_entry_begin(chb_zipc *z, const chb_zipc_entry *e, chb_error *err) {
  size_t nlen = strlen(e->name);
  if (nlen > U16_MAX)
    return chb_error_set(err, CHB_INVALID, "entry name %.64s... too long for zip archive %s",
                         e->name, z->path);
  unsigned char h[LOCAL_MAX];
  int zip64 = e->size >= U32_MAX || e->comp_size >= U32_MAX;
  size_t x = 30 + nlen, xstart = x;
  memcpy(h + 30, e->name, nlen);
  if (e->aes) x += put_aes(h + x, e);
  if (zip64) {
    put16(h + x, 0x0001);
    put16(h + x + 2, 16);
    put64(h + x + 4, e->size);
    put64(h + x + 12, e->comp_size);
    x += 20;
  }
  put32(h, 0x04034b50);
  put16(h + 4, version_needed(e, zip64));
  put16(h + 6, gp_flags(e));
  put16(h + 8, e->aes ? AES_METHOD : e->method);
  put16(h + 10, z->dos_time);
  put16(h + 12, z->dos_date);
  put32(h + 14, e->crc);
  put32(h + 18, zip64 ? U32_MAX : (uint32_t)e->comp_size);
  put32(h + 22, zip64 ? U32_MAX : (uint32_t)e->size);
  put16(h + 26, (unsigned)nlen);
  put16(h + 28, (unsigned)(x - xstart));
  z->local_off = chb_zipc_offset(z);
  z->local_crc = e->crc;
  if (out_put(z, h, x, err) != 0) return -1;
  z->data_start = chb_zipc_offset(z);
  return 0;
}

int chb_zipc_write(chb_zipc *z, const void *p, size_t n, chb_error *err) {
  return out_put(z, p, n, err);
}

static int cd_put(chb_zipc *z, const unsigned char *p, size_t n, chb_error *err) {
  if (z->cd_len + n > CD_BUF) {
    if (z->cd_fd < 0) {
      /* Unlinked from the start: nothing is left behind by a killed run. */
      char dir[PATH_MAX];
      chb_fs_split_dir(z->path, dir, sizeof dir);
      z->cd_fd = chb_fs_tmpfile(dir, ".chb-zip-cd-");
      if (z->cd_fd < 0) return io_fail(z, errno, "cannot create the central directory file of", err);
    }
    if (chb_fs_pwrite_all(z->cd_fd, z->cd_buf, z->cd_len, z->cd_spilled) != 0)
      return io_fail(z, errno, "cannot write the central directory of", err);
    z->cd_spilled += z->cd_len;
    z->cd_len = 0;
  }
  memcpy(z->cd_buf + z->cd_len, p, n);
  z->cd_len += n;
  return 0;
}

int chb_zipc_entry_end(chb_zipc *z, const chb_zipc_entry *e, chb_error *err) {
  uint64_t wrote = chb_zipc_offset(z) - z->data_start;
  if (wrote != e->comp_size)
    return chb_error_set(err, CHB_EIO, "entry %s of zip archive %s: %llu bytes of data written, "
                         "%llu declared", e->name, z->path, (unsigned long long)wrote,
                         (unsigned long long)e->comp_size);
  if (e->crc != z->local_crc) {   /* checksummed while copied: patch the local header */
    uint64_t at = z->local_off + 14;
    if (at >= z->buf_off) {
      put32(z->buf + (at - z->buf_off), e->crc);
    } else {
      unsigned char c[4];
      put32(c, e->crc);
      if (chb_fs_pwrite_all(z->fd, c, 4, at) != 0)
        return io_fail(z, errno, "cannot write zip archive", err);
    }
  }
  size_t nlen = strlen(e->name);
  unsigned char h[46 + 11 + 28];
  int big_size = e->size >= U32_MAX, big_comp = e->comp_size >= U32_MAX;
  int big_off = z->local_off >= U32_MAX;
  int zip64 = big_size || big_comp || big_off;
  size_t x = 46;
  if (e->aes) x += put_aes(h + x, e);
  if (zip64) {
    size_t n = 8 * (size_t)(big_size + big_comp + big_off), at = x + 4;
    put16(h + x, 0x0001);
    put16(h + x + 2, (unsigned)n);
    if (big_size) put64(h + at, e->size), at += 8;
    if (big_comp) put64(h + at, e->comp_size), at += 8;
    if (big_off) put64(h + at, z->local_off);
    x += 4 + n;
    z->cd_zip64 = 1;
  }
  put32(h, 0x02014b50);
  put16(h + 4, MADE_BY);
  put16(h + 6, version_needed(e, zip64));
  put16(h + 8, gp_flags(e));
  put16(h + 10, e->aes ? AES_METHOD : e->method);
  put16(h + 12, z->dos_time);
  put16(h + 14, z->dos_date);
  put32(h + 16, e->crc);
  put32(h + 20, big_comp ? U32_MAX : (uint32_t)e->comp_size);
  put32(h + 24, big_size ? U32_MAX : (uint32_t)e->size);
  put16(h + 28, (unsigned)nlen);
  put16(h + 30, (unsigned)(x - 46));
  put16(h + 32, 0);           /* comment */
  put16(h + 34, 0);           /* disk */
  put16(h + 36, 0);           /* internal attributes */
  put32(h + 38, EXT_ATTR);
  put32(h + 42, big_off ? U32_MAX : (uint32_t)z->local_off);
  /* record = fixed part, name, extra fields */
  if (cd_put(z, h, 46, err) != 0 || cd_put(z, (const unsigned char *)e->name, nlen, err) != 0 ||
      cd_put(z, h + 46, x - 46, err) != 0)
    return -1;
  z->entries++;
  return 0;
}

int chb_zipc_finish(chb_zipc *z, chb_error *err) {
  uint64_t cd_off = chb_zipc_offset(z), cd_size = z->cd_spilled + z->cd_len;
  /* the spilled records, through the output buffer */
  for (uint64_t pos = 0; pos < z->cd_spilled;) {
    if (z->len == z->cap && out_flush(z, err) != 0) return -1;
    size_t want = z->cap - z->len;
    if (want > z->cd_spilled - pos) want = (size_t)(z->cd_spilled - pos);
    ssize_t k = pread(z->cd_fd, z->buf + z->len, want, (off_t)pos);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return io_fail(z, k < 0 ? errno : EIO, "cannot read the central directory of", err);
    z->len += (size_t)k;
    pos += (uint64_t)k;
  }
  if (out_put(z, z->cd_buf, z->cd_len, err) != 0) return -1;
  unsigned char t[56 + 20 + 22];
  size_t n = 0;
  uint64_t cnt = z->entries;
  if (z->cd_zip64 || cnt >= U16_MAX || cd_off >= U32_MAX || cd_size >= U32_MAX) {
    uint64_t at = chb_zipc_offset(z);
    put32(t, 0x06064b50);
    put64(t + 4, 44);
    put16(t + 12, 45);
    put16(t + 14, 45);
    put32(t + 16, 0);
    put32(t + 20, 0);
    put64(t + 24, cnt);
    put64(t + 32, cnt);
    put64(t + 40, cd_size);
    put64(t + 48, cd_off);
    put32(t + 56, 0x07064b50);
    put32(t + 60, 0);
    put64(t + 64, at);
    put32(t + 72, 1);
    n = 76;
  }
  put32(t + n, 0x06054b50);
  put32(t + n + 4, 0);
  put16(t + n + 8, cnt >= U16_MAX ? U16_MAX : (unsigned)cnt);
  put16(t + n + 10, cnt >= U16_MAX ? U16_MAX : (unsigned)cnt);
  put32(t + n + 12, cd_size >= U32_MAX ? U32_MAX : (uint32_t)cd_size);
  put32(t + n + 16, cd_off >= U32_MAX ? U32_MAX : (uint32_t)cd_off);
  put16(t + n + 20, 0);
  n += 22;
  if (out_put(z, t, n, err) != 0) return -1;
  return out_flush(z, err);
}

void chb_zipc_free(chb_zipc *z) {
  if (!z) return;
  if (z->cd_fd >= 0) close(z->cd_fd);
  free(z->buf);
  free(z->cd_buf);
  free(z->path);
  free(z);
}
