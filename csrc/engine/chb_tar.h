/*
 * Tar archives (the one owner of libarchive), as ClickHouse's
 * TarArchiveWriter writes them (src/IO/Archives/TarArchiveWriter.cpp,
 * LibArchiveWriter.cpp): the pax restricted format (ustar headers, a pax
 * extended header only for what ustar cannot hold, such as long names),
 * regular files with mode 0644, mtime 0, uid and gid 0, no padding after the
 * end of the archive (bytes per block 0), and a compression filter chosen by
 * the name's suffix:
 *
 *   .tar                  none        .tar.gz .tgz     gzip
 *   .tar.zst .tzst        zstd        .tar.xz          xz
 *   .tar.bz2              bzip2       .tar.lzma        lzma
 *
 * Writing: entries are added by name, from source pieces (chb_source.h) or
 * bytes, each with its size known before its header is written (given, or
 * the sources' sizes). The writer streams them in order into
 * `path.tmp-<pid>` (created exclusively, held under flock(2), beside the
 * archive) and renames that to `path` only when the archive is complete
 * (never replacing a file); a failure or a cancel removes it. Sizes and
 * checksums given at add time are verified while reading. Run-state:
 * chb_run.h.
 *
 * Two modes (issue 14: memory bounded by buffers, not by the file count):
 *   - batch: every add first, then finish or start writes them all;
 *   - streaming: begin starts the writer's thread, which writes entries as
 *     they are added (before or after begin) and frees each one's record
 *     once written; wait_drained waits for what was added so far; start
 *     ends the input, and the writer then finishes as in batch mode.
 * A name twice is refused in batch mode; a streaming writer keeps nothing
 * of an entry it wrote, so the caller keeps names unique (chbackup's
 * manifest refuses a name twice, and so does the reader, below).
 *
 * On S3 (opts.s3, a profile of chb_s3_store.h): `path` is the object key;
 * the writer streams the archive into an upload of it (nothing exists at
 * the key before the archive is complete; a failure aborts the upload), and
 * the reader reads it by ranged GETs, the cursor naming (profile, key).
 *
 * Reading: tar has no directory, and a compressed one cannot be seeked.
 * chb_tar_index_open reads the archive once, in order: every entry's name,
 * size and the offset of its data. For a `.tar`, that is the offset in the
 * file itself, so a piece of it is a plain byte range. A compressed archive
 * is decompressed that one time into a spool: each entry's data is written,
 * as it comes, into an unlinked temporary file in $TMPDIR (or /tmp), and
 * its offset is the one in that file. Why: readers (RESTORE) take entries
 * in an order of their own, per part and across parts; a decompressor only
 * goes forward, so reading an entry behind it meant decompressing from the
 * start again, a cost quadratic in the archive (20,000 files of 100 MB:
 * 500 s). From the spool any entry is a pread of its range, in any order,
 * on any thread: the total cost is linear. The price: temporary disk as
 * big as the archive's uncompressed data, for as long as the index is open
 * (a full disk or a missing TMPDIR fails the open with CHB_EIO naming the
 * archive and the directory). Memory is the catalog's budget of pages and
 * a 1 MiB write buffer while indexing, whatever the number or size of the
 * entries (issue 14).
 *
 * chb_tar_open_cached (workers name only the archive and the entry) finds
 * an open index of that archive with a spool in a process-wide registry,
 * looks the entry up in its catalog and reads it from a dup of the spool's
 * fd, valid after the index closes. An archive no index has open (or a
 * `.tar`) is read through this thread's cursor on the archive: an entry
 * after the cursor costs decompressing up to it; one before it reopens the
 * archive and reads from its start.
 *
 * Entry names with `..` components, absolute paths or backslashes, a name
 * twice, and entries other than regular files and directories (which are
 * skipped), are refused. Errors name the archive and the entry. Codes: CHB_CORRUPT
 * (bad or truncated archive, size or checksum mismatch), CHB_INVALID (not
 * a tar name), CHB_EEXIST, CHB_ENOENT, CHB_CANCELLED, errno codes for I/O.
 */
