/*
 * The Lua binding of archives: zip (chb_zip.h) as core.zip_writer,
 * core.zip_reader, core.zip_methods; tar (chb_tar.h) as core.tar_writer
 * and core.tar_reader. Both writers are one Lua type (the same methods).
 * Registered by luaopen_chbackup_core through chb_open_archives. No logic here: arguments are checked and copied,
 * engine calls are made, results pushed. Expected failures return
 * `nil, message, code`; misuse raises.
 */
#include "chb_codec.h"
#include "chb_error.h"
#include "chb_lua.h"
#include "chb_hash.h"
#include "chb_job.h"
#include "chb_tar.h"
#include "chb_zip.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>
#include <lua.h>
#include <string.h>

#define CHB_ZIPW_MT "chbackup.ArchiveWriter"
#define CHB_ZIPR_MT "chbackup.ZipReader"
#define CHB_TARR_MT "chbackup.TarReader"
#define READ_MAX ((uint64_t)1 << 30)  /* r:read is for small entries */

void chb_open_archives(lua_State *L);


/* Raises on keys of an options table that are not in `known` (luaposix checkfieldnames). */
static void check_fields(lua_State *L, int t, const char *const known[]) {
  lua_pushnil(L);                            /* .., nil */
  while (lua_next(L, t)) {                   /* .., key, value */
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      for (int i = 0; known[i]; i++) ok |= strcmp(k, known[i]) == 0;
    }
    if (!ok) {
      lua_pushvalue(L, -2);                  /* .., key, value, key */
      luaL_error(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);                           /* .., key */
  }
}

/* Field s3 of the table at `t`: an S3 profile id (c:profile()), 0 if absent. */
static int opt_s3(lua_State *L, int t) {
  lua_getfield(L, t, "s3");
  lua_Integer id = luaL_optinteger(L, -1, 0);
  luaL_argcheck(L, id >= 0 && id <= INT_MAX, t, "s3 must be an S3 profile id");
  lua_pop(L, 1);
  return (int)id;
}

/*
 * Fills pieces from the table at `arg`: {path, offset, length, entry=, password=, s3=}.
 * The strings stay owned by the Lua tables (which the caller keeps on the
 * stack); the engine copies them. Returns the count.
 */
static size_t check_pieces(lua_State *L, int arg, chb_piece **out) {
  lua_Integer n = luaL_len(L, arg);
  luaL_argcheck(L, n >= 1, arg, "no pieces");
  chb_piece *pieces = lua_newuserdatauv(L, sizeof(chb_piece) * (size_t)n, 0); /* .., buf */
  for (lua_Integer k = 1; k <= n; k++) {
    chb_piece *p = &pieces[k - 1];
    memset(p, 0, sizeof *p);
    lua_geti(L, arg, k);                                  /* .., buf, piece */
    luaL_argcheck(L, lua_istable(L, -1), arg, "each piece is {path, offset, length, entry=, password=}");
    lua_geti(L, -1, 1);                                   /* .., buf, piece, path */
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, arg, "a piece's path must be a string");
    p->path = lua_tostring(L, -1);
    lua_geti(L, -2, 2);                                   /* .., buf, piece, path, offset */
    lua_Integer off = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, off >= 0, arg, "a piece's offset must be >= 0");
    p->offset = (uint64_t)off;
    lua_geti(L, -3, 3);                                   /* .., buf, piece, path, offset, len */
    p->length = (int64_t)luaL_optinteger(L, -1, -1);
    lua_getfield(L, -4, "entry");                         /* .., piece, path, offset, len, entry */
    luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, arg,
                  "a piece's entry must be a string");
    p->entry = lua_tostring(L, -1);
    lua_getfield(L, -5, "password");                      /* .., entry, password */
    luaL_argcheck(L, lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING, arg,
                  "a piece's password must be a string");
    p->password = lua_tostring(L, -1);
    p->s3 = opt_s3(L, -6);
    lua_pop(L, 6);                                        /* .., buf */
  }
  *out = pieces;
  return (size_t)n;
}

/* ---- chbackup.ArchiveWriter: a zip or a tar writer ----------------------- */

typedef struct zipw_box {
  chb_zip_writer *w;          /* one of the two; both NULL once closed */
  chb_tar_writer *t;
  int streaming;              /* begun (w:begin): adds are queued until start */
} zipw_box;

