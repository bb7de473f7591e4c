#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static int fd = -1;
static char path[64];

const char *chb_fuzz_file(const uint8_t *data, size_t size) {
  if (fd < 0) {
    fd = memfd_create("chb-fuzz", MFD_CLOEXEC);
    if (fd < 0) {
      perror("memfd_create");
      abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  /* the same file each run, rewritten: the reader under test sees only `data` */
  if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
    perror(path);
    abort();
  }
  return path;
}
