-- Production data paths (issue 11): a MergeTree table on a storage policy
-- of two local disks (`hot` = the default disk, the data path, and `cold`),
-- parts moved with ALTER TABLE … MOVE PARTITION … TO DISK 'cold', and a
-- dictionary. The data path is made by real ClickHouse at test time; both
-- ways of interop are checked with ClickHouse's own counts and checksums.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")
local q = h.quote

local sh, ch, chb = h.sh, h.ch, h.chb

-- A config with disks `backups` and `cold` (each path given) and the policy
-- hot_cold (volume hot: default, volume cold: cold). extra: more XML inside
-- <disks>, or replace_cold = XML for the cold disk. Policies have
-- move_factor 0: ClickHouse's own mover would otherwise send every part to
-- the cold volume once the machine's disk is under 10% free (as a CI
-- machine's may be), and the specs check where chbackup put them.
local function write_config(path, backups, cold, opts)
  opts = opts or {}
  local cold_xml = opts.cold_xml or ("<cold><type>local</type><path>" .. cold .. "/</path></cold>")
  local policies = opts.policies or [[
    <policies><hot_cold><volumes>
      <hot><disk>default</disk></hot>
      <cold><disk>cold</disk></cold>
    </volumes><move_factor>0</move_factor></hot_cold></policies>]]
  h.write(path, ([[
<clickhouse>
  <timezone>UTC</timezone>
  <storage_configuration>
    <disks>
      <backups><type>local</type><path>%s/</path></backups>
      %s%s
    </disks>
    %s
  </storage_configuration>
  <backups><allowed_disk>backups</allowed_disk><allowed_path>%s/</allowed_path></backups>
</clickhouse>
]]):format(backups, cold_xml, opts.extra_disks or "", policies, backups))
  return path
end

-- A place: data path, its cold disk, its config; all share one backups dir.
local function place(root, name, backups, opts)
  local p = { data = root .. "/" .. name, cold = root .. "/" .. name .. "-cold",
    config = root .. "/" .. name .. ".xml", status = root .. "/" .. name .. "-status",
    backups = backups }
  sh("mkdir -p " .. q(p.cold))
  write_config(p.config, backups, p.cold, opts)
  return p
end

local DIGEST = {
  "SELECT 'db.t', count(), sum(cityHash64(tuple(*))) FROM db.t",
  "SELECT 'db.src', count(), sum(cityHash64(tuple(*))) FROM db.src",
  "SELECT 'db.logt', count(), sum(cityHash64(tuple(*))) FROM db.logt",
  "SELECT 'db.on_cold', count(), sum(cityHash64(tuple(*))) FROM db.on_cold",
  "SELECT 'db.logc', count(), sum(cityHash64(tuple(*))) FROM db.logc",
  "SELECT 'db.mv', count(), sum(cityHash64(tuple(*))) FROM db.mv",
  "SELECT 'dict', sum(cityHash64(dictGet('db.dict', 'v', number))) FROM numbers(20)",
  "SELECT 'dict_count', count() FROM db.dict",
}

-- Manifest entries keyed by name: size, checksum.
local function entries(dir)
  local m = assert(manifest.read(dir .. "/.backup"))
  local out = {}
  for _, f in ipairs(m.files) do
    out[f.name] = { f.size, f.checksum }
  end
  return out
end

local function disks_of(p)
  return ch(p, { "SELECT disk_name, count() FROM system.parts WHERE database = 'db' AND table = 't'"
    .. " AND active GROUP BY disk_name ORDER BY disk_name" })
end


