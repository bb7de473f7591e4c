/*
 * The S3 client (see chb_s3.h): SigV4 signing, one request with retries,
 * and the operations built on it.
 */
#include "chb_s3.h"

#include <curl/curl.h>
#include <errno.h>
#include <expat.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define ERRBODY_MAX (64 * 1024)          /* an error answer kept for its <Code> */
#define XMLBODY_MAX ((size_t)64 << 20)   /* a list page, an upload id, a delete result */

/* ---- growable strings --------------------------------------------------- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const void *data, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  if (n) memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void sb_adds(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_addf(sbuf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    sb_add(b, tmp, (size_t)n);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (!big) {
    b->oom = 1;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sb_add(b, big, (size_t)n);
  free(big);
}

static void sb_free(sbuf *b) {
  free(b->p);
  memset(b, 0, sizeof *b);
}

/* The string (never NULL), handed over to the caller. */
static char *sb_take(sbuf *b) {
  if (b->oom) {
    sb_free(b);
    return NULL;
  }
  if (!b->p) sb_add(b, "", 0);
  char *p = b->p;
  b->p = NULL;
  return p;
}

/* ---- hashing ------------------------------------------------------------ */

static void to_hex(const unsigned char *d, size_t n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[d[i] >> 4];
    out[2 * i + 1] = hx[d[i] & 15];
  }
  out[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t len, char out[65]) {
  unsigned char d[32];
  unsigned int n = 0;
  EVP_Digest(data, len, d, &n, EVP_sha256(), NULL);
  to_hex(d, 32, out);
}

static void hmac256(const void *key, size_t klen, const char *msg, unsigned char out[32]) {
  unsigned int n = 32;
  HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), out, &n);
}

static void base64(const unsigned char *d, size_t n, char *out) {
  EVP_EncodeBlock((unsigned char *)out, d, (int)n);
}

/* ---- SigV4 -------------------------------------------------------------- */

char *chb_s3_uri_encode(const char *in, int keep_slash) {
  static const char hx[] = "0123456789ABCDEF";
  sbuf b = {0};
  for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
    unsigned char c = *p;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~' || (c == '/' && keep_slash)) {
      sb_add(&b, &c, 1);
    } else {
      char t[3] = {'%', hx[c >> 4], hx[c & 15]};
      sb_add(&b, t, 3);
    }
  }
  return sb_take(&b);
}

typedef struct qpair {
  char *k, *v;
} qpair;

static int qpair_cmp(const void *a, const void *b) {
  const qpair *x = a, *y = b;
  int c = strcmp(x->k, y->k);
  return c ? c : strcmp(x->v, y->v);
}

char *chb_s3_canonical_query(const char *const *pairs, size_t n) {
  if (n == 0) return strdup("");
  qpair *q = calloc(n, sizeof *q);
  if (!q) return NULL;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    q[i].k = chb_s3_uri_encode(pairs[2 * i], 0);
    q[i].v = chb_s3_uri_encode(pairs[2 * i + 1] ? pairs[2 * i + 1] : "", 0);
    bad |= !q[i].k || !q[i].v;
  }
  sbuf b = {0};
  if (!bad) {
    qsort(q, n, sizeof *q, qpair_cmp);
    for (size_t i = 0; i < n; i++) {
      if (i) sb_add(&b, "&", 1);
      sb_adds(&b, q[i].k);
      sb_add(&b, "=", 1);
      sb_adds(&b, q[i].v);
    }
  }
  for (size_t i = 0; i < n; i++) {
    free(q[i].k);
    free(q[i].v);
  }
  free(q);
  if (bad) return NULL;
  return sb_take(&b);
}

typedef struct hpair {
  char *name;
  const char *value;
} hpair;

static int hpair_cmp(const void *a, const void *b) {
  return strcmp(((const hpair *)a)->name, ((const hpair *)b)->name);
}

/* A header value as SigV4 wants it: trimmed, runs of spaces folded. */
static void add_trimmed(sbuf *b, const char *v) {
  while (*v == ' ' || *v == '\t') v++;
  size_t n = strlen(v);
  while (n && (v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
  int space = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] == ' ' || v[i] == '\t') {
      space = 1;
      continue;
    }
    if (space) sb_add(b, " ", 1);
    space = 0;
    sb_add(b, &v[i], 1);
  }
}

char *chb_s3_sign(const char *key_id, const char *secret, const char *region,
                  const char *service, const char *amz_date, const char *method,
                  const char *canonical_uri, const char *canonical_query,
                  const chb_s3_header *headers, size_t nheaders, const char *payload_hash,
                  char **creq) {
  hpair *h = calloc(nheaders ? nheaders : 1, sizeof *h);
  if (!h) return NULL;
  int bad = 0;
  for (size_t i = 0; i < nheaders; i++) {
    h[i].name = strdup(headers[i].name);
    if (!h[i].name) {
      bad = 1;
      continue;
    }
    for (char *p = h[i].name; *p; p++)
      if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    h[i].value = headers[i].value;
  }
  sbuf c = {0}, signed_names = {0}, sts = {0}, auth = {0};
  char *out = NULL;
  if (bad) goto done;
  qsort(h, nheaders, sizeof *h, hpair_cmp);
  for (size_t i = 0; i < nheaders; i++) {
    if (i) sb_add(&signed_names, ";", 1);
    sb_adds(&signed_names, h[i].name);
  }
  sb_addf(&c, "%s\n%s\n%s\n", method, canonical_uri, canonical_query);
  for (size_t i = 0; i < nheaders; i++) {
    sb_adds(&c, h[i].name);
    sb_add(&c, ":", 1);
    add_trimmed(&c, h[i].value);
    sb_add(&c, "\n", 1);
  }
  sb_addf(&c, "\n%s\n%s", signed_names.p ? signed_names.p : "", payload_hash);
  if (c.oom || signed_names.oom) goto done;

  char date[9];
  snprintf(date, sizeof date, "%.8s", amz_date);
  char creq_hash[65];
  sha256_hex(c.p, c.len, creq_hash);
  sb_addf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date, region,
          service, creq_hash);
  if (sts.oom) goto done;

  /* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
  size_t slen = strlen(secret);
  unsigned char *k0 = malloc(slen + 4);
  if (!k0) goto done;
  memcpy(k0, "AWS4", 4);
  memcpy(k0 + 4, secret, slen);
  unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
  hmac256(k0, slen + 4, date, k1);
  OPENSSL_cleanse(k0, slen + 4);
  free(k0);
  hmac256(k1, 32, region, k2);
  hmac256(k2, 32, service, k3);
  hmac256(k3, 32, "aws4_request", k4);
  hmac256(k4, 32, sts.p, sig);
  char sighex[65];
  to_hex(sig, 32, sighex);
  sb_addf(&auth, "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
          key_id, date, region, service, signed_names.p ? signed_names.p : "", sighex);
  out = sb_take(&auth);
  if (creq) {
    *creq = sb_take(&c);
  }
done:
  for (size_t i = 0; i < nheaders; i++) free(h[i].name);
  free(h);
  sb_free(&c);
  sb_free(&signed_names);
  sb_free(&sts);
  sb_free(&auth);
  return out;
}

/* ---- a minimal XML walk (expat) ---------------------------------------- */

/* Called at each element's end with its path ("A/B/C") and its text. */
typedef void (*xml_cb)(void *ctx, const char *path, const char *text);

typedef struct xml_state {
  sbuf path, text;
  xml_cb cb;
  void *ctx;
} xml_state;

static void XMLCALL xml_start(void *ud, const XML_Char *name, const XML_Char **attrs) {
  (void)attrs;
  xml_state *x = ud;
  if (x->path.len) sb_add(&x->path, "/", 1);
  sb_adds(&x->path, name);
  x->text.len = 0;
  if (x->text.p) x->text.p[0] = '\0';
}

