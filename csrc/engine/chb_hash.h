/*
 * ClickHouse's file checksum: CityHash128 v1.0.2 chained over 2048-byte
 * blocks (src/IO/HashingWriteBuffer.h). The same value is a file's
 * `file_hash` in a part's checksums.txt and its <checksum> in `.backup`.
 *
 * The state is streaming: feed any number of bytes in any pieces; memory is
 * one 2048-byte block. A prefix checksum (an incremental's base_checksum) is
 * chb_hash_peek() at the prefix length: no second pass over the data.
 */
#ifndef CHB_HASH_H
#define CHB_HASH_H

#include <stddef.h>
#include <stdint.h>

typedef struct chb_u128 {
  uint64_t lo, hi;   /* CityHash's uint128 (first, second) */
} chb_u128;

/* Google CityHash v1.0.2, as ClickHouse's contrib/cityhash102. */
chb_u128 chb_cityhash128(const void *data, size_t len);
chb_u128 chb_cityhash128_seed(const void *data, size_t len, chb_u128 seed);

typedef struct chb_hash {
  chb_u128 state;
  uint64_t total;             /* bytes fed so far */
  size_t fill;                /* bytes waiting in block */
  unsigned char block[2048];
} chb_hash;

void chb_hash_init(chb_hash *h);
void chb_hash_update(chb_hash *h, const void *data, size_t len);
/* The checksum of everything fed so far; the state is left unchanged. */
chb_u128 chb_hash_peek(const chb_hash *h);

/* 32 lowercase hex digits as ClickHouse prints them in `.backup`. */
void chb_u128_to_hex(chb_u128 v, char out[33]);
/* Returns 0 on success, -1 if `hex` is not 32 hex digits. */
int chb_u128_from_hex(const char *hex, chb_u128 *out);

#endif
