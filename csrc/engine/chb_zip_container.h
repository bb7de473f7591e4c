/*
 * The zip container, written as a stream to a seekable local file: for
 * each entry in turn a local file header, its data (already compressed
 * and encrypted by the caller), then its central directory record,
 * appended to a spill buffer (an unlinked temporary file beside the
 * archive once it outgrows 64 KiB); finish copies the central directory
 * to the archive and writes the end records. Memory: two buffers, never
 * anything per entry, whatever the number of entries.
 *
 * The layout is the one libzip wrote for chbackup (the writer's container
 * until issue 14), field by field:
 *   - version made by 0x033f (Unix, 6.3); needed 10, 20 deflate, 46
 *     bzip2, 63 lzma, 51 AES, and at least 45 where zip64 is needed;
 *   - general purpose bits: 0x0001 encrypted, 0x0800 for a name that is
 *     UTF-8 and not ASCII, bit 1 as the caller says (LZMA end marker);
 *   - DOS time of the writer's mtime (local time); external attributes
 *     0100666 << 16;
 *   - no data descriptors: sizes are known before the data and the CRC,
 *     if it changed (a stored entry checksummed while copied), is patched
 *     into the local header afterwards;
 *   - extra fields: WinZip AES 0x9901 (AE-2, "AE", strength, the real
 *     method; the header's method is 99) first, then zip64 0x0001: in a
 *     local header both sizes when either is >= 0xffffffff, in a central
 *     record each of size, compressed size, offset that is;
 *   - the zip64 end record and its locator when there are 65535 entries
 *     or more or the central directory's offset or size needs 64 bits
 *     (libzip counted from 65536: an archive of exactly 65535 entries now
 *     gets them too, as the format requires).
 *
 * One thread uses a writer. Errors name the archive (and the entry).
 */
#ifndef CHB_ZIP_CONTAINER_H
#define CHB_ZIP_CONTAINER_H

#include "chb_error.h"

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct chb_zipc chb_zipc;

typedef struct chb_zipc_entry {
  const char *name;
  uint16_t method;        /* the data's method: 0 store, 8 deflate, 12 bzip2, ... */
  uint16_t flags;         /* general purpose bits to add (bit 1: LZMA end marker) */
  int aes;                /* 1..3: WinZip AES (AE-2) of that strength; 0: none */
  uint32_t crc;           /* as known before the data; final at entry_end */
  uint64_t size;          /* uncompressed */
  uint64_t comp_size;     /* bytes of data, with an AES salt, verifier and MAC */
} chb_zipc_entry;

/*
 * A writer to `fd` (opened read-write, empty), which it neither closes
 * nor syncs; `path` names it in errors; entries get `mtime` as their DOS
 * time; `bufsize` is the output buffer.
 */
chb_zipc *chb_zipc_new(int fd, const char *path, time_t mtime, size_t bufsize, chb_error *err);
/* The local header of the next entry. */
int chb_zipc_entry_begin(chb_zipc *z, const chb_zipc_entry *e, chb_error *err);
/* Its data, in pieces. */
int chb_zipc_write(chb_zipc *z, const void *p, size_t n, chb_error *err);
/*
 * Ends the entry: exactly comp_size bytes must have been written (else
 * CHB_EIO naming it); e->crc is final. Appends its central record.
 */
int chb_zipc_entry_end(chb_zipc *z, const chb_zipc_entry *e, chb_error *err);
/* The central directory and end records; everything written (not fsynced). */
int chb_zipc_finish(chb_zipc *z, chb_error *err);
/* Entries ended so far, and the bytes of the archive so far. */
uint64_t chb_zipc_count(const chb_zipc *z);
uint64_t chb_zipc_offset(const chb_zipc *z);
/* Accepts NULL. */
void chb_zipc_free(chb_zipc *z);

#endif
