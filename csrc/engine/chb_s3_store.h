/*
 * S3 behind the source and store seams (chb_source.h, chb_store.h), so that
 * a job reads S3 pieces and writes S3 destinations with the same streaming
 * verification as files.
 *
 * Profiles: a client configuration (endpoint, bucket, region, key id,
 * secret, addressing, ...) registered once under an id (> 0, never reused).
 * Pieces and sinks name a profile by its id; each thread that uses one
 * makes its own chb_s3 client of it on first use and keeps it (connections
 * stay alive) until the thread ends (a job's workers) or the profile is
 * dropped. Strings of a profile are copied; its secret is wiped when
 * dropped.
 *
 * Reading (chb_source.c, piece.s3 > 0): `path` is the object key; each
 * read is a ranged GET of at most the caller's buffer (the job's 1 MiB),
 * so nothing holds an object; a piece without a length HEADs the object
 * first.
 *
 * Writing (chb_store.c, sink opts.s3 > 0): an upload, chb_s3_upload.h.
 */
#ifndef CHB_S3_STORE_H
#define CHB_S3_STORE_H

#include "chb_error.h"
#include "chb_s3.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Registers a copy of cfg: its id (> 0), or -1 with err set. */
int chb_s3_profile_add(const chb_s3_config *cfg, chb_error *err);
/* Forgets a profile (its clients are freed by the threads that made them,
 * at their next use of any profile or when they end). Accepts unknown ids. */
void chb_s3_profile_drop(int id);
/* This thread's client of profile id (made on first use), or NULL with
 * err set (CHB_INVALID for an unknown id). */
chb_s3 *chb_s3_thread_client(int id, chb_error *err);
/* Frees this thread's clients now (a thread that ends does it itself). */
void chb_s3_thread_clients_free(void);

/* ---- reading a piece ------------------------------------------------------- */

/* The size of object `key` (HEAD). */
int chb_s3_piece_size(int profile, const char *key, uint64_t *size, chb_error *err);
/* Up to len bytes of `key` from offset into buf (one ranged GET): bytes
 * read (0: none there), or -1 with err set. */
ssize_t chb_s3_piece_read(int profile, const char *key, uint64_t offset, void *buf, size_t len,
                          chb_error *err);

#endif
