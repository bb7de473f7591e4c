-- A backup's files into a RESTORE job straight from its chain's indexes
-- (job:add_stored, core.plain_stop; csrc/engine/chb_stored.c): the plain
-- case only (bytes stored whole in a directory backup of the chain, under
-- the entry's name, deduplicated as ClickHouse writes them under the name
-- its data_file gives, or in the base for use_base), every other entry
-- left to chain.pieces at the position where the walk stopped. The copies
-- are checked as bytes equal to the source's.
local h = require("spec.helpers")
local core = require("chbackup.core")
local lfs = require("lfs")

local PART = "data/db/t/all_1_1_0/"

-- job's result once it ended (closed then)
local function run(job)
  assert.is_true(job:start())
  job:wait(30)
  local ok, err = job:result()
  job:close()
  return ok, err
end

-- A directory backup at dir: entries {rel, bytes=|same_as=|base=}, in name
-- order: bytes stored under its name, a copy of another entry's (data_file),
-- or whole in the base (use_base; base_size too when base_size=). Returns its
-- index and each rel's position in the index's name order.
local function backup(dir, entries)
  assert(os.execute("mkdir -p " .. h.quote(dir .. "/" .. PART)))
  local idx, by_rel = core.index(), {}
  idx:add("metadata/db/t.sql", 3, core.checksum("sql"))
  for _, e in ipairs(entries) do
    by_rel[e[1]] = e
  end
  for _, e in ipairs(entries) do
    local bytes = e.bytes or e.base or by_rel[e.same_as].bytes or by_rel[e.same_as].base
    local data_file = e.same_as and PART .. e.same_as or e.data_file and PART .. e.data_file or nil
    if e.bytes then
      h.write(dir .. "/" .. PART .. e[1], e.bytes)
    end
    local sum = #bytes > 0 and core.checksum(bytes) or nil
    local head_sum = e.base_size and core.checksum(bytes:sub(1, e.base_size))
    assert(idx:add(PART .. e[1], #bytes, sum, e.base ~= nil or nil, nil, e.base_size, head_sum, data_file))
  end
  local lo, hi = idx:prefix(PART)
  local pos_of = {}
  for pos = lo, hi do
    pos_of[idx:name(idx:sorted(pos)):sub(#PART + 1)] = pos
  end
  return idx, pos_of, lo, hi
end

describe("files whose bytes a chain stores plainly, from its indexes", function()
  local root, base_root, out
  local idx, pos_of, lo, hi, base_idx
  local chain, alone

  setup(function()
    local dir = h.tmpdir("stored")
    root, base_root, out = dir .. "/backup", dir .. "/base", dir .. "/out"
    assert(os.execute("mkdir -p " .. h.quote(out)))
    base_idx = backup(base_root, {
      { "e.bin", bytes = "echo!!!" },
      { "h.bin", bytes = "hotel" },
      { "x.bin", same_as = "h.bin" },
    })
    idx, pos_of, lo, hi = backup(root, {
      { "a.bin", bytes = "alpha bytes" },
      { "b.bin", same_as = "a.bin" },                     -- deduplicated: stored as a.bin
      { "c.txt", bytes = "" },                            -- empty: nothing to copy
      { "d.bin", bytes = "delta", data_file = "d.bin" },  -- data_file naming itself
      { "e.bin", base = "echo!!!" },                      -- whole in the base
      { "f.bin", bytes = "foxtrot" },
      { "g.bin", same_as = "e.bin" },                     -- a copy of a file in the base
      { "h.bin", base = "hotel" },
      { "i.bin", base = "echo!!! and more", base_size = 7 },   -- a head in the base: two pieces
      { "j.bin", base = "juliet" },                       -- the base has no such file
      { "k.bin", bytes = "kilo" },
    })
    chain = { { index = idx, root = root }, { index = base_idx, root = base_root } }
    alone = { chain[1] }
  end)

  it("plain_stop: the first file whose bytes are not stored plainly in the chain", function()
    assert.equal(pos_of["e.bin"], core.plain_stop(alone, lo, hi))
    assert.equal(pos_of["i.bin"], core.plain_stop(chain, lo, hi))
    assert.equal(pos_of["j.bin"], core.plain_stop(chain, pos_of["i.bin"] + 1, hi))
    assert.is_true(core.plain_stop(chain, pos_of["k.bin"], hi))
    assert.is_true(core.plain_stop(alone, lo, pos_of["d.bin"]))
    assert.is_true(core.plain_stop(alone, hi + 1, hi))
    -- a base that is no plain directory: its files are the chain's to resolve
    assert.equal(pos_of["e.bin"], core.plain_stop({ chain[1], { index = base_idx, root = false } }, lo, hi))
  end)

  it("add_stored copies them byte for byte, from this backup and its base, and stops where plain_stop does", function()
    local job = core.job({ threads = 2 })
    local strip = #PART
    assert.equal(pos_of["i.bin"], job:add_stored(chain, lo, hi, strip, out .. "/"))
    assert.equal(7, job:count())   -- a, b (a's bytes), d, e and g (the base's e), f, h; c is empty
    assert.is_true(job:add_stored(chain, pos_of["k.bin"], hi, strip, out .. "/"))
    assert.is_true(run(job))
    local want = { ["a.bin"] = "alpha bytes", ["b.bin"] = "alpha bytes", ["d.bin"] = "delta",
      ["e.bin"] = "echo!!!", ["f.bin"] = "foxtrot", ["g.bin"] = "echo!!!", ["h.bin"] = "hotel",
      ["k.bin"] = "kilo" }
    for rel, bytes in pairs(want) do
      assert.equal(bytes, h.read(out .. "/" .. rel), rel)
    end
    for _, rel in ipairs({ "c.txt", "i.bin", "j.bin" }) do
      assert.is_nil(lfs.attributes(out .. "/" .. rel), rel)
    end
  end)

  it("a stored file whose bytes differ from the manifest fails the job, naming it", function()
    local victim = root .. "/" .. PART .. "f.bin"
    h.write(victim, "FOXTROT")
    finally(function() h.write(victim, "foxtrot") end)
    local job = core.job({ threads = 1 })
    assert.is_true(job:add_stored(alone, pos_of["f.bin"], pos_of["f.bin"], #PART, out .. "/bad-"))
    local ok, err = run(job)
    assert.is_nil(ok)
    assert.matches("f%.bin", err)
    assert.is_nil(lfs.attributes(out .. "/bad-f.bin"))
  end)

  it("reads confined below the backup: a symbolic link there is refused, not followed", function()
    local victim = root .. "/" .. PART .. "a.bin"
    local outside = out .. "/../outside.bin"
    h.write(outside, "alpha bytes")   -- the same bytes: only the link can fail it
    os.remove(victim)
    assert(lfs.link(outside, victim, true))
    finally(function()
      os.remove(victim)
      h.write(victim, "alpha bytes")
    end)
    local job = core.job({ threads = 1 })
    job:add_stored(alone, pos_of["a.bin"], pos_of["a.bin"], #PART, out .. "/link-")
    local ok, err = run(job)
    assert.is_nil(ok)
    assert.matches("a%.bin", err)
  end)
end)