static void XMLCALL xml_end(void *ud, const XML_Char *name) {
  xml_state *x = ud;
  if (!x->path.oom && !x->text.oom) x->cb(x->ctx, x->path.p, x->text.p ? x->text.p : "");
  size_t n = strlen(name);
  x->path.len = x->path.len > n ? x->path.len - n - 1 : 0;
  if (x->path.p) x->path.p[x->path.len] = '\0';
  x->text.len = 0;
  if (x->text.p) x->text.p[0] = '\0';
}

static void XMLCALL xml_chars(void *ud, const XML_Char *s, int len) {
  xml_state *x = ud;
  sb_add(&x->text, s, (size_t)len);
}

/* 0, or -1 if the document is not well-formed XML. */
static int xml_walk(const char *data, size_t len, xml_cb cb, void *ctx) {
  XML_Parser p = XML_ParserCreate("UTF-8");
  if (!p) return -1;
  xml_state x = {.cb = cb, .ctx = ctx};
  XML_SetUserData(p, &x);
  XML_SetElementHandler(p, xml_start, xml_end);
  XML_SetCharacterDataHandler(p, xml_chars);
  int ok = XML_Parse(p, data, (int)len, 1) == XML_STATUS_OK && !x.path.oom && !x.text.oom;
  XML_ParserFree(p);
  sb_free(&x.path);
  sb_free(&x.text);
  return ok ? 0 : -1;
}

static void xml_escape(sbuf *b, const char *s) {
  for (; *s; s++) {
    switch (*s) {
    case '&': sb_adds(b, "&amp;"); break;
    case '<': sb_adds(b, "&lt;"); break;
    case '>': sb_adds(b, "&gt;"); break;
    case '"': sb_adds(b, "&quot;"); break;
    case '\'': sb_adds(b, "&apos;"); break;
    default: sb_add(b, s, 1);
    }
  }
}

/* <Error><Code>..</Code><Message>..</Message></Error> */
typedef struct err_xml {
  char code[64];
  char message[256];
} err_xml;

static void err_xml_cb(void *ctx, const char *path, const char *text) {
  err_xml *x = ctx;
  if (strcmp(path, "Error/Code") == 0) snprintf(x->code, sizeof x->code, "%s", text);
  else if (strcmp(path, "Error/Message") == 0) snprintf(x->message, sizeof x->message, "%s", text);
}

/* ---- the client --------------------------------------------------------- */

struct chb_s3 {
  CURL *curl;
  char *url_base;     /* "http://host:port/bucket" (path style) or "http://bucket.host:port" */
  char *uri_prefix;   /* canonical path prefix: "/bucket" or "" */
  char *host;         /* the Host header */
  char *endpoint, *bucket, *region, *key_id, *secret;
  char *token;        /* NULL or the session token */
  char *storage_class;
  int max_retries;
  long retry_base_ms, connect_timeout_ms, low_speed_time_s, request_timeout_ms;
  int sign_payload, no_etag_check;
  int bucket_seen;    /* the bucket answered once: a bodiless 404 is a missing key */
  const atomic_int *cancel;   /* set: stop when it turns non-zero */
  char curl_err[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

static char *dup_or(const char *s, const char *dflt) { return strdup(s && *s ? s : dflt); }

const char *chb_s3_bucket(const chb_s3 *s) { return s->bucket; }

void chb_s3_set_cancel(chb_s3 *s, const atomic_int *flag) { s->cancel = flag; }

chb_s3 *chb_s3_new(const chb_s3_config *cfg, chb_error *e) {
  if (!cfg->endpoint || !cfg->bucket || !*cfg->bucket || !cfg->key_id || !cfg->secret) {
    chb_error_set(e, CHB_INVALID, "S3: endpoint, bucket, key id and secret are required");
    return NULL;
  }
  const char *ep = cfg->endpoint;
  const char *scheme_end = strstr(ep, "://");
  if (!scheme_end || (strncmp(ep, "http://", 7) != 0 && strncmp(ep, "https://", 8) != 0)) {
    chb_error_set(e, CHB_INVALID, "S3 endpoint '%s': expected http://host[:port] or https://host[:port]",
                  ep);
    return NULL;
  }
  const char *auth = scheme_end + 3;
  size_t alen = strcspn(auth, "/?#");
  if (alen == 0 || strspn(auth + alen, "/") != strlen(auth + alen)) {
    chb_error_set(e, CHB_INVALID, "S3 endpoint '%s': expected http://host[:port] without a path", ep);
    return NULL;
  }
  int https = ep[4] == 's';
  size_t blen = strlen(cfg->bucket);
  if (blen < 3 || blen > 63 || strcspn(cfg->bucket, "/?#% ") != blen) {
    chb_error_set(e, CHB_INVALID, "S3 bucket '%s': 3 to 63 characters, no '/', '?', '#', '%%' or space",
                  cfg->bucket);
    return NULL;
  }
  pthread_once(&curl_once, curl_init_once);
  if (curl_init_rc != CURLE_OK) {
    chb_error_set(e, CHB_EIO, "S3: curl_global_init failed: %s", curl_easy_strerror(curl_init_rc));
    return NULL;
  }
  chb_s3 *s = calloc(1, sizeof *s);
  if (!s) {
    chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    return NULL;
  }
  /* The authority without a default port (curl leaves it out of Host too). */
  char authority[512];
  snprintf(authority, sizeof authority, "%.*s", (int)alen, auth);
  size_t al = strlen(authority);
  if (!https && al > 3 && strcmp(authority + al - 3, ":80") == 0) authority[al - 3] = '\0';
  if (https && al > 4 && strcmp(authority + al - 4, ":443") == 0) authority[al - 4] = '\0';
  sbuf base = {0}, host = {0};
  if (cfg->path_style) {
    sb_addf(&base, "%s://%s/%s", https ? "https" : "http", authority, cfg->bucket);
    sb_adds(&host, authority);
    s->uri_prefix = malloc(blen + 2);
    if (s->uri_prefix) snprintf(s->uri_prefix, blen + 2, "/%s", cfg->bucket);
  } else {
    sb_addf(&base, "%s://%s.%s", https ? "https" : "http", cfg->bucket, authority);
    sb_addf(&host, "%s.%s", cfg->bucket, authority);
    s->uri_prefix = strdup("");
  }
  s->url_base = sb_take(&base);
  s->host = sb_take(&host);
  s->endpoint = strdup(ep);
  s->bucket = strdup(cfg->bucket);
  s->region = dup_or(cfg->region, "us-east-1");
  s->key_id = strdup(cfg->key_id);
  s->secret = strdup(cfg->secret);
  s->token = cfg->session_token && *cfg->session_token ? strdup(cfg->session_token) : NULL;
  s->storage_class = cfg->storage_class && *cfg->storage_class ? strdup(cfg->storage_class) : NULL;
  s->max_retries = cfg->max_retries < 0 ? 4 : cfg->max_retries;
  s->retry_base_ms = cfg->retry_base_ms > 0 ? cfg->retry_base_ms : 200;
  s->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 10000;
  s->low_speed_time_s = cfg->low_speed_time_s > 0 ? cfg->low_speed_time_s : 60;
  s->request_timeout_ms = cfg->request_timeout_ms > 0 ? cfg->request_timeout_ms : 0;
  s->sign_payload = cfg->sign_payload;
  s->no_etag_check = cfg->no_etag_check;
  s->curl = curl_easy_init();
  if (!s->url_base || !s->host || !s->uri_prefix || !s->endpoint || !s->bucket || !s->region ||
      !s->key_id || !s->secret || !s->curl || (cfg->session_token && *cfg->session_token && !s->token) ||
      (cfg->storage_class && *cfg->storage_class && !s->storage_class)) {
    chb_s3_free(s);
    chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    return NULL;
  }
  return s;
}

void chb_s3_free(chb_s3 *s) {
  if (!s) return;
  if (s->curl) curl_easy_cleanup(s->curl);
  if (s->secret) OPENSSL_cleanse(s->secret, strlen(s->secret));
  free(s->url_base);
  free(s->uri_prefix);
  free(s->host);
  free(s->endpoint);
  free(s->bucket);
  free(s->region);
  free(s->key_id);
  free(s->secret);
  if (s->token) OPENSSL_cleanse(s->token, strlen(s->token));
  free(s->token);
  free(s->storage_class);
  free(s);
}

/* ---- one request, with retries ----------------------------------------- */

typedef struct s3_req {
  const char *method;       /* GET PUT POST HEAD DELETE */
  const char *key;          /* NULL: the bucket itself */
  const char *what;         /* for messages: NULL -> s3://bucket/key */
  const char *const *query; /* pairs */
  size_t nquery;
  chb_s3_header hdr[4];     /* extra headers, lower-case names: sent and signed */
  size_t nhdr;
  /* body */
  const chb_s3_source *body;
  uint64_t body_off, body_len;
  const char *payload_hash; /* NULL: sha256 of no body */
  int md5_etag;             /* compare the MD5 of what was sent with the ETag */
  /* GET: the range asked, resumed after a dropped connection */
  int ranged;
  uint64_t get_off;
  int64_t get_len;          /* < 0: to the end */
  chb_s3_sink sink;
  void *sink_ctx;
  sbuf *resp;               /* 2xx body collected here (XML answers) */
  /* answer */
  long status;
  char etag[80];
  char first_etag[80];      /* the object's ETag at the first answer, for If-Match on resume */
  uint64_t clen;
  int have_clen;
  char amz_code[64];        /* x-amz-error-code header (s3rver, HEAD) */
  sbuf errbody;
  uint64_t delivered;       /* GET bytes handed to the sink */
  uint64_t range_from;      /* this attempt's Range start (0: none or from 0) */
  /* per attempt */
  uint64_t pos;             /* body bytes read */
  EVP_MD_CTX *md5;
  int local_fail;           /* the sink or the source failed: e is set, no retry */
  const atomic_int *cancel; /* the client's, for the body callbacks */
  chb_error *e;
} s3_req;

static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
  s3_req *r = ud;
  size_t len = size * n;
  if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
    const char *sp = memchr(buf, ' ', len);
    r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
    r->etag[0] = r->amz_code[0] = '\0';
    r->have_clen = 0;
    return len;
  }
  const char *colon = memchr(buf, ':', len);
  if (!colon) return len;
  size_t nlen = (size_t)(colon - buf);
  const char *v = colon + 1;
  size_t vlen = len - nlen - 1;
  while (vlen && (*v == ' ' || *v == '\t')) v++, vlen--;
  while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' ')) vlen--;
  if (nlen == 4 && strncasecmp(buf, "etag", 4) == 0) {
    if (vlen >= 2 && v[0] == '"' && v[vlen - 1] == '"') v++, vlen -= 2;
    snprintf(r->etag, sizeof r->etag, "%.*s", (int)vlen, v);
  } else if (nlen == 14 && strncasecmp(buf, "content-length", 14) == 0) {
    r->clen = strtoull(v, NULL, 10);
    r->have_clen = 1;
  } else if (nlen == 16 && strncasecmp(buf, "x-amz-error-code", 16) == 0) {
    snprintf(r->amz_code, sizeof r->amz_code, "%.*s", (int)vlen, v);
  }
  return len;
}

