/* Entry names and secret strings for the zip code; see chb_zip_common.h. */
#include "chb_zip_common.h"
#include "chb_zip_read.h"

#include <stdlib.h>
#include <string.h>

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
