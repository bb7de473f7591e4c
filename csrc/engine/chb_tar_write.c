/* Tar archives, the writing half; see chb_tar.h. */
#include "chb_tar.h"
#include "chb_s3_pool.h"
#include "chb_store.h"
#include "chb_zip_read.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ClickHouse's tar suffixes (src/IO/Archives/ArchiveUtils.cpp) and the
 * filter TarArchiveWriter::inferCompressionFromPath adds for each. */
static const struct {
  const char *suffix, *filter;
} SUFFIXES[] = {
    {".tar", "none"},   {".tar.gz", "gzip"},  {".tgz", "gzip"},      {".tar.zst", "zstd"},
    {".tzst", "zstd"},  {".tar.xz", "xz"},    {".tar.bz2", "bzip2"}, {".tar.lzma", "lzma"},
};

const char *chb_tar_filter(const char *path) {
  size_t n = strlen(path);
  for (size_t i = 0; i < sizeof SUFFIXES / sizeof SUFFIXES[0]; i++) {
    size_t k = strlen(SUFFIXES[i].suffix);
    if (n > k && strcmp(path + n - k, SUFFIXES[i].suffix) == 0) return SUFFIXES[i].filter;
  }
  return NULL;
}

static int add_filter(struct archive *a, const char *filter) {
  if (strcmp(filter, "gzip") == 0) return archive_write_add_filter_gzip(a);
  if (strcmp(filter, "zstd") == 0) return archive_write_add_filter_zstd(a);
  if (strcmp(filter, "xz") == 0) return archive_write_add_filter_xz(a);
  if (strcmp(filter, "bzip2") == 0) return archive_write_add_filter_bzip2(a);
  if (strcmp(filter, "lzma") == 0) return archive_write_add_filter_lzma(a);
  return archive_write_add_filter_none(a);
}

/* An entry added and not yet written (freed once written). */
typedef struct tw_entry {
  struct tw_entry *next;      /* the queue, in the order added */
  char *name;
  chb_piece *pieces;          /* NULL: bytes */
  size_t npieces;
  unsigned char *bytes;
  size_t nbytes;
  int64_t expect_size;        /* < 0: the sources' size */
  int has_hash;
  chb_u128 expect_hash;
} tw_entry;

/* What batch mode keeps of a written entry, for entry_result. */
typedef struct tw_result {
  uint64_t size;
  chb_u128 hash;
} tw_result;

struct chb_tar_writer {
  chb_run run;
  char *path, *tmp_path;
  const char *filter;
  int fsync;
  int s3;                     /* > 0: path is an object key of this S3 profile */
  int threads;                /* with s3: the upload's threads */
  size_t bufsize;
  /* The queue of entries to write: the adding thread appends, the writer's
   * thread takes. Lock order: qlock before run.lock, never the reverse. */
  pthread_mutex_t qlock;      /* guards what follows, down to input_ended */
  pthread_cond_t queued;      /* to the writer's thread: an entry, the end of input, a cancel */
  pthread_cond_t drained;     /* to wait_drained: nothing pending, or the run ended */
  tw_entry *head, *tail;
  size_t count;               /* entries added */
  size_t pending;             /* added and not yet written (or dropped) */
  int streaming;              /* begun: the thread writes as entries come */
  int input_ended;            /* no more adds: the thread finishes the archive */
  uint64_t bytes_total;
  tw_result *results;         /* batch mode: one per entry, written in order */
  chb_store *store;
  chb_sink *out;
  chb_error out_error;        /* the sink's failure, seen through libarchive */
  int out_failed;
  int discard;                /* the archive failed: what libarchive flushes goes nowhere */
  pthread_t finisher;
  int has_finisher;
};

