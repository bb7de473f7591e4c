-- contents.each_part: a MergeTree table's parts in a backup, one part's Lua
-- tables at a time (issue 14: RESTORE once listed every file of a table
-- first, 200 MiB for 20,000 parts in 2 tables). Manifests here are made in
-- a core.index as manifest.parse makes them, the parts named as ClickHouse
-- names them, each with the dozen files of a compact part.
local core = require("chbackup.core")
local contents = require("chbackup.contents")
local manifest = require("chbackup.manifest")
local helpers = require("spec.helpers")

local PART_FILES = { "checksums.txt", "columns.txt", "columns_substreams.txt", "count.txt", "data.bin",
  "data.cmrk3", "default_compression_codec.txt", "metadata_version.txt", "minmax_p.idx", "partition.dat",
  "primary.cidx", "serialization.json" }

local function sum(n)
  return string.format("%032x", n)
end

-- A backup of table db.t with `parts` parts (partition p holds part
-- p_p_p_0; added in partition order, not name order), plus `extra` names.
local function backup_of(parts, extra)
  local idx = core.index()
  idx:add("metadata/db.sql", 10, sum(1))
  idx:add("metadata/db/t.sql", 10, sum(2))
  local n = 2
  for p = 1, parts do
    local part = string.format("%d_%d_%d_0", p, p, p)
    for _, f in ipairs(PART_FILES) do
      n = n + 1
      assert(idx:add("data/db/t/" .. part .. "/" .. f, 100 + n, sum(n)))
    end
  end
  for _, name in ipairs(extra or {}) do
    n = n + 1
    assert(idx:add(name, 1, sum(n)))
  end
  local dbs = assert(contents.index(manifest.indexed({}, idx), "b"))
  return dbs.db.tables.t
end

describe("contents.each_part", function()
  it("gives every part once, with its files, in name order", function()
    local t = backup_of(120)
    local seen, prev = {}, nil
    local err = contents.each_part(t, "b", function(p)
      assert.is_nil(seen[p.name], "part " .. p.name .. " given twice")
      seen[p.name] = true
      assert.is_true(prev == nil or prev < p.name)
      prev = p.name
      assert.are.equal(#PART_FILES, #p.list)
      for _, f in ipairs(PART_FILES) do
        assert.are.equal("data/db/t/" .. p.name .. "/" .. f, p.files[f].name)
      end
      assert.are.equal(tonumber(p.name:match("^(%d+)_")), tonumber(p.info.partition_id))
      assert.are.equal("backup b: part data/db/t/" .. p.name, p.where)
    end)
    assert.is_nil(err)
    local count = 0
    for _ in pairs(seen) do
      count = count + 1
    end
    assert.are.equal(120, count)
  end)

  it("each_part_name gives the same parts as each_part, from names alone", function()
    local t = backup_of(50)
    local a, b = {}, {}
    contents.each_part(t, "b", function(p)
      a[#a + 1] = p.name .. " " .. p.info.partition_id .. " " .. p.info.level
    end)
    contents.each_part_name(t, "b", function(name, info)
      b[#b + 1] = name .. " " .. info.partition_id .. " " .. info.level
    end)
    assert.are.same(a, b)
    assert.are.equal(50, #a)
  end)

  it("stops at the first value f returns, and returns it", function()
    local t = backup_of(30)
    local calls = 0
    local r = contents.each_part(t, "b", function()
      calls = calls + 1
      if calls == 7 then
        return "stop here"
      end
    end)
    assert.are.equal("stop here", r)
    assert.are.equal(7, calls)
  end)

  it("refuses a file of the table that is in no part's directory, naming it", function()
    local t = backup_of(3, { "data/db/t/stray.bin" })
    local r = contents.each_part(t, "b", function() end)
    assert.are.equal("backup b has an unexpected file data/db/t/stray.bin (not a file of a mergetree table)", r)
    assert.are.equal(r, contents.each_part_name(t, "b", function() end))
  end)

  it("refuses a table whose files come under two spellings of its name", function()
    local idx = core.index()
    idx:add("metadata/db.sql", 10, sum(1))
    idx:add("metadata/db/t.sql", 10, sum(2))
    idx:add("data/db/t/all_1_1_0/checksums.txt", 10, sum(3))
    idx:add("data/db/%74/all_2_2_0/checksums.txt", 10, sum(4))   -- %74 is t
    local dbs, err = contents.index(manifest.indexed({}, idx), "b")
    assert.is_nil(dbs)
    assert.equal("backup b is corrupt: it lists data/db/t/all_1_1_0/checksums.txt and files under "
      .. "data/db/%74/, two names of table db.t", err)
  end)

  local function peak_kib(t, walk)
    return helpers.heap_peak_kib(function(step) walk(t, step) end, 250)
  end

  it("holds one part at a time: Lua's heap does not grow with the table's parts", function()
    local small, big = backup_of(1000), backup_of(10000)
    local each = function(t, f)
      assert.is_nil(contents.each_part(t, "b", function() f() end))
    end
    local grow = peak_kib(big, each) - peak_kib(small, each)
    assert.is_true(grow < 256, string.format("10,000 parts held %.0f KiB more than 1,000", grow))
    -- the measure sees a list that holds them (table_data, as RESTORE once
    -- walked them): 9,000 more parts of 12 files
    local listed = function(t, f)
      local data = assert(contents.table_data(t, "mergetree", "b"))
      for _ in ipairs(data.parts) do
        f()
      end
    end
    local held = peak_kib(big, listed) - peak_kib(small, listed)
    assert.is_true(held > 8 * 1024, string.format("a list of 10,000 parts held only %.0f KiB more", held))
  end)
end)
