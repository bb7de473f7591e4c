/*
 * Tar archives (chb_tar.h): the writer's format and suffixes, its checks
 * (sizes, checksums, names, an existing archive), the index and its
 * offsets, reading entries through the cursor in and out of archive order
 * and as source pieces, corrupted or truncated archives, a name twice,
 * and lookups among many names; an index past its catalog's budget (each
 * entry found by name, memory within the budget, a temporary file that
 * cannot be made); a compressed archive's spool (memory not growing with
 * its entries, no spool possible, an entry cut short, reads in reverse
 * order on two threads decompressing it once). Streaming mode (begin, wait_drained, start as the end
 * of input): the same bytes as batch mode, a failure or a cancel
 * mid-stream (later adds get the error, no archive is left), and records
 * bounded by the batch over 200,000 entries.
 * Everything lives in a mkdtemp directory under /tmp, removed at the end.
 */
#include "chb_catalog.h"
#include "chb_hash.h"
#include "chb_source.h"
#include "chb_tar.h"
#include "test_util.h"

#include <dirent.h>
#include <malloc.h>
#include <pthread.h>
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

/* Does entry `name` of `archive` read back as bytes[0, len)? */
static int entry_is(const char *archive, const char *name, const void *bytes, size_t len) {
  chb_error err;
  size_t got_len = 0;
  unsigned char *got = read_entry(archive, name, &got_len, &err);
  int ok = got && got_len == len && memcmp(got, bytes, len) == 0;
  free(got);
  return ok;
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
    chb_tar_entry b;
    long bi = chb_tar_index_find(x, "dir/b.bin", &b, &err);
    CHECK(bi == 1 && b.size == 50000, "%s: dir/b.bin, the second entry, has 50000 bytes", names[i]);
    if (i == 0 && bi == 1) {   /* a plain tar: the offset is the file's */
      size_t len;
      unsigned char *whole = slurp(archive, &len);
      CHECK(whole && b.offset + 50000 <= len && memcmp(whole + b.offset, data + 1000, 50000) == 0,
            "t.tar: dir/b.bin's offset %llu is where its bytes are", (unsigned long long)b.offset);
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
    chb_tar_entry e, g;
    char got[32];
    found += chb_tar_index_find(x, name, &e, &err) == i &&
             chb_tar_index_get(x, (size_t)i, &g, got, sizeof got, NULL, &err) == 0 && strcmp(got, name) == 0 &&
             g.offset == e.offset && entry_is(archive, name, name, strlen(name));
  }
  CHECK(found == 3000, "each of 3000 entries found by name, with its bytes (%d)", found);
  CHECK(x && chb_tar_index_find(x, "part_3000/c.bin", NULL, &err) == -1 &&
            chb_tar_index_find(x, "part_1", NULL, &err) == -1 && chb_tar_index_get(x, 3000, NULL, NULL, 0, NULL, &err) == -1,
        "names not in the archive are not found, nor entry 3000");
  chb_tar_index_close(x);
}

/* ---- an index past its budget ------------------------------------------ */

enum { SPILL_N = 20000, SPILL_BUDGET = 64 << 10 };

/* Entry i of the spill tests: parts of 20 files (as a wide part's), each
 * holding its own name, every 7th empty. */
static size_t spill_name(int i, char *name, size_t cap) {
  int n = snprintf(name, cap, "store/%03d/all_%d_%d_0/c%02d.bin", i / 20 % 1000, i / 20, i / 20, i % 20);
  return i % 7 == 3 ? 0 : (size_t)n;
}

static int write_spill(const char *archive, chb_error *err) {
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, err);
  char name[64];
  int added = 0;
  for (int i = 0; w && i < SPILL_N; i++) {
    size_t len = spill_name(i, name, sizeof name);
    added += chb_tar_writer_add_bytes(w, name, name, len, err) == i;
  }
  int rc = added == SPILL_N && chb_tar_writer_finish(w, err) == 0 ? 0 : -1;
  chb_tar_writer_free(w);
  return rc;
}

/* Is every entry found by its name, the same as by its number, with its
 * bytes (at its offset of the plain tar `whole`, or read from the spool)? */
