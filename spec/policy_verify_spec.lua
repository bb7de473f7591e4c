-- Verification with real backups and real ClickHouse: a restore drill that
-- passes on good backups and fails, each with its own message and a failing
-- exit status, on a corrupted file, a missing base and a row-count mismatch.
local h = require("spec.helpers")
local lfs = require("lfs")
local cjson = require("cjson")
local manifest = require("chbackup.manifest")
local policy = require("chbackup.policy")
local pcli = require("chbackup.policy.cli")
local schedule = require("chbackup.policy.schedule")

local T0 = assert(schedule.parse_time("2026-05-01T02:00:00Z"))
local FULL, INCR = "nightly/20260501-0200-full", "nightly/20260501-0300-incr"


-- A policy file in the world (absolute paths), with extra Lua fields.
local function write_policy(w, extra)
  local path = w.dir .. "/nightly.lua"
  h.write(path, string.format([[
return {
  name = "nightly",
  source = { path = %q, config = %q },
  selection = { databases = { "shop", "logs" } },
  destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}%s" },
  schedule = { full = "0 2 * * *", incremental = "0 * * * *" },
  verification = { scratch = %q %s },
  %s
}
]], w.data, w.config, extra and extra.suffix or "", w.dir, extra and extra.verification or "",
    extra and extra.top or ""))
  return path
end