chb_tar_writer *chb_tar_writer_new(const char *path, const chb_tar_writer_opts *opts, chb_error *err) {
  const char *filter = chb_tar_filter(path);
  if (!filter) {
    chb_error_set(err, CHB_INVALID, "cannot create tar archive %s: its name ends in none of .tar, .tar.gz, "
                  ".tgz, .tar.zst, .tzst, .tar.xz, .tar.bz2, .tar.lzma", path);
    return NULL;
  }
  chb_tar_writer *w = calloc(1, sizeof *w);
  chb_store *store = w ? chb_store_dir_open(NULL, err) : NULL;
  if (!store) {
    free(w);
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a tar writer");
    return NULL;
  }
  uint64_t size;
  chb_error absent;
  if (!(opts && opts->s3) && chb_store_stat(store, path, &size, &absent) == 0) {
    chb_store_close(store);
    free(w);
    chb_error_set(err, CHB_EEXIST, "cannot create tar archive %s: it exists", path);
    return NULL;
  }
  w->store = store;
  chb_run_init(&w->run);
  pthread_mutex_init(&w->qlock, NULL);
  pthread_cond_init(&w->queued, NULL);
  pthread_cond_init(&w->drained, NULL);
  w->filter = filter;
  w->fsync = opts && opts->fsync;
  w->s3 = opts ? opts->s3 : 0;
  w->threads = opts ? opts->threads : 0;
  w->bufsize = opts && opts->buffer_size ? opts->buffer_size : (size_t)1 << 20;
  if (w->bufsize < 4096) w->bufsize = 4096;
  size_t plen = strlen(path) + 32;
  w->path = strdup(path);
  w->tmp_path = malloc(plen);
  if (!w->path || !w->tmp_path) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a tar writer");
    chb_tar_writer_free(w);
    return NULL;
  }
  snprintf(w->tmp_path, plen, "%s.tmp-%ld", path, (long)getpid());
  return w;
}

static void entry_free(tw_entry *e) {
  if (!e) return;
  free(e->name);
  chb_pieces_free(e->pieces, e->npieces);
  free(e->bytes);
  free(e);
}

/* The writer's error once it failed or was cancelled (a cancel not yet
 * recorded as an error: "cancelled"). */
static int stopped_error(chb_tar_writer *w, chb_error *err) {
  pthread_mutex_lock(&w->run.lock);
  chb_error e = w->run.error;
  pthread_mutex_unlock(&w->run.lock);
  if (e.code == CHB_OK) return chb_error_set(err, CHB_CANCELLED, "tar archive %s was cancelled", w->path);
  *err = e;
  return -1;
}

/* With qlock held: may an entry be added now? 0, or -1 with err set. */
static int can_add_locked(chb_tar_writer *w, chb_error *err) {
  if (w->input_ended)
    return chb_error_set(err, CHB_INVALID, "cannot add to tar writer %s: it has started", w->path);
  if (w->streaming) return chb_run_stopped(&w->run) ? stopped_error(w, err) : 0;
  chb_run_state s = chb_run_get_state(&w->run);
  if (s != CHB_RUN_NEW)
    return chb_error_set(err, CHB_INVALID, "cannot add to tar writer %s: it is %s", w->path, chb_run_state_name(s));
  return 0;
}

/* Queues e (taking it, even on failure): its index, or -1. */
static long add_entry(chb_tar_writer *w, tw_entry *e, chb_error *err) {
  if (!chb_zip_name_ok(e->name)) {
    chb_error_set(err, CHB_INVALID, "bad entry name '%s' for tar archive %s "
                  "(must be relative, without '..' or '\\')", e->name, w->path);
    entry_free(e);
    return -1;
  }
  pthread_mutex_lock(&w->qlock);
  if (can_add_locked(w, err) != 0) {
    pthread_mutex_unlock(&w->qlock);
    entry_free(e);
    return -1;
  }
  if (w->tail) w->tail->next = e;
  else w->head = e;
  w->tail = e;
  if (e->expect_size > 0) w->bytes_total += (uint64_t)e->expect_size;
  w->pending++;
  long i = (long)w->count++;
  pthread_cond_signal(&w->queued);
  pthread_mutex_unlock(&w->qlock);
  return i;
}

/* A new entry record named `name`, or NULL (err set). */
static tw_entry *entry_new(const char *name, int64_t expect_size, chb_error *err) {
  tw_entry *e = calloc(1, sizeof *e);
  if (e && !(e->name = strdup(name))) {
    free(e);
    e = NULL;
  }
  if (!e) chb_error_set(err, CHB_ENOMEM, "cannot copy entry %s", name);
  else e->expect_size = expect_size;
  return e;
}

