/* chb_catalog: see chb_catalog.h. Three paged arrays in one pager: the
 * records (a header naming the entry's bytes in the name heap, its hash,
 * then the caller's record), the name heap (names back to back in
 * page-sized chunks), and an open-addressing table of entry numbers + 1.
 * Nothing is kept per entry outside the pages: not even interned
 * directories (a chb_index keeps those in memory: 5 MB more at 10^5
 * parts, for names an archive reader looks up mostly in order anyway). */
#include "chb_catalog.h"
#include "chb_pages.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct head {
  uint64_t name_off;
  uint32_t name_len;
  uint32_t hash_lo;    /* the name's hash: its slot (rehashed without reading names) */
  uint32_t hash_hi;    /* compared before the name: most probes end here */
  uint32_t unused;
} head;

#define MAX_ENTRIES ((size_t)INT32_MAX)

struct chb_catalog {
  pthread_mutex_t lock;
  chb_pager *pg;
  chb_parray *recs;    /* head + the caller's record, by entry number */
  chb_parray *heap;    /* CHB_PAGE_SIZE chunks of name bytes */
  chb_parray *table;   /* uint32_t: entry + 1, 0 empty */
  size_t rec_size, count, cap;
  uint64_t heap_len;
};

chb_catalog *chb_catalog_new(size_t rec_size, size_t budget) {
  if (rec_size == 0 || rec_size > CHB_PAGE_SIZE - sizeof(head)) return NULL;
  chb_catalog *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (pthread_mutex_init(&c->lock, NULL) != 0) {
    free(c);
    return NULL;
  }
  c->rec_size = rec_size;
  c->pg = chb_pager_new(budget, NULL);
  c->recs = c->pg ? chb_parray_new(c->pg, sizeof(head) + rec_size) : NULL;
  c->heap = c->pg ? chb_parray_new(c->pg, CHB_PAGE_SIZE) : NULL;
  if (!c->recs || !c->heap) {
    chb_catalog_free(c);
    return NULL;
  }
  return c;
}

void chb_catalog_free(chb_catalog *c) {
  if (!c) return;
  chb_parray_free(c->recs);
  chb_parray_free(c->heap);
  chb_parray_free(c->table);
  chb_pager_free(c->pg);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* (the table's slots come from the low 32 bits: at most 2^31 entries) */
static uint64_t hash_name(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;   /* FNV-1a, then a final mix */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 32);
}

static int head_get(chb_catalog *c, size_t i, head *h) {
  const head *p = chb_parray_at(c->recs, i, 0);
  if (!p) return -2;
  *h = *p;
  return 0;
}

/* Compares the heap's bytes [off, off + n) with p: 1 equal, 0 not, -2 I/O. */
static int heap_equal(chb_catalog *c, uint64_t off, const char *p, size_t n) {
  while (n > 0) {
    size_t in = (size_t)(off % CHB_PAGE_SIZE), k = CHB_PAGE_SIZE - in < n ? CHB_PAGE_SIZE - in : n;
    const char *chunk = chb_parray_at(c->heap, (size_t)(off / CHB_PAGE_SIZE), 0);
    if (!chunk) return -2;
    if (memcmp(chunk + in, p, k) != 0) return 0;
    off += k, p += k, n -= k;
  }
  return 1;
}

static int heap_copy(chb_catalog *c, uint64_t off, char *out, size_t n) {
  while (n > 0) {
    size_t in = (size_t)(off % CHB_PAGE_SIZE), k = CHB_PAGE_SIZE - in < n ? CHB_PAGE_SIZE - in : n;
    const char *chunk = chb_parray_at(c->heap, (size_t)(off / CHB_PAGE_SIZE), 0);
    if (!chunk) return -2;
    memcpy(out, chunk + in, k);
    off += k, out += k, n -= k;
  }
  return 0;
}

static int heap_append(chb_catalog *c, const char *p, size_t n) {
  uint64_t end = c->heap_len + n;
  if (chb_parray_reserve(c->heap, (size_t)((end + CHB_PAGE_SIZE - 1) / CHB_PAGE_SIZE)) != 0) return -2;
  uint64_t off = c->heap_len;
  while (n > 0) {
    size_t in = (size_t)(off % CHB_PAGE_SIZE), k = CHB_PAGE_SIZE - in < n ? CHB_PAGE_SIZE - in : n;
    char *chunk = chb_parray_at(c->heap, (size_t)(off / CHB_PAGE_SIZE), 1);
    if (!chunk) return -2;
    memcpy(chunk + in, p, k);
    off += k, p += k, n -= k;
  }
  c->heap_len = end;
  return 0;
}

static int slot_get(chb_parray *t, size_t s, uint32_t *v) {
  const uint32_t *p = chb_parray_at(t, s, 0);
  if (!p) return -2;
  *v = *p;
  return 0;
}

static int slot_set(chb_parray *t, size_t s, uint32_t v) {
  uint32_t *p = chb_parray_at(t, s, 1);
  if (!p) return -2;
  *p = v;
  return 0;
}

/* The slot of name: its entry's (*v = entry + 1) or the empty one it would take (*v = 0). */
static int find_slot(chb_catalog *c, const char *name, size_t len, uint64_t h, size_t *slot, uint32_t *v) {
  size_t mask = c->cap - 1;
  for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
    if (slot_get(c->table, s, v) != 0) return -2;
    if (*v == 0) {
      *slot = s;
      return 0;
    }
    head e;
    if (head_get(c, *v - 1, &e) != 0) return -2;
    if (e.hash_hi == (uint32_t)(h >> 32) && e.name_len == len) {
      int eq = heap_equal(c, e.name_off, name, len);
      if (eq < 0) return -2;
      if (eq) {
        *slot = s;
        return 0;
      }
    }
  }
}

