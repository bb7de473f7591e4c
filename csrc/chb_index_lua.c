/*
 * The Lua binding of chb_index (a manifest's files in one compact C
 * structure, issue 14): core.index(). Registered by luaopen_chbackup_core
 * through chb_open_index. Entries are numbered from 1 here; idx:get(i)
 * makes the Lua table of an entry on demand, in the shape manifest.parse
 * gives: {name=, size=, checksum=, use_base=, encrypted_by_disk=,
 * base_size=, base_checksum=, data_file=} (absent fields nil).
 * Out of memory raises; misuse raises.
 */
#include "chb_error.h"
#include "chb_hash.h"
#include "chb_index.h"
#include "chb_lua.h"
#include "chb_manifest.h"
#include "chb_pages.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#define CHB_INDEX_MT "chbackup.Index"

void chb_open_index(lua_State *L);

typedef struct index_box {
  chb_index *idx;   /* NULL once freed */
} index_box;

chb_index *chb_check_index(lua_State *L, int arg) {
  index_box *b = luaL_checkudata(L, arg, CHB_INDEX_MT);
  if (!b->idx) luaL_error(L, "index is closed");
  return b->idx;
}

static chb_index *check_index(lua_State *L) {
  return chb_check_index(L, 1);
}

static int check_sum(lua_State *L, int arg, chb_u128 *out) {
  if (lua_isnoneornil(L, arg)) return 0;
  if (chb_u128_from_hex(luaL_checkstring(L, arg), out) != 0)
    return luaL_argerror(L, arg, "expected a checksum of 32 hex digits");
  return 1;
}

static uint64_t check_size(lua_State *L, int arg) {
  lua_Integer n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n >= 0, arg, "a size is not negative");
  return (uint64_t)n;
}

static int opt_tristate(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? CHB_ABSENT : lua_toboolean(L, arg);
}

/* Raises what made a call on idx fail: its temporary file's I/O error
 * (a full disk), or else out of memory; what names the call. */
static int index_fail(lua_State *L, chb_index *idx, const char *what) {
  const char *io = chb_index_error(idx);
  if (io) return luaL_error(L, "%s: %s", what, io);
  return luaL_error(L, "%s: out of memory", what);
}

/* The pager the indexes of this Lua state share (one budget of
 * CHB_INDEX_BUDGET, one temporary file in $TMPDIR), made on first use and
 * kept in the registry; each index holds its own reference to it. */
typedef struct pager_box {
  chb_pager *pg;
} pager_box;

static int pager_gc(lua_State *L) {
  pager_box *p = lua_touserdata(L, 1);
  chb_pager_free(p->pg);
  p->pg = NULL;
  return 0;
}

static chb_pager *shared_pager(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, "chbackup.IndexPager") == LUA_TUSERDATA) {
    chb_pager *pg = ((pager_box *)lua_touserdata(L, -1))->pg;
    lua_pop(L, 1);
    return pg;
  }
  lua_pop(L, 1);
  pager_box *p = lua_newuserdatauv(L, sizeof *p, 0);   /* box */
  p->pg = NULL;
  lua_createtable(L, 0, 1);                            /* box, mt */
  lua_pushcfunction(L, pager_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);                             /* box */
  p->pg = chb_pager_new(CHB_INDEX_BUDGET, NULL);
  if (!p->pg) luaL_error(L, "out of memory");
  lua_setfield(L, LUA_REGISTRYINDEX, "chbackup.IndexPager");
  return p->pg;
}

/* core.index([budget [, tmpdir]]) -> an empty index. Its pages share the
 * state's budget (CHB_INDEX_BUDGET for all indexes together: bounded
 * however many a run opens); with budget, at most about budget bytes of
 * its own, the others in a temporary file in tmpdir (default $TMPDIR, or
 * /tmp). */
static int core_index(lua_State *L) {
  int own = !lua_isnoneornil(L, 1);
  lua_Integer budget = luaL_optinteger(L, 1, (lua_Integer)CHB_INDEX_BUDGET);
  const char *tmpdir = luaL_optstring(L, 2, NULL);
  luaL_argcheck(L, budget >= 0, 1, "a budget of bytes >= 0");
  chb_pager *shared = own ? NULL : shared_pager(L);
  index_box *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->idx = NULL;
  luaL_setmetatable(L, CHB_INDEX_MT);
  b->idx = own ? chb_index_new_budget((size_t)budget, tmpdir) : chb_index_new_in(shared);
  if (!b->idx) return luaL_error(L, "out of memory");
  return 1;
}

