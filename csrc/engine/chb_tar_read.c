/* Tar archives, the reading half: the index and this thread's cursor; see chb_tar.h. */
#include "chb_catalog.h"
#include "chb_s3_store.h"
#include "chb_tar.h"
#include "chb_zip_read.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
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

/*
 * The bytes of small entries of a compressed archive, kept while indexing:
 * reading one later would decompress the archive up to it again, and
 * chain.read reads each part's small files (checksums.txt) out of archive
 * order. Packed in chunks, and bounded (KEEP_TOTAL_MAX) by what the chunks
 * take, not by the entries' sizes alone: a malloc each would cost its
 * header and rounding besides, and an empty entry's would count for
 * nothing, so a million of them would escape the bound.
 */
#define KEEP_CHUNK_MIN ((size_t)128 << 10)   /* >= KEEP_ENTRY_MAX; growing up to ... */
#define KEEP_CHUNK_MAX ((size_t)1 << 20)     /* ... this: at most 1/16 left unused at a chunk's end */

typedef struct keep_chunk {
  struct keep_chunk *next;
  size_t used, cap;
  unsigned char bytes[];
} keep_chunk;

struct chb_tar_index {
  chb_catalog *cat;    /* names -> chb_tar_entry records, in pages */
  char *path;          /* for errors */
  keep_chunk *kept;    /* the newest first */
  size_t kept_bytes;   /* the chunks' (with their headers) */
  int compressed;
};

static const unsigned char empty_entry[1];   /* an empty entry's bytes: kept, and free */

/* Room for the `size` bytes of an entry to keep, or NULL to leave it in the
 * archive (too big, the budget spent, or out of memory: it is a cache). */
static unsigned char *keep_slot(chb_tar_index *x, uint64_t size) {
  if (size == 0) return (unsigned char *)empty_entry;
  if (size > KEEP_ENTRY_MAX) return NULL;
  keep_chunk *c = x->kept;
  if (!c || c->cap - c->used < size) {
    /* chunks as big as all before them: an archive of a few entries keeps
     * them in little memory, one of many in few chunks */
    size_t cap = x->kept_bytes < KEEP_CHUNK_MIN ? KEEP_CHUNK_MIN
                 : x->kept_bytes > KEEP_CHUNK_MAX ? KEEP_CHUNK_MAX
                                                  : x->kept_bytes;
    if (x->kept_bytes + sizeof *c + cap > KEEP_TOTAL_MAX || !(c = malloc(sizeof *c + cap))) return NULL;
    c->next = x->kept;
    c->used = 0;
    c->cap = cap;
    x->kept = c;
    x->kept_bytes += sizeof *c + cap;
  }
  unsigned char *p = c->bytes + c->used;
  c->used += (size_t)size;
  return p;
}

size_t chb_tar_index_count(const chb_tar_index *x) { return chb_catalog_count(x->cat); }
int chb_tar_index_compressed(const chb_tar_index *x) { return x->compressed; }

size_t chb_tar_index_memory(chb_tar_index *x) {
  return sizeof *x + chb_catalog_memory(x->cat) + x->kept_bytes;
}

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
  while (x->kept) {
    keep_chunk *next = x->kept->next;
    free(x->kept);
    x->kept = next;
  }
  chb_catalog_free(x->cat);
  free(x->path);
  free(x);
}

/* Reads the data of the current entry, `size` bytes, into buf. */
static int read_data(struct archive *a, const char *path, const char *name, unsigned char *buf, uint64_t size,
                     chb_error *err) {
  uint64_t got = 0;
  while (got < size) {
    la_ssize_t n = archive_read_data(a, buf + got, (size_t)(size - got));
    if (n <= 0) {
      if (n < 0) return corrupt(a, path, name, err);
      return chb_error_set(err, CHB_CORRUPT, "entry %s of tar archive %s is truncated", name, path);
    }
    got += (uint64_t)n;
  }
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

static chb_tar_index *index_new(const char *path, size_t budget, chb_error *err) {
  chb_tar_index *x = calloc(1, sizeof *x);
  if (x && (!(x->path = strdup(path)) || !(x->cat = chb_catalog_new(sizeof(chb_tar_entry), budget)))) {
    chb_tar_index_close(x);
    x = NULL;
  }
  if (!x) chb_error_set(err, CHB_ENOMEM, "cannot index tar archive %s: out of memory", path);
  return x;
}

chb_tar_index *chb_tar_index_open(const char *path, int s3, chb_error *err) {
  return chb_tar_index_open_budget(path, s3, CHB_CATALOG_BUDGET, err);
}

chb_tar_index *chb_tar_index_open_budget(const char *path, int s3, size_t budget, chb_error *err) {
  uint64_t archive_bytes, end = 0;
  if (archive_size(path, s3, &archive_bytes, err) != 0) return NULL;
  struct archive *a = open_archive(path, s3, archive_bytes, err);
  if (!a) return NULL;
  chb_tar_index *x = index_new(path, budget, err);
  int rc, first = 1;
  struct archive_entry *ae;
  const char *name;
  if (!x) goto fail;
  while ((rc = next_file(a, path, &ae, &name, err)) == 1) {
    if (first) x->compressed = archive_filter_code(a, 0) != ARCHIVE_FILTER_NONE;
    first = 0;
    chb_tar_entry e = {0};
    e.size = (uint64_t)archive_entry_size(ae);
    e.offset = (uint64_t)archive_filter_bytes(a, 0);   /* the header is consumed: its data starts here */
    unsigned char *keep = x->compressed ? keep_slot(x, e.size) : NULL;
    e.data = keep;
    if (add_entry(x, name, &e, err) != 0) goto fail;
    end = e.offset + e.size;
    if (keep) {
      if (read_data(a, path, name, keep, e.size, err) != 0) goto fail;
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