/* A table of cap slots (a power of two) holding every entry. */
static int rehash(chb_catalog *c, size_t cap) {
  chb_parray *t = chb_parray_new(c->pg, sizeof(uint32_t));
  if (!t || chb_parray_reserve(t, cap) != 0) goto fail;
  for (size_t i = 0; i < c->count; i++) {
    head e;
    uint32_t v;
    if (head_get(c, i, &e) != 0) goto fail;
    size_t s = (size_t)e.hash_lo & (cap - 1);
    for (;; s = (s + 1) & (cap - 1)) {   /* (names are unique: no comparison) */
      if (slot_get(t, s, &v) != 0) goto fail;
      if (!v) break;
    }
    if (slot_set(t, s, (uint32_t)i + 1) != 0) goto fail;
  }
  chb_parray_free(c->table);
  c->table = t;
  c->cap = cap;
  return 0;
fail:
  chb_parray_free(t);
  return -2;
}

/* Room for n entries (lock held). */
static int reserve_locked(chb_catalog *c, size_t n) {
  if (n > MAX_ENTRIES) return -2;
  size_t cap = c->cap ? c->cap : 1024;
  while ((n + 1) * 2 > cap) cap *= 2;
  if (cap != c->cap && rehash(c, cap) != 0) return -2;
  return chb_parray_reserve(c->recs, n) == 0 ? 0 : -2;
}

int chb_catalog_reserve(chb_catalog *c, size_t n) {
  pthread_mutex_lock(&c->lock);
  int rc = reserve_locked(c, n);
  pthread_mutex_unlock(&c->lock);
  return rc;
}

static long add_locked(chb_catalog *c, const char *name, size_t len, const void *rec, size_t *existing) {
  if (len > UINT32_MAX || reserve_locked(c, c->count + 1) != 0) return -2;
  uint64_t h = hash_name(name, len);
  size_t slot;
  uint32_t v;
  if (find_slot(c, name, len, h, &slot, &v) != 0) return -2;
  if (v) {
    if (existing) *existing = v - 1;
    return -1;
  }
  head e = {c->heap_len, (uint32_t)len, (uint32_t)h, (uint32_t)(h >> 32), 0};
  if (heap_append(c, name, len) != 0) return -2;
  unsigned char *p = chb_parray_at(c->recs, c->count, 1);
  if (!p) return -2;
  memcpy(p, &e, sizeof e);
  memcpy(p + sizeof e, rec, c->rec_size);
  if (slot_set(c->table, slot, (uint32_t)(c->count + 1)) != 0) return -2;
  return (long)c->count++;
}

long chb_catalog_add(chb_catalog *c, const char *name, size_t len, const void *rec, size_t *existing) {
  pthread_mutex_lock(&c->lock);
  long i = add_locked(c, name, len, rec, existing);
  pthread_mutex_unlock(&c->lock);
  return i;
}

size_t chb_catalog_count(const chb_catalog *c) {
  pthread_mutex_lock((pthread_mutex_t *)&c->lock);
  size_t n = c->count;
  pthread_mutex_unlock((pthread_mutex_t *)&c->lock);
  return n;
}

long chb_catalog_find(chb_catalog *c, const char *name, size_t len) {
  long i = -1;
  pthread_mutex_lock(&c->lock);
  if (c->cap) {
    size_t slot;
    uint32_t v;
    i = find_slot(c, name, len, hash_name(name, len), &slot, &v) != 0 ? -2 : (long)v - 1;
  }
  pthread_mutex_unlock(&c->lock);
  return i;
}

int chb_catalog_get(chb_catalog *c, size_t i, void *rec, char *name, size_t cap, size_t *len) {
  int rc = 0;
  pthread_mutex_lock(&c->lock);
  const unsigned char *p = i < c->count ? chb_parray_at(c->recs, i, 0) : NULL;
  if (i >= c->count) {
    rc = -1;
  } else if (!p) {
    rc = -2;
  } else {
    head e;
    memcpy(&e, p, sizeof e);
    if (rec) memcpy(rec, p + sizeof e, c->rec_size);
    if (len) *len = e.name_len;
    if (name && cap > 0) {
      size_t k = e.name_len < cap - 1 ? e.name_len : cap - 1;
      rc = heap_copy(c, e.name_off, name, k);
      name[k] = '\0';
    }
  }
  pthread_mutex_unlock(&c->lock);
  return rc;
}

const char *chb_catalog_error(chb_catalog *c) { return chb_pager_error(c->pg); }

size_t chb_catalog_memory(chb_catalog *c) {
  pthread_mutex_lock(&c->lock);
  size_t m = sizeof *c + chb_pager_memory(c->pg);
  pthread_mutex_unlock(&c->lock);
  return m;
}
