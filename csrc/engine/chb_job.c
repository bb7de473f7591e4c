/* Executes a plan of file entries on worker threads; see chb_job.h. */
#include "chb_job.h"
#include "chb_s3_pool.h"
#include "chb_store.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Default workers: the number of cores, but at least this many (I/O-bound). */
#define CHB_JOB_MIN_DEFAULT_THREADS 8

/*
 * Small files are copied in batches: a worker takes up to BATCH_FILES
 * consecutive entries of one destination directory (a part's files),
 * each at most SMALL_FILE bytes and BATCH_BYTES in all, at once. The
 * directory is looked up (and made) once a batch and each file created
 * with one openat(2) in it; the sources' directories are held open by the
 * worker for the job (chb_fs_dir_cache: a part's and its duplicates').
 * With fsync, a batch's files are all written before the first is
 * fsynced (the file system commits them together) and the directory is
 * fsynced once, by the last batch of its run of entries. A batch holds
 * its files open until they are durable: at most BATCH_FILES descriptors
 * a worker.
 */
#define SMALL_FILE (256 * 1024)
#define BATCH_FILES 16
#define BATCH_BYTES (1024 * 1024)

typedef struct chb_entry {
  chb_piece *pieces;          /* read in order; pieces[0].path names the entry */
  size_t npieces;
  char *dst;                  /* NULL: hash only */
  char *seal_name;            /* set: dst is written encrypted as this name */
  int dst_s3;                 /* > 0: dst is an object key of this S3 profile */
  int64_t expect_size;        /* < 0: unknown */
  int has_expect_hash;
  chb_u128 expect_hash;
  int has_base;               /* write only the tail if the prefix matches */
  uint64_t base_size;
  chb_u128 base_hash;
  uint64_t size;              /* results, valid once the job is DONE */
  chb_u128 hash;
  int tail_only;
} chb_entry;

/* Consecutive entries taken by one worker at once (see BATCH_FILES). */
typedef struct chb_batch {
  size_t first, count;
  uint64_t bytes;             /* expected; the largest batches go first */
  size_t dir;                 /* its directory run (job->dirs); SIZE_MAX: none */
} chb_batch;

/* Consecutive entries written to one directory: fsynced once, after all. */
typedef struct chb_dir_run {
  atomic_size_t batches_left;
} chb_dir_run;

struct chb_job {
  chb_job_opts opts;
  chb_entry *entries;
  size_t count, cap;
  uint64_t bytes_total;
  chb_store *store;           /* where dst files are written: paths as given */
  chb_s3_pool *s3_pool;       /* S3 entries: the threads that send their parts */

  pthread_t *threads;
  int nthreads;               /* started workers, joined in free */
  chb_batch *batches;         /* made at start */
  size_t nbatches;
  chb_dir_run *dirs;
  size_t ndirs;
  atomic_size_t next;         /* cursor over batches */
  atomic_int running;         /* workers not yet finished, and one for start */
  chb_run run;                /* state, stop flag, first error, progress */
};

const char *chb_job_state_name(chb_job_state s) { return chb_run_state_name(s); }

chb_job *chb_job_new(const chb_job_opts *opts, chb_error *err) {
  chb_job *job = calloc(1, sizeof *job);
  if (!job || !(job->store = chb_store_dir_open(NULL, err))) {
    free(job);
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a job");
    return NULL;
  }
  job->opts = *opts;
  if (job->opts.threads <= 0) {
    /* The work is mostly waiting for the disk, not hashing (16 GB/s a
     * core): more reads in flight than cores pays. Measured on 1 GiB of
     * parts, cold cache, 2 cores: BACKUP 0.57-0.59 s with 8 threads against
     * 0.67-0.80 s with 2, RESTORE 0.56-0.58 s against 0.64 s. Memory stays
     * threads * buffer_size. */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    job->opts.threads = n > 0 ? (int)n : 1;
    if (job->opts.threads < CHB_JOB_MIN_DEFAULT_THREADS) job->opts.threads = CHB_JOB_MIN_DEFAULT_THREADS;
  }
  if (job->opts.threads > 64) job->opts.threads = 64;
  if (job->opts.buffer_size == 0) job->opts.buffer_size = 1 << 20;
  chb_run_init(&job->run);
  return job;
}

