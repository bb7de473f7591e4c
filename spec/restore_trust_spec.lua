-- What a killed or refused RESTORE leaves (issue 11's last gaps), against
-- real ClickHouse: functions and access entities appear all or none (a
-- RESTORE killed with kill -9 at a named step; the next RESTORE removes or
-- finishes what it noted), an append into a Log table killed before its
-- sizes.json leaves the table as it was and its temporary files are
-- removed by the next RESTORE, system.functions / system.users restore by
-- name as in ClickHouse, and a non-empty table is refused only when the
-- backup has data for it (ClickHouse's restoreDataFromBackup).
local h = require("spec.helpers")
local q = h.quote

local ROLE = "11111111-1111-4111-8111-111111111111"
local USER = "22222222-2222-4222-8222-222222222222"
local ENTITIES = {
  [ROLE] = "ATTACH ROLE reader;\nATTACH GRANT SELECT ON d.* TO reader;\n",
  [USER] = "ATTACH USER alice DEFAULT ROLE ID('" .. ROLE .. "');\nATTACH GRANT ID('" .. ROLE .. "') TO alice;\n",
}
local FUNCTIONS = "SELECT name FROM system.functions WHERE origin = 'SQLUserDefined' ORDER BY name FORMAT TSV"

local sh, access_by_name = h.sh, h.access_by_name

local function chb(w, stmt, path)
  return h.open(w, path):execute(stmt)
end

-- A scratch world and a data path in it made by ClickHouse's statements.
local function world_with(name, statements)
  local w = h.world(name)
  h.clickhouse(w.dir .. "/src", statements, w.config)
  return w, w.dir .. "/src"
end

-- A data path with table d.t (rows 0..n-1), the functions given and ENTITIES,
-- and its BACKUP ALL Disk('backups', 'all').
local function source(w, n, functions)
  local stmts = { "CREATE DATABASE d", "CREATE TABLE d.t (x UInt32) ENGINE = MergeTree ORDER BY x",
    "INSERT INTO d.t SELECT number FROM numbers(" .. n .. ")" }
  table.move(functions, 1, #functions, #stmts + 1, stmts)
  local src = h.server_source(w, "src", stmts, ENTITIES)
  assert(chb(w, "BACKUP ALL TO Disk('backups', 'all')", src))
  return src
end

-- Files under dir whose name starts with tmp_restore_.
local function tmp_restores(dir)
  local out = {}
  for _, f in ipairs(h.tree(dir)) do
    if f:match("tmp_restore_[^/]*$") then
      out[#out + 1] = f
    end
  end
  return out
end

-- Runs the CLI in a child process that kills itself (kill -9) at a step:
-- "commit" (the lock's commit of functions and access entities, all of
-- them written under temporary names) or "rename:<pattern>:<n>" (before
-- the n-th os.rename of a path matching pattern). Returns ok, output.
local function killed_at(w, path, step, statement)
  sh("mkdir -p " .. q(path))
  local script = w.dir .. "/kill.lua"
  h.write(script, [[
local root, step = arg[1], arg[2]
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath
local core = require("chbackup.core")
local function die()
  io.stderr:write("chbackup-test: killed at " .. step .. "\n")
  os.execute("kill -9 " .. core.getpid())
end
local lock = require("chbackup.lock")
if step == "commit" then
  local restore = lock.restore
  lock.restore = function(...)
    local g, err = restore(...)
    if g then
      g.commit = die
    end
    return g, err
  end
else
  local pattern, n = step:match("^rename:(.-):(%d+)$")
  local rename, seen = os.rename, 0
  os.rename = function(a, b)
    if a:find(pattern) then
      seen = seen + 1
      if seen == tonumber(n) then
        die()
      end
    end
    return rename(a, b)
  end
end
os.exit(require("chbackup.cli").main(table.move(arg, 3, #arg, 1, {})))
]])
  -- (`; exit $?`: the subshell waits for it, its "Killed" goes to err)
  local ok, out, _, err = h.run(string.format("lua5.4 %s %s %s --path %s --config %s --status-dir %s %s; exit $?",
    q(script), q(h.ROOT), q(step), q(path), q(w.config), q(w.status), q(statement)))
  return ok, out .. err
end


describe("RESTORE of functions and access entities killed with kill -9", function()
  local w, src
  setup(function()
    w = h.world("trust-kill")
    src = source(w, 20, { "CREATE FUNCTION f1 AS (x) -> x + 1", "CREATE FUNCTION f2 AS (x) -> x * 2",
      "CREATE FUNCTION f3 AS (x) -> x - 3" })
  end)

  -- RESTORE ALL into <w.dir>/<name>, killed at step (see killed_at)
  local function restore_all_killed(name, step)
    local dst = w.dir .. "/" .. name
    local ok, out = killed_at(w, dst, step, "RESTORE ALL FROM Disk('backups', 'all')")
    assert.is_falsy(ok)
    assert.truthy(out:find("killed at " .. step, 1, true), out)
    return dst
  end

  it("before its commit leaves none of them; the next RESTORE removes their temporary files", function()
    local dst = restore_all_killed("before-commit", "commit")
    -- every file written under its temporary name, none under its own
    assert.same({ "tmp_restore_function_f1.sql", "tmp_restore_function_f2.sql", "tmp_restore_function_f3.sql" },
      h.tree(dst .. "/user_defined"))
    assert.equal(2, #tmp_restores(dst .. "/access"))
    assert.equal(#h.tree(dst .. "/access"), 2)
    assert.equal("", h.clickhouse(dst, { FUNCTIONS }, w.config))
    local ok, out = h.cli(w, "RESTORE TABLE d.t AS d.t2 FROM Disk('backups', 'all')", { path = dst })
    assert.is_true(ok, out)
    assert.truthy(out:find("removed " .. dst .. "/user_defined/tmp_restore_function_f2.sql, left by a killed RESTORE",
      1, true), out)
    assert.same({}, h.tree(dst .. "/user_defined"))
    assert.same({}, h.tree(dst .. "/access"))
    assert.equal("", h.clickhouse(dst, { FUNCTIONS }, w.config))
    assert.equal("20\n", h.clickhouse(dst, { "SELECT count() FROM d.t2" }, w.config))
  end)

  it("after its commit, between two renames: the next RESTORE finishes the set", function()
    local dst = restore_all_killed("mid-commit", "rename:/tmp_restore_[^/]*%.sql$:2")
    assert.same({ "function_f1.sql", "tmp_restore_function_f2.sql", "tmp_restore_function_f3.sql" },
      h.tree(dst .. "/user_defined"))
    assert.is_false(h.exists(dst .. "/access/need_rebuild_lists.mark"))   -- entities not yet visible
    local ok, out = h.cli(w, "RESTORE TABLE d.t AS d.t2 FROM Disk('backups', 'all')", { path = dst })
    assert.is_true(ok, out)
    assert.truthy(out:find("finished " .. dst .. "/user_defined/function_f3.sql, committed by a killed RESTORE",
      1, true), out)
    assert.same({ "function_f1.sql", "function_f2.sql", "function_f3.sql" }, h.tree(dst .. "/user_defined"))
    assert.equal("f1\nf2\nf3\n", h.clickhouse(dst, { FUNCTIONS }, w.config))
    assert.equal("21\t14\t-2\n", h.clickhouse(dst, { "SELECT f1(20), f2(7), f3(1) FORMAT TSV" }, w.config))
    assert.same(access_by_name(src .. "/access"), access_by_name(dst .. "/access"))
    assert.is_true(h.exists(dst .. "/access/need_rebuild_lists.mark"))
    assert.same({}, tmp_restores(dst))
  end)
end)


describe("an append into a non-empty Log table killed before its sizes.json", function()
  it("leaves the table as it was (ClickHouse counts the old rows); the next RESTORE removes the noted files", function()
    local w, src = world_with("trust-log", {
      "CREATE DATABASE d",
      "CREATE TABLE d.l (a UInt32, s String, arr Array(UInt8)) ENGINE = Log",
      "INSERT INTO d.l SELECT number, toString(number), [1, 2] FROM numbers(10)",
      "BACKUP TABLE d.l TO Disk('backups', 'log')",
    })
    local dst = w.dir .. "/dst"
    sh("cp -a " .. q(src) .. " " .. q(dst))
    h.clickhouse(dst, { "INSERT INTO d.l SELECT number + 100, 'old', [] FROM numbers(5)" }, w.config)
    local DIGEST = { "SELECT count(), sum(cityHash64(*)) FROM d.l FORMAT TSV" }
    local before = h.clickhouse(dst, DIGEST, w.config)
    local sizes = h.read(h.clickhouse(dst, { "SELECT data_paths[1] FROM system.tables WHERE name = 'l' FORMAT TSV" },
      w.config):match("[^\n]+") .. "sizes.json")
    -- killed before the second data file is renamed into place: the first
    -- holds the backup's bytes after its own, sizes.json the old sizes
    local stmt = "RESTORE TABLE d.l FROM Disk('backups', 'log') SETTINGS allow_non_empty_tables = true"
    local ok, out = killed_at(w, dst, "rename:tmp_restore_[^/]*%.bin%.new$:2", stmt)
    assert.is_falsy(ok)
    assert.truthy(out:find("killed at rename", 1, true), out)
    local left = tmp_restores(dst .. "/store")
    assert.is_true(#left > 0)
    local lock_text = h.read(dst .. "/.chbackup/restore.lock")
    for _, f in ipairs(left) do
      assert.truthy(lock_text:find("tmp_file " .. dst .. "/store/" .. f, 1, true), f .. " is not noted")
    end
    local dir = dst .. "/store/" .. left[1]:match("^(.*)/")
    assert.equal(sizes, h.read(dir .. "/sizes.json"))
    assert.equal(before, h.clickhouse(dst, DIGEST, w.config))
    -- the next RESTORE removes what the killed one noted, then appends
    ok, out = h.cli(w, stmt, { path = dst })
    assert.is_true(ok, out)
    assert.truthy(out:find("removed " .. dst .. "/store/" .. left[1] .. ", left by a killed RESTORE", 1, true), out)
    assert.same({}, tmp_restores(dst))
    assert.equal("25\n", h.clickhouse(dst, { "SELECT count() FROM d.l" }, w.config))
    assert.equal("20\n", h.clickhouse(dst, { "SELECT count() FROM d.l WHERE s != 'old'" }, w.config))
  end)
end)


describe("RESTORE TABLE system.functions, system.users, …", function()
  local w, src
  setup(function()
    w = h.world("trust-system")
    src = source(w, 5, { "CREATE FUNCTION f1 AS (x) -> x + 1" })
  end)

  it("restores the server's functions by name, as ClickHouse does, and nothing else", function()
    local dst, theirs = w.dir .. "/fn", w.dir .. "/fn-ch"
    assert(chb(w, "RESTORE TABLE system.functions FROM Disk('backups', 'all')", dst))
    h.clickhouse(theirs, { "RESTORE TABLE system.functions FROM Disk('backups', 'all')" }, w.config)
    local check = { FUNCTIONS, "SELECT f1(1)", "SELECT count() FROM system.tables WHERE database = 'd'" }
    assert.equal(h.clickhouse(theirs, check, w.config), h.clickhouse(dst, check, w.config))
    assert.equal("f1\n2\n0\n", h.clickhouse(dst, check, w.config))
    assert.is_false(h.exists(dst .. "/access"))
  end)

  it("restores access entities by table; one whose dependency is neither restored nor present is refused", function()
    local dst = w.dir .. "/acc"
    assert(chb(w, "RESTORE TABLE system.roles, TABLE system.users FROM Disk('backups', 'all')", dst))
    assert.same(access_by_name(src .. "/access"), access_by_name(dst .. "/access"))
    assert.same({}, h.tree(dst .. "/user_defined"))
    local _, err = chb(w, "RESTORE TABLE system.users FROM Disk('backups', 'all')", w.dir .. "/users-only")
    assert.matches("cannot resolve role reader", err)
    assert.is_false(h.exists(w.dir .. "/users-only/access"))
    -- DATABASE system: every server table of the backup
    dst = w.dir .. "/db-system"
    assert(chb(w, "RESTORE DATABASE system FROM Disk('backups', 'all')", dst))
    assert.same(access_by_name(src .. "/access"), access_by_name(dst .. "/access"))
    assert.equal("f1\n", h.clickhouse(dst, { FUNCTIONS }, w.config))
  end)

  it("refuses another name, partitions, and other system tables, naming the element", function()
    local dst = w.dir .. "/refused"
    sh("mkdir -p " .. q(dst))
    local _, err = chb(w, "RESTORE TABLE system.functions AS d.f FROM Disk('backups', 'all')", dst)
    assert.matches("cannot restore table system.functions under another name", err)
    _, err = chb(w, "RESTORE TABLE system.users PARTITION 1 FROM Disk('backups', 'all')", dst)
    assert.matches("cannot restore table system.users with PARTITIONS", err)
    _, err = chb(w, "RESTORE TABLE system.query_log FROM Disk('backups', 'all')", dst)
    assert.matches("database system belongs to the server", err)
    _, err = chb(w, "RESTORE TABLE d.t AS system.t FROM Disk('backups', 'all')", dst)
    assert.matches("database system belongs to the server", err)
    assert.same({}, h.tree(dst))
  end)
end)


describe("a non-empty target table", function()
  it("is restored into when the backup has no data for it, as ClickHouse does (MergeTree, Log)", function()
    local w, src = world_with("trust-nonempty", {
      "CREATE DATABASE d",
      "CREATE TABLE d.t (x UInt32) ENGINE = MergeTree ORDER BY x",
      "INSERT INTO d.t SELECT number FROM numbers(5)",
      "CREATE TABLE d.e (x UInt32) ENGINE = MergeTree ORDER BY x",
      "CREATE TABLE d.el (x UInt32) ENGINE = Log",
      "CREATE TABLE d.l (x UInt32) ENGINE = Log",
      "INSERT INTO d.l VALUES (1)",
    })
    assert(chb(w, "BACKUP DATABASE d TO Disk('backups', 'd')", src))
    local ours, theirs = w.dir .. "/ours", w.dir .. "/theirs"
    h.clickhouse(src, { "INSERT INTO d.e VALUES (7)", "INSERT INTO d.el VALUES (8), (9)" }, w.config)
    sh("cp -a " .. q(src) .. " " .. q(ours) .. " && cp -a " .. q(src) .. " " .. q(theirs))
    local DIGEST = { "SELECT 'e', count(), sum(x) FROM d.e", "SELECT 'el', count(), sum(x) FROM d.el" }
    local before = h.clickhouse(src, DIGEST, w.config)
    local stmt = "RESTORE TABLE d.e, TABLE d.el FROM Disk('backups', 'd')"
    h.clickhouse(theirs, { stmt }, w.config)
    local r, err = chb(w, stmt, ours)
    assert(r, err)
    assert.equal("RESTORED", r[1].status)
    assert.equal(before, h.clickhouse(theirs, DIGEST, w.config))
    assert.equal(before, h.clickhouse(ours, DIGEST, w.config))
    -- with data in the backup, both refuse
    for _, t in ipairs({ "t", "l" }) do
      _, err = chb(w, "RESTORE TABLE d." .. t .. " FROM Disk('backups', 'd')", ours)
      assert.matches("cannot restore table d." .. t .. ": it is not empty", err)
      assert.has_error(function()
        h.clickhouse(theirs, { "RESTORE TABLE d." .. t .. " FROM Disk('backups', 'd')" }, w.config)
      end)
    end
    -- structure_only adds no data: no check either, as in ClickHouse
    assert(chb(w, "RESTORE TABLE d.t FROM Disk('backups', 'd') SETTINGS structure_only = true", ours))
    h.clickhouse(theirs, { "RESTORE TABLE d.t FROM Disk('backups', 'd') SETTINGS structure_only = true" }, w.config)
    assert.equal("5\n", h.clickhouse(ours, { "SELECT count() FROM d.t" }, w.config))
  end)
end)