local function capture()
  local out, err = {}, {}
  return {
    stdout = { write = function(_, s) out[#out + 1] = s end, flush = function() end },
    stderr = { write = function(_, s) err[#err + 1] = s end },
  }, function() return table.concat(out) end, function() return table.concat(err) end
end


local function cli(w, sub, file, words)
  local rest = { "policy", sub, file }
  for _, x in ipairs(words or {}) do rest[#rest + 1] = x end
  local io_, out, err = capture()
  local code = pcli.main(rest, { path = w.data, config = w.config, status_dir = w.status }, io_)
  return code, out(), err()
end


-- A world with a full at 02:00 and, after 10 new rows in a new partition,
-- an incremental at 03:00, both made by `policy run` through the CLI.
local function world_with_backups(extra)
  local w = h.world("policy-verify")
  local file = write_policy(w, extra)
  local code, out, err = cli(w, "run", file, { "now=2026-05-01T02:00:00Z" })
  assert(code == 0, out .. err)
  h.clickhouse(w.data, { "INSERT INTO shop.orders SELECT d + toIntervalMonth(6), id + 100000, customer, discount, "
    .. "status, tags, attrs FROM shop.orders WHERE d < '2024-02-01' LIMIT 10" })
  code, out, err = cli(w, "run", file, { "now=2026-05-01T03:00:00Z" })
  assert(code == 0, out .. err)
  return w, file
end


local function record(w, name)
  local text = h.read(w.backups .. "/" .. name .. ".chbackup.json")
  return cjson.decode(text)
end


-- Flips one byte (at `at`, default the middle) of a data file of shop.orders
-- that the full stores itself (and the incremental relies on). Returns its
-- manifest entry and path.
local function corrupt_full(w, at)
  local m = assert(manifest.read(w.backups .. "/" .. FULL .. "/.backup"))
  local victim
  for _, f in ipairs(m.files) do
    if f.name:match("^data/shop/orders/202401_1_1_0/.*%.bin$") and not f.data_file and f.size > 100 then
      victim = f
      break
    end
  end
  local path = w.backups .. "/" .. FULL .. "/" .. victim.name
  local bytes = h.read(path)
  local i = at or #bytes // 2
  h.write(path, bytes:sub(1, i - 1) .. string.char((bytes:byte(i) + 1) % 256) .. bytes:sub(i + 1))
  return victim, path
end


describe("policy verify (real backups, real ClickHouse)", function()
  it("passes on good backups, records the result beside each backup, writes JUnit", function()
    local w, file = world_with_backups()
    local rec = record(w, INCR)
    assert.equal("incr", rec.kind)
    assert.equal(FULL, rec.base)
    assert.equal(1380, rec.rows.shop.orders.total)
    assert.equal(10, rec.rows.shop.orders.partitions["202407"])
    local junit = w.dir .. "/report.xml"
    local code, out, err = cli(w, "verify", file, { "backups=chain", "junit=" .. junit, "now=2026-05-01T04:00:00Z" })
    assert.equal(0, code, out .. err)
    assert.truthy(out:find("verification of policy nightly: OK", 1, true), out)
    assert.truthy(out:find("backup " .. INCR .. ": OK", 1, true), out)
    assert.truthy(out:find("backup " .. FULL .. ": OK", 1, true), out)
    -- count.txt at backup time: MergeTree tables (and the view's inner one)
    -- are counted, Log-family tables only shown to exist
    assert.truthy(out:find("pass  row_counts: 8 tables agree with the counts recorded at backup time (read with "
      .. "embedded ClickHouse", 1, true), out)
    assert.truthy(out:find("logs.events: not counted at backup time (Log)", 1, true), out)
    -- recorded with each backup, outside its directory
    for _, name in ipairs({ INCR, FULL }) do
      local v = record(w, name).verifications
      assert.equal(1, #v)
      assert.is_true(v[1].ok)
      assert.equal(T0 + 7200, v[1].time)
      -- the backup directory holds only .backup and the files it lists
      local m = assert(manifest.read(w.backups .. "/" .. name .. "/.backup"))
      for _, f in ipairs(h.tree(w.backups .. "/" .. name)) do
        assert.is_true(f == ".backup" or m.by_name[f] ~= nil, f)
      end
    end
    local xml = assert(h.read(junit))
    assert.truthy(xml:find('<testsuites name="chbackup policy nightly" tests="9" failures="0"', 1, true), xml)
    assert.truthy(xml:find('<testsuite name="' .. INCR .. '" tests="4" failures="0"', 1, true), xml)
    assert.truthy(xml:find('<testcase classname="chbackup.policy.nightly.' .. INCR .. '" name="checksums"', 1, true))
    -- scratch data paths are gone
    for e in lfs.dir(w.dir) do
      assert.is_nil(e:match("^chbackup%-verify"), e)
    end
  end)

  it("catches a corrupted file: FAIL checksums, exit 1, JUnit failure", function()
    local w, file = world_with_backups()
    -- flip one byte in the middle of a data file the full stores (and the
    -- incremental relies on)
    local victim, path = corrupt_full(w)
    local junit = w.dir .. "/report.xml"
    local code, out, err = cli(w, "verify", file, { "junit=" .. junit, "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("verification of policy nightly: FAILED", 1, true), out)
    assert.truthy(out:find("FAIL  checksums: corrupted file " .. victim.name .. " in backup Disk('backups', '" .. INCR
      .. "'): checksum mismatch for " .. path .. ": expected ", 1, true), out)
    assert.truthy(out:find("skip  restore: skipped: an earlier step failed", 1, true), out)
    assert.truthy(err:find("chbackup: policy nightly: verification failed", 1, true), err)
    local xml = assert(h.read(junit))
    assert.truthy(xml:find('failures="1"', 1, true))
    assert.truthy(xml:find('<failure message="corrupted file ' .. victim.name, 1, true), xml)
    assert.is_false(record(w, INCR).verifications[1].ok)
  end)

  it("catches a missing base: FAIL chain, exit 1; the next run makes a full instead", function()
    local w, file = world_with_backups()
    assert(os.execute("rm -rf " .. h.quote(w.backups .. "/" .. FULL)))
    local code, out = cli(w, "verify", file, { "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("FAIL  chain: missing base: base backup Disk('backups', '" .. FULL .. "') of "
      .. "Disk('backups', '" .. INCR .. "') cannot be used: backup Disk('backups', '" .. FULL .. "') not found", 1,
      true), out)
    local plan = assert(policy.plan(assert(policy.load(file)), T0 + 7200, {}))
    assert.equal("full", plan.due.kind)
    local problems = {}
    for _, rec in ipairs(plan.log) do
      if rec.event == "problem" then problems[#problems + 1] = rec.backup .. ": " .. rec.reason end
    end
    assert.same({ INCR .. ": chain broken: base backup Disk('backups', '" .. FULL .. "') of " .. INCR .. " is missing" },
      problems)
  end)

  it("catches a row-count mismatch: a part the backup lost, FAIL row_counts, exit 1", function()
    local w, file = world_with_backups()
    -- drop partition 202401's part from the full's .backup (a backup that
    -- silently lost a part); checksums and the chain stay consistent
    local dir = w.backups .. "/" .. FULL
    local m = assert(manifest.read(dir .. "/.backup"))
    local lost = "^data/shop/orders/202401_1_1_0/"
    local files = {}
    for _, f in ipairs(m.files) do
      if not f.name:match(lost) then
        -- an entry stored once under the lost part gets its own copy
        if f.data_file and f.data_file:match(lost) then
          h.write(dir .. "/" .. f.name, h.read(dir .. "/" .. f.data_file))
          f.data_file = nil
        end
        files[#files + 1] = f
      end
    end
    m.files = files
    assert(manifest.write(dir, m))
    local code, out = cli(w, "verify", file, { "backup=" .. FULL, "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("pass  checksums", 1, true), out)
    assert.truthy(out:find("pass  restore", 1, true), out)
    assert.truthy(out:find("FAIL  row_counts: row count mismatch in shop.orders: 1370 rows at backup time, 370 "
      .. "restored; row count mismatch in shop.orders partition 202401: 1000 rows at backup time, 0 restored", 1,
      true), out)
  end)

  it("counts every table with ClickHouse at backup time, runs Lua checks, checks freshness", function()
    local w, file = world_with_backups({
      verification = [[, counter = "clickhouse", max_age = "2h",
        checks = {
          orders_grew = function(c)
            local n = tonumber(c.query("SELECT count() FROM shop.orders"))
            return n == 1380, "shop.orders has " .. n .. " rows"
          end,
          events_kept = function(c)
            local n = c.query("SELECT count() FROM logs.events")
            return n == "175\n", "logs.events has " .. n .. " rows"
          end,
        }]],
    })
    local rec = record(w, INCR)
    assert.equal(175, rec.rows.logs.events.total)
    assert.equal(35, rec.rows.logs.tiny.total)
    local code, out = cli(w, "verify", file, { "now=2026-05-01T04:00:00Z" })
    assert.equal(0, code, out)
    assert.truthy(out:find("pass  row_counts: 8 tables agree", 1, true), out)
    assert.is_nil(out:find("not counted", 1, true), out)
    assert.truthy(out:find("pass  orders_grew: ok", 1, true), out)
    assert.truthy(out:find("pass  events_kept: ok", 1, true), out)
    assert.truthy(out:find("pass  freshness: the newest backup, " .. INCR .. ", is from 2026-05-01T03:00:00Z "
      .. "(max_age 2h)", 1, true), out)
    code, out = cli(w, "verify", file, { "now=2026-05-02T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("FAIL  freshness: the newest backup, " .. INCR, 1, true), out)
  end)

  it("a Lua check that fails fails the drill with its message", function()
    local w, file = world_with_backups({
      verification = [[, checks = { enough = function(c) return false, "need 1 million orders" end }]],
    })
    local code, out = cli(w, "verify", file, { "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("FAIL  enough: need 1 million orders", 1, true), out)
  end)
end)


describe("policy run with compression and a password", function()
  it("passes them as BACKUP settings of a zip backup, never showing the password", function()
    local w = h.world("policy-settings")
    h.write(w.dir .. "/pw", "s3cret\n")
    local file = write_policy(w, { suffix = ".zip", top = string.format(
      "compression = { method = 'lzma', level = 3 }, password = { file = %q },", w.dir .. "/pw") })
    local code, out, err = cli(w, "run", file, { "now=2026-05-01T02:00:00Z" })
    assert.equal(0, code, err)
    assert.truthy(out:find("statement    " .. FULL .. ".zip: BACKUP DATABASE shop, DATABASE logs TO Disk('backups', '"
      .. FULL .. ".zip') SETTINGS compression_method = 'lzma', compression_level = 3, password = '***'", 1, true), out)
    assert.is_nil(out:find("s3cret", 1, true))
    assert.is_nil(err:find("s3cret", 1, true))
    local zip = w.backups .. "/" .. FULL .. ".zip"
    local ok, test_out = h.run("7z t -ps3cret " .. h.quote(zip))
    assert.is_true(ok, test_out)
    assert.is_nil(h.run("7z t -pwrong " .. h.quote(zip)))
  end)
end)


describe("policy with a password and directory backups", function()
  it("writes encrypted directories, restores their chain with the password, fails without it", function()
    local dir = h.tmpdir("policy-dir-pw")
    h.write(dir .. "/pw", "s3cret\n")
    local w, file = world_with_backups({ top = string.format("password = { file = %q },", dir .. "/pw") })
    -- an encrypted directory: its key file, and no column file as in the source
    local enc = w.backups .. "/" .. FULL .. "/.chbackup-encryption"
    assert.is_true(h.exists(enc), enc)
    local plain = h.read(w.backups .. "/" .. FULL .. "/data/shop/orders/202401_1_1_0/checksums.txt")
    assert.is_nil(plain:find("columns", 1, true))
    assert.is_nil(plain:find("id.bin", 1, true))
    assert.equal(FULL, record(w, INCR).base)
    local code, out, err = cli(w, "verify", file, { "backups=chain", "now=2026-05-01T04:00:00Z" })
    assert.equal(0, code, out .. err)
    assert.truthy(out:find("backup " .. INCR .. ": OK", 1, true), out)
    assert.truthy(out:find("backup " .. FULL .. ": OK", 1, true), out)
    assert.truthy(out:find("pass  row_counts: 8 tables agree with the counts recorded at backup time", 1, true), out)
    assert.is_nil((out .. err):find("s3cret", 1, true))
    h.write(dir .. "/pw", "wrong\n")
    code, out = cli(w, "verify", file, { "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code, out)
    assert.truthy(out:find("FAIL  chain: backup " .. INCR .. " cannot be read: wrong password for backup "
      .. "Disk('backups', '" .. INCR .. "')", 1, true), out)
  end)
end)


describe("policy verify of password-protected zip backups", function()
  local FULL_ZIP, INCR_ZIP = FULL .. ".zip", INCR .. ".zip"

  local function zip_world()
    local dir = h.tmpdir("policy-zip-pw")
    h.write(dir .. "/pw", "s3cret\n")
    local w, file = world_with_backups({ suffix = ".zip", top = string.format(
      "compression = { method = 'lzma', level = 1 }, password = { file = %q },", dir .. "/pw") })
    w.pw = dir .. "/pw"
    return w, file
  end

  it("restores the chain of zips with the policy's password and passes; the password is never shown", function()
    local w, file = zip_world()
    local rec = record(w, INCR_ZIP)
    assert.equal(FULL_ZIP, rec.base)
    assert.equal(1380, rec.rows.shop.orders.total)
    assert.equal(10, rec.rows.shop.orders.partitions["202407"])
    local junit = w.dir .. "/report.xml"
    local code, out, err = cli(w, "verify", file, { "backups=chain", "junit=" .. junit, "now=2026-05-01T04:00:00Z" })
    assert.equal(0, code, out .. err)
    assert.truthy(out:find("verification of policy nightly: OK", 1, true), out)
    assert.truthy(out:find("backup " .. INCR_ZIP .. ": OK", 1, true), out)
    assert.truthy(out:find("backup " .. FULL_ZIP .. ": OK", 1, true), out)
    assert.truthy(out:find("pass  chain: 2 backup(s) in the chain", 1, true), out)
    assert.truthy(out:find("pass  row_counts: 8 tables agree with the counts recorded at backup time", 1, true), out)
    assert.is_nil((out .. err):find("s3cret", 1, true))
    assert.is_nil(h.read(junit):find("s3cret", 1, true))
    for _, name in ipairs({ INCR_ZIP, FULL_ZIP }) do
      local v = record(w, name).verifications
      assert.equal(1, #v)
      assert.is_true(v[1].ok)
      assert.is_nil(cjson.encode(record(w, name)):find("s3cret", 1, true))
    end
    -- only the zips and their records: verification wrote nothing into them
    assert.same({ FULL_ZIP, FULL_ZIP .. ".chbackup.json", INCR_ZIP, INCR_ZIP .. ".chbackup.json" },
      h.tree(w.backups))
    -- with a wrong password the backups cannot be read: the drill fails and says why
    h.write(w.pw, "wrong\n")
    code, out = cli(w, "verify", file, { "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("FAIL backups: no backup of policy nightly", 1, true), out)
    assert.truthy(out:find("problem      " .. INCR_ZIP .. ": wrong password for entry .backup of " .. w.backups .. "/"
      .. INCR_ZIP .. " (the policy's password does not open this zip)", 1, true), out)
  end)

  it("catches a corrupted zip: a flipped byte in an entry's data fails checksums with the file named", function()
    local w, file = zip_world()
    local zip = w.backups .. "/" .. FULL_ZIP
    -- a data file the full stores and the incremental relies on
    local reader = assert(require("chbackup.core").zip_reader(zip, "s3cret"))
    local victim
    for _, e in ipairs(reader:list()) do
      if e.name:match("^data/shop/orders/202401_1_1_0/.*%.bin$") and e.compressed_size > 200 then
        victim = e
        break
      end
    end
    reader:close()
    assert(victim, "no data file to corrupt")
    -- its local header: "PK\3\4", 26 bytes, name length, extra length, name, extra, data
    local bytes = h.read(zip)
    local at = 1
    local data_at
    while true do
      local s = assert(bytes:find(victim.name, at, true))
      if bytes:sub(s - 30, s - 27) == "PK\3\4" then
        local name_len, extra_len = string.unpack("<I2I2", bytes, s - 4)
        assert(name_len == #victim.name)
        data_at = s + name_len + extra_len
        break
      end
      at = s + 1
    end
    local i = data_at + victim.compressed_size // 2
    h.write(zip, bytes:sub(1, i - 1) .. string.char((bytes:byte(i) + 1) % 256) .. bytes:sub(i + 1))
    local junit = w.dir .. "/report.xml"
    local code, out, err = cli(w, "verify", file, { "junit=" .. junit, "now=2026-05-01T04:00:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("verification of policy nightly: FAILED", 1, true), out)
    assert.truthy(out:find("pass  chain: 2 backup(s) in the chain", 1, true), out)
    assert.truthy(out:find("FAIL  checksums: corrupted file " .. victim.name .. " in backup Disk('backups', '"
      .. INCR_ZIP .. "'): ", 1, true), out)
    assert.truthy(out:find(" in entry " .. victim.name .. " of " .. zip, 1, true), out)
    assert.truthy(out:find("skip  restore: skipped: an earlier step failed", 1, true), out)
    assert.truthy(err:find("chbackup: policy nightly: verification failed", 1, true), err)
    assert.is_nil((out .. err):find("s3cret", 1, true))
    assert.truthy(h.read(junit):find('<failure message="corrupted file ' .. victim.name, 1, true))
    assert.is_false(record(w, INCR_ZIP).verifications[1].ok)
  end)
end)


describe("chbackup policy (the command line)", function()
  it("dispatches from scripts/chbackup: check, plan, run", function()
    local w = h.world("policy-cli")
    local file = write_policy(w)
    local ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s policy check %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote(file)))
    assert.is_true(ok, out)
    assert.truthy(out:find("policy nightly (" .. file .. "): valid", 1, true), out)
    ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s policy plan %s "
      .. "now=2026-05-01T02:00:00Z json", h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote(file)))
    assert.is_true(ok, out)
    local plan = cjson.decode(out)
    assert.equal("full", plan.due.kind)
    assert.equal(FULL, plan.due.name)
    ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s policy run %s "
      .. "now=2026-05-01T02:00:00Z", h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), h.quote(file)))
    assert.is_true(ok, out)
    assert.truthy(out:find("2026-05-01T02:00:00Z full         " .. FULL .. ": no full backup of policy nightly yet",
      1, true), out)
    assert.truthy(lfs.attributes(w.backups .. "/" .. FULL .. "/.backup"))
  end)

  it("usage errors exit 2", function()
    local w = h.world("policy-usage")
    local file = write_policy(w)
    assert.equal(2, (cli(w, "frobnicate", file)))
    assert.equal(2, (cli(w, "plan", nil)))
    assert.equal(2, (cli(w, "plan", file, { "colour=blue" })))
    assert.equal(2, (cli(w, "plan", file, { "now=yesterday" })))
    assert.equal(2, (cli(w, "verify", file, { "backups=oldest" })))
    assert.equal(1, (cli(w, "plan", w.dir .. "/missing.lua")))
  end)

  it("watch runs when a schedule fires, with an injected clock and sleep", function()
    local w = h.world("policy-watch")
    local file = write_policy(w)
    local now = T0 - 600
    local slept = {}
    pcli.clock = function() return now end
    pcli.sleep = function(s) slept[#slept + 1] = s; now = now + s end
    pcli.max_runs = 3
    local code, out = cli(w, "watch", file)
    pcli.clock, pcli.sleep, pcli.max_runs = nil, nil, nil
    assert.equal(0, code, out)
    -- 01:50 (no full yet: a full), then 02:00 (schedule.full), then 03:00
    assert.same({ 600, 3600 }, slept)
    assert.truthy(lfs.attributes(w.backups .. "/nightly/20260501-0150-full/.backup"))
    assert.truthy(lfs.attributes(w.backups .. "/" .. FULL .. "/.backup"))
    assert.truthy(lfs.attributes(w.backups .. "/" .. INCR .. "/.backup"))
  end)
end)


local json_lines = h.json_lines


-- The events of JSON lines: "event backup" each (backup "-" when null).
local function events(list, wanted)
  local got = {}
  for _, e in ipairs(list) do
    if wanted[e.event] then
      got[#got + 1] = e.event .. " " .. (e.backup ~= cjson.null and e.backup or "-")
    end
  end
  return got
end


local EVENT_FIELDS = { "time", "at", "policy", "event", "level", "backup", "reason" }

local function assert_event_fields(e)
  for _, k in ipairs(EVENT_FIELDS) do
    assert.is_not_nil(e[k], k .. " missing in " .. cjson.encode(e))
  end
  assert.equal("nightly", e.policy)
  assert.equal("number", type(e.time))
  assert.is_truthy(({ info = true, warn = true, error = true })[e.level], e.level)
end


describe("policy commands with json: one JSON object per result or event", function()
  it("check, plan, verify, run and watch print JSON lines with the same exit codes", function()
    local w, file = world_with_backups()
    -- check: one object; an invalid policy: valid=false, exit 1
    local code, out, err = cli(w, "check", file, { "json" })
    assert.equal(0, code, err)
    local c = json_lines(out)
    assert.equal(1, #c)
    assert.same({ policy = "nightly", file = file, valid = true, destination = "Disk('backups')",
      names = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}", schedule = { full = "0 2 * * *",
      incremental = "0 * * * *", verify = cjson.null }, retention = "none (every backup is kept)",
      verification = "newest" }, c[1])
    h.write(w.dir .. "/bad.lua", "return { name = 'bad', schedule = { full = 'sometimes' } }")
    code, out = cli(w, "check", w.dir .. "/bad.lua", { "json" })
    assert.equal(1, code)
    c = json_lines(out)
    assert.equal(1, #c)
    assert.is_false(c[1].valid)
    assert.equal(w.dir .. "/bad.lua", c[1].file)
    assert.matches("destination", c[1].error)
    -- plan: one object with what is due, kept and deleted
    code, out = cli(w, "plan", file, { "json", "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code)
    local plan = json_lines(out)
    assert.equal(1, #plan)
    plan = plan[1]
    assert.is_true(plan.ok)
    assert.same({}, plan.errors)
    assert.equal(cjson.null, plan.due.kind)
    assert.same({ INCR, FULL }, { plan.keep[1].name, plan.keep[2].name })
    assert.equal(FULL, plan.keep[1].base)
    assert.same({}, plan.delete)
    assert.same({}, plan.rebase)
    -- verify: one line per event, then the summary with every check
    code, out = cli(w, "verify", file, { "json", "backups=chain", "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code, out)
    local lines = json_lines(out)
    for _, e in ipairs(lines) do
      assert_event_fields(e)
    end
    assert.same({ "verify " .. INCR, "verified " .. INCR, "verify " .. FULL, "verified " .. FULL },
      events(lines, { verify = true, verified = true }))
    local s = lines[#lines]
    assert.equal("summary", s.event)
    assert.is_true(s.ok)
    assert.same({}, s.errors)
    assert.same({ "backups" }, { s.suite[1].name })
    assert.is_true(s.suite[1].ok)
    assert.same({ INCR, FULL }, { s.results[1].backup, s.results[2].backup })
    local checks = {}
    for _, x in ipairs(s.results[1].checks) do
      checks[#checks + 1] = x.name .. "=" .. tostring(x.ok)
    end
    assert.same({ "chain=true", "checksums=true", "restore=true", "row_counts=true" }, checks)
    -- quiet: only the summary when nothing goes wrong
    code, out = cli(w, "verify", file, { "json", "quiet", "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code)
    lines = json_lines(out)
    assert.equal(1, #lines)
    assert.equal("summary", lines[1].event)
    -- run: its events, then a summary naming the backup made
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 2" })
    code, out = cli(w, "run", file, { "json", "now=2026-05-01T04:00:00Z" })
    assert.equal(0, code, out)
    lines = json_lines(out)
    for _, e in ipairs(lines) do
      assert_event_fields(e)
    end
    local I4 = "nightly/20260501-0400-incr"
    assert.same({ "incremental " .. I4, "created " .. I4 }, events(lines, { incremental = true, created = true }))
    s = lines[#lines]
    assert.equal("summary", s.event)
    assert.same({ true, I4, {}, {}, {} }, { s.ok, s.backup, s.deleted, s.rebased, s.errors })
    assert.equal("2026-05-01T04:00:00Z", s.at)
    -- watch: the events of each run and its sleeps
    local now = T0 + 2 * 3600 + 60
    pcli.clock = function() return now end
    pcli.sleep = function(sec) now = now + sec end
    pcli.max_runs = 2
    code, out = cli(w, "watch", file, { "json" })
    pcli.clock, pcli.sleep, pcli.max_runs = nil, nil, nil
    assert.equal(0, code)
    lines = json_lines(out)
    for _, e in ipairs(lines) do
      assert_event_fields(e)
    end
    assert.same({ "idle -", "sleep -", "created nightly/20260501-0500-incr" },
      events(lines, { idle = true, sleep = true, created = true }))
    -- a drill that fails: exit 1 and a summary saying why
    local victim = corrupt_full(w, 11)
    code, out = cli(w, "verify", file, { "json", "backup=" .. FULL, "now=2026-05-01T06:30:00Z" })
    assert.equal(1, code)
    s = json_lines(out)
    s = s[#s]
    assert.equal("summary", s.event)
    assert.is_false(s.ok)
    assert.equal("error", s.level)
    local by_name = {}
    for _, x in ipairs(s.results[1].checks) do
      by_name[x.name] = x
    end
    assert.is_false(by_name.checksums.ok)
    assert.equal(cjson.null, by_name.restore.ok)   -- skipped
    assert.matches("corrupted file " .. victim.name:gsub("%p", "%%%0"), by_name.checksums.message)
    assert.matches("verification failed", s.errors[1])
  end)

  it("--json before `policy` works as the json word does", function()
    local w = h.world("policy-json-cli")
    local file = write_policy(w)
    local ok, out = h.run(string.format("%s/scripts/chbackup --json --path %s --config %s --status-dir %s policy "
      .. "run %s now=2026-05-01T02:00:00Z", h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status),
      h.quote(file)))
    assert.is_true(ok, out)
    local lines = json_lines(out)
    assert.same({ "full " .. FULL, "created " .. FULL }, events(lines, { full = true, created = true }))
    assert.same({ "summary", true, FULL }, { lines[#lines].event, lines[#lines].ok, lines[#lines].backup })
  end)
end)


describe("policy retention with rebase (real backups)", function()
  local TABLES = { { "shop", "orders" }, { "shop", "customers" }, { "logs", "events" } }
  local RETAIN = "retention = { last = 1%s },"

  -- A full at 02:00 and an incremental at 03:00 kept on it by `last = 1`
  -- (no rebase yet); then the policy is written again with rebase = true.
  local function chain_then_rebase_policy()
    local w, file = world_with_backups({ top = RETAIN:format("") })
    assert.truthy(h.exists(w.backups .. "/" .. FULL .. "/.backup"))
    write_policy(w, { top = RETAIN:format(", rebase = true") })
    return w, file
  end

  it("plan shows the rebase; run rebases the incremental, then deletes its base; ClickHouse restores it", function()
    local w, file = chain_then_rebase_policy()
    local want = h.table_digests(w.data, TABLES)
    local uuid = assert(manifest.read(w.backups .. "/" .. INCR .. "/.backup")).uuid
    local code, out = cli(w, "plan", file, { "json", "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code)
    local plan = cjson.decode(out)
    assert.same({ { INCR, FULL } }, { { plan.rebase[1].name, plan.rebase[1].from } })
    assert.equal(1, #plan.rebase)
    assert.same({ FULL }, { plan.delete[1].name })
    assert.equal(1, #plan.delete)
    code, out = cli(w, "plan", file, { "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code)
    assert.truthy(out:find("would-rebase " .. INCR .. ": kept, and its base " .. FULL .. " is not: made standalone "
      .. "first, so that " .. FULL .. " can be deleted\n", 1, true), out)
    assert.truthy(out:find("would-delete " .. FULL .. ": no rule keeps it; " .. INCR .. " is rebased first", 1, true),
      out)
    assert.truthy(h.exists(w.backups .. "/" .. FULL .. "/.backup"))   -- plan changes nothing

    code, out = cli(w, "run", file, { "json", "now=2026-05-01T03:30:00Z" })
    assert.equal(0, code, out)
    local lines = h.json_lines(out)
    local seen = {}
    for _, e in ipairs(lines) do
      if e.event == "rebase" or e.event == "rebased" or e.event == "deleted" then
        seen[#seen + 1] = e.event .. " " .. e.backup
      end
    end
    assert.same({ "rebase " .. INCR, "rebased " .. INCR, "deleted " .. FULL }, seen)
    local s = lines[#lines]
    assert.same({ "summary", true, { INCR }, { FULL } }, { s.event, s.ok, s.rebased, s.deleted })
    -- the base is gone; the incremental is standalone, same uuid and files
    assert.is_falsy(h.exists(w.backups .. "/" .. FULL))
    assert.is_falsy(h.exists(w.backups .. "/" .. FULL .. ".chbackup.json"))
    local after = assert(manifest.read(w.backups .. "/" .. INCR .. "/.backup"))
    assert.is_nil(after.base_backup)
    assert.equal(uuid, after.uuid)
    local rec = record(w, INCR)
    assert.is_nil(rec.base)
    assert.equal(FULL, rec.rebased.from)
    -- ClickHouse restores it: rows equal (count and hash of every row)
    local by_ch = w.dir .. "/by-clickhouse"
    h.clickhouse(by_ch, { "RESTORE DATABASE shop, DATABASE logs FROM Disk('backups', '" .. INCR .. "')" }, w.config)
    assert.equal(want, h.table_digests(by_ch, TABLES))
    -- the policy's own drill passes on it; the next run rebases nothing
    code, out = cli(w, "verify", file, { "now=2026-05-01T03:40:00Z" })
    assert.equal(0, code, out)
    code, out = cli(w, "plan", file, { "json", "now=2026-05-01T03:40:00Z" })
    assert.equal(0, code)
    plan = cjson.decode(out)
    assert.same({}, plan.rebase)
    assert.same({}, plan.delete)
  end)

  it("a failed rebase keeps the base: exit 1, nothing deleted, the incremental still on it", function()
    local w, file = chain_then_rebase_policy()
    -- a byte flipped in a file the incremental reads from its base: the
    -- rebase verifies every file it copies and refuses
    corrupt_full(w, 11)
    local code, out, err = cli(w, "run", file, { "now=2026-05-01T03:30:00Z" })
    assert.equal(1, code)
    assert.truthy(out:find("ERROR rebase-failed " .. INCR .. ": ", 1, true), out)
    assert.truthy(out:find("; its base " .. FULL .. " is kept\n", 1, true), out)
    assert.truthy(out:find("keep         " .. FULL .. ": base of " .. INCR .. "\n", 1, true), out)
    assert.is_nil(out:find(" deleted ", 1, true), out)
    assert.truthy(err:find("chbackup: policy nightly: " .. INCR .. ": ", 1, true), err)
    assert.truthy(h.exists(w.backups .. "/" .. FULL .. "/.backup"))
    local inc = assert(manifest.read(w.backups .. "/" .. INCR .. "/.backup"))
    assert.is_truthy(inc.base_backup)
    for _, f in ipairs(require("chbackup.fsutil").list_dir(w.backups .. "/nightly")) do
      assert.is_nil(f:match("rebase"), f)
    end
  end)
end)
