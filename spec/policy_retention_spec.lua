-- Retention: restic's forget rules (reproduced against restic's own golden
-- files and documented examples), then chbackup's chain rules, and a
-- property test over random histories and rules.
require("spec.helpers")
local retention = require("chbackup.policy.retention")
local schedule = require("chbackup.policy.schedule")

local UTC = schedule.zone("UTC")


local function T(s)
  local base, frac = s:match("^(.-)(%.%d+)$")
  local t = assert(schedule.parse_time(base or s, UTC))
  return t + (tonumber(frac) or 0)
end


local function fmt(t)
  local s = schedule.format(t, UTC):gsub("Z$", "")
  local frac = t - math.floor(t)
  if frac > 0 then
    s = s .. string.format("%.1f", frac):sub(2)
  end
  return s
end


local function rules(t)
  return assert(retention.check(t))
end


-- restic's TestApplyPolicy snapshot list (internal/data/snapshot_policy_test.go),
-- in its order (equal times keep it: restic sorts stably).
local RESTIC_TIMES = {
  "2014-09-01T10:20:30", "2014-09-02T10:20:30", "2014-09-05T10:20:30", "2014-09-06T10:20:30",
  "2014-09-08T10:20:30", "2014-09-09T10:20:30", "2014-09-10T10:20:30", "2014-09-11T10:20:30",
  "2014-09-20T10:20:30", "2014-09-22T10:20:30", "2014-08-08T10:20:30", "2014-08-10T10:20:30",
  "2014-08-12T10:20:30", "2014-08-13T10:20:30", "2014-08-13T10:20:30.1", "2014-08-15T10:20:30",
  "2014-08-18T10:20:30", "2014-08-20T10:20:30", "2014-08-21T10:20:30", "2014-08-22T10:20:30",
  "2014-10-01T10:20:30", "2014-10-02T10:20:30", "2014-10-05T10:20:30", "2014-10-06T10:20:30",
  "2014-10-08T10:20:30", "2014-10-09T10:20:30", "2014-10-10T10:20:30", "2014-10-11T10:20:30",
  "2014-10-20T10:20:30", "2014-10-22T10:20:30", "2014-11-08T10:20:30", "2014-11-10T10:20:30",
  "2014-11-12T10:20:30", "2014-11-13T10:20:30", "2014-11-13T10:20:30.1", "2014-11-15T10:20:30",
  "2014-11-18T10:20:30", "2014-11-20T10:20:30", "2014-11-21T10:20:30", "2014-11-22T10:20:30",
  "2015-09-01T10:20:30", "2015-09-02T10:20:30", "2015-09-05T10:20:30", "2015-09-06T10:20:30",
  "2015-09-08T10:20:30", "2015-09-09T10:20:30", "2015-09-10T10:20:30", "2015-09-11T10:20:30",
  "2015-09-20T10:20:30", "2015-09-22T10:20:30", "2015-08-08T10:20:30", "2015-08-10T10:20:30",
  "2015-08-12T10:20:30", "2015-08-13T10:20:30", "2015-08-13T10:20:30.1", "2015-08-15T10:20:30",
  "2015-08-18T10:20:30", "2015-08-20T10:20:30", "2015-08-21T10:20:30", "2015-08-22T10:20:30",
  "2015-10-01T10:20:30", "2015-10-02T10:20:30", "2015-10-05T10:20:30", "2015-10-06T10:20:30",
  "2015-10-08T10:20:30", "2015-10-09T10:20:30", "2015-10-10T10:20:30", "2015-10-11T10:20:30",
  "2015-10-20T10:20:30", "2015-10-22T10:20:30", "2015-10-22T10:20:30", "2015-10-22T10:20:30",
  "2015-10-22T10:20:30", "2015-10-22T10:20:30", "2015-11-08T10:20:30", "2015-11-10T10:20:30",
  "2015-11-12T10:20:30", "2015-11-13T10:20:30", "2015-11-13T10:20:30.1", "2015-11-15T10:20:30",
  "2015-11-18T10:20:30", "2015-11-20T10:20:30", "2015-11-21T10:20:30", "2015-11-22T10:20:30",
  "2016-01-01T01:02:03", "2016-01-01T01:03:03", "2016-01-01T07:08:03", "2016-01-03T07:02:03",
  "2016-01-04T10:23:03", "2016-01-04T11:23:03", "2016-01-04T12:23:03", "2016-01-04T12:24:03",
  "2016-01-04T12:28:03", "2016-01-04T12:30:03", "2016-01-04T16:23:03", "2016-01-05T09:02:03",
  "2016-01-06T08:02:03", "2016-01-07T10:02:03", "2016-01-08T20:02:03", "2016-01-09T21:02:03",
  "2016-01-12T21:02:03", "2016-01-12T21:08:03", "2016-01-18T12:02:03",
}


