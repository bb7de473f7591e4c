/* Small file-system helpers the engine needs on worker threads. */
#ifndef CHB_FS_H
#define CHB_FS_H

#include "chb_error.h"

/* Creates every missing parent directory of `path` (mode 0755). */
int chb_fs_mkdir_parents(const char *path, chb_error *err);

#endif
