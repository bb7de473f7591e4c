/*
 * chbackup's own zip directory reader (chb_zip_cd.c, issue 14) held
 * against libzip, the reference reader: the same entries (name, sizes,
 * CRC, method, encryption) and the same bytes for every method, plain and
 * with AES, in archives written by chbackup and by libzip. Crafted
 * directories (offsets outside the archive, too many entries, a NUL or
 * `..` in a name, a name twice, several disks, a local header that does
 * not match, a truncated directory, a zip64 end without its locator) are
 * refused naming the archive; thousands of random byte flips in the
 * directory never crash (run under ASan/UBSan by the sanitizer build) and
 * a part of them is refused. A catalog of 70,000 entries spilled past a
 * 64 KiB budget finds every entry by name and holds its budget (and its
 * page tables) in memory, nothing per entry.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chb_zip.h"
#include "chb_zip_cd.h"
#include "test_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zip.h>

static char root[] = "/tmp/chb-test-zip-cd.XXXXXX";

static const char *at(char *buf, size_t n, const char *rel) {
  snprintf(buf, n, "%s/%s", root, rel);
  return buf;
}

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put16(unsigned char *p, uint16_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes an archive of `names` with chbackup's writer; bodies from gen_random. */
static int write_ours(const char *path, const char *method, const char *password, const char *const *names,
                      const size_t *sizes, size_t n) {
  chb_zip_writer_opts o = {method, 0, 0, password, 1, 0, 0};
  chb_error err;
  chb_zip_writer *w = chb_zip_writer_new(path, &o, &err);
  int ok = w != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    unsigned char *body = gen_random(i + 1, sizes[i]);
    ok = chb_zip_writer_add_bytes(w, names[i], body, sizes[i], &err) >= 0;
    free(body);
  }
  ok = ok && chb_zip_writer_finish(w, &err) == 0;
  if (!ok) printf("     (writing %s: %s)\n", path, err.msg);
  chb_zip_writer_free(w);
  return ok;
}

