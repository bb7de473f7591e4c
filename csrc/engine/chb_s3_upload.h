/*
 * Writing one S3 object as a stream (the S3 sink of chb_store.h): the
 * bytes are buffered, and sent only as whole requests.
 *
 * Up to 32 MiB (ClickHouse's max_single_part_upload_size) the object is
 * one PUT when finished; a larger one (known from the size hint, or found
 * out when the 32 MiB buffer overflows) is a multipart upload with
 * ClickHouse's part sizes: max(16 MiB, ceil(size/10000)) when the size is
 * known, else 16 MiB doubled every 500 parts (WriteBufferFromS3).
 *
 * Parts in parallel: with a pool (chb_s3_pool.h), each full part is handed
 * to the pool's threads and the writer goes on filling the next one, so
 * up to the pool's thread count of parts are in flight; without one, the
 * writer sends each part itself.
 *
 * Memory: every buffer is reserved from the pool's budget before it is
 * filled, at its largest size (a known size up to 32 MiB: that size; an
 * unknown one: 32 MiB; a part: its size, the last one what is left) and
 * given back once sent. So all the uploads of a pool hold at most its
 * budget (see chb_s3_pool.h), whatever the number and size of files.
 *
 * Nothing exists at the key before finish: the PUT is sent, or the
 * multipart upload completed, only then, after every part was sent and
 * its MD5 matched its ETag. A failed part stops the others of its upload
 * and fails the next write or the finish with its error (naming the
 * object and the part); abort aborts a multipart upload (best effort:
 * s3rver 5.0.0 cannot) or deletes what finish wrote.
 *
 * A size hint is a promise: more bytes than it says is an error.
 */
#ifndef CHB_S3_UPLOAD_H
#define CHB_S3_UPLOAD_H

#include "chb_error.h"
#include "chb_s3_pool.h"

#include <stddef.h>
#include <stdint.h>

typedef struct chb_s3_upload chb_s3_upload;

/* An upload of `key` through S3 profile `profile` (chb_s3_store.h);
 * size_hint: its size if known (0: unknown); pool: NULL, or the threads
 * and budget its parts use (it must outlive the upload). */
chb_s3_upload *chb_s3_upload_open(int profile, const char *key, uint64_t size_hint,
                                  chb_s3_pool *pool, chb_error *err);
int chb_s3_upload_write(chb_s3_upload *u, const void *buf, size_t len, chb_error *err);
/* Sends what is left, waits for the parts: the object exists from then on. */
int chb_s3_upload_finish(chb_s3_upload *u, chb_error *err);
/* "s3://bucket/key" */
const char *chb_s3_upload_name(const chb_s3_upload *u);
/* Stops its parts, aborts an unfinished upload or deletes a finished one
 * (best effort), then frees; accepts NULL. */
void chb_s3_upload_abort(chb_s3_upload *u);
/* Frees (a finished upload stays; parts still in flight are stopped and
 * waited for). Accepts NULL. */
void chb_s3_upload_free(chb_s3_upload *u);

#endif
