/* Reading a list of pieces as one stream of bytes; see chb_source.h. */
#include "chb_source.h"
#include "chb_cipher.h"
#include "chb_fs.h"
#include "chb_s3_store.h"
#include "chb_tar.h"
#include "chb_zip_read.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Draining or skipping a zip entry with a caller's buffer smaller than
 * this uses one of this size on the stack (a 1-byte read must not mean a
 * syscall per byte). */
#define SCRATCH 16384

struct chb_source {
  chb_piece *pieces;
  size_t n, i;                /* pieces[i] is the current one */
  int borrowed;               /* pieces are the caller's, not a copy */
  const atomic_int *stop;
  chb_fs_dir_cache *dirs;     /* set: plain files opened through it */
  int advised;                /* the current file was told it is read sequentially */
  int open;                   /* pieces[i] is open: one of the three below */
  int fd;                     /* a plain file */
  chb_zip_file *zf;           /* a zip entry */
  chb_tar_file *tf;           /* a tar entry */
  chb_opener *op;             /* a file of an encrypted directory backup */
  int s3;                     /* an S3 object: read from s3_pos, s3_left bytes left */
  uint64_t s3_pos, s3_left;
  uint64_t left;              /* of the piece's range, when it has a length */
};

/* ---- pieces -------------------------------------------------------------- */

int chb_pieces_check(const chb_piece *pieces, size_t n, chb_error *err) {
  for (size_t i = 0; i < n; i++) {
    const chb_piece *p = &pieces[i];
    if (p->key && (!p->aad || p->entry))
      return chb_error_set(err, CHB_INVALID, "an encrypted piece needs its name (aad) and no zip entry");
    if (p->s3 && ((p->entry && !chb_tar_filter(p->path)) || p->key || p->root))
      return chb_error_set(err, CHB_INVALID, "an S3 piece (%s) has no zip entry, key or root", p->path);
    size_t r = p->root ? strlen(p->root) : 0;
    if (p->root && (p->entry || strncmp(p->path, p->root, r) != 0 || p->path[r] != '/'))
      return chb_error_set(err, CHB_INVALID, "piece %s is not a file below its root %s", p->path, p->root);
  }
  return 0;
}

static void wipe_free(void *p, size_t n) {
  if (!p) return;
  OPENSSL_cleanse(p, n);
  free(p);
}

void chb_pieces_free(chb_piece *pieces, size_t n) {
  if (!pieces) return;
  for (size_t i = 0; i < n; i++) {
    chb_piece *p = &pieces[i];
    free((char *)p->path);
    free((char *)p->entry);
    if (p->password) wipe_free((char *)p->password, strlen(p->password));
    wipe_free((unsigned char *)p->key, CHB_CIPHER_KEY_LEN);
    free((char *)p->aad);
    free((char *)p->root);
  }
  free(pieces);
}

static const char *dup_opt(const char *s, int *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = 1;
  return d;
}

chb_piece *chb_pieces_copy(const chb_piece *pieces, size_t n, chb_error *err) {
  chb_piece *c = calloc(n ? n : 1, sizeof *c);
  int oom = c == NULL;
  for (size_t i = 0; !oom && i < n; i++) {
    const chb_piece *p = &pieces[i];
    c[i].offset = p->offset;
    c[i].length = p->length;
    c[i].s3 = p->s3;
    c[i].path = dup_opt(p->path, &oom);
    c[i].entry = dup_opt(p->entry, &oom);
    c[i].password = dup_opt(p->password, &oom);
    c[i].aad = dup_opt(p->aad, &oom);
    c[i].root = dup_opt(p->root, &oom);
    if (!oom && p->key) {
      unsigned char *k = malloc(CHB_CIPHER_KEY_LEN);
      if (k) memcpy(k, p->key, CHB_CIPHER_KEY_LEN);
      c[i].key = k;
      oom = k == NULL;
    }
  }
  if (oom) {
    chb_pieces_free(c, n);
    chb_error_set(err, CHB_ENOMEM, "cannot copy entry paths");
    return NULL;
  }
  return c;
}

/* ---- one piece: open, read, end ------------------------------------------ */

/* The current piece in messages: "<entry> of <archive>" or its path. */
static const char *describe(const chb_piece *p, char *buf, size_t n) {
  if (!p->entry) return p->path;
  snprintf(buf, n, "%s of %s", p->entry, p->path);
  return buf;
}

static int check_stop(const chb_source *s, chb_error *err) {
  if (!s->stop || !atomic_load(s->stop)) return 0;
  char what[1024];
  return chb_error_set(err, CHB_CANCELLED, "cancelled while copying %s",
                       describe(&s->pieces[s->i], what, sizeof what));
}