/* An entry's bytes through libzip (NULL: libzip cannot read it). */
static unsigned char *libzip_bytes(zip_t *za, zip_uint64_t i, zip_uint64_t size) {
  zip_file_t *zf = zip_fopen_index(za, i, 0);
  if (!zf) return NULL;
  unsigned char *buf = malloc(size ? size : 1);
  zip_int64_t k = zip_fread(zf, buf, size);
  zip_fclose(zf);
  if (k < 0 || (zip_uint64_t)k != size) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* An entry's bytes through chbackup's reader (NULL on any error). */
static unsigned char *our_bytes(chb_zip_reader *r, size_t i, uint64_t size) {
  chb_error err;
  chb_zip_file *f = chb_zip_file_open_index(r, i, &err);
  if (!f) return NULL;
  unsigned char *buf = malloc(size + 1);
  size_t got = 0;
  ssize_t k;
  while ((k = chb_zip_file_read(f, buf + got, size + 1 - got, &err)) > 0) got += (size_t)k;
  chb_zip_file_close(f);
  if (k < 0 || got != size) {
    free(buf);
    return NULL;
  }
  return buf;
}

static int strength_of(zip_uint16_t em) {
  switch (em) {
  case ZIP_EM_NONE: return 0;
  case ZIP_EM_AES_128: return 1;
  case ZIP_EM_AES_192: return 2;
  case ZIP_EM_AES_256: return 3;
  default: return -1;
  }
}

/* Every entry of `path`: listed alike by both readers, the same bytes. */
static int same_as_libzip(const char *path, const char *password, size_t *compared) {
  int zerr;
  zip_t *za = zip_open(path, ZIP_RDONLY, &zerr);
  chb_error err;
  chb_zip_reader *r = chb_zip_reader_open(path, password, &err);
  int ok = za && r && (zip_uint64_t)zip_get_num_entries(za, 0) == chb_zip_reader_count(r);
  if (za && password) zip_set_default_password(za, password);
  for (size_t i = 0; ok && i < chb_zip_reader_count(r); i++) {
    zip_stat_t st;
    chb_zip_entry_info e;
    ok = zip_stat_index(za, i, ZIP_FL_ENC_RAW, &st) == 0 && chb_zip_reader_stat(r, i, &e, &err) == 0 &&
         strcmp(st.name, e.name) == 0 && st.size == e.size && st.comp_size == e.compressed_size &&
         st.crc == e.crc && st.comp_method == e.method && strength_of(st.encryption_method) == e.encrypted &&
         chb_zip_reader_locate(r, st.name) == (long)i;
    if (!ok) {
      printf("     (%s entry %zu differs from libzip's)\n", path, i);
      break;
    }
    if (!zip_compression_method_supported(st.comp_method, 0)) continue;
    unsigned char *theirs = libzip_bytes(za, i, st.size), *ours = our_bytes(r, i, e.size);
    ok = theirs && ours && memcmp(theirs, ours, st.size) == 0;
    if (!ok) printf("     (%s entry %s: bytes differ or unreadable)\n", path, st.name);
    *compared += ok;
    free(theirs);
    free(ours);
  }
  if (za) zip_discard(za);
  chb_zip_reader_close(r);
  return ok;
}

static void test_matches_libzip(void) {
  static const char *const names[] = {"empty", "a/small.bin", "a/b/larger.bin", "c.txt"};
  static const size_t sizes[] = {0, 19, 70001, 300000};
  static const char *const methods[] = {"store", "deflate", "bzip2", "lzma", "xz", "zstd"};
  char path[512];
  for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
    for (int pw = 0; pw < 2; pw++) {
      char rel[64];
      snprintf(rel, sizeof rel, "ours-%s%s.zip", methods[m], pw ? "-aes" : "");
      at(path, sizeof path, rel);
      size_t compared = 0;
      int ok = write_ours(path, methods[m], pw ? "pw" : NULL, names, sizes, 4) &&
               same_as_libzip(path, pw ? "pw" : NULL, &compared);
      CHECK(ok, "chbackup's %s archive%s: entries as libzip lists them, bytes as it reads them (%zu compared)",
            methods[m], pw ? " with AES" : "", compared);
      unlink(path);
    }
  }
  /* libzip's own: deflate, a directory entry, an archive comment, AES-128 */
  at(path, sizeof path, "theirs.zip");
  int zerr;
  zip_t *za = zip_open(path, ZIP_CREATE | ZIP_EXCL, &zerr);
  unsigned char *body = gen_random(9, 100000);
  zip_dir_add(za, "dir/", ZIP_FL_ENC_UTF_8);
  zip_int64_t k = zip_file_add(za, "dir/data.bin", zip_source_buffer(za, body, 100000, 0), 0);
  zip_file_add(za, "dir/other.bin", zip_source_buffer(za, body, 5000, 0), 0);
  zip_file_set_encryption(za, (zip_uint64_t)k, ZIP_EM_AES_128, "pw");
  static const char comment[] = "PK\5\6 a comment that looks like an end record";
  zip_set_archive_comment(za, comment, (zip_uint16_t)strlen(comment));
  int made = zip_close(za) == 0;
  size_t compared = 0;
  CHECK(made && same_as_libzip(path, "pw", &compared) && compared == 3,
        "libzip's archive (a directory entry, AES-128, a comment with an end signature): read alike (%zu)",
        compared);
  free(body);
  unlink(path);
}

/* ---- crafted directories ---- */

/* A two-entry stored archive, its bytes and where its records are. */
typedef struct small_zip {
  unsigned char *data;
  size_t len;
  size_t eocd, cd, rec2, local2;
} small_zip;

