/*
 * chb_job: many files copied by several workers come out byte-identical
 * with the checksum chb_hash gives for the source; a wrong expected size or
 * checksum is CHB_CORRUPT naming the file and leaves no partial copy; a
 * missing source is ENOENT, an existing destination EEXIST (never
 * overwritten); parent directories are made; cancel and chb_job_free stop a
 * running job quickly and cleanly; src_offset skips bytes; 0 entries is
 * DONE; a timed wait returns RUNNING while the job runs.
 *
 * Everything lives in a mkdtemp directory under /tmp, removed at the end.
 * Runs under valgrind and ASan too, so data sizes stay small except for
 * the cancel tests, which stop long before the end of their big file.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chb_job.h"
#include "chb_fs.h"
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char root[] = "/tmp/chb-test-job.XXXXXX";


/* ---- small utilities ---- */

static const char *path_of(char *buf, size_t n, const char *fmt, const char *a, int i) {
  char rel[256];
  snprintf(rel, sizeof rel, fmt, a, i);
  snprintf(buf, n, "%s/%s", root, rel);
  return buf;
}







static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static chb_job *new_job(int threads, size_t buffer_size) {
  chb_job_opts o = {threads, buffer_size, 0};
  chb_error err;
  chb_job *job = chb_job_new(&o, &err);
  if (!job) {
    printf("FAIL chb_job_new: %s\n", err.msg);
    exit(2);
  }
  return job;
}

/* Runs a job to its end; returns its final state, error in *err. */
static chb_job_state run(chb_job *job, chb_error *err) {
  if (chb_job_start(job, err) != 0) return CHB_JOB_FAILED;
  chb_job_state s = chb_job_wait(job, -1);
  chb_job_result(job, err);
  return s;
}

/* Waits until the job has read something (it is surely mid-run then). */
static int wait_started(chb_job *job) {
  for (int i = 0; i < 20000; i++) {
    chb_job_progress p;
    chb_job_get_progress(job, &p);
    if (p.bytes_done > 0) return 1;
    if (p.state != CHB_JOB_RUNNING) return 0;
    sleep_ms(1);
  }
  return 0;
}

/* A sparse file of `size` bytes: big to read, free to create. */
static void make_sparse(const char *path, off_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, size) != 0 || close(fd) != 0) {
    perror(path);
    exit(2);
  }
}


/* ---- tests ---- */

#define NFILES 48

/* Many files, several threads, an odd buffer size: identical copies. */
static void test_copy_many(void) {
  static const size_t sizes[] = {0, 1, 7, 2047, 2048, 2049, 4095, 4096, 6000, 65536, 100003, 333333};
  const size_t nsizes = sizeof sizes / sizeof sizes[0];
  unsigned char *data[NFILES];
  size_t len[NFILES];
  char src[NFILES][512], dst[NFILES][512];
  chb_job *job = new_job(4, 7000); /* not a multiple of the 2048-byte hash block */
  chb_error err;
  uint64_t want_total = 0, want_known = 0;
  int added = 1;

  mkdir(path_of(src[0], sizeof src[0], "%s", "many", 0), 0755);
  for (int i = 0; i < NFILES; i++) {
    len[i] = sizes[(size_t)i % nsizes] + (size_t)(i / (int)nsizes) * 13;
    data[i] = gen_random((uint64_t)i + 1, len[i]);
    path_of(src[i], sizeof src[i], "%s/src-%02d.bin", "many", i);
    spit(src[i], data[i], len[i]);
    /* Deep destinations that do not exist yet: parents are created. */
    path_of(dst[i], sizeof dst[i], "%s/out/d%d/e/f.bin", "many", i);
    want_total += len[i];
    chb_u128 h = hash_of(data[i], len[i]);
    long idx;
    switch (i % 4) {
    case 0: /* size and checksum known, both right */
      idx = chb_job_add(job, src[i], dst[i], 0, (int64_t)len[i], &h, &err);
      want_known += len[i];
      break;
    case 1: /* size known only */
      idx = chb_job_add(job, src[i], dst[i], 0, (int64_t)len[i], NULL, &err);
      want_known += len[i];
      break;
    case 2: /* nothing known */
      idx = chb_job_add(job, src[i], dst[i], 0, -1, NULL, &err);
      break;
    default: /* hash only, no destination */
      idx = chb_job_add(job, src[i], NULL, 0, -1, NULL, &err);
      dst[i][0] = '\0';
      break;
    }
    if (idx != i) added = 0;
  }
  CHECK(added, "chb_job_add returns indexes 0..%d in order", NFILES - 1);
  CHECK(chb_job_count(job) == NFILES, "count is %d", NFILES);

  chb_job_progress p;
  chb_job_get_progress(job, &p);
  CHECK(p.state == CHB_JOB_NEW && p.files_total == NFILES && p.files_done == 0 &&
            p.bytes_total == want_known && p.bytes_done == 0,
        "progress before start: new, %llu files, %llu known bytes",
        (unsigned long long)p.files_total, (unsigned long long)p.bytes_total);
  uint64_t s0;
  chb_u128 h0;
  CHECK(chb_job_entry_result(job, 0, &s0, &h0) != 0, "no entry result before the job is done");
  CHECK(chb_job_result(job, &err) != 0 && err.code == CHB_INVALID, "result before start: %s", err.msg);

  chb_job_state s = run(job, &err);
  CHECK(s == CHB_JOB_DONE, "copy of %d files ends done (%s) %s", NFILES, chb_job_state_name(s), err.msg);
  CHECK(chb_job_result(job, &err) == 0 && err.code == CHB_OK, "result is ok");
  chb_job_get_progress(job, &p);
  CHECK(p.state == CHB_JOB_DONE && p.files_done == NFILES && p.bytes_done == want_total,
        "progress at the end: %llu/%d files, %llu/%llu bytes", (unsigned long long)p.files_done, NFILES,
        (unsigned long long)p.bytes_done, (unsigned long long)want_total);

  int bad_result = 0, bad_copy = 0, bad_absent = 0;
  for (int i = 0; i < NFILES; i++) {
    uint64_t size;
    chb_u128 h;
    if (chb_job_entry_result(job, (size_t)i, &size, &h) != 0 || size != len[i] ||
        !same(h, hash_of(data[i], len[i]))) {
      printf("     entry %d: wrong result\n", i);
      bad_result++;
    }
    if (dst[i][0]) {
      size_t n = 0;
      unsigned char *copy = slurp(dst[i], &n);
      if (!copy || n != len[i] || (n && memcmp(copy, data[i], n) != 0)) {
        printf("     entry %d: copy differs\n", i);
        bad_copy++;
      }
      free(copy);
    } else {
      char other[512];
      path_of(other, sizeof other, "%s/out/d%d", "many", i);
      if (exists(other)) bad_absent++;
    }
    free(data[i]);
  }
  CHECK(bad_result == 0, "every entry's size and checksum equal chb_hash of its source");
  CHECK(bad_copy == 0, "every copy is byte-identical to its source (parents created)");
  CHECK(bad_absent == 0, "hash-only entries write nothing");
  CHECK(chb_job_entry_result(job, NFILES, &s0, &h0) != 0, "entry result out of range fails");
  chb_job_free(job);
}

