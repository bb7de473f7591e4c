/*
 * chb_index: see chb_index.h. Records in one array; a name is two interned
 * strings, its directory (up to its last '/') and its file name: a part's
 * dozen files share one directory string and every part the same dozen
 * file names, so a name costs 8 bytes, not its length (issue 14).
 * Open-addressing tables of entry numbers (+1; 0 is an empty slot).
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
  uint32_t dir, leaf;   /* the name: interned strings (dir ends in '/', or is empty) */
  uint32_t extra;       /* with F_EXTRA: its number in extras; with F_DATA_REF: an entry's */
  uint8_t flags;
} rec;

/* One interned string: bytes [off, off + len) of the strings arena. */
typedef struct str {
  uint32_t off, len;
} str;

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
  char *names;             /* the arena: interned strings, extras' data_file */
  size_t names_len, names_cap;
  str *strs;               /* interned strings, by id */
  size_t nstrs, strs_cap;
  uint32_t *by_str;        /* string hash -> id + 1 */
  size_t by_str_cap;
  char *scratch[2];        /* a name and a data_file put together by chb_index_get */
  size_t scratch_cap[2];
  uint32_t *by_name;       /* name hash -> entry + 1 in the low name_shift bits, and above
                            * them as many bits of the name's hash as are left, so that
                            * a probe reads a record only when those match (one cache
                            * miss a lookup, not one a slot probed: issue 14); 0 empty */
  unsigned name_shift;     /* log2(by_name_cap): entry + 1 < by_name_cap / 2 fits */
  size_t by_name_cap;      /* a power of two, or 0 */
  uint32_t *by_content;    /* (size, checksum) -> first entry + 1; built lazily */
  size_t by_content_cap;
  uint32_t *sorted;        /* entries in name order; built lazily */
  uint64_t serial;         /* this index among all made (never reused, unlike an address) */
  uint64_t map_of;         /* the serial of the base index whose string ids base_map maps */
  uint32_t *base_map;      /* base string id -> this index's id + 1 (0: not yet) */
  size_t base_map_len;
};

#define MAX_ENTRIES ((size_t)INT32_MAX)

chb_index *chb_index_new(void) {
  static uint64_t serials;
  chb_index *idx = calloc(1, sizeof(chb_index));
  if (idx) idx->serial = __atomic_add_fetch(&serials, 1, __ATOMIC_RELAXED);
  return idx;
}

void chb_index_free(chb_index *idx) {
  if (!idx) return;
  free(idx->recs);
  free(idx->extras);
  free(idx->names);
  free(idx->strs);
  free(idx->by_str);
  free(idx->scratch[0]);
  free(idx->scratch[1]);
  free(idx->by_name);
  free(idx->by_content);
  free(idx->sorted);
  free(idx->base_map);
  free(idx);
}

size_t chb_index_count(const chb_index *idx) { return idx->count; }

/* FNV-1a over a and then b (a name in its two pieces hashes as the whole
 * name), then a final mix. */
static uint64_t hash_two(const char *a, size_t an, const char *b, size_t bn) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < an; i++) h = (h ^ (unsigned char)a[i]) * 1099511628211ull;
  for (size_t i = 0; i < bn; i++) h = (h ^ (unsigned char)b[i]) * 1099511628211ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

static uint64_t hash_bytes(const char *p, size_t n) { return hash_two(p, n, NULL, 0); }

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

static const char *str_bytes(const chb_index *idx, uint32_t id) { return idx->names + idx->strs[id].off; }

