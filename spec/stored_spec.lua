-- A backup's own files into a RESTORE job straight from its index
-- (job:add_stored, idx:plain_stop; csrc/engine/chb_stored.c): the plain
-- case only (bytes stored here, under the entry's name or, deduplicated as
-- ClickHouse writes them, under the name its data_file gives), every other
-- entry left to the chain at the position where the walk stopped. The
-- copies are checked as bytes equal to the source's.
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

describe("stored files of a backup, from its index", function()
  local root, out
  -- entries of one part, in name order; bytes = what the backup stores under the name
  local ENTRIES = {
    { "a.bin", bytes = "alpha bytes" },
    { "b.bin", same_as = "a.bin" },                     -- deduplicated: stored as a.bin
    { "c.txt", bytes = "" },                            -- empty: nothing to copy
    { "d.bin", bytes = "delta", data_file = "d.bin" },  -- data_file naming itself
    { "e.bin", use_base = true, size = 7 },             -- in the base
    { "f.bin", bytes = "foxtrot" },
    { "g.bin", same_as = "e.bin" },                     -- a copy of a file in the base
  }
  local idx, lo, hi, pos_of

  setup(function()
    local dir = h.tmpdir("stored")
    root, out = dir .. "/backup", dir .. "/out"
    assert(os.execute("mkdir -p " .. h.quote(root .. "/" .. PART) .. " " .. h.quote(out)))
    idx = core.index()
    idx:add("metadata/db/t.sql", 3, core.checksum("sql"))
    local by_rel = {}
    for _, e in ipairs(ENTRIES) do
      by_rel[e[1]] = e
    end
    for _, e in ipairs(ENTRIES) do
      local src = e.same_as and by_rel[e.same_as] or e
      local size = src.bytes and #src.bytes or src.size
      local sum = src.bytes and core.checksum(src.bytes) or string.rep("7", 32)
      local data_file = e.same_as and PART .. e.same_as or e.data_file and PART .. e.data_file or nil
      if e.bytes then
        h.write(root .. "/" .. PART .. e[1], e.bytes)
      end
      assert(idx:add(PART .. e[1], size, size > 0 and sum or nil, e.use_base, nil, nil, nil, data_file))
    end
    lo, hi = idx:prefix(PART)
    pos_of = {}
    for pos = lo, hi do
      pos_of[idx:name(idx:sorted(pos)):sub(#PART + 1)] = pos
    end
  end)

  it("plain_stop: the first file whose bytes are not stored plainly here", function()
    assert.equal(pos_of["e.bin"], idx:plain_stop(lo, hi))
    assert.equal(pos_of["g.bin"], idx:plain_stop(pos_of["f.bin"], hi))   -- its data_file is in the base
    assert.is_true(idx:plain_stop(lo, pos_of["d.bin"]))
    assert.is_true(idx:plain_stop(hi + 1, hi))
  end)

  it("add_stored copies the plain files, byte for byte, and stops where plain_stop does", function()
    local job = core.job({ threads = 2 })
    local strip = #PART
    assert.equal(pos_of["e.bin"], job:add_stored(idx, lo, hi, strip, out .. "/", root))
    assert.equal(3, job:count())   -- a, b (from a's bytes), d; c is empty
    assert.is_true(job:add_stored(idx, pos_of["f.bin"], pos_of["f.bin"], strip, out .. "/", root))
    assert.is_true(job:start())
    assert.equal("done", job:wait(30))
    assert.is_true(job:result())
    job:close()
    assert.equal("alpha bytes", h.read(out .. "/a.bin"))
    assert.equal("alpha bytes", h.read(out .. "/b.bin"))
    assert.equal("delta", h.read(out .. "/d.bin"))
    assert.equal("foxtrot", h.read(out .. "/f.bin"))
    assert.is_nil(lfs.attributes(out .. "/c.txt"))
    assert.is_nil(lfs.attributes(out .. "/e.bin"))
  end)

  it("a stored file whose bytes differ from the manifest fails the job, naming it", function()
    local victim = root .. "/" .. PART .. "f.bin"
    h.write(victim, "FOXTROT")
    finally(function() h.write(victim, "foxtrot") end)
    local job = core.job({ threads = 1 })
    assert.is_true(job:add_stored(idx, pos_of["f.bin"], pos_of["f.bin"], #PART, out .. "/bad-", root))
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
    job:add_stored(idx, pos_of["a.bin"], pos_of["a.bin"], #PART, out .. "/link-", root)
    local ok, err = run(job)
    assert.is_nil(ok)
    assert.matches("a%.bin", err)
  end)
end)
