-- BACKUP to and RESTORE from zip archives, checked with the tools people
-- use (7z, bsdtar) and with real ClickHouse.
local h = require("spec.helpers")

local TABLES = h.expected()

local function run(w, statement, path)
  return h.sql(w, statement, path)[1]
end
local refused = h.sql_refused



-- Offset (1-based) of the middle byte of the stored data of the entry with
-- the most compressed bytes, from the zip's central directory (APPNOTE
-- 4.3.12 and 4.3.7: sizes and the local header's offset; its name and extra
-- field lengths say where the data starts).
local function largest_entry_middle(data)
  local eocd = assert(data:find("PK\5\6", #data - 65557, true), "no end of central directory")
  local count, _, cd = string.unpack("<I2I4I4", data, eocd + 10)
  local pos, best, best_size = cd + 1, nil, -1
  for _ = 1, count do
    local csize, _, nlen, xlen, clen, _, _, _, lho = string.unpack("<I4I4I2I2I2I2I2I4I4", data, pos + 20)
    if csize > best_size then
      best, best_size = lho, csize
    end
    pos = pos + 46 + nlen + xlen + clen
  end
  local nlen, xlen = string.unpack("<I2I2", data, best + 1 + 26)
  return best + 1 + 30 + nlen + xlen + best_size // 2
end

describe("zip backups", function()
  local w
  setup(function()
    w = h.world("zip")
    run(w, "BACKUP ALL TO Disk('backups', '1.zip')")
  end)

  it("hold ClickHouse's tree: 7z tests and extracts it, ClickHouse restores the extracted tree", function()
    local zip = w.backups .. "/1.zip"
    local ok, out = h.run("7z t " .. h.quote(zip))
    assert.is_true(ok, out)
    assert.matches("Everything is Ok", out)
    ok, out = h.run("bsdtar -tf " .. h.quote(zip))
    assert.is_true(ok, out)
    assert.matches("%.backup\n", out)
    assert.matches("metadata/shop/orders%.sql\n", out)
    ok, out = h.run("7z x -o" .. h.quote(w.backups .. "/extracted") .. " " .. h.quote(zip))
    assert.is_true(ok, out)
    local target = w.dir .. "/ch-from-extracted"
    h.clickhouse(target, { "RESTORE ALL FROM Disk('backups', 'extracted')" }, w.config)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
  end)

  it("are restored by chbackup straight from the archive", function()
    local target = w.dir .. "/from-zip"
    assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', '1.zip')", target).status)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
    -- streamed out of the archive: nothing was extracted beside it
    assert.is_false(h.exists(w.backups .. "/1"))
  end)

  -- ClickHouse's own backup (spec/fixtures/ch_backups/full) zipped by other
  -- writers: 7-Zip with each of its zip methods and with AES-256 (as
  -- ClickHouse encrypts), and libarchive, which streams entries with data
  -- descriptors as minizip-ng (ClickHouse's zip writer) does.
  for _, case in ipairs({
    { "7z-deflate", "7z a -tzip -mm=Deflate" }, { "7z-bzip2", "7z a -tzip -mm=BZip2" },
    { "7z-lzma", "7z a -tzip -mm=LZMA" }, { "7z-xz", "7z a -tzip -mm=XZ" },
    { "7z-store-aes", "7z a -tzip -mm=Copy -mem=AES256 -ps3cret", "s3cret" },
    { "7z-deflate-aes", "7z a -tzip -mm=Deflate -mem=AES256 -ps3cret", "s3cret" },
    { "bsdtar-deflate", "bsdtar -cf %s --format zip" },
    { "bsdtar-store", "bsdtar -cf %s --format zip --options zip:compression=store" },
  }) do
    local name, cmd, password = case[1], case[2], case[3]
    it("restore ClickHouse's backup zipped by " .. name, function()
      local zip = w.backups .. "/" .. name .. ".zip"
      local make = cmd:find("%s", 1, true) and cmd:format(h.quote(zip)) or (cmd .. " " .. h.quote(zip))
      local ok, out = h.run("cd " .. h.quote(h.FIXTURES .. "/ch_backups/full") .. " && " .. make
        .. " .backup data metadata")
      assert.is_true(ok, out)
      local target = w.dir .. "/from-" .. name
      local settings = password and (" SETTINGS password = '" .. password .. "'") or ""
      assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', '" .. name .. ".zip')" .. settings,
        target).status)
      assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
    end)
  end

  it("refuse an archive that exists", function()
    assert.matches("backup Disk%('backups', '1%.zip'%) already exists",
      refused(w, "BACKUP TABLE shop.orders TO Disk('backups', '1.zip')"))
  end)

  for _, case in ipairs({
    { "store", nil }, { "deflate", 1 }, { "deflate", 9 }, { "bzip2", 9 }, { "lzma", 3 }, { "xz", 6 }, { "zstd", 19 },
  }) do
    local method, level = case[1], case[2]
    it("round-trip with compression_method = '" .. method .. "'" .. (level and (", level " .. level) or ""), function()
      local name = method .. (level or "") .. ".zip"
      local settings = "compression_method = '" .. method .. "'" .. (level and (", compression_level = " .. level) or "")
      run(w, "BACKUP DATABASE shop TO Disk('backups', '" .. name .. "') SETTINGS " .. settings)
      if method ~= "zstd" then   -- p7zip 16.02 has no zstd
        local ok, out = h.run("7z t " .. h.quote(w.backups .. "/" .. name))
        assert.is_true(ok, out)
      end
      local target = w.dir .. "/from-" .. name
      run(w, "RESTORE DATABASE shop FROM Disk('backups', '" .. name .. "')", target)
      local shop = {}
      for _, t in ipairs(TABLES) do
        if t[1] == "shop" then
          shop[#shop + 1] = t
        end
      end
      assert.equal(h.digest_text(shop), h.table_digests(target, shop))
    end)
  end

  it("refuse an unknown method or a level out of range, naming the valid ones", function()
    local err = refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'x.zip') SETTINGS compression_method = 'brotli'")
    assert.matches("brotli", err)
    assert.matches("deflate", err)
    err = refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'y.zip') SETTINGS compression_method = 'deflate', "
      .. "compression_level = 42")
    assert.matches("42", err)
    assert.is_false(h.exists(w.backups .. "/x.zip"))
    assert.is_false(h.exists(w.backups .. "/y.zip"))
  end)

  it("refuse compression settings for a directory destination", function()
    assert.matches("apply to archive destinations",
      refused(w, "BACKUP TABLE shop.orders TO Disk('backups', 'dir') SETTINGS compression_method = 'xz'"))
  end)

  it("with a password: 7z needs it, RESTORE needs it and writes nothing without it", function()
    run(w, "BACKUP DATABASE shop TO Disk('backups', 'password-protected.zip') SETTINGS password = 'qwerty'")
    local zip = w.backups .. "/password-protected.zip"
    local ok, out = h.run("7z t -pqwerty " .. h.quote(zip))
    assert.is_true(ok, out)
    ok = h.run("7z t -pwrong " .. h.quote(zip))
    assert.is_nil(ok)
    local target = w.dir .. "/pw"
    local err = refused(w, "RESTORE DATABASE shop FROM Disk('backups', 'password-protected.zip')", target)
    assert.matches("password", err)
    err = refused(w, "RESTORE DATABASE shop FROM Disk('backups', 'password-protected.zip') SETTINGS password = 'nope'",
      target)
    assert.matches("wrong password", err)
    assert.same({}, h.tree(target .. "/store"))
    run(w, "RESTORE DATABASE shop FROM Disk('backups', 'password-protected.zip') SETTINGS password = 'qwerty'", target)
    assert.equal("60\n", h.clickhouse(target, { "SELECT count() FROM shop.customers" }))
  end)

  it("stop on a corrupted entry, naming it, with nothing restored", function()
    local zip = w.backups .. "/1.zip"
    local bad = w.backups .. "/bad.zip"
    local data = assert(h.read(zip))
    -- flip a byte in the middle of the largest entry's stored bytes
    local at = largest_entry_middle(data)
    h.write(bad, data:sub(1, at - 1) .. string.char((data:byte(at) + 1) % 256) .. data:sub(at + 1))
    local target = w.dir .. "/from-bad"
    local r, err = h.open(w, target):execute("RESTORE ALL FROM Disk('backups', 'bad.zip')")
    assert.is_nil(r)
    assert.is_string(err)
    assert.same({}, h.tree(target .. "/store"))
    -- a truncated archive
    h.write(w.backups .. "/short.zip", data:sub(1, #data - 100))
    r, err = h.open(w, w.dir .. "/from-short"):execute("RESTORE ALL FROM Disk('backups', 'short.zip')")
    assert.is_nil(r)
    assert.matches("short%.zip", err)
  end)

  it("chain incrementals across zip archives", function()
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 40" })
    run(w, "BACKUP ALL TO Disk('backups', 'inc.zip') SETTINGS base_backup = Disk('backups', '1.zip'), "
      .. "compression_method = 'zstd'")
    local ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s show %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote("Disk('backups', 'inc.zip')")))
    assert.is_true(ok, out)
    assert.matches("use_base", out)
    local target = w.dir .. "/from-inc-zip"
    run(w, "RESTORE ALL FROM Disk('backups', 'inc.zip')", target)
    assert.equal(h.table_digests(w.data, TABLES), h.table_digests(target, TABLES))
  end)
