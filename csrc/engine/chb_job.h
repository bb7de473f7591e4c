/*
 * A job executes a plan: a list of file entries, each read from `src`,
 * hashed with ClickHouse's checksum while streaming, optionally written to
 * `dst` (created exclusively, parent directories made on demand) and
 * checked against an expected size and checksum.
 *
 * Worker threads pull batches of entries from a shared cursor: a batch is
 * one entry, or up to 16 consecutive small files (256 KiB at most each, 1
 * MiB in all) of one destination directory, created in it with one lookup
 * of the directory and made durable together (fsync); a batch is all or
 * nothing. Each worker owns one fixed buffer, so peak memory is threads *
 * buffer_size whatever the data size.
 * Progress counters are atomics readable at any time; the first failure
 * (or a cancel) stops every worker between two buffers.
 *
 * Entries are read only through chb_source.h and written only through
 * sinks of a directory store (chb_store.h; S3 objects through its S3 sinks); the run-state is chb_run.h's.
 *
 * The job never touches Lua: all strings are copied in at add time and
 * results are read back by the caller after the job ends.
 */
#ifndef CHB_JOB_H
#define CHB_JOB_H

#include "chb_cipher.h"
#include "chb_error.h"
#include "chb_hash.h"
#include "chb_run.h"
#include "chb_source.h"

#include <stdint.h>

typedef struct chb_job_opts {
  int threads;          /* workers; <= 0: the number of cores, at least 8 */
  size_t buffer_size;   /* per worker; 0 means 1 MiB */
  int fsync;            /* fsync every written file, and the directories
                           holding them, before they count as done */
  int has_key;          /* key set: entries marked with chb_job_seal_entry are */
  unsigned char key[CHB_CIPHER_KEY_LEN]; /* written encrypted (chb_cipher.h) */
  int ordered;          /* run entries in the order added (a compressed
                           archive read in its order); else the biggest
                           batches of entries go first */
} chb_job_opts;

typedef struct chb_job chb_job;

chb_job *chb_job_new(const chb_job_opts *opts, chb_error *err);

/*
 * Adds an entry (only before start). `dst` NULL means hash only.
 * `expect_size` < 0 means unknown; `expect_hash` NULL means unknown.
 * `src_offset` skips that many bytes of src (an incremental's tail).
 * Strings are copied. Returns the entry index, or -1 with err set.
 */
long chb_job_add(chb_job *job, const char *src, const char *dst,
                 uint64_t src_offset, int64_t expect_size,
                 const chb_u128 *expect_hash, chb_error *err);

/* An entry's source may be given as pieces (chb_piece, chb_source.h): plain
 * files (confined below a root when set), byte ranges, zip entries, files of
 * encrypted directory backups. */
/* Like chb_job_add, with the source given as pieces read in order. */
long chb_job_add_pieces(chb_job *job, const chb_piece *pieces, size_t npieces,
                        const char *dst, int64_t expect_size,
                        const chb_u128 *expect_hash, chb_error *err);

/*
 * Incremental backup of a file that may have grown: if the first
 * `base_size` bytes of entry i's (single-piece) source hash to `base_hash`,
 * only the bytes after them are written to dst ("tail only"); otherwise
 * the whole file is. Returns 0, or -1 with err set.
 */
int chb_job_set_base(chb_job *job, size_t i, uint64_t base_size,
                     chb_u128 base_hash, chb_error *err);
/*
 * Entry i's dst is written encrypted with the job's key (opts.key) as the
 * file `name` (copied) of its backup. Only before start; needs a key and a
 * dst. Returns 0, or -1 with err set.
 */
int chb_job_seal_entry(chb_job *job, size_t i, const char *name, chb_error *err);
/*
 * Entry i's dst is an object key written through S3 profile `profile`
 * (chb_s3_upload.h): one PUT up to 32 MiB, else a multipart upload sized
 * from the entry's expected size, its parts sent by the job's upload
 * threads (opts.threads of them, besides the workers) while the worker
 * reads on; the buffers of all its uploads stay within opts.threads
 * parts of 16 MiB (at least two; a file's single PUT up to 32 MiB may
 * take that alone). It exists once the entry is verified, and is aborted
 * or deleted if it fails. Only before start; not with a seal. Returns 0,
 * or -1 with err set.
 */
int chb_job_s3_entry(chb_job *job, size_t i, int profile, chb_error *err);

/* After DONE: 1 if entry i was written tail only, else 0. */
int chb_job_entry_tail_only(const chb_job *job, size_t i);

/* Starts the workers; returns 0, or -1 with err set (threads not created). */
int chb_job_start(chb_job *job, chb_error *err);
/* Waits up to timeout_ms (< 0: forever); returns the state then. */
chb_job_state chb_job_wait(chb_job *job, long timeout_ms);
void chb_job_cancel(chb_job *job);
void chb_job_get_progress(chb_job *job, chb_job_progress *out);
/* After the job ended: 0 if DONE, else -1 and a copy of its error. */
int chb_job_result(chb_job *job, chb_error *err);
size_t chb_job_count(const chb_job *job);
/* Result of entry i after DONE: bytes read (from src_offset) and checksum. */
int chb_job_entry_result(const chb_job *job, size_t i, uint64_t *size, chb_u128 *hash);
/* Cancels, joins the workers and frees. Accepts NULL. */
void chb_job_free(chb_job *job);

const char *chb_job_state_name(chb_job_state s);

#endif
