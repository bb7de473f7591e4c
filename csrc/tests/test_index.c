/*
 * chb_index (a manifest's files in one C structure): entries read back as
 * added, duplicates refused naming the first, lookups by name, by content
 * (the first file of that content; empty files never) and by name prefix
 * in name order, through growth to many entries.
 */
#include "chb_index.h"
#include "test_util.h"

#include <string.h>

static chb_index_entry entry(const char *name, uint64_t size, uint64_t sum) {
  chb_index_entry e = {0};
  e.name = name;
  e.name_len = strlen(name);
  e.size = size;
  e.has_checksum = size > 0;
  e.checksum.lo = sum;
  e.checksum.hi = sum * 7;
  e.use_base = CHB_ABSENT;
  e.encrypted_by_disk = CHB_ABSENT;
  return e;
}

static int name_is(const chb_index_entry *e, const char *name) {
  return e->name_len == strlen(name) && memcmp(e->name, name, e->name_len) == 0;
}

static void test_basics(void) {
  chb_index *idx = chb_index_new();
  chb_index_entry a = entry("data/db/t/all_1_1_0/checksums.txt", 100, 1);
  chb_index_entry b = entry("data/db/t/all_1_1_0/data.bin", 500, 2);
  b.use_base = 1;
  b.has_base_size = 1;
  b.base_size = 300;
  b.has_base_checksum = 1;
  b.base_checksum.lo = 9;
  chb_index_entry c = entry("data/db/t/all_2_2_0/data.bin", 500, 2);   /* same content as b */
  c.data_file = "data/db/t/all_1_1_0/data.bin";
  c.data_file_len = strlen(c.data_file);
  c.encrypted_by_disk = 0;
  chb_index_entry d = entry("metadata/db/t.sql", 0, 0);
  CHECK(chb_index_add(idx, &a, NULL) == 0, "first entry is number 0");
  CHECK(chb_index_add(idx, &d, NULL) == 1, "second entry is number 1");
  CHECK(chb_index_add(idx, &c, NULL) == 2, "third entry is number 2");
  CHECK(chb_index_add(idx, &b, NULL) == 3, "fourth entry is number 3");
  size_t existing = 99;
  chb_index_entry dup = entry("metadata/db/t.sql", 5, 5);
  CHECK(chb_index_add(idx, &dup, &existing) == -1 && existing == 1, "a duplicate name is refused, naming entry 1");
  CHECK(chb_index_count(idx) == 4, "4 entries");

  chb_index_entry g;
  CHECK(chb_index_get(idx, 3, &g) == 0 && name_is(&g, b.name) && g.size == 500 && g.has_checksum &&
            g.checksum.lo == 2 && g.use_base == 1 && g.encrypted_by_disk == CHB_ABSENT &&
            g.has_base_size && g.base_size == 300 && g.has_base_checksum && g.base_checksum.lo == 9 &&
            g.data_file == NULL,
        "entry 3 reads back with its base fields");
  CHECK(chb_index_get(idx, 2, &g) == 0 && g.data_file && g.data_file_len == c.data_file_len &&
            memcmp(g.data_file, c.data_file, g.data_file_len) == 0 && g.encrypted_by_disk == 0 &&
            g.use_base == CHB_ABSENT && !g.has_base_size,
        "entry 2 reads back with its data_file");
  CHECK(chb_index_get(idx, 1, &g) == 0 && g.size == 0 && !g.has_checksum, "the empty file has no checksum");
  CHECK(chb_index_get(idx, 4, &g) == -1, "no entry 4");

  CHECK(chb_index_find(idx, "metadata/db/t.sql", 17) == 1, "found by name");
  CHECK(chb_index_find(idx, "metadata/db/t.sq", 16) == -1, "a prefix of a name is not that name");
  chb_u128 s2 = {2, 14}, s0 = {0, 0};
  CHECK(chb_index_find_content(idx, 500, s2) == 2, "by content: the first entry of that content");
  CHECK(chb_index_find_content(idx, 501, s2) == -1, "another size is another content");
  CHECK(chb_index_find_content(idx, 0, s0) == -1, "an empty file is never found by content");

  size_t lo, hi;
  CHECK(chb_index_prefix(idx, "data/db/t/", 10, &lo, &hi) == 0 && lo == 0 && hi == 3, "prefix data/db/t/: 3 names");
  CHECK(chb_index_sorted_at(idx, 0) == 0 && chb_index_sorted_at(idx, 1) == 3 && chb_index_sorted_at(idx, 2) == 2,
        "in name order");
  CHECK(chb_index_prefix(idx, "data/db/t/all_2", 15, &lo, &hi) == 0 && hi - lo == 1 &&
            chb_index_sorted_at(idx, lo) == 2,
        "prefix of one part");
  CHECK(chb_index_prefix(idx, "data/db/u/", 10, &lo, &hi) == 0 && lo == hi && lo == 3, "no name: empty range");
  CHECK(chb_index_prefix(idx, "", 0, &lo, &hi) == 0 && lo == 0 && hi == 4, "the empty prefix: every name");
  CHECK(chb_index_sorted_at(idx, 4) == -1, "no position 4");
  chb_index_entry late = entry("data/db/a", 1, 3);
  CHECK(chb_index_add(idx, &late, NULL) == 4, "added after lookups");
  CHECK(chb_index_prefix(idx, "data/", 5, &lo, &hi) == 0 && lo == 0 && hi == 4 && chb_index_sorted_at(idx, 0) == 4,
        "the name order is made again after an add");
  CHECK(chb_index_find_content(idx, 1, (chb_u128){3, 21}) == 4, "and the content table");
  chb_index_entry copy = entry("data/db/t/all_3_3_0/data.bin", 500, 2);
  copy.data_file = b.name;   /* an entry added before it: kept as its number */
  copy.data_file_len = strlen(b.name);
  copy.no_content = 1;
  CHECK(chb_index_add(idx, &copy, NULL) == 5 && chb_index_get(idx, 5, &g) == 0 && g.data_file &&
            g.data_file_len == strlen(b.name) && memcmp(g.data_file, b.name, g.data_file_len) == 0 &&
            !g.has_base_size && g.use_base == CHB_ABSENT,
        "a copy of an earlier entry reads back with its data_file");
  chb_index_free(idx);
  chb_index_free(NULL);
}

