#include "chb_fs.h"

#include <errno.h>
#include <stdlib.h>
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

const char *chb_fs_tmpdir(void) {
  const char *dir = getenv("TMPDIR");
  return dir && *dir ? dir : "/tmp";
}

ssize_t chb_fs_pread_full(int fd, void *buf, size_t n, uint64_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t k = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) return -1;
    if (k == 0) break;
    got += (size_t)k;
  }
  return (ssize_t)got;
}

int chb_fs_tmpfile(const char *dir, const char *prefix) {
#ifdef O_TMPFILE
  int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
#endif
  size_t n = strlen(dir) + strlen(prefix) + sizeof "/XXXXXX";
  char *path = malloc(n);
  if (!path) {
    errno = ENOMEM;
    return -1;
  }
  snprintf(path, n, "%s/%sXXXXXX", dir, prefix);
  int fd2 = mkostemp(path, O_CLOEXEC);
  int e = errno;
  if (fd2 >= 0) unlink(path);
  free(path);
  errno = e;
  return fd2;
}

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

int chb_fs_pwrite_all(int fd, const void *buf, size_t n, uint64_t off) {
  const unsigned char *p = buf;
  while (n > 0) {
    ssize_t w = pwrite(fd, p, n, (off_t)off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
    off += (uint64_t)w;
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
  /* F_SETFL changes only O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME and
   * O_NONBLOCK, of which the open set O_NONBLOCK alone: clearing them all
   * is one call instead of a get and a set (two syscalls a file add up
   * over a million files). */
  fcntl(fd, F_SETFL, 0);
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

/* The part of `path` below its root (checked: no empty, "." or ".."
 * component, none longer than NAME_MAX), or NULL with err set. */
static const char *below_root(const char *path, size_t root_len, chb_error *err) {
  size_t len = strlen(path);
  if (root_len >= len || path[root_len] != '/' || root_len >= PATH_MAX) {
    chb_error_set(err, CHB_INVALID, "%s is not below its backup's directory", path);
    return NULL;
  }
  const char *rel = path + root_len + 1;
  for (const char *c = rel;;) {
    const char *slash = strchr(c, '/');
    size_t n = slash ? (size_t)(slash - c) : strlen(c);
    const char *why = bad_component(c, n);
    if (!why && n > NAME_MAX) why = "a component longer than NAME_MAX";
    if (why) {
      chb_error_set(err, CHB_INVALID, "refusing %s: it has %s", path, why);
      return NULL;
    }
    if (!slash) return rel;
    c = slash + 1;
  }
}

static int open_root(const char *path, size_t root_len, chb_error *err) {
  char root[PATH_MAX];
  memcpy(root, path, root_len);
  root[root_len] = '\0';
  int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return chb_error_errno(err, errno, "cannot open", root);
  return dir;
}

int chb_fs_open_beneath(const char *path, size_t root_len, chb_error *err) {
  if (root_len == 0) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) chb_error_errno(err, errno, "cannot open", path);
    return fd;
  }
  /* No empty, "." or ".." component below the root, whatever resolves it. */
  const char *rel = below_root(path, root_len, err);
  if (!rel) return -1;
  int dir = open_root(path, root_len, err);
  if (dir < 0) return -1;
  int fd = open_beneath_openat2(dir, path, rel, err);
  if (fd != -2) {
    close(dir);
    return fd;
  }
  return open_beneath_walk(dir, path, rel, err);   /* closes dir */
}

void chb_fs_dir_cache_init(chb_fs_dir_cache *c) {
  for (int i = 0; i < CHB_FS_DIR_CACHE_SLOTS; i++) {
    c->slot[i].fd = -1;
    c->slot[i].used = 0;
  }
  c->tick = 0;
}

void chb_fs_dir_cache_clear(chb_fs_dir_cache *c) {
  for (int i = 0; i < CHB_FS_DIR_CACHE_SLOTS; i++)
    if (c->slot[i].fd >= 0) close(c->slot[i].fd);
  chb_fs_dir_cache_init(c);
}

/* Opens the directory of `path` (dir_len bytes) confined below the root:
 * its descriptor, -1 with err set, or -2 when openat2(2) is missing. */
static int open_dir_beneath(const char *path, size_t root_len, size_t dir_len, chb_error *err) {
  int root = open_root(path, root_len, err);
  if (root < 0 || dir_len == root_len) return root;
#ifdef SYS_openat2
  char rel[PATH_MAX];
  memcpy(rel, path + root_len + 1, dir_len - root_len - 1);
  rel[dir_len - root_len - 1] = '\0';
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;   /* (RESOLVE_NO_SYMLINKS: ELOOP on a link) */
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = (int)syscall(SYS_openat2, root, rel, &how, sizeof how);
  int saved = errno;
  close(root);
  if (fd >= 0) return fd;
  if (saved == ENOSYS || saved == EPERM || saved == E2BIG) return -2;
  if (saved == ELOOP || saved == EXDEV)
    return chb_error_set(err, CHB_INVALID, "refusing %s: a symbolic link is on its path", path);
  return chb_error_errno(err, saved, "cannot open", path);
#else
  close(root);
  return -2;
#endif
}

int chb_fs_open_beneath_cached(const char *path, size_t root_len, chb_fs_dir_cache *c,
                               chb_error *err) {
  if (!c || root_len == 0 || walk_only) return chb_fs_open_beneath(path, root_len, err);
  if (!below_root(path, root_len, err)) return -1;
  const char *base = strrchr(path, '/') + 1;   /* below_root: there is a '/' after the root */
  size_t dir_len = (size_t)(base - 1 - path);
  int dir = -1, k = 0;
  for (int i = 0; dir < 0 && i < CHB_FS_DIR_CACHE_SLOTS; i++) {
    if (c->slot[i].fd >= 0 && c->slot[i].root_len == root_len && c->slot[i].dir_len == dir_len &&
        memcmp(c->slot[i].dir, path, dir_len) == 0) {
      dir = c->slot[i].fd;
      c->slot[i].used = ++c->tick;
    }
    if (c->slot[i].used < c->slot[k].used) k = i;   /* the least recently used (or empty) */
  }
  if (dir < 0) {
    dir = open_dir_beneath(path, root_len, dir_len, err);
    if (dir == -2) return chb_fs_open_beneath(path, root_len, err);   /* walks */
    if (dir < 0) return -1;
    if (c->slot[k].fd >= 0) close(c->slot[k].fd);
    c->slot[k].used = ++c->tick;
    c->slot[k].fd = dir;
    c->slot[k].root_len = root_len;
    c->slot[k].dir_len = dir_len;
    memcpy(c->slot[k].dir, path, dir_len);
  }
  int fd = open_beneath_openat2(dir, path, base, err);
  return fd == -2 ? chb_fs_open_beneath(path, root_len, err) : fd;
}

/* Makes directory buf (len bytes, NUL-terminated) and, on ENOENT, its
 * missing parents first; with sync, the parent of each directory made is
 * fsynced so that its new entry is durable. buf is restored on return. */
static int make_dir(char *buf, size_t len, int sync, chb_error *err) {
  if (mkdir(buf, 0755) != 0) {
    if (errno == EEXIST) return 0;   /* (a file there: the caller's open says ENOTDIR) */
    if (errno != ENOENT) return chb_error_errno(err, errno, "cannot create directory", buf);
    char *slash = memrchr(buf, '/', len);
    if (!slash || slash == buf) return chb_error_errno(err, ENOENT, "cannot create directory", buf);
    *slash = '\0';
    int rc = make_dir(buf, (size_t)(slash - buf), sync, err);
    *slash = '/';
    if (rc != 0) return -1;
    if (mkdir(buf, 0755) != 0) {
      if (errno == EEXIST) return 0;   /* another worker made it */
      return chb_error_errno(err, errno, "cannot create directory", buf);
    }
  }
  if (!sync) return 0;
  char *slash = memrchr(buf, '/', len);
  if (!slash) return chb_fs_fsync_path(".", err);
  if (slash == buf) return chb_fs_fsync_path("/", err);
  *slash = '\0';
  int rc = chb_fs_fsync_path(buf, err);
  *slash = '/';
  return rc;
}

int chb_fs_make_dir(const char *dir, size_t len, int sync, chb_error *err) {
  char buf[PATH_MAX];
  if (len >= sizeof buf) return chb_error_set(err, CHB_INVALID, "path too long: %.*s", (int)len, dir);
  memcpy(buf, dir, len);
  buf[len] = '\0';
  return make_dir(buf, len, sync, err);
}

int chb_fs_fsync_path(const char *path, chb_error *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int saved = errno;
    if (fd >= 0) close(fd);
    return chb_error_errno(err, saved, "cannot fsync", path);
  }
  close(fd);
  return 0;
}

