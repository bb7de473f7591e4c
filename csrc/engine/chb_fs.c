#include "chb_fs.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

int chb_fs_mkdir_parents(const char *path, chb_error *err) {
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n >= sizeof buf) return chb_error_set(err, CHB_INVALID, "path too long: %s", path);
  memcpy(buf, path, n + 1);
  char *slash = strrchr(buf, '/');
  if (!slash || slash == buf) return 0;
  *slash = '\0';
  /* Walk down creating each component; EEXIST is fine (another worker won). */
  for (char *p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char saved = *p;
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return chb_error_errno(err, errno, "cannot create directory", buf);
      *p = saved;
      if (saved == '\0') break;
    }
  }
  return 0;
}
