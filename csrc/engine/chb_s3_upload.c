/* S3 objects written as streams: one PUT, or parts sent in parallel; see chb_s3_upload.h. */
#include "chb_s3_upload.h"
#include "chb_s3.h"
#include "chb_s3_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_PARTS_THRESHOLD 500   /* ClickHouse's upload_part_size_multiply_parts_count_threshold */
#define FIRST_CAP ((size_t)64 << 10)

/*
 * A buffer and the budget it holds. Shared by the parts cut from it (an
 * unknown size's first 32 MiB becomes two parts) and by the writer while
 * it fills it; the last reference frees it and gives its budget back.
 */
typedef struct block {
  unsigned char *p;
  size_t len, alloc, max;     /* filled, allocated, reserved (the most it holds) */
  int refs;                   /* under the upload's mu */
} block;

struct chb_s3_upload {
  int profile;
  chb_s3 *s;                  /* the writer thread's client (not owned): PUT, create, complete, abort */
  chb_s3_pool *pool;          /* NULL: the writer sends the parts itself */
  char *key, *name;
  uint64_t hint, written;
  block *cur;                 /* being filled; NULL: none yet */
  uint64_t part;              /* multipart: the part size now */
  char *upload_id;            /* NULL: still one PUT */
  int finished;
  /* shared with the parts in flight */
  pthread_mutex_t mu;
  pthread_cond_t part_ended;
  chb_s3_part *parts;         /* by number - 1 */
  size_t nparts, pcap;        /* numbers handed out */
  int inflight;
  int failed;
  chb_error part_err;         /* the first failed part's */
  atomic_int stop;            /* a part failed or the upload is aborted: the others stop */
};

typedef struct part_job {
  chb_s3_pool_task task;      /* first: the pool hands it back */
  chb_s3_upload *u;
  block *b;
  size_t off, len;
  int number;
} part_job;

chb_s3_upload *chb_s3_upload_open(int profile_id, const char *key, uint64_t size_hint,
                                  chb_s3_pool *pool, chb_error *err) {
  chb_s3 *s = chb_s3_thread_client(profile_id, err);
  if (!s) return NULL;
  chb_s3_upload *u = calloc(1, sizeof *u);
  if (u) {
    u->profile = profile_id;
    u->s = s;
    u->pool = pool;
    u->hint = size_hint;
    u->key = strdup(key);
    size_t n = strlen(key) + strlen(chb_s3_bucket(s)) + 8;
    if ((u->name = malloc(n))) snprintf(u->name, n, "s3://%s/%s", chb_s3_bucket(s), key);
    atomic_init(&u->stop, 0);
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->part_ended, NULL);
  }
  if (!u || !u->key || !u->name) {
    chb_s3_upload_free(u);
    chb_error_set(err, CHB_ENOMEM, "S3: out of memory for an upload of %s", key);
    return NULL;
  }
  return u;
}

const char *chb_s3_upload_name(const chb_s3_upload *u) { return u->name; }

/* ---- buffers ------------------------------------------------------------------- */

/* A new buffer of at most max bytes, its budget reserved first (this may
 * wait for parts in flight to be sent). */
static block *block_new(chb_s3_upload *u, size_t max, chb_error *err) {
  block *b = calloc(1, sizeof *b);
  if (!b) {
    chb_error_set(err, CHB_ENOMEM, "S3: out of memory for a buffer of %s", u->name);
    return NULL;
  }
  if (u->pool && max > 0) chb_s3_pool_reserve(u->pool, max);
  b->max = max;
  b->refs = 1;
  return b;
}

/* Room for need bytes. A part or a known size is allocated whole at once;
 * an unknown size's first buffer grows by doubling (most objects are small). */
static int block_fit(chb_s3_upload *u, block *b, size_t need, chb_error *err) {
  if (need <= b->alloc) return 0;
  size_t cap = b->max;
  if (!u->upload_id && !u->hint) {
    cap = b->alloc ? b->alloc : FIRST_CAP;
    while (cap < need) cap *= 2;
    if (cap > b->max) cap = b->max;
  }
  unsigned char *grown = realloc(b->p, cap);
  if (!grown) return chb_error_set(err, CHB_ENOMEM, "S3: out of memory for a part of %s", u->name);
  b->p = grown;
  b->alloc = cap;
  return 0;
}

/* Drops one reference; the last frees the buffer and gives its budget back. */
static void block_unref(chb_s3_upload *u, block *b) {
  pthread_mutex_lock(&u->mu);
  int last = --b->refs == 0;
  pthread_mutex_unlock(&u->mu);
  if (!last) return;
  size_t max = b->max;
  free(b->p);
  free(b);
  if (u->pool && max > 0) chb_s3_pool_release(u->pool, max);
}

