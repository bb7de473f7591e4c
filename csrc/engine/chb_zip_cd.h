/*
 * A zip archive's central directory, read by chbackup itself into a
 * chb_catalog (issue 14): memory bounded by the catalog's budget whatever
 * the number of entries. libzip keeps one structure and name per entry
 * (about 100 bytes each: 125 MiB for a backup of 1.2 million files), and
 * so does every zip library we know of.
 *
 * The archive is untrusted input: every field used is checked against the
 * file's size and the directory's bounds before it is used (APPNOTE 6.3.10:
 * end of central directory, zip64 end record and locator, central file
 * headers, the zip64 and WinZip AES extra fields). Refused, with an error
 * naming the archive (and the entry): a missing or inconsistent end
 * record, an archive on several disks, a directory outside the file, a
 * record past the directory's end, an entry whose data would lie outside
 * the entries' area, an unsafe name (absolute, `..`, `\`, a NUL byte), a
 * name twice.
 */
#ifndef CHB_ZIP_CD_H
#define CHB_ZIP_CD_H

#include "chb_catalog.h"
#include "chb_error.h"

#include <stdint.h>

/* What a reader needs of an entry (the catalog's record). */
typedef struct chb_zip_cd_entry {
  uint64_t header_offset;  /* of its local file header */
  uint64_t size;           /* uncompressed */
  uint64_t comp_size;      /* stored bytes, with an AES salt, verifier and MAC */
  uint32_t crc;
  uint16_t method;         /* the data's method (the AES field's, for method 99) */
  uint16_t flags;          /* general purpose bits */
  int8_t strength;         /* 0: not encrypted; 1..3 WinZip AES; -1 another scheme */
  uint16_t name_len;
} chb_zip_cd_entry;

typedef struct chb_zip_cd {
  chb_catalog *entries;    /* chb_zip_cd_entry records, by name */
  uint64_t cd_offset;      /* where the central directory starts: entries' data end there */
} chb_zip_cd;

/* Reads the directory of the archive open on fd (named path in errors)
 * into a catalog of at most budget bytes of pages in memory (readers:
 * CHB_CATALOG_BUDGET). 0, or -1 with err set (CHB_CORRUPT for a bad
 * archive; errno codes for I/O; CHB_ENOMEM). */
int chb_zip_cd_read(int fd, const char *path, size_t budget, chb_zip_cd *out, chb_error *err);
void chb_zip_cd_free(chb_zip_cd *cd);

/* Local file header signature and fixed size (APPNOTE 4.3.7). */
#define CHB_ZIP_LOCAL_SIG 0x04034b50u
#define CHB_ZIP_LOCAL_LEN 30

#endif
