/* S3 profiles, per-thread clients, S3 pieces and uploads; see chb_s3_store.h. */
#include "chb_s3_store.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_PARTS_THRESHOLD 500   /* ClickHouse's upload_part_size_multiply_parts_count_threshold */
#define FIRST_CAP ((size_t)64 << 10)

/* ---- profiles ---------------------------------------------------------------- */

typedef struct profile {
  int id;
  chb_s3_config cfg;          /* strings owned */
} profile;

static pthread_mutex_t plock = PTHREAD_MUTEX_INITIALIZER;
static profile *profiles;
static size_t nprofiles, pcap;
static int next_id = 1;

static void free_str(const char *s, int wipe) {
  if (!s) return;
  if (wipe) OPENSSL_cleanse((char *)s, strlen(s));
  free((char *)s);
}

static void config_free(chb_s3_config *c) {
  free_str(c->endpoint, 0);
  free_str(c->bucket, 0);
  free_str(c->region, 0);
  free_str(c->key_id, 0);
  free_str(c->secret, 1);
  free_str(c->session_token, 1);
  free_str(c->storage_class, 0);
  memset(c, 0, sizeof *c);
}

static const char *dup_or_null(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

int chb_s3_profile_add(const chb_s3_config *cfg, chb_error *err) {
  int oom = 0;
  chb_s3_config c = *cfg;
  c.endpoint = dup_or_null(cfg->endpoint, &oom);
  c.bucket = dup_or_null(cfg->bucket, &oom);
  c.region = dup_or_null(cfg->region, &oom);
  c.key_id = dup_or_null(cfg->key_id, &oom);
  c.secret = dup_or_null(cfg->secret, &oom);
  c.session_token = dup_or_null(cfg->session_token, &oom);
  c.storage_class = dup_or_null(cfg->storage_class, &oom);
  pthread_mutex_lock(&plock);
  if (!oom && nprofiles == pcap) {
    size_t cap = pcap ? pcap * 2 : 8;
    profile *grown = realloc(profiles, cap * sizeof *grown);
    if (grown) {
      profiles = grown;
      pcap = cap;
    } else {
      oom = 1;
    }
  }
  int id = -1;
  if (!oom) {
    id = next_id++;
    profiles[nprofiles++] = (profile){id, c};
  }
  pthread_mutex_unlock(&plock);
  if (oom) {
    config_free(&c);
    chb_error_set(err, CHB_ENOMEM, "S3: cannot register a client profile");
  }
  return id;
}

void chb_s3_profile_drop(int id) {
  pthread_mutex_lock(&plock);
  for (size_t i = 0; i < nprofiles; i++) {
    if (profiles[i].id != id) continue;
    config_free(&profiles[i].cfg);
    profiles[i] = profiles[--nprofiles];
    break;
  }
  if (nprofiles == 0) {
    free(profiles);
    profiles = NULL;
    pcap = 0;
  }
  pthread_mutex_unlock(&plock);
}

/* A new client of profile id; locked by the caller. */
static chb_s3 *client_of(int id, chb_error *err) {
  for (size_t i = 0; i < nprofiles; i++)
    if (profiles[i].id == id) return chb_s3_new(&profiles[i].cfg, err);
  chb_error_set(err, CHB_INVALID, "S3: no client profile %d (dropped?)", id);
  return NULL;
}

static int profile_exists(int id) {
  for (size_t i = 0; i < nprofiles; i++)
    if (profiles[i].id == id) return 1;
  return 0;
}

/* ---- each thread's clients ----------------------------------------------------- */

typedef struct tclient {
  int id;
  chb_s3 *s;
} tclient;

typedef struct tcache {
  tclient *v;
  size_t n, cap;
} tcache;

static pthread_key_t tkey;
static pthread_once_t tonce = PTHREAD_ONCE_INIT;

static void tcache_destroy(void *p) {
  tcache *c = p;
  if (!c) return;
  for (size_t i = 0; i < c->n; i++) chb_s3_free(c->v[i].s);
  free(c->v);
  free(c);
}

static void tkey_init(void) { pthread_key_create(&tkey, tcache_destroy); }

void chb_s3_thread_clients_free(void) {
  pthread_once(&tonce, tkey_init);
  tcache_destroy(pthread_getspecific(tkey));
  pthread_setspecific(tkey, NULL);
}

chb_s3 *chb_s3_thread_client(int id, chb_error *err) {
  pthread_once(&tonce, tkey_init);
  tcache *c = pthread_getspecific(tkey);
  for (size_t i = 0; c && i < c->n; i++)
    if (c->v[i].id == id) return c->v[i].s;
  if (!c) {
    if (!(c = calloc(1, sizeof *c)) || pthread_setspecific(tkey, c) != 0) {
      free(c);
      chb_error_set(err, CHB_ENOMEM, "S3: out of memory");
      return NULL;
    }
  }
  pthread_mutex_lock(&plock);
  /* Clients of dropped profiles go now. */
  for (size_t i = 0; i < c->n;) {
    if (profile_exists(c->v[i].id)) {
      i++;
      continue;
    }
    chb_s3_free(c->v[i].s);
    c->v[i] = c->v[--c->n];
  }
  chb_s3 *s = client_of(id, err);
  pthread_mutex_unlock(&plock);
  if (!s) return NULL;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 4;
    tclient *grown = realloc(c->v, cap * sizeof *grown);
    if (!grown) {
      chb_s3_free(s);
      chb_error_set(err, CHB_ENOMEM, "S3: out of memory");
      return NULL;
    }
    c->v = grown;
    c->cap = cap;
  }
  c->v[c->n++] = (tclient){id, s};
  return s;
}