static int spill_all_found(chb_tar_index *x, const char *archive, const unsigned char *whole, size_t whole_len) {
  int ok = 0;
  chb_error err;
  for (int i = 0; i < SPILL_N; i++) {
    char name[64], got[64];
    size_t len = spill_name(i, name, sizeof name), got_len;
    chb_tar_entry e, g;
    if (chb_tar_index_find(x, name, &e, &err) != i ||
        chb_tar_index_get(x, (size_t)i, &g, got, sizeof got, &got_len, &err) != 0)
      continue;
    int bytes_ok = whole ? e.offset + len <= whole_len && memcmp(whole + e.offset, name, len) == 0
                         : entry_is(archive, name, name, len);
    ok += e.size == len && g.size == len && g.offset == e.offset && got_len == strlen(name) &&
          strcmp(got, name) == 0 && bytes_ok;
  }
  return ok;
}

/* 20,000 entries indexed with a catalog budget of 64 KiB (their records
 * alone are over 1 MiB): each is found, with the right size, offset and
 * bytes, and the index holds its budget of pages, not a record an
 * entry. */
static void test_index_spill(void) {
  static const char *const names[] = {"spill.tar", "spill.tar.zst"};
  for (int k = 0; k < 2; k++) {
    char archive[512];
    path_of(archive, sizeof archive, names[k]);
    chb_error err;
    CHECK(write_spill(archive, &err) == 0, "%s: %d entries written", names[k], SPILL_N);
    size_t whole_len = 0;
    unsigned char *whole = k == 0 ? slurp(archive, &whole_len) : NULL;
    chb_tar_index *all = chb_tar_index_open(archive, 0, &err);
    chb_tar_index *x = chb_tar_index_open_budget(archive, 0, SPILL_BUDGET, &err);
    CHECK(x && chb_tar_index_count(x) == SPILL_N, "%s: indexed in a budget of %d KiB (%s)", names[k],
          SPILL_BUDGET >> 10, x ? "ok" : err.msg);
    if (!x || !all) {
      chb_tar_index_close(all);
      chb_tar_index_close(x);
      free(whole);
      continue;
    }
    int found = spill_all_found(x, archive, whole, whole_len);
    CHECK(found == SPILL_N, "%s: every entry found by name, with its size, offset and bytes (%d)", names[k], found);
    /* Beside the pages, their tables (a few bytes a page); a compressed
     * archive's bytes are in its spool, not in memory. */
    size_t mem = chb_tar_index_memory(x), bound = SPILL_BUDGET + (64 << 10);
    CHECK(mem <= bound, "%s: %zu bytes in memory, within the budget and a bound (%zu)", names[k], mem, bound);
    CHECK(chb_tar_index_memory(all) > mem + (1 << 20), "%s: paged out: %zu bytes in memory with the default budget",
          names[k], chb_tar_index_memory(all));
    CHECK(chb_tar_index_find(x, "store/000/all_0_0_0/c20.bin", NULL, &err) == -1 &&
              chb_tar_index_get(x, SPILL_N, NULL, NULL, 0, NULL, &err) == -1,
          "%s: a name not there and a number out of range: -1", names[k]);
    chb_tar_index_close(all);
    chb_tar_index_close(x);
    free(whole);
  }
  /* The temporary file cannot be made: the index fails, naming the archive
   * and the file's error (not a missing entry, not a crash). */
  char archive[512];
  path_of(archive, sizeof archive, names[0]);
  const char *tmp = getenv("TMPDIR");
  char *saved = tmp ? strdup(tmp) : NULL;
  setenv("TMPDIR", "/nonexistent/chb-test-tar", 1);
  chb_error err;
  chb_tar_index *x = chb_tar_index_open_budget(archive, 0, SPILL_BUDGET, &err);
  CHECK(!x && err.code == CHB_EIO && strstr(err.msg, archive) && strstr(err.msg, "temporary file"),
        "no temporary file: EIO, naming the archive (%s)", x ? "" : err.msg);
  chb_tar_index_close(x);
  if (saved) setenv("TMPDIR", saved, 1);
  else unsetenv("TMPDIR");
  free(saved);
}

