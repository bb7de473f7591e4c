--- Time for policies: civil calendars in a time zone, cron expressions
-- (Vixie cron's five fields), restic-style durations.
--
-- Everything takes and returns epoch seconds; nothing reads the clock.
--
--   local schedule = require("chbackup.policy.schedule")
--   local zone = assert(schedule.zone("UTC"))          -- or "+02:00", "local"
--   local cron = assert(schedule.parse("0 2 * * *"))
--   local t = schedule.next(cron, now, zone)             -- first run after now
--   local p = schedule.prev(cron, now, zone)             -- last run at or before now
-- @module chbackup.policy.schedule
local schedule = {}

-- Civil calendar ------------------------------------------------------------

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
-- days_from_civil). The month may be out of 1..12 and the day out of the
-- month: both are normalised the way Go's time.Date and C's mktime do.
local function days_from_civil(y, m, d)
  y = y + (m - 1) // 12
  m = (m - 1) % 12 + 1
  local yy = m <= 2 and y - 1 or y
  local era = yy // 400
  local yoe = yy - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468 + (d - 1)
end
schedule.days_from_civil = days_from_civil


local function civil_from_days(z)
  z = z + 719468
  local era = z // 146097
  local doe = z - era * 146097
  local yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
  local mp = (5 * doy + 2) // 153
  local d = doy - (153 * mp + 2) // 5 + 1
  local m = mp < 10 and mp + 3 or mp - 9
  return m <= 2 and y + 1 or y, m, d
end
schedule.civil_from_days = civil_from_days


-- A zone turns epoch seconds into civil fields and back.
--   zone:civil(t) -> {year, month, day, hour, min, sec, wday (0 = Sunday)}
--   zone:epoch{year=, month=, day=, hour=, min=, sec=} (fields may overflow)
local FixedZone = {}
FixedZone.__index = FixedZone

function FixedZone:civil(t)
  local s = math.floor(t) + self.offset
  local days = s // 86400
  local rem = s - days * 86400
  local y, m, d = civil_from_days(days)
  return {
    year = y, month = m, day = d, hour = rem // 3600, min = rem % 3600 // 60, sec = rem % 60,
    wday = (days + 4) % 7, frac = t - math.floor(t),
  }
end

function FixedZone:epoch(c)
  local days = days_from_civil(c.year, c.month, c.day)
  return days * 86400 + (c.hour or 0) * 3600 + (c.min or 0) * 60 + (c.sec or 0) - self.offset
end


local LocalZone = { name = "local" }
LocalZone.__index = LocalZone

function LocalZone.civil(_, t)
  local f = math.floor(t)
  local c = os.date("*t", f)
  return {
    year = c.year, month = c.month, day = c.day, hour = c.hour, min = c.min, sec = c.sec,
    wday = c.wday - 1, frac = t - f,
  }
end

function LocalZone.epoch(_, c)
  -- os.time normalises overflowing fields; the days are added separately
  -- so that any day count works.
  local base = os.time({ year = c.year, month = c.month, day = 1, hour = 12 })
  local shift = days_from_civil(c.year, c.month, c.day) - days_from_civil(c.year, c.month, 1)
  local d = os.date("*t", base + shift * 86400)
  return os.time({ year = d.year, month = d.month, day = d.day, hour = c.hour or 0,
    min = c.min or 0, sec = c.sec or 0 })
end