static zipw_box *check_writer(lua_State *L) {
  zipw_box *b = luaL_checkudata(L, 1, CHB_ZIPW_MT);
  if (!b->w && !b->t) luaL_error(L, "attempt to use a closed " CHB_ZIPW_MT);
  return b;
}

static zipw_box *new_writer_box(lua_State *L) {
  zipw_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* .., ud */
  b->w = NULL;                                      /* born closed */
  b->t = NULL;
  b->streaming = 0;
  luaL_setmetatable(L, CHB_ZIPW_MT);
  return b;
}

/*
 * core.zip_writer(path, {method=, level=, password=, threads=, buffer_size=, fsync=})
 *   -> ArchiveWriter | fail (EEXIST, INVALID for an unknown method or level)
 */
static int core_zip_writer(lua_State *L) {
  static const char *const known[] = {"method", "level", "password", "threads",
                                      "buffer_size", "fsync", NULL};
  const char *path = luaL_checkstring(L, 1);
  chb_zip_writer_opts o;
  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_fields(L, 2, known);
    lua_getfield(L, 2, "method");        /* path, opts, method */
    o.method = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 2, "level");         /* .., method, level */
    o.has_level = !lua_isnil(L, -1);
    lua_Integer level = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, level >= INT_MIN && level <= INT_MAX, 2, "level out of range");
    o.level = (int)level;
    lua_getfield(L, 2, "password");      /* .., level, password */
    o.password = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 2, "threads");       /* .., password, threads */
    o.threads = (int)luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "buffer_size");   /* .., threads, buffer_size */
    lua_Integer bs = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, bs >= 0, 2, "buffer_size must be >= 0");
    o.buffer_size = (size_t)bs;
    lua_getfield(L, 2, "fsync");         /* .., buffer_size, fsync */
    o.fsync = lua_toboolean(L, -1);
    /* The strings stay on the stack until chb_zip_writer_new copied them. */
  }
  zipw_box *b = new_writer_box(L);
  chb_error err;
  b->w = chb_zip_writer_new(path, &o, &err);
  if (!b->w) return chb_push_fail(L, &err);
  return 1;
}

/*
 * core.tar_writer(path, {buffer_size=, fsync=, s3=, threads=}) -> ArchiveWriter | fail (s3: a
 * profile id; path is then the object key, streamed into its upload, whose
 * parts `threads` threads send in parallel; default 8)
 * (EEXIST; INVALID for a name without a tar suffix: the suffix picks the
 * compression, as ClickHouse's)
 */
static int core_tar_writer(lua_State *L) {
  static const char *const known[] = {"buffer_size", "fsync", "s3", "threads", NULL};
  const char *path = luaL_checkstring(L, 1);
  chb_tar_writer_opts o;
  memset(&o, 0, sizeof o);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_fields(L, 2, known);
    lua_getfield(L, 2, "buffer_size");   /* path, opts, buffer_size */
    lua_Integer bs = luaL_optinteger(L, -1, 0);
    luaL_argcheck(L, bs >= 0, 2, "buffer_size must be >= 0");
    o.buffer_size = (size_t)bs;
    lua_getfield(L, 2, "fsync");         /* .., buffer_size, fsync */
    o.fsync = lua_toboolean(L, -1);
    lua_getfield(L, 2, "threads");       /* .., fsync, threads */
    o.threads = (int)luaL_optinteger(L, -1, 0);
    o.s3 = opt_s3(L, 2);
  }
  zipw_box *b = new_writer_box(L);
  chb_error err;
  b->t = chb_tar_writer_new(path, &o, &err);
  if (!b->t) return chb_push_fail(L, &err);
  return 1;
}

static chb_job_state writer_state(zipw_box *b, long ms) {
  return b->w ? chb_zip_writer_wait(b->w, ms) : chb_tar_writer_wait(b->t, ms);
}

/* Adding to a started writer is misuse: it raises. A streaming writer
 * takes adds until start (a failed one answers them with fail). */
static zipw_box *check_new_writer(lua_State *L) {
  zipw_box *b = check_writer(L);
  if (b->streaming) return b;
  chb_job_state s = writer_state(b, 0);
  if (s != CHB_JOB_NEW)
    luaL_error(L, "cannot add to an archive writer that has started (%s)", chb_job_state_name(s));
  return b;
}

