/*
 * chb_store, the directory store: exclusive create (an existing file is
 * refused and kept), parents made on demand, a sink's bytes and its sealed
 * form, abort leaving nothing, commit never replacing, remove, stat, list,
 * open_read confined below the root, lock.
 */
#include "chb_cipher.h"
#include "chb_store.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static char root[] = "/tmp/chb-test-store.XXXXXX";

static const char *at(char *buf, size_t n, const char *rel) {
  snprintf(buf, n, "%s/%s", root, rel);
  return buf;
}

/* Writes `len` bytes to `name` in pieces of 1000 and finishes; 0 or -1. */
static int put(chb_store *st, const char *name, const chb_sink_opts *o, const unsigned char *d,
               size_t len, chb_error *err) {
  chb_sink *k = chb_store_open_write(st, name, o, err);
  if (!k) return -1;
  for (size_t off = 0; off < len; off += 1000) {
    size_t n = len - off < 1000 ? len - off : 1000;
    if (chb_sink_write(k, d + off, n, err) != 0) {
      chb_sink_abort(k);
      return -1;
    }
  }
  if (chb_sink_finish(k, 1, err) != 0) {
    chb_sink_abort(k);
    return -1;
  }
  return chb_sink_close(k, err);
}

static void test_write_and_read(chb_store *st) {
  chb_error err;
  unsigned char *data = gen_random(1, 12345);
  CHECK(put(st, "deep/er/a.bin", NULL, data, 12345, &err) == 0, "written below missing parents");
  char p[512];
  size_t len;
  unsigned char *got = slurp(at(p, sizeof p, "deep/er/a.bin"), &len);
  CHECK(got && len == 12345 && same(hash_of(got, len), hash_of(data, 12345)),
        "the file's checksum is the data's");
  free(got);
  uint64_t size = 0;
  CHECK(chb_store_stat(st, "deep/er/a.bin", &size, &err) == 0 && size == 12345, "stat: %llu bytes",
        (unsigned long long)size);
  CHECK(chb_store_stat(st, "deep/none", &size, &err) != 0 && err.code == CHB_ENOENT,
        "stat of nothing: ENOENT");
  /* Exclusive: an existing file is refused and stays as it was. */
  unsigned char *other = gen_random(2, 100);
  CHECK(put(st, "deep/er/a.bin", NULL, other, 100, &err) != 0 && err.code == CHB_EEXIST,
        "open_write on an existing file: EEXIST (%s)", err.msg);
  got = slurp(p, &len);
  CHECK(got && len == 12345 && memcmp(got, data, len) == 0, "and the existing file is unchanged");
  free(got);
  chb_source *s = chb_store_open_read(st, "deep/er/a.bin", &err);
  unsigned char buf[4096];
  chb_hash h;
  chb_hash_init(&h);
  ssize_t n;
  while (s && (n = chb_source_read(s, buf, sizeof buf, &err)) > 0) chb_hash_update(&h, buf, (size_t)n);
  CHECK(s && h.total == 12345 && same(chb_hash_peek(&h), hash_of(data, 12345)),
        "open_read reads the same bytes");
  chb_source_close(s);
  CHECK(chb_store_remove(st, "deep/er/a.bin", &err) == 0 && !exists(p), "remove");
  CHECK(chb_store_remove(st, "deep/er/a.bin", &err) != 0 && err.code == CHB_ENOENT,
        "remove of nothing: ENOENT");
  free(data);
  free(other);
}

static void test_abort_and_sealed(chb_store *st) {
  chb_error err;
  char p[512];
  chb_sink *k = chb_store_open_write(st, "part.bin", NULL, &err);
  CHECK(k && chb_sink_write(k, "abc", 3, &err) == 0, "a sink written to");
  chb_sink_abort(k);
  CHECK(!exists(at(p, sizeof p, "part.bin")), "abort leaves nothing");
  unsigned char key[CHB_CIPHER_KEY_LEN];
  memset(key, 9, sizeof key);
  unsigned char *data = gen_random(3, 70000);
  chb_sink_opts o = {0};
  o.key = key;
  o.seal_name = "data/s.bin";
  CHECK(put(st, "sealed.bin", &o, data, 70000, &err) == 0, "a sealed sink");
  size_t len;
  unsigned char *got = slurp(at(p, sizeof p, "sealed.bin"), &len);
  unsigned char *plain = malloc(70000);
  CHECK(got && len == chb_cipher_sealed_size(70000) &&
            chb_cipher_open_buffer(key, "data/s.bin", got, len, plain, "sealed.bin", &err) == 0 &&
            memcmp(plain, data, 70000) == 0,
        "its file is the data sealed under its name");
  free(got);
  free(plain);
  free(data);
}

