/*
 * bench_zip: time and peak RSS of writing a zip archive of N tiny entries,
 * batch (every add, then finish) or streaming (begin, adds in rounds with
 * wait_drained between, start, wait). Not a test: issue 14's measurements.
 *
 *   bench_zip <archive> <method> <N> batch|stream [bytes|file] [round]
 *   bench_zip <archive> read
 *
 * `read` reads every entry back as RESTORE does: each opened by name
 * through the process's shared reader (chb_zip_open_cached), read to its
 * verified end.
 * `file` adds each entry from one small file (a path per entry, as BACKUP
 * does); `bytes` (default) from a copied 8-byte buffer. Built with
 * -DCHB_BENCH_NO_STREAM it runs batch mode only (for the old libzip writer).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chb_zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static double peak_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

static int read_all(const char *path) {
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  chb_error err;
  chb_zip_reader *r = chb_zip_reader_shared(path, NULL, &err);
  if (!r) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  size_t n = chb_zip_reader_count(r);
  double opened = since(&t0), opened_rss = peak_mib();
  unsigned long long bytes = 0;
  char buf[65536];
  for (size_t i = 0; i < n; i++) {
    chb_zip_entry_info info;
    if (chb_zip_reader_stat(r, i, &info, &err) != 0) break;
    char *name = strdup(info.name);
    chb_zip_file *f = name ? chb_zip_open_cached(path, NULL, name, &err) : NULL;
    free(name);
    if (!f) break;
    ssize_t k;
    while ((k = chb_zip_file_read(f, buf, sizeof buf, &err)) > 0) bytes += (unsigned long long)k;
    chb_zip_file_close(f);
    if (k < 0) break;
    if (i + 1 == n) err.code = CHB_OK;
  }
  chb_zip_reader_release(r);
  chb_zip_cache_clear();
  if (n > 0 && err.code != CHB_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  printf("read %zu entries, %llu bytes: opened in %.2f s (peak RSS %.1f MiB), all read in %.2f s, "
         "peak RSS %.1f MiB\n", n, bytes, opened, opened_rss, since(&t0), peak_mib());
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[2], "read") == 0) return read_all(argv[1]);
  if (argc < 5) {
    fprintf(stderr, "usage: %s <archive> <method> <N> batch|stream [bytes|file] [round]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1], *method = argv[2];
  long n = atol(argv[3]), round = argc > 6 ? atol(argv[6]) : 2500;
  int stream = strcmp(argv[4], "stream") == 0, from_file = argc > 5 && strcmp(argv[5], "file") == 0;
  char src[4096];
  snprintf(src, sizeof src, "%s.src", path);
  if (from_file) {
    FILE *f = fopen(src, "wb");
    if (!f || fwrite("12345678", 1, 8, f) != 8 || fclose(f) != 0) return 2;
  }
  chb_zip_writer_opts o = {method, 0, 0, NULL, 2, 0, 0};
  chb_error err;
  chb_zip_writer *w = chb_zip_writer_new(path, &o, &err);
  if (!w) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
#ifndef CHB_BENCH_NO_STREAM
  if (stream && chb_zip_writer_begin(w, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
#else
  if (stream) {
    fprintf(stderr, "built without streaming\n");
    return 2;
  }
#endif
  for (long i = 0; i < n; i++) {
    char name[96];
    snprintf(name, sizeof name, "data/default/table/all_%ld_%ld_0/column_%ld.bin", i / 50, i / 50, i % 50);
    chb_piece p = {src, 0, -1};
    long k = from_file ? chb_zip_writer_add(w, name, &p, 1, 8, NULL, &err)
                       : chb_zip_writer_add_bytes(w, name, "abcdefgh", 8, &err);
    if (k < 0) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
#ifndef CHB_BENCH_NO_STREAM
    if (stream && (i + 1) % round == 0 && chb_zip_writer_wait_drained(w, -1) != CHB_JOB_DONE) break;
#endif
  }
  int rc = chb_zip_writer_finish(w, &err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (rc != 0) fprintf(stderr, "%s\n", err.msg);
  chb_zip_writer_free(w);
  if (from_file) remove(src);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%s %s %ld entries (%s): %.2f s, peak RSS %.1f MiB\n", method, stream ? "stream" : "batch", n,
         from_file ? "file" : "bytes", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
         ru.ru_maxrss / 1024.0);
  return rc != 0;
}