/* A bad or duplicate name is a fail, not an error. */
static int add_result(lua_State *L, long i, const chb_error *err) {
  if (i < 0) return chb_push_fail(L, err);
  lua_pushinteger(L, i + 1);
  return 1;
}

static long writer_add(zipw_box *b, const char *name, const chb_piece *pieces, size_t n, int64_t size,
                       const chb_u128 *hp, chb_error *err) {
  if (b->w) return chb_zip_writer_add(b->w, name, pieces, n, size, hp, err);
  return chb_tar_writer_add(b->t, name, pieces, n, size, hp, err);
}

/*
 * w:add(name, src, size|nil, checksum|nil) -> index | fail
 * `src` is a path or a list of pieces {path, offset, length, entry=, password=}.
 */
static int zipw_add(lua_State *L) {
  zipw_box *b = check_new_writer(L);
  const char *name = luaL_checkstring(L, 2);
  lua_Integer size = luaL_optinteger(L, 4, -1);
  chb_u128 hash, *hp = NULL;
  if (!lua_isnoneornil(L, 5)) {
    if (chb_u128_from_hex(luaL_checkstring(L, 5), &hash) != 0)
      return luaL_argerror(L, 5, "expected a checksum of 32 hex digits");
    hp = &hash;
  }
  chb_error err;
  long i;
  if (lua_istable(L, 3)) {
    chb_piece *pieces;
    size_t n = check_pieces(L, 3, &pieces);
    i = writer_add(b, name, pieces, n, (int64_t)size, hp, &err);
  } else {
    chb_piece p = {luaL_checkstring(L, 3), 0, -1, NULL, NULL};
    i = writer_add(b, name, &p, 1, (int64_t)size, hp, &err);
  }
  return add_result(L, i, &err);
}

/* w:add_bytes(name, s) -> index | fail */
static int zipw_add_bytes(lua_State *L) {
  zipw_box *b = check_new_writer(L);
  const char *name = luaL_checkstring(L, 2);
  size_t len;
  const char *s = luaL_checklstring(L, 3, &len);
  chb_error err;
  long i = b->w ? chb_zip_writer_add_bytes(b->w, name, s, len, &err)
                : chb_tar_writer_add_bytes(b->t, name, s, len, &err);
  return add_result(L, i, &err);
}

/* w:start() -> true | fail; starting twice raises. After w:begin(): the
 * end of input (the writer then finishes). */
static int zipw_start(lua_State *L) {
  zipw_box *b = check_writer(L);
  chb_error err;
  int rc = b->w ? chb_zip_writer_start(b->w, &err) : chb_tar_writer_start(b->t, &err);
  if (rc != 0) {
    if (err.code == CHB_INVALID) return luaL_error(L, "%s", err.msg);
    return chb_push_fail(L, &err);
  }
  b->streaming = 0;   /* adds from now on are misuse again */
  lua_pushboolean(L, 1);
  return 1;
}

/* Streaming (issue 14): both writers have the same begin/wait_drained. */
static int writer_begin(zipw_box *b, chb_error *err) {
  return b->w ? chb_zip_writer_begin(b->w, err) : chb_tar_writer_begin(b->t, err);
}

static chb_job_state writer_wait_drained(zipw_box *b, long ms) {
  return b->w ? chb_zip_writer_wait_drained(b->w, ms) : chb_tar_writer_wait_drained(b->t, ms);
}

/* w:begin() -> true | fail: the writer's thread starts and writes entries
 * as they are added (w:add queues them; w:wait_drained waits for them;
 * w:start ends the input). */