static size_t on_write(char *buf, size_t size, size_t n, void *ud) {
  s3_req *r = ud;
  size_t len = size * n;
  if (r->status / 100 != 2) {
    if (r->errbody.len + len <= ERRBODY_MAX) sb_add(&r->errbody, buf, len);
    return len;
  }
  if (r->sink) {
    if (r->status == 200 && r->range_from > 0) {
      chb_error_set(r->e, CHB_EIO, "S3 GET of key %s: the server ignored the Range header (HTTP 200)",
                    r->key ? r->key : "");
      r->local_fail = 1;
      return 0;
    }
    if (!r->first_etag[0]) snprintf(r->first_etag, sizeof r->first_etag, "%s", r->etag);
    if (r->sink(r->sink_ctx, buf, len, r->e) != 0) {
      r->local_fail = 1;
      return 0;
    }
    r->delivered += len;
    return len;
  }
  if (r->resp) {
    if (r->resp->len + len > XMLBODY_MAX) {
      chb_error_set(r->e, CHB_EIO, "S3 answer larger than %zu bytes", XMLBODY_MAX);
      r->local_fail = 1;
      return 0;
    }
    sb_add(r->resp, buf, len);
    if (r->resp->oom) {
      chb_error_set(r->e, CHB_ENOMEM, "S3: out of memory");
      r->local_fail = 1;
      return 0;
    }
  }
  return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud) {
  s3_req *r = ud;
  size_t want = size * n;
  uint64_t left = r->body_len - r->pos;
  if (want > left) want = (size_t)left;
  if (want == 0) return 0;
  if (r->cancel && atomic_load(r->cancel)) {
    chb_error_set(r->e, CHB_CANCELLED, "S3 upload of key %s stopped", r->key ? r->key : "");
    r->local_fail = 1;
    return CURL_READFUNC_ABORT;
  }
  int64_t got = r->body->read_at(r->body->ctx, r->body_off + r->pos, buf, want, r->e);
  if (got <= 0) {
    if (got == 0)
      chb_error_set(r->e, CHB_EIO, "S3 upload source ended at byte %" PRIu64 " of %" PRIu64,
                    r->pos, r->body_len);
    r->local_fail = 1;
    return CURL_READFUNC_ABORT;
  }
  if (r->md5) EVP_DigestUpdate(r->md5, buf, (size_t)got);
  r->pos += (uint64_t)got;
  return (size_t)got;
}

/* Stops a transfer waiting on the server (no body callback runs then)
 * once the cancel flag is up: curl calls this about once a second or more. */
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  s3_req *r = ud;
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  if (!atomic_load(r->cancel)) return 0;
  chb_error_set(r->e, CHB_CANCELLED, "S3 %s of key %s stopped", r->method, r->key ? r->key : "");
  r->local_fail = 1;
  return 1;
}

static int on_seek(void *ud, curl_off_t off, int origin) {
  s3_req *r = ud;
  if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len) return CURL_SEEKFUNC_CANTSEEK;
  if (off != 0 && r->md5) return CURL_SEEKFUNC_CANTSEEK;
  r->pos = (uint64_t)off;
  if (r->md5) EVP_DigestInit_ex(r->md5, EVP_md5(), NULL);
  return CURL_SEEKFUNC_OK;
}

static int is_retryable_curl(CURLcode rc) {
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_UPLOAD_FAILED:
    return 1;
  default:
    return 0;
  }
}

