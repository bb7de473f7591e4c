/* A zip archive's central directory into a chb_catalog; see chb_zip_cd.h.
 * Field offsets are APPNOTE 6.3.10's (section 4.3). */
#include "chb_zip_cd.h"
#include "chb_fs.h"
#include "chb_zip_read.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EOCD_SIG 0x06054b50u
#define EOCD_LEN 22
#define Z64_LOC_SIG 0x07064b50u
#define Z64_LOC_LEN 20
#define Z64_EOCD_SIG 0x06064b50u
#define Z64_EOCD_LEN 56
#define CDH_SIG 0x02014b50u
#define CDH_LEN 46
#define TAIL_MAX (EOCD_LEN + 0xffff)   /* the end record and the longest comment */
#define CD_BUF (256 * 1024)            /* > the longest central record: 46 + 3 * 65535 */

#define X_ZIP64 0x0001
#define X_AES 0x9901
#define METHOD_AES 99

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int bad(chb_error *err, const char *path, const char *why) {
  return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: %s", path, why);
}

/* Reads exactly n bytes at off: 0, or -1 (a short file is CHB_CORRUPT). */
static int read_at(int fd, const char *path, void *buf, size_t n, uint64_t off, chb_error *err) {
  ssize_t k = chb_fs_pread_full(fd, buf, n, off);
  if (k < 0) return chb_error_errno(err, errno, "cannot read zip archive", path);
  if ((size_t)k < n) return bad(err, path, "truncated");
  return 0;
}

/* Where the directory is and how many entries it has. */
typedef struct ends {
  uint64_t count, cd_size, cd_offset;
  uint64_t limit;   /* the directory must end here (the first end record) */
} ends;

/* The zip64 end record named by the locator just before the end record at eocd. */
static int read_zip64_end(int fd, const char *path, uint64_t eocd, ends *e, chb_error *err) {
  unsigned char loc[Z64_LOC_LEN], z[Z64_EOCD_LEN];
  if (eocd < Z64_LOC_LEN) return bad(err, path, "zip64 end locator missing");
  if (read_at(fd, path, loc, sizeof loc, eocd - Z64_LOC_LEN, err) != 0) return -1;
  if (le32(loc) != Z64_LOC_SIG) return bad(err, path, "zip64 end locator missing");
  if (le32(loc + 4) != 0 || le32(loc + 16) > 1) return bad(err, path, "an archive on several disks");
  uint64_t at = le64(loc + 8);
  if (at > eocd - Z64_LOC_LEN || eocd - Z64_LOC_LEN - at < Z64_EOCD_LEN)
    return bad(err, path, "zip64 end record outside the archive");
  if (read_at(fd, path, z, sizeof z, at, err) != 0) return -1;
  if (le32(z) != Z64_EOCD_SIG) return bad(err, path, "zip64 end record missing");
  if (le32(z + 16) != 0 || le32(z + 20) != 0 || le64(z + 24) != le64(z + 32))
    return bad(err, path, "an archive on several disks");
  e->count = le64(z + 32);
  e->cd_size = le64(z + 40);
  e->cd_offset = le64(z + 48);
  e->limit = at;
  return 0;
}

/* Finds the end of central directory record (the last one whose comment
 * ends at or before the file's end) and, if it says so, the zip64 one. */
