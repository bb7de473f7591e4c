/* The directory store: create-exclusive, fsync, rename; see chb_store.h. */
#include "chb_store.h"
#include "chb_cipher.h"
#include "chb_fs.h"
#include "chb_s3_upload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct chb_store {
  char *root;                 /* NULL: names are paths */
};

struct chb_sink {
  int fd;
  char *path;
  chb_sealer *sealer;         /* set: what is written is sealed */
  chb_s3_upload *up;          /* set: an S3 object (fd -1, path unused) */
};

chb_store *chb_store_dir_open(const char *root, chb_error *err) {
  chb_store *st = calloc(1, sizeof *st);
  if (st && root && !(st->root = strdup(root))) {
    free(st);
    st = NULL;
  }
  if (!st) chb_error_set(err, CHB_ENOMEM, "cannot open a store at %s", root ? root : "/");
  return st;
}

void chb_store_close(chb_store *st) {
  if (!st) return;
  free(st->root);
  free(st);
}

/* root/name into buf (PATH_MAX); -1 with err set if too long. */
static int path_of(const chb_store *st, const char *name, char *buf, chb_error *err) {
  int n = st->root ? snprintf(buf, PATH_MAX, "%s/%s", st->root, name)
                   : snprintf(buf, PATH_MAX, "%s", name);
  if (n < 0 || n >= PATH_MAX) return chb_error_set(err, CHB_INVALID, "path too long: %s", name);
  return 0;
}

/* ---- writing --------------------------------------------------------------- */

static int create_exclusive(const char *path, const chb_sink_opts *o, chb_error *err) {
  int flags = (o->read_back ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_CLOEXEC;
  mode_t mode = o->mode ? (mode_t)o->mode : 0644;
  int fd = open(path, flags, mode);
  if (fd < 0 && errno == ENOENT) {
    if (chb_fs_mkdir_parents(path, err) != 0) return -1;
    fd = open(path, flags, mode);
  }
  if (fd < 0) chb_error_errno(err, errno, "cannot create", path);
  return fd;
}

int chb_store_open_dir(chb_store *st, const char *dir, size_t len, int sync, chb_error *err) {
  char path[PATH_MAX];
  if (path_of(st, dir, path, err) != 0) return -1;
  size_t plen = strlen(path) - (strlen(dir) - len);   /* the root's part, then len bytes of dir */
  path[plen] = '\0';
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if (chb_fs_make_dir(path, plen, sync, err) != 0) return -1;
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd < 0) return chb_error_errno(err, errno, "cannot open directory", path);
  return fd;
}

static chb_sink *s3_open_write(const char *key, const chb_sink_opts *o, chb_error *err) {
  if (o->key || o->lock || o->read_back) {
    chb_error_set(err, CHB_INVALID, "an S3 object (%s) cannot be sealed, locked or read back", key);
    return NULL;
  }
  chb_sink *k = calloc(1, sizeof *k);
  if (!k) {
    chb_error_set(err, CHB_ENOMEM, "cannot create %s: out of memory", key);
    return NULL;
  }
  k->fd = -1;
  if (!(k->up = chb_s3_upload_open(o->s3, key, o->size, o->s3_pool, err))) {
    free(k);
    return NULL;
  }
  return k;
}

chb_sink *chb_store_open_write(chb_store *st, const char *name, const chb_sink_opts *opts,
                               chb_error *err) {
  static const chb_sink_opts none;
  const chb_sink_opts *o = opts ? opts : &none;
  if (o->s3) return s3_open_write(name, o, err);
  char path[PATH_MAX];
  if (path_of(st, name, path, err) != 0) return NULL;
  chb_sink *k = calloc(1, sizeof *k);
  if (!k || !(k->path = strdup(path))) {
    free(k);
    chb_error_set(err, CHB_ENOMEM, "cannot create %s: out of memory", path);
    return NULL;
  }
  if ((k->fd = create_exclusive(path, o, err)) < 0) {
    free(k->path);
    free(k);
    return NULL;
  }
  if (o->lock && flock(k->fd, LOCK_EX | LOCK_NB) != 0) {
    chb_error_errno(err, errno, "cannot lock", path);
    chb_sink_abort(k);
    return NULL;
  }
  if (o->key && !(k->sealer = chb_sealer_new(o->key, o->seal_name, k->fd, path, err))) {
    chb_sink_abort(k);
    return NULL;
  }
  return k;
}

