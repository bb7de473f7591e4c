-- Parts as production makes them (issue 11 item 4), built by real ClickHouse
-- at test time: mutations (`…_N` parts), lightweight deletes (`_row_exists`),
-- columns added and dropped after parts were written, projections rebuilt
-- by mutations, sparse columns, JSON/Dynamic/Variant subcolumn files, TTL
-- info, hashed string partitions, LowCardinality, Nested, Map, Tuple,
-- outdated parts left by merges, detached parts. chbackup's BACKUP must
-- agree with ClickHouse's own (same entries, same checksums), each must
-- RESTORE the other's, and ClickHouse must count the same rows.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local q = h.quote

local SETUP = {
  "CREATE DATABASE prod",
  -- mutations, lightweight deletes, a projection, ALTERs, a string partition
  [[CREATE TABLE prod.events (ts DateTime, site String, user UInt64, v Float64,
      tags Array(LowCardinality(String)), attrs Map(String, UInt32),
      pt Tuple(a UInt8, b Nullable(String)),
      n Nested(k String, w UInt16),
      PROJECTION by_site (SELECT site, count(), sum(v) GROUP BY site))
    ENGINE = MergeTree PARTITION BY site ORDER BY (user, ts)
    TTL ts + INTERVAL 100 YEAR
    SETTINGS min_bytes_for_wide_part = 0, ratio_of_defaults_for_sparse_serialization = 0.5,
      old_parts_lifetime = 100000, lightweight_mutation_projection_mode = 'rebuild']],
  [[INSERT INTO prod.events SELECT toDateTime('2026-01-01 00:00:00') + number * 37,
      ['alpha', 'beta', 'gamma'][number % 3 + 1], number % 97, if(number % 5 = 0, number / 7, 0),
      [toString(number % 4)], map('k', toUInt32(number % 11)), (number % 2, if(number % 3 = 0, NULL, 'x')),
      [toString(number)], [toUInt16(number % 9)]
    FROM numbers(3000)]],
  [[INSERT INTO prod.events SELECT toDateTime('2026-02-01 00:00:00') + number, 'alpha', number, 1.5,
      [], map(), (1, 'y'), [], [] FROM numbers(500)]],
  "ALTER TABLE prod.events UPDATE v = v + 1 WHERE user % 7 = 0 SETTINGS mutations_sync = 1",
  "ALTER TABLE prod.events ADD COLUMN added String DEFAULT 'new' SETTINGS mutations_sync = 1",
  [[INSERT INTO prod.events (ts, site, user, v, added) SELECT toDateTime('2026-03-01 00:00:00') + number,
      'delta', number, 2, 'set' FROM numbers(200)]],
  "ALTER TABLE prod.events DROP COLUMN attrs SETTINGS mutations_sync = 1",
  "ALTER TABLE prod.events MATERIALIZE PROJECTION by_site SETTINGS mutations_sync = 1",
  "DELETE FROM prod.events WHERE user % 13 = 0",
  -- semi-structured types
  [[CREATE TABLE prod.docs (id UInt64, j JSON, d Dynamic, var Variant(UInt64, String, Array(UInt8)))
    ENGINE = MergeTree ORDER BY id SETTINGS min_bytes_for_wide_part = 0]],
  [[INSERT INTO prod.docs SELECT number, concat('{"a":', toString(number), ',"b":{"c":"', toString(number % 5),
      '"}}'), if(number % 2 = 0, number::Dynamic, toString(number)::Dynamic),
      multiIf(number % 3 = 0, number::Variant(UInt64, String, Array(UInt8)),
        number % 3 = 1, toString(number)::Variant(UInt64, String, Array(UInt8)),
        [1, 2]::Variant(UInt64, String, Array(UInt8)))
    FROM numbers(1000)]],
  "INSERT INTO prod.docs SELECT number + 1000, '{\"z\":1}', NULL, NULL FROM numbers(10)",
  "DELETE FROM prod.docs WHERE id % 17 = 0",
  -- a merge that leaves outdated parts behind, and a detached part
  [[CREATE TABLE prod.merged (k UInt32, s String) ENGINE = ReplacingMergeTree ORDER BY k
    SETTINGS old_parts_lifetime = 100000]],
  "INSERT INTO prod.merged SELECT number, 'a' FROM numbers(100)",
  "INSERT INTO prod.merged SELECT number, 'b' FROM numbers(50, 100)",
  "INSERT INTO prod.merged SELECT number, 'c' FROM numbers(300, 10)",
  "OPTIMIZE TABLE prod.merged FINAL",
  "INSERT INTO prod.merged SELECT number, 'd' FROM numbers(1000, 10)",
}