/* The id of the interned string s, added if new; -1 when out of memory. */
static long intern(chb_index *idx, const char *s, size_t n) {
  if (n > UINT32_MAX || idx->nstrs >= MAX_ENTRIES) return -1;
  if ((idx->nstrs + 1) * 2 > idx->by_str_cap) {
    size_t cap = idx->by_str_cap ? idx->by_str_cap * 2 : 64;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t) return -1;
    for (size_t id = 0; id < idx->nstrs; id++) {
      size_t k = (size_t)hash_bytes(str_bytes(idx, (uint32_t)id), idx->strs[id].len) & (cap - 1);
      while (t[k]) k = (k + 1) & (cap - 1);
      t[k] = (uint32_t)id + 1;
    }
    free(idx->by_str);
    idx->by_str = t, idx->by_str_cap = cap;
  }
  size_t mask = idx->by_str_cap - 1, k = (size_t)hash_bytes(s, n) & mask;
  for (; idx->by_str[k]; k = (k + 1) & mask) {
    uint32_t id = idx->by_str[k] - 1;
    if (idx->strs[id].len == n && memcmp(str_bytes(idx, id), s, n) == 0) return (long)id;
  }
  if (grow((void **)&idx->strs, &idx->strs_cap, idx->nstrs + 1, sizeof(str)) != 0) return -1;
  str x = {0, (uint32_t)n};
  if (add_bytes(idx, s, n, &x.off) != 0) return -1;
  idx->strs[idx->nstrs] = x;
  idx->by_str[k] = (uint32_t)idx->nstrs + 1;
  return (long)idx->nstrs++;
}

/* Where a name's directory ends: after its last '/' (0: none). */
static size_t dir_len(const char *name, size_t len) {
  while (len > 0 && name[len - 1] != '/') len--;
  return len;
}

static size_t name_len_of(const chb_index *idx, const rec *r) { return idx->strs[r->dir].len + idx->strs[r->leaf].len; }

static int name_is(const chb_index *idx, const rec *r, const char *name, size_t len) {
  const str *d = &idx->strs[r->dir], *l = &idx->strs[r->leaf];
  return d->len + l->len == len && memcmp(idx->names + d->off, name, d->len) == 0 &&
         memcmp(idx->names + l->off, name + d->len, l->len) == 0;
}

static uint64_t hash_rec(const chb_index *idx, const rec *r) {
  const str *d = &idx->strs[r->dir], *l = &idx->strs[r->leaf];
  return hash_two(idx->names + d->off, d->len, idx->names + l->off, l->len);
}

/* A name as its two pieces. */
typedef struct pieces {
  const char *a, *b;
  size_t an, bn;
} pieces;

static pieces pieces_of(const chb_index *idx, const rec *r) {
  const str *d = &idx->strs[r->dir], *l = &idx->strs[r->leaf];
  pieces p = {idx->names + d->off, idx->names + l->off, d->len, l->len};
  return p;
}

/* x and y, each a name in two pieces, are the same name. */
static int same_pieces(pieces x, pieces y) {
  if (x.an + x.bn != y.an + y.bn) return 0;
  const char *xs[2] = {x.a, x.b}, *ys[2] = {y.a, y.b};
  size_t xl[2] = {x.an, x.bn}, yl[2] = {y.an, y.bn}, xo = 0, yo = 0;
  for (int xi = 0, yi = 0; xi < 2 && yi < 2;) {
    if (xo == xl[xi]) {
      xi++, xo = 0;
    } else if (yo == yl[yi]) {
      yi++, yo = 0;
    } else {
      size_t n = xl[xi] - xo < yl[yi] - yo ? xl[xi] - xo : yl[yi] - yo;
      if (memcmp(xs[xi] + xo, ys[yi] + yo, n) != 0) return 0;
      xo += n, yo += n;
    }
  }
  return 1;
}

/* A slot's parts: the name's tag (its hash's bits above the entry's), the
 * entry. With 2^32 slots no bits are left: every tag matches. */
static uint32_t tag_of(unsigned shift, uint64_t h) {
  return shift >= 32 ? 0 : (uint32_t)(h >> 32) >> shift;
}
static uint32_t slot_tag(unsigned shift, uint32_t v) { return shift >= 32 ? 0 : v >> shift; }
static size_t slot_entry(unsigned shift, uint32_t v) {
  return (size_t)(shift >= 32 ? v : v & ((1u << shift) - 1)) - 1;
}
static uint32_t slot_value(unsigned shift, uint32_t tag, size_t entry) {
  return (uint32_t)(((uint64_t)tag << (shift >= 32 ? 0 : shift)) | (entry + 1));
}

