/* Zip archives, the writing half; see chb_zip_write.h. */
#include "chb_zip_write.h"
#include "chb_aes.h"
#include "chb_codec.h"
#include "chb_fs.h"
#include "chb_store.h"
#include "chb_zip_container.h"
#include "chb_zip_common.h"
#include "chb_zip_read.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <libdeflate.h>

#define AES_STRENGTH 3                  /* we write AES-256 */
#define MAX_AHEAD 4096                  /* writer: entries prepared ahead of the archive */
#define STREAM_QUEUE 4                  /* writer: chunks queued per stored entry */
#define SPARE_CHUNKS 8                  /* writer: chunk buffers kept for reuse */
#define WAKE_BATCH 64                   /* streaming: adds that wake idle threads together */
#define SPOOL_MIN 4096                  /* an in-memory spool's first size */
#define SPOOL_POOL 256                  /* SPOOL_MIN buffers kept for reuse */

/* ---- entries ------------------------------------------------------------ */

typedef struct zw_entry zw_entry;

/* Bytes of a stored entry on their way from its worker to the archive. */
typedef struct zw_chunk {
  struct zw_chunk *next;
  size_t len, cap;
  unsigned char data[];
} zw_chunk;

struct zw_entry {
  chb_zip_writer *w;
  zw_entry *next;             /* the queue, in order (writer's lock) */
  size_t index;
  char *name;
  chb_piece *pieces;          /* a copy (chb_pieces_copy) */
  size_t npieces;
  unsigned char *bytes;       /* add_bytes: a copy */
  size_t nbytes;
  int from_bytes;
  int64_t expect_size;
  int has_hash;
  chb_u128 expect_hash;
  int direct;                 /* store: a worker streams it through the chunk queue */
  int state;                  /* E_*, under the writer's lock */
  /* results of reading the source */
  uint64_t size;
  chb_u128 hash;
  uint32_t crc;
  /* spool of the compressed (and encrypted) bytes */
  unsigned char *mem;
  size_t mem_len, mem_cap;
  int fd;
  char *spool_path;
  uint64_t comp_len;
  uint64_t spool_acct;        /* bytes counted in the writer's `spooled` */
  /* stored entries, streamed */
  int size_known;
  uint64_t direct_size;       /* the size read from the source's stat, or given */
  zw_chunk *q_head, *q_tail;  /* chunks made, not yet copied (writer's lock) */
  size_t q_len;
  int q_end;                  /* the last chunk is queued */
  int stored;                 /* spooled data is stored, not compressed (empty file) */
};

enum { E_PENDING, E_WORKING, E_READY };

/* A blank entry, safe to free at any point. */
static zw_entry *entry_new(void) {
  zw_entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->fd = -1;
  return e;
}

/* An entry's bytes: its pieces through a chb_source, or add_bytes's copy. */
typedef struct esrc {
  const zw_entry *e;
  chb_source *src;            /* NULL: from bytes */
  size_t pos;                 /* in the bytes */
} esrc;

static int esrc_open(esrc *s, const zw_entry *e, chb_error *err) {
  s->e = e;
  s->pos = 0;
  s->src = NULL;
  if (e->from_bytes) return 0;
  return (s->src = chb_source_open(e->pieces, e->npieces, err)) ? 0 : -1;
}

/* > 0 bytes, 0 at the end, -1 on error. */
static ssize_t esrc_read(esrc *s, unsigned char *buf, size_t len, chb_error *err) {
  if (s->src) return chb_source_read(s->src, buf, len, err);
  size_t n = s->e->nbytes - s->pos < len ? s->e->nbytes - s->pos : len;
  memcpy(buf, s->e->bytes + s->pos, n);
  s->pos += n;
  return (ssize_t)n;
}

/* The size the entry's bytes will have, without reading them. */
static int esrc_size(esrc *s, uint64_t *out, chb_error *err) {
  if (s->src) return chb_source_size(s->src, out, err);
  *out = s->e->nbytes;
  return 0;
}