static void entry_free(chb_entry *e) {
  chb_pieces_free(e->pieces, e->npieces);
  free(e->dst);
  free(e->seal_name);
}

static int job_is_new(chb_job *job) { return chb_run_get_state(&job->run) == CHB_RUN_NEW; }

long chb_job_add_pieces(chb_job *job, const chb_piece *pieces, size_t npieces,
                        const char *dst, int64_t expect_size,
                        const chb_u128 *expect_hash, chb_error *err) {
  if (!job_is_new(job)) {
    chb_error_set(err, CHB_INVALID, "cannot add to a job that has started");
    return -1;
  }
  if (npieces == 0) {
    chb_error_set(err, CHB_INVALID, "an entry needs at least one source");
    return -1;
  }
  if (chb_pieces_check(pieces, npieces, err) != 0) return -1;
  if (job->count == job->cap) {
    size_t cap = job->cap ? job->cap * 2 : 64;
    chb_entry *grown = realloc(job->entries, cap * sizeof *grown);
    if (!grown) {
      chb_error_set(err, CHB_ENOMEM, "cannot grow the job's entry list");
      return -1;
    }
    job->entries = grown;
    job->cap = cap;
  }
  chb_entry *e = &job->entries[job->count];
  memset(e, 0, sizeof *e);
  if (!(e->pieces = chb_pieces_copy(pieces, npieces, err))) return -1;
  e->npieces = npieces;
  if (dst && !(e->dst = strdup(dst))) {
    entry_free(e);
    chb_error_set(err, CHB_ENOMEM, "cannot copy entry paths");
    return -1;
  }
  e->expect_size = expect_size;
  if (expect_hash) {
    e->has_expect_hash = 1;
    e->expect_hash = *expect_hash;
  }
  if (expect_size > 0) job->bytes_total += (uint64_t)expect_size;
  return (long)job->count++;
}

long chb_job_add(chb_job *job, const char *src, const char *dst,
                 uint64_t src_offset, int64_t expect_size,
                 const chb_u128 *expect_hash, chb_error *err) {
  chb_piece piece = {src, src_offset, -1, NULL, NULL, NULL, NULL, NULL};
  return chb_job_add_pieces(job, &piece, 1, dst, expect_size, expect_hash, err);
}

int chb_job_set_base(chb_job *job, size_t i, uint64_t base_size,
                     chb_u128 base_hash, chb_error *err) {
  if (!job_is_new(job) || i >= job->count)
    return chb_error_set(err, CHB_INVALID, "no entry %zu to set a base on", i);
  chb_entry *e = &job->entries[i];
  if (e->npieces != 1 || !e->dst)
    return chb_error_set(err, CHB_INVALID, "a base prefix needs one source and a destination");
  e->has_base = 1;
  e->base_size = base_size;
  e->base_hash = base_hash;
  return 0;
}

int chb_job_seal_entry(chb_job *job, size_t i, const char *name, chb_error *err) {
  if (!job_is_new(job) || i >= job->count)
    return chb_error_set(err, CHB_INVALID, "no entry %zu to encrypt", i);
  chb_entry *e = &job->entries[i];
  if (!job->opts.has_key || !e->dst || e->dst_s3)
    return chb_error_set(err, CHB_INVALID, "an encrypted entry needs a job key and a local destination");
  char *copy = strdup(name);
  if (!copy) return chb_error_set(err, CHB_ENOMEM, "cannot copy the name %s", name);
  free(e->seal_name);
  e->seal_name = copy;
  return 0;
}

