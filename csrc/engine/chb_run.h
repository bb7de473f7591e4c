/*
 * The run-state of anything that runs on threads of its own and ends once:
 * a job, a zip writer. One owner for what both need and used to copy:
 *   - the state (new -> running -> done | failed | cancelled), under a
 *     mutex, with a condvar signalled when it leaves RUNNING, so callers
 *     can wait with a timeout;
 *   - the stop flag its workers poll between two buffers (set by a
 *     failure or a cancel);
 *   - the first error, kept for the caller;
 *   - progress counters (atomics), readable at any time.
 */
#ifndef CHB_RUN_H
#define CHB_RUN_H

#include "chb_error.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

typedef enum {
  CHB_RUN_NEW,
  CHB_RUN_RUNNING,
  CHB_RUN_DONE,
  CHB_RUN_FAILED,
  CHB_RUN_CANCELLED
} chb_run_state;

/* The names the job and the Lua binding have always used. */
typedef chb_run_state chb_job_state;
#define CHB_JOB_NEW CHB_RUN_NEW
#define CHB_JOB_RUNNING CHB_RUN_RUNNING
#define CHB_JOB_DONE CHB_RUN_DONE
#define CHB_JOB_FAILED CHB_RUN_FAILED
#define CHB_JOB_CANCELLED CHB_RUN_CANCELLED

typedef struct chb_run_progress {
  chb_run_state state;
  uint64_t files_total, files_done;
  uint64_t bytes_total, bytes_done;   /* bytes_total counts known sizes only */
} chb_run_progress;
typedef chb_run_progress chb_job_progress;

typedef struct chb_run {
  atomic_int stop;            /* set on failure or cancel: workers exit */
  atomic_uint_fast64_t files_done, bytes_done;
  pthread_mutex_t lock;       /* guards state and error */
  pthread_cond_t ended;
  chb_run_state state;
  chb_error error;
} chb_run;

void chb_run_init(chb_run *r);
void chb_run_destroy(chb_run *r);

/* "new", "running", "done", "failed", "cancelled". */
const char *chb_run_state_name(chb_run_state s);

/* NEW -> RUNNING: 0; otherwise -1 with *was set to the state it is in. */
int chb_run_begin(chb_run *r, chb_run_state *was);
/* RUNNING -> NEW again: what was to run could not start. */
void chb_run_unbegin(chb_run *r);
/* Records the first failure and sets the stop flag. */
void chb_run_fail(chb_run *r, const chb_error *e);
/* Has a failure or a cancel asked the workers to stop? */
static inline int chb_run_stopped(chb_run *r) { return atomic_load(&r->stop); }
/*
 * Ends the run: DONE if ok, else FAILED or CANCELLED after the recorded
 * error (none recorded: a cancel, "cancelled"). Wakes the waiters.
 */
void chb_run_end(chb_run *r, int ok);
/* Sets the stop flag; a run not yet begun ends CANCELLED at once. */
void chb_run_cancel(chb_run *r);

/* The CLOCK_REALTIME time timeout_ms (>= 0) from now, for
 * pthread_cond_timedwait (the run's and the archive writers' waits). */
struct timespec chb_deadline(long timeout_ms);

/* Waits up to timeout_ms (< 0: until it ends); returns the state then. */
chb_run_state chb_run_wait(chb_run *r, long timeout_ms);
/* The state now (0 ms wait). */
chb_run_state chb_run_get_state(chb_run *r);
/* After the run ended: 0 if DONE, else -1 and a copy of its error (a run
 * that has not ended: CHB_INVALID "<what> has not ended (<state>)"). */
int chb_run_result(chb_run *r, const char *what, chb_error *err);
void chb_run_get_progress(chb_run *r, uint64_t files_total, uint64_t bytes_total,
                          chb_run_progress *out);

#endif