chb_sink *chb_store_open_write_at(chb_store *st, int dirfd, const char *name,
                                  const chb_sink_opts *opts, chb_error *err) {
  static const chb_sink_opts none;
  const chb_sink_opts *o = opts ? opts : &none;
  const char *base = strrchr(name, '/');
  if (o->s3 || o->lock || !base)
    return chb_error_set(err, CHB_INVALID, "%s cannot be created in a held directory", name), NULL;
  char path[PATH_MAX];
  if (path_of(st, name, path, err) != 0) return NULL;
  chb_sink *k = calloc(1, sizeof *k);
  if (!k || !(k->path = strdup(path))) {
    free(k);
    chb_error_set(err, CHB_ENOMEM, "cannot create %s: out of memory", path);
    return NULL;
  }
  int flags = (o->read_back ? O_RDWR : O_WRONLY) | O_CREAT | O_EXCL | O_CLOEXEC;
  if ((k->fd = openat(dirfd, base + 1, flags, o->mode ? (mode_t)o->mode : 0644)) < 0) {
    chb_error_errno(err, errno, "cannot create", path);
    free(k->path);
    free(k);
    return NULL;
  }
  if (o->key && !(k->sealer = chb_sealer_new(o->key, o->seal_name, k->fd, path, err))) {
    chb_sink_abort(k);
    return NULL;
  }
  return k;
}

int chb_sink_write(chb_sink *k, const void *buf, size_t len, chb_error *err) {
  if (k->up) return chb_s3_upload_write(k->up, buf, len, err);
  if (k->sealer) return chb_sealer_write(k->sealer, buf, len, err);
  if (chb_fs_write_all(k->fd, buf, len) != 0) return chb_error_errno(err, errno, "cannot write", k->path);
  return 0;
}

int chb_sink_fd(const chb_sink *k) { return k->fd; }
const char *chb_sink_path(const chb_sink *k) { return k->up ? chb_s3_upload_name(k->up) : k->path; }

int chb_sink_finish(chb_sink *k, int sync, chb_error *err) {
  if (k->up) return chb_s3_upload_finish(k->up, err);
  if (k->sealer && chb_sealer_finish(k->sealer, err) != 0) return -1;
  if (sync && fsync(k->fd) != 0) return chb_error_errno(err, errno, "cannot fsync", k->path);
  return 0;
}

int chb_sink_sync(chb_sink *k, chb_error *err) {
  if (k->fd >= 0 && fsync(k->fd) != 0) return chb_error_errno(err, errno, "cannot fsync", k->path);
  return 0;
}

static void sink_free(chb_sink *k) {
  chb_s3_upload_free(k->up);
  chb_sealer_free(k->sealer);
  free(k->path);
  free(k);
}

int chb_sink_close(chb_sink *k, chb_error *err) {
  int rc = 0;
  if (k->fd >= 0 && close(k->fd) != 0) rc = chb_error_errno(err, errno, "cannot close", k->path);
  sink_free(k);
  return rc;
}

void chb_sink_abort(chb_sink *k) {
  if (!k) return;
  if (k->up) {
    chb_s3_upload_abort(k->up);   /* aborted or deleted */
    k->up = NULL;
    sink_free(k);
    return;
  }
  unlink(k->path);            /* before close: a lock, if any, is still held */
  close(k->fd);
  sink_free(k);
}

/* ---- placing, removing, reading -------------------------------------------- */

int chb_store_commit(chb_store *st, const char *from, const char *to, chb_error *err) {
  char src[PATH_MAX], dst[PATH_MAX];
  if (path_of(st, from, src, err) != 0 || path_of(st, to, dst, err) != 0) return -1;
  if (renameat2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS)
    return chb_error_errno(err, errno, "cannot rename the finished file to", dst);
  /* No RENAME_NOREPLACE here (some file systems): link(2) never replaces either. */
  if (link(src, dst) != 0) return chb_error_errno(err, errno, "cannot link the finished file to", dst);
  unlink(src);
  return 0;
}

int chb_store_sync_dir(chb_store *st, const char *name, chb_error *err) {
  char path[PATH_MAX], dir[PATH_MAX];
  if (path_of(st, name, path, err) != 0) return -1;
  chb_fs_split_dir(path, dir, sizeof dir);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int saved = errno;
    if (fd >= 0) close(fd);
    return chb_error_errno(err, saved, "cannot fsync", dir);
  }
  close(fd);
  return 0;
}

