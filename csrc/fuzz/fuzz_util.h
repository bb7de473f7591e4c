/*
 * Shared by the libFuzzer targets whose engine reader takes a path: the
 * input is written to one in-memory file per process (memfd), rewritten
 * for each run and opened by its /proc/self/fd path.
 */
#ifndef CHB_FUZZ_UTIL_H
#define CHB_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The path of a file holding exactly `data` (aborts if it cannot be written). */
const char *chb_fuzz_file(const uint8_t *data, size_t size);

#endif