static int zipw_begin(lua_State *L) {
  zipw_box *b = check_writer(L);
  chb_error err;
  if (writer_begin(b, &err) != 0) return chb_push_fail(L, &err);
  b->streaming = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* w:wait_drained([seconds]) -> "drained" (every entry added so far is
 * written) | "running" (time ran out) | "failed" | "cancelled" | "new"
 * (not begun). */
static int zipw_wait_drained(lua_State *L) {
  zipw_box *b = check_writer(L);
  long ms = chb_opt_timeout_ms(L, 2);
  chb_job_state s = writer_wait_drained(b, ms);
  lua_pushstring(L, s == CHB_JOB_DONE ? "drained" : chb_job_state_name(s));
  return 1;
}

/* w:wait([seconds]) -> state; as job:wait */
static int zipw_wait(lua_State *L) {
  zipw_box *b = check_writer(L);
  long ms = chb_opt_timeout_ms(L, 2);
  lua_pushstring(L, chb_job_state_name(writer_state(b, ms)));
  return 1;
}

static int zipw_cancel(lua_State *L) {
  zipw_box *b = check_writer(L);
  if (b->w) chb_zip_writer_cancel(b->w);
  else chb_tar_writer_cancel(b->t);
  return 0;
}

static int zipw_progress(lua_State *L) {
  zipw_box *b = check_writer(L);
  chb_job_progress p;
  if (b->w) chb_zip_writer_get_progress(b->w, &p);
  else chb_tar_writer_get_progress(b->t, &p);
  chb_push_progress(L, &p);
  return 1;
}

/* w:result() -> true | fail, once ended; before that it raises */
static int zipw_result(lua_State *L) {
  zipw_box *b = check_writer(L);
  chb_job_state s = writer_state(b, 0);
  if (s == CHB_JOB_NEW || s == CHB_JOB_RUNNING)
    return luaL_error(L, "archive writer has not ended (%s)", chb_job_state_name(s));
  chb_error err;
  int rc = b->w ? chb_zip_writer_result(b->w, &err) : chb_tar_writer_result(b->t, &err);
  if (rc != 0) return chb_push_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* w:entry(i) -> size, checksum (after the writer is done) */
static int zipw_entry(lua_State *L) {
  zipw_box *b = check_writer(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  uint64_t size;
  chb_u128 hash;
  int rc = i < 1 ? -1
           : b->w ? chb_zip_writer_entry_result(b->w, (size_t)(i - 1), &size, &hash)
                  : chb_tar_writer_entry_result(b->t, (size_t)(i - 1), &size, &hash);
  if (rc != 0)
    return luaL_error(L, "no result for entry %d (writer not done or index out of range)", (int)i);
  char hex[33];
  chb_u128_to_hex(hash, hex);
  lua_pushinteger(L, (lua_Integer)size);
  lua_pushstring(L, hex);
  return 2;
}

/* close, __gc, __close: an unfinished writer is aborted (temp files removed). */
static int zipw_close(lua_State *L) {
  zipw_box *b = luaL_checkudata(L, 1, CHB_ZIPW_MT);
  chb_zip_writer_free(b->w);
  chb_tar_writer_free(b->t);
  b->w = NULL;
  b->t = NULL;
  return 0;
}

static const luaL_Reg zipw_methods[] = {
    {"add", zipw_add},         {"add_bytes", zipw_add_bytes}, {"start", zipw_start},
    {"wait", zipw_wait},       {"progress", zipw_progress},   {"cancel", zipw_cancel},
    {"result", zipw_result},   {"entry", zipw_entry},         {"close", zipw_close},
    {"begin", zipw_begin},     {"wait_drained", zipw_wait_drained},
    {NULL, NULL}};

/* ---- chbackup.ZipReader ------------------------------------------------- */

typedef struct zipr_box {
  chb_zip_reader *r;          /* NULL once closed */
} zipr_box;

static chb_zip_reader *check_reader(lua_State *L) {
  zipr_box *b = luaL_checkudata(L, 1, CHB_ZIPR_MT);
  if (!b->r) luaL_error(L, "attempt to use a closed " CHB_ZIPR_MT);
  return b->r;
}

/* ---- chbackup.EntryStream: one entry read in chunks --------------------- */

/* A `.backup` of 240,000 files is about 45 MB: read whole into one string
 * (and a buffer as big while reading) it made an archive's peak memory.
 * Read in chunks, it costs one chunk. */
#define CHB_ESTREAM_MT "chbackup.EntryStream"
#define STREAM_CHUNK (256 * 1024)

typedef struct estream_box {
  chb_zip_file *zf;           /* a zip entry (verified when it ends), or */
  chb_source *src;            /* a tar entry's range or cursor, or */
  char *data;                 /* a small tar entry already in memory */
  size_t data_len;
  uint64_t left;              /* src: bytes still to come */
  char *name, *archive;       /* for errors */
} estream_box;

static int estream_close(lua_State *L) {
  estream_box *b = luaL_checkudata(L, 1, CHB_ESTREAM_MT);
  chb_zip_file_close(b->zf);
  chb_source_close(b->src);
  free(b->data);
  free(b->name);
  free(b->archive);
  memset(b, 0, sizeof *b);
  return 0;
}

static estream_box *new_stream(lua_State *L, const char *name, const char *archive) {
  estream_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* .., ud */
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, CHB_ESTREAM_MT);
  if (!(b->name = strdup(name)) || !(b->archive = strdup(archive))) luaL_error(L, "out of memory");
  return b;
}

/* s:read() -> chunk | nil at the end (a zip entry's CRC, size and MAC
 * checked) | fail; the stream closes itself at its end or failure */
static int estream_read(lua_State *L) {
  estream_box *b = luaL_checkudata(L, 1, CHB_ESTREAM_MT);
  chb_error err;
  if (b->data) {
    lua_pushlstring(L, b->data, b->data_len);
    free(b->data);
    b->data = NULL;
    return 1;
  }
  if (!b->zf && !b->src) return 0;
  size_t want = STREAM_CHUNK;
  if (b->src && b->left < want) want = (size_t)b->left;
  if (want == 0) {
    estream_close(L);
    return 0;
  }
  luaL_Buffer lb;
  char *out = luaL_buffinitsize(L, &lb, want);           /* .., buffer */
  ssize_t n = b->zf ? chb_zip_file_read(b->zf, out, want, &err) : chb_source_read(b->src, out, want, &err);
  if (n == 0 && b->src) {
    n = -1;
    chb_error_set(&err, CHB_CORRUPT, "entry %s of %s is truncated", b->name, b->archive);
  }
  if (n < 0) {
    lua_pop(L, 1);
    lua_pushcfunction(L, estream_close);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return chb_push_fail(L, &err);
  }
  if (n == 0) {                                            /* zip: ended, verified */
    lua_pop(L, 1);
    lua_pushcfunction(L, estream_close);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 0);
    return 0;
  }
  if (b->src) b->left -= (uint64_t)n;
  luaL_pushresultsize(&lb, (size_t)n);                     /* .., chunk */
  return 1;
}

static const luaL_Reg estream_methods[] = {{"read", estream_read}, {"close", estream_close}, {NULL, NULL}};

/* core.zip_reader(path, password|nil) -> ZipReader | fail */
static int core_zip_reader(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *password = luaL_optstring(L, 2, NULL);
  zipr_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* .., ud */
  b->r = NULL;
  luaL_setmetatable(L, CHB_ZIPR_MT);
  chb_error err;
  b->r = chb_zip_reader_shared(path, password, &err);   /* the job's workers read through it too */
  if (!b->r) return chb_push_fail(L, &err);
  return 1;
}

/* r:list() -> { {name=, size=, compressed_size=, method=, encrypted=, crc=}, ... } */
static int zipr_list(lua_State *L) {
  chb_zip_reader *r = check_reader(L);
  size_t n = chb_zip_reader_count(r);
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0); /* list */
  for (size_t i = 0; i < n; i++) {
    chb_zip_entry_info info;
    chb_error err;
    if (chb_zip_reader_stat(r, i, &info, &err) != 0) return chb_push_fail(L, &err);
    lua_createtable(L, 0, 6);                           /* list, e */
    lua_pushstring(L, info.name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)info.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)info.compressed_size);
    lua_setfield(L, -2, "compressed_size");
    const chb_codec_info *c = chb_codec_by_id(info.method);
    if (c) lua_pushstring(L, c->name);
    else lua_pushinteger(L, info.method);
    lua_setfield(L, -2, "method");
    lua_pushboolean(L, info.encrypted != 0);
    lua_setfield(L, -2, "encrypted");
    lua_pushinteger(L, (lua_Integer)info.crc);
    lua_setfield(L, -2, "crc");
    lua_rawseti(L, -2, (lua_Integer)i + 1);             /* list */
  }
  return 1;
}

