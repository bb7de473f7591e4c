/*
 * A backup's files that it stores itself, added to a job straight from its
 * manifest's index (issue 14): RESTORE copies a part's files without a Lua
 * value per file (an entry table, its pieces, a batch row: about 700 Lua VM
 * instructions a file, measured on 600,000 files).
 *
 * Only the plain case is taken: an entry whose bytes this directory backup
 * stores, in the clear, under its own name or, deduplicated, under the name
 * of another entry it lists (data_file: ClickHouse stores equal files once),
 * read confined below the backup's directory as chain.pieces' pieces are.
 * Any other entry (in a base, partly in a base, under a name no entry has,
 * empty) stops the walk and is left to the caller, which resolves it
 * through the chain.
 */
#ifndef CHB_STORED_H
#define CHB_STORED_H

#include "chb_error.h"
#include "chb_index.h"
#include "chb_job.h"

#include <stddef.h>

/*
 * The entry holding entry i's bytes, plainly (see above), into *e: entry i
 * itself (also when empty: no bytes to find) or the entry its data_file
 * names. Returns 0, 1 when i is not the plain case (*e then means
 * nothing), or -1 with err set (index I/O).
 */
int chb_stored_source(chb_index *idx, size_t i, chb_index_entry *e, chb_error *err);

/*
 * The first of the sorted positions [lo, hi) whose entry is not the plain
 * case, into *stop (hi: none). RESTORE's plan checks through it that a
 * part's files resolve before anything is written. Returns 0, or -1 with
 * err set (index I/O).
 */
int chb_stored_plain_stop(chb_index *idx, size_t lo, size_t hi, size_t *stop, chb_error *err);

/*
 * Adds to job, in name order, the entries of idx at sorted positions
 * [lo, hi) (chb_index_sorted_at) with size > 0 (an empty file has no bytes
 * to copy): source `root`/<name>, destination `dst_dir` followed by the name
 * without its first `strip` bytes (a part's directory in the backup), the
 * entry's size and checksum expected, read from where chb_stored_source
 * says. Stops at the first entry that is not the plain case, or whose name
 * is not longer than strip:
 * *stop is its position (nothing after it added); *stop = hi when every
 * entry was taken. Returns 0, or -1 with err set (an index I/O failure, a
 * job that refuses the entry, out of memory).
 */
int chb_stored_add(chb_job *job, chb_index *idx, size_t lo, size_t hi, size_t strip,
                   const char *dst_dir, const char *root, size_t *stop, chb_error *err);

#endif
