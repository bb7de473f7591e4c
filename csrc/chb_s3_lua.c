/*
 * The Lua binding of chb_s3 (the S3 client): core.s3_client{...}.
 * Registered by luaopen_chbackup_core through chb_open_s3. No logic here:
 * arguments are checked and copied, engine calls are made, results pushed.
 * Expected failures return `nil, message, code` (code "AUTH", "EACCES",
 * "ENOENT", "NO_BUCKET", "CLOCK_SKEW", "EEXIST", "EIO", ...); misuse raises.
 *
 *   local c = core.s3_client{endpoint = "http://127.0.0.1:9000", bucket = "b",
 *                            region = "us-east-1", key_id = "...", secret = "...",
 *                            path_style = true, session_token = nil, storage_class = nil}
 *   c:put(key, data)                    c:put_if_absent(key, data)
 *   c:put_file(key, path[, offset[, length]])
 *   c:upload_file(key, path)            -- one PUT up to 32 MiB, else multipart
 *   c:upload_file_multipart(key, path[, part_size])
 *   c:get(key[, offset[, length]])      -> string (at most 1 GiB)
 *   c:get_file(key, path[, offset[, length]])
 *   c:head(key)                         -> {size =, etag =}
 *   c:list(prefix[, max_keys])          -> {{key =, size =, etag =}, ...} (all pages)
 *   c:delete(key)                       c:delete_many({key, ...})
 *   c:profile()                         -> id: this client's configuration as an S3
 *                                          profile (chb_s3_store.h) for job pieces
 *                                          {key, offset, length, s3 = id} and
 *                                          destinations job:add(src, {s3 = id, key = k}, ...)
 *   c:close()                           (drops the profile too)
 */
#include "chb_error.h"
#include "chb_lua.h"
#include "chb_s3.h"
#include "chb_s3_store.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHB_S3_MT "chbackup.S3Client"
#define GET_MAX ((size_t)1 << 30)   /* c:get is for small objects; get_file streams */

void chb_open_s3(lua_State *L);

typedef struct s3_box {
  chb_s3 *s;   /* NULL once closed */
  int profile; /* the same configuration registered for jobs; 0: none */
} s3_box;

static chb_s3 *check_s3(lua_State *L) {
  s3_box *b = luaL_checkudata(L, 1, CHB_S3_MT);
  if (!b->s) luaL_error(L, "attempt to use a closed " CHB_S3_MT);
  return b->s;
}

static const char *opt_string(lua_State *L, int t, const char *name, int required) {
  lua_getfield(L, t, name);
  const char *v = NULL;
  if (lua_type(L, -1) == LUA_TSTRING) v = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1) || required) luaL_error(L, "s3_client: '%s' must be a string", name);
  lua_pop(L, 1);   /* the string stays alive in the options table */
  return v;
}