/* A compressed archive's data goes to its spool, not to memory: 1,100
 * entries of 64 KiB (70 MB) and 50,000 empty ones; each is found and reads
 * back. No spool can be made (TMPDIR missing): EIO naming the archive and
 * the directory. An entry cut short: CORRUPT naming archive and entry. */
static void test_spool_bound(void) {
  enum { BIG = 1100, EMPTY = 50000, KIB64 = 64 << 10 };
  char archive[512], name[64];
  path_of(archive, sizeof archive, "spool-bound.tar.zst");
  chb_error err;
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  unsigned char *bytes = gen_random(11, KIB64 + BIG);
  int added = 0;
  for (int i = 0; w && i < BIG + EMPTY; i++) {
    snprintf(name, sizeof name, "p/%05d/%d.%s", i / 10, i % 10, i < BIG ? "bin" : "txt");
    added += chb_tar_writer_add_bytes(w, name, bytes + (i < BIG ? i : 0), i < BIG ? KIB64 : 0, &err) == i;
  }
  CHECK(added == BIG + EMPTY && chb_tar_writer_finish(w, &err) == 0, "spool-bound.tar.zst: written");
  chb_tar_writer_free(w);
  chb_tar_index *x = chb_tar_index_open(archive, 0, &err);
  int found = 0, same = 0;
  for (int i = 0; x && i < BIG + EMPTY; i++) {
    chb_tar_entry e;
    snprintf(name, sizeof name, "p/%05d/%d.%s", i / 10, i % 10, i < BIG ? "bin" : "txt");
    found += chb_tar_index_find(x, name, &e, &err) == i;
    if (i < BIG || i % 1000 == 0) same += entry_is(archive, name, bytes + (i < BIG ? i : 0), i < BIG ? KIB64 : 0);
  }
  size_t mem = x ? chb_tar_index_memory(x) : 0;
  CHECK(found == BIG + EMPTY && same == BIG + EMPTY / 1000, "spool-bound.tar.zst: all found, %d read back", same);
  CHECK(x && chb_tar_index_spooled(x) == (uint64_t)BIG * KIB64, "spool-bound.tar.zst: %llu bytes spooled",
        (unsigned long long)(x ? chb_tar_index_spooled(x) : 0));
  CHECK(x && mem <= CHB_CATALOG_BUDGET + (1 << 20),
        "spool-bound.tar.zst: %zu bytes in memory: the catalog's budget at most, not the entries'", mem);
  chb_tar_index_close(x);

  const char *tmp = getenv("TMPDIR");
  char *saved = tmp ? strdup(tmp) : NULL;
  setenv("TMPDIR", "/nonexistent/chb-test-tar", 1);
  x = chb_tar_index_open(archive, 0, &err);
  CHECK(!x && err.code == CHB_EIO && strstr(err.msg, archive) && strstr(err.msg, "/nonexistent/chb-test-tar"),
        "no spool: EIO, naming the archive and the directory (%s)", x ? "" : err.msg);
  chb_tar_index_close(x);
  if (saved) setenv("TMPDIR", saved, 1);
  else unsetenv("TMPDIR");
  free(saved);
  unlink(archive);

  /* one incompressible entry of 4 MiB, the archive cut inside its data
   * (well after the decompressor's read-ahead of its header) */
  char cut[512];
  path_of(archive, sizeof archive, "cut.tar.gz");
  unsigned char *big = gen_random(17, (size_t)4 << 20);
  w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_add_bytes(w, "big.bin", big, (size_t)4 << 20, &err) == 0 &&
            chb_tar_writer_finish(w, &err) == 0,
        "cut.tar.gz: written");
  chb_tar_writer_free(w);
  size_t len = 0;
  unsigned char *whole = slurp(archive, &len);
  path_of(cut, sizeof cut, "cut-short.tar.gz");
  spit(cut, whole, len * 3 / 5);
  x = chb_tar_index_open(cut, 0, &err);
  CHECK(!x && err.code == CHB_CORRUPT && strstr(err.msg, cut) && strstr(err.msg, "big.bin"),
        "an entry cut short: CORRUPT, naming archive and entry (%s)", x ? "" : err.msg);
  chb_tar_index_close(x);
  free(whole);
  free(big);
  free(bytes);
}

