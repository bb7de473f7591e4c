--- Running a policy: what is due (plan), doing it once (run), a restore
-- drill (verify) and a long-running scheduler (watch). Every decision is
-- logged with its reason; nothing reads the clock but watch's env.clock.
--
-- A run: (1) finish deletions an earlier run left half done; (2) make the
-- backup that is due, if any (a full when schedule.full fired since the
-- newest full, or when there is no full; else an incremental on the newest
-- backup when schedule.incremental fired since the newest backup); (3)
-- verify when schedule.verify fired since the last verification; (4) apply
-- retention (skipped when the backup failed). Missed runs are caught up
-- once, as systemd's Persistent=true and anacron do.
-- @module chbackup.policy.runner
local lfs = require("lfs")
local catalog = require("chbackup.catalog")
local chain = require("chbackup.chain")
local config = require("chbackup.config")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local jobs = require("chbackup.runner")
local lock = require("chbackup.lock")
local sql = require("chbackup.sql")
local counter = require("chbackup.policy.counter")
local leftovers = require("chbackup.policy.leftovers")
local retention = require("chbackup.policy.retention")
local s3lock = require("chbackup.policy.s3lock")
local schedule = require("chbackup.policy.schedule")
local selection = require("chbackup.policy.selection")
local store_mod = require("chbackup.policy.store")
local verify_mod = require("chbackup.policy.verify")

local runner = {}

local DEFAULT_PATH = "/var/lib/clickhouse"


-- Context ----------------------------------------------------------------

