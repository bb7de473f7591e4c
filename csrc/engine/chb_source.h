/*
 * Where bytes are read from: a source, opened from a list of pieces read in
 * order, each layered from what it names (libzip's zip_source_layered, in
 * small):
 *
 *   file     `path`, opened confined below `root` when that is set
 *            (chb_fs_open_beneath: no symbolic link below it is followed);
 *   entry    with `entry` set, `path` is a zip archive and the bytes are
 *            that entry's, decrypted with `password` and decompressed
 *            (chb_zip_read.h, through the thread's cache of open readers),
 *            or, when `path` has a tar suffix, that tar entry's (chb_tar.h,
 *            through the thread's cursor on the archive);
 *   decrypt  with `key` set, `path` is a file of an encrypted directory
 *            backup named `aad` there, authenticated chunk by chunk
 *            (chb_cipher.h); offset and length count plaintext;
 *   s3       with `s3` set (a profile id, chb_s3_store.h), `path` is an
 *            object key read by ranged GETs of at most the caller's buffer
 *            through the thread's client of that profile;
 *   range    `length` bytes (< 0: to the end) from `offset`.
 *
 * A zip entry is always read to its end, even when its range stops short,
 * so that its CRC or MAC is checked. A piece that ends before its range
 * does fails with CHB_CORRUPT "... is shorter than expected". Every error
 * names the file (and the entry).
 *
 * The job and the zip writer read only through this; a source reads
 * straight into the caller's buffer (no copy of its own).
 */
#ifndef CHB_SOURCE_H
#define CHB_SOURCE_H

#include "chb_error.h"
#include "chb_fs.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * One piece of a source: `length` bytes (< 0: to the end of the file) of
 * `path` from `offset`. An entry made of several pieces restores a file
 * whose bytes live in several backups of an incremental chain.
 * With `entry` set, `path` is a zip archive and the bytes are those of that
 * entry, decrypted with `password` (may be NULL) and decompressed while
 * streaming (chb_zip_read.h); zero-initialise both for a plain file.
 * With `key` set (CHB_CIPHER_KEY_LEN bytes, copied), `path` is a file of an
 * encrypted directory backup named `aad` there: offset and length count
 * plaintext bytes, each chunk is authenticated as it is read (chb_cipher.h).
 */
typedef struct chb_piece {
  const char *path;
  uint64_t offset;
  int64_t length;
  const char *entry;          /* NULL: a plain file */
  const char *password;       /* NULL: none */
  const unsigned char *key;   /* NULL: not encrypted */
  const char *aad;            /* with key: the file's name in its backup */
  const char *root;           /* set: `path` is below this directory and is
                                 opened confined there (chb_fs_open_beneath):
                                 no symbolic link below it is followed */
  int s3;                     /* > 0: `path` is an object key read through
                                 S3 profile s3 (chb_s3_store.h) */
} chb_piece;

/* Can these pieces be read (an encrypted piece has its name and no entry;
 * a piece with a root lies below it; an S3 piece is neither)? 0, or -1 with err set (CHB_INVALID). */
int chb_pieces_check(const chb_piece *pieces, size_t n, chb_error *err);
/* A deep copy (strings, keys), or NULL with err set. */
chb_piece *chb_pieces_copy(const chb_piece *pieces, size_t n, chb_error *err);
/* Frees a copy, wiping passwords and keys; accepts NULL. */
void chb_pieces_free(chb_piece *pieces, size_t n);

typedef struct chb_source chb_source;

/* Opens nothing yet (each piece is opened when reached); the pieces are
 * copied. NULL with err set if out of memory. */
chb_source *chb_source_open(const chb_piece *pieces, size_t n, chb_error *err);
/* The same without the copy: the pieces (and their strings) must outlive
 * the source. How a job reads the pieces it holds already. */
chb_source *chb_source_open_borrowed(const chb_piece *pieces, size_t n, chb_error *err);
/* Plain files below a root are opened through `dirs` (chb_fs.h): the
 * caller's, cleared by it when done with the directory; NULL: none. */
void chb_source_set_dir_cache(chb_source *s, chb_fs_dir_cache *dirs);
/*
 * With a stop flag set, every read checks it first and fails with
 * CHB_CANCELLED "cancelled while copying <piece>" once it is set.
 */
void chb_source_set_cancel(chb_source *s, const atomic_int *stop);
/* Reads up to len (> 0) bytes into buf: > 0 bytes, 0 at the end of the
 * last piece, -1 with err set. */
ssize_t chb_source_read(chb_source *s, void *buf, size_t len, chb_error *err);
/* The bytes the source will give, from sizes on disk and in zip
 * directories (nothing is read). 0, or -1 with err set. */
int chb_source_size(chb_source *s, uint64_t *size, chb_error *err);
/* Accepts NULL. */
void chb_source_close(chb_source *s);

#endif
