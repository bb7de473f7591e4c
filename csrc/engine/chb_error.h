/*
 * One error type for the whole engine.
 *
 * Every engine function that can fail takes a `chb_error *` and fills it:
 * a stable code (its name is what Lua sees as the third return value) and a
 * message that names the file or entry. The buffer is fixed so that filling
 * it never allocates: it is safe on worker threads and under OOM.
 */
#ifndef CHB_ERROR_H
#define CHB_ERROR_H

#include <stddef.h>

/* X-macro: the code table and its names stay in one place. */
#define CHB_ERROR_CODES(X) \
  X(CHB_OK, "OK")          \
  X(CHB_EIO, "EIO")        \
  X(CHB_ENOENT, "ENOENT")  \
  X(CHB_EEXIST, "EEXIST")  \
  X(CHB_ENOSPC, "ENOSPC")  \
  X(CHB_EACCES, "EACCES")  \
  X(CHB_ENOMEM, "ENOMEM")  \
  X(CHB_CORRUPT, "CORRUPT") \
  X(CHB_CANCELLED, "CANCELLED") \
  X(CHB_INVALID, "INVALID") \
  X(CHB_LZ4, "LZ4_ERROR")  \
  X(CHB_AUTH, "AUTH")      \
  X(CHB_CRYPTO, "CRYPTO")  \
  X(CHB_LOCKED, "LOCKED")  \
  X(CHB_NOBUCKET, "NO_BUCKET") \
  X(CHB_CLOCK_SKEW, "CLOCK_SKEW")

typedef enum {
#define CHB_ENUM(code, name) code,
  CHB_ERROR_CODES(CHB_ENUM)
#undef CHB_ENUM
} chb_code;

typedef struct chb_error {
  chb_code code;
  int sys;        /* errno or library code when there is one, else 0 */
  char msg[512];
} chb_error;

void chb_error_clear(chb_error *e);
/* Formats msg; returns -1 so callers can `return chb_error_set(...)`. */
int chb_error_set(chb_error *e, chb_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "<what> <path>: strerror(errnum)", code mapped from errnum. */
int chb_error_errno(chb_error *e, int errnum, const char *what, const char *path);
const char *chb_code_name(chb_code code);

#endif