static void test_many(void) {
  enum { N = 100000 };
  chb_index *idx = chb_index_new();
  char name[64];
  int ok = 1;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "data/db/t%d/part_%d/file.bin", i % 7, i);
    chb_index_entry e = entry(name, (uint64_t)(i % 1000) + 1, (uint64_t)(i % 5000));
    if (chb_index_add(idx, &e, NULL) != i) ok = 0;
  }
  CHECK(ok && chb_index_count(idx) == N, "%d entries added", N);
  ok = 1;
  for (int i = 0; i < N; i += 97) {
    snprintf(name, sizeof name, "data/db/t%d/part_%d/file.bin", i % 7, i);
    if (chb_index_find(idx, name, strlen(name)) != i) ok = 0;
  }
  CHECK(ok, "each found by name");
  chb_u128 s = {4999, 4999 * 7};
  CHECK(chb_index_find_content(idx, 4999 % 1000 + 1, s) == 4999, "by content: the first of 20 of that content");
  size_t lo, hi;
  CHECK(chb_index_prefix(idx, "data/db/t3/", 11, &lo, &hi) == 0 && hi - lo == (N + 3) / 7, "one table's %d files", (N + 3) / 7);
  chb_index_entry a, b;
  char prev[64];
  ok = 1;
  for (size_t p = lo + 1; p < hi; p++) {
    /* (a's name copied: the next get reuses the index's buffer) */
    chb_index_get(idx, (size_t)chb_index_sorted_at(idx, p - 1), &a);
    size_t an = a.name_len;
    memcpy(prev, a.name, an);
    chb_index_get(idx, (size_t)chb_index_sorted_at(idx, p), &b);
    size_t n = an < b.name_len ? an : b.name_len;
    int c = memcmp(prev, b.name, n);
    if (c > 0 || (c == 0 && an >= b.name_len)) ok = 0;
  }
  CHECK(ok, "in name order");
  size_t mem = chb_index_memory(idx);
  CHECK(mem < (size_t)N * 160, "%zu bytes for %d entries (%zu a file)", mem, N, mem / N);
  chb_index_compact(idx);
  size_t compact = chb_index_memory(idx);
  CHECK(compact <= mem && chb_index_find(idx, "data/db/t3/part_3/file.bin", 26) == 3 &&
            chb_index_prefix(idx, "data/db/t3/", 11, &lo, &hi) == 0 && hi - lo == (N + 3) / 7,
        "compacted to %zu bytes, still found by name and prefix", compact);
  chb_index_entry last = entry("data/db/z", 1, 1);
  CHECK(chb_index_add(idx, &last, NULL) == N, "added to after compact");
  chb_index_free(idx);
}