/* r:entry(name) -> size, encrypted, method | nil: one entry, looked up by
 * libzip's name hash (no Lua table per entry: archives of millions of
 * files are read with memory bounded by the C reader's) */
static int zipr_entry(lua_State *L) {
  chb_zip_reader *r = check_reader(L);
  long i = chb_zip_reader_locate(r, luaL_checkstring(L, 2));
  chb_zip_entry_info info;
  chb_error err;
  if (i < 0) return 0;
  if (chb_zip_reader_stat(r, (size_t)i, &info, &err) != 0) return chb_push_fail(L, &err);
  lua_pushinteger(L, (lua_Integer)info.size);
  lua_pushboolean(L, info.encrypted != 0);
  const chb_codec_info *c = chb_codec_by_id(info.method);
  if (c) lua_pushstring(L, c->name);
  else lua_pushinteger(L, info.method);
  return 3;
}

/* r:read(name) -> string | fail: a whole (small) entry, verified */
static int zipr_read(lua_State *L) {
  chb_zip_reader *r = check_reader(L);
  const char *name = luaL_checkstring(L, 2);
  chb_error err;
  long i = chb_zip_reader_locate(r, name);
  if (i < 0) {
    chb_error_set(&err, CHB_ENOENT, "no entry %s in zip archive %s", name, chb_zip_reader_path(r));
    return chb_push_fail(L, &err);
  }
  chb_zip_entry_info info;
  if (chb_zip_reader_stat(r, (size_t)i, &info, &err) != 0) return chb_push_fail(L, &err);
  if (info.size > READ_MAX) {
    chb_error_set(&err, CHB_INVALID, "entry %s of %s is too big to read into memory (%llu bytes)",
                  name, chb_zip_reader_path(r), (unsigned long long)info.size);
    return chb_push_fail(L, &err);
  }
  /* Allocate before opening: nothing below may raise while the entry is open. */
  size_t size = (size_t)info.size;
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, size ? size : 1);  /* .., buffer */
  chb_zip_file *f = chb_zip_file_open_index(r, (size_t)i, &err);
  size_t got = 0;
  int ok = f != NULL;
  while (ok) {
    char extra;
    ssize_t k = got < size ? chb_zip_file_read(f, p + got, size - got, &err)
                           : chb_zip_file_read(f, &extra, 1, &err);
    if (k < 0) ok = 0;
    else if (k == 0) break;
    else got += (size_t)k;  /* beyond size: the reader itself fails */
  }
  chb_zip_file_close(f);
  luaL_pushresultsize(&b, ok ? got : 0);                 /* .., s */
  if (!ok) {
    lua_pop(L, 1);
    return chb_push_fail(L, &err);
  }
  return 1;
}