static void test_corrupt(void) {
  char src[512], dst[512];
  chb_error err;
  size_t n = 50000;
  unsigned char *data = gen_random(99, n);
  path_of(src, sizeof src, "%s/src-%d", "corrupt", 0);
  mkdir(path_of(dst, sizeof dst, "%s", "corrupt", 0), 0755);
  spit(src, data, n);
  chb_u128 right = hash_of(data, n);

  /* Wrong size (checksum right). */
  chb_job *job = new_job(2, 4096);
  path_of(dst, sizeof dst, "%s/out/size-%d", "corrupt", 0);
  chb_job_add(job, src, dst, 0, (int64_t)n + 1, &right, &err);
  chb_job_state s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_CORRUPT, "size mismatch fails CORRUPT (%s)", chb_code_name(err.code));
  CHECK(strstr(err.msg, src) && strstr(err.msg, "size"), "size mismatch names the file: %s", err.msg);
  CHECK(!exists(dst), "size mismatch leaves no partial destination");
  chb_job_free(job);

  /* Wrong checksum (size right). */
  chb_u128 wrong = right;
  wrong.hi ^= 1;
  job = new_job(2, 4096);
  path_of(dst, sizeof dst, "%s/out/hash-%d", "corrupt", 0);
  chb_job_add(job, src, dst, 0, (int64_t)n, &wrong, &err);
  s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_CORRUPT, "checksum mismatch fails CORRUPT (%s)",
        chb_code_name(err.code));
  char want[33], got[33];
  chb_u128_to_hex(wrong, want);
  chb_u128_to_hex(right, got);
  CHECK(strstr(err.msg, src) && strstr(err.msg, want) && strstr(err.msg, got),
        "checksum mismatch names the file and both checksums: %s", err.msg);
  CHECK(!exists(dst), "checksum mismatch leaves no partial destination");
  uint64_t size;
  chb_u128 h;
  CHECK(chb_job_entry_result(job, 0, &size, &h) != 0, "no entry results from a failed job");
  chb_job_free(job);

  /* Hash only (no destination): the same check applies. */
  job = new_job(1, 0);
  chb_job_add(job, src, NULL, 0, (int64_t)n - 1, NULL, &err);
  s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_CORRUPT && strstr(err.msg, src),
        "hash-only size mismatch: %s", err.msg);
  chb_job_free(job);
  free(data);
}

