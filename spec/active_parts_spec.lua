-- catalog.each_active_part: a MergeTree table's active parts, partition by
-- partition in name order, holding the table directory's part names and
-- one partition's parts (issue 14: BACKUP held a table of fields for every
-- part of a table; one of 10^5 parts costs what a few MB of names do).
-- Parts here are directories named as ClickHouse names them, each with a
-- checksums.txt (what makes a part complete).
local lfs = require("lfs")
local catalog = require("chbackup.catalog")
local helpers = require("spec.helpers")

local function make_parts(dir, list)
  if not lfs.attributes(dir) then
    assert(lfs.mkdir(dir))
  end
  for _, name in ipairs(list) do
    assert(lfs.mkdir(dir .. "/" .. name))
    local f = assert(io.open(dir .. "/" .. name .. "/checksums.txt", "w"))
    f:write("checksums format version: 4\n")
    f:close()
  end
end

local function table_at(dir)
  return { database = "db", name = "t", family = "mergetree", data_dir = dir }
end

local function walk(tbl)
  local out = {}
  local visited, err = catalog.each_active_part(tbl, function(p)
    out[#out + 1] = p
  end)
  assert(visited, err)
  return out
end

describe("catalog.each_active_part", function()
  local tmp
  before_each(function()
    tmp = helpers.tmpdir()
  end)

  it("gives the parts no other covers, in name order, with their directory and disk", function()
    local dir = tmp .. "/t"
    -- all_1_2_1 covers all_1_1_0 and all_2_2_0 (a merge); all_3_3_0_7
    -- covers all_3_3_0 (a mutation); partitions 1 and 10 are others
    make_parts(dir, { "all_1_1_0", "all_2_2_0", "all_1_2_1", "all_3_3_0", "all_3_3_0_7", "1_5_5_0", "10_6_6_0" })
    local got = {}
    for _, p in ipairs(walk(table_at(dir))) do
      got[#got + 1] = p.name
      assert.are.equal(dir .. "/" .. p.name, p.dir)
      assert.are.equal("default", p.disk)
    end
    assert.are.same({ "10_6_6_0", "1_5_5_0", "all_1_2_1", "all_3_3_0_7" }, got)
  end)

  it("stops at the first value f returns, and returns it as the error", function()
    local dir = tmp .. "/t"
    make_parts(dir, { "a_1_1_0", "b_2_2_0", "c_3_3_0" })
    local n = 0
    local visited, err = catalog.each_active_part(table_at(dir), function()
      n = n + 1
      if n == 2 then
        return "enough"
      end
    end)
    assert.is_nil(visited)
    assert.are.equal("enough", err)
  end)

  it("refuses an active part without checksums.txt and a part-named file, naming them", function()
    local dir = tmp .. "/t"
    make_parts(dir, { "all_1_1_0", "all_2_2_0" })
    os.remove(dir .. "/all_2_2_0/checksums.txt")
    local visited, err = catalog.each_active_part(table_at(dir), function() end)
    assert.is_nil(visited)
    assert.are.equal("part " .. dir .. "/all_2_2_0 of table db.t has no readable checksums.txt (nil)",
      err:gsub("%(.-%)$", "(nil)"))
    local f = assert(io.open(dir .. "/all_3_3_0", "w"))
    f:close()
    visited, err = catalog.each_active_part(table_at(dir), function() end)
    assert.is_nil(visited)
    assert.are.equal("part " .. dir .. "/all_3_3_0 is not a directory (ClickHouse makes no such entries)", err)
  end)

  local function peak_kib(tbl, each)
    return helpers.heap_peak_kib(function(step) each(tbl, step) end, 100)
  end

  it("holds names, not a table a part: a fraction of what a list of the parts holds", function()
    local dirs = {}
    for k, count in ipairs({ 500, 5000 }) do
      local list = {}
      for i = 1, count do
        list[i] = string.format("%d_%d_%d_0", i, i, i)   -- a partition a part
      end
      dirs[k] = tmp .. "/t" .. k
      make_parts(dirs[k], list)
    end
    local streamed = function(tbl, f)
      assert(catalog.each_active_part(tbl, function() f() end))
    end
    -- (the list BACKUP once made: every part's table, then walked)
    local listed = function(tbl, f)
      for _ in ipairs(walk(tbl)) do
        f()
      end
    end
    local s = peak_kib(table_at(dirs[2]), streamed) - peak_kib(table_at(dirs[1]), streamed)
    local l = peak_kib(table_at(dirs[2]), listed) - peak_kib(table_at(dirs[1]), listed)
    -- 4,500 more parts: their names (about 60 bytes each) against their tables
    assert.is_true(s * 1024 / 4500 < 150, string.format("%.0f bytes a part while walking", s * 1024 / 4500))
    assert.is_true(l > 4 * s, string.format("walking %.0f KiB, a list %.0f KiB", s, l))
  end)
end)