static lua_Integer opt_int(lua_State *L, int t, const char *name, lua_Integer dflt) {
  lua_getfield(L, t, name);
  lua_Integer v = dflt;
  if (!lua_isnil(L, -1)) {
    if (!lua_isinteger(L, -1)) luaL_error(L, "s3_client: '%s' must be an integer", name);
    v = lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, int t, const char *name, int dflt) {
  lua_getfield(L, t, name);
  int v = lua_isnil(L, -1) ? dflt : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* core.s3_client{endpoint=, bucket=, region=, key_id=, secret=, path_style=, ...} */
static int s3_client(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  static const char *const known[] = {"endpoint", "bucket", "region", "key_id", "secret",
                                      "session_token", "storage_class", "path_style", "max_retries", "retry_base_ms",
                                      "connect_timeout_ms", "low_speed_time_s",
                                      "request_timeout_ms", "sign_payload", "no_etag_check", NULL};
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (int i = 0; known[i]; i++) ok |= strcmp(lua_tostring(L, -2), known[i]) == 0;
    if (!ok) {
      lua_pushvalue(L, -2);
      return luaL_error(L, "s3_client: unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
  }
  chb_s3_config cfg = {
      .endpoint = opt_string(L, 1, "endpoint", 1),
      .bucket = opt_string(L, 1, "bucket", 1),
      .region = opt_string(L, 1, "region", 0),
      .key_id = opt_string(L, 1, "key_id", 1),
      .secret = opt_string(L, 1, "secret", 1),
      .session_token = opt_string(L, 1, "session_token", 0),
      .storage_class = opt_string(L, 1, "storage_class", 0),
      .path_style = opt_bool(L, 1, "path_style", 1),
      .max_retries = (int)opt_int(L, 1, "max_retries", -1),
      .retry_base_ms = (long)opt_int(L, 1, "retry_base_ms", 0),
      .connect_timeout_ms = (long)opt_int(L, 1, "connect_timeout_ms", 0),
      .low_speed_time_s = (long)opt_int(L, 1, "low_speed_time_s", 0),
      .request_timeout_ms = (long)opt_int(L, 1, "request_timeout_ms", 0),
      .sign_payload = opt_bool(L, 1, "sign_payload", 0),
      .no_etag_check = opt_bool(L, 1, "no_etag_check", 0),
  };
  s3_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->s = NULL;
  b->profile = 0;
  luaL_setmetatable(L, CHB_S3_MT);
  chb_error e;
  b->s = chb_s3_new(&cfg, &e);
  if (!b->s) return chb_push_fail(L, &e);
  int id = chb_s3_profile_add(&cfg, &e);
  if (id < 0) return chb_push_fail(L, &e);   /* collected (and closed) by the GC */
  b->profile = id;
  return 1;
}

static int s3_close(lua_State *L) {
  s3_box *b = luaL_checkudata(L, 1, CHB_S3_MT);
  chb_s3_free(b->s);
  b->s = NULL;
  if (b->profile > 0) chb_s3_profile_drop(b->profile);
  b->profile = 0;
  return 0;
}

static int m_profile(lua_State *L) {
  check_s3(L);
  lua_pushinteger(L, ((s3_box *)lua_touserdata(L, 1))->profile);
  return 1;
}

static int done(lua_State *L, int rc, const chb_error *e) {
  if (rc != 0) return chb_push_fail(L, e);
  lua_pushboolean(L, 1);
  return 1;
}

static uint64_t check_offset(lua_State *L, int arg) {
  lua_Integer v = luaL_optinteger(L, arg, 0);
  luaL_argcheck(L, v >= 0, arg, "offset must be >= 0");
  return (uint64_t)v;
}

static int64_t check_length(lua_State *L, int arg) {
  lua_Integer v = luaL_optinteger(L, arg, -1);
  luaL_argcheck(L, v >= -1, arg, "length must be >= 0 (or -1: to the end)");
  return (int64_t)v;
}

static int m_put(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  chb_error e;
  return done(L, chb_s3_put(s, key, data, len, &e), &e);
}

static int m_put_if_absent(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  chb_error e;
  return done(L, chb_s3_put_if_absent(s, key, data, len, &e), &e);
}

static int m_put_file(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  uint64_t off = check_offset(L, 4);
  int64_t len = check_length(L, 5);
  chb_error e;
  return done(L, chb_s3_put_file(s, key, path, off, len, &e), &e);
}

static int m_upload_file(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  chb_error e;
  return done(L, chb_s3_upload_file(s, key, path, &e), &e);
}

typedef struct fd_ctx {
  int fd;
  const char *path;
} fd_ctx;

static int64_t fd_read_at(void *ctx, uint64_t off, void *buf, size_t len, chb_error *e) {
  fd_ctx *f = ctx;
  ssize_t n = pread(f->fd, buf, len, (off_t)off);
  if (n < 0) return chb_error_errno(e, errno, "cannot read", f->path);
  return n;
}

static int m_upload_file_multipart(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  lua_Integer part = luaL_optinteger(L, 4, 0);
  luaL_argcheck(L, part >= 0, 4, "part size must be >= 0");
  chb_error e;
  fd_ctx f = {open(path, O_RDONLY | O_CLOEXEC), path};
  if (f.fd < 0) {
    chb_error_errno(&e, errno, "cannot open", path);
    return chb_push_fail(L, &e);
  }
  off_t size = lseek(f.fd, 0, SEEK_END);
  if (size < 0) {
    chb_error_errno(&e, errno, "cannot seek", path);
    close(f.fd);
    return chb_push_fail(L, &e);
  }
  chb_s3_source src = {fd_read_at, &f, (uint64_t)size};
  int rc = chb_s3_upload_multipart(s, key, &src, (uint64_t)part, &e);
  close(f.fd);
  return done(L, rc, &e);
}

typedef struct mem_sink {
  char *p;
  size_t len, cap;
} mem_sink;

static int mem_sink_fn(void *ctx, const void *data, size_t len, chb_error *e) {
  mem_sink *m = ctx;
  if (len > GET_MAX - m->len)
    return chb_error_set(e, CHB_INVALID, "S3 get: more than %zu bytes (use get_file)", GET_MAX);
  if (m->len + len > m->cap) {
    size_t cap = m->cap ? m->cap : 65536;
    while (cap < m->len + len) cap *= 2;
    char *p = realloc(m->p, cap);
    if (!p) return chb_error_set(e, CHB_ENOMEM, "S3 get: out of memory");
    m->p = p;
    m->cap = cap;
  }
  memcpy(m->p + m->len, data, len);
  m->len += len;
  return 0;
}

static int m_get(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  uint64_t off = check_offset(L, 3);
  int64_t len = check_length(L, 4);
  chb_error e;
  mem_sink m = {NULL, 0, 0};
  /* The sink is C (curl calls it): nothing that can raise runs inside. */
  int rc = chb_s3_get(s, key, off, len, mem_sink_fn, &m, &e);
  if (rc != 0) {
    free(m.p);
    return chb_push_fail(L, &e);
  }
  lua_pushlstring(L, m.p ? m.p : "", m.len);
  free(m.p);
  return 1;
}

static int m_get_file(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  const char *path = luaL_checkstring(L, 3);
  uint64_t off = check_offset(L, 4);
  int64_t len = check_length(L, 5);
  chb_error e;
  return done(L, chb_s3_get_file(s, key, off, len, path, &e), &e);
}

static int m_head(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  chb_error e;
  chb_s3_stat st;
  if (chb_s3_head(s, key, &st, &e) != 0) return chb_push_fail(L, &e);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)st.size);
  lua_setfield(L, -2, "size");
  lua_pushstring(L, st.etag);
  lua_setfield(L, -2, "etag");
  return 1;
}

/* Listed entries are gathered in C (the callback runs under curl), then pushed. */
typedef struct list_acc {
  struct { char *key; uint64_t size; char etag[80]; } *v;
  size_t n, cap;
} list_acc;

static int list_fn(void *ctx, const char *key, uint64_t size, const char *etag, chb_error *e) {
  list_acc *a = ctx;
  if (a->n == a->cap) {
    size_t cap = a->cap ? 2 * a->cap : 256;
    void *v = realloc(a->v, cap * sizeof *a->v);
    if (!v) return chb_error_set(e, CHB_ENOMEM, "S3 list: out of memory");
    a->v = v;
    a->cap = cap;
  }
  a->v[a->n].key = strdup(key);
  if (!a->v[a->n].key) return chb_error_set(e, CHB_ENOMEM, "S3 list: out of memory");
  a->v[a->n].size = size;
  snprintf(a->v[a->n].etag, sizeof a->v[a->n].etag, "%s", etag);
  a->n++;
  return 0;
}

static int m_list(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *prefix = luaL_optstring(L, 2, "");
  lua_Integer max_keys = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, max_keys >= 0 && max_keys <= 1000, 3, "max_keys must be 0..1000");
  chb_error e;
  list_acc a = {NULL, 0, 0};
  int rc = chb_s3_list(s, prefix, (int)max_keys, list_fn, &a, &e);
  if (rc == 0) {
    lua_createtable(L, (int)(a.n < INT32_MAX ? a.n : 0), 0);
    for (size_t i = 0; i < a.n; i++) {
      lua_createtable(L, 0, 3);
      lua_pushstring(L, a.v[i].key);
      lua_setfield(L, -2, "key");
      lua_pushinteger(L, (lua_Integer)a.v[i].size);
      lua_setfield(L, -2, "size");
      lua_pushstring(L, a.v[i].etag);
      lua_setfield(L, -2, "etag");
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
  }
  for (size_t i = 0; i < a.n; i++) free(a.v[i].key);
  free(a.v);
  return rc == 0 ? 1 : chb_push_fail(L, &e);
}

static int m_delete(lua_State *L) {
  chb_s3 *s = check_s3(L);
  const char *key = luaL_checkstring(L, 2);
  chb_error e;
  return done(L, chb_s3_delete(s, key, &e), &e);
}

static int m_delete_many(lua_State *L) {
  chb_s3 *s = check_s3(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  if (n == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  /* The strings stay owned by the table (argument 2). */
  const char **keys = lua_newuserdatauv(L, sizeof *keys * (size_t)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2, "keys must be strings");
    keys[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  chb_error e;
  return done(L, chb_s3_delete_many(s, keys, (size_t)n, &e), &e);
}

static const luaL_Reg s3_methods[] = {
    {"put", m_put},
    {"put_if_absent", m_put_if_absent},
    {"put_file", m_put_file},
    {"upload_file", m_upload_file},
    {"upload_file_multipart", m_upload_file_multipart},
    {"get", m_get},
    {"get_file", m_get_file},
    {"head", m_head},
    {"list", m_list},
    {"delete", m_delete},
    {"delete_many", m_delete_many},
    {"profile", m_profile},
    {"close", s3_close},
    {NULL, NULL}};

/* Adds core.s3_client to the core table at the top of the stack. */
void chb_open_s3(lua_State *L) {
  luaL_newmetatable(L, CHB_S3_MT);     /* core, mt */
  lua_pushcfunction(L, s3_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, s3_close);
  lua_setfield(L, -2, "__close");
  lua_newtable(L);                     /* core, mt, methods */
  luaL_setfuncs(L, s3_methods, 0);
  lua_setfield(L, -2, "__index");      /* core, mt */
  lua_pop(L, 1);                       /* core */
  lua_pushcfunction(L, s3_client);
  lua_setfield(L, -2, "s3_client");
}
