/* Tar archives, the reading half: the index and this thread's cursor; see chb_tar.h. */
#include "chb_catalog.h"
#include "chb_fs.h"
#include "chb_s3_store.h"
#include "chb_tar.h"
#include "chb_zip_read.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_BLOCK 65536
#define S3_BLOCK ((size_t)4 << 20)             /* one ranged GET of an S3 archive */

static atomic_long archive_opens;   /* for tests: each open decompresses from the start */

/* An S3 object as libarchive's input: ranged GETs of S3_BLOCK bytes. */
typedef struct s3_in {
  int profile;
  const char *key;
  uint64_t pos, size;
  unsigned char *buf;
} s3_in;

static la_ssize_t s3_in_read(struct archive *a, void *ud, const void **out) {
  s3_in *in = ud;
  chb_error err;
  size_t len = in->size - in->pos < S3_BLOCK ? (size_t)(in->size - in->pos) : S3_BLOCK;
  if (len == 0) return 0;
  ssize_t n = chb_s3_piece_read(in->profile, in->key, in->pos, in->buf, len, &err);
  if (n < 0) {
    archive_set_error(a, EIO, "%s", err.msg);
    return -1;
  }
  in->pos += (uint64_t)n;
  *out = in->buf;
  return (la_ssize_t)n;
}

/* Skipping (a plain tar's data, while indexing) reads nothing. */
static la_int64_t s3_in_skip(struct archive *a, void *ud, la_int64_t request) {
  (void)a;
  s3_in *in = ud;
  uint64_t n = in->size - in->pos < (uint64_t)request ? in->size - in->pos : (uint64_t)request;
  in->pos += n;
  return (la_int64_t)n;
}

static int s3_in_close(struct archive *a, void *ud) {
  (void)a;
  s3_in *in = ud;
  free(in->buf);
  free(in);
  return ARCHIVE_OK;
}

/* Opens the tar archive `path`: a file, or with s3 > 0 an object of `size` bytes. */
static struct archive *open_archive(const char *path, int s3, uint64_t size, chb_error *err) {
  atomic_fetch_add(&archive_opens, 1);
  struct archive *a = archive_read_new();
  s3_in *in = s3 ? calloc(1, sizeof *in) : NULL;
  if (!a || (s3 && (!in || !(in->buf = malloc(S3_BLOCK))))) {
    if (in) free(in->buf);
    free(in);
    if (a) archive_read_free(a);
    chb_error_set(err, CHB_ENOMEM, "cannot open tar archive %s: out of memory", path);
    return NULL;
  }
  archive_read_support_filter_all(a);
  archive_read_support_format_tar(a);
  int rc;
  if (in) {
    in->profile = s3;
    in->key = path;
    in->size = size;
    archive_read_set_callback_data(a, in);
    archive_read_set_read_callback(a, s3_in_read);
    archive_read_set_skip_callback(a, s3_in_skip);
    archive_read_set_close_callback(a, s3_in_close);
    rc = archive_read_open1(a);
  } else {
    rc = archive_read_open_filename(a, path, READ_BLOCK);
  }
  if (rc != ARCHIVE_OK) {
    int e = archive_errno(a);
    if (!s3 && (e == ENOENT || e == EACCES)) chb_error_errno(err, e, "cannot open tar archive", path);
    else chb_error_set(err, CHB_CORRUPT, "cannot read tar archive %s: %s", path, archive_error_string(a));
    archive_read_free(a);
    return NULL;
  }
  return a;
}

static int corrupt(struct archive *a, const char *path, const char *entry, chb_error *err) {
  const char *m = archive_error_string(a);
  if (entry)
    return chb_error_set(err, CHB_CORRUPT, "cannot read entry %s of tar archive %s: %s", entry, path,
                         m ? m : "bad data");
  return chb_error_set(err, CHB_CORRUPT, "cannot read tar archive %s: %s", path, m ? m : "bad archive");
}

/*
 * The next regular file of `a` (directories are skipped): 1 with *name set
 * (a leading "./" dropped), 0 at the end, -1 with err set.
 */
