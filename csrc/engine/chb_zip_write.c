/* Zip archives, the writing half; see chb_zip_write.h. */
#include "chb_zip_write.h"
#include "chb_aes.h"
#include "chb_codec.h"
#include "chb_fs.h"
#include "chb_store.h"
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
#include <zip.h>

#define AES_STRENGTH 3                  /* we write AES-256 */
#define MAX_AHEAD 4096                  /* writer: entries prepared ahead of libzip */
#define STREAM_QUEUE 4                  /* writer: chunks queued per stored entry */
#define SPARE_CHUNKS 8                  /* writer: chunk buffers kept for reuse */
/*
 * Stored data that libzip must copy as is: a store entry (its CRC, or its
 * encryption, done by a worker) and an empty file of a compressed method.
 * Their first stat reports this method, so that libzip neither wraps them
 * in a CRC layer (a second CRC pass on the finishing thread; with a
 * password it would count the ciphertext as the plain size) nor compresses
 * them (the default method means deflate); the stat after the data has
 * been read says STORE, and that is what both headers get (libzip rewrites
 * the local header after the data).
 */
#define CM_PLACEHOLDER 0xfffe

/* ---- entries ------------------------------------------------------------ */

typedef struct zw_entry zw_entry;

/* Bytes of a stored entry on their way from its worker to libzip. */
typedef struct zw_chunk {
  struct zw_chunk *next;
  size_t len, cap;
  unsigned char data[];
} zw_chunk;

struct zw_entry {
  chb_zip_writer *w;
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
  /* zip source state (the finishing thread) */
  zip_error_t zerr;
  uint64_t rd_pos;
  int src_done;               /* all data handed to libzip */
  int size_known;
  uint64_t direct_size;       /* direct: the size declared to libzip */
  zw_chunk *q_head, *q_tail;  /* direct: chunks made, not yet copied (writer's lock) */
  size_t q_len;
  int q_end;                  /* the last chunk is queued */
  zw_chunk *cur;              /* the chunk libzip is copying */
  int stored;                 /* spooled data is stored, not compressed (empty file) */
  const unsigned char *rb;    /* read-ahead for libzip's small reads: in the spool or w->rbuf */
  size_t rb_pos, rb_len;
  zw_entry *next_dead;        /* entries libzip refused late, freed with the writer */
};

enum { E_PENDING, E_WORKING, E_READY };