static void test_missing_and_existing(void) {
  char src[512], dst[512], missing[512];
  chb_error err;
  mkdir(path_of(src, sizeof src, "%s", "exist", 0), 0755);
  path_of(src, sizeof src, "%s/src-%d", "exist", 0);
  spit(src, "new content", 11);

  /* Missing source: ENOENT naming it, nothing created. */
  chb_job *job = new_job(2, 0);
  path_of(missing, sizeof missing, "%s/no-such-file-%d", "exist", 7);
  path_of(dst, sizeof dst, "%s/out/from-missing-%d", "exist", 0);
  chb_job_add(job, missing, dst, 0, -1, NULL, &err);
  chb_job_state s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_ENOENT && err.sys == ENOENT, "missing source fails ENOENT (%s)",
        chb_code_name(err.code));
  CHECK(strstr(err.msg, missing) != NULL, "the message names the missing source: %s", err.msg);
  CHECK(!exists(dst), "no destination for a missing source");
  chb_job_free(job);

  /* Existing destination: EEXIST, the file keeps its content. */
  job = new_job(2, 0);
  path_of(dst, sizeof dst, "%s/taken-%d", "exist", 0);
  spit(dst, "keep me", 7);
  chb_job_add(job, src, dst, 0, -1, NULL, &err);
  s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_EEXIST, "existing destination fails EEXIST (%s)",
        chb_code_name(err.code));
  CHECK(strstr(err.msg, dst) != NULL, "the message names the destination: %s", err.msg);
  size_t n = 0;
  unsigned char *kept = slurp(dst, &n);
  CHECK(kept && n == 7 && memcmp(kept, "keep me", 7) == 0, "an existing destination is never overwritten nor removed");
  free(kept);
  chb_job_free(job);

  /* One missing file among many: the first real error wins over the
   * cancellations it causes in the other workers. */
  job = new_job(4, 1024);
  char many[40][512];
  for (int i = 0; i < 40; i++) {
    path_of(many[i], sizeof many[i], "%s/out2/f%d", "exist", i);
    chb_job_add(job, i == 20 ? missing : src, many[i], 0, -1, NULL, &err);
  }
  s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_ENOENT && strstr(err.msg, missing),
        "one missing file among 40: FAILED with ENOENT (%s: %s)", chb_code_name(err.code), err.msg);
  chb_job_free(job);
}

#define BIG ((off_t)200 << 20)

/* Cancel mid-run: CANCELLED quickly, the partial copy removed. */
static void test_cancel(void) {
  char src[512], dst[512];
  chb_error err;
  mkdir(path_of(src, sizeof src, "%s", "cancel", 0), 0755);
  path_of(src, sizeof src, "%s/big-%d", "cancel", 0);
  make_sparse(src, BIG);
  path_of(dst, sizeof dst, "%s/out/big-%d", "cancel", 0);

  chb_job *job = new_job(2, 4096);
  chb_job_add(job, src, dst, 0, (int64_t)BIG, NULL, &err);
  CHECK(chb_job_start(job, &err) == 0, "start");
  CHECK(wait_started(job), "the copy of a 200 MiB file is running");
  CHECK(chb_job_result(job, &err) != 0 && err.code == CHB_INVALID, "result while running: %s", err.msg);
  double t0 = now_s();
  chb_job_cancel(job);
  chb_job_state s = chb_job_wait(job, 10000);
  double dt = now_s() - t0;
  CHECK(s == CHB_JOB_CANCELLED, "cancel ends the job cancelled (%s)", chb_job_state_name(s));
  CHECK(dt < 3.0, "cancel takes effect quickly (%.3f s)", dt);
  chb_job_progress p;
  chb_job_get_progress(job, &p);
  CHECK(p.state == CHB_JOB_CANCELLED && p.files_done == 0 && p.bytes_done < (uint64_t)BIG,
        "progress stops part-way: %llu of %lld bytes", (unsigned long long)p.bytes_done, (long long)BIG);
  CHECK(chb_job_result(job, &err) != 0 && err.code == CHB_CANCELLED, "result is CANCELLED: %s", err.msg);
  CHECK(!exists(dst), "the partial destination is removed");
  chb_job_cancel(job); /* again, after the end: harmless */
  CHECK(chb_job_wait(job, 0) == CHB_JOB_CANCELLED, "a second cancel changes nothing");
  chb_job_free(job);

  /* Cancel before start. */
  job = new_job(2, 0);
  chb_job_add(job, src, dst, 0, -1, NULL, &err);
  chb_job_cancel(job);
  CHECK(chb_job_wait(job, -1) == CHB_JOB_CANCELLED, "cancel before start: cancelled");
  CHECK(chb_job_start(job, &err) != 0 && err.code == CHB_INVALID, "start after cancel fails: %s", err.msg);
  CHECK(chb_job_result(job, &err) != 0 && err.code == CHB_CANCELLED, "result is CANCELLED");
  chb_job_free(job);

  /* chb_job_free on a running job cancels and joins: when it returns
   * the worker has finished, so its partial file is already gone. */
  job = new_job(2, 4096);
  chb_job_add(job, src, dst, 0, -1, NULL, &err);
  chb_job_add(job, "/dev/zero", NULL, 0, -1, NULL, &err);
  CHECK(chb_job_start(job, &err) == 0, "start");
  CHECK(wait_started(job), "running before free");
  t0 = now_s();
  chb_job_free(job);
  dt = now_s() - t0;
  CHECK(!exists(dst), "after chb_job_free on a running job, the partial copy is gone (workers joined)");
  CHECK(dt < 3.0, "chb_job_free of a running job is quick (%.3f s)", dt);
  unlink(src);
}