#ifndef CHB_TAR_H
#define CHB_TAR_H

#include "chb_error.h"
#include "chb_hash.h"
#include "chb_run.h"
#include "chb_source.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The compression filter a tar name asks for ("none", "gzip", ...), or
 * NULL when the name has none of the suffixes above. */
const char *chb_tar_filter(const char *path);

/* ---- writer ---- */

typedef struct chb_tar_writer_opts {
  size_t buffer_size;   /* read buffer; 0: 1 MiB */
  int fsync;            /* fsync the archive and its directory before it counts as done */
  int s3;               /* > 0: `path` is an object key written through this S3
                           profile (chb_s3_store.h): the archive streams into
                           a multipart upload (no temp file); the object exists
                           only once complete, a failure aborts the upload */
  int threads;          /* with s3: threads sending its parts in parallel
                           (chb_s3_pool.h; <= 0: 8); its buffers stay within
                           max(threads, 2) parts of 16 MiB */
} chb_tar_writer_opts;

typedef struct chb_tar_writer chb_tar_writer;

/* CHB_EEXIST if `path` exists, CHB_INVALID if it is not a tar name. */
chb_tar_writer *chb_tar_writer_new(const char *path, const chb_tar_writer_opts *opts, chb_error *err);
/*
 * Adds an entry read from pieces when the writer gets to it (as
 * chb_zip_writer_add): its index, or -1. After begin it only queues the
 * entry (never blocks) and fails with the writer's error once the writer
 * failed or was cancelled; after the end of input (start) it is refused.
 */
long chb_tar_writer_add(chb_tar_writer *w, const char *name, const chb_piece *pieces, size_t npieces,
                        int64_t expect_size, const chb_u128 *expect_hash, chb_error *err);
/* Adds an entry with the given bytes (copied); as chb_tar_writer_add. */
long chb_tar_writer_add_bytes(chb_tar_writer *w, const char *name, const void *data, size_t len,
                              chb_error *err);
/*
 * Streaming mode: starts the writer's thread (the temp file or the upload
 * is made now), which writes the entries added so far and then each one as
 * it is added. 0, or -1 (CHB_INVALID if it has begun or started already).
 */
int chb_tar_writer_begin(chb_tar_writer *w, chb_error *err);
/*
 * Waits up to timeout_ms (< 0: no limit) until every entry added so far is
 * written: CHB_RUN_DONE then ("drained": the writer itself has not ended
 * unless its input had); CHB_RUN_FAILED or CHB_RUN_CANCELLED once the
 * writer ended so; CHB_RUN_RUNNING when the time ran out (or a cancel is
 * being honoured); CHB_RUN_NEW for a writer that has neither begun nor
 * started.
 */
chb_run_state chb_tar_writer_wait_drained(chb_tar_writer *w, long timeout_ms);
/* Finishes on the calling thread (batch mode only): 0, or -1 with err set
 * (the temp file removed). */
int chb_tar_writer_finish(chb_tar_writer *w, chb_error *err);
/* Batch mode: writes everything on a thread of its own. Streaming mode
 * (after begin): the end of input; the writer then finishes. 0, or -1 if it
 * could not start (CHB_INVALID: started already). */
int chb_tar_writer_start(chb_tar_writer *w, chb_error *err);
chb_run_state chb_tar_writer_wait(chb_tar_writer *w, long timeout_ms);
void chb_tar_writer_cancel(chb_tar_writer *w);
void chb_tar_writer_get_progress(chb_tar_writer *w, chb_run_progress *out);
int chb_tar_writer_result(chb_tar_writer *w, chb_error *err);
/* Entry i's size and checksum once the writer is done (0), in batch mode;
 * -1 in streaming mode, which keeps nothing of a written entry. */