/* ---- pieces -------------------------------------------------------------------- */

int chb_s3_piece_size(int profile_id, const char *key, uint64_t *size, chb_error *err) {
  chb_s3 *s = chb_s3_thread_client(profile_id, err);
  chb_s3_stat st;
  if (!s || chb_s3_head(s, key, &st, err) != 0) return -1;
  *size = st.size;
  return 0;
}

ssize_t chb_s3_piece_read(int profile_id, const char *key, uint64_t offset, void *buf, size_t len,
                          chb_error *err) {
  chb_s3 *s = chb_s3_thread_client(profile_id, err);
  size_t got = 0;
  if (!s || chb_s3_get_buf(s, key, offset, (int64_t)len, buf, len, &got, err) != 0) return -1;
  return (ssize_t)got;
}

/* ---- uploads ------------------------------------------------------------------- */

struct chb_s3_upload {
  chb_s3 *s;                  /* the thread's client (not owned) */
  char *key, *name;
  uint64_t hint;
  unsigned char *buf;
  size_t len, cap;
  uint64_t part;              /* multipart: the part size now */
  char *upload_id;            /* NULL: still one PUT */
  chb_s3_part *parts;
  size_t nparts, pcap;
  int finished;
};

chb_s3_upload *chb_s3_upload_open(int profile_id, const char *key, uint64_t size_hint,
                                  chb_error *err) {
  chb_s3 *s = chb_s3_thread_client(profile_id, err);
  if (!s) return NULL;
  chb_s3_upload *u = calloc(1, sizeof *u);
  if (u) {
    u->s = s;
    u->hint = size_hint;
    u->key = strdup(key);
    size_t n = strlen(key) + strlen(chb_s3_bucket(s)) + 8;
    if ((u->name = malloc(n))) snprintf(u->name, n, "s3://%s/%s", chb_s3_bucket(s), key);
  }
  if (!u || !u->key || !u->name) {
    chb_s3_upload_free(u);
    chb_error_set(err, CHB_ENOMEM, "S3: out of memory for an upload of %s", key);
    return NULL;
  }
  return u;
}

const char *chb_s3_upload_name(const chb_s3_upload *u) { return u->name; }

static int64_t buf_read_at(void *ctx, uint64_t off, void *out, size_t len, chb_error *e) {
  const chb_s3_upload *u = ctx;
  (void)e;
  size_t n = off < u->len ? u->len - (size_t)off : 0;
  if (n > len) n = len;
  memcpy(out, u->buf + off, n);
  return (int64_t)n;
}

