-- Full BACKUP and RESTORE on a real ClickHouse data path (spec/fixtures),
-- checked against real ClickHouse: its backups, its RESTORE, its row counts.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local ALL_TABLES = h.expected()

-- Manifest entries keyed by name: {size, checksum, data_file}.
local function entries(path)
  local m = assert(manifest.read(path .. "/.backup"))
  local out = {}
  for _, f in ipairs(m.files) do
    out[f.name] = { f.size, f.checksum, f.data_file }
  end
  return out, m
end

local sql_ok = h.sql


describe("BACKUP", function()
  local w
  setup(function()
    w = h.world("backup")
    sql_ok(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'full')")
  end)

  it("writes ClickHouse's layout with the checksums ClickHouse writes for the same data", function()
    local ours = entries(w.backups .. "/full")
    local theirs = entries(h.FIXTURES .. "/ch_backups/full")
    local compared = 0
    for name, e in pairs(theirs) do
      -- ClickHouse adds generated columns.txt/count.txt to Log-family tables;
      -- chbackup copies the table's files as they are (ClickHouse restores both).
      local generated = name:match("^data/logs/[^/]+/columns%.txt$") or name:match("^data/logs/[^/]+/count%.txt$")
      if not generated then
        assert.same(e, ours[name], name)
        compared = compared + 1
      end
    end
    assert.is_true(compared > 300)
    for name in pairs(ours) do
      assert.is_not_nil(theirs[name], "not in ClickHouse's backup: " .. name)
    end
  end)

  it("stores each identical file once and every stored file matches its checksum", function()
    local es = entries(w.backups .. "/full")
    local core = require("chbackup.core")
    local dedup = 0
    for name, e in pairs(es) do
      if e[3] then
        dedup = dedup + 1
        assert.is_nil(h.read(w.backups .. "/full/" .. name))
        assert.same({ e[1], e[2] }, { es[e[3]][1], es[e[3]][2] })
      elseif e[1] > 0 then
        local data = assert(h.read(w.backups .. "/full/" .. name), name)
        assert.equal(e[1], #data)
        assert.equal(e[2], core.checksum(data))
      end
    end
    assert.is_true(dedup > 10)
  end)

  it("skips outdated parts and detached/", function()
    local es = entries(w.backups .. "/full")
    local parts = {}
    for name in pairs(es) do
      local p = name:match("^data/shop/orders/([^/]+)/")
      if p then
        parts[p] = true
      end
    end
    local expected = {}
    for line in io.lines(h.FIXTURES .. "/expected_parts.tsv") do
      local db, t, _, part = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)")
      if db == "shop" and t == "orders" then
        expected[part] = true
      end
    end
    assert.same(expected, parts)
  end)

  it("leaves out bytes of a Log file that sizes.json does not commit", function()
    local w2 = h.world("backup-log")
    local events = w2.data .. "/data/logs/events/msg.bin"
    local committed = #h.read(events)
    local f = assert(io.open(events, "ab"))
    f:write("half-written insert")
    f:close()
    sql_ok(w2, "BACKUP TABLE logs.events TO Disk('backups', 'log')")
    local es = entries(w2.backups .. "/log")
    assert.equal(committed, es["data/logs/events/msg.bin"][1])
    assert.equal(committed, #h.read(w2.backups .. "/log/data/logs/events/msg.bin"))
    local target = w2.dir .. "/restored"
    h.clickhouse(target, { "CREATE DATABASE logs", "RESTORE TABLE logs.events FROM Disk('backups', 'log')" }, w2.config)
    local want = { ALL_TABLES[1] }
    assert.equal("events", want[1][2])
    assert.equal(h.digest_text(want), h.table_digests(target, want))
  end)

  it("is RESTOREd by real ClickHouse with the same rows", function()
    local target = w.dir .. "/ch-restored"
    h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', 'full')" }, w.config)
    assert.equal(h.digest_text(ALL_TABLES), h.table_digests(target, ALL_TABLES))
  end)

  it("refuses a destination that already holds a backup", function()
    local ch = h.open(w)
    local r, err = ch:execute("BACKUP DATABASE shop TO Disk('backups', 'full')")
    assert.is_nil(r)
    assert.matches("backup Disk%('backups', 'full'%) already exists", err)
  end)

  it("backs up a table under a new name and only the partitions asked for", function()
    sql_ok(w, "BACKUP TABLE shop.orders AS shop.orders_copy PARTITIONS 202401, ID '202402' TO Disk('backups', 'part')")
    local es = entries(w.backups .. "/part")
    local partitions = {}
    for name in pairs(es) do
      assert.is_nil(name:match("^data/shop/orders/"), name)
      local p = name:match("^data/shop/orders_copy/(%d+)_")
      if p then
        partitions[p] = true
      end
    end
    assert.same({ ["202401"] = true, ["202402"] = true }, partitions)
    local sql = h.read(w.backups .. "/part/metadata/shop/orders_copy.sql")
    assert.matches("^CREATE TABLE shop%.orders_copy UUID", sql)
  end)
end)


describe("RESTORE", function()
  local w
  setup(function()
    w = h.world("restore")
    assert(os.execute("cp -a " .. h.quote(h.FIXTURES .. "/ch_backups/full") .. " " .. h.quote(w.backups .. "/chfull")))
  end)

  it("restores a ClickHouse-written backup into a fresh data path that ClickHouse opens with the same rows", function()
    local target = w.dir .. "/fresh"
    local r = sql_ok(w, "RESTORE ALL FROM Disk('backups', 'chfull')", target)
    assert.equal("RESTORED", r[1].status)
    assert.equal(h.digest_text(ALL_TABLES), h.table_digests(target, ALL_TABLES))
  end)

  it("restores a table under a new name, only the partitions asked for", function()
    local target = w.dir .. "/renamed"
    sql_ok(w, "RESTORE TABLE shop.orders AS other.o2 PARTITIONS '202401', 202403 FROM Disk('backups', 'chfull')", target)
    local out = h.clickhouse(target, {
      "SELECT groupArray(DISTINCT toYYYYMM(d)) FROM (SELECT d FROM other.o2 ORDER BY d)",
      "SELECT count() FROM other.o2",
    })
    local expected = h.clickhouse(w.data, {
      "SELECT groupArray(DISTINCT toYYYYMM(d)) FROM (SELECT d FROM shop.orders WHERE toYYYYMM(d) IN (202401, 202403) ORDER BY d)",
      "SELECT count() FROM shop.orders WHERE toYYYYMM(d) IN (202401, 202403)",
    })
    assert.equal(expected, out)
  end)

  it("refuses a non-empty table unless allow_non_empty_tables=true, then adds the rows", function()
    local target = w.dir .. "/twice"
    sql_ok(w, "RESTORE TABLE shop.customers FROM Disk('backups', 'chfull')", target)
    local ch = h.open(w, target)
    local r, err = ch:execute("RESTORE TABLE shop.customers FROM Disk('backups', 'chfull')")
    assert.is_nil(r)
    assert.matches("cannot restore table shop%.customers: it is not empty", err)
    sql_ok(w, "RESTORE TABLE shop.customers FROM Disk('backups', 'chfull') SETTINGS allow_non_empty_tables=true", target)
    assert.equal("120\n", h.clickhouse(target, { "SELECT count() FROM shop.customers" }))
  end)

  it("refuses an existing table of a different structure", function()
    local target = w.dir .. "/different"
    h.clickhouse(target, { "CREATE DATABASE shop", "CREATE TABLE shop.customers (x UInt8) ENGINE = MergeTree ORDER BY x" })
    local ch = h.open(w, target)
    local r, err = ch:execute("RESTORE TABLE shop.customers FROM Disk('backups', 'chfull')")
    assert.is_nil(r)
    assert.matches("table shop%.customers already exists with a different structure", err)
  end)

  it("stops on a corrupted data file before anything appears under a final name", function()
    local bad = w.backups .. "/corrupt"
    assert(os.execute("cp -a " .. h.quote(w.backups .. "/chfull") .. " " .. h.quote(bad)))
    local victim = bad .. "/data/shop/orders/202401_1_1_0/customer.bin"
    local data = assert(h.read(victim))
    h.write(victim, data:sub(1, 100) .. string.char((data:byte(101) + 1) % 256) .. data:sub(102))
    local target = w.dir .. "/from-corrupt"
    local ch = h.open(w, target)
    local r, err = ch:execute("RESTORE DATABASE shop FROM Disk('backups', 'corrupt')")
    assert.is_nil(r)
    assert.matches("checksum mismatch for .*202401_1_1_0/customer%.bin", err)
    assert.same({}, h.tree(target .. "/store"))
    assert.is_nil(h.read(target .. "/metadata/shop.sql"))
    local row = ch:status_rows()[#ch:status_rows()]
    assert.equal("RESTORE_FAILED", row.status)
    assert.matches("checksum mismatch", row.error)
  end)

  it("stops on a truncated data file", function()
    local bad = w.backups .. "/short"
    assert(os.execute("cp -a " .. h.quote(w.backups .. "/chfull") .. " " .. h.quote(bad)))
    local victim = bad .. "/data/logs/events/msg.bin"
    local data = assert(h.read(victim))
    h.write(victim, data:sub(1, #data - 1))
    local target = w.dir .. "/from-short"
    local ch = h.open(w, target)
    local r, err = ch:execute("RESTORE DATABASE logs FROM Disk('backups', 'short')")
    assert.is_nil(r)
    assert.matches(".*events/msg%.bin is shorter than expected", err)
    assert.same({}, h.tree(target .. "/store"))
  end)

  it("names a missing or corrupt .backup", function()
    local ch = h.open(w, w.dir .. "/nothing")
    local r, err = ch:execute("RESTORE ALL FROM Disk('backups', 'nope')")
    assert.is_nil(r)
    assert.matches("backup Disk%('backups', 'nope'%) not found", err)
    assert(os.execute("mkdir -p " .. h.quote(w.backups .. "/broken")))
    h.write(w.backups .. "/broken/.backup", "<config><version>1</version><contents><file>")
    r, err = ch:execute("RESTORE ALL FROM Disk('backups', 'broken')")
    assert.is_nil(r)
    assert.matches("backup manifest .*/broken/%.backup is corrupt", err)
  end)
end)


describe("bad input", function()
  local w
  setup(function()
    w = h.world("bad")
  end)

  local function refused(statement, pattern, path)
    local ch = h.open(w, path)
    local r, err = ch:execute(statement)
    assert.is_nil(r, statement)
    assert.matches(pattern, err)
  end

  it("names an unknown database or table", function()
    refused("BACKUP TABLE shop.nope TO Disk('backups', 'x1')", "table shop%.nope does not exist")
    refused("BACKUP DATABASE nope TO Disk('backups', 'x2')", "database nope does not exist")
    assert.is_nil(h.read(w.backups .. "/x1/.backup"))
  end)

  it("refuses destinations outside the allowed disks and paths", function()
    refused("BACKUP TABLE shop.orders TO Disk('other', 'x')", "disk 'other'")
    refused("BACKUP TABLE shop.orders TO Disk('backups', '../escape')", "escapes disk 'backups'")
    refused("BACKUP TABLE shop.orders TO File('/tmp/outside')", "not allowed for backups")
  end)

  it("gives the position of a malformed statement and names unknown settings", function()
    refused("BACKUP TABLE TO Disk('backups', 'x')", "Syntax error at position 14")
    refused("BACKUP TABLE shop.orders TO Disk('backups', 'x') SETTINGS colour = 1", "unknown backup setting 'colour'")
    refused("BACKUP TABLE shop.orders TO Disk('backups', 'x') SETTINGS threads = 'many'",
      "setting 'threads' must be an integer")
  end)

  it("refuses a directory that is not a ClickHouse data path", function()
    local dir = w.dir .. "/not-a-datapath"
    assert(os.execute("mkdir -p " .. h.quote(dir .. "/something")))
    refused("BACKUP ALL TO Disk('backups', 'x3')", "is not a ClickHouse data path", dir)
    refused("RESTORE ALL FROM Disk('backups', 'x3')", "is not a ClickHouse data path", dir)
  end)

  it("does not restore an unfinished backup; the next BACKUP to its name replaces what it left", function()
    assert(os.execute("mkdir -p " .. h.quote(w.backups .. "/killed/data")))
    h.write(w.backups .. "/killed/.chbackup-incomplete", "chbackup x\n")
    refused("RESTORE TABLE shop.orders FROM Disk('backups', 'killed')", "not found")
    sql_ok(w, "BACKUP TABLE shop.orders TO Disk('backups', 'killed')")
    assert.is_false(h.exists(w.backups .. "/killed/.chbackup-incomplete"))
  end)
end)


describe("Lua API", function()
  local w
  setup(function()
    w = h.world("api")
  end)

  it("runs a request table step by step and reports it in status rows", function()
    local chbackup = require("chbackup")
    local ch = h.open(w)
    local req = assert(chbackup.parse("BACKUP TABLE shop.orders TO Disk('backups', 'api1')"))[1]
    local op = assert(ch:start(req))
    assert.equal("CREATING_BACKUP", op:status().status)
    local polls = 0
    while not op:poll() do
      polls = polls + 1
    end
    local row = op:status()
    assert.equal("BACKUP_CREATED", row.status)
    assert.equal(op.id, row.id)
    assert.is_true(row.num_files > 100)
    assert.is_true(row.total_size > 0)
    assert.is_not_nil(h.read(w.backups .. "/api1/.backup"))
  end)

  it("cancels an operation: status *_CANCELLED and nothing left behind", function()
    local chbackup = require("chbackup")
    local ch = h.open(w)
    local op = assert(ch:start(assert(chbackup.parse("BACKUP ALL TO Disk('backups', 'api2')"))[1]))
    op:cancel()
    local r = op:wait()
    assert.equal("BACKUP_CANCELLED", r.status)
    assert.is_false(h.exists(w.backups .. "/api2"))
    -- the same through the status directory, as another process would ask
    ch = h.open(w, w.dir .. "/api-restore")
    op = assert(ch:start(assert(chbackup.parse("RESTORE ALL FROM Disk('backups', 'api1')"))[1]))
    assert(ch:cancel(op.id))
    r = op:wait()
    assert.equal("RESTORE_CANCELLED", r.status)
    assert.equal("RESTORE_CANCELLED", ch:status_rows()[#ch:status_rows()].status)
    assert.same({}, h.tree(w.dir .. "/api-restore/store"))
  end)

  it("takes the configuration as a Lua table", function()
    local chbackup = require("chbackup")
    local ch = assert(chbackup.open({
      path = w.data, status_dir = w.status,
      config = { disks = { backups = { type = "local", path = w.backups .. "/" } },
                 backups = { allowed_disk = { "backups" }, allowed_path = { w.backups .. "/" } } },
    }))
    local r = assert(ch:execute("BACKUP TABLE logs.events TO Disk('backups', 'api3')"))
    assert.equal("BACKUP_CREATED", r[1].status)
  end)
end)
