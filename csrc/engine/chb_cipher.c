/* Per-file AES-256-GCM of encrypted directory backups; see chb_cipher.h. */
#include "chb_cipher.h"
#include "chb_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEALED_CHUNK ((uint64_t)CHB_CIPHER_CHUNK + CHB_CIPHER_TAG_LEN)

/* CHB_CRYPTO with the OpenSSL reason; drains this thread's error queue. */
static int ossl_fail(chb_error *err, const char *what, const char *name) {
  unsigned long e = ERR_get_error(), last = e;
  while (e != 0) {
    last = e;
    e = ERR_get_error();
  }
  char text[256] = "unknown error";
  if (last) ERR_error_string_n(last, text, sizeof text);
  chb_error_set(err, CHB_CRYPTO, "%s %s: %s", what, name, text);
  err->sys = (int)(last & 0x7fffffff);
  return -1;
}

int chb_cipher_derive_key(const char *password, size_t password_len,
                          const unsigned char *salt, size_t salt_len,
                          uint64_t n, uint64_t r, uint64_t p,
                          unsigned char *out, size_t outlen, chb_error *err) {
  if (n < 2 || n > ((uint64_t)1 << 22) || (n & (n - 1)) != 0 || r < 1 || r > 64 || p < 1 || p > 64)
    return chb_error_set(err, CHB_INVALID,
                         "bad scrypt parameters n=%llu r=%llu p=%llu (n: a power of two up to 2^22; r, p: 1..64)",
                         (unsigned long long)n, (unsigned long long)r, (unsigned long long)p);
  /* scrypt needs 128 * r * (n + p) bytes and a little more. */
  uint64_t maxmem = 128 * r * (n + p) + ((uint64_t)64 << 20);
  ERR_clear_error();
  if (EVP_PBE_scrypt(password, password_len, salt, salt_len, n, r, p, maxmem, out, outlen) != 1)
    return ossl_fail(err, "cannot derive", "the key with scrypt");
  return 0;
}

int chb_cipher_random(unsigned char *out, size_t n, chb_error *err) {
  ERR_clear_error();
  if (RAND_bytes(out, (int)n) != 1) return ossl_fail(err, "cannot make", "random bytes");
  return 0;
}

uint64_t chb_cipher_sealed_size(uint64_t plain) {
  uint64_t chunks = plain == 0 ? 1 : (plain + CHB_CIPHER_CHUNK - 1) / CHB_CIPHER_CHUNK;
  return CHB_CIPHER_HEADER_LEN + plain + chunks * CHB_CIPHER_TAG_LEN;
}

int chb_cipher_plain_size(uint64_t sealed, uint64_t *plain) {
  if (sealed < CHB_CIPHER_HEADER_LEN + CHB_CIPHER_TAG_LEN) return -1;
  uint64_t body = sealed - CHB_CIPHER_HEADER_LEN;
  uint64_t full = body / SEALED_CHUNK, rem = body % SEALED_CHUNK;
  if (rem == 0) {
    *plain = full * CHB_CIPHER_CHUNK;          /* the last chunk is full */
    return 0;
  }
  if (rem < CHB_CIPHER_TAG_LEN || (rem == CHB_CIPHER_TAG_LEN && full > 0)) return -1;
  *plain = full * CHB_CIPHER_CHUNK + rem - CHB_CIPHER_TAG_LEN;
  return 0;
}

/* ---- one GCM context bound to a key, a file name and a base nonce ---- */

typedef struct gcm {
  EVP_CIPHER_CTX *ctx;
  char *name;
  size_t name_len;
  unsigned char nonce[CHB_CIPHER_NONCE_LEN];
} gcm;

static int gcm_init(gcm *g, const unsigned char *key, const char *name, int enc, chb_error *err) {
  memset(g, 0, sizeof *g);
  g->name_len = strlen(name);
  g->name = malloc(g->name_len + 1);
  if (!g->name) return chb_error_set(err, CHB_ENOMEM, "cannot allocate a cipher for %s", name);
  memcpy(g->name, name, g->name_len + 1);
  ERR_clear_error();
  g->ctx = EVP_CIPHER_CTX_new();
  if (!g->ctx || EVP_CipherInit_ex(g->ctx, EVP_aes_256_gcm(), NULL, key, NULL, enc) != 1)
    return ossl_fail(err, "cannot set up AES-256-GCM for", name);
  return 0;
}

