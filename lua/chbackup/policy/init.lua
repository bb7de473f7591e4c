--- Policy as code: one Lua file says what to back up, where, when, how long
-- to keep it and how to prove it restores.
--
--   local policy = require("chbackup.policy")
--   local pol = assert(policy.load("/etc/chbackup/nightly.lua"))
--   local plan = policy.plan(pol, os.time())       -- what is due, what retention would delete
--   local report = policy.run(pol, os.time())      -- do what is due now, once
--   local v = policy.verify(pol, os.time())        -- restore drill; v.ok
--   policy.watch(pol, { clock = os.time, sleep = function(s) ... end })
--
-- A policy file is plain Lua returning a table (see docs/policy.md). It is
-- loaded as text only in a restricted environment: reading an unknown
-- global or assigning one is an error. A wrong policy is refused before
-- anything runs, with the field named ("schedule.full: ...").
--
-- The functions that act take `now` (epoch seconds) and an environment
-- table `env` (every field optional):
--   log(record)        called for every decision: {time=, event=, backup=, reason=, level=}
--   path, config, status_dir, threads   override the policy's source (the CLI's options)
--   status_keep, status_days   pruning of the status directory (chbackup.open)
--   store              a store (chbackup.policy.store.memory() for simulations)
--   execute(sql)       runs a BACKUP statement (default: chbackup's Lua API)
--   counter(info)      row counts at backup time (overrides verification.counter)
--   clickhouse         run(path, statements) -> text (overrides verification.clickhouse)
--   verifier(ctx, point) replaces chbackup.policy.verify.backup
--   random(n)          1..n (sampling backups to verify; default math.random)
--   clock(), sleep(s), stop(report)   for watch
-- @module chbackup.policy
local retention = require("chbackup.policy.retention")
local schedule = require("chbackup.policy.schedule")
local selection = require("chbackup.policy.selection")
local store = require("chbackup.policy.store")

local policy = {}

policy.DEFAULT_NAME_PATTERN = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}{SS}-{kind}"

local TOP = {
  "name", "timezone", "source", "selection", "destination", "compression", "password", "schedule",
  "retention", "verification", "hooks",
}

local HOOKS = {
  "before_backup", "after_backup", "before_delete", "after_delete", "before_verify", "after_verify", "on_error",
}


local function known_keys(t, list, prefix)
  local set = {}
  for _, k in ipairs(list) do
    set[k] = true
  end
  for k in pairs(t) do
    if not set[k] then
      return nil, string.format("%s%s: unknown field (known: %s)", prefix, tostring(k), table.concat(list, ", "))
    end
  end
  return true
end


local function expect_table(v, field)
  if type(v) ~= "table" then
    return nil, field .. ": expected a table, got " .. type(v)
  end
  return v
end


local function check_source(t)
  if t == nil then
    return {}
  end
  local ok, err = expect_table(t, "source")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "path", "config", "status_dir" }, "source.")
  if not ok then
    return nil, err
  end
  if t.path ~= nil and (type(t.path) ~= "string" or t.path:sub(1, 1) ~= "/") then
    return nil, "source.path: expected an absolute data path like \"/var/lib/clickhouse\", got " .. tostring(t.path)
  end
  if t.config ~= nil and type(t.config) ~= "string" and type(t.config) ~= "table" then
    return nil, "source.config: expected a config file path or a config table, got " .. type(t.config)
  end
  if t.status_dir ~= nil and (type(t.status_dir) ~= "string" or t.status_dir:sub(1, 1) ~= "/") then
    return nil, "source.status_dir: expected an absolute directory like \"/var/lib/chbackup/status\", got "
      .. tostring(t.status_dir)
  end
  return { path = t.path, config = t.config, status_dir = t.status_dir }
end


-- A secret given by reference: {env = "VAR"} or {file = "/path"} (never the
-- value itself). what: its key in the policy ("password", ...).
local function check_secret(t, what)
  if t == nil then
    return nil
  end
  if type(t) == "string" then
    return nil, what .. ": never write the " .. (what:match("[^.]*$"):gsub("_", " ")) .. " into the policy; use "
      .. "{ env = \"VARIABLE\" } or { file = \"/path/to/file\" }"
  end
  local ok, err = expect_table(t, what)
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "env", "file" }, what .. ".")
  if not ok then
    return nil, err
  end
  if (t.env == nil) == (t.file == nil) then
    return nil, what .. ": give exactly one of env (an environment variable) or file (a file holding it)"
  end
  if t.env ~= nil and (type(t.env) ~= "string" or not t.env:match("^[%a_][%w_]*$")) then
    return nil, what .. ".env: expected an environment variable name, got " .. tostring(t.env)
  end
  if t.file ~= nil and (type(t.file) ~= "string" or t.file:sub(1, 1) ~= "/") then
    return nil, what .. ".file: expected an absolute file path, got " .. tostring(t.file)
  end
  return { env = t.env, file = t.file }
