/*
 * chb_catalog: an archive's entries by name, each with a fixed-size record
 * of its reader's (where its data is, its sizes, method, ...), with memory
 * that does not grow with the number of entries (issue 14: a zip or tar of
 * 10^6 files is restored in under 64 MiB).
 *
 * Names (back to back in a heap), records and the name table are paged
 * arrays of one pager (chb_pages.h): at most `budget` bytes of pages in
 * memory, the others in an unlinked temporary file; nothing else grows
 * with the entries. A name twice is refused by chb_catalog_add
 * (an archive that holds two entries of one name is ambiguous).
 *
 * Thread-safe: one lock around each call (a shared archive reader's
 * workers look entries up while another thread reads the catalog).
 */
#ifndef CHB_CATALOG_H
#define CHB_CATALOG_H

#include <stddef.h>
#include <stdint.h>

typedef struct chb_catalog chb_catalog;

/* Pages an archive reader's catalog holds in memory (besides the manifest
 * index's own budget, CHB_INDEX_BUDGET). 4 MiB, not 8: RESTORE looks names
 * up about in the archive's order, so at 1.2 million entries a smaller
 * budget costs no time measurable and takes 4 MiB off the peak. */
#define CHB_CATALOG_BUDGET ((size_t)4 << 20)

/* A catalog of rec_size-byte records (rec_size <= 4096), its temporary
 * file (if it needs one) in $TMPDIR or /tmp. NULL when out of memory. */
chb_catalog *chb_catalog_new(size_t rec_size, size_t budget);
/* Accepts NULL. */
void chb_catalog_free(chb_catalog *c);

/* Adds an entry: its number (from 0, in the order added); -1 when the name
 * is there already (*existing, if not NULL, set to that entry's number);
 * -2 when out of memory or on an I/O failure of the temporary file
 * (chb_catalog_error). */
long chb_catalog_add(chb_catalog *c, const char *name, size_t len, const void *rec, size_t *existing);

/* Room for n entries in all (an archive's directory says how many it
 * has): the name table is sized once. 0, or -2 as chb_catalog_add. */
int chb_catalog_reserve(chb_catalog *c, size_t n);

size_t chb_catalog_count(const chb_catalog *c);

/* The number of the entry named name, or -1; -2 on an I/O failure. */
long chb_catalog_find(chb_catalog *c, const char *name, size_t len);

/* Entry i's record copied into rec (if not NULL) and, if name is not
 * NULL, its name into name[0, cap) NUL-terminated (*len, if not NULL, its
 * full length: a longer name is cut). 0; -1 when i is out of range; -2 on
 * an I/O failure or when out of memory. */
int chb_catalog_get(chb_catalog *c, size_t i, void *rec, char *name, size_t cap, size_t *len);

/* The I/O failure that made a call return -2, or NULL (out of memory). */
const char *chb_catalog_error(chb_catalog *c);

/* Bytes the catalog holds in memory (pages and page tables). */
size_t chb_catalog_memory(chb_catalog *c);

#endif