static void gcm_free(gcm *g) {
  EVP_CIPHER_CTX_free(g->ctx);   /* wipes the key schedule */
  free(g->name);
  g->ctx = NULL;
  g->name = NULL;
}

/* Nonce and AAD of chunk idx; then in-place encryption or decryption. */
static int gcm_chunk(gcm *g, uint64_t idx, int final, int enc, unsigned char *buf, size_t len,
                     unsigned char *tag, const char *what, chb_error *err) {
  unsigned char nonce[CHB_CIPHER_NONCE_LEN], trailer[9];
  memcpy(nonce, g->nonce, sizeof nonce);
  for (int i = 0; i < 8; i++) {
    unsigned char b = (unsigned char)(idx >> (56 - 8 * i));
    nonce[CHB_CIPHER_NONCE_LEN - 8 + i] ^= b;
    trailer[i] = b;
  }
  trailer[8] = final ? 1 : 0;
  int outl = 0;
  ERR_clear_error();
  if (EVP_CipherInit_ex(g->ctx, NULL, NULL, NULL, nonce, enc) != 1 ||
      (g->name_len && EVP_CipherUpdate(g->ctx, NULL, &outl, (const unsigned char *)g->name, (int)g->name_len) != 1) ||
      EVP_CipherUpdate(g->ctx, NULL, &outl, trailer, sizeof trailer) != 1 ||
      (len && EVP_CipherUpdate(g->ctx, buf, &outl, buf, (int)len) != 1))
    return ossl_fail(err, enc ? "cannot encrypt" : "cannot decrypt", what);
  if (enc) {
    if (EVP_CipherFinal_ex(g->ctx, buf + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, CHB_CIPHER_TAG_LEN, tag) != 1)
      return ossl_fail(err, "cannot encrypt", what);
    return 0;
  }
  if (EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, CHB_CIPHER_TAG_LEN, tag) != 1)
    return ossl_fail(err, "cannot decrypt", what);
  if (EVP_CipherFinal_ex(g->ctx, buf + len, &outl) != 1) {
    ERR_clear_error();
    OPENSSL_cleanse(buf, len);
    return chb_error_set(err, CHB_CORRUPT,
                         "%s is corrupt: chunk %llu does not authenticate (modified, truncated, "
                         "or not the file %s of this backup)",
                         what, (unsigned long long)idx, g->name);
  }
  return 0;
}

/* ---- sealer ---- */

struct chb_sealer {
  gcm g;
  int fd;
  char *what;
  int header_done;
  uint64_t idx;
  size_t fill;                                 /* plaintext bytes in buf */
  unsigned char buf[CHB_CIPHER_CHUNK + CHB_CIPHER_TAG_LEN];
};

chb_sealer *chb_sealer_new(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           int fd, const char *what, chb_error *err) {
  chb_sealer *s = calloc(1, sizeof *s);
  if (!s) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a sealer for %s", what);
    return NULL;
  }
  s->fd = fd;
  s->what = strdup(what);
  if (!s->what) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a sealer for %s", what);
    free(s);
    return NULL;
  }
  if (gcm_init(&s->g, key, name, 1, err) != 0) {
    chb_sealer_free(s);
    return NULL;
  }
  ERR_clear_error();
  if (RAND_bytes(s->g.nonce, CHB_CIPHER_NONCE_LEN) != 1) {
    ossl_fail(err, "cannot make a nonce for", what);
    chb_sealer_free(s);
    return NULL;
  }
  return s;
}

static int sealer_flush(chb_sealer *s, int final, chb_error *err) {
  if (!s->header_done) {
    unsigned char header[CHB_CIPHER_HEADER_LEN];
    memcpy(header, CHB_CIPHER_MAGIC, 8);
    memcpy(header + 8, s->g.nonce, CHB_CIPHER_NONCE_LEN);
    if (chb_fs_write_all(s->fd, header, sizeof header) != 0)
      return chb_error_errno(err, errno, "cannot write", s->what);
    s->header_done = 1;
  }
  if (gcm_chunk(&s->g, s->idx, final, 1, s->buf, s->fill, s->buf + s->fill, s->what, err) != 0)
    return -1;
  if (chb_fs_write_all(s->fd, s->buf, s->fill + CHB_CIPHER_TAG_LEN) != 0)
    return chb_error_errno(err, errno, "cannot write", s->what);
  s->idx++;
  s->fill = 0;
  return 0;
}