static int next_file(struct archive *a, const char *path, struct archive_entry **ae, const char **name,
                     chb_error *err) {
  for (;;) {
    int rc = archive_read_next_header(a, ae);
    if (rc == ARCHIVE_EOF) return 0;
    if (rc != ARCHIVE_OK) return corrupt(a, path, NULL, err);
    const char *n = archive_entry_pathname(*ae);
    if (!n) return chb_error_set(err, CHB_CORRUPT, "tar archive %s has an entry without a name", path);
    while (n[0] == '.' && n[1] == '/') n += 2;
    mode_t type = archive_entry_filetype(*ae);
    if (type == AE_IFDIR || !*n) continue;
    if (type != AE_IFREG)
      return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is not a regular file", n, path);
    if (!chb_zip_name_ok(n))
      return chb_error_set(err, CHB_CORRUPT, "tar archive %s has an unsafe entry name '%s'", path, n);
    if (archive_entry_size(*ae) < 0)
      return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s has no size", n, path);
    *name = n;
    return 1;
  }
}

/* ---- the index ------------------------------------------------------------ */

/*
 * A compressed archive's spool: every regular entry's data, written while
 * the archive is decompressed that one time, into an unlinked temporary
 * file; the catalog's offsets are offsets in it. Any entry is then a pread
 * of its range, in any order, on any thread.
 */
#define SPOOL_BUF ((size_t)1 << 20)   /* written in blocks of this while indexing */

struct chb_tar_index {
  chb_catalog *cat;    /* names -> chb_tar_entry records, in pages */
  char *path;          /* for errors */
  int s3;
  int compressed;
  int spool;           /* compressed: the spool's fd, else -1 */
  uint64_t spooled;    /* bytes in it */
  unsigned char *buf;  /* while indexing: the spool's write buffer */
  size_t buffered;
  dev_t dev;           /* the archive file when indexed (a local one) */
  ino_t ino;
  off_t size;
  struct timespec mtime;
  struct chb_tar_index *next;   /* in the registry (registry_lock) */
  int registered;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static chb_tar_index *registry;   /* open indexes with a spool, the newest first */

long chb_tar_archive_opens(void) { return atomic_load(&archive_opens); }

size_t chb_tar_index_count(const chb_tar_index *x) { return chb_catalog_count(x->cat); }
int chb_tar_index_compressed(const chb_tar_index *x) { return x->compressed; }

size_t chb_tar_index_memory(chb_tar_index *x) {
  return sizeof *x + chb_catalog_memory(x->cat) + (x->buf ? SPOOL_BUF : 0);
}

uint64_t chb_tar_index_spooled(const chb_tar_index *x) { return x->spool >= 0 ? x->spooled : 0; }

/* The catalog failed (-2): its temporary file's I/O, or out of memory. */
static int catalog_failed(chb_tar_index *x, const char *what, const char *entry, chb_error *err) {
  const char *io = chb_catalog_error(x->cat);
  chb_error_set(err, io ? CHB_EIO : CHB_ENOMEM, "cannot %s %s of tar archive %s: %s", what, entry, x->path,
                io ? io : "out of memory");
  return -2;
}

long chb_tar_index_find(chb_tar_index *x, const char *name, chb_tar_entry *out, chb_error *err) {
  long i = chb_catalog_find(x->cat, name, strlen(name));
  if (i >= 0 && out && chb_catalog_get(x->cat, (size_t)i, out, NULL, 0, NULL) != 0) i = -2;
  return i == -2 ? catalog_failed(x, "look up entry", name, err) : i;
}

int chb_tar_index_get(chb_tar_index *x, size_t i, chb_tar_entry *out, char *name, size_t cap, size_t *name_len,
                      chb_error *err) {
  int rc = chb_catalog_get(x->cat, i, out, name, cap, name_len);
  if (rc != -2) return rc;
  char what[32];
  snprintf(what, sizeof what, "#%zu", i + 1);
  return catalog_failed(x, "read entry", what, err);
}

void chb_tar_index_close(chb_tar_index *x) {
  if (!x) return;
  if (x->registered) {   /* no chb_tar_open_cached uses it once out of the registry */
    pthread_mutex_lock(&registry_lock);
    for (chb_tar_index **p = &registry; *p; p = &(*p)->next)
      if (*p == x) {
        *p = x->next;
        break;
      }
    pthread_mutex_unlock(&registry_lock);
  }
  if (x->spool >= 0) close(x->spool);   /* entries open on it hold their own fd */
  free(x->buf);
  chb_catalog_free(x->cat);
  free(x->path);
  free(x);
}

/* The spool, created unlinked (nothing is left behind, even by a killed run). */
static int spool_open(chb_tar_index *x, chb_error *err) {
  const char *dir = chb_fs_tmpdir();
  if (!(x->buf = malloc(SPOOL_BUF)))
    return chb_error_set(err, CHB_ENOMEM, "cannot read tar archive %s: out of memory", x->path);
  x->spool = chb_fs_tmpfile(dir, "chbackup-spool-");
  int e = errno;
  if (x->spool < 0)
    return chb_error_set(err, CHB_EIO,
                         "cannot create the temporary file of tar archive %s (its uncompressed data) in %s: %s",
                         x->path, dir, strerror(e));
  return 0;
}

static int spool_flush(chb_tar_index *x, chb_error *err) {
  if (chb_fs_write_all(x->spool, x->buf, x->buffered) != 0)
    return chb_error_set(err, CHB_EIO,
                         "cannot write the temporary file of tar archive %s (its uncompressed data) in %s: %s",
                         x->path, chb_fs_tmpdir(), strerror(errno));
  x->buffered = 0;
  return 0;
}

/* Copies the data of the current entry, `size` bytes, to the spool. */
static int spool_entry(chb_tar_index *x, struct archive *a, const char *name, uint64_t size, chb_error *err) {
  uint64_t got = 0;
  for (;;) {
    if (x->buffered == SPOOL_BUF && spool_flush(x, err) != 0) return -1;
    la_ssize_t n = archive_read_data(a, x->buf + x->buffered, SPOOL_BUF - x->buffered);
    if (n < 0) return corrupt(a, x->path, name, err);
    if (n == 0) break;
    got += (uint64_t)n;
    if (got > size)
      return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is longer than its header says", name,
                           x->path);
    x->buffered += (size_t)n;
  }
  if (got != size)
    return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is truncated (%llu of %llu bytes)", name,
                         x->path, (unsigned long long)got, (unsigned long long)size);
  x->spooled += size;
  return 0;
}