static int is_retryable_s3(long status, const char *code) {
  if (status == 429 || status == 500 || status == 502 || status == 503 || status == 504) return 1;
  return strcmp(code, "RequestTimeout") == 0 || strcmp(code, "InternalError") == 0 ||
         strcmp(code, "SlowDown") == 0 || strcmp(code, "ServiceUnavailable") == 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Sleeps ms, or less when the client's cancel flag turns non-zero. */
static void backoff_sleep(const chb_s3 *s, long ms) {
  for (long slept = 0; slept < ms && !(s->cancel && atomic_load(s->cancel)); slept += 50)
    sleep_ms(ms - slept < 50 ? ms - slept : 50);
}

static long backoff_ms(const chb_s3 *s, int attempt) {
  long d = s->retry_base_ms;
  for (int i = 0; i < attempt && d < 10000; i++) d *= 2;
  if (d > 10000) d = 10000;
  /* Full jitter in [d/2, d]: clients retrying together spread out. */
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return d / 2 + (long)((unsigned long)now.tv_nsec % (unsigned long)(d / 2 + 1));
}

static void describe(const chb_s3 *s, const s3_req *r, char *out, size_t cap) {
  if (r->what) snprintf(out, cap, "S3 %s %s", r->method, r->what);
  else snprintf(out, cap, "S3 %s s3://%s/%s", r->method, s->bucket, r->key ? r->key : "");
}

/* Fills e for an HTTP error answer (the request failed for good). */
static void http_error(chb_s3 *s, s3_req *r, int attempts, chb_error *e) {
  err_xml x = {{0}, {0}};
  if (r->errbody.len) xml_walk(r->errbody.p, r->errbody.len, err_xml_cb, &x);
  if (!x.code[0] && r->amz_code[0]) snprintf(x.code, sizeof x.code, "%s", r->amz_code);
  char what[600];
  describe(s, r, what, sizeof what);
  char tries[48] = "";
  if (attempts > 1) snprintf(tries, sizeof tries, " (after %d attempts)", attempts);
  const char *code = x.code;
  const char *msg = x.message;
  long st = r->status;
  if (strcmp(code, "SignatureDoesNotMatch") == 0) {
    chb_error_set(e, CHB_AUTH,
                  "%s: SignatureDoesNotMatch (HTTP %ld): the server computed another request "
                  "signature: the secret access key is wrong for access key id '%s'%s",
                  what, st, s->key_id, tries);
  } else if (strcmp(code, "InvalidAccessKeyId") == 0) {
    chb_error_set(e, CHB_AUTH,
                  "%s: InvalidAccessKeyId (HTTP %ld): the server does not know access key id '%s'%s",
                  what, st, s->key_id, tries);
  } else if (strcmp(code, "AccessDenied") == 0 || (!code[0] && st == 403)) {
    chb_error_set(e, CHB_EACCES, "%s: %s (HTTP 403): %s%s", what, code[0] ? code : "Forbidden",
                  msg[0] ? msg : "access denied to key id (or a wrong signature: a HEAD answer has no body)",
                  tries);
  } else if (strcmp(code, "NoSuchBucket") == 0) {
    chb_error_set(e, CHB_NOBUCKET, "%s: NoSuchBucket (HTTP %ld): bucket '%s' does not exist at %s%s",
                  what, st, s->bucket, s->endpoint, tries);
  } else if (strcmp(code, "NoSuchKey") == 0 || (!code[0] && st == 404)) {
    chb_error_set(e, CHB_ENOENT, "%s: %s (HTTP 404): no such object%s", what,
                  code[0] ? code : "NotFound", tries);
  } else if (strcmp(code, "RequestTimeTooSkewed") == 0) {
    chb_error_set(e, CHB_CLOCK_SKEW,
                  "%s: RequestTimeTooSkewed (HTTP %ld): this machine's clock and the server's differ "
                  "by more than 15 minutes; fix the clock (NTP)%s",
                  what, st, tries);
  } else if (st == 412 && strcmp(r->method, "GET") == 0) {
    chb_error_set(e, CHB_EIO, "%s: PreconditionFailed (HTTP 412): the object changed while it was "
                  "read (its ETag is not the one of the first answer)%s", what, tries);
  } else if (strcmp(code, "PreconditionFailed") == 0 || st == 412) {
    chb_error_set(e, CHB_EEXIST, "%s: PreconditionFailed (HTTP 412): the object already exists%s",
                  what, tries);
  } else if (st == 301 || st == 307 || strcmp(code, "PermanentRedirect") == 0) {
    chb_error_set(e, CHB_INVALID,
                  "%s: %s (HTTP %ld): the bucket is in another region or needs another endpoint "
                  "(region is '%s')%s",
                  what, code[0] ? code : "Redirect", st, s->region, tries);
  } else {
    chb_error_set(e, CHB_EIO, "%s: %s (HTTP %ld)%s%s%s", what, code[0] ? code : "error", st,
                  msg[0] ? ": " : "", msg, tries);
  }
  e->sys = (int)st;
}

static void amz_now(char out[17]) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* One attempt. Returns the curl code; r->status holds the HTTP status. */
static CURLcode attempt(chb_s3 *s, s3_req *r, const char *url, const char *cquery,
                        const char *curi) {
  CURL *c = s->curl;
  curl_easy_reset(c);
  r->status = 0;
  r->etag[0] = r->amz_code[0] = '\0';
  r->have_clen = 0;
  r->errbody.len = 0;
  r->pos = 0;
  if (r->resp) r->resp->len = 0;
  if (r->md5) EVP_DigestInit_ex(r->md5, EVP_md5(), NULL);

  char amz_date[17];
  amz_now(amz_date);
  const char *payload = r->payload_hash ? r->payload_hash : EMPTY_SHA256;
  char range[64];
  char ifmatch[96];
  r->range_from = 0;
  chb_s3_header h[12];
  size_t nh = 0;
  h[nh++] = (chb_s3_header){"host", s->host};
  h[nh++] = (chb_s3_header){"x-amz-content-sha256", payload};
  h[nh++] = (chb_s3_header){"x-amz-date", amz_date};
  for (size_t i = 0; i < r->nhdr; i++) h[nh++] = r->hdr[i];
  if (s->token) h[nh++] = (chb_s3_header){"x-amz-security-token", s->token};
  if (r->ranged || (r->sink && r->delivered)) {
    uint64_t from = r->get_off + r->delivered;
    r->range_from = from;
    if (r->get_len >= 0)
      snprintf(range, sizeof range, "bytes=%" PRIu64 "-%" PRIu64, from,
               r->get_off + (uint64_t)r->get_len - 1);
    else
      snprintf(range, sizeof range, "bytes=%" PRIu64 "-", from);
    h[nh++] = (chb_s3_header){"range", range};
  }
  if (r->sink && r->delivered && r->first_etag[0]) {
    snprintf(ifmatch, sizeof ifmatch, "\"%s\"", r->first_etag);
    h[nh++] = (chb_s3_header){"if-match", ifmatch};
  }
  char *authz = chb_s3_sign(s->key_id, s->secret, s->region, "s3", amz_date, r->method, curi,
                            cquery, h, nh, payload, NULL);
  if (!authz) return CURLE_OUT_OF_MEMORY;
  struct curl_slist *list = NULL, *t;
  sbuf line = {0};
  int oom = 0;
  for (size_t i = 0; i < nh; i++) {
    line.len = 0;
    sb_addf(&line, "%s: %s", h[i].name, h[i].value);
    if (line.oom || !(t = curl_slist_append(list, line.p))) oom = 1;
    else list = t;
  }
  line.len = 0;
  sb_addf(&line, "Authorization: %s", authz);
  OPENSSL_cleanse(authz, strlen(authz));
  free(authz);
  if (line.oom || !(t = curl_slist_append(list, line.p))) oom = 1;
  else list = t;
  sb_free(&line);
  const char *removed[] = {"Accept:", "Content-Type:", NULL};
  for (int i = 0; removed[i]; i++) {
    if (!(t = curl_slist_append(list, removed[i]))) oom = 1;
    else list = t;
  }
  if (oom) {
    curl_slist_free_all(list);
    return CURLE_OUT_OF_MEMORY;
  }

  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s->low_speed_time_s);
  if (s->request_timeout_ms) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->request_timeout_ms);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->curl_err);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  if (r->cancel) {
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, r);
  }
  if (strcmp(r->method, "GET") == 0) {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(r->method, "HEAD") == 0) {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (strcmp(r->method, "PUT") == 0) {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
  } else if (strcmp(r->method, "POST") == 0) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
  }
  if (r->body) {
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, r);
    curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
    curl_easy_setopt(c, CURLOPT_SEEKDATA, r);
  } else if (strcmp(r->method, "POST") == 0) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
  }
  s->curl_err[0] = '\0';
  CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(list);
  return rc;
}

/*
 * Runs a request until it succeeds (2xx), fails for good, or runs out of
 * retries. 0 on success; -1 with e filled.
 */