int chb_job_s3_entry(chb_job *job, size_t i, int profile, chb_error *err) {
  if (!job_is_new(job) || i >= job->count)
    return chb_error_set(err, CHB_INVALID, "no entry %zu to write to S3", i);
  chb_entry *e = &job->entries[i];
  if (!e->dst || e->seal_name || profile <= 0)
    return chb_error_set(err, CHB_INVALID, "an S3 entry needs a destination key, a profile and no seal");
  e->dst_s3 = profile;
  return 0;
}

/* Is the job DONE? Locked (by chb_run): the results were written by the
 * workers before the last of them ended it. The job itself is never const. */
static int job_done(const chb_job *job) {
  return chb_run_get_state((chb_run *)&job->run) == CHB_RUN_DONE;
}

int chb_job_entry_tail_only(const chb_job *job, size_t i) {
  return i < job->count && job_done(job) && job->entries[i].tail_only;
}

/*
 * Writes the first len bytes of the entry's (single) piece to out again:
 * used when a file's prefix did not match its base after all, so the bytes
 * held back must be written. They are read again from the piece's start.
 */
static int write_prefix(chb_job *job, const chb_entry *e, chb_sink *out, uint64_t len,
                        unsigned char *buf, chb_error *err) {
  chb_source *src = chb_source_open(e->pieces, 1, err);
  if (!src) return -1;
  int rc = 0;
  for (uint64_t off = 0; rc == 0 && off < len;) {
    size_t want = len - off < job->opts.buffer_size ? (size_t)(len - off) : job->opts.buffer_size;
    ssize_t n = chb_source_read(src, buf, want, err);
    if (n == 0) chb_error_errno(err, EIO, "cannot read", e->pieces[0].path);
    if (n <= 0) rc = -1;
    else if ((rc = chb_sink_write(out, buf, (size_t)n, err)) == 0) off += (uint64_t)n;
  }
  chb_source_close(src);
  return rc;
}

/* The expected size and checksum, against what was read. */
static int check_expected(const chb_entry *e, chb_error *err) {
  const char *name = e->pieces[e->npieces - 1].path;
  if (e->expect_size >= 0 && e->size != (uint64_t)e->expect_size)
    return chb_error_set(err, CHB_CORRUPT, "size mismatch for %s: expected %lld bytes, read %llu",
                         name, (long long)e->expect_size, (unsigned long long)e->size);
  if (e->has_expect_hash && (e->hash.lo != e->expect_hash.lo || e->hash.hi != e->expect_hash.hi)) {
    char want[33], got[33];
    chb_u128_to_hex(e->expect_hash, want);
    chb_u128_to_hex(e->hash, got);
    return chb_error_set(err, CHB_CORRUPT, "checksum mismatch for %s: expected %s, got %s",
                         name, want, got);
  }
  return 0;
}

/*
 * Streams the entry's source: read -> hash -> write. With a base, the
 * bytes of the base's prefix are held back until it is known whether they
 * match it (then only the tail is written) or not (then they are read
 * again and written first).
 */
static int copy_entry(chb_job *job, chb_entry *e, chb_source *src, chb_sink *out,
                      unsigned char *buf, chb_error *err) {
  int holding = e->has_base && e->base_size > 0;
  const chb_piece *p = &e->pieces[0];
  if (holding && p->entry)
    return chb_error_set(err, CHB_INVALID, "a base prefix cannot be read from entry %s of %s",
                         p->entry, p->path);
  if (holding && p->key)
    return chb_error_set(err, CHB_INVALID, "a base prefix cannot be read from encrypted %s", p->path);
  chb_hash h;
  chb_hash_init(&h);
  for (;;) {
    size_t want = job->opts.buffer_size;
    if (holding && h.total + want > e->base_size) want = (size_t)(e->base_size - h.total);
    ssize_t n = chb_source_read(src, buf, want, err);
    if (n < 0) return -1;
    if (n == 0) break;
    chb_hash_update(&h, buf, (size_t)n);
    atomic_fetch_add(&job->run.bytes_done, (uint64_t)n);
    if (!holding) {
      if (out && chb_sink_write(out, buf, (size_t)n, err) != 0) return -1;
    } else if (h.total == e->base_size) {
      chb_u128 prefix = chb_hash_peek(&h);
      holding = 0;
      if (prefix.lo == e->base_hash.lo && prefix.hi == e->base_hash.hi) e->tail_only = 1;
      else if (write_prefix(job, e, out, e->base_size, buf, err) != 0) return -1;
    }
  }
  /* The file is shorter than its base: it did not just grow. */
  if (holding && write_prefix(job, e, out, h.total, buf, err) != 0) return -1;
  e->size = h.total;
  e->hash = chb_hash_peek(&h);
  return 0;
}

