-- Schedules: Vixie cron's five fields, time zones, durations.
require("spec.helpers")
local schedule = require("chbackup.policy.schedule")

local UTC = schedule.zone("UTC")


local function T(s, zone)
  return assert(schedule.parse_time(s, zone or UTC))
end


local function F(t, zone)
  return schedule.format(t, zone or UTC)
end


local function runs(expr, from, n, zone)
  local cron = assert(schedule.parse(expr))
  local out = {}
  for i, t in ipairs(schedule.upcoming(cron, T(from, zone), zone or UTC, n)) do
    out[i] = F(t, zone)
  end
  return out
end


-- The first run after t by walking minute by minute (the definition).
local function brute_next(cron, t, zone)
  t = t - t % 60 + 60
  for _ = 1, 60 * 24 * 800 do
    if schedule.matches(cron, zone:civil(t)) then
      return t
    end
    t = t + 60
  end
end


describe("schedule.parse", function()
  it("reads ranges, steps, lists and names", function()
    assert.same({ "2026-01-05T09:00:00Z", "2026-01-05T09:15:00Z", "2026-01-05T09:30:00Z" },
      runs("*/15 9-17 * * mon-fri", "2026-01-03T00:00:00", 3))
    -- (both day fields restricted: the 1st to the 7th, or a Monday)
    assert.same({ "2026-02-01T06:00:00Z", "2026-02-02T06:00:00Z", "2026-02-03T06:00:00Z" },
      runs("0 6 1-7 FEB-Apr MON", "2026-01-01T00:00:00", 3))
    assert.same({ "2026-02-02T06:00:00Z", "2026-02-09T06:00:00Z", "2026-02-16T06:00:00Z" },
      runs("0 6 * FEB-Apr MON", "2026-01-01T00:00:00", 3))
    assert.same({ "2026-01-01T00:10:00Z", "2026-01-01T00:20:00Z", "2026-01-01T00:50:00Z" },
      runs("10,20,50 0 * * *", "2026-01-01T00:00:00", 3))
  end)

  it("day of month OR day of week when both are restricted, as Vixie cron", function()
    -- the 1st, the 15th and every Monday
    assert.same({ "2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z", "2026-01-15T00:00:00Z",
      "2026-01-19T00:00:00Z" }, runs("0 0 1,15 * mon", "2025-12-31T12:00:00", 5))
    -- a field starting with * (even */2) makes it AND: Mondays on odd days
    assert.same({ "2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z", "2026-02-09T00:00:00Z" },
      runs("0 0 */2 * mon", "2026-01-01T00:00:00", 3))
  end)

  it("takes 0 and 7 for Sunday", function()
    assert.same(runs("0 3 * * 0", "2026-01-01T00:00:00", 3), runs("0 3 * * 7", "2026-01-01T00:00:00", 3))
    assert.same({ "2026-01-04T03:00:00Z" }, runs("0 3 * * sun", "2026-01-01T00:00:00", 1))
    assert.same({ "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-10T00:00:00Z" },
      runs("0 0 * * 6-7", "2026-01-01T00:00:00", 3))
  end)

  it("knows the @ macros", function()
    assert.same({ "2027-01-01T00:00:00Z" }, runs("@yearly", "2026-03-01T00:00:00", 1))
    assert.same({ "2027-01-01T00:00:00Z" }, runs("@annually", "2026-03-01T00:00:00", 1))
    assert.same({ "2026-04-01T00:00:00Z" }, runs("@monthly", "2026-03-01T00:00:00", 1))
    assert.same({ "2026-03-08T00:00:00Z" }, runs("@weekly", "2026-03-01T00:00:00", 1))
    assert.same({ "2026-03-02T00:00:00Z" }, runs("@daily", "2026-03-01T00:00:00", 1))
    assert.same({ "2026-03-02T00:00:00Z" }, runs("@midnight", "2026-03-01T00:00:00", 1))
    assert.same({ "2026-03-01T01:00:00Z" }, runs("@hourly", "2026-03-01T00:00:00", 1))
  end)

  it("finds February 29th and skips months without a 31st", function()
    assert.same({ "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z" }, runs("0 0 29 2 *", "2026-01-01T00:00:00", 2))
    assert.same({ "2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z" },
      runs("0 0 31 * *", "2026-01-01T00:00:00", 3))
    assert.is_nil(schedule.next(assert(schedule.parse("0 0 31 2 *")), 0, UTC))
  end)

  local errors = {
    { "0 2 * *", "has 4 fields; cron needs 5" },
    { "0 25 * * *", "hour field: 25 is out of range 0-23" },
    { "61 * * * *", "minute field: 61 is out of range 0-59" },
    { "0 0 0 * *", "day of month field: 0 is out of range 1-31" },
    { "0 0 * 13 *", "month field: 13 is out of range 1-12" },
    { "0 0 * * 8", "day of week field: 8 is out of range 0-7" },
    { "0 0 * * funday", "day of week field: cannot read 'funday'" },
    { "5/10 * * * *", "a step needs a range or *, e.g. '5-59/10'" },
    { "*/0 * * * *", "step '0' must be a positive number" },
    { "0 5-2 * * *", "range '5-2' runs backwards" },
    { "0,,5 * * * *", "empty list item" },
    { "@reboot", "unknown cron macro '@reboot'" },
  }
  for _, c in ipairs(errors) do
    it("refuses '" .. c[1] .. "' naming the problem", function()
      local cron, err = schedule.parse(c[1])
      assert.is_nil(cron)
      assert.truthy(err:find(c[2], 1, true), err)
    end)
  end
end)


