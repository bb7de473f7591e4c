/* chb_catalog: see chb_catalog.h. A chb_index holds the names (its
 * records' other fields unused: size 0, no checksum, not found by content)
 * and a paged array of the caller's records shares its pager. */
#include "chb_catalog.h"
#include "chb_index.h"
#include "chb_pages.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct chb_catalog {
  pthread_mutex_t lock;
  chb_pager *pg;
  chb_index *names;
  chb_parray *recs;
  size_t rec_size;
};

chb_catalog *chb_catalog_new(size_t rec_size, size_t budget) {
  if (rec_size == 0 || rec_size > CHB_PAGE_SIZE) return NULL;
  chb_catalog *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return NULL;
  }
  c->rec_size = rec_size;
  c->pg = chb_pager_new(budget, NULL);
  c->names = c->pg ? chb_index_new_in(c->pg) : NULL;
  c->recs = c->pg ? chb_parray_new(c->pg, rec_size) : NULL;
  if (!c->recs || !c->names) {
    chb_catalog_free(c);
    return NULL;
  }
  return c;
}

void chb_catalog_free(chb_catalog *c) {
  if (!c) return;
  chb_parray_free(c->recs);
  chb_index_free(c->names);
  chb_pager_free(c->pg);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

long chb_catalog_add(chb_catalog *c, const char *name, size_t len, const void *rec, size_t *existing) {
  chb_index_entry e = {0};
  e.name = name, e.name_len = len;
  e.use_base = e.encrypted_by_disk = CHB_ABSENT;
  e.no_content = 1;
  pthread_mutex_lock(&c->lock);
  size_t n = chb_index_count(c->names);
  long i = -2;
  if (chb_parray_reserve(c->recs, n + 1) == 0) {
    void *slot = chb_parray_at(c->recs, n, 1);
    if (slot) {
      memcpy(slot, rec, c->rec_size);
      i = chb_index_add(c->names, &e, existing);
    }
  }
  pthread_mutex_unlock(&c->lock);
  return i;
}

int chb_catalog_reserve(chb_catalog *c, size_t n) {
  pthread_mutex_lock(&c->lock);
  int rc = chb_parray_reserve(c->recs, n) == 0 && chb_index_reserve(c->names, n) == 0 ? 0 : -2;
  pthread_mutex_unlock(&c->lock);
  return rc;
}

size_t chb_catalog_count(const chb_catalog *c) {
  pthread_mutex_lock((pthread_mutex_t *)&c->lock);
  size_t n = chb_index_count(c->names);
  pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
  return n;
}

long chb_catalog_find(chb_catalog *c, const char *name, size_t len) {
  pthread_mutex_lock(&c->lock);
  long i = chb_index_find(c->names, name, len);
  pthread_mutex_unlock(&c->lock);
  return i;
}

int chb_catalog_get(chb_catalog *c, size_t i, void *rec, char *name, size_t cap, size_t *len) {
  int rc = 0;
  pthread_mutex_lock(&c->lock);
  if (i >= chb_index_count(c->names)) {
    rc = -1;
  } else if (rec) {
    const void *p = chb_parray_at(c->recs, i, 0);
    if (p) memcpy(rec, p, c->rec_size);
    else rc = -2;
  }
  if (rc == 0 && (name || len)) {
    chb_index_entry e;
    rc = chb_index_get(c->names, i, &e);
    if (rc == 0) {
      if (len) *len = e.name_len;
      if (name && cap > 0) {
        size_t k = e.name_len < cap - 1 ? e.name_len : cap - 1;
        memcpy(name, e.name, k);
        name[k] = '\0';
      }
    }
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

const char *chb_catalog_error(chb_catalog *c) { return chb_pager_error(c->pg); }

size_t chb_catalog_memory(chb_catalog *c) {
  pthread_mutex_lock(&c->lock);
  size_t m = sizeof *c + chb_index_memory(c->names);   /* its pager's pages are counted there */
  pthread_mutex_unlock(&c->lock);
  return m;
}
