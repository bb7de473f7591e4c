-- Directory backups with SETTINGS password (beyond ClickHouse, which refuses
-- them): every stored file is AES-256-GCM-encrypted with a key from scrypt;
-- `.backup` keeps the checksums of the plain data.
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")
local cjson = require("cjson")

local TABLES = h.expected()

local function run(w, statement, path)
  return h.sql(w, statement, path)[1]
end
local refused = h.sql_refused

-- The files a backup stores itself (not deduplicated, not in its base).
local function stored_files(m)
  local out = {}
  for _, f in ipairs(m.files) do
    if f.size > 0 and not f.use_base and (not f.data_file or f.data_file == f.name) then
      out[#out + 1] = f
    end
  end
  return out
end

local function copy_backup(w, from, to)
  local ok, out = h.run("cp -a " .. h.quote(w.backups .. "/" .. from) .. " " .. h.quote(w.backups .. "/" .. to))
  assert.is_true(ok, out)
end

-- The largest stored file of backup `name`.
local function largest(w, name)
  local m = assert(manifest.read(w.backups .. "/" .. name .. "/.backup"))
  local big
  for _, f in ipairs(stored_files(m)) do
    if not big or f.size > big.size then
      big = f
    end
  end
  return big
end


describe("encrypted directory backups", function()
  local w
  setup(function()
    w = h.world("encdir")
    run(w, "BACKUP ALL TO Disk('backups', 'plain')")
    run(w, "BACKUP ALL TO Disk('backups', 'enc') SETTINGS password = 's3cret'")
  end)

  it("store no plaintext, and record the plain data's checksums in .backup", function()
    local plain = assert(manifest.read(w.backups .. "/plain/.backup"))
    local enc = assert(manifest.read(w.backups .. "/enc/.backup"))
    local sums = {}
    for _, f in ipairs(plain.files) do
      sums[f.name] = f.size .. ":" .. tostring(f.checksum)
    end
    assert.equal(#plain.files, #enc.files)
    for _, f in ipairs(enc.files) do
      assert.equal(sums[f.name], f.size .. ":" .. tostring(f.checksum), f.name)
      assert.are_not.equal(".chbackup-encryption", f.name)
    end
    local stored = stored_files(enc)
    assert.is_true(#stored > 10)
    for _, f in ipairs(stored) do
      local clear = assert(h.read(w.backups .. "/plain/" .. f.name), f.name)
      local sealed = assert(h.read(w.backups .. "/enc/" .. f.name), f.name)
      assert.are_not.equal(clear, sealed, f.name)
      assert.equal("CHBENC1\0", sealed:sub(1, 8), f.name)
      if #clear >= 32 then
        assert.is_nil(sealed:find(clear:sub(1, 32), 1, true), f.name)
      end
    end
    local text = assert(h.read(w.backups .. "/enc/.chbackup-encryption"))
    local params = cjson.decode(text)
    assert.equal("AES-256-GCM", params.cipher)
    assert.equal("scrypt", params.kdf)
    assert.equal(32768, params.n)
    assert.matches("^%x+$", params.salt)
    assert.equal(32, #params.salt)
    assert.is_nil(text:find("s3cret", 1, true))
  end)

  it("are restored with the password", function()
    local target = w.dir .. "/from-enc"
    assert.equal("RESTORED", run(w, "RESTORE ALL FROM Disk('backups', 'enc') SETTINGS password = 's3cret'", target).status)
    assert.equal(h.digest_text(TABLES), h.table_digests(target, TABLES))
  end)

  it("need the password, and tell a wrong one, writing nothing", function()
    local target = w.dir .. "/no-pw"
    assert.matches("backup Disk%('backups', 'enc'%) is encrypted: give SETTINGS password",
      refused(w, "RESTORE ALL FROM Disk('backups', 'enc')", target))
    assert.matches("wrong password for backup Disk%('backups', 'enc'%)",
      refused(w, "RESTORE ALL FROM Disk('backups', 'enc') SETTINGS password = 'nope'", target))
    assert.same({}, h.tree(target .. "/store"))
  end)

  it("detect a flipped bit, naming the file, with nothing restored", function()
    copy_backup(w, "enc", "flipped")
    local f = largest(w, "flipped")
    local path = w.backups .. "/flipped/" .. f.name
    local data = assert(h.read(path))
    local at = #data // 2
    h.write(path, data:sub(1, at - 1) .. string.char(data:byte(at) ~ 1) .. data:sub(at + 1))
    local target = w.dir .. "/from-flipped"
    local err = refused(w, "RESTORE ALL FROM Disk('backups', 'flipped') SETTINGS password = 's3cret'", target)
    assert.truthy(err:find(f.name, 1, true), err)
    assert.matches("does not authenticate", err)
    assert.same({}, h.tree(target .. "/store"))
  end)

  it("detect two stored files swapped", function()
    copy_backup(w, "enc", "swapped")
    local m = assert(manifest.read(w.backups .. "/swapped/.backup"))
    local a, b
    for _, f in ipairs(stored_files(m)) do
      if f.name:match("^data/") then
        if not a then
          a = f
        elseif f.size == a.size then
          b = f
          break
        end
      end
    end
    b = b or largest(w, "swapped")
    local pa, pb = w.backups .. "/swapped/" .. a.name, w.backups .. "/swapped/" .. b.name
    assert(os.rename(pa, pa .. ".tmp"))
    assert(os.rename(pb, pa))
    assert(os.rename(pa .. ".tmp", pb))
    local target = w.dir .. "/from-swapped"
    local err = refused(w, "RESTORE ALL FROM Disk('backups', 'swapped') SETTINGS password = 's3cret'", target)
    assert.matches("does not authenticate", err)
    assert.same({}, h.tree(target .. "/store"))
  end)

  it("detect a truncated file", function()
    copy_backup(w, "enc", "truncated")
    local f = largest(w, "truncated")
    local path = w.backups .. "/truncated/" .. f.name
    local data = assert(h.read(path))
    -- without its last tag (a cut at a chunk boundary: csrc/tests/test_cipher.c)
    h.write(path, data:sub(1, #data - 16))
    local target = w.dir .. "/from-truncated"
    local err = refused(w, "RESTORE ALL FROM Disk('backups', 'truncated') SETTINGS password = 's3cret'", target)
    assert.truthy(err:find(f.name, 1, true), err)
    assert.same({}, h.tree(target .. "/store"))
  end)

  it("chain an encrypted incremental on an encrypted base with the same password", function()
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 40" })
    assert.matches("is encrypted: give SETTINGS password",
      refused(w, "BACKUP ALL TO Disk('backups', 'inc-nopw') SETTINGS base_backup = Disk('backups', 'enc')"))
    assert.matches("wrong password",
      refused(w, "BACKUP ALL TO Disk('backups', 'inc-wrong') SETTINGS base_backup = Disk('backups', 'enc'), "
        .. "password = 'nope'"))
    run(w, "BACKUP ALL TO Disk('backups', 'inc') SETTINGS base_backup = Disk('backups', 'enc'), password = 's3cret'")
    local m = assert(manifest.read(w.backups .. "/inc/.backup"))
    local tails = 0
    for _, f in ipairs(m.files) do
      if f.base_size then
        tails = tails + 1
      end
    end
    assert.is_true(tails >= 1)
    local target = w.dir .. "/from-inc"
    run(w, "RESTORE ALL FROM Disk('backups', 'inc') SETTINGS password = 's3cret'", target)
    assert.equal(h.table_digests(w.data, TABLES), h.table_digests(target, TABLES))
  end)
end)