/* Entries of a compressed tar read through chb_tar_open_cached in reverse
 * archive order from two threads at once: the same bytes, and the archive
 * decompressed once (when indexed). */
enum { REV_N = 400 };

typedef struct rev_job {
  const char *archive;
  const unsigned char *bytes;
  int ok;
} rev_job;

static size_t rev_len(int i) { return (size_t)(i * 37 % 5000); }

static void *rev_reader(void *p) {
  rev_job *j = p;
  char name[64];
  for (int i = REV_N - 1; i >= 0; i--) {
    snprintf(name, sizeof name, "store/%03d/f%d.bin", i / 10, i);
    j->ok += entry_is(j->archive, name, j->bytes + i, rev_len(i));
  }
  return NULL;
}

static void test_spool_threads(void) {
  char archive[512], name[64];
  path_of(archive, sizeof archive, "reverse.tar.zst");
  chb_error err;
  unsigned char *bytes = gen_random(13, 5000 + REV_N);
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  int added = 0;
  for (int i = 0; w && i < REV_N; i++) {
    snprintf(name, sizeof name, "store/%03d/f%d.bin", i / 10, i);
    added += chb_tar_writer_add_bytes(w, name, bytes + i, rev_len(i), &err) == i;
  }
  CHECK(added == REV_N && chb_tar_writer_finish(w, &err) == 0, "reverse.tar.zst: written");
  chb_tar_writer_free(w);
  chb_tar_cache_clear();
  long opens = chb_tar_archive_opens();
  chb_tar_index *x = chb_tar_index_open(archive, 0, &err);
  rev_job jobs[2] = {{archive, bytes, 0}, {archive, bytes, 0}};
  pthread_t t[2];
  for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, rev_reader, &jobs[k]);
  for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
  CHECK(x && jobs[0].ok == REV_N && jobs[1].ok == REV_N, "reverse.tar.zst: %d and %d of %d entries read back "
        "in reverse order on two threads", jobs[0].ok, jobs[1].ok, REV_N);
  CHECK(chb_tar_archive_opens() - opens == 1, "reverse.tar.zst: decompressed once (%ld opens)",
        chb_tar_archive_opens() - opens);
  uint64_t size = 0;
  snprintf(name, sizeof name, "store/%03d/f%d.bin", 3, 33);
  CHECK(chb_tar_entry_size_cached(archive, 0, name, &size, &err) == 0 && size == rev_len(33),
        "reverse.tar.zst: an entry's size from the index");
  CHECK(!chb_tar_open_cached(archive, 0, "nope", &err) && err.code == CHB_ENOENT && strstr(err.msg, archive),
        "reverse.tar.zst: a missing entry: ENOENT");
  /* an entry open when the index closes reads on (its own fd of the spool) */
  chb_tar_file *f = chb_tar_open_cached(archive, 0, name, &err);
  chb_tar_index_close(x);
  unsigned char buf[5000];
  size_t n = 0;
  ssize_t k = 0;
  while (f && (k = chb_tar_file_read(f, buf + n, sizeof buf - n, &err)) > 0) n += (size_t)k;
  CHECK(f && k == 0 && n == rev_len(33) && memcmp(buf, bytes + 33, n) == 0,
        "reverse.tar.zst: an entry open as its index closes reads to its end");
  chb_tar_file_close(f);
  /* no index open: the cursor, as before */
  opens = chb_tar_archive_opens();
  CHECK(entry_is(archive, name, bytes + 33, rev_len(33)) && chb_tar_archive_opens() - opens == 1,
        "reverse.tar.zst: with no index open, read through the cursor");
  chb_tar_cache_clear();
  free(bytes);
}

/* ---- streaming mode ------------------------------------------------------ */

/* The entries of the streaming tests: bytes, ranges of src (checksummed),
 * an empty one; entry i of n. */