static int perform(chb_s3 *s, s3_req *r, chb_error *e) {
  r->e = e;
  r->cancel = s->cancel;
  int rcode = -1;
  char *path = r->key ? chb_s3_uri_encode(r->key, 1) : strdup("");
  char *cquery = chb_s3_canonical_query(r->query, r->nquery);
  sbuf url = {0}, curi = {0};
  if (path && cquery) {
    if (r->key) {
      sb_addf(&curi, "%s/%s", s->uri_prefix, path);
      sb_addf(&url, "%s/%s", s->url_base, path);
    } else {
      sb_adds(&curi, *s->uri_prefix ? s->uri_prefix : "/");
      sb_adds(&url, s->url_base);
      if (!*s->uri_prefix) sb_add(&url, "/", 1);
    }
    if (*cquery) sb_addf(&url, "?%s", cquery);
  }
  if (!path || !cquery || url.oom || curi.oom) {
    chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    goto out;
  }
  if (r->md5_etag && !r->md5 && !(r->md5 = EVP_MD_CTX_new())) {
    chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    goto out;
  }
  for (int n = 0;; n++) {
    chb_error_clear(e);
    if (s->cancel && atomic_load(s->cancel)) {
      char what[600];
      describe(s, r, what, sizeof what);
      chb_error_set(e, CHB_CANCELLED, "%s: stopped", what);
      goto out;
    }
    r->local_fail = 0;
    CURLcode rc = attempt(s, r, url.p, cquery, curi.p);
    if (r->local_fail) goto out;       /* e says what the sink or the source said */
    int attempts = n + 1;
    int retry = 0;
    if (rc == CURLE_OUT_OF_MEMORY) {
      chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
      goto out;
    }
    if (rc != CURLE_OK) {
      retry = is_retryable_curl(rc);
      if (!retry || n >= s->max_retries) {
        char what[600];
        describe(s, r, what, sizeof what);
        chb_error_set(e, CHB_EIO, "%s: %s%s%s (after %d attempt%s)", what, curl_easy_strerror(rc),
                      s->curl_err[0] ? ": " : "", s->curl_err, attempts, attempts > 1 ? "s" : "");
        e->sys = (int)rc;
        goto out;
      }
    } else if (r->status / 100 == 2) {
      rcode = 0;
      goto out;
    } else {
      err_xml x = {{0}, {0}};
      if (r->errbody.len) xml_walk(r->errbody.p, r->errbody.len, err_xml_cb, &x);
      retry = is_retryable_s3(r->status, x.code[0] ? x.code : r->amz_code);
      if (!retry || n >= s->max_retries) {
        http_error(s, r, attempts, e);
        goto out;
      }
    }
    backoff_sleep(s, backoff_ms(s, n));
  }
out:
  free(path);
  free(cquery);
  sb_free(&url);
  sb_free(&curi);
  sb_free(&r->errbody);
  if (r->md5 && rcode != 0) {
    EVP_MD_CTX_free(r->md5);
    r->md5 = NULL;
  }
  return rcode;
}

/* After a streamed upload: the server's ETag is the MD5 of what it stored. */
static int check_md5_etag(chb_s3 *s, s3_req *r, chb_error *e) {
  unsigned char d[16];
  unsigned int n = 0;
  EVP_DigestFinal_ex(r->md5, d, &n);
  EVP_MD_CTX_free(r->md5);
  r->md5 = NULL;
  if (s->no_etag_check) return 0;
  size_t el = strlen(r->etag);
  if (el != 32 || strspn(r->etag, "0123456789abcdefABCDEF") != 32) return 0;  /* not an MD5 */
  char hex[33];
  to_hex(d, 16, hex);
  if (strcasecmp(hex, r->etag) != 0) {
    char what[600];
    describe(s, r, what, sizeof what);
    return chb_error_set(e, CHB_CORRUPT,
                         "%s: the server stored other bytes than were sent: ETag %s, MD5 sent %s "
                         "(if the bucket uses SSE-KMS or SSE-C, its ETags are not MD5s: turn the check off)",
                         what, r->etag, hex);
  }
  return 0;
}

/* ---- sources ------------------------------------------------------------ */

typedef struct mem_src {
  const unsigned char *p;
  size_t len;
} mem_src;

static int64_t mem_read_at(void *ctx, uint64_t off, void *buf, size_t len, chb_error *e) {
  (void)e;
  mem_src *m = ctx;
  if (off >= m->len) return 0;
  if (len > m->len - off) len = (size_t)(m->len - off);
  memcpy(buf, m->p + off, len);
  return (int64_t)len;
}

typedef struct file_src {
  int fd;
  const char *path;
} file_src;

static int64_t file_read_at(void *ctx, uint64_t off, void *buf, size_t len, chb_error *e) {
  file_src *f = ctx;
  for (;;) {
    ssize_t n = pread(f->fd, buf, len, (off_t)off);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    chb_error_errno(e, errno, "cannot read", f->path);
    return -1;
  }
}

/* sha256 of a source range, read through a fixed buffer. */
static int source_sha256(const chb_s3_source *src, uint64_t off, uint64_t len, char out[65],
                         chb_error *e) {
  EVP_MD_CTX *c = EVP_MD_CTX_new();
  unsigned char *buf = malloc(1 << 20);
  int rc = -1;
  if (!c || !buf) {
    chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    goto done;
  }
  EVP_DigestInit_ex(c, EVP_sha256(), NULL);
  for (uint64_t done = 0; done < len;) {
    size_t want = len - done < (1u << 20) ? (size_t)(len - done) : (1u << 20);
    int64_t n = src->read_at(src->ctx, off + done, buf, want, e);
    if (n < 0) goto done;
    if (n == 0) {
      chb_error_set(e, CHB_EIO, "S3 upload source ended at byte %" PRIu64 " of %" PRIu64, done, len);
      goto done;
    }
    EVP_DigestUpdate(c, buf, (size_t)n);
    done += (uint64_t)n;
  }
  unsigned char d[32];
  unsigned int dn = 0;
  EVP_DigestFinal_ex(c, d, &dn);
  to_hex(d, 32, out);
  rc = 0;
done:
  EVP_MD_CTX_free(c);
  free(buf);
  return rc;
}

/* ---- operations --------------------------------------------------------- */

static int put_common(chb_s3 *s, const char *key, const chb_s3_source *src, const void *mem,
                      const char *if_none_match, chb_error *e) {
  s3_req r = {.method = "PUT", .key = key, .body = src, .body_len = src->size};
  char sha[65], md5b64[32];
  if (mem) {
    sha256_hex(mem, src->size, sha);
    unsigned char d[16];
    unsigned int n = 0;
    EVP_Digest(mem, src->size, d, &n, EVP_md5(), NULL);
    base64(d, 16, md5b64);
    r.hdr[r.nhdr++] = (chb_s3_header){"content-md5", md5b64};
    r.payload_hash = sha;
  } else {
    if (s->sign_payload) {
      if (source_sha256(src, 0, src->size, sha, e) != 0) return -1;
      r.payload_hash = sha;
    } else {
      r.payload_hash = "UNSIGNED-PAYLOAD";
    }
    r.md5_etag = 1;
  }
  if (if_none_match) r.hdr[r.nhdr++] = (chb_s3_header){"if-none-match", if_none_match};
  if (s->storage_class) r.hdr[r.nhdr++] = (chb_s3_header){"x-amz-storage-class", s->storage_class};
  if (perform(s, &r, e) != 0) return -1;
  if (r.md5) return check_md5_etag(s, &r, e);
  return 0;
}

int chb_s3_put(chb_s3 *s, const char *key, const void *data, size_t len, chb_error *e) {
  mem_src m = {data, len};
  chb_s3_source src = {mem_read_at, &m, len};
  return put_common(s, key, &src, data ? data : "", NULL, e);
}

int chb_s3_put_source(chb_s3 *s, const char *key, const chb_s3_source *src, chb_error *e) {
  return put_common(s, key, src, NULL, NULL, e);
}

static int open_file(const char *path, uint64_t offset, int64_t length, file_src *f,
                     uint64_t *size, chb_error *e) {
  f->path = path;
  f->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (f->fd < 0) return chb_error_errno(e, errno, "cannot open", path);
  struct stat st;
  if (fstat(f->fd, &st) != 0) {
    int saved = errno;
    close(f->fd);
    return chb_error_errno(e, saved, "cannot stat", path);
  }
  uint64_t fsize = (uint64_t)st.st_size;
  if (offset > fsize || (length >= 0 && (uint64_t)length > fsize - offset)) {
    close(f->fd);
    return chb_error_set(e, CHB_INVALID, "%s: range %" PRIu64 "+%" PRId64 " is beyond its size %" PRIu64,
                         path, offset, length, fsize);
  }
  *size = length >= 0 ? (uint64_t)length : fsize - offset;
  return 0;
}

