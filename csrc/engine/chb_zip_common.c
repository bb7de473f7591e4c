/* libzip errors and secret strings for the zip code; see chb_zip_common.h. */
#include "chb_zip_common.h"
#include "chb_zip_read.h"

#include <stdlib.h>
#include <string.h>

/* ---- errors and names -------------------------------------------------- */

/* Fills err from a libzip error: "<what> <path>: <libzip text>". */
int chb_zip_fail(chb_error *err, zip_error_t *ze, const char *what, const char *path) {
  int zc = zip_error_code_zip(ze), sys = zip_error_code_system(ze);
  int is_sys = zip_error_system_type(ze) == ZIP_ET_SYS;
  chb_code code;
  switch (zc) {
  case ZIP_ER_NOENT: code = CHB_ENOENT; break;
  case ZIP_ER_EXISTS: code = CHB_EEXIST; break;
  case ZIP_ER_MEMORY: code = CHB_ENOMEM; break;
  case ZIP_ER_NOZIP: case ZIP_ER_INCONS: case ZIP_ER_CRC: case ZIP_ER_EOF:
  case ZIP_ER_COMPNOTSUPP: case ZIP_ER_ZLIB:
    code = CHB_CORRUPT; break;
  case ZIP_ER_CANCELLED: code = CHB_CANCELLED; break;
  case ZIP_ER_NOPASSWD: case ZIP_ER_WRONGPASSWD: code = CHB_AUTH; break;
  case ZIP_ER_INVAL: case ZIP_ER_ENCRNOTSUPP: case ZIP_ER_RDONLY: code = CHB_INVALID; break;
  default:
    code = CHB_EIO;
    if (is_sys && sys) {
      chb_error tmp;
      chb_error_errno(&tmp, sys, what, path);
      code = tmp.code;
    }
  }
  const char *text = zip_error_strerror(ze);
  if (zc == ZIP_ER_NOZIP)
    text = "not a zip archive, or a truncated one (no end of central directory)";
  chb_error_set(err, code, "%s %s: %s", what, path, text);
  err->sys = is_sys ? sys : zc;
  return -1;
}

int chb_zip_name_ok(const char *name) {
  if (!name || !*name || name[0] == '/' || strchr(name, '\\')) return 0;
  for (const char *p = name;;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.') return 0;
    if (!slash) return 1;
    p = slash + 1;
  }
}

char *chb_zip_dup(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

void chb_zip_free_secret(char *s) {
  if (!s) return;
  volatile char *p = s;
  while (*p) *p++ = 0;
  free(s);
}