end


local function check_destination(t, name)
  local ok, err = expect_table(t, "destination")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "disk", "path", "s3", "access_key_id", "secret_access_key", "name" }, "destination.")
  if not ok then
    return nil, err
  end
  if ((t.disk ~= nil and 1 or 0) + (t.path ~= nil and 1 or 0) + (t.s3 ~= nil and 1 or 0)) ~= 1 then
    return nil, "destination: give exactly one of disk (a backups disk of the config, e.g. \"backups\"), "
      .. "path (an absolute directory under backups.allowed_path) or s3 (\"http://host:port/bucket/prefix\")"
  end
  if t.disk ~= nil and (type(t.disk) ~= "string" or t.disk == "") then
    return nil, "destination.disk: expected a disk name, got " .. tostring(t.disk)
  end
  if t.path ~= nil and (type(t.path) ~= "string" or t.path:sub(1, 1) ~= "/") then
    return nil, "destination.path: expected an absolute directory, got " .. tostring(t.path)
  end
  if t.s3 ~= nil and (type(t.s3) ~= "string" or not t.s3:match("^https?://[^/]+/[^/]")) then
    return nil, "destination.s3: expected a url http(s)://host[:port]/bucket[/prefix], got " .. tostring(t.s3)
  end
  if (t.access_key_id ~= nil or t.secret_access_key ~= nil) and t.s3 == nil then
    return nil, "destination: access_key_id and secret_access_key apply to an s3 destination"
  end
  if (t.access_key_id == nil) ~= (t.secret_access_key == nil) then
    return nil, "destination: give both access_key_id and secret_access_key, or neither (then the config's <s3> "
      .. "endpoint or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
  end
  if t.access_key_id ~= nil and (type(t.access_key_id) ~= "string" or t.access_key_id == "") then
    return nil, "destination.access_key_id: expected the key id, got " .. tostring(t.access_key_id)
  end
  local secret
  secret, err = check_secret(t.secret_access_key, "destination.secret_access_key")
  if err then
    return nil, err
  end
  local pattern = t.name or policy.DEFAULT_NAME_PATTERN
  local compiled
  compiled, err = store.compile(pattern, name)
  if not compiled then
    return nil, "destination.name: " .. err
  end
  local kind = store.archive_kind(pattern)
  if kind and kind ~= "zip" then
    return nil, "destination.name: '" .. pattern .. "' names a " .. kind .. " archive; chbackup writes directories "
      .. "and .zip archives"
  end
  if kind and t.s3 then
    return nil, "destination.name: '" .. pattern .. "' names an archive; on S3 chbackup writes directories "
      .. "(ClickHouse refuses zip on S3: zip requires seeking)"
  end
  return { disk = t.disk, path = t.path, s3 = t.s3 and t.s3:gsub("/+$", ""), access_key_id = t.access_key_id,
    secret_access_key = secret, name = pattern, compiled = compiled, archive = kind }
end


local function check_compression(t)
  if t == nil then
    return nil
  end
  if type(t) == "string" then
    t = { method = t }
  end
  local ok, err = expect_table(t, "compression")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "method", "level" }, "compression.")
  if not ok then
    return nil, err
  end
  if t.method ~= nil and (type(t.method) ~= "string" or not t.method:match("^[%w_]+$")) then
    return nil, "compression.method: expected a method name like \"lzma\", got " .. tostring(t.method)
  end
  if t.level ~= nil and math.type(t.level) ~= "integer" then
    return nil, "compression.level: expected an integer, got " .. tostring(t.level)
  end
  if t.method == nil and t.level == nil then
    return nil, "compression: give method and/or level"
  end
  return { method = t.method, level = t.level }
end


local function check_schedule(t)
  local ok, err = expect_table(t, "schedule")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "full", "incremental", "verify", "max_chain" }, "schedule.")
  if not ok then
    return nil, err
  end
  if t.full == nil then
    return nil, "schedule.full: required (a cron expression for full backups, e.g. \"0 2 * * *\")"
  end
  local s = {}
  for _, k in ipairs({ "full", "incremental", "verify" }) do
    if t[k] ~= nil then
      local cron, cerr = schedule.parse(t[k])
      if not cron then
        return nil, "schedule." .. k .. ": " .. cerr
      end
      if not schedule.next(cron, 0, schedule.zone("UTC")) then
        return nil, "schedule." .. k .. ": '" .. t[k] .. "' never fires"
      end
      s[k] = cron
    end
  end
  if t.max_chain ~= nil then
    if math.type(t.max_chain) ~= "integer" or t.max_chain < 1 then
      return nil, "schedule.max_chain: expected a count >= 1 (backups in one chain, the full included), got "
        .. tostring(t.max_chain)
    end
    s.max_chain = t.max_chain
  end
  return s