/* A backup being made: lookups by content between adds (the table kept up
 * to date through growth); entries added with no_content never found. */
static void test_content_while_adding(void) {
  chb_index *idx = chb_index_new();
  char name[32];
  chb_u128 s7 = {7, 49};
  CHECK(chb_index_find_content(idx, 10, s7) == -1, "an empty index has no content");
  int ok = 1;
  for (int i = 0; i < 1000; i++) {
    snprintf(name, sizeof name, "f%04d", i);
    chb_index_entry e = entry(name, 10, (uint64_t)(i % 100));
    e.no_content = i < 100 && i % 2 == 0;   /* the first of the even contents: copies */
    if (chb_index_add(idx, &e, NULL) != i) ok = 0;
    long want = (i % 2 == 0) ? (i >= 100 ? i % 100 + 100 : -1) : i % 100;
    chb_u128 s = {(uint64_t)(i % 100), (uint64_t)(i % 100) * 7};
    if (chb_index_find_content(idx, 10, s) != want) ok = 0;
  }
  CHECK(ok, "found between adds: the first entry of each content not added with no_content");
  chb_index_free(idx);
}

/* Name order and prefixes where a name's directory and file name split
 * differently (a name stored as two pieces compares as the whole name). */
static void test_order_across_pieces(void) {
  static const char *names[] = {
      "a", "a/", "a/b", "a/bc", "ab", "ab/c", "a/b/c", "a/b/", "a/b/cd", "a/bb/c", "aa/b", "a//x", "b", "", "a/b/c/d",
      "ab/", "a/b/ca", "a/b/c/", "z/a", "z/", "/", "//", "a/b/c/dd", "a/b/c/d/e",
  };
  enum { N = sizeof names / sizeof *names };
  chb_index *idx = chb_index_new();
  for (int i = 0; i < N; i++) {
    chb_index_entry e = entry(names[i], 1, (uint64_t)i + 1);
    CHECK(chb_index_add(idx, &e, NULL) == i, "added %s", names[i]);
  }
  for (int i = 0; i < N; i++)
    CHECK(chb_index_find(idx, names[i], strlen(names[i])) == i, "found %s", names[i]);
  size_t lo, hi;
  CHECK(chb_index_prefix(idx, "", 0, &lo, &hi) == 0 && lo == 0 && hi == N, "all names");
  int ok = 1;
  for (size_t p = 1; p < N; p++) {
    const char *x = names[chb_index_sorted_at(idx, p - 1)], *y = names[chb_index_sorted_at(idx, p)];
    if (strcmp(x, y) >= 0) ok = 0;
  }
  CHECK(ok, "in the order of the whole names (strcmp)");
  static const char *prefixes[] = {"a", "a/", "a/b", "a/b/", "a/b/c", "ab", "z", "/", "x", "a/b/c/d"};
  for (size_t k = 0; k < sizeof prefixes / sizeof *prefixes; k++) {
    size_t want = 0, len = strlen(prefixes[k]);
    for (int i = 0; i < N; i++) want += strncmp(names[i], prefixes[k], len) == 0;
    CHECK(chb_index_prefix(idx, prefixes[k], len, &lo, &hi) == 0 && hi - lo == want, "prefix %s: %zu names",
          prefixes[k], want);
    ok = 1;
    for (size_t p = lo; p < hi; p++)
      if (strncmp(names[chb_index_sorted_at(idx, p)], prefixes[k], len) != 0) ok = 0;
    CHECK(ok, "prefix %s: each starts with it", prefixes[k]);
  }
  chb_index_free(idx);
}

/* A manifest as written (names added in name order): the order is the
 * order added; a name absent is not found whatever its hash's tag meets. */
