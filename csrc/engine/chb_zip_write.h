/*
 * Zip archives, the writing half.
 *
 * A zip backup holds the same tree as a directory backup. The archive is
 * written to `path.tmp-<pid>`, held under flock(2) while written, and
 * renamed to `path` (never replacing an existing file) only when finish
 * succeeds; anything else removes the temporary files (creation, fsync and
 * rename are the directory store's, chb_store.h). finish first removes what
 * killed writers of `path` left: unlocked `path.tmp-<pid>` files and their
 * companions `path.tmp-<pid>.spool/` and `path.tmp-<pid>.backup` (a name
 * callers may use for a file they add). Entries are added by name, from
 * source pieces (chb_piece, read through chb_source.h: plain files, entries
 * of other zip archives, files of encrypted directory backups) or from a
 * memory buffer. The run-state (wait, cancel, progress, result) is
 * chb_run.h's. Writing:
 *   - compressed methods: N worker threads each compress (and encrypt)
 *     whole files, in entry order, into a spool (memory up to one buffer,
 *     then a file in `path.tmp-<pid>.spool/`), at most a few entries ahead
 *     of the archive writer, so memory and spool disk stay bounded;
 *   - the finishing thread writes the container (chb_zip_container.h: local
 *     headers, zip64 where sizes or offsets need it, the central directory
 *     spilled to an unlinked temporary file, end records) as a stream,
 *     entry after entry, copying each spool: it never compresses or
 *     encrypts;
 *   - `store` entries stream: a worker reads, hashes, checksums or
 *     encrypts each in chunks into a bounded queue that the finishing
 *     thread drains, so that thread only copies.
 *
 * Two ways to run, the same archive:
 *   - batch: add every entry, then finish (or start, wait): entries are
 *     kept until then (memory grows with their number);
 *   - streaming: begin, then add in any number of rounds (wait_drained
 *     between rounds bounds memory by a round), then start (the end of the
 *     input), wait. Entries are written in the order added as soon as they
 *     are ready (idle threads are woken by every 64 adds, and by
 *     wait_drained and start for the rest), and freed once written: memory is the queue of entries not
 *     yet written plus fixed buffers, whatever the number of entries.
 *     Names are not remembered, so a name added twice is not detected
 *     (CHB_EEXIST in batch mode): the caller's plan must list each once.
 * Sizes and checksums given at add time are verified while reading.
 * Encryption is WinZip AES-256 (AE-2) done with OpenSSL (chb_aes.h).
 *
 * Errors name the archive and the entry. Codes: CHB_CORRUPT (a source
 * whose size or checksum is not the expected one), CHB_INVALID (bad method,
 * level or name), CHB_EEXIST, CHB_CANCELLED, and errno codes for I/O.
 */
#ifndef CHB_ZIP_WRITE_H
#define CHB_ZIP_WRITE_H

#include "chb_error.h"
#include "chb_hash.h"
#include "chb_run.h"
#include "chb_source.h"

#include <stddef.h>
#include <stdint.h>

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
 * Strings are copied. Nothing is written until finish, start or begin.
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

/*
 * Streaming mode: starts the writer's thread now (state RUNNING); entries
 * added from now on are written in order as they come, and freed once
 * written. add/add_bytes then never block; they return -1 with the
 * writer's error once it failed or was cancelled. -1 if already begun or
 * started, or the thread could not start.
 */
int chb_zip_writer_begin(chb_zip_writer *w, chb_error *err);
/*
 * Streaming mode: waits up to timeout_ms (< 0: forever) until every entry
 * added so far is written. CHB_JOB_DONE means drained (not that the
 * archive is finished: that is start, then wait); CHB_JOB_FAILED or
 * CHB_JOB_CANCELLED once the writer ended so; CHB_JOB_RUNNING on timeout.
 * A writer not begun: its state now.
 */
chb_job_state chb_zip_writer_wait_drained(chb_zip_writer *w, long timeout_ms);

/* Finishes on the calling thread: 0, or -1 with err set (all temp files removed).
 * After begin: the end of the input, then waits for the end. */
int chb_zip_writer_finish(chb_zip_writer *w, chb_error *err);
/* Finishes on a thread of its own; 0, or -1 if it could not start. After
 * begin: the end of the input (the central directory and end records are
 * written once every entry is, then fsync and rename); wait as usual. */
int chb_zip_writer_start(chb_zip_writer *w, chb_error *err);
/* Waits up to timeout_ms (< 0: forever); returns the state then. */
chb_job_state chb_zip_writer_wait(chb_zip_writer *w, long timeout_ms);
void chb_zip_writer_cancel(chb_zip_writer *w);
/* files and bytes read from the sources (bytes_total: known sizes). */
void chb_zip_writer_get_progress(chb_zip_writer *w, chb_job_progress *out);
/* After the writer ended: 0 if DONE, else -1 and a copy of its error. */
int chb_zip_writer_result(chb_zip_writer *w, chb_error *err);
/* After DONE: size and checksum read for entry i. Batch mode only: -1 in
 * streaming mode (results are not kept per entry). */
int chb_zip_writer_entry_result(chb_zip_writer *w, size_t i, uint64_t *size, chb_u128 *hash);
size_t chb_zip_writer_count(const chb_zip_writer *w);
/* Cancels and joins a running finish, removes temporary files, frees. Accepts NULL. */
void chb_zip_writer_free(chb_zip_writer *w);

#endif