static int read_ends(int fd, const char *path, uint64_t fsize, ends *e, chb_error *err) {
  size_t tail = fsize < TAIL_MAX ? (size_t)fsize : TAIL_MAX;
  unsigned char *buf = malloc(tail ? tail : 1);
  if (!buf) return chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: out of memory", path);
  uint64_t base = fsize - tail;
  if (read_at(fd, path, buf, tail, base, err) != 0) {
    free(buf);
    return -1;
  }
  long found = -1;
  for (long i = (long)tail - EOCD_LEN; i >= 0; i--) {
    const unsigned char *p = buf + i;
    if (le32(p) == EOCD_SIG && (size_t)i + EOCD_LEN + le16(p + 20) <= tail) {
      found = i;
      break;
    }
  }
  if (found < 0) {
    free(buf);
    return bad(err, path, "not a zip archive, or a truncated one (no end of central directory)");
  }
  const unsigned char *p = buf + found;
  uint16_t disk = le16(p + 4), cd_disk = le16(p + 6), here = le16(p + 8), total = le16(p + 10);
  uint32_t cd_size = le32(p + 12), cd_offset = le32(p + 16);
  free(buf);
  uint64_t eocd = base + (uint64_t)found;
  int zip64 = disk == 0xffff || cd_disk == 0xffff || here == 0xffff || total == 0xffff ||
              cd_size == 0xffffffffu || cd_offset == 0xffffffffu;
  if (!zip64 && eocd >= Z64_LOC_LEN) {   /* a zip64 record may be there without need (exactly 65535 entries) */
    unsigned char sig[4];
    if (read_at(fd, path, sig, sizeof sig, eocd - Z64_LOC_LEN, err) != 0) return -1;
    zip64 = le32(sig) == Z64_LOC_SIG;
  }
  if (zip64) return read_zip64_end(fd, path, eocd, e, err);
  if (disk != 0 || cd_disk != 0 || here != total) return bad(err, path, "an archive on several disks");
  e->count = total;
  e->cd_size = cd_size;
  e->cd_offset = cd_offset;
  e->limit = eocd;
  return 0;
}

/* The central directory read through one buffer. */
typedef struct cursor {
  int fd;
  const char *path;
  unsigned char *buf;
  size_t pos, len;      /* unread bytes: buf[pos, len) */
  uint64_t next, end;   /* file offset of buf[len], and of the directory's end */
} cursor;

/* Makes n bytes available at c->buf + c->pos: 0, or -1 (past the directory's end: CHB_CORRUPT). */
static int need(cursor *c, size_t n, chb_error *err) {
  if (c->len - c->pos >= n) return 0;
  if ((uint64_t)(c->len - c->pos) + (c->end - c->next) < n)
    return bad(err, c->path, "central directory truncated (a record runs past its end)");
  memmove(c->buf, c->buf + c->pos, c->len - c->pos);
  c->len -= c->pos;
  c->pos = 0;
  size_t want = CD_BUF - c->len;
  if (want > c->end - c->next) want = (size_t)(c->end - c->next);
  if (read_at(c->fd, c->path, c->buf + c->len, want, c->next, err) != 0) return -1;
  c->len += want;
  c->next += want;
  return 0;
}

/* The zip64 and AES extra fields of a central record into e. */
static int parse_extra(const unsigned char *x, size_t n, chb_zip_cd_entry *e, int need64[3],
                       int *has_aes, const char *path, const char *name, chb_error *err) {
  while (n >= 4) {
    uint16_t id = le16(x), len = le16(x + 2);
    if ((size_t)len > n - 4) break;   /* a short trailing field: padding some writers leave */
    const unsigned char *d = x + 4;
    if (id == X_ZIP64) {
      size_t at = 0;
      uint64_t *fields[3] = {&e->size, &e->comp_size, &e->header_offset};
      for (int k = 0; k < 3; k++) {
        if (!need64[k]) continue;
        if (at + 8 > len)
          return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: entry %s: zip64 field too short",
                               path, name);
        *fields[k] = le64(d + at);
        at += 8;
        need64[k] = 0;
      }
    } else if (id == X_AES) {
      if (len < 7 || d[2] != 'A' || d[3] != 'E' || d[4] < 1 || d[4] > 3)
        return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: entry %s: bad AES extra field",
                             path, name);
      e->strength = (int8_t)d[4];
      e->method = le16(d + 5);
      *has_aes = 1;
    }
    x += 4 + len;
    n -= 4 + (size_t)len;
  }
  return 0;
}

