/*
 * libFuzzer target: a MergeTree part's checksums.txt (chb_checksums_read).
 * Any input must end in 0 with a list, or -1 with a message naming the
 * file; ASan/UBSan catch the rest.
 *
 * Every compressed block of a version 4 file carries its CityHash128,
 * which random mutations never match: for inputs of even length the
 * target writes the right hashes first, so that the fuzzer reaches the
 * decompressors and the entry parser behind them.
 */
#include "chb_checksums.h"
#include "chb_hash.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char V4[] = "checksums format version: 4\n";

static uint32_t get_u32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64le(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Rewrites the stored hash of every well-framed block of a version 4 file. */
static void fix_block_hashes(uint8_t *p, size_t len) {
  size_t off = sizeof V4 - 1;
  if (len < off || memcmp(p, V4, off) != 0)
    return;
  while (len - off >= 16 + 9) {
    uint32_t csize = get_u32le(p + off + 17);
    if (csize < 9 || csize > len - off - 16)
      return;
    chb_u128 h = chb_cityhash128(p + off + 16, csize);
    put_u64le(p + off, h.lo);
    put_u64le(p + off + 8, h.hi);
    off += 16 + (size_t)csize;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy)
    abort();
  if (size)
    memcpy(copy, data, size);
  if (size % 2 == 0)
    fix_block_hashes(copy, size);
  const char *path = chb_fuzz_file(copy, size);
  free(copy);

  chb_checksums c = {0};
  chb_error err;
  chb_error_clear(&err);
  if (chb_checksums_read(path, &c, &err) == 0) {
    for (size_t i = 0; i < c.count; i++) {
      if (!c.files[i].name) {
        fprintf(stderr, "checksums.txt entry %zu has no name\n", i);
        abort();
      }
    }
    chb_checksums_free(&c);
  } else if (err.code == CHB_OK || !strstr(err.msg, path)) {
    fprintf(stderr, "a failure without a message naming the file: %s '%s'\n", chb_code_name(err.code), err.msg);
    abort();
  }
  return 0;
}