static void esrc_close(esrc *s) {
  chb_source_close(s->src);
  s->src = NULL;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct zw_result {
  uint64_t size;
  chb_u128 hash;
} zw_result;

struct chb_zip_writer {
  char *path, *tmp_path, *spool_dir;
  const chb_codec_info *codec;
  int level;
  char *password;             /* NULL: no encryption */
  int threads;
  size_t bufsize;
  int fsync;
  time_t mtime;
  size_t count;               /* entries added */
  uint64_t bytes_total;
  int spool_dir_made;
  int streaming;              /* begun: entries are written as they come, then freed */
  zw_entry **names;           /* batch, while adding: open-addressing set of the names */
  size_t names_cap;
  zw_result *results;         /* batch: each entry's size and checksum, once written */

  chb_run run;                /* state, stop flag, first error, progress */
  pthread_mutex_t lock;       /* the queue, entry states, consumed, chunks */
  pthread_cond_t cond;        /* entry added, ready or written; chunk freed; stop */
  pthread_cond_t drained;     /* wait_drained: consumed reached drain_target; stop */
  pthread_cond_t work_cond;   /* idle workers: entries added; stop; end of input */
  size_t drain_target;        /* 0: no one waits */
  size_t unwoken;             /* entries added to an idle queue, no one woken yet */
  zw_entry *head, *tail;      /* entries not yet written, in order */
  zw_entry *work;             /* the next entry for a worker (NULL: none yet) */
  int input_end;              /* no more entries will come */
  size_t consumed;            /* entries written (the head's index) */
  uint64_t spool_limit;       /* workers wait while this much spool is unconsumed */
  uint64_t mem_limit;         /* in-memory spools (or queued chunks) in all */
  uint64_t queued;            /* bytes of chunks allocated (lock) */
  zw_chunk *spare;            /* chunk buffers for reuse (lock) */
  size_t nspare;
  /* Spools of SPOOL_MIN bytes for reuse (lock): a small entry's spool is
   * made by a worker and freed by the archive's writer, and a heap that
   * small gets trimmed, then grown again, each time (page faults). */
  void *pool;
  size_t npool;
  atomic_uint_fast64_t spooled, spool_mem;
  pthread_t finisher;
  int has_finisher;

  /* the archive file (the finishing thread) */
  chb_store *store;           /* where the archive is created and committed */
  chb_sink *out;              /* tmp_path, created and locked by run_finish */
  chb_zipc *zc;               /* the container written to it */
  unsigned char *rbuf;        /* reads of spool files */
};

/* Wakes every waiter (a stop, the end of the input); lock held. */
static void wake_all_locked(chb_zip_writer *w) {
  pthread_cond_broadcast(&w->cond);
  pthread_cond_broadcast(&w->work_cond);
  pthread_cond_broadcast(&w->drained);
}

/* Records the first failure and stops everything (workers, the archive's writer). */
static void w_fail(chb_zip_writer *w, const chb_error *e) {
  chb_run_fail(&w->run, e);
  pthread_mutex_lock(&w->lock);   /* waiters on cond check the stop flag under it */
  wake_all_locked(w);
  pthread_mutex_unlock(&w->lock);
}

static void chunk_free_locked(chb_zip_writer *w, zw_chunk *c);

/* Drops what an entry's worker made and the archive has not taken. */
static void spool_drop(zw_entry *e) {
  if (e->w && e->q_head) {
    pthread_mutex_lock(&e->w->lock);
    while (e->q_head) {
      zw_chunk *c = e->q_head;
      e->q_head = c->next;
      chunk_free_locked(e->w, c);
    }
    e->q_tail = NULL;
    e->q_len = 0;
    pthread_cond_broadcast(&e->w->cond);
    pthread_mutex_unlock(&e->w->lock);
  }
  if (e->w) {
    atomic_fetch_sub(&e->w->spool_mem, (uint64_t)e->mem_len);
    atomic_fetch_sub(&e->w->spooled, e->spool_acct);
  }
  e->spool_acct = 0;
  if (e->w && e->mem && e->mem_cap == SPOOL_MIN) {
    pthread_mutex_lock(&e->w->lock);
    if (e->w->npool < SPOOL_POOL) {
      *(void **)e->mem = e->w->pool;
      e->w->pool = e->mem;
      e->w->npool++;
      e->mem = NULL;
    }
    pthread_mutex_unlock(&e->w->lock);
  }
  free(e->mem);
  e->mem = NULL;
  e->mem_len = e->mem_cap = 0;
  if (e->fd >= 0) close(e->fd);
  e->fd = -1;
  if (e->spool_path) unlink(e->spool_path);
  free(e->spool_path);
  e->spool_path = NULL;
}

static void entry_free(zw_entry *e) {
  if (!e) return;
  spool_drop(e);
  chb_pieces_free(e->pieces, e->npieces);
  free(e->bytes);
  free(e->name);
  free(e);
}

static int spool_write(chb_zip_writer *w, zw_entry *e, const unsigned char *p, size_t n,
                       chb_error *err) {
  e->comp_len += n;
  e->spool_acct += n;
  atomic_fetch_add(&w->spooled, (uint64_t)n);
  if (e->fd < 0 && e->mem_len + n <= w->bufsize &&
      atomic_load(&w->spool_mem) + n <= w->mem_limit) {
    if (!e->mem && e->mem_len + n <= SPOOL_MIN) {
      pthread_mutex_lock(&w->lock);
      if ((e->mem = w->pool)) {
        w->pool = *(void **)e->mem;
        w->npool--;
        e->mem_cap = SPOOL_MIN;
      }
      pthread_mutex_unlock(&w->lock);
    }
    if (e->mem_len + n > e->mem_cap) {
      size_t cap = e->mem_cap ? e->mem_cap : SPOOL_MIN;
      while (cap < e->mem_len + n) cap *= 2;
      if (cap > w->bufsize) cap = w->bufsize;
      unsigned char *m = realloc(e->mem, cap);
      if (!m) return chb_error_set(err, CHB_ENOMEM, "cannot grow the spool of %s", e->name);
      e->mem = m;
      e->mem_cap = cap;
    }
    memcpy(e->mem + e->mem_len, p, n);
    e->mem_len += n;
    atomic_fetch_add(&w->spool_mem, (uint64_t)n);
    return 0;
  }
  if (e->fd < 0) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%zu", w->spool_dir, e->index);
    if (!(e->spool_path = strdup(buf)))
      return chb_error_set(err, CHB_ENOMEM, "cannot name the spool of %s", e->name);
    e->fd = open(buf, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (e->fd < 0) return chb_error_errno(err, errno, "cannot create spool file", buf);
    if (e->mem_len && chb_fs_write_all(e->fd, e->mem, e->mem_len) != 0)
      return chb_error_errno(err, errno, "cannot write spool file", buf);
    atomic_fetch_sub(&w->spool_mem, (uint64_t)e->mem_len);
    free(e->mem);
    e->mem = NULL;
    e->mem_len = e->mem_cap = 0;
  }
  if (chb_fs_write_all(e->fd, p, n) != 0)
    return chb_error_errno(err, errno, "cannot write spool file", e->spool_path);
  return 0;
}

static const char *entry_src_name(const zw_entry *e) {
  return e->from_bytes || e->npieces == 0 ? e->name : e->pieces[e->npieces - 1].path;
}

/* Size and checksum the caller announced, against what was read. */
static int check_expected(const zw_entry *e, chb_error *err) {
  if (e->expect_size >= 0 && e->size != (uint64_t)e->expect_size)
    return chb_error_set(err, CHB_CORRUPT, "size mismatch for %s: expected %lld bytes, read %llu",
                         entry_src_name(e), (long long)e->expect_size,
                         (unsigned long long)e->size);
  if (e->has_hash && (e->hash.lo != e->expect_hash.lo || e->hash.hi != e->expect_hash.hi)) {
    char want[33], got[33];
    chb_u128_to_hex(e->expect_hash, want);
    chb_u128_to_hex(e->hash, got);
    return chb_error_set(err, CHB_CORRUPT, "checksum mismatch for %s: expected %s, got %s",
                         entry_src_name(e), want, got);
  }
  return 0;
}

/*
 * Worker: reads, hashes, compresses, encrypts one entry into its spool. An
 * empty file is stored, not compressed: an empty xz stream, for one, upsets
 * 7-Zip ("data after the end of the payload").
 */
static int compress_entry(chb_zip_writer *w, zw_entry *e, unsigned char *in, unsigned char *out,
                          chb_codec **kept, chb_error *err) {
  int rc = -1;
  uint64_t hint = UINT64_MAX;
  int exact = e->expect_size >= 0;
  chb_codec *codec = NULL;
  chb_aes *aes = NULL;
  esrc ps;
  if (esrc_open(&ps, e, err) != 0) return -1;
  if (exact) hint = (uint64_t)e->expect_size;
  else if (esrc_size(&ps, &hint, err) != 0) hint = UINT64_MAX; /* only a hint */
  chb_hash h;
  chb_hash_init(&h);
  uint32_t crc = 0;
  e->comp_len = 0;
  e->stored = 0;
  for (int finish = 0, ended = 0, first = 1; !ended;) {
    if (chb_run_stopped(&w->run)) {
      chb_error_set(err, CHB_CANCELLED, "cancelled while compressing %s", e->name);
      goto done;
    }
    ssize_t n = esrc_read(&ps, in, w->bufsize, err);
    if (n < 0) goto done;
    finish = n == 0;
    if (first) {
      first = 0;
      if (w->password) {
        unsigned char hdr[CHB_AES_SALT_MAX + CHB_AES_PV_LEN];
        aes = chb_aes_encrypter(AES_STRENGTH, w->password, strlen(w->password), hdr, err);
        if (!aes || spool_write(w, e, hdr, chb_aes_salt_len(AES_STRENGTH) + CHB_AES_PV_LEN, err) != 0)
          goto done;
      }
      if (finish) {
        e->stored = 1;
        break;
      }
      /* The worker's encoder of its last entry, reset, if the method allows. */
      codec = *kept;
      *kept = NULL;
      int r = codec ? chb_codec_reset(codec, hint, exact, err) : 1;
      if (r < 0) goto done;
      if (r > 0) {
        chb_codec_free(codec);
        if (!(codec = chb_codec_encoder(w->codec->id, w->level, hint, exact, err))) goto done;
      }
    }
    if (finish && exact && h.total != hint) {
      e->size = h.total;      /* before the codec sees the end: a clear message */
      e->hash = chb_hash_peek(&h);
      check_expected(e, err);
      goto done;
    }
    chb_hash_update(&h, in, (size_t)n);
    if (exact && h.total > hint) {
      e->size = h.total;
      e->hash = chb_hash_peek(&h);
      check_expected(e, err);
      goto done;
    }
    crc = libdeflate_crc32(crc, in, (size_t)n);
    atomic_fetch_add(&w->run.bytes_done, (uint64_t)n);
    const unsigned char *ip = in;
    size_t il = (size_t)n;
    do {
      unsigned char *op = out;
      size_t ol = w->bufsize;
      int r = chb_codec_run(codec, &ip, &il, &op, &ol, finish, err);
      if (r < 0) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        chb_error_set(err, err->code, "cannot compress %s: %s", e->name, msg);
        goto done;
      }
      size_t made = w->bufsize - ol;
      if (made && aes && chb_aes_encrypt(aes, out, made, err) != 0) goto done;
      if (made && spool_write(w, e, out, made, err) != 0) goto done;
      if (r == 1) ended = 1;
      if (!made && il == 0 && !finish) break;
    } while (il > 0 || (finish && !ended));
  }
  e->size = h.total;
  e->hash = chb_hash_peek(&h);
  if (check_expected(e, err) != 0) goto done;
  e->crc = aes ? 0 : crc;     /* AE-2: the MAC, not the CRC, protects the data */
  if (aes) {
    unsigned char mac[CHB_AES_MAC_LEN];
    if (chb_aes_mac(aes, mac, err) != 0 || spool_write(w, e, mac, sizeof mac, err) != 0)
      goto done;
  }
  rc = 0;
done:
  esrc_close(&ps);
  if (rc == 0 && codec) *kept = codec;  /* for the worker's next entry */
  else chb_codec_free(codec);
  chb_aes_free(aes);
  if (rc != 0) spool_drop(e);
  return rc;
}

