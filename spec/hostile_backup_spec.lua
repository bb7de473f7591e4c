-- A backup is untrusted input: crafted directory backups are refused with
-- the damaged thing named, nothing is written outside the target data path,
-- and nothing is restored (no table, no part, no tmp_restore_ directory).
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local q = h.quote

-- The part of shop.orders every case damages, and one data file of it.
local PART = "data/shop/orders/202401_1_1_0"
local FILE = PART .. "/customer.bin"

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

-- Every tmp_restore_* directory and every part of restored tables under
-- the data path's store/.
local function leftovers(data)
  local ok, out = h.run("find " .. q(data .. "/store") .. " -name 'tmp_restore_*'")
  assert(ok, out)
  return out
end


describe("RESTORE of a crafted directory backup", function()
  local w, n = nil, 0
  setup(function()
    w = h.world("hostile")
    h.sql(w, "BACKUP TABLE shop.orders TO Disk('backups', 'good')")
    assert.is_truthy(manifest.read(w.backups .. "/good/.backup").by_name[FILE])
  end)

  -- A copy of the good backup, changed by `damage(dir)`; the RESTORE of it
  -- must be refused with a message matching `pattern`, restoring nothing.
  local function refused(damage, pattern)
    n = n + 1
    local name = "bad" .. n
    local dir = w.backups .. "/" .. name
    sh("cp -a " .. q(w.backups .. "/good") .. " " .. q(dir))
    damage(dir)
    local before = h.tree(w.data)
    local err = h.sql_refused(w, "RESTORE TABLE shop.orders AS shop.r" .. n .. " FROM Disk('backups', '" .. name .. "')")
    assert.matches(pattern, err)
    assert.not_matches("traceback", err)
    assert.not_matches("%.lua:%d", err)
    assert.same(before, h.tree(w.data))
    assert.equal("", leftovers(w.data))
    assert.is_false(h.exists(w.dir .. "/escaped"))
    return err
  end

  local function edit_manifest(dir, from, to)
    local text = h.read(dir .. "/.backup")
    local changed, count = text:gsub(from, to, 1)
    assert.equal(1, count, from)
    h.write(dir .. "/.backup", changed)
  end

  it("refuses a data file replaced by a symbolic link to a host file with the same bytes", function()
    refused(function(dir)
      sh("cp " .. q(dir .. "/" .. FILE) .. " " .. q(w.dir .. "/host-file"))
      sh("rm " .. q(dir .. "/" .. FILE) .. " && ln -s " .. q(w.dir .. "/host-file") .. " " .. q(dir .. "/" .. FILE))
    end, "customer%.bin.*symbolic link")
  end)

  it("refuses a table directory replaced by a symbolic link", function()
    refused(function(dir)
      sh("mv " .. q(dir .. "/data/shop/orders") .. " " .. q(w.dir .. "/orders-" .. n)
        .. " && ln -s " .. q(w.dir .. "/orders-" .. n) .. " " .. q(dir .. "/data/shop/orders"))
    end, "symbolic link")
  end)

  it("refuses a file name that climbs out of its part and the data path", function()
    refused(function(dir)
      -- five levels up from the part: <backups>/escaped as the source, and
      -- from tmp_restore_<part> in store/<xxx>/<uuid>/: the world's own dir
      sh("cp " .. q(dir .. "/" .. FILE) .. " " .. q(w.backups .. "/escaped"))
      edit_manifest(dir, "<name>" .. FILE:gsub("%p", "%%%0") .. "</name>",
        "<name>" .. PART .. "/../../../../../escaped</name>")
    end, "backup")
  end)

  it("refuses a file name that climbs out of its part into the table's directory", function()
    refused(function(dir)
      sh("cp " .. q(dir .. "/" .. FILE) .. " " .. q(dir .. "/data/shop/orders/x.bin"))
      edit_manifest(dir, "<name>" .. FILE:gsub("%p", "%%%0") .. "</name>", "<name>" .. PART .. "/sub/../../x.bin</name>")
    end, "backup")
  end)

  it("refuses a data_file outside the backup", function()
    refused(function(dir)
      edit_manifest(dir, "(<name>" .. FILE:gsub("%p", "%%%0") .. "</name><size>%d+</size><checksum>%x+</checksum>)",
        "%1<data_file>../../escaped</data_file>")
    end, "escaped")
  end)

  it("refuses a part whose file was renamed in .backup (one letter)", function()
    refused(function(dir)
      edit_manifest(dir, "<name>" .. FILE:gsub("%p", "%%%0") .. "</name>", "<name>" .. PART .. "/customer.bim</name>")
    end, "202401_1_1_0.*customer%.bi")
  end)

  it("refuses a part whose file entry was removed from .backup", function()
    refused(function(dir)
      edit_manifest(dir, "<file><name>" .. FILE:gsub("%p", "%%%0") .. "</name>.-</file>", "")
    end, "202401_1_1_0 has no customer%.bin, which its checksums%.txt lists")
  end)

  it("refuses a part whose columns_substreams.txt entry was removed (ClickHouse would detach it)", function()
    refused(function(dir)
      -- a part's copy of it (data_file): removing the stored one is refused by the manifest already
      edit_manifest(dir, "<file><name>data/shop/orders/[^<]*/columns_substreams%.txt</name><size>%d+</size>"
        .. "<checksum>%x+</checksum><data_file>[^<]*</data_file></file>", "")
    end, "part data/shop/orders/[^ ]+ has no columns_substreams%.txt, which ClickHouse needs")
  end)

  it("refuses a data file whose table name was changed in .backup", function()
    refused(function(dir)
      edit_manifest(dir, "<name>data/shop/orders/", "<name>data/shop/ordars/")
    end, "no metadata of table shop%.ordars")
  end)

  it("refuses a part whose size in .backup disagrees with its checksums.txt", function()
    refused(function(dir)
      local e = manifest.read(dir .. "/.backup").by_name[FILE]
      -- a size and checksum that agree with each other (as a forger would
      -- write them) but not with the part's checksums.txt
      local bytes = h.read(dir .. "/" .. FILE) .. "x"
      h.write(dir .. "/" .. FILE, bytes)
      edit_manifest(dir, "(<name>" .. FILE:gsub("%p", "%%%0") .. "</name>)<size>" .. e.size
        .. "</size><checksum>" .. e.checksum .. "</checksum>",
        "%1<size>" .. #bytes .. "</size><checksum>" .. require("chbackup.core").checksum(bytes) .. "</checksum>")
    end, "customer%.bin is %d+ bytes in the backup, its checksums%.txt says")
  end)

  it("refuses table metadata that holds another table's statement", function()
    refused(function(dir)
      local path = dir .. "/metadata/shop/orders.sql"
      local text = h.read(path):gsub("CREATE TABLE shop%.orders", "CREATE TABLE shop.customers", 1)
      h.write(path, text)
      local e = manifest.read(dir .. "/.backup").by_name["metadata/shop/orders.sql"]
      edit_manifest(dir, "(<name>metadata/shop/orders%.sql</name>)<size>" .. e.size .. "</size><checksum>"
        .. e.checksum .. "</checksum>", "%1<size>" .. #text .. "</size><checksum>"
        .. require("chbackup.core").checksum(text) .. "</checksum>")
    end, "metadata/shop/orders%.sql holds CREATE TABLE shop%.customers")
  end)

  it("refuses a Log table whose data file entry was removed from .backup", function()
    n = n + 1
    local name = "bad" .. n
    h.sql(w, "BACKUP TABLE logs.events TO Disk('backups', '" .. name .. "')")
    edit_manifest(w.backups .. "/" .. name, "<file><name>data/logs/events/code%.bin</name>.-</file>", "")
    local err = h.sql_refused(w, "RESTORE TABLE logs.events AS logs.r" .. n .. " FROM Disk('backups', '" .. name .. "')")
    assert.matches("has no code%.bin, which its sizes%.json lists", err)
    assert.equal("", leftovers(w.data))
  end)

  it("still restores the undamaged backup, rows counted by ClickHouse", function()
    h.sql(w, "RESTORE TABLE shop.orders AS shop.good FROM Disk('backups', 'good')")
    local a, b = h.table_digests(w.data, { { "shop", "orders" }, { "shop", "good" } })
      :match("^shop\torders\t(%d+\t%d+)\nshop\tgood\t(%d+\t%d+)\n$")
    assert.is_truthy(a)
    assert.equal(a, b)
  end)
end)


describe("RESTORE of ClickHouse's BACKUP ALL", function()
  it("restores the user databases and leaves the server's own (system, information_schema) alone", function()
    local w = h.world("all-system")
    h.clickhouse(w.data, { "BACKUP ALL TO Disk('backups', 'all')" }, w.config)
    local m = manifest.read(w.backups .. "/all/.backup")
    assert.is_truthy(m.by_name["metadata/system.sql"] or m.by_name["metadata/information_schema.sql"])
    local target = w.dir .. "/restored"
    assert(os.execute("mkdir -p " .. q(target .. "/metadata")))
    h.sql(w, "RESTORE ALL FROM Disk('backups', 'all')", target)
    for _, db in ipairs({ "system", "information_schema", "INFORMATION_SCHEMA" }) do
      assert.is_false(h.exists(target .. "/metadata/" .. db .. ".sql"), db)
      assert.is_false(h.exists(target .. "/metadata/" .. db), db)
    end
    local tables = h.expected()
    assert.equal(h.digest_text(tables), h.table_digests(target, tables))
    -- as ClickHouse: RESTORE DATABASE system restores the server tables the
    -- backup holds data of (functions, users, …; none here) and never the
    -- database itself
    h.sql(w, "RESTORE DATABASE system FROM Disk('backups', 'all')", target)
    assert.is_false(h.exists(target .. "/metadata/system.sql"))
    assert.is_false(h.exists(target .. "/metadata/system"))
    -- (ClickHouse would create a user table in its own database; chbackup, offline, refuses)
    local err = h.sql_refused(w, "RESTORE TABLE shop.orders AS system.orders FROM Disk('backups', 'all')", target)
    assert.matches("database system belongs to the server", err)
  end)
end)
