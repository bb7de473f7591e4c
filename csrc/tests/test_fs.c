/*
 * chb_fs helpers an incremental uses once a part (issue 14): hashing a
 * regular file in place (a symlink, a directory or a FIFO refused, never
 * followed or waited on), the size of a regular file by lstat, and the
 * kinds of names looked up from a directory opened once.
 */
#include "chb_fs.h"
#include "test_util.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp[] = "/tmp/chb-test-fs-XXXXXX";

static void path(char *out, const char *rel) { snprintf(out, 512, "%s/%s", tmp, rel); }

static void test_hash_file(void) {
  char p[512], l[512], d[512], f[512];
  path(p, "sums");
  unsigned char *bytes = gen_random(3, 70000);   /* more than one read */
  spit(p, bytes, 70000);
  uint64_t size = 0;
  chb_u128 h;
  chb_error err;
  CHECK(chb_fs_hash_file(p, &size, &h, &err) == 0 && size == 70000 && same(h, hash_of(bytes, 70000)),
        "a regular file of 70000 bytes hashed whole");
  spit(p, bytes, 326);
  CHECK(chb_fs_hash_file(p, &size, &h, &err) == 0 && size == 326 && same(h, hash_of(bytes, 326)),
        "a small file hashed whole");
  spit(p, "", 0);
  CHECK(chb_fs_hash_file(p, &size, &h, &err) == 0 && size == 0, "an empty file");
  path(l, "link");
  CHECK(symlink(p, l) == 0 && chb_fs_hash_file(l, &size, &h, &err) != 0, "a symlink is refused, not followed: %s",
        err.msg);
  path(d, "dir");
  CHECK(mkdir(d, 0755) == 0 && chb_fs_hash_file(d, &size, &h, &err) != 0 && strstr(err.msg, "not a regular file"),
        "a directory is refused: %s", err.msg);
  path(f, "fifo");
  CHECK(mkfifo(f, 0644) == 0 && chb_fs_hash_file(f, &size, &h, &err) != 0 && strstr(err.msg, "not a regular file"),
        "a FIFO is refused without waiting for a writer: %s", err.msg);
  path(p, "missing");
  CHECK(chb_fs_hash_file(p, &size, &h, &err) != 0 && err.code == CHB_ENOENT, "a missing file: ENOENT");
  free(bytes);
}

static void test_file_size(void) {
  char p[512];
  uint64_t size = 1;
  path(p, "sums");
  spit(p, "12345", 5);
  CHECK(chb_fs_file_size(p, &size) == 0 && size == 5, "the size of a regular file");
  path(p, "link");
  CHECK(chb_fs_file_size(p, &size) != 0, "a symlink has none (not followed)");
  path(p, "dir");
  CHECK(chb_fs_file_size(p, &size) != 0, "a directory has none");
  path(p, "missing");
  CHECK(chb_fs_file_size(p, &size) != 0, "a missing file has none");
}

static void test_kinds(void) {
  char p[512];
  path(p, "dir/sub");
  mkdir(p, 0755);
  path(p, "dir/sub/checksums.txt");
  spit(p, "x", 1);
  const char *names[] = {"sums", "link", "dir", "fifo", "missing", "dir/sub"};
  char kinds[6];
  CHECK(chb_fs_kinds(tmp, names, 6, NULL, kinds) == 0 && memcmp(kinds, "fldo\0d", 6) == 0,
        "kinds: file, link, directory, other, nothing, a name with a slash");
  const char *subs[] = {"dir/sub", "dir", "link"};
  CHECK(chb_fs_kinds(tmp, subs, 3, "/checksums.txt", kinds) == 0 && kinds[0] == 'f' && kinds[1] == 0 &&
            kinds[2] == 0,
        "with a suffix: what name/checksums.txt is");
  path(p, "missing");
  CHECK(chb_fs_kinds(p, names, 1, NULL, kinds) != 0, "a directory that cannot be opened fails");
  CHECK(chb_fs_kinds(tmp, names, 0, NULL, kinds) == 0, "no names");
}

int main(void) {
  test_begin(tmp);
  test_hash_file();
  test_file_size();
  test_kinds();
  return test_end(tmp);
}
