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
--   json            plan: print the plan as JSON
--   junit=FILE      verify: also write a JUnit XML report
--   backup=NAME     verify: that backup only
--   backups=WHICH   verify: newest | chain | all | N (a sample), instead of the policy's
--   quiet           run/verify: print only warnings, errors and the summary
-- Exit status: 0 ok, 1 failure (a wrong policy, a failed step or check), 2 usage.
-- @module chbackup.policy.cli
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
  json           plan: print JSON
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


local function env_for(opts, pol, out, quiet)
  return {
    path = opts.path, config = opts.config, status_dir = opts.status_dir, threads = opts.threads,
    status_keep = tonumber(opts.status_keep), status_days = tonumber(opts.status_days),
    log = function(rec)
      if not quiet or rec.level ~= "info" then
        out:write(line(rec, pol.zone))
        out:flush()
      end
    end,
  }
end


local function plan_json(plan)
  local cjson = require("cjson")
  local function point(p)
    return { name = p.name, kind = p.kind, time = p.time, base = p.base, verified = p.verified or false,
      chain_ok = p.chain_ok }
  end
  local doc = {
    policy = plan.policy, now = plan.now,
    due = { kind = plan.due.kind, name = plan.due.name, base = plan.due.base and plan.due.base.name or nil,
      reason = plan.due.reason },
    verify = plan.verify, next = plan.next, keep = {}, delete = {}, deferred = {},
  }
  if plan.retention then
    for _, p in ipairs(plan.retention.kept) do
      local x = point(p)
      x.reasons = plan.retention.keep[p.id]
      doc.keep[#doc.keep + 1] = x
    end
    for _, p in ipairs(plan.retention.remove) do
      doc.delete[#doc.delete + 1] = point(p)
    end
    for _, p in ipairs(plan.retention.deferred) do
      doc.deferred[#doc.deferred + 1] = point(p)
    end
  end
  return cjson.encode(doc) .. "\n"
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


local function describe(pol, out)
  out:write(string.format("policy %s (%s): valid\n", pol.name, pol.file or "table"))
  local d = pol.destination
  out:write(string.format("  destination: %s, names %s\n",
    d.disk and ("Disk('" .. d.disk .. "')") or ("File('" .. d.path .. "')"), d.name))
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    if pol.schedule[k] then
      out:write(string.format("  schedule.%s: %s\n", k, pol.schedule[k].text))
    end
  end
  out:write("  retention: " .. (pol.retention and require("chbackup.policy.retention").describe(pol.retention)
    or "none (every backup is kept)") .. "\n")
  out:write("  verification: " .. tostring(pol.verification.backups) .. "\n")
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
  local pol, err = policy.load(file)
  if not pol then
    errout:write("chbackup: " .. err .. "\n")
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
    describe(pol, out)
    return 0
  end
  local env = env_for(opts, pol, out, o.quiet)
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
    errout:write("chbackup: policy " .. pol.name .. ": " .. verr .. "\n")
    return 1
  end
  verify_summary(report, out)
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
