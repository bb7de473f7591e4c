/*
 * chb_pages: arrays of fixed-size elements kept in pages of
 * CHB_PAGE_SIZE bytes, of which at most a budget's worth are in memory
 * (issue 14: peak memory that does not grow with the number of files).
 * Until the budget is reached every page is in memory and nothing touches
 * a disk; past it, the least recently used pages (a clock) are written to
 * an unlinked temporary file and read back when used. pread/pwrite, not
 * mmap: mapped file pages would count in the process's RSS.
 *
 * A pointer from chb_parray_at is valid until the next chb_parray_at or
 * chb_parray_reserve on any array of the same pager (that may evict its
 * page): callers copy what they read. Not thread-safe.
 */
#ifndef CHB_PAGES_H
#define CHB_PAGES_H

#include <stddef.h>

#define CHB_PAGE_SIZE 4096

typedef struct chb_pager chb_pager;
typedef struct chb_parray chb_parray;

/* A pager of at most budget bytes of pages in memory (at least a few
 * pages), its temporary file created in dir (NULL: $TMPDIR, or /tmp) on
 * the first page it must write out. NULL when out of memory. */
chb_pager *chb_pager_new(size_t budget, const char *dir);

/* Another owner of pg (several indexes may share one budget): each
 * chb_pager_free drops one; the last frees it (its arrays freed first)
 * and closes its file. */
void chb_pager_ref(chb_pager *pg);
void chb_pager_free(chb_pager *pg);

/* The first I/O failure ("cannot write the index's temporary file in
 * /tmp: No space left on device"), or NULL. Once set, every access that
 * needs the file fails. */
const char *chb_pager_error(const chb_pager *pg);

/* Bytes the pager holds in memory: pages and page tables. */
size_t chb_pager_memory(const chb_pager *pg);

/* Whether any page was ever written to the file. */
int chb_pager_spilled(const chb_pager *pg);

/* An empty array of elem-byte elements (elem <= CHB_PAGE_SIZE); NULL when
 * out of memory. */
chb_parray *chb_parray_new(chb_pager *pg, size_t elem);

/* Frees the array: its pages in memory and in the file are reused. */
void chb_parray_free(chb_parray *a);

/* Makes elements [0, n) addressable; new ones read as zero bytes.
 * 0, or -1 when out of memory. */
int chb_parray_reserve(chb_parray *a, size_t n);

/* Element i (reserved), for reading, or for writing when write is set;
 * NULL on an I/O failure (chb_pager_error) or when out of memory. */
void *chb_parray_at(chb_parray *a, size_t i, int write);

#endif
