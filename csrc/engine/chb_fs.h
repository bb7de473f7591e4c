/* Small file-system helpers the engine needs on worker threads. */
#ifndef CHB_FS_H
#define CHB_FS_H

#include "chb_error.h"
#include "chb_hash.h"

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Splits path: its directory into dir ("." for a bare name, "/" at the
 * root; truncated to n bytes), and returns its last component.
 */
const char *chb_fs_split_dir(const char *path, char *dir, size_t n);

/*
 * A temporary file in dir, read-write, unlinked from the start (nothing is
 * left behind, even by a killed run): O_TMPFILE, or on a file system
 * without it a file named <prefix>XXXXXX unlinked at once. The
 * descriptor, or -1 with errno set.
 */
int chb_fs_tmpfile(const char *dir, const char *prefix);

/* Where temporary files go: $TMPDIR, or /tmp. */
const char *chb_fs_tmpdir(void);

/* Reads up to n bytes at off (retrying short reads and EINTR): the bytes
 * read (fewer than n only at the end of the file), or -1 with errno. */
ssize_t chb_fs_pread_full(int fd, void *buf, size_t n, uint64_t off);

/* Writes all n bytes (retrying short writes and EINTR): 0, or -1 with errno. */
int chb_fs_write_all(int fd, const void *p, size_t n);

/* The same at offset off (pwrite: the file position is not moved). */
int chb_fs_pwrite_all(int fd, const void *p, size_t n, uint64_t off);

/* Creates every missing parent directory of `path` (mode 0755). */
int chb_fs_mkdir_parents(const char *path, chb_error *err);

/*
 * Opens `path` read-only, confined below its first `root_len` bytes (the
 * root, trusted as given): every component after the root is walked with
 * openat(O_NOFOLLOW) from the directory before it, so a symbolic link, an
 * empty, "." or ".." component anywhere below the root is refused (CHB_INVALID,
 * naming the path) instead of followed; the file must be a regular file.
 * root_len 0: a plain open(2). Returns the descriptor, or -1 with err set.
 */
int chb_fs_open_beneath(const char *path, size_t root_len, chb_error *err);
/*
 * The directories a thread last opened files of below a root, held open:
 * many files of a few directories (a part's, and those of the parts a
 * backup stores duplicates under: a table's first part holds its
 * columns.txt for all) cost one lookup of each directory's path, then one
 * openat2(2) a file. The least recently used one makes room. Owned by one
 * thread for one job: clear it when done (a cache kept for longer would
 * read a directory replaced since).
 */
#define CHB_FS_DIR_CACHE_SLOTS 8
typedef struct chb_fs_dir_cache {
  struct {
    int fd;                   /* -1: empty */
    size_t root_len, dir_len;
    unsigned long used;       /* the tick of its last use */
    char dir[PATH_MAX];       /* the directory's path (dir_len bytes) */
  } slot[CHB_FS_DIR_CACHE_SLOTS];
  unsigned long tick;
} chb_fs_dir_cache;
void chb_fs_dir_cache_init(chb_fs_dir_cache *c);
/* Closes the held directory; the cache is empty again. */
void chb_fs_dir_cache_clear(chb_fs_dir_cache *c);
/* chb_fs_open_beneath, with the file's directory opened (confined the
 * same way) through the cache: reused when it is the cached one. c NULL
 * or no root: chb_fs_open_beneath. */
int chb_fs_open_beneath_cached(const char *path, size_t root_len, chb_fs_dir_cache *c,
                               chb_error *err);

/*
 * Makes directory `dir` (its first len bytes; mode 0755) and any missing
 * parent, trying the directory itself first (one mkdir(2) when its parent
 * exists). With sync, each directory made has its parent fsynced, so that
 * the new entry is durable. An existing one is fine. 0, or -1 with err set.
 */
int chb_fs_make_dir(const char *dir, size_t len, int sync, chb_error *err);
/* Opens `path` (a file or a directory) and fsyncs it: 0, or -1 with err set. */
int chb_fs_fsync_path(const char *path, chb_error *err);

/* For tests: 1 makes chb_fs_open_beneath walk component by component, as
 * it does where the kernel has no openat2(2) (one call otherwise). */
void chb_fs_beneath_walk_only(int on);

/* ClickHouse's checksum of a whole regular file, read on the calling
 * thread; a symlink (not followed) or anything but a regular file fails. */
int chb_fs_hash_file(const char *path, uint64_t *size, chb_u128 *hash, chb_error *err);

/* What dir/names[i]<suffix> is, for each i, into kinds[i]: 'f' a regular
 * file, 'd' a directory, 'l' a symlink (not followed), 'o' anything else,
 * 0 nothing (or no stat). dir is opened once and each name looked up from
 * it: a short walk per name, not the whole path (issue 14: a table's
 * parts). Returns 0, or -1 (errno) when dir cannot be opened. */
int chb_fs_kinds(const char *dir, const char *const *names, size_t n, const char *suffix, char *kinds);

/* The size of a regular file (lstat: a symlink is not one): 0, or -1. */
int chb_fs_file_size(const char *path, uint64_t *size);

/*
 * Locks: a file held under an exclusive flock(2) for as long as its holder
 * runs; the kernel releases it when the holder dies, so a lock file nobody
 * holds is one a killed run left.
 *
 * chb_fs_lock opens `path` (creating it, mode 0644; never through a
 * symlink) and takes the lock without waiting. Returns the descriptor, or
 * -1 with err set: code CHB_LOCKED when another open file holds it (in
 * this process or another). A holder may unlink its file before closing
 * it: the lock is retaken when the file under the name is not the one
 * locked. *created says whether this call created the file.
 */
int chb_fs_lock(const char *path, int *created, chb_error *err);

/* 1 when another open file holds path's lock, 0 when nobody does, -1 when
 * there is no such file (or it cannot be opened: err set). */
int chb_fs_lock_held(const char *path, chb_error *err);

#endif