/* The length of the directory part of an entry's dst ("a/b" of "a/b/c"),
 * 0 when it has none. */
static size_t dst_dir_len(const chb_entry *e) {
  const char *slash = e->dst ? strrchr(e->dst, '/') : NULL;
  return slash && slash != e->dst ? (size_t)(slash - e->dst) : 0;
}

/* Can entry e be copied in a batch with others (a small local file)? */
static int batchable(const chb_entry *e) {
  return e->dst && !e->dst_s3 && !e->has_base && e->expect_size >= 0 &&
         e->expect_size <= SMALL_FILE && dst_dir_len(e) > 0;
}

static int same_dir(const chb_entry *a, const chb_entry *b) {
  size_t n = dst_dir_len(a);
  return n > 0 && n == dst_dir_len(b) && memcmp(a->dst, b->dst, n) == 0;
}

/*
 * One entry: its source -> hash -> its dst (a sink of the store, created
 * in dirfd when >= 0), then checks. On success the sink is left finished
 * but open in *out (NULL for hash only), for the batch to make durable.
 */
static int run_entry(chb_job *job, chb_entry *e, int dirfd, chb_fs_dir_cache *dirs,
                     unsigned char *buf, chb_sink **out_sink, chb_error *err) {
  int rc = -1;
  chb_sink *out = NULL;
  chb_source *src = NULL;
  e->tail_only = 0;
  *out_sink = NULL;
  if (e->dst) {
    chb_sink_opts o = {0};
    if (e->seal_name) {
      o.key = job->opts.key;
      o.seal_name = e->seal_name;
    }
    o.s3 = e->dst_s3;
    o.s3_pool = job->s3_pool;
    o.size = e->expect_size > 0 ? (uint64_t)e->expect_size : 0;
    out = dirfd >= 0 ? chb_store_open_write_at(job->store, dirfd, e->dst, &o, err)
                     : chb_store_open_write(job->store, e->dst, &o, err);
    if (!out) return -1;
  }
  if (!(src = chb_source_open_borrowed(e->pieces, e->npieces, err))) goto done;
  chb_source_set_cancel(src, &job->run.stop);
  chb_source_set_dir_cache(src, dirs);
  if (copy_entry(job, e, src, out, buf, err) != 0 || check_expected(e, err) != 0) goto done;
  if (out && chb_sink_finish(out, 0, err) != 0) goto done;
  rc = 0;
done:
  chb_source_close(src);
  if (out && rc != 0) chb_sink_abort(out);  /* never leave a partial file */
  else *out_sink = out;
  return rc;
}

/*
 * A batch: every entry copied and checked, then (with fsync) every file
 * fsynced, then closed; the last batch of a directory run fsyncs the
 * directory. All or nothing: on any failure every file of the batch is
 * removed, so no file of it looks copied.
 */
