/*
 * luaopen_chbackup_core: the Lua binding of the C engine. No logic lives
 * here: arguments are checked and copied, engine calls are made, results
 * are pushed. Expected failures return `nil, message, code` (the `fail`
 * shape of luaL_fileresult); misuse raises.
 */
#include "chb_checksums.h"
#include "chb_cipher.h"
#include "chb_error.h"
#include "chb_lua.h"
#include "chb_fs.h"
#include "chb_hash.h"
#include "chb_job.h"
#include "chb_proc.h"
#include "chb_source.h"
#include "chb_stored.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#define CHB_EXPORT __attribute__((visibility("default")))
#define CHB_JOB_MT "chbackup.Job"
#define CHB_LOCK_MT "chbackup.Lock"

int luaopen_chbackup_core(lua_State *L);
void chb_open_archives(lua_State *L); /* chb_archive_lua.c */
void chb_open_s3(lua_State *L);  /* chb_s3_lua.c */
void chb_open_index(lua_State *L); /* chb_index_lua.c */


static void push_hex(lua_State *L, chb_u128 v) {
  char hex[33];
  chb_u128_to_hex(v, hex);
  lua_pushstring(L, hex);
}

static int check_hex(lua_State *L, int arg, chb_u128 *out) {
  const char *hex = luaL_checkstring(L, arg);
  if (chb_u128_from_hex(hex, out) != 0)
    return luaL_argerror(L, arg, "expected a checksum of 32 hex digits");
  return 0;
}

/* ---- chbackup.Job ------------------------------------------------------ */

typedef struct job_box {
  chb_job *job;   /* NULL once closed */
} job_box;

static chb_job *check_job(lua_State *L) {
  job_box *b = luaL_checkudata(L, 1, CHB_JOB_MT);
  if (!b->job) luaL_error(L, "attempt to use a closed " CHB_JOB_MT);
  return b->job;
}

/* A 32-byte key (a binary string) at index idx, or NULL if nil. */
static const unsigned char *opt_key(lua_State *L, int idx, int arg) {
  if (lua_isnil(L, idx)) return NULL;
  size_t len = 0;
  const char *k = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len) : NULL;
  luaL_argcheck(L, k && len == CHB_CIPHER_KEY_LEN, arg, "a key is a string of 32 bytes (core.derive_key)");
  return (const unsigned char *)k;
}

/* core.job{threads=, buffer_size=, fsync=, key=, ordered=} -> Job; with key
 * (32 bytes, copied), entries added with a name (job:add's 7th argument) are
 * written encrypted; ordered: entries run in the order added (else the
 * biggest batches first). */
static int core_job(lua_State *L) {
  chb_job_opts opts;
  memset(&opts, 0, sizeof opts);
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "threads");      /* opts, threads */
    opts.threads = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "buffer_size");  /* opts, threads, buffer_size */
    opts.buffer_size = (size_t)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 1, "fsync");        /* opts, threads, buffer_size, fsync */
    opts.fsync = lua_toboolean(L, -1);
    lua_getfield(L, 1, "key");          /* opts, threads, buffer_size, fsync, key */
    const unsigned char *key = opt_key(L, -1, 1);
    if (key) {
      opts.has_key = 1;
      memcpy(opts.key, key, CHB_CIPHER_KEY_LEN);
    }
    lua_getfield(L, 1, "ordered");      /* opts, threads, buffer_size, fsync, key, ordered */
    opts.ordered = lua_toboolean(L, -1);
    lua_pop(L, 5);                      /* opts */
  }
  job_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* opts, ud */
  b->job = NULL;                                   /* born closed */
  luaL_setmetatable(L, CHB_JOB_MT);
  chb_error err;
  b->job = chb_job_new(&opts, &err);
  OPENSSL_cleanse(opts.key, sizeof opts.key);
  if (!b->job) return chb_push_fail(L, &err);
  return 1;
}

/*
 * job:add(src, dst|nil, size|nil, checksum|nil, src_offset|nil, name|nil) -> index
 * `src` is a path, or a list of pieces {path, offset, length} read in order
 * (length -1: to the end of the file); a piece with `entry=` reads that
 * entry of the zip archive `path` (`password=` if encrypted); a piece with
 * `key=` (32 bytes) and `aad=` (its name in its backup) is a file of an
 * encrypted directory backup, offset and length counting plain bytes; a
 * piece with `root=` (a prefix of its path) is opened confined below that
 * directory: a symbolic link there is refused, not followed.
 * `name`: dst is written encrypted with the job's key as that file of its
 * backup (the job needs a key).
 * S3 (chb_s3_store.h; `id` from an S3 client's c:profile()): a piece
 * {key, offset, length, s3 = id} reads object `key` by ranged GETs; a dst
 * {s3 = id, key = k} writes object k (one PUT up to 32 MiB, else multipart;
 * it exists once verified).
 */