/* r:stream(name) -> EntryStream | fail: an entry of any size, in chunks */
static int zipr_stream(lua_State *L) {
  chb_zip_reader *r = check_reader(L);
  const char *name = luaL_checkstring(L, 2);
  chb_error err;
  long i = chb_zip_reader_locate(r, name);
  if (i < 0) {
    chb_error_set(&err, CHB_ENOENT, "no entry %s in zip archive %s", name, chb_zip_reader_path(r));
    return chb_push_fail(L, &err);
  }
  estream_box *b = new_stream(L, name, chb_zip_reader_path(r));  /* .., s */
  if (!(b->zf = chb_zip_file_open_index(r, (size_t)i, &err))) return chb_push_fail(L, &err);
  return 1;
}

static int zipr_close(lua_State *L) {
  zipr_box *b = luaL_checkudata(L, 1, CHB_ZIPR_MT);
  chb_zip_reader_release(b->r);
  b->r = NULL;
  return 0;
}

static const luaL_Reg zipr_methods[] = {
    {"list", zipr_list}, {"entry", zipr_entry}, {"read", zipr_read}, {"stream", zipr_stream},
    {"close", zipr_close}, {NULL, NULL}};

/* ---- chbackup.TarReader ------------------------------------------------- */

typedef struct tarr_box {
  chb_tar_index *x;           /* NULL once closed */
  char *path;
  int s3;                     /* > 0: path is an object key of this S3 profile */
} tarr_box;

static tarr_box *check_tar_reader(lua_State *L) {
  tarr_box *b = luaL_checkudata(L, 1, CHB_TARR_MT);
  if (!b->x) luaL_error(L, "attempt to use a closed " CHB_TARR_MT);
  return b;
}

/* core.tar_reader(path[, {s3 = id}]) -> TarReader | fail: the archive read
 * once, indexed; with s3, `path` is an object key read through that profile */
static int core_tar_reader(lua_State *L) {
  static const char *const known[] = {"s3", NULL};
  const char *path = luaL_checkstring(L, 1);
  int s3 = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    check_fields(L, 2, known);
    s3 = opt_s3(L, 2);
  }
  tarr_box *b = lua_newuserdatauv(L, sizeof *b, 0); /* .., ud */
  b->x = NULL;
  b->path = NULL;
  luaL_setmetatable(L, CHB_TARR_MT);
  chb_error err;
  if (!(b->path = strdup(path))) return luaL_error(L, "out of memory");
  b->s3 = s3;
  b->x = chb_tar_index_open(path, s3, &err);
  if (!b->x) return chb_push_fail(L, &err);
  return 1;
}