static int run_batch(chb_job *job, const chb_batch *b, unsigned char *buf, chb_fs_dir_cache *dirs,
                     chb_error *err) {
  chb_sink *sinks[BATCH_FILES];
  size_t nsinks = 0;
  int rc = 0, dirfd = -1;
  chb_entry *first = &job->entries[b->first];
  int sync = job->opts.fsync;
  if (b->dir != SIZE_MAX) {   /* a local destination */
    dirfd = chb_store_open_dir(job->store, first->dst, dst_dir_len(first), sync, err);
    if (dirfd < 0) return -1;
  }
  for (size_t k = 0; rc == 0 && k < b->count; k++) {
    chb_sink *out;
    if ((rc = run_entry(job, &job->entries[b->first + k], dirfd, dirs, buf, &out, err)) == 0 && out)
      sinks[nsinks++] = out;
  }
  for (size_t k = 0; rc == 0 && sync && k < nsinks; k++) rc = chb_sink_sync(sinks[k], err);
  for (size_t k = 0; k < nsinks; k++) {
    if (rc != 0) {
      chb_sink_abort(sinks[k]);
    } else if (chb_sink_close(sinks[k], err) != 0) {
      rc = -1;
      for (size_t j = 0; j <= k; j++) {   /* closed ones: removed by name */
        chb_error ignored;
        if (!job->entries[b->first + j].dst_s3)
          chb_store_remove(job->store, job->entries[b->first + j].dst, &ignored);
      }
    }
  }
  if (rc == 0 && sync && dirfd >= 0 && b->dir != SIZE_MAX &&
      atomic_fetch_sub(&job->dirs[b->dir].batches_left, 1) == 1 && fsync(dirfd) != 0) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", (int)dst_dir_len(first), first->dst);
    rc = chb_error_errno(err, errno, "cannot fsync", dir);
  }
  if (dirfd >= 0) close(dirfd);
  return rc;
}

/* A worker (or start's own hold) is done; the last one ends the job. */
static void worker_done(chb_job *job) {
  if (atomic_fetch_sub(&job->running, 1) != 1) return;
  if (job->s3_pool) chb_s3_pool_stop(job->s3_pool);   /* its threads end (and close their connections) */
  chb_run_end(&job->run, !chb_run_stopped(&job->run));
}

static void *worker(void *arg) {
  chb_job *job = arg;
  chb_error err;
  chb_error_clear(&err);
  chb_fs_dir_cache dirs;
  chb_fs_dir_cache_init(&dirs);
  unsigned char *buf = malloc(job->opts.buffer_size);
  if (!buf) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate a %zu-byte buffer", job->opts.buffer_size);
    chb_run_fail(&job->run, &err);
  }
  while (buf && !chb_run_stopped(&job->run)) {
    size_t i = atomic_fetch_add(&job->next, 1);
    if (i >= job->nbatches) break;
    if (run_batch(job, &job->batches[i], buf, &dirs, &err) != 0) {
      chb_run_fail(&job->run, &err);
      break;
    }
    atomic_fetch_add(&job->run.files_done, job->batches[i].count);
  }
  chb_fs_dir_cache_clear(&dirs);
  free(buf);
  worker_done(job);
  return NULL;
}

/* Largest first (no big file left for one worker at the end), then in
 * the order added. */
static int batch_cmp(const void *pa, const void *pb) {
  const chb_batch *a = pa, *b = pb;
  if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
  return a->first < b->first ? -1 : a->first > b->first;
}

/* Cuts the entries into batches and directory runs (see BATCH_FILES). */
static int plan_batches(chb_job *job, chb_error *err) {
  size_t n = job->count;
  job->batches = calloc(n ? n : 1, sizeof *job->batches);
  job->dirs = calloc(n ? n : 1, sizeof *job->dirs);
  if (!job->batches || !job->dirs) return chb_error_set(err, CHB_ENOMEM, "cannot plan the job's batches");
  for (size_t i = 0; i < n; i++) {
    chb_entry *e = &job->entries[i];
    uint64_t size = e->expect_size > 0 ? (uint64_t)e->expect_size : 0;
    int local = e->dst && !e->dst_s3 && dst_dir_len(e) > 0;
    int new_dir = !local || i == 0 || !same_dir(&job->entries[i - 1], e);
    if (local && new_dir) atomic_init(&job->dirs[job->ndirs++].batches_left, 0);
    chb_batch *last = job->nbatches ? &job->batches[job->nbatches - 1] : NULL;
    if (last && !new_dir && batchable(e) && batchable(&job->entries[last->first]) &&
        last->count < BATCH_FILES && last->bytes + size <= BATCH_BYTES) {
      last->count++;
      last->bytes += size;
      continue;
    }
    chb_batch *b = &job->batches[job->nbatches++];
    b->first = i;
    b->count = 1;
    b->bytes = size;
    b->dir = local ? job->ndirs - 1 : SIZE_MAX;
    if (local) atomic_fetch_add(&job->dirs[b->dir].batches_left, 1);
  }
  if (!job->opts.ordered) qsort(job->batches, job->nbatches, sizeof *job->batches, batch_cmp);
  return 0;
}

