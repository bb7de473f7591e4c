/*
 * chb_source: pieces read as one stream. Plain files (whole, byte ranges,
 * several pieces in order), entries of zip archives (ranges, and the rest
 * of the entry still read so that its CRC is checked), files of encrypted
 * directory backups, confinement below a root (a symbolic link refused),
 * "shorter than expected", cancellation, and chb_source_size.
 */
#include "chb_cipher.h"
#include "chb_source.h"
#include "chb_zip.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char root[] = "/tmp/chb-test-source.XXXXXX";

static const char *at(char *buf, size_t n, const char *rel) {
  snprintf(buf, n, "%s/%s", root, rel);
  return buf;
}

/* Reads a whole source in chunks of `chunk` bytes; NULL (err set) on error. */
static unsigned char *drain(chb_source *s, size_t chunk, size_t *len, chb_error *err) {
  size_t cap = 1 << 16, n = 0;
  unsigned char *out = malloc(cap);
  for (;;) {
    if (n + chunk > cap) out = realloc(out, cap = (n + chunk) * 2);
    ssize_t k = chb_source_read(s, out + n, chunk, err);
    if (k < 0) {
      free(out);
      return NULL;
    }
    if (k == 0) break;
    n += (size_t)k;
  }
  *len = n;
  return out;
}

/* Reads pieces whole; *len bytes, or NULL with err set. */
static unsigned char *read_pieces(const chb_piece *p, size_t np, size_t chunk, size_t *len,
                                  chb_error *err) {
  chb_source *s = chb_source_open(p, np, err);
  if (!s) return NULL;
  unsigned char *out = drain(s, chunk, len, err);
  chb_source_close(s);
  return out;
}

static void test_files_and_ranges(void) {
  char a[512], b[512];
  unsigned char *da = gen_random(1, 100000), *db = gen_random(2, 5000);
  spit(at(a, sizeof a, "a.bin"), da, 100000);
  spit(at(b, sizeof b, "b.bin"), db, 5000);
  chb_error err;
  size_t len;
  chb_piece whole = {a, 0, -1, NULL, NULL, NULL, NULL, NULL};
  unsigned char *got = read_pieces(&whole, 1, 4096, &len, &err);
  CHECK(got && len == 100000 && memcmp(got, da, len) == 0, "a whole file reads back equal");
  free(got);
  /* A tail of a, then a range of b: one stream, in order. */
  chb_piece two[2] = {{a, 99000, -1, NULL, NULL, NULL, NULL, NULL},
                      {b, 100, 3000, NULL, NULL, NULL, NULL, NULL}};
  got = read_pieces(two, 2, 777, &len, &err);
  unsigned char *want = malloc(4000);
  memcpy(want, da + 99000, 1000);
  memcpy(want + 1000, db + 100, 3000);
  CHECK(got && len == 4000 && same(hash_of(got, len), hash_of(want, 4000)),
        "a tail and a range of two files: the checksum of the expected bytes");
  free(got);
  chb_source *s = chb_source_open(two, 2, &err);
  uint64_t size = 0;
  CHECK(s && chb_source_size(s, &size, &err) == 0 && size == 4000, "size without reading: %llu",
        (unsigned long long)size);
  chb_source_close(s);
  /* A range past the end of the file. */
  chb_piece past = {b, 4000, 2000, NULL, NULL, NULL, NULL, NULL};
  got = read_pieces(&past, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_CORRUPT && strstr(err.msg, "shorter than expected") &&
            strstr(err.msg, "b.bin") && strstr(err.msg, "1000 bytes missing"),
        "a range past the end: CORRUPT naming the file (%s)", err.msg);
  chb_piece missing = {"/nonexistent/chb-source", 0, -1, NULL, NULL, NULL, NULL, NULL};
  got = read_pieces(&missing, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_ENOENT, "a missing file: ENOENT (%s)", err.msg);
  free(want);
  free(da);
  free(db);
}