/* One central record at the cursor into the catalog. */
static int read_record(cursor *c, chb_zip_cd *cd, uint64_t data_end, char *name, chb_error *err) {
  if (need(c, CDH_LEN, err) != 0) return -1;
  const unsigned char *h = c->buf + c->pos;
  if (le32(h) != CDH_SIG) return bad(err, c->path, "bad central directory record");
  uint16_t flags = le16(h + 8), method = le16(h + 10);
  uint16_t nlen = le16(h + 28), xlen = le16(h + 30), clen = le16(h + 32), disk = le16(h + 34);
  chb_zip_cd_entry e = {0};
  e.flags = flags;
  e.method = method;
  e.crc = le32(h + 16);
  e.comp_size = le32(h + 20);
  e.size = le32(h + 24);
  e.header_offset = le32(h + 42);
  e.name_len = nlen;
  int need64[3] = {e.size == 0xffffffffu, e.comp_size == 0xffffffffu, e.header_offset == 0xffffffffu};
  size_t rlen = CDH_LEN + (size_t)nlen + xlen + clen;
  if (need(c, rlen, err) != 0) return -1;
  h = c->buf + c->pos;
  memcpy(name, h + CDH_LEN, nlen);
  name[nlen] = '\0';
  if (memchr(name, '\0', nlen))
    return chb_error_set(err, CHB_CORRUPT, "unsafe entry name '%s...' in zip archive %s (a NUL byte in it)",
                         name, c->path);
  if (!chb_zip_name_ok(name))
    return chb_error_set(err, CHB_CORRUPT, "unsafe entry name '%s' in zip archive %s "
                         "(absolute, with '..' or '\\')", name, c->path);
  if (disk != 0 && disk != 0xffff) return bad(err, c->path, "an archive on several disks");
  int has_aes = 0;
  if (parse_extra(h + CDH_LEN + nlen, xlen, &e, need64, &has_aes, c->path, name, err) != 0) return -1;
  if (need64[0] || need64[1] || need64[2])
    return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: entry %s: zip64 field missing",
                         c->path, name);
  if (method == METHOD_AES && !has_aes)
    return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: entry %s: AES extra field missing",
                         c->path, name);
  if (!has_aes) e.strength = (flags & 1) ? -1 : 0;   /* traditional PKWARE or strong encryption */
  else if (!(flags & 1) || method != METHOD_AES) e.strength = -1;
  if (e.header_offset > data_end || data_end - e.header_offset < CHB_ZIP_LOCAL_LEN + (uint64_t)nlen ||
      e.comp_size > data_end - e.header_offset - CHB_ZIP_LOCAL_LEN - nlen)
    return chb_error_set(err, CHB_CORRUPT, "cannot open zip archive %s: entry %s lies outside the archive's "
                         "entries (offset %llu, %llu bytes)", c->path, name,
                         (unsigned long long)e.header_offset, (unsigned long long)e.comp_size);
  c->pos += rlen;
  size_t dup = 0;
  long k = chb_catalog_add(cd->entries, name, nlen, &e, &dup);
  if (k == -1)
    return chb_error_set(err, CHB_CORRUPT, "entry name '%s' twice in zip archive %s", name, c->path);
  if (k < 0) {
    const char *why = chb_catalog_error(cd->entries);
    return chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: %s", c->path,
                         why ? why : "out of memory");
  }
  return 0;
}

int chb_zip_cd_read(int fd, const char *path, size_t budget, chb_zip_cd *out, chb_error *err) {
  memset(out, 0, sizeof *out);
  struct stat sb;
  if (fstat(fd, &sb) != 0) return chb_error_errno(err, errno, "cannot open zip archive", path);
  ends e = {0};
  if (read_ends(fd, path, (uint64_t)sb.st_size, &e, err) != 0) return -1;
  if (e.cd_offset > e.limit || e.cd_size > e.limit - e.cd_offset)
    return bad(err, path, "central directory outside the archive");
  if (e.count > e.cd_size / CDH_LEN) return bad(err, path, "more entries than the central directory holds");
  out->cd_offset = e.cd_offset;
  out->entries = chb_catalog_new(sizeof(chb_zip_cd_entry), budget);
  cursor c = {.fd = fd, .path = path, .buf = malloc(CD_BUF), .next = e.cd_offset,
              .end = e.cd_offset + e.cd_size};
  char *name = malloc(0x10000);
  int rc = 0;
  if (!out->entries || !c.buf || !name)
    rc = chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: out of memory", path);
  if (rc == 0 && chb_catalog_reserve(out->entries, (size_t)e.count) != 0)
    rc = chb_error_set(err, CHB_ENOMEM, "cannot open zip archive %s: out of memory (%llu entries)", path,
                       (unsigned long long)e.count);
  for (uint64_t i = 0; rc == 0 && i < e.count; i++) rc = read_record(&c, out, e.cd_offset, name, err);
  free(name);
  free(c.buf);
  if (rc != 0) chb_zip_cd_free(out);
  return rc;
}

void chb_zip_cd_free(chb_zip_cd *cd) {
  chb_catalog_free(cd->entries);
  cd->entries = NULL;
}
