/* Tar archives, the reading half: the index and this thread's cursor; see chb_tar.h. */
#include "chb_s3_store.h"
#include "chb_tar.h"
#include "chb_zip_read.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define READ_BLOCK 65536
#define S3_BLOCK ((size_t)4 << 20)             /* one ranged GET of an S3 archive */
#define KEEP_ENTRY_MAX ((uint64_t)64 << 10)   /* small entries of compressed archives ... */
#define KEEP_TOTAL_MAX ((uint64_t)64 << 20)   /* ... kept in memory, up to this in all */

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

/* The size of a tar archive: a file's (stat) or, s3 > 0, object `path`'s (HEAD). */
static int archive_size(const char *path, int s3, uint64_t *size, chb_error *err) {
  if (s3) return chb_s3_piece_size(s3, path, size, err);
  struct stat sb;
  if (stat(path, &sb) != 0) return chb_error_errno(err, errno, "cannot open tar archive", path);
  *size = (uint64_t)sb.st_size;
  return 0;
}

/* Opens the tar archive `path`: a file, or with s3 > 0 an object of `size` bytes. */
static struct archive *open_archive(const char *path, int s3, uint64_t size, chb_error *err) {
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

struct chb_tar_index {
  chb_tar_entry *e;
  size_t count, cap;
  size_t *by_name;     /* open addressing: entry index + 1, 0 empty; */
  size_t by_name_cap;  /* a power of two, at least twice count */
  int compressed;
};

size_t chb_tar_index_count(const chb_tar_index *x) { return x->count; }
const chb_tar_entry *chb_tar_index_get(const chb_tar_index *x, size_t i) {
  return i < x->count ? &x->e[i] : NULL;
}
int chb_tar_index_compressed(const chb_tar_index *x) { return x->compressed; }

static size_t name_hash(const char *name) {
  uint64_t h = 1469598103934665603ull;   /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return (size_t)(h ^ (h >> 32));
}

/* The slot of `name`: its entry's, or the empty one it would take. */
static size_t name_slot(const chb_tar_index *x, const char *name) {
  size_t mask = x->by_name_cap - 1, s = name_hash(name) & mask;
  while (x->by_name[s] && strcmp(x->e[x->by_name[s] - 1].name, name) != 0) s = (s + 1) & mask;
  return s;
}

/* Makes room for one more name; -1 when out of memory. */
static int reserve_name(chb_tar_index *x) {
  if (2 * (x->count + 1) <= x->by_name_cap) return 0;
  size_t cap = x->by_name_cap ? 2 * x->by_name_cap : 512;
  size_t *old = x->by_name, old_cap = x->by_name_cap;
  if (!(x->by_name = calloc(cap, sizeof *x->by_name))) {
    x->by_name = old;
    return -1;
  }
  x->by_name_cap = cap;
  for (size_t i = 0; i < old_cap; i++)
    if (old[i]) x->by_name[name_slot(x, x->e[old[i] - 1].name)] = old[i];
  free(old);
  return 0;
}

const chb_tar_entry *chb_tar_index_find(const chb_tar_index *x, const char *name) {
  if (!x->by_name_cap) return NULL;
  size_t at = x->by_name[name_slot(x, name)];
  return at ? &x->e[at - 1] : NULL;
}

void chb_tar_index_close(chb_tar_index *x) {
  if (!x) return;
  for (size_t i = 0; i < x->count; i++) {
    free((char *)x->e[i].name);
    free((void *)x->e[i].data);
  }
  free(x->e);
  free(x->by_name);
  free(x);
}

/* Reads the data of the current entry into a new buffer. */
static void *read_whole(struct archive *a, const char *path, const char *name, uint64_t size, chb_error *err) {
  unsigned char *buf = malloc(size ? (size_t)size : 1);
  if (!buf) {
    chb_error_set(err, CHB_ENOMEM, "cannot read entry %s of %s: out of memory", name, path);
    return NULL;
  }
  uint64_t got = 0;
  while (got < size) {
    la_ssize_t n = archive_read_data(a, buf + got, (size_t)(size - got));
    if (n <= 0) {
      if (n < 0) corrupt(a, path, name, err);
      else chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is truncated", name, path);
      free(buf);
      return NULL;
    }
    got += (uint64_t)n;
  }
  return buf;
}

chb_tar_index *chb_tar_index_open(const char *path, int s3, chb_error *err) {
  uint64_t archive_bytes;
  if (archive_size(path, s3, &archive_bytes, err) != 0) return NULL;
  struct archive *a = open_archive(path, s3, archive_bytes, err);
  if (!a) return NULL;
  chb_tar_index *x = calloc(1, sizeof *x);
  uint64_t kept = 0, end = 0;
  int rc;
  struct archive_entry *ae;
  const char *name;
  if (!x) {
    chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
    goto fail;
  }
  while ((rc = next_file(a, path, &ae, &name, err)) == 1) {
    if (x->count == 0) x->compressed = archive_filter_code(a, 0) != ARCHIVE_FILTER_NONE;
    if (x->count == x->cap) {
      size_t cap = x->cap ? x->cap * 2 : 256;
      chb_tar_entry *grown = realloc(x->e, cap * sizeof *grown);
      if (!grown) {
        chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
        goto fail;
      }
      x->e = grown;
      x->cap = cap;
    }
    if (reserve_name(x) != 0) {
      chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
      goto fail;
    }
    /* A name twice is refused: tar would extract the last, a reader going
     * forward finds the first, and a backup never holds a file twice. */
    size_t slot = name_slot(x, name);
    if (x->by_name[slot]) {
      chb_error_set(err, CHB_CORRUPT, "tar archive %s has two entries named %s", path, name);
      goto fail;
    }
    chb_tar_entry *e = &x->e[x->count];
    memset(e, 0, sizeof *e);
    e->size = (uint64_t)archive_entry_size(ae);
    e->offset = (uint64_t)archive_filter_bytes(a, 0);   /* the header is consumed: its data starts here */
    if (!(e->name = strdup(name))) {
      chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
      goto fail;
    }
    x->count++;
    x->by_name[slot] = x->count;
    end = e->offset + e->size;
    if (x->compressed && e->size <= KEEP_ENTRY_MAX && kept + e->size <= KEEP_TOTAL_MAX) {
      if (!(e->data = read_whole(a, path, e->name, e->size, err))) goto fail;
      kept += e->size;
    } else if (archive_read_data_skip(a) != ARCHIVE_OK) {
      corrupt(a, path, e->name, err);
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
  archive_read_free(a);
  return x;
fail:
  archive_read_free(a);
  chb_tar_index_close(x);
  return NULL;
}

/* ---- this thread's cursor --------------------------------------------------- */

struct chb_tar_file {
  struct archive *a;
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

chb_tar_file *chb_tar_open_cached(const char *archive, int s3, const char *entry, chb_error *err) {
  tar_cursor *c = seek_entry(archive, s3, entry, err);
  if (!c) return NULL;
  c->f.a = c->a;
  c->f.archive = c->path;
  c->f.name = c->name;
  c->f.size = c->entry_size;
  c->f.got = 0;
  return &c->f;
}

int chb_tar_entry_size_cached(const char *archive, int s3, const char *entry, uint64_t *size,
                              chb_error *err) {
  tar_cursor *c = seek_entry(archive, s3, entry, err);
  if (!c) return -1;
  *size = c->entry_size;
  return 0;
}

ssize_t chb_tar_file_read(chb_tar_file *f, void *buf, size_t len, chb_error *err) {
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
  if (f) f->a = NULL;   /* the cursor stays where it is */
}
