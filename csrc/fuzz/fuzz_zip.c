/*
 * libFuzzer target: the zip reader (chb_zip_reader_*, chb_zip_file_*).
 * The input is opened as an archive; every entry is listed, looked up by
 * name and read to its end (where CRC, size and MAC are checked). Any
 * input must end in data or an error with a message; ASan/UBSan catch the
 * rest. Inputs of even length are opened with the password "fuzz" (that of
 * the encrypted seeds), the others with none.
 */
#include "chb_zip.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define READ_LIMIT ((uint64_t)64 << 20) /* plain bytes read per input: bounds zip bombs */

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
  chb_zip_reader *r = chb_zip_reader_open(path, size % 2 == 0 ? "fuzz" : NULL, &err);
  if (!r) {
    check_error("open", &err);
    return 0;
  }
  uint64_t total = 0;
  size_t n = chb_zip_reader_count(r);
  for (size_t i = 0; i < n && total < READ_LIMIT; i++) {
    chb_zip_entry_info info;
    chb_error_clear(&err);
    if (chb_zip_reader_stat(r, i, &info, &err) != 0) {
      check_error("stat", &err);
      continue;
    }
    if (!info.name) {
      fprintf(stderr, "entry %zu has no name\n", i);
      abort();
    }
    /* a name holding a NUL byte is not found by its C string: no crash asked */
    long at = chb_zip_reader_locate(r, info.name);
    if (at >= (long)n) {
      fprintf(stderr, "entry %zu (%s) located at %ld of %zu\n", i, info.name, at, n);
      abort();
    }
    (void)chb_zip_name_ok(info.name);
    chb_error_clear(&err);
    chb_zip_file *f = chb_zip_file_open_index(r, i, &err);
    if (!f) {
      check_error("open entry", &err);
      continue;
    }
    (void)chb_zip_file_size(f);
    for (;;) {
      chb_error_clear(&err);
      ssize_t got = chb_zip_file_read(f, buf, sizeof buf, &err);
      if (got < 0) {
        check_error("read", &err);
        break;
      }
      if (got == 0)
        break;
      total += (uint64_t)got;
      if (total >= READ_LIMIT)
        break;
    }
    chb_zip_file_close(f);
  }
  chb_zip_reader_close(r);
  return 0;
}
