/* Threads and a memory budget for S3 upload parts; see chb_s3_pool.h. */
#include "chb_s3_pool.h"
#include "chb_s3.h"
#include "chb_s3_store.h"

#include <pthread.h>
#include <stdlib.h>

struct chb_s3_pool {
  pthread_mutex_t mu;
  pthread_cond_t work;        /* a task queued, or stopping */
  pthread_cond_t room;        /* budget given back */
  chb_s3_pool_task *head, *tail;
  int stopping;
  int max_threads, nthreads, idle, running;
  pthread_t *threads;
  uint64_t budget, reserved;
  chb_s3_pool_stats stats;
};

chb_s3_pool *chb_s3_pool_new(int threads, uint64_t budget, chb_error *err) {
  if (threads < 1) threads = CHB_S3_POOL_DEFAULT_THREADS;
  chb_s3_pool *p = calloc(1, sizeof *p);
  if (p && !(p->threads = calloc((size_t)threads, sizeof *p->threads))) {
    free(p);
    p = NULL;
  }
  if (!p) {
    chb_error_set(err, CHB_ENOMEM, "S3: cannot allocate the upload threads");
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->room, NULL);
  p->max_threads = threads;
  p->budget = budget ? budget : (uint64_t)(threads < 2 ? 2 : threads) * CHB_S3_MIN_PART;
  p->stats.budget = p->budget;
  return p;
}

void chb_s3_pool_reserve(chb_s3_pool *p, uint64_t bytes) {
  pthread_mutex_lock(&p->mu);
  while (p->reserved > 0 && p->reserved + bytes > p->budget) pthread_cond_wait(&p->room, &p->mu);
  p->reserved += bytes;
  if (p->reserved > p->stats.peak_reserved) p->stats.peak_reserved = p->reserved;
  pthread_mutex_unlock(&p->mu);
}

void chb_s3_pool_release(chb_s3_pool *p, uint64_t bytes) {
  pthread_mutex_lock(&p->mu);
  p->reserved -= bytes;
  pthread_cond_broadcast(&p->room);
  pthread_mutex_unlock(&p->mu);
}

static void *pool_thread(void *arg) {
  chb_s3_pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    chb_s3_pool_task *t = p->head;
    if (!t) {
      if (p->stopping) break;
      p->idle++;
      pthread_cond_wait(&p->work, &p->mu);
      p->idle--;
      continue;
    }
    if (!(p->head = t->next)) p->tail = NULL;
    if (++p->running > p->stats.peak_running) p->stats.peak_running = p->running;
    pthread_mutex_unlock(&p->mu);
    t->run(t);                /* may free t */
    pthread_mutex_lock(&p->mu);
    p->running--;
  }
  pthread_mutex_unlock(&p->mu);
  chb_s3_thread_clients_free();   /* now, rather than at the key's destructor: the same, sooner */
  return NULL;
}

int chb_s3_pool_submit(chb_s3_pool *p, chb_s3_pool_task *t, chb_error *err) {
  pthread_mutex_lock(&p->mu);
  /* One more thread when none is free to take it (queued tasks count as
   * taken): at most one per task in flight, up to max_threads. */
  int queued = 0;
  for (chb_s3_pool_task *q = p->head; q; q = q->next) queued++;
  int rc = 0;
  if (!p->stopping && p->idle <= queued && p->nthreads < p->max_threads) {
    rc = pthread_create(&p->threads[p->nthreads], NULL, pool_thread, p);
    if (rc == 0) p->stats.threads_started = ++p->nthreads;
  }
  if (p->nthreads == 0 || p->stopping) {
    pthread_mutex_unlock(&p->mu);
    if (rc != 0) return chb_error_errno(err, rc, "cannot start", "an S3 upload thread");
    return chb_error_set(err, CHB_INVALID, "S3 upload threads stopped");
  }
  t->next = NULL;
  if (p->tail) p->tail->next = t;
  else p->head = t;
  p->tail = t;
  pthread_cond_signal(&p->work);
  pthread_mutex_unlock(&p->mu);
  return 0;
}

void chb_s3_pool_get_stats(chb_s3_pool *p, chb_s3_pool_stats *out) {
  pthread_mutex_lock(&p->mu);
  *out = p->stats;
  pthread_mutex_unlock(&p->mu);
}

void chb_s3_pool_stop(chb_s3_pool *p) {
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
}

void chb_s3_pool_free(chb_s3_pool *p) {
  if (!p) return;
  chb_s3_pool_stop(p);
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->room);
  free(p->threads);
  free(p);
}