/* A timed wait returns RUNNING while the job runs. /dev/zero never ends,
 * so only cancel stops this job. */
static void test_wait_timeout(void) {
  chb_error err;
  chb_job *job = new_job(1, 4096);
  chb_job_add(job, "/dev/zero", NULL, 0, -1, NULL, &err);
  CHECK(chb_job_wait(job, 10) == CHB_JOB_NEW, "wait on a new job returns NEW at once");
  CHECK(chb_job_wait(job, -1) == CHB_JOB_NEW, "wait forever on a new job returns NEW at once");
  CHECK(chb_job_start(job, &err) == 0, "start");
  CHECK(chb_job_start(job, &err) != 0 && err.code == CHB_INVALID, "second start fails: %s", err.msg);
  CHECK(chb_job_add(job, "/dev/zero", NULL, 0, -1, NULL, &err) < 0 && err.code == CHB_INVALID,
        "add after start fails: %s", err.msg);
  CHECK(chb_job_wait(job, 0) == CHB_JOB_RUNNING, "wait(0) returns RUNNING");
  uint64_t size;
  chb_u128 h;
  CHECK(chb_job_entry_result(job, 0, &size, &h) != 0, "no entry result while running");
  double t0 = now_s();
  chb_job_state s = chb_job_wait(job, 150);
  double dt = now_s() - t0;
  CHECK(s == CHB_JOB_RUNNING, "wait(150 ms) returns RUNNING (%s)", chb_job_state_name(s));
  CHECK(dt >= 0.14 && dt < 5.0, "wait(150 ms) waited its timeout (%.3f s)", dt);
  chb_job_progress p1, p2;
  chb_job_get_progress(job, &p1);
  sleep_ms(50);
  chb_job_get_progress(job, &p2);
  CHECK(p1.state == CHB_JOB_RUNNING && p2.bytes_done > p1.bytes_done,
        "bytes_done grows while running (%llu -> %llu)", (unsigned long long)p1.bytes_done,
        (unsigned long long)p2.bytes_done);
  chb_job_cancel(job);
  CHECK(chb_job_wait(job, -1) == CHB_JOB_CANCELLED, "cancel: cancelled");
  chb_job_free(job);
}

/* Polling entry results while the job ends is safe (no data race under
 * TSan): the result appears once the job is DONE, never before. */
static void test_poll_entry(void) {
  char src[512];
  chb_error err;
  unsigned char *data = gen_random(11, 300000);
  mkdir(path_of(src, sizeof src, "%s", "poll", 0), 0755);
  path_of(src, sizeof src, "%s/src-%d", "poll", 0);
  spit(src, data, 300000);
  chb_job *job = new_job(1, 2048);
  chb_job_add(job, src, NULL, 0, -1, NULL, &err);
  chb_job_start(job, &err);
  uint64_t size = 0;
  chb_u128 h = {0, 0};
  long polls = 0;
  double t0 = now_s();
  /* Nothing else here takes the job's lock: only entry_result orders us.
   * Sleep between polls: under valgrind threads run one at a time, and a
   * busy loop would starve the worker. */
  const struct timespec pause = {0, 1000000};
  while (chb_job_entry_result(job, 0, &size, &h) != 0 && now_s() - t0 < 60.0) {
    polls++;
    nanosleep(&pause, NULL);
  }
  CHECK(size == 300000 && same(h, hash_of(data, 300000)) && chb_job_wait(job, 0) == CHB_JOB_DONE,
        "entry result polled while running appears once done (%ld polls)", polls);
  chb_job_free(job);
  free(data);
}

/* Copies entry 0 of a one-entry job; returns the state, copy in *out. */
static chb_job_state copy_with_base(const char *src, const char *dst, uint64_t offset, uint64_t base_size,
                                    chb_u128 base_hash, int *tail_only, unsigned char **out, size_t *outlen) {
  chb_error err;
  chb_job *job = new_job(1, 1000); /* base sizes below are not multiples of it */
  chb_job_add(job, src, dst, offset, -1, NULL, &err);
  if (chb_job_set_base(job, 0, base_size, base_hash, &err) != 0) printf("     set_base: %s\n", err.msg);
  chb_job_state s = run(job, &err);
  if (s != CHB_JOB_DONE) printf("     %s\n", err.msg);
  *tail_only = chb_job_entry_tail_only(job, 0);
  *out = slurp(dst, outlen);
  chb_job_free(job);
  unlink(dst);
  return s;
}

/* An incremental's grown file: only the tail is written when the prefix
 * matches the base; otherwise (changed, or shorter) the whole file is. */
