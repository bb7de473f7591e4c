--- One run of a policy at a time on an S3 destination: a lock object, as
-- restic's and pgBackRest's repository locks on object storage (there is no
-- flock on S3, and nothing releases an object when its writer is killed).
--
-- The object `<destination prefix>/.chbackup-policy-<name>.lock` is created
-- with put-if-absent (`If-None-Match: *`; a server that ignores it, as
-- s3rver, is covered by reading the object back: the run whose token is
-- there holds it). Its text names the holder and when it was last alive:
--
--   operation policy <name> run
--   pid <pid>
--   host <hostname>
--   token <random hex>
--   started <epoch seconds>
--   heartbeat <epoch seconds>
--
-- The holder rewrites `heartbeat` every REFRESH seconds (from the job poll
-- loop, chbackup.runner.observe, and between steps), first checking that
-- its token is still there: a run whose lock was taken over stops before
-- its next step (it never deletes backups without the lock).
--
-- A lock is taken over (logged) only when its holder is provably gone:
--   * same host, and its process is gone (killed), or it is this process
--     and no run of it holds the lock (a release that failed), or
--   * its heartbeat is older than STALE seconds (30 min, restic's): a live
--     holder refreshes every 5 min, and S3 refuses any request from a
--     clock more than 15 min off (RequestTimeTooSkewed), so 30 min cannot
--     be a live holder's heartbeat read through a skewed clock.
-- Any other lock refuses the run, naming the object, holder, host and age.
-- @module chbackup.policy.s3lock
local core = require("chbackup.core")
local s3 = require("chbackup.store.s3")

local s3lock = {}

s3lock.REFRESH = 300
s3lock.STALE = 1800

local active = {}   -- s3://bucket/key -> true: the locks this process holds (s3lock.stale)


--- The key of policy `name`'s lock object below the resolved root.
function s3lock.key(root, name)
  local file = ".chbackup-policy-" .. name .. ".lock"
  return root.prefix ~= "" and (root.prefix .. "/" .. file) or file
end


--- The fields of a lock object's text: {operation=, pid=, host=, token=,
-- started=, heartbeat=} (missing fields nil).
function s3lock.parse(text)
  text = text or ""
  local f = {}
  for k, v in text:gmatch("([%w_]+) ([^\n]*)") do
    f[k] = f[k] or v
  end
  f.pid, f.started, f.heartbeat = tonumber(f.pid), tonumber(f.started), tonumber(f.heartbeat)
  return f
end


local function text_of(f)
  return string.format("operation %s\npid %d\nhost %s\ntoken %s\nstarted %d\nheartbeat %d\n",
    f.operation, f.pid, f.host, f.token, f.started, f.heartbeat)
end


-- "pid N on host H, started T, last heartbeat S s ago"
local function describe(f, now)
  return string.format("pid %s on host %s, started %s, last heartbeat %s", tostring(f.pid), tostring(f.host),
    f.started and os.date("!%Y-%m-%dT%H:%M:%SZ", f.started) or "?",
    f.heartbeat and ((now - f.heartbeat) .. " s ago") or "never")
end