typedef struct range_src {
  file_src f;
  uint64_t base;
} range_src;

static int64_t range_read_at(void *ctx, uint64_t off, void *buf, size_t len, chb_error *e) {
  range_src *r = ctx;
  return file_read_at(&r->f, r->base + off, buf, len, e);
}

int chb_s3_put_file(chb_s3 *s, const char *key, const char *path, uint64_t offset,
                    int64_t length, chb_error *e) {
  range_src r = {.base = offset};
  uint64_t size = 0; /* set by open_file; 0 keeps gcc -O2 -Werror quiet */
  if (open_file(path, offset, length, &r.f, &size, e) != 0) return -1;
  chb_s3_source src = {range_read_at, &r, size};
  int rc = put_common(s, key, &src, NULL, NULL, e);
  close(r.f.fd);
  return rc;
}

int chb_s3_upload_file(chb_s3 *s, const char *key, const char *path, chb_error *e) {
  range_src r = {.base = 0};
  uint64_t size = 0; /* set by open_file; 0 keeps gcc -O2 -Werror quiet */
  if (open_file(path, 0, -1, &r.f, &size, e) != 0) return -1;
  chb_s3_source src = {range_read_at, &r, size};
  int rc = size <= CHB_S3_SINGLE_PUT_MAX ? put_common(s, key, &src, NULL, NULL, e)
                                         : chb_s3_upload_multipart(s, key, &src, 0, e);
  close(r.f.fd);
  return rc;
}

static int discard_sink(void *ctx, const void *data, size_t len, chb_error *e) {
  (void)ctx, (void)data, (void)len, (void)e;
  return 0;
}

int chb_s3_head(chb_s3 *s, const char *key, chb_s3_stat *st, chb_error *e) {
  s3_req r = {.method = "HEAD", .key = key};
  if (perform(s, &r, e) != 0) {
    if (e->sys == 403 && !r.amz_code[0]) {
      /* A HEAD answer has no body, so no <Code>: ask a 1-byte GET why
       * (a wrong secret and a denied access are different fixes). */
      chb_error ge;
      char what[600];
      snprintf(what, sizeof what, "s3://%s/%s (asking why a HEAD was refused)", s->bucket, key);
      s3_req g = {.method = "GET", .key = key, .what = what, .sink = discard_sink, .ranged = 1,
                  .get_len = 1};
      if (perform(s, &g, &ge) != 0 && ge.sys == 403) *e = ge;
    } else if (e->code == CHB_ENOENT && !r.amz_code[0] && !s->bucket_seen) {
      /* Nor can a 404 say NoSuchBucket from NoSuchKey: list the bucket
       * once per client to tell (a missing bucket is not a missing file). */
      chb_error le;
      const char *q[] = {"list-type", "2", "max-keys", "1"};
      s3_req g = {.method = "GET", .what = "(bucket check)", .query = q, .nquery = 2};
      if (perform(s, &g, &le) == 0) s->bucket_seen = 1;
      else if (le.code == CHB_NOBUCKET)
        chb_error_set(e, CHB_NOBUCKET, "S3 HEAD s3://%s/%s: NoSuchBucket (HTTP 404): bucket '%s' does not exist at %s",
                      s->bucket, key, s->bucket, s->endpoint);
    }
    return -1;
  }
  s->bucket_seen = 1;
  st->size = r.have_clen ? r.clen : 0;
  snprintf(st->etag, sizeof st->etag, "%s", r.etag);
  return 0;
}

int chb_s3_put_if_absent(chb_s3 *s, const char *key, const void *data, size_t len, chb_error *e) {
  chb_s3_stat st;
  if (chb_s3_head(s, key, &st, e) == 0)
    return chb_error_set(e, CHB_EEXIST, "S3 PUT s3://%s/%s: the object already exists (%" PRIu64 " bytes)",
                         s->bucket, key, st.size);
  if (e->code != CHB_ENOENT) return -1;
  mem_src m = {data, len};
  chb_s3_source src = {mem_read_at, &m, len};
  if (put_common(s, key, &src, data ? data : "", "*", e) == 0) return 0;
  if (e->sys == 501)   /* NotImplemented: a server without conditional PUT that says so */
    return put_common(s, key, &src, data ? data : "", NULL, e);
  if (e->code == CHB_EEXIST && len <= 4096) {
    /* A retry after a dropped answer may meet our own first write: the
     * object then holds exactly our bytes. */
    chb_error ge;
    unsigned char have[4097];
    size_t got = 0;
    if (chb_s3_get_buf(s, key, 0, -1, have, sizeof have, &got, &ge) == 0 && got == len &&
        memcmp(have, data, len) == 0)
      return 0;
  }
  return -1;
}

static int get_common(chb_s3 *s, const char *key, uint64_t offset, int64_t length,
                      chb_s3_sink sink, void *ctx, uint64_t *delivered, chb_error *e) {
  if (length == 0) return 0;
  /* A dropped body is resumed with a Range from the bytes already delivered
   * (attempt() adds it) and If-Match on the first answer's ETag. */
  s3_req r = {.method = "GET", .key = key, .sink = sink, .sink_ctx = ctx, .get_off = offset,
              .get_len = length, .ranged = offset > 0 || length > 0};
  int rc = perform(s, &r, e);
  if (delivered) *delivered = r.delivered;
  return rc;
}

int chb_s3_get(chb_s3 *s, const char *key, uint64_t offset, int64_t length, chb_s3_sink sink,
               void *ctx, chb_error *e) {
  return get_common(s, key, offset, length, sink, ctx, NULL, e);
}

typedef struct buf_sink {
  unsigned char *p;
  size_t cap, len;
  const char *key;
} buf_sink;

static int buf_sink_fn(void *ctx, const void *data, size_t len, chb_error *e) {
  buf_sink *b = ctx;
  if (len > b->cap - b->len)
    return chb_error_set(e, CHB_INVALID, "S3 GET %s: more than %zu bytes", b->key, b->cap);
  memcpy(b->p + b->len, data, len);
  b->len += len;
  return 0;
}

int chb_s3_get_buf(chb_s3 *s, const char *key, uint64_t offset, int64_t length, void *buf,
                   size_t cap, size_t *got, chb_error *e) {
  buf_sink b = {buf, cap, 0, key};
  int rc = get_common(s, key, offset, length, buf_sink_fn, &b, NULL, e);
  *got = b.len;
  return rc;
}

typedef struct fd_sink {
  int fd;
  const char *path;
} fd_sink;

