/* WinZip AES (AE-2) with OpenSSL; see chb_aes.h. */
/* SHA1_Init/Update/Final and SHA_CTX: deprecated in OpenSSL 3 in favour of
 * EVP, whose per-call contexts are what makes its PBKDF2 slow (see pbkdf2_sha1). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "chb_aes.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#define KS_BYTES 16384          /* keystream made per AES-ECB call */
#define PBKDF2_ITERATIONS 1000  /* fixed by the WinZip AES format */

struct chb_aes {
  int encrypt;
  size_t key_len;
  EVP_CIPHER_CTX *ecb;
  EVP_MAC_CTX *mac;
  uint64_t counter;             /* last block number used */
  size_t ks_pos;                /* bytes of ks already used */
  unsigned char ks[KS_BYTES];
  unsigned char blocks[KS_BYTES];
};

size_t chb_aes_salt_len(int strength) { return strength >= 1 && strength <= 3 ? 4 + 4 * (size_t)strength : 0; }
size_t chb_aes_overhead(int strength) { return chb_aes_salt_len(strength) + CHB_AES_PV_LEN + CHB_AES_MAC_LEN; }

/* CHB_CRYPTO with the OpenSSL reason; drains this thread's error queue. */
static int ossl_fail(chb_error *err, const char *what) {
  unsigned long e = ERR_get_error(), last = e;
  while (e != 0) {
    last = e;
    e = ERR_get_error();
  }
  char text[256] = "unknown error";
  if (last) ERR_error_string_n(last, text, sizeof text);
  chb_error_set(err, CHB_CRYPTO, "%s: %s", what, text);
  err->sys = (int)(last & 0x7fffffff);
  return -1;
}

void chb_aes_free(chb_aes *a) {
  if (!a) return;
  EVP_CIPHER_CTX_free(a->ecb);
  EVP_MAC_CTX_free(a->mac);
  OPENSSL_cleanse(a, sizeof *a);
  free(a);
}

/*
 * PBKDF2-HMAC-SHA1 (RFC 8018) with HMAC's inner and outer key states made
 * once and copied for each of the 1000 iterations. WinZip AES derives a key
 * for every entry, so this runs once per file of a backup: OpenSSL's
 * PKCS5_PBKDF2_HMAC_SHA1 rebuilds the HMAC through EVP on every iteration
 * (allocations, provider lookups) and takes 0.92 ms for a 66-byte key here;
 * this takes 0.40 ms (two SHA-1 blocks an iteration, SHA-NI). Checked against
 * OpenSSL's own in csrc/tests/test_zip.c.
 */
void chb_pbkdf2_sha1(const char *password, size_t password_len, const unsigned char *salt,
                     size_t salt_len, unsigned iterations, unsigned char *out, size_t out_len) {
  unsigned char key[SHA_CBLOCK] = {0}, pad[SHA_CBLOCK];
  SHA_CTX inner, outer, c;
  if (password_len > SHA_CBLOCK) SHA1((const unsigned char *)password, password_len, key);
  else memcpy(key, password, password_len);
  for (size_t i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x36;
  SHA1_Init(&inner);
  SHA1_Update(&inner, pad, SHA_CBLOCK);
  for (size_t i = 0; i < SHA_CBLOCK; i++) pad[i] = key[i] ^ 0x5c;
  SHA1_Init(&outer);
  SHA1_Update(&outer, pad, SHA_CBLOCK);
  for (uint32_t block = 1; out_len > 0; block++) {
    unsigned char u[SHA_DIGEST_LENGTH], t[SHA_DIGEST_LENGTH];
    unsigned char be[4] = {(unsigned char)(block >> 24), (unsigned char)(block >> 16),
                           (unsigned char)(block >> 8), (unsigned char)block};
    c = inner;
    SHA1_Update(&c, salt, salt_len);
    SHA1_Update(&c, be, sizeof be);
    SHA1_Final(u, &c);
    c = outer;
    SHA1_Update(&c, u, sizeof u);
    SHA1_Final(u, &c);
    memcpy(t, u, sizeof t);
    for (unsigned r = 1; r < iterations; r++) {
      c = inner;
      SHA1_Update(&c, u, sizeof u);
      SHA1_Final(u, &c);
      c = outer;
      SHA1_Update(&c, u, sizeof u);
      SHA1_Final(u, &c);
      for (size_t i = 0; i < sizeof t; i++) t[i] ^= u[i];
    }
    size_t n = out_len < sizeof t ? out_len : sizeof t;
    memcpy(out, t, n);
    out += n;
    out_len -= n;
    OPENSSL_cleanse(u, sizeof u);
    OPENSSL_cleanse(t, sizeof t);
  }
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(pad, sizeof pad);
  OPENSSL_cleanse(&inner, sizeof inner);
  OPENSSL_cleanse(&outer, sizeof outer);
  OPENSSL_cleanse(&c, sizeof c);
}

/* Derives the keys and builds the contexts; `pv` receives the verifier. */
static chb_aes *aes_new(int strength, const char *password, size_t password_len,
                        const unsigned char *salt, unsigned char pv[2], int encrypt,
                        chb_error *err) {
  const EVP_CIPHER *ciphers[] = {EVP_aes_128_ecb(), EVP_aes_192_ecb(), EVP_aes_256_ecb()};
  if (strength < 1 || strength > 3) {
    chb_error_set(err, CHB_INVALID, "unsupported AES strength %d", strength);
    return NULL;
  }
  chb_aes *a = calloc(1, sizeof *a);
  if (!a) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate an AES context");
    return NULL;
  }
  a->encrypt = encrypt;
  a->key_len = 8 + 8 * (size_t)strength;
  a->ks_pos = KS_BYTES;
  memset(a->blocks, 0, sizeof a->blocks);
  unsigned char keys[2 * 32 + 2];
  size_t klen = 2 * a->key_len + 2;
  EVP_MAC *hmac = NULL;
  ERR_clear_error();
  chb_pbkdf2_sha1(password, password_len, salt, chb_aes_salt_len(strength), PBKDF2_ITERATIONS,
                  keys, klen);
  memcpy(pv, keys + 2 * a->key_len, 2);
  a->ecb = EVP_CIPHER_CTX_new();
  if (!a->ecb || !EVP_EncryptInit_ex(a->ecb, ciphers[strength - 1], NULL, keys, NULL) ||
      !EVP_CIPHER_CTX_set_padding(a->ecb, 0)) {
    ossl_fail(err, "cannot set up AES");
    goto fail;
  }
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA1", 0),
      OSSL_PARAM_construct_end()};
  hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  a->mac = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
  if (!a->mac || !EVP_MAC_init(a->mac, keys + a->key_len, a->key_len, params)) {
    ossl_fail(err, "cannot set up HMAC-SHA1");
    goto fail;
  }
  EVP_MAC_free(hmac);
  OPENSSL_cleanse(keys, sizeof keys);
  return a;
