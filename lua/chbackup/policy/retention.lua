--- Chain-aware retention: restic's `forget` rules applied to restore
-- points, then the rules that keep chains whole.
--
-- 1. `retention.restic` is restic's ApplyPolicy (internal/data/snapshot_policy.go):
--    keep last N, hourly/daily/weekly/monthly/yearly N (the newest backup of
--    each period that has one; "unlimited" = -1), within a duration of the
--    newest backup, within-X buckets; the oldest backup is kept while a
--    bucket still has count left. Reasons are restic's own words.
-- 2. `retention.apply` adds chbackup's rules and never breaks a chain:
--    every base of a kept backup is kept; the newest backup, the newest
--    verified backup, backups stamped in the future and pinned backups are
--    kept; what is left is deleted dependents first (pgBackRest's order),
--    at most `max_deletions` per run.
-- 3. With `rebase = true`, a backup kept for itself whose base is not
--    is planned to be rebased (made standalone, chbackup.rebase) instead of
--    keeping its base, so the base can go (pgBackRest's and
--    clickhouse-backup's way of ending a chain).
--
-- A point is {id=, time=epoch, base=id|nil, verified=bool, pinned=reason|nil}.
-- Pure: no files, no clock.
-- @module chbackup.policy.retention
local schedule = require("chbackup.policy.schedule")

local retention = {}

retention.COUNT_RULES = { "last", "hourly", "daily", "weekly", "monthly", "yearly" }
retention.WITHIN_RULES = { "within_hourly", "within_daily", "within_weekly", "within_monthly", "within_yearly" }

local REASON = {
  last = "last snapshot", hourly = "hourly snapshot", daily = "daily snapshot", weekly = "weekly snapshot",
  monthly = "monthly snapshot", yearly = "yearly snapshot",
  within_hourly = "hourly within", within_daily = "daily within", within_weekly = "weekly within",
  within_monthly = "monthly within", within_yearly = "yearly within",
}


-- The period key of a backup for a rule: f(civil, index).
local function bucker(rule)
  if rule == "last" then
    return function(_, nr) return nr end
  end
  local period = rule:gsub("^within_", "")
  return function(c)
    if period == "hourly" then
      return ((c.year * 100 + c.month) * 100 + c.day) * 100 + c.hour
    elseif period == "daily" then
      return (c.year * 100 + c.month) * 100 + c.day
    elseif period == "weekly" then
      return schedule.iso_week(c)
    elseif period == "monthly" then
      return c.year * 100 + c.month
    end
    return c.year
  end
end


--- Checks a retention table. Returns the normalised rules or nil, err
-- naming the field (prefix, e.g. "retention.daily").
function retention.check(t, prefix)
  prefix = prefix or "retention"
  if type(t) ~= "table" then
    return nil, prefix .. ": expected a table, got " .. type(t)
  end
  local r, any = {}, false
  for _, k in ipairs(retention.COUNT_RULES) do
    local v = t[k]
    if v ~= nil then
      if v == "unlimited" then
        v = -1
      elseif math.type(v) ~= "integer" or v < 0 then
        return nil, string.format("%s.%s: expected a count >= 0 or \"unlimited\", got %s", prefix, k,
          type(v) == "string" and ("'" .. v .. "'") or tostring(v))
      end
      r[k] = v
      any = any or v ~= 0
    end
  end
  for _, k in ipairs({ "within", table.unpack(retention.WITHIN_RULES) }) do
    if t[k] ~= nil then
      local d, err = schedule.parse_duration(t[k])
      if not d then
        return nil, prefix .. "." .. k .. ": " .. err
      end
      r[k] = d
      any = true
    end
  end
  if t.keep_if ~= nil then
    if type(t.keep_if) ~= "function" then
      return nil, prefix .. ".keep_if: expected a function(backup, now) returning a reason or nil, got "
        .. type(t.keep_if)
    end
    r.keep_if = t.keep_if
    any = true
  end
  if t.max_deletions ~= nil then
    if math.type(t.max_deletions) ~= "integer" or t.max_deletions < 0 then
      return nil, prefix .. ".max_deletions: expected a count >= 0, got " .. tostring(t.max_deletions)
    end
    r.max_deletions = t.max_deletions
  end
  if t.rebase ~= nil then
    if type(t.rebase) ~= "boolean" then
      return nil, prefix .. ".rebase: expected true or false, got " .. tostring(t.rebase)
    end
    r.rebase = t.rebase or nil
  end
  local known = { max_deletions = true, keep_if = true, within = true, rebase = true }
  for _, k in ipairs(retention.COUNT_RULES) do known[k] = true end
  for _, k in ipairs(retention.WITHIN_RULES) do known[k] = true end
  for k in pairs(t) do
    if not known[k] then
      local list = {}
      for name in pairs(known) do list[#list + 1] = name end
      table.sort(list)
      return nil, string.format("%s.%s: unknown field (known: %s)", prefix, tostring(k), table.concat(list, ", "))
    end
  end
  if not any then
    -- restic refuses an empty policy ("no policy was specified")
    return nil, prefix .. ": no keep rule (give last, hourly, daily, weekly, monthly, yearly, within, "
      .. "within_* or keep_if; leave retention out to keep every backup)"
  end
  return r
end


--- Describes rules the way restic prints its policy.
function retention.describe(r)
  local parts = {}
  for _, k in ipairs(retention.COUNT_RULES) do
    local v = r[k]
    if v and v > 0 then
      parts[#parts + 1] = v .. " " .. k
    elseif v == -1 then
      parts[#parts + 1] = "all " .. k
    end
  end
  for _, k in ipairs(retention.WITHIN_RULES) do
    if r[k] then
      parts[#parts + 1] = k:gsub("^within_", "") .. " within " .. r[k].text
    end
  end
  if r.within then
    parts[#parts + 1] = "all within " .. r.within.text .. " of the newest"
  end
  if r.keep_if then
    parts[#parts + 1] = "those keep_if names"
  end
  local rebasing = r.rebase and "; rebase a kept incremental whose base expires" or ""
  if #parts == 0 then
    return "keep everything" .. rebasing
  end
  return "keep " .. table.concat(parts, ", ") .. rebasing
end


-- Newest first; equal times keep their input order (restic sorts stably).
local function sorted(points)
  local list, in_order = {}, true
  for i, p in ipairs(points) do
    list[i] = p
    if i > 1 and p.time > points[i - 1].time then
      in_order = false
    end
  end
  if in_order then
    return list
  end
  for i, p in ipairs(points) do
    list[i] = { p = p, i = i }
  end
  table.sort(list, function(a, b)
    if a.p.time ~= b.p.time then
      return a.p.time > b.p.time
    end
    return a.i < b.i
  end)
  for i, e in ipairs(list) do
    list[i] = e.p
  end
  return list
end


--- restic's ApplyPolicy. Returns keep (list, newest first), remove (list),
-- reasons ({[point] = {matches...}}) and counters ({[point] = {rule = left}}).
function retention.restic(points, r, now, zone)
  zone = zone or schedule.zone("UTC")
  local list = sorted(points)
  local keep, remove, reasons, counters = {}, {}, {}, {}
  if #list == 0 then
    return keep, remove, reasons, counters
  end
  local latest
  for _, p in ipairs(list) do
    if p.time < now and (not latest or p.time > latest) then
      latest = p.time
    end
  end
  local function cutoff(d)
    if not latest then
      return -math.huge
    end
    return schedule.subtract(latest, d, zone)
  end
  local buckets = {}
  for _, k in ipairs(retention.COUNT_RULES) do
    if r[k] and r[k] ~= 0 then
      buckets[#buckets + 1] = { rule = k, count = r[k], last = nil, f = bucker(k) }
    end
  end
  local within = {}
  for _, k in ipairs(retention.WITHIN_RULES) do
    if r[k] then
      within[#within + 1] = { rule = k, d = r[k], cut = cutoff(r[k]), last = nil, f = bucker(k) }
    end
  end
  local within_cut = r.within and cutoff(r.within)
  local n = #list
  for nr, p in ipairs(list) do
    local matches = {}
    local oldest = nr == n
    local c = zone:civil(p.time)
    if within_cut and p.time > within_cut then
      matches[#matches + 1] = "within " .. r.within.text
    end
    for _, b in ipairs(buckets) do
      if b.count > 0 or b.count == -1 then
        local v = b.f(c, nr)
        if v ~= b.last or oldest then
          local reason = REASON[b.rule]
          if v == b.last then
            reason = "oldest " .. reason
          end
          b.last = v
          if b.count > 0 then
            b.count = b.count - 1
          end
          matches[#matches + 1] = reason
        end
      end
    end
    for _, b in ipairs(within) do
      if p.time > b.cut then
        local v = b.f(c, nr)
        if v ~= b.last or oldest then
          local reason = REASON[b.rule]
          if v == b.last then
            reason = "oldest " .. reason
          end
          b.last = v
          matches[#matches + 1] = reason .. " " .. b.d.text
        end
      end
    end
    if #matches > 0 then
      keep[#keep + 1] = p
      reasons[p] = matches
      local left = {}
      for _, b in ipairs(buckets) do
        left[b.rule] = b.count
      end
      counters[p] = left
    else
      remove[#remove + 1] = p
    end
  end
  return keep, remove, reasons, counters
end


--- Applies rules r to points at time now (zone for calendar periods).
-- Returns {
--   keep = {[id] = {reason, ...}},   every kept point with why
--   kept = {point...},               newest first
--   remove = {point...},             in deletion order (dependents newest first)
--   deferred = {point...},           beyond max_deletions, left for a later run
--   by_rule = {[id] = true},         kept by the rules themselves (before chains)
--   rebase = {point...},             with r.rebase: kept points to make standalone
--                                    (oldest first) so that their bases can go
--   rebase_of = {[id] = base id},    the base each of them stops relying on
-- }. r = nil keeps everything. A point with rebase_failed set is not
-- planned for a rebase again (its bases are kept). Raises if keep_if raises.
function retention.apply(points, r, now, zone)
  zone = zone or schedule.zone("UTC")
  local list = sorted(points)
  local by_id = {}
  for _, p in ipairs(list) do
    by_id[p.id] = p
  end
  local keep, by_rule = {}, {}
  local function add(p, reason)
    local rs = keep[p.id]
    if not rs then
      rs = {}
      keep[p.id] = rs
    end
    for _, x in ipairs(rs) do
      if x == reason then
        return
      end
    end
    rs[#rs + 1] = reason
  end
  if not r then
    for _, p in ipairs(list) do
      add(p, "no retention rules")
      by_rule[p.id] = true
    end
  else
    local kept, _, reasons = retention.restic(list, r, now, zone)
    for _, p in ipairs(kept) do
      for _, reason in ipairs(reasons[p]) do
        add(p, reason)
      end
      by_rule[p.id] = true
    end
    if r.keep_if then
      for _, p in ipairs(list) do
        local why = r.keep_if(p, now)
        if why then
          add(p, "keep_if: " .. (type(why) == "string" and why or "true"))
          by_rule[p.id] = true
        end
      end
    end
  end
  -- chbackup's rules, on top of any policy.
  for _, p in ipairs(list) do
    if p.time <= now then
      add(p, "newest backup")
      break
    end
  end
  for _, p in ipairs(list) do
    if p.verified then
      add(p, "newest verified backup")
      break
    end
  end
  for _, p in ipairs(list) do
    if p.time > now then
      add(p, "in the future")
    end
    if p.pinned then
      add(p, p.pinned)
    end
  end
  -- With rebase: a point kept for itself whose base is not, and whose
  -- whole chain is here to be read, is made standalone instead.
  local function whole(p)
    local cur, seen = p, {}
    while cur.base do
      if seen[cur.base] or not by_id[cur.base] then
        return false
      end
      seen[cur.base] = true
      cur = by_id[cur.base]
    end
    return true
  end
  local rebase_of, to_rebase = {}, {}
  if r and r.rebase then
    for i = #list, 1, -1 do
      local p = list[i]
      if keep[p.id] and p.base and by_id[p.base] and not keep[p.base] and not p.rebase_failed
          and p.chain_ok ~= false and not p.chain_error and whole(p) then
        rebase_of[p.id] = p.base
        to_rebase[#to_rebase + 1] = p
      end
    end
  end
  -- Every base of a kept point is kept (each chain walked once), up to a
  -- point to be rebased.
  local walked = {}
  for _, p in ipairs(list) do
    if keep[p.id] and not walked[p.id] then
      walked[p.id] = true
      local cur = p
      while cur.base and by_id[cur.base] and not rebase_of[cur.id] do
        local base = by_id[cur.base]
        add(base, "base of " .. cur.id)
        if walked[base.id] then
          break
        end
        walked[base.id] = true
        cur = base
      end
    end
  end
  local kept, rest = {}, {}
  for _, p in ipairs(list) do
    if keep[p.id] then
      kept[#kept + 1] = p
    else
      rest[#rest + 1] = p
    end
  end
  -- Deletion order: chains whose root is oldest first; inside a chain,
  -- newest first, so a base always goes after everything built on it.
  local function root(p)
    local cur, seen = p, {}
    while cur.base and by_id[cur.base] and not seen[cur.base] do
      seen[cur.base] = true
      cur = by_id[cur.base]
    end
    return cur
  end
  local roots = {}
  for _, p in ipairs(rest) do
    roots[p] = root(p)
  end
  table.sort(rest, function(a, b)
    local ra, rb = roots[a], roots[b]
    if ra ~= rb then
      if ra.time ~= rb.time then
        return ra.time < rb.time
      end
      return ra.id < rb.id
    end
    if a.time ~= b.time then
      return a.time > b.time
    end
    return a.id > b.id
  end)
  local remove, deferred = rest, {}
  if r and r.max_deletions and #rest > r.max_deletions then
    remove, deferred = {}, {}
    for i, p in ipairs(rest) do
      if i <= r.max_deletions then
        remove[#remove + 1] = p
      else
        deferred[#deferred + 1] = p
      end
    end
  end
  return { keep = keep, kept = kept, remove = remove, deferred = deferred, by_rule = by_rule, rebase = to_rebase,
    rebase_of = rebase_of }
end


return retention