static int fd_sink_fn(void *ctx, const void *data, size_t len, chb_error *e) {
  fd_sink *f = ctx;
  const char *p = data;
  while (len) {
    ssize_t n = write(f->fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return chb_error_errno(e, errno, "cannot write", f->path);
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int chb_s3_get_file(chb_s3 *s, const char *key, uint64_t offset, int64_t length,
                    const char *path, chb_error *e) {
  fd_sink f = {open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), path};
  if (f.fd < 0) return chb_error_errno(e, errno, "cannot create", path);
  int rc = get_common(s, key, offset, length, fd_sink_fn, &f, NULL, e);
  if (close(f.fd) != 0 && rc == 0) rc = chb_error_errno(e, errno, "cannot write", path);
  return rc;
}

int chb_s3_delete(chb_s3 *s, const char *key, chb_error *e) {
  s3_req r = {.method = "DELETE", .key = key};
  if (perform(s, &r, e) == 0) return 0;
  if (e->code == CHB_ENOENT) {   /* S3 answers 204 for a missing key; some servers 404 */
    chb_error_clear(e);
    return 0;
  }
  return -1;
}

/* DeleteResult: <Error><Key/><Code/><Message/></Error> per failed key. */
typedef struct del_result {
  size_t errors;
  char key[512], code[64], message[256];
  char cur_key[512], cur_code[64], cur_message[256];
} del_result;

static void del_cb(void *ctx, const char *path, const char *text) {
  del_result *d = ctx;
  if (strcmp(path, "DeleteResult/Error/Key") == 0) snprintf(d->cur_key, sizeof d->cur_key, "%s", text);
  else if (strcmp(path, "DeleteResult/Error/Code") == 0)
    snprintf(d->cur_code, sizeof d->cur_code, "%s", text);
  else if (strcmp(path, "DeleteResult/Error/Message") == 0)
    snprintf(d->cur_message, sizeof d->cur_message, "%s", text);
  else if (strcmp(path, "DeleteResult/Error") == 0) {
    if (d->errors++ == 0) {
      memcpy(d->key, d->cur_key, sizeof d->key);
      memcpy(d->code, d->cur_code, sizeof d->code);
      memcpy(d->message, d->cur_message, sizeof d->message);
    }
    d->cur_key[0] = d->cur_code[0] = d->cur_message[0] = '\0';
  }
}

int chb_s3_delete_many(chb_s3 *s, const char *const *keys, size_t n, chb_error *e) {
  for (size_t at = 0; at < n; at += CHB_S3_DELETE_BATCH) {
    size_t cnt = n - at < CHB_S3_DELETE_BATCH ? n - at : CHB_S3_DELETE_BATCH;
    sbuf body = {0}, resp = {0};
    sb_adds(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                   "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    for (size_t i = 0; i < cnt; i++) {
      sb_adds(&body, "<Object><Key>");
      xml_escape(&body, keys[at + i]);
      sb_adds(&body, "</Key></Object>");
    }
    sb_adds(&body, "</Delete>");
    if (body.oom) {
      sb_free(&body);
      return chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
    }
    char sha[65], md5b64[32], what[600];
    sha256_hex(body.p, body.len, sha);
    unsigned char d[16];
    unsigned int dn = 0;
    EVP_Digest(body.p, body.len, d, &dn, EVP_md5(), NULL);
    base64(d, 16, md5b64);
    snprintf(what, sizeof what, "s3://%s/ (delete %zu objects, from %s)", s->bucket, cnt, keys[at]);
    mem_src m = {(const unsigned char *)body.p, body.len};
    chb_s3_source src = {mem_read_at, &m, body.len};
    const char *q[] = {"delete", ""};
    s3_req r = {.method = "POST", .what = what, .query = q, .nquery = 1, .body = &src,
                .body_len = body.len, .payload_hash = sha, .resp = &resp};
    r.hdr[r.nhdr++] = (chb_s3_header){"content-md5", md5b64};
    r.hdr[r.nhdr++] = (chb_s3_header){"content-type", "application/xml"};
    int rc = perform(s, &r, e);
    sb_free(&body);
    if (rc == 0) {
      del_result dr;
      memset(&dr, 0, sizeof dr);
      if (resp.len && xml_walk(resp.p, resp.len, del_cb, &dr) != 0)
        rc = chb_error_set(e, CHB_EIO, "S3 POST %s: the answer is not XML", what);
      else if (dr.errors)
        rc = chb_error_set(e, dr.code[0] && strcmp(dr.code, "AccessDenied") == 0 ? CHB_EACCES : CHB_EIO,
                           "S3 delete s3://%s/%s: %s: %s (%zu of %zu keys in the batch not deleted)",
                           s->bucket, dr.key, dr.code, dr.message, dr.errors, cnt);
    }
    sb_free(&resp);
    if (rc != 0) return -1;
  }
  return 0;
}

/* ListObjectsV2: one page is collected (at most 1000 entries), then handed
 * to the callback, because <EncodingType> may come after the <Contents>. */
typedef struct list_entry {
  char *key;
  uint64_t size;
  char etag[80];
} list_entry;

typedef struct list_page {
  list_entry *v;
  size_t n, cap;
  int oom;
  int truncated;
  int url_encoded;
  char *next;
  char *key;
  uint64_t size;
  char etag[80];
} list_page;

static void list_cb(void *ctx, const char *path, const char *text) {
  list_page *p = ctx;
  if (strcmp(path, "ListBucketResult/Contents/Key") == 0) {
    free(p->key);
    p->key = strdup(text);
    if (!p->key) p->oom = 1;
  } else if (strcmp(path, "ListBucketResult/Contents/Size") == 0) {
    p->size = strtoull(text, NULL, 10);
  } else if (strcmp(path, "ListBucketResult/Contents/ETag") == 0) {
    size_t n = strlen(text);
    if (n >= 2 && text[0] == '"' && text[n - 1] == '"')
      snprintf(p->etag, sizeof p->etag, "%.*s", (int)n - 2, text + 1);
    else
      snprintf(p->etag, sizeof p->etag, "%s", text);
  } else if (strcmp(path, "ListBucketResult/Contents") == 0) {
    if (p->key && p->n == p->cap) {
      size_t cap = p->cap ? 2 * p->cap : 64;
      list_entry *v = realloc(p->v, cap * sizeof *v);
      if (!v) p->oom = 1;
      else p->v = v, p->cap = cap;
    }
    if (p->key && p->n < p->cap) {
      p->v[p->n].key = p->key;
      p->v[p->n].size = p->size;
      memcpy(p->v[p->n].etag, p->etag, sizeof p->etag);
      p->n++;
      p->key = NULL;
    }
    free(p->key);
    p->key = NULL;
    p->etag[0] = '\0';
    p->size = 0;
  } else if (strcmp(path, "ListBucketResult/IsTruncated") == 0) {
    p->truncated = strcmp(text, "true") == 0;
  } else if (strcmp(path, "ListBucketResult/EncodingType") == 0) {
    p->url_encoded = strcmp(text, "url") == 0;
  } else if (strcmp(path, "ListBucketResult/NextContinuationToken") == 0) {
    free(p->next);
    p->next = strdup(text);
  }
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* In place: %XX and '+' (S3's encoding-type=url is form encoding). */
static void url_decode(char *s) {
  char *o = s;
  for (char *p = s; *p; p++) {
    if (*p == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
      *o++ = (char)(hexval(p[1]) * 16 + hexval(p[2]));
      p += 2;
    } else if (*p == '+') {
      *o++ = ' ';
    } else {
      *o++ = *p;
    }
  }
  *o = '\0';
}

static void list_page_free(list_page *p) {
  for (size_t i = 0; i < p->n; i++) free(p->v[i].key);
  free(p->v);
  free(p->key);
}

int chb_s3_list(chb_s3 *s, const char *prefix, int max_keys, chb_s3_list_cb cb, void *ctx,
                chb_error *e) {
  char mk[16], what[600];
  snprintf(mk, sizeof mk, "%d", max_keys > 0 && max_keys <= 1000 ? max_keys : 1000);
  snprintf(what, sizeof what, "s3://%s/%s* (list)", s->bucket, prefix ? prefix : "");
  char *token = NULL;
  int rc = 0;
  for (;;) {
    /* encoding-type=url: keys come back URL-encoded (any byte is safe in the
     * XML); a server that ignores it (s3rver) sends no <EncodingType>. */
    const char *q[10] = {"list-type", "2", "max-keys", mk, "prefix", prefix ? prefix : "",
                         "encoding-type", "url"};
    size_t nq = 4;
    if (token) {
      q[8] = "continuation-token";
      q[9] = token;
      nq = 5;
    }
    sbuf resp = {0};
    s3_req r = {.method = "GET", .what = what, .query = q, .nquery = nq, .resp = &resp};
    if (perform(s, &r, e) != 0) {
      sb_free(&resp);
      rc = -1;
      break;
    }
    list_page p;
    memset(&p, 0, sizeof p);
    int bad = resp.len == 0 || xml_walk(resp.p, resp.len, list_cb, &p) != 0;
    sb_free(&resp);
    free(token);
    token = p.next;
    if (p.oom) {
      list_page_free(&p);
      rc = chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
      break;
    }
    if (bad) {
      list_page_free(&p);
      rc = chb_error_set(e, CHB_EIO, "S3 GET %s: the answer is not a ListBucketResult", what);
      break;
    }
    for (size_t i = 0; i < p.n && rc == 0; i++) {
      if (p.url_encoded) url_decode(p.v[i].key);
      if (cb(ctx, p.v[i].key, p.v[i].size, p.v[i].etag, e) != 0) rc = -1;
    }
    list_page_free(&p);
    if (rc != 0 || !p.truncated) break;
    if (!token || !*token) {
      rc = chb_error_set(e, CHB_EIO, "S3 GET %s: truncated answer without NextContinuationToken", what);
      break;
    }
  }
  free(token);
  return rc;
}

/* ---- multipart ---------------------------------------------------------- */

static void upload_id_cb(void *ctx, const char *path, const char *text) {
  char **id = ctx;
  if (strcmp(path, "InitiateMultipartUploadResult/UploadId") == 0 && !*id) *id = strdup(text);
}

int chb_s3_mpu_create(chb_s3 *s, const char *key, char **upload_id, chb_error *e) {
  sbuf resp = {0};
  const char *q[] = {"uploads", ""};
  s3_req r = {.method = "POST", .key = key, .query = q, .nquery = 1, .resp = &resp};
  if (s->storage_class) r.hdr[r.nhdr++] = (chb_s3_header){"x-amz-storage-class", s->storage_class};
  *upload_id = NULL;
  if (perform(s, &r, e) != 0) {
    sb_free(&resp);
    return -1;
  }
  int bad = resp.len == 0 || xml_walk(resp.p, resp.len, upload_id_cb, upload_id) != 0;
  sb_free(&resp);
  if (bad || !*upload_id || !**upload_id) {
    free(*upload_id);
    *upload_id = NULL;
    return chb_error_set(e, CHB_EIO, "S3 POST s3://%s/%s?uploads: no UploadId in the answer",
                         s->bucket, key);
  }
  return 0;
}

int chb_s3_mpu_part(chb_s3 *s, const char *key, const char *upload_id, int number,
                    const chb_s3_source *src, uint64_t offset, uint64_t len, chb_s3_part *out,
                    chb_error *e) {
  char num[16], sha[65], what[600];
  snprintf(num, sizeof num, "%d", number);
  snprintf(what, sizeof what, "s3://%s/%s (part %d)", s->bucket, key, number);
  const char *q[] = {"partNumber", num, "uploadId", upload_id};
  s3_req r = {.method = "PUT", .key = key, .what = what, .query = q, .nquery = 2, .body = src,
              .body_off = offset, .body_len = len, .md5_etag = 1};
  if (s->sign_payload) {
    if (source_sha256(src, offset, len, sha, e) != 0) return -1;
    r.payload_hash = sha;
  } else {
    r.payload_hash = "UNSIGNED-PAYLOAD";
  }
  if (perform(s, &r, e) != 0) return -1;
  if (check_md5_etag(s, &r, e) != 0) return -1;
  if (!r.etag[0])
    return chb_error_set(e, CHB_EIO, "S3 PUT %s: the answer has no ETag", what);
  out->number = number;
  snprintf(out->etag, sizeof out->etag, "%s", r.etag);
  return 0;
}

int chb_s3_mpu_complete(chb_s3 *s, const char *key, const char *upload_id,
                        const chb_s3_part *parts, size_t n, chb_error *e) {
  sbuf body = {0}, resp = {0};
  sb_adds(&body, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
  for (size_t i = 0; i < n; i++) {
    sb_addf(&body, "<Part><PartNumber>%d</PartNumber><ETag>\"", parts[i].number);
    xml_escape(&body, parts[i].etag);
    sb_adds(&body, "\"</ETag></Part>");
  }
  sb_adds(&body, "</CompleteMultipartUpload>");
  if (body.oom) {
    sb_free(&body);
    return chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
  }
  char sha[65];
  sha256_hex(body.p, body.len, sha);
  mem_src m = {(const unsigned char *)body.p, body.len};
  chb_s3_source src = {mem_read_at, &m, body.len};
  const char *q[] = {"uploadId", upload_id};
  s3_req r = {.method = "POST", .key = key, .query = q, .nquery = 1, .body = &src,
              .body_len = body.len, .payload_hash = sha, .resp = &resp};
  r.hdr[r.nhdr++] = (chb_s3_header){"content-type", "application/xml"};
  int rc = 0;
  /* S3 may answer 200 and put an <Error> in the body: retried like a 5xx. */
  for (int n_try = 0;; n_try++) {
    rc = perform(s, &r, e);
    if (rc != 0) break;
    err_xml x = {{0}, {0}};
    if (resp.len) xml_walk(resp.p, resp.len, err_xml_cb, &x);
    if (!x.code[0]) break;
    if (n_try >= s->max_retries || !is_retryable_s3(0, x.code)) {
      rc = chb_error_set(e, CHB_EIO, "S3 POST s3://%s/%s?uploadId (complete): %s: %s", s->bucket,
                         key, x.code, x.message);
      break;
    }
    sleep_ms(backoff_ms(s, n_try));
  }
  sb_free(&body);
  sb_free(&resp);
  return rc;
}

int chb_s3_mpu_abort(chb_s3 *s, const char *key, const char *upload_id, chb_error *e) {
  const char *q[] = {"uploadId", upload_id};
  s3_req r = {.method = "DELETE", .key = key, .query = q, .nquery = 1};
  int saved = s->max_retries;
  s->max_retries = saved > 1 ? 1 : saved;   /* cleanup: do not wait long */
  int rc = perform(s, &r, e);
  s->max_retries = saved;
  if (rc == 0) return 0;
  if (e->sys == 404 || e->sys == 405 || e->sys == 501) {
    chb_error_clear(e);
    return 1;
  }
  return -1;
}

uint64_t chb_s3_part_size(uint64_t size, uint64_t wanted) {
  uint64_t p = wanted > CHB_S3_MIN_PART ? wanted : CHB_S3_MIN_PART;
  uint64_t need = (size + CHB_S3_MAX_PARTS - 1) / CHB_S3_MAX_PARTS;
  if (p < need) p = need;
  if (p > CHB_S3_MAX_PART) p = CHB_S3_MAX_PART;
  return p;
}

int chb_s3_upload_multipart(chb_s3 *s, const char *key, const chb_s3_source *src,
                            uint64_t part_size, chb_error *e) {
  uint64_t size = src->size;
  uint64_t ps = chb_s3_part_size(size, part_size);
  uint64_t nparts = size ? (size + ps - 1) / ps : 1;
  if (nparts > CHB_S3_MAX_PARTS)
    return chb_error_set(e, CHB_INVALID, "S3 upload s3://%s/%s: %" PRIu64 " bytes is more than %d parts of 5 GiB",
                         s->bucket, key, size, CHB_S3_MAX_PARTS);
  chb_s3_part *parts = calloc((size_t)nparts, sizeof *parts);
  if (!parts) return chb_error_set(e, CHB_ENOMEM, "S3: out of memory");
  char *id = NULL;
  if (chb_s3_mpu_create(s, key, &id, e) != 0) {
    free(parts);
    return -1;
  }
  int rc = 0;
  for (uint64_t i = 0; i < nparts && rc == 0; i++) {
    uint64_t off = i * ps;
    uint64_t len = size - off < ps ? size - off : ps;
    rc = chb_s3_mpu_part(s, key, id, (int)i + 1, src, off, len, &parts[i], e);
  }
  if (rc == 0) rc = chb_s3_mpu_complete(s, key, id, parts, (size_t)nparts, e);
  if (rc != 0) {
    chb_error keep = *e;
    chb_error ae;
    chb_error_clear(&ae);
    chb_s3_mpu_abort(s, key, id, &ae);   /* best effort: the first error is the one said */
    *e = keep;
  }
  free(id);
  free(parts);
  return rc;
}