/* idx:add(name, size, checksum, use_base, encrypted_by_disk, base_size,
 * base_checksum, data_file, no_content) -> i | nil, i of the entry of that
 * name. no_content: not found by idx:find_content. */
static int index_add(lua_State *L) {
  chb_index *idx = check_index(L);
  chb_index_entry e = {0};
  e.name = luaL_checklstring(L, 2, &e.name_len);
  e.size = check_size(L, 3);
  e.has_checksum = check_sum(L, 4, &e.checksum);
  e.use_base = opt_tristate(L, 5);
  e.encrypted_by_disk = opt_tristate(L, 6);
  if (!lua_isnoneornil(L, 7)) e.has_base_size = 1, e.base_size = check_size(L, 7);
  e.has_base_checksum = check_sum(L, 8, &e.base_checksum);
  if (!lua_isnoneornil(L, 9)) e.data_file = luaL_checklstring(L, 9, &e.data_file_len);
  e.no_content = lua_toboolean(L, 10);
  size_t existing = 0;
  long i = chb_index_add(idx, &e, &existing);
  if (i == -1) {
    lua_pushnil(L);
    lua_pushinteger(L, (lua_Integer)existing + 1);
    return 2;
  }
  if (i < 0) return index_fail(L, idx, "cannot add to an index");
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

/* idx:add_dir(dir) -> count | fail: every entry of dir but . and .. added
 * by its name (size 0, no content): a table directory's entries, then
 * given in name order by idx:sorted with the memory of the index's pages,
 * not of a Lua string an entry (a table of 10^5 parts). */
static int index_add_dir(lua_State *L) {
  chb_index *idx = check_index(L);
  const char *dir = luaL_checkstring(L, 2);
  DIR *d = opendir(dir);
  if (!d) {
    chb_error err;
    chb_error_errno(&err, errno, "cannot read directory", dir);
    return chb_push_fail(L, &err);
  }
  lua_Integer count = 0;
  long rc = 0;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) break;
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    chb_index_entry e = {0};
    e.name = de->d_name, e.name_len = strlen(de->d_name);
    e.use_base = e.encrypted_by_disk = CHB_ABSENT;
    e.no_content = 1;
    rc = chb_index_add(idx, &e, NULL);
    if (rc < 0) break;   /* (-1, a name twice, is not in one directory) */
    count++;
  }
  int saved = errno;
  closedir(d);
  if (rc < 0) return index_fail(L, idx, "cannot add to an index");
  if (saved != 0) {
    chb_error err;
    chb_error_errno(&err, saved, "cannot read directory", dir);
    return chb_push_fail(L, &err);
  }
  lua_pushinteger(L, count);
  return 1;
}

static int get_entry(lua_State *L, chb_index *idx, size_t i, chb_index_entry *e);

/* idx:add_from_base(base, first, last, skip) -> files, bytes | nil, name:
 * the entries at positions first..last of base's name order (from 1; after
 * base:prefix), all but entry number `skip`, added as the files of a part
 * unchanged since that base (chb_index_add_from_base): no Lua value per
 * file. nil, name: a name already there (none added after it). */