long chb_tar_writer_add(chb_tar_writer *w, const char *name, const chb_piece *pieces, size_t npieces,
                        int64_t expect_size, const chb_u128 *expect_hash, chb_error *err) {
  if (npieces == 0) return chb_error_set(err, CHB_INVALID, "entry %s needs at least one source", name);
  if (chb_pieces_check(pieces, npieces, err) != 0) return -1;
  tw_entry *e = entry_new(name, expect_size, err);
  if (!e) return -1;
  if (!(e->pieces = chb_pieces_copy(pieces, npieces, err))) {
    entry_free(e);
    return -1;
  }
  e->npieces = npieces;
  if (expect_hash) {
    e->has_hash = 1;
    e->expect_hash = *expect_hash;
  }
  return add_entry(w, e, err);
}

long chb_tar_writer_add_bytes(chb_tar_writer *w, const char *name, const void *data, size_t len,
                              chb_error *err) {
  tw_entry *e = entry_new(name, (int64_t)len, err);
  if (!e) return -1;
  e->nbytes = len;
  if (!(e->bytes = malloc(len ? len : 1))) {
    entry_free(e);
    return chb_error_set(err, CHB_ENOMEM, "cannot copy entry %s", name);
  }
  if (len) memcpy(e->bytes, data, len);
  return add_entry(w, e, err);
}

/* ---- finishing ------------------------------------------------------------ */

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every name once (tar would keep both; the last one wins when extracted).
 * Batch mode only: every entry is in the queue then. */
static int check_unique(chb_tar_writer *w, chb_error *err) {
  if (w->count < 2) return 0;
  char **names = malloc(w->count * sizeof *names);
  if (!names) return chb_error_set(err, CHB_ENOMEM, "cannot check the tar writer's entry names");
  size_t n = 0;
  for (tw_entry *e = w->head; e; e = e->next) names[n++] = e->name;
  qsort(names, n, sizeof *names, cmp_names);
  int rc = 0;
  for (size_t i = 1; i < n && rc == 0; i++)
    if (strcmp(names[i - 1], names[i]) == 0)
      rc = chb_error_set(err, CHB_EEXIST, "entry %s added twice to tar archive %s", names[i], w->path);
  free(names);
  return rc;
}

static la_ssize_t out_write(struct archive *a, void *ud, const void *buf, size_t len) {
  (void)a;
  chb_tar_writer *w = ud;
  if (w->discard) return (la_ssize_t)len;
  if (w->out_failed) return -1;
  if (chb_sink_write(w->out, buf, len, &w->out_error) != 0) {
    w->out_failed = 1;
    return -1;
  }
  return (la_ssize_t)len;
}

/* libarchive's error as ours, or the sink's when that was the cause. */
static int la_fail(chb_tar_writer *w, struct archive *a, const char *what, chb_error *err) {
  if (w->out_failed) {
    *err = w->out_error;
    return -1;
  }
  const char *m = archive_error_string(a);
  return chb_error_set(err, CHB_EIO, "cannot write tar archive %s: %s: %s", w->path, what, m ? m : "error");
}

