/*
 * Zip archives: the writer (chb_zip_write.h) and the reader
 * (chb_zip_read.h), for callers that use both (the Lua binding).
 */
#ifndef CHB_ZIP_H
#define CHB_ZIP_H

#include "chb_zip_read.h"
#include "chb_zip_write.h"

#endif
