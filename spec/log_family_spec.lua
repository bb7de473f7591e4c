-- Log, TinyLog, StripeLog, Set, Join and EmbeddedRocksDB tables (issue 11,
-- item 3), against real ClickHouse 26.5: chbackup's BACKUP of a Log-family
-- table has the entries ClickHouse's has (columns.txt, count.txt, none for
-- an empty table), each restores the other's backup, and RESTORE with
-- allow_non_empty_tables appends as ClickHouse's restoreDataImpl does.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")
local q = h.quote

local sh, ch, chb = h.sh, h.ch, h.chb

local LOG_TABLES = { "l", "tl", "sl", "nested", "el", "etl", "esl" }

-- The data path's tables, made by real ClickHouse: several inserts each, and
-- columns whose files are many (arrays, nullables, Nested, tuples, maps).
local CREATE = {
  "CREATE DATABASE lf",
  "CREATE TABLE lf.l (a UInt32, s String, arr Array(Nullable(String)), lc LowCardinality(String),"
    .. " t Tuple(p UInt8, q String), dd Decimal(10, 2), e Enum8('a' = 1, 'b' = 2), m Map(String, UInt64),"
    .. " dt DateTime64(3, 'UTC'), al UInt64 ALIAS a + 1, mat String MATERIALIZED toString(a)) ENGINE = Log",
  "CREATE TABLE lf.nested (`we\\`ird na\\\\me` UInt8, n Nested(x UInt8, y String),"
    .. " aa Array(Array(UInt16)), nn Nullable(Int64)) ENGINE = Log",
  "CREATE TABLE lf.tl (a UInt32, s String, arr Array(UInt8)) ENGINE = TinyLog",
  "CREATE TABLE lf.sl (a UInt32, s String, arr Array(String), x Nullable(Float64)) ENGINE = StripeLog",
  "CREATE TABLE lf.el (a UInt32) ENGINE = Log",
  "CREATE TABLE lf.etl (a UInt32) ENGINE = TinyLog",
  "CREATE TABLE lf.esl (a UInt32) ENGINE = StripeLog",
  "CREATE TABLE lf.es (a UInt32) ENGINE = Set",
  "CREATE TABLE lf.ej (k UInt32, v String) ENGINE = Join(ANY, LEFT, k)",
}

-- INSERTs of `batch` (a number: different rows per batch).
local function inserts(batch)
  local b = tostring(batch)
  return {
    "INSERT INTO lf.l SELECT number + " .. b .. " * 1000, toString(number), [toString(number), NULL],"
      .. " 'lc' || toString(number % 3), (number % 7, 'q'), number / 4, 'a', map('k', number),"
      .. " toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + number FROM numbers(10 + " .. b .. ")",
    "INSERT INTO lf.l SELECT number, '', [], 'lc', (2, 'r'), 2.5, 'b', map(),"
      .. " toDateTime64('2024-02-01 00:00:00', 3, 'UTC') FROM numbers(5)",
    "INSERT INTO lf.nested SELECT number % 200, [1, 2], ['x' || toString(" .. b .. "), 'y'],"
      .. " [[number], []], if(number % 2 = 0, NULL, number) FROM numbers(7 + " .. b .. ")",
    "INSERT INTO lf.nested SELECT 3, [], [], [], 1 FROM numbers(2)",
    "INSERT INTO lf.tl SELECT number + " .. b .. ", 'x', [1] FROM numbers(3)",
    "INSERT INTO lf.tl SELECT number, repeat('y', number), [] FROM numbers(4 + " .. b .. ")",
    "INSERT INTO lf.sl SELECT number, 'x' || toString(" .. b .. "), ['1'], NULL FROM numbers(3 + " .. b .. ")",
    "INSERT INTO lf.sl SELECT number, 'y', [], 0.5 FROM numbers(4)",
  }
end

