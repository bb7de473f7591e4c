--- Writes the seed corpora of the fuzz targets into csrc/fuzz/corpus/<target>/
-- from the fixtures (run from the repository root after scripts/setup:
-- `lua5.4 csrc/fuzz/seeds.lua`; sql seeds are the statements of
-- spec/sql_spec.lua, recorded by `lua5.4 csrc/fuzz/seeds.lua sql`; tar seeds
-- by `lua5.4 csrc/fuzz/seeds.lua tar`, which needs bsdtar).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local lfs = require("lfs")

local OUT = "csrc/fuzz/corpus"
local counts = {}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local seen = {}
local function seed(target, text)
  if seen[target .. "\0" .. text] then
    return
  end
  seen[target .. "\0" .. text] = true
  os.execute("mkdir -p " .. OUT .. "/" .. target)
  counts[target] = (counts[target] or 0) + 1
  local f = assert(io.open(string.format("%s/%s/seed-%03d", OUT, target, counts[target]), "wb"))
  f:write(text)
  f:close()
end

-- Files under dir (following symbolic links) whose name matches pattern.
local function find(dir, pattern, out)
  out = out or {}
  for e in lfs.dir(dir) do
    if e ~= "." and e ~= ".." then
      local p = dir .. "/" .. e
      if lfs.attributes(p, "mode") == "directory" then
        find(p, pattern, out)
      elseif e:match(pattern) then
        out[#out + 1] = p
      end
    end
  end
  table.sort(out)
  return out
end

if arg[1] == "tar" then
  -- tar: a small backup written by chbackup's writer with each of
  -- ClickHouse's suffixes, and by bsdtar in its other formats (gnu long
  -- names, pax, "./" prefixes, directory entries), as found in the wild;
  -- and one of many entries
  local core = require("chbackup.core")
  local dir = os.tmpname()
  os.remove(dir)
  assert(lfs.mkdir(dir))
  local files = { { ".backup", "<config><version>1</version></config>" },
    { "metadata/db/t.sql", "CREATE TABLE db.t (x UInt8) ENGINE = Log" },
    { "data/db/t/x.bin", string.rep("abc", 40) },
    { "data/db/t/" .. string.rep("n", 120) .. ".bin", "long name" }, { "data/db/t/empty", "" } }
  for _, suffix in ipairs({ ".tar", ".tar.gz", ".tar.zst", ".tar.xz", ".tar.bz2", ".tar.lzma" }) do
    local path = dir .. "/b" .. suffix
    local w = assert(core.tar_writer(path, {}))
    for _, f in ipairs(files) do
      assert(w:add_bytes(f[1], f[2]))
    end
    assert(w:start())
    w:wait()
    assert(w:result())
    w:close()
    seed("tar", read(path))
  end
  local src = dir .. "/src"
  for _, f in ipairs(files) do
    local parent = f[1]:match("^(.*)/") or "."
    os.execute(string.format("mkdir -p '%s/%s' && printf %%s '%s' > '%s/%s'", src, parent, f[2], src, f[1]))
  end
  for _, args in ipairs({ "--format gnutar", "--format pax", "--format ustar -z", "--format pax --zstd" }) do
    local path = dir .. "/bsd.tar"
    os.remove(path)
    assert(os.execute(string.format("bsdtar %s -cf '%s' -C '%s' .", args, path, src)))
    seed("tar", read(path))
  end
  -- 400 entries in 2 KiB (zstd): past fuzz_tar's index budget of four pages,
  -- so that its lookups go through the index's temporary file
  local many = dir .. "/many.tar.zst"
  local w = assert(core.tar_writer(many, {}))
  for i = 0, 399 do
    assert(w:add_bytes(string.format("data/db/t/all_%d_%d_0/f%02d.bin", i // 12, i // 12, i % 12), "12345678"))
  end
  assert(w:start())
  w:wait()
  assert(w:result())
  w:close()
  seed("tar", read(many))
  os.execute("rm -rf '" .. dir .. "'")
  for t, n in pairs(counts) do
    print(t, n)
  end
  os.exit(0)
end

if arg[1] == "sql" then
  -- every text spec/sql_spec.lua parses (busted keeps modules loaded before it)
  local sql = require("chbackup.sql")
  local parse = sql.parse
  sql.parse = function(text)
    if type(text) == "string" and #text < 2000 then
      seed("sql", text)
    end
    return parse(text)
  end
  arg = { "spec/sql_spec.lua" } -- luacheck: ignore
  require("busted.runner")({ standalone = false })
  os.exit(0)
end

-- checksums.txt: one of each size from the fixture data path (version 4),
-- and small hand-made versions 2, 3 and 4 (no compression).
local by_size = {}
for _, p in ipairs(find("spec/fixtures/datapath/store", "^checksums%.txt$")) do
  local s = read(p)
  if not by_size[#s] and #s < 2000 then
    by_size[#s] = true
    seed("checksums", s)
  end
end
seed("checksums", read("csrc/tests/vectors/checksums.txt"))
local function varuint(n)
  local out = {}
  repeat
    local b = n % 128
    n = n // 128
    out[#out + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(out)
end
local function entry(name, size, compressed)
  local e = varuint(#name) .. name .. varuint(size) .. string.rep("\x11", 16)
  if compressed then
    return e .. "\1" .. varuint(size * 3) .. string.rep("\x22", 16)
  end
  return e .. "\0"
end
local body = varuint(3) .. entry("data.bin", 1234, true) .. entry("columns.txt", 56) .. entry("p.proj", 0)
seed("checksums", "checksums format version: 3\n" .. body)
-- a block: hash (16, fixed by the target on even lengths), method 0x02,
-- compressed size (9 + payload), uncompressed size, payload
local block = "\x02" .. string.pack("<I4I4", 9 + #body, #body) .. body
local v4 = "checksums format version: 4\n" .. string.rep("\0", 16) .. block
seed("checksums", #v4 % 2 == 0 and v4 or v4 .. "")
seed("checksums", "checksums format version: 2\n2 files:\ndata.bin\n\tsize: 10\n\thash: 1 2\n\tcompressed: 1\n"
  .. "\tuncompressed size: 30\n\tuncompressed hash: 3 4\ncount.txt\n\tsize: 1\n\thash: 5 6\n\tcompressed: 0\n")

-- .backup: the fixtures' manifests cut down to their header and a few
-- entries of each kind (plain, use_base, base_size, data_file).
for _, name in ipairs({ "full", "inc1", "inc2" }) do
  local text = read("spec/fixtures/ch_backups/" .. name .. "/.backup")
  local head = text:match("^(.-<contents>)")
  local kinds, picked = {}, {}
  for file in text:gmatch("<file>.-</file>") do
    local kind = (file:find("<base_size>", 1, true) and "base_size") or (file:find("<data_file>", 1, true) and "data_file")
      or (file:find("<use_base>", 1, true) and "use_base") or (file:find("<checksum>", 1, true) and "plain") or "empty"
    kinds[kind] = (kinds[kind] or 0) + 1
    if kinds[kind] <= 2 then
      picked[#picked + 1] = file
      if kind == "data_file" then -- with the entry it refers to
        local target = file:match("<data_file>(.-)</data_file>")
        picked[#picked + 1] = text:match("<file><name>" .. target:gsub("%p", "%%%0") .. "</name>.-</file>")
      end
    end
  end
  seed("manifest", head .. table.concat(picked) .. "</contents></config>")
end
seed("manifest", "<config><version>1</version><contents></contents></config>")

-- metadata: the data path's ATTACH statements and the backup's CREATE ones
for _, p in ipairs(find("spec/fixtures/datapath/metadata", "%.sql$")) do
  seed("ddl", read(p))
end
for _, p in ipairs(find("spec/fixtures/ch_backups/full/metadata", "%.sql$")) do
  seed("ddl", read(p))
end

-- zip: small archives of every method chbackup writes, and encrypted ones
-- (password "fuzz", as fuzz_zip.c opens even-length inputs)
local core = require("chbackup.core")
local tmp = os.tmpname()
local files = { { ".backup", "<config><version>1</version></config>" }, { "metadata/db/t.sql", "CREATE TABLE db.t (x UInt8) ENGINE = Log" },
  { "data/db/t/x.bin", string.rep("abc", 40) } }
local methods = {}
for m in pairs(core.zip_methods()) do
  methods[#methods + 1] = m
end
table.sort(methods)
for _, opts in ipairs({ {}, { password = "fuzz" } }) do
  for _, m in ipairs(methods) do
    os.remove(tmp)
    local w = assert(core.zip_writer(tmp, { method = m, password = opts.password, threads = 1 }))
    for _, f in ipairs(files) do
      assert(w:add_bytes(f[1], f[2]))
    end
    assert(w:start())
    w:wait()
    assert(w:result())
    w:close()
    seed("zip", read(tmp))
  end
end
os.remove(tmp)

for t, n in pairs(counts) do
  print(t, n)
end