int chb_tar_writer_entry_result(chb_tar_writer *w, size_t i, uint64_t *size, chb_u128 *hash);
/* Entries added so far. */
size_t chb_tar_writer_count(const chb_tar_writer *w);
/* Entries added and not yet written: the records the writer holds. */
size_t chb_tar_writer_pending(chb_tar_writer *w);
/* Cancels and joins a running writer, removes the temp file, frees. Accepts NULL. */
void chb_tar_writer_free(chb_tar_writer *w);

/* ---- reader ---- */

/*
 * The index is a chb_catalog (chb_catalog.h): names and records in pages,
 * at most a budget of them in memory and the rest in an unlinked temporary
 * file (issue 14: 10^6 entries in a few MiB). So nothing can point into
 * it: an entry is copied out, and a lookup can fail on that file's I/O
 * (-2, err CHB_EIO naming the archive; CHB_ENOMEM when out of memory).
 */
typedef struct chb_tar_entry {
  uint64_t size;
  uint64_t offset;      /* of its data: in the file for a `.tar`, in the
                           spool for a compressed archive */
} chb_tar_entry;

typedef struct chb_tar_index chb_tar_index;

/* Reads the whole archive once: the file `path` or, s3 > 0, the object
 * `path` through that S3 profile (ranged GETs of 4 MiB; a `.tar`'s entry
 * data is skipped, not fetched). Its catalog holds CHB_CATALOG_BUDGET of
 * pages in memory. */
chb_tar_index *chb_tar_index_open(const char *path, int s3, chb_error *err);
/* As chb_tar_index_open, with at most `budget` bytes of pages in memory. */
chb_tar_index *chb_tar_index_open_budget(const char *path, int s3, size_t budget, chb_error *err);
size_t chb_tar_index_count(const chb_tar_index *x);
/* The number of the entry named `name` (0: first in the archive; one
 * lookup in the catalog's hash), its record copied into *out if not NULL;
 * -1 if there is none; -2 with err set (above). */
long chb_tar_index_find(chb_tar_index *x, const char *name, chb_tar_entry *out, chb_error *err);
/* Entry i: its record into *out (if not NULL) and, if name is not NULL,
 * its name into name[0, cap) NUL-terminated; *name_len (if not NULL) is
 * its full length, so a name cut short has *name_len >= cap. 0; -1 if i is
 * out of range; -2 with err set (above). */
int chb_tar_index_get(chb_tar_index *x, size_t i, chb_tar_entry *out, char *name, size_t cap, size_t *name_len,
                      chb_error *err);
/* Is the archive compressed (its offsets are not file offsets)? */
int chb_tar_index_compressed(const chb_tar_index *x);
/* Bytes the index holds in memory: its catalog's (and, while indexing, the
 * spool's write buffer). */
size_t chb_tar_index_memory(chb_tar_index *x);
/* Bytes of a compressed archive's spool (0: not spooled, a `.tar`). */
uint64_t chb_tar_index_spooled(const chb_tar_index *x);
/* For tests: how many times an archive was opened for reading (each one
 * decompresses from its start) in this process. */
long chb_tar_archive_opens(void);
/* Accepts NULL. */
void chb_tar_index_close(chb_tar_index *x);

typedef struct chb_tar_file chb_tar_file;

/*
 * Entry `entry` of `archive`: from the spool of an open index of it, else
 * through this thread's cursor (see above; one such entry at a time per
 * thread: close it before the next). CHB_ENOENT if the archive has no such
 * entry.
 */
chb_tar_file *chb_tar_open_cached(const char *archive, int s3, const char *entry, chb_error *err);
/* > 0 bytes, 0 at its end (after its size was checked), -1 on error. */
ssize_t chb_tar_file_read(chb_tar_file *f, void *buf, size_t len, chb_error *err);
uint64_t chb_tar_file_size(const chb_tar_file *f);
/* Accepts NULL. */
void chb_tar_file_close(chb_tar_file *f);
/* The size of `entry` (from an open index, else through the same cursor). */
int chb_tar_entry_size_cached(const char *archive, int s3, const char *entry, uint64_t *size, chb_error *err);
/* Frees this thread's cursor (also done when the thread exits). */
void chb_tar_cache_clear(void);

#endif
