/*
 * chb_hash against real ClickHouse: every file in vectors/expected.tsv is
 * hashed in odd piece sizes and must give the <checksum> ClickHouse wrote
 * into a `.backup` manifest. Also: prefix checksums (peek), hex round trips.
 */
#include "chb_hash.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>




static chb_u128 hash_in_pieces(const unsigned char *data, size_t len, size_t piece) {
  chb_hash h;
  chb_hash_init(&h);
  for (size_t off = 0; off < len; off += piece)
    chb_hash_update(&h, data + off, len - off < piece ? len - off : piece);
  return chb_hash_peek(&h);
}


typedef struct vec {
  char name[256];
  unsigned long long size;
  char hex[33];
} vec;

static size_t load_expected(vec *v, size_t max) {
  FILE *f = fopen(CHB_TEST_DATA "/expected.tsv", "r");
  if (!f) {
    printf("FAIL cannot open %s\n", CHB_TEST_DATA "/expected.tsv");
    failures++;
    return 0;
  }
  size_t n = 0;
  while (n < max && fscanf(f, "%255s %llu %32s", v[n].name, &v[n].size, v[n].hex) == 3)
    n++;
  fclose(f);
  return n;
}

static void test_vectors(void) {
  vec v[64];
  size_t n = load_expected(v, 64);
  CHECK(n >= 6, "expected.tsv has %zu vectors", n);
  int have_small = 0, have_mid = 0, have_big = 0, have_empty = 0;
  for (size_t i = 0; i < n; i++) {
    char path[512];
    if (snprintf(path, sizeof path, "%s/%s", CHB_TEST_DATA, v[i].name) >= (int)sizeof path) {
      CHECK(0, "path of %s too long", v[i].name);
      continue;
    }
    size_t len = 0;
    unsigned char *data = slurp(path, &len);
    if (!data) {
      CHECK(0, "read %s", path);
      continue;
    }
    CHECK(len == v[i].size, "%s: size %zu", v[i].name, len);
    have_empty |= len == 0;
    have_small |= len > 0 && len < 16;
    have_mid |= len >= 16 && len < 128;
    have_big |= len >= 5000;

    /* Odd pieces, from an unaligned copy too. */
    static const size_t pieces[] = {1, 7, 2047, 2048, 2049, (size_t)-1};
    unsigned char *unaligned = malloc(len + 1);
    memcpy(unaligned + 1, data, len);
    for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
      size_t piece = pieces[k] == (size_t)-1 ? (len ? len : 1) : pieces[k];
      char hex[33], hex2[33];
      chb_u128_to_hex(hash_in_pieces(data, len, piece), hex);
      chb_u128_to_hex(hash_in_pieces(unaligned + 1, len, piece), hex2);
      CHECK(strcmp(hex, v[i].hex) == 0 && strcmp(hex2, v[i].hex) == 0,
            "%s (%zu bytes) in pieces of %zu: %s (want %s)", v[i].name, len, piece, hex, v[i].hex);
    }
    chb_hash h;
    chb_hash_init(&h);
    chb_hash_update(&h, data, len);
    CHECK(h.total == len, "%s: total counts %llu bytes", v[i].name, (unsigned long long)h.total);
    free(unaligned);
    free(data);
  }
  CHECK(have_empty && have_small && have_mid && have_big,
        "vectors cover empty, <16, 16..127 and >=5000 bytes");
}

/* chb_hash_peek at any prefix equals hashing that prefix alone, and does
 * not disturb the running state. */
static void test_peek(void) {
  size_t len = 0;
  unsigned char *data = slurp(CHB_TEST_DATA "/v.bin", &len);
  if (!data) {
    CHECK(0, "read v.bin");
    return;
  }
  static const size_t cuts[] = {0, 1, 15, 16, 127, 128, 2047, 2048, 2049, 4095, 4096, 4097, 5000};
  chb_hash h;
  chb_hash_init(&h);
  size_t fed = 0;
  int ok = 1;
  for (size_t k = 0; k < sizeof cuts / sizeof cuts[0] && cuts[k] <= len; k++) {
    chb_hash_update(&h, data + fed, cuts[k] - fed);
    fed = cuts[k];
    chb_u128 a = chb_hash_peek(&h);
    chb_u128 b = hash_in_pieces(data, fed, fed ? fed : 1);
    if (!same(a, b)) {
      printf("FAIL peek at %zu differs\n", fed);
      ok = 0;
    }
  }
  chb_hash_update(&h, data + fed, len - fed);
  CHECK(ok, "peek at prefixes equals the prefix's own hash");
  CHECK(same(chb_hash_peek(&h), hash_in_pieces(data, len, len)), "peek leaves the state unchanged");

  chb_hash e;
  chb_hash_init(&e);
  chb_u128 z = chb_hash_peek(&e);
  CHECK(z.lo == 0 && z.hi == 0, "empty input hashes to (0, 0)");
  chb_hash_update(&e, NULL, 0);
  z = chb_hash_peek(&e);
  CHECK(z.lo == 0 && z.hi == 0 && e.total == 0, "a zero-length update changes nothing");
  free(data);
}

static void test_hex(void) {
  chb_u128 v = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  char hex[33];
  chb_u128_to_hex(v, hex);
  CHECK(strcmp(hex, "fedcba98765432100123456789abcdef") == 0, "to_hex prints hi then lo: %s", hex);
  chb_u128 back;
  CHECK(chb_u128_from_hex(hex, &back) == 0 && same(back, v), "from_hex round-trips");
  CHECK(chb_u128_from_hex("FEDCBA98765432100123456789ABCDEF", &back) == 0 && same(back, v),
        "from_hex accepts upper case");
  static const char *bad[] = {
      "",
      "fedcba98765432100123456789abcde",   /* 31 */
      "fedcba98765432100123456789abcdef0", /* 33 */
      "fedcba98765432100123456789abcdeg",
      "fedcba9876543210 123456789abcdef",
      "0xdcba98765432100123456789abcdef",
      "-edcba98765432100123456789abcdef",
  };
  int all = 1;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    chb_u128 out = {1, 2};
    if (chb_u128_from_hex(bad[i], &out) != -1) {
      printf("FAIL accepted bad hex \"%s\"\n", bad[i]);
      all = 0;
    }
  }
  CHECK(all, "from_hex rejects bad hex");
  CHECK(chb_u128_from_hex(NULL, &back) == -1, "from_hex rejects NULL");

  vec vs[64];
  size_t n = load_expected(vs, 64);
  int rt = 1;
  for (size_t i = 0; i < n; i++) {
    char again[33];
    if (chb_u128_from_hex(vs[i].hex, &back) != 0)
      rt = 0;
    chb_u128_to_hex(back, again);
    if (strcmp(again, vs[i].hex) != 0)
      rt = 0;
  }
  CHECK(rt, "every expected.tsv checksum round-trips through from_hex/to_hex");
}

int main(void) {
  test_vectors();
  test_peek();
  test_hex();
  if (failures) {
    printf("%d FAILED\n", failures);
    return 1;
  }
  printf("all ok\n");
  return 0;
}
