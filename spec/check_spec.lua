-- `chbackup check BACKUP [--read-data]`: a backup verified where it lies.
-- Exit 0 when sound, 3 naming what is wrong, 1 when there is no backup.
local h = require("spec.helpers")

local q = h.quote

local function check(w, name, args)
  local cmd = string.format("%s/scripts/chbackup --config %s %s check %s", h.ROOT, q(w.config), args or "",
    q("Disk('backups', '" .. name .. "')"))
  return h.run(cmd)
end

local function code_of(ok, _, code)
  return ok and 0 or code
end


describe("chbackup check", function()
  local w
  setup(function()
    w = h.world("check")
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'ours')")
    h.clickhouse(w.data, { "INSERT INTO logs.events SELECT * FROM logs.events LIMIT 10" })
    h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO Disk('backups', 'inc') SETTINGS base_backup = Disk('backups', 'ours')")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'z.zip')")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'enc') SETTINGS password = 'secret'")
    -- ClickHouse's chain, under its own names (inc1 names its base 'full')
    for _, name in ipairs({ "full", "inc1", "inc2" }) do
      assert(os.execute("cp -a " .. q(h.FIXTURES .. "/ch_backups/" .. name) .. " " .. q(w.backups .. "/" .. name)))
    end
  end)

  local function copy(from, to)
    assert(os.execute("cp -a " .. q(w.backups .. "/" .. from) .. " " .. q(w.backups .. "/" .. to)))
  end

  it("passes sound backups, chbackup's and ClickHouse's, reading every byte back", function()
    for _, name in ipairs({ "ours", "inc", "z.zip", "full", "inc1", "inc2" }) do
      local ok, out = check(w, name, "--read-data")
      assert.is_true(ok, name .. ": " .. out)
      assert.matches("^ok\tmanifest\t%d+ files\nok\tchain\t%d backups?\nok\tfiles\tevery file present with its size\n"
        .. "ok\ttables\t%d+ databases, %d+ tables, %d+ parts\nok\tdata\t%d+ files, %d+ bytes read, every checksum equal\n$",
        out)
    end
  end)

  it("opens an encrypted backup with --password-file", function()
    local pw = w.dir .. "/pw"
    h.write(pw, "secret\n")
    local ok, out = check(w, "enc", "--read-data --password-file " .. q(pw))
    assert.is_true(ok, out)
    assert.matches("ok\tdata\t", out)
  end)

  it("finds a flipped byte only when reading the data, naming the file", function()
    copy("ours", "flip")
    local file = w.backups .. "/flip/data/shop/orders/202401_1_1_0/customer.bin"
    local bytes = h.read(file)
    h.write(file, bytes:sub(1, 10) .. string.char((bytes:byte(11) + 1) % 256) .. bytes:sub(12))
    local ok, out = check(w, "flip")
    assert.is_true(ok, out)
    local r = { check(w, "flip", "--read-data") }
    assert.equal(3, code_of(table.unpack(r)))
    assert.matches("PROBLEM\tdata\t.*202401_1_1_0/customer%.bin", r[2])
  end)

  it("finds a missing file, a missing base and a damaged manifest (exit 3)", function()
    copy("ours", "gone")
    os.remove(w.backups .. "/gone/data/shop/orders/202401_1_1_0/customer.bin")
    local r = { check(w, "gone") }
    assert.equal(3, code_of(table.unpack(r)))
    assert.matches("PROBLEM\tfiles\t.*202401_1_1_0/customer%.bin.*is missing", r[2])

    copy("inc", "orphan")
    local m = h.read(w.backups .. "/orphan/.backup"):gsub("Disk%('backups', 'ours'%)", "Disk('backups', 'nope')")
    h.write(w.backups .. "/orphan/.backup", m)
    r = { check(w, "orphan") }
    assert.equal(3, code_of(table.unpack(r)))
    assert.matches("PROBLEM\tchain\t.*nope", r[2])

    copy("ours", "bad-xml")
    h.write(w.backups .. "/bad-xml/.backup", h.read(w.backups .. "/bad-xml/.backup"):sub(1, 300))
    r = { check(w, "bad-xml") }
    assert.equal(3, code_of(table.unpack(r)))
    assert.matches("PROBLEM\tmanifest\t", r[2])
  end)

  it("finds a part that disagrees with its checksums.txt", function()
    copy("ours", "renamed")
    local text = h.read(w.backups .. "/renamed/.backup")
    text = text:gsub("202401_1_1_0/customer%.bin</name>", "202401_1_1_0/customer.bim</name>", 1)
    h.write(w.backups .. "/renamed/.backup", text)
    os.rename(w.backups .. "/renamed/data/shop/orders/202401_1_1_0/customer.bin",
      w.backups .. "/renamed/data/shop/orders/202401_1_1_0/customer.bim")
    local r = { check(w, "renamed") }
    assert.equal(3, code_of(table.unpack(r)))
    assert.matches("PROBLEM\ttables\t.*202401_1_1_0.*customer%.bi", r[2])
  end)

  it("says when there is no backup (exit 1)", function()
    local r = { check(w, "none") }
    assert.equal(1, code_of(table.unpack(r)))
    assert.matches("not found", r[2])
  end)
end)