describe("storage policies and dictionaries", function()
  local root, backups, src, expected
  setup(function()
    root = h.tmpdir("production")
    backups = root .. "/backups"
    sh("mkdir -p " .. q(backups))
    src = place(root, "src", backups)
    ch(src, {
      "CREATE DATABASE db",
      "CREATE TABLE db.t (d Date, id UInt64, s String) ENGINE = MergeTree PARTITION BY toYYYYMM(d)"
        .. " ORDER BY id SETTINGS storage_policy = 'hot_cold', min_parts_to_merge_at_once = 1000,"
        .. " old_parts_lifetime = 1000000000",
      "INSERT INTO db.t SELECT toDate('2024-01-01') + number % 90, number, toString(number) FROM numbers(3000)",
      "INSERT INTO db.t SELECT toDate('2024-01-01') + number % 40, number, 'x' FROM numbers(500)",
      "ALTER TABLE db.t MOVE PARTITION 202401 TO DISK 'cold'",
      "ALTER TABLE db.t MOVE PARTITION 202403 TO DISK 'cold'",
      "CREATE TABLE db.src (k UInt64, v String) ENGINE = MergeTree ORDER BY k",
      -- a materialized view whose inner table is on the policy, one partition moved
      "CREATE MATERIALIZED VIEW db.mv ENGINE = MergeTree PARTITION BY k % 2 ORDER BY k"
        .. " SETTINGS storage_policy = 'hot_cold' AS SELECT k, v FROM db.src",
      "INSERT INTO db.src SELECT number, 'v' || toString(number) FROM numbers(10)",
      "ALTER TABLE db.mv MOVE PARTITION 1 TO DISK 'cold'",
      "CREATE TABLE db.logt (a UInt32) ENGINE = Log",
      "INSERT INTO db.logt SELECT number FROM numbers(7)",
      -- a table on one disk other than the default one
      "CREATE TABLE db.on_cold (a UInt64) ENGINE = MergeTree ORDER BY a SETTINGS disk = 'cold'",
      "INSERT INTO db.on_cold SELECT number * 3 FROM numbers(100)",
      "CREATE TABLE db.logc (a UInt32, s String) ENGINE = StripeLog SETTINGS disk = 'cold'",
      "INSERT INTO db.logc SELECT number, toString(number) FROM numbers(11)",
      "CREATE DICTIONARY db.dict (k UInt64, v String DEFAULT 'none') PRIMARY KEY k"
        .. " SOURCE(CLICKHOUSE(TABLE 'src' DB 'db')) LIFETIME(0) LAYOUT(HASHED())",
      "BACKUP DATABASE db TO Disk('backups', 'ch')",
    })
    expected = ch(src, DIGEST)
    assert.equal("cold\t3\ndefault\t2\n", disks_of(src))
  end)

  it("the source has parts on both disks and a dictionary that answers", function()
    assert.is_truthy(expected:find("db.t\t3500\t", 1, true), expected)
    assert.is_truthy(expected:find("dict_count\t10", 1, true), expected)
  end)

  it("BACKUP reads every disk of the policy: its backup equals ClickHouse's", function()
    local r = assert(chb(src, "BACKUP DATABASE db TO Disk('backups', 'ours')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    local ours, theirs = entries(backups .. "/ours"), entries(backups .. "/ch")
    local cold_files = 0
    for name, e in pairs(theirs) do
      assert.same(e, ours[name], name)   -- Log tables' columns.txt and count.txt too
      if name:match("^data/db/t/202401_") or name:match("^data/db/t/202403_") then
        cold_files = cold_files + 1
      end
    end
    assert.is_true(cold_files >= 20, "parts on the cold disk are in the backups")
    for name in pairs(ours) do
      assert.is_not_nil(theirs[name], "not in ClickHouse's backup: " .. name)
    end
    -- `chbackup check` finds it whole, reading every byte
    local chbackup = require("chbackup")
    local inst = assert(chbackup.open({ path = src.data, config = src.config, status_dir = src.status }))
    local report = assert(inst:check("Disk('backups', 'ours')", { read_data = true }))
    assert.is_true(report.ok)
    -- the dictionary's metadata is byte for byte ClickHouse's
    assert.equal(h.read(backups .. "/ch/metadata/db/dict.sql"), h.read(backups .. "/ours/metadata/db/dict.sql"))
  end)

  it("ClickHouse RESTOREs chbackup's backup: same rows, same checksums, dictGet works", function()
    local p = place(root, "ch_restores_ours", backups)
    ch(p, { "RESTORE DATABASE db FROM Disk('backups', 'ours')" })
    assert.equal(expected, ch(p, DIGEST))
  end)

  it("chbackup restores ClickHouse's backup onto the policy's disks; ClickHouse opens it", function()
    local p = place(root, "ours_restores_ch", backups)
    local r = assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    -- the dictionary is written as ClickHouse writes it into a data path
    local dict = h.read(p.data .. "/metadata/db/dict.sql")
    assert.is_truthy(dict:match("^CREATE DICTIONARY _ UUID '[%x%-]+' "), dict)
    assert.equal(expected, ch(p, DIGEST))
    -- data/<db>/<table> links to the table's directory on its policy's first disk, as ClickHouse's
    assert.equal("../../store/", require("lfs").symlinkattributes(p.data .. "/data/db/t", "target"):sub(1, 12))
    assert.equal("../../../ours_restores_ch-cold/store/",
      require("lfs").symlinkattributes(p.data .. "/data/db/on_cold", "target"):sub(1, 37))
    assert.equal("directory", require("lfs").attributes(p.data .. "/data/db/on_cold", "mode"))
    -- a backup made by ClickHouse does not say which disk a part was on:
    -- every part goes to the policy's first disk with room, as ClickHouse's RESTORE does
    assert.equal("default\t5\n", disks_of(p))
  end)

  it("chbackup restores its own backup: parts go back to the disk they were on", function()
    local p = place(root, "ours_restores_ours", backups)
    local r = assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ours')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected, ch(p, DIGEST))
    assert.equal("cold\t3\ndefault\t2\n", disks_of(p))
    -- and it backs up again whole, equal to the first backup
    r = assert(chb(p, "BACKUP DATABASE db TO Disk('backups', 'again')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    local a, b = entries(backups .. "/ours"), entries(backups .. "/again")
    for name, e in pairs(a) do
      if name:match("^data/") then
        assert.same(e, b[name], name)
      end
    end
  end)

  it("a zip backup records the disks too; a policy without the recorded disk gets the part on its first disk", function()
    local r = assert(chb(src, "BACKUP DATABASE db TO Disk('backups', 'ours.zip')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    local p = place(root, "ours_restores_zip", backups)
    r = assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ours.zip')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected, ch(p, DIGEST))
    assert.equal("cold\t3\ndefault\t2\n", disks_of(p))
    -- the target's hot_cold has no disk 'cold': every part goes to 'default'
    local p2 = place(root, "hot_only", backups, { policies = [[
      <policies><hot_cold><volumes><hot><disk>default</disk></hot></volumes></hot_cold></policies>]] })
    r = assert(chb(p2, "RESTORE DATABASE db FROM Disk('backups', 'ours')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected, ch(p2, DIGEST))
    assert.equal("default\t5\n", disks_of(p2))
  end)

  it("a volume's max_data_part_size_bytes and a disk's keep_free_space_bytes send parts on", function()
    local p = place(root, "max_part", backups, { policies = [[
      <policies><hot_cold><volumes>
        <hot><disk>default</disk><max_data_part_size_bytes>8192</max_data_part_size_bytes></hot>
        <cold><disk>cold</disk></cold>
      </volumes><move_factor>0</move_factor></hot_cold></policies>]] })
    local r = assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected, ch(p, DIGEST))
    assert.equal("cold\t5\n", disks_of(p))
    -- the default disk keeps more free than any disk has: nothing fits there
    local p2 = place(root, "keep_free", backups, {
      extra_disks = "<default><keep_free_space_bytes>1000000000000000</keep_free_space_bytes></default>" })
    local _, err = chb(p2, "RESTORE DATABASE db FROM Disk('backups', 'ch')")
    assert.is_truthy(err and err:find("no disk of table db.src's storage policy has room for part all_1_1_0", 1, true),
      err)   -- db.src has only the default disk
    assert.is_false(h.exists(p2.data .. "/metadata/db.sql"))
    r = assert(chb(p2, "RESTORE TABLE db.t FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected:match("db%.t\t[^\n]*\n"), ch(p2, { DIGEST[1] }))
    assert.equal("cold\t5\n", disks_of(p2))
  end)

  it("a part goes to the next disk of the policy when the first has no room", function()
    local small = root .. "/small"
    sh("mkdir -p " .. q(small))
    if not os.execute("mount -t tmpfs -o size=256k tmpfs " .. q(small) .. " 2>/dev/null") then
      pending("cannot mount a small tmpfs here (needs root)")
      return
    end
    local ok, err = pcall(function()
      -- fill it but 40 KiB: room for the table's directories, not for a part
      -- (13 files, at least one 4 KiB block each)
      os.execute("dd if=/dev/zero of=" .. q(small .. "/fill") .. " bs=4k count=54 2>/dev/null")
      local p = place(root, "full_first", backups, {
        extra_disks = "<small><type>local</type><path>" .. small .. "/</path></small>",
        policies = [[
      <policies><hot_cold><volumes>
        <hot><disk>small</disk></hot><cold><disk>cold</disk></cold>
      </volumes><move_factor>0</move_factor></hot_cold></policies>]] })
      local r = assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ch')"))
      assert.equal("RESTORED", r[1].status)
      assert.equal(expected, ch(p, DIGEST))
      assert.equal("cold\t5\n", disks_of(p))
    end)
    os.execute("umount " .. q(small))
    assert(ok, err)
  end)

  it("policy verify restores into scratch: a policy's other disks are moved there, never written in place", function()
    local verify = require("chbackup.policy.verify")
    local counter = require("chbackup.policy.counter")
    local config = require("chbackup.config")
    local cfg = assert(config.load(src.config))
    local scratch = root .. "/verify-scratch"
    local scfg = verify.scratch_config(cfg, scratch)
    assert.equal(scratch .. "/disks/cold/", scfg.disks.cold.path)
    assert.equal(cfg.disks.backups.path, scfg.disks.backups.path)   -- the backups stay where they are
    local before = h.tree(src.cold)
    local chbackup = require("chbackup")
    local inst = assert(chbackup.open({ path = scratch .. "/data", config = scfg, status_dir = scratch .. "/status" }))
    local r = assert(inst:execute("RESTORE ALL FROM Disk('backups', 'ours')"))
    assert.equal("RESTORED", r[1].status)
    assert.same(before, h.tree(src.cold))
    local cold_parts = 0
    for _, f in ipairs(h.tree(scratch .. "/disks/cold/store")) do
      if f:match("^[^/]+/[^/]+/[^/]+/checksums%.txt$") then
        cold_parts = cold_parts + 1
      end
    end
    assert.equal(5, cold_parts)   -- db.t's three, db.on_cold's one, db.mv's one
    -- rows counted from the parts on both disks
    local rows = assert(counter.from_data_path(scratch .. "/data", scfg))
    assert.equal(3500, rows.db.t.total)
    assert.equal(100, rows.db.on_cold.total)
  end)

  it("policy run and verify on a hot/cold data path: the drill restores and counts with ClickHouse", function()
    local pcli = require("chbackup.policy.cli")
    local file = root .. "/hc.lua"
    h.write(file, string.format([[
return {
  name = "hc",
  source = { path = %q, config = %q },
  selection = { databases = { "db" } },
  destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
  schedule = { full = "0 2 * * *" },
  verification = { scratch = %q },
}
]], src.data, src.config, root))
    local function run(...)
      local out = {}
      local io_ = {
        stdout = { write = function(_, x) out[#out + 1] = x end, flush = function() end },
        stderr = { write = function(_, x) out[#out + 1] = x end },
      }
      local code = pcli.main({ "policy", ... }, { path = src.data, config = src.config, status_dir = src.status }, io_)
      return code, table.concat(out)
    end
    local before = h.tree(src.cold)
    local code, out = run("run", file, "now=2026-05-01T02:00:00Z")
    assert.equal(0, code, out)
    code, out = run("verify", file, "now=2026-05-01T02:30:00Z")
    assert.equal(0, code, out)
    assert.is_truthy(out:find("read with", 1, true), out)   -- counted by ClickHouse
    assert.same(before, h.tree(src.cold))   -- nothing restored onto the source's cold disk
  end)

  it("a dictionary restored under another database name reads that database's table", function()
    local p = place(root, "renamed", backups)
    local r = assert(chb(p, "RESTORE DATABASE db AS db2 FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    local dict = h.read(p.data .. "/metadata/db2/dict.sql")
    assert.is_truthy(dict:find("DB 'db2'", 1, true), dict)
    assert.equal("dict\t" .. expected:match("\ndict\t(%d+)") .. "\n", ch(p, {
      "SELECT 'dict', sum(cityHash64(dictGet('db2.dict', 'v', number))) FROM numbers(20)" }))
  end)

  it("dictionary metadata of a data path is read and written as ClickHouse keeps it", function()
    local ddl = require("chbackup.ddl")
    local text = h.read(src.data .. "/metadata/db/dict.sql")
    assert.is_truthy(text:match("^CREATE DICTIONARY _ UUID "), text)   -- ClickHouse's own form
    local info = assert(ddl.parse_attach(text))
    assert.equal("DICTIONARY", info.object)
    assert.equal(ddl.one_line(text), ddl.one_line(ddl.attach_statement(info.object, info.uuid, info.body)))
    -- the older `ATTACH DICTIONARY _` form is still read
    assert.equal("DICTIONARY", ddl.parse_attach((text:gsub("^CREATE", "ATTACH"))).object)
  end)

  it("RESTORE with allow_non_empty_tables numbers new parts past the blocks on every disk", function()
    local p = place(root, "non_empty", backups)
    assert(chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ours')"))
    local r = assert(chb(p, "RESTORE TABLE db.t FROM Disk('backups', 'ours') SETTINGS allow_non_empty_tables = true"))
    assert.equal("RESTORED", r[1].status)
    local n = expected:match("db%.t\t(%d+)\t")
    -- every row of the source exactly twice
    assert.equal(string.format("%d\t0\n", 2 * tonumber(n)), ch(p, {
      "SELECT (SELECT count() FROM db.t), (SELECT count() FROM (SELECT d, id, s, count() AS c FROM db.t"
        .. " GROUP BY d, id, s HAVING c != 2))" }))
    assert.equal("cold\t6\ndefault\t4\n", disks_of(p))
    -- block numbers: ten distinct parts, none reused
    assert.equal("10\n", ch(p, { "SELECT uniqExact(min_block_number) FROM system.parts WHERE table = 't' AND active" }))
  end)

  it("RESTORE refuses a target policy or disk the configuration lacks, before writing", function()
    local p = place(root, "no_policy", backups, { policies = "" })
    local _, err = chb(p, "RESTORE DATABASE db FROM Disk('backups', 'ch')")
    assert.is_truthy(err and err:find("uses storage policy 'hot_cold', which is not in the configuration", 1, true), err)
    assert.is_false(h.exists(p.data .. "/metadata/db.sql"))
    local p2 = place(root, "no_cold", backups, { cold_xml = "" })
    _, err = chb(p2, "RESTORE DATABASE db FROM Disk('backups', 'ch')")
    assert.is_truthy(err and err:find("uses disk 'cold'", 1, true), err)
    assert.is_truthy(err:find("which is not in the configuration", 1, true), err)
    assert.is_false(h.exists(p2.data .. "/metadata/db.sql"))
    assert.same({}, h.tree(p2.data .. "/store"))
  end)

  it("BACKUP refuses a policy not in the config, a disk it cannot read offline, parts outside the policy", function()
    local function copy(name, opts)
      local p = place(root, name, backups, opts)
      sh("rm -rf " .. q(p.data) .. " " .. q(p.cold) .. " && cp -a " .. q(src.data) .. " " .. q(p.data)
        .. " && cp -a " .. q(src.cold) .. " " .. q(p.cold))
      return p
    end
    local p = copy("b_no_policy", { policies = "" })
    local _, err = chb(p, "BACKUP DATABASE db TO Disk('backups', 'x1')")
    assert.is_truthy(err and err:find("uses storage policy 'hot_cold', which is not in the configuration", 1, true), err)
    assert.is_false(h.exists(backups .. "/x1"))
    -- BACKUP TABLE of another table of the database still works
    local r = assert(chb(p, "BACKUP TABLE db.src TO Disk('backups', 'x1src')"))
    assert.equal("BACKUP_CREATED", r[1].status)

    p = copy("b_s3", { cold_xml = "<cold><type>s3</type><endpoint>http://localhost/b/</endpoint></cold>" })
    _, err = chb(p, "BACKUP TABLE db.t TO Disk('backups', 'x2')")
    assert.is_truthy(err and err:find("table db.t uses disk 'cold' (storage policy 'hot_cold') of type s3", 1, true), err)
    assert.is_false(h.exists(backups .. "/x2"))

    -- the cold disk's directory is gone (not mounted): not "no parts there"
    p = copy("b_unmounted")
    sh("rm -rf " .. q(p.cold))
    _, err = chb(p, "BACKUP TABLE db.t TO Disk('backups', 'x4')")
    assert.is_truthy(err and err:find("table db.t: disk 'cold' of its storage policy has no directory", 1, true), err)
    assert.is_false(h.exists(backups .. "/x4"))

    -- the same part on both disks (a move interrupted half way)
    p = copy("b_twice")
    local listed, out = h.run("ls -d " .. q(p.cold) .. "/store/*/*/202401_1_1_0")
    assert.is_truthy(listed, out)
    local dir = out:match("^(.*)/202401_1_1_0\n")
    local hot = p.data .. dir:sub(#p.cold + 1)
    sh("cp -a " .. q(dir .. "/202401_1_1_0") .. " " .. q(hot .. "/202401_1_1_0"))
    _, err = chb(p, "BACKUP TABLE db.t TO Disk('backups', 'x5')")
    assert.is_truthy(err and err:find("part 202401_1_1_0 of table db.t is on disk 'default'", 1, true), err)
    assert.is_truthy(err:find("and on disk 'cold'", 1, true), err)
    assert.is_false(h.exists(backups .. "/x5"))

    -- parts on a local disk that the table's policy does not name
    p = copy("b_stray", { policies = [[
      <policies><hot_cold><volumes><hot><disk>default</disk></hot></volumes></hot_cold></policies>]] })
    _, err = chb(p, "BACKUP TABLE db.t TO Disk('backups', 'x3')")
    assert.is_truthy(err and err:find("table db.t has part 202401_1_1_0 on disk 'cold'", 1, true), err)
    assert.is_truthy(err:find("not in its storage policy", 1, true), err)
    assert.is_false(h.exists(backups .. "/x3"))
  end)
end)


describe("engines chbackup cannot read offline", function()
  local root, backups, src
  setup(function()
    root = h.tmpdir("engines")
    backups = root .. "/backups"
    sh("mkdir -p " .. q(backups))
    src = place(root, "src", backups)
    ch(src, {
      "CREATE DATABASE d2",
      "CREATE TABLE d2.mem (a UInt32) ENGINE = Memory",
      "INSERT INTO d2.mem VALUES (1), (2)",
      "CREATE TABLE d2.target (a UInt32) ENGINE = MergeTree ORDER BY a",
      "INSERT INTO d2.target VALUES (3)",
      "CREATE TABLE d2.buf (a UInt32) ENGINE = Buffer(d2, target, 1, 10, 100, 10000, 1000000, 10000000, 100000000)",
      "CREATE TABLE d2.st (a UInt32) ENGINE = Set",
      "INSERT INTO d2.st VALUES (7)",
      "CREATE TABLE d2.nul (a UInt32) ENGINE = Null",
      "BACKUP DATABASE d2 TO Disk('backups', 'ch')",
    })
  end)

  local function refused(statement, patterns)
    local _, err = chb(src, statement)
    assert.is_string(err, statement)
    for _, p in ipairs(patterns) do
      assert.is_truthy(err:find(p, 1, true), "error does not name '" .. p .. "': " .. err)
    end
  end

  it("Memory and Buffer tables are refused by name, never skipped", function()
    refused("BACKUP DATABASE d2 TO Disk('backups', 'x')", { "table d2.buf (Buffer) keeps its data in the server's memory" })
    refused("BACKUP TABLE d2.mem TO Disk('backups', 'x')", { "table d2.mem (Memory)", "structure_only" })
    assert.is_false(h.exists(backups .. "/x"))
  end)

  it("an engine that keeps files chbackup does not back up is refused (Set)", function()
    refused("BACKUP DATABASE d2 EXCEPT TABLES buf, mem TO Disk('backups', 'x')",
      { "table d2.st (Set) keeps data chbackup cannot back up", "/1.bin" })
    assert.is_false(h.exists(backups .. "/x"))
  end)

  it("excluded, they are left out; structure_only backs up every definition", function()
    local r = assert(chb(src, "BACKUP DATABASE d2 EXCEPT TABLES buf, mem, st TO Disk('backups', 'rest')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    r = assert(chb(src, "BACKUP DATABASE d2 TO Disk('backups', 'struct') SETTINGS structure_only = true"))
    assert.equal("BACKUP_CREATED", r[1].status)
    for name in pairs(entries(backups .. "/struct")) do
      assert.is_truthy(name:match("^metadata/"), name)
    end
    local p = place(root, "ch_restores_struct", backups)
    ch(p, { "RESTORE DATABASE d2 FROM Disk('backups', 'struct')" })
    assert.equal("buf\nmem\nnul\nst\ntarget\n",
      ch(p, { "SELECT name FROM system.tables WHERE database = 'd2' ORDER BY name" }))
  end)

  it("RESTORE of a Memory table's rows is refused offline; structure_only creates it empty", function()
    local p = place(root, "ours_restores_mem", backups)
    local _, err = chb(p, "RESTORE TABLE d2.mem FROM Disk('backups', 'ch')")
    assert.is_truthy(err and err:find("table d2.mem (Memory) has data in backup", 1, true), err)
    local r = assert(chb(p, "RESTORE TABLE d2.mem FROM Disk('backups', 'ch') SETTINGS structure_only = true"))
    assert.equal("RESTORED", r[1].status)
    assert.equal("0\n", ch(p, { "SELECT count() FROM d2.mem" }))
  end)
end)
