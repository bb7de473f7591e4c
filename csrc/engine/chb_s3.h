/*
 * An S3 client for any S3-compatible endpoint (AWS, MinIO, s3rver, ...):
 * libcurl for HTTP, OpenSSL for SigV4, expat for the XML answers.
 *
 * SigV4 is computed here, not by CURLOPT_AWS_SIGV4 (libcurl 7.88 neither
 * sorts nor encodes the canonical query or path): the query string sent is
 * the canonical one, the path is RFC 3986-encoded per segment, and the
 * signed headers are host, x-amz-content-sha256, x-amz-date plus every
 * other header the request sends (range, content-md5, if-none-match, ...).
 *
 * One chb_s3 owns one CURL handle, so connections are kept alive between
 * requests; it is not thread-safe: one client per thread. Every request is
 * retried with exponential backoff (bounded) on dropped connections, 5xx,
 * 429 and S3's RequestTimeout; a streamed GET resumes where it stopped.
 * Bodies stream through fixed buffers: nothing buffers a whole object.
 *
 * Errors name the object as s3://bucket/key and say what happened; the
 * secret never appears in them. Codes:
 *   AUTH       SignatureDoesNotMatch (wrong secret), InvalidAccessKeyId
 *   EACCES     AccessDenied
 *   ENOENT     NoSuchKey (and a 404 HEAD)
 *   NO_BUCKET  NoSuchBucket
 *   CLOCK_SKEW RequestTimeTooSkewed
 *   EEXIST     put_if_absent on an existing key
 *   EIO        anything else, after the retries (network, 5xx, ...)
 */
#ifndef CHB_S3_H
#define CHB_S3_H

#include "chb_error.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define CHB_S3_MIN_PART ((uint64_t)16 << 20)       /* ClickHouse's min_upload_part_size */
#define CHB_S3_MAX_PART ((uint64_t)5 << 30)        /* S3's limit */
#define CHB_S3_MAX_PARTS 10000
#define CHB_S3_SINGLE_PUT_MAX ((uint64_t)32 << 20) /* ClickHouse's max_single_part_upload_size */
#define CHB_S3_DELETE_BATCH 1000

typedef struct chb_s3_config {
  const char *endpoint;     /* "http://127.0.0.1:9000" or "https://s3.eu-west-1.amazonaws.com" */
  const char *bucket;
  const char *region;       /* NULL: "us-east-1" */
  const char *key_id;
  const char *secret;
  const char *session_token; /* NULL, or STS credentials' token (x-amz-security-token) */
  const char *storage_class; /* NULL, or x-amz-storage-class of objects written (STANDARD, ...) */
  int path_style;           /* 1: endpoint/bucket/key; 0: bucket.endpoint/key (virtual-hosted) */
  int max_retries;          /* retries after the first attempt; < 0: default 4 */
  long retry_base_ms;       /* first backoff, doubled each retry (capped at 10 s); 0: 200 */
  long connect_timeout_ms;  /* 0: 10000 */
  long low_speed_time_s;    /* abort a transfer slower than 1 byte/s for this long; 0: 60 */
  long request_timeout_ms;  /* whole request; 0: none (large objects take long) */
  int sign_payload;         /* 1: hash streamed bodies first (two reads) instead of UNSIGNED-PAYLOAD */
  int no_etag_check;        /* 1: do not compare a streamed PUT's MD5 with the ETag (SSE-KMS/SSE-C) */
} chb_s3_config;

typedef struct chb_s3 chb_s3;

/* A body read by position (so that a retry can read it again). Returns the
 * bytes read (> 0), or -1 with e filled. */
typedef struct chb_s3_source {
  int64_t (*read_at)(void *ctx, uint64_t offset, void *buf, size_t len, chb_error *e);
  void *ctx;
  uint64_t size;
} chb_s3_source;

/* Receives a GET body in order; returns 0, or -1 (with e filled) to stop. */
typedef int (*chb_s3_sink)(void *ctx, const void *data, size_t len, chb_error *e);

typedef struct chb_s3_stat {
  uint64_t size;
  char etag[80];            /* without quotes */
} chb_s3_stat;

typedef struct chb_s3_part {
  int number;
  char etag[80];
} chb_s3_part;

/* Called for each listed object; returns 0, or -1 (with e filled) to stop. */
typedef int (*chb_s3_list_cb)(void *ctx, const char *key, uint64_t size, const char *etag,
                              chb_error *e);

chb_s3 *chb_s3_new(const chb_s3_config *cfg, chb_error *e);
void chb_s3_free(chb_s3 *s);
/* The client's bucket (for messages: s3://bucket/key). */
const char *chb_s3_bucket(const chb_s3 *s);
/* While flag is set (NULL: none), a request stops once *flag is non-zero:
 * the rest of its body is not sent, it is not retried, and it fails with
 * CHB_CANCELLED. (The parts of an upload stop when one of them failed.) */
void chb_s3_set_cancel(chb_s3 *s, const atomic_int *flag);

