--- chbackup: ClickHouse BACKUP and RESTORE outside the server.
--
--   local chbackup = require("chbackup")
--   local ch = assert(chbackup.open{ path = "/var/lib/clickhouse",
--                                    config = "/etc/clickhouse-server/config.xml" })
--   local r = assert(ch:execute("BACKUP TABLE test.t TO Disk('backups', 'b1')"))
--   print(r[1].id, r[1].status)
--
-- Expected failures return `nil, message` (the message names the table,
-- file, setting or backup); misuse raises.
-- @module chbackup
local backup = require("chbackup.backup")
local catalog = require("chbackup.catalog")
local chain = require("chbackup.chain")
local config = require("chbackup.config")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local inspect = require("chbackup.inspect")
local lock = require("chbackup.lock")
local query = require("chbackup.query")
local restore = require("chbackup.restore")
local settings_mod = require("chbackup.settings")
local sql = require("chbackup.sql")
local status = require("chbackup.status")
local uuid = require("chbackup.uuid")

local chbackup = { core = core, _VERSION = core._VERSION }

local Instance = {}
Instance.__index = Instance

local Operation = {}
Operation.__index = Operation

chbackup.DEFAULT_PATH = "/var/lib/clickhouse"


--- Opens a data path with a configuration.
-- opts: { path = data path (default /var/lib/clickhouse),
--         config = XML file path | Lua table | loaded config (default
--                  /etc/clickhouse-server/config.xml),
--         status_dir = where operations are recorded (default
--                  <path>/.chbackup/status; false: none, for chain, diff and
--                  inspecting only), threads = workers (default: cores),
--         status_keep, status_days = finished operations kept: the newest
--                  1000, none older than 30 days (0: no limit) }
function chbackup.open(opts)
  opts = opts or {}
  local path = opts.path or chbackup.DEFAULT_PATH
  local cfg, err
  if type(opts.config) == "table" and opts.config.disks and opts.config.allowed_disks then
    cfg = opts.config
  elseif type(opts.config) == "table" then
    cfg, err = config.from_table(opts.config)
  else
    cfg, err = config.load(opts.config or config.default_path)
  end
  if not cfg then
    return nil, err
  end
  local status_dir, store = opts.status_dir, nil
  if status_dir ~= false then -- false: inspecting backups only, no status table
    status_dir = status_dir or os.getenv("CHBACKUP_STATUS_DIR") or (path:gsub("/+$", "") .. "/.chbackup/status")
    store, err = status.open(status_dir, { keep = opts.status_keep, days = opts.status_days })
    if not store then
      return nil, err
    end
  end
  return setmetatable({
    path = path, config = cfg, store = store, threads = opts.threads, status_dir = status_dir,
  }, Instance)
end


--- Parses SQL text into requests (see chbackup.sql for their shape).
function chbackup.parse(text)
  return sql.parse(text)
end


local function is_uuid(s)
  return type(s) == "string" and s:match("^%x+%-%x+%-%x+%-%x+%-%x+$") ~= nil
end


-- Opens the catalog for an operation; RESTORE may start a fresh data path.
function Instance:_catalog(kind)
  local cat, err = catalog.open(self.path, self.config)
  if cat or kind ~= "restore" then
    return cat, err
  end
  -- A fresh data path: missing, or empty but for chbackup's own status.
  if fsutil.exists(self.path) then
    if not fsutil.is_dir(self.path) then
      return nil, err
    end
    for entry in require("lfs").dir(self.path) do
      if entry ~= "." and entry ~= ".." and entry ~= ".chbackup" then
        return nil, err
      end
    end
  end
  local ok, merr = fsutil.mkdir_p(self.path .. "/metadata")
  if not ok then
    return nil, merr
  end
  return catalog.open(self.path, self.config)
end


--- Starts a BACKUP or RESTORE request. Returns an Operation (already
-- registered in the status table) or nil, err for a request refused
-- before it started (bad setting, destination not allowed, duplicate id).
function Instance:start(req)
  return self:_start(req, nil)
end


--- Continues an operation registered by another process (the detached
-- half of an ASYNC statement in the CLI).
function Instance:resume(id, req)
  local row = self.store:get(id)
  if not row then
    return nil, "no operation with id '" .. id .. "'"
  end
  return self:_start(req, row)
end


