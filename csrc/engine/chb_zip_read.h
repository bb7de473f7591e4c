/*
 * Zip archives, the reading half.
 *
 * Lists entries and streams one entry at a time: the central directory is
 * read by chbackup itself into a paged catalog (chb_zip_cd.h: memory
 * bounded whatever the number of entries, every field checked), an
 * entry's raw bytes by pread after its local header (checked against the
 * directory), then AES (password verifier, then HMAC-SHA1 checked at the
 * end), decompression (chb_codec.h), CRC-32 and size checked at the end.
 * Entry names with `..` components, absolute paths, backslashes or NUL
 * bytes, and a name twice, are refused when the archive is opened.
 *
 * Errors name the archive and the entry. Codes: CHB_CORRUPT (bad archive,
 * CRC or size mismatch, bad compressed data, unsafe name), CHB_AUTH (no or
 * wrong password, MAC mismatch), CHB_INVALID (bad method), and errno codes
 * for I/O.
 */
#ifndef CHB_ZIP_READ_H
#define CHB_ZIP_READ_H

#include "chb_error.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- reader ---- */

typedef struct chb_zip_reader chb_zip_reader;
typedef struct chb_zip_file chb_zip_file;

typedef struct chb_zip_entry_info {
  const char *name;     /* valid until the next chb_zip_reader_stat of the reader */
  uint64_t size, compressed_size;
  int method;           /* zip method number (chb_codec.h ids) */
  int encrypted;        /* 0, or the WinZip AES strength 1..3; -1: another scheme */
  uint32_t crc;
} chb_zip_entry_info;

/* `password` NULL or "": none (encrypted entries then fail with CHB_AUTH). */
chb_zip_reader *chb_zip_reader_open(const char *path, const char *password, chb_error *err);
size_t chb_zip_reader_count(const chb_zip_reader *r);
int chb_zip_reader_stat(chb_zip_reader *r, size_t i, chb_zip_entry_info *out, chb_error *err);
/* Index of an entry by exact name, or -1. */
long chb_zip_reader_locate(chb_zip_reader *r, const char *name);
const char *chb_zip_reader_path(const chb_zip_reader *r);
/* Accepts NULL. Entries still open must be closed first. */
void chb_zip_reader_close(chb_zip_reader *r);

/* One entry at a time per reader (any number on a shared one). CHB_ENOENT if the name is not there. */
chb_zip_file *chb_zip_file_open(chb_zip_reader *r, const char *name, chb_error *err);
chb_zip_file *chb_zip_file_open_index(chb_zip_reader *r, size_t i, chb_error *err);
/*
 * Reads plain bytes: > 0 bytes, 0 at the end (returned only after the
 * CRC, size and MAC were verified), -1 on error.
 */
ssize_t chb_zip_file_read(chb_zip_file *f, void *buf, size_t len, chb_error *err);
uint64_t chb_zip_file_size(const chb_zip_file *f);
/* Accepts NULL. */
void chb_zip_file_close(chb_zip_file *f);

/*
 * An entry of `archive` opened through the process's small cache of open
 * readers, shared by all threads (a job's workers, and the workers of each
 * later job, do not reopen the archive nor hold a copy of its directory
 * each). Any number of entries may be open at once, on any threads (the
 * catalog has its lock; data is read by pread). A reader is closed when
 * the cache lets it go (chb_zip_cache_clear, or evicted by another
 * archive) and its last open entry is closed.
 */
chb_zip_file *chb_zip_open_cached(const char *archive, const char *password,
                                  const char *entry, chb_error *err);
void chb_zip_cache_clear(void);
/* The cache's reader of `path` (opened if needed), shared with the job's
 * workers: one copy of the central directory in the process. Given back by
 * chb_zip_reader_release (never chb_zip_reader_close), which also takes it
 * out of the cache. Its entries may be open on any threads at once. */
chb_zip_reader *chb_zip_reader_shared(const char *path, const char *password, chb_error *err);
void chb_zip_reader_release(chb_zip_reader *r);
/* The size of `entry` in `archive`, from its directory, through the same cache. */
int chb_zip_entry_size_cached(const char *archive, const char *password, const char *entry,
                              uint64_t *size, chb_error *err);

/* Is `name` a safe relative entry name (no `..`, not absolute, no `\`)? */
int chb_zip_name_ok(const char *name);

#endif
