/*
 * libFuzzer target: the tar reader (chb_tar_index_*, chb_tar_open_cached).
 * The input is indexed as an archive (libarchive detects any compression
 * filter) with a catalog budget of four pages, so that a few hundred
 * entries (a compressed input's) page through its temporary file; every
 * entry is looked up by name (the same number and record), and read
 * through this thread's cursor to its end (where its size is checked),
 * last first so that the cursor also goes back. Any input must end in data
 * or an error with a message; ASan/UBSan catch the rest.
 */
#include "chb_tar.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_LIMIT ((uint64_t)64 << 20) /* plain bytes read per input: bounds tar bombs */
#define BUDGET ((size_t)16 << 10)        /* the index's pages in memory: four */

static void check_error(const char *what, const chb_error *err) {
  if (err->code == CHB_OK || !err->msg[0]) {
    fprintf(stderr, "%s failed without a message (code %s)\n", what, chb_code_name(err->code));
    abort();
  }
}

/* Entry i: its record into *e and its name (malloc'd, any length), which
 * must find it again; NULL after check_error (the index's temporary file
 * failed). */
static char *lookup(chb_tar_index *x, size_t i, chb_tar_entry *e, chb_error *err) {
  size_t len = 0;
  chb_error_clear(err);
  if (chb_tar_index_get(x, i, e, NULL, 0, &len, err) != 0) {
    check_error("entry", err);
    return NULL;
  }
  char *name = malloc(len + 1);
  if (!name) abort();
  chb_tar_entry found;
  long at = chb_tar_index_get(x, i, NULL, name, len + 1, NULL, err) == 0 ? chb_tar_index_find(x, name, &found, err)
                                                                          : -2;
  if (at == -2) {
    check_error("look up", err);
    free(name);
    return NULL;
  }
  if (strlen(name) != len || at != (long)i || found.size != e->size || found.offset != e->offset) {
    fprintf(stderr, "entry %zu (%s) is not found by its own name\n", i, name);
    abort();
  }
  return name;
}

/* Reads entry `name` through this thread's cursor to its end, adding its
 * bytes to *total (up to READ_LIMIT). */
static void read_entry(const char *path, const char *name, uint64_t size, uint64_t *total) {
  static char buf[64 * 1024];
  chb_error err;
  chb_error_clear(&err);
  chb_tar_file *f = chb_tar_open_cached(path, 0, name, &err);
  if (!f) {
    check_error("open entry", &err);
    return;
  }
  if (chb_tar_file_size(f) != size) {
    fprintf(stderr, "entry %s: %llu bytes indexed, %llu through the cursor\n", name, (unsigned long long)size,
            (unsigned long long)chb_tar_file_size(f));
    abort();
  }
  while (*total < READ_LIMIT) {
    chb_error_clear(&err);
    ssize_t got = chb_tar_file_read(f, buf, sizeof buf, &err);
    if (got < 0) check_error("read", &err);
    if (got <= 0) break;
    *total += (uint64_t)got;
  }
  chb_tar_file_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = chb_fuzz_file(data, size);
  chb_error err;
  chb_error_clear(&err);
  chb_tar_cache_clear();   /* the file is rewritten in place: no cursor from the last input */
  chb_tar_index *x = chb_tar_index_open_budget(path, 0, BUDGET, &err);
  if (!x) {
    check_error("index", &err);
    return 0;
  }
  uint64_t total = 0;
  for (size_t i = chb_tar_index_count(x); i > 0 && total < READ_LIMIT; i--) {
    chb_tar_entry e;
    char *name = lookup(x, i - 1, &e, &err);
    if (name) read_entry(path, name, e.size, &total);
    free(name);
  }
  chb_tar_index_close(x);
  chb_tar_cache_clear();
  return 0;
}
