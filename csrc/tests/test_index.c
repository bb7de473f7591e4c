/*
 * chb_index (a manifest's files in one C structure): entries read back as
 * added, duplicates refused naming the first, lookups by name, by content
 * (the first file of that content; empty files never) and by name prefix
 * in name order, through growth to many entries. Every test runs twice:
 * with the default budget (all in memory) and spilled (a budget of 0: two
 * pages in memory, every other page in the temporary file, so that a
 * pointer kept across two page accesses would read another page). Then
 * add_from_base between spilled indexes, and I/O failures of the file
 * (cannot create it, a full disk) reported as -2 with chb_index_error.
 */
#include "chb_index.h"
#include "chb_pages.h"
#include "test_util.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>

static size_t budget = CHB_INDEX_BUDGET;   /* of every index a test makes */
static const char *mode = "in memory";

static chb_index *new_index(void) { return chb_index_new_budget(budget, NULL); }

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
  chb_index *idx = new_index();
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
  chb_index *idx = new_index();
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
  CHECK(chb_index_spilled(idx) == (budget < 4096 * 10), "%s: %s", mode,
        chb_index_spilled(idx) ? "pages in the temporary file" : "nothing on disk");
  chb_index_entry last = entry("data/db/z", 1, 1);
  CHECK(chb_index_add(idx, &last, NULL) == N, "added to after lookups");
  chb_index_free(idx);
}

/* A backup being made: lookups by content between adds (the table kept up
 * to date through growth); entries added with no_content never found. */
static void test_content_while_adding(void) {
  chb_index *idx = new_index();
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
  chb_index *idx = new_index();
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
  chb_index *idx = new_index();
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
static void test_copied_from_base(void) {
  chb_index *base = new_index(), *other = new_index(), *idx = new_index();
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

/* Entries added in name order (as `.backup` lists them): that order is
 * used as it is; an add out of order makes it again. */
static void test_added_in_order(void) {
  enum { N = 70000 };   /* (more than one chunk of the sort) */
  chb_index *idx = new_index();
  char name[32];
  int ok = 1;
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "d/%06d/f", i);
    chb_index_entry e = entry(name, 1, (uint64_t)i);
    if (chb_index_add(idx, &e, NULL) != i) ok = 0;
  }
  size_t lo, hi;
  CHECK(ok && chb_index_prefix(idx, "d/010", 5, &lo, &hi) == 0 && lo == 10000 && hi == 11000,
        "%s: added in name order, prefix d/010: positions 10000..11000", mode);
  ok = 1;
  for (size_t p = 0; p < N; p += 13) ok &= chb_index_sorted_at(idx, p) == (long)p;
  CHECK(ok, "%s: position p is entry p", mode);
  chb_index_entry e = entry("d/000000/a", 1, 1);
  CHECK(chb_index_add(idx, &e, NULL) == N && chb_index_prefix(idx, "d/000000/", 9, &lo, &hi) == 0 && lo == 0 &&
            hi == 2 && chb_index_sorted_at(idx, 0) == N && chb_index_sorted_at(idx, 1) == 0 &&
            chb_index_sorted_at(idx, N) == N - 1,
        "%s: an add before the others: the order made again", mode);
  chb_index_free(idx);
}

/* An incremental's files of unchanged parts taken from its base's
 * (chb_index_add_from_base), both indexes spilled, sharing one pager (one
 * budget, one file: as the Lua binding makes them), which lives until the
 * last of them is freed. */
