/*
 * What the two halves of the zip code (chb_zip_read.c, chb_zip_write.c)
 * share, and nobody else needs: libzip errors as chb_error, and copies of
 * strings that may be secrets. Internal to the engine's zip code.
 */
#ifndef CHB_ZIP_COMMON_H
#define CHB_ZIP_COMMON_H

#include "chb_error.h"

#include <zip.h>

/* Fills err from a libzip error: "<what> <path>: <libzip text>"; returns -1. */
int chb_zip_fail(chb_error *err, zip_error_t *ze, const char *what, const char *path);
/* strdup of s (NULL stays NULL); sets *oom when the copy fails. */
char *chb_zip_dup(const char *s, int *oom);
/* Wipes then frees a copied password; accepts NULL. */
void chb_zip_free_secret(char *s);

#endif