static int index_add_from_base(lua_State *L) {
  chb_index *idx = check_index(L);
  index_box *bb = luaL_checkudata(L, 2, CHB_INDEX_MT);
  if (!bb->idx) return luaL_error(L, "index is closed");
  lua_Integer first = luaL_checkinteger(L, 3), last = luaL_checkinteger(L, 4);
  lua_Integer skip = luaL_optinteger(L, 5, 0);
  luaL_argcheck(L, bb->idx != idx, 2, "an index cannot take entries from itself");
  lua_Integer files = 0;
  uint64_t bytes = 0;
  for (lua_Integer pos = first; pos <= last; pos++) {
    long i = pos < 1 ? -1 : chb_index_sorted_at(bb->idx, (size_t)(pos - 1));
    if (i == -2) return index_fail(L, bb->idx, "cannot read a base's index");
    if (i < 0) return luaL_error(L, "position %d is not in the base's name order", (int)pos);
    if (i + 1 == skip) continue;
    size_t existing = 0;
    long n = chb_index_add_from_base(idx, bb->idx, (size_t)i, &existing);
    if (n == -1) {
      chb_index_entry e;
      get_entry(L, idx, existing, &e);
      lua_pushnil(L);
      lua_pushlstring(L, e.name, e.name_len);
      return 2;
    }
    if (n < 0) return index_fail(L, chb_index_error(bb->idx) ? bb->idx : idx, "cannot add to an index");
    chb_index_entry e;
    get_entry(L, idx, (size_t)n, &e);
    files++, bytes += e.size;
  }
  lua_pushinteger(L, files);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 2;
}

/* chb_index_get, raising when out of memory: 0, or -1 when out of range. */
static int get_entry(lua_State *L, chb_index *idx, size_t i, chb_index_entry *e) {
  int rc = chb_index_get(idx, i, e);
  if (rc == -2) return index_fail(L, idx, "cannot read an index");
  return rc;
}

static void push_hex(lua_State *L, chb_u128 v) {
  char hex[33];
  chb_u128_to_hex(v, hex);
  lua_pushlstring(L, hex, 32);
}

/* idx:get(i) -> entry table | nil */
static int index_get(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  chb_index_entry e;
  if (i < 1 || get_entry(L, idx, (size_t)(i - 1), &e) != 0) return 0;
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, e.name, e.name_len);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)e.size);
  lua_setfield(L, -2, "size");
  if (e.has_checksum) {
    push_hex(L, e.checksum);
    lua_setfield(L, -2, "checksum");
  }
  if (e.use_base != CHB_ABSENT) {
    lua_pushboolean(L, e.use_base);
    lua_setfield(L, -2, "use_base");
  }
  if (e.encrypted_by_disk != CHB_ABSENT) {
    lua_pushboolean(L, e.encrypted_by_disk);
    lua_setfield(L, -2, "encrypted_by_disk");
  }
  if (e.has_base_size) {
    lua_pushinteger(L, (lua_Integer)e.base_size);
    lua_setfield(L, -2, "base_size");
  }
  if (e.has_base_checksum) {
    push_hex(L, e.base_checksum);
    lua_setfield(L, -2, "base_checksum");
  }
  if (e.data_file) {
    lua_pushlstring(L, e.data_file, e.data_file_len);
    lua_setfield(L, -2, "data_file");
  }
  return 1;
}

/* idx:fields(i) -> name, size, checksum (nil if none) | nothing: the
 * fields most callers need, without a table */
static int index_fields(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  chb_index_entry e;
  if (i < 1 || get_entry(L, idx, (size_t)(i - 1), &e) != 0) return 0;
  lua_pushlstring(L, e.name, e.name_len);
  lua_pushinteger(L, (lua_Integer)e.size);
  if (e.has_checksum)
    push_hex(L, e.checksum);
  else
    lua_pushnil(L);
  return 3;
}

/* idx:stored(i) -> true | false: entry i's bytes are stored under its own
 * name in this backup (not in its base, not a copy of another entry's) */
static int index_stored(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  chb_index_entry e;
  if (i < 1 || get_entry(L, idx, (size_t)(i - 1), &e) != 0) return 0;
  lua_pushboolean(L, e.use_base != 1 && !e.has_base_size && !e.data_file);
  return 1;
}

/* idx:name(i) -> name | nothing */
static int index_name(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  chb_index_entry e;
  if (i < 1 || get_entry(L, idx, (size_t)(i - 1), &e) != 0) return 0;
  lua_pushlstring(L, e.name, e.name_len);
  return 1;
}

static int push_number(lua_State *L, chb_index *idx, long i) {
  if (i == -2) return index_fail(L, idx, "cannot read an index");
  if (i < 0) return 0;
  lua_pushinteger(L, (lua_Integer)i + 1);
  return 1;
}

/* idx:find(name) -> i | nil */
static int index_find(lua_State *L) {
  chb_index *idx = check_index(L);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  return push_number(L, idx, chb_index_find(idx, name, len));
}