int chb_store_remove(chb_store *st, const char *name, chb_error *err) {
  char path[PATH_MAX];
  if (path_of(st, name, path, err) != 0) return -1;
  if (unlink(path) != 0) return chb_error_errno(err, errno, "cannot remove", path);
  return 0;
}

int chb_store_stat(chb_store *st, const char *name, uint64_t *size, chb_error *err) {
  char path[PATH_MAX];
  struct stat sb;
  if (path_of(st, name, path, err) != 0) return -1;
  if (lstat(path, &sb) != 0) return chb_error_errno(err, errno, "cannot stat", path);
  *size = (uint64_t)sb.st_size;
  return 0;
}

chb_source *chb_store_open_read(chb_store *st, const char *name, chb_error *err) {
  char path[PATH_MAX];
  if (path_of(st, name, path, err) != 0) return NULL;
  chb_piece p = {path, 0, -1, NULL, NULL, NULL, NULL, st->root};
  if (chb_pieces_check(&p, 1, err) != 0) return NULL;
  return chb_source_open(&p, 1, err);
}

int chb_store_list(chb_store *st, const char *dir, int (*fn)(const char *name, void *ud),
                   void *ud, chb_error *err) {
  char path[PATH_MAX];
  if (path_of(st, *dir ? dir : ".", path, err) != 0) return -1;
  DIR *d = opendir(path);
  if (!d) return chb_error_errno(err, errno, "cannot list", path);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (fn(de->d_name, ud) != 0) break;
  }
  closedir(d);
  return 0;
}

int chb_store_lock(chb_store *st, const char *name, chb_error *err) {
  char path[PATH_MAX];
  int created;
  if (path_of(st, name, path, err) != 0) return -1;
  return chb_fs_lock(path, &created, err);
}

/* ---- what killed archive writers left -------------------------------------- */

/* Removes a spool directory's files (named by entry index) and itself. */
static void remove_spool_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d)))
    if (de->d_name[0] != '.') unlinkat(dirfd(d), de->d_name, 0);
  closedir(d);
  rmdir(dir);
}

/*
 * What killed writers of the same archive left beside it: `<name>.tmp-<pid>`
 * files whose lock nobody holds (a live writer, in any process or PID
 * namespace, holds its file's lock), with their companions — the spool
 * directory `<name>.tmp-<pid>.spool` and `<name>.tmp-<pid>.backup`, a
 * manifest the caller writes there to add — and companions whose
 * temporary file is gone. This runs before this writer creates its own
 * temporary file (a killed run may have had this pid), so the `.backup`
 * of this pid is this caller's and stays. (Another process's caller writes
 * its companion just before its writer creates the temporary file; a
 * writer of the same archive starting in that moment may remove it, and
 * the first then fails, naming it.) Only names of exactly these shapes
 * are touched; a file is removed while its lock is held.
 */
void chb_store_remove_stale_temporaries(const char *path) {
  char dir[PATH_MAX], full[PATH_MAX], other[PATH_MAX];
  const char *base = chb_fs_split_dir(path, dir, sizeof dir);
  size_t blen = strlen(base);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    const char *n = de->d_name;
    if (strncmp(n, base, blen) != 0 || strncmp(n + blen, ".tmp-", 5) != 0) continue;
    const char *p = n + blen + 5, *digits = p;
    while (*p >= '0' && *p <= '9') p++;
    int mine = p > digits && strtol(digits, NULL, 10) == (long)getpid();
    int spool = strcmp(p, ".spool") == 0, manifest = strcmp(p, ".backup") == 0;
    if (p == digits || (*p && !spool && !manifest)) continue;
    int len = snprintf(full, sizeof full, "%s/%s", dir, n);
    if (len >= (int)sizeof full) continue;
    struct stat sb;
    if (spool || manifest) {  /* a companion: stale when its temporary file is gone */
      snprintf(other, sizeof other, "%.*s", (int)(p - n) + (int)(strlen(dir) + 1), full);
      if (lstat(other, &sb) != 0 && errno == ENOENT) {
        if (spool) remove_spool_dir(full);
        else if (!mine) unlink(full);
      }
      continue;
    }
    int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) continue;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0) {
      if (snprintf(other, sizeof other, "%s.spool", full) < (int)sizeof other) remove_spool_dir(other);
      if (!mine && snprintf(other, sizeof other, "%s.backup", full) < (int)sizeof other) unlink(other);
      unlink(full);
    }
    close(fd);
  }
  closedir(d);
}