static void test_base(void) {
  char src[512], dst[512];
  chb_error err;
  size_t n = 20000, base = 8000, off = 1000;
  unsigned char *data = gen_random(21, n);
  mkdir(path_of(src, sizeof src, "%s", "base", 0), 0755);
  path_of(src, sizeof src, "%s/src-%d", "base", 0);
  path_of(dst, sizeof dst, "%s/out/dst-%d", "base", 0);
  spit(src, data, n);
  chb_u128 prefix = hash_of(data, base), other = hash_of(data + 1, base);
  int tail = -1;
  unsigned char *copy;
  size_t m = 0;

  chb_job_state s = copy_with_base(src, dst, 0, base, prefix, &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 1 && copy && m == n - base && memcmp(copy, data + base, m) == 0,
        "matching base prefix: only the %zu-byte tail is written", n - base);
  free(copy);

  s = copy_with_base(src, dst, 0, base, other, &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 0 && copy && m == n && memcmp(copy, data, m) == 0,
        "changed prefix: the whole file is written");
  free(copy);

  s = copy_with_base(src, dst, 0, n + 100, prefix, &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 0 && copy && m == n && memcmp(copy, data, m) == 0,
        "file shorter than its base: the whole file is written");
  free(copy);

  /* With src_offset the file is the bytes after the offset: its prefix,
   * tail and (on mismatch) whole content are all taken from there. */
  s = copy_with_base(src, dst, off, base, hash_of(data + off, base), &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 1 && copy && m == n - off - base && memcmp(copy, data + off + base, m) == 0,
        "src_offset + matching base: the tail after offset+base");
  free(copy);
  s = copy_with_base(src, dst, off, base, other, &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 0 && copy && m == n - off && memcmp(copy, data + off, m) == 0,
        "src_offset + changed prefix: the whole file after the offset");
  free(copy);
  s = copy_with_base(src, dst, off, n, other, &tail, &copy, &m);
  CHECK(s == CHB_JOB_DONE && tail == 0 && copy && m == n - off && memcmp(copy, data + off, m) == 0,
        "src_offset + file shorter than its base: the whole file after the offset");
  free(copy);

  /* Misuse of set_base. */
  chb_job *job = new_job(1, 0);
  chb_piece two[2] = {{src, 0, 10}, {src, 10, -1}};
  chb_job_add(job, src, NULL, 0, -1, NULL, &err);
  chb_job_add_pieces(job, two, 2, dst, -1, NULL, &err);
  CHECK(chb_job_set_base(job, 0, base, prefix, &err) != 0 && err.code == CHB_INVALID,
        "set_base on a hash-only entry fails: %s", err.msg);
  CHECK(chb_job_set_base(job, 1, base, prefix, &err) != 0 && err.code == CHB_INVALID,
        "set_base on a multi-piece entry fails: %s", err.msg);
  CHECK(chb_job_set_base(job, 2, base, prefix, &err) != 0 && err.code == CHB_INVALID,
        "set_base out of range fails: %s", err.msg);
  chb_job_free(job);
  free(data);
}

/* An entry made of pieces of several files, read in order. */
static void test_pieces(void) {
  char a[512], b[512], dst[512];
  chb_error err;
  unsigned char *da = gen_random(31, 5000), *db = gen_random(32, 3000);
  mkdir(path_of(a, sizeof a, "%s", "pieces", 0), 0755);
  path_of(a, sizeof a, "%s/a-%d", "pieces", 0);
  path_of(b, sizeof b, "%s/b-%d", "pieces", 0);
  path_of(dst, sizeof dst, "%s/out/dst-%d", "pieces", 0);
  spit(a, da, 5000);
  spit(b, db, 3000);
  unsigned char want[5000 + 200];
  memcpy(want, da, 100);
  memcpy(want + 100, db + 50, 200);
  memcpy(want + 300, da + 100, 4900);
  chb_piece pieces[3] = {{a, 0, 100}, {b, 50, 200}, {a, 100, -1}};

  chb_job *job = new_job(2, 64);
  CHECK(chb_job_add_pieces(job, pieces, 0, dst, -1, NULL, &err) < 0 && err.code == CHB_INVALID,
        "an entry without pieces is refused: %s", err.msg);
  chb_u128 h = hash_of(want, sizeof want);
  chb_job_add_pieces(job, pieces, 3, dst, (int64_t)sizeof want, &h, &err);
  chb_job_state s = run(job, &err);
  uint64_t size = 0;
  chb_u128 got = {0, 0};
  chb_job_entry_result(job, 0, &size, &got);
  size_t m = 0;
  unsigned char *copy = slurp(dst, &m);
  CHECK(s == CHB_JOB_DONE && size == sizeof want && same(got, h) && copy && m == sizeof want &&
            memcmp(copy, want, m) == 0,
        "3 pieces of 2 files make one identical file (%s) %s", chb_job_state_name(s), err.msg);
  free(copy);
  chb_job_free(job);

  /* A piece longer than what its file holds: CORRUPT naming that file. */
  unlink(dst);
  chb_piece short_piece[2] = {{a, 0, 100}, {b, 2900, 200}};
  job = new_job(1, 0);
  chb_job_add_pieces(job, short_piece, 2, dst, -1, NULL, &err);
  s = run(job, &err);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_CORRUPT && strstr(err.msg, b), "a short piece: %s", err.msg);
  CHECK(!exists(dst), "a short piece leaves no partial destination");
  chb_job_free(job);
  free(da);
  free(db);
}