static void test_zip_entries(void) {
  char zpath[512], f[512];
  unsigned char *data = gen_random(3, 200000);
  spit(at(f, sizeof f, "entry.bin"), data, 200000);
  chb_zip_writer_opts o = {0};
  o.method = "deflate";
  chb_error err;
  chb_zip_writer *w = chb_zip_writer_new(at(zpath, sizeof zpath, "a.zip"), &o, &err);
  chb_piece src = {f, 0, -1, NULL, NULL, NULL, NULL, NULL};
  int ok = w && chb_zip_writer_add(w, "x/entry.bin", &src, 1, -1, NULL, &err) == 0 &&
           chb_zip_writer_finish(w, &err) == 0;
  chb_zip_writer_free(w);
  CHECK(ok, "a zip archive to read entries from (%s)", ok ? "" : err.msg);
  size_t len;
  chb_piece range = {zpath, 1000, 5000, "x/entry.bin", NULL, NULL, NULL, NULL};
  unsigned char *got = read_pieces(&range, 1, 1, &len, &err);
  CHECK(got && len == 5000 && memcmp(got, data + 1000, 5000) == 0,
        "a range of a zip entry, read a byte at a time, equals the file's bytes");
  free(got);
  chb_piece whole = {zpath, 0, -1, "x/entry.bin", NULL, NULL, NULL, NULL};
  chb_source *s = chb_source_open(&whole, 1, &err);
  uint64_t size = 0;
  CHECK(s && chb_source_size(s, &size, &err) == 0 && size == 200000,
        "the size of a zip entry, from the directory: %llu", (unsigned long long)size);
  chb_source_close(s);
  chb_piece beyond = {zpath, 300000, -1, "x/entry.bin", NULL, NULL, NULL, NULL};
  got = read_pieces(&beyond, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_CORRUPT && strstr(err.msg, "entry x/entry.bin of") &&
            strstr(err.msg, "shorter than expected"),
        "an offset past the entry's end: CORRUPT naming entry and archive (%s)", err.msg);
  chb_piece none = {zpath, 0, -1, "nope", NULL, NULL, NULL, NULL};
  got = read_pieces(&none, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_ENOENT, "a missing entry: ENOENT (%s)", err.msg);
  /* A flipped byte in the stored data: the CRC is checked even when the
   * piece stops short of the entry's end. */
  size_t zlen;
  unsigned char *z = slurp(zpath, &zlen);
  char bad[512];
  at(bad, sizeof bad, "bad.zip");
  if (z && zlen > 60000) {
    z[zlen / 2] ^= 0x55;
    spit(bad, z, zlen);
  }
  free(z);
  chb_piece head = {bad, 0, 10, "x/entry.bin", NULL, NULL, NULL, NULL};
  got = read_pieces(&head, 1, 4096, &len, &err);
  CHECK(!got && (err.code == CHB_CORRUPT) && strstr(err.msg, "x/entry.bin"),
        "a damaged entry fails even when only its first 10 bytes are asked for (%s)", err.msg);
  chb_zip_cache_clear();
  free(data);
}

static void test_encrypted(void) {
  unsigned char key[CHB_CIPHER_KEY_LEN];
  memset(key, 7, sizeof key);
  unsigned char *plain = gen_random(4, 150000);
  size_t sealed_len = (size_t)chb_cipher_sealed_size(150000);
  unsigned char *sealed = malloc(sealed_len);
  chb_error err;
  CHECK(chb_cipher_seal_buffer(key, "data/f.bin", plain, 150000, sealed, &err) == 0, "sealed a buffer");
  char p[512];
  spit(at(p, sizeof p, "sealed.bin"), sealed, sealed_len);
  size_t len;
  chb_piece piece = {p, 70000, 50000, NULL, NULL, key, "data/f.bin", NULL};
  unsigned char *got = read_pieces(&piece, 1, 8192, &len, &err);
  CHECK(got && len == 50000 && memcmp(got, plain + 70000, 50000) == 0,
        "a plaintext range of an encrypted file, across chunks");
  free(got);
  chb_source *s = chb_source_open(&(chb_piece){p, 100, -1, NULL, NULL, key, "data/f.bin", NULL}, 1, &err);
  uint64_t size = 0;
  CHECK(s && chb_source_size(s, &size, &err) == 0 && size == 150000 - 100,
        "plaintext size from the sealed size: %llu", (unsigned long long)size);
  chb_source_close(s);
  chb_piece wrong = {p, 0, -1, NULL, NULL, key, "data/other.bin", NULL};
  got = read_pieces(&wrong, 1, 8192, &len, &err);
  CHECK(!got && err.code == CHB_CORRUPT, "another name (aad) does not authenticate (%s)", err.msg);
  free(plain);
  free(sealed);
}

