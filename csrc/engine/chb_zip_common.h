/*
 * What the two halves of the zip code (chb_zip_read.c, chb_zip_write.c)
 * share, and nobody else needs: copies of strings that may be secrets.
 * Internal to the engine's zip code.
 */
#ifndef CHB_ZIP_COMMON_H
#define CHB_ZIP_COMMON_H

#include "chb_error.h"

/* strdup of s (NULL stays NULL); sets *oom when the copy fails. */
char *chb_zip_dup(const char *s, int *oom);
/* Wipes then frees a copied password; accepts NULL. */
void chb_zip_free_secret(char *s);

#endif