/* Reads the open archive entry (zip or tar). */
static ssize_t entry_read(chb_source *s, void *buf, size_t len, chb_error *err) {
  return s->tf ? chb_tar_file_read(s->tf, buf, len, err) : chb_zip_file_read(s->zf, buf, len, err);
}

/* Reads an archive entry on, into buf (or a scratch buffer when buf is small):
 * `skip` bytes (UINT64_MAX: to its end). Returns the bytes not found. */
static int zip_discard(chb_source *s, uint64_t skip, unsigned char *buf, size_t len,
                       uint64_t *missing, chb_error *err) {
  unsigned char scratch[SCRATCH];
  if (len < SCRATCH) {
    buf = scratch;
    len = SCRATCH;
  }
  while (skip > 0) {
    if (check_stop(s, err) != 0) return -1;
    ssize_t k = entry_read(s, buf, skip < len ? (size_t)skip : len, err);
    if (k < 0) return -1;
    if (k == 0) break;
    if (skip != UINT64_MAX) skip -= (uint64_t)k;
  }
  *missing = skip == UINT64_MAX ? 0 : skip;
  return 0;
}

static int shorter(const chb_piece *p, uint64_t missing, chb_error *err) {
  if (p->entry)
    return chb_error_set(err, CHB_CORRUPT, "entry %s of %s is shorter than expected (%llu bytes missing)",
                         p->entry, p->path, (unsigned long long)missing);
  return chb_error_set(err, CHB_CORRUPT, "%s is shorter than expected (%llu bytes missing)", p->path,
                       (unsigned long long)missing);
}

/* Opens the current piece and positions it at its offset. */
static int piece_open(chb_source *s, unsigned char *buf, size_t len, chb_error *err) {
  const chb_piece *p = &s->pieces[s->i];
  s->left = p->length < 0 ? 0 : (uint64_t)p->length;
  size_t root_len = p->root ? strlen(p->root) : 0;
  if (p->s3 && !p->entry) {
    s->s3 = 1;
    s->open = 1;
    s->s3_pos = p->offset;
    s->s3_left = s->left;
    if (p->length < 0) {   /* to the end: how far that is */
      uint64_t size;
      if (chb_s3_piece_size(p->s3, p->path, &size, err) != 0) return -1;
      s->s3_left = size > p->offset ? size - p->offset : 0;
    }
    return 0;
  }
  if (p->entry && chb_tar_filter(p->path)) {
    if (!(s->tf = chb_tar_open_cached(p->path, p->s3, p->entry, err))) return -1;
  } else if (p->entry) {
    if (!(s->zf = chb_zip_open_cached(p->path, p->password, p->entry, err))) return -1;
  }
  if (p->entry) {
    s->open = 1;
    uint64_t missing;
    if (zip_discard(s, p->offset, buf, len, &missing, err) != 0) return -1;
    if (missing) return shorter(p, missing + s->left, err);
  } else if (p->key) {
    if (!(s->op = chb_opener_open(p->path, root_len, p->key, p->aad, err))) return -1;
    s->open = 1;
    if (chb_opener_seek(s->op, p->offset, err) != 0) return -1;
  } else {
    if ((s->fd = chb_fs_open_beneath_cached(p->path, root_len, s->dirs, err)) < 0) return -1;
    s->open = 1;
    s->advised = 0;
    if (p->offset && lseek(s->fd, (off_t)p->offset, SEEK_SET) < 0)
      return chb_error_errno(err, errno, "cannot seek in", p->path);
  }
  return 0;
}

static ssize_t piece_read(chb_source *s, void *buf, size_t len, chb_error *err) {
  if (s->zf || s->tf) return entry_read(s, buf, len, err);
  if (s->op) return chb_opener_read(s->op, buf, len, err);
  if (s->s3) {
    if (s->s3_left == 0) return 0;
    if (len > s->s3_left) len = (size_t)s->s3_left;
    ssize_t n = chb_s3_piece_read(s->pieces[s->i].s3, s->pieces[s->i].path, s->s3_pos, buf, len, err);
    if (n >= 0) {   /* a short answer: the object ends there */
      s->s3_pos += (uint64_t)n;
      s->s3_left = (size_t)n < len ? 0 : s->s3_left - (uint64_t)n;
    }
    return n;
  }
  for (;;) {
    ssize_t n = read(s->fd, buf, len);
    if (n >= 0) return n;
    if (errno != EINTR) return chb_error_errno(err, errno, "cannot read", s->pieces[s->i].path);
  }
}