function Instance:_start(req, row)
  if req.kind ~= "backup" and req.kind ~= "restore" then
    return nil, "not a BACKUP or RESTORE request"
  end
  local set, err = settings_mod.check(req.kind, req.settings)
  if not set then
    return nil, err
  end
  if set.async then   -- SETTINGS async = 1 is ClickHouse's other spelling of ASYNC
    req.async = true
  end
  local dest
  dest, err = config.resolve(self.config, req.destination)
  if not dest then
    return nil, err
  end
  if row then
    self.store:update(row.id, { pid = core.getpid() })
  else
    row, err = self.store:begin({
      id = set.id, name = dest.name, kind = req.kind, pid = core.getpid(),
      base_backup_name = set.base_backup and sql.format_destination(set.base_backup) or nil,
    })
    if not row then
      return nil, err
    end
  end
  local op = setmetatable({
    instance = self, request = req, id = row.id, settings = set, dest = dest,
  }, Operation)
  op.co = coroutine.create(function()
    return op:_run()
  end)
  return op
end


function Operation:_run()
  local inst, req = self.instance, self.request
  local cat, err = inst:_catalog(req.kind)
  local counters, code
  if cat then
    local ctx = {
      catalog = cat, store = inst.store, op_id = self.id,
      op_uuid = is_uuid(self.id) and self.id or uuid.new(),
      threads = self.settings.threads or inst.threads, settings = self.settings,
      dest = self.dest, config = inst.config,
    }
    local cancel_file = inst:_cancel_file(self.id)
    ctx.cancelled = function()
      return self.cancel_requested or fsutil.exists(cancel_file)
    end
    -- Generational GC while an operation runs: its per-file tables and
    -- strings are mostly short-lived, and collected young (issue 14).
    local gc_mode = collectgarbage("generational")
    local ok, res, rerr, rcode
    if req.kind == "backup" then
      ok, res, rerr, rcode = pcall(backup.run, ctx, req)
    else   -- under the data path's lock (chbackup.lock)
      ok, res, rerr, rcode = pcall(lock.run_restore, restore.run, ctx, req)
    end
    collectgarbage(gc_mode)
    if not ok then
      counters, err = nil, "internal error: " .. tostring(res)
      self.internal = true -- a bug, not an expected failure
    else
      counters, err, code = res, rerr, rcode
    end
    os.remove(cancel_file)
  end
  local final
  if counters then
    inst.store:update(self.id, counters)
    final = req.kind == "backup" and "BACKUP_CREATED" or "RESTORED"
  elseif code == "CANCELLED" then
    final = req.kind == "backup" and "BACKUP_CANCELLED" or "RESTORE_CANCELLED"
  else
    final = req.kind == "backup" and "BACKUP_FAILED" or "RESTORE_FAILED"
  end
  inst.store:finish(self.id, final, err)
  return final, err
end


--- Advances the operation: returns true when it has ended.
function Operation:poll()
  if coroutine.status(self.co) == "dead" then
    return true
  end
  local ok, final, err = coroutine.resume(self.co)
  if not ok then
    error(final)
  end
  if coroutine.status(self.co) == "dead" then
    self.final, self.error = final, err
    return true
  end
  return false
end


--- Runs the operation to its end. Returns {id=, status=, error=}, with
-- internal = true when the error is a bug (a Lua error the operation caught).
function Operation:wait()
  while not self:poll() do
    -- the runner yields while the C job works; nothing else to do here
    assert(true)
  end
  return { id = self.id, status = self.final, error = self.error, internal = self.internal }
end


--- Asks the operation to stop: the C job stops between two buffers, what
-- the operation wrote is removed, and its status becomes *_CANCELLED.
function Operation:cancel()
  self.cancel_requested = true
end


function Operation:status()
  return self.instance.store:get(self.id)
end


