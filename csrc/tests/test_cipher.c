/*
 * chb_cipher: scrypt gives RFC 7914's test vectors; sealed files round-trip
 * at chunk boundaries (0, 1, 64 KiB - 1, 64 KiB, 64 KiB + 1, 3 * 64 KiB),
 * through the streaming sealer/opener, the in-memory functions and a job
 * (encrypted dst, then encrypted pieces read at a plaintext offset); a
 * flipped bit, a cut at a chunk boundary, a missing tag, another name (a
 * swapped file) and another key are CHB_CORRUPT naming the file.
 *
 * Files live in a mkdtemp directory under /tmp, removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chb_cipher.h"
#include "chb_job.h"
#include "test_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char root[] = "/tmp/chb-test-cipher.XXXXXX";



static void hex(const unsigned char *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", p[i]);
}



static void test_scrypt(void) {
  unsigned char out[64];
  char h[129];
  chb_error err;
  /* RFC 7914 section 12 */
  int rc = chb_cipher_derive_key("", 0, (const unsigned char *)"", 0, 16, 1, 1, out, 64, &err);
  hex(out, 64, h);
  CHECK(rc == 0 && strcmp(h, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
                             "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906") == 0,
        "scrypt('', '', 16, 1, 1) is RFC 7914's vector");
  rc = chb_cipher_derive_key("password", 8, (const unsigned char *)"NaCl", 4, 1024, 8, 16, out, 64, &err);
  hex(out, 64, h);
  CHECK(rc == 0 && strcmp(h, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                             "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640") == 0,
        "scrypt('password', 'NaCl', 1024, 8, 16) is RFC 7914's vector");
  CHECK(chb_cipher_derive_key("x", 1, (const unsigned char *)"s", 1, 1000, 8, 1, out, 32, &err) == -1 &&
            err.code == CHB_INVALID,
        "n not a power of two is CHB_INVALID");
}

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcdef";
static const unsigned char KEY2[32] = "0123456789abcdef0123456789abcdeX";

/* Seals data to path with the streaming sealer, in uneven writes. */
static int seal_file(const char *path, const char *name, const unsigned char *data, size_t len) {
  chb_error err;
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  chb_sealer *s = chb_sealer_new(KEY, name, fd, path, &err);
  int rc = s ? 0 : -1;
  for (size_t off = 0; rc == 0 && off < len;) {
    size_t n = len - off < 7777 ? len - off : 7777;
    rc = chb_sealer_write(s, data + off, n, &err);
    off += n;
  }
  if (rc == 0) rc = chb_sealer_finish(s, &err);
  chb_sealer_free(s);
  close(fd);
  return rc;
}

/* Reads path back from offset with the opener: the plaintext or NULL. */
static unsigned char *open_file(const char *path, const unsigned char *key, const char *name,
                                uint64_t offset, size_t *len, chb_error *err) {
  chb_opener *o = chb_opener_open(path, 0, key, name, err);
  if (!o) return NULL;
  size_t cap = chb_opener_size(o) + 1, n = 0;
  unsigned char *p = malloc(cap);
  if (chb_opener_seek(o, offset, err) != 0) goto fail;
  for (;;) {
    ssize_t r = chb_opener_read(o, p + n, 5000, err);
    if (r < 0) goto fail;
    if (r == 0) break;
    n += (size_t)r;
  }
  chb_opener_close(o);
  *len = n;
  return p;
fail:
  chb_opener_close(o);
  free(p);
  return NULL;
}

