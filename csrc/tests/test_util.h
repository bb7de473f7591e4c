/*
 * What every C test here shares: the CHECK line printer and its failure
 * count, deterministic bytes, whole-file read and write, and tree removal.
 * Included once by each test program (a header of static functions, so
 * each program keeps its own copy and its own `failures`).
 */
#ifndef CHB_TEST_UTIL_H
#define CHB_TEST_UTIL_H

#include "chb_hash.h"

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int failures;

/* Prints "ok   <what>" or "FAIL <what>" and counts the failures. */
#define CHECK(cond, ...)              \
  do {                                \
    if (cond) {                       \
      printf("ok   ");                \
    } else {                          \
      printf("FAIL ");                \
      failures++;                     \
    }                                 \
    printf(__VA_ARGS__);              \
    printf("\n");                     \
  } while (0)

/* Deterministic random bytes (xorshift64*), different for each seed. */
static inline unsigned char *gen_random(uint64_t seed, size_t len) {
  unsigned char *p = malloc(len ? len : 1);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p[i] = (unsigned char)((x * 0x2545F4914F6CDD1Dull) >> 56);
  }
  return p;
}

/* A whole file (malloc'd, *len bytes), or NULL if it cannot be opened. */
static inline unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, n = 0;
  unsigned char *buf = malloc(cap);
  for (;;) {
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    if (r == 0) break;
    n += r;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* Writes a whole file; a test that cannot set up exits 2. */
static inline void spit(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
    perror(path);
    exit(2);
  }
}

static inline int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

static inline int same(chb_u128 a, chb_u128 b) { return a.lo == b.lo && a.hi == b.hi; }

/* ClickHouse's checksum of a buffer. */
static inline chb_u128 hash_of(const void *data, size_t len) {
  chb_hash h;
  chb_hash_init(&h);
  chb_hash_update(&h, data, len);
  return chb_hash_peek(&h);
}

static inline int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Removes a test's temporary tree. */
static inline void rm_tree(const char *root) { nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* A test program's temporary tree (a mkdtemp template); exits 2 if it
 * cannot be made. */
static inline void test_begin(char *tmpl) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    exit(2);
  }
}

/* Removes the tree and reports: main's exit status. */
static inline int test_end(const char *tmp) {
  rm_tree(tmp);
  CHECK(!exists(tmp), "temp dir %s removed", tmp);
  if (failures) {
    printf("%d FAILED\n", failures);
    return 1;
  }
  printf("all ok\n");
  return 0;
}

#endif