/* ---- parts --------------------------------------------------------------------- */

static int64_t part_read_at(void *ctx, uint64_t off, void *out, size_t len, chb_error *e) {
  const part_job *j = ctx;
  (void)e;
  size_t n = off < j->len ? j->len - (size_t)off : 0;
  if (n > len) n = len;
  memcpy(out, j->b->p + j->off + off, n);
  return (int64_t)n;
}

/* Sends one part (on a pool thread, or the writer's), then records its
 * ETag, or the first failure, which stops the other parts. */
static void part_run(chb_s3_pool_task *t) {
  part_job *j = (part_job *)t;
  chb_s3_upload *u = j->u;
  chb_error err;
  chb_error_clear(&err);
  chb_s3_part sent = {0};
  int rc = -1;
  if (atomic_load(&u->stop)) {
    chb_error_set(&err, CHB_CANCELLED, "S3 upload of %s: part %d not sent (the upload stopped)", u->name,
                  j->number);
  } else {
    chb_s3 *s = chb_s3_thread_client(u->profile, &err);
    if (s) {
      chb_s3_source src = {part_read_at, j, j->len};
      chb_s3_set_cancel(s, &u->stop);
      rc = chb_s3_mpu_part(s, u->key, u->upload_id, j->number, &src, 0, j->len, &sent, &err);
      chb_s3_set_cancel(s, NULL);
    }
  }
  block_unref(u, j->b);
  pthread_mutex_lock(&u->mu);
  if (rc == 0) {
    u->parts[j->number - 1] = sent;
  } else if (!u->failed) {
    u->failed = 1;
    u->part_err = err;
    atomic_store(&u->stop, 1);
  }
  u->inflight--;               /* from here on u may be gone */
  pthread_cond_broadcast(&u->part_ended);
  pthread_mutex_unlock(&u->mu);
  free(j);
}

/* Hands b[off, off+len) out as the next part. */
static int submit_part(chb_s3_upload *u, block *b, size_t off, size_t len, chb_error *err) {
  part_job *j = calloc(1, sizeof *j);
  if (!j) return chb_error_set(err, CHB_ENOMEM, "S3: out of memory for the parts of %s", u->name);
  int rc = 0;
  pthread_mutex_lock(&u->mu);
  if (u->nparts == CHB_S3_MAX_PARTS) {
    rc = chb_error_set(err, CHB_INVALID, "S3 upload of %s: more than %d parts", u->name, CHB_S3_MAX_PARTS);
  } else if (u->nparts == u->pcap) {
    size_t cap = u->pcap ? u->pcap * 2 : 16;
    chb_s3_part *grown = realloc(u->parts, cap * sizeof *grown);
    if (grown) {
      u->parts = grown;
      u->pcap = cap;
    } else {
      rc = chb_error_set(err, CHB_ENOMEM, "S3: out of memory for the parts of %s", u->name);
    }
  }
  if (rc == 0) {
    j->number = (int)++u->nparts;
    u->inflight++;
    b->refs++;
  }
  pthread_mutex_unlock(&u->mu);
  if (rc != 0) {
    free(j);
    return -1;
  }
  j->task.run = part_run;
  j->u = u;
  j->b = b;
  j->off = off;
  j->len = len;
  chb_error no_thread;
  if (!u->pool || chb_s3_pool_submit(u->pool, &j->task, &no_thread) != 0) part_run(&j->task);
  if (!u->hint && u->nparts % STREAM_PARTS_THRESHOLD == 0 && u->part * 2 <= CHB_S3_MAX_PART)
    u->part *= 2;   /* WriteBufferFromS3's upload_part_size_multiply_factor */
  return 0;
}

/* The buffer being filled goes out as parts of u->part bytes (one, but
 * two for an unknown size's first 32 MiB). */
static int submit_cur(chb_s3_upload *u, chb_error *err) {
  block *b = u->cur;
  u->cur = NULL;
  int rc = 0;
  size_t off = 0;
  do {
    size_t n = b->len - off < u->part ? b->len - off : (size_t)u->part;
    rc = submit_part(u, b, off, n, err);
    off += n;
  } while (rc == 0 && off < b->len);
  block_unref(u, b);          /* the writer's */
  return rc;
}

static void wait_parts(chb_s3_upload *u) {
  pthread_mutex_lock(&u->mu);
  while (u->inflight > 0) pthread_cond_wait(&u->part_ended, &u->mu);
  pthread_mutex_unlock(&u->mu);
}

