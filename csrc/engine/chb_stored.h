/*
 * A backup's files whose bytes its chain stores plainly, added to a job
 * straight from the manifests' indexes (issue 14): RESTORE copies a part's
 * files without a Lua value per file (an entry table, its pieces, a batch
 * row: about 700 Lua VM instructions a file, measured on 600,000 files).
 *
 * Only the plain case is taken: an entry whose bytes one backup of the
 * chain stores whole, in the clear, under a name it lists: its own, another
 * entry's (data_file: ClickHouse stores equal files once), or, for an entry
 * of an incremental that uses its base (use_base), the base's entry of that
 * size and checksum, resolved the same way there. They are read confined
 * below that backup's directory, as chain.pieces' pieces are. Any other
 * entry (a head in the base and a tail here, encrypted, under a name no
 * entry has, in a backup that is no plain directory) stops the walk and is
 * left to the caller, which resolves it through the chain (and names what
 * is wrong with it).
 */
#ifndef CHB_STORED_H
#define CHB_STORED_H

#include "chb_error.h"
#include "chb_index.h"
#include "chb_job.h"

#include <stddef.h>

/* One backup of a chain: its index and, for a directory backup whose files
 * are stored in the clear, its directory (NULL: none, no file read there). */
typedef struct chb_stored_level {
  chb_index *idx;
  const char *root;
} chb_stored_level;

/*
 * Where entry *e of chain[0] has its bytes, plainly (see above): *e becomes
 * the entry holding them, of backup chain[*level] (n backups, chain[0] the
 * one restored, each next one the base of the one before). An empty entry
 * is its own source. Returns 0, 1 when *e is not the plain case (*e then
 * means nothing), or -1 with err set (index I/O).
 */
int chb_stored_resolve(const chb_stored_level *chain, size_t n, chb_index_entry *e, size_t *level,
                       chb_error *err);

/*
 * The first of chain[0]'s sorted positions [lo, hi) whose entry is not the
 * plain case, into *stop (hi: none). RESTORE's plan checks through it that
 * a part's files resolve before anything is written. Returns 0, or -1 with
 * err set (index I/O).
 */
int chb_stored_plain_stop(const chb_stored_level *chain, size_t n, size_t lo, size_t hi, size_t *stop,
                          chb_error *err);

/*
 * Adds to job, in name order, the entries of chain[0] at sorted positions
 * [lo, hi) (chb_index_sorted_at) with size > 0 (an empty file has no bytes
 * to copy): source <root>/<name> of the entry and backup chb_stored_resolve
 * gives, destination `dst_dir` followed by the entry's name without its
 * first `strip` bytes (a part's directory in the backup), the entry's size
 * and checksum expected. Stops at the first entry that is not the plain
 * case, or whose name is not longer than strip: *stop is its position
 * (nothing after it added); *stop = hi when every entry was taken. Returns
 * 0, or -1 with err set (an index I/O failure, a job that refuses the
 * entry, out of memory).
 */
int chb_stored_add(chb_job *job, const chb_stored_level *chain, size_t n, size_t lo, size_t hi,
                   size_t strip, const char *dst_dir, size_t *stop, chb_error *err);

#endif