static int job_add(lua_State *L) {
  chb_job *job = check_job(L);
  int dst_s3 = 0;
  if (lua_istable(L, 3)) {   /* {s3 = id, key = k}: an S3 object */
    lua_getfield(L, 3, "s3");
    dst_s3 = (int)luaL_checkinteger(L, -1);
    luaL_argcheck(L, dst_s3 > 0, 3, "an S3 destination needs s3 = <profile id>");
    lua_getfield(L, 3, "key");
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 3, "an S3 destination needs key = <string>");
    lua_replace(L, 3);        /* dst is the key; the table is not needed */
    lua_pop(L, 1);
  }
  const char *dst = luaL_optstring(L, 3, NULL);
  lua_Integer size = luaL_optinteger(L, 4, -1);
  chb_u128 hash, *hp = NULL;
  if (!lua_isnoneornil(L, 5)) {
    check_hex(L, 5, &hash);
    hp = &hash;
  }
  lua_Integer offset = luaL_optinteger(L, 6, 0);
  luaL_argcheck(L, offset >= 0, 6, "offset must be >= 0");
  const char *seal_name = luaL_optstring(L, 7, NULL);
  luaL_argcheck(L, !seal_name || dst, 7, "an encrypted entry needs a destination");
  chb_error err;
  long i;
  if (lua_istable(L, 2)) {
    lua_Integer n = luaL_len(L, 2);
    luaL_argcheck(L, n >= 1, 2, "no pieces");
    chb_piece *pieces = lua_newuserdatauv(L, sizeof(chb_piece) * (size_t)n, 0); /* .., buf */
    for (lua_Integer k = 1; k <= n; k++) {
      lua_geti(L, 2, k);                                    /* .., buf, piece */
      luaL_argcheck(L, lua_istable(L, -1), 2, "each piece is {path, offset, length}");
      lua_geti(L, -1, 1);                                   /* .., buf, piece, path */
      /* Only a real string is kept alive by the piece table once popped (a
       * number would be converted into a new, unreferenced string). */
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2, "a piece's path must be a string");
      pieces[k - 1].path = lua_tostring(L, -1);
      lua_geti(L, -2, 2);                                   /* .., buf, piece, path, offset */
      pieces[k - 1].offset = (uint64_t)luaL_optinteger(L, -1, 0);
      lua_geti(L, -3, 3);                                   /* .., buf, piece, path, offset, len */
      pieces[k - 1].length = (int64_t)luaL_optinteger(L, -1, -1);
      /* {path, offset, length, entry=, password=}: an entry of a zip archive */
      lua_getfield(L, -4, "entry");                         /* .., len, entry */
      luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 2, "a piece's entry must be a string");
      pieces[k - 1].entry = lua_tostring(L, -1);
      lua_getfield(L, -5, "password");                      /* .., len, entry, password */
      luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 2, "a piece's password must be a string");
      pieces[k - 1].password = lua_tostring(L, -1);
      /* {path, offset, length, key=, aad=}: a file of an encrypted backup */
      lua_getfield(L, -6, "key");                           /* .., password, key */
      pieces[k - 1].key = opt_key(L, -1, 2);
      lua_getfield(L, -7, "aad");                           /* .., password, key, aad */
      luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 2, "a piece's aad must be a string");
      pieces[k - 1].aad = lua_tostring(L, -1);
      luaL_argcheck(L, !pieces[k - 1].key || (pieces[k - 1].aad && !pieces[k - 1].entry), 2,
                    "an encrypted piece needs aad= and no entry=");
      /* root=: the backup's directory; path is opened confined below it */
      lua_getfield(L, -8, "root");                          /* .., key, aad, root */
      luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, 2, "a piece's root must be a string");
      pieces[k - 1].root = lua_tostring(L, -1);
      /* s3=: a profile id; path is an object key */
      lua_getfield(L, -9, "s3");                            /* .., aad, root, s3 */
      pieces[k - 1].s3 = (int)luaL_optinteger(L, -1, 0);
      luaL_argcheck(L, pieces[k - 1].s3 >= 0, 2, "a piece's s3 must be a profile id");
      lua_pop(L, 10);                                       /* .., buf */
    }
    i = chb_job_add_pieces(job, pieces, (size_t)n, dst, (int64_t)size, hp, &err);
  } else {
    const char *src = luaL_checkstring(L, 2);
    i = chb_job_add(job, src, dst, (uint64_t)offset, (int64_t)size, hp, &err);
  }
  if (i < 0) return luaL_error(L, "%s", err.msg);
  if (seal_name && chb_job_seal_entry(job, (size_t)i, seal_name, &err) != 0)
    return luaL_error(L, "%s", err.msg); /* misuse: the job has no key */
  if (dst_s3 && chb_job_s3_entry(job, (size_t)i, dst_s3, &err) != 0)
    return luaL_error(L, "%s", err.msg);
  lua_pushinteger(L, i + 1);
  return 1;
}

