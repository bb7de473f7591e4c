-- One writer per target (flock(2) locks naming their operation), and what
-- a killed run left removed by the next run to the same target.
local h = require("spec.helpers")
local core = require("chbackup.core")
local lfs = require("lfs")

local ORDERS = { { "shop", "orders" } }


-- Takes a lock as another live process would (flock conflicts between two
-- open files of one process too); its text names operation `id`.
local function hold(path, id)
  local lk = assert(core.lock(path))
  assert(lk:write("operation " .. id .. "\npid 999999\n"))
  return lk
end


-- Every tmp_restore_* entry under dir.
local function tmp_restores(dir)
  local out = {}
  for _, f in ipairs(h.tree(dir)) do
    if f:find("tmp_restore_", 1, true) then
      out[#out + 1] = f
    end
  end
  return out
end


describe("RESTORE into one data path", function()
  local w
  setup(function()
    w = h.world("locks-restore")
    h.sql(w, "BACKUP TABLE shop.orders TO Disk('backups', 'o.zip')")
  end)

  it("runs one at a time: a second is refused naming the first's operation id, the first is correct", function()
    local chbackup = require("chbackup")
    local target = w.dir .. "/two"
    local runner = require("chbackup.runner")
    local run = runner.run
    -- the first RESTORE stops (yields) when its copy is about to start
    local paused = false
    runner.run = function(...)
      if not paused then
        paused = true
        coroutine.yield()
      end
      return run(...)
    end
    local ok, err = pcall(function()
      local req = chbackup.parse("RESTORE TABLE shop.orders FROM Disk('backups', 'o.zip')")[1]
      local first = assert(h.open(w, target):start(req))
      assert.is_false(first:poll())
      assert.is_true(paused)
      local second = assert(h.open(w, target):start(req))
      local r2 = second:wait()
      assert.equal("RESTORE_FAILED", r2.status)
      assert.truthy(r2.error:find("is being restored into by operation " .. first.id, 1, true), r2.error)
      local r1 = first:wait()
      assert.equal("RESTORED", r1.status, r1.error)
    end)
    runner.run = run
    assert(ok, err)
    assert.equal(h.table_digests(w.data, ORDERS), h.table_digests(target, ORDERS))
    assert.same({}, tmp_restores(target))
    assert.is_false(h.exists(target .. "/.chbackup/restore.lock"))
  end)

  it("is refused in another process while the data path's lock is held", function()
    local target = w.dir .. "/held"
    h.sql(w, "RESTORE TABLE shop.orders AS shop.o0 FROM Disk('backups', 'o.zip')", target)
    local lk = hold(target .. "/.chbackup/restore.lock", "restore-op-1")
    local ok, out = h.cli(w, "RESTORE TABLE shop.orders FROM Disk('backups', 'o.zip')", { path = target })
    lk:release()
    assert.is_not_true(ok)
    assert.truthy(out:find("is being restored into by operation restore-op-1 (pid 999999)", 1, true), out)
  end)

  it("removes what a killed RESTORE left: tmp_restore_* parts and table directories it noted", function()
    local target = w.dir .. "/killed"
    h.sql(w, "RESTORE TABLE shop.orders AS shop.o1 FROM Disk('backups', 'o.zip')", target)
    -- what a RESTORE killed mid-copy leaves: a part under a temporary name in
    -- an existing table, and a new table's directory no metadata names yet
    local o1 = h.clickhouse(target, { "SELECT uuid FROM system.tables WHERE name = 'o1' FORMAT TSV" }):match("%S+")
    local o1_dir = target .. "/store/" .. o1:sub(1, 3) .. "/" .. o1
    assert.is_true(h.exists(o1_dir))
    local part
    for e in lfs.dir(o1_dir) do
      part = part or e:match("^%d+_%d+_%d+_%d+$")
    end
    assert(os.execute("cp -a " .. h.quote(o1_dir .. "/" .. part) .. " " .. h.quote(o1_dir .. "/tmp_restore_all_9_9_0")))
    local orphan = target .. "/store/0ff/0ff00000-0000-4000-8000-000000000001"
    assert(os.execute("mkdir -p " .. h.quote(orphan .. "/tmp_restore_all_1_1_0")))
    h.write(orphan .. "/format_version.txt", "1")
    h.write(target .. "/.chbackup/restore.lock", "operation killed-op\npid 999999\ntable_dir " .. orphan .. "\n")
    local ok, out = h.cli(w, "RESTORE TABLE shop.orders FROM Disk('backups', 'o.zip')", { path = target })
    assert.is_true(ok, out)
    assert.truthy(out:find("removed " .. o1_dir .. "/tmp_restore_all_9_9_0, left by a killed RESTORE "
      .. "(operation killed-op (pid 999999))", 1, true), out)
    assert.truthy(out:find("removed " .. orphan, 1, true), out)
    assert.same({}, tmp_restores(target))
    assert.is_false(h.exists(orphan))
    assert.is_false(h.exists(target .. "/.chbackup/restore.lock"))
    assert.equal(h.table_digests(w.data, ORDERS), h.table_digests(target, ORDERS))
    assert.equal(h.clickhouse(w.data, { "SELECT count() FROM shop.orders" }),
      h.clickhouse(target, { "SELECT count() FROM shop.o1" }))
  end)

  it("removes a database a killed RESTORE linked but did not write, so the next one is visible", function()
    local target = w.dir .. "/killed-db"
    h.sql(w, "RESTORE TABLE shop.orders AS shop.o0 FROM Disk('backups', 'o.zip')", target)
    -- killed between metadata/newdb (the symlink) and metadata/newdb.sql
    local u = "0ee00000-0000-4000-8000-000000000002"
    assert(os.execute("mkdir -p " .. h.quote(target .. "/store/0ee/" .. u)))
    assert(lfs.link("../store/0ee/" .. u, target .. "/metadata/newdb", true))
    assert(os.execute("mkdir -p " .. h.quote(target .. "/.chbackup")))
    h.write(target .. "/.chbackup/restore.lock", "operation killed-db\npid 999999\ndatabase newdb " .. u .. "\n")
    -- and one no lock file noted (an older version's)
    assert(lfs.link("../store/0ee/" .. u, target .. "/metadata/otherdb", true))
    local ok, out = h.cli(w, "RESTORE TABLE shop.orders AS newdb.o FROM Disk('backups', 'o.zip')", { path = target })
    assert.is_true(ok, out)
    assert.truthy(out:find("removed " .. target .. "/metadata/newdb, left by a killed RESTORE", 1, true), out)
    assert.is_false(h.exists(target .. "/store/0ee/" .. u))
    assert.is_false(h.exists(target .. "/metadata/otherdb"))
    assert.equal(h.clickhouse(w.data, { "SELECT count() FROM shop.orders" }),
      h.clickhouse(target, { "SELECT count() FROM newdb.o" }))
  end)
end)


describe("BACKUP to one name", function()
  local w
  setup(function()
    w = h.world("locks-backup")
  end)

  it("refuses a second BACKUP to a directory being written, naming the operation", function()
    local dir = w.backups .. "/busy"
    assert(lfs.mkdir(dir))
    local lk = hold(dir .. "/.chbackup-incomplete", "backup-op-7")
    local err = h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'busy')")
    lk:release()
    assert.truthy(err:find("backup Disk('backups', 'busy') is being written by operation backup-op-7 (pid 999999)", 1, true), err)
    assert.falsy(err:find("unfinished", 1, true))
  end)

  it("refuses a second BACKUP to a zip being written, naming the operation", function()
    local lk = hold(w.backups .. "/busy.zip.lock", "backup-op-8")
    local err = h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'busy.zip')")
    lk:release()
    assert.truthy(err:find("backup Disk('backups', 'busy.zip') is being written by operation backup-op-8 (pid 999999)", 1, true), err)
  end)

  it("removes what a killed directory BACKUP left and makes the backup", function()
    local dir = w.backups .. "/killed"
    assert(os.execute("mkdir -p " .. h.quote(dir .. "/data/shop/orders/all_1_1_0")))
    h.write(dir .. "/data/shop/orders/all_1_1_0/data.bin", "half a file")
    h.write(dir .. "/.chbackup-incomplete", "operation killed-backup\npid 999999\n")
    local ok, out = h.cli(w, "BACKUP TABLE shop.orders TO Disk('backups', 'killed')")
    assert.is_true(ok, out)
    assert.truthy(out:find("removed what a killed BACKUP (operation killed-backup (pid 999999)) left in backup "
      .. "Disk('backups', 'killed')", 1, true), out)
    assert.is_false(h.exists(dir .. "/.chbackup-incomplete"))
    assert.is_false(h.exists(dir .. "/data/shop/orders/all_1_1_0/data.bin"))
    local target = w.dir .. "/from-killed"
    h.sql(w, "RESTORE TABLE shop.orders FROM Disk('backups', 'killed')", target)
    assert.equal(h.table_digests(w.data, ORDERS), h.table_digests(target, ORDERS))
  end)

  it("a failed BACKUP leaves nothing, its marker removed last", function()
    local err = h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'f') SETTINGS base_backup = "
      .. "Disk('backups', 'missing')")
    assert.truthy(err:find("missing", 1, true), err)
    assert.is_false(h.exists(w.backups .. "/f"))
  end)
