-- Replicated* tables (issue 11 item 3), against real ClickHouse (embedded) and
-- a real ZooKeeper (Debian's, scripts/zookeeper) as its <zookeeper>.
--
-- What embedded ClickHouse (chDB, clickhouse-local's engine) can and cannot do
-- with a Replicated table, found here and encoded below:
--   * It never activates a replica: clickhouse-local sets no interserver
--     address ("Parameter 'interserver_http(s)_port' required for replication
--     is not specified", even with the setting in the config), so with Keeper a
--     Replicated table stays read-only, INSERT waits and is refused, and a
--     process that created or restored a replica hangs at exit. Hence rows are
--     inserted into plain MergeTree tables whose ENGINE is then rewritten to
--     Replicated* (the parts on disk are the same format), and the steps that
--     need a live replica (SYSTEM RESTORE REPLICA, ClickHouse's RESTORE into a
--     fresh Keeper) are not run here: they need a server.
--   * Without Keeper a Replicated table opens read-only; its rows are visible.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local q = h.quote
local TABLES = { { "db", "t" }, { "db", "r" } }

-- Embedded ClickHouse, bounded: returns ok, stdout, stderr (never hangs past `secs`).
local function ch(path, config, statements, secs)
  local cmd = { "timeout", "-s", "KILL", tostring(secs or 60), q(h.ROOT .. "/build/chq"),
    "--lib", q(h.chdb_lib()), "--path", q(path), "--config", q(config) }
  for _, s in ipairs(statements) do
    cmd[#cmd + 1] = q(s)
  end
  local ok, out, _, err = h.run(table.concat(cmd, " "))
  return ok, out, err
end

local function ch_ok(path, config, statements)
  local ok, out, err = ch(path, config, statements)
  assert(ok, "ClickHouse failed: " .. out .. err)
  return out
end

local function config(path, backups, zk_port)
  h.write(path, (([[
<clickhouse>
  <timezone>UTC</timezone>
  <storage_configuration><disks>
    <backups><type>local</type><path>@/</path></backups>
  </disks></storage_configuration>
  <backups><allowed_disk>backups</allowed_disk><allowed_path>@/</allowed_path></backups>
  <macros><shard>01</shard><replica>r1</replica></macros>
  <interserver_http_port>9009</interserver_http_port>
]]):gsub("@", backups)) .. (zk_port and string.format(
    "  <zookeeper><node><host>127.0.0.1</host><port>%d</port></node></zookeeper>\n", zk_port) or "")
    .. "</clickhouse>\n")
  return path
end

local function digests(path, cfg)
  local stmts = {}
  for _, t in ipairs(TABLES) do
    stmts[#stmts + 1] = string.format("SELECT '%s', count(), sum(cityHash64(tuple(*))) FROM %s.%s FORMAT TSV",
      t[2], t[1], t[2])
  end
  return ch_ok(path, cfg, stmts)
end

local function entries(path)
  local m = assert(manifest.read(path .. "/.backup"))
  local out = {}
  for _, f in ipairs(m.files) do
    out[f.name] = { f.size, f.checksum }
  end
  return out
end


describe("Replicated* tables", function()
  local dir, src, backups, nozk, zk, zkdir, source_digests
  local started = os.time()

  setup(function()
    dir = h.tmpdir("replicated")
    src, backups = dir .. "/src", dir .. "/backups"
    assert(os.execute("mkdir -p " .. q(backups) .. " " .. q(dir .. "/status")))
    nozk = config(dir .. "/nozk.xml", backups)
    -- ZooKeeper, killed with this process if the spec dies (CHB_ZK_PARENT)
    zkdir = dir .. "/zk"
    local ok, out, _, err = h.run(string.format("CHB_ZK_PARENT=%d %s/scripts/zookeeper start %s",
      h.pid(), q(h.ROOT), q(zkdir)))
    assert(ok, "scripts/zookeeper start failed: " .. out .. (err or ""))
    zk = config(dir .. "/zk.xml", backups, assert(tonumber(out:match("^(%d+)"))))
    ch_ok(src, nozk, {
      "CREATE DATABASE db",
      "CREATE TABLE db.t (k UInt64, v String) ENGINE = MergeTree ORDER BY k",
      "INSERT INTO db.t SELECT number, toString(number) FROM numbers(1000)",
      "INSERT INTO db.t SELECT number + 1000, 'x' FROM numbers(10)",
      "CREATE TABLE db.r (k UInt64, ver UInt32) ENGINE = ReplacingMergeTree(ver) ORDER BY k",
      "INSERT INTO db.r SELECT number, 1 FROM numbers(100)",
    })
    local function rewrite(file, from, to)
      local s = assert(h.read(file))
      local n
      s, n = s:gsub(from, to, 1)
      assert(n == 1, file)
      h.write(file, s)
    end
    rewrite(src .. "/metadata/db/t.sql", "ENGINE = MergeTree",
      "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}')")
    rewrite(src .. "/metadata/db/r.sql", "ENGINE = ReplacingMergeTree%(ver%)",
      "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/r', '{replica}', ver)")
    source_digests = digests(src, nozk)
  end)

  teardown(function()
    if zkdir then
      os.execute(q(h.ROOT) .. "/scripts/zookeeper stop " .. q(zkdir))
    end
    print(string.format("replicated_spec: %d s", os.time() - started))
  end)

  it("opens read-only without Keeper: rows visible, INSERT refused, ClickHouse's BACKUP needs Keeper", function()
    assert.equal("t\t1010\t9482694060466176682\nr\t100\t", source_digests:sub(1, #"t\t1010\t9482694060466176682\nr\t100\t"))
    assert.equal("r\t1\nt\t1\n", ch_ok(src, nozk, { "SELECT table, is_readonly FROM system.replicas ORDER BY table" }))
    local ok, _, err = ch(src, nozk, { "INSERT INTO db.t VALUES (1, 'a')" })
    assert.is_falsy(ok)
    assert.is_truthy(err:match("TABLE_IS_READ_ONLY") or err:match("NOT_INITIALIZED"), err)
    ok, _, err = ch(src, nozk, { "BACKUP DATABASE db TO Disk('backups', 'nokeeper')" })
    assert.is_falsy(ok)
    assert.matches("There is no Zookeeper configuration", err)
  end)

  it("(a) ClickHouse's BACKUP (with Keeper) and chbackup's BACKUP: same entries and checksums", function()
    ch_ok(src, zk, { "BACKUP DATABASE db TO Disk('backups', 'ch')" })
    local w = { data = src, config = nozk, status = dir .. "/status" }
    h.sql(w, "BACKUP DATABASE db TO Disk('backups', 'ours')")
    local theirs, ours = entries(backups .. "/ch"), entries(backups .. "/ours")
    local n = 0
    for name, e in pairs(theirs) do
      assert.same(e, ours[name], name)
      n = n + 1
    end
    for name in pairs(ours) do
      assert.is_not_nil(theirs[name], "not in ClickHouse's backup: " .. name)
    end
    assert.is_true(n > 20)
    assert.is_not_nil(ours["data/db/t/all_1_1_0/data.bin"])
  end)

  it("(b) chbackup's RESTORE: a notice per Replicated table; ClickHouse opens them read-only with the rows", function()
    local dst = dir .. "/restored"
    assert(os.execute("mkdir -p " .. q(dst .. "/metadata")))
    local w = { data = dst, config = nozk, status = dir .. "/status" }
    local ok, out, _, err = h.cli(w, "RESTORE DATABASE db FROM Disk('backups', 'ours')")
    assert(ok, out .. (err or ""))
    local notices = {}
    for line in (err or ""):gmatch("[^\n]+") do
      if line:match("^chbackup: restored Replicated") then
        notices[#notices + 1] = line
      end
    end
    table.sort(notices)
    assert.same({
      "chbackup: restored ReplicatedMergeTree table db.t offline: its replica is not registered in Keeper;"
        .. " ClickHouse opens it read-only until SYSTEM RESTORE REPLICA db.t is run once the server is up with Keeper",
      "chbackup: restored ReplicatedReplacingMergeTree table db.r offline: its replica is not registered in Keeper;"
        .. " ClickHouse opens it read-only until SYSTEM RESTORE REPLICA db.r is run once the server is up with Keeper",
    }, notices)
    assert.equal(source_digests, digests(dst, nozk))
    assert.equal("r\t1\nt\t1\n", ch_ok(dst, nozk, { "SELECT table, is_readonly FROM system.replicas ORDER BY table" }))
    local iok, _, ierr = ch(dst, nozk, { "INSERT INTO db.t VALUES (1, 'a')" })
    assert.is_falsy(iok)
    -- refused as read-only: TABLE_IS_READ_ONLY or, as the replica's startup
    -- (without Keeper) is still under way, NOT_INITIALIZED; both seen
    assert.is_truthy(ierr:match("TABLE_IS_READ_ONLY") or ierr:match("NOT_INITIALIZED"), ierr)
    -- the metadata is the backup's: same ZooKeeper path and replica name
    assert.matches("ReplicatedMergeTree%('/clickhouse/tables/{shard}/db/t', '{replica}'%)",
      h.read(dst .. "/metadata/db/t.sql"))
  end)

  it("(d) chbackup restores ClickHouse's backup of Replicated tables", function()
    local dst = dir .. "/restored_ch"
    assert(os.execute("mkdir -p " .. q(dst .. "/metadata")))
    h.sql({ data = dst, config = nozk, status = dir .. "/status" }, "RESTORE DATABASE db FROM Disk('backups', 'ch')")
    assert.equal(source_digests, digests(dst, nozk))
  end)

  it("(c) ClickHouse's RESTORE of chbackup's backup: refused without Keeper, and while the replica is registered", function()
    local dst = dir .. "/ch_restored"
    local ok, _, err = ch(dst, nozk, { "RESTORE DATABASE db FROM Disk('backups', 'ours')" })
    assert.is_falsy(ok)
    assert.matches("Can't create replicated table without ZooKeeper", err)
    -- register replica r1 of db.t in Keeper (embedded ClickHouse then hangs
    -- at exit, unable to activate it: killed after 6 s; the nodes stay)
    ch(dir .. "/other", zk, { "CREATE DATABASE db",
      "CREATE TABLE db.t (k UInt64, v String) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/t', '{replica}') ORDER BY k" },
      6)
    -- db.t alone: a RESTORE that also creates db.r's replica would hang at exit
    ok, _, err = ch(dir .. "/ch_restored2", zk,
      { "CREATE DATABASE db", "RESTORE TABLE db.t FROM Disk('backups', 'ours')" }, 30)
    assert.is_falsy(ok)
    assert.matches("REPLICA_ALREADY_EXISTS", err)
  end)

  it("with Keeper holding the replica registered without parts, ClickHouse shows none of the restored rows", function()
    -- after (c): replica r1 of /clickhouse/tables/01/db/t is registered
    -- without parts; db.r's replica is not registered: its rows are visible
    -- (read-only). Hence SYSTEM DROP REPLICA first (README).
    local dst = dir .. "/restored"
    local out = ch_ok(dst, zk, {
      "SELECT count() FROM db.t", "SELECT count() FROM db.r",
      "SELECT table, is_readonly FROM system.replicas ORDER BY table" }, 30)
    assert.equal("0\n100\nr\t1\nt\t1\n", out)
    -- the parts stay on disk: without Keeper the rows are back
    assert.equal(source_digests, digests(dst, nozk))
  end)
end)


describe("KeeperMap tables", function()
  -- rows in Keeper, none in the data path: offline, BACKUP refuses them by name
  local w
  setup(function()
    w = h.world("keepermap")
    h.write(w.data .. "/metadata/shop/km.sql", "ATTACH TABLE _ UUID '5a1e0000-0000-4000-8000-00000000abcd'\n"
      .. "(\n    `k` UInt64,\n    `v` String\n)\nENGINE = KeeperMap('/km/shop')\nPRIMARY KEY k\n")
  end)

  it("are refused by BACKUP, naming the table, in a database or alone", function()
    for _, stmt in ipairs({ "BACKUP DATABASE shop TO Disk('backups', 'k1')", "BACKUP TABLE shop.km TO Disk('backups', 'k2')" }) do
      local err = h.sql_refused(w, stmt)
      assert.matches("table shop%.km %(KeeperMap%) keeps its data in Keeper; chbackup reads data paths offline"
        .. " and cannot back it up: exclude it", err)
    end
    assert.is_falsy(h.exists(w.backups .. "/k1/.backup"))
  end)

  it("back up excluded or as structure only", function()
    h.sql(w, "BACKUP DATABASE shop EXCEPT TABLES shop.km TO Disk('backups', 'k3')")
    h.sql(w, "BACKUP TABLE shop.km TO Disk('backups', 'k4') SETTINGS structure_only = true")
    local m = assert(manifest.read(w.backups .. "/k4/.backup"))
    assert.equal(1, #m.files)
    assert.equal("metadata/shop/km.sql", m.files[1].name)
  end)
end)