/* ---- stored entries: worker -> chunk queue -> archive -------------------- */

/* Gives a chunk buffer back (writer's lock held). */
static void chunk_free_locked(chb_zip_writer *w, zw_chunk *c) {
  w->queued -= c->cap;
  if (w->nspare < SPARE_CHUNKS && c->cap >= w->bufsize) {
    c->next = w->spare;
    w->spare = c;
    w->nspare++;
  } else {
    free(c);
  }
  pthread_cond_broadcast(&w->cond);
}

/*
 * A chunk of at least `cap` bytes for entry e, once e's queue has room and
 * the chunks in all stay within mem_limit. The entry copied now (or
 * next) is never held back by the others' chunks: it alone makes progress
 * possible. NULL if stopped.
 */
static zw_chunk *chunk_get(chb_zip_writer *w, zw_entry *e, size_t cap, chb_error *err) {
  zw_chunk *c = NULL;
  size_t full = w->bufsize + CHB_AES_SALT_MAX + CHB_AES_PV_LEN + CHB_AES_MAC_LEN;
  if (cap < full && cap > full / 2) cap = full;  /* reusable */
  pthread_mutex_lock(&w->lock);
  while (!chb_run_stopped(&w->run) &&
         (e->q_len >= STREAM_QUEUE ||
          (e->index != w->consumed && w->queued + cap > w->mem_limit)))
    pthread_cond_wait(&w->cond, &w->lock);
  if (chb_run_stopped(&w->run)) {
    pthread_mutex_unlock(&w->lock);
    chb_error_set(err, CHB_CANCELLED, "cancelled while reading %s", e->name);
    return NULL;
  }
  if (w->spare && w->spare->cap >= cap) {
    c = w->spare;
    w->spare = c->next;
    w->nspare--;
    cap = c->cap;
  }
  w->queued += cap;
  pthread_mutex_unlock(&w->lock);
  if (!c && (c = malloc(sizeof *c + cap))) c->cap = cap;
  if (!c) {
    pthread_mutex_lock(&w->lock);
    w->queued -= cap;
    pthread_mutex_unlock(&w->lock);
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a buffer for %s", e->name);
    return NULL;
  }
  c->next = NULL;
  c->len = 0;
  return c;
}

