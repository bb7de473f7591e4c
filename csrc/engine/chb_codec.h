/*
 * Compression streams in the formats zip entries use, one interface for
 * every method: store, deflate (raw, zlib), bzip2 (libbz2), lzma (zip
 * method 14: a 4-byte version/size header, 5 property bytes, then a raw
 * LZMA1 stream with end marker: the entry sets general purpose bit 1), xz (a whole .xz stream, method 95) and
 * zstd (one zstd frame, method 93).
 *
 * A codec is a push/pull stream with caller-owned buffers (zstd's
 * ZSTD_inBuffer/outBuffer model): chb_codec_run consumes what it can of
 * `in`, produces what fits in `out`, and says when the stream has ended.
 * Memory is the library's state only (large for lzma/xz at high levels:
 * that is what the level means), never proportional to the data.
 *
 * Codec ids are the zip method numbers, so a zip writer and reader can use
 * them directly. Levels are checked here: one table of names and ranges.
 */
#ifndef CHB_CODEC_H
#define CHB_CODEC_H

#include "chb_error.h"

#include <stddef.h>
#include <stdint.h>

enum {
  CHB_CODEC_STORE = 0,
  CHB_CODEC_DEFLATE = 8,
  CHB_CODEC_BZIP2 = 12,
  CHB_CODEC_LZMA = 14,
  CHB_CODEC_ZSTD = 93,
  CHB_CODEC_XZ = 95
};

typedef struct chb_codec_info {
  const char *name;           /* as ClickHouse spells compression_method */
  int id;                     /* zip method number */
  int min_level, max_level, default_level;
} chb_codec_info;

/* The table of supported methods, in a stable order; *n is set to its size. */
const chb_codec_info *chb_codec_list(size_t *n);
/* NULL if unknown. */
const chb_codec_info *chb_codec_find(const char *name);
const chb_codec_info *chb_codec_by_id(int id);

/*
 * Resolves a method name (NULL: "deflate", the default as in ClickHouse)
 * and a level (has_level 0: the method's default) into an id and a level
 * in range. Unknown names and out-of-range levels are CHB_INVALID with a
 * message that names the valid ones.
 */
int chb_codec_resolve(const char *name, int has_level, int level,
                      const chb_codec_info **info, int *out_level, chb_error *err);

typedef struct chb_codec chb_codec;

/*
 * A compressor for method `id` at `level` (already resolved). `size_hint`
 * (UINT64_MAX: unknown) lets small inputs use small state: lzma/xz shrink
 * their dictionary and bzip2 its block to what the data needs (the output
 * is as good: a dictionary never helps beyond the data), as xz(1) does.
 * With `size_exact`, zstd is also told the size (it then sizes its tables
 * and records the size in the frame); more or fewer bytes fail.
 */
chb_codec *chb_codec_encoder(int id, int level, uint64_t size_hint, int size_exact,
                             chb_error *err);
/*
 * A decompressor for method `id`; `size` is the uncompressed size the
 * archive declares (lzma streams without end marker need it).
 */
chb_codec *chb_codec_decoder(int id, uint64_t size, chb_error *err);

/*
 * One step. Consumes from *in (advancing it and decreasing *in_len),
 * produces into *out (advancing, decreasing *out_len). `finish` says that
 * *in holds the last input bytes. Returns 1 once the stream has ended
 * (encoder: every byte flushed; decoder: end of the compressed stream),
 * 0 if more calls are needed (more input, or more output room), -1 on
 * error (CHB_CORRUPT for bad data, CHB_ENOMEM, CHB_INVALID).
 */
int chb_codec_run(chb_codec *c, const unsigned char **in, size_t *in_len,
                  unsigned char **out, size_t *out_len, int finish, chb_error *err);

/*
 * An encoder made ready for another stream of the same method and level,
 * keeping its memory (deflate, zstd): 0. 1 if this method's encoder cannot
 * be reused (bzip2, lzma, xz: sized for the stream): free it and make a new
 * one. A writer of many small entries avoids allocating (and the heap
 * giving back) a compressor's state per entry.
 */
int chb_codec_reset(chb_codec *c, uint64_t size_hint, int size_exact, chb_error *err);

/* Accepts NULL. */
void chb_codec_free(chb_codec *c);

#endif
