/*
 * chb_index: see chb_index.h. Records in one array; a name is two interned
 * strings, its directory (up to its last '/') and its file name: a part's
 * dozen files share one directory string and every part the same dozen
 * file names, so a name costs 8 bytes, not its length (issue 14).
 * Open-addressing tables of entry numbers (+1; 0 is an empty slot).
 * What grows with the number of files (records, extras, the name and
 * content tables, the name order) is in paged arrays (chb_pages): in
 * memory up to the index's budget, past it in a temporary file. The
 * interned strings stay in memory: they grow with directories (parts),
 * not with files.
 */
#include "chb_index.h"
#include "chb_pages.h"

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
  chb_pager *pg;           /* the per-file arrays' pages: in memory up to a budget */
  chb_parray *recs;        /* rec, by entry number */
  size_t count;
  chb_parray *extras;      /* extra */
  size_t nextra;
  char *names;             /* the arena: interned strings, extras' data_file */
  size_t names_len, names_cap;
  str *strs;               /* interned strings, by id */
  size_t nstrs, strs_cap;
  uint32_t *by_str;        /* string hash -> id + 1 */
  size_t by_str_cap;
  char *scratch[2];        /* a name and a data_file put together by chb_index_get */
  size_t scratch_cap[2];
  chb_parray *by_name;     /* name hash -> entry + 1 (uint32_t) */
  size_t by_name_cap;      /* a power of two, or 0 */
  chb_parray *by_content;  /* (size, checksum) -> first entry + 1; built lazily */
  size_t by_content_cap;
  chb_parray *sorted;      /* entries in name order; built lazily */
  int sorted_identity;     /* or: added in name order (as `.backup` lists them) */
  int sorted_built;
};

#define MAX_ENTRIES ((size_t)INT32_MAX)

chb_index *chb_index_new(void) { return chb_index_new_budget(CHB_INDEX_BUDGET, NULL); }

chb_index *chb_index_new_budget(size_t budget, const char *tmpdir) {
  chb_pager *pg = chb_pager_new(budget, tmpdir);
  if (!pg) return NULL;
  chb_index *idx = chb_index_new_in(pg);
  chb_pager_free(pg);   /* (the index's reference is the one left) */
  return idx;
}

chb_index *chb_index_new_in(chb_pager *pg) {
  chb_index *idx = calloc(1, sizeof(chb_index));
  if (!idx) return NULL;
  chb_pager_ref(pg);
  idx->pg = pg;
  idx->recs = idx->pg ? chb_parray_new(idx->pg, sizeof(rec)) : NULL;
  idx->extras = idx->pg ? chb_parray_new(idx->pg, sizeof(extra)) : NULL;
  if (!idx->recs || !idx->extras) {
    chb_index_free(idx);
    return NULL;
  }
  return idx;
}

static void drop_sorted(chb_index *idx) {
  chb_parray_free(idx->sorted);
  idx->sorted = NULL;
  idx->sorted_identity = idx->sorted_built = 0;
}

static void drop_content(chb_index *idx) {
  chb_parray_free(idx->by_content);
  idx->by_content = NULL;
  idx->by_content_cap = 0;
}

void chb_index_free(chb_index *idx) {
  if (!idx) return;
  chb_parray_free(idx->recs);
  chb_parray_free(idx->extras);
  free(idx->names);
  free(idx->strs);
  free(idx->by_str);
  free(idx->scratch[0]);
  free(idx->scratch[1]);
  chb_parray_free(idx->by_name);
  drop_content(idx);
  drop_sorted(idx);
  chb_pager_free(idx->pg);
  free(idx);
}

size_t chb_index_count(const chb_index *idx) { return idx->count; }

const char *chb_index_error(const chb_index *idx) { return chb_pager_error(idx->pg); }

int chb_index_spilled(const chb_index *idx) { return chb_pager_spilled(idx->pg); }

/* Paged elements, copied out or in: a pointer into a page is good only
 * until the next access (chb_pages.h). -1 on an I/O failure. */
static int rec_get(chb_index *idx, size_t i, rec *out) {
  const rec *p = chb_parray_at(idx->recs, i, 0);
  if (!p) return -1;
  *out = *p;
  return 0;
}

static int u32_get(chb_parray *a, size_t i, uint32_t *v) {
  const uint32_t *p = chb_parray_at(a, i, 0);
  if (!p) return -1;
  *v = *p;
  return 0;
}

