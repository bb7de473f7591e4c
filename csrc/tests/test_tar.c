/*
 * Tar archives (chb_tar.h): the writer's format and suffixes, its checks
 * (sizes, checksums, names, an existing archive), the index and its
 * offsets, reading entries through the cursor in and out of archive order
 * and as source pieces, corrupted or truncated archives, a name twice,
 * and lookups among many names.
 * Everything lives in a mkdtemp directory under /tmp, removed at the end.
 */
#include "chb_hash.h"
#include "chb_source.h"
#include "chb_tar.h"
#include "test_util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char root[] = "/tmp/chb-test-tar-XXXXXX";

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", root, name); }

/* Writes an archive of three entries: bytes, a file's range, an empty one. */
static int write_three(const char *archive, const char *src, const unsigned char *data, chb_error *err) {
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, err);
  if (!w) return -1;
  chb_piece p = {src, 1000, 50000};
  chb_hash hs;
  chb_hash_init(&hs);
  chb_hash_update(&hs, data + 1000, 50000);
  chb_u128 h = chb_hash_peek(&hs);
  int rc = chb_tar_writer_add_bytes(w, "a.txt", "hello", 5, err) < 0 ||
                   chb_tar_writer_add(w, "dir/b.bin", &p, 1, 50000, &h, err) < 0 ||
                   chb_tar_writer_add_bytes(w, "empty", "", 0, err) < 0 || chb_tar_writer_finish(w, err) != 0
               ? -1
               : 0;
  chb_tar_writer_free(w);
  return rc;
}

/* Reads `entry` of `archive` through this thread's cursor. */
static unsigned char *read_entry(const char *archive, const char *entry, size_t *len, chb_error *err) {
  chb_tar_file *f = chb_tar_open_cached(archive, 0, entry, err);
  if (!f) return NULL;
  size_t cap = (size_t)chb_tar_file_size(f) + 1, got = 0;
  unsigned char *buf = malloc(cap);
  for (;;) {
    ssize_t n = chb_tar_file_read(f, buf + got, cap - got, err);
    if (n < 0) {
      free(buf);
      chb_tar_file_close(f);
      return NULL;
    }
    if (n == 0) break;
    got += (size_t)n;
  }
  chb_tar_file_close(f);
  *len = got;
  return buf;
}

static void test_round_trips(const char *src, const unsigned char *data) {
  static const char *const names[] = {"t.tar", "t.tar.gz", "t.tgz", "t.tar.zst", "t.tzst",
                                      "t.tar.xz", "t.tar.bz2", "t.tar.lzma"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char archive[512];
    path_of(archive, sizeof archive, names[i]);
    chb_error err;
    int ok = write_three(archive, src, data, &err) == 0;
    CHECK(ok, "%s written (%s)", names[i], ok ? "" : err.msg);
    chb_tar_index *x = chb_tar_index_open(archive, 0, &err);
    CHECK(x && chb_tar_index_count(x) == 3, "%s indexed: 3 entries", names[i]);
    if (!x) continue;
    CHECK(chb_tar_index_compressed(x) == (i != 0), "%s: compressed %d", names[i], chb_tar_index_compressed(x));
    const chb_tar_entry *b = chb_tar_index_find(x, "dir/b.bin");
    CHECK(b && b->size == 50000, "%s: dir/b.bin has 50000 bytes", names[i]);
    if (i == 0 && b) {   /* a plain tar: the offset is the file's */
      size_t len;
      unsigned char *whole = slurp(archive, &len);
      CHECK(whole && b->offset + 50000 <= len && memcmp(whole + b->offset, data + 1000, 50000) == 0,
            "t.tar: dir/b.bin's offset %llu is where its bytes are", (unsigned long long)b->offset);
      CHECK(whole && memcmp(whole + 257, "ustar\0" "00", 8) == 0, "t.tar: ustar headers (pax restricted)");
      free(whole);
    }
    /* out of archive order: the cursor reopens */
    size_t len = 0;
    unsigned char *got = read_entry(archive, "dir/b.bin", &len, &err);
    CHECK(got && len == 50000 && memcmp(got, data + 1000, len) == 0, "%s: dir/b.bin read back", names[i]);
    free(got);
    got = read_entry(archive, "a.txt", &len, &err);
    CHECK(got && len == 5 && memcmp(got, "hello", 5) == 0, "%s: a.txt read back (before the cursor)", names[i]);
    free(got);
    got = read_entry(archive, "empty", &len, &err);
    CHECK(got && len == 0, "%s: empty read back", names[i]);
    free(got);
    CHECK(!read_entry(archive, "nope", &len, &err) && err.code == CHB_ENOENT, "%s: a missing entry: ENOENT",
          names[i]);
    /* as a source piece, from an offset */
    chb_piece p = {archive, 10, 100, "dir/b.bin"};
    chb_source *s = chb_source_open(&p, 1, &err);
    unsigned char buf[200];
    size_t n = 0;
    ssize_t k;
    while (s && (k = chb_source_read(s, buf + n, sizeof buf - n, &err)) > 0) n += (size_t)k;
    CHECK(n == 100 && memcmp(buf, data + 1010, 100) == 0, "%s: a piece of an entry reads its range", names[i]);
    chb_source_close(s);
    chb_tar_index_close(x);
  }
}

