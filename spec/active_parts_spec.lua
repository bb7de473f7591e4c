-- catalog.each_active_part: a MergeTree table's active parts, partition by
-- partition in name order, holding one partition's parts and a few hundred
-- names read ahead (the table directory's names are in a core.index's
-- pages; issue 14: BACKUP held a table of fields for every part of a
-- table, then every part's name).
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

  it("holds no name a part in Lua: what it holds does not grow with the parts", function()
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
    -- 4,500 more parts: nothing in Lua's heap (the names are in the index's
    -- pages, read ahead a few hundred at a time) against their tables
    assert.is_true(s * 1024 / 4500 < 24, string.format("%.0f bytes a part while walking", s * 1024 / 4500))
    assert.is_true(l > 4 * s, string.format("walking %.0f KiB, a list %.0f KiB", s, l))
  end)
end)

-- catalog.uncovered decides which parts of a partition are active in
-- O(n log n) (a sort and a tree over the levels); it must decide exactly
-- what the pairwise definition does, on whatever names a data path holds.
describe("catalog.uncovered", function()
  -- b covers a: a's block range inside b's and b newer (a merge: level at
  -- least a's; the same range: a higher level, or the same level and a
  -- higher mutation)
  local function covers(b, a)
    if b == a or b.min_block > a.min_block or b.max_block < a.max_block then
      return false
    end
    if b.min_block == a.min_block and b.max_block == a.max_block then
      if b.level ~= a.level then
        return b.level > a.level
      end
      return b.mutation > a.mutation
    end
    return b.level >= a.level
  end

  local function pairwise(parts)
    local out = {}
    for _, a in ipairs(parts) do
      local covered = false
      for _, b in ipairs(parts) do
        covered = covered or covers(b, a)
      end
      if not covered then
        out[#out + 1] = a.name
      end
    end
    table.sort(out)
    return out
  end

  local function names_of(parts)
    local out = {}
    for _, p in ipairs(parts) do
      out[#out + 1] = p.name
    end
    table.sort(out)
    return out
  end

  it("decides as the pairwise definition does on random partitions", function()
    math.randomseed(14)
    local active_seen = 0
    for _ = 1, 300 do
      local parts, seen = {}, {}
      for _ = 1, math.random(1, 40) do
        local lo = math.random(1, 30)
        local hi = lo + math.random(0, 3) * math.random(0, 4)
        local name = string.format("all_%d_%d_%d", lo, hi, math.random(0, 4))
        local m = math.random(0, 6)
        -- mutations, and names of one key (all_1_1_0 and all_1_1_0_0)
        if m == 5 then
          name = name .. "_0"
        elseif m == 6 then
          name = name .. "_" .. math.random(1, 9)
        end
        if not seen[name] then
          seen[name] = true
          parts[#parts + 1] = catalog.parse_part_name(name)
        end
      end
      local want = pairwise(parts)
      assert.are.same(want, names_of(catalog.uncovered(parts)))
      active_seen = active_seen + #want
    end
    assert.is_true(active_seen > 300)   -- the cases are not all trivial
  end)

  it("keeps both parts of one key, and a merge over a mutated part", function()
    local parts = {}
    for _, n in ipairs({ "all_1_1_0", "all_1_1_0_0", "all_2_2_0_5", "all_2_3_1", "all_4_4_2" }) do
      parts[#parts + 1] = catalog.parse_part_name(n)
    end
    assert.are.same({ "all_1_1_0", "all_1_1_0_0", "all_2_3_1", "all_4_4_2" }, names_of(catalog.uncovered(parts)))
  end)
end)