/* Adds entry `name` to the catalog. A name twice is refused: tar would
 * extract the last, a reader going forward finds the first, and a backup
 * never holds a file twice. */
static int add_entry(chb_tar_index *x, const char *name, const chb_tar_entry *e, chb_error *err) {
  long i = chb_catalog_add(x->cat, name, strlen(name), e, NULL);
  if (i == -1) return chb_error_set(err, CHB_CORRUPT, "tar archive %s has two entries named %s", x->path, name);
  if (i < 0) {
    catalog_failed(x, "index entry", name, err);
    return -1;
  }
  return 0;
}

static chb_tar_index *index_new(const char *path, int s3, size_t budget, chb_error *err) {
  chb_tar_index *x = calloc(1, sizeof *x);
  if (x) x->spool = -1;
  if (x && (!(x->path = strdup(path)) || !(x->cat = chb_catalog_new(sizeof(chb_tar_entry), budget)))) {
    chb_tar_index_close(x);
    x = NULL;
  }
  if (!x) chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
  else x->s3 = s3;
  return x;
}

chb_tar_index *chb_tar_index_open(const char *path, int s3, chb_error *err) {
  return chb_tar_index_open_budget(path, s3, CHB_CATALOG_BUDGET, err);
}

chb_tar_index *chb_tar_index_open_budget(const char *path, int s3, size_t budget, chb_error *err) {
  uint64_t archive_bytes, end = 0;
  struct stat sb;
  memset(&sb, 0, sizeof sb);
  if (s3) {
    if (chb_s3_piece_size(s3, path, &archive_bytes, err) != 0) return NULL;
  } else if (stat(path, &sb) != 0) {
    chb_error_errno(err, errno, "cannot open tar archive", path);
    return NULL;
  } else {
    archive_bytes = (uint64_t)sb.st_size;
  }
  struct archive *a = open_archive(path, s3, archive_bytes, err);
  if (!a) return NULL;
  chb_tar_index *x = index_new(path, s3, budget, err);
  int rc, first = 1;
  struct archive_entry *ae;
  const char *name;
  if (!x) goto fail;
  x->dev = sb.st_dev;
  x->ino = sb.st_ino;
  x->size = sb.st_size;
  x->mtime = sb.st_mtim;
  while ((rc = next_file(a, path, &ae, &name, err)) == 1) {
    if (first) {
      x->compressed = archive_filter_code(a, 0) != ARCHIVE_FILTER_NONE;
      if (x->compressed && spool_open(x, err) != 0) goto fail;
    }
    first = 0;
    chb_tar_entry e = {0};
    e.size = (uint64_t)archive_entry_size(ae);
    /* a compressed archive's: where its data goes in the spool; a plain
     * one's: the header is consumed, its data starts here in the file */
    e.offset = x->compressed ? x->spooled : (uint64_t)archive_filter_bytes(a, 0);
    if (add_entry(x, name, &e, err) != 0) goto fail;
    end = e.offset + e.size;
    if (x->compressed) {
      if (spool_entry(x, a, name, e.size, err) != 0) goto fail;
    } else if (archive_read_data_skip(a) != ARCHIVE_OK) {
      corrupt(a, path, name, err);
      goto fail;
    }
  }
  if (rc < 0) goto fail;
  /* A plain tar's data is skipped by seeking: a file cut inside the last
   * entry's data is seen here. */
  if (!x->compressed && end > archive_bytes) {
    chb_error_set(err, CHB_CORRUPT, "tar archive %s is truncated (%llu bytes; its entries end at %llu)", path,
                  (unsigned long long)archive_bytes, (unsigned long long)end);
    goto fail;
  }
  if (x->spool >= 0) {
    if (spool_flush(x, err) != 0) goto fail;
    free(x->buf);
    x->buf = NULL;
    pthread_mutex_lock(&registry_lock);
    x->next = registry;
    registry = x;
    x->registered = 1;
    pthread_mutex_unlock(&registry_lock);
  }
  archive_read_free(a);
  return x;
fail:
  archive_read_free(a);
  chb_tar_index_close(x);
  return NULL;
}