int chb_sealer_write(chb_sealer *s, const void *buf, size_t len, chb_error *err) {
  const unsigned char *p = buf;
  while (len > 0) {
    /* A full chunk is sealed only once more data comes: it is not the last. */
    if (s->fill == CHB_CIPHER_CHUNK && sealer_flush(s, 0, err) != 0) return -1;
    size_t n = CHB_CIPHER_CHUNK - s->fill;
    if (n > len) n = len;
    memcpy(s->buf + s->fill, p, n);
    s->fill += n;
    p += n;
    len -= n;
  }
  return 0;
}

int chb_sealer_finish(chb_sealer *s, chb_error *err) { return sealer_flush(s, 1, err); }

void chb_sealer_free(chb_sealer *s) {
  if (!s) return;
  gcm_free(&s->g);
  free(s->what);
  OPENSSL_cleanse(s->buf, sizeof s->buf);
  free(s);
}

/* ---- opener ---- */

struct chb_opener {
  gcm g;
  int fd;
  char *path;
  uint64_t sealed, plain;
  uint64_t idx;                     /* chunk in buf, or UINT64_MAX */
  size_t len, pos;                  /* plaintext in buf; next byte to give */
  unsigned char buf[CHB_CIPHER_CHUNK + CHB_CIPHER_TAG_LEN];
};

static ssize_t pread_all(int fd, unsigned char *buf, size_t n, uint64_t off) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, buf + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

chb_opener *chb_opener_open(const char *path, size_t root_len, const unsigned char key[CHB_CIPHER_KEY_LEN],
                            const char *name, chb_error *err) {
  chb_opener *o = calloc(1, sizeof *o);
  if (!o) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate an opener for %s", path);
    return NULL;
  }
  o->fd = -1;
  o->idx = UINT64_MAX;
  o->path = strdup(path);
  if (!o->path) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate an opener for %s", path);
    goto fail;
  }
  if (gcm_init(&o->g, key, name, 0, err) != 0) goto fail;
  o->fd = chb_fs_open_beneath(path, root_len, err);
  if (o->fd < 0) goto fail;
  struct stat st;
  if (fstat(o->fd, &st) != 0) {
    chb_error_errno(err, errno, "cannot open", path);
    goto fail;
  }
  o->sealed = (uint64_t)st.st_size;
  unsigned char header[CHB_CIPHER_HEADER_LEN];
  ssize_t n = pread_all(o->fd, header, sizeof header, 0);
  if (n < 0) {
    chb_error_errno(err, errno, "cannot read", path);
    goto fail;
  }
  if ((size_t)n < sizeof header || memcmp(header, CHB_CIPHER_MAGIC, 8) != 0 ||
      chb_cipher_plain_size(o->sealed, &o->plain) != 0) {
    chb_error_set(err, CHB_CORRUPT, "%s is corrupt: not a file of an encrypted backup "
                  "(bad header or size)", path);
    goto fail;
  }
  memcpy(o->g.nonce, header + 8, CHB_CIPHER_NONCE_LEN);
  return o;
fail:
  chb_opener_close(o);
  return NULL;
}

uint64_t chb_opener_size(const chb_opener *o) { return o->plain; }

/* Reads, authenticates and decrypts chunk idx into buf. */
static int opener_load(chb_opener *o, uint64_t idx, chb_error *err) {
  uint64_t start = CHB_CIPHER_HEADER_LEN + idx * SEALED_CHUNK;
  uint64_t n = o->sealed - start;
  if (n > SEALED_CHUNK) n = SEALED_CHUNK;
  int final = start + n == o->sealed;
  ssize_t got = pread_all(o->fd, o->buf, (size_t)n, start);
  if (got < 0) return chb_error_errno(err, errno, "cannot read", o->path);
  if ((uint64_t)got != n)
    return chb_error_set(err, CHB_CORRUPT, "%s is corrupt: it shrank while being read", o->path);
  size_t len = (size_t)n - CHB_CIPHER_TAG_LEN;
  o->idx = UINT64_MAX;
  if (gcm_chunk(&o->g, idx, final, 0, o->buf, len, o->buf + len, o->path, err) != 0) return -1;
  o->idx = idx;
  o->len = len;
  o->pos = 0;
  return 0;
}