static int u32_set(chb_parray *a, size_t i, uint32_t v) {
  uint32_t *p = chb_parray_at(a, i, 1);
  if (!p) return -1;
  *p = v;
  return 0;
}

/* A table of cap zeroed slots (pages never used read as zeros). */
static chb_parray *new_table(chb_index *idx, size_t cap) {
  chb_parray *t = chb_parray_new(idx->pg, sizeof(uint32_t));
  if (t && chb_parray_reserve(t, cap) != 0) {
    chb_parray_free(t);
    return NULL;
  }
  return t;
}

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

/* The slot of name in the by_name table: its entry's (*v its number + 1),
 * or the empty one it would take (*v 0). -1 on an I/O failure. */
static int name_slot(chb_index *idx, const char *name, size_t len, size_t *slot, uint32_t *v) {
  size_t mask = idx->by_name_cap - 1, s = (size_t)hash_bytes(name, len) & mask;
  for (;; s = (s + 1) & mask) {
    rec r;
    if (u32_get(idx->by_name, s, v) != 0) return -1;
    if (!*v) break;
    if (rec_get(idx, *v - 1, &r) != 0) return -1;
    if (name_is(idx, &r, name, len)) break;
  }
  *slot = s;
  return 0;
}

static int rehash_names(chb_index *idx, size_t cap) {
  chb_parray *t = new_table(idx, cap);
  if (!t) return -1;
  for (size_t i = 0; i < idx->count; i++) {
    rec r;
    uint32_t v;
    if (rec_get(idx, i, &r) != 0) goto fail;
    size_t s = (size_t)hash_rec(idx, &r) & (cap - 1);
    for (;; s = (s + 1) & (cap - 1)) {   /* (names are unique: no comparison) */
      if (u32_get(t, s, &v) != 0) goto fail;
      if (!v) break;
    }
    if (u32_set(t, s, (uint32_t)i + 1) != 0) goto fail;
  }
  chb_parray_free(idx->by_name);
  idx->by_name = t;
  idx->by_name_cap = cap;
  return 0;
fail:
  chb_parray_free(t);
  return -1;
}


static int content_add(chb_index *idx, size_t i);

long chb_index_add(chb_index *idx, const chb_index_entry *e, size_t *existing) {
  if (idx->count >= MAX_ENTRIES) return -2;
  if ((idx->count + 1) * 2 > idx->by_name_cap &&
      rehash_names(idx, idx->by_name_cap ? idx->by_name_cap * 2 : 1024) != 0)
    return -2;
  size_t slot;
  uint32_t v;
  if (name_slot(idx, e->name, e->name_len, &slot, &v) != 0) return -2;
  if (v) {
    if (existing) *existing = v - 1;
    return -1;
  }
  if (chb_parray_reserve(idx->recs, idx->count + 1) != 0) return -2;
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
  if (ref == -2) return -2;
  if (ref >= 0) {   /* a copy of an entry (most copies): its number, not its name again */
    r.flags |= F_DATA_REF;
    r.extra = (uint32_t)ref;
  } else if (e->has_base_size || e->has_base_checksum || e->data_file) {
    if (idx->nextra >= MAX_ENTRIES || chb_parray_reserve(idx->extras, idx->nextra + 1) != 0) return -2;
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
    extra *px = chb_parray_at(idx->extras, idx->nextra, 1);
    if (!px) return -2;
    *px = x;
    r.flags |= F_EXTRA;
    r.extra = (uint32_t)idx->nextra++;
  }
  if (e->no_content) r.flags |= F_NO_CONTENT;
  rec *pr = chb_parray_at(idx->recs, idx->count, 1);
  if (!pr) return -2;
  *pr = r;
  if (u32_set(idx->by_name, slot, (uint32_t)(idx->count + 1)) != 0) return -2;
  idx->count++;
  /* the name order is made again on use; an index added to in name order
   * (as a manifest is read) is still in it */
  if (idx->sorted_built && !idx->sorted_identity) drop_sorted(idx);
  idx->sorted_built = 0;
  if (idx->by_content && content_add(idx, idx->count - 1) != 0) drop_content(idx);   /* built again on use */
  return (long)(idx->count - 1);
}

