-- chbackup: ClickHouse BACKUP/RESTORE outside the server (C core + Lua 5.4).
--
-- From a checkout:
--   luarocks --lua-version 5.4 make rockspec/chbackup-scm-1.rockspec
-- Debian 12 ships lpeg, lfs, lxp and cjson as apt packages (lua-lpeg,
-- lua-filesystem, lua-expat, lua-cjson), which luarocks does not see as rocks.
-- Offline, declare them in a luarocks config file passed as LUAROCKS_CONFIG:
--   rocks_provided = { lpeg = "1.0.2-1", luafilesystem = "1.8.0-1",
--                      luaexpat = "1.5.1-1", ["lua-cjson"] = "2.1.0-1" }
-- (not --deps-mode none: with it, luarocks' bin/chbackup wrapper gets no
-- package.path for the tree and cannot find the modules).
-- `luarocks test` also wants busted there: busted = "2.1.1-1" (lua-busted).
-- Debian puts curl.h under a multiarch directory luarocks does not search:
--   CURL_INCDIR=/usr/include/x86_64-linux-gnu
-- The rock installs chq (spec/tools/chq.c) beside chbackup/core.so, where
-- `policy verify` finds it to count rows with embedded ClickHouse.
-- Every module of lua/ must be listed in build.install.lua
-- (spec/rockspec_spec.lua checks it).
rockspec_format = "3.0"
package = "chbackup"
version = "scm-1"

source = {
  url = "git+https://example.invalid/chbackup.git", -- TODO: the project's public repository
}

description = {
  summary = "ClickHouse BACKUP and RESTORE as a toolkit outside the server",
  detailed = [[
Reads a ClickHouse data path offline and writes backups in ClickHouse's own
format (.backup manifest, metadata/, data/, CityHash128 checksums), and
restores backups ClickHouse wrote. A C core (chbackup.core) moves the bytes
on worker threads; Lua decides what moves. Includes the `chbackup` command.]],
  labels = { "clickhouse", "backup" },
}

dependencies = {
  "lua >= 5.4, < 5.5",
  "lpeg",          -- chbackup.sql
  "luafilesystem", -- lfs: catalog, backup, status
  "luaexpat",      -- lxp: ClickHouse XML configs
  "lua-cjson",     -- chbackup.status
}

external_dependencies = {
  LZ4 = { header = "lz4.h", library = "lz4" },
  ZSTD = { header = "zstd.h", library = "zstd" },
  LIBDEFLATE = { header = "libdeflate.h", library = "deflate" },
  CURL = { header = "curl/curl.h", library = "curl" },   -- the S3 client (chb_s3.c)
  EXPAT = { header = "expat.h", library = "expat" },     -- its XML answers
  LIBARCHIVE = { header = "archive.h", library = "archive" },   -- tar archives (chb_tar_*.c)
}

test_dependencies = { "busted" }

-- `luarocks test [-- spec/x_spec.lua ...]` from a checkout: busted under
-- Lua 5.4 through scripts/specs (luarocks 3.8's "busted" test type cannot
-- use a busted declared in rocks_provided, and would run it under 5.1).
test = { type = "command", command = "scripts/specs" }

