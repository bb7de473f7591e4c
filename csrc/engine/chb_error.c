/* The one place where errno and library codes become chb_error values. */
#include "chb_error.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void chb_error_clear(chb_error *e) {
  e->code = CHB_OK;
  e->sys = 0;
  e->msg[0] = '\0';
}

int chb_error_set(chb_error *e, chb_code code, const char *fmt, ...) {
  va_list ap;
  e->code = code;
  e->sys = 0;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return -1;
}

static chb_code code_from_errno(int errnum) {
  switch (errnum) {
  case ENOENT: return CHB_ENOENT;
  case EEXIST: return CHB_EEXIST;
  case ENOSPC: case EDQUOT: return CHB_ENOSPC;
  case EACCES: case EPERM: case EROFS: return CHB_EACCES;
  case ENOMEM: return CHB_ENOMEM;
  default: return CHB_EIO;
  }
}

int chb_error_errno(chb_error *e, int errnum, const char *what, const char *path) {
  char buf[256];
  /* GNU strerror_r may return a static string instead of filling buf. */
  const char *text = strerror_r(errnum, buf, sizeof buf);
  chb_error_set(e, code_from_errno(errnum), "%s %s: %s", what, path, text);
  e->sys = errnum;
  return -1;
}

const char *chb_code_name(chb_code code) {
  switch (code) {
#define CHB_NAME(c, name) case c: return name;
    CHB_ERROR_CODES(CHB_NAME)
#undef CHB_NAME
  }
  return "UNKNOWN";
}
