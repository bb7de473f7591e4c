-- Months of schedule in milliseconds: an injected clock and sleep drive
-- `watch` over an in-memory store, and over a real destination directory
-- with a stand-in for BACKUP. Expected sets are worked out by hand from the
-- calendar and restic's rules.
local h = require("spec.helpers")
local lfs = require("lfs")
local cjson = require("cjson")
local chbackup = require("chbackup")
local manifest = require("chbackup.manifest")
local policy = require("chbackup.policy")
local schedule = require("chbackup.policy.schedule")
local store = require("chbackup.policy.store")

local UTC = schedule.zone("UTC")


local function T(s)
  return assert(schedule.parse_time(s, UTC))
end


local function check(t, name)
  return assert(policy.check(t, name or "sim"))
end


-- Runs watch from `from` until the last run at or before `to`; calls
-- each(report, now) after every run. Returns the number of runs.
local function simulate(pol, env, from, to, each)
  local now = T(from)
  local stop = T(to)
  env.clock = function() return now end
  env.sleep = function(s) now = now + s end
  env.stop = function(report)
    assert(report.ok, table.concat(report.errors or {}, "; "))
    if each then
      each(report, now)
    end
    local runner = require("chbackup.policy.runner")
    local wake = runner.next_wakeup(pol, now)
    return not wake or wake > stop
  end
  return policy.watch(pol, env)
end