static int small_zip_make(small_zip *z, const char *path) {
  static const char *const names[] = {"a.bin", "b.bin"};
  static const size_t sizes[] = {5, 5};
  if (!write_ours(path, "store", NULL, names, sizes, 2)) return 0;
  z->data = slurp(path, &z->len);
  unlink(path);
  if (!z->data || z->len < 22) return 0;
  z->eocd = z->len - 22;
  z->cd = get32(z->data + z->eocd + 16);
  z->rec2 = z->cd + 46 + get16(z->data + z->cd + 28) + get16(z->data + z->cd + 30) + get16(z->data + z->cd + 32);
  z->local2 = get32(z->data + z->rec2 + 42);
  return get32(z->data + z->eocd) == 0x06054b50u && get32(z->data + z->cd) == 0x02014b50u &&
         get32(z->data + z->rec2) == 0x02014b50u;
}

/* Writes bytes to path and opens it: the reader, or NULL with err set. */
static chb_zip_reader *open_bytes(const char *path, const unsigned char *data, size_t len, chb_error *err) {
  FILE *f = fopen(path, "wb");
  fwrite(data, 1, len, f);
  fclose(f);
  return chb_zip_reader_open(path, NULL, err);
}

typedef struct mutation {
  const char *what, *expect;
  void (*apply)(small_zip *z, unsigned char *d, size_t *len);
} mutation;

static void m_cd_outside(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put32(d + z->eocd + 16, (uint32_t)(z->cd + 100000));
}
static void m_too_many(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put16(d + z->eocd + 8, 60000);
  put16(d + z->eocd + 10, 60000);
}
static void m_offset_outside(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put32(d + z->rec2 + 42, 0x00ffffffu);
}
static void m_size_outside(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put32(d + z->cd + 20, 0x7ffffff0u);
}
static void m_nul_name(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  d[z->cd + 46 + 1] = 0;
}
static void m_dotdot_name(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  memcpy(d + z->rec2 + 46, "../ab", 5);
}
static void m_name_twice(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  d[z->rec2 + 46] = 'a';
}
static void m_disks(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put16(d + z->eocd + 4, 1);
}
static void m_cd_short(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put32(d + z->eocd + 12, get32(d + z->eocd + 12) - 10);
}
static void m_zip64_no_locator(small_zip *z, unsigned char *d, size_t *len) {
  (void)len;
  put32(d + z->eocd + 16, 0xffffffffu);
}
static void m_truncated(small_zip *z, unsigned char *d, size_t *len) {
  (void)z;
  (void)d;
  *len -= 10;
}

static void test_crafted(void) {
  char path[512], bad[512];
  at(path, sizeof path, "small.zip");
  at(bad, sizeof bad, "crafted.zip");
  small_zip z;
  if (!small_zip_make(&z, path)) {
    CHECK(0, "a small archive to craft from");
    return;
  }
  static const mutation ms[] = {
      {"a directory past the archive's end", "central directory outside the archive", m_cd_outside},
      {"more entries than the directory holds", "more entries than the central directory holds", m_too_many},
      {"an entry's local header past the directory", "lies outside the archive's entries", m_offset_outside},
      {"an entry's size past the directory", "lies outside the archive's entries", m_size_outside},
      {"a NUL byte in a name", "(a NUL byte in it)", m_nul_name},
      {"a '..' name", "unsafe entry name '../ab'", m_dotdot_name},
      {"a name twice", "entry name 'a.bin' twice", m_name_twice},
      {"an archive on several disks", "several disks", m_disks},
      {"a directory shorter than its records", "central directory truncated", m_cd_short},
      {"a zip64 directory offset without the zip64 end records", "zip64 end locator missing", m_zip64_no_locator},
      {"an archive cut short", "no end of central directory", m_truncated},
  };
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    unsigned char *d = malloc(z.len);
    memcpy(d, z.data, z.len);
    size_t len = z.len;
    ms[i].apply(&z, d, &len);
    chb_error err;
    chb_zip_reader *r = open_bytes(bad, d, len, &err);
    CHECK(!r && err.code == CHB_CORRUPT && strstr(err.msg, ms[i].expect) && strstr(err.msg, bad),
          "refused: %s (%s)", ms[i].what, r ? "opened" : err.msg);
    chb_zip_reader_close(r);
    free(d);
  }
  /* a local header that does not match its central record: refused when the entry is opened */
  unsigned char *d = malloc(z.len);
  memcpy(d, z.data, z.len);
  d[z.local2 + 30] = 'x';
  chb_error err;
  chb_zip_reader *r = open_bytes(bad, d, z.len, &err);
  chb_zip_file *f = r ? chb_zip_file_open(r, "b.bin", &err) : NULL;
  CHECK(r && !f && err.code == CHB_CORRUPT && strstr(err.msg, "bad local header") && strstr(err.msg, "b.bin"),
        "an entry whose local header names another file is refused when opened (%s)", f ? "opened" : err.msg);
  chb_zip_file_close(f);
  chb_zip_reader_close(r);
  free(d);
  /* random flips of 1-4 bytes in the directory and end record: never a crash */
  uint64_t x = 88172645463325252ull;
  size_t refused = 0, opened = 0, region = z.len - z.cd;
  const int ROUNDS = 3000;
  for (int round = 0; round < ROUNDS; round++) {
    unsigned char *m = malloc(z.len);
    memcpy(m, z.data, z.len);
    int flips = 1 + round % 4;
    for (int k = 0; k < flips; k++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      m[z.cd + x % region] ^= (unsigned char)(1 + (x >> 32) % 255);
    }
    r = open_bytes(bad, m, z.len, &err);
    if (!r) {
      refused += err.code == CHB_CORRUPT && strstr(err.msg, bad) != NULL;
    } else {
      opened++;
      for (size_t i = 0; i < chb_zip_reader_count(r); i++) free(our_bytes(r, i, 5));
      chb_zip_reader_close(r);
    }
    free(m);
  }
  CHECK(refused + opened == (size_t)ROUNDS && refused > 0 && opened > 0,
        "%d directories with random flips: %zu refused naming the archive, %zu opened and read; no crash",
        ROUNDS, refused, opened);
  unlink(bad);
  free(z.data);
}