static void test_refusals(const char *src, const unsigned char *data) {
  char archive[512];
  chb_error err;
  path_of(archive, sizeof archive, "t.tar");
  CHECK(!chb_tar_writer_new(archive, NULL, &err) && err.code == CHB_EEXIST, "an existing archive: EEXIST");
  path_of(archive, sizeof archive, "t.rar");
  CHECK(!chb_tar_writer_new(archive, NULL, &err) && err.code == CHB_INVALID, "not a tar suffix: INVALID");
  path_of(archive, sizeof archive, "bad.tar.zst");
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_add_bytes(w, "../x", "x", 1, &err) < 0 && err.code == CHB_INVALID,
        "an unsafe name: INVALID");
  chb_piece p = {src, 0, 100};
  chb_u128 wrong = {1, 2};
  chb_tar_writer_add(w, "x", &p, 1, 100, &wrong, &err);
  CHECK(chb_tar_writer_finish(w, &err) != 0 && err.code == CHB_CORRUPT && strstr(err.msg, "checksum"),
        "a wrong checksum fails the archive, naming it (%s)", err.msg);
  CHECK(!exists(archive), "and leaves no archive");
  chb_tar_writer_free(w);
  w = chb_tar_writer_new(archive, NULL, &err);
  chb_tar_writer_add(w, "x", &p, 1, 99, NULL, &err);
  CHECK(chb_tar_writer_finish(w, &err) != 0 && err.code == CHB_CORRUPT, "a longer source than its size fails");
  chb_tar_writer_free(w);
  w = chb_tar_writer_new(archive, NULL, &err);
  chb_tar_writer_add_bytes(w, "x", "1", 1, &err);
  chb_tar_writer_add_bytes(w, "x", "2", 1, &err);
  CHECK(chb_tar_writer_finish(w, &err) != 0 && err.code == CHB_EEXIST, "a name added twice: EEXIST");
  chb_tar_writer_free(w);
  CHECK(!exists(archive), "no archive left by failed writers");
  (void)data;
}

static void test_corrupt(void) {
  char archive[512], bad[512];
  chb_error err;
  const char *names[] = {"t.tar", "t.tar.zst", "t.tar.gz"};
  for (size_t i = 0; i < 3; i++) {
    path_of(archive, sizeof archive, names[i]);
    size_t len = 0;
    unsigned char *whole = slurp(archive, &len);
    snprintf(bad, sizeof bad, "%s/short-%s", root, names[i]);
    spit(bad, whole, len / 2);
    chb_tar_index *x = chb_tar_index_open(bad, 0, &err);
    CHECK(!x && err.code == CHB_CORRUPT && strstr(err.msg, bad), "a truncated %s: CORRUPT, naming it (%s)",
          names[i], x ? "" : err.msg);
    chb_tar_index_close(x);
    free(whole);
  }
}

/* A name twice (two archives' entries joined) is refused; many names are
 * each found by their own lookup. */
static void test_names(void) {
  char archive[512], twice[512], name[32];
  chb_error err;
  path_of(archive, sizeof archive, "one.tar");
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_add_bytes(w, "x", "1", 1, &err) >= 0 && chb_tar_writer_finish(w, &err) == 0,
        "an archive of one entry");
  chb_tar_writer_free(w);
  size_t len = 0;
  unsigned char *one = slurp(archive, &len);
  CHECK(len == 2048, "one entry: header, data block, end of archive (%zu bytes)", len);
  unsigned char *two = malloc(2 * len - 1024);
  memcpy(two, one, len - 1024);   /* without its end-of-archive blocks */
  memcpy(two + len - 1024, one, len);
  path_of(twice, sizeof twice, "twice.tar");
  spit(twice, two, 2 * len - 1024);
  chb_tar_index *x = chb_tar_index_open(twice, 0, &err);
  CHECK(!x && err.code == CHB_CORRUPT && strstr(err.msg, "two entries named x") && strstr(err.msg, twice),
        "a name twice: CORRUPT, naming archive and entry (%s)", x ? "" : err.msg);
  chb_tar_index_close(x);
  free(one);
  free(two);

  path_of(archive, sizeof archive, "many.tar.gz");
  w = chb_tar_writer_new(archive, NULL, &err);
  int added = 0;
  for (int i = 0; w && i < 3000; i++) {
    snprintf(name, sizeof name, "part_%d/c.bin", i);
    added += chb_tar_writer_add_bytes(w, name, name, strlen(name), &err) >= 0;
  }
  CHECK(added == 3000 && chb_tar_writer_finish(w, &err) == 0, "3000 entries written");
  chb_tar_writer_free(w);
  x = chb_tar_index_open(archive, 0, &err);
  int found = 0;
  for (int i = 0; x && i < 3000; i++) {
    snprintf(name, sizeof name, "part_%d/c.bin", i);
    const chb_tar_entry *e = chb_tar_index_find(x, name);
    found += e && e == chb_tar_index_get(x, (size_t)i) && e->data && memcmp(e->data, name, strlen(name)) == 0;
  }
  CHECK(found == 3000, "each of 3000 entries found by name, with its bytes (%d)", found);
  CHECK(x && !chb_tar_index_find(x, "part_3000/c.bin") && !chb_tar_index_find(x, "part_1"),
        "names not in the archive are not found");
  chb_tar_index_close(x);
}

int main(void) {
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 2;
  }
  char src[512];
  path_of(src, sizeof src, "src.bin");
  unsigned char *data = gen_random(7, 100000);
  spit(src, data, 100000);
  test_round_trips(src, data);
  test_refusals(src, data);
  test_corrupt();
  test_names();
  chb_tar_cache_clear();
  free(data);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) failures++;
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