/* ---- entries read from a spool ----------------------------------------------- */

/*
 * The spool of an open index of (archive, s3) holding `entry`: 1 with its
 * record in *e, its own fd of the spool in *fd (stays valid if the index
 * is closed meanwhile), *fd -1 when only the size is asked (fd NULL);
 * 0: no such index (or the file at `archive` is not the one indexed);
 * -1 with err set (no such entry: CHB_ENOENT).
 */
static int spool_find(const char *archive, int s3, const char *entry, chb_tar_entry *e, int *fd, chb_error *err) {
  struct stat sb;
  int rc = 0;
  if (!s3 && stat(archive, &sb) != 0) return 0;   /* the cursor says why */
  pthread_mutex_lock(&registry_lock);
  for (chb_tar_index *x = registry; x; x = x->next) {
    if (x->s3 != s3 || strcmp(x->path, archive) != 0) continue;
    /* the same file as indexed, not one written at its name since (an
     * object is not rewritten in place) */
    if (!s3 && (x->dev != sb.st_dev || x->ino != sb.st_ino || x->size != sb.st_size ||
                x->mtime.tv_sec != sb.st_mtim.tv_sec || x->mtime.tv_nsec != sb.st_mtim.tv_nsec))
      continue;
    long i = chb_tar_index_find(x, entry, e, err);
    if (i == -1) rc = chb_error_set(err, CHB_ENOENT, "no entry %s in tar archive %s", entry, archive);
    else if (i < 0) rc = -1;
    else if (fd && (*fd = fcntl(x->spool, F_DUPFD_CLOEXEC, 0)) < 0)
      rc = chb_error_errno(err, errno, "cannot read the temporary file of tar archive", archive);
    else rc = 1;
    break;
  }
  pthread_mutex_unlock(&registry_lock);
  return rc;
}

/* ---- this thread's cursor --------------------------------------------------- */

struct chb_tar_file {
  struct archive *a;          /* through the cursor; or */
  int fd;                     /* >= 0: a spool, the entry at `offset` (its own fd; malloc'ed) */
  uint64_t offset;
  const char *archive, *name;
  uint64_t size, got;
};