int chb_fs_hash_file(const char *path, uint64_t *size, chb_u128 *hash, chb_error *err) {
  /* O_NOFOLLOW: a symlink is refused, not followed out of the data path;
   * O_NONBLOCK: a FIFO in its place would block the open */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return chb_error_errno(err, errno, "cannot open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int saved = errno;
    close(fd);
    return chb_error_errno(err, saved, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return chb_error_set(err, CHB_INVALID, "%s is not a regular file", path);
  }
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
    /* a short read that reaches the size fstat gave is the end: no second
     * read to see 0 (one read a small file, as checksums.txt of each part) */
    if ((size_t)n < sizeof buf && h.total >= (uint64_t)st.st_size) break;
  }
  close(fd);
  *size = h.total;
  *hash = chb_hash_peek(&h);
  return 0;
}

int chb_fs_file_size(const char *path, uint64_t *size) {
  struct stat st;
  if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  *size = (uint64_t)st.st_size;
  return 0;
}

int chb_fs_kinds(const char *dir, const char *const *names, size_t n, const char *suffix, char *kinds) {
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return -1;
  char rel[PATH_MAX];
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    int len = snprintf(rel, sizeof rel, "%s%s", names[i], suffix ? suffix : "");
    if (len < 0 || (size_t)len >= sizeof rel || fstatat(dfd, rel, &st, AT_SYMLINK_NOFOLLOW) != 0)
      kinds[i] = 0;
    else
      kinds[i] = S_ISREG(st.st_mode) ? 'f' : S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'o';
  }
  close(dfd);
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
