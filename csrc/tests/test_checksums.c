/*
 * chb_checksums against a real part's checksums.txt (vectors/, see README):
 * entries equal the `.backup` checksums of the same files, compressed
 * files' uncompressed hashes are re-derived from their blocks, and every
 * damaged copy is CHB_CORRUPT naming the path. Versions 2 and 3 and
 * multi-block / ZSTD / uncompressed framing are built from the real entries.
 */
#include "chb_checksums.h"
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

static char tmpdir[] = "/tmp/chb-test-checksums.XXXXXX";


/* ---- small utilities ---- */

typedef struct buf {
  unsigned char *p;
  size_t len, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_varuint(buf *b, uint64_t x) {
  do {
    unsigned char c = x & 0x7f;
    x >>= 7;
    if (x)
      c |= 0x80;
    put(b, &c, 1);
  } while (x);
}

static void put_u32le(buf *b, uint32_t x) {
  unsigned char c[4] = {(unsigned char)x, (unsigned char)(x >> 8), (unsigned char)(x >> 16),
                        (unsigned char)(x >> 24)};
  put(b, c, 4);
}

static void put_u128(buf *b, chb_u128 v) {
  unsigned char c[16];
  for (int i = 0; i < 8; i++) {
    c[i] = (unsigned char)(v.lo >> (8 * i));
    c[8 + i] = (unsigned char)(v.hi >> (8 * i));
  }
  put(b, c, 16);
}



static const char *tmp_path(const char *name) {
  static char path[512];
  if (snprintf(path, sizeof path, "%s/%s", tmpdir, name) >= (int)sizeof path)
    exit(2);
  return path;
}


static const chb_part_file *find(const chb_checksums *c, const char *name) {
  for (size_t i = 0; i < c->count; i++)
    if (strcmp(c->files[i].name, name) == 0)
      return &c->files[i];
  return NULL;
}

static int same_checksums(const chb_checksums *a, const chb_checksums *b) {
  if (a->count != b->count)
    return 0;
  for (size_t i = 0; i < a->count; i++) {
    const chb_part_file *x = &a->files[i], *y = find(b, x->name);
    if (!y || x->file_size != y->file_size || !same(x->file_hash, y->file_hash) ||
        x->is_compressed != y->is_compressed || x->uncompressed_size != y->uncompressed_size ||
        !same(x->uncompressed_hash, y->uncompressed_hash))
      return 0;
  }
  return 1;
}

/* Reads `path` expecting failure with `code`; the message must name it. */
static int fails_with(const char *path, chb_code code, char *msg_out, size_t msg_len) {
  chb_checksums c = {99, NULL};
  chb_error e;
  chb_error_clear(&e);
  int rc = chb_checksums_read(path, &c, &e);
  if (msg_out)
    snprintf(msg_out, msg_len, "%s", e.msg);
  int ok = rc == -1 && e.code == code && strstr(e.msg, path) != NULL && c.count == 0 && c.files == NULL;
  if (rc == 0)
    chb_checksums_free(&c);
  return ok;
}

/* The binary body (version 3 layout) of a parsed list. */
static buf serialize_binary(const chb_checksums *c) {
  buf b = {0};
  put_varuint(&b, c->count);
  for (size_t i = 0; i < c->count; i++) {
    const chb_part_file *f = &c->files[i];
    put_varuint(&b, strlen(f->name));
    put_str(&b, f->name);
    put_varuint(&b, f->file_size);
    put_u128(&b, f->file_hash);
    unsigned char flag = (unsigned char)f->is_compressed;
    put(&b, &flag, 1);
    if (flag) {
      put_varuint(&b, f->uncompressed_size);
      put_u128(&b, f->uncompressed_hash);
    }
  }
  return b;
}

/* One ClickHouse compressed block around `payload`. */
static void put_block(buf *out, unsigned method, const void *payload, size_t plen, size_t usize) {
  buf blk = {0};
  unsigned char m = (unsigned char)method;
  put(&blk, &m, 1);
  put_u32le(&blk, (uint32_t)(plen + 9));
  put_u32le(&blk, (uint32_t)usize);
  put(&blk, payload, plen);
  put_u128(out, chb_cityhash128(blk.p, blk.len));
  put(out, blk.p, blk.len);
  free(blk.p);
}

/* ---- tests ---- */

static chb_checksums real;

static void test_real_part(void) {
  chb_error e;
  chb_error_clear(&e);
  int rc = chb_checksums_read(CHB_TEST_DATA "/checksums.txt", &real, &e);
  CHECK(rc == 0, "read real checksums.txt (%s)", rc ? e.msg : "v4, LZ4");
  if (rc)
    return;
  CHECK(real.count == 16, "16 files listed (got %zu)", real.count);

  FILE *f = fopen(CHB_TEST_DATA "/expected.tsv", "r");
  char name[256], hex[33];
  unsigned long long size;
  int compared = 0;
  while (f && fscanf(f, "%255s %llu %32s", name, &size, hex) == 3) {
    if (strchr(name, '/'))
      continue;   /* the projection's files are in its own checksums.txt */
    if (strcmp(name, "checksums.txt") == 0 || strcmp(name, "columns.txt") == 0) {
      /* ClickHouse lists neither checksums.txt nor columns.txt in it. */
      CHECK(find(&real, name) == NULL, "%s is not listed", name);
      continue;
    }
    const chb_part_file *pf = find(&real, name);
    char got[33] = "-";
    if (pf)
      chb_u128_to_hex(pf->file_hash, got);
    CHECK(pf && pf->file_size == size && strcmp(got, hex) == 0,
          "entry %s: size %llu hash %s equals .backup", name, pf ? (unsigned long long)pf->file_size : 0ULL,
          got);
    compared++;
  }
  if (f)
    fclose(f);
  CHECK(compared >= 5, "compared %d entries with expected.tsv", compared);

  const chb_part_file *proj = find(&real, "p.proj");
  CHECK(proj && proj->file_size > 0 && !proj->is_compressed, "projection entry p.proj present");
  const chb_part_file *empty = find(&real, "a.bin");
  CHECK(empty && empty->file_size == 0 && empty->is_compressed && empty->uncompressed_size == 0 &&
            empty->file_hash.lo == 0 && empty->file_hash.hi == 0,
        "empty a.bin: size 0, hash 0, compressed, uncompressed size 0");

  chb_checksums pc;
  rc = chb_checksums_read(CHB_TEST_DATA "/p.proj/checksums.txt", &pc, &e);
  CHECK(rc == 0 && find(&pc, "count.txt") && find(&pc, "s.bin"),
        "read the projection's checksums.txt (%zu files)", rc ? 0 : pc.count);
  if (rc == 0)
    chb_checksums_free(&pc);
}

/* The uncompressed hash of v.bin (LZ4) and primary.cidx (ZSTD), re-derived
 * by decompressing their blocks: checks the uncompressed_* fields. */
static void test_uncompressed_hashes(void) {
  static const char *names[] = {"v.bin", "primary.cidx"};
  for (size_t i = 0; i < 2; i++) {
    char path[512];
    if (snprintf(path, sizeof path, "%s/%s", CHB_TEST_DATA, names[i]) >= (int)sizeof path)
      exit(2);
    size_t len = 0;
    unsigned char *d = slurp(path, &len);
    const chb_part_file *pf = find(&real, names[i]);
    if (!d || !pf) {
      CHECK(0, "%s readable and listed", names[i]);
      free(d);
      continue;
    }
    chb_hash h;
    chb_hash_init(&h);
    int ok = 1;
    for (size_t off = 0; ok && off < len;) {
      const unsigned char *blk = d + off + 16;
      uint32_t csize = (uint32_t)blk[1] | (uint32_t)blk[2] << 8 | (uint32_t)blk[3] << 16 | (uint32_t)blk[4] << 24;
      uint32_t usize = (uint32_t)blk[5] | (uint32_t)blk[6] << 8 | (uint32_t)blk[7] << 16 | (uint32_t)blk[8] << 24;
      char *out = malloc(usize ? usize : 1);
      if (blk[0] == 0x82)
        ok = LZ4_decompress_safe((const char *)blk + 9, out, (int)csize - 9, (int)usize) == (int)usize;
      else if (blk[0] == 0x90)   /* ClickHouse writes primary.cidx with ZSTD */
        ok = ZSTD_decompress(out, usize, blk + 9, csize - 9) == usize;
      else
        ok = 0;
      if (ok)
        chb_hash_update(&h, out, usize);
      free(out);
      off += 16 + csize;
    }
    CHECK(ok && h.total == pf->uncompressed_size && same(chb_hash_peek(&h), pf->uncompressed_hash),
          "%s: uncompressed size %llu and hash re-derived from its blocks", names[i],
          (unsigned long long)h.total);
    free(d);
  }
}

static void test_corruption(void) {
  size_t len = 0;
  unsigned char *orig = slurp(CHB_TEST_DATA "/checksums.txt", &len);
  if (!orig) {
    CHECK(0, "read checksums.txt");
    return;
  }
  const char *path = tmp_path("checksums.txt");
  unsigned char *copy = malloc(len + 1);
  char msg[512];
  static const unsigned char masks[] = {0x01, 0x80, 0xff};
  for (size_t m = 0; m < sizeof masks; m++) {
    int all = 1;
    for (size_t i = 0; i < len; i++) {
      memcpy(copy, orig, len);
      copy[i] ^= masks[m];
      spit(path, copy, len);
      if (!fails_with(path, CHB_CORRUPT, msg, sizeof msg)) {
        printf("FAIL byte %zu ^ 0x%02x not CORRUPT: %s\n", i, masks[m], msg);
        all = 0;
      }
    }
    CHECK(all, "every byte ^ 0x%02x of checksums.txt is CORRUPT naming the path", masks[m]);
  }
  memcpy(copy, orig, len);
  copy[200] ^= 0x10;
  spit(path, copy, len);
  fails_with(path, CHB_CORRUPT, msg, sizeof msg);
  CHECK(strstr(msg, "checksum mismatch") != NULL, "a payload flip reports: %s", msg);

  int all = 1;
  for (size_t cut = 0; cut < len; cut++) {
    spit(path, orig, cut);
    if (!fails_with(path, CHB_CORRUPT, msg, sizeof msg)) {
      printf("FAIL truncated to %zu not CORRUPT: %s\n", cut, msg);
      all = 0;
    }
  }
  CHECK(all, "every truncation of checksums.txt is CORRUPT");
  memcpy(copy, orig, len);
  copy[len] = 0;
  spit(path, copy, len + 1);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg), "a trailing byte is CORRUPT: %s", msg);
  free(copy);
  free(orig);

  CHECK(fails_with(tmp_path("missing.txt"), CHB_ENOENT, msg, sizeof msg), "missing file is ENOENT: %s", msg);

  /* Bigger than the 64 MiB cap: a sparse file, refused before reading. */
  const char *big = tmp_path("big.txt");
  int fd = open(big, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  int ok = fd >= 0 && ftruncate(fd, (off_t)65 << 20) == 0;
  if (fd >= 0)
    close(fd);
  CHECK(ok && fails_with(big, CHB_CORRUPT, msg, sizeof msg), "a 65 MiB file is refused: %s", msg);
  unlink(big);
}