long chb_index_add_from_base(chb_index *idx, chb_index *base, size_t i, size_t *existing) {
  chb_index_entry b, e = {0};
  if (chb_index_get(base, i, &b) != 0) return -2;
  e.name = b.name, e.name_len = b.name_len, e.size = b.size;
  e.use_base = e.encrypted_by_disk = CHB_ABSENT;
  if (b.size > 0) {
    if (!b.has_checksum) return -2;
    e.has_checksum = 1, e.checksum = b.checksum, e.use_base = 1;
  }
  e.no_content = 1;
  return chb_index_add(idx, &e, existing);
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
  rec r;
  if (rec_get(idx, i, &r) != 0) return -2;
  memset(out, 0, sizeof *out);
  out->name = joined(idx, &r, 0, &out->name_len);
  if (!out->name) return -2;
  out->size = r.size;
  out->has_checksum = (r.flags & F_CHECKSUM) != 0;
  out->checksum = r.checksum;
  out->use_base = (r.flags & F_USE_BASE_SET) ? (r.flags & F_USE_BASE) != 0 : CHB_ABSENT;
  out->encrypted_by_disk = (r.flags & F_ENC_SET) ? (r.flags & F_ENC) != 0 : CHB_ABSENT;
  if (r.flags & F_DATA_REF) {
    rec d;
    if (rec_get(idx, r.extra, &d) != 0) return -2;
    out->data_file = joined(idx, &d, 1, &out->data_file_len);
    if (!out->data_file) return -2;
  } else if (r.flags & F_EXTRA) {
    const extra *px = chb_parray_at(idx->extras, r.extra, 0);
    if (!px) return -2;
    extra x = *px;
    out->has_base_size = (x.flags & X_BASE_SIZE) != 0;
    out->base_size = x.base_size;
    out->has_base_checksum = (x.flags & X_BASE_CHECKSUM) != 0;
    out->base_checksum = x.base_checksum;
    if (x.flags & X_DATA_FILE) {
      out->data_file = idx->names + x.data_file_off;
      out->data_file_len = x.data_file_len;
    }
  }
  return 0;
}

long chb_index_find(chb_index *idx, const char *name, size_t len) {
  if (!idx->by_name_cap) return -1;
  size_t slot;
  uint32_t v;
  if (name_slot(idx, name, len, &slot, &v) != 0) return -2;
  return v ? (long)v - 1 : -1;
}

static int same_content(const rec *r, uint64_t size, chb_u128 sum) {
  return r->size == size && r->checksum.lo == sum.lo && r->checksum.hi == sum.hi;
}

/* As name_slot, in the content table. */
static int content_slot(chb_index *idx, uint64_t size, chb_u128 sum, size_t *slot, uint32_t *v) {
  size_t mask = idx->by_content_cap - 1, s = (size_t)hash_content(size, sum) & mask;
  for (;; s = (s + 1) & mask) {
    rec r;
    if (u32_get(idx->by_content, s, v) != 0) return -1;
    if (!*v) break;
    if (rec_get(idx, *v - 1, &r) != 0) return -1;
    if (same_content(&r, size, sum)) break;
  }
  *slot = s;
  return 0;
}

static int content_put(chb_index *idx, size_t i) {
  rec r;
  if (rec_get(idx, i, &r) != 0) return -1;
  if (r.size == 0 || !(r.flags & F_CHECKSUM) || (r.flags & F_NO_CONTENT)) return 0;
  size_t s;
  uint32_t v;
  if (content_slot(idx, r.size, r.checksum, &s, &v) != 0) return -1;
  return v ? 0 : u32_set(idx->by_content, s, (uint32_t)(i + 1));   /* the first one stays */
}

/* The content table for entries [0, n), at least twice their number. */
static int build_content_of(chb_index *idx, size_t n) {
  size_t cap = 1024;
  while (cap < n * 2) cap *= 2;
  drop_content(idx);
  idx->by_content = new_table(idx, cap);
  if (!idx->by_content) return -1;
  idx->by_content_cap = cap;
  for (size_t i = 0; i < n; i++)
    if (content_put(idx, i) != 0) {
      drop_content(idx);
      return -1;
    }
  return 0;
}

static int build_content(chb_index *idx) { return build_content_of(idx, idx->count); }

/* Entry i, just added, into a built content table (grown when half full). */
static int content_add(chb_index *idx, size_t i) {
  if ((i + 1) * 2 > idx->by_content_cap) return build_content_of(idx, i + 1);
  return content_put(idx, i);
}

long chb_index_find_content(chb_index *idx, uint64_t size, chb_u128 checksum) {
  if (size == 0) return -1;
  if (!idx->by_content && build_content(idx) != 0) return -2;
  size_t s;
  uint32_t v;
  if (content_slot(idx, size, checksum, &s, &v) != 0) return -2;
  return v ? (long)v - 1 : -1;
}