int chb_opener_seek(chb_opener *o, uint64_t offset, chb_error *err) {
  if (offset > o->plain)
    return chb_error_set(err, CHB_CORRUPT, "%s is shorter than expected (%llu bytes, offset %llu)",
                         o->path, (unsigned long long)o->plain, (unsigned long long)offset);
  uint64_t idx = offset / CHB_CIPHER_CHUNK;
  if (offset == o->plain && offset > 0 && offset % CHB_CIPHER_CHUNK == 0) idx--; /* end of a full last chunk */
  if (o->idx != idx && opener_load(o, idx, err) != 0) return -1;
  o->pos = (size_t)(offset - idx * CHB_CIPHER_CHUNK);
  return 0;
}

ssize_t chb_opener_read(chb_opener *o, void *buf, size_t len, chb_error *err) {
  if (o->idx == UINT64_MAX && chb_opener_seek(o, 0, err) != 0) return -1;
  if (o->pos == o->len) {
    uint64_t next = o->idx + 1;
    if (CHB_CIPHER_HEADER_LEN + next * SEALED_CHUNK >= o->sealed) return 0;
    if (opener_load(o, next, err) != 0) return -1;
  }
  size_t n = o->len - o->pos;
  if (n > len) n = len;
  memcpy(buf, o->buf + o->pos, n);
  o->pos += n;
  return (ssize_t)n;
}

void chb_opener_close(chb_opener *o) {
  if (!o) return;
  if (o->fd >= 0) close(o->fd);
  gcm_free(&o->g);
  free(o->path);
  OPENSSL_cleanse(o->buf, sizeof o->buf);
  free(o);
}

/* ---- in memory ---- */

int chb_cipher_seal_buffer(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           const void *in, size_t len, unsigned char *out, chb_error *err) {
  gcm g;
  if (gcm_init(&g, key, name, 1, err) != 0) {
    gcm_free(&g);
    return -1;
  }
  int rc = -1;
  ERR_clear_error();
  if (RAND_bytes(g.nonce, CHB_CIPHER_NONCE_LEN) != 1) {
    ossl_fail(err, "cannot make a nonce for", name);
    goto done;
  }
  memcpy(out, CHB_CIPHER_MAGIC, 8);
  memcpy(out + 8, g.nonce, CHB_CIPHER_NONCE_LEN);
  unsigned char *w = out + CHB_CIPHER_HEADER_LEN;
  const unsigned char *r = in;
  uint64_t idx = 0;
  for (;;) {
    size_t n = len > CHB_CIPHER_CHUNK ? CHB_CIPHER_CHUNK : len;
    int final = len <= CHB_CIPHER_CHUNK;
    if (n) memcpy(w, r, n);
    if (gcm_chunk(&g, idx++, final, 1, w, n, w + n, name, err) != 0) goto done;
    w += n + CHB_CIPHER_TAG_LEN;
    r += n;
    len -= n;
    if (final) break;
  }
  rc = 0;
done:
  gcm_free(&g);
  return rc;
}

int chb_cipher_open_buffer(const unsigned char key[CHB_CIPHER_KEY_LEN], const char *name,
                           const unsigned char *in, size_t len, unsigned char *out,
                           const char *what, chb_error *err) {
  uint64_t plain;
  if (len < CHB_CIPHER_HEADER_LEN || memcmp(in, CHB_CIPHER_MAGIC, 8) != 0 ||
      chb_cipher_plain_size(len, &plain) != 0)
    return chb_error_set(err, CHB_CORRUPT, "%s is corrupt: not a file of an encrypted backup "
                         "(bad header or size)", what);
  gcm g;
  if (gcm_init(&g, key, name, 0, err) != 0) {
    gcm_free(&g);
    return -1;
  }
  memcpy(g.nonce, in + 8, CHB_CIPHER_NONCE_LEN);
  int rc = -1;
  const unsigned char *r = in + CHB_CIPHER_HEADER_LEN;
  size_t left = len - CHB_CIPHER_HEADER_LEN;
  unsigned char *w = out;
  for (uint64_t idx = 0;; idx++) {
    size_t n = left > SEALED_CHUNK ? (size_t)SEALED_CHUNK : left;
    int final = n == left;
    size_t plen = n - CHB_CIPHER_TAG_LEN;
    unsigned char tag[CHB_CIPHER_TAG_LEN];
    memcpy(tag, r + plen, sizeof tag);
    if (plen) memcpy(w, r, plen);
    if (gcm_chunk(&g, idx, final, 0, w, plen, tag, what, err) != 0) goto done;
    w += plen;
    r += n;
    left -= n;
    if (final) break;
  }
  rc = 0;
done:
  gcm_free(&g);
  return rc;
}
