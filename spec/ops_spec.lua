-- The operator's output (issue 15): the progress line on a terminal only,
-- --json on every command that prints results, --quiet, the exit codes in
-- --help.
local h = require("spec.helpers")
local cjson = require("cjson")
local progress = require("chbackup.progress")
local q = h.quote

local function chbackup(w, args)
  return string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s", h.ROOT, q(w.data),
    q(w.config), q(w.status), args)
end

-- Runs cmd with stdout and stderr on a pseudo-terminal (util-linux script):
-- everything the terminal got, and the exit code.
local function on_terminal(cmd)
  local p = io.popen("script -qec " .. q(cmd) .. " /dev/null </dev/null")
  local out = p:read("a")
  local _, _, code = p:close()
  return out, code
end

local json_lines = h.json_lines

describe("progress line", function()
  local w
  setup(function()
    w = h.world("ops-progress")
  end)

  it("formats files, bytes, percent, rate and ETA", function()
    local line = progress.line("BACKUP", { files_done = 3, files_total = 10, bytes_done = 1024 * 1024,
      bytes_total = 4 * 1024 * 1024 }, 2)
    assert.equal("BACKUP  3/10 files  1.0 MiB/4.0 MiB  25%  512.0 KiB/s  ETA 0:06", line)
    assert.equal("check  0/0 files  0 B/0 B", progress.line("check", { files_done = 0, files_total = 0,
      bytes_done = 0, bytes_total = 0 }, 0))
  end)

  it("redraws at most every INTERVAL seconds, always at the end, and erases itself", function()
    local t, written = 0, {}
    local stream = { write = function(_, s) written[#written + 1] = s end, flush = function() end }
    local m = progress.meter(stream, "RESTORE", function() return t end)
    local p = { files_done = 1, files_total = 2, bytes_done = 10, bytes_total = 20 }
    m:observe("start")
    for _ = 1, 10 do
      t = t + 0.05
      m:observe("poll", p)
    end
    assert.equal(2, #written) -- at 0.05 and 0.35 s of 0.5
    m:observe("end", p)
    assert.equal(3, #written)
    assert.matches("^\r\27%[KRESTORE  1/2 files", written[3])
    m:clear()
    assert.equal("\r\27[K", written[4])
    m:clear()
    assert.equal(4, #written)
  end)

  it("is drawn on a terminal for BACKUP, RESTORE and check --read-data, erased before the result", function()
    local out, code = on_terminal(chbackup(w, q("BACKUP DATABASE shop TO Disk('backups', 'p1')")))
    assert.equal(0, code, out)
    assert.matches("\r\27%[KBACKUP  %d+/%d+ files  [%d.]+ [KMG]?i?B/[%d.]+ [KMG]?i?B  100%%", out)
    assert.matches("\r\27%[K[%x%-]+\tBACKUP_CREATED\r\n$", out)
    out, code = on_terminal(chbackup(w, q("RESTORE TABLE shop.orders AS shop.orders_p FROM Disk('backups', 'p1')")))
    assert.equal(0, code, out)
    assert.matches("\r\27%[KRESTORE  %d+/%d+ files", out)
    out, code = on_terminal(chbackup(w, "check --read-data " .. q("Disk('backups', 'p1')")))
    assert.equal(0, code, out)
    assert.matches("\r\27%[Kcheck  %d+/%d+ files", out)
    assert.matches("\r\27%[Kok\tmanifest\t", out)
  end)

  it("is not drawn when stderr is not a terminal, nor with --quiet", function()
    local ok, out, _, err = h.run(chbackup(w, q("BACKUP DATABASE shop TO Disk('backups', 'p2')")))
    assert.is_true(ok, out)
    assert.matches("^[%x%-]+\tBACKUP_CREATED\n$", out)
    assert.equal("", err)
    local tty, code = on_terminal(chbackup(w, "--quiet " .. q("BACKUP DATABASE shop TO Disk('backups', 'p3')")))
    assert.equal(0, code)
    assert.equal("", tty)
    assert.is_not_nil(h.read(w.backups .. "/p3/.backup"))
    tty, code = on_terminal(chbackup(w, "-q check --read-data " .. q("Disk('backups', 'p3')")))
    assert.equal(0, code)
    assert.equal("", tty)
  end)
end)

describe("--json and --quiet", function()
  local w
  setup(function()
    w = h.world("ops-json")
  end)

  it("prints one object per statement for BACKUP and RESTORE", function()
    local ok, out = h.run(chbackup(w, "--json " .. q("BACKUP DATABASE shop TO Disk('backups', 'j1'); "
      .. "BACKUP DATABASE shop TO Disk('backups', 'j2') SETTINGS base_backup = Disk('backups', 'j1'); "
      .. "RESTORE TABLE shop.orders AS shop.orders_j FROM Disk('backups', 'j2')")))
    assert.is_true(ok, out)
    local rows = json_lines(out)
    assert.equal(3, #rows)
    assert.same({ "BACKUP_CREATED", "BACKUP_CREATED", "RESTORED" }, { rows[1].status, rows[2].status, rows[3].status })
    assert.matches("^[%x%-]+$", rows[1].id)
    assert.equal("", rows[3].error)
    -- fields in the same order every time
    assert.matches('^{"id":"[%x%-]+","status":"BACKUP_CREATED","error":""}\n', out)
  end)

  it("prints show, chain, diff and delete as objects with stable fields", function()
    local ok, out = h.run(chbackup(w, "--json show " .. q("Disk('backups', 'j2')")))
    assert.is_true(ok, out)
    assert.matches('^{"backup":"Disk%(\'backups\', \'j2\'%)","uuid":"[%x%-]+","timestamp":"[^"]+","files":%d+,'
      .. '"base_backup":"Disk%(\'backups\', \'j1\'%)"}\n{"file":"[^"]+","size":%d+,"checksum":', out)
    local rows = json_lines(out)
    assert.equal("Disk('backups', 'j2')", rows[1].backup)
    assert.equal("Disk('backups', 'j1')", rows[1].base_backup)
    assert.equal(#rows - 1, rows[1].files)
    for i = 2, #rows do
      assert.is_string(rows[i].file)
      assert.is_number(rows[i].size)
      assert.is_boolean(rows[i].use_base)
    end
    ok, out = h.run(chbackup(w, "--json chain " .. q("Disk('backups', 'j2')")))
    assert.is_true(ok, out)
    rows = json_lines(out)
    assert.equal(2, #rows)
    assert.equal("Disk('backups', 'j2')", rows[1].name)
    assert.equal("Disk('backups', 'j1')", rows[1].base_backup)
    assert.equal(cjson.null, rows[2].base_backup)
    assert.is_true(rows[1].stored_bytes < rows[2].stored_bytes)
    ok, out = h.run(chbackup(w, "--json diff " .. q("Disk('backups', 'j1')") .. " " .. q("Disk('backups', 'j2')")))
    assert.is_true(ok, out)
    rows = json_lines(out)
    assert.same({ added = 0, added_bytes = 0, removed = 0, removed_bytes = 0, changed = 0, changed_bytes = 0 },
      rows[#rows].totals)
    ok, out = h.run(chbackup(w, "--json delete " .. q("Disk('backups', 'j2')")))
    assert.is_true(ok, out)
    assert.same({ { deleted = "Disk('backups', 'j2')" } }, json_lines(out))
    ok, out = h.run(chbackup(w, "--json chain " .. q("Disk('backups', 'j1')")))
    assert.is_true(ok, out)
    assert.matches('^{"name":"Disk%(\'backups\', \'j1\'%)","uuid":"[%x%-]+","timestamp":"[^"]+",'
      .. '"files":%d+,"total_size":%d+,"stored_files":%d+,"stored_bytes":%d+,"base_backup":null}\n$', out)
  end)

  it("prints wait's result as an object", function()
    local ok, out = h.run(chbackup(w, "--json " .. q("BACKUP TABLE shop.customers TO Disk('backups', 'ja') ASYNC")))
    assert.is_true(ok, out)
    local started = json_lines(out)[1]
    assert.equal("CREATING_BACKUP", started.status)
    ok, out = h.run(chbackup(w, "--json wait " .. started.id))
    assert.is_true(ok, out)
    assert.same({ { id = started.id, status = "BACKUP_CREATED", error = "" } }, json_lines(out))
  end)

  it("--quiet prints nothing on stdout, errors on stderr, and the exit code", function()
    local ok, out, code = h.run(chbackup(w, "--quiet " .. q("BACKUP TABLE shop.customers TO Disk('backups', 'q1')")))
    assert.is_true(ok, out)
    assert.equal(0, code)
    assert.equal("", out)
    ok, out, code = h.run(chbackup(w, "--quiet " .. q("BACKUP TABLE shop.nope TO Disk('backups', 'q2')")))
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.matches("^chbackup: table shop%.nope does not exist", out)
  end)
end)

describe("exit codes", function()
  it("are in --help as in README", function()
    local ok, out = h.run(h.ROOT .. "/scripts/chbackup --help")
    assert.is_true(ok)
    assert.matches("exit status: 0 ok, 1 failed [^\n]*, 2 usage,\n%s+3 verification found a problem", out)
    local readme = h.read(h.ROOT .. "/README.md")
    for _, row in ipairs({ "| 0 | ok |", "| 1 | failed", "| 2 | usage", "| 3 | verification found a problem" }) do
      assert.truthy(readme:find(row, 1, true), row)
    end
  end)
end)

describe("did you mean", function()
  local names = require("chbackup.names")
  local w
  setup(function()
    w = h.world("ops-suggest")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 's1')")
  end)

  it("counts edits, a swap of neighbours as one", function()
    assert.equal(0, names.distance("orders", "orders"))
    assert.equal(1, names.distance("ordrs", "orders"))
    assert.equal(1, names.distance("odrers", "orders"))
    assert.equal(2, names.distance("compresion_metod", "compression_method"))
    assert.equal(6, names.distance("", "orders"))
  end)

  it("suggests only what is close enough, case aside", function()
    assert.equal("orders", names.closest("ordrs", { "customers", "orders", "order_items" }))
    assert.equal("shop", names.closest("Shop", { "default", "shop" }))
    assert.is_nil(names.closest("zzzzzz", { "customers", "orders" }))
    assert.is_nil(names.closest("ab", { "xy" }))
    assert.equal("", names.did_you_mean("nothing", {}))
  end)

  local function err_of(statement)
    local ok, out, code = h.cli(w, statement)
    assert.is_nil(ok)
    assert.equal(1, code)
    return out
  end

  it("names the closest table or database in BACKUP", function()
    assert.equal("chbackup: table shop.ordrs does not exist in " .. w.data .. " (did you mean shop.orders?)\n",
      err_of("BACKUP TABLE shop.ordrs TO Disk('backups', 'x')"))
    assert.equal("chbackup: database shpo does not exist in " .. w.data .. " (did you mean shop?)\n",
      err_of("BACKUP TABLE shpo.orders TO Disk('backups', 'x')"))
    assert.equal("chbackup: database Shop does not exist in " .. w.data .. " (did you mean shop?)\n",
      err_of("BACKUP DATABASE Shop TO Disk('backups', 'x')"))
    assert.equal("chbackup: table shop.zzzzzz does not exist in " .. w.data .. "\n",
      err_of("BACKUP TABLE shop.zzzzzz TO Disk('backups', 'x')"))
  end)

  it("names the closest table or database of the backup in RESTORE", function()
    assert.equal("chbackup: table shop.ordres is not in backup Disk('backups', 's1') (did you mean shop.orders?)\n",
      err_of("RESTORE TABLE shop.ordres AS shop.o2 FROM Disk('backups', 's1')"))
    assert.equal("chbackup: table shpo.orders is not in backup Disk('backups', 's1') (did you mean shop.orders?)\n",
      err_of("RESTORE TABLE shpo.orders AS shop.o2 FROM Disk('backups', 's1')"))
    assert.equal("chbackup: database shpo is not in backup Disk('backups', 's1') (did you mean shop?)\n",
      err_of("RESTORE DATABASE shpo AS shop2 FROM Disk('backups', 's1')"))
  end)

  it("names the closest setting", function()
    assert.matches("^chbackup: unknown backup setting 'compresion_method' %(known: [^)]*%) "
      .. "%(did you mean compression_method%?%)\n$",
      err_of("BACKUP TABLE shop.orders TO Disk('backups', 'x') SETTINGS compresion_method = 'lz4'"))
    assert.matches("%(did you mean allow_non_empty_tables%?%)\n$",
      err_of("RESTORE TABLE shop.orders FROM Disk('backups', 's1') SETTINGS allow_non_empty_table = 1"))
  end)
end)

describe("the rock's embedded-ClickHouse runner", function()
  it("is installed beside chbackup/core.so, where policy verify looks for it", function()
    local cmake = h.read(h.ROOT .. "/CMakeLists.txt")
    assert.truthy(cmake:find("install(TARGETS chq RUNTIME DESTINATION ${CHB_LIBDIR}/chbackup)", 1, true))
    local counter = require("chbackup.policy.counter")
    assert.equal(h.ROOT .. "/build/chbackup/chq", counter.installed_chq())
    local saved = package.cpath
    package.cpath = "/nonexistent/?.so"
    local none = counter.installed_chq()
    package.cpath = saved
    assert.is_nil(none)
  end)
end)
