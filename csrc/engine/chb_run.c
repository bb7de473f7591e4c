/* The run-state shared by jobs and zip writers; see chb_run.h. */
#include "chb_run.h"

#include <time.h>

void chb_run_init(chb_run *r) {
  atomic_init(&r->stop, 0);
  atomic_init(&r->files_done, 0);
  atomic_init(&r->bytes_done, 0);
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->ended, NULL);
  r->state = CHB_RUN_NEW;
  chb_error_clear(&r->error);
}

void chb_run_destroy(chb_run *r) {
  pthread_mutex_destroy(&r->lock);
  pthread_cond_destroy(&r->ended);
}

const char *chb_run_state_name(chb_run_state s) {
  switch (s) {
  case CHB_RUN_NEW: return "new";
  case CHB_RUN_RUNNING: return "running";
  case CHB_RUN_DONE: return "done";
  case CHB_RUN_FAILED: return "failed";
  case CHB_RUN_CANCELLED: return "cancelled";
  }
  return "unknown";
}

int chb_run_begin(chb_run *r, chb_run_state *was) {
  pthread_mutex_lock(&r->lock);
  chb_run_state s = r->state;
  if (s == CHB_RUN_NEW) r->state = CHB_RUN_RUNNING;
  pthread_mutex_unlock(&r->lock);
  if (was) *was = s;
  return s == CHB_RUN_NEW ? 0 : -1;
}

void chb_run_unbegin(chb_run *r) {
  pthread_mutex_lock(&r->lock);
  r->state = CHB_RUN_NEW;
  pthread_mutex_unlock(&r->lock);
}

void chb_run_fail(chb_run *r, const chb_error *e) {
  pthread_mutex_lock(&r->lock);
  if (r->error.code == CHB_OK) r->error = *e;
  pthread_mutex_unlock(&r->lock);
  atomic_store(&r->stop, 1);
}

void chb_run_end(chb_run *r, int ok) {
  pthread_mutex_lock(&r->lock);
  if (!ok && r->error.code == CHB_OK) chb_error_set(&r->error, CHB_CANCELLED, "cancelled");
  r->state = ok ? CHB_RUN_DONE
           : r->error.code == CHB_CANCELLED ? CHB_RUN_CANCELLED : CHB_RUN_FAILED;
  pthread_cond_broadcast(&r->ended);
  pthread_mutex_unlock(&r->lock);
}

void chb_run_cancel(chb_run *r) {
  atomic_store(&r->stop, 1);
  pthread_mutex_lock(&r->lock);
  if (r->state == CHB_RUN_NEW) {
    chb_error_set(&r->error, CHB_CANCELLED, "cancelled before start");
    r->state = CHB_RUN_CANCELLED;
  }
  pthread_mutex_unlock(&r->lock);
}

/* With the lock held: waits while RUNNING, up to timeout_ms (< 0: until it ends). */
static void wait_locked(chb_run *r, long timeout_ms) {
  if (timeout_ms < 0) {
    while (r->state == CHB_RUN_RUNNING) pthread_cond_wait(&r->ended, &r->lock);
    return;
  }
  if (r->state != CHB_RUN_RUNNING) return;
  struct timespec ts = chb_deadline(timeout_ms);
  while (r->state == CHB_RUN_RUNNING && pthread_cond_timedwait(&r->ended, &r->lock, &ts) == 0) {
  }
}

chb_run_state chb_run_wait(chb_run *r, long timeout_ms) {
  pthread_mutex_lock(&r->lock);
  wait_locked(r, timeout_ms);
  chb_run_state s = r->state;
  pthread_mutex_unlock(&r->lock);
  return s;
}

chb_run_state chb_run_get_state(chb_run *r) { return chb_run_wait(r, 0); }

int chb_run_result(chb_run *r, const char *what, chb_error *err) {
  pthread_mutex_lock(&r->lock);
  chb_run_state s = r->state;
  int rc = -1;
  if (s == CHB_RUN_DONE) {
    chb_error_clear(err);
    rc = 0;
  } else if (s == CHB_RUN_NEW || s == CHB_RUN_RUNNING) {
    chb_error_set(err, CHB_INVALID, "%s has not ended (%s)", what, chb_run_state_name(s));
  } else {
    *err = r->error;
  }
  pthread_mutex_unlock(&r->lock);
  return rc;
}

void chb_run_get_progress(chb_run *r, uint64_t files_total, uint64_t bytes_total,
                          chb_run_progress *out) {
  out->state = chb_run_get_state(r);
  out->files_total = files_total;
  out->files_done = atomic_load(&r->files_done);
  out->bytes_total = bytes_total;
  out->bytes_done = atomic_load(&r->bytes_done);
}

struct timespec chb_deadline(long timeout_ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}