local function new_ctx(pol, now, env)
  env = env or {}
  local ctx = { pol = pol, now = now, env = env, records = {}, zone = pol.zone, errors = {} }
  function ctx.log(event, backup, reason, level)
    local rec = { time = now, policy = pol.name, event = event, backup = backup, reason = reason,
      level = level or "info" }
    ctx.records[#ctx.records + 1] = rec
    if env.log then
      env.log(rec)
    end
    return rec
  end
  function ctx.fail(event, backup, reason)
    ctx.errors[#ctx.errors + 1] = (backup and (backup .. ": ") or "") .. reason
    return ctx.log(event, backup, reason, "error")
  end
  ctx.time = function(t)
    return t and schedule.format(t, pol.zone) or "never"
  end
  return ctx
end


-- Opens the ClickHouse config and the store (unless env gives a store).
local function open_store(ctx)
  local pol, env = ctx.pol, ctx.env
  ctx.source_path = env.path or pol.source.path or DEFAULT_PATH
  if env.store then
    ctx.store = env.store
    ctx.cfg = env.cfg
    return true
  end
  local cfg_spec = env.config or pol.source.config or config.default_path
  local cfg, err
  if type(cfg_spec) == "table" and cfg_spec.disks and cfg_spec.allowed_disks then
    cfg = cfg_spec
  elseif type(cfg_spec) == "table" then
    cfg, err = config.from_table(cfg_spec)
  else
    cfg, err = config.load(cfg_spec)
  end
  if not cfg then
    return nil, "source.config: " .. tostring(err)
  end
  ctx.cfg = cfg
  local st
  st, err = store_mod.open(pol, cfg)
  if not st then
    return nil, err
  end
  ctx.store = st
  return true
end


local function instance(ctx)
  if not ctx.instance then
    local chbackup = require("chbackup")
    local inst, err = chbackup.open({ path = ctx.source_path, config = ctx.cfg,
      status_dir = ctx.env.status_dir or ctx.pol.source.status_dir, threads = tonumber(ctx.env.threads),
      status_keep = ctx.env.status_keep, status_days = ctx.env.status_days })
    if not inst then
      return nil, err
    end
    ctx.instance = inst
  end
  return ctx.instance
end


-- Hooks: a raise fails the step; `false[, why]` skips it.
local function hook(ctx, name, info)
  local f = ctx.pol.hooks[name]
  if not f then
    return true
  end
  info.policy, info.now, info.step = ctx.pol.name, ctx.now, name
  info.log = function(msg)
    ctx.log("hook", info.name, name .. ": " .. tostring(msg))
  end
  local ok, res, why = pcall(f, info)
  if not ok then
    return nil, "hook " .. name .. " failed: " .. tostring(res)
  end
  if res == false then
    return false, "hook " .. name .. " said no" .. (why and (": " .. tostring(why)) or "")
  end
  return true
end


local function on_error(ctx, step, name, err)
  if ctx.pol.hooks.on_error then
    hook(ctx, "on_error", { name = name, failed_step = step, error = err })
  end
end


-- Locking: one run of a policy at a time, per destination (on S3 a lock
-- object with a heartbeat, acquire_s3): an flock(2) on
-- `<root>/.chbackup-policy-<name>.lock` (chbackup.lock), released by the
-- kernel if the run is killed. (Older versions made the lock a directory
-- with the owner's pid: one whose process is gone is taken over.)
local function lock_path(ctx)
  local st = ctx.store
  if not st.root then
    return nil
  end
  return st.root .. "/.chbackup-policy-" .. ctx.pol.name .. ".lock"
end


-- On S3 (no flock): a lock object with a heartbeat (chbackup.policy.s3lock),
-- refreshed from the job poll loop while a BACKUP or RESTORE runs and
-- between steps (still_locked).
local function acquire_s3(ctx, what)
  local st = ctx.store
  local lk, err = s3lock.take(st.client, st.s3root, ctx.pol.name, { what = what, clock = ctx.env.lock_clock,
    log = function(msg) ctx.log("lock", nil, msg, "warn") end })
  if not lk then
    return nil, err
  end
  ctx.s3lock = lk
  ctx.previous_observer = jobs.observe(nil)
  local previous = ctx.previous_observer
  jobs.observe(function(event, p)
    if previous then
      previous(event, p)
    end
    lk:refresh()
  end)
  return true
end


local function acquire(ctx, what)
  if ctx.env.lock == false then
    return true
  elseif ctx.store.s3root then
    return acquire_s3(ctx, what)
  end
  local path = lock_path(ctx)
  if not path then
    return true
  end
  if not fsutil.is_dir(ctx.store.root) then
    local ok, err = fsutil.mkdir_p(ctx.store.root)
    if not ok then
      return nil, err
    end
  end
  if lfs.symlinkattributes(path, "mode") == "directory" then
    local owner = fsutil.read_file(path .. "/owner") or ""
    local pid = tonumber(owner:match("^(%d+)"))
    if pid and fsutil.exists("/proc/" .. pid) and pid ~= core.getpid() then
      return nil, string.format("another run of policy %s is in progress (pid %d, lock %s)", ctx.pol.name, pid, path)
    end
    fsutil.remove_tree(path)
  end
  local lk, err = lock.take(path, "policy " .. ctx.pol.name .. " " .. what, function(holder)
    return string.format("another run of policy %s is in progress (%s, lock %s)", ctx.pol.name, holder, path)
  end)
  if not lk then
    return nil, err
  end
  ctx.lock = lk
  return true
end


local function release(ctx)
  if ctx.lock then
    ctx.lock:release(true)
    ctx.lock = nil
  end
  if ctx.s3lock then
    jobs.observe(ctx.previous_observer)
    ctx.s3lock:release()
    ctx.s3lock = nil
  end
end


-- Whether this run still holds its lock (on S3 a lock can be taken over
-- from a run that stopped refreshing it): checked before each step that
-- writes or deletes. Returns true, or nil after failing the run's step.
local function still_locked(ctx, step, name)
  local lk = ctx.s3lock
  if not lk then
    return true
  end
  local ok, err = lk:refresh()
  if not ok then
    ctx.fail(step, name, err .. "; stopping")
    return nil
  end
  return true
end


-- Decisions ----------------------------------------------------------------

local function chain_length(p, by_id)
  local n, cur, seen = 1, p, {}
  while cur.base and by_id[cur.base] and not seen[cur.base] do
    seen[cur.base] = true
    cur = by_id[cur.base]
    n = n + 1
  end
  return n
end


--- What backup is due at now, given the policy's points (newest first).
-- Returns {kind = "full"|"incr"|nil, base = point|nil, reason = text}.
function runner.decide(pol, points, now)
  local zone = pol.zone
  local fmt = function(t) return schedule.format(t, zone) end
  local s = pol.schedule
  local newest, newest_full
  local by_id = {}
  for _, p in ipairs(points) do
    by_id[p.id] = p
    if p.time <= now then
      newest = newest or p
      if p.kind == "full" or (p.rebased and not p.base) then   -- a rebased backup is standalone
        newest_full = newest_full or p
      end
    end
  end
  if not newest_full then
    return { kind = "full", reason = "no full backup of policy " .. pol.name .. " yet" }
  end
  local fired = schedule.prev(s.full, now, zone)
  if fired and newest_full.time < fired then
    return { kind = "full", fired = fired, reason = string.format(
      "schedule.full ('%s') fired at %s; the newest full, %s, is from %s",
      s.full.text, fmt(fired), newest_full.name, fmt(newest_full.time)) }
  end
  if s.incremental then
    local ifired = schedule.prev(s.incremental, now, zone)
    if ifired and newest.time < ifired then
      local why = string.format("schedule.incremental ('%s') fired at %s; the newest backup, %s, is from %s",
        s.incremental.text, fmt(ifired), newest.name, fmt(newest.time))
      if not newest.chain_ok then
        return { kind = "full", fired = ifired, reason = why .. ", but its chain is broken (" ..
          tostring(newest.chain_problem) .. "): a full instead" }
      end
      if s.max_chain and chain_length(newest, by_id) + 1 > s.max_chain then
        return { kind = "full", fired = ifired, reason = string.format(
          "%s, but its chain has %d backups and schedule.max_chain is %d: a full instead",
          why, chain_length(newest, by_id), s.max_chain) }
      end
      return { kind = "incr", base = newest, fired = ifired, reason = why .. ": an incremental on it" }
    end
  end
  local parts = { "nothing due: the newest full, " .. newest_full.name .. ", is from " .. fmt(newest_full.time) }
  parts[#parts + 1] = "the next full is at " .. fmt(schedule.next(s.full, now, zone))
  if s.incremental then
    parts[#parts + 1] = "the next incremental at " .. fmt(schedule.next(s.incremental, now, zone))
  end
  return { reason = table.concat(parts, "; ") }
end


local function newest_verification(points)
  local last
  for _, p in ipairs(points) do
    if p.verified_at and (not last or p.verified_at > last) then
      last = p.verified_at
    end
  end
  return last
end


--- Whether schedule.verify fired since the last verification.
function runner.verify_due(pol, points, now)
  local cron = pol.schedule.verify
  if not cron then
    return false, "no schedule.verify"
  end
  local fired = schedule.prev(cron, now, pol.zone)
  local last = newest_verification(points)
  if fired and (not last or last < fired) then
    return true, string.format("schedule.verify ('%s') fired at %s; %s", cron.text,
      schedule.format(fired, pol.zone), last and ("the last verification was at " .. schedule.format(last, pol.zone))
      or "there was no verification yet")
  end
  return false, "the next verification is at " .. schedule.format(schedule.next(cron, now, pol.zone), pol.zone)
end


-- Retention over a listing. Points are pinned by backups outside the policy
-- that rely on them and by this run's vetoes (ctx.vetoed); points whose
-- rebase failed this run keep their bases (ctx.rebase_failed); once the
-- rebase step has run (ctx.rebased), nothing more is planned for a rebase.
-- Returns the retention.apply result or nil, err.
local function plan_retention(ctx, listing)
  local points = listing.points
  local foreign = ctx.store:foreign_dependents(points)
  local vetoed, failed = ctx.vetoed or {}, ctx.rebase_failed or {}
  for _, p in ipairs(points) do
    p.pinned = foreign[p.id] and ("base of " .. foreign[p.id] .. ", a backup outside this policy")
      or (vetoed[p.id] and "kept by hooks.before_delete") or nil
    p.rebase_failed = failed[p.id]
  end
  local rules = ctx.pol.retention
  if ctx.rebased and rules and rules.rebase then
    rules = setmetatable({ rebase = false }, { __index = rules })
  end
  local ok, res = pcall(retention.apply, points, rules, ctx.now, ctx.pol.zone)
  if not ok then
    return nil, "retention.keep_if failed: " .. tostring(res)
  end
  return res
end


-- The backups that can go once p is rebased: its base and the bases below
-- that nothing keeps. Returns {[id] = true}.
local function freed_by(res, p, by_id)
  local freed, id = {}, res.rebase_of[p.id]
  while id and by_id[id] and not res.keep[id] do
    freed[id] = true
    id = by_id[id].base
  end
  return freed
end


local function log_retention(ctx, res, verb, points)
  local r = ctx.pol.retention
  ctx.log("retention", nil, r and retention.describe(r) or "no retention rules: every backup is kept")
  for _, p in ipairs(res.kept) do
    ctx.log("keep", p.name, table.concat(res.keep[p.id], ", "))
  end
  local by_id, why_free = {}, {}
  for _, p in ipairs(points) do
    by_id[p.id] = p
  end
  for _, p in ipairs(res.rebase) do
    local base = by_id[res.rebase_of[p.id]]
    ctx.log(verb == "delete" and "rebase" or "would-rebase", p.name, string.format(
      "kept, and its base %s is not: made standalone first, so that %s can be deleted", base.name, base.name))
    for id in pairs(freed_by(res, p, by_id)) do
      why_free[id] = p.name
    end
  end
  for _, p in ipairs(res.remove) do
    ctx.log(verb, p.name, why_free[p.id] and ("no rule keeps it; " .. why_free[p.id] .. " is rebased first, so "
      .. "no kept backup depends on it") or "no rule keeps it and no kept backup depends on it")
  end
  for _, p in ipairs(res.deferred) do
    ctx.log("defer", p.name, string.format("retention.max_deletions (%d) reached; a later run deletes it",
      r.max_deletions))
  end
end


-- Backups ----------------------------------------------------------------

local password = store_mod.password


-- The BACKUP statement: real and as shown (password masked).
local function statement(ctx, dest_sql, base_sql)
  local pol = ctx.pol
  local cat, err = catalog.open(ctx.source_path)
  if not cat then
    return nil, err
  end
  local sel
  sel, err = selection.expand(pol.selection, cat)
  if not sel then
    return nil, err
  end
  for _, note in ipairs(sel.notes) do
    ctx.log("select", nil, note)
  end
  local settings, shown = {}, {}
  local function set(k, v, hidden)
    settings[#settings + 1] = k .. " = " .. v
    shown[#shown + 1] = k .. " = " .. (hidden and "'***'" or v)
  end
  if base_sql then
    set("base_backup", base_sql)
  end
  if pol.compression and pol.compression.method then
    set("compression_method", sql.quote_string(pol.compression.method))
  end
  if pol.compression and pol.compression.level then
    set("compression_level", tostring(pol.compression.level))
  end
  local pw
  pw, err = password(pol)
  if err then
    return nil, err
  end
  if pw then
    set("password", sql.quote_string(pw), true)
  end
  local text = "BACKUP " .. table.concat(sel.elements, ", ") .. " TO " .. dest_sql
  local function with(list)
    return #list > 0 and (text .. " SETTINGS " .. table.concat(list, ", ")) or text
  end
  return with(settings), with(shown)
end


-- Row counts at backup time for point p; returns rows, how or nil, err.
local function count_rows(ctx, p)
  local v = ctx.pol.verification
  local info = { path = ctx.source_path, backup = p.name, destination = p.destination, cfg = ctx.cfg }
  if ctx.env.counter then
    return ctx.env.counter(info), "env.counter"
  end
  if type(v.counter) == "function" then
    local ok, rows = pcall(v.counter, info)
    if not ok then
      return nil, "verification.counter failed: " .. tostring(rows)
    end
    return rows, "verification.counter"
  end
  if not ctx.cfg then
    return nil, "no ClickHouse config to read the backup with"
  end
  if v.counter == "clickhouse" then
    local run, why = counter.find_clickhouse(ctx.env.clickhouse or v.clickhouse)
    if not run then
      return nil, "verification.counter is \"clickhouse\" but " .. why
    end
    local rows, err = counter.with_clickhouse(run, ctx.source_path, {})
    return rows, rows and ("ClickHouse on " .. ctx.source_path) or err
  end
  local dest, err = chain.parse_name(p.destination)
  if not dest then
    return nil, err
  end
  local rows, rerr = counter.from_backup(ctx.cfg, dest, { password = (password(ctx.pol)) })
  return rows, rows and "count.txt of every part in the backup" or rerr
end


local function do_backup(ctx, due)
  local pol, st = ctx.pol, ctx.store
  local kind = due.kind
  local name = store_mod.format_name(pol.destination.compiled, ctx.now, pol.zone, kind)
  if not still_locked(ctx, "backup", name) then
    return nil, "lost the policy's lock"
  end
  if st:exists(name) then
    return nil, ctx.fail("backup", name, "a backup named " .. name .. " exists already; not overwriting it")
  end
  local info = { name = name, kind = kind, base = due.base and due.base.name or nil }
  local go, why = hook(ctx, "before_backup", info)
  if go == false then
    ctx.log("skip", name, why)
    return false
  elseif not go then
    on_error(ctx, "backup", name, why)
    return nil, ctx.fail("backup", name, why)
  end
  ctx.log(kind == "full" and "full" or "incremental", name, due.reason)
  local started = core.now_us()
  local p, err = st:create({
    name = name, kind = kind, time = ctx.now, base = due.base,
    statement = function(dest_sql, base_sql)
      local s, shown = statement(ctx, dest_sql, base_sql)
      if s then
        ctx.log("statement", name, shown)
      end
      return s, shown
    end,
    execute = function(text)
      if ctx.env.execute then
        return ctx.env.execute(text)
      end
      local inst, ierr = instance(ctx)
      if not inst then
        return nil, ierr
      end
      return inst:execute(text)
    end,
  })
  if not p then
    info.error = err
    on_error(ctx, "backup", name, err)
    return nil, ctx.fail("backup-failed", name, tostring(err))
  end
  local seconds = (core.now_us() - started) / 1e6
  -- Row counts at backup time, kept in the policy record.
  if pol.verification.row_counts and (ctx.cfg or ctx.env.counter or type(pol.verification.counter) == "function") then
    local rows, how = count_rows(ctx, p)
    local record = p.record or {}
    record.seconds = seconds
    if rows then
      record.rows, record.counted_by = rows, how
      ctx.log("count", name, "row counts recorded (" .. how .. ")")
    else
      record.rows_error = how
      ctx.log("count", name, "row counts not recorded: " .. tostring(how), "warn")
    end
    p.record = record
    st:write_record(name, record)
  end
  ctx.log("created", name, string.format("%s backup made in %.2f s%s", kind == "full" and "full" or "incremental",
    seconds, p.base and (" on " .. p.base) or ""))
  info.point = p
  local ok, herr = hook(ctx, "after_backup", info)
  if ok == nil then
    ctx.fail("backup", name, herr)
  end
  return p
end


-- Verification ------------------------------------------------------------

-- Where verifications make their scratch data paths.
local function scratch_root(ctx)
  return ctx.pol.verification.scratch or ctx.env.scratch or os.getenv("TMPDIR") or "/var/tmp"
end



local function choose(ctx, points, opts)
  local pol = ctx.pol
  if opts and opts.backup then
    for _, p in ipairs(points) do
      if p.name == opts.backup then
        return { p }
      end
    end
    return nil, "policy " .. pol.name .. " has no backup named " .. opts.backup
  end
  if #points == 0 then
    return {}
  end
  local how = opts and opts.backups or pol.verification.backups
  local by_id = {}
  for _, p in ipairs(points) do
    by_id[p.id] = p
  end
  if how == "newest" then
    return { points[1] }
  elseif how == "all" then
    return points
  elseif how == "chain" then
    local out, cur, seen = {}, points[1], {}
    while cur and not seen[cur.id] do
      seen[cur.id] = true
      out[#out + 1] = cur
      cur = cur.base and by_id[cur.base]
    end
    return out
  end
  local rest = {}
  for i = 2, #points do
    rest[#rest + 1] = points[i]
  end
  local out = { points[1] }
  local random = ctx.env.random or math.random
  while #out < how and #rest > 0 do
    out[#out + 1] = table.remove(rest, random(#rest))
  end
  return out
end


local function clickhouse(ctx)
  if ctx.clickhouse_checked then
    return ctx.clickhouse_run
  end
  ctx.clickhouse_checked = true
  local spec = ctx.env.clickhouse
  if spec == nil then
    spec = ctx.pol.verification.clickhouse
  end
  ctx.clickhouse_run, ctx.clickhouse_why = counter.find_clickhouse(spec)
  if ctx.clickhouse_run then
    ctx.clickhouse_name, ctx.clickhouse_why = ctx.clickhouse_why, nil
  end
  return ctx.clickhouse_run
end


local function verify_points(ctx, chosen)
  local pol = ctx.pol
  local results = {}
  local pw, perr = password(pol)
  for _, p in ipairs(chosen) do
    local info = { name = p.name, point = p }
    local go, why = hook(ctx, "before_verify", info)
    if go == false then
      ctx.log("skip", p.name, why)
    else
      local result
      if not go then
        result = { backup = p.name, ok = false, time = ctx.now,
          checks = { { name = "hook", ok = false, message = why } } }
      elseif perr then
        result = { backup = p.name, ok = false, time = ctx.now, checks = { { name = "password", ok = false,
          message = perr } } }
      else
        ctx.log("verify", p.name, "restoring into a scratch data path and checking it")
        local vctx = {
          cfg = ctx.cfg, policy = pol, now = ctx.now, threads = tonumber(ctx.env.threads),
          scratch = scratch_root(ctx),
          keep_scratch = pol.verification.keep_scratch, password = pw,
          clickhouse = clickhouse(ctx), clickhouse_why = ctx.clickhouse_why, clickhouse_name = ctx.clickhouse_name,
          log = function(msg) ctx.log("check", p.name, tostring(msg)) end,
        }
        result = (ctx.env.verifier or verify_mod.backup)(vctx, p)
      end
      result.time = ctx.now
      for _, c in ipairs(result.checks) do
        local state = c.ok == true and "pass" or (c.ok == false and "FAIL" or "skip")
        ctx.log("check", p.name, string.format("%s %s: %s", state, c.name, tostring(c.message)),
          c.ok == false and "error" or "info")
      end
      if result.ok then
        ctx.log("verified", p.name, string.format("every check passed in %.2f s", result.duration or 0))
      else
        ctx.fail("verify-failed", p.name, "verification failed")
        on_error(ctx, "verify", p.name, "verification failed")
      end
      -- Record the result with the backup.
      local record = p.record or { uuid = p.uuid, kind = p.kind, time = p.time, name = p.name, policy = pol.name }
      record.verifications = record.verifications or {}
      record.verifications[#record.verifications + 1] = verify_mod.summary(result)
      p.record = record
      local ok, werr = ctx.store:write_record(p.name, record)
      if not ok then
        ctx.fail("verify", p.name, "cannot record the verification: " .. tostring(werr))
      end
      info.result = result
      hook(ctx, "after_verify", info)
      results[#results + 1] = result
    end
  end
  return results
end


-- What killed runs left --------------------------------------------------

-- Removes what killed runs of this policy left (chbackup.policy.leftovers)
-- and records the row counts a run killed after its backup did not.
local function finish_killed_runs(ctx)
  local found, alone = leftovers.find(ctx.store, ctx.pol, scratch_root(ctx), ctx.s3lock and ctx.s3lock.took_over)
  for _, x in ipairs(alone) do
    ctx.log("leftover", x.name, x.why .. "; left alone", "warn")
  end
  local _, errors = leftovers.clean(ctx.store, found, function(name, msg, level)
    if level == "error" then
      ctx.fail("cleanup", name, msg)
    else
      ctx.log("cleaned", name, msg)
    end
  end)
  local pol = ctx.pol
  local can_count = ctx.cfg or ctx.env.counter or type(pol.verification.counter) == "function"
  if not (pol.verification.row_counts and can_count) then
    return errors
  end
  for _, p in ipairs(ctx.store:list().points) do
    local r = p.record
    if r and r.statement and not r.rows and not r.rows_error then
      -- a run killed between its backup and its row counts: count the
      -- backup itself now (the source has moved on since)
      local dest = chain.parse_name(p.destination)
      local rows, how = nil, "cannot parse " .. tostring(p.destination)
      if dest then
        rows, how = counter.from_backup(ctx.cfg, dest, { password = (store_mod.password(pol)) })
      end
      if rows then
        r.rows, r.counted_by = rows, "count.txt of every part in the backup (recorded by a later run: the run "
          .. "that made it was interrupted before it counted)"
        ctx.store:write_record(p.name, r)
        ctx.log("count", p.name, "row counts recorded a killed run did not (count.txt of every part in the backup)")
      else
        ctx.log("count", p.name, "row counts a killed run did not record cannot be counted: " .. tostring(how)
          .. "; its verification fails", "warn")
      end
    end
  end
  return errors
end


-- Deletion ----------------------------------------------------------------

local function finish_deletions(ctx, listing)
  for _, d in ipairs(listing.deleting) do
    local ok, err = ctx.store:delete({ id = d.name, name = d.name, path = d.path, archive = d.archive,
      deleting = true })
    if ok then
      ctx.log("deleted", d.name, "finished a deletion an earlier run started")
    else
      ctx.fail("delete-failed", d.name, err)
    end
  end
end


local function removed_whole(p)
  return p.archive and "removed whole (renamed to .deleting first, so it was never half a backup)"
    or "removed whole (its .backup was invalidated first)"
end


-- Deletes p; logs it or the failure. Returns true or nil.
local function delete_one(ctx, p)
  if not still_locked(ctx, "delete-failed", p.name) then
    return nil
  end
  local ok, err = ctx.store:delete(p)
  if not ok then
    ctx.fail("delete-failed", p.name, err)
    on_error(ctx, "delete", p.name, err)
    return nil
  end
  ctx.log("deleted", p.name, removed_whole(p))
  hook(ctx, "after_delete", { name = p.name, point = p })
  return true
end


-- Deletes in the planned order (no before_delete hook to ask).
local function apply_deletions(ctx, res)
  local deleted = {}
  for _, p in ipairs(res.remove) do
    if not delete_one(ctx, p) then
      break
    end
    deleted[#deleted + 1] = p
  end
  return deleted
end


-- Rebases what retention planned to rebase (before any deletion). A failed
-- rebase keeps its backup's bases: retention is planned again with it
-- marked. Returns the rebased points.
local function rebase_step(ctx, res)
  local rebased = {}
  for _, p in ipairs(res.rebase) do
    local base = res.rebase_of[p.id]
    if not still_locked(ctx, "rebase-failed", p.name) then
      break
    end
    local written, err = ctx.store:rebase(p, { time = ctx.now, threads = tonumber(ctx.env.threads) })
    if written then
      rebased[#rebased + 1] = p
      ctx.log("rebased", p.name, string.format("made standalone (%d bytes written); it no longer relies on %s",
        written, base))
    else
      ctx.rebase_failed = ctx.rebase_failed or {}
      ctx.rebase_failed[p.id] = err
      ctx.fail("rebase-failed", p.name, tostring(err) .. "; its base " .. base .. " is kept")
      on_error(ctx, "rebase", p.name, err)
    end
  end
  return rebased
end


-- Retention: rebases first, then deletions in the planned order. A deletion
-- list with hooks in the way must still never break a chain: re-plan after
-- each veto. Returns the deletions and the rebases made.
local function retention_step(ctx)
  local listing = ctx.store:list()
  local res, err = plan_retention(ctx, listing)
  if not res then
    ctx.fail("retention", nil, err)
    return {}, {}
  end
  log_retention(ctx, res, "delete", listing.points)
  ctx.rebased = rebase_step(ctx, res)
  if #res.rebase > 0 then
    listing = ctx.store:list()
    res, err = plan_retention(ctx, listing)
    if not res then
      ctx.fail("retention", nil, err)
      return {}, ctx.rebased
    end
    if ctx.rebase_failed then
      ctx.log("retention", nil, "planned again: a rebase failed, so the bases it needs are kept", "warn")
      log_retention(ctx, res, "delete", listing.points)
    end
  end
  if ctx.pol.hooks.before_delete then
    -- With a veto hook, delete one at a time and re-plan with vetoed
    -- backups pinned, so a vetoed backup keeps its bases.
    ctx.vetoed = {}
    local deleted = {}
    local budget = ctx.pol.retention and ctx.pol.retention.max_deletions
    while #res.remove > 0 and (not budget or #deleted < budget) do
      local p = res.remove[1]
      local go, why = hook(ctx, "before_delete", { name = p.name, point = p })
      if go == false then
        ctx.log("skip", p.name, why .. "; kept")
        ctx.vetoed[p.id] = why
      elseif not go then
        ctx.fail("delete-failed", p.name, why)
        break
      elseif delete_one(ctx, p) then
        deleted[#deleted + 1] = p
      else
        break
      end
      res, err = plan_retention(ctx, ctx.store:list())
      if not res then
        ctx.fail("retention", nil, err)
        break
      end
    end
    return deleted, ctx.rebased
  end
  return apply_deletions(ctx, res), ctx.rebased
end


-- Public -------------------------------------------------------------------

local function listing_problems(ctx, listing)
  for _, p in ipairs(listing.points) do
    if not p.chain_ok then
      ctx.log("problem", p.name, "chain broken: " .. tostring(p.chain_problem), "warn")
    end
    if p.note then
      ctx.log("problem", p.name, p.note, "warn")
    end
    if p.time > ctx.now then
      ctx.log("problem", p.name, "stamped in the future (" .. ctx.time(p.time) .. "); kept, and ignored when "
        .. "deciding what is due", "warn")
    end
  end
  for _, x in ipairs(listing.incomplete) do
    ctx.log("problem", x.name, x.why .. "; left alone (not a restore point)", "warn")
  end
  for _, x in ipairs(listing.unreadable) do
    ctx.log("problem", x.name, x.why, "warn")
  end
  for _, x in ipairs(listing.deleting) do
    ctx.log("problem", x.name, x.why .. "; the next run finishes it", "warn")
  end
end


--- What is due at now and what retention would delete; changes nothing.
-- Returns {policy=, now=, due = {kind=, base=, reason=}, verify = {due=,
-- reason=}, next = {full = {t...}, incremental = {...}, verify = {...}},
-- points = {...}, retention = <retention.apply result>, log = {records},
-- ok = bool, errors = {...}} or nil, err.
function runner.plan(pol, now, env)
  local ok, plan, err = pcall(runner._plan, pol, now, env)
  if not ok then
    return nil, "internal error: " .. tostring(plan)
  end
  return plan, err
end


function runner._plan(pol, now, env)
  local ctx = new_ctx(pol, now, env)
  local ok, err = open_store(ctx)
  if not ok then
    return nil, err
  end
  local listing = ctx.store:list()
  listing_problems(ctx, listing)
  local st = ctx.store
  local dead = st.s3root and s3lock.dead_holder(st.client, st.s3root, pol.name, (ctx.env.lock_clock or os.time)())
  local found, alone = leftovers.find(st, pol, scratch_root(ctx), dead)
  for _, x in ipairs(found) do
    ctx.log("leftover", x.name, x.path .. ": " .. x.why .. "; the next run removes it", "warn")
  end
  for _, x in ipairs(alone) do
    ctx.log("leftover", x.name, x.why .. "; left alone", "warn")
  end
  local due = runner.decide(pol, listing.points, now)
  if due.kind then
    local name = store_mod.format_name(pol.destination.compiled, now, pol.zone, due.kind)
    due.name = name
    ctx.log("due", name, (due.kind == "full" and "full: " or "incremental: ") .. due.reason)
  else
    ctx.log("due", nil, due.reason)
  end
  local vdue, vwhy = runner.verify_due(pol, listing.points, now)
  ctx.log("verify-due", nil, (vdue and "verification due: " or "no verification due: ") .. vwhy)
  local next_runs = {}
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    local cron = pol.schedule[k]
    if cron then
      next_runs[k] = schedule.upcoming(cron, now, pol.zone, 3)
      local shown = {}
      for i, t in ipairs(next_runs[k]) do
        shown[i] = ctx.time(t)
      end
      ctx.log("next", nil, string.format("schedule.%s ('%s'): %s", k, cron.text, table.concat(shown, ", ")))
    end
  end
  local res
  res, err = plan_retention(ctx, listing)
  if not res then
    ctx.fail("retention", nil, err)
  else
    log_retention(ctx, res, "would-delete", listing.points)
  end
  return {
    policy = pol.name, now = now, due = due, verify = { due = vdue, reason = vwhy }, next = next_runs,
    points = listing.points, listing = listing, leftovers = found, retention = res, log = ctx.records,
    ok = #ctx.errors == 0,
    errors = ctx.errors,
  }
end


-- Runs body(ctx) with the policy's store open and its lock held; an error
-- inside is recorded, the lock always released. Fills report's log, errors
-- and ok and returns it, or nil, err when the run could not start.
local function locked(pol, now, env, report, body)
  local ctx = new_ctx(pol, now, env)
  local ok, err = open_store(ctx)
  if not ok then
    return nil, err
  end
  ok, err = acquire(ctx, report.results and "verify" or "run")
  if not ok then
    return nil, err
  end
  local pok, perr = pcall(body, ctx)
  release(ctx)
  if not pok then
    ctx.fail("internal", nil, tostring(perr))
  end
  report.log, report.errors, report.ok = ctx.records, ctx.errors, #ctx.errors == 0
  return report
end


--- Does what is due at now, once. Returns a report {ok=, backup = point|nil,
-- verified = {results}, deleted = {points}, rebased = {points}, log = {records}, errors =
-- {...}} (ok false when a step failed), or nil, err when the run could not
-- start (config, store, lock).
function runner.run(pol, now, env)
  local report = { policy = pol.name, now = now, verified = {}, deleted = {}, rebased = {} }
  return locked(pol, now, env, report, function(ctx)
    finish_killed_runs(ctx)
    local listing = ctx.store:list()
    listing_problems(ctx, listing)
    finish_deletions(ctx, listing)
    local due = runner.decide(pol, listing.points, now)
    local backup_failed = false
    if due.kind then
      local p, berr = do_backup(ctx, due)
      if p then
        report.backup = p
      elseif p == nil then
        backup_failed = true
        report.backup_error = berr
      end
    else
      ctx.log("idle", nil, due.reason)
    end
    local vdue, vwhy = runner.verify_due(pol, listing.points, now)
    if vdue then
      ctx.log("verify-due", nil, vwhy)
      local points = ctx.store:list().points
      local chosen, cerr = choose(ctx, points)
      if not chosen then
        ctx.fail("verify", nil, cerr)
      elseif #chosen == 0 then
        ctx.fail("verify", nil, "policy " .. pol.name .. " has no backup to verify")
      else
        report.verified = verify_points(ctx, chosen)
      end
    end
    if backup_failed then
      ctx.log("retention", nil, "skipped: the backup failed, so nothing is deleted this run", "warn")
    else
      report.deleted, report.rebased = retention_step(ctx)
    end
  end)
end


--- The restore drill. opts: {backup = name, backups = "newest"|"chain"|
-- "all"|N}. Returns a report {ok=, results = {verify results}, suite =
-- {policy-level checks}, log=, errors=} or nil, err.
function runner.verify(pol, now, env, opts)
  local report = { policy = pol.name, now = now, results = {}, suite = {} }
  return locked(pol, now, env, report, function(ctx)
    finish_killed_runs(ctx)
    local listing = ctx.store:list()
    listing_problems(ctx, listing)
    local points = listing.points
    local function suite(name, pass, message)
      report.suite[#report.suite + 1] = { name = name, ok = pass, message = message }
      if pass then
        ctx.log("check", nil, "pass " .. name .. ": " .. message)
      else
        ctx.fail("check", nil, "FAIL " .. name .. ": " .. message)
      end
    end
    local where = tostring(ctx.store.root or ctx.store.s3root and ctx.store.s3root.name or "memory")
    suite("backups", #points > 0, #points > 0 and string.format("%d restore points of policy %s in %s", #points,
      pol.name, where) or ("no backup of policy " .. pol.name .. " in " .. where))
    if pol.verification.max_age and points[1] then
      local limit = schedule.subtract(now, pol.verification.max_age, pol.zone)
      suite("freshness", points[1].time >= limit, string.format("the newest backup, %s, is from %s (max_age %s)",
        points[1].name, ctx.time(points[1].time), pol.verification.max_age.text))
    end
    local chosen, cerr = choose(ctx, points, opts)
    if not chosen then
      suite("selection", false, cerr)
      return
    end
    report.results = verify_points(ctx, chosen)
  end)
end


--- The earliest time after now at which any schedule of pol fires.
function runner.next_wakeup(pol, now)
  local best
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    local cron = pol.schedule[k]
    local t = cron and schedule.next(cron, now, pol.zone)
    if t and (not best or t < best) then
      best = t
    end
  end
  return best
end


--- Runs the policy whenever a schedule fires, until env.stop(report)
-- returns true (or forever). env.clock() gives now (default os.time),
-- env.sleep(seconds) waits (default: the sleep command). Returns the
-- number of runs.
function runner.watch(pol, env)
  env = env or {}
  local clock = env.clock or os.time
  local sleep = env.sleep or function(s)
    os.execute("sleep " .. string.format("%d", math.max(1, math.ceil(s))))
  end
  local runs = 0
  while true do
    local now = clock()
    local report, err = runner.run(pol, now, env)
    runs = runs + 1
    if not report then
      report = { ok = false, errors = { err }, log = {} }
      if env.log then
        env.log({ time = now, policy = pol.name, event = "run-failed", reason = err, level = "error" })
      end
    end
    if env.stop and env.stop(report, runs) then
      return runs
    end
    local wake = runner.next_wakeup(pol, now)
    if not wake then
      return runs
    end
    local wait = wake - clock()
    if env.log then
      env.log({ time = now, policy = pol.name, event = "sleep", level = "info",
        reason = "until " .. schedule.format(wake, pol.zone) })
    end
    if wait > 0 then
      sleep(wait)
    end
  end
end


return runner
