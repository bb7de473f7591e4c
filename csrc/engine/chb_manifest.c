/*
 * chb_manifest: see chb_manifest.h. The reader is manifest.lua's former
 * read_xml + check_file, message for message (spec/untrusted_manifest_spec,
 * spec/manifest_property_spec hold them to it).
 */
#include "chb_manifest.h"

#include <expat.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scalar fields of <config> and of a <file>; any other element is ignored
 * with its subtree (what later ClickHouse versions may add). */
static const char *const CONFIG_FIELDS[] = {
    "version", "deduplicate_files", "timestamp", "uuid", "base_backup", "base_backup_uuid",
    "data_file_name_generator",
};
enum { N_CONFIG = sizeof CONFIG_FIELDS / sizeof *CONFIG_FIELDS };

enum { F_NAME, F_SIZE, F_CHECKSUM, F_DATA_FILE, F_USE_BASE, F_BASE_SIZE, F_BASE_CHECKSUM, F_ENC, N_FILE };
static const char *const FILE_FIELDS[N_FILE] = {
    "name", "size", "checksum", "data_file", "use_base", "base_size", "base_checksum", "encrypted_by_disk",
};

typedef struct text {
  char *p;
  size_t len, cap;
} text;

struct chb_manifest_read {
  XML_Parser parser;
  chb_index *idx;
  char *err, *file_err;
  size_t depth;        /* open elements */
  size_t ignored;      /* depth of an unknown element being skipped, or 0 */
  int field;           /* the scalar being read: config field c is c, file field f is N_CONFIG + f; -1 none */
  text value;          /* its text */
  int have_contents;
  char *config[N_CONFIG];
  text file[N_FILE];
  int file_has[N_FILE];
  size_t nfiles;
  uint32_t *copies;    /* numbers of the entries with a data_file */
  size_t ncopies, copies_cap;
  char *copy_err;
  int oom;
};

static int text_put(text *t, const char *s, size_t n) {
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 64;
    while (cap < t->len + n + 1) cap *= 2;
    char *q = realloc(t->p, cap);
    if (!q) return -1;
    t->p = q, t->cap = cap;
  }
  memcpy(t->p + t->len, s, n);
  t->len += n;
  t->p[t->len] = '\0';
  return 0;
}

static char *vformat(const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(NULL, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

static char *format(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vformat(fmt, ap);
  va_end(ap);
  return s;
}

/* The first structural problem: kept, and the parser stopped. */
static void fail(chb_manifest_read *r, const char *fmt, ...) {
  if (r->err) return;
  va_list ap;
  va_start(ap, fmt);
  r->err = vformat(fmt, ap);
  va_end(ap);
  if (!r->err) r->oom = 1;
  XML_StopParser(r->parser, XML_FALSE);
}

static void file_fail(chb_manifest_read *r, char *msg) {
  if (!msg) r->oom = 1;
  if (!r->file_err) r->file_err = msg; else free(msg);
}

/* A value as shown in an error, as Lua's ("%q") shows it: quoted, at most
 * 64 bytes of it then "...", a line end as \n. */
static char *shown(const char *s, size_t n) {
  text t = {0};
  int cut = n > 64;
  if (cut) n = 64;
  int bad = text_put(&t, "\"", 1);
  for (size_t i = 0; i < n && !bad; i++) {
    unsigned char c = (unsigned char)s[i];
    char b[8];
    if (c == '"' || c == '\\') {
      b[0] = '\\', b[1] = (char)c, b[2] = 0;
    } else if (c == '\n') {
      strcpy(b, "\\n");
    } else if (c < 32 || c == 127) {
      /* (Lua pads to three digits only before a digit; "..." follows a cut) */
      int next_digit = i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9';
      snprintf(b, sizeof b, next_digit ? "\\%03u" : "\\%u", c);
    } else {
      b[0] = (char)c, b[1] = 0;
    }
    bad = text_put(&t, b, strlen(b));
  }
  if (!bad && cut) bad = text_put(&t, "...", 3);
  if (!bad) bad = text_put(&t, "\"", 1);
  if (bad) {
    free(t.p);
    return NULL;
  }
  return t.p;
}

/* Whether name is a safe relative path inside a backup: not empty, not
 * absolute, no empty, "." or ".." component, no NUL or control character
 * (manifest.safe_name). */
static int safe_name(const char *s, size_t n) {
  if (n == 0 || s[0] == '/' || s[n - 1] == '/') return 0;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i < n && ((unsigned char)s[i] < 32 || s[i] == 127)) return 0;
    if (i == n || s[i] == '/') {
      size_t len = i - start;
      if (len == 0) return 0;
      if (s[start] == '.' && (len == 1 || (len == 2 && s[start + 1] == '.'))) return 0;
      start = i + 1;
    }
  }
  return 1;
}