/* Uploads buf[off, off+len) as the next part. */
static int send_part(chb_s3_upload *u, size_t off, size_t len, chb_error *err) {
  if (u->nparts == u->pcap) {
    size_t cap = u->pcap ? u->pcap * 2 : 16;
    chb_s3_part *grown = realloc(u->parts, cap * sizeof *grown);
    if (!grown) return chb_error_set(err, CHB_ENOMEM, "S3: out of memory for the parts of %s", u->name);
    u->parts = grown;
    u->pcap = cap;
  }
  chb_s3_source src = {buf_read_at, u, u->len};
  if (chb_s3_mpu_part(u->s, u->key, u->upload_id, (int)u->nparts + 1, &src, off, len,
                      &u->parts[u->nparts], err) != 0)
    return -1;
  u->nparts++;
  if (!u->hint && u->nparts % STREAM_PARTS_THRESHOLD == 0 && u->part * 2 <= CHB_S3_MAX_PART)
    u->part *= 2;   /* WriteBufferFromS3's upload_part_size_multiply_factor */
  return 0;
}

/* Sends the whole parts the buffer holds; the rest moves to its front. */
static int flush_parts(chb_s3_upload *u, chb_error *err) {
  size_t off = 0;
  while (u->len - off >= u->part) {
    size_t n = (size_t)u->part;
    if (send_part(u, off, n, err) != 0) return -1;
    off += n;
  }
  memmove(u->buf, u->buf + off, u->len - off);
  u->len -= off;
  return 0;
}

static int start_multipart(chb_s3_upload *u, chb_error *err) {
  u->part = u->hint ? chb_s3_part_size(u->hint, 0) : CHB_S3_MIN_PART;
  if (u->part > CHB_S3_MAX_PART) u->part = CHB_S3_MAX_PART;
  return chb_s3_mpu_create(u->s, u->key, &u->upload_id, err);
}

static int reserve(chb_s3_upload *u, size_t need, chb_error *err) {
  if (need <= u->cap) return 0;
  size_t cap = u->cap ? u->cap : FIRST_CAP;
  while (cap < need) cap *= 2;
  unsigned char *grown = realloc(u->buf, cap);
  if (!grown) return chb_error_set(err, CHB_ENOMEM, "S3: out of memory for a part of %s", u->name);
  u->buf = grown;
  u->cap = cap;
  return 0;
}

int chb_s3_upload_write(chb_s3_upload *u, const void *buf, size_t len, chb_error *err) {
  const unsigned char *p = buf;
  if (!u->upload_id && u->hint > CHB_S3_SINGLE_PUT_MAX && start_multipart(u, err) != 0) return -1;
  while (len > 0) {
    size_t limit = u->upload_id ? (size_t)u->part : (size_t)CHB_S3_SINGLE_PUT_MAX;
    if (u->len >= limit) {
      /* More than one PUT takes: multipart from here on. */
      if (!u->upload_id && start_multipart(u, err) != 0) return -1;
      if (flush_parts(u, err) != 0) return -1;
      continue;
    }
    size_t take = limit - u->len < len ? limit - u->len : len;
    if (reserve(u, u->len + take, err) != 0) return -1;
    memcpy(u->buf + u->len, p, take);
    u->len += take;
    p += take;
    len -= take;
  }
  return 0;
}

int chb_s3_upload_finish(chb_s3_upload *u, chb_error *err) {
  int rc;
  if (!u->upload_id) {
    rc = chb_s3_put(u->s, u->key, u->buf ? (const void *)u->buf : "", u->len, err);
  } else {
    rc = 0;
    if (u->len > 0 || u->nparts == 0) rc = send_part(u, 0, u->len, err);
    if (rc == 0) rc = chb_s3_mpu_complete(u->s, u->key, u->upload_id, u->parts, u->nparts, err);
  }
  free(u->buf);
  u->buf = NULL;
  u->len = u->cap = 0;
  if (rc == 0) u->finished = 1;
  return rc;
}

void chb_s3_upload_free(chb_s3_upload *u) {
  if (!u) return;
  free(u->key);
  free(u->name);
  free(u->buf);
  free(u->upload_id);
  free(u->parts);
  free(u);
}

void chb_s3_upload_abort(chb_s3_upload *u) {
  if (!u) return;
  chb_error ignored;
  if (u->finished) chb_s3_delete(u->s, u->key, &ignored);
  else if (u->upload_id) chb_s3_mpu_abort(u->s, u->key, u->upload_id, &ignored);
  chb_s3_upload_free(u);
}