static long add_nth(chb_tar_writer *w, int i, const char *src, const unsigned char *data, chb_error *err) {
  char name[64];
  snprintf(name, sizeof name, "s/%04d.bin", i);
  if (i % 3 == 0) return chb_tar_writer_add_bytes(w, name, name, strlen(name), err);
  if (i % 3 == 1) return chb_tar_writer_add_bytes(w, name, "", 0, err);
  chb_piece p = {src, (int64_t)(i * 7 % 5000), 1000 + i};
  chb_hash h;
  chb_hash_init(&h);
  chb_hash_update(&h, data + p.offset, (size_t)p.length);
  chb_u128 sum = chb_hash_peek(&h);
  return chb_tar_writer_add(w, name, &p, 1, p.length, &sum, err);
}

/* Is there an entry of root's directory starting with `prefix`? */
static int left_behind(const char *prefix) {
  DIR *d = opendir(root);
  struct dirent *de;
  int found = 0;
  while (d && (de = readdir(d)))
    found |= strncmp(de->d_name, prefix, strlen(prefix)) == 0;
  if (d) closedir(d);
  return found;
}

/* Batch mode and streaming mode (some entries before begin, the rest in
 * batches drained in between) write the same bytes. */
static void test_stream_same_bytes(const char *src, const unsigned char *data) {
  static const char *const suffixes[] = {".tar", ".tar.zst", ".tar.gz"};
  for (size_t k = 0; k < 3; k++) {
    char batch[512], stream[512];
    snprintf(batch, sizeof batch, "%s/batch%s", root, suffixes[k]);
    snprintf(stream, sizeof stream, "%s/stream%s", root, suffixes[k]);
    chb_error err;
    chb_tar_writer *w = chb_tar_writer_new(batch, NULL, &err);
    int added = 0;
    for (int i = 0; w && i < 300; i++) added += add_nth(w, i, src, data, &err) == i;
    CHECK(added == 300 && chb_tar_writer_finish(w, &err) == 0, "batch%s: 300 entries written", suffixes[k]);
    chb_tar_writer_free(w);

    w = chb_tar_writer_new(stream, NULL, &err);
    added = 0;
    for (int i = 0; w && i < 10; i++) added += add_nth(w, i, src, data, &err) == i;
    CHECK(w && chb_tar_writer_wait_drained(w, 0) == CHB_RUN_NEW, "stream%s: not begun: NEW", suffixes[k]);
    CHECK(w && chb_tar_writer_begin(w, &err) == 0, "stream%s: begun after 10 adds", suffixes[k]);
    CHECK(w && chb_tar_writer_begin(w, &err) != 0 && err.code == CHB_INVALID, "stream%s: begun twice: INVALID",
          suffixes[k]);
    int drained = 0;
    for (int i = 10; w && i < 300; i++) {
      added += add_nth(w, i, src, data, &err) == i;
      if (i % 50 == 49) drained += chb_tar_writer_wait_drained(w, -1) == CHB_RUN_DONE && chb_tar_writer_pending(w) == 0;
    }
    CHECK(added == 300 && drained == 6, "stream%s: 300 entries added, drained 6 times (%d)", suffixes[k], drained);
    CHECK(!exists(stream) && left_behind("stream"), "stream%s: only its temp file while streaming", suffixes[k]);
    CHECK(w && chb_tar_writer_start(w, &err) == 0 && chb_tar_writer_wait(w, -1) == CHB_RUN_DONE &&
              chb_tar_writer_result(w, &err) == 0,
          "stream%s: the end of input finishes it", suffixes[k]);
    uint64_t size;
    chb_u128 hash;
    CHECK(w && chb_tar_writer_entry_result(w, 0, &size, &hash) == -1, "stream%s: no per-entry results", suffixes[k]);
    CHECK(w && chb_tar_writer_add_bytes(w, "late", "x", 1, &err) < 0 && err.code == CHB_INVALID,
          "stream%s: an add after the end of input: INVALID", suffixes[k]);
    chb_run_progress pr;
    if (w) chb_tar_writer_get_progress(w, &pr);
    CHECK(w && pr.files_total == 300 && pr.files_done == 300, "stream%s: progress 300 of 300", suffixes[k]);
    chb_tar_writer_free(w);

    size_t na = 0, nb = 0;
    unsigned char *a = slurp(batch, &na), *b = slurp(stream, &nb);
    if (k == 2 && a && b && na > 8 && nb > 8) {   /* gzip's header has the time it was written (MTIME) */
      memset(a + 4, 0, 4);
      memset(b + 4, 0, 4);
    }
    CHECK(a && b && na == nb && memcmp(a, b, na) == 0, "stream%s: the same %zu bytes as batch mode (%zu)",
          suffixes[k], na, nb);
    free(a);
    free(b);
    chb_tar_index *x = chb_tar_index_open(stream, 0, &err);
    CHECK(x && chb_tar_index_count(x) == 300, "stream%s: read back, 300 entries", suffixes[k]);
    chb_tar_index_close(x);
  }
}

