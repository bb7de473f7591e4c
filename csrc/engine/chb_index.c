/*
 * chb_index: see chb_index.h. Records in one array, names in one arena,
 * open-addressing tables of entry numbers (+1; 0 is an empty slot).
 */
#include "chb_index.h"

#include <stdlib.h>
#include <string.h>

enum {
  F_CHECKSUM = 1,
  F_USE_BASE_SET = 2,
  F_USE_BASE = 4,
  F_ENC_SET = 8,
  F_ENC = 16,
  F_EXTRA = 32,
  F_NO_CONTENT = 64,
  F_DATA_REF = 128,   /* extra is the number of the entry data_file names */
};

enum { X_BASE_SIZE = 1, X_BASE_CHECKSUM = 2, X_DATA_FILE = 4 };

typedef struct rec {
  uint64_t size;
  chb_u128 checksum;
  uint32_t name_off, name_len;
  uint32_t extra;   /* with F_EXTRA: its number in extras; with F_DATA_REF: an entry's */
  uint8_t flags;
} rec;

/* What few entries have (an incremental's grown files, copies). */
typedef struct extra {
  uint64_t base_size;
  chb_u128 base_checksum;
  uint32_t data_file_off, data_file_len;
  uint8_t flags;
} extra;

struct chb_index {
  rec *recs;
  size_t count, cap;
  extra *extras;
  size_t nextra, extra_cap;
  char *names;
  size_t names_len, names_cap;
  uint32_t *by_name;       /* name hash -> entry + 1 */
  size_t by_name_cap;      /* a power of two, or 0 */
  uint32_t *by_content;    /* (size, checksum) -> first entry + 1; built lazily */
  size_t by_content_cap;
  uint32_t *sorted;        /* entries in name order; built lazily */
};

#define MAX_ENTRIES ((size_t)INT32_MAX)

chb_index *chb_index_new(void) { return calloc(1, sizeof(chb_index)); }

void chb_index_free(chb_index *idx) {
  if (!idx) return;
  free(idx->recs);
  free(idx->extras);
  free(idx->names);
  free(idx->by_name);
  free(idx->by_content);
  free(idx->sorted);
  free(idx);
}

size_t chb_index_count(const chb_index *idx) { return idx->count; }

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;   /* FNV-1a, then a final mix */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

static uint64_t hash_content(uint64_t size, chb_u128 sum) {
  uint64_t h = sum.lo ^ (sum.hi * 0x9E3779B97F4A7C15ull) ^ (size * 0xC2B2AE3D27D4EB4Full);
  h ^= h >> 31;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 64;
  while (n < need) {   /* by half: at most a third of an array unused */
    if (n > SIZE_MAX / 2 / elem) return -1;
    n += n / 2;
  }
  void *q = realloc(*p, n * elem);
  if (!q) return -1;
  *p = q;
  *cap = n;
  return 0;
}

/* Copies bytes into the arena; their offset in *off. */
static int add_bytes(chb_index *idx, const char *s, size_t n, uint32_t *off) {
  if (idx->names_len + n > UINT32_MAX) return -1;
  if (grow((void **)&idx->names, &idx->names_cap, idx->names_len + n + 1, 1) != 0) return -1;
  memcpy(idx->names + idx->names_len, s, n);
  *off = (uint32_t)idx->names_len;
  idx->names_len += n;
  return 0;
}

static int name_is(const chb_index *idx, const rec *r, const char *name, size_t len) {
  return r->name_len == len && memcmp(idx->names + r->name_off, name, len) == 0;
}

/* The slot of name in the by_name table: its entry's, or the empty one it
 * would take. */
static size_t name_slot(const chb_index *idx, const char *name, size_t len) {
  size_t mask = idx->by_name_cap - 1, s = (size_t)hash_bytes(name, len) & mask;
  while (idx->by_name[s] && !name_is(idx, &idx->recs[idx->by_name[s] - 1], name, len)) s = (s + 1) & mask;
  return s;
}

static int rehash_names(chb_index *idx, size_t cap) {
  uint32_t *old = idx->by_name;
  size_t old_cap = idx->by_name_cap;
  idx->by_name = calloc(cap, sizeof(uint32_t));
  if (!idx->by_name) {
    idx->by_name = old;
    return -1;
  }
  idx->by_name_cap = cap;
  for (size_t i = 0; i < old_cap; i++) {
    if (!old[i]) continue;
    const rec *r = &idx->recs[old[i] - 1];
    idx->by_name[name_slot(idx, idx->names + r->name_off, r->name_len)] = old[i];
  }
  free(old);
  return 0;
}


static int content_add(chb_index *idx, size_t i);