--- A time zone: "UTC" (also "Z"), a fixed offset "+HH:MM" / "-HH:MM", or
-- "local" (the process's TZ, through os.date/os.time). Returns zone or nil, err.
function schedule.zone(name)
  if name == nil or name == "UTC" or name == "Z" or name == "utc" then
    return setmetatable({ name = "UTC", offset = 0 }, FixedZone)
  end
  if name == "local" then
    return setmetatable({}, LocalZone)
  end
  if type(name) ~= "string" then
    return nil, "expected a time zone name, got " .. type(name)
  end
  local sign, hh, mm = name:match("^([+-])(%d%d):?(%d%d)$")
  if sign and tonumber(hh) <= 14 and tonumber(mm) < 60 then
    local off = tonumber(hh) * 3600 + tonumber(mm) * 60
    return setmetatable({ name = name, offset = sign == "-" and -off or off }, FixedZone)
  end
  return nil, "unknown time zone '" .. name .. "' (use \"UTC\", \"local\" or an offset like \"+02:00\")"
end


--- ISO 8601 week of a civil date: year*100 + week (weeks run Monday to Sunday).
function schedule.iso_week(c)
  local dn = days_from_civil(c.year, c.month, c.day)
  local monday_based = (dn + 3) % 7 -- 0 = Monday (1970-01-01 was a Thursday)
  local thursday = dn - monday_based + 3
  local y = civil_from_days(thursday)
  local week = (thursday - days_from_civil(y, 1, 1)) // 7 + 1
  return y * 100 + week
end


--- Formats t as "YYYY-MM-DDTHH:MM:SS" in zone, with "Z" for UTC.
function schedule.format(t, zone)
  local c = zone:civil(t)
  local suffix = zone.offset == 0 and "Z" or (zone.name == "local" and "" or zone.name)
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d%s", c.year, c.month, c.day, c.hour, c.min, c.sec, suffix)
end


--- Parses "YYYY-MM-DD[ T]HH:MM[:SS]" (in zone) or epoch seconds ("@N" or N).
function schedule.parse_time(s, zone)
  if type(s) == "number" then
    return s
  end
  if type(s) ~= "string" then
    return nil, "expected a time, got " .. type(s)
  end
  local n = s:match("^@?(%d+)$")
  if n then
    return tonumber(n)
  end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then
    return nil, "cannot read time '" .. s .. "' (expected YYYY-MM-DDTHH:MM:SS or epoch seconds)"
  end
  local h, mi, sec, tz = 0, 0, 0, ""
  if rest ~= "" then
    local a, b, c, z = rest:match("^[T ](%d%d):(%d%d):?(%d*)(.*)$")
    if not a then
      return nil, "cannot read time '" .. s .. "' (expected YYYY-MM-DDTHH:MM:SS or epoch seconds)"
    end
    h, mi, sec, tz = tonumber(a), tonumber(b), tonumber(c) or 0, z
  end
  if tz ~= "" then
    local err
    zone, err = schedule.zone(tz)
    if not zone then
      return nil, "cannot read time '" .. s .. "': " .. err
    end
  end
  return zone:epoch({ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = h, min = mi, sec = sec })
end


-- Durations (restic's NyNmNdNh) -------------------------------------------

--- Parses a duration like restic's --keep-within: "1y2m3d4h" (years,
-- months, days, hours; at least one). Returns {years=, months=, days=,
-- hours=, text=} or nil, err.
function schedule.parse_duration(s)
  if type(s) ~= "string" or s == "" then
    return nil, "expected a duration like \"7d\" or \"1y2m3d4h\""
  end
  local d = { years = 0, months = 0, days = 0, hours = 0 }
  local key = { y = "years", m = "months", d = "days", h = "hours" }
  local rest = s:gsub("(%d+)([ymdh])", function(n, unit)
    d[key[unit]] = d[key[unit]] + tonumber(n)
    return ""
  end)
  if rest ~= "" then
    return nil, "cannot read duration '" .. s .. "' (use NyNmNdNh: years, months, days, hours, e.g. \"7d\" or \"1y6m\")"
  end
  local parts = {}
  for _, u in ipairs({ "y", "m", "d", "h" }) do
    if d[key[u]] > 0 then
      parts[#parts + 1] = d[key[u]] .. u
    end
  end
  if #parts == 0 then
    return nil, "duration '" .. s .. "' is zero"
  end
  d.text = table.concat(parts)
  return d
end


--- t minus a duration: years, months and days on the calendar (normalised
-- like Go's AddDate), then hours.
function schedule.subtract(t, d, zone)
  local c = zone:civil(t)
  c.year, c.month, c.day = c.year - d.years, c.month - d.months, c.day - d.days
  return zone:epoch(c) + (t - math.floor(t)) - d.hours * 3600
end


-- Cron ------------------------------------------------------------------

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10,
  nov = 11, dec = 12 }
local DAYS = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }

local FIELDS = {
  { name = "minute", min = 0, max = 59 },
  { name = "hour", min = 0, max = 23 },
  { name = "day of month", min = 1, max = 31 },
  { name = "month", min = 1, max = 12, names = MONTHS },
  { name = "day of week", min = 0, max = 7, names = DAYS },
}

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
  ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}


local function parse_value(s, f)
  if s:match("^%d+$") then
    return tonumber(s)
  end
  local v = f.names and f.names[s:lower()]
  if v then
    return v
  end
  return nil
end


-- One field: a list of items; an item is *, N, A-B, with /STEP after * or A-B.
local function parse_field(text, f)
  local set = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    if item == "" then
      return nil, string.format("%s field '%s' has an empty list item", f.name, text)
    end
    local range, step = item:match("^([^/]+)/(.*)$")
    range = range or item
    local lo, hi
    if range == "*" then
      lo, hi = f.min, f.max
    else
      local a, b = range:match("^([^-]+)%-(.+)$")
      if a then
        lo, hi = parse_value(a, f), parse_value(b, f)
        if not lo or not hi then
          return nil, string.format("%s field: cannot read '%s'", f.name, item)
        end
      else
        lo = parse_value(range, f)
        if not lo then
          return nil, string.format("%s field: cannot read '%s'", f.name, item)
        end
        if step then
          return nil, string.format("%s field: '%s': a step needs a range or *, e.g. '%s-%d/%s'",
            f.name, item, range, f.max, step)
        end
        hi = lo
      end
    end
    for _, v in ipairs({ lo, hi }) do
      if v < f.min or v > f.max then
        return nil, string.format("%s field: %d is out of range %d-%d", f.name, v, f.min, f.max)
      end
    end
    if lo > hi then
      return nil, string.format("%s field: range '%s' runs backwards", f.name, range)
    end
    local n = 1
    if step then
      n = tonumber(step:match("^%d+$") or "")
      if not n or n == 0 then
        return nil, string.format("%s field: step '%s' must be a positive number", f.name, step)
      end
    end
    for v = lo, hi, n do
      set[v] = true
    end
  end
  return set