/* A source that fails mid-stream fails the writer: later adds get its
 * error, naming the archive and the entry; nothing is left. */
static void test_stream_failure(const char *src, const unsigned char *data) {
  char archive[512];
  path_of(archive, sizeof archive, "fail.tar");
  chb_error err;
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_begin(w, &err) == 0, "fail.tar: begun");
  int added = 0;
  for (int i = 0; w && i < 20; i++) added += add_nth(w, i, src, data, &err) == i;
  chb_piece p = {src, 0, 100};
  chb_u128 wrong = {1, 2};
  CHECK(added == 20 && w && chb_tar_writer_add(w, "bad.bin", &p, 1, 100, &wrong, &err) == 20,
        "fail.tar: 20 entries and a bad one queued");
  CHECK(w && chb_tar_writer_wait_drained(w, -1) == CHB_RUN_FAILED, "fail.tar: wait_drained says FAILED");
  CHECK(w && chb_tar_writer_add_bytes(w, "after", "x", 1, &err) < 0 && err.code == CHB_CORRUPT &&
            strstr(err.msg, "bad.bin") && strstr(err.msg, archive),
        "fail.tar: a later add gets the writer's error (%s)", err.msg);
  CHECK(w && chb_tar_writer_start(w, &err) == 0 && chb_tar_writer_wait(w, -1) == CHB_RUN_FAILED &&
            chb_tar_writer_result(w, &err) != 0 && err.code == CHB_CORRUPT,
        "fail.tar: ends FAILED (%s)", err.msg);
  CHECK(!exists(archive) && !left_behind("fail.tar"), "fail.tar: no archive, no temp file");
  chb_tar_writer_free(w);
}

/* A cancel mid-stream: the thread waiting for entries wakes, the writer
 * ends CANCELLED, adds are refused, nothing is left. Freeing a writer that
 * has begun and never ended its input cancels it too. */
static void test_stream_cancel(const char *src, const unsigned char *data) {
  char archive[512];
  path_of(archive, sizeof archive, "cancel.tar.zst");
  chb_error err;
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_begin(w, &err) == 0, "cancel.tar.zst: begun");
  int added = 0;
  for (int i = 0; w && i < 50; i++) added += add_nth(w, i, src, data, &err) == i;
  CHECK(added == 50 && w && chb_tar_writer_wait_drained(w, 10) != CHB_RUN_FAILED, "cancel.tar.zst: 50 queued");
  if (w) chb_tar_writer_cancel(w);
  CHECK(w && chb_tar_writer_wait(w, -1) == CHB_RUN_CANCELLED, "cancel.tar.zst: ends CANCELLED");
  CHECK(w && chb_tar_writer_wait_drained(w, -1) == CHB_RUN_CANCELLED, "cancel.tar.zst: wait_drained: CANCELLED");
  CHECK(w && chb_tar_writer_add_bytes(w, "after", "x", 1, &err) < 0 && err.code == CHB_CANCELLED,
        "cancel.tar.zst: a later add: CANCELLED (%s)", err.msg);
  CHECK(!exists(archive) && !left_behind("cancel.tar"), "cancel.tar.zst: no archive, no temp file");
  chb_tar_writer_free(w);

  w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_begin(w, &err) == 0 && add_nth(w, 0, src, data, &err) == 0,
        "cancel.tar.zst: begun again, one entry");
  chb_tar_writer_free(w);   /* the thread waits for entries: woken, it ends */
  CHECK(!exists(archive) && !left_behind("cancel.tar"), "freed while streaming: no archive, no temp file");
}