static void test_from_base(void) {
  enum { N = 20000 };
  chb_pager *pg = chb_pager_new(0, NULL);
  chb_index *base = chb_index_new_in(pg), *idx = chb_index_new_in(pg);
  chb_pager_free(pg);   /* (the indexes' references keep it) */
  char name[48];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "data/db/t/%d_%d_%d_0/f%d.bin", i / 10, i / 10, i / 10, i % 10);
    chb_index_entry e = entry(name, (uint64_t)(i % 3), (uint64_t)i + 1);   /* (a third of them empty) */
    chb_index_add(base, &e, NULL);
  }
  size_t lo, hi;
  CHECK(chb_index_prefix(base, "data/db/t/1", 11, &lo, &hi) == 0 && hi - lo == 11110,
        "spilled base: a prefix of %zu names (parts 1, 1x, 1xx, 1xxx)", hi - lo);
  int ok = 1;
  for (size_t p = lo; p < hi; p++) {
    long i = chb_index_sorted_at(base, p);
    size_t existing;
    if (i < 0 || chb_index_add_from_base(idx, base, (size_t)i, &existing) != (long)(p - lo)) ok = 0;
  }
  CHECK(ok && chb_index_count(idx) == hi - lo, "added %zu entries from the base", hi - lo);
  ok = 1;
  for (size_t k = 0; k < chb_index_count(idx); k++) {
    chb_index_entry a, b;
    long bi = chb_index_sorted_at(base, lo + k);
    char copy[48];
    if (bi < 0 || chb_index_get(base, (size_t)bi, &b) != 0) {
      ok = 0;
      break;
    }
    memcpy(copy, b.name, b.name_len);   /* (b's buffer is its index's) */
    if (chb_index_get(idx, k, &a) != 0 || a.name_len != b.name_len || memcmp(a.name, copy, a.name_len) != 0 ||
        a.size != b.size || a.has_checksum != (b.size > 0) || (a.size && a.checksum.lo != b.checksum.lo) ||
        a.use_base != (b.size > 0 ? 1 : CHB_ABSENT) || chb_index_find(idx, copy, b.name_len) != (long)k)
      ok = 0;
  }
  CHECK(ok, "each as in the base: name, size, checksum, use_base (not for an empty file), found by name");
  chb_u128 s = {(uint64_t)lo + 2, (uint64_t)(lo + 2) * 7};
  CHECK(chb_index_find_content(idx, 1, s) == -1, "entries from a base are not found by content");
  size_t existing = 0;
  long first = chb_index_sorted_at(base, lo);
  CHECK(first >= 0 && chb_index_add_from_base(idx, base, (size_t)first, &existing) == -1 && existing == 0,
        "one taken twice is refused, naming the first");
  CHECK(chb_index_spilled(base) && chb_index_spilled(idx) && !chb_index_error(idx), "both spilled, no error");
  chb_index_free(idx);
  chb_index_free(base);
}

/* Adds n entries; the number of the first add that failed, or n. */
static long add_many(chb_index *idx, long n) {
  char name[40];
  for (long i = 0; i < n; i++) {
    snprintf(name, sizeof name, "data/db/t/p%ld/f%ld", i / 8, i % 8);
    chb_index_entry e = entry(name, 1, (uint64_t)i);
    if (chb_index_add(idx, &e, NULL) != i) return i;
  }
  return n;
}

/* Memory flat in the number of parts (issue 14): 120,000 files of
 * 10,000 and then of 120,000 distinct part directories (their interned
 * strings were kept in memory once: about 90 bytes a part) held within a
 * budget of 512 KiB, plus the page tables (8 bytes a 4 KiB page); every
 * name found again and the name order right across the spilled strings. */
