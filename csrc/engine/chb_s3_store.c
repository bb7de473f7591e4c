/* S3 profiles, per-thread clients and S3 pieces; see chb_s3_store.h. */
#include "chb_s3_store.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