static void chunk_push(chb_zip_writer *w, zw_entry *e, zw_chunk *c, int last) {
  pthread_mutex_lock(&w->lock);
  if (e->q_tail) e->q_tail->next = c;
  else e->q_head = c;
  e->q_tail = c;
  e->q_len++;
  e->q_end = last;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

/*
 * Worker, stored entries: reads an entry, hashes it and checksums it (its
 * CRC-32, or with a password its AES encryption and MAC, key derived here
 * too) chunk by chunk into its queue, which the archive's writer drains on the
 * finishing thread. That thread is left to copying: the hashing and the
 * cryptography of different entries run on the workers, in parallel.
 * The declared size is checked: a source that grew or shrank fails.
 */
static int stream_entry(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  int rc = -1;
  chb_aes *aes = NULL;
  zw_chunk *c = NULL;
  unsigned char hdr[CHB_AES_SALT_MAX + CHB_AES_PV_LEN];
  size_t hdr_len = 0, mac_len = 0;
  esrc ps;
  if (esrc_open(&ps, e, err) != 0) return -1;
  chb_hash h;
  chb_hash_init(&h);
  uint32_t crc = 0;
  if (!e->size_known) {
    uint64_t n;
    if (esrc_size(&ps, &n, err) != 0) goto done;
    pthread_mutex_lock(&w->lock);
    e->direct_size = n;
    e->size_known = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
  }
  if (w->password) {
    aes = chb_aes_encrypter(AES_STRENGTH, w->password, strlen(w->password), hdr, err);
    if (!aes) goto done;
    hdr_len = chb_aes_salt_len(AES_STRENGTH) + CHB_AES_PV_LEN;
    mac_len = CHB_AES_MAC_LEN;
  }
  for (int last = 0; !last;) {
    uint64_t left = e->direct_size - h.total;
    size_t want = left < w->bufsize ? (size_t)left : w->bufsize, got = 0;
    if (!(c = chunk_get(w, e, hdr_len + want + mac_len, err))) goto done;
    memcpy(c->data, hdr, hdr_len);
    unsigned char *d = c->data + hdr_len;
    hdr_len = 0;
    while (got < want) {
      ssize_t n = esrc_read(&ps, d + got, want - got, err);
      if (n < 0) goto done;
      if (n == 0) break;
      got += (size_t)n;
    }
    chb_hash_update(&h, d, got);
    if (aes && chb_aes_encrypt(aes, d, got, err) != 0) goto done;
    if (!aes) crc = libdeflate_crc32(crc, d, got);
    atomic_fetch_add(&w->run.bytes_done, (uint64_t)got);
    c->len = (size_t)(d - c->data) + got;
    last = got < want || got == left;
    if (last) {
      unsigned char extra;
      ssize_t x = got < want ? 0 : esrc_read(&ps, &extra, 1, err);
      if (x < 0) goto done;
      e->size = h.total + (uint64_t)x;
      e->hash = chb_hash_peek(&h);
      if (check_expected(e, err) != 0) goto done;
      if (e->size != e->direct_size) {
        chb_error_set(err, CHB_CORRUPT, "size of %s changed while writing it (%llu bytes, %s)",
                      entry_src_name(e), (unsigned long long)e->direct_size,
                      x ? "it grew" : "now fewer");
        goto done;
      }
      e->crc = crc;           /* AE-2: 0, the MAC protects the data */
      if (aes && chb_aes_mac(aes, c->data + c->len, err) != 0) goto done;
      c->len += mac_len;
    }
    chunk_push(w, e, c, last);
    c = NULL;
  }
  rc = 0;
done:
  if (c) {
    pthread_mutex_lock(&w->lock);
    chunk_free_locked(w, c);
    pthread_mutex_unlock(&w->lock);
  }
  esrc_close(&ps);
  chb_aes_free(aes);
  return rc;
}

static void *compress_worker(void *arg) {
  chb_zip_writer *w = arg;
  chb_error err;
  chb_error_clear(&err);
  /* Stored entries read straight into their chunks: only compression needs these. */
  int compressing = w->codec->id != CHB_CODEC_STORE;
  unsigned char *in = compressing ? malloc(w->bufsize) : NULL;
  unsigned char *out = compressing ? malloc(w->bufsize) : NULL;
  int ready = !compressing || (in && out);
  chb_codec *kept = NULL;     /* the encoder of the last entry, reused */
  if (!ready) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate compression buffers");
    w_fail(w, &err);
  }
  pthread_mutex_lock(&w->lock);
  while (ready) {
    if (chb_run_stopped(&w->run)) break;
    zw_entry *e = w->work;
    if (!e) {                 /* idle: woken by adds, not by every entry written */
      if (w->input_end) break;
      pthread_cond_wait(&w->work_cond, &w->lock);
      continue;
    }
    /* Bounded look-ahead: by bytes spooled (a big file at the head must not
     * stall the other workers after a few entries), and by entry count.
     * Stored entries are bounded by their chunks (chunk_get). */
    if (e->index - w->consumed >= MAX_AHEAD ||
        (!e->direct && atomic_load(&w->spooled) >= w->spool_limit)) {
      pthread_cond_wait(&w->cond, &w->lock);
      continue;
    }
    w->work = e->next;
    e->state = E_WORKING;
    pthread_mutex_unlock(&w->lock);
    int rc = e->direct ? stream_entry(w, e, &err) : compress_entry(w, e, in, out, &kept, &err);
    if (rc != 0) w_fail(w, &err);
    pthread_mutex_lock(&w->lock);
    if (rc != 0) break;
    e->state = E_READY;
    pthread_cond_broadcast(&w->cond);
  }
  pthread_mutex_unlock(&w->lock);
  chb_codec_free(kept);
  free(in);
  free(out);
  return NULL;
}


