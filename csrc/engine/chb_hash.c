/*
 * Google CityHash v1.0.2, 128-bit variants only, and ClickHouse's chained
 * 2048-byte-block file checksum built on it.
 *
 * Written from the published v1.0.2 algorithm (the revision ClickHouse keeps
 * as contrib/cityhash102). Later CityHash releases changed HashLen0to16 and
 * the tail loop of CityHash128WithSeed; those give different values.
 * Values are checked against real ClickHouse files in csrc/tests/test_hash.c.
 */
#include "chb_hash.h"

#include <string.h>

#define CHB_HASH_BLOCK 2048

static const uint64_t k0 = 0xc3a5c85c97cb3127ULL;
static const uint64_t k1 = 0xb492b66fbe98f273ULL;
static const uint64_t k2 = 0x9ae16a3b2f90404fULL;
static const uint64_t k3 = 0xc949d7c7509e6557ULL;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define CHB_LE64(x) __builtin_bswap64(x)
#define CHB_LE32(x) __builtin_bswap32(x)
#else
#define CHB_LE64(x) (x)
#define CHB_LE32(x) (x)
#endif

static inline uint64_t fetch64(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return CHB_LE64(v);
}

static inline uint32_t fetch32(const unsigned char *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return CHB_LE32(v);
}

/* Every call site passes a shift in 1..63 (v1.0.2's Rotate special-cases 0,
 * which never occurs in the 128-bit paths). */
static inline uint64_t rotate(uint64_t v, int shift) {
  return (v >> shift) | (v << (64 - shift));
}

static inline uint64_t shift_mix(uint64_t v) { return v ^ (v >> 47); }

/* Hash128to64 of (u, v). */
static inline uint64_t hash_len16(uint64_t u, uint64_t v) {
  const uint64_t kmul = 0x9ddfea08eb382d69ULL;
  uint64_t a = (u ^ v) * kmul;
  a ^= (a >> 47);
  uint64_t b = (v ^ a) * kmul;
  b ^= (b >> 47);
  b *= kmul;
  return b;
}

/* v1.0.2's HashLen0to16 (1.1 changed the len > 8 and 4..8 branches). */
static uint64_t hash_len0to16(const unsigned char *s, size_t len) {
  if (len > 8) {
    uint64_t a = fetch64(s);
    uint64_t b = fetch64(s + len - 8);
    /* RotateByAtLeast1: len is 9..16 here, the shift is never 0. */
    return hash_len16(a, rotate(b + len, (int)len)) ^ b;
  }
  if (len >= 4) {
    uint64_t a = fetch32(s);
    return hash_len16(len + (a << 3), fetch32(s + len - 4));
  }
  if (len > 0) {
    uint8_t a = s[0];
    uint8_t b = s[len >> 1];
    uint8_t c = s[len - 1];
    uint32_t y = (uint32_t)a + ((uint32_t)b << 8);
    uint32_t z = (uint32_t)len + ((uint32_t)c << 2);
    return shift_mix(y * k2 ^ z * k3) * k2;
  }
  return k2;
}

typedef struct pair64 {
  uint64_t first, second;
} pair64;

static inline pair64 weak_hash_len32_with_seeds(const unsigned char *s, uint64_t a, uint64_t b) {
  uint64_t w = fetch64(s);
  uint64_t x = fetch64(s + 8);
  uint64_t y = fetch64(s + 16);
  uint64_t z = fetch64(s + 24);
  a += w;
  b = rotate(b + a + z, 21);
  uint64_t c = a;
  a += x;
  a += y;
  b += rotate(a, 44);
  pair64 r = {a + z, b + c};
  return r;
}

/* CityMurmur: CityHash128WithSeed for len < 128. */
static chb_u128 city_murmur(const unsigned char *s, size_t len, chb_u128 seed) {
  uint64_t a = seed.lo;
  uint64_t b = seed.hi;
  uint64_t c, d;
  if (len <= 16) {
    a = shift_mix(a * k1) * k1;
    c = b * k1 + hash_len0to16(s, len);
    d = shift_mix(a + (len >= 8 ? fetch64(s) : c));
  } else {
    long l = (long)len - 16;
    c = hash_len16(fetch64(s + len - 8) + k1, a);
    d = hash_len16(b + len, c + fetch64(s + len - 16));
    a += d;
    do {
      a ^= shift_mix(fetch64(s) * k1) * k1;
      a *= k1;
      b ^= a;
      c ^= shift_mix(fetch64(s + 8) * k1) * k1;
      c *= k1;
      d ^= c;
      s += 16;
      l -= 16;
    } while (l > 0);
  }
  a = hash_len16(a, c);
  b = hash_len16(d, b);
  chb_u128 r = {a ^ b, hash_len16(b, a)};
  return r;
}