/* Writes entry e: its header (size known first), then its bytes, checked. */
static int write_entry(chb_tar_writer *w, struct archive *a, const tw_entry *e, unsigned char *buf,
                       tw_result *res, chb_error *err) {
  chb_source *src = NULL;
  uint64_t size = e->bytes ? e->nbytes : 0;
  if (!e->bytes) {
    if (!(src = chb_source_open(e->pieces, e->npieces, err))) return -1;
    chb_source_set_cancel(src, &w->run.stop);
    if (e->expect_size >= 0) size = (uint64_t)e->expect_size;
    else if (chb_source_size(src, &size, err) != 0) goto fail;
  }
  struct archive_entry *ae = archive_entry_new();
  if (!ae) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a tar header");
    goto fail;
  }
  archive_entry_set_pathname(ae, e->name);
  archive_entry_set_size(ae, (la_int64_t)size);
  archive_entry_set_filetype(ae, AE_IFREG);
  archive_entry_set_perm(ae, 0644);
  int rc = archive_write_header(a, ae);
  archive_entry_free(ae);
  if (rc != ARCHIVE_OK) {
    la_fail(w, a, e->name, err);
    goto fail;
  }
  chb_hash h;
  chb_hash_init(&h);
  uint64_t done = 0;
  for (;;) {
    const unsigned char *p = e->bytes + done;
    ssize_t n;
    if (src) {
      n = chb_source_read(src, buf, w->bufsize, err);
      p = buf;
    } else {
      if (chb_run_stopped(&w->run)) {
        chb_error_set(err, CHB_CANCELLED, "cancelled while writing %s", e->name);
        goto fail;
      }
      n = (ssize_t)(e->nbytes - done < w->bufsize ? e->nbytes - done : w->bufsize);
    }
    if (n < 0) goto fail;
    if (n == 0) break;
    if (done + (uint64_t)n > size) {
      chb_error_set(err, CHB_CORRUPT, "%s for entry %s of %s has more than the expected %llu bytes",
                    e->pieces ? e->pieces[0].path : "its source", e->name, w->path, (unsigned long long)size);
      goto fail;
    }
    chb_hash_update(&h, p, (size_t)n);
    if (archive_write_data(a, p, (size_t)n) != n) {
      la_fail(w, a, e->name, err);
      goto fail;
    }
    done += (uint64_t)n;
    atomic_fetch_add(&w->run.bytes_done, (uint64_t)n);
  }
  chb_source_close(src);
  src = NULL;
  res->size = done;
  res->hash = chb_hash_peek(&h);
  if (done != size)
    return chb_error_set(err, CHB_CORRUPT, "the source of entry %s of %s has %llu bytes, not the expected %llu",
                         e->name, w->path, (unsigned long long)done, (unsigned long long)size);
  if (e->has_hash && (res->hash.lo != e->expect_hash.lo || res->hash.hi != e->expect_hash.hi)) {
    char got[33], want[33];
    chb_u128_to_hex(res->hash, got);
    chb_u128_to_hex(e->expect_hash, want);
    return chb_error_set(err, CHB_CORRUPT, "the source of entry %s of %s has checksum %s, not the expected %s",
                         e->name, w->path, got, want);
  }
  atomic_fetch_add(&w->run.files_done, 1);
  return 0;
fail:
  chb_source_close(src);
  return -1;
}

/* The next entry to write, taken off the queue: waits for one while more
 * input may come. NULL at the end of input, or at a stop (a cancel). */
static tw_entry *next_entry(chb_tar_writer *w) {
  pthread_mutex_lock(&w->qlock);
  while (!w->head && !w->input_ended && !chb_run_stopped(&w->run)) pthread_cond_wait(&w->queued, &w->qlock);
  tw_entry *e = chb_run_stopped(&w->run) ? NULL : w->head;
  if (e) {
    w->head = e->next;
    if (!w->head) w->tail = NULL;
  }
  pthread_mutex_unlock(&w->qlock);
  return e;
}

/* e is written (or dropped): one record fewer; a waiter of wait_drained
 * wakes when none is left. */
static void entry_done(chb_tar_writer *w, tw_entry *e) {
  entry_free(e);
  pthread_mutex_lock(&w->qlock);
  if (--w->pending == 0) pthread_cond_broadcast(&w->drained);
  pthread_mutex_unlock(&w->qlock);
}

/* Writes the queued entries in order, as they come, until the end of input. */
static int write_queue(chb_tar_writer *w, struct archive *a, unsigned char *buf, chb_error *err) {
  for (size_t i = 0;; i++) {
    tw_entry *e = next_entry(w);
    if (!e) break;
    tw_result scratch, *res = w->results ? &w->results[i] : &scratch;
    int rc = write_entry(w, a, e, buf, res, err);
    entry_done(w, e);
    if (rc != 0) {
      chb_run_fail(&w->run, err);   /* now: adds fail from here on */
      return -1;
    }
  }
  if (chb_run_stopped(&w->run))
    return chb_error_set(err, CHB_CANCELLED, "writing tar archive %s was cancelled", w->path);
  return 0;
}

static int write_all(chb_tar_writer *w, chb_error *err) {
  unsigned char *buf = malloc(w->bufsize);
  struct archive *a = archive_write_new();
  int rc = -1;
  if (!buf || !a) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a tar writer");
    goto out;
  }
  /* As ClickHouse: pax restricted, no block padding (LibArchiveWriter.cpp). */
  if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK || add_filter(a, w->filter) != ARCHIVE_OK ||
      archive_write_set_bytes_per_block(a, 0) != ARCHIVE_OK ||
      archive_write_open2(a, w, NULL, out_write, NULL, NULL) != ARCHIVE_OK) {
    la_fail(w, a, "cannot start", err);
    goto out;
  }
  if (write_queue(w, a, buf, err) != 0) goto out;
  if (archive_write_close(a) != ARCHIVE_OK) {
    la_fail(w, a, "cannot end it", err);
    goto out;
  }
  rc = 0;
