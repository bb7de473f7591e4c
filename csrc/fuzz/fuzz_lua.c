/*
 * libFuzzer targets of the Lua parsers of untrusted input, in an embedded
 * Lua 5.4 state: built once per target (fuzz_manifest, fuzz_sql,
 * fuzz_ddl) with CHB_FUZZ_TARGET naming it. harness.lua gives the function
 * run on each input; when the code under test raises (or breaks its
 * contract otherwise), it returns why, printed here before abort().
 *
 * Lua modules come from the source tree (lua/), chbackup.core is linked in
 * (package.preload), lxp and lpeg are Debian's, from the default cpath.
 *
 * libFuzzer sees coverage of instrumented C only; Lua code is covered by a
 * line hook that counts (previous line, line) pairs of the Lua code an
 * input ran in libFuzzer's extra counters, as edges of C code are: inputs
 * reaching new Lua lines are kept and mutated further.
 * Run with -detect_leaks=0: the Lua state keeps memory between inputs.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef CHB_FUZZ_TARGET
#error "CHB_FUZZ_TARGET must name the target"
#endif

int luaopen_chbackup_core(lua_State *state);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L; /* the one state, for every input */
static int run_ref = LUA_NOREF;

#define LUA_COUNTERS (1u << 16)
__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t lua_counters[LUA_COUNTERS];
static uintptr_t prev_loc;

static void line_hook(lua_State *S, lua_Debug *ar) {
  if (!lua_getinfo(S, "S", ar))
    return;
  /* a chunk's source string lives as long as its code: its address names it */
  uintptr_t loc = ((uintptr_t)ar->source * 0x9E3779B97F4A7C15u) ^ ((uintptr_t)ar->currentline * 0x85EBCA6Bu);
  loc ^= loc >> 29;
  lua_counters[(loc ^ prev_loc) % LUA_COUNTERS]++;
  prev_loc = loc >> 1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = luaL_newstate();
  if (!L)
    abort();
  luaL_openlibs(L);
  lua_getglobal(L, "package");                     /* package */
  lua_pushstring(L, CHB_SOURCE_DIR "/lua/?.lua;" CHB_SOURCE_DIR "/lua/?/init.lua");
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");                  /* package, preload */
  lua_pushcfunction(L, luaopen_chbackup_core);
  lua_setfield(L, -2, "chbackup.core");
  lua_pop(L, 2);
  if (luaL_loadfile(L, CHB_SOURCE_DIR "/csrc/fuzz/harness.lua") != LUA_OK) {
    fprintf(stderr, "fuzz_" CHB_FUZZ_TARGET ": %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pushstring(L, CHB_FUZZ_TARGET);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_isfunction(L, -1)) {
    fprintf(stderr, "fuzz_" CHB_FUZZ_TARGET ": harness.lua: %s\n", lua_tostring(L, -1));
    abort();
  }
  run_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_sethook(L, line_hook, LUA_MASKLINE, 0);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  prev_loc = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, run_ref);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "fuzz_" CHB_FUZZ_TARGET ": the harness raised: %s\n", lua_tostring(L, -1));
    abort();
  }
  if (lua_type(L, -1) == LUA_TSTRING) {
    fprintf(stderr, "fuzz_" CHB_FUZZ_TARGET ": %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_pop(L, 1);
  return 0;
}
