/*
 * chb_manifest: `.backup` (ClickHouse's one-line XML manifest) read and
 * written in C, its <file> records straight into and out of a chb_index:
 * no per-file Lua value at any size (issue 14).
 *
 * Reading is streaming (expat, as lua-expat reads it: the same parser, the
 * same errors) and strict: the checks and messages are manifest.lua's, which
 * owns the format; it checks the header fields (a handful of strings) in
 * Lua. A backup is untrusted input: every file entry is checked (a safe
 * relative name, sizes, checksums, flags) before it is added.
 */
#ifndef CHB_MANIFEST_H
#define CHB_MANIFEST_H

#include "chb_index.h"

#include <stddef.h>

typedef struct chb_manifest_read chb_manifest_read;

/* A reader adding the files it reads to idx (which it does not own).
 * NULL when out of memory. */
chb_manifest_read *chb_manifest_read_new(chb_index *idx);
void chb_manifest_read_free(chb_manifest_read *r);

/* Feeds the next n bytes; final: the document ends here (p may be NULL).
 * Returns 0, -1 once the document is found broken (the reader then stops:
 * chb_manifest_read_error says why), or -2 when out of memory. */
int chb_manifest_read_feed(chb_manifest_read *r, const char *p, size_t n, int final);

/* The first structural problem (malformed XML, an unexpected element, a
 * field given twice), or NULL. */
const char *chb_manifest_read_error(const chb_manifest_read *r);

/* The first problem of a file entry (reported after the header's), or
 * NULL. Entries after it are not added. */
const char *chb_manifest_read_file_error(const chb_manifest_read *r);

/* The header fields read (version, uuid, …: the <config> scalars), i from
 * 0: their names and values (NUL-terminated). Returns 0, or -1 past the
 * last. */
int chb_manifest_read_header(const chb_manifest_read *r, size_t i, const char **name, const char **value);

/* Checks each copy (an entry with a data_file) against the entry it names,
 * as manifest.lua says; checksum_names: data_file_name_generator =
 * 'checksum' (a data_file no entry has is a stored name). Returns NULL or
 * the problem (valid until the reader is freed). */
const char *chb_manifest_read_check_copies(chb_manifest_read *r, int checksum_names);

/* A growable byte buffer (what the writer appends to). */
typedef struct chb_manifest_buf {
  char *p;
  size_t len, cap;
} chb_manifest_buf;

/* Appends the <file> records of idx from position *pos (0-based; in name
 * order when name_order, else in the order added) to out until it holds at
 * least `target` bytes or the entries end; *pos moves past them. Returns
 * 0, or -1 when out of memory or an entry cannot be written (a file of
 * size > 0 without a checksum). */
int chb_manifest_write_files(chb_index *idx, int name_order, size_t *pos, chb_manifest_buf *out, size_t target);

#endif