end


local function check_verification(t)
  if t == nil then
    t = {}
  end
  local ok, err = expect_table(t, "verification")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, { "backups", "row_counts", "counter", "clickhouse", "checks", "scratch", "keep_scratch",
    "max_age" }, "verification.")
  if not ok then
    return nil, err
  end
  local v = { row_counts = t.row_counts ~= false, keep_scratch = t.keep_scratch == true }
  local b = t.backups or "newest"
  if not (b == "newest" or b == "chain" or b == "all" or (math.type(b) == "integer" and b >= 1)) then
    return nil, "verification.backups: expected \"newest\", \"chain\", \"all\" or a sample size >= 1, got "
      .. tostring(b)
  end
  v.backups = b
  if t.row_counts ~= nil and type(t.row_counts) ~= "boolean" then
    return nil, "verification.row_counts: expected true or false, got " .. type(t.row_counts)
  end
  local c = t.counter or "parts"
  if c ~= "parts" and c ~= "clickhouse" and type(c) ~= "function" then
    return nil, "verification.counter: expected \"parts\", \"clickhouse\" or a function, got " .. tostring(c)
  end
  v.counter = c
  local ch = t.clickhouse
  if ch == nil then
    ch = "auto"
  end
  if not (ch == "auto" or ch == false or type(ch) == "function"
      or (type(ch) == "table" and (ch.chq == nil or type(ch.chq) == "string")
        and (ch.lib == nil or type(ch.lib) == "string"))) then
    return nil, "verification.clickhouse: expected \"auto\", false, {chq=, lib=} or a function, got " .. tostring(ch)
  end
  v.clickhouse = ch ~= "auto" and ch or nil
  if t.checks ~= nil then
    ok, err = expect_table(t.checks, "verification.checks")
    if not ok then
      return nil, err
    end
    for k, f in pairs(t.checks) do
      if type(f) ~= "function" then
        return nil, "verification.checks." .. tostring(k) .. ": expected a function(check), got " .. type(f)
      end
    end
    v.checks = t.checks
  end
  if t.scratch ~= nil and (type(t.scratch) ~= "string" or t.scratch:sub(1, 1) ~= "/") then
    return nil, "verification.scratch: expected an absolute directory, got " .. tostring(t.scratch)
  end
  v.scratch = t.scratch
  if t.keep_scratch ~= nil and type(t.keep_scratch) ~= "boolean" then
    return nil, "verification.keep_scratch: expected true or false, got " .. type(t.keep_scratch)
  end
  if t.max_age ~= nil then
    local d, derr = schedule.parse_duration(t.max_age)
    if not d then
      return nil, "verification.max_age: " .. derr
    end
    v.max_age = d
  end
  return v
end


local function check_hooks(t)
  if t == nil then
    return {}
  end
  local ok, err = expect_table(t, "hooks")
  if not ok then
    return nil, err
  end
  ok, err = known_keys(t, HOOKS, "hooks.")
  if not ok then
    return nil, err
  end
  for k, f in pairs(t) do
    if type(f) ~= "function" then
      return nil, "hooks." .. k .. ": expected a function(ctx), got " .. type(f)
    end
  end
  return t
end


-- Two runs of one schedule must not get the same backup name.
local function check_names_unique(pol)
  local zone = pol.zone
  local start = zone:epoch({ year = 2026, month = 1, day = 1, hour = 0, min = 0, sec = 0 })
  for _, k in ipairs({ "full", "incremental" }) do
    local cron = pol.schedule[k]
    if cron then
      local seen = {}
      local kind = k == "full" and "full" or "incr"
      for _, t in ipairs(schedule.upcoming(cron, start, zone, 400)) do
        local name = store.format_name(pol.destination.compiled, t, zone, kind)
        if seen[name] then
          return nil, string.format("destination.name: '%s' gives two runs of schedule.%s ('%s') the same name %s "
            .. "(at %s and %s); add finer placeholders such as {HH}{MM}", pol.destination.name, k, cron.text, name,
            schedule.format(seen[name], zone), schedule.format(t, zone))
        end
        seen[name] = t
      end
    end
  end
  return true
end