/* A non-negative integer in decimal digits that fits in an int64
 * (manifest.lua's count_of). */
static int count_of(const char *s, size_t n, uint64_t *out) {
  if (n == 0) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_C(0x7fffffffffffffff) - d) / 10) return 0;
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

static int checksum_of(const char *s, size_t n, chb_u128 *out) {
  return n == 32 && chb_u128_from_hex(s, out) == 0;
}

/* "true"/"1", "false"/"0": 1 or 0; -1 for anything else. */
static int boolean_of(const char *s) {
  if (!strcmp(s, "true") || !strcmp(s, "1")) return 1;
  if (!strcmp(s, "false") || !strcmp(s, "0")) return 0;
  return -1;
}

/* "file NAME: " + msg + shown(value) when value. */
static char *bad(const text *name, const char *what, const text *value, const char *rest) {
  char *v = value ? shown(value->p, value->len) : NULL;
  if (value && !v) return NULL;
  char *s = format("file %s: %s%s%s", name->p, what, v ? v : "", rest ? rest : "");
  free(v);
  return s;
}

static int add_copy(chb_manifest_read *r, long n) {
  if (r->ncopies == r->copies_cap) {
    size_t cap = r->copies_cap ? r->copies_cap * 2 : 64;
    uint32_t *q = realloc(r->copies, cap * sizeof *q);
    if (!q) return -1;
    r->copies = q, r->copies_cap = cap;
  }
  r->copies[r->ncopies++] = (uint32_t)n;
  return 0;
}

/* Checks the entry just read (the i-th, from 1) and adds it; the first
 * problem goes to file_err. */
static void end_file(chb_manifest_read *r, size_t i) {
  const text *f = r->file;
  const int *has = r->file_has;
  if (!has[F_NAME]) return file_fail(r, format("file entry %zu has no <name>", i));
  const text *name = &f[F_NAME];
  if (!safe_name(name->p, name->len)) {
    char *v = shown(name->p, name->len);
    file_fail(r, v ? format("file entry %zu has a name that is not a safe relative path: %s", i, v) : NULL);
    free(v);
    return;
  }
  chb_index_entry e = {0};
  e.name = name->p, e.name_len = name->len;
  e.use_base = e.encrypted_by_disk = CHB_ABSENT;
  if (!has[F_SIZE]) return file_fail(r, bad(name, "no <size>", NULL, NULL));
  if (!count_of(f[F_SIZE].p, f[F_SIZE].len, &e.size))
    return file_fail(r, bad(name, "size ", &f[F_SIZE], " is not a non-negative integer"));
  if (has[F_CHECKSUM]) {
    if (!checksum_of(f[F_CHECKSUM].p, f[F_CHECKSUM].len, &e.checksum))
      return file_fail(r, bad(name, "checksum ", &f[F_CHECKSUM], " is not 32 hexadecimal digits"));
    e.has_checksum = 1;
  }
  if (has[F_BASE_CHECKSUM]) {
    if (!checksum_of(f[F_BASE_CHECKSUM].p, f[F_BASE_CHECKSUM].len, &e.base_checksum))
      return file_fail(r, bad(name, "base_checksum ", &f[F_BASE_CHECKSUM], " is not 32 hexadecimal digits"));
    e.has_base_checksum = 1;
  }
  if (e.size > 0 && !e.has_checksum) return file_fail(r, bad(name, "no <checksum>", NULL, NULL));
  if (has[F_USE_BASE] && (e.use_base = boolean_of(f[F_USE_BASE].p)) < 0)
    return file_fail(r, bad(name, "use_base ", &f[F_USE_BASE], " is not true or false"));
  if (has[F_ENC] && (e.encrypted_by_disk = boolean_of(f[F_ENC].p)) < 0)
    return file_fail(r, bad(name, "encrypted_by_disk ", &f[F_ENC], " is not true or false"));
  if (has[F_BASE_SIZE]) {
    if (!count_of(f[F_BASE_SIZE].p, f[F_BASE_SIZE].len, &e.base_size))
      return file_fail(r, bad(name, "base_size ", &f[F_BASE_SIZE], " is not a non-negative integer"));
    if (e.base_size > e.size)
      return file_fail(r, format("file %s: base_size %" PRIu64 " is larger than its size %" PRIu64, name->p,
                                 e.base_size, e.size));
    if (e.use_base != 1) return file_fail(r, bad(name, "base_size without <use_base>true</use_base>", NULL, NULL));
    if (e.base_size > 0 && e.base_size < e.size && !e.has_base_checksum)
      return file_fail(r, format("file %s: base_size %" PRIu64 " without <base_checksum>", name->p, e.base_size));
    if (e.base_size == 0) {
      /* nothing from the base (as ClickHouse reads it): all stored here */
      e.has_base_checksum = 0;
      e.use_base = 0;
    } else {
      e.has_base_size = 1;
    }
  } else if (e.has_base_checksum) {
    return file_fail(r, bad(name, "base_checksum without <base_size>", NULL, NULL));
  }
  if (has[F_DATA_FILE]) {
    const text *d = &f[F_DATA_FILE];
    if (!safe_name(d->p, d->len))
      return file_fail(r, bad(name, "data_file is not a safe relative path: ", d, NULL));
    if (!(d->len == name->len && memcmp(d->p, name->p, d->len) == 0)) e.data_file = d->p, e.data_file_len = d->len;
  }
  long n = chb_index_add(r->idx, &e, NULL);
  if (n == -1) return file_fail(r, format("file %s is listed twice", name->p));
  if (n < 0 || (e.data_file && add_copy(r, n) != 0)) r->oom = 1, XML_StopParser(r->parser, XML_FALSE);
}

