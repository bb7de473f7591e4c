/*
 * Helpers shared by the binding files (chb_core.c, chb_archive_lua.c, chb_index_lua.c): the one
 * `fail` shape, the timeout argument of wait(), and progress tables.
 */
#ifndef CHB_LUA_H
#define CHB_LUA_H

#include "chb_error.h"
#include "chb_index.h"
#include "chb_job.h"

#include <lua.h>

/* Pushes `nil, message, code` (luaL_fileresult's shape); returns 3. */
int chb_push_fail(lua_State *L, const chb_error *e);
/* wait([seconds]): none or math.huge -> -1 (forever); <= 0 -> 0 (look only). */
long chb_opt_timeout_ms(lua_State *L, int arg);
/* {state=, files_total=, files_done=, bytes_total=, bytes_done=} */
void chb_push_progress(lua_State *L, const chb_job_progress *p);
/* The open core.index at argument arg (chb_index_lua.c); raises otherwise. */
chb_index *chb_check_index(lua_State *L, int arg);

#endif