static void test_memory_flat_in_parts(void) {
  enum { FILES = 120000 };
  const size_t small = 512 << 10;
  size_t mem[2];
  for (int k = 0; k < 2; k++) {
    long per_part = k == 0 ? 12 : 1;   /* ClickHouse's compact parts have a dozen files */
    chb_index *idx = chb_index_new_budget(small, NULL);
    char name[64];
    int ok = 1;
    long parts = FILES / per_part;
    for (long q = 0, i = 0; q < parts && ok; q++) {
      /* parts added out of name order (their files together, as BACKUP adds
       * them): the order is sorted, from spilled strings */
      long part = (q * 7919) % parts;
      for (long f = 0; f < per_part && ok; f++, i++) {
        long j = part * per_part + f;
        snprintf(name, sizeof name, "data/db/t%ld/all_%ld_%ld_0/f%ld.bin", part % 10, part, part, f);
        chb_index_entry e = entry(name, 1, (uint64_t)j);
        if (chb_index_add(idx, &e, NULL) != i) ok = 0;
      }
    }
    CHECK(ok, "%d files in %ld parts added", FILES, FILES / per_part);
    for (long j = 0; j < FILES && ok; j += 101) {
      long part = j / per_part;
      snprintf(name, sizeof name, "data/db/t%ld/all_%ld_%ld_0/f%ld.bin", part % 10, part, part, j % per_part);
      long i = chb_index_find(idx, name, strlen(name));
      chb_index_entry g;
      if (i < 0 || chb_index_get(idx, (size_t)i, &g) != 0 || !name_is(&g, name)) ok = 0;
    }
    CHECK(ok, "each found again by name, its name read back");
    size_t lo, hi;
    ok = chb_index_prefix(idx, "data/db/t3/", 11, &lo, &hi) == 0 && hi - lo == FILES / 10;
    char prev[64] = "";
    for (size_t p = lo; p < hi && ok; p++) {
      chb_index_entry g;
      long i = chb_index_sorted_at(idx, p);
      if (i < 0 || chb_index_get(idx, (size_t)i, &g) != 0 || g.name_len >= sizeof prev) {
        ok = 0;
        break;
      }
      char cur[64];
      memcpy(cur, g.name, g.name_len);
      cur[g.name_len] = 0;
      if (p > lo && strcmp(prev, cur) >= 0) ok = 0;
      memcpy(prev, cur, sizeof cur);
    }
    CHECK(ok, "one table's %d files, in name order", FILES / 10);
    mem[k] = chb_index_memory(idx);
    CHECK(chb_index_spilled(idx) && mem[k] < small + (128 << 10), "%ld parts: %zu bytes in memory (budget %zu)",
          FILES / per_part, mem[k], small);
    chb_index_free(idx);
  }
  CHECK(mem[1] < mem[0] + (64 << 10), "12 times the parts: %zu bytes, not more than %zu + 64 KiB", mem[1], mem[0]);
}

/* The temporary file cannot be made, or the disk fills: the call that
 * needed it returns -2 and chb_index_error says why; later calls fail the
 * same way, none crashes. */
static void test_io_errors(void) {
  chb_index *idx = chb_index_new_budget(0, "/nonexistent-chbackup-dir");
  long failed = add_many(idx, 5000);
  const char *err = chb_index_error(idx);
  CHECK(failed < 5000 && err && strstr(err, "cannot create the index's temporary file in /nonexistent-chbackup-dir") &&
            strstr(err, strerror(ENOENT)),
        "no temporary directory: add %ld fails: %s", failed, err ? err : "(no error)");
  size_t lo, hi;
  chb_index_entry g;
  int prc = chb_index_prefix(idx, "data/", 5, &lo, &hi);
  long frc = chb_index_find(idx, "data/db/t/p0/f0", 15);
  /* (the first add may fail already: it touches more pages than the two
   * frames of a budget of 0, and an empty index has no prefix to fail on) */
  CHECK((prc == -2 || (failed == 0 && prc == 0 && lo == hi)) && (frc == -2 || frc == 0 || (failed == 0 && frc == -1)),
        "then prefix fails, find gives -2 or the entry (%ld added; %d, %ld)", failed, prc, frc);
  int rc = chb_index_get(idx, (size_t)(failed > 0 ? failed - 1 : 0), &g);
  CHECK(failed == 0 || rc == -2 || rc == 0, "get: -2 or an entry still in memory (%d)", rc);
  chb_index_free(idx);

  /* a full disk: a file size limit (EFBIG, SIGXFSZ ignored) of 64 KiB */
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 64 * 1024;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &lim);
  idx = chb_index_new_budget(0, NULL);
  failed = add_many(idx, 20000);
  err = chb_index_error(idx);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, prev);
  CHECK(failed > 0 && failed < 20000 && err && strstr(err, "cannot write the index's temporary file") &&
            strstr(err, strerror(EFBIG)),
        "a full disk: add %ld fails: %s", failed, err ? err : "(no error)");
  CHECK(chb_index_find_content(idx, 1, (chb_u128){1, 7}) == -2, "then lookups by content fail too");
  chb_index_free(idx);
}

static void run_all(void) {
  test_order_across_pieces();
  test_basics();
  test_content_while_adding();
  test_many();
  test_added_in_order();
  test_in_order();
  test_copied_from_base();
}

int main(void) {
  run_all();
  budget = 0, mode = "spilled";
  run_all();
  test_from_base();
  test_memory_flat_in_parts();
  test_io_errors();
  printf("%s\n", failures ? "FAILED" : "all passed");
  return failures != 0;
}
