/*
 * The threads that send the parts of S3 uploads, and the memory they may
 * hold (chb_s3_upload.h uses it; a job or a tar writer owns one).
 *
 * Threads: up to `threads`, started when a task finds none idle, each
 * with its own S3 clients (chb_s3_thread_client: connections stay alive
 * from part to part); they end at chb_s3_pool_stop/free.
 *
 * Memory: a byte budget that every upload buffer is reserved from before
 * it is filled and given back when the buffer is freed (after its part is
 * sent). A reservation waits while it would exceed the budget; one larger
 * than the whole budget is granted when nothing else is reserved. So the
 * upload buffers of everything using the pool stay within
 * max(budget, the largest single buffer), however many files and parts.
 * The wait cannot deadlock: a writer waits only with no buffer of its own
 * being filled, and what it waits for (parts being sent) needs no budget.
 */
#ifndef CHB_S3_POOL_H
#define CHB_S3_POOL_H

#include "chb_error.h"

#include <stdint.h>

/* Threads when none are asked for: a job's default on a few cores (the
 * parts wait on the network, not on the CPU). */
#define CHB_S3_POOL_DEFAULT_THREADS 8

typedef struct chb_s3_pool chb_s3_pool;

/* A unit of work: embedded first in the caller's own struct, which
 * run() receives back (and frees, if it wants). */
typedef struct chb_s3_pool_task {
  void (*run)(struct chb_s3_pool_task *t);
  struct chb_s3_pool_task *next;   /* the pool's */
} chb_s3_pool_task;

typedef struct chb_s3_pool_stats {
  uint64_t budget;
  uint64_t peak_reserved;          /* the most bytes reserved at once */
  int peak_running;                /* the most tasks running at once */
  int threads_started;
} chb_s3_pool_stats;

/* threads <= 0: CHB_S3_POOL_DEFAULT_THREADS; budget 0: one 16 MiB part per thread, at least two (one
 * filled while the other is sent). NULL with err set. */
chb_s3_pool *chb_s3_pool_new(int threads, uint64_t budget, chb_error *err);
/* Waits until `bytes` fit (see above), then reserves them. */
void chb_s3_pool_reserve(chb_s3_pool *p, uint64_t bytes);
void chb_s3_pool_release(chb_s3_pool *p, uint64_t bytes);
/* Queues t to run on a pool thread. -1 with err set when no thread runs
 * nor can be started: the caller runs t itself. */
int chb_s3_pool_submit(chb_s3_pool *p, chb_s3_pool_task *t, chb_error *err);
void chb_s3_pool_get_stats(chb_s3_pool *p, chb_s3_pool_stats *out);
/* Lets the threads end once the queue is empty (no wait). */
void chb_s3_pool_stop(chb_s3_pool *p);
/* Stops, joins the threads (queued tasks run first) and frees. Accepts NULL. */
void chb_s3_pool_free(chb_s3_pool *p);

#endif
