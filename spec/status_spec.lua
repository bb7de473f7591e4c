-- Specs for chbackup.status: the operations log shared by processes.
local cjson = require "cjson"
local lfs = require "lfs"
local status = require "chbackup.status"
local query = require "chbackup.query"


local ROOT = "/tmp/statuswork"

local function remove_tree(path)
  if lfs.symlinkattributes(path, "mode") == "directory" then
    for entry in lfs.dir(path) do
      if entry ~= "." and entry ~= ".." then
        remove_tree(path .. "/" .. entry)
      end
    end
    lfs.rmdir(path)
  else
    os.remove(path)
  end
end

local function list_dir(path)
  local names = {}
  for entry in lfs.dir(path) do
    if entry ~= "." and entry ~= ".." then
      names[#names + 1] = entry
    end
  end
  table.sort(names)
  return names
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  return text
end

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function my_pid()
  return math.tointeger(tonumber(lfs.symlinkattributes("/proc/self",
    "target")))
end

-- A clock that moves one second per call, from a fixed instant.
local function ticking_clock(start)
  local now = start
  return function()
    now = now + 1000000
    return now
  end
end

local T0 = 1795591856561697  -- 2026-11-25 07:30:56.561697 UTC


describe("status", function()
  local dir

  before_each(function()
    lfs.mkdir(ROOT)
    dir = string.format("%s/spec-%d-%d", ROOT, my_pid() or 0,
      math.random(1, 1 << 30))
  end)

  after_each(function()
    remove_tree(dir)
  end)

  it("has system.backups' columns, in ClickHouse's order", function()
    local names, types = {}, {}
    for i, column in ipairs(status.COLUMNS) do
      names[i], types[i] = column.name, column.type
    end
    assert.same({ "id", "name", "base_backup_name", "query_id", "status",
      "error", "start_time", "end_time", "num_files", "total_size",
      "num_entries", "uncompressed_size", "compressed_size", "files_read",
      "bytes_read" }, names)
    -- as DESCRIBE system.backups prints them (26.5)
    assert.equal("Enum8('CREATING_BACKUP' = 0, 'BACKUP_CREATED' = 1, "
      .. "'BACKUP_FAILED' = 2, 'RESTORING' = 3, 'RESTORED' = 4, "
      .. "'RESTORE_FAILED' = 5, 'BACKUP_CANCELLED' = 6, "
      .. "'RESTORE_CANCELLED' = 7)", types[5])
    assert.equal("DateTime64(6)", types[7])
    assert.equal("UInt64", types[15])
    assert.equal(4, status.status_value("RESTORED"))
    assert.is_nil(status.status_value("DONE"))
  end)

  it("creates its directory, parents included", function()
    local store = assert(status.open(dir .. "/a/b/"))
    assert.equal("directory", lfs.attributes(dir .. "/a/b", "mode"))
    assert.same({}, (store:rows()))
  end)

  it("writes a record under the status directory's lock, one process at a time", function()
    -- An ASYNC parent records its child's pid while the child records its
    -- progress and its end: each writer reads, changes and writes the whole
    -- record, so a writer must wait for another's write to end, or its stale
    -- copy could put back a running status ("ended without finishing").
    local core = require("chbackup.core")
    local store = assert(status.open(dir))
    local row = assert(store:begin({ kind = "backup", name = "Disk('backups', 'r')" }))
    local held = assert(core.lock(dir .. "/.records.lock"))
    local cmd = string.format([[lua5.4 -e 'package.path = %q; package.cpath = %q
      assert(require("chbackup.status").open(%q):update(%q, { bytes_read = 7 }))' &]],
      package.path, package.cpath, dir, row.id)
    assert(os.execute(cmd))
    os.execute("sleep 0.5")
    assert.equal(0, status.open(dir):get(row.id).bytes_read)   -- waiting for the lock
    held:release(true)
    for _ = 1, 50 do
      if status.open(dir):get(row.id).bytes_read == 7 then
        break
      end
      os.execute("sleep 0.1")
    end
    assert.equal(7, status.open(dir):get(row.id).bytes_read)
  end)

  it("refuses a directory it cannot create", function()
    lfs.mkdir(dir)
    write(dir .. "/file", "x")
    local store, err = status.open(dir .. "/file/sub")
    assert.is_nil(store)
    assert.equal("cannot create directory " .. dir
      .. "/file: not a directory", err)
  end)

  it("begins, updates and finishes across two stores, as two processes",
    function()
      local writer = assert(status.open(dir, { clock = ticking_clock(T0) }))
      local reader = assert(status.open(dir))

      local row = assert(writer:begin({
        kind = "backup", name = "Disk('backups', '1.zip')",
        base_backup_name = "Disk('backups', '0.zip')", query_id = "q-1",
      }))
      assert.matches(
        "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$", row.id)
      assert.equal(36, #row.id)
      local seen = reader:get(row.id)
      assert.same({
        id = row.id, name = "Disk('backups', '1.zip')",
        base_backup_name = "Disk('backups', '0.zip')", query_id = "q-1",
        status = "CREATING_BACKUP", error = "",
        start_time = T0 + 1000000, end_time = 0,
        num_files = 0, total_size = 0, num_entries = 0,
        uncompressed_size = 0, compressed_size = 0, files_read = 0,
        bytes_read = 0, kind = "backup",
      }, seen)
      assert.same(seen, row)

      assert.is_true(writer:update(row.id, { num_files = 3,
        total_size = 7689, uncompressed_size = 2 ^ 40 }))
      seen = reader:get(row.id)
      assert.equal(3, seen.num_files)
      assert.equal(7689, seen.total_size)
      assert.equal(1099511627776, seen.uncompressed_size)
      assert.equal("integer", math.type(seen.uncompressed_size))
      assert.equal("CREATING_BACKUP", seen.status)

      assert.is_true(writer:finish(row.id, "BACKUP_CREATED"))
      seen = reader:get(row.id)
      assert.equal("BACKUP_CREATED", seen.status)
      assert.equal("", seen.error)
      assert.equal(T0 + 2000000, seen.end_time)
      assert.equal(T0 + 1000000, seen.start_time)
      assert.equal(3, seen.num_files)

      -- exactly one file per operation, no temporary file left behind
      assert.same({ row.id .. ".json" }, list_dir(dir))
    end)

  it("writes plain JSON with exact microseconds", function()
    local store = assert(status.open(dir, { clock = function() return T0 end }))
    assert(store:begin({ kind = "restore", id = "r1", pid = my_pid() }))
    local data = cjson.decode(read(dir .. "/r1.json"))
    assert.equal("RESTORING", data.status)
    assert.equal("restore", data.kind)
    assert.equal(my_pid(), math.tointeger(data.pid))
    assert.truthy(read(dir .. "/r1.json"):find("\"start_time\": "
      .. "1795591856561697,", 1, true))
  end)

  it("keeps any text in ids and error messages", function()
    local store = assert(status.open(dir))
    local id = "my id/../.x 'é'"
    local message = "Code: 598. DB::Exception: \"x\"\n\tat \\ é \0\1\127"
    assert(store:begin({ kind = "backup", id = id }))
    assert.is_true(store:finish(id, "BACKUP_FAILED", message))
    local row = status.open(dir):get(id)
    assert.equal(id, row.id)
    assert.equal(message, row.error)
    assert.equal("BACKUP_FAILED", row.status)
    -- the file stays inside the directory
    assert.same({ "my%20id%2F..%2F.x%20%27%C3%A9%27.json" }, list_dir(dir))
    assert.same({ "%2Ehidden.json" }, {
      store:path(".hidden"):match("[^/]+$") })
  end)

  it("refuses an id that already exists, running or finished", function()
    local store = assert(status.open(dir))
    assert(store:begin({ kind = "backup", id = "dup" }))
    local row, err = status.open(dir):begin({ kind = "restore", id = "dup" })
    assert.is_nil(row)
    assert.equal("operation 'dup' already exists", err)
    assert.is_true(store:finish("dup", "BACKUP_CREATED"))
    row, err = store:begin({ kind = "backup", id = "dup" })
    assert.is_nil(row)
    assert.equal("operation 'dup' already exists", err)
    assert.same({ "dup.json" }, list_dir(dir))
  end)

  it("refuses empty and over-long ids", function()
    local store = assert(status.open(dir))
    local row, err = store:begin({ kind = "backup", id = "" })
    assert.is_nil(row)
    assert.equal("operation id is empty", err)
    row, err = store:begin({ kind = "backup", id = string.rep("x", 201) })
    assert.is_nil(row)
    assert.matches("longer than 200 bytes", err)
  end)

  it("refuses to update or finish what is unknown or finished", function()
    local store = assert(status.open(dir))
    local ok, err = store:update("nope", { num_files = 1 })
    assert.is_nil(ok)
    assert.equal("no operation 'nope'", err)
    ok, err = store:finish("nope", "RESTORED")
    assert.is_nil(ok)
    assert.equal("no operation 'nope'", err)

    assert(store:begin({ kind = "restore", id = "r" }))
    ok, err = store:finish("r", "BACKUP_CREATED")
    assert.is_nil(ok)
    assert.equal("status BACKUP_CREATED does not end a restore", err)
    ok, err = store:finish("r", "RESTORING")
    assert.is_nil(ok)
    assert.equal("'RESTORING' is not a final status", err)
    ok, err = store:update("r", { files_read = -1 })
    assert.is_nil(ok)
    assert.equal("bad value for files_read: -1", err)
    ok, err = store:update("r", { bytes_read = 1.5 })
    assert.is_nil(ok)
    assert.equal("bad value for bytes_read: 1.5", err)

    assert.is_true(store:finish("r", "RESTORE_CANCELLED", "cancelled"))
    ok, err = store:update("r", { files_read = 1 })
    assert.is_nil(ok)
    assert.equal("operation 'r' is already finished (RESTORE_CANCELLED)", err)
    ok, err = store:finish("r", "RESTORED")
    assert.is_nil(ok)
    assert.equal("operation 'r' is already finished (RESTORE_CANCELLED)", err)
    assert.equal("cancelled", store:get("r").error)
  end)

  it("raises on misuse", function()
    local store = assert(status.open(dir))
    assert.has_error(function() status.open(nil) end)
    assert.has_error(function() status.open(dir, { clock = 1 }) end)
    assert.has_error(function() store:begin({ kind = "copy" }) end)
    assert.has_error(function() store:begin({ kind = "backup", name = 1 }) end)
    assert(store:begin({ kind = "backup", id = "b" }))
    assert.has_error(function() store:update("b", { status = "x" }) end)
    assert.has_error(function() store:finish("b", "BACKUP_FAILED", 42) end)
  end)

  it("lists rows by start time, then id", function()
    local times = { T0 + 5, T0, T0 + 5, T0 - 1 }
    local i = 0
    local store = assert(status.open(dir, { clock = function()
      i = i + 1
      return times[i]
    end }))
    for _, id in ipairs({ "d", "c", "a", "b" }) do
      assert(store:begin({ kind = "backup", id = id }))
    end
    local ids = {}
    for k, row in ipairs(store:rows()) do
      ids[k] = row.id
    end
    assert.same({ "b", "c", "a", "d" }, ids)
  end)

  it("leaves out files it cannot read, and says which", function()
    local store = assert(status.open(dir))
    assert(store:begin({ kind = "backup", id = "good" }))
    write(dir .. "/bad.json", "{\"id\": ")
    write(dir .. "/other.txt", "not a row")
    local rows, problems = store:rows()
    assert.equal(1, #rows)
    assert.equal("good", rows[1].id)
    assert.same({ "cannot parse operation file " .. dir .. "/bad.json" },
      problems)
    local row, err = store:get("bad")
    assert.is_nil(row)
    assert.equal("cannot parse operation file " .. dir .. "/bad.json", err)
    assert.is_nil(store:get("missing"))
  end)

  describe("liveness", function()
    it("reports a running operation of a dead process as failed",
      function()
        -- a process that has ended (and been reaped)
        local p = assert(io.popen("sh -c 'echo $$'"))
        local dead = math.tointeger(tonumber(p:read("l")))
        p:close()
        local store = assert(status.open(dir))
        assert(store:begin({ kind = "restore", id = "r", pid = dead }))
        assert(store:begin({ kind = "backup", id = "b", pid = dead }))
        assert(store:begin({ kind = "backup", id = "alive", pid = my_pid() }))
        local message = string.format(
          "process %d ended without finishing the operation", dead)
        local row = store:get("r")
        assert.equal("RESTORE_FAILED", row.status)
        assert.equal(message, row.error)
        assert.equal("BACKUP_FAILED", store:get("b").status)
        assert.equal("CREATING_BACKUP", store:get("alive").status)
        local reported = {}
        for _, listed in ipairs(store:rows()) do
          reported[listed.id] = listed.status
        end
        assert.same({ alive = "CREATING_BACKUP", b = "BACKUP_FAILED",
          r = "RESTORE_FAILED" }, reported)
        -- only reported: the file still holds what the process wrote
        assert.equal("RESTORING", cjson.decode(read(dir .. "/r.json")).status)
      end)

    it("sees a process that exits without finishing", function()
      local script = string.format([[
        package.path = %q
        local status = require "chbackup.status"
        local lfs = require "lfs"
        local pid = math.tointeger(tonumber(
          lfs.symlinkattributes("/proc/self", "target")))
        local store = assert(status.open(%q))
        assert(store:begin({ kind = "backup", id = "child", pid = pid }))
        assert(store:update("child", { num_files = 7 }))
        io.write(pid)
      ]], package.path, dir)
      local file = dir .. ".child.lua"
      write(file, script)
      local p = assert(io.popen("lua5.4 " .. file))
      local child = math.tointeger(tonumber(p:read("a")))
      local exited = p:close()
      os.remove(file)
      assert.truthy(exited)
      local row = assert(status.open(dir):get("child"))
      assert.equal("BACKUP_FAILED", row.status)
      assert.equal(string.format(
        "process %d ended without finishing the operation", child), row.error)
      assert.equal(7, row.num_files)
      assert.equal(child, row.pid)
    end)

    it("notices a reused pid", function()
      local store = assert(status.open(dir))
      assert(store:begin({ kind = "backup", id = "b", pid = my_pid() }))
      assert.equal("CREATING_BACKUP", store:get("b").status)
      local path = dir .. "/b.json"
      local text = read(path):gsub("\"pid_start\": %d+", "\"pid_start\": 1")
      write(path, text)
      assert.equal("BACKUP_FAILED", store:get("b").status)
    end)

    it("leaves finished operations and rows without pid alone", function()
      local p = assert(io.popen("sh -c 'echo $$'"))
      local dead = math.tointeger(tonumber(p:read("l")))
      p:close()
      local store = assert(status.open(dir))
      assert(store:begin({ kind = "backup", id = "done", pid = dead }))
      assert.is_true(store:finish("done", "BACKUP_CREATED"))
      assert(store:begin({ kind = "backup", id = "nopid" }))
      assert.equal("BACKUP_CREATED", store:get("done").status)
      assert.equal("CREATING_BACKUP", store:get("nopid").status)
    end)
  end)

  it("feeds query.run", function()
    local store = assert(status.open(dir, { clock = ticking_clock(T0) }))
    assert(store:begin({ kind = "backup", id = "b1", name = "Disk('b', '1')" }))
    assert(store:begin({ kind = "restore", id = "r1", name = "Disk('b', '1')" }))
    assert.is_true(store:finish("b1", "BACKUP_CREATED"))
    local text = assert(query.run({ columns = { "id", "status", "end_time" },
      order_by = { { column = "start_time", desc = true } } },
      store:rows(), status.COLUMNS, { utc = true }))
    assert.equal("r1\tRESTORING\t1970-01-01 00:00:00.000000\n"
      .. "b1\tBACKUP_CREATED\t2026-11-25 07:30:59.561697\n", text)
  end)

  it("prunes finished rows beyond the newest `keep` and older than `days`; never a running one", function()
    local store = assert(status.open(dir, { keep = 0, days = 0 }))
    local now = os.time()
    for i = 1, 6 do
      assert(store:begin({ kind = "backup", id = "b" .. i }))
      assert(store:finish("b" .. i, "BACKUP_CREATED"))
      -- b1 is 40 days old, b2..b6 one hour apart up to now
      lfs.touch(store:path("b" .. i), i == 1 and now - 40 * 86400 or now - (6 - i) * 3600)
    end
    assert(store:begin({ kind = "restore", id = "running", pid = my_pid() }))
    lfs.touch(store:path("running"), now - 90 * 86400)
    write(dir .. "/x.json.tmp.999999999", "{")
    lfs.touch(dir .. "/x.json.tmp.999999999", now - 7200)
    assert.equal(0, store:prune())
    -- the default: 30 days
    store = assert(status.open(dir))
    assert.equal(status.DEFAULT_KEEP, store.keep)
    assert.equal(1, store:prune())
    assert.same({ "b2.json", "b3.json", "b4.json", "b5.json", "b6.json", "running.json" }, list_dir(dir))
    -- keep the newest 3 finished, as an operation finishes
    store = assert(status.open(dir, { keep = 3 }))
    assert(store:begin({ kind = "backup", id = "b7" }))
    assert(store:finish("b7", "BACKUP_CREATED"))
    assert.same({ "b5.json", "b6.json", "b7.json", "running.json" }, list_dir(dir))
    assert.equal("RESTORING", store:get("running").status)
  end)

  it("refuses a negative keep or days", function()
    local store, err = status.open(dir, { keep = -1 })
    assert.is_nil(store)
    assert.matches("keep must be a number >= 0", err)
  end)
end)