long chb_index_add(chb_index *idx, const chb_index_entry *e, size_t *existing) {
  if (idx->count >= MAX_ENTRIES) return -2;
  if ((idx->count + 1) * 2 > idx->by_name_cap &&
      rehash_names(idx, idx->by_name_cap ? idx->by_name_cap * 2 : 64) != 0)
    return -2;
  size_t slot = name_slot(idx, e->name, e->name_len);
  if (idx->by_name[slot]) {
    if (existing) *existing = idx->by_name[slot] - 1;
    return -1;
  }
  if (grow((void **)&idx->recs, &idx->cap, idx->count + 1, sizeof(rec)) != 0) return -2;
  rec r = {0};
  r.size = e->size;
  r.name_len = (uint32_t)e->name_len;
  if (e->name_len > UINT32_MAX || add_bytes(idx, e->name, e->name_len, &r.name_off) != 0) return -2;
  if (e->has_checksum) r.flags |= F_CHECKSUM, r.checksum = e->checksum;
  if (e->use_base != CHB_ABSENT) r.flags |= F_USE_BASE_SET | (e->use_base ? F_USE_BASE : 0);
  if (e->encrypted_by_disk != CHB_ABSENT) r.flags |= F_ENC_SET | (e->encrypted_by_disk ? F_ENC : 0);
  long ref = e->data_file && !e->has_base_size && !e->has_base_checksum
                 ? chb_index_find(idx, e->data_file, e->data_file_len)
                 : -1;
  if (ref >= 0) {   /* a copy of an entry (most copies): its number, not its name again */
    r.flags |= F_DATA_REF;
    r.extra = (uint32_t)ref;
  } else if (e->has_base_size || e->has_base_checksum || e->data_file) {
    if (grow((void **)&idx->extras, &idx->extra_cap, idx->nextra + 1, sizeof(extra)) != 0) return -2;
    extra x = {0};
    if (e->has_base_size) x.flags |= X_BASE_SIZE, x.base_size = e->base_size;
    if (e->has_base_checksum) x.flags |= X_BASE_CHECKSUM, x.base_checksum = e->base_checksum;
    if (e->data_file) {
      if (e->data_file_len > UINT32_MAX ||
          add_bytes(idx, e->data_file, e->data_file_len, &x.data_file_off) != 0)
        return -2;
      x.flags |= X_DATA_FILE;
      x.data_file_len = (uint32_t)e->data_file_len;
    }
    r.flags |= F_EXTRA;
    r.extra = (uint32_t)idx->nextra;
    idx->extras[idx->nextra++] = x;
  }
  if (e->no_content) r.flags |= F_NO_CONTENT;
  idx->recs[idx->count] = r;
  idx->by_name[slot] = (uint32_t)(idx->count + 1);
  idx->count++;
  free(idx->sorted);   /* the name order is made again on use */
  idx->sorted = NULL;
  if (idx->by_content && content_add(idx, idx->count - 1) != 0) {
    free(idx->by_content);   /* built again on use */
    idx->by_content = NULL;
    idx->by_content_cap = 0;
  }
  return (long)(idx->count - 1);
}

int chb_index_get(const chb_index *idx, size_t i, chb_index_entry *out) {
  if (i >= idx->count) return -1;
  const rec *r = &idx->recs[i];
  memset(out, 0, sizeof *out);
  out->name = idx->names + r->name_off;
  out->name_len = r->name_len;
  out->size = r->size;
  out->has_checksum = (r->flags & F_CHECKSUM) != 0;
  out->checksum = r->checksum;
  out->use_base = (r->flags & F_USE_BASE_SET) ? (r->flags & F_USE_BASE) != 0 : CHB_ABSENT;
  out->encrypted_by_disk = (r->flags & F_ENC_SET) ? (r->flags & F_ENC) != 0 : CHB_ABSENT;
  if (r->flags & F_DATA_REF) {
    const rec *d = &idx->recs[r->extra];
    out->data_file = idx->names + d->name_off;
    out->data_file_len = d->name_len;
  } else if (r->flags & F_EXTRA) {
    const extra *x = &idx->extras[r->extra];
    out->has_base_size = (x->flags & X_BASE_SIZE) != 0;
    out->base_size = x->base_size;
    out->has_base_checksum = (x->flags & X_BASE_CHECKSUM) != 0;
    out->base_checksum = x->base_checksum;
    if (x->flags & X_DATA_FILE) {
      out->data_file = idx->names + x->data_file_off;
      out->data_file_len = x->data_file_len;
    }
  }
  return 0;
}

long chb_index_find(const chb_index *idx, const char *name, size_t len) {
  if (!idx->by_name_cap) return -1;
  uint32_t v = idx->by_name[name_slot(idx, name, len)];
  return v ? (long)v - 1 : -1;
}

static int same_content(const rec *r, uint64_t size, chb_u128 sum) {
  return r->size == size && r->checksum.lo == sum.lo && r->checksum.hi == sum.hi;
}

