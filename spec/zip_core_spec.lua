-- Specs for the zip side of chbackup.core: core.zip_writer, core.zip_reader,
-- core.zip_methods and zip entries as job pieces. Every method and level
-- round-trips a real ClickHouse backup tree (spec/fixtures/ch_backups/full,
-- `.backup` included); 7-Zip tests and extracts each archive (with the
-- password when there is one) to files byte-identical to the source, bsdtar
-- lists them; wrong or missing passwords, truncated archives, damaged
-- entries and unsafe entry names are refused naming the entry; the writer
-- follows the close rules and leaves no temporary file behind.
local h = require("spec.helpers")
local core = require("chbackup.core")
local lfs = require("lfs")

local FULL = h.FIXTURES .. "/ch_backups/full"
local q = h.quote
local PW = "pässwörd with spaces"

-- Every file of the fixture backup tree: { {name=, path=, size=} }, sorted.
local function tree(root)
  local files = {}
  local function walk(dir, rel)
    for name in lfs.dir(dir) do
      if name ~= "." and name ~= ".." then
        local path = dir .. "/" .. name
        local r = rel and (rel .. "/" .. name) or name
        local attr = lfs.symlinkattributes(path)
        if attr.mode == "directory" then
          walk(path, r)
        else
          files[#files + 1] = { name = r, path = path, size = attr.size }
        end
      end
    end
  end
  walk(root, nil)
  table.sort(files, function(a, b) return a.name < b.name end)
  return files
end

-- Writes `files` into a zip with the given options; returns the writer's result.
local function write_zip(path, files, opts)
  local w = assert(core.zip_writer(path, opts))
  for _, f in ipairs(files) do
    local sum = assert(core.checksum_file(f.path))
    assert(w:add(f.name, f.path, f.size, sum))
  end
  assert(w:start())
  local state = w:wait()
  local ok, msg, code = w:result()
  w:close()
  return state, ok, msg, code
end

local function sh_ok(cmd)
  local ok, out = h.run(cmd)
  return ok, out
end

-- Byte offset of an entry's data in a zip archive (python's zipfile reads the local header).
local function data_offset(zip, name)
  local ok, out = h.run(string.format([[python3 -c '
import sys, zipfile, struct
z = zipfile.ZipFile(sys.argv[1]); i = z.getinfo(sys.argv[2])
f = open(sys.argv[1], "rb"); f.seek(i.header_offset)
hdr = f.read(30); n, m = struct.unpack("<HH", hdr[26:30])
print(i.header_offset + 30 + n + m, i.compress_size)' %s %s]], q(zip), q(name)))
  assert(ok, out)
  local off, size = out:match("(%d+) (%d+)")
  return tonumber(off), tonumber(size)
end

local function flip_byte(path, offset)
  local f = assert(io.open(path, "r+b"))
  f:seek("set", offset)
  local c = f:read(1)
  f:seek("set", offset)
  f:write(string.char(c:byte() ~ 0x5a))
  f:close()
end

local function no_temporaries(dir)
  for name in lfs.dir(dir) do
    if name:find(".tmp-", 1, true) then
      return false, name
    end
  end
  return true
end


describe("core.zip_methods", function()
  it("lists ClickHouse's method names with their level ranges", function()
    local m = core.zip_methods()
    assert.same({ min = 0, max = 0, default = 0 }, m.store)
    assert.same({ min = 0, max = 9, default = 6 }, m.deflate)
    assert.same({ min = 1, max = 9, default = 9 }, m.bzip2)
    assert.same({ min = 0, max = 9, default = 6 }, m.lzma)
    assert.same({ min = 0, max = 9, default = 6 }, m.xz)
    assert.same({ min = 1, max = 22, default = 3 }, m.zstd)
  end)
end)


describe("core.zip_writer options", function()
  local dir
  before_each(function() dir = h.tmpdir("zipopts") end)

  it("refuses an unknown method naming the valid ones", function()
    local w, msg, code = core.zip_writer(dir .. "/a.zip", { method = "lz4" })
    assert.is_nil(w)
    assert.equal("INVALID", code)
    assert.matches("unknown compression_method 'lz4'", msg, 1, true)
    assert.matches("store, deflate, bzip2, lzma, xz, zstd", msg, 1, true)
  end)

  it("refuses a level out of range naming the range", function()
    for method, bad in pairs({ deflate = 10, bzip2 = 0, zstd = 23, xz = 10, lzma = -2, store = 1 }) do
      local w, msg, code = core.zip_writer(dir .. "/a.zip", { method = method, level = bad })
      assert.is_nil(w)
      assert.equal("INVALID", code)
      local m = core.zip_methods()[method]
      assert.matches(string.format("valid: %d..%d", m.min, m.max), msg, 1, true)
    end
  end)

  it("raises on unknown option keys and wrong types", function()
    assert.has_error(function() core.zip_writer(dir .. "/a.zip", { methd = "xz" }) end)
    assert.has_error(function() core.zip_writer(dir .. "/a.zip", { level = "high" }) end)
  end)

  it("refuses an existing destination", function()
    h.write(dir .. "/a.zip", "x")
    local w, _, code = core.zip_writer(dir .. "/a.zip")
    assert.is_nil(w)
    assert.equal("EEXIST", code)
  end)
end)


describe("zip round trips", function()
  local files = tree(FULL)
  local dir = h.tmpdir("ziprt")
  local methods = core.zip_methods()

  for _, method in ipairs({ "store", "deflate", "bzip2", "lzma", "xz", "zstd" }) do
    local m = methods[method]
    local levels = { m.min }
    if m.default ~= m.min then levels[#levels + 1] = m.default end
    if m.max ~= m.default then levels[#levels + 1] = m.max end
    for _, level in ipairs(levels) do
      for _, password in ipairs({ false, PW }) do
        local label = string.format("%s level %d%s", method, level, password and " with AES-256" or "")
        it(label .. ": 7z t and 7z x give the same bytes, bsdtar lists, reader and job restore", function()
          local zip = string.format("%s/%s-%d-%s.zip", dir, method, level, password and "aes" or "plain")
          local state, ok, msg = write_zip(zip, files, {
            method = method, level = level, password = password or nil, threads = 2,
          })
          assert.equal("done", state, msg)
          assert.is_true(ok, msg)
          assert.is_true((no_temporaries(dir)))
          local pflag = password and ("-p" .. q(password)) or ""

          local t_ok, t_out = sh_ok(string.format("7z t %s %s", pflag, q(zip)))
          assert.is_true(t_ok, t_out)
          assert.matches("Everything is Ok", t_out, 1, true)

          local out = zip .. ".x"
          local x_ok, x_out = sh_ok(string.format("7z x -y %s -o%s %s", pflag, q(out), q(zip)))
          assert.is_true(x_ok, x_out)
          local d_ok, d_out = sh_ok(string.format("diff -r %s %s", q(FULL), q(out)))
          assert.is_true(d_ok, d_out)

          local l_ok, l_out = sh_ok("bsdtar -tf " .. q(zip))
          assert.is_true(l_ok, l_out)
          local listed = {}
          for line in l_out:gmatch("[^\n]+") do listed[#listed + 1] = line end
          table.sort(listed)
          local names = {}
          for _, f in ipairs(files) do names[#names + 1] = f.name end
          assert.same(names, listed)

          local r = assert(core.zip_reader(zip, password or nil))
          local list = r:list()
          assert.equal(#files, #list)
          for _, e in ipairs(list) do
            assert.equal(password and true or false, e.encrypted)
            assert.equal(e.size == 0 and "store" or method, e.method)
          end
          assert.equal(h.read(FULL .. "/.backup"), r:read(".backup"))
          r:close()

          -- RESTORE streams out of the archive: every file through job pieces.
          local job = core.job({ threads = 2 })
          for i, f in ipairs(files) do
            local sum = assert(core.checksum_file(f.path))
            job:add({ { zip, 0, -1, entry = f.name, password = password or nil } },
              string.format("%s.r/%d", zip, i), f.size, sum)
          end
          assert(job:start())
          assert.equal("done", job:wait())
          assert.is_true(job:result())
          job:close()
        end)
      end
    end
  end

  it("bsdtar extracts store and deflate entries with AES (what libarchive 3.6 reads)", function()
    for _, method in ipairs({ "store", "deflate" }) do
      local zip = string.format("%s/%s-%d-aes.zip", dir, method, methods[method].default)
      local out = zip .. ".bsdtar"
      assert(lfs.mkdir(out))
      local ok, o = sh_ok(string.format("bsdtar -xf %s -C %s --passphrase %s", q(zip), q(out), q(PW)))
      assert.is_true(ok, o)
      local d_ok, d_out = sh_ok(string.format("diff -r %s %s", q(FULL), q(out)))
      assert.is_true(d_ok, d_out)
    end
  end)
end)


describe("zip refusals", function()
  local files = tree(FULL)
  local dir, victim = nil, "data/shop/orders/202401_1_1_0/id.bin"

  before_each(function() dir = h.tmpdir("zipbad") end)

  local function make(method, password)
    local zip = string.format("%s/%s%s.zip", dir, method, password and "-aes" or "")
    local state, ok, msg = write_zip(zip, files, { method = method, password = password })
    assert.equal("done", state, msg)
    assert.is_true(ok, msg)
    return zip
  end

  local function restore(zip, password, name)
    local job = core.job({ threads = 1 })
    local out = zip .. ".restored"
    job:add({ { zip, 0, -1, entry = name, password = password } }, out)
    job:start()
    local state = job:wait()
    local ok, msg, code = job:result()
    job:close()
    return state, ok, msg, code, out
  end

  it("refuses a missing or wrong password naming the entry, writing nothing", function()
    local zip = make("deflate", PW)
    local r = assert(core.zip_reader(zip))
    local s, msg, code = r:read(victim)
    assert.is_nil(s)
    assert.equal("AUTH", code)
    assert.matches(victim, msg, 1, true)
    r:close()
    r = assert(core.zip_reader(zip, "wrong"))
    s, msg, code = r:read(victim)
    assert.is_nil(s)
    assert.equal("AUTH", code)
    assert.matches("wrong password for entry " .. victim, msg, 1, true)
    r:close()
    local state, ok, jmsg, jcode, out = restore(zip, "wrong", victim)
    assert.equal("failed", state)
    assert.is_nil(ok)
    assert.equal("AUTH", jcode)
    assert.matches(victim, jmsg, 1, true)
    assert.is_false(h.exists(out))
    assert.is_falsy((sh_ok("7z t -pwrong " .. q(zip))))
  end)

  it("refuses a truncated archive", function()
    local zip = make("zstd")
    local bytes = h.read(zip)
    h.write(zip, bytes:sub(1, #bytes - 100))
    local r, msg, code = core.zip_reader(zip)
    assert.is_nil(r)
    assert.equal("CORRUPT", code)
    assert.matches("truncated", msg, 1, true)
    assert.matches(zip, msg, 1, true)
    local state, _, _, jcode, out = restore(zip, nil, victim)
    assert.equal("failed", state)
    assert.equal("CORRUPT", jcode)
    assert.is_false(h.exists(out))
  end)

  for _, case in ipairs({
    { "store", nil, "CORRUPT", "CRC-32 mismatch" },
    { "deflate", nil, "CORRUPT", "" },
    { "xz", nil, "CORRUPT", "" },
    { "store", PW, "AUTH", "authentication code" },
    { "zstd", PW, "AUTH", "authentication code" },
  }) do
    local method, password, want, text = case[1], case[2], case[3], case[4]
    it(string.format("refuses a damaged %s%s entry (%s) naming it", method, password and "+AES" or "", want),
      function()
        local zip = make(method, password)
        local off, size = data_offset(zip, victim)
        flip_byte(zip, off + size // 2)
        local r = assert(core.zip_reader(zip, password))
        local s, msg, code = r:read(victim)
        assert.is_nil(s)
        assert.equal(want, code)
        assert.matches(text, msg, 1, true)
        assert.matches("entry " .. victim, msg, 1, true)
        -- Other entries still read fine.
        assert.equal(h.read(FULL .. "/.backup"), r:read(".backup"))
        r:close()
        local state, _, jmsg, jcode, out = restore(zip, password, victim)
        assert.equal("failed", state)
        assert.equal(want, jcode)
        assert.matches(victim, jmsg, 1, true)
        assert.is_false(h.exists(out))
        assert.is_falsy((sh_ok(string.format("7z t %s %s", password and ("-p" .. q(password)) or "", q(zip)))))
      end)
  end

  it("refuses archives with '..' or absolute entry names, naming the entry", function()
    for _, bad in ipairs({ "../x", "/abs/y", "a/../../z" }) do
      local zip = dir .. "/evil.zip"
      os.remove(zip)
      local ok, out = h.run(string.format([[python3 -c '
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("fine.txt", "ok")
    z.writestr(zipfile.ZipInfo(sys.argv[2]), "evil")' %s %s]], q(zip), q(bad)))
      assert(ok, out)
      local r, msg, code = core.zip_reader(zip)
      assert.is_nil(r)
      assert.equal("CORRUPT", code)
      assert.matches("unsafe entry name '" .. bad .. "'", msg, 1, true)
    end
  end)

  it("refuses to write such names, and a name twice", function()
    local w = assert(core.zip_writer(dir .. "/n.zip"))
    for _, bad in ipairs({ "../x", "/abs", "a/../../b", "a\\b", "" }) do
      local i, msg, code = w:add_bytes(bad, "x")
      assert.is_nil(i)
      assert.equal("INVALID", code)
      assert.matches("bad entry name", msg, 1, true)
    end
    assert.equal(1, w:add_bytes("ok", "x"))
    local i, _, code = w:add_bytes("ok", "y")
    assert.is_nil(i)
    assert.equal("EEXIST", code)
    w:close()
  end)

  it("fails finish on a size or checksum mismatch naming the file, leaving nothing", function()
    local f = files[#files]
    for _, method in ipairs({ "store", "xz" }) do
      local zip = dir .. "/mm-" .. method .. ".zip"
      local w = assert(core.zip_writer(zip, { method = method }))
      assert(w:add(f.name, f.path, f.size + 1))
      assert(w:start())
      assert.equal("failed", w:wait())
      local ok, msg, code = w:result()
      assert.is_nil(ok)
      assert.equal("CORRUPT", code)
      assert.matches("size mismatch for " .. f.path, msg, 1, true)
      w:close()
      w = assert(core.zip_writer(zip, { method = method, password = "x" }))
      assert(w:add(f.name, f.path, f.size, string.rep("0", 32)))
      assert(w:start())
      assert.equal("failed", w:wait())
      ok, msg, code = w:result()
      assert.is_nil(ok)
      assert.equal("CORRUPT", code)
      assert.matches("checksum mismatch for " .. f.path, msg, 1, true)
      w:close()
      assert.is_false(h.exists(zip))
      assert.is_true((no_temporaries(dir)))
    end
  end)
end)


describe("zip writer lifecycle", function()
  local dir
  before_each(function() dir = h.tmpdir("ziplife") end)

  local function big_writer(zip, method)
    local src = dir .. "/big.bin"
    if not h.exists(src) then
      local f = assert(io.open(src, "wb"))
      local chunk = {}
      for i = 1, 4096 do chunk[i] = string.format("%08d,", i * 7919 % 100003) end
      chunk = table.concat(chunk)
      for _ = 1, 256 do f:write(chunk) end
      f:close()
    end
    local w = assert(core.zip_writer(zip, { method = method, threads = 2, password = "p" }))
    for i = 1, 16 do assert(w:add("f" .. i, src)) end
    return w
  end

  it("reports progress, result, entry checksums and closes idempotently", function()
    local zip = dir .. "/p.zip"
    local w = assert(core.zip_writer(zip, { method = "zstd" }))
    assert.equal(1, w:add_bytes("a", "hello"))
    assert.equal(2, w:add("b", { { FULL .. "/.backup", 10, 20 }, { FULL .. "/.backup", 0, 5 } }, 25))
    assert.equal("new", w:progress().state)
    assert.has_error(function() w:result() end)
    assert(w:start())
    assert.has_error(function() w:start() end)
    assert.equal("done", w:wait(30))
    local p = w:progress()
    assert.same({ state = "done", files_total = 2, files_done = 2, bytes_total = 30, bytes_done = 30 }, p)
    assert.is_true(w:result())
    local size, sum = w:entry(1)
    assert.equal(5, size)
    assert.equal(core.checksum("hello"), sum)
    w:close()
    w:close()
    assert.has_error(function() w:add_bytes("b", "x") end)
    local r = assert(core.zip_reader(zip))
    local whole = h.read(FULL .. "/.backup")
    assert.equal("hello", r:read("a"))
    assert.equal(whole:sub(11, 30) .. whole:sub(1, 5), r:read("b"))
    local s, msg, code = r:read("missing")
    assert.is_nil(s)
    assert.equal("ENOENT", code)
    assert.matches("no entry missing", msg, 1, true)
    r:close()
    r:close()
    assert.has_error(function() r:list() end)
  end)

  it("cancel stops a running writer and removes its temporary files", function()
    local zip = dir .. "/c.zip"
    local w = big_writer(zip, "xz")
    assert(w:start())
    w:cancel()
    assert.equal("cancelled", w:wait())
    local ok, _, code = w:result()
    assert.is_nil(ok)
    assert.equal("CANCELLED", code)
    w:close()
    assert.is_false(h.exists(zip))
    assert.is_true((no_temporaries(dir)))
  end)

  it("<close> and garbage collection abort an unfinished writer", function()
    local zip = dir .. "/g.zip"
    do
      local w <close> = big_writer(zip, "bzip2")
      assert(w:start())
    end
    assert.is_false(h.exists(zip))
    local w = big_writer(zip, "deflate")
    assert(w:start())
    w = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.is_false(h.exists(zip))
    assert.is_true((no_temporaries(dir)))
  end)
end)


describe("zip64", function()
  it("a 4.1 GiB file with store: zip64 sizes, 7z t, restore through a job", function()
    local dir = h.tmpdir("zip64")
    local src, zip = dir .. "/sparse.bin", dir .. "/big.zip"
    local size = 4100 * 1024 * 1024
    assert(os.execute("truncate -s " .. size .. " " .. q(src)))
    local w = assert(core.zip_writer(zip, { method = "store" }))
    assert(w:add("data/big.bin", src, size))
    assert(w:add_bytes(".backup", "<config/>"))
    local t0 = core.now_us()
    assert(w:start())
    assert.equal("done", w:wait())
    assert.is_true(w:result())
    local _, sum = w:entry(1)
    w:close()
    local seconds = (core.now_us() - t0) / 1e6
    local r = assert(core.zip_reader(zip))
    local list = r:list()
    assert.equal(size, list[1].size)
    assert.equal("<config/>", r:read(".backup"))
    r:close()
    local ok, out = sh_ok("7z t " .. q(zip))
    assert.is_true(ok, out)
    local job = core.job({ threads = 1 })
    job:add({ { zip, 0, -1, entry = "data/big.bin" } }, nil, size, sum)
    assert(job:start())
    assert.equal("done", job:wait())
    assert.is_true(job:result())
    job:close()
    print(string.format("\n    zip64: 4.1 GiB stored in %.1f s (%.0f MB/s)", seconds, size / 1e6 / seconds))
    os.remove(src)
    os.remove(zip)
  end)
end)


describe("archive entries read in chunks (r:stream, as the manifest is read)", function()
  local dir
  before_each(function() dir = h.tmpdir("zipstream") end)

  -- A 1.3 MB file of varied text: several chunks of the stream.
  local function big_file()
    local src = dir .. "/big.bin"
    local f = assert(io.open(src, "wb"))
    for i = 1, 160000 do f:write(string.format("%07d,", i * 7919 % 1000003)) end
    f:close()
    return src, h.read(src)
  end

  local function drain(s)
    local parts = {}
    while true do
      local chunk, err, code = s:read()
      if not chunk then
        return table.concat(parts), err, code
      end
      parts[#parts + 1] = chunk
    end
  end

  for _, case in ipairs({ { "store", nil }, { "deflate", nil }, { "deflate", PW } }) do
    local method, password = case[1], case[2]
    it("gives a zip entry's bytes in chunks, then nil; a damaged one fails at its end ("
        .. method .. (password and ", AES" or "") .. ")", function()
      local src, want = big_file()
      local zip = dir .. "/a.zip"
      local _, ok = write_zip(zip, { { name = "big", path = src, size = #want } },
        { method = method, password = password })
      assert.is_true(ok)
      local r = assert(core.zip_reader(zip, password))
      local s = assert(r:stream("big"))
      local got, err = drain(s)
      assert.is_nil(err)
      assert.equal(#want, #got)
      assert.is_true(got == want)
      local _, _, missing_code = r:stream("nope")
      assert.equal("ENOENT", missing_code)
      r:close()
      local off, size = data_offset(zip, "big")
      flip_byte(zip, off + size - 40)
      r = assert(core.zip_reader(zip, password))
      local _, derr, dcode = drain(assert(r:stream("big")))
      r:close()
      assert.is_truthy(derr and derr:find("big", 1, true), tostring(derr))
      assert.equal("CORRUPT", dcode)
    end)
  end

  it("gives a tar entry's bytes in chunks (a .tar's range), then nil", function()
    local src, want = big_file()
    local tarf = dir .. "/a.tar"
    local w = assert(core.tar_writer(tarf))
    assert(w:add("big", src, #want, assert(core.checksum_file(src))))
    assert(w:start())
    w:wait()
    assert(w:result())
    w:close()
    local r = assert(core.tar_reader(tarf))
    local got, err = drain(assert(r:stream("big")))
    r:close()
    assert.is_nil(err)
    assert.is_true(got == want)
  end)
end)