/* idx:find_content(size, checksum) -> i of the first file of that content | nil */
static int index_find_content(lua_State *L) {
  chb_index *idx = check_index(L);
  uint64_t size = check_size(L, 2);
  chb_u128 sum;
  if (!check_sum(L, 3, &sum)) return 0;
  return push_number(L, idx, chb_index_find_content(idx, size, sum));
}

/* idx:prefix(prefix) -> first, last: positions (from 1) in name order of
 * the names starting with prefix (last < first: none); idx:sorted(pos) -> i */
static int index_prefix(lua_State *L) {
  chb_index *idx = check_index(L);
  size_t len, lo, hi;
  const char *prefix = luaL_checklstring(L, 2, &len);
  if (chb_index_prefix(idx, prefix, len, &lo, &hi) != 0) return index_fail(L, idx, "cannot sort an index");
  lua_pushinteger(L, (lua_Integer)lo + 1);
  lua_pushinteger(L, (lua_Integer)hi);
  return 2;
}

static int index_sorted(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer pos = luaL_checkinteger(L, 2);
  return push_number(L, idx, pos < 1 ? -1 : chb_index_sorted_at(idx, (size_t)(pos - 1)));
}

static int index_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)chb_index_count(check_index(L)));
  return 1;
}

static int index_memory(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)chb_index_memory(check_index(L)));
  return 1;
}

static int index_gc(lua_State *L) {
  index_box *b = luaL_checkudata(L, 1, CHB_INDEX_MT);
  chb_index_free(b->idx);
  b->idx = NULL;
  return 0;
}

/* idx:manifest_files(pos, name_order) -> text, next_pos | text, nil: the
 * <file> records of `.backup` from position pos (from 1; in name order or
 * in the order added), about 64 KiB of them; next_pos nil after the last.
 * Raises when out of memory or on an entry that cannot be written (a file
 * of size > 0 without a checksum: never in an index manifest.lua made). */
static int index_manifest_files(lua_State *L) {
  chb_index *idx = check_index(L);
  lua_Integer from = luaL_checkinteger(L, 2);
  int name_order = lua_toboolean(L, 3);
  luaL_argcheck(L, from >= 1, 2, "a position from 1");
  size_t pos = (size_t)(from - 1);
  chb_manifest_buf out = {0};
  int rc = chb_manifest_write_files(idx, name_order, &pos, &out, 64 * 1024);
  if (rc != 0) {
    free(out.p);
    if (chb_index_error(idx)) return index_fail(L, idx, "cannot write the manifest's files");
    return luaL_error(L, "cannot write the manifest's file %d (out of memory, or a file without a checksum)",
                      (int)pos + 1);
  }
  lua_pushlstring(L, out.p ? out.p : "", out.len);   /* (a raise here leaks out.p: only out of memory) */
  free(out.p);
  if (pos < chb_index_count(idx))
    lua_pushinteger(L, (lua_Integer)pos + 1);
  else
    lua_pushnil(L);
  return 2;
}

static const luaL_Reg index_methods[] = {
    {"add", index_add},
    {"add_dir", index_add_dir},
    {"add_from_base", index_add_from_base},
    {"get", index_get},
    {"fields", index_fields},
    {"name", index_name},
    {"stored", index_stored},
    {"find", index_find},
    {"find_content", index_find_content},
    {"prefix", index_prefix},
    {"sorted", index_sorted},
    {"count", index_len},
    {"memory", index_memory},
    {"manifest_files", index_manifest_files},
    {NULL, NULL}};

static const luaL_Reg index_meta[] = {{"__gc", index_gc}, {"__len", index_len}, {NULL, NULL}};

/* --- core.manifest_reader ------------------------------------------------ */

#define CHB_MANIFEST_READER_MT "chbackup.ManifestReader"

typedef struct reader_box {
  chb_manifest_read *r;   /* NULL once freed */
} reader_box;

static chb_manifest_read *check_reader(lua_State *L) {
  reader_box *b = luaL_checkudata(L, 1, CHB_MANIFEST_READER_MT);
  if (!b->r) luaL_error(L, "manifest reader is closed");
  return b->r;
}