static size_t content_slot(const chb_index *idx, uint64_t size, chb_u128 sum) {
  size_t mask = idx->by_content_cap - 1, s = (size_t)hash_content(size, sum) & mask;
  while (idx->by_content[s] && !same_content(&idx->recs[idx->by_content[s] - 1], size, sum))
    s = (s + 1) & mask;
  return s;
}

static void content_put(chb_index *idx, size_t i) {
  const rec *r = &idx->recs[i];
  if (r->size == 0 || !(r->flags & F_CHECKSUM) || (r->flags & F_NO_CONTENT)) return;
  size_t s = content_slot(idx, r->size, r->checksum);
  if (!idx->by_content[s]) idx->by_content[s] = (uint32_t)(i + 1);   /* the first one stays */
}

/* The content table for entries [0, n), at least twice their number. */
static int build_content_of(chb_index *idx, size_t n) {
  size_t cap = 64;
  while (cap < n * 2) cap *= 2;
  uint32_t *t = calloc(cap, sizeof(uint32_t));
  if (!t) return -1;
  free(idx->by_content);
  idx->by_content = t;
  idx->by_content_cap = cap;
  for (size_t i = 0; i < n; i++) content_put(idx, i);
  return 0;
}

static int build_content(chb_index *idx) { return build_content_of(idx, idx->count); }

/* Entry i, just added, into a built content table (grown when half full). */
static int content_add(chb_index *idx, size_t i) {
  if ((i + 1) * 2 > idx->by_content_cap) return build_content_of(idx, i + 1);
  content_put(idx, i);
  return 0;
}

long chb_index_find_content(chb_index *idx, uint64_t size, chb_u128 checksum) {
  if (size == 0) return -1;
  if (!idx->by_content && build_content(idx) != 0) return -2;
  uint32_t v = idx->by_content[content_slot(idx, size, checksum)];
  return v ? (long)v - 1 : -1;
}

static int cmp_names(const void *a, const void *b, void *arg) {
  const chb_index *idx = arg;
  const rec *x = &idx->recs[*(const uint32_t *)a], *y = &idx->recs[*(const uint32_t *)b];
  size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
  int c = memcmp(idx->names + x->name_off, idx->names + y->name_off, n);
  if (c) return c;
  return x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
}

/* <0, 0 or >0: entry i's name before the names starting with prefix, one
 * of them, or after them. */
static int cmp_prefix(const chb_index *idx, uint32_t i, const char *prefix, size_t len) {
  const rec *r = &idx->recs[i];
  size_t n = r->name_len < len ? r->name_len : len;
  int c = memcmp(idx->names + r->name_off, prefix, n);
  if (c) return c;
  return r->name_len < len ? -1 : 0;
}

int chb_index_prefix(chb_index *idx, const char *prefix, size_t len, size_t *lo, size_t *hi) {
  if (!idx->sorted) {
    idx->sorted = malloc((idx->count ? idx->count : 1) * sizeof(uint32_t));
    if (!idx->sorted) return -2;
    for (size_t i = 0; i < idx->count; i++) idx->sorted[i] = (uint32_t)i;
    qsort_r(idx->sorted, idx->count, sizeof(uint32_t), cmp_names, idx);
  }
  size_t a = 0, b = idx->count;   /* first position not before the prefix */
  while (a < b) {
    size_t m = a + (b - a) / 2;
    if (cmp_prefix(idx, idx->sorted[m], prefix, len) < 0) a = m + 1; else b = m;
  }
  *lo = a;
  b = idx->count;                 /* first position after it */
  while (a < b) {
    size_t m = a + (b - a) / 2;
    if (cmp_prefix(idx, idx->sorted[m], prefix, len) <= 0) a = m + 1; else b = m;
  }
  *hi = a;
  return 0;
}

long chb_index_sorted_at(const chb_index *idx, size_t pos) {
  if (!idx->sorted || pos >= idx->count) return -1;
  return (long)idx->sorted[pos];
}

/* Shrinks *p (cap elements of elem bytes) to n elements; kept as it is if
 * realloc fails. */
static void shrink(void **p, size_t *cap, size_t n, size_t elem) {
  if (n == 0 || n >= *cap) return;
  void *q = realloc(*p, n * elem);
  if (!q) return;
  *p = q;
  *cap = n;
}

void chb_index_compact(chb_index *idx) {
  shrink((void **)&idx->recs, &idx->cap, idx->count, sizeof(rec));
  shrink((void **)&idx->extras, &idx->extra_cap, idx->nextra, sizeof(extra));
  shrink((void **)&idx->names, &idx->names_cap, idx->names_len + 1, 1);
}

size_t chb_index_memory(const chb_index *idx) {
  return sizeof *idx + idx->cap * sizeof(rec) + idx->extra_cap * sizeof(extra) + idx->names_cap +
         (idx->by_name_cap + idx->by_content_cap) * sizeof(uint32_t) +
         (idx->sorted ? idx->count * sizeof(uint32_t) : 0);
}