local function names(st)
  local out = {}
  for _, p in ipairs(st:list().points) do
    out[#out + 1] = p.name
  end
  return out
end


local function chains_intact(st)
  for _, p in ipairs(st:list().points) do
    if not p.chain_ok then
      return false, p.name .. ": " .. tostring(p.chain_problem)
    end
  end
  return true
end


describe("policy simulation: a year in memory", function()
  it("nightly fulls, incrementals at 08/14/20, GFS retention: the expected backups and deletions", function()
    local pol = check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
      schedule = { full = "0 2 * * *", incremental = "0 8,14,20 * * *" },
      retention = { daily = 7, weekly = 4, monthly = 12 },
    })
    local st = store.memory()
    local first
    local runs = simulate(pol, { store = st, log = function(rec)
      first = first or rec
    end }, "2026-01-01T00:00:00", "2026-12-31T23:59:00", function()
      assert(chains_intact(st))
    end)
    -- the first run (00:00) finds no full; then 4 runs a day, every day
    assert.equal("no full backup of policy sim yet", first.reason)
    assert.equal(1 + 365 * 4, runs)
    assert.equal(1461, st.created)
    assert.equal(1461 - 80, st.deleted)
    assert.is_nil(st.broken)
    -- restic's rules pick the newest backup (20:00) of: the last 7 days, the
    -- Sundays of the 3 weeks before (ISO week 53 holds Dec 28-31, Dec 27 is
    -- a Sunday and a daily), each month's last day; each needs its day's
    -- 02:00 full and the incrementals before it.
    local days = { "20261231", "20261230", "20261229", "20261228", "20261227", "20261226", "20261225",
      "20261220", "20261213", "20261130", "20261031", "20260930", "20260831", "20260731", "20260630", "20260531",
      "20260430", "20260331", "20260228", "20260131" }
    local want = {}
    for _, d in ipairs(days) do
      for _, x in ipairs({ "2000-incr", "1400-incr", "0800-incr", "0200-full" }) do
        want[#want + 1] = "sim/" .. d .. "-" .. x
      end
    end
    assert.same(want, names(st))
  end)

  it("a year of nightly fulls with restic's documented rules (daily 7, weekly 5, monthly 12, yearly 75)", function()
    local pol = check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{kind}" },
      schedule = { full = "0 2 * * *" },
      retention = { daily = 7, weekly = 5, monthly = 12, yearly = 75 },
    })
    local st = store.memory()
    simulate(pol, { store = st }, "2026-01-01T02:00:00", "2026-12-31T23:59:00")
    assert.equal(365, st.created)
    -- 7 dailies, 3 more weekly Sundays (Dec 27 is already a daily), 11 more
    -- month ends (December's is a daily) and, yearly count being left, the
    -- oldest backup ("oldest yearly snapshot")
    assert.same({ "sim/20261231-full", "sim/20261230-full", "sim/20261229-full", "sim/20261228-full",
      "sim/20261227-full", "sim/20261226-full", "sim/20261225-full", "sim/20261220-full", "sim/20261213-full",
      "sim/20261206-full", "sim/20261130-full", "sim/20261031-full", "sim/20260930-full", "sim/20260831-full",
      "sim/20260731-full", "sim/20260630-full", "sim/20260531-full", "sim/20260430-full", "sim/20260331-full",
      "sim/20260228-full", "sim/20260131-full", "sim/20260101-full" }, names(st))
    assert.equal(365 - 22, st.deleted)
    local plan = policy.plan(pol, T("2026-12-31T23:59:00"), { store = st })
    assert.same({ "oldest yearly snapshot" }, plan.retention.keep["sim/20260101-full"])
    assert.same({ "daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot", "newest backup" },
      plan.retention.keep["sim/20261231-full"])
  end)

  it("schedule.max_chain starts a new full when a chain is long enough", function()
    local pol = check({
      destination = { disk = "backups" },
      schedule = { full = "0 2 * * 0", incremental = "0 */6 * * *", max_chain = 5 },
    })
    local st = store.memory()
    simulate(pol, { store = st }, "2026-03-01T02:00:00", "2026-03-03T02:00:00")
    local kinds = {}
    for _, p in ipairs(st:list().points) do
      table.insert(kinds, 1, p.kind)
    end
    -- Sunday 02:00 full, incrementals at 06, 12, 18 and 00 (5 in the chain),
    -- then a full at 06 instead of a sixth, incrementals at 12, 18 and 00
    assert.same({ "full", "incr", "incr", "incr", "incr", "full", "incr", "incr", "incr" }, kinds)
  end)

  it("retention.rebase over a week of weekly fulls and daily incrementals: only the last 3 stay, each chain whole", function()
    local pol = check({
      destination = { disk = "backups" },
      schedule = { full = "0 2 * * 0", incremental = "0 2 * * *" },
      retention = { last = 3, rebase = true },
    })
    local st = store.memory()
    local rebased = {}
    simulate(pol, { store = st }, "2026-03-01T02:00:00", "2026-03-07T02:00:00", function(report)
      for _, p in ipairs(report.rebased) do
        rebased[#rebased + 1] = p.name
      end
      assert(chains_intact(st))
    end)
    -- Sunday's full, then one incremental a day on the day before; from
    -- Wednesday on, each run rebases the oldest of the last 3 and deletes
    -- the backup it relied on
    assert.same({ "sim/20260307-020000-incr", "sim/20260306-020000-incr", "sim/20260305-020000-incr" }, names(st))
    assert.same({ "sim/20260302-020000-incr", "sim/20260303-020000-incr", "sim/20260304-020000-incr",
      "sim/20260305-020000-incr" }, rebased)
    assert.is_nil(st.broken)
    -- a rebase that fails keeps the base, and the run says so
    st.opts.fail_rebase = function(p) return "no space left for " .. p.name end
    local report = assert(policy.run(pol, T("2026-03-08T02:00:00"), { store = st }))
    assert.is_false(report.ok)
    assert.matches("no space left for sim/20260306%-020000%-incr", report.errors[1])
    assert.same({ "sim/20260308-020000-full", "sim/20260307-020000-incr", "sim/20260306-020000-incr",
      "sim/20260305-020000-incr" }, names(st))
    assert.is_nil(st.broken)
  end)
end)