/* Bytes malloc has handed out now (0 where mallinfo2 cannot tell: ASan). */
static size_t heap_in_use(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  return mallinfo2().uordblks;
#else
  return 0;
#endif
}

/* 200,000 entries in batches of 2,000, drained after each: the writer holds
 * at most a batch of records, and the heap does not grow with the total. */
static void test_stream_memory(void) {
  enum { TOTAL = 200000, BATCH = 2000 };
  char archive[512], name[64];
  path_of(archive, sizeof archive, "many.tar.zst");
  chb_error err;
  chb_tar_writer *w = chb_tar_writer_new(archive, NULL, &err);
  CHECK(w && chb_tar_writer_begin(w, &err) == 0, "many.tar.zst: begun");
  size_t most = 0, heap0 = 0, heap_most = 0;
  int added = 0, drained = 0;
  for (int i = 0; w && i < TOTAL; i++) {
    snprintf(name, sizeof name, "store/%03d/%06d.bin", i % 1000, i);
    added += chb_tar_writer_add_bytes(w, name, "", 0, &err) == i;
    size_t pending = chb_tar_writer_pending(w);
    if (pending > most) most = pending;
    if (i % BATCH == BATCH - 1) {
      drained += chb_tar_writer_wait_drained(w, -1) == CHB_RUN_DONE;
      size_t heap = heap_in_use();
      if (i == BATCH - 1) heap0 = heap;   /* after the first batch: libarchive's buffers are there */
      if (heap > heap_most) heap_most = heap;
    }
  }
  CHECK(added == TOTAL && drained == TOTAL / BATCH, "many.tar.zst: %d entries added, drained %d times", added,
        drained);
  CHECK(most <= BATCH, "many.tar.zst: at most %zu records held (batch %d, total %d)", most, BATCH, TOTAL);
  /* One record a file kept would be >= 100 bytes each: 20 MB here. */
  CHECK(heap0 == 0 || heap_most - heap0 < ((size_t)2 << 20), "many.tar.zst: the heap grew by %zu bytes",
        heap_most - heap0);
  CHECK(w && chb_tar_writer_start(w, &err) == 0 && chb_tar_writer_wait(w, -1) == CHB_RUN_DONE,
        "many.tar.zst: finished");
  chb_tar_writer_free(w);
  chb_tar_index *x = chb_tar_index_open(archive, 0, &err);
  CHECK(x && chb_tar_index_count(x) == TOTAL, "many.tar.zst: read back, %zu entries", x ? chb_tar_index_count(x) : 0);
  chb_tar_index_close(x);
  unlink(archive);

  /* The measure sees records kept: a batch writer's 20,000 grow the heap. */
  path_of(archive, sizeof archive, "kept.tar.zst");
  w = chb_tar_writer_new(archive, NULL, &err);
  size_t before = heap_in_use();
  for (int i = 0; w && i < TOTAL / 10; i++) {
    snprintf(name, sizeof name, "store/%03d/%06d.bin", i % 1000, i);
    chb_tar_writer_add_bytes(w, name, "", 0, &err);
  }
  size_t grown = heap_in_use() - before;
  CHECK(before == 0 || grown > (size_t)TOTAL / 10 * 64, "kept.tar.zst: a batch writer's records grow the heap "
        "(%zu bytes for %d)", grown, TOTAL / 10);
  chb_tar_writer_free(w);
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
  test_index_spill();
  test_spool_bound();
  test_spool_threads();
  test_stream_same_bytes(src, data);
  test_stream_failure(src, data);
  test_stream_cancel(src, data);
  test_stream_memory();
  chb_tar_cache_clear();
  free(data);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) failures++;
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