/* ---- the archive: entries written in order by the finishing thread ------ */

/* Prefixes an error with the entry it happened in (when not already named). */
static int entry_fail(const zw_entry *e, chb_error *err) {
  if (!strstr(err->msg, e->name)) {
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    chb_error_set(err, err->code, "entry %s: %s", e->name, msg);
  }
  return -1;
}

static int stopped_while(const zw_entry *e, chb_error *err) {
  return chb_error_set(err, CHB_CANCELLED, "cancelled while writing %s", e->name);
}

/* A compressed (or empty) entry's spool, copied into the archive. */
static int copy_spool(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  if (e->fd < 0) return e->mem_len ? chb_zipc_write(w->zc, e->mem, e->mem_len, err) : 0;
  for (uint64_t pos = 0; pos < e->comp_len;) {
    if (chb_run_stopped(&w->run)) return stopped_while(e, err);
    uint64_t left = e->comp_len - pos;
    size_t n = left < w->bufsize ? (size_t)left : w->bufsize;
    ssize_t k = pread(e->fd, w->rbuf, n, (off_t)pos);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return chb_error_errno(err, k < 0 ? errno : EIO, "cannot read spool file", e->spool_path);
    if (chb_zipc_write(w->zc, w->rbuf, (size_t)k, err) != 0) return -1;
    pos += (uint64_t)k;
  }
  return 0;
}

/* A stored entry's chunks, copied as its worker makes them. */
static int copy_chunks(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while (!e->q_head && !e->q_end && !chb_run_stopped(&w->run)) pthread_cond_wait(&w->cond, &w->lock);
    zw_chunk *c = e->q_head;
    if (chb_run_stopped(&w->run)) break;
    if (!c) {                 /* the end; its worker sets READY next (e->crc is final) */
      while (e->state != E_READY && !chb_run_stopped(&w->run)) pthread_cond_wait(&w->cond, &w->lock);
      if (e->state != E_READY) break;
      pthread_mutex_unlock(&w->lock);
      return 0;
    }
    e->q_head = c->next;
    if (!e->q_head) e->q_tail = NULL;
    e->q_len--;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    int rc = c->len ? chb_zipc_write(w->zc, c->data, c->len, err) : 0;
    pthread_mutex_lock(&w->lock);
    chunk_free_locked(w, c);
    if (rc != 0) {
      pthread_mutex_unlock(&w->lock);
      return -1;
    }
  }
  pthread_mutex_unlock(&w->lock);
  return stopped_while(e, err);
}

/*
 * One entry: once a worker has made it ready (a stored entry: once its size
 * is known), its local header, its data, its central record.
 */
static int write_entry(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  pthread_mutex_lock(&w->lock);
  while (!(e->direct ? e->size_known : e->state == E_READY) && !chb_run_stopped(&w->run))
    pthread_cond_wait(&w->cond, &w->lock);
  int ready = !chb_run_stopped(&w->run);
  pthread_mutex_unlock(&w->lock);
  if (!ready) return stopped_while(e, err);
  chb_zipc_entry ze = {.name = e->name, .aes = w->password ? AES_STRENGTH : 0};
  if (e->direct) {
    ze.size = e->direct_size;
    ze.comp_size = e->direct_size + (w->password ? chb_aes_overhead(AES_STRENGTH) : 0);
  } else {
    ze.method = e->stored ? CHB_CODEC_STORE : (uint16_t)w->codec->id;
    /* LZMA streams end with an end marker: general purpose bit 1 says so. */
    if (w->codec->id == CHB_CODEC_LZMA && !e->stored) ze.flags = 0x0002;
    ze.size = e->size;
    ze.comp_size = e->comp_len;
    ze.crc = e->crc;
  }
  if (chb_zipc_entry_begin(w->zc, &ze, err) != 0) return entry_fail(e, err);
  if ((e->direct ? copy_chunks(w, e, err) : copy_spool(w, e, err)) != 0) return entry_fail(e, err);
  ze.crc = e->crc;            /* stored: checksummed while it was copied */
  if (chb_zipc_entry_end(w->zc, &ze, err) != 0) return entry_fail(e, err);
  return 0;
}

/* Writes the queue's entries as they come, frees each once written. */
static int write_entries(chb_zip_writer *w, chb_error *err) {
  for (;;) {
    pthread_mutex_lock(&w->lock);
    while (!w->head && !w->input_end && !chb_run_stopped(&w->run)) pthread_cond_wait(&w->cond, &w->lock);
    zw_entry *e = w->head;
    int stopped = chb_run_stopped(&w->run);
    pthread_mutex_unlock(&w->lock);
    if (stopped) return chb_error_set(err, CHB_CANCELLED, "cancelled");
    if (!e) return 0;
    if (write_entry(w, e, err) != 0) return -1;
    if (w->results) w->results[e->index] = (zw_result){e->size, e->hash};
    atomic_fetch_add(&w->run.files_done, 1);  /* before drained: progress agrees */
    pthread_mutex_lock(&w->lock);
    w->head = e->next;
    if (!w->head) w->tail = NULL;
    w->consumed = e->index + 1;
    pthread_cond_broadcast(&w->cond);
    if (w->drain_target && w->consumed >= w->drain_target) pthread_cond_broadcast(&w->drained);
    pthread_mutex_unlock(&w->lock);
    entry_free(e);
  }
}

/* ---- the writer --------------------------------------------------------- */