/* Pieces with a root are read confined below it: a symbolic link, a ".."
 * or an empty component anywhere below the root is refused, not followed. */
static void test_confined(void) {
  char dir[512], sub[768], file[768], link[768], dirlink[768], via[768], dst[768];
  chb_error err;
  unsigned char *data = gen_random(41, 3000);
  path_of(dir, sizeof dir, "confined%s-%d", "", 0);
  mkdir(dir, 0755);
  snprintf(sub, sizeof sub, "%s/sub", dir);
  mkdir(sub, 0755);
  snprintf(file, sizeof file, "%s/sub/f", dir);
  spit(file, data, 3000);
  snprintf(link, sizeof link, "%s/sub/l", dir);
  CHECK(symlink(file, link) == 0, "symlink %s", link);
  snprintf(dirlink, sizeof dirlink, "%s/dl", dir);
  CHECK(symlink(sub, dirlink) == 0, "symlink %s", dirlink);
  snprintf(via, sizeof via, "%s/dl/f", dir);
  chb_u128 h = hash_of(data, 3000);
  struct {
    const char *path, *why;
    int ok;
  } cases[] = {
      {file, "a file below the root", 1},
      {link, "symbolic link", 0},
      {via, "symbolic link", 0},
      {NULL, "'..'", 0},
      {NULL, "empty", 0},
  };
  char dotdot[600], empty[600];
  snprintf(dotdot, sizeof dotdot, "%s/sub/../sub/f", dir);
  snprintf(empty, sizeof empty, "%s/sub//f", dir);
  cases[3].path = dotdot;
  cases[4].path = empty;
  for (size_t k = 0; k < 2 * (sizeof cases / sizeof cases[0]); k++) {
    size_t i = k % (sizeof cases / sizeof cases[0]);
    chb_fs_beneath_walk_only(k >= sizeof cases / sizeof cases[0]);   /* openat2, then the walk */
    path_of(dst, sizeof dst, "confined-out%s-%d", "", (int)k);
    chb_piece p = {cases[i].path, 0, -1, NULL, NULL, NULL, NULL, dir};
    chb_job *job = new_job(1, 0);
    chb_job_add_pieces(job, &p, 1, dst, 3000, &h, &err);
    chb_job_state s = run(job, &err);
    if (cases[i].ok)
      CHECK(s == CHB_JOB_DONE, "confined (walk %d): %s is read (%s)", k >= 5, cases[i].why, err.msg);
    else
      CHECK(s == CHB_JOB_FAILED && err.code == CHB_INVALID && strstr(err.msg, cases[i].why) &&
                !exists(dst),
            "confined (walk %d): %s is refused: %s", k >= 5, cases[i].why, err.msg);
    chb_job_free(job);
  }
  chb_fs_beneath_walk_only(0);
  /* A root that is not a prefix of the path is misuse. */
  chb_piece outside = {file, 0, -1, NULL, NULL, NULL, NULL, "/nonexistent-root"};
  chb_job *job = new_job(1, 0);
  CHECK(chb_job_add_pieces(job, &outside, 1, dst, -1, NULL, &err) < 0 && err.code == CHB_INVALID,
        "a piece outside its root is refused at add: %s", err.msg);
  chb_job_free(job);
  free(data);
}

static void test_offset(void) {
  char src[512], dst[512];
  chb_error err;
  size_t n = 10000, off = 3000;
  unsigned char *data = gen_random(7, n);
  mkdir(path_of(src, sizeof src, "%s", "offset", 0), 0755);
  path_of(src, sizeof src, "%s/src-%d", "offset", 0);
  spit(src, data, n);

  chb_job *job = new_job(2, 1000);
  chb_u128 tail = hash_of(data + off, n - off);
  path_of(dst, sizeof dst, "%s/out/tail-%d", "offset", 0);
  chb_job_add(job, src, dst, off, (int64_t)(n - off), &tail, &err);
  chb_job_add(job, src, NULL, n + 5, 0, NULL, &err);     /* past the end: empty */
  chb_job_add(job, src, NULL, n, -1, NULL, &err);         /* exactly at the end */
  chb_job_state s = run(job, &err);
  CHECK(s == CHB_JOB_DONE, "offset copy done (%s) %s", chb_job_state_name(s), err.msg);
  uint64_t size = 0;
  chb_u128 h = {0, 0};
  chb_job_entry_result(job, 0, &size, &h);
  CHECK(size == n - off && same(h, tail), "src_offset %zu: size %llu and checksum of the tail", off,
        (unsigned long long)size);
  size_t m = 0;
  unsigned char *copy = slurp(dst, &m);
  CHECK(copy && m == n - off && memcmp(copy, data + off, m) == 0, "the copy is the source minus its first %zu bytes",
        off);
  free(copy);
  chb_job_entry_result(job, 1, &size, &h);
  CHECK(size == 0 && same(h, hash_of("", 0)), "an offset past the end reads nothing");
  chb_job_entry_result(job, 2, &size, &h);
  CHECK(size == 0, "an offset at the end reads nothing");
  chb_job_free(job);
  free(data);
}