static void piece_close(chb_source *s) {
  if (s->fd >= 0) close(s->fd);
  s->fd = -1;
  chb_zip_file_close(s->zf);
  s->zf = NULL;
  chb_tar_file_close(s->tf);
  s->tf = NULL;
  chb_opener_close(s->op);
  s->op = NULL;
  s->s3 = 0;
  s->open = 0;
}

/* ---- the source ------------------------------------------------------------ */

static chb_source *source_new(const chb_piece *pieces, size_t n, int borrow, chb_error *err) {
  chb_source *s = calloc(1, sizeof *s);
  if (!s) {
    chb_error_set(err, CHB_ENOMEM, "cannot allocate a source");
    return NULL;
  }
  s->fd = -1;
  s->n = n;
  s->borrowed = borrow;
  s->pieces = borrow ? (chb_piece *)pieces : chb_pieces_copy(pieces, n, err);
  if (!s->pieces) {
    free(s);
    return NULL;
  }
  return s;
}

chb_source *chb_source_open(const chb_piece *pieces, size_t n, chb_error *err) {
  return source_new(pieces, n, 0, err);
}

chb_source *chb_source_open_borrowed(const chb_piece *pieces, size_t n, chb_error *err) {
  return source_new(pieces, n, 1, err);
}

void chb_source_set_cancel(chb_source *s, const atomic_int *stop) { s->stop = stop; }

void chb_source_set_dir_cache(chb_source *s, chb_fs_dir_cache *dirs) { s->dirs = dirs; }

ssize_t chb_source_read(chb_source *s, void *buf, size_t len, chb_error *err) {
  while (s->i < s->n) {
    const chb_piece *p = &s->pieces[s->i];
    if (!s->open && piece_open(s, buf, len, err) != 0) return -1;
    int bounded = p->length >= 0;
    if (bounded && s->left == 0) {
      /* The range is read: a zip entry is still read to its end, so that
       * its CRC or MAC is checked. */
      uint64_t rest;
      if ((s->zf || s->tf) && zip_discard(s, UINT64_MAX, buf, len, &rest, err) != 0) return -1;
      piece_close(s);
      s->i++;
      continue;
    }
    if (check_stop(s, err) != 0) return -1;
    size_t want = bounded && s->left < len ? (size_t)s->left : len;
    ssize_t n = piece_read(s, buf, want, err);
    if (n < 0) return -1;
    if (n > 0) {
      if (bounded) s->left -= (uint64_t)n;
      /* Read-ahead advice only for a file with more to read after a first
       * read: a small file is read whole already, and the advice would be
       * one more syscall for each of many small files. */
      if (s->fd >= 0 && !s->advised && (bounded ? s->left > 0 : (size_t)n == want)) {
        posix_fadvise(s->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        s->advised = 1;
      }
      return n;
    }
    if (bounded) return shorter(p, s->left, err);
    piece_close(s);
    s->i++;
  }
  return 0;
}

/* The plain size of a whole piece's file or entry. */
static int whole_size(const chb_piece *p, uint64_t *out, chb_error *err) {
  if (p->entry && chb_tar_filter(p->path)) return chb_tar_entry_size_cached(p->path, p->s3, p->entry, out, err);
  if (p->entry) return chb_zip_entry_size_cached(p->path, p->password, p->entry, out, err);
  if (p->s3) return chb_s3_piece_size(p->s3, p->path, out, err);
  struct stat sb;
  if (stat(p->path, &sb) != 0) return chb_error_errno(err, errno, "cannot stat", p->path);
  *out = (uint64_t)sb.st_size;
  if (p->key && chb_cipher_plain_size(*out, out) != 0)
    return chb_error_set(err, CHB_CORRUPT, "%s is not an encrypted file (its size is %llu bytes)",
                         p->path, (unsigned long long)sb.st_size);
  return 0;
}

int chb_source_size(chb_source *s, uint64_t *size, chb_error *err) {
  uint64_t total = 0;
  for (size_t i = 0; i < s->n; i++) {
    const chb_piece *p = &s->pieces[i];
    uint64_t whole;
    if (p->length >= 0) {
      total += (uint64_t)p->length;
      continue;
    }
    if (whole_size(p, &whole, err) != 0) return -1;
    total += whole > p->offset ? whole - p->offset : 0;
  }
  *size = total;
  return 0;
}

void chb_source_close(chb_source *s) {
  if (!s) return;
  piece_close(s);
  if (!s->borrowed) chb_pieces_free(s->pieces, s->n);
  free(s);
}