chb_u128 chb_cityhash128_seed(const void *data, size_t len, chb_u128 seed) {
  const unsigned char *s = data;
  if (len < 128)
    return city_murmur(s, len, seed);

  pair64 v, w;
  uint64_t x = seed.lo;
  uint64_t y = seed.hi;
  uint64_t z = len * k1;
  uint64_t t;
  v.first = rotate(y ^ k1, 49) * k1 + fetch64(s);
  v.second = rotate(v.first, 42) * k1 + fetch64(s + 8);
  w.first = rotate(y + z, 35) * k1 + x;
  w.second = rotate(x + fetch64(s + 88), 53) * k1;

  do {
    x = rotate(x + y + v.first + fetch64(s + 16), 37) * k1;
    y = rotate(y + v.second + fetch64(s + 48), 42) * k1;
    x ^= w.second;
    y ^= v.first;
    z = rotate(z ^ w.first, 33);
    v = weak_hash_len32_with_seeds(s, v.second * k1, x + w.first);
    w = weak_hash_len32_with_seeds(s + 32, z + w.second, y);
    t = z; z = x; x = t;
    s += 64;
    x = rotate(x + y + v.first + fetch64(s + 16), 37) * k1;
    y = rotate(y + v.second + fetch64(s + 48), 42) * k1;
    x ^= w.second;
    y ^= v.first;
    z = rotate(z ^ w.first, 33);
    v = weak_hash_len32_with_seeds(s, v.second * k1, x + w.first);
    w = weak_hash_len32_with_seeds(s + 32, z + w.second, y);
    t = z; z = x; x = t;
    s += 64;
    len -= 128;
  } while (len >= 128);
  y += rotate(w.first, 37) * k0 + z;
  x += rotate(v.first + z, 49) * k0;
  /* Up to four 32-byte chunks from the end of the input (v1.0.2 tail). */
  for (size_t tail_done = 0; tail_done < len;) {
    tail_done += 32;
    y = rotate(y - x, 42) * k0 + v.second;
    w.first += fetch64(s + len - tail_done + 16);
    x = rotate(x, 49) * k0 + w.first;
    w.first += v.first;
    v = weak_hash_len32_with_seeds(s + len - tail_done, v.first, v.second);
  }
  x = hash_len16(x, v.first);
  y = hash_len16(y, w.first);
  chb_u128 r = {hash_len16(x + v.second, w.second) + y,
                hash_len16(x + w.second, y + v.second)};
  return r;
}

chb_u128 chb_cityhash128(const void *data, size_t len) {
  const unsigned char *s = data;
  chb_u128 seed;
  if (len >= 16) {
    seed.lo = fetch64(s) ^ k3;
    seed.hi = fetch64(s + 8);
    return chb_cityhash128_seed(s + 16, len - 16, seed);
  }
  if (len >= 8) {
    seed.lo = fetch64(s) ^ (len * k0);
    seed.hi = fetch64(s + len - 8) ^ k1;
    return chb_cityhash128_seed(s, 0, seed);
  }
  seed.lo = k0;
  seed.hi = k1;
  return chb_cityhash128_seed(s, len, seed);
}

void chb_hash_init(chb_hash *h) {
  h->state.lo = 0;
  h->state.hi = 0;
  h->total = 0;
  h->fill = 0;
}

void chb_hash_update(chb_hash *h, const void *data, size_t len) {
  const unsigned char *p = data;
  h->total += len;
  if (h->fill > 0) {
    size_t take = CHB_HASH_BLOCK - h->fill;
    if (take > len)
      take = len;
    memcpy(h->block + h->fill, p, take);
    h->fill += take;
    p += take;
    len -= take;
    if (h->fill < CHB_HASH_BLOCK)
      return;
    h->state = chb_cityhash128_seed(h->block, CHB_HASH_BLOCK, h->state);
    h->fill = 0;
  }
  /* Whole blocks straight from the caller's memory. */
  while (len >= CHB_HASH_BLOCK) {
    h->state = chb_cityhash128_seed(p, CHB_HASH_BLOCK, h->state);
    p += CHB_HASH_BLOCK;
    len -= CHB_HASH_BLOCK;
  }
  if (len > 0) {
    memcpy(h->block, p, len);
    h->fill = len;
  }
}

chb_u128 chb_hash_peek(const chb_hash *h) {
  if (h->fill == 0)
    return h->state;
  return chb_cityhash128_seed(h->block, h->fill, h->state);
}

static const char hex_digits[] = "0123456789abcdef";

static void put_u64_hex(uint64_t v, char *out) {
  for (int i = 15; i >= 0; i--) {
    out[i] = hex_digits[v & 0xf];
    v >>= 4;
  }
}

static int hex_val(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
 * `.backup` prints the checksum as one 128-bit number in hex: the high half
 * (CityHash's `second`) first, then the low half (`first`), each 64-bit half
 * most significant digit first. Settled on real files: test_hash.c.
 */
void chb_u128_to_hex(chb_u128 v, char out[33]) {
  put_u64_hex(v.hi, out);
  put_u64_hex(v.lo, out + 16);
  out[32] = '\0';
}

int chb_u128_from_hex(const char *hex, chb_u128 *out) {
  uint64_t half[2] = {0, 0};
  if (!hex)
    return -1;
  for (int i = 0; i < 32; i++) {
    int d = hex_val(hex[i]);
    if (d < 0)
      return -1;   /* also stops at a '\0' before 32 digits */
    half[i / 16] = (half[i / 16] << 4) | (uint64_t)d;
  }
  if (hex[32] != '\0')
    return -1;
  out->hi = half[0];
  out->lo = half[1];
  return 0;
}