static void test_empty_and_fsync(void) {
  chb_error err;
  chb_job *job = new_job(3, 0);
  chb_job_state s = run(job, &err);
  chb_job_progress p;
  chb_job_get_progress(job, &p);
  CHECK(s == CHB_JOB_DONE && chb_job_result(job, &err) == 0 && p.files_total == 0 && p.bytes_done == 0,
        "a job with 0 entries ends DONE");
  chb_job_free(job);
  chb_job_free(NULL);
  CHECK(1, "chb_job_free(NULL) is a no-op");

  /* A never-started job frees cleanly too. */
  job = new_job(0, 0);
  chb_job_add(job, "/nonexistent", "/nonexistent2", 0, -1, NULL, &err);
  chb_job_free(job);
  CHECK(1, "a job that never started frees");

  /* fsync on: still a plain, correct copy. */
  char src[512], dst[512];
  unsigned char *data = gen_random(3, 12345);
  mkdir(path_of(src, sizeof src, "%s", "fsync", 0), 0755);
  path_of(src, sizeof src, "%s/src-%d", "fsync", 0);
  path_of(dst, sizeof dst, "%s/out/dst-%d", "fsync", 0);
  spit(src, data, 12345);
  chb_job_opts o = {2, 0, 1};
  job = chb_job_new(&o, &err);
  chb_job_add(job, src, dst, 0, 12345, NULL, &err);
  s = run(job, &err);
  size_t m = 0;
  unsigned char *copy = slurp(dst, &m);
  CHECK(s == CHB_JOB_DONE && copy && m == 12345 && memcmp(copy, data, m) == 0, "fsync=1 copy is identical");
  free(copy);
  free(data);
  chb_job_free(job);

  CHECK(strcmp(chb_job_state_name(CHB_JOB_RUNNING), "running") == 0 &&
            strcmp(chb_job_state_name(CHB_JOB_CANCELLED), "cancelled") == 0,
        "state names");
}

/*
 * Small files of one directory are copied in batches (chb_job.h): many
 * files of several directories, interleaved with a big one, fsync on,
 * come out identical; a batch is all or nothing: a file of it that fails
 * (a wrong checksum, an existing destination) fails the job naming that
 * file, and no file of its batch is left, the existing one untouched.
 */