static void test_confined(void) {
  char dir[512], file[600], link[600], via[700];
  at(dir, sizeof dir, "backup");
  mkdir(dir, 0755);
  snprintf(file, sizeof file, "%s/real.bin", dir);
  unsigned char *data = gen_random(5, 3000);
  spit(file, data, 3000);
  snprintf(link, sizeof link, "%s/link.bin", dir);
  CHECK(symlink(file, link) == 0, "a symbolic link below the root");
  chb_error err;
  size_t len;
  chb_piece ok = {file, 0, -1, NULL, NULL, NULL, NULL, dir};
  unsigned char *got = read_pieces(&ok, 1, 4096, &len, &err);
  CHECK(got && len == 3000 && memcmp(got, data, 3000) == 0, "a file below its root reads");
  free(got);
  chb_piece bad = {link, 0, -1, NULL, NULL, NULL, NULL, dir};
  got = read_pieces(&bad, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_INVALID && strstr(err.msg, "symbolic link"),
        "a symbolic link below the root is refused, not followed (%s)", err.msg);
  chb_piece plain = {link, 0, -1, NULL, NULL, NULL, NULL, NULL};
  got = read_pieces(&plain, 1, 4096, &len, &err);
  CHECK(got && len == 3000, "without a root the same link is followed");
  free(got);
  snprintf(via, sizeof via, "%s/../backup/real.bin", dir);
  chb_piece dots = {via, 0, -1, NULL, NULL, NULL, NULL, dir};
  CHECK(chb_pieces_check(&dots, 1, &err) == 0, "a '..' path is below its root by prefix");
  got = read_pieces(&dots, 1, 4096, &len, &err);
  CHECK(!got && err.code == CHB_INVALID, "but a '..' component is refused when read (%s)", err.msg);
  chb_piece outside = {"/etc/hostname", 0, -1, NULL, NULL, NULL, NULL, dir};
  CHECK(chb_pieces_check(&outside, 1, &err) != 0 && err.code == CHB_INVALID,
        "a piece not below its root fails the check (%s)", err.msg);
  free(data);
}

static void test_cancel(void) {
  char p[512];
  unsigned char *data = gen_random(6, 10000);
  spit(at(p, sizeof p, "c.bin"), data, 10000);
  chb_error err;
  atomic_int stop = 0;
  chb_piece piece = {p, 0, -1, NULL, NULL, NULL, NULL, NULL};
  chb_source *s = chb_source_open(&piece, 1, &err);
  chb_source_set_cancel(s, &stop);
  unsigned char buf[1000];
  ssize_t first = chb_source_read(s, buf, sizeof buf, &err);
  atomic_store(&stop, 1);
  ssize_t second = chb_source_read(s, buf, sizeof buf, &err);
  CHECK(first == 1000 && second < 0 && err.code == CHB_CANCELLED && strstr(err.msg, "c.bin"),
        "a set stop flag fails the next read, naming the file (%s)", err.msg);
  chb_source_close(s);
  free(data);
}

int main(void) {
  test_begin(root);
  test_files_and_ranges();
  test_zip_entries();
  test_encrypted();
  test_confined();
  test_cancel();
  return test_end(root);
}