end


--- Parses a cron expression: five fields (minute hour day-of-month month
-- day-of-week) with *, lists, ranges, steps and names (jan, mon), or
-- @yearly/@annually/@monthly/@weekly/@daily/@midnight/@hourly.
-- As in Vixie cron, when both day fields are restricted (neither starts
-- with *) a day matches if either matches; otherwise both must.
-- Returns a cron table or nil, err.
function schedule.parse(text)
  if type(text) ~= "string" then
    return nil, "expected a cron expression (a string like \"0 2 * * *\"), got " .. type(text)
  end
  local expr = text:match("^%s*(.-)%s*$")
  if expr:sub(1, 1) == "@" then
    local m = MACROS[expr:lower()]
    if not m then
      return nil, "unknown cron macro '" .. expr .. "' (known: @yearly, @annually, @monthly, @weekly, "
        .. "@daily, @midnight, @hourly)"
    end
    expr = m
  end
  local words = {}
  for w in expr:gmatch("%S+") do
    words[#words + 1] = w
  end
  if #words ~= 5 then
    return nil, string.format("'%s' has %d fields; cron needs 5 (minute hour day-of-month month day-of-week)",
      text, #words)
  end
  local cron = { text = text }
  local keys = { "minute", "hour", "dom", "month", "dow" }
  for i, f in ipairs(FIELDS) do
    local set, err = parse_field(words[i], f)
    if not set then
      return nil, "'" .. text .. "': " .. err
    end
    cron[keys[i]] = set
  end
  if cron.dow[7] then
    cron.dow[0] = true
  end
  cron.dom_star = words[3]:sub(1, 1) == "*"
  cron.dow_star = words[5]:sub(1, 1) == "*"
  return cron
end


local function day_matches(cron, c)
  local dom, dow = cron.dom[c.day] or false, cron.dow[c.wday] or false
  if cron.dom_star or cron.dow_star then
    return dom and dow
  end
  return dom or dow
end


--- Whether cron fires at civil time c (minute resolution).
function schedule.matches(cron, c)
  return cron.month[c.month] and day_matches(cron, c) and cron.hour[c.hour] and cron.minute[c.min] or false
end


local SEARCH_YEARS = 30


-- The smallest member of set in [from, to], or nil.
local function first_in(set, from, to)
  for v = from, to do
    if set[v] then
      return v
    end
  end
end


-- The largest member of set in [from, to], or nil.
local function last_in(set, from, to)
  for v = to, from, -1 do
    if set[v] then
      return v
    end
  end
end


--- The first time after t (strictly) at which cron fires, or nil if it
-- never does in the next 30 years.
function schedule.next(cron, t, zone)
  local c = zone:civil(math.floor(t) - math.floor(t) % 60 + 60)
  c.sec = 0
  local limit = c.year + SEARCH_YEARS
  while c.year <= limit do
    if not cron.month[c.month] then
      c.month, c.day, c.hour, c.min = c.month + 1, 1, 0, 0
      c = zone:civil(zone:epoch(c))
    elseif not day_matches(cron, c) then
      c.day, c.hour, c.min = c.day + 1, 0, 0
      c = zone:civil(zone:epoch(c))
    else
      local h = first_in(cron.hour, c.hour, 23)
      local m = h and first_in(cron.minute, h == c.hour and c.min or 0, 59)
      if not m and h then
        h = first_in(cron.hour, h + 1, 23)
        m = h and first_in(cron.minute, 0, 59)
      end
      if m then
        c.hour, c.min = h, m
        return zone:epoch(c)
      end
      c.day, c.hour, c.min = c.day + 1, 0, 0
      c = zone:civil(zone:epoch(c))
    end
  end
  return nil
end


--- The last time at or before t at which cron fires, or nil if it did not
-- in the 30 years before t.
function schedule.prev(cron, t, zone)
  local c = zone:civil(math.floor(t))
  c.sec = 0
  local limit = c.year - SEARCH_YEARS
  while c.year >= limit do
    if not cron.month[c.month] then
      c.day, c.hour, c.min = 1, 0, 0
    elseif day_matches(cron, c) then
      local h = last_in(cron.hour, 0, c.hour)
      local m = h and last_in(cron.minute, 0, h == c.hour and c.min or 59)
      if not m and h then
        h = last_in(cron.hour, 0, h - 1)
        m = h and last_in(cron.minute, 0, 59)
      end
      if m then
        c.hour, c.min = h, m
        return zone:epoch(c)
      end
    end
    -- the last minute of the previous day
    c.hour, c.min = 0, 0
    c = zone:civil(zone:epoch(c) - 60)
    c.sec = 0
  end
  return nil
end


--- The next n run times after t.
function schedule.upcoming(cron, t, zone, n)
  local out = {}
  for _ = 1, n do
    t = schedule.next(cron, t, zone)
    if not t then
      break
    end
    out[#out + 1] = t
  end
  return out
end


return schedule