/* The slot of name in the by_name table: its entry's, or the empty one it
 * would take (*tag: the name's tag). */
static size_t name_slot(const chb_index *idx, const char *name, size_t len, uint32_t *tag) {
  uint64_t h = hash_bytes(name, len);
  size_t mask = idx->by_name_cap - 1, s = (size_t)h & mask;
  unsigned sh = idx->name_shift;
  uint32_t t = tag_of(sh, h), v;
  for (; (v = idx->by_name[s]) != 0; s = (s + 1) & mask)
    if (slot_tag(sh, v) == t && name_is(idx, &idx->recs[slot_entry(sh, v)], name, len)) break;
  *tag = t;
  return s;
}

static int rehash_names(chb_index *idx, size_t cap) {
  uint32_t *t = calloc(cap, sizeof(uint32_t));
  if (!t) return -1;
  unsigned sh = 0;
  while (((size_t)1 << sh) < cap) sh++;
  for (size_t i = 0; i < idx->count; i++) {
    uint64_t h = hash_rec(idx, &idx->recs[i]);
    size_t s = (size_t)h & (cap - 1);
    while (t[s]) s = (s + 1) & (cap - 1);   /* (names are unique: no comparison) */
    t[s] = slot_value(sh, tag_of(sh, h), i);
  }
  free(idx->by_name);
  idx->by_name = t;
  idx->by_name_cap = cap;
  idx->name_shift = sh;
  return 0;
}


static int content_add(chb_index *idx, size_t i);

