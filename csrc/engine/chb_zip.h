/*
 * Zip archives: the one owner of libzip.
 *
 * Writer. A zip backup holds the same tree as a directory backup. The
 * archive is written to `path.tmp-<pid>`, held under flock(2) while
 * written, and renamed to `path` (never replacing an existing file) only
 * when finish succeeds; anything else removes the temporary files. finish
 * first removes what killed writers of `path` left: unlocked
 * `path.tmp-<pid>` files and their companions `path.tmp-<pid>.spool/` and
 * `path.tmp-<pid>.backup` (a name callers may use for a file they add). Entries are added by name, from source
 * pieces (chb_piece, the job's type: plain files or entries of other zip
 * archives) or from a memory buffer. finish():
 *   - compressed methods: N worker threads each compress (and encrypt)
 *     whole files, in entry order, into a spool (memory up to one buffer,
 *     then a file in `path.tmp-<pid>.spool/`), at most a few entries ahead
 *     of the archive writer, so memory and spool disk stay bounded;
 *   - libzip writes the container (headers, zip64 where sizes need it,
 *     central directory) on the finishing thread, reading each spool as an
 *     already-compressed, already-encrypted zip_source_function whose stat
 *     reports method, sizes and CRC: libzip never compresses or encrypts;
 *   - `store` entries stream: a worker reads, hashes, checksums or
 *     encrypts each in chunks into a bounded queue that libzip's copy
 *     drains, so the finishing thread only copies.
 * Sizes and checksums given at add time are verified while reading.
 * Encryption is WinZip AES-256 (AE-2) done with OpenSSL (chb_aes.h).
 *
 * Reader. Lists entries and streams one entry at a time: raw bytes from
 * libzip, then AES (password verifier, then HMAC-SHA1 checked at the end),
 * decompression (chb_codec.h), CRC-32 and size checked at the end. Entry
 * names with `..` components, absolute paths or backslashes are refused
 * when the archive is opened.
 *
 * Errors name the archive and the entry. Codes: CHB_CORRUPT (bad archive,
 * CRC or size mismatch, bad compressed data, unsafe name), CHB_AUTH (no or
 * wrong password, MAC mismatch), CHB_INVALID (bad method, level or name),
 * CHB_CANCELLED, and errno codes for I/O.
 */
#ifndef CHB_ZIP_H
#define CHB_ZIP_H

#include "chb_error.h"
#include "chb_hash.h"
#include "chb_job.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- writer ---- */

typedef struct chb_zip_writer_opts {
  const char *method;   /* "store" "deflate" "bzip2" "lzma" "xz" "zstd"; NULL: deflate */
  int has_level;        /* 0: the method's default level */
  int level;            /* -1 also means the default (ClickHouse's compression_level) */
  const char *password; /* NULL or "": no encryption */
  int threads;          /* compression workers; <= 0: the number of cores */
  size_t buffer_size;   /* per worker, and the in-memory spool limit; 0: 1 MiB */
  int fsync;            /* fsync the archive and its directory before it counts as done */
  uint64_t spool_limit; /* compressed bytes spooled ahead of the archive; 0: 1 GiB */
} chb_zip_writer_opts;

typedef struct chb_zip_writer chb_zip_writer;

/*
 * Prepares a writer. Fails with CHB_EEXIST if `path` exists, CHB_INVALID
 * for an unknown method or a level out of range (naming the valid ones).
 * Strings are copied. Nothing is written until finish.
 */
chb_zip_writer *chb_zip_writer_new(const char *path, const chb_zip_writer_opts *opts,
                                   chb_error *err);
/*
 * Adds an entry read from pieces (in order) when the writer finishes.
 * `expect_size` < 0 and `expect_hash` NULL mean unknown; known ones are
 * checked while reading (a mismatch fails finish, naming the file).
 * Names must be relative, without `..` components: CHB_INVALID otherwise,
 * and CHB_EEXIST for a name added twice. Returns the entry index or -1.
 */
long chb_zip_writer_add(chb_zip_writer *w, const char *name, const chb_piece *pieces,
                        size_t npieces, int64_t expect_size, const chb_u128 *expect_hash,
                        chb_error *err);
/* Adds an entry with the given bytes (copied). */
long chb_zip_writer_add_bytes(chb_zip_writer *w, const char *name, const void *data,
                              size_t len, chb_error *err);

/* Finishes on the calling thread: 0, or -1 with err set (all temp files removed). */
int chb_zip_writer_finish(chb_zip_writer *w, chb_error *err);
/* Finishes on a thread of its own; 0, or -1 if it could not start. */
int chb_zip_writer_start(chb_zip_writer *w, chb_error *err);
/* Waits up to timeout_ms (< 0: forever); returns the state then. */
chb_job_state chb_zip_writer_wait(chb_zip_writer *w, long timeout_ms);
void chb_zip_writer_cancel(chb_zip_writer *w);
/* files and bytes read from the sources (bytes_total: known sizes). */
void chb_zip_writer_get_progress(chb_zip_writer *w, chb_job_progress *out);
/* After the writer ended: 0 if DONE, else -1 and a copy of its error. */
int chb_zip_writer_result(chb_zip_writer *w, chb_error *err);
/* After DONE: size and checksum read for entry i. */
int chb_zip_writer_entry_result(chb_zip_writer *w, size_t i, uint64_t *size, chb_u128 *hash);
size_t chb_zip_writer_count(const chb_zip_writer *w);
/* Cancels and joins a running finish, removes temporary files, frees. Accepts NULL. */
void chb_zip_writer_free(chb_zip_writer *w);

/* ---- reader ---- */

typedef struct chb_zip_reader chb_zip_reader;
typedef struct chb_zip_file chb_zip_file;

typedef struct chb_zip_entry_info {
  const char *name;     /* valid while the reader is open */
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

/* One entry at a time per reader. CHB_ENOENT if the name is not there. */
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
 * An entry of `archive` opened through this thread's small cache of open
 * readers (a job worker reading many entries does not reopen the archive
 * for each). The file must be closed before the next cached open on the
 * same thread. A thread's cache is freed when the thread exits, or by
 * chb_zip_cache_clear().
 */
chb_zip_file *chb_zip_open_cached(const char *archive, const char *password,
                                  const char *entry, chb_error *err);
void chb_zip_cache_clear(void);

/* Is `name` a safe relative entry name (no `..`, not absolute, no `\`)? */
int chb_zip_name_ok(const char *name);

#endif