/* Raises what made a lookup in the index fail (its temporary file's I/O,
 * or out of memory): unlike a missing entry, nothing a caller can go on
 * from. The message names the archive. */
static int tar_index_fail(lua_State *L, const chb_error *err) { return luaL_error(L, "%s", err->msg); }

/* Copies entry i of the index into *e and pushes its name: the index is in
 * pages, so both are copied out. */
static void push_tar_entry_name(lua_State *L, tarr_box *b, size_t i, chb_tar_entry *e) {
  char buf[256];
  size_t len = 0;
  chb_error err;
  int rc = chb_tar_index_get(b->x, i, e, buf, sizeof buf, &len, &err);
  if (rc == -1) luaL_error(L, "no entry %d in tar archive %s", (int)i + 1, b->path);
  if (rc != 0) tar_index_fail(L, &err);
  if (len < sizeof buf) {
    lua_pushlstring(L, buf, len);
    return;
  }
  luaL_Buffer lb;                                       /* a long name: its own buffer */
  char *p = luaL_buffinitsize(L, &lb, len + 1);
  if (chb_tar_index_get(b->x, i, NULL, p, len + 1, NULL, &err) != 0) tar_index_fail(L, &err);
  luaL_pushresultsize(&lb, len);
}

/* r:list() -> { {name=, size=, offset=}, ... } in archive order; offset: of
 * the data in the file for a `.tar`, in the spool (the uncompressed data) for a compressed one */
static int tarr_list(lua_State *L) {
  tarr_box *b = check_tar_reader(L);
  size_t n = chb_tar_index_count(b->x);
  lua_createtable(L, n > INT_MAX ? INT_MAX : (int)n, 0); /* list */
  for (size_t i = 0; i < n; i++) {
    chb_tar_entry e;
    lua_createtable(L, 0, 3);                           /* list, e */
    push_tar_entry_name(L, b, i, &e);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, (lua_Integer)e.size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)e.offset);
    lua_setfield(L, -2, "offset");
    lua_rawseti(L, -2, (lua_Integer)i + 1);             /* list */
  }
  return 1;
}

/* r:entry(name) -> size, offset, position | nil: one entry by the index's
 * name hash; offset as in list, position its place in the archive (1:
 * first). Raises if the index's temporary file fails (not a missing entry). */
static int tarr_entry(lua_State *L) {
  tarr_box *b = check_tar_reader(L);
  chb_tar_entry e;
  chb_error err;
  long i = chb_tar_index_find(b->x, luaL_checkstring(L, 2), &e, &err);
  if (i == -1) return 0;
  if (i < 0) return tar_index_fail(L, &err);
  lua_pushinteger(L, (lua_Integer)e.size);
  lua_pushinteger(L, (lua_Integer)e.offset);
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 3;
}

/* r:compressed() -> boolean */
static int tarr_compressed(lua_State *L) {
  lua_pushboolean(L, chb_tar_index_compressed(check_tar_reader(L)->x));
  return 1;
}

/* r:read(name) -> string | fail: a whole (small) entry: a range of a
 * `.tar`, or of a compressed one's spool */
static int tarr_read(lua_State *L) {
  tarr_box *b = check_tar_reader(L);
  const char *name = luaL_checkstring(L, 2);
  chb_error err;
  chb_tar_entry found, *e = &found;
  long i = chb_tar_index_find(b->x, name, e, &err);
  if (i == -1) chb_error_set(&err, CHB_ENOENT, "no entry %s in tar archive %s", name, b->path);
  if (i < 0) return chb_push_fail(L, &err);
  if (e->size > READ_MAX) {
    chb_error_set(&err, CHB_INVALID, "entry %s of %s is too big to read into memory (%llu bytes)",
                  name, b->path, (unsigned long long)e->size);
    return chb_push_fail(L, &err);
  }
  chb_piece p = {b->path, e->offset, (int64_t)e->size, NULL, NULL};
  p.s3 = b->s3;
  if (chb_tar_index_compressed(b->x)) {
    p.offset = 0;
    p.entry = name;
  }
  /* Allocate before reading: nothing below may raise while the source is open. */
  size_t size = (size_t)e->size;
  luaL_Buffer lb;
  char *out = luaL_buffinitsize(L, &lb, size ? size : 1);  /* .., buffer */
  chb_source *src = chb_source_open(&p, 1, &err);
  size_t got = 0;
  int ok = src != NULL;
  while (ok && got < size) {
    ssize_t k = chb_source_read(src, out + got, size - got, &err);
    if (k == 0) chb_error_set(&err, CHB_CORRUPT, "entry %s of %s is truncated", name, b->path);
    if (k <= 0) ok = 0;
    else got += (size_t)k;
  }
  chb_source_close(src);
  luaL_pushresultsize(&lb, ok ? got : 0);                  /* .., s */
  if (!ok) {
    lua_pop(L, 1);
    return chb_push_fail(L, &err);
  }
  return 1;
}