chb_zip_writer *chb_zip_writer_new(const char *path, const chb_zip_writer_opts *opts,
                                   chb_error *err) {
  const chb_codec_info *codec;
  int level;
  if (chb_codec_resolve(opts->method, opts->has_level, opts->level, &codec, &level, err) != 0)
    return NULL;
  chb_zip_writer *w = calloc(1, sizeof *w);
  chb_store *store = w ? chb_store_dir_open(NULL, err) : NULL;
  if (!store) {
    free(w);
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a zip writer");
    return NULL;
  }
  uint64_t size;
  chb_error absent;
  if (chb_store_stat(store, path, &size, &absent) == 0) {
    chb_store_close(store);
    free(w);
    chb_error_set(err, CHB_EEXIST, "cannot create zip archive %s: it exists", path);
    return NULL;
  }
  w->store = store;
  chb_run_init(&w->run);
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  pthread_cond_init(&w->drained, NULL);
  pthread_cond_init(&w->work_cond, NULL);
  w->codec = codec;
  w->level = level;
  w->threads = opts->threads;
  if (w->threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    w->threads = n > 0 ? (int)n : 1;
  }
  if (w->threads > 64) w->threads = 64;
  w->spool_limit = opts->spool_limit ? opts->spool_limit : (uint64_t)1 << 30;
  w->bufsize = opts->buffer_size ? opts->buffer_size : (size_t)1 << 20;
  if (w->bufsize < 4096) w->bufsize = 4096;
  w->fsync = opts->fsync;
  w->mtime = time(NULL);
  w->mem_limit = (uint64_t)w->bufsize * (uint64_t)(w->threads * 2 + 2);
  size_t plen = strlen(path) + 64;
  w->path = strdup(path);
  w->tmp_path = malloc(plen);
  w->spool_dir = malloc(plen);
  int oom = !w->path || !w->tmp_path || !w->spool_dir;
  if (opts->password && *opts->password) w->password = chb_zip_dup(opts->password, &oom);
  if (oom) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a zip writer");
    chb_zip_writer_free(w);
    return NULL;
  }
  snprintf(w->tmp_path, plen, "%s.tmp-%ld", path, (long)getpid());
  snprintf(w->spool_dir, plen, "%s.spool", w->tmp_path);
  return w;
}

size_t chb_zip_writer_count(const chb_zip_writer *w) { return w->count; }

/* Valid UTF-8 (what the UTF-8 flag promises readers; libzip refused others). */
static int utf8_ok(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p;) {
    unsigned c = *p;
    int n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
    if (n < 0 || (n == 1 && c < 0xc2)) return 0;
    p++;
    for (int i = 0; i < n; i++, p++)
      if ((*p & 0xc0) != 0x80) return 0;
  }
  return 1;
}

static uint64_t name_hash(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* Batch mode: 1 if the name is new (and now known), 0 if added before, -1 out of memory. */
static int name_insert(chb_zip_writer *w, zw_entry *e) {
  if ((w->count + 1) * 2 > w->names_cap) {
    size_t cap = w->names_cap ? w->names_cap * 2 : 256;
    zw_entry **t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t i = 0; i < w->names_cap; i++) {
      zw_entry *o = w->names[i];
      if (!o) continue;
      size_t k = (size_t)name_hash(o->name) & (cap - 1);
      while (t[k]) k = (k + 1) & (cap - 1);
      t[k] = o;
    }
    free(w->names);
    w->names = t;
    w->names_cap = cap;
  }
  size_t k = (size_t)name_hash(e->name) & (w->names_cap - 1);
  for (; w->names[k]; k = (k + 1) & (w->names_cap - 1))
    if (strcmp(w->names[k]->name, e->name) == 0) return 0;
  w->names[k] = e;
  return 1;
}

static void wake_locked(chb_zip_writer *w) {
  w->unwoken = 0;
  pthread_cond_broadcast(&w->cond);
  pthread_cond_broadcast(&w->work_cond);
}

static long add_entry(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  int open_;
  pthread_mutex_lock(&w->lock);
  open_ = w->streaming ? !w->input_end : chb_run_get_state(&w->run) == CHB_RUN_NEW;
  pthread_mutex_unlock(&w->lock);
  if (w->streaming && chb_run_stopped(&w->run)) {   /* failed or cancelled: its error */
    pthread_mutex_lock(&w->run.lock);
    int failed = w->run.error.code != CHB_OK;
    if (failed) *err = w->run.error;
    pthread_mutex_unlock(&w->run.lock);
    if (!failed && open_) chb_error_set(err, CHB_CANCELLED, "zip archive %s: cancelled", w->path);
    if (failed || open_) {
      entry_free(e);
      return -1;
    }
  }
  if (!open_) {
    entry_free(e);
    chb_error_set(err, CHB_INVALID, "cannot add to a zip writer that has started");
    return -1;
  }
  if (!chb_zip_name_ok(e->name) || !utf8_ok(e->name) || strlen(e->name) > 0xffff) {
    chb_error_set(err, CHB_INVALID, "bad entry name '%s' for zip archive %s "
                  "(must be relative UTF-8, without '..' or '\\')", e->name, w->path);
    entry_free(e);
    return -1;
  }
  if (!w->streaming) {
    int r = name_insert(w, e);
    if (r <= 0) {
      if (r == 0) chb_error_set(err, CHB_EEXIST, "entry %s added twice to zip archive %s", e->name, w->path);
      else chb_error_set(err, CHB_ENOMEM, "cannot grow the zip writer's name set");
      entry_free(e);
      return -1;
    }
  }
  e->w = w;
  e->direct = w->codec->id == CHB_CODEC_STORE;
  if (e->expect_size > 0) w->bytes_total += (uint64_t)e->expect_size;
  pthread_mutex_lock(&w->lock);
  size_t index = e->index = w->count++;
  /* Only a worker without work or the archive's writer without an entry
   * waits for one, and adds come by the thousand: those are woken once
   * WAKE_BATCH entries wait for them, or by wait_drained or start. */
  if (w->unwoken || !w->work || !w->head) w->unwoken++;
  if (w->tail) w->tail->next = e;
  else w->head = e;
  w->tail = e;
  if (!w->work) w->work = e;
  if (w->unwoken >= WAKE_BATCH || !w->streaming) wake_locked(w);
  pthread_mutex_unlock(&w->lock);
  return (long)index;         /* e may be written and freed already */
}

