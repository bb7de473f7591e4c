#include "chb_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

const char *chb_fs_split_dir(const char *path, char *dir, size_t n) {
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(dir, n, ".");
  else if (slash == path) snprintf(dir, n, "/");
  else snprintf(dir, n, "%.*s", (int)(slash - path), path);
  return slash ? slash + 1 : path;
}

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

int chb_fs_hash_file(const char *path, uint64_t *size, chb_u128 *hash, chb_error *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return chb_error_errno(err, errno, "cannot open", path);
  chb_hash h;
  chb_hash_init(&h);
  unsigned char buf[64 * 1024];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      close(fd);
      return chb_error_errno(err, saved, "cannot read", path);
    }
    if (n == 0) break;
    chb_hash_update(&h, buf, (size_t)n);
  }
  close(fd);
  *size = h.total;
  *hash = chb_hash_peek(&h);
  return 0;
}