/* A chain of backups for chb_stored.h: {{index = idx, root = dir|false}, ...}
 * at arg, the restored backup first, then its base, its base's base...; an
 * array on the stack (the table keeps the roots' strings alive). */
static chb_stored_level *check_levels(lua_State *L, int arg, size_t *n) {
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_Integer len = luaL_len(L, arg);
  luaL_argcheck(L, len >= 1, arg, "a chain has at least one backup");
  chb_stored_level *levels = lua_newuserdatauv(L, sizeof *levels * (size_t)len, 0);
  for (lua_Integer k = 1; k <= len; k++) {
    lua_geti(L, arg, k);
    luaL_argcheck(L, lua_istable(L, -1), arg, "each backup of a chain is {index=, root=}");
    lua_getfield(L, -1, "index");
    levels[k - 1].idx = chb_check_index(L, lua_gettop(L));
    lua_getfield(L, -2, "root");
    luaL_argcheck(L, !lua_toboolean(L, -1) || lua_type(L, -1) == LUA_TSTRING, arg, "a root is a string");
    levels[k - 1].root = lua_toboolean(L, -1) ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 3);
  }
  *n = (size_t)len;
  return levels;
}

/* Pushes true when stop reached hi (every entry taken), else stop + 1. */
static int push_stop(lua_State *L, size_t stop, lua_Integer hi) {
  if (stop >= (size_t)hi)
    lua_pushboolean(L, 1);
  else
    lua_pushinteger(L, (lua_Integer)stop + 1);
  return 1;
}

/*
 * job:add_stored(chain, lo, hi, strip, dst_dir) -> true | pos
 * Adds the files of chain[1]'s index at sorted positions lo..hi (idx:prefix's
 * numbers) whose bytes the chain stores plainly (chb_stored.h): read below
 * their backup's root, written to dst_dir .. name:sub(strip + 1), empty files
 * skipped. chain: {{index=, root=}, ...} (check_levels). true: all were
 * taken; pos: the first that was not (its pieces are the caller's to
 * resolve; nothing after it was added).
 */
static int job_add_stored(lua_State *L) {
  chb_job *job = check_job(L);
  size_t n;
  chb_stored_level *chain = check_levels(L, 2, &n);
  lua_Integer lo = luaL_checkinteger(L, 3), hi = luaL_checkinteger(L, 4);
  lua_Integer strip = luaL_checkinteger(L, 5);
  const char *dst_dir = luaL_checkstring(L, 6);
  luaL_argcheck(L, lo >= 1, 3, "positions count from 1");
  luaL_argcheck(L, strip >= 0, 5, "strip must be >= 0");
  size_t stop = (size_t)lo - 1;
  chb_error err;
  if (hi >= lo &&
      chb_stored_add(job, chain, n, (size_t)lo - 1, (size_t)hi, (size_t)strip, dst_dir, &stop, &err) != 0)
    return luaL_error(L, "%s", err.msg);
  return push_stop(L, stop, hi);
}

/* job:set_base(i, base_size, base_checksum): write only the tail if the
 * first base_size bytes hash to base_checksum (an incremental backup). */