long chb_zip_writer_add(chb_zip_writer *w, const char *name, const chb_piece *pieces,
                        size_t npieces, int64_t expect_size, const chb_u128 *expect_hash,
                        chb_error *err) {
  if (npieces == 0) {
    chb_error_set(err, CHB_INVALID, "entry %s needs at least one source", name);
    return -1;
  }
  if (chb_pieces_check(pieces, npieces, err) != 0) return -1;
  zw_entry *e = entry_new();
  int oom = !e;
  if (e) {
    e->name = chb_zip_dup(name, &oom);
    chb_error ignored;
    if (!oom && (e->pieces = chb_pieces_copy(pieces, npieces, &ignored))) e->npieces = npieces;
    oom |= !e->pieces;
  }
  if (oom) {
    entry_free(e);
    chb_error_set(err, CHB_ENOMEM, "cannot copy entry %s", name);
    return -1;
  }
  e->expect_size = expect_size;
  if (expect_hash) {
    e->has_hash = 1;
    e->expect_hash = *expect_hash;
  }
  if (expect_size >= 0) {
    e->direct_size = (uint64_t)expect_size;
    e->size_known = 1;
  }
  return add_entry(w, e, err);
}

long chb_zip_writer_add_bytes(chb_zip_writer *w, const char *name, const void *data,
                              size_t len, chb_error *err) {
  zw_entry *e = entry_new();
  int oom = !e;
  if (e) {
    e->name = chb_zip_dup(name, &oom);
    e->bytes = malloc(len ? len : 1);
    oom |= !e->bytes;
  }
  if (oom) {
    entry_free(e);
    chb_error_set(err, CHB_ENOMEM, "cannot copy entry %s", name);
    return -1;
  }
  if (len) memcpy(e->bytes, data, len);
  e->nbytes = len;
  e->from_bytes = 1;
  e->expect_size = (int64_t)len;
  e->direct_size = len;
  e->size_known = 1;
  return add_entry(w, e, err);
}

/*
 * The temporary archive, `path.tmp-<pid>`: created exclusively and held
 * under an exclusive flock(2) until it is renamed or removed, which is how
 * a later writer tells a live writer's file from one a killed run left.
 */
static int create_temporary(chb_zip_writer *w, chb_error *err) {
  chb_sink_opts o = {.mode = 0666, .lock = 1};  /* written at offsets (pwrite), never read */
  if (!(w->out = chb_store_open_write(w->store, w->tmp_path, &o, err))) return -1;
  return 0;
}

static void pool_free(chb_zip_writer *w) {
  while (w->pool) {
    void *p = w->pool;
    w->pool = *(void **)p;
    free(p);
  }
  w->npool = 0;
}

/* The finishing thread (or finish's caller): the whole run. */
static void run_finish(chb_zip_writer *w) {
  chb_error err;
  chb_error_clear(&err);
  pthread_t *workers = NULL;
  int nworkers = 0, ok = 0;
  int compressing = w->codec->id != CHB_CODEC_STORE;
  chb_store_remove_stale_temporaries(w->path); /* first: a killed run of ours may have had our pid */
  if (create_temporary(w, &err) != 0) goto fail;   /* parent directories made on demand */
  if (!(w->zc = chb_zipc_new(chb_sink_fd(w->out), w->tmp_path, w->mtime, w->bufsize, &err)))
    goto fail;
  pthread_mutex_lock(&w->lock);
  size_t count = w->count;
  int more = !w->input_end;
  pthread_mutex_unlock(&w->lock);
  /* rbuf: reads of spool files, which only compressed entries have */
  if (compressing && !(w->rbuf = malloc(w->bufsize))) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate a read buffer");
    goto fail;
  }
  if (compressing && (count || more)) {
    if (mkdir(w->spool_dir, 0700) != 0) {
      chb_error_errno(&err, errno, "cannot create spool directory", w->spool_dir);
      goto fail;
    }
    w->spool_dir_made = 1;
  }
  int n = w->threads;
  if (!more && (size_t)n > count) n = (int)count;
  if (n > 0 && !(workers = calloc((size_t)n, sizeof *workers))) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate threads");
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    int rc = pthread_create(&workers[i], NULL, compress_worker, w);
    if (rc != 0) {
      if (nworkers == 0) {
        chb_error_errno(&err, rc, "cannot start", "compression thread");
        goto fail;
      }
      break;
    }
    nworkers++;
  }
  if (write_entries(w, &err) != 0 || chb_zipc_finish(w->zc, &err) != 0 ||
      chb_sink_finish(w->out, w->fsync, &err) != 0)
    goto fail;
  ok = 1;
  goto out;
fail:
  w_fail(w, &err);            /* keeps an earlier, more precise error */
out:
  atomic_store(&w->run.stop, 1);
  pthread_mutex_lock(&w->lock);
  wake_all_locked(w);
  pthread_mutex_unlock(&w->lock);
  for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
  free(workers);
  pthread_mutex_lock(&w->lock);
  zw_entry *left = w->head;   /* not written: a failure, a cancel */
  w->head = w->tail = w->work = NULL;
  w->input_end = 1;
  pthread_mutex_unlock(&w->lock);
  while (left) {
    zw_entry *next = left->next;
    entry_free(left);
    left = next;
  }
  while (w->spare) {
    zw_chunk *c = w->spare;
    w->spare = c->next;
    free(c);
  }
  w->nspare = 0;
  pool_free(w);
  chb_zipc_free(w->zc);
  w->zc = NULL;
  free(w->rbuf);
  w->rbuf = NULL;
  if (w->spool_dir_made && rmdir(w->spool_dir) == 0) w->spool_dir_made = 0;
  chb_zip_cache_clear();      /* readers opened for zip sources on this thread */
  if (ok && chb_store_commit(w->store, w->tmp_path, w->path, &err) != 0) {
    w_fail(w, &err);
    ok = 0;
  }
  if (!ok) chb_sink_abort(w->out); /* still locked: no one else removes it */
  if (ok && chb_sink_close(w->out, &err) != 0) {
    w_fail(w, &err);
    ok = 0;
  }
  w->out = NULL;
  if (ok && w->fsync && chb_store_sync_dir(w->store, w->path, &err) != 0) {
    w_fail(w, &err);          /* the archive is in place; only durability failed */
    ok = 0;
  }
  chb_run_end(&w->run, ok);
}

