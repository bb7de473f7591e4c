-- `chbackup rebase BACKUP`: an incremental made standalone, so that its base
-- can be deleted; ClickHouse and chbackup restore it with the same rows.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local q = h.quote
local TABLES = { { "shop", "orders" }, { "shop", "customers" }, { "logs", "events" } }

local function run(w, args)
  return h.run(string.format("%s/scripts/chbackup --config %s %s", h.ROOT, q(w.config), args))
end


describe("chbackup rebase", function()
  it("makes an incremental standalone; its base can then go; both RESTOREs give its rows", function()
    local w = h.world("rebase")
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'base')")
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 20",
      "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 3" })
    local want = h.table_digests(w.data, TABLES)
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'inc') "
      .. "SETTINGS base_backup = Disk('backups', 'base')")
    local before = assert(manifest.read(w.backups .. "/inc/.backup"))
    assert.is_truthy(before.base_backup)

    local ok, out = run(w, "rebase " .. q("Disk('backups', 'inc')"))
    assert.is_true(ok, out)
    assert.matches("^rebased\tDisk%('backups', 'inc'%)\t%d+ bytes written\n$", out)
    local after = assert(manifest.read(w.backups .. "/inc/.backup"))
    assert.is_nil(after.base_backup)
    assert.equal(before.uuid, after.uuid)
    assert.equal(#before.files, #after.files)
    for i, e in ipairs(before.files) do
      assert.equal(e.name, after.files[i].name)
      assert.equal(e.size, after.files[i].size)
      assert.equal(e.checksum, after.files[i].checksum)
    end
    assert.same({}, (function()   -- nothing left beside it
      local left = {}
      for _, f in ipairs(require("chbackup.fsutil").list_dir(w.backups)) do
        if f:match("rebase") then
          left[#left + 1] = f
        end
      end
      return left
    end)())

    ok, out = run(w, "delete " .. q("Disk('backups', 'base')"))
    assert.is_true(ok, out)
    ok, out = run(w, "check " .. q("Disk('backups', 'inc')") .. " --read-data")
    assert.is_true(ok, out)
    local by_ch = w.dir .. "/by-clickhouse"
    h.clickhouse(by_ch, { "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', 'inc')" }, w.config)
    assert.equal(want, h.table_digests(by_ch, TABLES))
    local by_us = w.dir .. "/by-chbackup"
    assert(os.execute("mkdir -p " .. q(by_us .. "/metadata")))
    h.sql(w, "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', 'inc')", by_us)
    assert.equal(want, h.table_digests(by_us, TABLES))

    ok, out = run(w, "rebase " .. q("Disk('backups', 'inc')"))
    assert.is_nil(ok)
    assert.matches("has no base: it is standalone already", out)
  end)
end)
