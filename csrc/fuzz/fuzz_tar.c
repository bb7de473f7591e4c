/*
 * libFuzzer target: the tar reader (chb_tar_index_*, chb_tar_open_cached).
 * The input is indexed as an archive (libarchive detects any compression
 * filter); every entry is looked up by name, and read through this
 * thread's cursor to its end (where its size is checked), last first so
 * that the cursor also goes back. Any input must end in data or an error
 * with a message; ASan/UBSan catch the rest.
 */
#include "chb_tar.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_LIMIT ((uint64_t)64 << 20) /* plain bytes read per input: bounds tar bombs */

static void check_error(const char *what, const chb_error *err) {
  if (err->code == CHB_OK || !err->msg[0]) {
    fprintf(stderr, "%s failed without a message (code %s)\n", what, chb_code_name(err->code));
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char buf[64 * 1024];
  const char *path = chb_fuzz_file(data, size);
  chb_error err;
  chb_error_clear(&err);
  chb_tar_cache_clear();   /* the file is rewritten in place: no cursor from the last input */
  chb_tar_index *x = chb_tar_index_open(path, 0, &err);
  if (!x) {
    check_error("index", &err);
    return 0;
  }
  uint64_t total = 0;
  size_t n = chb_tar_index_count(x);
  for (size_t i = n; i > 0 && total < READ_LIMIT; i--) {
    const chb_tar_entry *e = chb_tar_index_get(x, i - 1);
    if (!e || !e->name || chb_tar_index_find(x, e->name) != e) {
      fprintf(stderr, "entry %zu is not found by its own name\n", i - 1);
      abort();
    }
    chb_error_clear(&err);
    chb_tar_file *f = chb_tar_open_cached(path, 0, e->name, &err);
    if (!f) {
      check_error("open entry", &err);
      continue;
    }
    if (chb_tar_file_size(f) != e->size) {
      fprintf(stderr, "entry %s: %llu bytes indexed, %llu through the cursor\n", e->name,
              (unsigned long long)e->size, (unsigned long long)chb_tar_file_size(f));
      abort();
    }
    for (;;) {
      chb_error_clear(&err);
      ssize_t got = chb_tar_file_read(f, buf, sizeof buf, &err);
      if (got < 0) {
        check_error("read", &err);
        break;
      }
      if (got == 0) break;
      total += (uint64_t)got;
      if (total >= READ_LIMIT) break;
    }
    chb_tar_file_close(f);
  }
  chb_tar_index_close(x);
  chb_tar_cache_clear();
  return 0;
}