/* A name as its two pieces. */
typedef struct pieces {
  const char *a, *b;
  size_t an, bn;
} pieces;

static pieces pieces_of(const chb_index *idx, uint32_t dir, uint32_t leaf) {
  const str *d = &idx->strs[dir], *l = &idx->strs[leaf];
  pieces p = {idx->names + d->off, idx->names + l->off, d->len, l->len};
  return p;
}

/* memcmp of the first n bytes of x's name with y (n <= both lengths). */
static int cmp_pieces(pieces x, const char *y, size_t n) {
  size_t k = x.an < n ? x.an : n;
  int c = memcmp(x.a, y, k);
  if (c || k == n) return c;
  return memcmp(x.b, y + k, n - k);
}

/* What the name order sorts: a name's two strings (in memory) and its
 * entry, so that sorting reads no record. */
typedef struct key {
  uint32_t dir, leaf, entry;
} key;

/* The order of two names, each its directory and file name. */
static int cmp_keys(const chb_index *idx, const key *x, const key *y) {
  if (x->dir == y->dir) {   /* (the usual case: two files of one part) */
    const str *p = &idx->strs[x->leaf], *q = &idx->strs[y->leaf];
    size_t n = p->len < q->len ? p->len : q->len;
    int c = memcmp(idx->names + p->off, idx->names + q->off, n);
    if (c) return c;
    return p->len < q->len ? -1 : p->len > q->len;
  }
  pieces px = pieces_of(idx, x->dir, x->leaf), py = pieces_of(idx, y->dir, y->leaf);
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

static int cmp_keys_r(const void *a, const void *b, void *arg) { return cmp_keys(arg, a, b); }

/* <0, 0 or >0: entry i's name before the names starting with prefix, one
 * of them, or after them; -2 in *err on an I/O failure. */
static int cmp_prefix(chb_index *idx, uint32_t i, const char *prefix, size_t len, int *err) {
  rec r;
  if (rec_get(idx, i, &r) != 0) {
    *err = 1;
    return 0;
  }
  size_t rn = name_len_of(idx, &r), n = rn < len ? rn : len;
  int c = cmp_pieces(pieces_of(idx, r.dir, r.leaf), prefix, n);
  if (c) return c;
  return rn < len ? -1 : 0;
}

/* Keys are sorted CHUNK at a time in memory (12 bytes each: 768 KiB),
 * runs of more merged from the pager: memory bounded at any count. */
#define CHUNK ((size_t)1 << 16)

static int put_sorted(chb_index *idx, size_t pos, uint32_t entry) {
  return u32_set(idx->sorted, pos, entry);
}

/* Fills keys with entries [from, from + n). */
static int load_keys(chb_index *idx, key *keys, size_t from, size_t n) {
  for (size_t k = 0; k < n; k++) {
    rec r;
    if (rec_get(idx, from + k, &r) != 0) return -1;
    keys[k].dir = r.dir, keys[k].leaf = r.leaf, keys[k].entry = (uint32_t)(from + k);
  }
  return 0;
}

/* Merges the sorted runs of CHUNK keys each into the name order: a heap
 * of the runs' next keys. */
static int merge_runs(chb_index *idx, chb_parray *runs, size_t nruns) {
  typedef struct head {
    key k;
    size_t pos, end;
  } head;
  head *h = malloc(nruns * sizeof *h);
  if (!h) return -1;
  size_t n = 0;
  for (size_t r = 0; r < nruns; r++) {
    size_t pos = r * CHUNK, end = pos + CHUNK < idx->count ? pos + CHUNK : idx->count;
    const key *k = chb_parray_at(runs, pos, 0);
    if (!k) goto fail;
    h[n].k = *k, h[n].pos = pos, h[n].end = end;
    for (size_t c = n++; c > 0 && cmp_keys(idx, &h[c].k, &h[(c - 1) / 2].k) < 0; c = (c - 1) / 2) {
      head t = h[c];
      h[c] = h[(c - 1) / 2], h[(c - 1) / 2] = t;
    }
  }
  for (size_t out = 0; n > 0; out++) {
    if (put_sorted(idx, out, h[0].k.entry) != 0) goto fail;
    if (++h[0].pos < h[0].end) {
      const key *k = chb_parray_at(runs, h[0].pos, 0);
      if (!k) goto fail;
      h[0].k = *k;
    } else {
      h[0] = h[--n];
    }
    for (size_t c = 0;;) {   /* sift down */
      size_t l = 2 * c + 1, m = c;
      if (l < n && cmp_keys(idx, &h[l].k, &h[m].k) < 0) m = l;
      if (l + 1 < n && cmp_keys(idx, &h[l + 1].k, &h[m].k) < 0) m = l + 1;
      if (m == c) break;
      head t = h[c];
      h[c] = h[m], h[m] = t;
      c = m;
    }
  }
  free(h);
  return 0;
fail:
  free(h);
  return -1;
}

/* The name order: none needed when the entries were added in it (as
 * `.backup` lists them), else sorted. */
static int build_sorted(chb_index *idx) {
  drop_sorted(idx);
  int in_order = 1;
  key prev = {0}, cur;
  for (size_t i = 0; i < idx->count && in_order; i++) {
    if (load_keys(idx, &cur, i, 1) != 0) return -1;
    if (i > 0 && cmp_keys(idx, &prev, &cur) >= 0) in_order = 0;
    prev = cur;
  }
  if (in_order) {
    idx->sorted_identity = idx->sorted_built = 1;
    return 0;
  }
  size_t n = idx->count < CHUNK ? idx->count : CHUNK, nruns = (idx->count + CHUNK - 1) / CHUNK;
  key *keys = malloc(n * sizeof *keys);
  chb_parray *runs = nruns > 1 ? chb_parray_new(idx->pg, sizeof(key)) : NULL;
  idx->sorted = new_table(idx, idx->count);
  if (!keys || !idx->sorted || (nruns > 1 && (!runs || chb_parray_reserve(runs, idx->count) != 0))) goto fail;
  for (size_t r = 0; r < nruns; r++) {
    size_t from = r * CHUNK, m = idx->count - from < CHUNK ? idx->count - from : CHUNK;
    if (load_keys(idx, keys, from, m) != 0) goto fail;
    qsort_r(keys, m, sizeof *keys, cmp_keys_r, idx);
    for (size_t k = 0; k < m; k++) {
      if (nruns == 1) {
        if (put_sorted(idx, k, keys[k].entry) != 0) goto fail;
      } else {
        key *p = chb_parray_at(runs, from + k, 1);
        if (!p) goto fail;
        *p = keys[k];
      }
    }
  }
  free(keys);
  keys = NULL;
  if (nruns > 1 && merge_runs(idx, runs, nruns) != 0) goto fail;
  chb_parray_free(runs);
  idx->sorted_built = 1;
  return 0;
fail:
  free(keys);
  chb_parray_free(runs);
  drop_sorted(idx);
  return -1;
}

/* The entry at position pos of the built name order; -1 on a failure. */
static long sorted_entry(chb_index *idx, size_t pos) {
  if (idx->sorted_identity) return (long)pos;
  uint32_t v;
  return u32_get(idx->sorted, pos, &v) != 0 ? -1 : (long)v;
}

int chb_index_prefix(chb_index *idx, const char *prefix, size_t len, size_t *lo, size_t *hi) {
  if (!idx->sorted_built && build_sorted(idx) != 0) return -2;
  int err = 0;
  size_t a = 0, b = idx->count;   /* first position not before the prefix */
  while (a < b && !err) {
    size_t m = a + (b - a) / 2;
    long i = sorted_entry(idx, m);
    if (i < 0) return -2;
    if (cmp_prefix(idx, (uint32_t)i, prefix, len, &err) < 0) a = m + 1; else b = m;
  }
  *lo = a;
  b = idx->count;                 /* first position after it */
  while (a < b && !err) {
    size_t m = a + (b - a) / 2;
    long i = sorted_entry(idx, m);
    if (i < 0) return -2;
    if (cmp_prefix(idx, (uint32_t)i, prefix, len, &err) <= 0) a = m + 1; else b = m;
  }
  *hi = a;
  return err ? -2 : 0;
}

long chb_index_sorted_at(chb_index *idx, size_t pos) {
  if (!idx->sorted_built || pos >= idx->count) return -1;
  long i = sorted_entry(idx, pos);
  return i < 0 ? -2 : i;
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
  shrink((void **)&idx->names, &idx->names_cap, idx->names_len + 1, 1);
  shrink((void **)&idx->strs, &idx->strs_cap, idx->nstrs, sizeof(str));
}

size_t chb_index_memory(const chb_index *idx) {
  return sizeof *idx + chb_pager_memory(idx->pg) + idx->names_cap + idx->strs_cap * sizeof(str) +
         idx->scratch_cap[0] + idx->scratch_cap[1] + idx->by_str_cap * sizeof(uint32_t);
}