--- Executes SQL text (one or more statements) or one request table.
-- opts.on_result(r) is called as each statement ends (the CLI prints there);
-- opts.on_start(op) as each BACKUP or RESTORE starts; opts.on_async(op)
-- takes over ASYNC operations. Returns a list of results: {id=, status=, error=} for BACKUP/RESTORE
-- ({id=, status=} with ASYNC, the operation left to `async` handling),
-- {text=} for SELECT. Stops at the first failure: nil, err.
function Instance:execute(statements, opts)
  opts = opts or {}
  local reqs, err
  if type(statements) == "string" then
    reqs, err = sql.parse(statements)
    if not reqs then
      return nil, err
    end
  else
    reqs = { statements }
  end
  local results = {}
  for _, req in ipairs(reqs) do
    if req.kind == "select" then
      local text, qerr = self:query(req)
      if not text then
        return nil, qerr
      end
      results[#results + 1] = { text = text }
      if opts.on_result then
        opts.on_result(results[#results])
      end
    else
      local op, serr = self:start(req)
      if not op then
        return nil, serr
      end
      if opts.on_start then
        opts.on_start(op)
      end
      local r
      if req.async and opts.on_async then
        r = opts.on_async(op)
      else
        r = op:wait()
        if r.error and r.error ~= "" then
          return nil, r.error, r
        end
      end
      results[#results + 1] = r
      if opts.on_result then
        opts.on_result(r)
      end
    end
  end
  return results
end


function Instance:_cancel_file(id)
  return self.status_dir .. "/" .. id:gsub("[^%w%-_.]", "_") .. ".cancel"
end


--- Asks a running operation, possibly in another process (an ASYNC
-- statement of the CLI), to cancel. Returns true or nil, err.
function Instance:cancel(id)
  local row = self.store:get(id)
  if not row then
    return nil, "no operation with id '" .. id .. "'"
  end
  if row.status ~= "CREATING_BACKUP" and row.status ~= "RESTORING" then
    return nil, "operation '" .. id .. "' has already ended (" .. row.status .. ")"
  end
  return fsutil.write_file(self:_cancel_file(id), "cancel\n")
end


-- A backup given as a name ("Disk('backups', 'a')") or a destination table;
-- opts.password opens encrypted backups.
function Instance:_open_backup(backup_name, opts)
  local dest = backup_name
  if type(backup_name) == "string" then
    local err
    dest, err = chain.parse_name(backup_name)
    if not dest then
      return nil, err
    end
  end
  return chain.open(self.config, dest, { password = opts and opts.password })
end


--- The chain of a backup, newest first (see chbackup.inspect.chain);
-- opts.password opens encrypted backups.
function Instance:chain(backup_name, opts)
  local b, err = self:_open_backup(backup_name, opts)
  if not b then
    return nil, err
  end
  return inspect.chain(b)
end


--- Verifies a backup in place (chbackup.check): returns its report
-- ({ok=, steps={ {name=, ok=, detail=} }}), or nil, err when the backup
-- cannot be opened. opts: read_data, password.
function Instance:check(backup_name, opts)
  opts = opts or {}
  local b, err = self:_open_backup(backup_name, opts)
  if not b and err:find(" is corrupt", 1, true) then
    -- a damaged manifest is what a check is for: reported as its finding
    return { ok = false, steps = { { name = "manifest", ok = false, detail = err } } }
  elseif not b then
    return nil, err
  end
  return require("chbackup.check").run(b, { read_data = opts.read_data, threads = self.threads })
end


--- The backups at a destination (chbackup.listing): dest_name is a backup
-- name with a prefix path, e.g. "Disk('backups', '')"; opts.password opens
-- encrypted ones. Returns rows or nil, err.
function Instance:list(dest_name, opts)
  return require("chbackup.listing").run(self.config, dest_name, { password = opts and opts.password })
end


--- Deletes a backup whole, refusing while another backup at its
-- destination relies on it (chbackup.listing.delete). Returns true or nil, err.
function Instance:delete(backup_name, opts)
  return require("chbackup.listing").delete(self.config, backup_name, { password = opts and opts.password })
end


--- Turns an incremental backup into a standalone one (chbackup.rebase).
-- Returns the bytes written or nil, err.
function Instance:rebase(backup_name, opts)
  return require("chbackup.rebase").run(self.config, backup_name,
    { password = opts and opts.password, onto = opts and opts.onto, threads = self.threads })
end


--- What changed between two backups (see chbackup.inspect.diff);
-- opts.password opens encrypted backups (the same password for both).
function Instance:diff(from_name, to_name, opts)
  local a, err = self:_open_backup(from_name, opts)
  if not a then
    return nil, err
  end
  local b
  b, err = self:_open_backup(to_name, opts)
  if not b then
    return nil, err
  end
  return inspect.diff(a, b)
end


--- Rows of the status table (system.backups columns).
function Instance:status_rows()
  return self.store:rows()
end


--- Runs a SELECT … FROM system.backups request; returns formatted text.
function Instance:query(req)
  if req.table ~= "system.backups" then
    return nil, "unknown table " .. tostring(req.table) .. ": chbackup answers SELECT from system.backups only"
  end
  return query.run(req, self.store:rows(), status.COLUMNS)
end


return chbackup
