-- `chbackup list DEST [--json]`: the backups at a destination with their
-- kind, base, sizes and the state of their chain; half-made ones said as such.
local h = require("spec.helpers")
local cjson = require("cjson")

local q = h.quote

local function list(w, dest, args)
  return h.run(string.format("%s/scripts/chbackup --config %s %s list %s", h.ROOT, q(w.config), args or "", q(dest)))
end


describe("chbackup list", function()
  local w
  setup(function()
    w = h.world("list")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'nightly/full')")
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 3" })
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'nightly/inc') SETTINGS base_backup = Disk('backups', 'nightly/full')")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'z.zip')")
    assert(os.execute("cp -a " .. q(h.FIXTURES .. "/ch_backups/full") .. " " .. q(w.backups .. "/ch")))
    -- what a killed BACKUP leaves, and an incremental whose base is gone
    assert(os.execute("mkdir -p " .. q(w.backups .. "/killed") .. " && touch " .. q(w.backups .. "/killed/.chbackup-incomplete")))
    h.sql(w, "BACKUP TABLE shop.customers TO Disk('backups', 'gone')")
    h.sql(w, "BACKUP TABLE shop.customers TO Disk('backups', 'orphan') SETTINGS base_backup = Disk('backups', 'gone')")
    assert(os.execute("rm -rf " .. q(w.backups .. "/gone")))
  end)

  it("lists every backup with its kind, base, sizes and chain", function()
    local ok, out = list(w, "Disk('backups', '')", "--json")
    assert.is_true(ok, out)
    local rows = {}
    for line in out:gmatch("[^\n]+") do
      local r = cjson.decode(line)
      rows[r.name] = r
    end
    local full = rows["Disk('backups', 'nightly/full')"]
    local inc = rows["Disk('backups', 'nightly/inc')"]
    assert.equal("full", full.kind)
    assert.equal("ok", full.status)
    assert.equal("incremental", inc.kind)
    assert.equal("Disk('backups', 'nightly/full')", inc.base_backup)
    assert.equal(2, inc.chain)
    assert.is_true(inc.stored_bytes < inc.restored_bytes / 2, "an incremental stores little")
    assert.is_true(full.stored_bytes > 0 and full.stored_bytes <= full.restored_bytes)
    assert.equal("ok", rows["Disk('backups', 'z.zip')"].status)
    assert.equal("full", rows["Disk('backups', 'ch')"].kind)
    assert.equal("incomplete", rows["Disk('backups', 'killed')"].status)
    local orphan = rows["Disk('backups', 'orphan')"]
    assert.equal("broken chain", orphan.status)
    assert.matches("gone", orphan.problem)
  end)

  it("prints a table, and lists below a prefix only", function()
    local ok, out = list(w, "Disk('backups', 'nightly')")
    assert.is_true(ok, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      lines[#lines + 1] = line
    end
    assert.equal("name\ttimestamp\tkind\tbase_backup\tfiles\trestored_bytes\tstored_bytes\tstatus\tproblem", lines[1])
    assert.equal(3, #lines)
    assert.matches("^Disk%('backups', 'nightly/full'%)\t%d+%-%d+%-%d+ [%d:]+\tfull\t\t%d+\t%d+\t%d+\tok\t$", lines[2])
    assert.matches("^Disk%('backups', 'nightly/inc'%)\t.-\tincremental\tDisk%('backups', 'nightly/full'%)\t", lines[3])
  end)

  it("names a destination that is not there", function()
    local ok, out = list(w, "Disk('backups', 'nope')")
    assert.is_nil(ok)
    assert.matches("destination Disk%('backups', 'nope'%) .* is not a directory", out)
  end)
end)
