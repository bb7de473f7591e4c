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

  for _, case in ipairs({
    { kind = "a password-protected zip", base = "zbase.zip", inc = "zinc.zip", pw = "s3cret" },
    { kind = "an encrypted directory", base = "ebase", inc = "einc", pw = "s3cret" },
    { kind = "a zstd zip", base = "zsbase.zip", inc = "zsinc.zip", method = "zstd" },
    { kind = "a tar.zst", base = "tbase.tar.zst", inc = "tinc.tar.zst" },
  }) do
    it("rebases " .. case.kind .. " the same way: its container, encryption and compression kept", function()
      local w = h.world("rebase-" .. case.inc:gsub("%W", ""))
      local settings = {}
      if case.pw then
        settings[#settings + 1] = "password = '" .. case.pw .. "'"
      end
      if case.method then
        settings[#settings + 1] = "compression_method = '" .. case.method .. "'"
      end
      local function with(extra)
        local all = table.move(settings, 1, #settings, 1, {})
        all[#all + 1] = extra
        return #all > 0 and (" SETTINGS " .. table.concat(all, ", ")) or ""
      end
      h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', '" .. case.base .. "')" .. with())
      h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 20" })
      local want = h.table_digests(w.data, TABLES)
      h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', '" .. case.inc .. "')"
        .. with("base_backup = Disk('backups', '" .. case.base .. "')"))
      local pw = ""
      if case.pw then
        h.write(w.dir .. "/pw", case.pw)
        pw = " --password-file " .. q(w.dir .. "/pw")
      end
      local ok, out = run(w, "rebase" .. pw .. " " .. q("Disk('backups', '" .. case.inc .. "')"))
      assert.is_true(ok, out)
      assert.matches("^rebased\t", out)
      ok, out = run(w, "delete " .. q("Disk('backups', '" .. case.base .. "')"))
      assert.is_true(ok, out)
      ok, out = run(w, "check" .. pw .. " " .. q("Disk('backups', '" .. case.inc .. "')") .. " --read-data")
      assert.is_true(ok, out)
      local inc = w.backups .. "/" .. case.inc
      if case.inc:match("%.zip$") then
        -- a real reader: 7-Zip tests every entry (and needs the password for an encrypted one)
        local listed = select(2, h.run("7z l -slt " .. (case.pw and ("-p" .. case.pw .. " ") or "") .. q(inc)))
        assert.matches("method = " .. (case.method == "zstd" and "zstd" or "aes"), listed:lower())
        assert.is_true((h.run("7z t " .. (case.pw and ("-p" .. case.pw .. " ") or "") .. q(inc))))
        if case.pw then
          assert.is_nil((h.run("7z t -pwrong " .. q(inc))))
        end
      elseif case.inc:match("%.tar%.zst$") then
        -- a real reader: bsdtar reads the zstd-compressed tar whole
        local okt, listed = h.run("bsdtar -tf " .. q(inc))
        assert.is_true(okt, listed)
        assert.matches("\n%.backup\n", "\n" .. listed)
      else
        assert.is_truthy(h.exists(inc .. "/.chbackup-encryption"))
      end
      local left = {}
      for _, f in ipairs(require("chbackup.fsutil").list_dir(w.backups)) do
        if f:match("rebase") then
          left[#left + 1] = f
        end
      end
      assert.same({}, left)
      local target = w.dir .. "/restored"
      assert(os.execute("mkdir -p " .. q(target .. "/metadata")))
      h.sql(w, "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', '" .. case.inc .. "')"
        .. (case.pw and (" SETTINGS password = '" .. case.pw .. "'") or ""), target)
      assert.equal(want, h.table_digests(target, TABLES))
    end)
  end

  it("rebases onto another base: only what that base lacks is stored; the old base can go", function()
    local w = h.world("rebase-onto")
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'old')")
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 20" })
    local want = h.table_digests(w.data, TABLES)
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'inc') SETTINGS base_backup = Disk('backups', 'old')")
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 3" })
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'new')")
    local before = assert(manifest.read(w.backups .. "/inc/.backup"))

    local ok, out = run(w, "rebase " .. q("Disk('backups', 'inc')") .. " --onto " .. q("Disk('backups', 'new')"))
    assert.is_true(ok, out)
    local after = assert(manifest.read(w.backups .. "/inc/.backup"))
    assert.equal("Disk('backups', 'new')", after.base_backup)
    assert.equal(assert(manifest.read(w.backups .. "/new/.backup")).uuid, after.base_backup_uuid)
    assert.equal(before.uuid, after.uuid)
    -- the same files, each either in the new base or stored here
    local new_base = assert(manifest.read(w.backups .. "/new/.backup"))
    local in_new = {}
    for _, e in ipairs(new_base.files) do
      in_new[e.size .. ":" .. tostring(e.checksum)] = true
    end
    local reused = 0
    for i, e in ipairs(before.files) do
      local a = after.files[i]
      assert.equal(e.name, a.name)
      assert.equal(e.checksum, a.checksum)
      if e.size > 0 and in_new[e.size .. ":" .. tostring(e.checksum)] then
        assert.is_true(a.use_base, a.name)
        reused = reused + 1
      end
    end
    assert.is_true(reused > 0)

    ok, out = run(w, "delete " .. q("Disk('backups', 'old')"))
    assert.is_true(ok, out)
    local by_ch = w.dir .. "/by-clickhouse"
    h.clickhouse(by_ch, { "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', 'inc')" }, w.config)
    assert.equal(want, h.table_digests(by_ch, TABLES))
    local by_us = w.dir .. "/by-chbackup"
    assert(os.execute("mkdir -p " .. q(by_us .. "/metadata")))
    h.sql(w, "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', 'inc')", by_us)
    assert.equal(want, h.table_digests(by_us, TABLES))

    -- a base that relies on the backup would make a loop; the backup itself too
    ok, out = run(w, "rebase " .. q("Disk('backups', 'new')") .. " --onto " .. q("Disk('backups', 'inc')"))
    assert.is_nil(ok)
    assert.matches("Disk%('backups', 'inc'%) relies on it", out)
    ok, out = run(w, "rebase " .. q("Disk('backups', 'inc')") .. " --onto " .. q("Disk('backups', 'inc')"))
    assert.is_nil(ok)
    assert.matches("it is the same backup", out)
  end)
end)