fail:
  EVP_MAC_free(hmac);
  OPENSSL_cleanse(keys, sizeof keys);
  chb_aes_free(a);
  return NULL;
}

chb_aes *chb_aes_encrypter(int strength, const char *password, size_t password_len,
                           unsigned char *header, chb_error *err) {
  size_t salt_len = chb_aes_salt_len(strength);
  if (!salt_len) {
    chb_error_set(err, CHB_INVALID, "unsupported AES strength %d", strength);
    return NULL;
  }
  ERR_clear_error();
  if (RAND_bytes(header, (int)salt_len) != 1) {
    ossl_fail(err, "cannot make a random salt");
    return NULL;
  }
  return aes_new(strength, password, password_len, header, header + salt_len, 1, err);
}

chb_aes *chb_aes_decrypter(int strength, const char *password, size_t password_len,
                           const unsigned char *header, const char *what, chb_error *err) {
  unsigned char pv[2];
  chb_aes *a = aes_new(strength, password, password_len, header, pv, 0, err);
  if (!a) return NULL;
  size_t salt_len = chb_aes_salt_len(strength);
  if (CRYPTO_memcmp(pv, header + salt_len, 2) != 0) {
    chb_aes_free(a);
    chb_error_set(err, CHB_AUTH, "wrong password for %s", what);
    return NULL;
  }
  return a;
}

/* Makes the next KS_BYTES of keystream: AES of blocks counter+1, +2, ... */
static int refill(chb_aes *a, chb_error *err) {
  /* Each block: the counter as 8 little-endian bytes, then 8 zero bytes
   * (set once, in aes_new). */
  for (size_t off = 0; off < KS_BYTES; off += 16) {
    uint64_t n = ++a->counter;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(a->blocks + off, &n, 8);
#else
    for (int i = 0; i < 8; i++) a->blocks[off + (size_t)i] = (unsigned char)(n >> (8 * i));
#endif
  }
  int outl = 0;
  ERR_clear_error();
  if (!EVP_EncryptUpdate(a->ecb, a->ks, &outl, a->blocks, KS_BYTES) || outl != KS_BYTES)
    return ossl_fail(err, "AES failed");
  a->ks_pos = 0;
  return 0;
}

static int xor_keystream(chb_aes *a, unsigned char *buf, size_t len, chb_error *err) {
  while (len > 0) {
    if (a->ks_pos == KS_BYTES && refill(a, err) != 0) return -1;
    size_t n = KS_BYTES - a->ks_pos;
    if (n > len) n = len;
    const unsigned char *k = a->ks + a->ks_pos;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
      uint64_t x[4], y[4];
      memcpy(x, buf + i, 32);
      memcpy(y, k + i, 32);
      x[0] ^= y[0];
      x[1] ^= y[1];
      x[2] ^= y[2];
      x[3] ^= y[3];
      memcpy(buf + i, x, 32);
    }
    for (; i < n; i++) buf[i] ^= k[i];
    a->ks_pos += n;
    buf += n;
    len -= n;
  }
  return 0;
}

int chb_aes_mac_update(chb_aes *a, const unsigned char *buf, size_t len, chb_error *err) {
  ERR_clear_error();
  if (len && !EVP_MAC_update(a->mac, buf, len)) return ossl_fail(err, "HMAC-SHA1 failed");
  return 0;
}

int chb_aes_encrypt(chb_aes *a, unsigned char *buf, size_t len, chb_error *err) {
  if (xor_keystream(a, buf, len, err) != 0) return -1;
  return chb_aes_mac_update(a, buf, len, err);
}

int chb_aes_decrypt(chb_aes *a, unsigned char *buf, size_t len, chb_error *err) {
  if (chb_aes_mac_update(a, buf, len, err) != 0) return -1;
  return xor_keystream(a, buf, len, err);
}

int chb_aes_mac(chb_aes *a, unsigned char mac[CHB_AES_MAC_LEN], chb_error *err) {
  unsigned char full[EVP_MAX_MD_SIZE];
  size_t n = 0;
  ERR_clear_error();
  if (!EVP_MAC_final(a->mac, full, &n, sizeof full) || n < CHB_AES_MAC_LEN)
    return ossl_fail(err, "HMAC-SHA1 failed");
  memcpy(mac, full, CHB_AES_MAC_LEN);
  return 0;
}