build = {
  type = "cmake",
  -- luarocks runs: cmake -H. -Bbuild.luarocks <variables>;
  -- cmake --build build.luarocks --config Release; ... --target install.
  -- CMakeLists.txt installs core.so to ${CHB_LIBDIR}/chbackup, which luarocks
  -- then deploys as <tree>/lib/lua/5.4/chbackup/core.so.
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_C_FLAGS = "$(CFLAGS)",
    CMAKE_MODULE_LINKER_FLAGS = "$(LIBFLAG)",
    CMAKE_PREFIX_PATH = "$(LZ4_DIR);$(ZSTD_DIR);$(LIBDEFLATE_DIR);$(CURL_DIR);$(EXPAT_DIR);$(LIBARCHIVE_DIR)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CHB_LIBDIR = "$(LIBDIR)",
    CHB_TESTS = "OFF",   -- the C unit tests are for a checkout (scripts/test)
  },
  install = {
    lua = {
      chbackup = "lua/chbackup/init.lua",
      ["chbackup.backup"] = "lua/chbackup/backup.lua",
      ["chbackup.catalog"] = "lua/chbackup/catalog.lua",
      ["chbackup.chain"] = "lua/chbackup/chain.lua",
      ["chbackup.store"] = "lua/chbackup/store/init.lua",
      ["chbackup.store.dir"] = "lua/chbackup/store/dir.lua",
      ["chbackup.store.encryption"] = "lua/chbackup/store/encryption.lua",
      ["chbackup.store.s3"] = "lua/chbackup/store/s3.lua",
      ["chbackup.store.s3tar"] = "lua/chbackup/store/s3tar.lua",
      ["chbackup.store.zip"] = "lua/chbackup/store/zip.lua",
      ["chbackup.store.tar"] = "lua/chbackup/store/tar.lua",
      ["chbackup.store.archive"] = "lua/chbackup/store/archive.lua",
      ["chbackup.check"] = "lua/chbackup/check.lua",
      ["chbackup.cli"] = "lua/chbackup/cli.lua",
      ["chbackup.config"] = "lua/chbackup/config.lua",
      ["chbackup.file_plan"] = "lua/chbackup/file_plan.lua",
      ["chbackup.udf"] = "lua/chbackup/udf.lua",
      ["chbackup.server_objects"] = "lua/chbackup/server_objects.lua",
      ["chbackup.logfamily"] = "lua/chbackup/logfamily.lua",
      ["chbackup.access"] = "lua/chbackup/access.lua",
      ["chbackup.contents"] = "lua/chbackup/contents.lua",
      ["chbackup.ddl"] = "lua/chbackup/ddl.lua",
      ["chbackup.disks"] = "lua/chbackup/disks.lua",
      ["chbackup.fsutil"] = "lua/chbackup/fsutil.lua",
      ["chbackup.inspect"] = "lua/chbackup/inspect.lua",
      ["chbackup.lock"] = "lua/chbackup/lock.lua",
      ["chbackup.listing"] = "lua/chbackup/listing.lua",
      ["chbackup.manifest"] = "lua/chbackup/manifest.lua",
      ["chbackup.names"] = "lua/chbackup/names.lua",
      ["chbackup.part_check"] = "lua/chbackup/part_check.lua",
      ["chbackup.plan"] = "lua/chbackup/plan.lua",
      ["chbackup.rebase"] = "lua/chbackup/rebase.lua",
      ["chbackup.progress"] = "lua/chbackup/progress.lua",
      ["chbackup.jsonl"] = "lua/chbackup/jsonl.lua",
      ["chbackup.policy"] = "lua/chbackup/policy/init.lua",
      ["chbackup.policy.cli"] = "lua/chbackup/policy/cli.lua",
      ["chbackup.policy.junit"] = "lua/chbackup/policy/junit.lua",
      ["chbackup.policy.s3lock"] = "lua/chbackup/policy/s3lock.lua",
      ["chbackup.policy.leftovers"] = "lua/chbackup/policy/leftovers.lua",
      ["chbackup.policy.runner"] = "lua/chbackup/policy/runner.lua",
      ["chbackup.policy.counter"] = "lua/chbackup/policy/counter.lua",
      ["chbackup.policy.retention"] = "lua/chbackup/policy/retention.lua",
      ["chbackup.policy.schedule"] = "lua/chbackup/policy/schedule.lua",
      ["chbackup.policy.selection"] = "lua/chbackup/policy/selection.lua",
      ["chbackup.policy.store"] = "lua/chbackup/policy/store.lua",
      ["chbackup.policy.verify"] = "lua/chbackup/policy/verify.lua",
      ["chbackup.query"] = "lua/chbackup/query.lua",
      ["chbackup.renaming"] = "lua/chbackup/renaming.lua",
      ["chbackup.restore"] = "lua/chbackup/restore.lua",
      ["chbackup.runner"] = "lua/chbackup/runner.lua",
      ["chbackup.settings"] = "lua/chbackup/settings.lua",
      ["chbackup.sql"] = "lua/chbackup/sql.lua",
      ["chbackup.status"] = "lua/chbackup/status.lua",
      ["chbackup.uuid"] = "lua/chbackup/uuid.lua",
    },
    bin = {
      chbackup = "scripts/chbackup",
    },
  },
}
