/* Executes a plan of file entries on worker threads; see chb_job.h. */
#include "chb_job.h"
#include "chb_fs.h"
#include "chb_zip.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Default workers: the number of cores, but at least this many (I/O-bound). */
#define CHB_JOB_MIN_DEFAULT_THREADS 8

typedef struct chb_src {
  char *path;
  uint64_t offset;
  int64_t length;             /* < 0: to the end of the file */
  char *entry;                /* set: path is a zip archive, read this entry */
  char *password;             /* for the entry; NULL: none */
  unsigned char *key;         /* set: a file of an encrypted directory backup */
  char *aad;                  /* with key: its name in that backup */
  size_t root_len;            /* > 0: opened confined below path[0..root_len) */
} chb_src;

typedef struct chb_entry {
  chb_src *pieces;            /* read in order; pieces[0].path names the entry */
  size_t npieces;
  char *dst;                  /* NULL: hash only */
  char *seal_name;            /* set: dst is written encrypted as this name */
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

struct chb_job {
  chb_job_opts opts;
  chb_entry *entries;
  size_t count, cap;
  uint64_t bytes_total;

  pthread_t *threads;
  int nthreads;               /* started workers, joined in free */
  atomic_size_t next;         /* cursor over entries */
  atomic_uint_fast64_t files_done, bytes_done;
  atomic_int stop;            /* set on failure or cancel: workers exit */

  pthread_mutex_t lock;       /* guards state, running, error */
  pthread_cond_t ended;
  chb_job_state state;
  int running;                /* workers not yet finished */
  chb_error error;
};

const char *chb_job_state_name(chb_job_state s) {
  switch (s) {
  case CHB_JOB_NEW: return "new";
  case CHB_JOB_RUNNING: return "running";
  case CHB_JOB_DONE: return "done";
  case CHB_JOB_FAILED: return "failed";
  case CHB_JOB_CANCELLED: return "cancelled";
  }
  return "unknown";
}

chb_job *chb_job_new(const chb_job_opts *opts, chb_error *err) {
  chb_job *job = calloc(1, sizeof *job);
  if (!job) {
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
  pthread_mutex_init(&job->lock, NULL);
  pthread_cond_init(&job->ended, NULL);
  job->state = CHB_JOB_NEW;
  chb_error_clear(&job->error);
  return job;
}

static void entry_free(chb_entry *e) {
  for (size_t i = 0; i < e->npieces; i++) {
    free(e->pieces[i].path);
    free(e->pieces[i].entry);
    if (e->pieces[i].password) {
      explicit_bzero(e->pieces[i].password, strlen(e->pieces[i].password));
      free(e->pieces[i].password);
    }
    if (e->pieces[i].key) {
      OPENSSL_cleanse(e->pieces[i].key, CHB_CIPHER_KEY_LEN);
      free(e->pieces[i].key);
    }
    free(e->pieces[i].aad);
  }
  free(e->pieces);
  free(e->dst);
  free(e->seal_name);
}

long chb_job_add_pieces(chb_job *job, const chb_piece *pieces, size_t npieces,
                        const char *dst, int64_t expect_size,
                        const chb_u128 *expect_hash, chb_error *err) {
  if (job->state != CHB_JOB_NEW) {
    chb_error_set(err, CHB_INVALID, "cannot add to a job that has started");
    return -1;
  }
  if (npieces == 0) {
    chb_error_set(err, CHB_INVALID, "an entry needs at least one source");
    return -1;
  }
  for (size_t i = 0; i < npieces; i++) {
    if (pieces[i].key && (!pieces[i].aad || pieces[i].entry)) {
      chb_error_set(err, CHB_INVALID, "an encrypted piece needs its name (aad) and no zip entry");
      return -1;
    }
    size_t r = pieces[i].root ? strlen(pieces[i].root) : 0;
    if (pieces[i].root && (pieces[i].entry || strncmp(pieces[i].path, pieces[i].root, r) != 0 ||
                           pieces[i].path[r] != '/')) {
      chb_error_set(err, CHB_INVALID, "piece %s is not a file below its root %s", pieces[i].path,
                    pieces[i].root);
      return -1;
    }
  }
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
  e->pieces = calloc(npieces, sizeof *e->pieces);
  int oom = e->pieces == NULL;
  for (size_t i = 0; !oom && i < npieces; i++) {
    e->pieces[i].path = strdup(pieces[i].path);
    e->pieces[i].offset = pieces[i].offset;
    e->pieces[i].length = pieces[i].length;
    e->pieces[i].root_len = pieces[i].root ? strlen(pieces[i].root) : 0;
    e->npieces = i + 1;
    oom = e->pieces[i].path == NULL;
    if (!oom && pieces[i].entry) oom = (e->pieces[i].entry = strdup(pieces[i].entry)) == NULL;
    if (!oom && pieces[i].password)
      oom = (e->pieces[i].password = strdup(pieces[i].password)) == NULL;
    if (!oom && pieces[i].key) {
      oom = (e->pieces[i].key = malloc(CHB_CIPHER_KEY_LEN)) == NULL;
      if (!oom) memcpy(e->pieces[i].key, pieces[i].key, CHB_CIPHER_KEY_LEN);
      if (!oom) oom = (e->pieces[i].aad = strdup(pieces[i].aad)) == NULL;
    }
  }
  if (!oom && dst) oom = (e->dst = strdup(dst)) == NULL;
  if (oom) {
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
  chb_piece piece = {src, src_offset, -1, NULL, NULL};
  return chb_job_add_pieces(job, &piece, 1, dst, expect_size, expect_hash, err);
}

int chb_job_set_base(chb_job *job, size_t i, uint64_t base_size,
                     chb_u128 base_hash, chb_error *err) {
  if (job->state != CHB_JOB_NEW || i >= job->count)
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
  if (job->state != CHB_JOB_NEW || i >= job->count)
    return chb_error_set(err, CHB_INVALID, "no entry %zu to encrypt", i);
  chb_entry *e = &job->entries[i];
  if (!job->opts.has_key || !e->dst)
    return chb_error_set(err, CHB_INVALID, "an encrypted entry needs a job key and a destination");
  char *copy = strdup(name);
  if (!copy) return chb_error_set(err, CHB_ENOMEM, "cannot copy the name %s", name);
  free(e->seal_name);
  e->seal_name = copy;
  return 0;
}

int chb_job_entry_tail_only(const chb_job *job, size_t i) {
  /* Locked like chb_job_entry_result: state is written by the last worker. */
  pthread_mutex_t *lock = (pthread_mutex_t *)&job->lock;
  pthread_mutex_lock(lock);
  int done = job->state == CHB_JOB_DONE;
  pthread_mutex_unlock(lock);
  return i < job->count && done && job->entries[i].tail_only;
}

/* Records the first failure and tells every worker to stop. */
static void job_fail(chb_job *job, const chb_error *e) {
  pthread_mutex_lock(&job->lock);
  if (job->error.code == CHB_OK) job->error = *e;
  pthread_mutex_unlock(&job->lock);
  atomic_store(&job->stop, 1);
}

static int write_all(int fd, const unsigned char *p, size_t n) {
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

/* Where an entry's bytes go: a file, plain or through a sealer. */
typedef struct chb_out {
  int fd;                     /* < 0: hash only */
  chb_sealer *sealer;         /* set: encrypted */
  const char *path;
} chb_out;

static int out_write(chb_out *o, const unsigned char *p, size_t n, chb_error *err) {
  if (o->fd < 0) return 0;
  if (o->sealer) return chb_sealer_write(o->sealer, p, n, err);
  if (write_all(o->fd, p, n) != 0) return chb_error_errno(err, errno, "cannot write", o->path);
  return 0;
}

static int open_dst(const char *dst, chb_error *err) {
  int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 && errno == ENOENT) {
    if (chb_fs_mkdir_parents(dst, err) != 0) return -1;
    fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  }
  if (fd < 0) chb_error_errno(err, errno, "cannot create", dst);
  return fd;
}

/*
 * Writes the first len bytes of the entry's (single) piece to out again:
 * used when a file's prefix did not match its base after all, so the bytes
 * held back must be written. They start at the piece's offset, not at 0.
 */
static int write_prefix(int in, chb_out *out, uint64_t len, unsigned char *buf, size_t bufsize,
                        const chb_entry *e, chb_error *err) {
  uint64_t off = 0, start = e->pieces[0].offset;
  while (off < len) {
    size_t want = len - off < bufsize ? (size_t)(len - off) : bufsize;
    ssize_t n = pread(in, buf, want, (off_t)(start + off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return chb_error_errno(err, n < 0 ? errno : EIO, "cannot read", e->pieces[0].path);
    if (out_write(out, buf, (size_t)n, err) != 0) return -1;
    off += (uint64_t)n;
  }
  return 0;
}

/*
 * Streams a piece that is an entry of a zip archive (through this worker's
 * cache of open archives): skips `offset` bytes by reading, then reads
 * `length` bytes or to the end. The entry is always read to its end so that
 * its CRC or AES MAC is checked even when the piece stops short.
 */
static int run_zip_piece(chb_job *job, const chb_src *piece, chb_out *out,
                         chb_hash *h, int *holding, unsigned char *buf, chb_error *err) {
  if (*holding)
    return chb_error_set(err, CHB_INVALID, "a base prefix cannot be read from entry %s of %s",
                         piece->entry, piece->path);
  chb_zip_file *f = chb_zip_open_cached(piece->path, piece->password, piece->entry, err);
  if (!f) return -1;
  int rc = -1;
  uint64_t skip = piece->offset;
  uint64_t left = piece->length < 0 ? UINT64_MAX : (uint64_t)piece->length;
  for (;;) {
    if (atomic_load(&job->stop)) {
      chb_error_set(err, CHB_CANCELLED, "cancelled while copying %s of %s", piece->entry, piece->path);
      goto done;
    }
    size_t want = job->opts.buffer_size;
    if (skip > 0 && skip < want) want = (size_t)skip;
    int draining = skip == 0 && left == 0;
    if (skip == 0 && !draining && left < want) want = (size_t)left;
    ssize_t n = chb_zip_file_read(f, buf, want, err);
    if (n < 0) goto done;
    if (n == 0) {
      if (skip > 0 || (piece->length >= 0 && left > 0)) {
        chb_error_set(err, CHB_CORRUPT, "entry %s of %s is shorter than expected (%llu bytes missing)",
                      piece->entry, piece->path, (unsigned long long)(skip + left));
        goto done;
      }
      break;
    }
    if (draining) continue;
    if (skip > 0) {
      skip -= (uint64_t)n;
      continue;
    }
    chb_hash_update(h, buf, (size_t)n);
    left -= (uint64_t)n;
    atomic_fetch_add(&job->bytes_done, (uint64_t)n);
    if (out_write(out, buf, (size_t)n, err) != 0) goto done;
  }
  rc = 0;
done:
  chb_zip_file_close(f);
  return rc;
}

/*
 * Streams a piece that is a file of an encrypted directory backup: offset
 * and length count plaintext; every chunk read is authenticated.
 */
static int run_sealed_piece(chb_job *job, const chb_src *piece, chb_out *out,
                            chb_hash *h, int *holding, unsigned char *buf, chb_error *err) {
  if (*holding)
    return chb_error_set(err, CHB_INVALID, "a base prefix cannot be read from encrypted %s", piece->path);
  chb_opener *o = chb_opener_open(piece->path, piece->root_len, piece->key, piece->aad, err);
  if (!o) return -1;
  int rc = -1;
  if (chb_opener_seek(o, piece->offset, err) != 0) goto done;
  uint64_t left = piece->length < 0 ? UINT64_MAX : (uint64_t)piece->length;
  while (left > 0) {
    if (atomic_load(&job->stop)) {
      chb_error_set(err, CHB_CANCELLED, "cancelled while copying %s", piece->path);
      goto done;
    }
    size_t want = left < job->opts.buffer_size ? (size_t)left : job->opts.buffer_size;
    ssize_t n = chb_opener_read(o, buf, want, err);
    if (n < 0) goto done;
    if (n == 0) {
      if (piece->length >= 0) {
        chb_error_set(err, CHB_CORRUPT, "%s is shorter than expected (%llu bytes missing)",
                      piece->path, (unsigned long long)left);
        goto done;
      }
      break;
    }
    chb_hash_update(h, buf, (size_t)n);
    left -= (uint64_t)n;
    atomic_fetch_add(&job->bytes_done, (uint64_t)n);
    if (out_write(out, buf, (size_t)n, err) != 0) goto done;
  }
  rc = 0;
done:
  chb_opener_close(o);
  return rc;
}

/* Streams one piece: read -> hash -> write (unless held back as prefix). */
static int run_piece(chb_job *job, chb_entry *e, const chb_src *piece, chb_out *out,
                     chb_hash *h, int *holding, unsigned char *buf, chb_error *err) {
  if (piece->entry) return run_zip_piece(job, piece, out, h, holding, buf, err);
  if (piece->key) return run_sealed_piece(job, piece, out, h, holding, buf, err);
  int in = chb_fs_open_beneath(piece->path, piece->root_len, err);
  if (in < 0) return -1;
  int rc = -1;
  if (piece->offset && lseek(in, (off_t)piece->offset, SEEK_SET) < 0) {
    chb_error_errno(err, errno, "cannot seek in", piece->path);
    goto done;
  }
  posix_fadvise(in, 0, 0, POSIX_FADV_SEQUENTIAL);
  uint64_t left = piece->length < 0 ? UINT64_MAX : (uint64_t)piece->length;
  while (left > 0) {
    if (atomic_load(&job->stop)) {
      chb_error_set(err, CHB_CANCELLED, "cancelled while copying %s", piece->path);
      goto done;
    }
    size_t want = left < job->opts.buffer_size ? (size_t)left : job->opts.buffer_size;
    if (*holding && h->total + want > e->base_size) want = (size_t)(e->base_size - h->total);
    ssize_t n = read(in, buf, want);
    if (n < 0) {
      if (errno == EINTR) continue;
      chb_error_errno(err, errno, "cannot read", piece->path);
      goto done;
    }
    if (n == 0) {
      if (piece->length >= 0) {
        chb_error_set(err, CHB_CORRUPT, "%s is shorter than expected (%llu bytes missing)",
                      piece->path, (unsigned long long)left);
        goto done;
      }
      break;
    }
    chb_hash_update(h, buf, (size_t)n);
    left -= (uint64_t)n;
    atomic_fetch_add(&job->bytes_done, (uint64_t)n);
    if (*holding) {
      /* Bytes of the base's prefix are held back until it is known. */
      if (h->total == e->base_size) {
        chb_u128 prefix = chb_hash_peek(h);
        *holding = 0;
        if (prefix.lo == e->base_hash.lo && prefix.hi == e->base_hash.hi) {
          e->tail_only = 1;
        } else if (write_prefix(in, out, e->base_size, buf, job->opts.buffer_size, e, err) != 0) {
          goto done;
        }
      }
      continue;
    }
    if (out_write(out, buf, (size_t)n, err) != 0) goto done;
  }
  if (*holding && piece == &e->pieces[e->npieces - 1]) {
    /* The file is shorter than its base: it did not just grow. */
    *holding = 0;
    if (write_prefix(in, out, h->total, buf, job->opts.buffer_size, e, err) != 0) goto done;
  }
  rc = 0;
done:
  close(in);
  return rc;
}

/* Streams one entry: read its pieces -> hash -> write dst, then checks. */
static int run_entry(chb_job *job, chb_entry *e, unsigned char *buf, chb_error *err) {
  int rc = -1;
  chb_out out = {-1, NULL, e->dst};
  int holding = e->has_base && e->base_size > 0;
  chb_hash h;
  chb_hash_init(&h);
  e->tail_only = 0;
  if (e->dst && (out.fd = open_dst(e->dst, err)) < 0) return -1;
  if (e->seal_name && !(out.sealer = chb_sealer_new(job->opts.key, e->seal_name, out.fd, e->dst, err)))
    goto done;
  for (size_t i = 0; i < e->npieces; i++)
    if (run_piece(job, e, &e->pieces[i], &out, &h, &holding, buf, err) != 0) goto done;
  e->size = h.total;
  e->hash = chb_hash_peek(&h);
  if (e->expect_size >= 0 && e->size != (uint64_t)e->expect_size) {
    chb_error_set(err, CHB_CORRUPT, "size mismatch for %s: expected %lld bytes, read %llu",
                  e->pieces[e->npieces - 1].path, (long long)e->expect_size,
                  (unsigned long long)e->size);
    goto done;
  }
  if (e->has_expect_hash &&
      (e->hash.lo != e->expect_hash.lo || e->hash.hi != e->expect_hash.hi)) {
    char want[33], got[33];
    chb_u128_to_hex(e->expect_hash, want);
    chb_u128_to_hex(e->hash, got);
    chb_error_set(err, CHB_CORRUPT, "checksum mismatch for %s: expected %s, got %s",
                  e->pieces[e->npieces - 1].path, want, got);
    goto done;
  }
  if (out.sealer && chb_sealer_finish(out.sealer, err) != 0) goto done;
  if (out.fd >= 0 && job->opts.fsync && fsync(out.fd) != 0) {
    chb_error_errno(err, errno, "cannot fsync", e->dst);
    goto done;
  }
  rc = 0;
done:
  chb_sealer_free(out.sealer);
  if (out.fd >= 0 && close(out.fd) != 0 && rc == 0)
    rc = chb_error_errno(err, errno, "cannot close", e->dst);
  if (rc != 0 && out.fd >= 0) unlink(e->dst); /* never leave a partial file */
  return rc;
}

static void *worker(void *arg) {
  chb_job *job = arg;
  chb_error err;
  chb_error_clear(&err);
  unsigned char *buf = malloc(job->opts.buffer_size);
  if (!buf) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate a %zu-byte buffer", job->opts.buffer_size);
    job_fail(job, &err);
  }
  while (buf && !atomic_load(&job->stop)) {
    size_t i = atomic_fetch_add(&job->next, 1);
    if (i >= job->count) break;
    if (run_entry(job, &job->entries[i], buf, &err) != 0) {
      job_fail(job, &err);
      break;
    }
    atomic_fetch_add(&job->files_done, 1);
  }
  free(buf);
  pthread_mutex_lock(&job->lock);
  if (--job->running == 0) {
    if (job->error.code == CHB_OK && atomic_load(&job->stop))
      chb_error_set(&job->error, CHB_CANCELLED, "cancelled");
    job->state = job->error.code == CHB_OK ? CHB_JOB_DONE
               : job->error.code == CHB_CANCELLED ? CHB_JOB_CANCELLED : CHB_JOB_FAILED;
    pthread_cond_broadcast(&job->ended);
  }
  pthread_mutex_unlock(&job->lock);
  return NULL;
}

int chb_job_start(chb_job *job, chb_error *err) {
  if (job->state != CHB_JOB_NEW)
    return chb_error_set(err, CHB_INVALID, "job already started");
  int n = job->opts.threads;
  if ((size_t)n > job->count) n = job->count ? (int)job->count : 1;
  job->threads = calloc((size_t)n, sizeof *job->threads);
  if (!job->threads) return chb_error_set(err, CHB_ENOMEM, "cannot allocate threads");
  pthread_mutex_lock(&job->lock);
  job->state = CHB_JOB_RUNNING;
  for (int i = 0; i < n; i++) {
    job->running++;
    int rc = pthread_create(&job->threads[i], NULL, worker, job);
    if (rc != 0) {
      job->running--;
      atomic_store(&job->stop, 1);
      if (job->nthreads == 0) {   /* nothing runs: end the job here */
        chb_error_errno(&job->error, rc, "cannot start", "worker thread");
        job->state = CHB_JOB_FAILED;
        pthread_mutex_unlock(&job->lock);
        *err = job->error;
        return -1;
      }
      chb_error_errno(&job->error, rc, "cannot start", "worker thread");
      break;
    }
    job->nthreads++;
  }
  pthread_mutex_unlock(&job->lock);
  return 0;
}

void chb_wait_while_running(pthread_cond_t *ended, pthread_mutex_t *lock,
                            const chb_job_state *state, long timeout_ms) {
  if (timeout_ms < 0) {
    while (*state == CHB_JOB_RUNNING) pthread_cond_wait(ended, lock);
    return;
  }
  if (*state != CHB_JOB_RUNNING) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  while (*state == CHB_JOB_RUNNING && pthread_cond_timedwait(ended, lock, &ts) == 0) {
  }
}

int chb_ended_result(chb_job_state s, const chb_error *error, const char *what, chb_error *err) {
  if (s == CHB_JOB_DONE) {
    chb_error_clear(err);
    return 0;
  }
  if (s == CHB_JOB_NEW || s == CHB_JOB_RUNNING)
    chb_error_set(err, CHB_INVALID, "%s has not ended (%s)", what, chb_job_state_name(s));
  else
    *err = *error;
  return -1;
}

chb_job_state chb_job_wait(chb_job *job, long timeout_ms) {
  pthread_mutex_lock(&job->lock);
  chb_wait_while_running(&job->ended, &job->lock, &job->state, timeout_ms);
  chb_job_state s = job->state;
  pthread_mutex_unlock(&job->lock);
  return s;
}

void chb_job_cancel(chb_job *job) {
  atomic_store(&job->stop, 1);
  pthread_mutex_lock(&job->lock);
  if (job->state == CHB_JOB_NEW) {
    chb_error_set(&job->error, CHB_CANCELLED, "cancelled before start");
    job->state = CHB_JOB_CANCELLED;
  }
  pthread_mutex_unlock(&job->lock);
}

void chb_job_get_progress(chb_job *job, chb_job_progress *out) {
  pthread_mutex_lock(&job->lock);
  out->state = job->state;
  pthread_mutex_unlock(&job->lock);
  out->files_total = job->count;
  out->files_done = atomic_load(&job->files_done);
  out->bytes_total = job->bytes_total;
  out->bytes_done = atomic_load(&job->bytes_done);
}

int chb_job_result(chb_job *job, chb_error *err) {
  pthread_mutex_lock(&job->lock);
  int rc = chb_ended_result(job->state, &job->error, "job", err);
  pthread_mutex_unlock(&job->lock);
  return rc;
}

size_t chb_job_count(const chb_job *job) { return job->count; }

int chb_job_entry_result(const chb_job *job, size_t i, uint64_t *size, chb_u128 *hash) {
  /* The lock orders this read of state (and so of the entry, written by a
   * worker before it ended) after the last worker's write: a caller may
   * poll while the job runs. The job itself is never const. */
  pthread_mutex_t *lock = (pthread_mutex_t *)&job->lock;
  pthread_mutex_lock(lock);
  int done = job->state == CHB_JOB_DONE;
  pthread_mutex_unlock(lock);
  if (i >= job->count || !done) return -1;
  *size = job->entries[i].size;
  *hash = job->entries[i].hash;
  return 0;
}

void chb_job_free(chb_job *job) {
  if (!job) return;
  atomic_store(&job->stop, 1);
  for (int i = 0; i < job->nthreads; i++) pthread_join(job->threads[i], NULL);
  for (size_t i = 0; i < job->count; i++) entry_free(&job->entries[i]);
  free(job->entries);
  free(job->threads);
  pthread_mutex_destroy(&job->lock);
  pthread_cond_destroy(&job->ended);
  OPENSSL_cleanse(job->opts.key, sizeof job->opts.key);
  free(job);
}
