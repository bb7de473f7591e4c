/* chb_stored: files whose bytes a chain stores plainly, added to a job from its indexes (chb_stored.h). */
#include "chb_stored.h"

#include <stdlib.h>
#include <string.h>

/* One growable buffer for the two paths an entry needs (the job copies them). */
typedef struct path_buf {
  char *p;
  size_t cap;
} path_buf;

static int reserve(path_buf *b, size_t n, chb_error *err) {
  if (n <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < n) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return chb_error_set(err, CHB_ENOMEM, "out of memory");
  b->p = p;
  b->cap = cap;
  return 0;
}

/* A data_file that names the entry itself (ClickHouse writes it so too). */
static int names_itself(const chb_index_entry *e) {
  return !e->data_file || (e->data_file_len == e->name_len && memcmp(e->data_file, e->name, e->name_len) == 0);
}

static int index_failed(chb_index *idx, chb_error *err) {
  const char *io = chb_index_error(idx);
  return chb_error_set(err, io ? CHB_EIO : CHB_ENOMEM, "cannot read a backup's index: %s",
                       io ? io : "out of memory");
}

/* Steps one resolution may take (data_file to data_file, backup to base):
 * past them the entry is left to chain.pieces, which names the loop. */
#define MAX_STEPS 64

int chb_stored_resolve(const chb_stored_level *chain, size_t n, chb_index_entry *e, size_t *level,
                       chb_error *err) {
  size_t at = 0;
  if (e->size == 0) {   /* no bytes to find */
    *level = 0;
    return 0;
  }
  for (int step = 0; step < MAX_STEPS; step++) {
    if (e->encrypted_by_disk == 1 || !e->has_checksum) return 1;
    uint64_t in_base = e->has_base_size ? e->base_size : e->use_base == 1 ? e->size : 0;
    if (in_base >= e->size) {
      /* all its bytes are the base's file of that size and checksum */
      if (at + 1 >= n) return 1;
      at++;
      long j = chb_index_find_content(chain[at].idx, e->size, e->checksum);
      if (j == -2) return index_failed(chain[at].idx, err);
      if (j < 0) return 1;
      if (chb_index_get(chain[at].idx, (size_t)j, e) != 0) return index_failed(chain[at].idx, err);
      continue;
    }
    if (in_base > 0) return 1;   /* a head in the base, a tail here: two pieces */
    if (names_itself(e)) {
      if (!chain[at].root) return 1;
      *level = at;
      return 0;
    }
    /* a copy of another entry's bytes, stored once under that entry's name */
    long j = chb_index_find(chain[at].idx, e->data_file, e->data_file_len);
    if (j == -2) return index_failed(chain[at].idx, err);
    if (j < 0) return 1;
    if (chb_index_get(chain[at].idx, (size_t)j, e) != 0) return index_failed(chain[at].idx, err);
  }
  return 1;
}

int chb_stored_plain_stop(const chb_stored_level *chain, size_t n, size_t lo, size_t hi, size_t *stop,
                          chb_error *err) {
  size_t pos;
  for (pos = lo; pos < hi; pos++) {
    long i = chb_index_sorted_at(chain[0].idx, pos);
    chb_index_entry e;
    size_t level;
    if (i < 0 || chb_index_get(chain[0].idx, (size_t)i, &e) != 0) return index_failed(chain[0].idx, err);
    int rc = chb_stored_resolve(chain, n, &e, &level, err);
    if (rc < 0) return -1;
    if (rc > 0) break;
  }
  *stop = pos;
  return 0;
}

int chb_stored_add(chb_job *job, const chb_stored_level *chain, size_t n, size_t lo, size_t hi,
                   size_t strip, const char *dst_dir, size_t *stop, chb_error *err) {
  chb_index *idx = chain[0].idx;
  size_t dir_len = strlen(dst_dir);
  path_buf src = {0}, dst = {0};
  int rc = 0;
  size_t pos;
  for (pos = lo; pos < hi; pos++) {
    long i = chb_index_sorted_at(idx, pos);
    chb_index_entry e;
    if (i < 0 || chb_index_get(idx, (size_t)i, &e) != 0) {
      rc = index_failed(idx, err);
      break;
    }
    if (e.size == 0) continue;   /* nothing to copy: RESTORE creates it empty */
    if (e.name_len <= strip) break;
    /* the destination first: e's strings last until the next get */
    if (reserve(&dst, dir_len + e.name_len - strip + 1, err) != 0) {
      rc = -1;
      break;
    }
    memcpy(dst.p, dst_dir, dir_len);
    memcpy(dst.p + dir_len, e.name + strip, e.name_len - strip);
    dst.p[dir_len + e.name_len - strip] = '\0';
    uint64_t size = e.size;
    chb_u128 checksum = e.checksum;
    size_t level;
    int found = chb_stored_resolve(chain, n, &e, &level, err);   /* e: where the bytes are */
    if (found != 0) {
      rc = found < 0 ? -1 : 0;
      break;
    }
    const char *root = chain[level].root;
    size_t root_len = strlen(root);
    if (reserve(&src, root_len + e.name_len + 2, err) != 0) {
      rc = -1;
      break;
    }
    memcpy(src.p, root, root_len);
    src.p[root_len] = '/';
    memcpy(src.p + root_len + 1, e.name, e.name_len);
    src.p[root_len + 1 + e.name_len] = '\0';
    chb_piece piece = {.path = src.p, .offset = 0, .length = (int64_t)e.size, .root = root};
    if (chb_job_add_pieces(job, &piece, 1, dst.p, (int64_t)size, &checksum, err) < 0) {
      rc = -1;
      break;
    }
  }
  free(src.p);
  free(dst.p);
  *stop = pos;
  return rc;
}
