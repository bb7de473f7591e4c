-- Specs for chbackup.core, the C binding: jobs (threads, progress, cancel,
-- the fail shape `nil, message, code`, the close rules), ClickHouse's
-- checksums checked against files real ClickHouse wrote (spec/fixtures),
-- checksums.txt, and the small system helpers.
local h = require("spec.helpers")
local core = require("chbackup.core")
local lfs = require("lfs")

local FULL = h.FIXTURES .. "/ch_backups/full"
local STORE = h.FIXTURES .. "/datapath/store"
local ZERO_SEED = string.rep("0", 32)
local BIG = 1 << 30 -- a sparse file: free to make, long to copy

-- Files of the full backup that are stored under their own name (not
-- deduplicated to another data_file), with the size and checksum that
-- ClickHouse wrote for them in `.backup`.
local function backup_files()
  local text = assert(h.read(FULL .. "/.backup"))
  local files = {}
  for body in text:gmatch("<file>(.-)</file>") do
    local name = body:match("<name>(.-)</name>")
    local size = tonumber(body:match("<size>(%d+)</size>"))
    local checksum = body:match("<checksum>(%x+)</checksum>")
    if checksum and not body:find("<data_file>", 1, true) and h.exists(FULL .. "/" .. name) then
      files[#files + 1] = { name = name, size = size, checksum = checksum }
    end
  end
  return files
end

local function by_name(files)
  local t = {}
  for _, f in ipairs(files) do
    t[f.name] = f
  end
  return t
end

local function sleep(seconds)
  local deadline = core.now_us() + math.floor(seconds * 1e6)
  while core.now_us() < deadline do
    os.execute("sleep 0.01")
  end
end

-- Waits (up to 10 s) until a running job has read something.
local function wait_started(job)
  local deadline = core.now_us() + 10 * 1000000
  repeat
    local p = job:progress()
    if p.bytes_done > 0 or p.state ~= "running" then
      return p
    end
    sleep(0.001)
  until core.now_us() > deadline
  return job:progress()
end

local function make_sparse(path, size)
  local f = assert(io.open(path, "wb"))
  assert(f:seek("set", size - 1))
  f:write("\0")
  f:close()
end

local function hex128(lo, hi)
  return string.format("%016x%016x", hi, lo)
end


describe("chbackup.core", function()
  local dir, big
  local files, named

  setup(function()
    dir = h.tmpdir("core")
    big = dir .. "/big.bin"
    make_sparse(big, BIG)
    files = backup_files()
    named = by_name(files)
  end)

  teardown(function()
    os.execute("rm -rf " .. h.quote(dir))
  end)

  it("has a version", function()
    assert.is_string(core._VERSION)
    assert.matches("^%d+%.%d+%.%d+", core._VERSION)
  end)

  -- RESTORE moves each part into place with it: a name that exists (an
  -- empty directory, a file) must be refused, never replaced
  it("rename_new renames to a new name and refuses an existing one with EEXIST, both kept", function()
    local a, b, f = dir .. "/rn_a", dir .. "/rn_b", dir .. "/rn_f"
    assert(lfs.mkdir(a))
    h.write(a .. "/x", "part")
    assert.is_true(core.rename_new(a, b))
    assert.is_nil(lfs.attributes(a))
    assert.equal("part", h.read(b .. "/x"))
    assert(lfs.mkdir(a))
    for _, existing in ipairs({ b, f }) do
      if existing == f then
        h.write(f, "file")
      end
      local ok, err, code = core.rename_new(a, existing)
      assert.is_nil(ok)
      assert.equal("EEXIST", code)
      assert.matches("cannot rename " .. a, err, 1, true)
      assert.equal("directory", lfs.attributes(a, "mode"))
    end
    assert(lfs.mkdir(dir .. "/rn_empty"))
    local _, _, code = core.rename_new(a, dir .. "/rn_empty")   -- rename(2) would replace it
    assert.equal("EEXIST", code)
    assert.equal("part", h.read(b .. "/x"))
    assert.equal("file", h.read(f))
  end)

  describe("checksums on data real ClickHouse wrote", function()
    it("has the fixture files it needs", function()
      assert.is_true(#files > 100)
      assert.is_table(named["data/shop/orders/202401_1_1_0/count.txt"])
      assert.is_table(named["data/shop/orders/202401_1_1_0/id.bin"])
    end)

    it("core.checksum equals the .backup <checksum> of count.txt and of a bigger .bin", function()
      for _, name in ipairs({ "data/shop/orders/202401_1_1_0/count.txt", "data/shop/orders/202401_1_1_0/id.bin" }) do
        local f = named[name]
        local data = h.read(FULL .. "/" .. name)
        assert.equal(f.size, #data)
        assert.equal(f.checksum, core.checksum(data))
      end
      -- Values as ClickHouse wrote them, to catch a fixture regenerated wrongly too.
      assert.equal("5543aca87958eb6e928f7fb486ee924f", named["data/shop/orders/202401_1_1_0/count.txt"].checksum)
      assert.equal("fe24e4e3a9bc557d2b28dfaa7f694c2b", named["data/shop/orders/202401_1_1_0/id.bin"].checksum)
    end)

    it("core.checksum equals .backup for every file of the backup", function()
      local bad = {}
      for _, f in ipairs(files) do
        local data = h.read(FULL .. "/" .. f.name)
        if #data ~= f.size or core.checksum(data) ~= f.checksum then
          bad[#bad + 1] = f.name
        end
      end
      assert.same({}, bad)
    end)

    it("core.checksum is CityHash128 chained over 2048-byte blocks from a zero seed", function()
      local data = h.read(FULL .. "/data/shop/orders/202401_1_1_0/id.bin")
      assert.is_true(#data > 2048 and #data <= 4096)
      local first = core.cityhash128(data:sub(1, 2048), ZERO_SEED)
      assert.equal(named["data/shop/orders/202401_1_1_0/id.bin"].checksum, core.cityhash128(data:sub(2049), first))
      local small = h.read(FULL .. "/data/shop/orders/202401_1_1_0/count.txt")
      assert.equal(named["data/shop/orders/202401_1_1_0/count.txt"].checksum, core.cityhash128(small, ZERO_SEED))
      assert.equal(core.checksum(""), ZERO_SEED)
    end)

    it("core.cityhash128 equals the checksum of each compressed block of real .bin files", function()
      local blocks = 0
      for _, f in ipairs(files) do
        if f.name:match("%.bin$") and f.size > 0 then
          local data = h.read(FULL .. "/" .. f.name)
          local pos = 1
          while pos <= #data do
            -- 16-byte CityHash128 (low, high), then method, compressed size
            -- (header included), uncompressed size, data.
            local lo, hi, _, csize = string.unpack("<i8i8BI4", data, pos)
            assert.equal(hex128(lo, hi), core.cityhash128(data:sub(pos + 16, pos + 16 + csize - 1)), f.name)
            pos = pos + 16 + csize
            blocks = blocks + 1
          end
        end
      end
      assert.is_true(blocks > 50)
    end)

    it("raises on a bad seed", function()
      assert.has_error(function() core.cityhash128("x", "123") end)
      assert.has_error(function() core.cityhash128("x", string.rep("g", 32)) end)
      assert.has_error(function() core.checksum() end)
    end)

    it("core.checksum_file hashes a file in place, or fails ENOENT", function()
      local name = "data/shop/orders/202401_1_1_0/id.bin"
      local sum, size = core.checksum_file(FULL .. "/" .. name)
      assert.equal(named[name].checksum, sum)
      assert.equal(named[name].size, size)
      local ok, msg, code = core.checksum_file(dir .. "/nope")
      assert.is_nil(ok)
      assert.matches("nope", msg, 1, true)
      assert.equal("ENOENT", code)
    end)
  end)

  describe("read_checksums", function()
    local function parts()
      local out = {}
      for a in lfs.dir(STORE) do
        if a ~= "." and a ~= ".." then
          for t in lfs.dir(STORE .. "/" .. a) do
            if t ~= "." and t ~= ".." then
              local tdir = STORE .. "/" .. a .. "/" .. t
              if lfs.attributes(tdir, "mode") == "directory" then
                for p in lfs.dir(tdir) do
                  if h.exists(tdir .. "/" .. p .. "/checksums.txt") then
                    out[#out + 1] = tdir .. "/" .. p
                  end
                end
              end
            end
          end
        end
      end
      table.sort(out)
      return out
    end

    -- Checks a part (or projection) dir; returns the sum of its sizes.
    local function check_part(pdir)
      local sums, err = core.read_checksums(pdir .. "/checksums.txt")
      assert(sums, err)
      local total, n = 0, 0
      for name, e in pairs(sums) do
        n = n + 1
        local path = pdir .. "/" .. name
        local mode = lfs.attributes(path, "mode")
        if mode == "directory" then
          -- A projection: its size is the total of its own checksums.txt.
          assert.equal(check_part(path), e.size, path)
        else
          assert.equal("file", mode, path)
          assert.equal(lfs.attributes(path, "size"), e.size, path)
          assert.equal(core.checksum(h.read(path)), e.checksum, path)
        end
        assert.is_boolean(e.is_compressed)
        if e.is_compressed then
          assert.is_number(e.uncompressed_size)
          assert.matches("^%x+$", e.uncompressed_checksum)
        end
        total = total + e.size
      end
      assert.is_true(n > 0, pdir)
      return total
    end

    it("gives every file's real size and checksum for every part of the fixture data path", function()
      local all = parts()
      assert.is_true(#all >= 20)
      for _, pdir in ipairs(all) do
        check_part(pdir)
      end
    end)

    it("fails CORRUPT on a damaged checksums.txt, ENOENT on a missing one", function()
      local src = parts()[1] .. "/checksums.txt"
      local text = h.read(src)
      local path = dir .. "/checksums.txt"
      -- A flipped byte in the compressed body, a truncation, a bad header.
      local damaged = {
        text:sub(1, #text - 3) .. string.char((text:byte(#text - 2) + 1) % 256) .. text:sub(#text - 1),
        text:sub(1, #text - 10),
        "checksums format version: 9\n" .. text:sub(29),
        "not a checksums file",
      }
      for i, bad in ipairs(damaged) do
        h.write(path, bad)
        local ok, msg, code = core.read_checksums(path)
        assert.is_nil(ok, "case " .. i)
        assert.equal("CORRUPT", code, "case " .. i .. ": " .. tostring(msg))
        assert.matches(path, msg, 1, true)
      end
      local ok, msg, code = core.read_checksums(dir .. "/missing/checksums.txt")
      assert.is_nil(ok)
      assert.equal("ENOENT", code)
      assert.matches("missing/checksums.txt", msg, 1, true)
    end)
  end)

  describe("Job", function()
    it("copies every file of a real backup with 2 threads, identical, with checksums", function()
      local job = core.job({ threads = 2, buffer_size = 1000 })
      assert.matches("^chbackup.Job", tostring(job))
      for i, f in ipairs(files) do
        local idx = job:add(FULL .. "/" .. f.name, dir .. "/copy/" .. f.name, f.size, f.checksum)
        assert.equal(i, idx)
      end
      assert.equal(#files, job:count())
      local total = 0
      for _, f in ipairs(files) do
        total = total + f.size
      end
      local p = job:progress()
      assert.same({ state = "new", files_total = #files, files_done = 0, bytes_total = total, bytes_done = 0 }, p)
      assert.is_true(job:start())
      assert.equal("done", job:wait())
      assert.is_true(job:result())
      assert.same({ state = "done", files_total = #files, files_done = #files, bytes_total = total,
        bytes_done = total }, job:progress())
      for i, f in ipairs(files) do
        local size, sum, tail_only = job:entry(i)
        assert.equal(f.size, size)
        assert.equal(f.checksum, sum)
        assert.is_false(tail_only)
        assert.equal(h.read(FULL .. "/" .. f.name), h.read(dir .. "/copy/" .. f.name), f.name)
      end
      job:close()
    end)

    it("hashes without a destination and skips src_offset bytes", function()
      local name = "data/shop/orders/202401_1_1_0/id.bin"
      local data = h.read(FULL .. "/" .. name)
      local job = core.job({ threads = 2 })
      job:add(FULL .. "/" .. name)
      job:add(FULL .. "/" .. name, dir .. "/tail.bin", nil, nil, 1000)
      assert.is_true(job:start())
      assert.equal("done", job:wait(30))
      assert.is_true(job:result())
      assert.same({ #data, core.checksum(data), false }, { job:entry(1) })
      assert.same({ #data - 1000, core.checksum(data:sub(1001)), false }, { job:entry(2) })
      assert.equal(data:sub(1001), h.read(dir .. "/tail.bin"))
      job:close()
    end)

    it("with 0 entries ends done", function()
      local job = core.job()
      assert.is_true(job:start())
      assert.equal("done", job:wait())
      assert.is_true(job:result())
      assert.equal(0, job:count())
      job:close()
    end)

    describe("fails with nil, message, code", function()
      local name = "data/shop/orders/202401_1_1_0/id.bin"

      local function run(src, dst, size, checksum)
        local job = core.job({ threads = 2 })
        job:add(src, dst, size, checksum)
        assert.is_true(job:start())
        local state = job:wait()
        local r = { job:result() }
        job:close()
        return state, r
      end

      it("CORRUPT on a wrong checksum or size, naming the file, removing the partial copy", function()
        local f = named[name]
        local wrong = (f.checksum:sub(1, 31) .. (f.checksum:sub(32) == "0" and "1" or "0"))
        local dst = dir .. "/corrupt/a.bin"
        local state, r = run(FULL .. "/" .. name, dst, f.size, wrong)
        assert.equal("failed", state)
        assert.is_nil(r[1])
        assert.matches("checksum mismatch for " .. FULL .. "/" .. name, r[2], 1, true)
        assert.equal("CORRUPT", r[3])
        assert.is_false(h.exists(dst))

        state, r = run(FULL .. "/" .. name, dst, f.size + 1, f.checksum)
        assert.equal("failed", state)
        assert.same({ nil, "size mismatch for " .. FULL .. "/" .. name .. ": expected " .. (f.size + 1) ..
          " bytes, read " .. f.size, "CORRUPT" }, r)
        assert.is_false(h.exists(dst))
      end)

      it("ENOENT on a missing source, naming it", function()
        local state, r = run(dir .. "/no-such-file", dir .. "/enoent/out")
        assert.equal("failed", state)
        assert.is_nil(r[1])
        assert.matches(dir .. "/no-such-file", r[2], 1, true)
        assert.equal("ENOENT", r[3])
        assert.is_false(h.exists(dir .. "/enoent/out"))
      end)

      it("EEXIST on an existing destination, which is kept as it was", function()
        local dst = dir .. "/taken.bin"
        h.write(dst, "keep")
        local state, r = run(FULL .. "/" .. name, dst)
        assert.equal("failed", state)
        assert.is_nil(r[1])
        assert.matches(dst, r[2], 1, true)
        assert.equal("EEXIST", r[3])
        assert.equal("keep", h.read(dst))
      end)

      it("CANCELLED on cancel mid-run, quickly, removing the partial copy", function()
        local dst = dir .. "/cancelled.bin"
        local job = core.job({ threads = 1, buffer_size = 4096 })
        job:add(big, dst)
        assert.is_true(job:start())
        assert.equal("running", wait_started(job).state)
        local t0 = core.now_us()
        job:cancel()
        assert.equal("cancelled", job:wait(10))
        assert.is_true(core.now_us() - t0 < 3 * 1000000)
        local ok, msg, code = job:result()
        assert.is_nil(ok)
        assert.matches("cancel", msg)
        assert.equal("CANCELLED", code)
        assert.is_false(h.exists(dst))
        assert.is_true(job:progress().bytes_done < BIG)
        job:close()
      end)

      it("CANCELLED when cancelled before start", function()
        local job = core.job()
        job:add(big)
        job:cancel()
        assert.equal("cancelled", job:wait())
        assert.same({ nil, "cancelled before start", "CANCELLED" }, { job:result() })
        job:close()
      end)
    end)

    it("reports progress while running and wait(timeout) returns 'running'", function()
      local job <close> = core.job({ threads = 1, buffer_size = 4096 })
      job:add("/dev/zero") -- never ends: only cancel stops it
      assert.is_true(job:start())
      local p1 = wait_started(job)
      assert.equal("running", p1.state)
      assert.equal("running", job:wait(0))
      assert.equal("running", job:wait(0.05))
      local p2 = job:progress()
      assert.equal("running", p2.state)
      assert.equal(1, p2.files_total)
      assert.equal(0, p2.files_done)
      assert.is_true(p2.bytes_done > p1.bytes_done)
      job:cancel()
      assert.equal("cancelled", job:wait())
      assert.is_true(job:progress().bytes_done >= p2.bytes_done)
    end)

    describe("misuse raises", function()
      it("on a closed job, for every method; close itself may repeat", function()
        local job = core.job()
        job:close()
        job:close()
        for _, m in ipairs({ "add", "start", "wait", "cancel", "progress", "result", "entry", "count", "set_base" }) do
          assert.has_error(function() job[m](job, "x") end, "attempt to use a closed chbackup.Job")
        end
      end)

      it("add after start, start twice, result or entry before the end", function()
        local job <close> = core.job({ threads = 1 })
        job:add("/dev/zero")
        assert.has_error(function() job:result() end, "job has not ended (new)")
        assert.has_error(function() job:entry(1) end)
        assert.is_true(job:start())
        assert.has_error(function() job:add("/dev/zero") end, "cannot add to a job that has started")
        assert.has_error(function() job:start() end, "job already started")
        assert.has_error(function() job:result() end, "job has not ended (running)")
        assert.has_error(function() job:entry(1) end)
        job:cancel()
        assert.equal("cancelled", job:wait())
        assert.has_error(function() job:entry(1) end)
      end)

      it("bad arguments", function()
        local job <close> = core.job()
        assert.has_error(function() core.job("x") end)
        assert.has_error(function() job:add() end)
        assert.has_error(function() job:add("a", nil, nil, "not hex") end)
        assert.has_error(function() job:add("a", nil, nil, nil, -1) end)
        assert.has_error(function() job:add({}) end)
        assert.has_error(function() job:add({ { 42, 0, 1 } }) end)
        assert.has_error(function() job:wait(0 / 0) end)
        assert.has_error(function() job.count(io.stdout) end)
        job:add("a")
        assert.has_error(function() job:entry(0) end)
        assert.has_error(function() job:entry(2) end)
      end)
    end)

    describe("closing", function()
      it("a <close> variable closes the job, also on error", function()
        local kept
        do
          local job <close> = core.job()
          kept = job
          assert.equal(0, job:count())
        end
        assert.has_error(function() kept:count() end, "attempt to use a closed chbackup.Job")

        local ok, err = pcall(function()
          local job <close> = core.job()
          kept = job
          error("boom", 0)
        end)
        assert.is_false(ok)
        assert.equal("boom", err)
        assert.has_error(function() kept:count() end, "attempt to use a closed chbackup.Job")
      end)

      it("close on a running job cancels and joins: the partial copy is gone at once", function()
        local dst = dir .. "/closed-running.bin"
        local job = core.job({ threads = 1, buffer_size = 4096 })
        job:add(big, dst)
        assert.is_true(job:start())
        assert.equal("running", wait_started(job).state)
        job:close()
        assert.is_false(h.exists(dst))
      end)

      it("garbage collection of a running job cancels and joins", function()
        local dst = dir .. "/gc-running.bin"
        local weak = setmetatable({}, { __mode = "v" })
        do
          local job = core.job({ threads = 2, buffer_size = 4096 })
          job:add(big, dst)
          job:add("/dev/zero")
          assert.is_true(job:start())
          assert.equal("running", wait_started(job).state)
          weak[1] = job
        end
        collectgarbage()
        collectgarbage()
        assert.is_nil(weak[1])
        assert.is_false(h.exists(dst))
      end)
    end)
  end)

  describe("index beyond its memory budget (issue 14)", function()
    -- 20,000 files of 2,000 parts, entries made as a manifest lists them
    local function fill(idx)
      for i = 1, 20000 do
        local name = string.format("data/db/t/%d_%d_%d_0/f%d.bin", i // 10, i // 10, i // 10, i % 10)
        assert.equal(i, idx:add(name, i, string.format("%032x", i)))
      end
    end

    it("spills to its temporary file and answers as in memory", function()
      local small, full = core.index(0), core.index()   -- (0: two pages in memory)
      fill(small)
      fill(full)
      assert.is_true(small:memory() < full:memory() / 4)
      for _, i in ipairs({ 1, 777, 12345, 20000 }) do
        assert.same(full:get(i), small:get(i))
        assert.equal(i, small:find(full:name(i)))
        assert.equal(i, small:find_content(i, string.format("%032x", i)))
      end
      local sf, sl = small:prefix("data/db/t/1")
      local bf, bl = full:prefix("data/db/t/1")
      assert.same({ bf, bl }, { sf, sl })
      for pos = sf, sl, 97 do
        assert.equal(full:sorted(pos), small:sorted(pos))
      end
      local copy = core.index(0)
      local added = copy:add_from_base(small, sf, sl)
      assert.equal(sl - sf + 1, added)
      assert.equal(copy:name(1), small:name(small:sorted(sf)))
    end)

    it("raises naming its temporary directory when it cannot make its file", function()
      local idx = core.index(0, dir .. "/absent")
      assert.has_error(function() fill(idx) end)
      local ok, err = pcall(fill, core.index(0, dir .. "/absent"))
      assert.is_false(ok)
      assert.matches("cannot add to an index: cannot create the index's temporary file in .*/absent: "
        .. "No such file or directory", err)
    end)
  end)

  describe("system helpers", function()
    it("fsync flushes a file and a directory, or fails ENOENT", function()
      h.write(dir .. "/sync.txt", "x")
      assert.is_true(core.fsync(dir .. "/sync.txt"))
      assert.is_true(core.fsync(dir))
      local ok, msg, code = core.fsync(dir .. "/absent")
      assert.is_nil(ok)
      assert.matches("absent", msg, 1, true)
      assert.equal("ENOENT", code)
    end)

    it("now_us is the wall clock in microseconds and increases", function()
      local a = core.now_us()
      assert.is_true(math.type(a) == "integer")
      assert.is_true(math.abs(a // 1000000 - os.time()) <= 2)
      sleep(0.01)
      local b = core.now_us()
      assert.is_true(b - a >= 5000)
      assert.is_true(core.getpid() == h.pid())
    end)

    local function wait_for(path)
      for _ = 1, 500 do
        local text = h.read(path)
        if text and text:find("\n") then
          return text
        end
        sleep(0.01)
      end
      return h.read(path)
    end

    it("spawn_detached runs a program detached and returns its pid", function()
      local out = dir .. "/spawned.txt"
      local pid = core.spawn_detached({ "sh", "-c", "echo hi > " .. h.quote(out) }, "/dev/null")
      assert.is_true(math.type(pid) == "integer" and pid > 1)
      assert.equal("hi\n", wait_for(out))
    end)

    it("spawn_detached sends output to the log and takes numbers in argv", function()
      local log = dir .. "/spawned.log"
      local argv = { "sh", "-c", 'echo "$1 $2"', "sh" }
      argv[#argv + 1] = 42
      argv[#argv + 1] = 7
      assert.is_number(core.spawn_detached(argv, log))
      assert.equal("42 7\n", wait_for(log))
    end)

    it("spawn_detached raises on a bad argv", function()
      assert.has_error(function() core.spawn_detached({}) end)
      assert.has_error(function() core.spawn_detached({ "sh", {} }) end)
      assert.has_error(function() core.spawn_detached("sh") end)
    end)
  end)
end)