static int begin(chb_zip_writer *w, chb_error *err) {
  chb_run_state was;
  if (chb_run_begin(&w->run, &was) != 0)
    return chb_error_set(err, CHB_INVALID, "zip writer already %s", chb_run_state_name(was));
  return 0;
}

/* Batch mode, all entries added: no more names to check; room for the results. */
static int begin_batch(chb_zip_writer *w, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  if (w->count && !(w->results = calloc(w->count, sizeof *w->results))) {
    chb_run_unbegin(&w->run);
    return chb_error_set(err, CHB_ENOMEM, "cannot allocate the zip writer's results");
  }
  free(w->names);
  w->names = NULL;
  w->names_cap = 0;
  pthread_mutex_lock(&w->lock);
  w->input_end = 1;
  pthread_mutex_unlock(&w->lock);
  return 0;
}

static void *finisher(void *arg) {
  run_finish(arg);
  return NULL;
}

static int start_thread(chb_zip_writer *w, chb_error *err) {
  int rc = pthread_create(&w->finisher, NULL, finisher, w);
  if (rc != 0) {
    chb_run_unbegin(&w->run);
    return chb_error_errno(err, rc, "cannot start", "zip writer thread");
  }
  w->has_finisher = 1;
  return 0;
}

int chb_zip_writer_begin(chb_zip_writer *w, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  free(w->names);             /* streaming: names are not kept (see the header) */
  w->names = NULL;
  w->names_cap = 0;
  w->streaming = 1;
  if (start_thread(w, err) != 0) {
    w->streaming = 0;
    return -1;
  }
  return 0;
}

/* Streaming: the end of the input. */
static int end_input(chb_zip_writer *w, chb_error *err) {
  pthread_mutex_lock(&w->lock);
  int was = w->input_end;
  w->input_end = 1;
  wake_all_locked(w);
  pthread_mutex_unlock(&w->lock);
  if (was && !chb_run_stopped(&w->run))
    return chb_error_set(err, CHB_INVALID, "zip writer already started");
  return 0;
}

int chb_zip_writer_finish(chb_zip_writer *w, chb_error *err) {
  if (w->streaming) {
    if (end_input(w, err) != 0) return -1;
    chb_zip_writer_wait(w, -1);
    return chb_zip_writer_result(w, err);
  }
  if (begin_batch(w, err) != 0) return -1;
  run_finish(w);
  return chb_zip_writer_result(w, err);
}

int chb_zip_writer_start(chb_zip_writer *w, chb_error *err) {
  if (w->streaming) return end_input(w, err);
  if (begin_batch(w, err) != 0) return -1;
  return start_thread(w, err);
}

chb_job_state chb_zip_writer_wait(chb_zip_writer *w, long timeout_ms) {
  return chb_run_wait(&w->run, timeout_ms);
}

chb_job_state chb_zip_writer_wait_drained(chb_zip_writer *w, long timeout_ms) {
  if (!w->streaming) return chb_run_get_state(&w->run);
  size_t target = w->count;   /* the adding thread's own count */
  struct timespec until = chb_deadline(timeout_ms > 0 ? timeout_ms : 0);
  pthread_mutex_lock(&w->lock);
  if (w->unwoken) wake_locked(w);
  w->drain_target = target;
  while (w->consumed < target && !chb_run_stopped(&w->run) && timeout_ms != 0) {
    if (timeout_ms < 0) pthread_cond_wait(&w->drained, &w->lock);
    else if (pthread_cond_timedwait(&w->drained, &w->lock, &until) == ETIMEDOUT) break;
  }
  w->drain_target = 0;
  int drained = w->consumed >= target;
  pthread_mutex_unlock(&w->lock);
  if (chb_run_stopped(&w->run)) {
    chb_run_state s = chb_run_wait(&w->run, timeout_ms);
    if (s == CHB_RUN_FAILED || s == CHB_RUN_CANCELLED) return s;
    if (s == CHB_RUN_DONE) return CHB_JOB_DONE;
    return CHB_JOB_RUNNING;   /* stopping: the next wait tells how it ended */
  }
  return drained ? CHB_JOB_DONE : CHB_JOB_RUNNING;
}

void chb_zip_writer_cancel(chb_zip_writer *w) {
  chb_run_cancel(&w->run);
  pthread_mutex_lock(&w->lock);   /* wakes workers and the archive's writer waiting on cond */
  wake_all_locked(w);
  pthread_mutex_unlock(&w->lock);
}

void chb_zip_writer_get_progress(chb_zip_writer *w, chb_job_progress *out) {
  chb_run_get_progress(&w->run, w->count, w->bytes_total, out);
}

int chb_zip_writer_result(chb_zip_writer *w, chb_error *err) {
  return chb_run_result(&w->run, "zip writer", err);
}

int chb_zip_writer_entry_result(chb_zip_writer *w, size_t i, uint64_t *size, chb_u128 *hash) {
  if (chb_run_get_state(&w->run) != CHB_RUN_DONE || !w->results || i >= w->count) return -1;
  *size = w->results[i].size;
  *hash = w->results[i].hash;
  return 0;
}

void chb_zip_writer_free(chb_zip_writer *w) {
  if (!w) return;
  if (w->has_finisher) {
    chb_zip_writer_cancel(w);
    pthread_join(w->finisher, NULL);
  }
  while (w->head) {           /* never started: nothing was written */
    zw_entry *e = w->head;
    w->head = e->next;
    entry_free(e);
  }
  pool_free(w);
  free(w->names);
  free(w->results);
  if (w->spool_dir_made) rmdir(w->spool_dir);
  chb_sink_abort(w->out);
  chb_zipc_free(w->zc);
  chb_store_close(w->store);
  free(w->rbuf);
  free(w->path);
  free(w->tmp_path);
  free(w->spool_dir);
  chb_zip_free_secret(w->password);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  pthread_cond_destroy(&w->drained);
  pthread_cond_destroy(&w->work_cond);
  chb_run_destroy(&w->run);
  free(w);
}
