/* Starting the detached worker process of an ASYNC operation in the CLI. */
#ifndef CHB_PROC_H
#define CHB_PROC_H

#include "chb_error.h"

/*
 * Runs argv[0] (searched in PATH) in a new session, detached from the
 * caller (double fork, so it is never the caller's zombie), stdin from
 * /dev/null and stdout/stderr appended to `log_path`. Returns the pid of
 * the detached process, or -1 with err set.
 */
long chb_proc_spawn_detached(const char *const argv[], const char *log_path, chb_error *err);

#endif