static void test_commit(chb_store *st) {
  chb_error err;
  char p[512];
  unsigned char one[] = "first", two[] = "second";
  CHECK(put(st, "a.tmp", NULL, one, 5, &err) == 0 && chb_store_commit(st, "a.tmp", "a", &err) == 0,
        "commit renames into place");
  CHECK(!exists(at(p, sizeof p, "a.tmp")) && exists(at(p, sizeof p, "a")), "the temporary is gone");
  CHECK(chb_store_sync_dir(st, "a", &err) == 0, "the directory fsynced");
  CHECK(put(st, "b.tmp", NULL, two, 6, &err) == 0, "another file");
  CHECK(chb_store_commit(st, "b.tmp", "a", &err) != 0 && err.code == CHB_EEXIST,
        "commit onto an existing file: EEXIST (%s)", err.msg);
  size_t len;
  unsigned char *got = slurp(at(p, sizeof p, "a"), &len);
  CHECK(got && len == 5 && memcmp(got, one, 5) == 0, "commit never replaces: the first stays");
  free(got);
  CHECK(exists(at(p, sizeof p, "b.tmp")), "and the temporary is still there");
}

static int count_name(const char *name, void *ud) {
  if (strcmp(name, "a") == 0 || strcmp(name, "b.tmp") == 0) ++*(int *)ud;
  return 0;
}

static void test_list_lock(chb_store *st) {
  chb_error err;
  int seen = 0;
  CHECK(chb_store_list(st, "", count_name, &seen, &err) == 0 && seen == 2, "list names both files");
  int fd = chb_store_lock(st, "lockfile", &err);
  CHECK(fd >= 0, "lock taken");
  CHECK(chb_store_lock(st, "lockfile", &err) < 0 && err.code == CHB_LOCKED,
        "a second lock: LOCKED (%s)", err.msg);
  close(fd);
  fd = chb_store_lock(st, "lockfile", &err);
  CHECK(fd >= 0, "retaken once released");
  close(fd);
  chb_sink_opts o = {0};
  o.lock = 1;
  chb_sink *k = chb_store_open_write(st, "locked.tmp", &o, &err);
  char p[512];
  int probe = open(at(p, sizeof p, "locked.tmp"), O_RDONLY);
  CHECK(k && probe >= 0 && flock(probe, LOCK_EX | LOCK_NB) != 0,
        "a sink opened with lock holds its file's flock");
  if (probe >= 0) close(probe);
  chb_sink_abort(k);
  CHECK(!exists(p), "aborted: gone");
}

static void test_confined(chb_store *st) {
  chb_error err;
  char target[512], link[512];
  unsigned char data[] = "outside";
  spit(at(target, sizeof target, "../chb-store-outside"), data, 7);
  CHECK(symlink(target, at(link, sizeof link, "escape")) == 0, "a symbolic link out of the store");
  chb_source *s = chb_store_open_read(st, "escape", &err);
  unsigned char buf[64];
  ssize_t n = s ? chb_source_read(s, buf, sizeof buf, &err) : -1;
  CHECK(n < 0 && err.code == CHB_INVALID && strstr(err.msg, "symbolic link"),
        "open_read refuses a symbolic link below the root (%s)", err.msg);
  chb_source_close(s);
  unlink(target);
}

int main(void) {
  test_begin(root);
  chb_error err;
  chb_store *st = chb_store_dir_open(root, &err);
  CHECK(st != NULL, "a directory store");
  test_write_and_read(st);
  test_abort_and_sealed(st);
  test_commit(st);
  test_list_lock(st);
  test_confined(st);
  chb_store_close(st);
  return test_end(root);
}