--- Whether the holder of a lock (parsed) is provably gone at now (where:
-- the lock's s3:// path): returns why (a message) or nil.
function s3lock.stale(f, now, where)
  if f.host == s3.hostname() and f.pid == core.getpid() and not (where and active[where]) then
    return "it is this process's, from a run whose release failed"
  end
  if f.host == s3.hostname() and f.pid and f.pid ~= core.getpid() then
    local stat = io.open("/proc/" .. f.pid .. "/stat")
    if not stat then
      return "its process is gone (same host)"
    end
    stat:close()
  end
  if f.heartbeat and now - f.heartbeat > s3lock.STALE then
    return "its heartbeat is " .. (now - f.heartbeat) .. " s old (stale after " .. s3lock.STALE .. " s)"
  end
  return nil
end


--- The holder of policy `name`'s lock on the S3 root if it is provably
-- gone (what a run would take over; for `policy plan`, which takes no
-- lock): the parsed lock, or nil (no lock, or a live one).
function s3lock.dead_holder(c, root, name, now)
  local key = s3lock.key(root, name)
  local text = c:get(key)
  local f = text and s3lock.parse(text)
  return f and s3lock.stale(f, now, "s3://" .. root.bucket .. "/" .. key) and f or nil
end


local Lock = {}
Lock.__index = Lock


--- Takes policy `name`'s lock on the S3 root `root` with client c.
-- opts: what ("run" | "verify"), clock (seconds, default os.time), log(msg)
-- for a take-over. Returns a lock, or nil, err (naming the object).
function s3lock.take(c, root, name, opts)
  local clock = opts.clock or os.time
  local key = s3lock.key(root, name)
  local where = "s3://" .. root.bucket .. "/" .. key
  local token = assert(core.random_hex(16))
  local now = clock()
  local mine = { operation = "policy " .. name .. " " .. (opts.what or "run"), pid = core.getpid(),
    host = s3.hostname(), token = token, started = now, heartbeat = now }
  local ok, err, code = c:put_if_absent(key, text_of(mine))
  if not ok and code == "EEXIST" then
    local text, gerr, gcode = c:get(key)
    if not text and gcode ~= "ENOENT" then
      return nil, "cannot read the lock " .. where .. " of policy " .. name .. ": " .. tostring(gerr), gcode
    end
    local held = text and s3lock.parse(text)
    local why = held and s3lock.stale(held, now, where)
    if not held then   -- gone meanwhile: one more try
      ok, err, code = c:put_if_absent(key, text_of(mine))
    elseif not why then
      return nil, string.format("another run of policy %s is in progress (%s; lock %s); it is taken over once "
        .. "its heartbeat is %d s old, or delete that object if you know the run is dead", name,
        describe(held, now), where, s3lock.STALE), "LOCKED"
    else
      ok, err, code = c:delete(key)
      if ok then
        opts.log(string.format("took over the lock %s of a dead run of policy %s (%s): %s", where, name,
          describe(held, now), why))
        ok, err, code = c:put_if_absent(key, text_of(mine))
      end
      mine.took_over = held
    end
  end
  if not ok then
    if code == "EEXIST" then
      return nil, "another run of policy " .. name .. " took the lock " .. where .. " first", "LOCKED"
    end
    return nil, "cannot take the lock " .. where .. " of policy " .. name .. ": " .. tostring(err), code
  end
  -- a server that ignores If-None-Match lets two PUTs both succeed: the token there wins
  local there = s3lock.parse(c:get(key))
  if there.token ~= token then
    return nil, string.format("another run of policy %s took the lock %s at the same time (%s)", name, where,
      describe(there, now)), "LOCKED"
  end
  active[where] = true
  return setmetatable({ c = c, key = key, where = where, f = mine, clock = clock, name = name,
    took_over = mine.took_over }, Lock)
end


--- Rewrites the heartbeat if REFRESH seconds have passed (force: now).
-- Returns true, or nil, err when the lock is no longer this run's (taken
-- over, deleted): the run must stop. A failed request is not a loss (the
-- next refresh tries again; STALE leaves room for several).
function Lock:refresh(force)
  if self.lost then
    return nil, self.lost
  end
  local now = self.clock()
  if not force and now - self.f.heartbeat < s3lock.REFRESH then
    return true
  end
  local text, err, code = self.c:get(self.key)
  if not text and code ~= "ENOENT" then
    return true, err
  end
  local there = s3lock.parse(text)
  if there.token ~= self.f.token then
    self.lost = "the lock " .. self.where .. " of policy " .. self.name .. " is no longer this run's ("
      .. (text and ("taken over by " .. describe(there, now)) or "deleted") .. ")"
    return nil, self.lost
  end
  self.f.heartbeat = now
  local ok, perr = self.c:put(self.key, text_of(self.f))
  return true, not ok and perr or nil
end


--- Deletes the lock object if it is still this run's.
function Lock:release()
  active[self.where] = nil
  if self.lost then
    return
  end
  local there = s3lock.parse(self.c:get(self.key))
  if there.token == self.f.token then
    self.c:delete(self.key)
  end
  self.lost = "released"
end


return s3lock