/* Single PUT of a buffer (sha256 payload hash and Content-MD5). */
int chb_s3_put(chb_s3 *s, const char *key, const void *data, size_t len, chb_error *e);
/* Single PUT of a positional source (known length, Content-Length, no chunked encoding). */
int chb_s3_put_source(chb_s3 *s, const char *key, const chb_s3_source *src, chb_error *e);
/* Single PUT of a file range; length < 0: to the end of the file. */
int chb_s3_put_file(chb_s3 *s, const char *key, const char *path, uint64_t offset,
                    int64_t length, chb_error *e);
/* A file of any size: one PUT up to 32 MiB, else multipart. */
int chb_s3_upload_file(chb_s3 *s, const char *key, const char *path, chb_error *e);

/*
 * PUT unless the key exists (ClickHouse's `.lock`, writeFileIfNotExists):
 * HEAD first (refused with EEXIST if there), then a PUT with
 * `If-None-Match: *`, which AWS (since 2024-08) and MinIO answer with 412
 * when another writer won the race in between. Servers without conditional
 * PUT (s3rver 5.0.0) ignore the header: for them only the HEAD protects, a
 * small window remains. A 501 to the conditional PUT is retried plain.
 */
int chb_s3_put_if_absent(chb_s3 *s, const char *key, const void *data, size_t len, chb_error *e);

/* GET bytes [offset, offset+length) (length < 0: to the end) into sink. */
int chb_s3_get(chb_s3 *s, const char *key, uint64_t offset, int64_t length, chb_s3_sink sink,
               void *ctx, chb_error *e);
/* GET into buf (at most cap bytes; more is an error); *got = bytes read. */
int chb_s3_get_buf(chb_s3 *s, const char *key, uint64_t offset, int64_t length, void *buf,
                   size_t cap, size_t *got, chb_error *e);
/* GET into a new file (created, 0644, truncated). */
int chb_s3_get_file(chb_s3 *s, const char *key, uint64_t offset, int64_t length,
                    const char *path, chb_error *e);

/* HEAD: size and ETag; ENOENT if missing. */
int chb_s3_head(chb_s3 *s, const char *key, chb_s3_stat *st, chb_error *e);

int chb_s3_delete(chb_s3 *s, const char *key, chb_error *e);
/* POST ?delete in batches of 1000 (with Content-MD5); any key the server
 * could not delete is an error naming it. Missing keys are not errors. */
int chb_s3_delete_many(chb_s3 *s, const char *const *keys, size_t n, chb_error *e);

/* ListObjectsV2 of every key under prefix (following continuation tokens);
 * max_keys per page (0: 1000). */
int chb_s3_list(chb_s3 *s, const char *prefix, int max_keys, chb_s3_list_cb cb, void *ctx,
                chb_error *e);

/* Multipart upload, step by step. *upload_id is malloc'd. */
int chb_s3_mpu_create(chb_s3 *s, const char *key, char **upload_id, chb_error *e);
int chb_s3_mpu_part(chb_s3 *s, const char *key, const char *upload_id, int number,
                    const chb_s3_source *src, uint64_t offset, uint64_t len, chb_s3_part *out,
                    chb_error *e);
int chb_s3_mpu_complete(chb_s3 *s, const char *key, const char *upload_id,
                        const chb_s3_part *parts, size_t n, chb_error *e);
/* Best effort: 0 aborted, 1 the server does not implement it (404/405/501), -1 error. */
int chb_s3_mpu_abort(chb_s3 *s, const char *key, const char *upload_id, chb_error *e);
/* The whole source as a multipart upload: part size max(part_size, 16 MiB,
 * ceil(size/10000)), at most 5 GiB; aborted (best effort) on error. */
int chb_s3_upload_multipart(chb_s3 *s, const char *key, const chb_s3_source *src,
                            uint64_t part_size, chb_error *e);
/* The part size chosen for an object of `size` bytes. */
uint64_t chb_s3_part_size(uint64_t size, uint64_t wanted);

/* ---- SigV4, exposed for the unit tests --------------------------------- */

typedef struct chb_s3_header {
  const char *name;         /* any case; lower-cased for signing */
  const char *value;        /* trimmed, inner runs of spaces folded */
} chb_s3_header;

/* RFC 3986 encoding (unreserved A-Z a-z 0-9 - . _ ~ kept); keep_slash keeps '/'.
 * Returns a malloc'd string. */
char *chb_s3_uri_encode(const char *in, int keep_slash);
/* "k1=v1&k2=v2" sorted by encoded key (then value), both encoded, value-less
 * keys as "k=". pairs: 2*n strings (a NULL value is ""). malloc'd. */
char *chb_s3_canonical_query(const char *const *pairs, size_t n);
/*
 * The Authorization header value for a request. canonical_uri and
 * canonical_query are already canonical (encoded); headers must hold
 * every header to sign (host, x-amz-date, x-amz-content-sha256, ...).
 * If creq is not NULL it receives the canonical request (malloc'd).
 */
char *chb_s3_sign(const char *key_id, const char *secret, const char *region,
                  const char *service, const char *amz_date, const char *method,
                  const char *canonical_uri, const char *canonical_query,
                  const chb_s3_header *headers, size_t nheaders, const char *payload_hash,
                  char **creq);

#endif