static int field_of(const char *const *names, int count, const char *name) {
  for (int i = 0; i < count; i++)
    if (!strcmp(names[i], name)) return i;
  return -1;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
  (void)attrs;
  chb_manifest_read *r = ud;
  if (r->err || r->oom) return;
  size_t depth = ++r->depth;
  if (r->ignored) return;
  if (r->field >= 0) {
    const char *parent = r->field < N_CONFIG ? CONFIG_FIELDS[r->field] : FILE_FIELDS[r->field - N_CONFIG];
    return fail(r, "<%s> holds an element <%s>", parent, name);
  }
  if (depth == 1) {
    if (strcmp(name, "config") != 0) fail(r, "its root element is <%s>, not <config>", name);
  } else if (depth == 2) {
    int c = field_of(CONFIG_FIELDS, N_CONFIG, name);
    if (c >= 0) {
      if (r->config[c]) return fail(r, "<%s> appears twice", name);
      r->field = c;
      r->value.len = 0;
    } else if (!strcmp(name, "contents")) {
      if (r->have_contents) return fail(r, "<contents> appears twice");
      r->have_contents = 1;
    } else {
      r->ignored = depth;
    }
  } else if (depth == 3) {
    if (strcmp(name, "file") != 0) return fail(r, "<contents> holds an element <%s>", name);
    for (int f = 0; f < N_FILE; f++) r->file_has[f] = 0, r->file[f].len = 0;
  } else {
    int f = field_of(FILE_FIELDS, N_FILE, name);
    if (f < 0) {
      r->ignored = depth;
      return;
    }
    if (r->file_has[f]) {
      if (r->file_has[F_NAME])
        return fail(r, "file %s has two <%s>", r->file[F_NAME].p, name);
      return fail(r, "file entry %zu has two <%s>", r->nfiles + 1, name);
    }
    r->field = N_CONFIG + f;
    r->value.len = 0;
  }
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len) {
  chb_manifest_read *r = ud;
  if (r->field < 0 || r->err || r->oom) return;
  if (text_put(&r->value, s, (size_t)len) != 0) r->oom = 1, XML_StopParser(r->parser, XML_FALSE);
}