static void test_roundtrip(void) {
  size_t sizes[] = {0, 1, 65535, 65536, 65537, 3 * 65536};
  char path[512];
  snprintf(path, sizeof path, "%s/sealed", root);
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t len = sizes[i];
    unsigned char *data = gen_random(i + 1, len);
    chb_error err;
    int rc = seal_file(path, "data/t/a.bin", data, len);
    size_t slen = 0, plen = 0;
    unsigned char *sealed = slurp(path, &slen);
    uint64_t plain;
    CHECK(rc == 0 && slen == chb_cipher_sealed_size(len) && chb_cipher_plain_size(slen, &plain) == 0 &&
              plain == len,
          "%zu bytes: sealed to %zu bytes", len, slen);
    unsigned char *back = open_file(path, KEY, "data/t/a.bin", 0, &plen, &err);
    CHECK(back && plen == len && memcmp(back, data, len) == 0, "%zu bytes: opened back", len);
    free(back);
    uint64_t off = len / 2 + (len > 3 ? 3 : 0);
    if (off > len) off = len;
    back = open_file(path, KEY, "data/t/a.bin", off, &plen, &err);
    CHECK(back && plen == len - off && memcmp(back, data + off, plen) == 0, "%zu bytes: from offset %llu",
          len, (unsigned long long)off);
    free(back);
    unsigned char *mem = malloc(len ? len : 1);
    CHECK(chb_cipher_open_buffer(KEY, "data/t/a.bin", sealed, slen, mem, "x", &err) == 0 &&
              memcmp(mem, data, len) == 0,
          "%zu bytes: the in-memory opener reads the streamed file", len);
    back = open_file(path, KEY, "data/t/b.bin", 0, &plen, &err);
    CHECK(!back && err.code == CHB_CORRUPT && strstr(err.msg, path), "%zu bytes: another name is CORRUPT: %s",
          len, err.msg);
    free(back);
    back = open_file(path, KEY2, "data/t/a.bin", 0, &plen, &err);
    CHECK(!back && err.code == CHB_CORRUPT, "%zu bytes: another key is CORRUPT", len);
    free(back);
    /* a flipped bit anywhere after the header */
    size_t at = CHB_CIPHER_HEADER_LEN + (slen - CHB_CIPHER_HEADER_LEN) / 2;
    sealed[at] ^= 0x10;
    spit(path, sealed, slen);
    back = open_file(path, KEY, "data/t/a.bin", 0, &plen, &err);
    CHECK(!back && err.code == CHB_CORRUPT, "%zu bytes: a flipped bit is CORRUPT: %s", len, err.msg);
    free(back);
    sealed[at] ^= 0x10;
    /* the last tag cut off */
    spit(path, sealed, slen - CHB_CIPHER_TAG_LEN);
    back = open_file(path, KEY, "data/t/a.bin", 0, &plen, &err);
    CHECK(!back && err.code == CHB_CORRUPT, "%zu bytes: a missing tag is CORRUPT", len);
    free(back);
    if (len > 65536) {
      /* cut at a chunk boundary: the chunks left are intact, but not final */
      spit(path, sealed, CHB_CIPHER_HEADER_LEN + CHB_CIPHER_CHUNK + CHB_CIPHER_TAG_LEN);
      back = open_file(path, KEY, "data/t/a.bin", 0, &plen, &err);
      CHECK(!back && err.code == CHB_CORRUPT, "%zu bytes: a cut at a chunk boundary is CORRUPT", len);
      free(back);
    }
    unsigned char *mem_sealed = malloc(chb_cipher_sealed_size(len));
    CHECK(chb_cipher_seal_buffer(KEY, "m", data, len, mem_sealed, &err) == 0 &&
              chb_cipher_open_buffer(KEY, "m", mem_sealed, chb_cipher_sealed_size(len), mem, "m", &err) == 0 &&
              memcmp(mem, data, len) == 0 &&
              chb_cipher_open_buffer(KEY, "n", mem_sealed, chb_cipher_sealed_size(len), mem, "m", &err) == -1,
          "%zu bytes: in-memory round trip, bound to its name", len);
    free(mem_sealed);
    free(mem);
    free(sealed);
    free(data);
  }
}

/* A job writes an encrypted copy, another reads it back as pieces. */
static void test_job(void) {
  char src[512], dst[512];
  snprintf(src, sizeof src, "%s/src", root);
  snprintf(dst, sizeof dst, "%s/backup/data/x.bin", root);
  size_t len = 150000;
  unsigned char *data = gen_random(42, len);
  spit(src, data, len);
  chb_error err;
  chb_job_opts opts = {2, 4096, 0, 1, {0}};
  memcpy(opts.key, KEY, 32);
  chb_job *job = chb_job_new(&opts, &err);
  long i = chb_job_add(job, src, dst, 0, (int64_t)len, NULL, &err);
  int rc = chb_job_seal_entry(job, (size_t)i, "data/x.bin", &err);
  chb_job_start(job, &err);
  chb_job_wait(job, -1);
  uint64_t size;
  chb_u128 plain_hash;
  CHECK(rc == 0 && chb_job_result(job, &err) == 0 && chb_job_entry_result(job, 0, &size, &plain_hash) == 0 &&
            size == len,
        "a job writes an encrypted entry and hashes the plain bytes");
  chb_job_free(job);
  size_t slen;
  unsigned char *sealed = slurp(dst, &slen);
  CHECK(sealed && slen == chb_cipher_sealed_size(len), "the entry is sealed on disk");
  free(sealed);

  chb_job_opts plain_opts = {1, 1000, 0, 0, {0}};
  chb_piece pieces[2] = {{src, 0, 1000, NULL, NULL, NULL, NULL},
                         {dst, 1000, (int64_t)len - 1000, NULL, NULL, KEY, "data/x.bin"}};
  char out[512];
  snprintf(out, sizeof out, "%s/restored", root);
  job = chb_job_new(&plain_opts, &err);
  chb_job_add_pieces(job, pieces, 2, out, (int64_t)len, &plain_hash, &err);
  chb_job_start(job, &err);
  chb_job_wait(job, -1);
  rc = chb_job_result(job, &err);
  chb_job_free(job);
  size_t rlen = 0;
  unsigned char *back = slurp(out, &rlen);
  CHECK(rc == 0 && back && rlen == len && memcmp(back, data, len) == 0,
        "pieces from an encrypted file at a plain offset restore it: %s", rc ? err.msg : "");
  free(back);

  pieces[1].aad = "data/y.bin";
  snprintf(out, sizeof out, "%s/restored2", root);
  job = chb_job_new(&plain_opts, &err);
  chb_job_add_pieces(job, pieces, 2, out, (int64_t)len, &plain_hash, &err);
  chb_job_start(job, &err);
  chb_job_wait(job, -1);
  rc = chb_job_result(job, &err);
  chb_job_free(job);
  CHECK(rc == -1 && err.code == CHB_CORRUPT && strstr(err.msg, dst) && access(out, F_OK) != 0,
        "a piece under another name fails, naming the file, leaving nothing: %s", err.msg);
  free(data);
}

int main(void) {
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  test_scrypt();
  test_roundtrip();
  test_job();
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) printf("warning: cannot remove %s\n", root);
  printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