describe("policy simulation: property over random schedules and rules", function()
  local FULLS = { "0 2 * * *", "0 3 * * 0", "0 0 1,15 * *", "30 1 * * 1-5", "@weekly" }
  local INCRS = { nil, "0 * * * *", "0 */4 * * *", "15 8-18/2 * * 1-5", "0 12 * * *" }
  local VERIFY = { nil, "0 5 * * *", "0 6 * * 0" }

  it("no run ever leaves a kept backup whose chain is broken, nor deletes the newest verified", function()
    for seed = 1, 40 do
      math.randomseed(seed)
      local rand = math.random
      local r = { last = rand(1, 4) }
      for _, k in ipairs({ "hourly", "daily", "weekly", "monthly" }) do
        if rand() < 0.5 then
          r[k] = rand(0, 6)
        end
      end
      if rand() < 0.3 then
        r.within = rand(1, 3) .. "d"
      end
      if rand() < 0.3 then
        r.max_deletions = rand(1, 4)
      end
      local pol = check({
        destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
        schedule = { full = FULLS[rand(#FULLS)], incremental = INCRS[rand(#INCRS)], verify = VERIFY[rand(#VERIFY)],
          max_chain = rand() < 0.3 and rand(2, 10) or nil },
        retention = r,
      })
      -- some verifications fail; some backups fail
      local st = store.memory({ fail = function() return rand() < 0.05 and "disk full" or nil end })
      local newest_verified
      local env = {
        store = st,
        verifier = function(_, p)
          local ok = rand() < 0.7
          return { backup = p.name, ok = ok, time = 0, checks = { { name = "fake", ok = ok, message = "" } } }
        end,
      }
      local now = T("2026-01-01T00:00:00")
      local stop = T("2026-01-15T00:00:00")
      local runner = require("chbackup.policy.runner")
      while now <= stop do
        local report = assert(policy.run(pol, now, env))
        -- failures are expected here (a backup or a verification failing);
        -- what matters is the state after every run
        assert(report.log)
        local ok, why = chains_intact(st)
        assert(ok, "seed " .. seed .. " at " .. schedule.format(now, UTC) .. ": " .. tostring(why))
        assert.is_nil(st.broken, "seed " .. seed)
        -- the newest verified backup of before the run is still there, or a
        -- newer one was verified in this run
        local points = st:list().points
        if newest_verified and not st.points[newest_verified.name] then
          local newer = false
          for _, p in ipairs(points) do
            newer = newer or (p.verified and p.time > newest_verified.time)
          end
          assert(newer, "seed " .. seed .. ": deleted the newest verified " .. newest_verified.name)
        end
        newest_verified = nil
        for _, p in ipairs(points) do
          if p.verified then
            newest_verified = p
            break
          end
        end
        now = runner.next_wakeup(pol, now) or (stop + 1)
      end
    end
  end)
end)


-- A stand-in for BACKUP: writes the directory and its .backup as chbackup
-- would (no files), so that weeks of runs take no time.
local function fake_execute(w)
  local n = 0
  return function(text)
    local req = assert(chbackup.parse(text))[1]
    assert(req.kind == "backup", text)
    local dir = w.backups .. "/" .. req.destination.args[2]
    assert(not lfs.attributes(dir), "exists: " .. dir)
    assert(os.execute("mkdir -p " .. h.quote(dir)))
    n = n + 1
    local m = { version = 1, timestamp = "2026-01-01 00:00:00", uuid = string.format("00000000-0000-0000-0000-%012d", n),
      files = {} }
    local base = req.settings and req.settings.base_backup
    if base then
      local bdir = w.backups .. "/" .. base.args[2]
      local bm = assert(manifest.read(bdir .. "/.backup"))
      m.base_backup = require("chbackup.sql").format_destination(base)
      m.base_backup_uuid = bm.uuid
    end
    assert(manifest.write(dir, m))
    return { { id = "x", status = "BACKUP_CREATED" } }
  end
end


local function tree_names(w)
  local out = {}
  local function walk(dir, rel)
    for e in lfs.dir(dir) do
      if e ~= "." and e ~= ".." then
        local p = dir .. "/" .. e
        local name = rel == "" and e or (rel .. "/" .. e)
        if lfs.symlinkattributes(p, "mode") == "directory" and not lfs.attributes(p .. "/.backup") then
          walk(p, name)
        else
          out[#out + 1] = name
        end
      end
    end
  end
  walk(w.backups, "")
  table.sort(out)
  return out
end


describe("policy simulation: a real destination directory", function()
  local w, pol, env

  before_each(function()
    w = h.world("policy-disk")
    pol = check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
      selection = { databases = { "shop" }, tables = { "logs.events" } },
      schedule = { full = "0 2 * * *", incremental = "0 */6 * * *" },
      retention = { last = 3, daily = 2 },
    }, "nightly")
    env = { path = w.data, config = w.config, status_dir = w.status, execute = fake_execute(w) }
  end)

  it("makes, records and deletes whole backups over ten days", function()
    local statements = {}
    env.log = function(rec)
      if rec.event == "statement" then
        statements[#statements + 1] = rec.reason
      end
    end
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-10T23:00:00")
    -- last 3 (18:00, 12:00, 06:00 of May 10) + the newest of May 9 (18:00),
    -- with the fulls they need
    assert.same({
      "nightly/20260509-0200-full", "nightly/20260509-0200-full.chbackup.json",
      "nightly/20260509-0600-incr", "nightly/20260509-0600-incr.chbackup.json",
      "nightly/20260509-1200-incr", "nightly/20260509-1200-incr.chbackup.json",
      "nightly/20260509-1800-incr", "nightly/20260509-1800-incr.chbackup.json",
      "nightly/20260510-0200-full", "nightly/20260510-0200-full.chbackup.json",
      "nightly/20260510-0600-incr", "nightly/20260510-0600-incr.chbackup.json",
      "nightly/20260510-1200-incr", "nightly/20260510-1200-incr.chbackup.json",
      "nightly/20260510-1800-incr", "nightly/20260510-1800-incr.chbackup.json",
    }, tree_names(w))
    assert.equal("BACKUP DATABASE shop, TABLE logs.events TO Disk('backups', 'nightly/20260501-0200-full')",
      statements[1])
    assert.equal("BACKUP DATABASE shop, TABLE logs.events TO Disk('backups', 'nightly/20260501-0600-incr') "
      .. "SETTINGS base_backup = Disk('backups', 'nightly/20260501-0200-full')", statements[2])
    local rec = cjson.decode(h.read(w.backups .. "/nightly/20260510-1800-incr.chbackup.json"))
    assert.equal("incr", rec.kind)
    assert.equal(T("2026-05-10T18:00:00"), rec.time)
    assert.equal("nightly/20260510-1200-incr", rec.base)
    assert.equal("nightly", rec.policy)
    -- no lock left behind
    assert.is_nil(lfs.attributes(w.backups .. "/.chbackup-policy-nightly.lock"))
  end)

  it("plan changes nothing and says what is due, the next runs and what would go", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-02T00:00:00")
    local before = h.tree(w.backups)
    local plan = assert(policy.plan(pol, T("2026-05-02T02:00:00"), env))
    assert.same(before, h.tree(w.backups))
    assert.equal("full", plan.due.kind)
    assert.equal("nightly/20260502-0200-full", plan.due.name)
    assert.equal("schedule.full ('0 2 * * *') fired at 2026-05-02T02:00:00Z; the newest full, "
      .. "nightly/20260501-0200-full, is from 2026-05-01T02:00:00Z", plan.due.reason)
    assert.same({ T("2026-05-02T06:00:00"), T("2026-05-02T12:00:00"), T("2026-05-02T18:00:00") },
      plan.next.incremental)
    local kept = {}
    for _, p in ipairs(plan.retention.kept) do kept[#kept + 1] = p.name end
    assert.same({ "nightly/20260502-0000-incr", "nightly/20260501-1800-incr", "nightly/20260501-1200-incr",
      "nightly/20260501-0600-incr", "nightly/20260501-0200-full" }, kept)
    assert.same({ "base of nightly/20260501-0600-incr" }, plan.retention.keep["nightly/20260501-0200-full"])
  end)

  it("finishes a deletion an earlier run left half done, never follows a symlink, removes killed backups", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T02:00:00")
    local dir = w.backups .. "/nightly"
    -- a half-deleted backup, an unfinished one, a symlink that matches the pattern
    assert(os.execute("mkdir -p " .. h.quote(dir .. "/20260101-0000-full/data")))
    h.write(dir .. "/20260101-0000-full/.backup.deleting", "<config/>")
    assert(os.execute("mkdir -p " .. h.quote(dir .. "/20260102-0000-full")))
    h.write(dir .. "/20260102-0000-full/.chbackup-incomplete", "")
    local outside = w.dir .. "/outside"
    assert(os.execute("mkdir -p " .. h.quote(outside)))
    h.write(outside .. "/.backup", "<config><version>1</version><timestamp>2020-01-01 00:00:00</timestamp>"
      .. "<uuid>u</uuid><contents></contents></config>")
    h.write(outside .. "/keep-me", "x")
    assert(lfs.link(outside, dir .. "/20200101-0000-full", true))
    local log = {}
    env.log = function(rec) log[#log + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason end
    local report = assert(policy.run(pol, T("2026-05-01T06:00:00"), env))
    assert.is_true(report.ok)
    assert.is_nil(lfs.symlinkattributes(dir .. "/20260101-0000-full"))
    assert.is_nil(lfs.symlinkattributes(dir .. "/20260102-0000-full"))
    assert.equal("link", lfs.symlinkattributes(dir .. "/20200101-0000-full", "mode"))
    assert.equal("x", h.read(outside .. "/keep-me"))
    local text = table.concat(log, "\n")
    assert.truthy(text:find("deleted nightly/20260101-0000-full: finished a deletion an earlier run started", 1, true))
    assert.truthy(text:find("cleaned nightly/20260102-0000-full: removed " .. dir .. "/20260102-0000-full: an "
      .. "unfinished backup of a killed BACKUP (operation unknown; .chbackup-incomplete that no process holds)", 1,
      true), text)
    assert.truthy(text:find("problem nightly/20200101-0000-full: is a symbolic link; chbackup does not follow it", 1,
      true))
  end)

  it("keeps a base that a backup outside the policy relies on", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T02:00:00")
    -- someone's manual incremental on the policy's first full
    fake_execute(w)("BACKUP DATABASE shop TO Disk('backups', 'manual/x') SETTINGS base_backup = "
      .. "Disk('backups', 'nightly/20260501-0200-full')")
    simulate(pol, env, "2026-05-02T02:00:00", "2026-05-04T02:00:00")
    local plan = assert(policy.plan(pol, T("2026-05-04T03:00:00"), env))
    assert.same({ "base of manual/x, a backup outside this policy" }, plan.retention.keep["nightly/20260501-0200-full"])
    assert.truthy(lfs.attributes(w.backups .. "/nightly/20260501-0200-full/.backup"))
  end)

  it("keeps a base that a zip backup outside the policy relies on", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T02:00:00")
    -- a real zip incremental on the policy's (stand-in) directory backup
    assert(h.open(w):execute("BACKUP TABLE shop.orders TO Disk('backups', 'manual/x.zip') SETTINGS base_backup = "
      .. "Disk('backups', 'nightly/20260501-0200-full')"))
    simulate(pol, env, "2026-05-02T02:00:00", "2026-05-04T02:00:00")
    local plan = assert(policy.plan(pol, T("2026-05-04T03:00:00"), env))
    assert.same({ "base of manual/x.zip, a backup outside this policy" },
      plan.retention.keep["nightly/20260501-0200-full"])
  end)

  it("a failed backup is retried at the next run and nothing is deleted meanwhile", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-03T00:00:00")
    local count = #h.tree(w.backups)
    local real = env.execute
    env.execute = function() return nil, "disk full" end
    local errors = {}
    pol.hooks.on_error = function(ctx) errors[#errors + 1] = ctx.failed_step .. ": " .. ctx.error end
    local report = assert(policy.run(pol, T("2026-05-03T02:00:00"), env))
    assert.is_false(report.ok)
    assert.same({ "backup: disk full" }, errors)
    assert.equal(count, #h.tree(w.backups))
    assert.same({}, report.deleted)
    env.execute = real
    report = assert(policy.run(pol, T("2026-05-03T02:05:00"), env))
    assert.is_true(report.ok)
    assert.equal("nightly/20260503-0205-full", report.backup.name)
  end)

  it("hooks: before_backup can skip, before_delete can veto (the vetoed backup keeps its bases)", function()
    pol.retention = assert(require("chbackup.policy.retention").check({ last = 2 }))
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T18:00:00")
    local said = {}
    env.log = function(rec)
      said[#said + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason
    end
    pol.hooks.before_backup = function() return false, "maintenance window" end
    local report = assert(policy.run(pol, T("2026-05-02T02:00:00"), env))
    assert.is_nil(report.backup)
    assert.truthy(table.concat(said, "\n"):find("skip nightly/20260502-0200-full: hook before_backup said no: "
      .. "maintenance window", 1, true))
    pol.hooks.before_backup = nil
    assert.equal("nightly/20260502-0600-full", assert(policy.run(pol, T("2026-05-02T06:00:00"), env)).backup.name)
    local vetoed = "nightly/20260501-1200-incr"
    pol.hooks.before_delete = function(ctx)
      if ctx.name == vetoed then
        return false, "legal hold"
      end
    end
    report = assert(policy.run(pol, T("2026-05-02T12:00:00"), env))
    assert.is_true(report.ok)
    local deleted = {}
    for _, p in ipairs(report.deleted) do deleted[#deleted + 1] = p.name end
    -- the newest of the old chain goes first; the vetoed one stays with its bases
    assert.same({ "nightly/20260501-1800-incr" }, deleted)
    local left = {}
    for _, p in ipairs(assert(store.open(pol, require("chbackup.config").load(w.config))):list().points) do
      left[#left + 1] = p.name
    end
    assert.same({ "nightly/20260502-1200-incr", "nightly/20260502-0600-full", "nightly/20260501-1200-incr",
      "nightly/20260501-0600-incr", "nightly/20260501-0200-full" }, left)
    assert.truthy(table.concat(said, "\n"):find("skip nightly/20260501-1200-incr: hook before_delete said no: "
      .. "legal hold; kept", 1, true))
  end)

  it("max_deletions limits one run; later runs finish", function()
    pol.retention.max_deletions = 2
    local deleted = {}
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-04T02:00:00", function(report)
      deleted[#deleted + 1] = #report.deleted
    end)
    for _, n in ipairs(deleted) do
      assert.is_true(n <= 2)
    end
  end)

  it("passes the password from a file to BACKUP, never to the log or the policy record", function()
    h.write(w.dir .. "/pw", "s3cret\n")
    pol = check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.zip" },
      selection = { databases = { "shop" } },
      schedule = { full = "0 2 * * *" },
      password = { file = w.dir .. "/pw" },
      compression = { method = "lzma", level = 3 },
    }, "nightly")
    local seen
    local inst = h.open(w)
    env.execute = function(text)
      seen = text
      return inst:execute(text)
    end
    local said = {}
    env.log = function(rec) said[#said + 1] = rec.reason end
    local report = assert(policy.run(pol, T("2026-05-01T02:00:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; "))
    assert.equal("BACKUP DATABASE shop TO Disk('backups', 'nightly/20260501-0200-full.zip') SETTINGS "
      .. "compression_method = 'lzma', compression_level = 3, password = 's3cret'", seen)
    local rec = h.read(w.backups .. "/nightly/20260501-0200-full.zip.chbackup.json")
    assert.is_nil(rec:find("s3cret", 1, true))
    assert.truthy(rec:find("password = '***'", 1, true))
    assert.is_nil(table.concat(said, "\n"):find("s3cret", 1, true))
  end)

  it("one run at a time: a live lock refuses the run, naming it; a killed run's is taken over", function()
    local core = require("chbackup.core")
    local lk = assert(core.lock(w.backups .. "/.chbackup-policy-nightly.lock"))
    assert(lk:write("operation policy nightly run\npid 4242\n"))
    local report, err = policy.run(pol, T("2026-05-01T02:00:00"), env)
    assert.is_nil(report)
    assert.truthy(err:find("another run of policy nightly is in progress (operation policy nightly run (pid 4242), "
      .. "lock " .. w.backups .. "/.chbackup-policy-nightly.lock)", 1, true), err)
    lk:release()   -- as when its process is killed: the file stays, nobody holds it
    assert.is_true(assert(policy.run(pol, T("2026-05-01T02:00:00"), env)).ok)
    assert.is_nil(lfs.attributes(w.backups .. "/.chbackup-policy-nightly.lock"))
  end)

  it("one run at a time: an older version's lock directory is honoured while its process lives", function()
    assert(os.execute("mkdir -p " .. h.quote(w.backups .. "/.chbackup-policy-nightly.lock")))
    h.write(w.backups .. "/.chbackup-policy-nightly.lock/owner", "1 0\n")
    local report, err = policy.run(pol, T("2026-05-01T02:00:00"), env)
    assert.is_nil(report)
    assert.truthy(err:find("another run of policy nightly is in progress (pid 1", 1, true), err)
    -- a lock whose process is gone is taken over
    h.write(w.backups .. "/.chbackup-policy-nightly.lock/owner", "999999999 0\n")
    assert.is_true(assert(policy.run(pol, T("2026-05-01T02:00:00"), env)).ok)
  end)
end)


describe("policy simulation: zip backups, made for real", function()
  local chain = require("chbackup.chain")
  local config = require("chbackup.config")
  local ZIP_DAY = {
    "nightly/20260501-0200-full.zip", "nightly/20260501-0600-incr.zip", "nightly/20260501-1200-incr.zip",
    "nightly/20260501-1800-incr.zip", "nightly/20260502-0000-incr.zip",
  }
  local w, pol, env

  before_each(function()
    w = h.world("policy-zip")
    h.write(w.dir .. "/pw", "s3cret\n")
    pol = check({
      destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.zip" },
      selection = { databases = { "shop" }, tables = { "logs.events" } },
      schedule = { full = "0 2 * * *", incremental = "0 */6 * * *" },
      retention = { last = 1 },
      compression = { method = "zstd", level = 1 },
      password = { file = w.dir .. "/pw" },
    }, "nightly")
    env = { path = w.data, config = w.config, status_dir = w.status }
  end)

  -- Every file under the destination, by relative name (the lock excluded).
  local function files(dir)
    local out = {}
    for _, f in ipairs(h.tree(dir)) do
      out[#out + 1] = f
    end
    table.sort(out)
    return out
  end

  it("a day of zips: a full and incrementals, each on the previous zip; retention deletes zips whole", function()
    local log = {}
    env.log = function(rec)
      log[#log + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason
    end
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-02T00:00:00", function(report)
      if report.backup and report.backup.kind == "full" then
        -- something new for the incrementals to hold
        h.clickhouse(w.data, { "INSERT INTO shop.orders SELECT d + toIntervalMonth(6), id + 100000, customer, "
          .. "discount, status, tags, attrs FROM shop.orders WHERE d < '2024-02-01' LIMIT 10" })
      end
    end)
    -- one file per backup and its record beside it: no directory, no temp file
    local want = {}
    for _, name in ipairs(ZIP_DAY) do
      want[#want + 1] = name
      want[#want + 1] = name .. ".chbackup.json"
    end
    assert.same(want, files(w.backups))
    assert.same({ ZIP_DAY[5], ZIP_DAY[4], ZIP_DAY[3], ZIP_DAY[2], ZIP_DAY[1] }, names(assert(store.open(pol,
      config.load(w.config)))))
    -- each incremental's base is the zip before it, as its .backup records
    -- (what `chbackup show` prints), with that zip's uuid
    local cfg = assert(config.load(w.config))
    local previous
    for i, name in ipairs(ZIP_DAY) do
      local b = assert(chain.open(cfg, assert(chain.parse_name("Disk('backups', '" .. name .. "')")),
        { password = "s3cret" }))
      if i == 1 then
        assert.is_nil(b.manifest.base_backup)
      else
        assert.equal("Disk('backups', '" .. ZIP_DAY[i - 1] .. "')", b.manifest.base_backup)
        assert.equal(previous.manifest.uuid, b.manifest.base_backup_uuid)
      end
      assert.equal(i, #assert(chain.list(b)))
      assert.is_true(chain.check(b))
      local rec = cjson.decode(h.read(w.backups .. "/" .. name .. ".chbackup.json"))
      assert.equal(i == 1 and "full" or "incr", rec.kind)
      assert.equal(ZIP_DAY[i - 1], rec.base)
      assert.equal(b.manifest.uuid, rec.uuid)
      -- row counts at backup time, read from the zip through its chain
      assert.equal(i == 1 and 1370 or 1380, rec.rows.shop.orders.total)
      previous = b
    end
    local text = table.concat(log, "\n")
    assert.truthy(text:find("statement nightly/20260501-0600-incr.zip: BACKUP DATABASE shop, TABLE logs.events TO "
      .. "Disk('backups', 'nightly/20260501-0600-incr.zip') SETTINGS base_backup = Disk('backups', "
      .. "'nightly/20260501-0200-full.zip'), compression_method = 'zstd', compression_level = 1, password = '***'", 1,
      true), text)
    assert.is_nil(text:find("s3cret", 1, true))
    assert.is_nil(text:find("delete", 1, true))

    -- an earlier run's half-done deletion (renamed, not yet removed) and a
    -- BACKUP's leftover temp file; then the next full makes the whole day
    -- deletable (keep the last 1)
    local dir = w.backups .. "/nightly"
    assert(os.execute("cp " .. h.quote(dir .. "/20260501-0200-full.zip") .. " "
      .. h.quote(dir .. "/20260430-0200-full.zip.deleting")))
    h.write(dir .. "/20260430-0200-full.zip.chbackup.json", "{}")
    h.write(dir .. "/20260430-0300-incr.zip.tmp-4242", "PK")
    log = {}
    local report = assert(policy.run(pol, T("2026-05-02T02:00:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; "))
    assert.equal("nightly/20260502-0200-full.zip", report.backup.name)
    local deleted = {}
    for _, p in ipairs(report.deleted) do deleted[#deleted + 1] = p.name end
    -- inside a chain, newest first: never a zip whose base is gone
    assert.same({ ZIP_DAY[5], ZIP_DAY[4], ZIP_DAY[3], ZIP_DAY[2], ZIP_DAY[1] }, deleted)
    assert.same({ "nightly/20260502-0200-full.zip", "nightly/20260502-0200-full.zip.chbackup.json" },
      files(w.backups))
    text = table.concat(log, "\n")
    assert.truthy(text:find("deleted nightly/20260430-0200-full.zip: finished a deletion an earlier run started", 1,
      true), text)
    assert.truthy(text:find("problem nightly/20260430-0200-full.zip: deletion was started and not finished "
      .. "(20260430-0200-full.zip.deleting); the next run finishes it", 1, true), text)
    assert.truthy(text:find("cleaned nightly/20260430-0300-incr.zip.tmp-4242: removed " .. dir
      .. "/20260430-0300-incr.zip.tmp-4242: the temporary archive of a killed zip BACKUP (no process holds its lock)",
      1, true), text)
    assert.truthy(text:find("deleted " .. ZIP_DAY[1] .. ": removed whole (renamed to .deleting first", 1, true), text)
  end)

  it("a directory backup outside the policy, on one of its zips, pins it: chains mix zips and directories", function()
    -- (a directory backup cannot have a password-protected base)
    pol.password, pol.compression = nil, nil
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T02:00:00")
    local inst = h.open(w)
    assert(inst:execute("BACKUP TABLE shop.orders TO Disk('backups', 'manual/dir') SETTINGS base_backup = "
      .. "Disk('backups', '" .. ZIP_DAY[1] .. "')"))
    local b = assert(chain.open(assert(config.load(w.config)), assert(chain.parse_name("Disk('backups', 'manual/dir')"))))
    assert.equal("Disk('backups', '" .. ZIP_DAY[1] .. "')", b.manifest.base_backup)
    assert.equal(2, #assert(chain.list(b)))
    assert.is_true(chain.check(b))
    simulate(pol, env, "2026-05-02T02:00:00", "2026-05-02T02:00:00")
    local plan = assert(policy.plan(pol, T("2026-05-02T03:00:00"), env))
    assert.same({ "base of manual/dir, a backup outside this policy" }, plan.retention.keep[ZIP_DAY[1]])
    assert.truthy(lfs.attributes(w.backups .. "/" .. ZIP_DAY[1]))
  end)

  it("deletes a zip by renaming it first: a failure after the rename is finished by the next run", function()
    simulate(pol, env, "2026-05-01T02:00:00", "2026-05-01T06:00:00")
    local st = assert(store.open(pol, config.load(w.config)))
    local listing = st:list()
    assert.equal(2, #listing.points)
    local newest = listing.points[1]
    assert.is_true(newest.archive)
    -- the rename happens, then the removal fails (os.remove stubbed)
    local real_remove = os.remove
    os.remove = function(path) -- luacheck: ignore 122
      if path:match("%.zip%.deleting$") then
        return nil, path .. ": Operation not permitted"
      end
      return real_remove(path)
    end
    local ok, err = st:delete(newest)
    os.remove = real_remove -- luacheck: ignore 122
    assert.is_nil(ok)
    assert.truthy(err:find("the backup is invalidated; the next run finishes the deletion", 1, true), err)
    assert.is_nil(lfs.attributes(newest.path))
    assert.equal("file", lfs.attributes(newest.path .. ".deleting", "mode"))
    -- no longer a restore point: the listing shows it as a deletion to finish
    listing = st:list()
    assert.same({ ZIP_DAY[1] }, (function()
      local out = {}
      for _, p in ipairs(listing.points) do out[#out + 1] = p.name end
      return out
    end)())
    assert.equal(ZIP_DAY[2], listing.deleting[1].name)
    local said = {}
    env.log = function(rec) said[#said + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason end
    local report = assert(policy.run(pol, T("2026-05-01T06:30:00"), env))
    assert.is_true(report.ok, table.concat(report.errors, "; "))
    assert.truthy(table.concat(said, "\n"):find("deleted " .. ZIP_DAY[2] .. ": finished a deletion an earlier run "
      .. "started", 1, true))
    assert.is_nil(lfs.attributes(newest.path .. ".deleting"))
    assert.is_nil(lfs.attributes(newest.path .. ".chbackup.json"))
    -- and the incremental that is due again is made on the full
    assert.equal(ZIP_DAY[1], report.backup.base)
    assert.same({ ZIP_DAY[1], ZIP_DAY[1] .. ".chbackup.json", "nightly/20260501-0630-incr.zip",
      "nightly/20260501-0630-incr.zip.chbackup.json" }, files(w.backups))
  end)
end)