end)


describe("a killed zip BACKUP", function()
  it("leaves no archive, is recorded failed, and its temporary file goes with the next run", function()
    local w = h.world("zip-kill")
    -- 48 MB of random strings: lzma level 9 takes long enough to be killed
    h.clickhouse(w.data, { "CREATE TABLE shop.big (s String) ENGINE = MergeTree ORDER BY tuple()",
      "INSERT INTO shop.big SELECT randomString(1000) FROM numbers(48000)" })
    local ok, out = h.cli(w, "BACKUP TABLE shop.big TO Disk('backups', 'killed.zip') "
      .. "SETTINGS compression_method = 'lzma', compression_level = 9 ASYNC")
    assert.is_true(ok, out)
    local id = assert(out:match("^([%x%-]+)\tCREATING_BACKUP\n$"), out)
    local tmp, pid
    for _ = 1, 400 do
      pid = require("cjson").decode(h.read(w.status .. "/" .. id .. ".json")).pid
      tmp = pid and string.format("killed.zip.tmp-%d", pid)
      if tmp and h.exists(w.backups .. "/" .. tmp) then
        break
      end
      tmp = nil
      os.execute("sleep 0.05")
    end
    assert(tmp, "no temporary archive appeared")
    assert(os.execute(string.format("kill -9 %d", pid)))
    os.execute("sleep 0.2")
    assert.is_false(h.exists(w.backups .. "/killed.zip"))
    assert.is_true(h.exists(w.backups .. "/" .. tmp))
    ok, out = h.cli(w, "SELECT status FROM system.backups WHERE id = '" .. id .. "' FORMAT TSV")
    assert.is_true(ok, out)
    assert.equal("BACKUP_FAILED\n", out)
    -- the next BACKUP to that name succeeds and removes the killed run's temporary files
    ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 'killed.zip')")
    assert.is_true(ok, out)
    assert.same({ "killed.zip" }, h.tree(w.backups))
    local tested, test_out = h.run("7z t " .. h.quote(w.backups .. "/killed.zip"))
    assert.is_true(tested, test_out)
  end)
end)


-- Issue 14: a zip BACKUP streams batch by batch (the writer holds one
-- batch of entries, not one per file of the backup).
describe("a zip BACKUP of several batches", function()
  it("is streamed batch by batch, tested by 7z, listed by bsdtar, restored by chbackup", function()
    local w = h.world("zip-batches")
    -- (the fixture's tables have about a hundred files)
    local r, drains = h.backup_in_batches(run, w, "BACKUP ALL TO Disk('backups', 'b.zip')", 7)
    assert.equal("BACKUP_CREATED", r.status)
    assert.is_true(drains > 3, "drained " .. drains .. " times")
    local zip = w.backups .. "/b.zip"
    local tested, log = h.run("7z t " .. h.quote(zip))
    assert.is_true(tested, log)
    assert.matches("Everything is Ok", log)
    local names = h.archive_names(zip)
    assert.is_true(#names > 7 * 3, #names .. " entries")
    assert.equal(".backup", names[#names])
    local target = w.dir .. "/from-batches"
    assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', 'b.zip')", target).status)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
  end)
end)
