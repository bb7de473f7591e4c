/*
 * chb_index: the files of a backup manifest in one compact structure
 * (issue 14): a record of 40 bytes a file, its name two interned strings
 * (directory, file name), instead of a Lua table and its strings per file. Looked up by name (a
 * hash), by content (size and checksum: the first file of that content, in
 * the order added) and by name prefix (a name-sorted order, built once).
 * Entries are numbered from 0 in the order added. Not thread-safe.
 *
 * Memory is bounded (issue 14, 10^6 files): what grows with the number of
 * files is held in pages (chb_pages.h), at most the index's budget of
 * them in memory, the others in an unlinked temporary file. An index
 * smaller than its budget never touches a disk. Any call may then fail on
 * I/O (a full disk): it returns -2 as when out of memory, and
 * chb_index_error says which.
 */
#ifndef CHB_INDEX_H
#define CHB_INDEX_H

#include "chb_hash.h"

#include <stddef.h>
#include <stdint.h>

typedef struct chb_index chb_index;

/* Tri-state flags: absent, false, true (as `.backup` may say either). */
enum { CHB_ABSENT = -1 };

typedef struct chb_index_entry {
  const char *name;          /* not NUL-terminated in results: use name_len */
  size_t name_len;
  uint64_t size;
  int has_checksum;
  chb_u128 checksum;
  int use_base;              /* CHB_ABSENT, 0 or 1 */
  int encrypted_by_disk;     /* CHB_ABSENT, 0 or 1 */
  int has_base_size;
  uint64_t base_size;
  int has_base_checksum;
  chb_u128 base_checksum;
  const char *data_file;     /* NULL: none */
  size_t data_file_len;
  int no_content;            /* not found by chb_index_find_content */
} chb_index_entry;

/* Pages of an index held in memory by default: 16 MiB (the Lua binding
 * shares one such budget among a process's indexes: an incremental holds
 * two, the new backup's and its base's). */
#define CHB_INDEX_BUDGET ((size_t)16 << 20)

/* An index of the default budget, its file in $TMPDIR (or /tmp). */
chb_index *chb_index_new(void);

/* An index holding at most about budget bytes of pages in memory, its
 * temporary file (if it needs one) in tmpdir (NULL: $TMPDIR, or /tmp). */
chb_index *chb_index_new_budget(size_t budget, const char *tmpdir);

/* An index whose pages share pg's budget and file with the other indexes
 * of pg (a process's: the new backup's and its bases'); it holds a
 * reference to pg (chb_pager_ref). */
struct chb_pager;
chb_index *chb_index_new_in(struct chb_pager *pg);
void chb_index_free(chb_index *idx);

/* The I/O failure of the index's temporary file that made a call return
 * -2, or NULL (then it was out of memory). */
const char *chb_index_error(const chb_index *idx);

/* Whether the index ever wrote pages to its temporary file. */
int chb_index_spilled(const chb_index *idx);

/* Adds an entry (its strings are copied). Returns its number, or -1 when
 * the name is there already (*existing set to that entry's number), or -2
 * when out of memory (or past 4 GiB of names / 2^31 entries). */
long chb_index_add(chb_index *idx, const chb_index_entry *e, size_t *existing);

/* Adds entry i of base (another index: a base backup's) as the same file
 * of a part unchanged since that backup: its name, size and checksum,
 * use_base (an empty file has neither: no bytes to take from anywhere),
 * not found by content (its bytes are not stored here). Returns as
 * chb_index_add; -2 also when i is out of range or the entry has size > 0
 * and no checksum. */
long chb_index_add_from_base(chb_index *idx, chb_index *base, size_t i, size_t *existing);

size_t chb_index_count(const chb_index *idx);

/* Entry i (0-based) into *out; its strings point into the index, valid
 * until the next get, add or free of it (a name is put together in a
 * buffer of the index). Returns 0, -1 if i is out of range, or -2 when out
 * of memory. */
int chb_index_get(chb_index *idx, size_t i, chb_index_entry *out);

/* The number of the entry named name, or -1; -2 on an I/O failure. */
long chb_index_find(chb_index *idx, const char *name, size_t len);

/* The first entry (in the order added) of size > 0 with this size and
 * checksum, added without no_content, or -1; -2 when out of memory (its
 * table is built on first use, then kept up to date by adds). */
long chb_index_find_content(chb_index *idx, uint64_t size, chb_u128 checksum);

/* Entries whose names start with prefix, in name order: positions
 * [*lo, *hi) of the name-sorted order (chb_index_sorted_at). Returns 0, or
 * -2 when out of memory (the order is built on first use). */
int chb_index_prefix(chb_index *idx, const char *prefix, size_t len, size_t *lo, size_t *hi);

/* The number of the entry at position pos of the name-sorted order
 * (after chb_index_prefix built it), or -1; -2 on an I/O failure. */
long chb_index_sorted_at(chb_index *idx, size_t pos);

/* Bytes the index holds in memory: its pager's pages and page tables (shared
 * with the other indexes of that pager), its scratch buffers. */
size_t chb_index_memory(const chb_index *idx);

#endif
