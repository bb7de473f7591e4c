-- BACKUP to and RESTORE from tar archives, both ways with real ClickHouse
-- (whose tar writer and reader are libarchive's, as chbackup's), and read
-- by bsdtar, a tar reader of its own.
local h = require("spec.helpers")

local TABLES = h.expected()

local function run(w, statement, path)
  return h.sql(w, statement, path)[1]
end

-- "<checksum> <size> <name>" of each file of a `.backup` manifest that
-- is stored in the backup itself (no use_base), sorted.
local function stored_files(text)
  local manifest = require("chbackup.manifest")
  local m = assert(manifest.from_string(text, ".backup"))
  local out = {}
  for _, e in ipairs(m.files) do
    if e.size > 0 and not e.use_base and not e.base_size and (not e.data_file or e.data_file == e.name) then
      out[#out + 1] = e
    end
  end
  return out
end


describe("tar backups", function()
  local w
  setup(function()
    w = h.world("tar")
    -- ClickHouse's own: an uncompressed and a zstd one
    h.clickhouse(w.data, { "BACKUP ALL TO Disk('backups', 'ch.tar')", "BACKUP ALL TO Disk('backups', 'ch.tar.zst')" },
      w.config)
  end)

  for _, name in ipairs({ "ch.tar", "ch.tar.zst" }) do
    it("written by ClickHouse (" .. name .. ") are restored by chbackup", function()
      local target = w.dir .. "/from-" .. name
      assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', '" .. name .. "')", target).status)
      assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
      assert.is_false(h.exists(w.backups .. "/" .. name .. ".tmp"))
    end)
  end

  for _, name in ipairs({ "1.tar", "1.tar.zst", "1.tar.gz", "1.tgz", "1.tar.xz", "1.tar.bz2", "1.tar.lzma" }) do
    it("written by chbackup (" .. name .. ") are restored by ClickHouse", function()
      assert.equal("BACKUP_CREATED", run(w, "BACKUP ALL TO Disk('backups', '" .. name .. "')").status)
      local target = w.dir .. "/ch-from-" .. name
      h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', '" .. name .. "')" }, w.config)
      assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
    end)
  end

  it("use ClickHouse's compression for each suffix", function()
    local magic = {
      ["1.tar.zst"] = "\40\181\47\253", ["1.tar.gz"] = "\31\139", ["1.tgz"] = "\31\139",
      ["1.tar.xz"] = "\253\55\122\88\90\0", ["1.tar.bz2"] = "BZh", ["1.tar.lzma"] = "\93\0\0",
    }
    for name, m in pairs(magic) do
      assert.equal(m, h.read(w.backups .. "/" .. name):sub(1, #m), name)
    end
    -- a plain tar: ustar headers from the first byte, pax restricted as ClickHouse's
    local plain = h.read(w.backups .. "/1.tar")
    assert.equal("ustar\0" .. "00", plain:sub(258, 265))
  end)

  it("are read by bsdtar: every stored file extracts with its checksum in .backup", function()
    for _, name in ipairs({ "1.tar", "1.tar.zst" }) do
      local out = w.backups .. "/x-" .. name
      h.sh("mkdir -p " .. h.quote(out))
      local ok, log = h.run("bsdtar -xf " .. h.quote(w.backups .. "/" .. name) .. " -C " .. h.quote(out))
      assert.is_true(ok, log)
      local core = require("chbackup.core")
      local files = stored_files(assert(h.read(out .. "/.backup")))
      assert.is_true(#files > 20)
      for _, e in ipairs(files) do
        local data = assert(h.read(out .. "/" .. e.name), e.name)
        assert.equal(e.size, #data, e.name)
        assert.equal(e.checksum, core.checksum(data), e.name)
      end
      -- .backup is the last entry, as ClickHouse writes it
      ok, log = h.run("bsdtar -tf " .. h.quote(w.backups .. "/" .. name) .. " | tail -n 1")
      assert.is_true(ok, log)
      assert.equal(".backup\n", log)
    end
  end)

  it("chain incrementals on a tar base (ClickHouse's), restored by both", function()
    h.clickhouse(w.data, { "INSERT INTO shop.orders SELECT * FROM shop.orders LIMIT 40" })
    run(w, "BACKUP ALL TO Disk('backups', 'inc.tar.gz') SETTINGS base_backup = Disk('backups', 'ch.tar.zst')")
    local expected = h.table_digests(w.data, TABLES)
    local target = w.dir .. "/from-inc"
    run(w, "RESTORE ALL FROM Disk('backups', 'inc.tar.gz')", target)
    assert.equal(expected, h.table_digests(target, TABLES))
    local ch = w.dir .. "/ch-from-inc"
    h.clickhouse(ch, { "RESTORE ALL FROM Disk('backups', 'inc.tar.gz')" }, w.config)
    assert.equal(expected, h.table_digests(ch, TABLES))
    -- the increment is small: the unchanged parts stayed in the base
    assert.is_true(#h.read(w.backups .. "/inc.tar.gz") < #h.read(w.backups .. "/ch.tar.zst") / 2)
  end)

  -- A grown Log table's file is stored as its tail (base_size). ClickHouse
  -- 26.5 cannot do this with tar (its BACKUP fails "Couldn't pack tar
  -- archive: Wrote 187 of expected 969", its RESTORE "Seek is not supported
  -- when reading from archive"); chbackup writes and restores it.
  it("chain a grown file's tail on a compressed tar base (chbackup both ways)", function()
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 40" })
    run(w, "BACKUP ALL TO Disk('backups', 'tail.tar.xz') SETTINGS base_backup = Disk('backups', 'inc.tar.gz')")
    local ok, out = h.run("bsdtar -xOf " .. h.quote(w.backups .. "/tail.tar.xz") .. " .backup")
    assert.is_true(ok, out)
    assert.matches("<base_size>", out)
    local target = w.dir .. "/from-tail"
    run(w, "RESTORE ALL FROM Disk('backups', 'tail.tar.xz')", target)
    assert.equal(h.table_digests(w.data, TABLES), h.table_digests(target, TABLES))
  end)

  it("are listed as backups", function()
    local ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s list %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote("Disk('backups', '')")))
    assert.is_true(ok, out)
    for _, name in ipairs({ "ch.tar", "ch.tar.zst", "1.tar.xz", "inc.tar.gz" }) do
      assert.truthy(out:find(name, 1, true), name)
    end
  end)

  it("refuse compression settings and passwords, as ClickHouse's", function()
    assert.matches("not supported for tar",
      h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'm.tar') SETTINGS compression_method = 'xz'"))
    assert.matches("password is not supported for tar",
      h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'p.tar') SETTINGS password = 'x'"))
    assert.is_false(h.exists(w.backups .. "/m.tar"))
    assert.is_false(h.exists(w.backups .. "/p.tar"))
    assert.matches("already exists", h.sql_refused(w, "BACKUP TABLE shop.orders TO Disk('backups', '1.tar')"))
  end)

  it("corrupted or truncated: RESTORE fails naming the archive, nothing restored", function()
    local data = assert(h.read(w.backups .. "/1.tar"))
    local zst = assert(h.read(w.backups .. "/1.tar.zst"))
    local mid = #data // 2
    local cases = {
      -- a flipped byte in the middle of the data: a file's checksum fails
      { "flipped.tar", data:sub(1, mid - 1) .. string.char((data:byte(mid) + 1) % 256) .. data:sub(mid + 1) },
      { "short.tar", data:sub(1, mid) },
      { "short.tar.zst", zst:sub(1, #zst // 2) },
      { "flipped.tar.zst", zst:sub(1, #zst // 2 - 1) .. string.char((zst:byte(#zst // 2) + 1) % 256)
        .. zst:sub(#zst // 2 + 1) },
    }
    for _, c in ipairs(cases) do
      h.write(w.backups .. "/" .. c[1], c[2])
      local target = w.dir .. "/from-" .. c[1]
      local r, err = h.open(w, target):execute("RESTORE ALL FROM Disk('backups', '" .. c[1] .. "')")
      assert.is_nil(r, c[1])
      assert.truthy(tostring(err):find(c[1], 1, true), c[1] .. ": " .. tostring(err))
      assert.same({}, h.tree(target .. "/store"), c[1])
    end
  end)
end)


describe("a killed tar BACKUP", function()
  it("leaves no archive, and the next run to that name succeeds", function()
    local w = h.world("tar-kill")
    -- 48 MB of random strings: xz takes long enough to be killed
    h.clickhouse(w.data, { "CREATE TABLE shop.big (s String) ENGINE = MergeTree ORDER BY tuple()",
      "INSERT INTO shop.big SELECT randomString(1000) FROM numbers(48000)" })
    local ok, out = h.cli(w, "BACKUP TABLE shop.big TO Disk('backups', 'killed.tar.xz') ASYNC")
    assert.is_true(ok, out)
    local id = assert(out:match("^([%x%-]+)\tCREATING_BACKUP\n$"), out)
    local tmp, pid
    for _ = 1, 400 do
      pid = require("cjson").decode(h.read(w.status .. "/" .. id .. ".json")).pid
      tmp = pid and string.format("killed.tar.xz.tmp-%d", pid)
      if tmp and h.exists(w.backups .. "/" .. tmp) then
        break
      end
      tmp = nil
      os.execute("sleep 0.05")
    end
    assert(tmp, "no temporary archive appeared")
    assert(os.execute(string.format("kill -9 %d", pid)))
    os.execute("sleep 0.2")
    assert.is_false(h.exists(w.backups .. "/killed.tar.xz"))
    ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 'killed.tar.xz')")
    assert.is_true(ok, out)
    assert.same({ "killed.tar.xz" }, h.tree(w.backups))
    local listed, log = h.run("bsdtar -tf " .. h.quote(w.backups .. "/killed.tar.xz"))
    assert.is_true(listed, log)
  end)
end)


-- Issue 14: a tar writer streams (w:begin), writing entries as they come,
-- so that a BACKUP holds one batch of them, not a record per file.
describe("a streaming tar writer (core)", function()
  local core = require("chbackup.core")
  local dir

  before_each(function()
    dir = h.tmpdir("tar-stream")
  end)

  it("writes entries as they come; start ends the input", function()
    local path = dir .. "/s.tar"
    local wr = assert(core.tar_writer(path))
    assert.equal("new", wr:wait_drained(0))
    assert.is_true(wr:begin())
    assert.equal(1, wr:add_bytes("a", "hello"))
    assert.equal("drained", wr:wait_drained(10))
    assert.equal(2, wr:add_bytes("b", "world"))
    assert.is_true(wr:start())
    assert.equal("done", wr:wait(10))
    assert.is_true(wr:result())
    assert.has_error(function() wr:add_bytes("c", "late") end)
    wr:close()
    local ok, out = h.run("bsdtar -tf " .. h.quote(path))
    assert.is_true(ok, out)
    assert.equal("a\nb\n", out)
  end)

  it("fails at a bad entry: later adds get the error, no archive is left", function()
    local path = dir .. "/f.tar.zst"
    h.write(dir .. "/src", string.rep("x", 100))
    local wr = assert(core.tar_writer(path))
    assert.is_true(wr:begin())
    assert.equal(1, wr:add("bad", dir .. "/src", 100, string.rep("0", 32)))
    assert.equal("failed", wr:wait_drained(10))
    local ok, err, code = wr:add_bytes("next", "x")
    assert.is_nil(ok)
    assert.equal("CORRUPT", code)
    assert.truthy(err:find("bad", 1, true) and err:find(path, 1, true), err)
    wr:close()
    assert.same({ "src" }, h.tree(dir))
  end)

  it("is drained by runner.drain, which cancels it once cancelled() says so", function()
    local runner = require("chbackup.runner")
    local path = dir .. "/c.tar.xz"
    h.write(dir .. "/big", string.rep("0123456789abcdef", 1 << 20))   -- 16 MiB: xz takes a while
    local wr = assert(core.tar_writer(path))
    assert.is_true(wr:begin())
    assert.equal(1, wr:add_bytes("a", "hello"))
    assert.is_true(runner.drain(wr))
    for i = 1, 4 do
      assert.equal(i + 1, wr:add("big" .. i, dir .. "/big"))
    end
    local seen = 0
    local ok, err, code = runner.drain(wr, function(p)
      seen = p.files_total
    end, function()
      return true
    end)
    assert.is_nil(ok)
    assert.equal("CANCELLED", code, err)
    assert.equal(5, seen)
    assert.equal("cancelled", wr:wait_drained(0))
    wr:close()
    assert.same({ "big" }, h.tree(dir))
  end)

  it("has the same shape for zip writers (7z and bsdtar read what streamed)", function()
    local path = dir .. "/z.zip"
    local wr = assert(core.zip_writer(path))
    assert.is_true(wr:begin())
    assert.equal(1, wr:add_bytes("a", "hello"))
    assert.equal("drained", wr:wait_drained(10))
    assert.equal(2, wr:add_bytes("b", "world"))
    assert.is_true(wr:start())
    assert.equal("done", wr:wait(10))
    assert.is_true(wr:result())
    wr:close()
    local ok, out = h.run("bsdtar -tf " .. h.quote(path))
    assert.is_true(ok, out)
    assert.equal("a\nb\n", out)
    ok, out = h.run("7z t " .. h.quote(path))
    assert.is_true(ok, out)
    assert.matches("Everything is Ok", out)
  end)
end)


describe("a tar BACKUP of several batches", function()
  it("is streamed batch by batch, restored by ClickHouse and chbackup, listed by bsdtar", function()
    local w = h.world("tar-batches")
    -- (the fixture's tables have about a hundred files)
    local r, drains = h.backup_in_batches(run, w, "BACKUP ALL TO Disk('backups', 'b.tar.zst')", 7)
    assert.equal("BACKUP_CREATED", r.status)
    assert.is_true(drains > 3, "drained " .. drains .. " times")
    local names = h.archive_names(w.backups .. "/b.tar.zst")
    assert.is_true(#names > 7 * 3, #names .. " entries")
    assert.equal(".backup", names[#names])
    local target = w.dir .. "/ch-from-batches"
    h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', 'b.tar.zst')" }, w.config)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
    target = w.dir .. "/from-batches"
    assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', 'b.tar.zst')", target).status)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
  end)
end)