local function digest_statements(tables)
  local out = {}
  for _, t in ipairs(tables) do
    out[#out + 1] = string.format("SELECT '%s', count(), sum(cityHash64(*)) FROM lf.%s", t, t)
  end
  return out
end
local DIGEST = digest_statements(LOG_TABLES)

local function place(root, name, backups)
  local p = { data = root .. "/" .. name, config = root .. "/" .. name .. ".xml",
    status = root .. "/" .. name .. "-status" }
  h.write_config(p.config, backups)
  return p
end

-- Entries of a backup under data/: name -> "size checksum".
local function data_entries(dir)
  local m = assert(manifest.read(dir .. "/.backup"))
  local out = {}
  for _, f in ipairs(m.files) do
    if f.name:match("^data/") then
      out[f.name] = f.size .. " " .. tostring(f.checksum)
    end
  end
  return out
end

-- Every file under a data path's store/ with its bytes (for "nothing changed").
local function snapshot(dir)
  local out = {}
  for _, rel in ipairs(h.tree(dir .. "/store")) do
    out[rel] = h.read(dir .. "/store/" .. rel)
  end
  return out
end

-- A table's files in a data path: name -> bytes.
local function table_files(p, t)
  local _, out = h.run("readlink -f " .. q(p.data .. "/data/lf/" .. t))
  local dir = out:match("[^\n]+")
  local files = {}
  for _, rel in ipairs(h.tree(dir)) do
    files[rel] = h.read(dir .. "/" .. rel)
  end
  return files
end


describe("Log-family tables", function()
  local root, backups, src, expected
  setup(function()
    root = h.tmpdir("logfam")
    backups = root .. "/backups"
    sh("mkdir -p " .. q(backups))
    src = place(root, "src", backups)
    local stmts = table.move(CREATE, 1, #CREATE, 1, {})
    table.move(inserts(1), 1, #inserts(1), #stmts + 1, stmts)
    stmts[#stmts + 1] = "BACKUP DATABASE lf TO Disk('backups', 'ch')"
    ch(src, stmts)
    expected = ch(src, DIGEST)
  end)

  it("the source has rows in every non-empty table", function()
    assert.is_truthy(expected:find("l\t16\t", 1, true), expected)
    assert.is_truthy(expected:find("el\t0\t0\n", 1, true), expected)
  end)

  it("BACKUP has ClickHouse's entries: the same names, sizes and checksums, columns.txt and count.txt", function()
    local r = assert(chb(src, "BACKUP DATABASE lf TO Disk('backups', 'ours')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    local ours, theirs = data_entries(backups .. "/ours"), data_entries(backups .. "/ch")
    assert.same(theirs, ours)
    -- what the comparison covers: generated files, none for empty tables
    assert.is_truthy(theirs["data/lf/l/count.txt"])
    assert.is_truthy(theirs["data/lf/sl/count.txt"])
    assert.is_truthy(theirs["data/lf/tl/columns.txt"])
    assert.is_nil(theirs["data/lf/tl/count.txt"])
    assert.is_nil(theirs["data/lf/el/sizes.json"])
    assert.equal("16", h.read(backups .. "/ours/data/lf/l/count.txt"))
  end)

  it("ClickHouse RESTOREs chbackup's backup with the same rows", function()
    local p = place(root, "ch_restores_ours", backups)
    ch(p, { "RESTORE DATABASE lf FROM Disk('backups', 'ours')" })
    assert.equal(expected, ch(p, DIGEST))
  end)

  it("chbackup restores ClickHouse's backup with the same rows, without columns.txt and count.txt", function()
    local p = place(root, "ours_restores_ch", backups)
    local r = assert(chb(p, "RESTORE DATABASE lf FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal(expected, ch(p, DIGEST))
    assert.is_nil(table_files(p, "l")["columns.txt"])
    assert.is_nil(table_files(p, "sl")["count.txt"])
  end)

  it("RESTORE with allow_non_empty_tables appends as ClickHouse does: rows and files alike", function()
    -- two equal targets with other rows; ClickHouse appends into one, chbackup into the other
    local a, b = place(root, "append_ch", backups), place(root, "append_ours", backups)
    local stmts = table.move(CREATE, 1, #CREATE, 1, {})
    table.move(inserts(2), 1, #inserts(2), #stmts + 1, stmts)
    ch(a, stmts)
    sh("cp -a " .. q(a.data) .. " " .. q(b.data))
    local before = ch(a, DIGEST)
    ch(a, { "RESTORE DATABASE lf FROM Disk('backups', 'ours') SETTINGS allow_non_empty_tables = true" })
    local r = assert(chb(b, "RESTORE DATABASE lf FROM Disk('backups', 'ours') SETTINGS allow_non_empty_tables = true"))
    assert.equal("RESTORED", r[1].status)
    local theirs = ch(a, DIGEST)
    assert.equal(theirs, ch(b, DIGEST))
    -- rows = old + the backup's, for each engine
    local function rows(digest, t)
      return tonumber(("\n" .. digest):match("\n" .. t .. "\t(%d+)\t"))
    end
    for _, t in ipairs({ "l", "nested", "tl", "sl" }) do
      assert.is_true(rows(before, t) > 0 and rows(expected, t) > 0, t)
      assert.equal(rows(before, t) + rows(expected, t), rows(theirs, t), t)
    end
    -- Log and TinyLog files are byte for byte ClickHouse's (marks and sizes.json
    -- too); StripeLog's index is compressed by chbackup, its data file equal
    for _, t in ipairs({ "l", "nested", "tl" }) do
      assert.same(table_files(a, t), table_files(b, t), t)
    end
    assert.equal(table_files(a, "sl")["data.bin"], table_files(b, "sl")["data.bin"])
    -- the appended tables take more rows, and chbackup backs them up as ClickHouse does
    ch(b, table.move(inserts(3), 1, #inserts(3), 1, {}))
    ch(a, table.move(inserts(3), 1, #inserts(3), 1, {}))
    assert.equal(ch(a, DIGEST), ch(b, DIGEST))
    ch(b, { "BACKUP DATABASE lf TO Disk('backups', 'appended_ch')" })
    assert(chb(b, "BACKUP DATABASE lf TO Disk('backups', 'appended_ours')"))
    assert.same(data_entries(backups .. "/appended_ch"), data_entries(backups .. "/appended_ours"))
  end)

  it("without allow_non_empty_tables a non-empty table is refused by name, nothing changed", function()
    local p = place(root, "refuse", backups)
    local stmts = table.move(CREATE, 1, #CREATE, 1, {})
    table.move(inserts(4), 1, #inserts(4), #stmts + 1, stmts)
    ch(p, stmts)
    local before = snapshot(p.data)
    for _, t in ipairs({ "l", "tl", "sl" }) do
      local ok, out = h.cli(p, "RESTORE TABLE lf." .. t .. " FROM Disk('backups', 'ch')")
      assert.is_falsy(ok)
      assert.is_truthy(out:find("cannot restore table lf." .. t .. ": it is not empty", 1, true), out)
    end
    assert.same(before, snapshot(p.data))
  end)
end)


describe("Set, Join and EmbeddedRocksDB tables", function()
  local root, backups, src
  setup(function()
    root = h.tmpdir("setjoin")
    backups = root .. "/backups"
    sh("mkdir -p " .. q(backups))
    src = place(root, "src", backups)
    ch(src, {
      "CREATE DATABASE sj",
      "CREATE TABLE sj.st (a UInt32) ENGINE = Set",
      "INSERT INTO sj.st VALUES (1), (2)",
      "CREATE TABLE sj.j (k UInt32, v String) ENGINE = Join(ANY, LEFT, k)",
      "INSERT INTO sj.j VALUES (1, 'a')",
      "CREATE TABLE sj.r (k UInt32, v String) ENGINE = EmbeddedRocksDB PRIMARY KEY k",
      "INSERT INTO sj.r VALUES (1, 'a'), (2, 'b')",
      "CREATE TABLE sj.est (a UInt32) ENGINE = Set",
      "CREATE TABLE sj.ej (k UInt32, v String) ENGINE = Join(ALL, INNER, k)",
      "BACKUP DATABASE sj TO Disk('backups', 'ch')",
    })
  end)

  it("ClickHouse 26.5's BACKUP keeps only their definitions, even with rows", function()
    assert.same({}, data_entries(backups .. "/ch"))
  end)

  it("chbackup refuses them with rows, naming the table and why; nothing is written", function()
    for t, why in pairs({ st = "no rows of a Set table", j = "no rows of a Join table", r = "RocksDB directory" }) do
      local _, err = chb(src, "BACKUP TABLE sj." .. t .. " TO Disk('backups', 'x')")
      assert.is_truthy(err and err:find("table sj." .. t .. " (", 1, true), err)
      assert.is_truthy(err:find(why, 1, true), err)
      assert.is_truthy(err:find("structure_only", 1, true), err)
    end
    assert.is_false(h.exists(backups .. "/x"))
  end)

  it("empty ones are backed up as ClickHouse does; each side restores the other's backup", function()
    local r = assert(chb(src, "BACKUP TABLE sj.est, TABLE sj.ej TO Disk('backups', 'empty_ours')"))
    assert.equal("BACKUP_CREATED", r[1].status)
    ch(src, { "BACKUP TABLE sj.est, TABLE sj.ej TO Disk('backups', 'empty_ch')" })
    local m_ours = assert(manifest.read(backups .. "/empty_ours/.backup"))
    local m_ch = assert(manifest.read(backups .. "/empty_ch/.backup"))
    local function listing(m)
      local out = {}
      for _, f in ipairs(m.files) do
        out[f.name] = f.size .. " " .. f.checksum
      end
      return out
    end
    assert.same(listing(m_ch), listing(m_ours))
    local p = place(root, "ch_restores_ours", backups)
    ch(p, { "CREATE DATABASE sj", "RESTORE TABLE sj.est, TABLE sj.ej FROM Disk('backups', 'empty_ours')" })
    assert.equal("0\n", ch(p, { "SELECT count() FROM sj.ej" }))
    -- ClickHouse's backup of tables with rows restores empty, by either
    local p2 = place(root, "ours_restores_ch", backups)
    r = assert(chb(p2, "RESTORE DATABASE sj FROM Disk('backups', 'ch')"))
    assert.equal("RESTORED", r[1].status)
    assert.equal("0\t0\n", ch(p2, { "SELECT (SELECT count() FROM sj.r), (SELECT count() FROM sj.j)" }))
    assert.equal("0\n", ch(p2, { "SELECT 1 IN sj.st" }))
  end)

  it("structure_only backs up their definitions", function()
    local r = assert(chb(src, "BACKUP DATABASE sj TO Disk('backups', 'struct') SETTINGS structure_only = true"))
    assert.equal("BACKUP_CREATED", r[1].status)
    assert.same({}, data_entries(backups .. "/struct"))
  end)
end)