describe("schedule.next and schedule.prev", function()
  local exprs = { "0 2 * * *", "*/7 * * * *", "15 3,15 1,15 * mon", "0 0 */2 * mon", "30 4 * jan,jul 0",
    "0 */6 * * *", "59 23 31 12 *", "@weekly", "0 9-17/2 * * 1-5" }

  it("agree with a minute-by-minute walk", function()
    math.randomseed(7)
    for _, e in ipairs(exprs) do
      local cron = assert(schedule.parse(e))
      for _ = 1, 6 do
        local t = T("2026-01-01T00:00:00") + math.random(0, 400 * 86400) + math.random(0, 59)
        local want = brute_next(cron, t, UTC)
        assert.equal(want, schedule.next(cron, t, UTC), e .. " after " .. F(t))
      end
    end
  end)

  it("prev is the last run at or before t", function()
    math.randomseed(11)
    for _, e in ipairs(exprs) do
      local cron = assert(schedule.parse(e))
      for _ = 1, 20 do
        local t = T("2026-01-01T00:00:00") + math.random(0, 400 * 86400)
        local p = assert(schedule.prev(cron, t, UTC), e)
        assert.is_true(p <= t)
        assert.is_true(schedule.matches(cron, UTC:civil(p)))
        assert.is_true(schedule.next(cron, p, UTC) > t, e .. " at " .. F(t) .. ": prev " .. F(p))
        assert.equal(p, schedule.prev(cron, p, UTC))
      end
    end
  end)

  it("follows a fixed-offset time zone", function()
    local zone = assert(schedule.zone("+02:00"))
    local t = schedule.next(assert(schedule.parse("0 2 * * *")), T("2025-12-31T23:00:00Z"), zone)
    assert.equal("2026-01-01T00:00:00Z", F(t))
    assert.equal("2026-01-01T02:00:00+02:00", F(t, zone))
  end)

  it("works in the local time zone through os.date/os.time", function()
    local zone = assert(schedule.zone("local"))
    local t = schedule.next(assert(schedule.parse("30 4 * * *")), os.time(), zone)
    local c = os.date("*t", t)
    assert.equal(4, c.hour)
    assert.equal(30, c.min)
  end)

  it("refuses unknown time zones", function()
    local z, err = schedule.zone("Mars/Olympus")
    assert.is_nil(z)
    assert.truthy(err:find("unknown time zone 'Mars/Olympus'", 1, true))
  end)
end)


describe("schedule: calendar helpers", function()
  it("ISO weeks run Monday to Sunday, in ISO years", function()
    local function wk(s) return schedule.iso_week(UTC:civil(T(s))) end
    assert.equal(202653, wk("2026-12-31"))
    assert.equal(202653, wk("2027-01-03"))
    assert.equal(202701, wk("2027-01-04"))
    assert.equal(202053, wk("2021-01-03"))
    assert.equal(202501, wk("2024-12-30"))
  end)

  it("reads restic's durations and subtracts them on the calendar", function()
    local d = assert(schedule.parse_duration("1y2m3d3h"))
    assert.same({ 1, 2, 3, 3, "1y2m3d3h" }, { d.years, d.months, d.days, d.hours, d.text })
    assert.equal("2014-11-15T09:02:03Z", F(schedule.subtract(T("2016-01-18T12:02:03"), d, UTC)))
    -- Go's AddDate normalisation: March 31 minus one month is March 3 (February 31st)
    assert.equal("2026-03-03T00:00:00Z", F(schedule.subtract(T("2026-03-31T00:00:00"),
      assert(schedule.parse_duration("1m")), UTC)))
    assert.is_nil(schedule.parse_duration("1w"))
    assert.is_nil(schedule.parse_duration("0d"))
  end)

  it("reads times with a zone or as epoch seconds", function()
    assert.equal(1767225600, T("2026-01-01T00:00:00Z"))
    assert.equal(1767225600, T("2026-01-01 02:00:00+02:00"))
    assert.equal(1767225600, T("@1767225600"))
    assert.equal(1767225600, T("2026-01-01"))
    assert.is_nil(schedule.parse_time("yesterday", UTC))
  end)
end)