/* ---- a catalog past its budget ---- */

static void test_spilled(void) {
  char path[512];
  at(path, sizeof path, "many.zip");
  chb_zip_writer_opts o = {"store", 0, 0, NULL, 1, 0, 0};
  chb_error err;
  chb_zip_writer *w = chb_zip_writer_new(path, &o, &err);
  const size_t N = 70000;
  int ok = w != NULL;
  char name[96];
  for (size_t i = 0; ok && i < N; i++) {
    snprintf(name, sizeof name, "data/db/t/all_%zu_%zu_0/c%zu.bin", i / 10, i / 10, i % 10);
    ok = chb_zip_writer_add_bytes(w, name, &i, sizeof i, &err) == (long)i;
  }
  ok = ok && chb_zip_writer_finish(w, &err) == 0;
  chb_zip_writer_free(w);
  int fd = open(path, O_RDONLY);
  chb_zip_cd cd;
  ok = ok && fd >= 0 && chb_zip_cd_read(fd, path, 64 << 10, &cd, &err) == 0;
  size_t found = 0;
  uint64_t last = 0;
  for (size_t i = 0; ok && i < N; i++) {
    snprintf(name, sizeof name, "data/db/t/all_%zu_%zu_0/c%zu.bin", i / 10, i / 10, i % 10);
    long k = chb_catalog_find(cd.entries, name, strlen(name));
    chb_zip_cd_entry e;
    if (k == (long)i && chb_catalog_get(cd.entries, (size_t)k, &e, NULL, 0, NULL) == 0 && e.size == sizeof i &&
        (i == 0 || e.header_offset > last))
      found++;
    last = e.header_offset;
  }
  size_t mem = ok ? chb_catalog_memory(cd.entries) : 0;
  CHECK(ok && found == N && mem < (96 << 10),
        "%zu entries in a catalog of a 64 KiB budget: every one found by name, %zu KiB in memory", N,
        mem >> 10);
  if (ok) chb_zip_cd_free(&cd);
  if (fd >= 0) close(fd);
  unlink(path);
}

int main(void) {
  test_begin(root);
  test_matches_libzip();
  test_crafted();
  test_spilled();
  return test_end(root);
}