/* A part failed: its error into err. */
static int parts_failed(chb_s3_upload *u, chb_error *err) {
  if (!atomic_load(&u->stop)) return 0;
  pthread_mutex_lock(&u->mu);
  if (u->failed) *err = u->part_err;
  else chb_error_set(err, CHB_CANCELLED, "S3 upload of %s stopped", u->name);
  pthread_mutex_unlock(&u->mu);
  return 1;
}

static int start_multipart(chb_s3_upload *u, chb_error *err) {
  u->part = u->hint ? chb_s3_part_size(u->hint, 0) : CHB_S3_MIN_PART;
  if (u->part > CHB_S3_MAX_PART) u->part = CHB_S3_MAX_PART;
  return chb_s3_mpu_create(u->s, u->key, &u->upload_id, err);
}

/* ---- writing ------------------------------------------------------------------- */

/* The most the next buffer holds: the whole object while it may be one
 * PUT, else a part (the last one of a known size: what is left). */
static size_t next_max(const chb_s3_upload *u) {
  if (!u->upload_id) return u->hint ? (size_t)u->hint : (size_t)CHB_S3_SINGLE_PUT_MAX;
  uint64_t m = u->part;
  if (u->hint && u->hint - u->written < m) m = u->hint - u->written;
  return (size_t)m;
}

int chb_s3_upload_write(chb_s3_upload *u, const void *buf, size_t len, chb_error *err) {
  const unsigned char *p = buf;
  if (u->hint && len > u->hint - u->written)
    return chb_error_set(err, CHB_CORRUPT, "S3 upload of %s: more than the %llu bytes announced "
                         "(the source grew while it was read?)", u->name, (unsigned long long)u->hint);
  if (!u->upload_id && u->hint > CHB_S3_SINGLE_PUT_MAX && start_multipart(u, err) != 0) return -1;
  while (len > 0) {
    if (parts_failed(u, err)) return -1;
    if (!u->cur && !(u->cur = block_new(u, next_max(u), err))) return -1;
    block *b = u->cur;
    if (b->len == b->max) {
      /* Only an unknown size's 32 MiB gets here full: more than one PUT
       * takes, multipart from here on. */
      if (start_multipart(u, err) != 0 || submit_cur(u, err) != 0) return -1;
      continue;
    }
    size_t take = b->max - b->len < len ? b->max - b->len : len;
    if (block_fit(u, b, b->len + take, err) != 0) return -1;
    memcpy(b->p + b->len, p, take);
    b->len += take;
    u->written += take;
    p += take;
    len -= take;
    /* A full part goes at once: the next is filled while it is sent. */
    if (u->upload_id && b->len == b->max && submit_cur(u, err) != 0) return -1;
  }
  return 0;
}

int chb_s3_upload_finish(chb_s3_upload *u, chb_error *err) {
  int rc = 0;
  if (!u->upload_id) {
    block *b = u->cur;
    u->cur = NULL;
    rc = chb_s3_put(u->s, u->key, b && b->p ? (const void *)b->p : "", b ? b->len : 0, err);
    if (b) block_unref(u, b);
  } else {
    if (u->cur && u->cur->len == 0 && u->nparts > 0) {
      block_unref(u, u->cur);
      u->cur = NULL;
    }
    if (!u->cur && u->nparts == 0 && !(u->cur = block_new(u, 0, err))) rc = -1;
    if (rc == 0 && u->cur) rc = submit_cur(u, err);
    wait_parts(u);
    if (rc == 0 && parts_failed(u, err)) rc = -1;
    if (rc == 0) rc = chb_s3_mpu_complete(u->s, u->key, u->upload_id, u->parts, u->nparts, err);
  }
  if (rc == 0) u->finished = 1;
  return rc;
}

void chb_s3_upload_free(chb_s3_upload *u) {
  if (!u) return;
  atomic_store(&u->stop, 1);
  wait_parts(u);
  if (u->cur) block_unref(u, u->cur);
  pthread_mutex_destroy(&u->mu);
  pthread_cond_destroy(&u->part_ended);
  free(u->key);
  free(u->name);
  free(u->upload_id);
  free(u->parts);
  free(u);
}

void chb_s3_upload_abort(chb_s3_upload *u) {
  if (!u) return;
  atomic_store(&u->stop, 1);
  wait_parts(u);              /* no part may land after the abort */
  chb_error ignored;
  if (u->finished) chb_s3_delete(u->s, u->key, &ignored);
  else if (u->upload_id) chb_s3_mpu_abort(u->s, u->key, u->upload_id, &ignored);
  chb_s3_upload_free(u);
}