/* r:stream(name) -> EntryStream | fail: an entry of any size, in chunks */
static int tarr_stream(lua_State *L) {
  tarr_box *tb = check_tar_reader(L);
  const char *name = luaL_checkstring(L, 2);
  chb_error err;
  chb_tar_entry found, *e = &found;
  long i = chb_tar_index_find(tb->x, name, e, &err);
  if (i == -1) chb_error_set(&err, CHB_ENOENT, "no entry %s in tar archive %s", name, tb->path);
  if (i < 0) return chb_push_fail(L, &err);
  estream_box *b = new_stream(L, name, tb->path);         /* .., s */
  chb_piece p = {tb->path, e->offset, (int64_t)e->size, NULL, NULL};
  p.s3 = tb->s3;
  if (chb_tar_index_compressed(tb->x)) {
    p.offset = 0;
    p.entry = name;
  }
  b->left = e->size;
  if (!(b->src = chb_source_open(&p, 1, &err))) return chb_push_fail(L, &err);
  return 1;
}

static int tarr_close(lua_State *L) {
  tarr_box *b = luaL_checkudata(L, 1, CHB_TARR_MT);
  chb_tar_index_close(b->x);
  b->x = NULL;
  free(b->path);
  b->path = NULL;
  return 0;
}

static const luaL_Reg tarr_methods[] = {{"list", tarr_list},   {"entry", tarr_entry}, {"compressed", tarr_compressed},
                                        {"read", tarr_read},   {"stream", tarr_stream}, {"close", tarr_close},
                                        {NULL, NULL}};

/* ---- functions ----------------------------------------------------------- */

/* core.zip_methods() -> { deflate = {min=, max=, default=}, ... } */
static int core_zip_methods(lua_State *L) {
  size_t n;
  const chb_codec_info *c = chb_codec_list(&n);
  lua_createtable(L, 0, (int)n);               /* t */
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 3);                  /* t, m */
    lua_pushinteger(L, c[i].min_level);
    lua_setfield(L, -2, "min");
    lua_pushinteger(L, c[i].max_level);
    lua_setfield(L, -2, "max");
    lua_pushinteger(L, c[i].default_level);
    lua_setfield(L, -2, "default");
    lua_setfield(L, -2, c[i].name);            /* t */
  }
  return 1;
}

static const luaL_Reg zip_funcs[] = {
    {"zip_writer", core_zip_writer},
    {"zip_reader", core_zip_reader},
    {"zip_methods", core_zip_methods},
    {"tar_writer", core_tar_writer},
    {"tar_reader", core_tar_reader},
    {NULL, NULL}};

static void create_meta(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction close) {
  luaL_newmetatable(L, name);          /* mt */
  lua_pushcfunction(L, close);         /* mt, close */
  lua_setfield(L, -2, "__gc");         /* mt */
  lua_pushcfunction(L, close);         /* mt, close */
  lua_setfield(L, -2, "__close");      /* mt */
  lua_newtable(L);                     /* mt, methods */
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");      /* mt */
  lua_pop(L, 1);
}

/* Adds the archive functions to the core table at the top of the stack. */
void chb_open_archives(lua_State *L) {
  create_meta(L, CHB_ZIPW_MT, zipw_methods, zipw_close);
  create_meta(L, CHB_ZIPR_MT, zipr_methods, zipr_close);
  create_meta(L, CHB_TARR_MT, tarr_methods, tarr_close);
  create_meta(L, CHB_ESTREAM_MT, estream_methods, estream_close);
  luaL_setfuncs(L, zip_funcs, 0);      /* core */
}