/* core.manifest_reader(idx) -> reader: reads `.backup`'s XML, adding its
 * files to idx (anchored in the reader's user value). */
static int core_manifest_reader(lua_State *L) {
  chb_index *idx = check_index(L);
  reader_box *b = lua_newuserdatauv(L, sizeof *b, 1);   /* idx, reader */
  b->r = NULL;
  luaL_setmetatable(L, CHB_MANIFEST_READER_MT);
  lua_pushvalue(L, 1);                                   /* idx, reader, idx */
  lua_setiuservalue(L, -2, 1);                           /* idx, reader */
  b->r = chb_manifest_read_new(idx);
  if (!b->r) return luaL_error(L, "out of memory");
  return 1;
}

/* reader:feed(chunk | nil) -> true | nil, err: the next piece of the
 * document (nil: its end); err: the first structural problem. */
static int reader_feed(lua_State *L) {
  chb_manifest_read *r = check_reader(L);
  size_t n = 0;
  const char *p = luaL_optlstring(L, 2, NULL, &n);
  int rc = chb_manifest_read_feed(r, p, n, p == NULL);
  if (rc == -2) {
    lua_getiuservalue(L, 1, 1);   /* its index: the I/O error of its file, if that was it */
    index_box *ib = luaL_testudata(L, -1, CHB_INDEX_MT);
    if (ib && ib->idx && chb_index_error(ib->idx)) return index_fail(L, ib->idx, "cannot read a backup manifest");
    return luaL_error(L, "out of memory reading a backup manifest");
  }
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, chb_manifest_read_error(r));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* reader:header() -> { [field] = raw text }: the <config> scalars read */
static int reader_header(lua_State *L) {
  chb_manifest_read *r = check_reader(L);
  lua_newtable(L);
  const char *name, *value;
  for (size_t i = 0; chb_manifest_read_header(r, i, &name, &value) == 0; i++) {
    lua_pushstring(L, value);
    lua_setfield(L, -2, name);
  }
  return 1;
}

/* reader:file_error() -> the first problem of a file entry | nil */
static int reader_file_error(lua_State *L) {
  const char *e = chb_manifest_read_file_error(check_reader(L));
  if (!e) return 0;
  lua_pushstring(L, e);
  return 1;
}

/* reader:check_copies(checksum_names) -> nil | the first copy (data_file)
 * that does not name an entry of its size and checksum */
static int reader_check_copies(lua_State *L) {
  const char *e = chb_manifest_read_check_copies(check_reader(L), lua_toboolean(L, 2));
  if (!e) return 0;
  lua_pushstring(L, e);
  return 1;
}

static int reader_gc(lua_State *L) {
  reader_box *b = luaL_checkudata(L, 1, CHB_MANIFEST_READER_MT);
  chb_manifest_read_free(b->r);
  b->r = NULL;
  return 0;
}

static const luaL_Reg reader_methods[] = {
    {"feed", reader_feed}, {"header", reader_header}, {"file_error", reader_file_error},
    {"check_copies", reader_check_copies}, {"close", reader_gc}, {NULL, NULL}};

static const luaL_Reg reader_meta[] = {{"__gc", reader_gc}, {"__close", reader_gc}, {NULL, NULL}};

/* Adds core.index and core.manifest_reader to the core table at the top
 * of the stack. */
void chb_open_index(lua_State *L) {
  luaL_newmetatable(L, CHB_INDEX_MT);   /* core, mt */
  luaL_setfuncs(L, index_meta, 0);
  luaL_newlib(L, index_methods);        /* core, mt, methods */
  lua_setfield(L, -2, "__index");       /* core, mt */
  lua_pop(L, 1);
  lua_pushcfunction(L, core_index);
  lua_setfield(L, -2, "index");
  luaL_newmetatable(L, CHB_MANIFEST_READER_MT);   /* core, mt */
  luaL_setfuncs(L, reader_meta, 0);
  luaL_newlib(L, reader_methods);                 /* core, mt, methods */
  lua_setfield(L, -2, "__index");                 /* core, mt */
  lua_pop(L, 1);
  lua_pushcfunction(L, core_manifest_reader);
  lua_setfield(L, -2, "manifest_reader");
}