out:
  if (a) {
    w->discard = rc != 0;   /* closing a failed archive writes nothing more (the sink is aborted) */
    archive_write_free(a);
  }
  free(buf);
  return rc;
}

/* Batch mode, before writing: the names checked, room for the results. */
static int prepare_batch(chb_tar_writer *w, chb_error *err) {
  if (check_unique(w, err) != 0) return -1;
  if (w->count && !(w->results = calloc(w->count, sizeof *w->results)))
    return chb_error_set(err, CHB_ENOMEM, "cannot allocate the results of tar archive %s", w->path);
  return 0;
}

static void run_finish(chb_tar_writer *w) {
  chb_error err;
  chb_error_clear(&err);
  int ok = 0;
  /* A file: written to a locked temporary beside it, renamed into place. An
   * S3 object: streamed into its upload, which makes it exist when finished. */
  if (!w->s3) chb_store_remove_stale_temporaries(w->path); /* first: a killed run of ours may have had our pid */
  chb_sink_opts o = {.mode = 0666, .lock = !w->s3, .s3 = w->s3};
  const char *out_name = w->s3 ? w->path : w->tmp_path;
  /* One stream, many parts: they are sent in parallel while the archive is written on. */
  if (w->s3 && !(o.s3_pool = chb_s3_pool_new(w->threads, 0, &err))) {
    chb_run_fail(&w->run, &err);
    chb_run_end(&w->run, 0);
    return;
  }
  if ((w->streaming || prepare_batch(w, &err) == 0) && (w->out = chb_store_open_write(w->store, out_name, &o, &err)) &&
      write_all(w, &err) == 0 && chb_sink_finish(w->out, w->fsync, &err) == 0 &&
      (w->s3 || chb_store_commit(w->store, w->tmp_path, w->path, &err) == 0)) {
    ok = 1;
    chb_error cerr;
    if (chb_sink_close(w->out, &cerr) != 0) {   /* the archive is in place; report it all the same */
      err = cerr;
      ok = 0;
    }
    w->out = NULL;
    if (ok && w->fsync && !w->s3 && chb_store_sync_dir(w->store, w->path, &err) != 0) ok = 0;
  }
  if (!ok) {
    chb_sink_abort(w->out);   /* still locked: no one else removes it */
    w->out = NULL;
    if (err.code != CHB_OK) chb_run_fail(&w->run, &err);
  }
  chb_s3_pool_free(o.s3_pool);  /* every upload of it is finished or aborted */
  chb_run_end(&w->run, ok);
}

static int begin(chb_tar_writer *w, chb_error *err) {
  chb_run_state was;
  if (chb_run_begin(&w->run, &was) != 0)
    return chb_error_set(err, CHB_INVALID, "tar writer %s already %s", w->path, chb_run_state_name(was));
  return 0;
}

/* Sets the mode under qlock: streaming (begin) or the end of input. */
static void set_mode(chb_tar_writer *w, int streaming, int input_ended) {
  pthread_mutex_lock(&w->qlock);
  w->streaming = streaming;
  w->input_ended = input_ended;
  pthread_cond_signal(&w->queued);
  pthread_mutex_unlock(&w->qlock);
}

int chb_tar_writer_finish(chb_tar_writer *w, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  set_mode(w, 0, 1);
  run_finish(w);
  return chb_tar_writer_result(w, err);
}

static void *finisher(void *arg) {
  chb_tar_writer *w = arg;
  run_finish(w);
  chb_tar_cache_clear();   /* pieces from tar bases were read through this thread's cursor */
  chb_zip_cache_clear();
  pthread_mutex_lock(&w->qlock);   /* a waiter of wait_drained sees the end */
  pthread_cond_broadcast(&w->drained);
  pthread_mutex_unlock(&w->qlock);
  return NULL;
}

/* Begins the run and its thread, in streaming mode or with all the input. */
static int spawn(chb_tar_writer *w, int streaming, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  set_mode(w, streaming, !streaming);
  int rc = pthread_create(&w->finisher, NULL, finisher, w);
  if (rc != 0) {
    set_mode(w, 0, 0);
    chb_run_unbegin(&w->run);
    return chb_error_errno(err, rc, "cannot start", "tar writer thread");
  }
  w->has_finisher = 1;
  return 0;
}