int chb_job_start(chb_job *job, chb_error *err) {
  if (chb_run_begin(&job->run, NULL) != 0)
    return chb_error_set(err, CHB_INVALID, "job already started");
  if (plan_batches(job, err) != 0) {
    chb_run_unbegin(&job->run);
    return -1;
  }
  int n = job->opts.threads;
  if ((size_t)n > job->nbatches) n = job->nbatches ? (int)job->nbatches : 1;
  job->threads = calloc((size_t)n, sizeof *job->threads);
  int to_s3 = 0;
  for (size_t i = 0; i < job->count && !to_s3; i++) to_s3 = job->entries[i].dst_s3 > 0;
  /* As many upload threads as workers asked for, even when fewer files
   * keep fewer workers busy: one large file's parts go in parallel. */
  if (job->threads && to_s3 && !(job->s3_pool = chb_s3_pool_new(job->opts.threads, 0, err))) {
    free(job->threads);
    job->threads = NULL;
    chb_run_unbegin(&job->run);
    return -1;
  }
  if (!job->threads) {
    chb_run_unbegin(&job->run);
    return chb_error_set(err, CHB_ENOMEM, "cannot allocate threads");
  }
  /* start holds one count itself: a fast worker cannot end the job while
   * others are still being created. */
  atomic_store(&job->running, 1);
  for (int i = 0; i < n; i++) {
    atomic_fetch_add(&job->running, 1);
    int rc = pthread_create(&job->threads[i], NULL, worker, job);
    if (rc != 0) {
      chb_error e;
      atomic_fetch_sub(&job->running, 1);
      chb_error_errno(&e, rc, "cannot start", "worker thread");
      chb_run_fail(&job->run, &e);
      break;
    }
    job->nthreads++;
  }
  worker_done(job);
  if (job->nthreads == 0) return chb_run_result(&job->run, "job", err); /* nothing ran: FAILED */
  return 0;
}

chb_job_state chb_job_wait(chb_job *job, long timeout_ms) { return chb_run_wait(&job->run, timeout_ms); }

void chb_job_cancel(chb_job *job) { chb_run_cancel(&job->run); }

void chb_job_get_progress(chb_job *job, chb_job_progress *out) {
  chb_run_get_progress(&job->run, job->count, job->bytes_total, out);
}

int chb_job_result(chb_job *job, chb_error *err) { return chb_run_result(&job->run, "job", err); }

size_t chb_job_count(const chb_job *job) { return job->count; }

int chb_job_entry_result(const chb_job *job, size_t i, uint64_t *size, chb_u128 *hash) {
  /* Polling while the job runs is allowed: job_done orders this read after
   * the last worker's write. */
  if (i >= job->count || !job_done(job)) return -1;
  *size = job->entries[i].size;
  *hash = job->entries[i].hash;
  return 0;
}

void chb_job_free(chb_job *job) {
  if (!job) return;
  atomic_store(&job->run.stop, 1);
  for (int i = 0; i < job->nthreads; i++) pthread_join(job->threads[i], NULL);
  chb_s3_pool_free(job->s3_pool);
  for (size_t i = 0; i < job->count; i++) entry_free(&job->entries[i]);
  free(job->entries);
  free(job->batches);
  free(job->dirs);
  free(job->threads);
  chb_store_close(job->store);
  chb_run_destroy(&job->run);
  OPENSSL_cleanse(job->opts.key, sizeof job->opts.key);
  free(job);
}
