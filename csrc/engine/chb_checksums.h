/*
 * Reader of a MergeTree part's checksums.txt (format version 4: a text
 * header, then ClickHouse compressed blocks, LZ4 or none). Versions 2 and 3
 * (plain text / uncompressed binary) are read too where cheap.
 *
 * Each compressed block's own CityHash128 is verified; a file that fails
 * any check is CHB_CORRUPT with the path in the message.
 */
#ifndef CHB_CHECKSUMS_H
#define CHB_CHECKSUMS_H

#include "chb_error.h"
#include "chb_hash.h"

#include <stdint.h>

typedef struct chb_part_file {
  char *name;                 /* relative to the part dir, e.g. "data.bin", "p.proj" */
  uint64_t file_size;
  chb_u128 file_hash;
  int is_compressed;
  uint64_t uncompressed_size;
  chb_u128 uncompressed_hash;
} chb_part_file;

typedef struct chb_checksums {
  size_t count;
  chb_part_file *files;
} chb_checksums;

/* Returns 0, or -1 with err set (ENOENT, CORRUPT naming `path`). */
int chb_checksums_read(const char *path, chb_checksums *out, chb_error *err);
/* The same from a buffer holding the file (e.g. read from a backup);
 * `path` names it in errors. */
int chb_checksums_parse(const char *path, const unsigned char *data, size_t len, chb_checksums *out,
                        chb_error *err);
void chb_checksums_free(chb_checksums *c);

#endif