/* A blank entry, safe to free at any point. */
static zw_entry *entry_new(void) {
  zw_entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  e->fd = -1;
  zip_error_init(&e->zerr);
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

struct chb_zip_writer {
  char *path, *tmp_path, *spool_dir;
  const chb_codec_info *codec;
  int level;
  char *password;             /* NULL: no encryption */
  int threads;
  size_t bufsize;
  int fsync;
  time_t mtime;
  zip_t *za;
  zw_entry **e;
  size_t count, cap;
  zw_entry *dead;
  uint64_t bytes_total;
  int spool_dir_made;

  chb_run run;                /* state, stop flag, first error, progress */
  pthread_mutex_t lock;       /* entry states, next, consumed, queues */
  pthread_cond_t cond;        /* entry ready, spool consumed, stop */
  size_t next, consumed;      /* next entry to compress; entries libzip has copied */
  uint64_t spool_limit;       /* workers wait while this much spool is unconsumed */
  uint64_t mem_limit;         /* in-memory spools (or queued chunks) in all */
  uint64_t queued;            /* bytes of chunks allocated (lock) */
  zw_chunk *spare;            /* chunk buffers for reuse (lock) */
  size_t nspare;
  atomic_uint_fast64_t spooled, spool_mem;
  pthread_t finisher;
  int has_finisher;

  /* the archive file (libzip's destination source, the finishing thread) */
  chb_store *store;           /* where the archive is created and committed */
  chb_sink *out;              /* tmp_path, created and locked by run_finish */
  int out_fd;                 /* out's descriptor: libzip writes at offsets */
  int writing;                /* libzip has begun writing the archive */
  zip_error_t out_err;
  chb_error out_error;        /* what failed there, for w_fail */
  unsigned char *wbuf;        /* write-behind: libzip writes 8 KiB at a time */
  unsigned char *rbuf;        /* read-ahead of the entry libzip is copying */
  size_t wcap, wlen;
  uint64_t wbuf_off, wpos, wend, rpos;
};

/* Records the first failure and stops everything (workers, libzip's copy). */
static void w_fail(chb_zip_writer *w, const chb_error *e) {
  chb_run_fail(&w->run, e);
  pthread_mutex_lock(&w->lock);   /* waiters on cond check the stop flag under it */
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

static void chunk_free_locked(chb_zip_writer *w, zw_chunk *c);

/* Drops what an entry's worker made and libzip has not copied. */
static void spool_drop(zw_entry *e) {
  if (e->w && (e->q_head || e->cur)) {
    pthread_mutex_lock(&e->w->lock);
    if (e->cur) chunk_free_locked(e->w, e->cur);
    while (e->q_head) {
      zw_chunk *c = e->q_head;
      e->q_head = c->next;
      chunk_free_locked(e->w, c);
    }
    e->cur = e->q_tail = NULL;
    e->q_len = 0;
    pthread_cond_broadcast(&e->w->cond);
    pthread_mutex_unlock(&e->w->lock);
  }
  if (e->w) {
    atomic_fetch_sub(&e->w->spool_mem, (uint64_t)e->mem_len);
    atomic_fetch_sub(&e->w->spooled, e->spool_acct);
  }
  e->spool_acct = 0;
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
  zip_error_fini(&e->zerr);
  free(e);
}

static int spool_write(chb_zip_writer *w, zw_entry *e, const unsigned char *p, size_t n,
                       chb_error *err) {
  e->comp_len += n;
  e->spool_acct += n;
  atomic_fetch_add(&w->spooled, (uint64_t)n);
  if (e->fd < 0 && e->mem_len + n <= w->bufsize &&
      atomic_load(&w->spool_mem) + n <= w->mem_limit) {
    if (e->mem_len + n > e->mem_cap) {
      size_t cap = e->mem_cap ? e->mem_cap : 4096;
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
                          chb_error *err) {
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
      if (!(codec = chb_codec_encoder(w->codec->id, w->level, hint, exact, err))) goto done;
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
  chb_codec_free(codec);
  chb_aes_free(aes);
  if (rc != 0) spool_drop(e);
  return rc;
}

/* ---- stored entries: worker -> chunk queue -> libzip --------------------- */

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
 * the chunks in all stay within mem_limit. The entry libzip copies now (or
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
 * too) chunk by chunk into its queue, which libzip's copy drains on the
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
  if (!ready) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate compression buffers");
    w_fail(w, &err);
  }
  pthread_mutex_lock(&w->lock);
  while (ready) {
    if (chb_run_stopped(&w->run) || w->next >= w->count) break;
    /* Bounded look-ahead: by bytes spooled (a big file at the head must not
     * stall the other workers after a few entries), and by entry count.
     * Stored entries are bounded by their chunks (chunk_get). */
    zw_entry *e = w->e[w->next];
    if (w->next - w->consumed >= MAX_AHEAD ||
        (!e->direct && atomic_load(&w->spooled) >= w->spool_limit)) {
      pthread_cond_wait(&w->cond, &w->lock);
      continue;
    }
    w->next++;
    e->state = E_WORKING;
    pthread_mutex_unlock(&w->lock);
    int rc = e->direct ? stream_entry(w, e, &err) : compress_entry(w, e, in, out, &err);
    if (rc != 0) w_fail(w, &err);
    pthread_mutex_lock(&w->lock);
    if (rc != 0) break;
    e->state = E_READY;
    pthread_cond_broadcast(&w->cond);
  }
  pthread_mutex_unlock(&w->lock);
  free(in);
  free(out);
  return NULL;
}

/* Records a source failure for libzip (and the precise error for the caller). */
static zip_int64_t src_fail(zw_entry *e, const chb_error *err, int zip_code) {
  w_fail(e->w, err);
  zip_error_set(&e->zerr, zip_code, err->sys);
  return -1;
}

/*
 * Makes the next bytes libzip reads from an entry available in e->rb (at
 * most one buffer: libzip asks for 8 KiB at a time, the disk gets big
 * reads). Spooled entries: the spool. Direct (store) entries: the source
 * itself, hashed and checked, as plain bytes or header | ciphertext | MAC.
 * Returns 1 with bytes, 0 at the end, -1 on error (reported to libzip).
 */
static int entry_fill(zw_entry *e) {
  chb_zip_writer *w = e->w;
  chb_error err;
  e->rb_pos = e->rb_len = 0;
  if (chb_run_stopped(&w->run)) {
    chb_error_set(&err, CHB_CANCELLED, "cancelled while writing %s", e->name);
    return (int)src_fail(e, &err, ZIP_ER_CANCELLED);
  }
  if (!e->direct) {
    uint64_t left = e->comp_len - e->rd_pos;
    if (left == 0) return 0;
    if (e->fd < 0) {
      e->rb = e->mem + e->rd_pos;
      e->rb_len = (size_t)left;
    } else {
      size_t n = left < w->bufsize ? (size_t)left : w->bufsize;
      ssize_t k;
      do k = pread(e->fd, w->rbuf, n, (off_t)e->rd_pos);
      while (k < 0 && errno == EINTR);
      if (k <= 0) {
        chb_error_errno(&err, k < 0 ? errno : EIO, "cannot read spool file", e->spool_path);
        return (int)src_fail(e, &err, ZIP_ER_READ);
      }
      e->rb = w->rbuf;
      e->rb_len = (size_t)k;
    }
    e->rd_pos += e->rb_len;
    return 1;
  }
  /* Direct: the next chunk its worker queued. */
  pthread_mutex_lock(&w->lock);
  if (e->cur) chunk_free_locked(w, e->cur);
  e->cur = NULL;
  for (;;) {
    while (!e->q_head && !e->q_end && !chb_run_stopped(&w->run)) pthread_cond_wait(&w->cond, &w->lock);
    zw_chunk *c = e->q_head;
    if (chb_run_stopped(&w->run) || !c) break;
    e->q_head = c->next;
    if (!e->q_head) e->q_tail = NULL;
    e->q_len--;
    pthread_cond_broadcast(&w->cond);
    if (c->len == 0) {
      chunk_free_locked(w, c);
      continue;
    }
    e->cur = c;
    pthread_mutex_unlock(&w->lock);
    e->rb = c->data;
    e->rb_len = c->len;
    return 1;
  }
  pthread_mutex_unlock(&w->lock);
  if (!chb_run_stopped(&w->run)) return 0;
  chb_error_set(&err, CHB_CANCELLED, "cancelled while writing %s", e->name);
  return (int)src_fail(e, &err, ZIP_ER_CANCELLED);
}

/*
 * Waits until a worker has made the entry ready (a stored entry: until its
 * size is known); -1 (reported to libzip) if stopped.
 */
static int wait_ready(zw_entry *e) {
  chb_zip_writer *w = e->w;
  pthread_mutex_lock(&w->lock);
  while (!(e->direct ? e->size_known : e->state == E_READY) && !chb_run_stopped(&w->run))
    pthread_cond_wait(&w->cond, &w->lock);
  int ready = e->direct ? e->size_known : e->state == E_READY;
  pthread_mutex_unlock(&w->lock);
  if (ready) return 0;
  chb_error err;
  chb_error_set(&err, CHB_CANCELLED, "cancelled");
  return (int)src_fail(e, &err, ZIP_ER_CANCELLED);
}

static zip_int64_t entry_source(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
  zw_entry *e = ud;
  chb_zip_writer *w = e->w;
  switch (cmd) {
  case ZIP_SOURCE_SUPPORTS:
    return zip_source_make_command_bitmap(ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE,
                                          ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR, ZIP_SOURCE_FREE,
                                          ZIP_SOURCE_GET_FILE_ATTRIBUTES, -1);
  case ZIP_SOURCE_GET_FILE_ATTRIBUTES: {
    zip_file_attributes_t *a = ZIP_SOURCE_GET_ARGS(zip_file_attributes_t, data, len, &e->zerr);
    if (!a) return -1;
    /* LZMA streams end with an end marker: general purpose bit 1 says so. */
    if (w->codec->id == CHB_CODEC_LZMA && !e->stored && !e->direct) {
      a->valid |= ZIP_FILE_ATTRIBUTES_GENERAL_PURPOSE_BIT_FLAGS;
      a->general_purpose_bit_flags = 0x0002;
      a->general_purpose_bit_mask = 0x0002;
    }
    return 0;
  }
  case ZIP_SOURCE_STAT: {
    zip_stat_t *st = ZIP_SOURCE_GET_ARGS(zip_stat_t, data, len, &e->zerr);
    if (!st) return -1;
    zip_stat_init(st);
    st->mtime = w->mtime;
    st->valid = ZIP_STAT_MTIME | ZIP_STAT_SIZE | ZIP_STAT_COMP_METHOD | ZIP_STAT_ENCRYPTION_METHOD;
    st->encryption_method = w->password ? ZIP_EM_AES_256 : ZIP_EM_NONE;
    if (e->direct) {
      if (wait_ready(e) != 0) return -1;
      st->size = e->direct_size;
      st->comp_size = e->direct_size + (w->password ? chb_aes_overhead(AES_STRENGTH) : 0);
      st->comp_method = e->src_done ? ZIP_CM_STORE : CM_PLACEHOLDER;
      st->crc = e->src_done ? e->crc : 0;
      st->valid |= ZIP_STAT_COMP_SIZE | ZIP_STAT_CRC;
      return sizeof *st;
    }
    if (wait_ready(e) != 0) return -1;
    st->size = e->size;
    st->comp_size = e->comp_len;
    st->comp_method = (zip_uint16_t)w->codec->id;
    if (e->stored) st->comp_method = e->src_done ? ZIP_CM_STORE : CM_PLACEHOLDER;
    st->crc = e->crc;
    st->valid |= ZIP_STAT_COMP_SIZE | ZIP_STAT_CRC;
    return sizeof *st;
  }
  case ZIP_SOURCE_OPEN:
    e->rd_pos = 0;
    e->rb_pos = e->rb_len = 0;
    e->src_done = 0;
    return 0;
  case ZIP_SOURCE_READ: {
    unsigned char *out = data;
    size_t done = 0;
    while (done < len) {
      if (e->rb_pos == e->rb_len) {
        int r = e->src_done ? 0 : entry_fill(e);
        if (r < 0) return -1;
        if (r == 0) {
          e->src_done = 1;
          break;
        }
      }
      size_t n = e->rb_len - e->rb_pos;
      if (n > len - done) n = (size_t)(len - done);
      memcpy(out + done, e->rb + e->rb_pos, n);
      e->rb_pos += n;
      done += n;
    }
    return (zip_int64_t)done;
  }
  case ZIP_SOURCE_CLOSE:
    e->rb = NULL;
    e->rb_pos = e->rb_len = 0;
    if (e->src_done) {
      spool_drop(e);
      atomic_fetch_add(&w->run.files_done, 1);
      pthread_mutex_lock(&w->lock);
      w->consumed = e->index + 1;
      pthread_cond_broadcast(&w->cond);
      pthread_mutex_unlock(&w->lock);
    }
    return 0;
  case ZIP_SOURCE_ERROR:
    return zip_error_to_data(&e->zerr, data, len);
  case ZIP_SOURCE_FREE:
    return 0;
  default:
    zip_error_set(&e->zerr, ZIP_ER_OPNOTSUPP, 0);
    return -1;
  }
}

/* ---- the archive file: libzip's destination ---------------------------- */

static int pwrite_all(int fd, const unsigned char *p, size_t n, uint64_t off) {
  while (n > 0) {
    ssize_t k = pwrite(fd, p, n, (off_t)off);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
    off += (uint64_t)k;
  }
  return 0;
}

static zip_int64_t out_fail(chb_zip_writer *w, int zip_code, int errnum, const char *what) {
  chb_error err;
  chb_error_errno(&err, errnum, what, w->tmp_path);
  w_fail(w, &err);
  zip_error_set(&w->out_err, zip_code, errnum);
  return -1;
}

static int out_flush(chb_zip_writer *w) {
  if (w->wlen && pwrite_all(w->out_fd, w->wbuf, w->wlen, w->wbuf_off) != 0)
    return (int)out_fail(w, ZIP_ER_WRITE, errno, "cannot write");
  w->wlen = 0;
  return 0;
}

static zip_int64_t out_write(chb_zip_writer *w, const unsigned char *p, size_t n) {
  if (w->wlen && w->wpos == w->wbuf_off + w->wlen && w->wlen + n <= w->wcap) {
    memcpy(w->wbuf + w->wlen, p, n);          /* append */
    w->wlen += n;
  } else if (w->wlen && w->wpos >= w->wbuf_off && w->wpos + n <= w->wbuf_off + w->wlen) {
    memcpy(w->wbuf + (w->wpos - w->wbuf_off), p, n); /* a header rewritten in the buffer */
  } else {
    if (out_flush(w) != 0) return -1;
    if (n >= w->wcap) {
      if (pwrite_all(w->out_fd, p, n, w->wpos) != 0) return out_fail(w, ZIP_ER_WRITE, errno, "cannot write");
    } else {
      memcpy(w->wbuf, p, n);
      w->wbuf_off = w->wpos;
      w->wlen = n;
    }
  }
  w->wpos += n;
  if (w->wpos > w->wend) w->wend = w->wpos;
  return (zip_int64_t)n;
}

/*
 * The archive as libzip's destination: `path.tmp-<pid>` created exclusively
 * when libzip begins writing, written through a big buffer, fsynced on
 * commit if asked; the rename to `path` happens after zip_close.
 */
static zip_int64_t out_source(void *ud, void *data, zip_uint64_t len, zip_source_cmd_t cmd) {
  chb_zip_writer *w = ud;
  switch (cmd) {
  case ZIP_SOURCE_SUPPORTS:
    return zip_source_make_command_bitmap(
        ZIP_SOURCE_OPEN, ZIP_SOURCE_READ, ZIP_SOURCE_CLOSE, ZIP_SOURCE_STAT, ZIP_SOURCE_ERROR,
        ZIP_SOURCE_FREE, ZIP_SOURCE_SEEK, ZIP_SOURCE_TELL, ZIP_SOURCE_SUPPORTS,
        ZIP_SOURCE_BEGIN_WRITE, ZIP_SOURCE_COMMIT_WRITE, ZIP_SOURCE_ROLLBACK_WRITE,
        ZIP_SOURCE_WRITE, ZIP_SOURCE_SEEK_WRITE, ZIP_SOURCE_TELL_WRITE, ZIP_SOURCE_REMOVE, -1);
  case ZIP_SOURCE_STAT: {
    if (!w->writing) {        /* a new archive */
      zip_error_set(&w->out_err, ZIP_ER_READ, ENOENT);
      return -1;
    }
    zip_stat_t *st = ZIP_SOURCE_GET_ARGS(zip_stat_t, data, len, &w->out_err);
    if (!st) return -1;
    zip_stat_init(st);
    st->size = w->wend;
    st->valid = ZIP_STAT_SIZE;
    return sizeof *st;
  }
  case ZIP_SOURCE_OPEN:
    w->rpos = 0;
    return 0;
  case ZIP_SOURCE_READ: {
    if (w->out_fd < 0 || out_flush(w) != 0) return -1;
    ssize_t k;
    do k = pread(w->out_fd, data, len, (off_t)w->rpos);
    while (k < 0 && errno == EINTR);
    if (k < 0) return out_fail(w, ZIP_ER_READ, errno, "cannot read");
    w->rpos += (uint64_t)k;
    return k;
  }
  case ZIP_SOURCE_CLOSE:
    return 0;
  case ZIP_SOURCE_SEEK: {
    zip_int64_t off = zip_source_seek_compute_offset(w->rpos, w->wend, data, len, &w->out_err);
    if (off < 0) return -1;
    w->rpos = (uint64_t)off;
    return 0;
  }
  case ZIP_SOURCE_TELL:
    return (zip_int64_t)w->rpos;
  case ZIP_SOURCE_BEGIN_WRITE:
    w->wcap = w->bufsize;
    if (!w->wbuf && !(w->wbuf = malloc(w->wcap))) return out_fail(w, ZIP_ER_MEMORY, ENOMEM, "cannot write");
    if (w->out_fd < 0) return out_fail(w, ZIP_ER_OPEN, EBADF, "cannot write");
    w->writing = 1;
    w->wlen = w->wpos = w->wend = w->wbuf_off = 0;
    return 0;
  case ZIP_SOURCE_WRITE:
    return out_write(w, data, (size_t)len);
  case ZIP_SOURCE_SEEK_WRITE: {
    zip_int64_t off = zip_source_seek_compute_offset(w->wpos, w->wend, data, len, &w->out_err);
    if (off < 0) return -1;
    w->wpos = (uint64_t)off;
    return 0;
  }
  case ZIP_SOURCE_TELL_WRITE:
    return (zip_int64_t)w->wpos;
  case ZIP_SOURCE_COMMIT_WRITE:
    /* The file stays open, and locked, until it is renamed (run_finish). */
    if (out_flush(w) != 0) return -1;
    if (chb_sink_finish(w->out, w->fsync, &w->out_error) != 0) {
      w_fail(w, &w->out_error);
      zip_error_set(&w->out_err, ZIP_ER_WRITE, w->out_error.sys);
      return -1;
    }
    return 0;
  case ZIP_SOURCE_ROLLBACK_WRITE:
    return 0;                 /* run_finish removes the file */
  case ZIP_SOURCE_REMOVE:     /* an empty archive: written by run_finish */
    return 0;
  case ZIP_SOURCE_ERROR:
    return zip_error_to_data(&w->out_err, data, len);
  case ZIP_SOURCE_FREE:
    return 0;
  default:
    zip_error_set(&w->out_err, ZIP_ER_OPNOTSUPP, 0);
    return -1;
  }
}

chb_zip_writer *chb_zip_writer_new(const char *path, const chb_zip_writer_opts *opts,
                                   chb_error *err) {
  const chb_codec_info *codec;
  int level;
  if (chb_codec_resolve(opts->method, opts->has_level, opts->level, &codec, &level, err) != 0)
    return NULL;
  if (opts->password && *opts->password && !zip_encryption_method_supported(ZIP_EM_AES_256, 1)) {
    chb_error_set(err, CHB_INVALID, "cannot create zip archive %s: this libzip cannot mark "
                  "entries as AES-encrypted", path);
    return NULL;
  }
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
  w->out_fd = -1;
  zip_error_init(&w->out_err);
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
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t *out = zip_source_function_create(out_source, w, &ze);
  w->za = out ? zip_open_from_source(out, ZIP_CREATE, &ze) : NULL;
  if (!w->za) {
    zip_source_free(out);     /* on failure the caller keeps the source */
    chb_zip_fail(err, &ze, "cannot create zip archive", w->path);
    zip_error_fini(&ze);
    chb_zip_writer_free(w);
    return NULL;
  }
  zip_error_fini(&ze);
  return w;
}

size_t chb_zip_writer_count(const chb_zip_writer *w) { return w->count; }

static long add_entry(chb_zip_writer *w, zw_entry *e, chb_error *err) {
  if (chb_run_get_state(&w->run) != CHB_RUN_NEW) {
    entry_free(e);
    chb_error_set(err, CHB_INVALID, "cannot add to a zip writer that has started");
    return -1;
  }
  if (!chb_zip_name_ok(e->name)) {
    chb_error_set(err, CHB_INVALID, "bad entry name '%s' for zip archive %s "
                  "(must be relative, without '..' or '\\')", e->name, w->path);
    entry_free(e);
    return -1;
  }
  if (w->count == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    zw_entry **grown = realloc(w->e, cap * sizeof *grown);
    if (!grown) {
      entry_free(e);
      chb_error_set(err, CHB_ENOMEM, "cannot grow the zip writer's entry list");
      return -1;
    }
    w->e = grown;
    w->cap = cap;
  }
  e->w = w;
  e->index = w->count;
  e->direct = w->codec->id == CHB_CODEC_STORE;
  zip_error_t ze;
  zip_error_init(&ze);
  zip_source_t *src = zip_source_function_create(entry_source, e, &ze);
  zip_int64_t idx = -1;
  if (src && (idx = zip_file_add(w->za, e->name, src, ZIP_FL_ENC_UTF_8)) < 0) {
    zip_error_set(&ze, zip_error_code_zip(zip_get_error(w->za)),
                  zip_error_code_system(zip_get_error(w->za)));
    zip_source_free(src);
  }
  /* Every entry keeps libzip's default method: the source's stat names the
   * method its bytes already have (see CM_PLACEHOLDER). */
  int bad = idx >= 0 && w->password &&
            zip_file_set_encryption(w->za, (zip_uint64_t)idx, ZIP_EM_AES_256, NULL) != 0;
  if (bad) {
    zip_error_set(&ze, zip_error_code_zip(zip_get_error(w->za)), 0);
    zip_delete(w->za, (zip_uint64_t)idx);
    e->next_dead = w->dead;   /* libzip may still hold the source: free it last */
    w->dead = e;
  }
  if (idx < 0 || bad) {
    if (zip_error_code_zip(&ze) == ZIP_ER_EXISTS)
      chb_error_set(err, CHB_EEXIST, "entry %s added twice to zip archive %s", e->name, w->path);
    else
      chb_zip_fail(err, &ze, "cannot add an entry to zip archive", w->path);
    zip_error_fini(&ze);
    if (!bad) entry_free(e);
    return -1;
  }
  zip_error_fini(&ze);
  if (e->expect_size > 0) w->bytes_total += (uint64_t)e->expect_size;
  w->e[w->count] = e;
  return (long)w->count++;
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

static int cancel_cb(zip_t *za, void *ud) {
  (void)za;
  chb_zip_writer *w = ud;
  return chb_run_stopped(&w->run);
}

/* The archive with no entries (libzip writes no file for it). */
static int write_empty(chb_zip_writer *w, chb_error *err) {
  static const unsigned char eocd[22] = {0x50, 0x4b, 0x05, 0x06};
  if (chb_sink_write(w->out, eocd, sizeof eocd, err) != 0) return -1;
  return chb_sink_finish(w->out, w->fsync, err);
}

/*
 * The temporary archive, `path.tmp-<pid>`: created exclusively and held
 * under an exclusive flock(2) until it is renamed or removed, which is how
 * a later writer tells a live writer's file from one a killed run left.
 */
static int create_temporary(chb_zip_writer *w, chb_error *err) {
  chb_sink_opts o = {.mode = 0666, .read_back = 1, .lock = 1};
  if (!(w->out = chb_store_open_write(w->store, w->tmp_path, &o, err))) return -1;
  w->out_fd = chb_sink_fd(w->out);
  return 0;
}

static void run_finish(chb_zip_writer *w) {
  chb_error err;
  chb_error_clear(&err);
  pthread_t *workers = NULL;
  int nworkers = 0, ok = 0;
  chb_store_remove_stale_temporaries(w->path); /* first: a killed run of ours may have had our pid */
  if (create_temporary(w, &err) != 0) {   /* parent directories made on demand */
    w_fail(w, &err);
    goto out;
  }
  /* rbuf: reads of spool files, which only compressed entries have */
  if (w->codec->id != CHB_CODEC_STORE && !(w->rbuf = malloc(w->bufsize))) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate a read buffer");
    w_fail(w, &err);
    goto out;
  }
  if (w->count == 0) {
    zip_discard(w->za);
    w->za = NULL;
    if (write_empty(w, &err) != 0) w_fail(w, &err);
    else ok = 1;
    goto out;
  }
  if (w->codec->id != CHB_CODEC_STORE) {
    if (mkdir(w->spool_dir, 0700) != 0) {
      chb_error_errno(&err, errno, "cannot create spool directory", w->spool_dir);
      w_fail(w, &err);
      goto out;
    }
    w->spool_dir_made = 1;
  }
  int n = w->threads;
  if ((size_t)n > w->count) n = (int)w->count;
  workers = calloc((size_t)n, sizeof *workers);
  if (!workers) {
    chb_error_set(&err, CHB_ENOMEM, "cannot allocate threads");
    w_fail(w, &err);
    goto out;
  }
  for (int i = 0; i < n; i++) {
    int rc = pthread_create(&workers[i], NULL, compress_worker, w);
    if (rc != 0) {
      if (nworkers == 0) {
        chb_error_errno(&err, rc, "cannot start", "compression thread");
        w_fail(w, &err);
      }
      break;
    }
    nworkers++;
  }
  zip_register_cancel_callback_with_state(w->za, cancel_cb, NULL, w);
  if (zip_close(w->za) == 0) {
    w->za = NULL;
    ok = 1;
  } else {
    chb_zip_fail(&err, zip_get_error(w->za), "cannot write zip archive", w->path);
    if (err.code == CHB_CANCELLED) chb_error_set(&err, CHB_CANCELLED, "cancelled");
    w_fail(w, &err);          /* keeps an earlier, more precise error */
    zip_discard(w->za);
    w->za = NULL;
  }
out:
  atomic_store(&w->run.stop, 1);
  pthread_mutex_lock(&w->lock);
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  for (int i = 0; i < nworkers; i++) pthread_join(workers[i], NULL);
  free(workers);
  for (size_t i = 0; i < w->count; i++) spool_drop(w->e[i]);
  while (w->spare) {
    zw_chunk *c = w->spare;
    w->spare = c->next;
    free(c);
  }
  w->nspare = 0;
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
  w->out_fd = -1;
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

int chb_zip_writer_finish(chb_zip_writer *w, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  run_finish(w);
  return chb_zip_writer_result(w, err);
}

static void *finisher(void *arg) {
  run_finish(arg);
  return NULL;
}

int chb_zip_writer_start(chb_zip_writer *w, chb_error *err) {
  if (begin(w, err) != 0) return -1;
  int rc = pthread_create(&w->finisher, NULL, finisher, w);
  if (rc != 0) {
    chb_run_unbegin(&w->run);
    return chb_error_errno(err, rc, "cannot start", "zip writer thread");
  }
  w->has_finisher = 1;
  return 0;
}

chb_job_state chb_zip_writer_wait(chb_zip_writer *w, long timeout_ms) {
  return chb_run_wait(&w->run, timeout_ms);
}

void chb_zip_writer_cancel(chb_zip_writer *w) {
  chb_run_cancel(&w->run);
  pthread_mutex_lock(&w->lock);   /* wakes workers and libzip's copy waiting on cond */
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

void chb_zip_writer_get_progress(chb_zip_writer *w, chb_job_progress *out) {
  chb_run_get_progress(&w->run, w->count, w->bytes_total, out);
}

int chb_zip_writer_result(chb_zip_writer *w, chb_error *err) {
  return chb_run_result(&w->run, "zip writer", err);
}

int chb_zip_writer_entry_result(chb_zip_writer *w, size_t i, uint64_t *size, chb_u128 *hash) {
  if (chb_run_get_state(&w->run) != CHB_RUN_DONE || i >= w->count) return -1;
  *size = w->e[i]->size;
  *hash = w->e[i]->hash;
  return 0;
}

void chb_zip_writer_free(chb_zip_writer *w) {
  if (!w) return;
  if (w->has_finisher) {
    chb_zip_writer_cancel(w);
    pthread_join(w->finisher, NULL);
  }
  if (w->za) zip_discard(w->za); /* never started: nothing was written */
  for (size_t i = 0; i < w->count; i++) entry_free(w->e[i]);
  free(w->e);
  while (w->dead) {
    zw_entry *d = w->dead;
    w->dead = d->next_dead;
    entry_free(d);
  }
  if (w->spool_dir_made) rmdir(w->spool_dir);
  chb_sink_abort(w->out);
  chb_store_close(w->store);
  zip_error_fini(&w->out_err);
  free(w->wbuf);
  free(w->rbuf);
  free(w->path);
  free(w->tmp_path);
  free(w->spool_dir);
  chb_zip_free_secret(w->password);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  chb_run_destroy(&w->run);
  free(w);
}
