#include "chb_lua.h"

#include <lauxlib.h>
#include <limits.h>

int chb_push_fail(lua_State *L, const chb_error *e) {
  luaL_pushfail(L);                          /* fail */
  lua_pushstring(L, e->msg);                 /* fail, msg */
  lua_pushstring(L, chb_code_name(e->code)); /* fail, msg, code */
  return 3;
}

long chb_opt_timeout_ms(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return -1;
  lua_Number s = luaL_checknumber(L, arg);
  luaL_argcheck(L, s == s, arg, "timeout is NaN");
  if (s <= 0) return 0;                  /* a deadline already past never blocks */
  if (s < (lua_Number)(LONG_MAX / 1000)) return (long)(s * 1000);
  return -1;                             /* math.huge: until it ends */
}

static void set_integer(lua_State *L, const char *name, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

void chb_push_progress(lua_State *L, const chb_job_progress *p) {
  lua_createtable(L, 0, 5);                  /* t */
  lua_pushstring(L, chb_job_state_name(p->state));
  lua_setfield(L, -2, "state");
  set_integer(L, "files_total", p->files_total);
  set_integer(L, "files_done", p->files_done);
  set_integer(L, "bytes_total", p->bytes_total);
  set_integer(L, "bytes_done", p->bytes_done);
}