typedef struct tar_cursor {
  struct archive *a;          /* NULL: none open */
  char *path;
  int s3;                     /* > 0: path is an object key of this S3 profile */
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime;
  char *name;                 /* the entry whose header was read last */
  uint64_t entry_size;
  int fresh;                  /* no header read since opened */
  chb_tar_file f;
} tar_cursor;

static pthread_key_t cursor_key;
static pthread_once_t cursor_once = PTHREAD_ONCE_INIT;

static void cursor_reset(tar_cursor *c) {
  if (c->a) archive_read_free(c->a);
  c->a = NULL;
  free(c->name);
  c->name = NULL;
  free(c->path);
  c->path = NULL;
}

static void cursor_destroy(void *p) {
  cursor_reset(p);
  free(p);
}

static void cursor_init(void) { pthread_key_create(&cursor_key, cursor_destroy); }

void chb_tar_cache_clear(void) {
  pthread_once(&cursor_once, cursor_init);
  tar_cursor *c = pthread_getspecific(cursor_key);
  if (!c) return;
  pthread_setspecific(cursor_key, NULL);
  cursor_destroy(c);
}

static int cursor_open(tar_cursor *c, const char *archive, int s3, const struct stat *sb, chb_error *err) {
  cursor_reset(c);
  if (!(c->path = strdup(archive)))
    return chb_error_set(err, CHB_ENOMEM, "cannot open tar archive %s: out of memory", archive);
  if (!(c->a = open_archive(archive, s3, (uint64_t)sb->st_size, err))) return -1;
  c->s3 = s3;
  c->dev = sb->st_dev;
  c->ino = sb->st_ino;
  c->size = sb->st_size;
  c->mtime = sb->st_mtim;
  c->fresh = 1;
  return 0;
}

/* Moves this thread's cursor to the header of `entry` (its data next). */
static tar_cursor *seek_entry(const char *archive, int s3, const char *entry, chb_error *err) {
  pthread_once(&cursor_once, cursor_init);
  tar_cursor *c = pthread_getspecific(cursor_key);
  if (!c) {
    c = calloc(1, sizeof *c);
    if (!c || pthread_setspecific(cursor_key, c) != 0) {
      free(c);
      chb_error_set(err, CHB_ENOMEM, "cannot open tar archive %s: out of memory", archive);
      return NULL;
    }
  }
  struct stat sb;
  memset(&sb, 0, sizeof sb);
  uint64_t size;
  if (s3 && c->a && c->s3 == s3 && strcmp(c->path, archive) == 0) {
    sb.st_size = c->size;   /* an object is not rewritten in place: the cursor's still */
  } else if (s3) {
    if (chb_s3_piece_size(s3, archive, &size, err) != 0) return NULL;
    sb.st_size = (off_t)size;
  } else if (stat(archive, &sb) != 0) {
    chb_error_errno(err, errno, "cannot open tar archive", archive);
    return NULL;
  }
  int same = c->a && c->s3 == s3 && c->dev == sb.st_dev && c->ino == sb.st_ino && c->size == sb.st_size &&
             c->mtime.tv_sec == sb.st_mtim.tv_sec && c->mtime.tv_nsec == sb.st_mtim.tv_nsec &&
             strcmp(c->path, archive) == 0;
  if (same && c->name && strcmp(c->name, entry) == 0 && c->f.got == 0 && !c->f.a) return c;  /* just sought */
  if (!same && cursor_open(c, archive, s3, &sb, err) != 0) return NULL;
  for (int pass = 0; pass < 2; pass++) {
    int from_start = c->fresh;
    struct archive_entry *ae;
    const char *name;
    int rc;
    while ((rc = next_file(c->a, archive, &ae, &name, err)) == 1) {
      c->fresh = 0;
      free(c->name);
      if (!(c->name = strdup(name))) {
        cursor_reset(c);
        chb_error_set(err, CHB_ENOMEM, "cannot read tar archive %s: out of memory", archive);
        return NULL;
      }
      c->entry_size = (uint64_t)archive_entry_size(ae);
      c->f.got = 0;
      if (strcmp(name, entry) == 0) return c;
    }
    if (rc < 0) {
      cursor_reset(c);
      return NULL;
    }
    if (from_start) break;
    if (cursor_open(c, archive, s3, &sb, err) != 0) return NULL;   /* it may be before the cursor */
  }
  cursor_reset(c);
  chb_error_set(err, CHB_ENOENT, "no entry %s in tar archive %s", entry, archive);
  return NULL;
}