local TABLES = { { "prod", "events" }, { "prod", "docs" }, { "prod", "merged" } }


describe("parts as production makes them", function()
  local w, source, outdated
  setup(function()
    w = h.world("prod")
    source = w.dir .. "/source"
    h.clickhouse(source, SETUP, w.config)
    local last = h.clickhouse(source, { "SELECT name FROM system.parts WHERE database = 'prod' AND table = 'merged' "
      .. "AND active ORDER BY max_block_number DESC LIMIT 1 FORMAT TSV" }):match("^(%S+)\n$")
    h.clickhouse(source, { "ALTER TABLE prod.merged DETACH PART '" .. last .. "'" }, w.config)
    h.clickhouse(source, { "BACKUP DATABASE prod TO Disk('backups', 'theirs')" }, w.config)
    -- ClickHouse removes outdated parts soon after it opens a data path, so
    -- one is planted for chbackup's BACKUP: a copy of the merged part under
    -- the name of a part it covers
    local merged = h.clickhouse(source, { "SELECT path FROM system.parts WHERE database = 'prod' "
      .. "AND table = 'merged' AND active AND level > 0 ORDER BY name LIMIT 1 FORMAT TSV" }):match("^(%S+)/\n$")
    outdated = merged:gsub("_(%d+)_(%d+)_(%d+)$", "_%1_%1_0")
    assert(merged ~= outdated)
    assert(os.execute("cp -a " .. q(merged) .. " " .. q(outdated)))
    h.sql(w, "BACKUP DATABASE prod TO Disk('backups', 'ours')", source)
  end)

  it("has the part shapes it is meant to test", function()
    local out = h.clickhouse(source, { "SELECT table, name FROM system.parts WHERE database = 'prod' AND active "
      .. "ORDER BY table, name FORMAT TSV" })
    assert.matches("events\t[%x]+_%d+_%d+_%d+_%d+\n", out)   -- a mutation version
    local files = h.tree(source .. "/store")
    local found = {}
    for _, f in ipairs(files) do
      for _, what in ipairs({ "_row_exists.bin", "by_site.proj/", "ttl.txt", "j.", "d.", "var." }) do
        if f:find(what, 1, true) then
          found[what] = true
        end
      end
    end
    for _, what in ipairs({ "_row_exists.bin", "by_site.proj/", "ttl.txt", "j.", "d.", "var." }) do
      assert.is_true(found[what], what)
    end
    assert.is_truthy(outdated:match("/all_(%d+)_%1_0$"), outdated)
  end)

  it("writes the entries and checksums ClickHouse's own BACKUP writes", function()
    local ours = assert(manifest.read(w.backups .. "/ours/.backup"))
    local theirs = assert(manifest.read(w.backups .. "/theirs/.backup"))
    local compared = 0
    for _, e in ipairs(theirs.files) do
      local o = ours.by_name[e.name]
      assert.is_truthy(o, "missing from chbackup's backup: " .. e.name)
      assert.equal(e.size, o.size, e.name)
      assert.equal(e.checksum, o.checksum, e.name)
      compared = compared + 1
    end
    for _, e in ipairs(ours.files) do
      assert.is_truthy(theirs.by_name[e.name], "not in ClickHouse's backup: " .. e.name)
    end
    assert.is_true(compared > 100)
  end)

  it("is restored by ClickHouse, and chbackup restores ClickHouse's, with the same rows", function()
    local want = h.table_digests(source, TABLES)
    local by_ch = w.dir .. "/by-clickhouse"
    h.clickhouse(by_ch, { "RESTORE DATABASE prod FROM Disk('backups', 'ours')" }, w.config)
    assert.equal(want, h.table_digests(by_ch, TABLES))
    local by_us = w.dir .. "/by-chbackup"
    assert(os.execute("mkdir -p " .. q(by_us .. "/metadata")))
    h.sql(w, "RESTORE DATABASE prod FROM Disk('backups', 'theirs')", by_us)
    assert.equal(want, h.table_digests(by_us, TABLES))
    local broken = h.clickhouse(by_us, { "SELECT count() FROM system.detached_parts WHERE database = 'prod' FORMAT TSV" })
    assert.equal("0\n", broken)
    -- the semi-structured columns read back as written
    local q1 = "SELECT sum(j.a::UInt64), countIf(d IS NULL), countIf(variantType(var) = 'String') FROM prod.docs FORMAT TSV"
    assert.equal(h.clickhouse(source, { q1 }), h.clickhouse(by_us, { q1 }))
  end)
end)
