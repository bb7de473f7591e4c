#include "chb_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
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

int chb_fs_lock(const char *path, int *created, chb_error *err) {
  for (int attempt = 0; attempt < 16; attempt++) {
    int made = 0;
    int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
      fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
      made = fd >= 0;
      if (fd < 0 && errno == EEXIST) continue; /* another one created it: open that */
    }
    if (fd < 0) return chb_error_errno(err, errno, "cannot open lock file", path);
    /* A holder keeps its lock for a whole run; chb_fs_lock_held takes a
     * shared lock for an instant: ride that out (5 tries, 20 ms apart). */
    int saved = 0;
    for (int i = 0; i < 5; i++) {
      saved = flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
      if (saved != EWOULDBLOCK) break;
      struct timespec ts = {0, 20 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    if (saved != 0) {
      close(fd);
      if (saved == EWOULDBLOCK) return chb_error_set(err, CHB_LOCKED, "%s is locked by another process", path);
      return chb_error_errno(err, saved, "cannot lock", path);
    }
    /* The holder before us may have unlinked the file after we opened it. */
    struct stat held, named;
    if (fstat(fd, &held) == 0 && lstat(path, &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino) {
      if (created) *created = made;
      return fd;
    }
    close(fd);
  }
  return chb_error_set(err, CHB_EIO, "cannot lock %s: it keeps being replaced", path);
}

int chb_fs_lock_held(const char *path, chb_error *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    chb_error_errno(err, errno, "cannot open lock file", path);
    return -1;
  }
  int held = 0;
  if (flock(fd, LOCK_SH | LOCK_NB) != 0) held = errno == EWOULDBLOCK;
  close(fd);  /* releases our shared lock, if taken */
  return held;
}
