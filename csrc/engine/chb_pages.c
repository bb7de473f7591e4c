/*
 * chb_pages: see chb_pages.h. Each array has a page table (a frame in
 * memory and/or a page of the file, per page); the pager owns the frames
 * (at most max_frames, allocated as needed) and the file. A page never
 * written anywhere reads as zeros without I/O, so a new hash table costs
 * nothing until used.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* O_TMPFILE */
#endif
#include "chb_pages.h"
#include "chb_fs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MIN_FRAMES = 2 };   /* (any count works: callers copy what they read) */

typedef struct pte {
  int32_t frame;    /* -1: not in memory */
  uint32_t fpage;   /* its page of the file + 1; 0: none (never written out) */
} pte;

struct chb_parray {
  chb_pager *pg;
  size_t elem, per_page;
  pte *pt;
  size_t npages, pt_cap;
};

typedef struct frame {
  chb_parray *owner;   /* NULL: free */
  size_t page;
  uint8_t dirty, ref;
} frame;

struct chb_pager {
  frame *frames;
  char **mem;               /* each frame's CHB_PAGE_SIZE bytes */
  size_t nframes, max_frames, hand;
  int32_t *free_frames;     /* frames of freed arrays */
  size_t nfree_frames;
  int fd;                   /* -1 until a page is written out */
  char *dir;
  uint32_t file_pages;
  uint32_t *free_fpages;    /* pages of the file of freed arrays */
  size_t nfree_fpages, free_fpages_cap;
  int spilled;
  int refs;
  char err[256];
};

chb_pager *chb_pager_new(size_t budget, const char *dir) {
  chb_pager *pg = calloc(1, sizeof *pg);
  if (!pg) return NULL;
  pg->fd = -1;
  pg->refs = 1;
  pg->max_frames = budget / CHB_PAGE_SIZE;
  if (pg->max_frames < MIN_FRAMES) pg->max_frames = MIN_FRAMES;
  if (pg->max_frames > INT32_MAX) pg->max_frames = INT32_MAX;
  pg->frames = calloc(pg->max_frames, sizeof *pg->frames);
  pg->mem = calloc(pg->max_frames, sizeof *pg->mem);
  pg->free_frames = malloc(pg->max_frames * sizeof *pg->free_frames);
  pg->dir = dir ? strdup(dir) : NULL;
  if (!pg->frames || !pg->mem || !pg->free_frames || (dir && !pg->dir)) {
    chb_pager_free(pg);
    return NULL;
  }
  return pg;
}

void chb_pager_ref(chb_pager *pg) { pg->refs++; }

void chb_pager_free(chb_pager *pg) {
  if (!pg || --pg->refs > 0) return;
  if (pg->mem)
    for (size_t i = 0; i < pg->nframes; i++) free(pg->mem[i]);
  free(pg->mem);
  free(pg->frames);
  free(pg->free_frames);
  free(pg->free_fpages);
  free(pg->dir);
  if (pg->fd >= 0) close(pg->fd);
  free(pg);
}

const char *chb_pager_error(const chb_pager *pg) { return pg->err[0] ? pg->err : NULL; }

int chb_pager_spilled(const chb_pager *pg) { return pg->spilled; }

size_t chb_pager_memory(const chb_pager *pg) {
  return sizeof *pg + (pg->nframes - pg->nfree_frames) * (size_t)CHB_PAGE_SIZE +
         pg->max_frames * (sizeof(frame) + sizeof(char *) + sizeof(int32_t)) + pg->free_fpages_cap * sizeof(uint32_t);
}

static void fail(chb_pager *pg, const char *what, int e) {
  if (pg->err[0]) return;   /* the first one says what went wrong */
  snprintf(pg->err, sizeof pg->err, "cannot %s the index's temporary file in %s: %s", what,
           pg->dir ? pg->dir : chb_fs_tmpdir(), strerror(e));
}

/* The file, created unlinked on first use: nothing is left behind, even
 * by a killed run. */
static int open_file(chb_pager *pg) {
  if (pg->fd >= 0) return 0;
  if (pg->err[0]) return -1;
  pg->fd = chb_fs_tmpfile(pg->dir ? pg->dir : chb_fs_tmpdir(), "chbackup-index-");
  if (pg->fd < 0) {
    fail(pg, "create", errno);
    return -1;
  }
  return 0;
}

static int write_page(chb_pager *pg, pte *e, const char *p) {
  if (open_file(pg) != 0) return -1;
  if (!e->fpage) {
    if (pg->nfree_fpages) {
      e->fpage = pg->free_fpages[--pg->nfree_fpages];
    } else {
      if (pg->file_pages >= UINT32_MAX - 1) {
        fail(pg, "grow", EFBIG);
        return -1;
      }
      e->fpage = ++pg->file_pages;
    }
  }
  off_t at = (off_t)(e->fpage - 1) * CHB_PAGE_SIZE;
  if (chb_fs_pwrite_all(pg->fd, p, CHB_PAGE_SIZE, (uint64_t)at) != 0) {
    fail(pg, "write", errno);
    return -1;
  }
  pg->spilled = 1;
  return 0;
}