static void test_in_order(void) {
  enum { N = 50000 };
  chb_index *idx = chb_index_new();
  char name[64];
  int ok = 1;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "data/db/t/%06d_1_1_0/f%d.bin", i / 12, i % 12 + 10);
    chb_index_entry e = entry(name, 1, (uint64_t)i);
    if (chb_index_add(idx, &e, NULL) != i) ok = 0;
  }
  CHECK(ok, "%d names added in name order", N);
  size_t lo, hi;
  ok = chb_index_prefix(idx, "", 0, &lo, &hi) == 0 && lo == 0 && hi == N;
  for (size_t p = 0; p < N && ok; p++) ok = chb_index_sorted_at(idx, p) == (long)p;
  CHECK(ok, "name order: the order added");
  ok = 1;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "data/db/t/%06d_1_1_0/f%d.bin", i / 12, i % 12 + 10);
    if (chb_index_find(idx, name, strlen(name)) != i) ok = 0;
    snprintf(name, sizeof name, "data/db/t/%06d_1_1_0/g%d.bin", i / 12, i % 12 + 10);
    if (chb_index_find(idx, name, strlen(name)) != -1) ok = 0;
  }
  CHECK(ok, "each name found, %d absent names not", N);
  size_t existing = 0;
  chb_index_entry dup = entry("data/db/t/000007_1_1_0/f13.bin", 1, 1);
  CHECK(chb_index_add(idx, &dup, &existing) == -1 && existing == 7 * 12 + 3, "a name added twice: the first named");
  chb_index_free(idx);
}

/* An incremental's unchanged parts: entries copied from the base's index
 * read back as the base's name, size and checksum, use_base (an empty file
 * neither), not found by content; a name copied twice refused; another
 * base after the first. */
static void test_from_base(void) {
  chb_index *base = chb_index_new(), *other = chb_index_new(), *idx = chb_index_new();
  char name[64];
  for (int i = 0; i < 3000; i++) {
    snprintf(name, sizeof name, "data/db/t/%04d_1_1_0/%s", i / 6, (const char *[]){"a.bin", "b.bin", "c.mrk",
                                                                                   "checksums.txt", "count.txt",
                                                                                   "empty"}[i % 6]);
    chb_index_entry e = entry(name, i % 6 == 5 ? 0 : (uint64_t)i + 1, (uint64_t)i + 1);
    chb_index_add(base, &e, NULL);
    snprintf(name, sizeof name, "data/db/u/%04d/x.bin", i);
    e = entry(name, 5, (uint64_t)i);
    chb_index_add(other, &e, NULL);
  }
  chb_index_entry plain = entry("metadata/db.sql", 10, 77);
  CHECK(chb_index_add(idx, &plain, NULL) == 0, "an entry of its own first");
  int ok = 1;
  for (size_t i = 0; i < 3000; i++)
    if (chb_index_add_from_base(idx, base, i, NULL) != (long)i + 1) ok = 0;
  CHECK(ok, "3000 entries copied from the base");
  ok = 1;
  for (size_t i = 0; i < 3000 && ok; i++) {
    chb_index_entry b, e;
    chb_index_get(base, i, &b);
    memcpy(name, b.name, b.name_len);
    name[b.name_len] = 0;
    long n = chb_index_find(idx, name, b.name_len);
    chb_index_get(idx, (size_t)(n < 0 ? 0 : n), &e);
    ok = n == (long)i + 1 && name_is(&e, name) && e.size == b.size && e.has_checksum == (b.size > 0) &&
         (b.size == 0 || (e.checksum.lo == b.checksum.lo && e.checksum.hi == b.checksum.hi)) &&
         e.use_base == (b.size > 0 ? 1 : CHB_ABSENT) && e.encrypted_by_disk == CHB_ABSENT && !e.data_file &&
         !e.has_base_size;
    chb_u128 sum = b.checksum;
    if (b.size > 0 && chb_index_find_content(idx, b.size, sum) != -1) ok = 0;
  }
  CHECK(ok, "each as in the base, use_base, not found by content");
  size_t existing = 0;
  CHECK(chb_index_add_from_base(idx, base, 42, &existing) == -1 && existing == 43, "a name copied twice: the first");
  CHECK(chb_index_add_from_base(idx, base, 3000, NULL) == -2, "an entry past the base's end");
  CHECK(chb_index_add_from_base(idx, other, 7, NULL) == 3001 && chb_index_find(idx, "data/db/u/0007/x.bin", 20) == 3001,
        "then from another base");
  chb_index_entry dup = entry("data/db/t/0000_1_1_0/a.bin", 1, 1);
  CHECK(chb_index_add(idx, &dup, &existing) == -1 && existing == 1, "a copied name added again: refused");
  chb_index_free(base);
  chb_index_free(other);
  chb_index_free(idx);
}

int main(void) {
  test_from_base();
  test_in_order();
  test_order_across_pieces();
  test_basics();
  test_content_while_adding();
  test_many();
  printf("%s\n", failures ? "FAILED" : "all passed");
  return failures != 0;
}
