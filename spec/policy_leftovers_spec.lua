-- What killed runs of a policy leave (kill -9 at any point) is listed by
-- `policy plan` and removed by the next `policy run`/`verify`; what a live
-- process holds is left alone. Deletion removes the marker last.
local h = require("spec.helpers")
local lfs = require("lfs")
local cjson = require("cjson")
local core = require("chbackup.core")
local policy = require("chbackup.policy")
local schedule = require("chbackup.policy.schedule")
local store = require("chbackup.policy.store")

local UTC = schedule.zone("UTC")

local function T(s)
  return assert(schedule.parse_time(s, UTC))
end


local function mkdir(path)
  assert(os.execute("mkdir -p " .. h.quote(path)))
end


local function log_text(report)
  local out = {}
  for _, rec in ipairs(report.log) do
    out[#out + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason
  end
  return table.concat(out, "\n")
end


-- Names in a directory, sorted.
local function ls(d)
  local out = {}
  for e in lfs.dir(d) do
    if e ~= "." and e ~= ".." then
      out[#out + 1] = e
    end
  end
  table.sort(out)
  return out
end


local function hold(path, id)
  local lk = assert(core.lock(path))
  assert(lk:write("operation " .. id .. "\npid 999999\n"))
  return lk
end


describe("policy leftovers", function()
  local w, pol, env, dir, scratch

  before_each(function()
    w = h.world("policy-leftovers")
    dir = w.backups .. "/nightly"
    scratch = w.dir .. "/scratch"
    mkdir(scratch)
    pol = assert(policy.check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
      selection = { databases = { "shop" } },
      schedule = { full = "0 2 * * *" },
      verification = { scratch = scratch },
    }, "nightly"))
    env = { path = w.data, config = w.config, status_dir = w.status }
  end)

  it("are listed by plan and removed by the next run, each kind; live ones are left alone", function()
    assert(policy.run(pol, T("2026-05-01T02:00:00"), env).ok)
    local full = "nightly/20260501-0200-full"
    -- a killed full BACKUP: its marker, nobody holding it
    mkdir(dir .. "/20260502-0200-full/data/shop/orders/all_1_1_0")
    h.write(dir .. "/20260502-0200-full/.chbackup-incomplete", "operation killed-1\npid 999999\n")
    -- a half-deleted backup (removed in listing order: the marker went first)
    mkdir(dir .. "/20260430-0200-full/data/shop/orders/all_1_1_0")
    mkdir(dir .. "/20260430-0200-full/metadata/shop")
    -- a policy record whose backup is gone
    h.write(dir .. "/20260429-0200-full.chbackup.json", "{}")
    -- a killed verification's scratch data path
    local sdir = scratch .. "/chbackup-verify-nightly-4242-1"
    mkdir(sdir .. "/data/store/abc")
    h.write(sdir .. "/.chbackup-verify.lock", "operation verify x\npid 4242\n")
    -- live ones: a BACKUP being written, a verification running; and a
    -- directory that is not a backup's
    mkdir(dir .. "/20260503-0200-full")
    local lk1 = hold(dir .. "/20260503-0200-full/.chbackup-incomplete", "live-backup")
    mkdir(scratch .. "/chbackup-verify-nightly-4243-1")
    local lk2 = hold(scratch .. "/chbackup-verify-nightly-4243-1/.chbackup-verify.lock", "live-verify")
    mkdir(dir .. "/20260428-0200-full")
    h.write(dir .. "/20260428-0200-full/notes.txt", "mine")

    local plan = assert(policy.plan(pol, T("2026-05-01T03:00:00"), env))
    local listed = {}
    for _, x in ipairs(plan.leftovers) do
      listed[#listed + 1] = x.name
    end
    table.sort(listed)
    assert.same({ "chbackup-verify-nightly-4242-1", "nightly/20260429-0200-full.chbackup.json",
      "nightly/20260430-0200-full", "nightly/20260502-0200-full" }, listed)
    local text = log_text(plan)
    assert.truthy(text:find("leftover nightly/20260502-0200-full: " .. dir .. "/20260502-0200-full: an unfinished "
      .. "backup of a killed BACKUP (operation killed-1 (pid 999999); .chbackup-incomplete that no process holds); "
      .. "the next run removes it", 1, true), text)
    assert.truthy(text:find("leftover nightly/20260503-0200-full: being written by operation live-backup "
      .. "(pid 999999); left alone", 1, true), text)
    -- plan changes nothing
    assert.is_true(h.exists(dir .. "/20260502-0200-full/data"))

    local report = assert(policy.run(pol, T("2026-05-01T03:00:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; "))
    text = log_text(report)
    assert.truthy(text:find("cleaned nightly/20260430-0200-full: removed " .. dir .. "/20260430-0200-full: a "
      .. "half-deleted backup (a backup's entries, no .backup, no marker)", 1, true), text)
    assert.truthy(text:find("cleaned nightly/20260429-0200-full.chbackup.json: removed " .. dir
      .. "/20260429-0200-full.chbackup.json: a policy record whose backup is gone", 1, true), text)
    assert.truthy(text:find("cleaned chbackup-verify-nightly-4242-1: removed " .. sdir .. ": the scratch data "
      .. "path of a killed verification (no process holds its lock)", 1, true), text)
    lk1:release()
    lk2:release()
    assert.same({ "20260428-0200-full", "20260501-0200-full", "20260501-0200-full.chbackup.json",
      "20260503-0200-full" }, ls(dir))
    assert.same({ "notes.txt" }, ls(dir .. "/20260428-0200-full"))
    assert.same({ ".chbackup-incomplete" }, ls(dir .. "/20260503-0200-full"))
    assert.is_true(h.exists(dir .. "/" .. full:match("[^/]+$") .. "/.backup"))
    assert.same({ ".chbackup-verify.lock" }, h.tree(scratch .. "/chbackup-verify-nightly-4243-1"))
    assert.is_false(h.exists(sdir))
  end)

  it("removes a killed zip BACKUP's temporary archive with its companions, and its lock", function()
    pol = assert(policy.check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.zip" },
      selection = { databases = { "shop" } },
      schedule = { full = "0 2 * * *" },
      verification = { scratch = scratch },
    }, "nightly"))
    assert(policy.run(pol, T("2026-05-01T02:00:00"), env).ok)
    local base = dir .. "/20260502-0200-full.zip"
    h.write(base .. ".tmp-4242", "PK")
    h.write(base .. ".tmp-4242.backup", "<config/>")
    mkdir(base .. ".tmp-4242.spool")
    h.write(base .. ".tmp-4242.spool/3", "x")
    h.write(base .. ".tmp-4241.backup", "<config/>")   -- a companion whose archive is gone
    h.write(base .. ".lock", "operation killed-zip\npid 999999\n")
    -- a live writer's temporary archive stays
    local live = dir .. "/20260503-0200-full.zip.tmp-4243"
    local lk = hold(live, "live-zip")
    local plan = assert(policy.plan(pol, T("2026-05-01T03:00:00"), env))
    assert.equal(5, #plan.leftovers)
    local report = assert(policy.run(pol, T("2026-05-01T03:00:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; "))
    lk:release()
    assert.same({ "20260501-0200-full.zip", "20260501-0200-full.zip.chbackup.json",
      "20260503-0200-full.zip.tmp-4243" }, ls(dir))
    assert.truthy(log_text(report):find("cleaned nightly/20260502-0200-full.zip.lock: removed " .. base
      .. ".lock: the lock of a killed zip BACKUP (no process holds it)", 1, true))
  end)

  it("deletes a backup's marker last: a deletion cut short is finished by the next run", function()
    assert(policy.run(pol, T("2026-05-01T02:00:00"), env).ok)
    local st = store.open(pol, assert(require("chbackup.config").load(w.config)))
    local p = assert(st:list().points[1])
    -- the order of removals, and a deletion cut short on data/ (as if killed there)
    local rmdir, remove, removed = lfs.rmdir, os.remove, {}
    lfs.rmdir = function(path)
      if path == p.path .. "/data" then
        return nil, "injected"
      end
      return rmdir(path)
    end
    os.remove = function(path) -- luacheck: ignore 122
      removed[#removed + 1] = path
      return remove(path)
    end
    local pok, ok, err = pcall(st.delete, st, p)
    lfs.rmdir = rmdir
    assert(pok, ok)
    assert.is_nil(ok)
    assert.truthy(err:find("injected", 1, true))
    assert.is_true(h.exists(p.path .. "/.backup.deleting"))
    assert.equal(1, #st:list().deleting)
    assert.is_true(assert(policy.run(pol, T("2026-05-01T03:00:00"), env)).ok)
    os.remove = remove -- luacheck: ignore 122
    assert.is_false(h.exists(p.path))
    local last = 0
    for i, r in ipairs(removed) do
      if r:sub(1, #p.path + 1) == p.path .. "/" then
        last = i
      end
    end
    assert.equal(p.path .. "/.backup.deleting", removed[last])
  end)

  it("records the row counts a run killed after its backup did not; else the drill fails", function()
    assert(policy.run(pol, T("2026-05-01T02:00:00"), env).ok)
    local rfile = dir .. "/20260501-0200-full.chbackup.json"
    local rec = cjson.decode(h.read(rfile))
    assert.is_table(rec.rows)
    local counted = rec.rows
    -- what a run killed while counting leaves: the record create() wrote
    rec.rows, rec.counted_by, rec.seconds = nil, nil, nil
    h.write(rfile, cjson.encode(rec))
    -- the drill, directly, on such a record: it fails
    local st = store.open(pol, assert(require("chbackup.config").load(w.config)))
    local p = st:list().points[1]
    local result = require("chbackup.policy.verify").backup({
      cfg = st.cfg, policy = pol, now = 0, scratch = scratch, log = function() end,
    }, p)
    assert.is_false(result.ok)
    local msg
    for _, c in ipairs(result.checks) do
      if c.name == "row_counts" then
        msg = c.message
      end
    end
    assert.truthy(msg:find("no row counts were recorded for nightly/20260501-0200-full", 1, true), msg)
    -- the next run records them from the backup, and the drill compares them
    local report = assert(policy.verify(pol, T("2026-05-01T03:00:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; ") .. log_text(report))
    assert.truthy(log_text(report):find("count nightly/20260501-0200-full: row counts recorded a killed run did not",
      1, true))
    assert.same(counted, cjson.decode(h.read(rfile)).rows)
    assert.truthy(log_text(report):find("agree with the counts recorded at backup time", 1, true))
  end)
  it("records its operations in source.status_dir, outside the data path", function()
    pol = assert(policy.check({
      source = { status_dir = w.dir .. "/policy-status" },
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
      selection = { databases = { "shop" } },
      schedule = { full = "0 2 * * *" },
    }, "nightly"))
    env.status_dir = nil
    assert(policy.run(pol, T("2026-05-01T02:00:00"), env).ok)
    assert.equal(1, #ls(w.dir .. "/policy-status"))
    assert.is_false(h.exists(w.data .. "/.chbackup"))
  end)
end)
