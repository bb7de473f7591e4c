-- The command line, run as a separate process like an operator would.
local h = require("spec.helpers")
local lfs = require("lfs")
local cli = require("chbackup.cli")

-- A file-like object collecting what is written into list t.
local function sink(t)
  return { write = function(self, ...)
    for _, v in ipairs({ ... }) do
      t[#t + 1] = v
    end
    return self
  end, flush = function() end }
end

describe("chbackup CLI", function()
  local w
  setup(function()
    w = h.world("cli")
  end)

  it("prints usage with --help and exits 0; bad usage exits 2", function()
    local ok, out = h.run(h.ROOT .. "/scripts/chbackup --help")
    assert.is_true(ok)
    assert.matches("usage: chbackup", out)
    local bad, _, code = h.run(h.ROOT .. "/scripts/chbackup --nope")
    assert.is_nil(bad)
    assert.equal(2, code)
  end)

  it("prints id<TAB>status for BACKUP and RESTORE, statements run in order", function()
    local ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 'c1'); "
      .. "RESTORE TABLE shop.customers AS shop.customers2 FROM Disk('backups', 'c1')")
    assert.is_true(ok, out)
    local lines = {}
    for id, status in out:gmatch("([%x%-]+)\t(%u[%u_]+)\n") do
      lines[#lines + 1] = { id, status }
    end
    assert.equal(2, #lines)
    assert.equal("BACKUP_CREATED", lines[1][2])
    assert.equal("RESTORED", lines[2][2])
    assert.equal("120\n", h.clickhouse(w.data, {
      "SELECT (SELECT count() FROM shop.customers) + (SELECT count() FROM shop.customers2)" }))
  end)

  it("exits 1 with a message naming the table, after printing what succeeded", function()
    local ok, out, code = h.cli(w, "BACKUP TABLE shop.orders TO Disk('backups', 'o1'); "
      .. "BACKUP TABLE shop.missing TO Disk('backups', 'o2')")
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.matches("\tBACKUP_CREATED\n", out)
    assert.matches("chbackup: table shop%.missing does not exist", out)
  end)

  it("answers SELECT from system.backups, also from another process", function()
    local ok, out = h.cli(w, "SELECT name, status, error FROM system.backups "
      .. "WHERE status = 'BACKUP_FAILED' FORMAT Vertical")
    assert.is_true(ok, out)
    assert.matches("name:%s+Disk%('backups', 'o2'%)", out)
    assert.matches("status:%s+BACKUP_FAILED", out)
    assert.matches("error:%s+table shop%.missing does not exist", out)
    ok, out = h.cli(w, "SELECT status FROM system.backups WHERE name = 'Disk(\\'backups\\', \\'c1\\')' FORMAT TSV")
    assert.is_true(ok, out)
    assert.equal("BACKUP_CREATED\nRESTORED\n", out)
  end)

  it("returns at once for ASYNC and records the outcome", function()
    local ok, out = h.cli(w, "BACKUP DATABASE shop TO Disk('backups', 'async1') ASYNC")
    assert.is_true(ok, out)
    local id, status = out:match("^([%x%-]+)\t(%S+)\n$")
    assert.equal("CREATING_BACKUP", status)
    ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s wait %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), id))
    assert.is_true(ok, out)
    assert.equal(id .. "\tBACKUP_CREATED\n", out)
    assert.is_not_nil(h.read(w.backups .. "/async1/.backup"))
  end)

  it("records a failed ASYNC operation with its error", function()
    local ok, out = h.cli(w, "RESTORE TABLE shop.orders FROM Disk('backups', 'missing') ASYNC")
    assert.is_true(ok, out)
    local id = out:match("^([%x%-]+)\t")
    local wok, wout, code = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s wait %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), id))
    assert.is_nil(wok)
    assert.equal(1, code)
    assert.matches("RESTORE_FAILED", wout)
    assert.matches("backup Disk%('backups', 'missing'%) not found", wout)
  end)

  it("refuses a second operation with the same id", function()
    local ok, out = h.cli(w, "BACKUP TABLE shop.orders TO Disk('backups', 'id1') SETTINGS id = 'nightly'")
    assert.is_true(ok, out)
    assert.matches("^nightly\tBACKUP_CREATED\n$", out)
    ok, out = h.cli(w, "BACKUP TABLE shop.orders TO Disk('backups', 'id2') SETTINGS id = 'nightly'")
    assert.is_nil(ok)
    assert.matches("nightly", out)
    assert.is_nil(h.read(w.backups .. "/id2/.backup"))
  end)

  it("shows a backup's files", function()
    local ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s show %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote("Disk('backups', 'c1')")))
    assert.is_true(ok, out)
    assert.matches("metadata/shop/customers%.sql\t%d+\t%x+", out)
  end)

  it("shows, chains and diffs password-protected zips with --password-file", function()
    local ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 'p1.zip') SETTINGS password = 's3cret'; "
      .. "BACKUP TABLE shop.customers TO Disk('backups', 'p2.zip') SETTINGS password = 's3cret', "
      .. "base_backup = Disk('backups', 'p1.zip')")
    assert.is_true(ok, out)
    local pw, wrong = w.dir .. "/pw", w.dir .. "/wrong"
    h.write(pw, "s3cret\n")
    h.write(wrong, "nope\n")
    local function run(args, words)
      return h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s %s", h.ROOT,
        h.quote(w.data), h.quote(w.config), h.quote(w.status), args, words))
    end
    local P1, P2 = h.quote("Disk('backups', 'p1.zip')"), h.quote("Disk('backups', 'p2.zip')")
    local code
    ok, out, code = run("", "show " .. P1)
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.truthy(out:find("backup Disk('backups', 'p1.zip') is password-protected", 1, true), out)
    assert.truthy(out:find("; show takes it as --password-file FILE\n", 1, true), out)
    ok, out = run("--password-file " .. h.quote(wrong), "show " .. P1)
    assert.is_nil(ok)
    assert.truthy(out:find("backup Disk('backups', 'p1.zip') is password-protected: wrong password", 1, true), out)
    ok, out = run("--password-file " .. h.quote(pw), "show " .. P1)
    assert.is_true(ok, out)
    assert.matches("metadata/shop/customers%.sql\t%d+\t%x+", out)
    ok, out = run("--password-file " .. h.quote(pw), "chain " .. P2)
    assert.is_true(ok, out)
    assert.matches("\nDisk%('backups', 'p2%.zip'%)\t[^\n]*\t0\t0\tDisk%('backups', 'p1%.zip'%)\n"
      .. "Disk%('backups', 'p1%.zip'%)\t", out)
    ok, out = run("--password-file " .. h.quote(pw), "diff " .. P1 .. " " .. P2)
    assert.is_true(ok, out)
    assert.matches("%-%- 0 added %(0 bytes%), 0 removed %(0 bytes%), 0 changed %(0 bytes%)", out)
    assert.is_nil(out:find("s3cret", 1, true))
    ok, out, code = run("--password-file " .. h.quote(pw), h.quote("BACKUP TABLE shop.customers TO Disk('backups', 'p3')"))
    assert.is_nil(ok)
    assert.equal(2, code)
    assert.truthy(out:find("--password-file applies to show, chain, diff, check, list, delete and rebase", 1, true), out)
    ok, out = run("--password-file " .. h.quote(w.dir .. "/none"), "show " .. P1)
    assert.is_nil(ok)
    assert.truthy(out:find("--password-file: cannot read " .. w.dir .. "/none: No such file", 1, true), out)
    h.write(w.dir .. "/empty", "\n")
    ok, out, code = run("--password-file " .. h.quote(w.dir .. "/empty"), "show " .. P1)
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.truthy(out:find("--password-file: " .. w.dir .. "/empty is empty", 1, true), out)
  end)


  it("refuses a --path that does not exist or is not a data path, and creates nothing", function()
    local typo = w.dir .. "/dta"
    local ok, out, code = h.cli(w, "RESTORE TABLE shop.customers FROM Disk('backups', 'c1')", { path = typo })
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.equal("chbackup: --path '" .. typo .. "' does not exist (to RESTORE into a new data path, "
      .. "create it as an empty directory first)\n", out)
    assert.is_false(h.exists(typo))
    -- SELECT keeps its status under the data path unless --status-dir says otherwise
    local e = {}
    assert.equal(1, cli.main({ "--path", typo, "--config", w.config, "SELECT * FROM system.backups" },
      { stdout = sink({}), stderr = sink(e) }))
    assert.equal("chbackup: --path '" .. typo .. "' does not exist\n", table.concat(e))
    assert.is_false(h.exists(typo))
    -- show, chain and diff read backups only: no status directory either
    local o = {}
    assert.equal(0, cli.main({ "--path", typo, "--config", w.config, "show", "Disk('backups', 'c1')" },
      { stdout = sink(o), stderr = sink({}) }))
    assert.matches("^backup\tDisk%('backups', 'c1'%)\n", table.concat(o))
    assert.is_false(h.exists(typo))
    -- a directory that is not a ClickHouse data path: its parent
    ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backups', 'np')", { path = w.dir })
    assert.is_nil(ok)
    assert.equal("chbackup: --path '" .. w.dir .. "' is not a ClickHouse data path (no metadata/ directory); "
      .. "give ClickHouse's data path with --path DIR\n", out)
    ok, out = h.cli(w, "RESTORE TABLE shop.customers FROM Disk('backups', 'c1')", { path = w.config })
    assert.is_nil(ok)
    assert.equal("chbackup: --path '" .. w.config .. "' is not a directory\n", out)
    -- an empty directory is a new data path for RESTORE
    local fresh = w.dir .. "/fresh"
    assert(lfs.mkdir(fresh))
    ok, out = h.cli(w, "RESTORE TABLE shop.customers FROM Disk('backups', 'c1')", { path = fresh })
    assert.is_true(ok, out)
    assert.matches("\tRESTORED\n$", out)
    assert.is_true(h.exists(fresh .. "/metadata/shop/customers.sql"))
  end)

  it("names --path and --config when the defaults are not there", function()
    local chbackup, config = require("chbackup"), require("chbackup.config")
    local saved_path, saved_config = chbackup.DEFAULT_PATH, config.default_path
    local function run(argv)
      local o, e = {}, {}
      local code = cli.main(argv, { stdout = sink(o), stderr = sink(e) })
      return code, table.concat(o), table.concat(e)
    end
    finally(function()
      chbackup.DEFAULT_PATH, config.default_path = saved_path, saved_config
    end)
    chbackup.DEFAULT_PATH, config.default_path = w.dir .. "/no-clickhouse", w.dir .. "/no-config.xml"
    local code, _, err = run({ "--path", w.data, "SELECT * FROM system.backups" })
    assert.equal(1, code)
    assert.equal("chbackup: configuration file " .. w.dir .. "/no-config.xml does not exist (the default; "
      .. "give ClickHouse's config with --config FILE)\n", err)
    code, _, err = run({ "--path", w.data, "--config", w.dir .. "/cnfig.xml", "SELECT * FROM system.backups" })
    assert.equal(1, code)
    assert.equal("chbackup: --config: configuration file " .. w.dir .. "/cnfig.xml does not exist\n", err)
    code, _, err = run({ "--config", w.config, "BACKUP ALL TO Disk('backups', 'd1')" })
    assert.equal(1, code)
    assert.equal("chbackup: data path '" .. w.dir .. "/no-clickhouse' does not exist (the default; "
      .. "give ClickHouse's data path with --path DIR)\n", err)
    chbackup.DEFAULT_PATH = w.dir
    code, _, err = run({ "--config", w.config, "BACKUP ALL TO Disk('backups', 'd1')" })
    assert.equal(1, code)
    assert.equal("chbackup: data path '" .. w.dir .. "' is not a ClickHouse data path (no metadata/ directory) "
      .. "(the default; give ClickHouse's data path with --path DIR)\n", err)
    assert.is_false(h.exists(w.dir .. "/no-clickhouse"))
  end)

  it("says destination arguments must be quoted, and lists the disks for a misspelt one", function()
    local ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk(backups, m1)")
    assert.is_nil(ok)
    assert.truthy(out:find("the arguments of a backup destination must be quoted strings, "
      .. "as in Disk('backups', '1')", 1, true), out)
    ok, out = h.cli(w, "BACKUP TABLE shop.customers TO Disk('backup', 'm1')")
    assert.is_nil(ok)
    assert.equal("chbackup: unknown disk 'backup': the configured disks are 'backups' "
      .. "(storage_configuration.disks in " .. w.config .. ")\n", out)
  end)

  it("prints one line for an internal error (a bug), no traceback, exit 1", function()
    -- a broken module injected through package.loaded before the launcher runs
    local inject = "package.loaded['chbackup.query'] = { run = function() local t; return t.x end }"
    local ok, out, code, err = h.run(string.format("lua5.4 -e %s %s/scripts/chbackup --path %s --config %s "
      .. "--status-dir %s %s", h.quote(inject), h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status),
      h.quote("SELECT * FROM system.backups")))
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.equal("chbackup: internal error in SELECT: (command line):1: attempt to index a nil value "
      .. "(local 't') — this is a bug, please report it\n", out)
    assert.equal(out, err) -- nothing else: no traceback
    -- a bug inside an operation: the line names the operation and its id
    local backup = require("chbackup.backup")
    local saved = backup.run
    finally(function() backup.run = saved end)
    backup.run = function() error("injected bug", 0) end
    local o, e = {}, {}
    code = cli.main({ "--path", w.data, "--config", w.config, "--status-dir", w.status,
      "BACKUP TABLE shop.customers TO Disk('backups', 'bug1') SETTINGS id = 'bug-1'" },
      { stdout = sink(o), stderr = sink(e) })
    assert.equal(1, code)
    assert.equal("", table.concat(o))
    assert.equal("chbackup: internal error in BACKUP (bug-1): injected bug — this is a bug, please report it\n",
      table.concat(e))
    local row = require("chbackup").open({ path = w.data, config = w.config, status_dir = w.status })
      .store:get("bug-1")
    assert.equal("BACKUP_FAILED", row.status)
    assert.equal("internal error: injected bug", row.error)
  end)
end)
