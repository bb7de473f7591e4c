--- `chbackup policy ...`: the policy commands of the command line.
--
--   chbackup [options] policy check FILE      validate the policy, nothing else
--   chbackup [options] policy plan FILE       what is due now, the next runs, what
--                                             retention would delete; changes nothing
--   chbackup [options] policy run FILE        do what is due now, once (cron, systemd)
--   chbackup [options] policy watch FILE      a long-running scheduler
--   chbackup [options] policy verify FILE     restore drill for CI: exit 1 when anything fails
--
-- Policy options are NAME=VALUE words after FILE (--NAME=VALUE works too
-- where the global option parser lets it through):
--   now=TIME        run as if it were TIME (YYYY-MM-DDTHH:MM:SS[Z|+HH:MM] or epoch seconds)
--   json            print JSON lines instead of text (also the global --json):
--                   check/plan one object; run/watch/verify one object per
--                   event, run/verify then a `summary` object
--   junit=FILE      verify: also write a JUnit XML report
--   backup=NAME     verify: that backup only
--   backups=WHICH   verify: newest | chain | all | N (a sample), instead of the policy's
--   quiet           run/verify: print only warnings, errors and the summary
-- Exit status: 0 ok, 1 failure (a wrong policy, a failed step or check), 2 usage;
-- the same with json.
-- @module chbackup.policy.cli
local cjson = require("cjson")
local jsonl = require("chbackup.jsonl")
local policy = require("chbackup.policy")
local schedule = require("chbackup.policy.schedule")

local cli = {}

local USAGE = [[
usage: chbackup [options] policy check|plan|run|watch|verify FILE [NAME=VALUE...]
  check   validate FILE and print what it says
  plan    what is due now, the next runs, what retention would delete (changes nothing)
  run     do what is due now, once (for cron and systemd timers)
  watch   run whenever a schedule fires (a long-running scheduler)
  verify  restore the policy's backups into a scratch data path and check them;
          exit 1 with a report when anything fails (for CI)
words:
  now=TIME       act as if it were TIME (2026-01-31T02:00:00Z, or epoch seconds)
  json           JSON lines (one object per event; check and plan: one object;
                 run and verify end with a "summary" object); also --json
  junit=FILE     verify: also write a JUnit XML report to FILE
  backup=NAME    verify: only that backup
  backups=WHICH  verify: newest, chain, all or a sample size N
  quiet          run, verify: print only warnings, errors and the summary
]]

local FLAGS = { json = true, quiet = true }
local VALUES = { now = true, junit = true, backup = true, backups = true }


local function parse_words(words)
  local o = {}
  local i = 1
  while i <= #words do
    local w = words[i]
    local name, value = w:match("^%-%-([%w_]+)=(.*)$")
    if not name then
      name, value = w:match("^([%w_]+)=(.*)$")
    end
    if not name then
      name = w:match("^%-%-([%w_]+)$") or w
      if VALUES[name] then
        i = i + 1
        value = words[i]
        if not value then
          return nil, "'" .. name .. "' needs a value"
        end
      end
    end
    if FLAGS[name] and value == nil then
      o[name] = true
    elseif VALUES[name] and value ~= nil then
      o[name] = value
    else
      return nil, "unknown word '" .. w .. "'"
    end
    i = i + 1
  end
  return o
end


local function line(rec, zone)
  local t = schedule.format(rec.time or 0, zone)
  local level = rec.level ~= "info" and (rec.level:upper() .. " ") or ""
  return string.format("%s %s%-12s %s%s\n", t, level, rec.event, rec.backup and (rec.backup .. ": ") or "",
    tostring(rec.reason))
end


-- JSON lines: every event and summary object starts with these fields.
local EVENT_ORDER = jsonl.order({ "time", "at", "policy", "event", "level", "backup", "reason", "ok" })

local function event_json(rec, zone)
  local t = {}
  for k, v in pairs(rec) do
    t[k] = v
  end
  t.time = rec.time or 0
  t.at = schedule.format(t.time, zone)
  t.level = rec.level or "info"
  t.backup = jsonl.value(rec.backup)
  t.reason = jsonl.value(rec.reason ~= nil and tostring(rec.reason) or nil)
  return jsonl.line(t, EVENT_ORDER)
end


local function env_for(opts, pol, out, o)
  local show = o.json and event_json or line
  return {
    path = opts.path, config = opts.config, status_dir = opts.status_dir, threads = opts.threads,
    status_keep = tonumber(opts.status_keep), status_days = tonumber(opts.status_days),
    log = function(rec)
      if not o.quiet or rec.level ~= "info" then
        out:write(show(rec, pol.zone))
        out:flush()
      end
    end,
  }
end