long chb_index_add(chb_index *idx, const chb_index_entry *e, size_t *existing) {
  if (idx->count >= MAX_ENTRIES) return -2;
  if ((idx->count + 1) * 2 > idx->by_name_cap &&
      rehash_names(idx, idx->by_name_cap ? idx->by_name_cap * 2 : 64) != 0)
    return -2;
  uint32_t tag;
  size_t slot = name_slot(idx, e->name, e->name_len, &tag);
  if (idx->by_name[slot]) {
    if (existing) *existing = slot_entry(idx->name_shift, idx->by_name[slot]);
    return -1;
  }
  if (grow((void **)&idx->recs, &idx->cap, idx->count + 1, sizeof(rec)) != 0) return -2;
  rec r = {0};
  r.size = e->size;
  size_t dl = dir_len(e->name, e->name_len);
  long dir = intern(idx, e->name, dl), leaf = dir < 0 ? -1 : intern(idx, e->name + dl, e->name_len - dl);
  if (leaf < 0) return -2;
  r.dir = (uint32_t)dir, r.leaf = (uint32_t)leaf;
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
  idx->by_name[slot] = slot_value(idx->name_shift, tag, idx->count);
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

/* This index's id of base's string id: interned once, then mapped
 * (a part's directory is looked up once, not once a file; the dozen file
 * names once in all). -1 when out of memory. */
static long intern_from(chb_index *idx, const chb_index *base, uint32_t id) {
  if (idx->map_of != base->serial || idx->base_map_len < base->nstrs) {
    size_t n = base->nstrs ? base->nstrs : 1;
    int same = idx->map_of == base->serial;
    uint32_t *m = same ? realloc(idx->base_map, n * sizeof *m) : malloc(n * sizeof *m);
    if (!m) return -1;
    if (same) {
      memset(m + idx->base_map_len, 0, (n - idx->base_map_len) * sizeof *m);
    } else {
      free(idx->base_map);
      memset(m, 0, n * sizeof *m);
    }
    idx->base_map = m, idx->base_map_len = n, idx->map_of = base->serial;
  }
  if (idx->base_map[id]) return (long)idx->base_map[id] - 1;
  long own = intern(idx, base->names + base->strs[id].off, base->strs[id].len);
  if (own >= 0) idx->base_map[id] = (uint32_t)own + 1;
  return own;
}

long chb_index_add_from_base(chb_index *idx, chb_index *base, size_t i, size_t *existing) {
  if (i >= base->count || idx->count >= MAX_ENTRIES) return -2;
  const rec *b = &base->recs[i];
  if (b->size > 0 && !(b->flags & F_CHECKSUM)) return -2;
  if ((idx->count + 1) * 2 > idx->by_name_cap &&
      rehash_names(idx, idx->by_name_cap ? idx->by_name_cap * 2 : 64) != 0)
    return -2;
  /* the slot of the name, from its two pieces in base (hash_two hashes
   * them as the whole name) */
  pieces p = pieces_of(base, b);
  uint64_t h = hash_two(p.a, p.an, p.b, p.bn);
  size_t mask = idx->by_name_cap - 1, slot = (size_t)h & mask;
  unsigned sh = idx->name_shift;
  uint32_t tag = tag_of(sh, h), v;
  for (; (v = idx->by_name[slot]) != 0; slot = (slot + 1) & mask)
    if (slot_tag(sh, v) == tag && same_pieces(pieces_of(idx, &idx->recs[slot_entry(sh, v)]), p)) {
      if (existing) *existing = slot_entry(sh, v);
      return -1;
    }
  if (grow((void **)&idx->recs, &idx->cap, idx->count + 1, sizeof(rec)) != 0) return -2;
  long dir = intern_from(idx, base, b->dir), leaf = dir < 0 ? -1 : intern_from(idx, base, b->leaf);
  if (leaf < 0) return -2;
  /* as chb_index_add of its name, size and checksum, use_base (an empty
   * file has neither: no bytes to take from anywhere), no_content */
  rec r = {0};
  r.size = b->size;
  r.dir = (uint32_t)dir, r.leaf = (uint32_t)leaf;
  if (b->size > 0) r.flags |= F_CHECKSUM | F_USE_BASE_SET | F_USE_BASE, r.checksum = b->checksum;
  r.flags |= F_NO_CONTENT;
  idx->recs[idx->count] = r;
  idx->by_name[slot] = slot_value(idx->name_shift, tag, idx->count);
  idx->count++;
  free(idx->sorted);   /* the name order is made again on use */
  idx->sorted = NULL;
  return (long)(idx->count - 1);   /* (no_content: nothing for by_content) */
}

/* rec's name put together in scratch buffer k; NULL when out of memory. */
static const char *joined(chb_index *idx, const rec *r, int k, size_t *len) {
  const str *d = &idx->strs[r->dir], *l = &idx->strs[r->leaf];
  *len = (size_t)d->len + l->len;
  if (grow((void **)&idx->scratch[k], &idx->scratch_cap[k], *len + 1, 1) != 0) return NULL;
  memcpy(idx->scratch[k], idx->names + d->off, d->len);
  memcpy(idx->scratch[k] + d->len, idx->names + l->off, l->len);
  return idx->scratch[k];
}

int chb_index_get(chb_index *idx, size_t i, chb_index_entry *out) {
  if (i >= idx->count) return -1;
  const rec *r = &idx->recs[i];
  memset(out, 0, sizeof *out);
  out->name = joined(idx, r, 0, &out->name_len);
  if (!out->name) return -2;
  out->size = r->size;
  out->has_checksum = (r->flags & F_CHECKSUM) != 0;
  out->checksum = r->checksum;
  out->use_base = (r->flags & F_USE_BASE_SET) ? (r->flags & F_USE_BASE) != 0 : CHB_ABSENT;
  out->encrypted_by_disk = (r->flags & F_ENC_SET) ? (r->flags & F_ENC) != 0 : CHB_ABSENT;
  if (r->flags & F_DATA_REF) {
    out->data_file = joined(idx, &idx->recs[r->extra], 1, &out->data_file_len);
    if (!out->data_file) return -2;
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
  uint32_t tag, v = idx->by_name[name_slot(idx, name, len, &tag)];
  return v ? (long)slot_entry(idx->name_shift, v) : -1;
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


/* memcmp of the first n bytes of x's name with y (n <= both lengths). */
static int cmp_pieces(pieces x, const char *y, size_t n) {
  size_t k = x.an < n ? x.an : n;
  int c = memcmp(x.a, y, k);
  if (c || k == n) return c;
  return memcmp(x.b, y + k, n - k);
}

static int cmp_names(const void *a, const void *b, void *arg) {
  const chb_index *idx = arg;
  const rec *x = &idx->recs[*(const uint32_t *)a], *y = &idx->recs[*(const uint32_t *)b];
  if (x->dir == y->dir) {   /* (the usual case: two files of one part) */
    const str *p = &idx->strs[x->leaf], *q = &idx->strs[y->leaf];
    size_t n = p->len < q->len ? p->len : q->len;
    int c = memcmp(idx->names + p->off, idx->names + q->off, n);
    if (c) return c;
    return p->len < q->len ? -1 : p->len > q->len;
  }
  pieces px = pieces_of(idx, x), py = pieces_of(idx, y);
  size_t xn = px.an + px.bn, yn = py.an + py.bn, n = xn < yn ? xn : yn;
  /* y's pieces against x's: y's first piece, then its second */
  size_t k = py.an < n ? py.an : n;
  int c = cmp_pieces(px, py.a, k);
  if (!c && k < n) {
    pieces rest = px;   /* x after its first k bytes */
    if (k < rest.an) {
      rest.a += k, rest.an -= k;
    } else {
      rest.b += k - rest.an, rest.bn -= k - rest.an, rest.a = rest.b, rest.an = rest.bn, rest.bn = 0;
    }
    c = cmp_pieces(rest, py.b, n - k);
  }
  if (c) return c;
  return xn < yn ? -1 : xn > yn;
}

/* <0, 0 or >0: entry i's name before the names starting with prefix, one
 * of them, or after them. */
static int cmp_prefix(const chb_index *idx, uint32_t i, const char *prefix, size_t len) {
  const rec *r = &idx->recs[i];
  size_t rn = name_len_of(idx, r), n = rn < len ? rn : len;
  int c = cmp_pieces(pieces_of(idx, r), prefix, n);
  if (c) return c;
  return rn < len ? -1 : 0;
}

int chb_index_prefix(chb_index *idx, const char *prefix, size_t len, size_t *lo, size_t *hi) {
  if (!idx->sorted) {
    idx->sorted = malloc((idx->count ? idx->count : 1) * sizeof(uint32_t));
    if (!idx->sorted) return -2;
    int in_order = 1;
    for (size_t i = 0; i < idx->count; i++) {
      idx->sorted[i] = (uint32_t)i;
      if (in_order && i > 0 && cmp_names(&idx->sorted[i - 1], &idx->sorted[i], idx) > 0) in_order = 0;
    }
    /* (a manifest as written, or made from parts in name order, is in order
     * already: one pass instead of n log n comparisons) */
    if (!in_order) qsort_r(idx->sorted, idx->count, sizeof(uint32_t), cmp_names, idx);
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
  shrink((void **)&idx->strs, &idx->strs_cap, idx->nstrs, sizeof(str));
}

size_t chb_index_memory(const chb_index *idx) {
  return sizeof *idx + idx->cap * sizeof(rec) + idx->extra_cap * sizeof(extra) + idx->names_cap +
         idx->strs_cap * sizeof(str) + idx->scratch_cap[0] + idx->scratch_cap[1] +
         (idx->by_name_cap + idx->by_content_cap + idx->by_str_cap) * sizeof(uint32_t) +
         (idx->sorted ? idx->count * sizeof(uint32_t) : 0) + idx->base_map_len * sizeof(uint32_t);
}
