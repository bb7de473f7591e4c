/*
 * chb_index: see chb_index.h. Records in one array; a name is two interned
 * strings, its directory (up to its last '/') and its file name: a part's
 * dozen files share one directory string and every part the same dozen
 * file names, so a name costs 8 bytes, not its length (issue 14).
 * Open-addressing tables of numbers (+1; 0 is an empty slot) with hash tags.
 * Everything that grows with the number of files or parts (records,
 * extras, the name and content tables, the name order, the interned
 * strings, their table and their bytes) is in paged arrays (chb_pages): in
 * memory up to the index's budget, past it in a temporary file. The
 * strings were kept in memory once, as they grow with parts, not files:
 * about 90 bytes a part (9 MB at 10^5 parts), the one term of a RESTORE's
 * peak that still grew (issue 14). A string is read by copying its bytes
 * out of their pages into a scratch buffer of the index.
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

/* One interned string: bytes [off, off + len) of the arena. */
typedef struct str {
  uint32_t off, len;
} str;

/* A cache of short strings interned (a part's file names, most
 * directories): found without the strings' table. */
typedef struct cached_str {
  uint32_t id;
  uint8_t len, used;
  char bytes[58];
} cached_str;

#define STR_CACHE 256   /* (16 KiB) */

/* The index's scratch buffers: what chb_index_get returns (a name, a
 * data_file) and a name a lookup or comparison reads (not one of those, so
 * that a name chb_index_get returned may be added again or looked up). */