-- The last JSON line of run and verify: event "summary" with ok and errors.
local function summary(out, pol, now, ok, errors, fields)
  local rec = fields or {}
  rec.time, rec.policy, rec.event, rec.level = now, pol.name, "summary", ok and "info" or "error"
  rec.ok, rec.errors = ok, jsonl.array(errors)
  rec.reason = ok and "ok" or table.concat(errors, "; ")
  out:write(event_json(rec, pol.zone))
end


local function names(points)
  local list = {}
  for i, p in ipairs(points or {}) do
    list[i] = p.name
  end
  return jsonl.array(list)
end


local PLAN_ORDER = jsonl.order({ "policy", "now", "ok", "errors", "due", "verify", "next", "keep", "rebase",
  "delete", "deferred" })

local function plan_json(plan)
  local function point(p)
    return { name = p.name, kind = p.kind, time = p.time, base = jsonl.value(p.base), verified = p.verified or false,
      chain_ok = jsonl.value(p.chain_ok) }
  end
  local doc = {
    policy = plan.policy, now = plan.now, ok = plan.ok, errors = jsonl.array(plan.errors),
    due = { kind = jsonl.value(plan.due.kind), name = jsonl.value(plan.due.name),
      base = plan.due.base and plan.due.base.name or cjson.null, reason = plan.due.reason },
    verify = plan.verify, next = plan.next, keep = jsonl.array(), delete = jsonl.array(),
    deferred = jsonl.array(), rebase = jsonl.array(),
  }
  for k, list in pairs(plan.next) do
    doc.next[k] = jsonl.array(list)
  end
  if plan.retention then
    for _, p in ipairs(plan.retention.kept) do
      local x = point(p)
      x.reasons = jsonl.array(plan.retention.keep[p.id])
      doc.keep[#doc.keep + 1] = x
    end
    for _, p in ipairs(plan.retention.remove) do
      doc.delete[#doc.delete + 1] = point(p)
    end
    for _, p in ipairs(plan.retention.deferred) do
      doc.deferred[#doc.deferred + 1] = point(p)
    end
    for _, p in ipairs(plan.retention.rebase) do
      local x = point(p)
      x.from = plan.retention.rebase_of[p.id]
      doc.rebase[#doc.rebase + 1] = x
    end
  end
  return jsonl.line(doc, PLAN_ORDER)
end


local function verify_summary(report, out)
  out:write(string.format("verification of policy %s: %s\n", report.policy, report.ok and "OK" or "FAILED"))
  local function show(checks, indent)
    for _, c in ipairs(checks) do
      local state = c.ok == true and "pass" or (c.ok == false and "FAIL" or "skip")
      out:write(string.format("%s%-4s  %s: %s\n", indent, state, c.name, tostring(c.message)))
    end
  end
  show(report.suite, "  ")
  for _, r in ipairs(report.results) do
    out:write(string.format("  backup %s: %s\n", r.backup, r.ok and "OK" or "FAILED"))
    show(r.checks, "    ")
  end
end


local function checks_json(checks)
  local list = jsonl.array()
  for i, c in ipairs(checks) do
    list[i] = { name = c.name, ok = jsonl.value(c.ok), message = jsonl.value(c.message ~= nil and tostring(c.message)
      or nil) }
  end
  return list
end


local function verify_json(report, out, pol, now)
  local results = jsonl.array()
  for i, r in ipairs(report.results) do
    results[i] = { backup = r.backup, ok = r.ok, checks = checks_json(r.checks) }
  end
  summary(out, pol, now, report.ok, report.errors, { suite = checks_json(report.suite), results = results })
end


-- What `check` says about a valid policy: {field = value} (text and JSON).
local function description(pol)
  local d = pol.destination
  local sched = {}
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    sched[k] = pol.schedule[k] and pol.schedule[k].text or cjson.null
  end
  return {
    policy = pol.name, file = pol.file or cjson.null, valid = true,
    destination = d.disk and ("Disk('" .. d.disk .. "')") or d.s3 and ("S3('" .. d.s3 .. "')")
      or ("File('" .. d.path .. "')"), names = d.name,
    schedule = sched,
    retention = pol.retention and require("chbackup.policy.retention").describe(pol.retention)
      or "none (every backup is kept)",
    verification = tostring(pol.verification.backups),
  }
end


local CHECK_ORDER = jsonl.order({ "policy", "file", "valid", "error", "destination", "names", "schedule", "retention",
  "verification" })

local function describe(pol, out, json)
  local t = description(pol)
  if json then
    out:write(jsonl.line(t, CHECK_ORDER))
    return
  end
  out:write(string.format("policy %s (%s): valid\n", pol.name, pol.file or "table"))
  out:write(string.format("  destination: %s, names %s\n", t.destination, t.names))
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    if pol.schedule[k] then
      out:write(string.format("  schedule.%s: %s\n", k, t.schedule[k]))
    end
  end
  out:write("  retention: " .. t.retention .. "\n")
  out:write("  verification: " .. t.verification .. "\n")
end


--- Runs a policy command. rest = {"policy", SUB, FILE, words...}; opts =
-- the global options {path=, config=, status_dir=, threads=}; io_ =
-- {stdout=, stderr=}. Returns the exit code. cli.clock and cli.sleep may
-- be replaced (tests).
function cli.main(rest, opts, io_)
  local out = io_ and io_.stdout or io.stdout
  local errout = io_ and io_.stderr or io.stderr
  opts = opts or {}
  local sub, file = rest[2], rest[3]
  if sub == "help" or sub == nil then
    (sub and out or errout):write(USAGE)
    return sub and 0 or 2
  end
  local known = { check = true, plan = true, run = true, watch = true, verify = true }
  if not known[sub] then
    errout:write("chbackup: unknown policy command '" .. tostring(sub) .. "'\n" .. USAGE)
    return 2
  end
  if not file then
    errout:write("chbackup: policy " .. sub .. " needs a policy FILE\n" .. USAGE)
    return 2
  end
  local o, werr = parse_words(table.move(rest, 4, #rest, 1, {}))
  if not o then
    errout:write("chbackup: policy " .. sub .. ": " .. werr .. "\n" .. USAGE)
    return 2
  end
  o.json = o.json or opts.json
  local pol, err = policy.load(file)
  if not pol then
    errout:write("chbackup: " .. err .. "\n")
    if o.json and sub == "check" then
      out:write(jsonl.line({ file = file, valid = false, error = err }, CHECK_ORDER))
    end
    return 1
  end
  local now = (cli.clock or os.time)()
  if o.now then
    now, err = schedule.parse_time(o.now, pol.zone)
    if not now then
      errout:write("chbackup: now=: " .. err .. "\n")
      return 2
    end
  end
  if sub == "check" then
    describe(pol, out, o.json)
    return 0
  end
  local env = env_for(opts, pol, out, o)
  if sub == "plan" then
    if o.json then
      env.log = nil
    end
    local plan, perr = policy.plan(pol, now, env)
    if not plan then
      errout:write("chbackup: policy " .. pol.name .. ": " .. perr .. "\n")
      return 1
    end
    if o.json then
      out:write(plan_json(plan))
    end
    return plan.ok and 0 or 1
  elseif sub == "run" then
    local report, rerr = policy.run(pol, now, env)
    if o.json then
      local r = report or { ok = false, errors = { rerr } }
      local verified = jsonl.array()
      for i, v in ipairs(r.verified or {}) do
        verified[i] = { backup = v.backup, ok = v.ok }
      end
      summary(out, pol, now, r.ok, jsonl.array(r.errors), { backup = r.backup and r.backup.name,
        deleted = names(r.deleted), rebased = names(r.rebased), verified = verified })
    end
    if not report then
      errout:write("chbackup: policy " .. pol.name .. ": " .. rerr .. "\n")
      return 1
    end
    if not report.ok then
      errout:write("chbackup: policy " .. pol.name .. ": " .. table.concat(report.errors, "; ") .. "\n")
      return 1
    end
    return 0
  elseif sub == "watch" then
    local stopped = false
    env.clock = cli.clock or os.time
    env.sleep = cli.sleep or function(s)
      local ok, how = os.execute("sleep " .. string.format("%d", math.max(1, math.ceil(s))))
      if not ok and how == "signal" then
        stopped = true
      end
    end
    env.stop = function(_, runs)
      return stopped or (cli.max_runs and runs >= cli.max_runs)
    end
    policy.watch(pol, env)
    return 0
  end
  -- verify
  local vopts = { backup = o.backup }
  if o.backups then
    vopts.backups = math.tointeger(tonumber(o.backups)) or o.backups
    if not (vopts.backups == "newest" or vopts.backups == "chain" or vopts.backups == "all"
        or (math.type(vopts.backups) == "integer" and vopts.backups >= 1)) then
      errout:write("chbackup: backups= takes newest, chain, all or a number >= 1\n")
      return 2
    end
  end
  local report, verr = policy.verify(pol, now, env, vopts)
  if not report then
    if o.json then
      summary(out, pol, now, false, jsonl.array({ verr }), { suite = jsonl.array(), results = jsonl.array() })
    end
    errout:write("chbackup: policy " .. pol.name .. ": " .. verr .. "\n")
    return 1
  end
  if o.json then
    verify_json(report, out, pol, now)
  else
    verify_summary(report, out)
  end
  if out.flush then
    out:flush()
  end
  if o.junit then
    local f, ferr = io.open(o.junit, "wb")
    if not f then
      errout:write("chbackup: cannot write " .. o.junit .. ": " .. tostring(ferr) .. "\n")
      return 1
    end
    f:write(require("chbackup.policy.junit").render(report, now))
    f:close()
  end
  if not report.ok then
    errout:write("chbackup: policy " .. pol.name .. ": verification failed: " .. table.concat(report.errors, "; ")
      .. "\n")
    return 1
  end
  return 0
end


return cli