static void XMLCALL on_end(void *ud, const XML_Char *name) {
  (void)name;
  chb_manifest_read *r = ud;
  if (r->err || r->oom) return;
  size_t depth = r->depth--;
  if (r->ignored) {
    if (depth == r->ignored) r->ignored = 0;
  } else if (r->field >= 0) {
    int bad_alloc = text_put(&r->value, "", 0);
    if (r->field < N_CONFIG) {
      r->config[r->field] = bad_alloc ? NULL : strdup(r->value.p);
      bad_alloc = bad_alloc || !r->config[r->field];
    } else {
      int f = r->field - N_CONFIG;
      r->file[f].len = 0;
      bad_alloc = bad_alloc || text_put(&r->file[f], r->value.p, r->value.len) != 0;
      r->file_has[f] = 1;
    }
    if (bad_alloc) r->oom = 1, XML_StopParser(r->parser, XML_FALSE);
    r->field = -1;
  } else if (depth == 3) {
    r->nfiles++;
    if (!r->file_err) end_file(r, r->nfiles);
  }
}

chb_manifest_read *chb_manifest_read_new(chb_index *idx) {
  chb_manifest_read *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->parser = XML_ParserCreate(NULL);
  if (!r->parser) {
    free(r);
    return NULL;
  }
  r->idx = idx;
  r->field = -1;
  XML_SetUserData(r->parser, r);
  XML_SetElementHandler(r->parser, on_start, on_end);
  XML_SetCharacterDataHandler(r->parser, on_text);
  return r;
}

void chb_manifest_read_free(chb_manifest_read *r) {
  if (!r) return;
  XML_ParserFree(r->parser);
  free(r->err);
  free(r->file_err);
  free(r->copy_err);
  free(r->value.p);
  for (int i = 0; i < N_CONFIG; i++) free(r->config[i]);
  for (int i = 0; i < N_FILE; i++) free(r->file[i].p);
  free(r->copies);
  free(r);
}

int chb_manifest_read_feed(chb_manifest_read *r, const char *p, size_t n, int final) {
  if (r->oom) return -2;
  if (r->err) return -1;
  while (1) {
    /* (expat takes an int length: a large piece in slices) */
    int len = n > (1u << 30) ? (1 << 30) : (int)n;
    int last = final && (size_t)len == n;
    enum XML_Status st = XML_Parse(r->parser, p, len, last);
    if (r->oom) return -2;
    if (r->err) return -1;
    if (st == XML_STATUS_ERROR) {
      r->err = format("%s at line %lu", XML_ErrorString(XML_GetErrorCode(r->parser)),
                      (unsigned long)XML_GetCurrentLineNumber(r->parser));
      return r->err ? -1 : -2;
    }
    if ((size_t)len == n) return 0;
    p += len, n -= (size_t)len;
  }
}

const char *chb_manifest_read_error(const chb_manifest_read *r) { return r->err; }
const char *chb_manifest_read_file_error(const chb_manifest_read *r) { return r->file_err; }

int chb_manifest_read_header(const chb_manifest_read *r, size_t i, const char **name, const char **value) {
  for (size_t c = 0; c < N_CONFIG; c++) {
    if (!r->config[c]) continue;
    if (i-- == 0) {
      *name = CONFIG_FIELDS[c];
      *value = r->config[c];
      return 0;
    }
  }
  return -1;
}

static int same_checksum(const chb_index_entry *a, const chb_index_entry *b) {
  if (a->has_checksum != b->has_checksum) return 0;
  return !a->has_checksum || (a->checksum.lo == b->checksum.lo && a->checksum.hi == b->checksum.hi);
}

