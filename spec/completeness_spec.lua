-- BACKUP reads every file it promises: whatever it cannot read as
-- ClickHouse wrote it fails the BACKUP, naming the file, with nothing
-- written. Nothing is skipped silently (issue 10, item 3).
local h = require("spec.helpers")
local q = h.quote

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

-- A fresh copy of the fixture data path; `damage(w)` breaks it, then BACKUP
-- must fail with an error matching each of `patterns` (plain text) and
-- leave nothing at the destination. Returns the error.
local function refused(name, statement, damage, patterns)
  local w = h.world(name)
  damage(w)
  local err = h.sql_refused(w, statement)
  for _, p in ipairs(patterns) do
    assert.is_truthy(err:find(p, 1, true), "error does not name '" .. p .. "': " .. err)
  end
  assert.is_false(h.exists(w.backups .. "/b"), "something was written for a refused BACKUP")
  local rows = h.open(w):status_rows()
  assert.equal(1, #rows)
  assert.equal("BACKUP_FAILED", rows[1].status)
  assert.equal(err, rows[1].error)
  -- the CLI exits non-zero with the same message
  local ok, out = h.cli(w, (statement:gsub("'b'", "'b2'")))
  assert.is_falsy(ok, out)
  assert.is_truthy(out:find(patterns[1], 1, true), out)
  return err, w
end

local ORDERS = "BACKUP TABLE shop.orders TO Disk('backups', 'b')"
local EVENTS = "BACKUP TABLE logs.events TO Disk('backups', 'b')"
local function part(w, name)
  return w.data .. "/data/shop/orders/" .. (name or "202401_1_1_0")
end


describe("BACKUP completeness", function()
  it("a file checksums.txt lists is missing", function()
    refused("missing", ORDERS, function(w)
      sh("rm " .. q(part(w) .. "/id.bin"))
    end, { "202401_1_1_0/id.bin", "is missing" })
  end)

  it("a file checksums.txt lists is a directory", function()
    refused("isdir", ORDERS, function(w)
      sh("rm " .. q(part(w) .. "/id.bin") .. " && mkdir " .. q(part(w) .. "/id.bin"))
    end, { "202401_1_1_0/id.bin", "is a directory" })
  end)

  it("a file has another size than checksums.txt says", function()
    refused("size", ORDERS, function(w)
      sh("truncate -s 100 " .. q(part(w) .. "/id.bin"))
    end, { "202401_1_1_0/id.bin", "has 100 bytes but its checksums.txt says 4027" })
  end)

  it("an active part has no checksums.txt, or one that is a directory", function()
    refused("nosums", ORDERS, function(w)
      sh("rm " .. q(part(w, "202404_7_7_0") .. "/checksums.txt"))
    end, { "202404_7_7_0", "has no readable checksums.txt" })
    refused("sumsdir", ORDERS, function(w)
      sh("rm " .. q(part(w) .. "/checksums.txt") .. " && mkdir " .. q(part(w) .. "/checksums.txt"))
    end, { "202401_1_1_0", "has no readable checksums.txt" })
  end)

  it("a merged part without checksums.txt is not replaced by the parts it covers", function()
    -- 202402_2_4_1 covers 202402_{2,3,4}_…: backing up those instead would
    -- be silent loss of nothing, but of the merge's truth; refuse.
    refused("merged", ORDERS, function(w)
      sh("rm " .. q(part(w, "202402_2_4_1") .. "/checksums.txt"))
    end, { "202402_2_4_1", "has no readable checksums.txt" })
  end)

  it("a projection listed in checksums.txt is missing", function()
    refused("proj", ORDERS, function(w)
      sh("rm -r " .. q(part(w) .. "/p_status.proj"))
    end, { "202401_1_1_0: projection p_status.proj", "not a directory" })
  end)

  it("symlinks and other non-regular files inside a part are refused", function()
    refused("symlink", ORDERS, function(w)
      sh("ln -s /etc/passwd " .. q(part(w) .. "/extra.txt"))
    end, { "202401_1_1_0/extra.txt is a link" })
    refused("symlink2", ORDERS, function(w)
      sh("mv " .. q(part(w) .. "/id.bin") .. " " .. q(w.dir .. "/id.bin")
        .. " && ln -s " .. q(w.dir .. "/id.bin") .. " " .. q(part(w) .. "/id.bin"))
    end, { "202401_1_1_0/id.bin is a link" })
    refused("fifo", ORDERS, function(w)
      sh("mkfifo " .. q(part(w) .. "/p_status.proj/fifo"))
    end, { "p_status.proj/fifo is a named pipe" })
  end)

  it("a part directory the process cannot read (chmod 000, run as an unprivileged user)", function()
    local _, uid = h.run("id -u")
    if uid ~= "0\n" or not os.execute("setpriv --version >/dev/null 2>&1") then
      pending("needs root and setpriv to run the CLI as another user")
      return
    end
    local w = h.world("unreadable")
    sh("chown -R 65534:65534 " .. q(w.dir) .. " && chmod 000 " .. q(part(w, "202404_6_6_0")))
    local ok, out = h.run("setpriv --reuid=65534 --regid=65534 --clear-groups "
      .. string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s", h.ROOT, q(w.data),
        q(w.config), q(w.status), q(ORDERS)))
    assert.is_falsy(ok, out)
    assert.is_truthy(out:find("table shop.orders", 1, true), out)
    assert.is_truthy(out:find("202404_6_6_0", 1, true), out)
    assert.is_truthy(out:find("Permission denied", 1, true), out)
    assert.is_false(h.exists(w.backups .. "/b"))
  end)

  it("a part-named entry that is not a directory is refused", function()
    refused("partfile", ORDERS, function(w)
      sh("touch " .. q(part(w, "202405_9_9_0")))
    end, { "202405_9_9_0 is not a directory" })
  end)

  it("table metadata that does not parse fails BACKUP of its database and of the table", function()
    local function damage(w)
      local f = w.data .. "/metadata/shop/orders.sql"
      local text = h.read(f)
      h.write(f, (text:gsub("ENGINE = MergeTree.*$", "")))   -- no ENGINE
    end
    refused("noengine", "BACKUP DATABASE shop TO Disk('backups', 'b')", damage,
      { "metadata/shop/orders.sql", "no ENGINE" })
    refused("noengine2", ORDERS, damage, { "metadata/shop/orders.sql", "no ENGINE" })
    refused("garbage", "BACKUP ALL TO Disk('backups', 'b')", function(w)
      h.write(w.data .. "/metadata/logs/tiny.sql", "this is not SQL\n")
    end, { "cannot parse table metadata", "metadata/logs/tiny.sql" })
    refused("sqldir", "BACKUP DATABASE logs TO Disk('backups', 'b')", function(w)
      sh("rm " .. q(w.data .. "/metadata/logs/tiny.sql") .. " && mkdir " .. q(w.data .. "/metadata/logs/tiny.sql"))
    end, { "cannot read table metadata", "metadata/logs/tiny.sql" })
  end)

  it("database metadata that does not parse fails BACKUP of that database only", function()
    local err, w = refused("dbmeta", "BACKUP DATABASE logs TO Disk('backups', 'b')", function(w)
      h.write(w.data .. "/metadata/logs.sql", "ATTACH TABLE _ nonsense\n")
    end, { "cannot parse database metadata", "metadata/logs.sql" })
    assert.is_truthy(err)
    refused("dbmeta2", "BACKUP ALL TO Disk('backups', 'b')", function(x)
      h.write(x.data .. "/metadata/logs.sql", "ATTACH TABLE _ nonsense\n")
    end, { "cannot parse database metadata", "metadata/logs.sql" })
    -- another database is still backed up
    local r = h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'shop')")
    assert.equal("BACKUP_CREATED", r[1].status)
  end)

  it("a Log file shorter than sizes.json says, or missing, is refused", function()
    refused("logshort", EVENTS, function(w)
      sh("truncate -s 500 " .. q(w.data .. "/data/logs/events/msg.bin"))
    end, { "logs.events", "/msg.bin has 500 bytes but sizes.json says 916" })
    refused("logmissing", EVENTS, function(w)
      sh("rm " .. q(w.data .. "/data/logs/events/code.null.bin"))
    end, { "logs.events", "/code.null.bin is listed in sizes.json (121 bytes) but is missing" })
  end)

  it("the undamaged fixture still backs up whole", function()
    local w = h.world("whole")
    local r = h.sql(w, "BACKUP ALL TO Disk('backups', 'b')")
    assert.equal("BACKUP_CREATED", r[1].status)
  end)
end)