int chb_tar_writer_begin(chb_tar_writer *w, chb_error *err) { return spawn(w, 1, err); }

/* Streaming mode: the end of input; the thread finishes the archive. */
static int end_input(chb_tar_writer *w, chb_error *err) {
  pthread_mutex_lock(&w->qlock);
  int ended = w->input_ended;
  w->input_ended = 1;
  pthread_cond_signal(&w->queued);
  pthread_mutex_unlock(&w->qlock);
  if (ended) return chb_error_set(err, CHB_INVALID, "tar writer %s already started", w->path);
  return 0;
}

int chb_tar_writer_start(chb_tar_writer *w, chb_error *err) {
  pthread_mutex_lock(&w->qlock);
  int streaming = w->streaming;
  pthread_mutex_unlock(&w->qlock);
  return streaming ? end_input(w, err) : spawn(w, 0, err);
}


/* With qlock held: the state wait_drained reports now. A stop still being
 * honoured is RUNNING: the run ends FAILED or CANCELLED soon. */
static chb_run_state drained_state_locked(chb_tar_writer *w) {
  chb_run_state s = chb_run_get_state(&w->run);
  if (s == CHB_RUN_RUNNING && w->pending == 0 && !chb_run_stopped(&w->run)) return CHB_RUN_DONE;
  return s;
}

chb_run_state chb_tar_writer_wait_drained(chb_tar_writer *w, long timeout_ms) {
  struct timespec until = chb_deadline(timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&w->qlock);
  chb_run_state s = drained_state_locked(w);
  while (s == CHB_RUN_RUNNING && timeout_ms != 0) {
    int rc = timeout_ms < 0 ? pthread_cond_wait(&w->drained, &w->qlock)
                            : pthread_cond_timedwait(&w->drained, &w->qlock, &until);
    s = drained_state_locked(w);
    if (rc != 0) break;   /* timed out */
  }
  pthread_mutex_unlock(&w->qlock);
  return s;
}

chb_run_state chb_tar_writer_wait(chb_tar_writer *w, long timeout_ms) {
  return chb_run_wait(&w->run, timeout_ms);
}

/* Sets the stop flag, and wakes the thread waiting for entries and any
 * waiter of wait_drained. */
void chb_tar_writer_cancel(chb_tar_writer *w) {
  chb_run_cancel(&w->run);
  pthread_mutex_lock(&w->qlock);
  pthread_cond_broadcast(&w->queued);
  pthread_cond_broadcast(&w->drained);
  pthread_mutex_unlock(&w->qlock);
}

void chb_tar_writer_get_progress(chb_tar_writer *w, chb_run_progress *out) {
  pthread_mutex_lock(&w->qlock);
  size_t count = w->count;
  uint64_t bytes_total = w->bytes_total;
  pthread_mutex_unlock(&w->qlock);
  chb_run_get_progress(&w->run, count, bytes_total, out);
}

int chb_tar_writer_result(chb_tar_writer *w, chb_error *err) {
  return chb_run_result(&w->run, "tar writer", err);
}

int chb_tar_writer_entry_result(chb_tar_writer *w, size_t i, uint64_t *size, chb_u128 *hash) {
  if (chb_run_get_state(&w->run) != CHB_RUN_DONE || !w->results || i >= w->count) return -1;
  *size = w->results[i].size;
  *hash = w->results[i].hash;
  return 0;
}

size_t chb_tar_writer_count(const chb_tar_writer *w) { return w->count; }

size_t chb_tar_writer_pending(chb_tar_writer *w) {
  pthread_mutex_lock(&w->qlock);
  size_t n = w->pending;
  pthread_mutex_unlock(&w->qlock);
  return n;
}

void chb_tar_writer_free(chb_tar_writer *w) {
  if (!w) return;
  if (w->has_finisher) {
    chb_tar_writer_cancel(w);
    pthread_join(w->finisher, NULL);
  }
  while (w->head) {
    tw_entry *e = w->head;
    w->head = e->next;
    entry_free(e);
  }
  free(w->results);
  chb_sink_abort(w->out);
  chb_store_close(w->store);
  free(w->path);
  free(w->tmp_path);
  pthread_cond_destroy(&w->queued);
  pthread_cond_destroy(&w->drained);
  pthread_mutex_destroy(&w->qlock);
  chb_run_destroy(&w->run);
  free(w);
}
