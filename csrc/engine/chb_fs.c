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
#include <sys/syscall.h>
#include <linux/openat2.h>

const char *chb_fs_split_dir(const char *path, char *dir, size_t n) {
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(dir, n, ".");
  else if (slash == path) snprintf(dir, n, "/");
  else snprintf(dir, n, "%.*s", (int)(slash - path), path);
  return slash ? slash + 1 : path;
}

int chb_fs_write_all(int fd, const void *buf, size_t n) {
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
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

/* Why a component below the root was refused, or NULL if it may be walked. */
static const char *bad_component(const char *c, size_t n) {
  if (n == 0) return "an empty path component";
  if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.')) return "a '.' or '..' component";
  return NULL;
}

/* The final check of a file opened below a root: a regular file, in
 * blocking mode (O_NONBLOCK kept a FIFO from blocking the open). */
static int regular_or_refuse(int fd, const char *path, chb_error *err) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    chb_error_set(err, CHB_INVALID, "refusing %s: it is not a regular file", path);
    return -1;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

static int walk_only;   /* chb_fs_beneath_walk_only: tests of the fallback */

void chb_fs_beneath_walk_only(int on) { walk_only = on; }

/* One openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from the root: -2 when
 * the kernel (or a seccomp filter) does not offer it, so the caller walks. */
static int open_beneath_openat2(int root, const char *path, const char *rel, chb_error *err) {
  if (walk_only) return -2;
#ifdef SYS_openat2
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
  if (fd >= 0) return regular_or_refuse(fd, path, err);
  if (errno == ENOSYS || errno == EPERM || errno == E2BIG) return -2;
  if (errno == ELOOP || errno == EXDEV) {
    chb_error_set(err, CHB_INVALID, "refusing %s: a symbolic link is on its path", path);
    return -1;
  }
  return chb_error_errno(err, errno, "cannot open", path);
#else
  (void)root, (void)path, (void)rel, (void)err;
  return -2;
#endif
}

/* The same by walking: openat(O_NOFOLLOW) one component at a time. */
static int open_beneath_walk(int dir, const char *path, const char *c, chb_error *err) {
  for (;;) {
    const char *slash = strchr(c, '/');
    size_t n = slash ? (size_t)(slash - c) : strlen(c);
    char name[NAME_MAX + 1];
    memcpy(name, c, n);
    name[n] = '\0';
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : O_NONBLOCK);
    int fd = openat(dir, name, flags);
    int saved = errno;
    close(dir);
    if (fd < 0) {
      /* O_NOFOLLOW on a symbolic link: ELOOP (last component) or ENOTDIR. */
      if (saved == ELOOP || saved == ENOTDIR) {
        chb_error_set(err, CHB_INVALID, "refusing %s: a symbolic link is on its path", path);
        return -1;
      }
      return chb_error_errno(err, saved, "cannot open", path);
    }
    if (!slash) return regular_or_refuse(fd, path, err);
    dir = fd;
    c = slash + 1;
  }
}

int chb_fs_open_beneath(const char *path, size_t root_len, chb_error *err) {
  if (root_len == 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) chb_error_errno(err, errno, "cannot open", path);
    return fd;
  }
  size_t len = strlen(path);
  if (root_len >= len || path[root_len] != '/' || root_len >= PATH_MAX) {
    chb_error_set(err, CHB_INVALID, "%s is not below its backup's directory", path);
    return -1;
  }
  /* No empty, "." or ".." component below the root, whatever resolves it. */
  const char *rel = path + root_len + 1;
  for (const char *c = rel;;) {
    const char *slash = strchr(c, '/');
    size_t n = slash ? (size_t)(slash - c) : strlen(c);
    const char *why = bad_component(c, n);
    if (!why && n > NAME_MAX) why = "a component longer than NAME_MAX";
    if (why) {
      chb_error_set(err, CHB_INVALID, "refusing %s: it has %s", path, why);
      return -1;
    }
    if (!slash) break;
    c = slash + 1;
  }
  char root[PATH_MAX];
  memcpy(root, path, root_len);
  root[root_len] = '\0';
  int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return chb_error_errno(err, errno, "cannot open", root);
  int fd = open_beneath_openat2(dir, path, rel, err);
  if (fd != -2) {
    close(dir);
    return fd;
  }
  return open_beneath_walk(dir, path, rel, err);   /* closes dir */
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