enum { S_NAME, S_DATA_FILE, S_CMP_X, N_SCRATCH };

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
  chb_parray *bytes;       /* the arena (char): interned strings, extras' data_file */
  size_t arena_len;        /* bytes of the arena in use */
  chb_parray *strs;        /* str: interned strings, by id */
  size_t nstrs;
  chb_parray *by_str;      /* string hash -> id (slot) */
  size_t by_str_cap;
  char *scratch[N_SCRATCH];
  size_t scratch_cap[N_SCRATCH];
  char *last_dir;          /* the directory interned last, and its id: a */
  size_t last_dir_len, last_dir_cap;   /* part's files are added together */
  uint32_t last_dir_id;
  int has_last_dir;
  cached_str str_cache[STR_CACHE];
  chb_parray *by_name;     /* name hash -> entry (slot) */
  size_t by_name_cap;      /* a power of two, or 0 */
  chb_parray *by_content;  /* (size, checksum) -> first entry (slot); built lazily */
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
  idx->bytes = idx->pg ? chb_parray_new(idx->pg, 1) : NULL;
  idx->strs = idx->pg ? chb_parray_new(idx->pg, sizeof(str)) : NULL;
  if (!idx->recs || !idx->extras || !idx->bytes || !idx->strs) {
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
  chb_parray_free(idx->bytes);
  chb_parray_free(idx->strs);
  chb_parray_free(idx->by_str);
  for (int k = 0; k < N_SCRATCH; k++) free(idx->scratch[k]);
  free(idx->last_dir);
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

/* An array of cap zeroed elements of elem bytes (pages never used read
 * as zeros): a table, the name order. */
static chb_parray *new_zeroed(chb_index *idx, size_t elem, size_t cap) {
  chb_parray *t = chb_parray_new(idx->pg, elem);
  if (t && chb_parray_reserve(t, cap) != 0) {
    chb_parray_free(t);
    return NULL;
  }
  return t;
}

/* The hash tables (strings, names, contents) are open-addressed, each
 * slot a number + 1 (0: empty) and the high half of its hash: a probe
 * reads a record or string only when the tags match, not at every slot it
 * passes (the record's page may be on disk: at 10^6 files most probes
 * would read one). */
typedef struct hslot {
  uint32_t v, tag;
} hslot;

static chb_parray *new_slots(chb_index *idx, size_t cap) { return new_zeroed(idx, sizeof(hslot), cap); }

/* Where a key's probe starts in a table, and its tag. */
typedef struct hpos {
  size_t start;
  uint32_t tag;
} hpos;

/* A key of hash h in a table of cap slots: anywhere. */
static hpos pos_of(uint64_t h, size_t cap) {
  hpos p = {(size_t)h & (cap - 1), (uint32_t)(h >> 32)};
  return p;
}

/* 1 if number n is what a probe looks for, 0 if not, -1 on a failure. */
typedef int (*match_fn)(chb_index *idx, uint32_t n, const void *arg);

/* Probes table t of cap slots from pos: the slot of the number match
 * takes (*v that number + 1) or the empty slot that ends the probe (*v
 * 0). -1 on a failure. */
static int probe(chb_index *idx, chb_parray *t, size_t cap, hpos pos, match_fn match, const void *arg, size_t *at,
                 uint32_t *v) {
  uint32_t tag = pos.tag;
  for (size_t k = pos.start;; k = (k + 1) & (cap - 1)) {
    const hslot *p = chb_parray_at(t, k, 0);
    if (!p) return -1;
    hslot x = *p;
    int m = !x.v ? 1 : x.tag != tag ? 0 : match(idx, x.v - 1, arg);
    if (m < 0) return -1;
    if (m) {
      *at = k, *v = x.v;
      return 0;
    }
  }
}

/* Number n + 1 into slot k of t, with pos's tag. */
static int slot_set(chb_parray *t, size_t k, hpos pos, uint32_t n) {
  hslot *p = chb_parray_at(t, k, 1);
  if (!p) return -1;
  p->v = n + 1, p->tag = pos.tag;
  return 0;
}

/* Number n into a table being built (of unique keys: no comparison). */
static int place(chb_parray *t, size_t cap, hpos pos, uint32_t n) {
  for (size_t k = pos.start;; k = (k + 1) & (cap - 1)) {
    const hslot *p = chb_parray_at(t, k, 0);
    if (!p) return -1;
    if (!p->v) return slot_set(t, k, pos, n);
  }
}

/* FNV-1a, then a final mix. */
static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
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

/* n bytes of the arena at off copied out to dst, or in from src, page by
 * page (a string may cross pages). -1 on an I/O failure. */
static int arena_copy(chb_index *idx, size_t off, char *dst, const char *src, size_t n) {
  while (n > 0) {
    size_t room = CHB_PAGE_SIZE - off % CHB_PAGE_SIZE, k = n < room ? n : room;
    char *p = chb_parray_at(idx->bytes, off, src != NULL);
    if (!p) return -1;
    if (src) memcpy(p, src, k), src += k; else memcpy(dst, p, k), dst += k;
    off += k, n -= k;
  }
  return 0;
}

/* Copies bytes into the arena; their offset in *off. */
static int add_bytes(chb_index *idx, const char *s, size_t n, uint32_t *off) {
  if (idx->arena_len + n > UINT32_MAX || chb_parray_reserve(idx->bytes, idx->arena_len + n) != 0 ||
      arena_copy(idx, idx->arena_len, NULL, s, n) != 0)
    return -1;
  *off = (uint32_t)idx->arena_len;
  idx->arena_len += n;
  return 0;
}

static int str_get(chb_index *idx, uint32_t id, str *out) {
  const str *p = chb_parray_at(idx->strs, id, 0);
  if (!p) return -1;
  *out = *p;
  return 0;
}

/* Scratch buffer k, at least n bytes; NULL when out of memory. */
static char *scratch(chb_index *idx, int k, size_t n) {
  if (grow((void **)&idx->scratch[k], &idx->scratch_cap[k], n + 1, 1) != 0) return NULL;
  return idx->scratch[k];
}

/* Bytes [off, off + len) of the arena, copied to scratch buffer k; NULL
 * when out of memory or on an I/O failure. */
static const char *arena_load(chb_index *idx, uint32_t off, uint32_t len, int k) {
  char *buf = scratch(idx, k, len);
  if (!buf || arena_copy(idx, off, buf, NULL, len) != 0) return NULL;
  return buf;
}

/* The name of interned strings dir and leaf, put together in scratch
 * buffer k; NULL when out of memory or on an I/O failure. */
static const char *load_name(chb_index *idx, uint32_t dir, uint32_t leaf, int k, size_t *len) {
  str d, l;
  if (str_get(idx, dir, &d) != 0 || str_get(idx, leaf, &l) != 0) return NULL;
  *len = (size_t)d.len + l.len;
  char *buf = scratch(idx, k, *len);
  if (!buf || arena_copy(idx, d.off, buf, NULL, d.len) != 0 ||
      arena_copy(idx, l.off, buf + d.len, NULL, l.len) != 0)
    return NULL;
  return buf;
}

/* The table of interned strings, at cap slots (twice their number). */
static int rehash_strs(chb_index *idx, size_t cap) {
  chb_parray *t = new_slots(idx, cap);
  if (!t) return -1;
  for (size_t id = 0; id < idx->nstrs; id++) {
    str x;
    const char *b = str_get(idx, (uint32_t)id, &x) == 0 ? arena_load(idx, x.off, x.len, S_CMP_X) : NULL;
    if (!b || place(t, cap, pos_of(hash_bytes(b, x.len), cap), (uint32_t)id) != 0) goto fail;
  }
  chb_parray_free(idx->by_str);
  idx->by_str = t, idx->by_str_cap = cap;
  return 0;
fail:
  chb_parray_free(t);
  return -1;
}

typedef struct bytes_arg {
  const char *s;
  size_t n;
} bytes_arg;

static int str_is(chb_index *idx, uint32_t id, const void *arg) {
  const bytes_arg *want = arg;
  str x;
  if (str_get(idx, id, &x) != 0) return -1;
  if (x.len != want->n) return 0;
  const char *b = arena_load(idx, x.off, x.len, S_CMP_X);
  return b ? memcmp(b, want->s, want->n) == 0 : -1;
}

/* What lookup_str returns for a string not interned (and not added). */
#define NOT_INTERNED (-3)

/* The id of the interned string s: from the cache of short strings, else
 * from the strings' table, where it is added if new when add is set.
 * NOT_INTERNED (not there, add not set), or -1 when out of memory or on
 * an I/O failure. */
static long lookup_str(chb_index *idx, const char *s, size_t n, int add) {
  if (n > UINT32_MAX || idx->nstrs >= MAX_ENTRIES) return -1;
  uint64_t h = hash_bytes(s, n);
  cached_str *c = &idx->str_cache[h % STR_CACHE];
  if (c->used && c->len == n && memcmp(c->bytes, s, n) == 0) return c->id;
  if (add && (idx->nstrs + 1) * 2 > idx->by_str_cap && rehash_strs(idx, idx->by_str_cap ? idx->by_str_cap * 2 : 64) != 0)
    return -1;
  if (!idx->by_str_cap) return NOT_INTERNED;
  size_t k;
  uint32_t v;
  bytes_arg want = {s, n};
  if (probe(idx, idx->by_str, idx->by_str_cap, pos_of(h, idx->by_str_cap), str_is, &want, &k, &v) != 0) return -1;
  long id = (long)v - 1;
  if (!v) {
    if (!add) return NOT_INTERNED;
    str x = {0, (uint32_t)n};
    if (chb_parray_reserve(idx->strs, idx->nstrs + 1) != 0 || add_bytes(idx, s, n, &x.off) != 0) return -1;
    str *p = chb_parray_at(idx->strs, idx->nstrs, 1);
    if (!p) return -1;
    *p = x;
    if (slot_set(idx->by_str, k, pos_of(h, idx->by_str_cap), (uint32_t)idx->nstrs) != 0) return -1;
    id = (long)idx->nstrs++;
  }
  if (n <= sizeof c->bytes) {
    memcpy(c->bytes, s, n);
    c->len = (uint8_t)n, c->id = (uint32_t)id, c->used = 1;
  }
  return id;
}

/* Where a name's directory ends: after its last '/' (0: none). */
static size_t dir_len(const char *name, size_t len) {
  while (len > 0 && name[len - 1] != '/') len--;
  return len;
}

/* As lookup_str, for directory d (a name's first n bytes): the last one
 * found again without a lookup (a part's files come together; a part's
 * directory is often longer than the cache's strings). */
static long lookup_dir(chb_index *idx, const char *d, size_t n, int add) {
  if (idx->has_last_dir && idx->last_dir_len == n && memcmp(idx->last_dir, d, n) == 0) return idx->last_dir_id;
  long id = lookup_str(idx, d, n, add);
  if (id < 0) return id;
  if (grow((void **)&idx->last_dir, &idx->last_dir_cap, n + 1, 1) != 0) return -1;
  memcpy(idx->last_dir, d, n);
  idx->last_dir_len = n, idx->last_dir_id = (uint32_t)id, idx->has_last_dir = 1;
  return id;
}

/* A name as its directory's and file name's ids (interned: equal names,
 * equal ids), and the hash of the by_name table. 0, NOT_INTERNED (with
 * add not set: no entry has this name), or -1 on a failure. */
typedef struct name_ids {
  uint32_t dir, leaf;
} name_ids;

static int name_ids_of(chb_index *idx, const char *name, size_t len, int add, name_ids *out) {
  size_t dl = dir_len(name, len);
  long dir = lookup_dir(idx, name, dl, add);
  long leaf = dir < 0 ? dir : lookup_str(idx, name + dl, len - dl, add);
  if (leaf < 0) return (int)leaf;
  out->dir = (uint32_t)dir, out->leaf = (uint32_t)leaf;
  return 0;
}

static uint64_t hash_ids(uint32_t dir, uint32_t leaf) {
  uint64_t h = ((uint64_t)dir << 32 | leaf) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

/* A name's place in the by_name table: the files of one directory near
 * each other, in one page's window of NAME_WINDOW slots chosen by the
 * directory (and, past 64 file names, by which 64 of them: a directory of
 * 10^5 files spreads over many windows, never one long probe), so that a
 * part's files, added and looked up together, cost one page of the table,
 * not one each (at 10^6 files most of the table's pages are on disk). */
#define NAME_WINDOW ((size_t)CHB_PAGE_SIZE / sizeof(hslot))

static hpos name_pos(uint32_t dir, uint32_t leaf, size_t cap) {
  uint64_t window = hash_ids(dir, leaf >> 6), h = hash_ids(dir, leaf);
  size_t w = NAME_WINDOW < cap ? NAME_WINDOW : cap;
  hpos p = {((size_t)window & (cap - 1) & ~(w - 1)) | ((size_t)h & (w - 1)), (uint32_t)(h >> 32)};
  return p;
}

static int name_is(chb_index *idx, uint32_t i, const void *arg) {
  const name_ids *ids = arg;
  rec r;
  if (rec_get(idx, i, &r) != 0) return -1;
  return r.dir == ids->dir && r.leaf == ids->leaf;
}

/* The slot of the name of ids in the by_name table: its entry's (*v its
 * number + 1), or the empty one it would take (*v 0; *pos for slot_set).
 * -1 on a failure. */
static int name_slot(chb_index *idx, name_ids ids, hpos *pos, size_t *at, uint32_t *v) {
  *pos = name_pos(ids.dir, ids.leaf, idx->by_name_cap);
  return probe(idx, idx->by_name, idx->by_name_cap, *pos, name_is, &ids, at, v);
}

static int rehash_names(chb_index *idx, size_t cap) {
  chb_parray *t = new_slots(idx, cap);
  if (!t) return -1;
  for (size_t i = 0; i < idx->count; i++) {
    rec r;
    if (rec_get(idx, i, &r) != 0 || place(t, cap, name_pos(r.dir, r.leaf, cap), (uint32_t)i) != 0) {
      chb_parray_free(t);
      return -1;
    }
  }
  chb_parray_free(idx->by_name);
  idx->by_name = t;
  idx->by_name_cap = cap;
  return 0;
}

static int content_add(chb_index *idx, size_t i);

long chb_index_add(chb_index *idx, const chb_index_entry *e, size_t *existing) {
  if (idx->count >= MAX_ENTRIES) return -2;
  if ((idx->count + 1) * 2 > idx->by_name_cap &&
      rehash_names(idx, idx->by_name_cap ? idx->by_name_cap * 2 : 1024) != 0)
    return -2;
  size_t slot;
  uint32_t v;
  name_ids ids;
  hpos pos;
  /* (a name's strings are interned first: a name looked up is two ids) */
  if (name_ids_of(idx, e->name, e->name_len, 1, &ids) != 0 || name_slot(idx, ids, &pos, &slot, &v) != 0) return -2;
  if (v) {
    if (existing) *existing = v - 1;
    return -1;
  }
  if (chb_parray_reserve(idx->recs, idx->count + 1) != 0) return -2;
  rec r = {0};
  r.size = e->size;
  r.dir = ids.dir, r.leaf = ids.leaf;
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
  if (slot_set(idx->by_name, slot, pos, (uint32_t)idx->count) != 0) return -2;
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

int chb_index_get(chb_index *idx, size_t i, chb_index_entry *out) {
  if (i >= idx->count) return -1;
  rec r;
  if (rec_get(idx, i, &r) != 0) return -2;
  memset(out, 0, sizeof *out);
  out->name = load_name(idx, r.dir, r.leaf, S_NAME, &out->name_len);
  if (!out->name) return -2;
  out->size = r.size;
  out->has_checksum = (r.flags & F_CHECKSUM) != 0;
  out->checksum = r.checksum;
  out->use_base = (r.flags & F_USE_BASE_SET) ? (r.flags & F_USE_BASE) != 0 : CHB_ABSENT;
  out->encrypted_by_disk = (r.flags & F_ENC_SET) ? (r.flags & F_ENC) != 0 : CHB_ABSENT;
  if (r.flags & F_DATA_REF) {
    rec d;
    if (rec_get(idx, r.extra, &d) != 0) return -2;
    out->data_file = load_name(idx, d.dir, d.leaf, S_DATA_FILE, &out->data_file_len);
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
      out->data_file = arena_load(idx, x.data_file_off, x.data_file_len, S_DATA_FILE);
      out->data_file_len = x.data_file_len;
      if (!out->data_file) return -2;
    }
  }
  return 0;
}

long chb_index_find(chb_index *idx, const char *name, size_t len) {
  if (!idx->by_name_cap) return -1;
  size_t slot;
  uint32_t v;
  name_ids ids;
  hpos pos;
  int rc = name_ids_of(idx, name, len, 0, &ids);
  if (rc == NOT_INTERNED) return -1;
  if (rc != 0 || name_slot(idx, ids, &pos, &slot, &v) != 0) return -2;
  return v ? (long)v - 1 : -1;
}

static int same_content(const rec *r, uint64_t size, chb_u128 sum) {
  return r->size == size && r->checksum.lo == sum.lo && r->checksum.hi == sum.hi;
}

typedef struct content_arg {
  uint64_t size;
  chb_u128 sum;
} content_arg;

static int content_is(chb_index *idx, uint32_t i, const void *arg) {
  const content_arg *want = arg;
  rec r;
  if (rec_get(idx, i, &r) != 0) return -1;
  return same_content(&r, want->size, want->sum);
}

/* As name_slot, in the content table. */
static int content_slot(chb_index *idx, uint64_t size, chb_u128 sum, size_t *at, uint32_t *v) {
  content_arg want = {size, sum};
  return probe(idx, idx->by_content, idx->by_content_cap, pos_of(hash_content(size, sum), idx->by_content_cap), content_is,
               &want, at, v);
}

static int content_put(chb_index *idx, size_t i) {
  rec r;
  if (rec_get(idx, i, &r) != 0) return -1;
  if (r.size == 0 || !(r.flags & F_CHECKSUM) || (r.flags & F_NO_CONTENT)) return 0;
  size_t s;
  uint32_t v;
  if (content_slot(idx, r.size, r.checksum, &s, &v) != 0) return -1;
  /* (the first one stays) */
  return v ? 0 : slot_set(idx->by_content, s, pos_of(hash_content(r.size, r.checksum), idx->by_content_cap), (uint32_t)i);
}

/* The content table for entries [0, n), at least twice their number. */
static int build_content_of(chb_index *idx, size_t n) {
  size_t cap = 1024;
  while (cap < n * 2) cap *= 2;
  drop_content(idx);
  idx->by_content = new_slots(idx, cap);
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

/* memcmp order of two byte strings, the shorter first on a tie. */
static int cmp_bytes(const char *x, size_t xn, const char *y, size_t yn) {
  int c = memcmp(x, y, xn < yn ? xn : yn);
  if (c) return c;
  return xn < yn ? -1 : xn > yn;
}

/* <0, 0 or >0: entry i's name before the names starting with prefix, one
 * of them, or after them; *err set on a failure. */
static int cmp_prefix(chb_index *idx, uint32_t i, const char *prefix, size_t len, int *err) {
  rec r;
  size_t rn;
  const char *name = rec_get(idx, i, &r) == 0 ? load_name(idx, r.dir, r.leaf, S_CMP_X, &rn) : NULL;
  if (!name) {
    *err = 1;
    return 0;
  }
  int c = memcmp(name, prefix, rn < len ? rn : len);
  if (c) return c;
  return rn < len ? -1 : 0;
}

/* The name order is sorted CHUNK entries at a time with their names copied
 * out of the pages into one buffer (about 50 bytes a name: under 1 MiB;
 * comparing names in their pages would read a page per comparison once the
 * index is spilled), runs of more merged: memory bounded at any count. */
#define CHUNK ((size_t)1 << 14)

/* An entry being sorted: its name, bytes [off, off + len) of the chunk's
 * buffer. */
typedef struct key {
  uint32_t entry, off, len;
} key;

typedef struct chunk {
  key keys[CHUNK];
  char *names;
  size_t len, cap;
} chunk;

static int cmp_keys_r(const void *a, const void *b, void *arg) {
  const key *x = a, *y = b;
  const char *names = arg;
  return cmp_bytes(names + x->off, x->len, names + y->off, y->len);
}

/* Entry i's name into *buf (grown as needed); its length in *len. */
static int load_entry_name(chb_index *idx, size_t i, char **buf, size_t *cap, size_t at, size_t *len) {
  rec r;
  const char *name = rec_get(idx, i, &r) == 0 ? load_name(idx, r.dir, r.leaf, S_CMP_X, len) : NULL;
  if (!name || grow((void **)buf, cap, at + *len + 1, 1) != 0) return -1;
  memcpy(*buf + at, name, *len);
  return 0;
}

/* Entries [from, from + n) and their names into c. */
static int load_chunk(chb_index *idx, chunk *c, size_t from, size_t n) {
  c->len = 0;
  for (size_t k = 0; k < n; k++) {
    size_t len;
    if (load_entry_name(idx, from + k, &c->names, &c->cap, c->len, &len) != 0 || len > UINT32_MAX) return -1;
    c->keys[k].entry = (uint32_t)(from + k), c->keys[k].off = (uint32_t)c->len, c->keys[k].len = (uint32_t)len;
    c->len += len;
  }
  return 0;
}

/* A run's next entry and its name, in the merge. */
typedef struct head {
  uint32_t entry;
  char *name;
  size_t len, cap, pos, end;
} head;

static int head_load(chb_index *idx, chb_parray *runs, head *h) {
  return u32_get(runs, h->pos, &h->entry) != 0 ? -1 : load_entry_name(idx, h->entry, &h->name, &h->cap, 0, &h->len);
}

static int head_less(const head *x, const head *y) { return cmp_bytes(x->name, x->len, y->name, y->len) < 0; }

/* Merges the sorted runs of CHUNK entries each (runs: their entry numbers)
 * into the name order: a heap of the runs' next names. */
static int merge_runs(chb_index *idx, chb_parray *runs, size_t nruns) {
  head *h = calloc(nruns, sizeof *h);
  int rc = -1;
  if (!h) return -1;
  size_t n = 0;
  for (size_t r = 0; r < nruns; r++) {
    h[n].pos = r * CHUNK, h[n].end = h[n].pos + CHUNK < idx->count ? h[n].pos + CHUNK : idx->count;
    if (head_load(idx, runs, &h[n]) != 0) goto out;
    for (size_t c = n++; c > 0 && head_less(&h[c], &h[(c - 1) / 2]); c = (c - 1) / 2) {
      head t = h[c];
      h[c] = h[(c - 1) / 2], h[(c - 1) / 2] = t;
    }
  }
  for (size_t out = 0; n > 0; out++) {
    if (u32_set(idx->sorted, out, h[0].entry) != 0) goto out;
    if (++h[0].pos < h[0].end) {
      if (head_load(idx, runs, &h[0]) != 0) goto out;
    } else {   /* the run is done: its buffer goes with it */
      head t = h[0];
      h[0] = h[--n], h[n] = t;
    }
    for (size_t c = 0;;) {   /* sift down */
      size_t l = 2 * c + 1, m = c;
      if (l < n && head_less(&h[l], &h[m])) m = l;
      if (l + 1 < n && head_less(&h[l + 1], &h[m])) m = l + 1;
      if (m == c) break;
      head t = h[c];
      h[c] = h[m], h[m] = t;
      c = m;
    }
  }
  rc = 0;
out:
  for (size_t r = 0; r < nruns; r++) free(h[r].name);
  free(h);
  return rc;
}

/* Whether the entries were added in name order (as `.backup` lists them):
 * 1, 0, or -1 on a failure. */
static int added_in_order(chb_index *idx) {
  char *buf[2] = {NULL, NULL};
  size_t cap[2] = {0, 0}, len[2] = {0, 0};
  int rc = 1;
  for (size_t i = 0; i < idx->count && rc == 1; i++) {
    int k = (int)(i & 1);
    if (load_entry_name(idx, i, &buf[k], &cap[k], 0, &len[k]) != 0) rc = -1;
    else if (i > 0 && cmp_bytes(buf[!k], len[!k], buf[k], len[k]) >= 0) rc = 0;
  }
  free(buf[0]);
  free(buf[1]);
  return rc;
}

/* The name order: none needed when the entries were added in it, else
 * sorted. */
static int build_sorted(chb_index *idx) {
  drop_sorted(idx);
  int in_order = added_in_order(idx);
  if (in_order < 0) return -1;
  if (in_order) {
    idx->sorted_identity = idx->sorted_built = 1;
    return 0;
  }
  size_t nruns = (idx->count + CHUNK - 1) / CHUNK;
  chunk *c = calloc(1, sizeof *c);
  chb_parray *runs = nruns > 1 ? chb_parray_new(idx->pg, sizeof(uint32_t)) : NULL;
  idx->sorted = new_zeroed(idx, sizeof(uint32_t), idx->count);
  if (!c || !idx->sorted || (nruns > 1 && (!runs || chb_parray_reserve(runs, idx->count) != 0))) goto fail;
  for (size_t r = 0; r < nruns; r++) {
    size_t from = r * CHUNK, m = idx->count - from < CHUNK ? idx->count - from : CHUNK;
    if (load_chunk(idx, c, from, m) != 0) goto fail;
    qsort_r(c->keys, m, sizeof(key), cmp_keys_r, c->names);
    for (size_t k = 0; k < m; k++)
      if (u32_set(nruns == 1 ? idx->sorted : runs, from + k, c->keys[k].entry) != 0) goto fail;
  }
  free(c->names);
  free(c);
  c = NULL;
  if (nruns > 1 && merge_runs(idx, runs, nruns) != 0) goto fail;
  chb_parray_free(runs);
  idx->sorted_built = 1;
  return 0;
fail:
  if (c) free(c->names);
  free(c);
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

size_t chb_index_memory(const chb_index *idx) {
  size_t n = sizeof *idx + chb_pager_memory(idx->pg);
  for (int k = 0; k < N_SCRATCH; k++) n += idx->scratch_cap[k];
  n += idx->last_dir_cap;
  return n;
}