#define BATCH_DIRS 3
#define BATCH_DIR_FILES 40   /* more than one batch (16 files) a directory */
static void test_batches(void) {
  char src[768], dst[768], dir[512];
  chb_error err;
  mkdir(path_of(dir, sizeof dir, "%s", "batch", 0), 0755);
  for (int d = 0; d < BATCH_DIRS; d++) {
    mkdir(path_of(src, sizeof src, "%s/src%d", "batch", d), 0755);
    for (int i = 0; i < BATCH_DIR_FILES; i++) {
      snprintf(src, sizeof src, "%s/batch/src%d/f%d", root, d, i);
      unsigned char *data = gen_random((uint64_t)(1000 + d * 100 + i), (size_t)(100 + 37 * i));
      spit(src, data, (size_t)(100 + 37 * i));
      free(data);
    }
  }
  size_t big_n = 300 * 1024;   /* above the small-file size: a batch of its own */
  unsigned char *big = gen_random(77, big_n);
  path_of(src, sizeof src, "%s/big-%d", "batch", 0);
  spit(src, big, big_n);

  /* Every file, with fsync, sources confined below the batch directory. */
  chb_job_opts o = {3, 0, 1};
  chb_job *job = chb_job_new(&o, &err);
  for (int d = 0; d < BATCH_DIRS; d++)
    for (int i = 0; i < BATCH_DIR_FILES; i++) {
      snprintf(src, sizeof src, "%s/batch/src%d/f%d", root, d, i);
      snprintf(dst, sizeof dst, "%s/batch/out/all/part%d/f%d", root, d, i);
      chb_piece p = {src, 0, -1, NULL, NULL, NULL, NULL, dir};
      chb_job_add_pieces(job, &p, 1, dst, 100 + 37 * i, NULL, &err);
      if (d == 1 && i == 20) {   /* a big file in the middle of a directory's small ones */
        path_of(src, sizeof src, "%s/big-%d", "batch", 0);
        snprintf(dst, sizeof dst, "%s/batch/out/all/part%d/big", root, d);
        chb_job_add(job, src, dst, 0, (int64_t)big_n, NULL, &err);
      }
    }
  chb_job_state s = run(job, &err);
  chb_job_progress p;
  chb_job_get_progress(job, &p);
  CHECK(s == CHB_JOB_DONE && p.files_done == BATCH_DIRS * BATCH_DIR_FILES + 1,
        "batches: %d files of %d directories copied (%s, %llu done)", BATCH_DIRS * BATCH_DIR_FILES + 1,
        BATCH_DIRS, err.msg, (unsigned long long)p.files_done);
  int same_all = 1;
  for (int d = 0; d < BATCH_DIRS; d++)
    for (int i = 0; i < BATCH_DIR_FILES; i++) {
      size_t m = 0, n = (size_t)(100 + 37 * i);
      snprintf(dst, sizeof dst, "%s/batch/out/all/part%d/f%d", root, d, i);
      unsigned char *want = gen_random((uint64_t)(1000 + d * 100 + i), n);
      unsigned char *got = slurp(dst, &m);
      uint64_t size;
      chb_u128 h;
      size_t entry = (size_t)(d * BATCH_DIR_FILES + i + (d > 1 || (d == 1 && i > 20)));
      if (!got || m != n || memcmp(got, want, n) != 0 || chb_job_entry_result(job, entry, &size, &h) != 0 ||
          size != n || !same(h, hash_of(want, n)))
        same_all = 0;
      free(want);
      free(got);
    }
  size_t m = 0;
  snprintf(dst, sizeof dst, "%s/batch/out/all/part1/big", root);
  unsigned char *got = slurp(dst, &m);
  CHECK(same_all && got && m == big_n && memcmp(got, big, m) == 0,
        "batches: every copy is identical, with its size and checksum as entry results");
  free(got);
  chb_job_free(job);

  /* A wrong checksum in the middle of a batch: the job fails naming it,
   * and none of the batch's files is left. */
  for (int with_sync = 0; with_sync < 2; with_sync++) {
    chb_job_opts q = {2, 0, with_sync};
    job = chb_job_new(&q, &err);
    char bad[768];
    for (int i = 0; i < 5; i++) {
      snprintf(src, sizeof src, "%s/batch/src0/f%d", root, i);
      snprintf(dst, sizeof dst, "%s/batch/out/bad%d/part/f%d", root, with_sync, i);
      size_t n = (size_t)(100 + 37 * i);
      unsigned char *data = gen_random((uint64_t)(1000 + i), n);
      chb_u128 h = hash_of(data, n);
      free(data);
      if (i == 2) {
        h.lo ^= 1;
        snprintf(bad, sizeof bad, "%s", src);
      }
      chb_job_add(job, src, dst, 0, (int64_t)n, &h, &err);
    }
    s = run(job, &err);
    int left = 0;
    for (int i = 0; i < 5; i++) {
      snprintf(dst, sizeof dst, "%s/batch/out/bad%d/part/f%d", root, with_sync, i);
      left += exists(dst);
    }
    CHECK(s == CHB_JOB_FAILED && err.code == CHB_CORRUPT && strstr(err.msg, bad) && left == 0,
          "batches (fsync %d): a wrong checksum fails the job naming %s, no file of its batch left "
          "(%d left): %s", with_sync, bad, left, err.msg);
    chb_job_free(job);
  }

  /* An existing destination in a batch: refused by name, never replaced,
   * the batch's files before it removed. */
  char existing[768];
  snprintf(dst, sizeof dst, "%s/batch/out/exists", root);
  mkdir(dst, 0755);
  snprintf(existing, sizeof existing, "%s/batch/out/exists/f3", root);
  spit(existing, "keep", 4);
  job = new_job(2, 0);
  for (int i = 0; i < 5; i++) {
    snprintf(src, sizeof src, "%s/batch/src0/f%d", root, i);
    snprintf(dst, sizeof dst, "%s/batch/out/exists/f%d", root, i);
    chb_job_add(job, src, dst, 0, 100 + 37 * i, NULL, &err);
  }
  s = run(job, &err);
  int left = 0;
  for (int i = 0; i < 5; i++) {
    snprintf(dst, sizeof dst, "%s/batch/out/exists/f%d", root, i);
    left += i != 3 && exists(dst);
  }
  got = slurp(existing, &m);
  CHECK(s == CHB_JOB_FAILED && err.code == CHB_EEXIST && strstr(err.msg, existing) && left == 0 && got &&
            m == 4 && memcmp(got, "keep", 4) == 0,
        "batches: an existing destination fails the job naming it, is kept, and the batch's "
        "other files are removed (%d left): %s", left, err.msg);
  free(got);
  chb_job_free(job);
  free(big);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 2;
  }
  test_copy_many();
  test_corrupt();
  test_missing_and_existing();
  test_offset();
  test_poll_entry();
  test_base();
  test_pieces();
  test_confined();
  test_empty_and_fsync();
  test_batches();
  test_wait_timeout();
  test_cancel();
  rm_tree(root);
  CHECK(!exists(root), "temp dir %s removed", root);
  if (failures) {
    printf("%d FAILED\n", failures);
    return 1;
  }
  printf("all ok\n");
  return 0;
}