static int read_page(chb_pager *pg, const pte *e, char *p) {
  if (pg->fd < 0 || pg->err[0]) {
    if (!pg->err[0]) fail(pg, "read", EBADF);
    return -1;
  }
  off_t at = (off_t)(e->fpage - 1) * CHB_PAGE_SIZE;
  ssize_t r = chb_fs_pread_full(pg->fd, p, CHB_PAGE_SIZE, (uint64_t)at);
  if (r != CHB_PAGE_SIZE) {
    fail(pg, "read", r < 0 ? errno : EIO);
    return -1;
  }
  return 0;
}

/* A frame for a page: a free one, a new one while under the budget, or
 * the clock's victim, written out first if changed. -1 on failure. */
static long take_frame(chb_pager *pg) {
  if (pg->nfree_frames) {
    int32_t f = pg->free_frames[--pg->nfree_frames];
    if (!pg->mem[f] && !(pg->mem[f] = malloc(CHB_PAGE_SIZE))) {
      pg->nfree_frames++;
      return -1;
    }
    return f;
  }
  if (pg->nframes < pg->max_frames) {
    pg->mem[pg->nframes] = malloc(CHB_PAGE_SIZE);
    if (!pg->mem[pg->nframes]) return -1;
    return (long)pg->nframes++;
  }
  for (;;) {
    size_t f = pg->hand;
    pg->hand = (pg->hand + 1) % pg->nframes;
    frame *fr = &pg->frames[f];
    if (!fr->owner) return (long)f;
    if (fr->ref) {
      fr->ref = 0;   /* a second chance */
      continue;
    }
    pte *e = &fr->owner->pt[fr->page];
    if (fr->dirty && write_page(pg, e, pg->mem[f]) != 0) return -1;
    e->frame = -1;
    fr->owner = NULL;
    return (long)f;
  }
}

static int fault(chb_parray *a, size_t page) {
  chb_pager *pg = a->pg;
  long f = take_frame(pg);
  if (f < 0) return -1;
  pte *e = &a->pt[page];
  if (e->fpage) {
    if (read_page(pg, e, pg->mem[f]) != 0) {
      pg->free_frames[pg->nfree_frames++] = (int32_t)f;
      return -1;
    }
  } else {
    memset(pg->mem[f], 0, CHB_PAGE_SIZE);
  }
  frame *fr = &pg->frames[f];
  fr->owner = a, fr->page = page, fr->dirty = 0, fr->ref = 1;
  e->frame = (int32_t)f;
  return 0;
}

chb_parray *chb_parray_new(chb_pager *pg, size_t elem) {
  if (elem == 0 || elem > CHB_PAGE_SIZE) return NULL;
  chb_parray *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->pg = pg, a->elem = elem, a->per_page = CHB_PAGE_SIZE / elem;
  return a;
}

void chb_parray_free(chb_parray *a) {
  if (!a) return;
  chb_pager *pg = a->pg;
  for (size_t p = 0; p < a->npages; p++) {
    pte *e = &a->pt[p];
    if (e->frame >= 0) {   /* (its memory given back: a freed table is often the largest) */
      pg->frames[e->frame].owner = NULL;
      free(pg->mem[e->frame]);
      pg->mem[e->frame] = NULL;
      pg->free_frames[pg->nfree_frames++] = e->frame;
    }
    if (e->fpage) {
      if (pg->nfree_fpages == pg->free_fpages_cap) {
        size_t cap = pg->free_fpages_cap ? pg->free_fpages_cap * 2 : 256;
        uint32_t *q = realloc(pg->free_fpages, cap * sizeof *q);
        if (!q) continue;   /* (that page of the file is not reused) */
        pg->free_fpages = q, pg->free_fpages_cap = cap;
      }
      pg->free_fpages[pg->nfree_fpages++] = e->fpage;
    }
  }
  free(a->pt);
  free(a);
}

int chb_parray_reserve(chb_parray *a, size_t n) {
  size_t pages = n / a->per_page + (n % a->per_page != 0);
  if (pages <= a->npages) return 0;
  if (pages > a->pt_cap) {
    size_t cap = a->pt_cap ? a->pt_cap : 4;
    while (cap < pages) {
      if (cap > SIZE_MAX / 2 / sizeof(pte)) return -1;
      cap *= 2;
    }
    pte *q = realloc(a->pt, cap * sizeof *q);
    if (!q) return -1;
    a->pt = q, a->pt_cap = cap;
  }
  for (size_t p = a->npages; p < pages; p++) a->pt[p].frame = -1, a->pt[p].fpage = 0;
  a->npages = pages;
  return 0;
}

void *chb_parray_at(chb_parray *a, size_t i, int write) {
  size_t page = i / a->per_page;
  if (page >= a->npages) return NULL;
  pte *e = &a->pt[page];
  if (e->frame < 0 && fault(a, page) != 0) return NULL;
  frame *fr = &a->pg->frames[e->frame];
  fr->ref = 1;
  if (write) fr->dirty = 1;
  return a->pg->mem[e->frame] + (i % a->per_page) * a->elem;
}