--- Checks a policy table (what a policy file returns). name is the
-- default policy name. Returns the checked policy or nil, err naming the
-- field. The checked policy keeps the original table as `.source_table`.
function policy.check(t, name)
  if type(t) ~= "table" then
    return nil, "a policy must return a table, got " .. type(t)
  end
  local ok, err = known_keys(t, TOP, "")
  if not ok then
    return nil, err
  end
  local pol = { source_table = t }
  pol.name = t.name or name
  if type(pol.name) ~= "string" or not pol.name:match("^[%w][%w_.%-]*$") then
    return nil, "name: expected a policy name of letters, digits, '_', '.' and '-', got " .. tostring(pol.name)
  end
  pol.zone, err = schedule.zone(t.timezone)
  if not pol.zone then
    return nil, "timezone: " .. err
  end
  pol.source, err = check_source(t.source)
  if not pol.source then
    return nil, err
  end
  pol.selection, err = selection.check(t.selection, "selection")
  if not pol.selection then
    return nil, err
  end
  if t.destination == nil then
    return nil, "destination: required (e.g. { disk = \"backups\", name = \"" .. policy.DEFAULT_NAME_PATTERN .. "\" })"
  end
  pol.destination, err = check_destination(t.destination, pol.name)
  if not pol.destination then
    return nil, err
  end
  pol.compression, err = check_compression(t.compression)
  if err then
    return nil, err
  end
  pol.password, err = check_secret(t.password, "password")
  if err then
    return nil, err
  end
  -- A password also encrypts directory backups (chbackup's own, beyond ClickHouse).
  if not pol.destination.archive and pol.compression then
    return nil, "compression: applies to zip backups only; end destination.name in .zip (e.g. '"
      .. pol.destination.name .. ".zip')"
  end
  if t.schedule == nil then
    return nil, "schedule: required (e.g. { full = \"0 2 * * *\", incremental = \"0 * * * *\" })"
  end
  pol.schedule, err = check_schedule(t.schedule)
  if not pol.schedule then
    return nil, err
  end
  if t.retention ~= nil then
    pol.retention, err = retention.check(t.retention, "retention")
    if not pol.retention then
      return nil, err
    end
  end
  pol.verification, err = check_verification(t.verification)
  if not pol.verification then
    return nil, err
  end
  pol.hooks, err = check_hooks(t.hooks)
  if not pol.hooks then
    return nil, err
  end
  ok, err = check_names_unique(pol)
  if not ok then
    return nil, err
  end
  return pol
end


-- The environment a policy file runs in: the safe standard library, no
-- globals of its own.
local function sandbox(path)
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall, print = print,
    select = select, tonumber = tonumber, tostring = tostring, type = type, xpcall = xpcall,
    rawequal = rawequal, rawget = rawget, rawlen = rawlen, rawset = rawset,
    setmetatable = setmetatable, getmetatable = getmetatable,
    math = math, string = string, table = table, utf8 = utf8,
    os = {
      clock = os.clock, date = os.date, difftime = os.difftime, getenv = os.getenv, time = os.time,
      execute = os.execute, remove = os.remove, rename = os.rename, tmpname = os.tmpname,
    },
    io = { open = io.open, lines = io.lines, popen = io.popen, stderr = io.stderr, stdout = io.stdout },
    _VERSION = _VERSION,
  }
  return setmetatable(base, {
    __index = function(_, k)
      error(string.format("policy %s: unknown global '%s'", path, tostring(k)), 2)
    end,
    __newindex = function(_, k)
      error(string.format("policy %s: assigns global '%s' (use local)", path, tostring(k)), 2)
    end,
  })
end


--- Loads and checks a policy file. Returns the policy or nil, err (the
-- message names the file and, for a wrong policy, the field).
function policy.load(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, "cannot read policy " .. path .. ": " .. tostring(err)
  end
  local src = f:read("a")
  f:close()
  local chunk, lerr = load(src, "@" .. path, "t", sandbox(path))
  if not chunk then
    return nil, "policy " .. path .. ": " .. tostring(lerr)
  end
  local ok, t = pcall(chunk)
  if not ok then
    return nil, "policy " .. path .. ": " .. tostring(t)
  end
  local default_name = path:match("([^/]+)%.lua$") or path:match("([^/]+)$")
  default_name = default_name:gsub("[^%w_.%-]", "_")
  local pol
  pol, err = policy.check(t, default_name)
  if not pol then
    return nil, "policy " .. path .. ": " .. err
  end
  pol.file = path
  return pol
end


--- See chbackup.policy.runner.plan.
function policy.plan(pol, now, env)
  return require("chbackup.policy.runner").plan(pol, now, env)
end


--- See chbackup.policy.runner.run.
function policy.run(pol, now, env)
  return require("chbackup.policy.runner").run(pol, now, env)
end


--- See chbackup.policy.runner.verify.
function policy.verify(pol, now, env, opts)
  return require("chbackup.policy.runner").verify(pol, now, env, opts)
end


--- See chbackup.policy.runner.watch.
function policy.watch(pol, env)
  return require("chbackup.policy.runner").watch(pol, env)
end


return policy