const char *chb_manifest_read_check_copies(chb_manifest_read *r, int checksum_names) {
  for (size_t k = 0; k < r->ncopies && !r->copy_err; k++) {
    chb_index_entry e, p;
    if (chb_index_get(r->idx, r->copies[k], &e) != 0 || !e.data_file) continue;
    long pi = chb_index_find(r->idx, e.data_file, e.data_file_len);
    if (pi == -2) {
      r->copy_err = strdup(chb_index_error(r->idx) ? chb_index_error(r->idx) : "out of memory");
      break;
    }
    if (pi < 0 && checksum_names) continue;   /* a name derived from the checksum */
    /* (e's strings copied: getting p reuses the index's buffers) */
    char *name = strndup(e.name, e.name_len), *df = strndup(e.data_file, e.data_file_len);
    if (!name || !df) {
      r->copy_err = strdup("out of memory");
    } else if (pi < 0) {
      r->copy_err = format("file %s refers to data_file %s, which it does not list", name, df);
    } else if (chb_index_get(r->idx, (size_t)pi, &p) != 0) {
      r->copy_err = strdup("out of memory");
    } else if (p.size != e.size || !same_checksum(&p, &e)) {
      r->copy_err = format("file %s refers to data_file %s of another size or checksum", name, df);
    } else if (p.data_file) {
      r->copy_err = format("file %s refers to data_file %s, which is itself a copy of %.*s", name, df,
                           (int)p.data_file_len, p.data_file);
    }
    free(name);
    free(df);
  }
  return r->copy_err;
}

/* --- writing ------------------------------------------------------------- */

static int put(chb_manifest_buf *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return -1;
    b->p = q, b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return 0;
}

#define PUT(b, lit) put(b, lit, sizeof lit - 1)

/* Element text needs only &, < and > escaped (quotes stay, as ClickHouse
 * writes them); line ends and tabs as character references, as
 * manifest.lua's esc. */
static int put_escaped(chb_manifest_buf *b, const char *s, size_t n) {
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    const char *rep;
    switch (s[i]) {
      case '&': rep = "&amp;"; break;
      case '<': rep = "&lt;"; break;
      case '>': rep = "&gt;"; break;
      case '\t': rep = "&#9;"; break;
      case '\n': rep = "&#10;"; break;
      case '\r': rep = "&#13;"; break;
      default: continue;
    }
    if (put(b, s + from, i - from) != 0 || put(b, rep, strlen(rep)) != 0) return -1;
    from = i + 1;
  }
  return put(b, s + from, n - from);
}

static int put_u64(chb_manifest_buf *b, uint64_t v) {
  char s[24];
  int n = snprintf(s, sizeof s, "%" PRIu64, v);
  return put(b, s, (size_t)n);
}

static int put_hex(chb_manifest_buf *b, chb_u128 v) {
  char hex[33];
  chb_u128_to_hex(v, hex);
  return put(b, hex, 32);
}

/* One <file> record, as manifest.serialize writes it. */
static int put_file(chb_manifest_buf *b, const chb_index_entry *e) {
  if (PUT(b, "<file><name>") || put_escaped(b, e->name, e->name_len) || PUT(b, "</name><size>") ||
      put_u64(b, e->size) || PUT(b, "</size>"))
    return -1;
  if (e->size > 0) {
    if (!e->has_checksum) return -1;
    if (PUT(b, "<checksum>") || put_hex(b, e->checksum) || PUT(b, "</checksum>")) return -1;
  }
  /* use_base for a file whose bytes (all, or the first base_size of them)
   * are in the base backup */
  if ((e->use_base == 1 || e->has_base_size) && PUT(b, "<use_base>true</use_base>")) return -1;
  if (e->has_base_size && e->base_size < e->size) {
    if (!e->has_base_checksum) return -1;
    if (PUT(b, "<base_size>") || put_u64(b, e->base_size) || PUT(b, "</base_size><base_checksum>") ||
        put_hex(b, e->base_checksum) || PUT(b, "</base_checksum>"))
      return -1;
  }
  if (e->data_file && !(e->data_file_len == e->name_len && memcmp(e->data_file, e->name, e->name_len) == 0)) {
    if (PUT(b, "<data_file>") || put_escaped(b, e->data_file, e->data_file_len) || PUT(b, "</data_file>"))
      return -1;
  }
  return PUT(b, "</file>");
}

int chb_manifest_write_files(chb_index *idx, int name_order, size_t *pos, chb_manifest_buf *out, size_t target) {
  size_t count = chb_index_count(idx), lo = 0, hi = 0;
  if (name_order && count > 0 && chb_index_prefix(idx, "", 0, &lo, &hi) != 0) return -1;
  while (*pos < count && out->len < target) {
    long i = name_order ? chb_index_sorted_at(idx, *pos) : (long)*pos;
    chb_index_entry e;
    if (i < 0 || chb_index_get(idx, (size_t)i, &e) != 0 || put_file(out, &e) != 0) return -1;
    (*pos)++;
  }
  return 0;
}