end)


describe("the status directory", function()
  it("keeps the newest --status-keep finished operations", function()
    local w = h.world("locks-status")
    for i = 1, 3 do
      local ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 's" .. i .. "')",
        { args = "--status-keep 2" })
      assert.is_true(ok, out)
    end
    local json = {}
    for e in lfs.dir(w.status) do
      if e:match("%.json$") then
        json[#json + 1] = e
      end
    end
    assert.equal(2, #json)
    local ok, out = h.cli(w, "SELECT name FROM system.backups ORDER BY start_time FORMAT TSV")
    assert.is_true(ok, out)
    assert.equal("Disk(\\'backups\\', \\'s2\\')\nDisk(\\'backups\\', \\'s3\\')\n", out)   -- TSV escapes '
    ok, out = h.cli(w, "SELECT 1 FROM system.backups", { args = "--status-days -1" })
    assert.is_not_true(ok)
    assert.truthy(out:find("option --status-days needs a number >= 0", 1, true), out)
  end)
end)


describe("a RESTORE killed with kill -9 mid-copy", function()
  it("leaves tmp_restore_* behind that the next RESTORE into the data path removes", function()
    local w = h.world("locks-kill")
    -- 24 MB of random strings in a bzip2 zip: slow enough to read to be killed
    h.clickhouse(w.data, { "CREATE TABLE shop.big (s String) ENGINE = MergeTree ORDER BY tuple()",
      "INSERT INTO shop.big SELECT randomString(1000) FROM numbers(24000)" })
    h.sql(w, "BACKUP TABLE shop.big TO Disk('backups', 'big.zip') SETTINGS compression_method = 'bzip2'")
    local target = w.dir .. "/target"
    assert(lfs.mkdir(target))
    local ok, out = h.cli(w, "RESTORE TABLE shop.big FROM Disk('backups', 'big.zip') SETTINGS threads = 1 ASYNC",
      { path = target })
    assert.is_true(ok, out)
    local id = assert(out:match("^([%x%-]+)\tRESTORING\n$"), out)
    local pid, seen
    for _ = 1, 500 do
      local row = h.read(w.status .. "/" .. id .. ".json")
      pid = row and math.tointeger(require("cjson").decode(row).pid)
      seen = #tmp_restores(target .. "/store") > 0
      if pid and seen then
        break
      end
      os.execute("sleep 0.02")
    end
    assert(seen, "no tmp_restore_* appeared")
    assert(os.execute(string.format("kill -9 %d", pid)))
    os.execute("sleep 0.2")
    ok, out = h.cli(w, "SELECT status FROM system.backups WHERE id = '" .. id .. "' FORMAT TSV")
    assert.is_true(ok, out)
    assert.equal("RESTORE_FAILED\n", out)
    assert.is_true(#tmp_restores(target .. "/store") > 0)
    -- the next RESTORE: no tmp_restore_* left, the killed run's table directory gone
    ok, out = h.cli(w, "RESTORE TABLE shop.big FROM Disk('backups', 'big.zip')", { path = target })
    assert.is_true(ok, out)
    assert.truthy(out:find("left by a killed RESTORE (operation " .. id .. " (pid " .. pid .. "))", 1, true), out)
    assert.same({}, tmp_restores(target))
    local dirs = {}
    for _, f in ipairs(h.tree(target .. "/store")) do
      dirs[f:match("^[^/]+/[^/]+")] = true
    end
    local n = 0
    for _ in pairs(dirs) do n = n + 1 end
    assert.equal(2, n)   -- the database's directory and the table's
    local BIG = { { "shop", "big" } }
    assert.equal(h.table_digests(w.data, BIG), h.table_digests(target, BIG))
  end)
end)


describe("core.lock", function()
  it("is refused while held, names the holder, and is released by the kernel when its process dies", function()
    local dir = h.tmpdir("locks-core")
    local path = dir .. "/x.lock"
    assert.is_nil(core.lock_held(path))
    -- a child process takes the lock, says so, and waits to be killed
    local child = string.format([[lua5.4 -e 'package.cpath = %q .. "/build/?.so;" .. package.cpath
      local core = require("chbackup.core")
      local lk = assert(core.lock(%q)); assert(lk:write("operation child\npid " .. core.getpid() .. "\n"))
      io.open(%q, "w"):close(); while true do os.execute("sleep 1") end' >/dev/null 2>&1 & echo $!]],
      h.ROOT, path, dir .. "/ready")
    local p = io.popen(child)
    local pid = tonumber(p:read("a"))
    p:close()
    for _ = 1, 200 do
      if h.exists(dir .. "/ready") then
        break
      end
      os.execute("sleep 0.02")
    end
    local held, text = core.lock_held(path)
    assert.is_true(held)
    assert.truthy(text:find("operation child", 1, true))
    local lk, err, code, holder = core.lock(path)
    assert.is_nil(lk)
    assert.equal("LOCKED", code)
    assert.truthy(err:find(path, 1, true))
    assert.truthy(holder:find("operation child", 1, true))
    assert(os.execute("kill -9 " .. pid))
    os.execute("sleep 0.2")
    assert.is_false(core.lock_held(path))
    local prev, created
    lk, prev, created = core.lock(path)
    assert.is_not_nil(lk)
    assert.truthy(prev:find("operation child", 1, true))
    assert.is_false(created)
    -- released with unlink: the file goes, the next lock creates it
    lk:release(true)
    assert.is_false(h.exists(path))
    lk, prev, created = core.lock(path)
    assert.equal("", prev)
    assert.is_true(created)
    lk:release(true)
  end)
end)
