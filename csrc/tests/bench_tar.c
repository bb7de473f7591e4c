/*
 * bench_tar: time and peak RSS of indexing a tar archive of many small
 * entries (what RESTORE from a tar does first). Not a test: issue 14's
 * measurements.
 *
 *   bench_tar write <archive> <N>          a streamed archive of N entries
 *   bench_tar index <archive> [budget]     index it (budget: catalog bytes)
 *
 * The entries are named as a backup's compact parts' (data/<db>/<table>/
 * <part>/<file>, 12 files a part), 8 bytes each. `index` also looks every
 * entry up by its name. Built with -DCHB_BENCH_OLD_INDEX it only opens and
 * counts (the API before the catalog, for before/after figures).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chb_catalog.h"
#include "chb_tar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *const part_files[] = {
    "checksums.txt", "columns.txt", "columns_substreams.txt", "count.txt", "data.bin", "data.cmrk3",
    "default_compression_codec.txt", "metadata_version.txt", "minmax_p.idx", "partition.dat", "primary.cidx",
    "serialization.json"};
enum { PART_FILES = sizeof part_files / sizeof part_files[0] };

static double seconds_since(const struct timespec *t0) {
  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  return (double)(t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;
}

static int bench_write(const char *path, long n) {
  chb_error err;
  chb_tar_writer *w = chb_tar_writer_new(path, NULL, &err);
  if (!w || chb_tar_writer_begin(w, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  for (long i = 0; i < n; i++) {
    char name[128];
    long part = i / PART_FILES;
    snprintf(name, sizeof name, "data/default/t%03ld/all_%ld_%ld_0/%s", part % 200, part, part,
             part_files[i % PART_FILES]);
    if (chb_tar_writer_add_bytes(w, name, "abcdefgh", 8, &err) < 0) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    if ((i + 1) % 5000 == 0 && chb_tar_writer_wait_drained(w, -1) != CHB_RUN_DONE) break;
  }
  int rc = chb_tar_writer_start(w, &err) == 0 && chb_tar_writer_wait(w, -1) == CHB_RUN_DONE ? 0 : 1;
  if (rc != 0 && chb_tar_writer_result(w, &err) != 0) fprintf(stderr, "%s\n", err.msg);
  chb_tar_writer_free(w);
  return rc;
}

static int bench_index(const char *path, size_t budget) {
  chb_error err;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
#ifdef CHB_BENCH_OLD_INDEX
  (void)budget;
  chb_tar_index *x = chb_tar_index_open(path, 0, &err);
#else
  chb_tar_index *x = chb_tar_index_open_budget(path, 0, budget, &err);
#endif
  if (!x) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  size_t n = chb_tar_index_count(x);
  printf("%s: %zu entries indexed in %.2f s, peak RSS %.1f MiB", path, n, seconds_since(&t0), peak_rss_mib());
#ifndef CHB_BENCH_OLD_INDEX
  printf(", index %.1f MiB\n", chb_tar_index_memory(x) / 1048576.0);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  size_t found = 0;
  for (size_t i = 0; i < n; i++) {
    char name[256];
    chb_tar_entry e;
    found += chb_tar_index_get(x, i, NULL, name, sizeof name, NULL, &err) == 0 &&
             chb_tar_index_find(x, name, &e, &err) == (long)i;
  }
  printf("%zu of %zu found by name in %.2f s, peak RSS %.1f MiB", found, n, seconds_since(&t0), peak_rss_mib());
#endif
  printf("\n");
  chb_tar_index_close(x);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "write") == 0) return bench_write(argv[2], atol(argv[3]));
  if (argc >= 3 && strcmp(argv[1], "index") == 0)
    return bench_index(argv[2], argc > 3 ? (size_t)atoll(argv[3]) : CHB_CATALOG_BUDGET);
  fprintf(stderr, "usage: %s write <archive> <N> | index <archive> [budget]\n", argv[0]);
  return 2;
}