static int job_set_base(lua_State *L) {
  chb_job *job = check_job(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  lua_Integer base_size = luaL_checkinteger(L, 3);
  chb_u128 base_hash;
  check_hex(L, 4, &base_hash);
  luaL_argcheck(L, base_size >= 0, 3, "base size must be >= 0");
  chb_error err;
  if (i < 1 || chb_job_set_base(job, (size_t)(i - 1), (uint64_t)base_size, base_hash, &err) != 0)
    return luaL_error(L, "cannot set a base on entry %d", (int)i);
  return 0;
}

/* job:start() -> true | fail; starting twice (or after cancel) raises */
static int job_start(lua_State *L) {
  chb_job *job = check_job(L);
  chb_error err;
  if (chb_job_start(job, &err) != 0) {
    if (err.code == CHB_INVALID) return luaL_error(L, "%s", err.msg); /* misuse */
    return chb_push_fail(L, &err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* job:wait([seconds]) -> state; no argument (or math.huge) waits until the
 * job ends; a timeout <= 0 only looks (a deadline already past never blocks). */
static int job_wait(lua_State *L) {
  chb_job *job = check_job(L);
  long ms = chb_opt_timeout_ms(L, 2);
  lua_pushstring(L, chb_job_state_name(chb_job_wait(job, ms)));
  return 1;
}

static int job_cancel(lua_State *L) {
  chb_job_cancel(check_job(L));
  return 0;
}

static int job_progress(lua_State *L) {
  chb_job_progress p;
  chb_job_get_progress(check_job(L), &p);
  chb_push_progress(L, &p);
  return 1;
}

/* job:result() -> true | fail, once the job ended; before that it raises */
static int job_result(lua_State *L) {
  chb_job *job = check_job(L);
  chb_job_state s = chb_job_wait(job, 0); /* an ended job never changes state */
  if (s == CHB_JOB_NEW || s == CHB_JOB_RUNNING)
    return luaL_error(L, "job has not ended (%s)", chb_job_state_name(s)); /* misuse */
  chb_error err;
  if (chb_job_result(job, &err) != 0) return chb_push_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* job:entry(i) -> size, checksum, tail_only (after the job is done) */
static int job_entry(lua_State *L) {
  chb_job *job = check_job(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  uint64_t size;
  chb_u128 hash;
  if (i < 1 || chb_job_entry_result(job, (size_t)(i - 1), &size, &hash) != 0)
    return luaL_error(L, "no result for entry %d (job not done or index out of range)", (int)i);
  lua_pushinteger(L, (lua_Integer)size);
  push_hex(L, hash);
  lua_pushboolean(L, chb_job_entry_tail_only(job, (size_t)(i - 1)));
  return 3;
}

static int job_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)chb_job_count(check_job(L)));
  return 1;
}

/* close, __gc and __close: cancel, join, free; idempotent, never raises. */
static int job_close(lua_State *L) {
  job_box *b = luaL_checkudata(L, 1, CHB_JOB_MT);
  chb_job_free(b->job);
  b->job = NULL;
  return 0;
}

static const luaL_Reg job_methods[] = {
    {"add", job_add},         {"add_stored", job_add_stored}, {"set_base", job_set_base},
    {"start", job_start},     {"wait", job_wait},
    {"cancel", job_cancel},   {"progress", job_progress},
    {"result", job_result},   {"entry", job_entry},   {"count", job_count},
    {"close", job_close},     {NULL, NULL}};

static const luaL_Reg job_meta[] = {
    {"__gc", job_close}, {"__close", job_close}, {NULL, NULL}};


/* ---- chbackup.Lock (chb_fs_lock) ---------------------------------------- */

typedef struct lock_box {
  int fd;                 /* -1 once released */
  char path[PATH_MAX];
} lock_box;

#define LOCK_TEXT_MAX 4096

/* The text of a lock file (its holder's description), at most 4 KiB. */
static void push_lock_text(lua_State *L, int fd) {
  char buf[LOCK_TEXT_MAX];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  lua_pushlstring(L, buf, n > 0 ? (size_t)n : 0);
}

/* core.lock(path) -> lock, previous_text, created | nil, message, code[, holder_text]
 * Takes path's exclusive flock(2) without waiting (the file is created if
 * missing). previous_text: what the file held (a killed holder's text, or
 * "" for a new file). Held by another open file: code "LOCKED" and the
 * holder's text. */
static int core_lock(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len < PATH_MAX, 1, "path too long");
  lock_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* path, ud */
  b->fd = -1;
  memcpy(b->path, path, len + 1);
  luaL_setmetatable(L, CHB_LOCK_MT);
  chb_error err;
  int created = 0;
  b->fd = chb_fs_lock(path, &created, &err);
  if (b->fd < 0) {
    int n = chb_push_fail(L, &err);
    if (err.code == CHB_LOCKED) {
      int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd >= 0) {
        push_lock_text(L, fd);
        close(fd);
        n++;
      }
    }
    return n;
  }
  push_lock_text(L, b->fd);
  lua_pushboolean(L, created);
  return 3;
}

static lock_box *check_lock(lua_State *L) {
  lock_box *b = luaL_checkudata(L, 1, CHB_LOCK_MT);
  if (b->fd < 0) luaL_error(L, "attempt to use a released " CHB_LOCK_MT " (%s)", b->path);
  return b;
}

/* lock:write(text) -> true | fail: replaces the lock file's text (fsynced) */
static int lock_write(lua_State *L) {
  lock_box *b = check_lock(L);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  chb_error err;
  if (ftruncate(b->fd, 0) != 0 || pwrite(b->fd, text, len, 0) != (ssize_t)len || fsync(b->fd) != 0) {
    chb_error_errno(&err, errno ? errno : EIO, "cannot write lock file", b->path);
    return chb_push_fail(L, &err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* lock:release([unlink]) -> true: unlink (if asked, and if the name is
 * still this file) while held, then unlock; idempotent. */
static int lock_release(lua_State *L) {
  lock_box *b = luaL_checkudata(L, 1, CHB_LOCK_MT);
  if (b->fd >= 0) {
    struct stat held, named;
    if (lua_toboolean(L, 2) && fstat(b->fd, &held) == 0 && lstat(b->path, &named) == 0 &&
        held.st_dev == named.st_dev && held.st_ino == named.st_ino)
      unlink(b->path);
    close(b->fd);
    b->fd = -1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* __gc, __close: unlock (the file stays, as a killed holder's would). */
static int lock_gc(lua_State *L) {
  lock_box *b = luaL_checkudata(L, 1, CHB_LOCK_MT);
  if (b->fd >= 0) close(b->fd);
  b->fd = -1;
  return 0;
}

static int lock_path(lua_State *L) {
  lock_box *b = luaL_checkudata(L, 1, CHB_LOCK_MT);
  lua_pushstring(L, b->path);
  return 1;
}

static const luaL_Reg lock_methods[] = {
    {"write", lock_write}, {"release", lock_release}, {"path", lock_path}, {NULL, NULL}};

static const luaL_Reg lock_meta[] = {{"__gc", lock_gc}, {"__close", lock_gc}, {NULL, NULL}};

/* core.lock_held(path) -> true, holder_text | false | nil (no such file) */
static int core_lock_held(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  chb_error err;
  int held = chb_fs_lock_held(path, &err);
  if (held < 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushboolean(L, held);
  if (!held) return 1;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 1;
  push_lock_text(L, fd);
  close(fd);
  return 2;
}

/* ---- functions --------------------------------------------------------- */

/* core.cityhash128(s [, seed_hex]) -> hex: CityHash v1.0.2 of one buffer */
static int core_cityhash128(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (lua_isnoneornil(L, 2)) {
    push_hex(L, chb_cityhash128(s, len));
  } else {
    chb_u128 seed;
    check_hex(L, 2, &seed);
    push_hex(L, chb_cityhash128_seed(s, len, seed));
  }
  return 1;
}

/* core.plain_stop(chain, lo, hi) -> true | pos: the first of chain[1]'s
 * sorted positions lo..hi whose entry's bytes the chain does not store
 * plainly (chb_stored.h; chain as job:add_stored's); true: none */
static int core_plain_stop(lua_State *L) {
  size_t n;
  chb_stored_level *chain = check_levels(L, 1, &n);
  lua_Integer lo = luaL_checkinteger(L, 2), hi = luaL_checkinteger(L, 3);
  luaL_argcheck(L, lo >= 1, 2, "positions count from 1");
  size_t stop = (size_t)lo - 1;
  chb_error err;
  if (hi >= lo && chb_stored_plain_stop(chain, n, (size_t)lo - 1, (size_t)hi, &stop, &err) != 0)
    return luaL_error(L, "%s", err.msg);
  return push_stop(L, stop, hi);
}

/* core.checksum(s) -> hex: ClickHouse's file checksum of a string's bytes */
static int core_checksum(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  chb_hash h;
  chb_hash_init(&h);
  chb_hash_update(&h, s, len);
  push_hex(L, chb_hash_peek(&h));
  return 1;
}

/*
 * core.read_file(path, root|nil, offset|nil, length|nil) -> bytes | fail:
 * reads a small file of a backup (length bytes from offset; nil: to the end),
 * confined below `root` as job pieces are (chb_fs_open_beneath).
 */
static int core_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *root = luaL_optstring(L, 2, NULL);
  lua_Integer offset = luaL_optinteger(L, 3, 0);
  lua_Integer length = luaL_optinteger(L, 4, -1);
  luaL_argcheck(L, offset >= 0, 3, "offset must be >= 0");
  size_t root_len = root ? strlen(root) : 0;
  luaL_argcheck(L, !root || strncmp(path, root, root_len) == 0, 2, "root must be a prefix of path");
  chb_error err;
  /* Read to the end and stopped at `length`: a file shorter than that
   * gives what it has, no error. Length 0 still opens it (checked). */
  chb_piece piece = {path, (uint64_t)offset, length == 0 ? 0 : -1, NULL, NULL, NULL, NULL, root};
  chb_source *src = chb_source_open(&piece, 1, &err);
  if (!src) return chb_push_fail(L, &err);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (uint64_t got = 0;;) {
    size_t want = LUAL_BUFFERSIZE;
    if (length > 0 && (uint64_t)length - got < want) want = (size_t)((uint64_t)length - got);
    if (want == 0) break;
    ssize_t n = chb_source_read(src, luaL_prepbuffsize(&b, want), want, &err);
    if (n < 0) {
      chb_source_close(src);
      return chb_push_fail(L, &err);
    }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
    got += (uint64_t)n;
  }
  chb_source_close(src);
  luaL_pushresult(&b);
  return 1;
}

/* core.checksum_file(path) -> checksum, size | fail: hashes a regular file
 * in place (a symlink is refused, not followed) */
static int core_checksum_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  chb_error err;
  uint64_t size;
  chb_u128 hash;
  if (chb_fs_hash_file(path, &size, &hash, &err) != 0) return chb_push_fail(L, &err);
  push_hex(L, hash);
  lua_pushinteger(L, (lua_Integer)size);
  return 2;
}

/* core.file_size(path) -> size | nil: the size of a regular file, nil for
 * anything else or nothing (lstat: one call, no table, no readlink) */
static int core_file_size(lua_State *L) {
  uint64_t size;
  if (chb_fs_file_size(luaL_checkstring(L, 1), &size) != 0) return 0;
  lua_pushinteger(L, (lua_Integer)size);
  return 1;
}

/* core.kinds(dir, names, suffix|nil) -> { kind|false, ... } | fail: for each
 * name, what dir/name..suffix is without following a symlink: "file",
 * "directory", "link", "other", or false (nothing there); dir opened once
 * (chb_fs_kinds). */
static int core_kinds(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  const char *suffix = luaL_optstring(L, 3, NULL);
  size_t n = (size_t)luaL_len(L, 2);
  const char **names = lua_newuserdatauv(L, (n ? n : 1) * sizeof *names, 0);   /* freed by the GC */
  char *kinds = lua_newuserdatauv(L, n ? n : 1, 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 2, (lua_Integer)i + 1);
    names[i] = lua_tostring(L, -1);
    luaL_argcheck(L, names[i] != NULL, 2, "names must be strings");
    lua_pop(L, 1);   /* (the string stays alive: the table holds it) */
  }
  if (chb_fs_kinds(dir, names, n, suffix, kinds) != 0) {
    chb_error err;
    chb_error_errno(&err, errno, "cannot open directory", dir);
    return chb_push_fail(L, &err);
  }
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    switch (kinds[i]) {
      case 'f': lua_pushliteral(L, "file"); break;
      case 'd': lua_pushliteral(L, "directory"); break;
      case 'l': lua_pushliteral(L, "link"); break;
      case 'o': lua_pushliteral(L, "other"); break;
      default: lua_pushboolean(L, 0);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* The table core.read_checksums returns, from c (freed). */
static void push_checksums(lua_State *L, chb_checksums *c) {
  lua_createtable(L, 0, (int)c->count);      /* t */
  for (size_t i = 0; i < c->count; i++) {
    const chb_part_file *f = &c->files[i];
    lua_createtable(L, 0, 5);                /* t, f */
    lua_pushinteger(L, (lua_Integer)f->file_size);
    lua_setfield(L, -2, "size");
    push_hex(L, f->file_hash);
    lua_setfield(L, -2, "checksum");
    lua_pushboolean(L, f->is_compressed);
    lua_setfield(L, -2, "is_compressed");
    if (f->is_compressed) {
      lua_pushinteger(L, (lua_Integer)f->uncompressed_size);
      lua_setfield(L, -2, "uncompressed_size");
      push_hex(L, f->uncompressed_hash);
      lua_setfield(L, -2, "uncompressed_checksum");
    }
    lua_setfield(L, -2, f->name);            /* t */
  }
  chb_checksums_free(c);
}

/* core.read_checksums(path) -> { [name] = {size=, checksum=, ...} } | fail */
static int core_read_checksums(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  chb_checksums c;
  chb_error err;
  if (chb_checksums_read(path, &c, &err) != 0) return chb_push_fail(L, &err);
  push_checksums(L, &c);
  return 1;
}

/* core.parse_checksums(text, what) -> the same | fail: a checksums.txt held
 * in a string (read from a backup); `what` names it in errors. */
static int core_parse_checksums(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *what = luaL_checkstring(L, 2);
  chb_checksums c;
  chb_error err;
  if (chb_checksums_parse(what, (const unsigned char *)text, len, &c, &err) != 0) return chb_push_fail(L, &err);
  push_checksums(L, &c);
  return 1;
}

/* ---- encrypted directory backups (chb_cipher.h) ----------------------- */

/* core.derive_key(password, salt_hex, {n=, r=, p=}) -> key (32 bytes) | fail */
static int core_derive_key(lua_State *L) {
  size_t pwlen, hexlen;
  const char *pw = luaL_checklstring(L, 1, &pwlen);
  const char *hex = luaL_checklstring(L, 2, &hexlen);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_argcheck(L, hexlen % 2 == 0 && hexlen <= 128, 2, "salt must be hex (up to 64 bytes)");
  unsigned char salt[64];
  for (size_t i = 0; i < hexlen / 2; i++) {
    unsigned int v;
    luaL_argcheck(L, sscanf(hex + 2 * i, "%2x", &v) == 1, 2, "salt must be hex");
    salt[i] = (unsigned char)v;
  }
  lua_getfield(L, 3, "n");  /* .., n */
  lua_getfield(L, 3, "r");  /* .., n, r */
  lua_getfield(L, 3, "p");  /* .., n, r, p */
  lua_Integer n = luaL_checkinteger(L, -3), r = luaL_checkinteger(L, -2), p = luaL_checkinteger(L, -1);
  lua_pop(L, 3);
  luaL_argcheck(L, n > 0 && r > 0 && p > 0, 3, "n, r and p must be positive");
  unsigned char key[CHB_CIPHER_KEY_LEN];
  chb_error err;
  if (chb_cipher_derive_key(pw, pwlen, salt, hexlen / 2, (uint64_t)n, (uint64_t)r, (uint64_t)p,
                            key, sizeof key, &err) != 0)
    return chb_push_fail(L, &err);
  lua_pushlstring(L, (const char *)key, sizeof key);
  OPENSSL_cleanse(key, sizeof key);
  return 1;
}

/* core.random_hex(nbytes) -> hex of nbytes random bytes | fail */
static int core_random_hex(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 1 && n <= 64, 1, "1 to 64 bytes");
  unsigned char b[64];
  char hex[129];
  chb_error err;
  if (chb_cipher_random(b, (size_t)n, &err) != 0) return chb_push_fail(L, &err);
  for (lua_Integer i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  lua_pushlstring(L, hex, (size_t)(2 * n));
  return 1;
}

/* core.encrypt(key, name, data) -> sealed data (the format of a file named
 * `name` of an encrypted directory backup) | fail */
static int core_encrypt(lua_State *L) {
  const unsigned char *key = opt_key(L, 1, 1);
  luaL_argcheck(L, key, 1, "a key is a string of 32 bytes");
  const char *name = luaL_checkstring(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  uint64_t out_len = chb_cipher_sealed_size(len);
  luaL_Buffer buf;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &buf, (size_t)out_len); /* .., buf */
  chb_error err;
  if (chb_cipher_seal_buffer(key, name, data, len, out, &err) != 0) {
    luaL_pushresultsize(&buf, 0);                                                   /* .., "" */
    return chb_push_fail(L, &err);
  }
  luaL_pushresultsize(&buf, (size_t)out_len);                                       /* .., sealed */
  return 1;
}

/* core.decrypt(key, name, sealed [, what]) -> data | fail (CORRUPT when it
 * does not authenticate; `what` names it in the message) */
static int core_decrypt(lua_State *L) {
  const unsigned char *key = opt_key(L, 1, 1);
  luaL_argcheck(L, key, 1, "a key is a string of 32 bytes");
  const char *name = luaL_checkstring(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  const char *what = luaL_optstring(L, 4, name);
  uint64_t plain = 0;
  chb_error err;
  if (chb_cipher_plain_size(len, &plain) != 0) {
    chb_error_set(&err, CHB_CORRUPT, "%s is corrupt: not a file of an encrypted backup (bad size)", what);
    return chb_push_fail(L, &err);
  }
  luaL_Buffer buf;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &buf, plain ? (size_t)plain : 1); /* .., buf */
  if (chb_cipher_open_buffer(key, name, (const unsigned char *)data, len, out, what, &err) != 0) {
    luaL_pushresultsize(&buf, 0);                                                   /* .., "" */
    return chb_push_fail(L, &err);
  }
  luaL_pushresultsize(&buf, (size_t)plain);                                         /* .., data */
  return 1;
}

/* core.plain_size(sealed_size) -> plaintext size of such a sealed file, or nil */
static int core_plain_size(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  uint64_t plain;
  if (n < 0 || chb_cipher_plain_size((uint64_t)n, &plain) != 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)plain);
  return 1;
}

/* core.now_us() -> microseconds since the epoch */
static int core_now_us(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushinteger(L, (lua_Integer)tv.tv_sec * 1000000 + tv.tv_usec);
  return 1;
}

/* core.isatty(fd) -> whether file descriptor fd is a terminal */
static int core_isatty(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  lua_pushboolean(L, fd >= 0 && fd <= 1024 && isatty((int)fd) == 1);
  return 1;
}

static int core_getpid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* core.disk_free(path) -> bytes an unprivileged writer may still use on the
   file system holding path | fail (statvfs: f_bavail * f_frsize) */
static int core_disk_free(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct statvfs st;
  if (statvfs(path, &st) != 0) {
    chb_error err;
    chb_error_errno(&err, errno, "cannot statvfs", path);
    return chb_push_fail(L, &err);
  }
  lua_pushinteger(L, (lua_Integer)((unsigned long long)st.f_bavail * st.f_frsize));
  return 1;
}

/* core.exchange(a, b) -> true | fail: swaps two paths atomically
 * (renameat2 RENAME_EXCHANGE): at no moment is either name missing. */
static int core_exchange(lua_State *L) {
  const char *a = luaL_checkstring(L, 1);
  const char *b = luaL_checkstring(L, 2);
  if (renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0) {
    chb_error err;
    chb_error_errno(&err, errno, "cannot exchange", a);
    return chb_push_fail(L, &err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.rename_new(a, b) -> true | fail: a renamed to b only if b does not
 * exist (renameat2 RENAME_NOREPLACE; code EEXIST when it does). rename(2)
 * alone replaces an empty directory or a file silently, and a check before
 * it leaves a window in which another process makes b. A file system
 * without the flag (EINVAL) gets that check and rename(2). */
static int core_rename_new(lua_State *L) {
  const char *a = luaL_checkstring(L, 1);
  const char *b = luaL_checkstring(L, 2);
  chb_error err;
  int rc = renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_NOREPLACE);
  if (rc != 0 && errno == EINVAL) {
    struct stat st;
    if (lstat(b, &st) == 0) {
      errno = EEXIST;
    } else if (errno == ENOENT) {
      rc = rename(a, b);
    }
  }
  if (rc != 0) {
    chb_error_errno(&err, errno, "cannot rename", a);
    return chb_push_fail(L, &err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.fsync(path) -> true | fail: flush a file or a directory to disk */
static int core_fsync(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  chb_error err;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int saved = errno;
    if (fd >= 0) close(fd);
    chb_error_errno(&err, saved, "cannot fsync", path);
    return chb_push_fail(L, &err);
  }
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

/* core.spawn_detached(argv, log_path) -> pid | fail */
static int core_spawn_detached(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *log = luaL_optstring(L, 2, "/dev/null");
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "argv must not be empty");
  const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  luaL_checkstack(L, n, "too many arguments in argv");
  for (int i = 1; i <= n; i++) {
    lua_geti(L, 1, i);                 /* argv, log, ptrs, s1..si */
    /* The string stays on the stack until we return: a number converted
     * here is a new string that the argv table does not hold. */
    argv[i - 1] = lua_tostring(L, -1);
    if (!argv[i - 1])
      return luaL_argerror(L, 1, lua_pushfstring(L, "argv[%d] is not a string", i));
  }
  argv[n] = NULL;
  chb_error err;
  long pid = chb_proc_spawn_detached(argv, log, &err);
  if (pid < 0) return chb_push_fail(L, &err);
  lua_pushinteger(L, pid);
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"job", core_job},
    {"cityhash128", core_cityhash128},
    {"checksum", core_checksum},
    {"plain_stop", core_plain_stop},
    {"checksum_file", core_checksum_file},
    {"file_size", core_file_size},
    {"kinds", core_kinds},
    {"read_file", core_read_file},
    {"read_checksums", core_read_checksums},
    {"parse_checksums", core_parse_checksums},
    {"now_us", core_now_us},
    {"getpid", core_getpid},
    {"isatty", core_isatty},
    {"fsync", core_fsync},
    {"exchange", core_exchange},
    {"rename_new", core_rename_new},
    {"disk_free", core_disk_free},
    {"spawn_detached", core_spawn_detached},
    {"derive_key", core_derive_key},
    {"random_hex", core_random_hex},
    {"encrypt", core_encrypt},
    {"decrypt", core_decrypt},
    {"plain_size", core_plain_size},
    {"lock", core_lock},
    {"lock_held", core_lock_held},
    {NULL, NULL}};

CHB_EXPORT int luaopen_chbackup_core(lua_State *L) {
  luaL_newmetatable(L, CHB_JOB_MT);   /* mt */
  luaL_setfuncs(L, job_meta, 0);
  luaL_newlib(L, job_methods);        /* mt, methods */
  lua_setfield(L, -2, "__index");     /* mt */
  lua_pop(L, 1);
  luaL_newmetatable(L, CHB_LOCK_MT);  /* mt */
  luaL_setfuncs(L, lock_meta, 0);
  luaL_newlib(L, lock_methods);       /* mt, methods */
  lua_setfield(L, -2, "__index");     /* mt */
  lua_pop(L, 1);
  luaL_newlib(L, core_funcs);         /* core */
  chb_open_archives(L);               /* core (+ zip_*, tar_writer, tar_reader) */
  chb_open_s3(L);                     /* core (+ s3_client) */
  chb_open_index(L);                  /* core (+ index) */
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
