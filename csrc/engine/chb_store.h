/*
 * Where backups live: a store names files and owns how they are created,
 * made durable and put in place. The directory store is the first; a sink
 * opened with opts.s3 writes an S3 object instead (chb_s3_upload.h: one PUT
 * up to 32 MiB, else a multipart upload, its parts sent in parallel by
 * opts.s3_pool; the object exists once finished). Names are relative to the store's root; a store opened with no
 * root takes names as paths (how the job writes the destinations it is
 * given).
 *
 * Writing: open_write creates the file exclusively (never replacing one),
 * making missing parent directories on demand, and returns a sink. A sink
 * may seal what it is given (chb_cipher.h) and may hold an exclusive
 * flock(2) on its file while open. finish makes it durable (fsync, asked
 * for), close keeps it, abort removes it. commit renames a finished file
 * into place, never replacing an existing one; sync_dir makes that rename
 * durable.
 *
 * Reading: open_read gives a chb_source, confined below the root (no
 * symbolic link below it is followed).
 */
#ifndef CHB_STORE_H
#define CHB_STORE_H

#include "chb_error.h"
#include "chb_source.h"

#include <stddef.h>
#include <stdint.h>

typedef struct chb_store chb_store;
typedef struct chb_sink chb_sink;

/* A directory store below `root` (copied); NULL: names are paths. */
chb_store *chb_store_dir_open(const char *root, chb_error *err);
/* Accepts NULL. */
void chb_store_close(chb_store *st);

typedef struct chb_sink_opts {
  int mode;                   /* permissions of the new file; 0: 0644 */
  int read_back;              /* opened read-write: a writer that reads back (libzip) */
  int lock;                   /* held under an exclusive flock(2) until closed */
  const unsigned char *key;   /* set: written sealed with this key (chb_cipher.h) */
  const char *seal_name;      /* with key: the file's name in its backup */
  int s3;                     /* > 0: `name` is an object key written through
                                 S3 profile s3 (chb_s3_store.h); no key,
                                 lock or read_back; it exists once finished */
  uint64_t size;              /* with s3: the object's size if known (0: not) */
  struct chb_s3_pool *s3_pool; /* with s3: NULL, or the threads that send its parts
                                 and the memory budget of its buffers (chb_s3_pool.h) */
} chb_sink_opts;

/* Creates `name` (opts may be NULL). CHB_EEXIST if it exists; a failure
 * leaves nothing behind. Returns the sink, or NULL with err set. */
chb_sink *chb_store_open_write(chb_store *st, const char *name, const chb_sink_opts *opts,
                               chb_error *err);
/*
 * Many files of one directory (a part's): chb_store_open_dir opens the
 * directory `dir` (its first len bytes) once, making it and its missing
 * parents if needed (with sync, each directory made has its parent
 * fsynced: its entry is durable); the descriptor, or -1 with err set.
 * chb_store_open_write_at then creates `name` (a name of the store, in
 * that directory) with one openat(2), exclusively as chb_store_open_write
 * does (no lock, no S3).
 */
int chb_store_open_dir(chb_store *st, const char *dir, size_t len, int sync, chb_error *err);
chb_sink *chb_store_open_write_at(chb_store *st, int dirfd, const char *name,
                                  const chb_sink_opts *opts, chb_error *err);
int chb_sink_write(chb_sink *k, const void *buf, size_t len, chb_error *err);
/* The file's descriptor, for a writer that writes at offsets (libzip
 * rewrites headers); such a writer must not use chb_sink_write. -1 for S3. */
int chb_sink_fd(const chb_sink *k);
/* The file's path (root and name), or s3://bucket/key. */
const char *chb_sink_path(const chb_sink *k);
/* Seals the last chunk and, with `sync`, fsyncs: the file stays open (and
 * locked). 0, or -1 with err set. */
int chb_sink_finish(chb_sink *k, int sync, chb_error *err);
/* fsyncs what finish wrote (a local file; nothing for S3): for a caller
 * that finishes many files, then makes them durable together. */
int chb_sink_sync(chb_sink *k, chb_error *err);
/* Closes and frees; the file stays. 0, or -1 with err set (freed anyway). */
int chb_sink_close(chb_sink *k, chb_error *err);
/* Removes the file, closes and frees. Accepts NULL. */
void chb_sink_abort(chb_sink *k);

/* Renames `from` to `to`, never replacing an existing `to` (CHB_EEXIST). */
int chb_store_commit(chb_store *st, const char *from, const char *to, chb_error *err);
/* fsyncs the directory that holds `name` (its entry, after a commit). */
int chb_store_sync_dir(chb_store *st, const char *name, chb_error *err);
/* Removes a file: 0, or -1 with err set (CHB_ENOENT if there is none). */
int chb_store_remove(chb_store *st, const char *name, chb_error *err);
/* The size of `name` (not following a final symbolic link); -1 with err
 * set, CHB_ENOENT if there is none. */
int chb_store_stat(chb_store *st, const char *name, uint64_t *size, chb_error *err);
/* A source reading `name` whole, confined below the root. */
chb_source *chb_store_open_read(chb_store *st, const char *name, chb_error *err);
/* Calls fn for each name in directory `dir` of the store ("" its root),
 * but "." and ".."; stops when fn returns non-zero. 0, or -1 with err set. */
int chb_store_list(chb_store *st, const char *dir, int (*fn)(const char *name, void *ud),
                   void *ud, chb_error *err);
/* Takes `name`'s exclusive flock(2) without waiting (chb_fs_lock):
 * the descriptor, or -1 with err set (CHB_LOCKED when held). */
int chb_store_lock(chb_store *st, const char *name, chb_error *err);

/*
 * Removes what killed writers of the archive `path` left beside it: unlocked
 * `path.tmp-<pid>` files with their companions `.spool/` and `.backup`
 * (see chb_zip_write.h); a writer calls it before creating its own.
 */
void chb_store_remove_stale_temporaries(const char *path);

#endif