/* Entry `entry` of a spooled archive: 1 (*out set), 0 (none), -1. */
static int open_spooled(const char *archive, int s3, const char *entry, chb_tar_file **out, chb_error *err) {
  chb_tar_entry e;
  int fd = -1;
  int rc = spool_find(archive, s3, entry, &e, &fd, err);
  if (rc <= 0) return rc;
  size_t la = strlen(archive) + 1, le = strlen(entry) + 1;
  chb_tar_file *f = malloc(sizeof *f + la + le);
  if (!f) {
    close(fd);
    return chb_error_set(err, CHB_ENOMEM, "cannot read entry %s of tar archive %s: out of memory", entry, archive);
  }
  char *names = (char *)(f + 1);
  memcpy(names, archive, la);
  memcpy(names + la, entry, le);
  f->a = NULL;
  f->fd = fd;
  f->offset = e.offset;
  f->archive = names;
  f->name = names + la;
  f->size = e.size;
  f->got = 0;
  *out = f;
  return 1;
}

chb_tar_file *chb_tar_open_cached(const char *archive, int s3, const char *entry, chb_error *err) {
  chb_tar_file *sf = NULL;
  int rc = open_spooled(archive, s3, entry, &sf, err);
  if (rc != 0) return rc > 0 ? sf : NULL;
  tar_cursor *c = seek_entry(archive, s3, entry, err);
  if (!c) return NULL;
  c->f.a = c->a;
  c->f.fd = -1;
  c->f.archive = c->path;
  c->f.name = c->name;
  c->f.size = c->entry_size;
  c->f.got = 0;
  return &c->f;
}

int chb_tar_entry_size_cached(const char *archive, int s3, const char *entry, uint64_t *size,
                              chb_error *err) {
  chb_tar_entry e;
  int rc = spool_find(archive, s3, entry, &e, NULL, err);
  if (rc != 0) {
    if (rc > 0) *size = e.size;
    return rc > 0 ? 0 : -1;
  }
  tar_cursor *c = seek_entry(archive, s3, entry, err);
  if (!c) return -1;
  *size = c->entry_size;
  return 0;
}

static ssize_t spool_read(chb_tar_file *f, void *buf, size_t len, chb_error *err) {
  if (f->got >= f->size || len == 0) return 0;
  if (len > f->size - f->got) len = (size_t)(f->size - f->got);
  ssize_t n = chb_fs_pread_full(f->fd, buf, len, f->offset + f->got);
  if (n < 0) {
    chb_error_set(err, CHB_EIO, "cannot read entry %s of tar archive %s from its temporary file in %s: %s",
                  f->name, f->archive, chb_fs_tmpdir(), strerror(errno));
    return -1;
  }
  f->got += (uint64_t)n;
  if ((size_t)n < len)   /* (len never passes the entry's end: a short read is a short spool) */
    return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is truncated (%llu of %llu bytes)",
                         f->name, f->archive, (unsigned long long)f->got, (unsigned long long)f->size);
  return n;
}

ssize_t chb_tar_file_read(chb_tar_file *f, void *buf, size_t len, chb_error *err) {
  if (f->fd >= 0) return spool_read(f, buf, len, err);
  la_ssize_t n = archive_read_data(f->a, buf, len);
  if (n < 0) return corrupt(f->a, f->archive, f->name, err);
  f->got += (uint64_t)n;
  if (n == 0 && f->got != f->size)
    return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is truncated (%llu of %llu bytes)",
                         f->name, f->archive, (unsigned long long)f->got, (unsigned long long)f->size);
  return (ssize_t)n;
}

uint64_t chb_tar_file_size(const chb_tar_file *f) { return f->size; }

void chb_tar_file_close(chb_tar_file *f) {
  if (!f) return;
  if (f->fd >= 0) {
    close(f->fd);
    free(f);
    return;
  }
  f->a = NULL;   /* the cursor stays where it is */
}