static void test_versions(void) {
  if (!real.count)
    return;
  chb_checksums c;
  chb_error e;
  char msg[512];
  const char *path = tmp_path("v.txt");
  buf body = serialize_binary(&real);

  /* Version 3: the same binary, no compressed framing. */
  buf f = {0};
  put_str(&f, "checksums format version: 3\n");
  put(&f, body.p, body.len);
  spit(path, f.p, f.len);
  int rc = chb_checksums_read(path, &c, &e);
  CHECK(rc == 0 && same_checksums(&c, &real), "version 3 reads the same entries (%s)", rc ? e.msg : "");
  if (rc == 0)
    chb_checksums_free(&c);
  free(f.p);

  /* Version 4 in three blocks: LZ4, none, ZSTD. */
  size_t third = body.len / 3;
  f = (buf){0};
  put_str(&f, "checksums format version: 4\n");
  char *lz = malloc((size_t)LZ4_compressBound((int)third));
  int lzn = LZ4_compress_default((const char *)body.p, lz, (int)third, LZ4_compressBound((int)third));
  put_block(&f, 0x82, lz, (size_t)lzn, third);
  put_block(&f, 0x02, body.p + third, third, third);
  size_t rest = body.len - 2 * third;
  void *zs = malloc(ZSTD_compressBound(rest));
  size_t zn = ZSTD_compress(zs, ZSTD_compressBound(rest), body.p + 2 * third, rest, 1);
  put_block(&f, 0x90, zs, zn, rest);
  spit(path, f.p, f.len);
  rc = chb_checksums_read(path, &c, &e);
  CHECK(rc == 0 && same_checksums(&c, &real), "version 4 in LZ4 + none + ZSTD blocks (%s)", rc ? e.msg : "");
  if (rc == 0)
    chb_checksums_free(&c);

  /* A block with a method we do not read, correctly checksummed. */
  buf g = {0};
  put_str(&g, "checksums format version: 4\n");
  put_block(&g, 0x91, body.p, body.len, body.len);
  spit(path, g.p, g.len);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg) && strstr(msg, "0x91"),
        "unknown method is refused: %s", msg);
  free(g.p);

  /* A none block whose sizes disagree. */
  g = (buf){0};
  put_str(&g, "checksums format version: 4\n");
  put_block(&g, 0x02, body.p, body.len, body.len + 1);
  spit(path, g.p, g.len);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg), "none block with wrong size: %s", msg);
  free(g.p);
  free(lz);
  free(zs);
  free(f.p);

  /* Version 2: text. */
  f = (buf){0};
  char line[512];
  snprintf(line, sizeof line, "checksums format version: 2\n%zu files:\n", real.count);
  put_str(&f, line);
  for (size_t i = 0; i < real.count; i++) {
    const chb_part_file *p = &real.files[i];
    snprintf(line, sizeof line, "%s\n\tsize: %llu\n\thash: %llu %llu\n\tcompressed: %d", p->name,
             (unsigned long long)p->file_size, (unsigned long long)p->file_hash.lo,
             (unsigned long long)p->file_hash.hi, p->is_compressed);
    put_str(&f, line);
    if (p->is_compressed) {
      snprintf(line, sizeof line, "\n\tuncompressed size: %llu\n\tuncompressed hash: %llu %llu",
               (unsigned long long)p->uncompressed_size, (unsigned long long)p->uncompressed_hash.lo,
               (unsigned long long)p->uncompressed_hash.hi);
      put_str(&f, line);
    }
    put_str(&f, "\n");
  }
  spit(path, f.p, f.len);
  rc = chb_checksums_read(path, &c, &e);
  CHECK(rc == 0 && same_checksums(&c, &real), "version 2 text reads the same entries (%s)", rc ? e.msg : "");
  if (rc == 0)
    chb_checksums_free(&c);
  spit(path, f.p, f.len - 1);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg), "truncated version 2 is CORRUPT: %s", msg);
  free(f.p);

  /* Versions we do not read. */
  static const char *other[] = {"checksums format version: 1\n", "checksums format version: 5\n",
                                "checksums format version: 4", "checksums format: 4\n"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
    spit(path, other[i], strlen(other[i]));
    CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg), "refused: %s", msg);
  }

  /* Duplicate names (ClickHouse's list is a map). */
  f = (buf){0};
  put_str(&f, "checksums format version: 3\n");
  chb_checksums two = {2, NULL};
  chb_part_file dup[2] = {real.files[0], real.files[0]};
  two.files = dup;
  buf b2 = serialize_binary(&two);
  put(&f, b2.p, b2.len);
  spit(path, f.p, f.len);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg) && strstr(msg, "twice"), "duplicate name: %s", msg);
  free(b2.p);
  free(f.p);

  /* A count far beyond the bytes present must not allocate for it. */
  f = (buf){0};
  put_str(&f, "checksums format version: 3\n");
  put_varuint(&f, (uint64_t)1 << 60);
  spit(path, f.p, f.len);
  CHECK(fails_with(path, CHB_CORRUPT, msg, sizeof msg), "huge count: %s", msg);
  free(f.p);
  free(body.p);
  unlink(path);
}

int main(void) {
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 2;
  }
  test_real_part();
  test_uncompressed_hashes();
  test_corruption();
  test_versions();
  chb_checksums_free(&real);
  unlink(tmp_path("checksums.txt"));
  rmdir(tmpdir);
  if (failures) {
    printf("%d FAILED\n", failures);
    return 1;
  }
  printf("all ok\n");
  return 0;
}