local function restic_points()
  local pts = {}
  for i, s in ipairs(RESTIC_TIMES) do
    pts[i] = { id = "s" .. i, time = T(s) }
  end
  return pts
end


-- restic's ApplyPolicy with now far after the list (as in restic's test).
local function apply_restic(r)
  local keep, remove, reasons = retention.restic(restic_points(), rules(r), T("2030-01-01T00:00:00"), UTC)
  local times, matches = {}, {}
  for i, p in ipairs(keep) do
    times[i] = fmt(p.time)
    matches[i] = table.concat(reasons[p], ", ")
  end
  return times, matches, #remove
end


describe("retention: restic's golden files (internal/data/testdata/policy_keep_snapshots_N)", function()
  it("#5 {Hourly: 20}", function()
    local times, matches, removed = apply_restic({ hourly = 20 })
    assert.same({
      "2016-01-18T12:02:03", "2016-01-12T21:08:03", "2016-01-09T21:02:03", "2016-01-08T20:02:03",
      "2016-01-07T10:02:03", "2016-01-06T08:02:03", "2016-01-05T09:02:03", "2016-01-04T16:23:03",
      "2016-01-04T12:30:03", "2016-01-04T11:23:03", "2016-01-04T10:23:03", "2016-01-03T07:02:03",
      "2016-01-01T07:08:03", "2016-01-01T01:03:03", "2015-11-22T10:20:30", "2015-11-21T10:20:30",
      "2015-11-20T10:20:30", "2015-11-18T10:20:30", "2015-11-15T10:20:30", "2015-11-13T10:20:30.1",
    }, times)
    for _, m in ipairs(matches) do
      assert.equal("hourly snapshot", m)
    end
    assert.equal(#RESTIC_TIMES - 20, removed)
  end)

  it("#15 {Daily: 2, Weekly: 2, Monthly: 6}", function()
    local times, matches = apply_restic({ daily = 2, weekly = 2, monthly = 6 })
    assert.same({ "2016-01-18T12:02:03", "2016-01-12T21:08:03", "2015-11-22T10:20:30", "2015-10-22T10:20:30",
      "2015-09-22T10:20:30", "2015-08-22T10:20:30", "2014-11-22T10:20:30" }, times)
    assert.same({ "daily snapshot, weekly snapshot, monthly snapshot", "daily snapshot, weekly snapshot",
      "monthly snapshot", "monthly snapshot", "monthly snapshot", "monthly snapshot", "monthly snapshot" }, matches)
  end)

  it("#16 {Yearly: 10}: the oldest is kept while count is left", function()
    local times, matches = apply_restic({ yearly = 10 })
    assert.same({ "2016-01-18T12:02:03", "2015-11-22T10:20:30", "2014-11-22T10:20:30", "2014-08-08T10:20:30" },
      times)
    assert.same({ "yearly snapshot", "yearly snapshot", "yearly snapshot", "oldest yearly snapshot" }, matches)
  end)

  it("#29 {Within: 1y2m3d3h}: calendar arithmetic from the newest", function()
    local times, matches = apply_restic({ within = "1y2m3d3h" })
    assert.equal(68, #times)
    assert.equal("2016-01-18T12:02:03", times[1])
    assert.equal("2014-11-15T10:20:30", times[#times])
    for _, m in ipairs(matches) do
      assert.equal("within 1y2m3d3h", m)
    end
  end)

  it("#32 {WithinWeekly: 1y2m3d3h}", function()
    local times, matches = apply_restic({ within_weekly = "1y2m3d3h" })
    assert.same({
      "2016-01-18T12:02:03", "2016-01-12T21:08:03", "2016-01-09T21:02:03", "2016-01-03T07:02:03",
      "2015-11-22T10:20:30", "2015-11-15T10:20:30", "2015-11-08T10:20:30", "2015-10-22T10:20:30",
      "2015-10-11T10:20:30", "2015-10-02T10:20:30", "2015-09-22T10:20:30", "2015-09-20T10:20:30",
      "2015-09-11T10:20:30", "2015-09-06T10:20:30", "2015-08-22T10:20:30", "2015-08-15T10:20:30",
      "2015-08-08T10:20:30", "2014-11-22T10:20:30", "2014-11-15T10:20:30",
    }, times)
    for _, m in ipairs(matches) do
      assert.equal("weekly within 1y2m3d3h", m)
    end
  end)

  it("#39 {Daily: 3, Weekly: 2, Monthly: unlimited, Yearly: unlimited}", function()
    local times, matches = apply_restic({ daily = 3, weekly = 2, monthly = "unlimited", yearly = "unlimited" })
    assert.same({ "2016-01-18T12:02:03", "2016-01-12T21:08:03", "2016-01-09T21:02:03", "2015-11-22T10:20:30",
      "2015-10-22T10:20:30", "2015-09-22T10:20:30", "2015-08-22T10:20:30", "2014-11-22T10:20:30",
      "2014-10-22T10:20:30", "2014-09-22T10:20:30", "2014-08-22T10:20:30", "2014-08-08T10:20:30" }, times)
    assert.same({
      "daily snapshot, weekly snapshot, monthly snapshot, yearly snapshot", "daily snapshot, weekly snapshot",
      "daily snapshot", "monthly snapshot, yearly snapshot", "monthly snapshot", "monthly snapshot",
      "monthly snapshot", "monthly snapshot, yearly snapshot", "monthly snapshot", "monthly snapshot",
      "monthly snapshot", "oldest monthly snapshot, oldest yearly snapshot",
    }, matches)
  end)
end)


describe("retention: restic's documented forget examples (doc/060_forget.rst)", function()
  it("one backup every Sunday for 12 weeks, --keep-daily 4 keeps the last four Sundays", function()
    local pts = {}
    local t = T("2019-09-01T11:00:00")
    for i = 1, 12 do
      pts[i] = { id = fmt(t), time = t }
      t = t + 7 * 86400
    end
    local keep, remove = retention.restic(pts, rules({ daily = 4 }), T("2019-11-18T00:00:00"), UTC)
    local kept = {}
    for i, p in ipairs(keep) do kept[i] = p.id end
    assert.same({ "2019-11-17T11:00:00", "2019-11-10T11:00:00", "2019-11-03T11:00:00", "2019-10-27T11:00:00" }, kept)
    assert.equal(8, #remove)
  end)

  it("--keep-last 1 keeps the newer of two snapshots", function()
    local pts = { { id = "8c02b94b", time = T("2017-02-21T10:48:33") }, { id = "4bba301e", time = T("2017-02-21T10:49:18") } }
    local keep, remove = retention.restic(pts, rules({ last = 1 }), T("2017-02-22T00:00:00"), UTC)
    assert.equal("4bba301e", keep[1].id)
    assert.equal("8c02b94b", remove[1].id)
  end)

  it("a backup every day for 100 years: daily 7, weekly 5, monthly 12, yearly 75", function()
    -- "keeps the most recent 7 daily snapshots and 4 last-day-of-the-week
    -- ones (since the 7 dailies already include 1 weekly). Additionally, 12
    -- or 11 last-day-of-the-month snapshots ... And finally 75 or 74
    -- last-day-of-the-year snapshots are kept"
    local pts = {}
    local t = T("1925-01-01T12:00:00")
    -- The last day is a Sunday (the 7 dailies hold exactly one week's end)
    -- in December (the monthlies stay in one year) with November ending on a
    -- Saturday (no monthly is also a weekly).
    local last = T("2024-12-29T12:00:00")
    while t <= last do
      pts[#pts + 1] = { id = #pts + 1, time = t }
      t = t + 86400
    end
    local keep, _, reasons = retention.restic(pts, rules({ daily = 7, weekly = 5, monthly = 12, yearly = 75 }),
      last + 86400, UTC)
    local only = { daily = 0, weekly = 0, monthly = 0, yearly = 0 }
    for _, p in ipairs(keep) do
      local first = reasons[p][1]:match("^(%a+) snapshot")
      only[first] = only[first] + 1
    end
    -- counted by the first rule that keeps each backup
    assert.equal(7, only.daily)
    assert.equal(4, only.weekly)
    assert.equal(11, only.monthly) -- "12 or 11": this month's is a daily
    assert.equal(74, only.yearly) -- "75 or 74": this year's is a daily
    assert.equal(7 + 4 + 11 + 74, #keep)
  end)

  it("ignores backups in the future for durations and never removes them", function()
    local now = T("2020-01-10T00:00:00")
    local pts = {
      { id = "future", time = T("2020-02-01T00:00:00") },
      { id = "new", time = T("2020-01-09T00:00:00") },
      { id = "old", time = T("2020-01-01T00:00:00") },
    }
    local keep = retention.restic(pts, rules({ within = "2d" }), now, UTC)
    local ids = {}
    for _, p in ipairs(keep) do ids[#ids + 1] = p.id end
    assert.same({ "future", "new" }, ids)
  end)
end)


-- A chain: f1 <- i1 <- i2 and f2 <- i3 (ids name the times in hours).
local function history(spec)
  local pts = {}
  for _, s in ipairs(spec) do
    pts[#pts + 1] = { id = s[1], time = T("2026-03-01T00:00:00") + s[2] * 3600, base = s[3], verified = s[4] }
  end
  return pts
end


local function ids(list)
  local out = {}
  for i, p in ipairs(list) do out[i] = p.id end
  return out
end


describe("retention: chains", function()
  local now = T("2026-03-10T00:00:00")

  it("keeps every base of a kept incremental, saying why", function()
    local pts = history({ { "f1", 0 }, { "i1", 1, "f1" }, { "i2", 2, "i1" }, { "f2", 24 }, { "i3", 25, "f2" } })
    local res = retention.apply(pts, rules({ last = 1, daily = 2 }), now, UTC)
    -- restic would keep i3 (last, daily) and i2 (daily); i2 needs i1 and f1
    assert.same({ "i3", "f2", "i2", "i1", "f1" }, ids(res.kept))
    assert.same({ "base of i2" }, res.keep.i1)
    assert.same({ "base of i1" }, res.keep.f1)
    assert.same({ "base of i3" }, res.keep.f2)
    assert.same({}, res.remove)
  end)

  it("deletes dependents newest first, oldest chain first, at most max_deletions", function()
    local pts = history({ { "f1", 0 }, { "i1", 1, "f1" }, { "i2", 2, "i1" }, { "f2", 24 }, { "i3", 25, "f2" },
      { "f3", 48 }, { "i4", 49, "f3" } })
    local res = retention.apply(pts, rules({ last = 1 }), now, UTC)
    assert.same({ "i4", "f3" }, ids(res.kept))
    assert.same({ "i2", "i1", "f1", "i3", "f2" }, ids(res.remove))
    local limited = retention.apply(pts, rules({ last = 1, max_deletions = 2 }), now, UTC)
    assert.same({ "i2", "i1" }, ids(limited.remove))
    assert.same({ "f1", "i3", "f2" }, ids(limited.deferred))
  end)

  it("never deletes the newest verified backup (or what it needs)", function()
    local pts = history({ { "f1", 0, nil, true }, { "i1", 1, "f1", true }, { "f2", 24 }, { "i2", 25, "f2" } })
    local res = retention.apply(pts, rules({ last = 1 }), now, UTC)
    assert.same({ "newest verified backup" }, res.keep.i1)
    assert.same({ "base of i1" }, res.keep.f1)
    assert.same({}, res.remove)
  end)

  it("keeps the newest backup, backups in the future and pinned backups", function()
    local pts = history({ { "f1", 0 }, { "f2", 24 }, { "f3", 48 }, { "future", 24 * 30 } })
    pts[1].pinned = "base of other/x, a backup outside this policy"
    local res = retention.apply(pts, rules({ last = 1 }), now, UTC)
    -- restic's last 1 picks the future one; chbackup also keeps the newest
    -- backup up to now (the next incremental's base)
    assert.same({ "last snapshot", "in the future" }, res.keep.future)
    assert.same({ "newest backup" }, res.keep.f3)
    assert.same({ "base of other/x, a backup outside this policy" }, res.keep.f1)
    assert.same({ "f2" }, ids(res.remove))
  end)

  it("keep_if keeps what a Lua function names", function()
    local pts = history({ { "f1", 0 }, { "f2", 24 }, { "f3", 48 } })
    local res = retention.apply(pts, rules({ last = 1, keep_if = function(p)
      return p.id == "f1" and "quarter end"
    end }), now, UTC)
    assert.same({ "keep_if: quarter end" }, res.keep.f1)
    assert.same({ "f2" }, ids(res.remove))
  end)

  it("rebase: a kept incremental whose base expires is made standalone; the base goes", function()
    local pts = history({ { "f1", 0 }, { "i1", 1, "f1" }, { "i2", 2, "i1" }, { "i3", 3, "i2" }, { "f2", 24 },
      { "j1", 25, "f2" }, { "j2", 26, "f2" } })
    -- last 4 keeps j2, j1, f2 (so j1 and j2 stay on it) and i3
    local res = retention.apply(pts, rules({ last = 4, rebase = true }), now, UTC)
    assert.same({ "j2", "j1", "f2", "i3" }, ids(res.kept))
    -- i3 relies on i2 <- i1 <- f1, none kept for itself: i3 alone is rebased
    assert.same({ "i3" }, ids(res.rebase))
    assert.same({ i3 = "i2" }, res.rebase_of)
    assert.same({ "i2", "i1", "f1" }, ids(res.remove))
    -- without rebase the whole chain stays
    local kept = retention.apply(pts, rules({ last = 4 }), now, UTC)
    assert.same({ "j2", "j1", "f2", "i3", "i2", "i1", "f1" }, ids(kept.kept))
    assert.same({}, kept.rebase)
  end)

  it("rebase: the oldest kept incremental on an expiring base only; later ones keep it as their base", function()
    local pts = history({ { "f1", 0 }, { "i1", 1, "f1" }, { "i2", 2, "i1" }, { "i3", 3, "i2" } })
    local res = retention.apply(pts, rules({ last = 2, rebase = true }), now, UTC)
    assert.same({ "i2" }, ids(res.rebase))
    assert.same({ "i3", "i2" }, ids(res.kept))
    assert.same({ "last snapshot", "base of i3" }, res.keep.i2)
    assert.same({ "i1", "f1" }, ids(res.remove))
  end)

  it("rebase: not after a failed rebase, nor over a broken chain, nor past a pinned base", function()
    local pts = history({ { "f1", 0 }, { "i1", 1, "f1" } })
    pts[2].rebase_failed = "checksum mismatch"
    local res = retention.apply(pts, rules({ last = 1, rebase = true }), now, UTC)
    assert.same({}, res.rebase)
    assert.same({ "base of i1" }, res.keep.f1)
    assert.same({}, res.remove)
    -- i2's chain misses the base of i1: nothing to read i2 through
    pts = history({ { "i1", 1, "gone" }, { "i2", 2, "i1" } })
    res = retention.apply(pts, rules({ last = 1, rebase = true }), now, UTC)
    assert.same({}, res.rebase)
    assert.same({ "i2", "i1" }, ids(res.kept))
    pts = history({ { "f1", 0 }, { "i1", 1, "f1" } })
    pts[1].pinned = "base of other/x, a backup outside this policy"
    res = retention.apply(pts, rules({ last = 1, rebase = true }), now, UTC)
    assert.same({}, res.rebase)
  end)

  it("no rules keep everything", function()
    local res = retention.apply(history({ { "f1", 0 }, { "f2", 24 } }), nil, now, UTC)
    assert.equal(2, #res.kept)
    assert.same({}, res.remove)
  end)
end)


describe("retention.check", function()
  local cases = {
    { { daily = -1 }, "retention.daily: expected a count >= 0 or \"unlimited\", got -1" },
    { { daily = 1.5 }, "retention.daily: expected a count" },
    { { weekly = "lots" }, "retention.weekly: expected a count >= 0 or \"unlimited\", got 'lots'" },
    { { within = "1w" }, "retention.within: cannot read duration '1w'" },
    { { dayly = 3 }, "retention.dayly: unknown field" },
    { { max_deletions = 5 }, "retention: no keep rule" },
    { { daily = 0 }, "retention: no keep rule" },
    { { daily = 1, max_deletions = -2 }, "retention.max_deletions: expected a count >= 0" },
    { { keep_if = "yes" }, "retention.keep_if: expected a function" },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[2], function()
      local r, err = retention.check(c[1])
      assert.is_nil(r)
      assert.truthy(err:find(c[2], 1, true), err)
    end)
  end
  it("describes rules as restic does", function()
    assert.equal("keep 24 hourly, 7 daily, all yearly, all within 2d of the newest",
      retention.describe(rules({ hourly = 24, daily = 7, yearly = "unlimited", within = "2d" })))
  end)
end)


describe("retention: property over random histories and rules", function()
  -- Deterministic: the seed is printed when a case fails.
  local function random_history(rand)
    local pts, t = {}, T("2026-01-01T00:00:00")
    for i = 1, rand(1, 80) do
      t = t + rand(1, 30) * 1800
      local base
      if i > 1 and rand() < 0.75 then
        -- mostly on the newest, sometimes on an older point (branches)
        base = pts[rand() < 0.8 and #pts or rand(1, #pts)].id
      end
      pts[i] = { id = "p" .. i, time = t, base = base, verified = rand() < 0.1 }
    end
    -- some points of another world: a base that is gone
    if rand() < 0.2 and #pts > 2 then
      pts[#pts].base = "gone"
    end
    return pts, t
  end

  local function random_rules(rand)
    local r = {}
    for _, k in ipairs(retention.COUNT_RULES) do
      if rand() < 0.35 then
        r[k] = rand() < 0.1 and "unlimited" or rand(0, 6)
      end
    end
    if rand() < 0.2 then
      r.within = rand(1, 3) .. "d"
    end
    if rand() < 0.15 then
      r.within_daily = rand(1, 5) .. "d"
    end
    if rand() < 0.3 then
      r.max_deletions = rand(0, 5)
    end
    if not retention.check(r) then
      r.last = 1
    end
    return rules(r)
  end

  it("never plans a deletion that leaves a kept backup without its chain", function()
    for seed = 1, 400 do
      local rng = math.random
      math.randomseed(seed)
      local pts, newest_time = random_history(rng)
      local r = random_rules(rng)
      local now = newest_time + rng(0, 3) * 86400
      local res = retention.apply(pts, r, now, UTC)
      local by_id, state = {}, {}
      for _, p in ipairs(pts) do
        by_id[p.id] = p
        state[p.id] = "present"
      end
      local seen = {}
      for _, p in ipairs(res.kept) do seen[p.id] = "kept" end
      for _, p in ipairs(res.remove) do
        assert.is_nil(seen[p.id], "seed " .. seed)
        seen[p.id] = "remove"
      end
      for _, p in ipairs(res.deferred) do
        assert.is_nil(seen[p.id], "seed " .. seed)
        seen[p.id] = "deferred"
      end
      for _, p in ipairs(pts) do
        assert.is_not_nil(seen[p.id], "seed " .. seed .. ": " .. p.id .. " is in no list")
      end
      -- every base of a kept point is kept
      for _, p in ipairs(res.kept) do
        if p.base and by_id[p.base] then
          assert.equal("kept", seen[p.base], "seed " .. seed .. ": " .. p.id .. " kept without " .. p.base)
        end
      end
      -- the newest and the newest verified are kept
      local newest, verified
      for _, p in ipairs(pts) do
        if not newest or p.time > newest.time then newest = p end
        if p.verified and (not verified or p.time > verified.time) then verified = p end
      end
      assert.equal("kept", seen[newest.id], "seed " .. seed)
      if verified then
        assert.equal("kept", seen[verified.id], "seed " .. seed)
      end
      -- restic's own choice is a subset of what is kept
      local rk = retention.restic(pts, r, now, UTC)
      for _, p in ipairs(rk) do
        assert.equal("kept", seen[p.id], "seed " .. seed)
      end
      if r.max_deletions then
        assert.is_true(#res.remove <= r.max_deletions, "seed " .. seed)
      end
      -- deleting in the planned order, one at a time, never leaves a
      -- remaining point whose base was just deleted
      for _, p in ipairs(res.remove) do
        state[p.id] = nil
        for _, q in ipairs(pts) do
          if state[q.id] and q.base == p.id then
            error("seed " .. seed .. ": deleting " .. p.id .. " breaks " .. q.id)
          end
        end
      end
    end
  end)

  it("with rebase: every kept backup still has its chain once the planned rebases are made", function()
    for seed = 1, 300 do
      math.randomseed(seed)
      local pts, newest_time = random_history(math.random)
      local r = random_rules(math.random)
      r.rebase = true
      local res = retention.apply(pts, r, newest_time + math.random(0, 3) * 86400, UTC)
      local by_id, kept, gone = {}, {}, {}
      for _, p in ipairs(pts) do by_id[p.id] = p end
      for _, p in ipairs(res.kept) do kept[p.id] = true end
      for _, p in ipairs(res.remove) do gone[p.id] = true end
      for _, p in ipairs(res.rebase) do
        assert.is_true(kept[p.id], "seed " .. seed .. ": " .. p.id .. " rebased but not kept")
        assert.is_nil(res.keep[p.base], "seed " .. seed .. ": " .. p.id .. " rebased while its base is kept")
        assert.equal(p.base, res.rebase_of[p.id])
        by_id[p.id] = { id = p.id, time = p.time }   -- standalone from now on
      end
      for _, p in ipairs(res.kept) do
        local cur = by_id[p.id]
        while cur.base and by_id[cur.base] do
          assert.is_true(kept[cur.base], "seed " .. seed .. ": " .. p.id .. " kept without " .. cur.base)
          cur = by_id[cur.base]
        end
      end
      -- nothing is kept only as the base of another backup when its chain is whole
      for id, reasons in pairs(res.keep) do
        local own = false
        for _, why in ipairs(reasons) do
          own = own or not why:match("^base of ")
        end
        if not own then
          local ok_chain = true
          local cur = by_id[id]
          while cur.base do
            if not by_id[cur.base] then ok_chain = false break end
            cur = by_id[cur.base]
          end
          assert.is_false(ok_chain and not gone[id], "seed " .. seed .. ": " .. id .. " kept only as a base")
        end
      end
    end
  end)
end)
