-- Incremental backups: base_backup chains, in both directions of interop
-- with real ClickHouse.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local TABLES = h.expected()

local function run(w, statement, path)
  return h.sql(w, statement, path)[1]
end
local refused = h.sql_refused


describe("incremental backups made by chbackup", function()
  local w, digest = nil, {}
  setup(function()
    w = h.world("inc")
    run(w, "BACKUP ALL TO Disk('backups', 'full')")
    digest.full = h.table_digests(w.data, TABLES)
    -- a new partition
    h.clickhouse(w.data, { "INSERT INTO shop.orders SELECT d + toIntervalMonth(6), id + 100000, customer, "
      .. "discount, status, tags, attrs FROM shop.orders WHERE toYYYYMM(d) = 202401" })
    run(w, "BACKUP ALL TO Disk('backups', 'inc1') SETTINGS base_backup = Disk('backups', 'full')")
    digest.inc1 = h.table_digests(w.data, TABLES)
    -- a merge and a Log append
    h.clickhouse(w.data, { "OPTIMIZE TABLE shop.orders PARTITION 202404 FINAL",
      "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 40" })
    run(w, "BACKUP ALL TO Disk('backups', 'inc2') SETTINGS base_backup = Disk('backups', 'inc1')")
    digest.inc2 = h.table_digests(w.data, TABLES)
    assert.are_not.equal(digest.inc1, digest.inc2)
  end)

  it("records the base and stores only what changed", function()
    local m1 = assert(manifest.read(w.backups .. "/inc1/.backup"))
    local full = assert(manifest.read(w.backups .. "/full/.backup"))
    assert.equal("Disk('backups', 'full')", m1.base_backup)
    assert.equal(full.uuid, m1.base_backup_uuid)
    local old_parts = {}
    for _, f in ipairs(full.files) do
      local part = f.name:match("^(data/[^/]+/[^/]+/[^/]+_%d+_%d+_%d+[_%d]*)/")
      if part then
        old_parts[part] = true
      end
    end
    local stored = 0
    for _, f in ipairs(m1.files) do
      local part = f.name:match("^(data/[^/]+/[^/]+/[^/]+_%d+_%d+_%d+[_%d]*)/")
      if f.size > 0 and not f.data_file and not f.use_base then
        stored = stored + 1
        -- only new parts (the new partition, and what the MVs made of it)
        assert.is_truthy(part and not old_parts[part], f.name)
      end
    end
    assert.is_true(stored > 0)
  end)

  it("stores only the tail of a Log file that grew, as ClickHouse does", function()
    local m2 = assert(manifest.read(w.backups .. "/inc2/.backup"))
    local tails = 0
    for _, f in ipairs(m2.files) do
      if f.base_size then
        tails = tails + 1
        assert.matches("^data/logs/events/", f.name)
        assert.is_true(f.use_base)
        assert.equal(f.size - f.base_size, #h.read(w.backups .. "/inc2/" .. f.name))
      end
    end
    assert.is_true(tails >= 3)
  end)

  it("restores each point of the chain with the rows of that time", function()
    for _, name in ipairs({ "full", "inc1", "inc2" }) do
      local target = w.dir .. "/restored-" .. name
      assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', '" .. name .. "')", target).status)
      assert.equal(digest[name], h.table_digests(target, TABLES), name)
    end
  end)

  it("is RESTOREd by real ClickHouse", function()
    local target = w.dir .. "/ch-inc2"
    h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', 'inc2')" }, w.config)
    assert.equal(digest.inc2, h.table_digests(target, TABLES))
  end)

  it("stores nothing but metadata for an incremental of unchanged data", function()
    run(w, "BACKUP ALL TO Disk('backups', 'same') SETTINGS base_backup = Disk('backups', 'inc2')")
    local m = assert(manifest.read(w.backups .. "/same/.backup"))
    for _, f in ipairs(m.files) do
      assert.is_true(f.size == 0 or f.use_base == true, f.name)
    end
    local files = h.tree(w.backups .. "/same")
    assert.same({ ".backup" }, files)
    local row = h.open(w):status_rows()
    row = row[#row]
    -- data files are never read: only files checksums.txt does not list
    assert.is_true(row.bytes_read < row.total_size / 2, row.bytes_read .. " of " .. row.total_size)
  end)

  it("reads only checksums.txt of a part unchanged since the base, and records what reading every file records", function()
    local function backup(statement)
      run(w, statement)
      local rows = h.open(w):status_rows()
      return rows[#rows]
    end
    -- by name, each part is found in the base; renamed (AS), none is, and
    -- every file is matched by its content (its small files hashed)
    local same = backup("BACKUP TABLE shop.orders TO Disk('backups', 'orders-same')"
      .. " SETTINGS base_backup = Disk('backups', 'inc2')")
    local renamed = backup("BACKUP TABLE shop.orders AS shop.orders_renamed TO Disk('backups', 'orders-renamed')"
      .. " SETTINGS base_backup = Disk('backups', 'inc2')")
    local function data_entries(name, prefix)
      local m = assert(manifest.read(w.backups .. "/" .. name .. "/.backup"))
      local out, n, parts = {}, 0, 0
      for _, f in ipairs(m.files) do
        local rel = f.name:sub(1, #prefix) == prefix and f.name:sub(#prefix + 1)
        if rel then
          out[rel] = { size = f.size, checksum = f.checksum, use_base = f.use_base, data_file = f.data_file }
          n = n + 1
          parts = parts + (rel:match("^[^/]+/checksums%.txt$") and 1 or 0)
        end
      end
      return out, n, parts
    end
    local a, n, parts = data_entries("orders-same", "data/shop/orders/")
    local b = data_entries("orders-renamed", "data/shop/orders_renamed/")
    assert.is_true(parts > 1 and n > parts * 5, n .. " files in " .. parts .. " parts")
    assert.same(b, a)
    for rel, f in pairs(a) do
      assert.is_true(f.size == 0 or f.use_base == true, rel)
    end
    -- one file read per part: its checksums.txt
    assert.equal(parts, same.files_read)
    assert.is_true(renamed.files_read > parts, renamed.files_read .. " files read")
    assert.same({ ".backup" }, h.tree(w.backups .. "/orders-same"))
  end)

  it("lists a backup's chain and what changed between two backups", function()
    local ch = h.open(w)
    local rows = assert(ch:chain("Disk('backups', 'inc2')"))
    assert.same({ "Disk('backups', 'inc2')", "Disk('backups', 'inc1')", "Disk('backups', 'full')" },
      { rows[1].name, rows[2].name, rows[3].name })
    assert.is_true(rows[2].stored_bytes < rows[3].stored_bytes)
    local diff, totals = assert(ch:diff("Disk('backups', 'inc1')", "Disk('backups', 'inc2')"))
    local seen = {}
    for _, r in ipairs(diff) do
      seen[r.database .. "." .. r.table .. ":" .. r.change] = true
    end
    -- the merge in 202404 replaced parts; the Log append changed logs.events
    assert.is_true(seen["shop.orders:added"] and seen["shop.orders:removed"])
    assert.is_true(seen["logs.events:changed"])
    assert.is_true(totals.added >= 1 and totals.removed >= 2)
    local ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s diff %s %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status),
      h.quote("Disk('backups', 'full')"), h.quote("Disk('backups', 'inc1')")))
    assert.is_true(ok, out)
    assert.matches("shop\torders\t202407\t202407_[%d_]+\tadded\t%d+\n", out)
  end)

  it("refuses a restore whose middle backup is gone, naming it, before writing anything", function()
    assert(os.execute("mv " .. h.quote(w.backups .. "/inc1") .. " " .. h.quote(w.backups .. "/inc1.moved")))
    local target = w.dir .. "/broken-chain"
    local err = refused(w, "RESTORE ALL FROM Disk('backups', 'inc2')", target)
    assert(os.execute("mv " .. h.quote(w.backups .. "/inc1.moved") .. " " .. h.quote(w.backups .. "/inc1")))
    assert.matches("base backup Disk%('backups', 'inc1'%) of Disk%('backups', 'inc2'%) cannot be used", err)
    assert.matches("not found", err)
    assert.same({}, h.tree(target .. "/store"))
    assert.is_nil(h.read(target .. "/metadata/shop.sql"))
  end)

  it("refuses a base that was replaced by another backup of the same name", function()
    assert(os.execute("mv " .. h.quote(w.backups .. "/full") .. " " .. h.quote(w.backups .. "/full.orig")))
    run(w, "BACKUP ALL TO Disk('backups', 'full')")
    local err = refused(w, "RESTORE ALL FROM Disk('backups', 'inc1')", w.dir .. "/replaced")
    assert(os.execute("rm -rf " .. h.quote(w.backups .. "/full") .. " && mv " .. h.quote(w.backups .. "/full.orig")
      .. " " .. h.quote(w.backups .. "/full")))
    assert.matches("base backup Disk%('backups', 'full'%) of Disk%('backups', 'inc1'%) was replaced", err)
  end)

  it("re-plans a part whose checksums.txt changed under the same name, never taking its files by name", function()
    -- two parts' directories swapped: each name now holds the other's bytes
    local sw = h.world("inc-swap")
    run(sw, "BACKUP TABLE shop.orders TO Disk('backups', 'base')")
    local dir = sw.data .. "/data/shop/orders/"
    assert(os.execute("cd " .. h.quote(dir) .. " && mv 202401_1_1_0 x && mv 202404_6_6_0 202401_1_1_0"
      .. " && mv x 202404_6_6_0"))
    run(sw, "BACKUP TABLE shop.orders TO Disk('backups', 'swapped') SETTINGS base_backup = Disk('backups', 'base')")
    local base = assert(manifest.read(sw.backups .. "/base/.backup"))
    local inc = assert(manifest.read(sw.backups .. "/swapped/.backup"))
    local p = "data/shop/orders/"
    local n = 0
    for _, pair in ipairs({ { "202401_1_1_0/", "202404_6_6_0/" }, { "202404_6_6_0/", "202401_1_1_0/" } }) do
      for _, f in ipairs(inc.files) do
        local rel = f.name:sub(1, #p + #pair[1]) == p .. pair[1] and f.name:sub(#p + #pair[1] + 1)
        if rel then
          -- the bytes of the other part, found in the base by content
          local other = assert(base.by_name[p .. pair[2] .. rel], rel)
          assert.equal(other.size, f.size, f.name)
          assert.equal(other.checksum, f.checksum, f.name)
          n = n + 1
        end
      end
      local sums = p .. pair[1] .. "checksums.txt"
      assert.are_not.equal(base.by_name[sums].checksum, inc.by_name[sums].checksum)
    end
    assert.is_true(n > 10, n .. " files")
    -- the unchanged parts' files come from the base by name, all of them
    for _, f in ipairs(base.files) do
      local e = inc.by_name[f.name]
      if not (f.name:find("/202401_1_1_0/", 1, true) or f.name:find("/202404_6_6_0/", 1, true)) then
        assert.is_truthy(e, f.name)
        assert.equal(f.checksum, e.checksum, f.name)
        assert.is_true(f.size == 0 or e.use_base == true, f.name)
      end
    end
    assert.same({ ".backup" }, h.tree(sw.backups .. "/swapped"))
  end)

  it("refuses a part whose checksums.txt is a symlink, even to the bytes the base holds", function()
    local sw = h.world("inc-symlink")
    run(sw, "BACKUP TABLE shop.orders TO Disk('backups', 'base')")
    local part = sw.data .. "/data/shop/orders/202401_1_1_0/"
    assert(os.execute("cd " .. h.quote(part) .. " && mv checksums.txt ../sums && ln -s ../sums checksums.txt"))
    local err = refused(sw, "BACKUP TABLE shop.orders TO Disk('backups', 'linked')"
      .. " SETTINGS base_backup = Disk('backups', 'base')")
    assert.matches("202401_1_1_0", err)
    assert.is_false(h.exists(sw.backups .. "/linked"))
  end)

  it("is not recorded as created when the base lacks a file it relies on", function()
    -- damage the base: a stored file of it disappears
    local victim
    for _, f in ipairs(h.tree(w.backups .. "/inc2/data/shop/orders")) do
      victim = victim or (f:match("/checksums%.txt$") and f)
    end
    local copy = w.backups .. "/inc2-copy"
    assert(os.execute("cp -a " .. h.quote(w.backups .. "/inc2") .. " " .. h.quote(copy)))
    os.remove(copy .. "/data/shop/orders/" .. victim)
    local err = refused(w, "BACKUP ALL TO Disk('backups', 'on-damaged') SETTINGS base_backup = Disk('backups', 'inc2-copy')")
    assert.matches("is incomplete: .*checksums%.txt.* is missing", err)
    assert.is_false(h.exists(w.backups .. "/on-damaged"))
    local rows = h.open(w):status_rows()
    assert.equal("BACKUP_FAILED", rows[#rows].status)
  end)
end)


describe("incremental backups and ClickHouse's own", function()
  local w
  setup(function()
    w = h.world("inc-ch")
    for _, name in ipairs({ "full", "inc1", "inc2" }) do
      assert(os.execute("cp -a " .. h.quote(h.FIXTURES .. "/ch_backups/" .. name) .. " " .. h.quote(w.backups .. "/" .. name)))
    end
  end)

  it("restores a chain that ClickHouse wrote", function()
    for _, name in ipairs({ "inc1", "inc2" }) do
      local target = w.dir .. "/from-ch-" .. name
      run(w, "RESTORE ALL FROM Disk('backups', '" .. name .. "')", target)
      assert.equal(h.digest_text(h.expected("ch_backups/expected_" .. name .. ".tsv")), h.table_digests(target, TABLES))
    end
  end)

  it("makes an incremental on a ClickHouse-written base that ClickHouse restores", function()
    run(w, "BACKUP ALL TO Disk('backups', 'ours-on-ch') SETTINGS base_backup = Disk('backups', 'full')")
    local m = assert(manifest.read(w.backups .. "/ours-on-ch/.backup"))
    local in_base = 0
    for _, f in ipairs(m.files) do
      in_base = in_base + (f.use_base and 1 or 0)
    end
    assert.is_true(in_base > #m.files / 2)
    local target = w.dir .. "/ch-from-ours"
    h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', 'ours-on-ch')" }, w.config)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
  end)
end)
