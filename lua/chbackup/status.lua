--- The operations log: one row per BACKUP or RESTORE, with the columns of
-- ClickHouse's system.backups, persisted across processes.
--
-- A store is a directory holding one JSON file per operation,
-- `<dir>/<escaped id>.json`. Every write goes to `<file>.tmp.<pid>` first
-- and is then renamed (or hard-linked, for a new row) into place, so a
-- reader in another process sees either the previous row or the new one,
-- never half a row. Times are integers: microseconds since the epoch.
--
-- Failures a caller can cause with its input (a duplicate id, an unknown
-- operation, a row already finished) return `nil, message`; misuse of the
-- API (a wrong type, an unknown field) raises.
-- @module chbackup.status
local cjson = require "cjson"
local lfs = require "lfs"

local status = {}


--- Status names in the order of ClickHouse's Enum8 (value = index - 1).
status.STATUSES = {
  "CREATING_BACKUP", "BACKUP_CREATED", "BACKUP_FAILED", "RESTORING",
  "RESTORED", "RESTORE_FAILED", "BACKUP_CANCELLED", "RESTORE_CANCELLED",
}

local function enum_type(names)
  local parts = {}
  for i, name in ipairs(names) do
    parts[i] = string.format("'%s' = %d", name, i - 1)
  end
  return "Enum8(" .. table.concat(parts, ", ") .. ")"
end

--- The type of the status column, spelled as ClickHouse prints it.
status.STATUS_TYPE = enum_type(status.STATUSES)

--- system.backups' columns (ClickHouse 26.5, without ProfileEvents), in
-- order: `{ name = "id", type = "String" }, ...`.
status.COLUMNS = {
  { name = "id", type = "String" },
  { name = "name", type = "String" },
  { name = "base_backup_name", type = "String" },
  { name = "query_id", type = "String" },
  { name = "status", type = status.STATUS_TYPE },
  { name = "error", type = "String" },
  { name = "start_time", type = "DateTime64(6)" },
  { name = "end_time", type = "DateTime64(6)" },
  { name = "num_files", type = "UInt64" },
  { name = "total_size", type = "UInt64" },
  { name = "num_entries", type = "UInt64" },
  { name = "uncompressed_size", type = "UInt64" },
  { name = "compressed_size", type = "UInt64" },
  { name = "files_read", type = "UInt64" },
  { name = "bytes_read", type = "UInt64" },
}

--- The counters `store:update` merges.
status.COUNTERS = {
  "num_files", "total_size", "num_entries", "uncompressed_size",
  "compressed_size", "files_read", "bytes_read",
}

local STRING_FIELDS = { "id", "name", "base_backup_name", "query_id",
  "status", "error", "kind" }
local INTEGER_FIELDS = { "start_time", "end_time", "num_files", "total_size",
  "num_entries", "uncompressed_size", "compressed_size", "files_read",
  "bytes_read", "pid", "pid_start" }

-- Order of keys in the JSON file: the columns, then our own fields.
local FILE_KEYS = {}
for _, column in ipairs(status.COLUMNS) do
  FILE_KEYS[#FILE_KEYS + 1] = column.name
end
FILE_KEYS[#FILE_KEYS + 1] = "kind"
FILE_KEYS[#FILE_KEYS + 1] = "pid"
FILE_KEYS[#FILE_KEYS + 1] = "pid_start"

local IS_COUNTER = {}
for _, name in ipairs(status.COUNTERS) do
  IS_COUNTER[name] = true
end

local RUNNING = { backup = "CREATING_BACKUP", restore = "RESTORING" }
local FAILED = { backup = "BACKUP_FAILED", restore = "RESTORE_FAILED" }
local FINAL = {
  BACKUP_CREATED = "backup", BACKUP_FAILED = "backup",
  BACKUP_CANCELLED = "backup", RESTORED = "restore",
  RESTORE_FAILED = "restore", RESTORE_CANCELLED = "restore",
}

local ID_MAX = 200  -- bytes; keeps "<escaped id>.json.tmp.<pid>" a file name

local Store = {}
Store.__index = Store


-- JSON ---------------------------------------------------------------------

-- lua-cjson 2.1.0 prints numbers with 14 significant digits, which would
-- round a microsecond timestamp; rows are flat, so they are written here.
local JSON_ESCAPES = {
  ["\""] = "\\\"", ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function json_string(s)
  return "\"" .. s:gsub("[%c\"\\]", function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
  end) .. "\""
end

local function encode_row(row)
  local parts = {}
  for _, key in ipairs(FILE_KEYS) do
    local value = row[key]
    if math.type(value) == "integer" then
      parts[#parts + 1] = json_string(key) .. ": " .. string.format("%d", value)
    elseif type(value) == "string" then
      parts[#parts + 1] = json_string(key) .. ": " .. json_string(value)
    end
  end
  return "{\n  " .. table.concat(parts, ",\n  ") .. "\n}\n"
end

-- cjson decodes every number as a float: exact up to 2^53.
local function decode_row(text, path)
  local ok, data = pcall(cjson.decode, text)
  if not ok or type(data) ~= "table" then
    return nil, string.format("cannot parse operation file %s", path)
  end
  local row = {}
  for _, key in ipairs(STRING_FIELDS) do
    local value = data[key]
    if value ~= nil and type(value) ~= "string" then
      return nil, string.format("bad %s in operation file %s", key, path)
    end
    row[key] = value
  end
  for _, key in ipairs(INTEGER_FIELDS) do
    local value = data[key]
    if value ~= nil then
      value = type(value) == "number" and math.tointeger(value)
      if not value then
        return nil, string.format("bad %s in operation file %s", key, path)
      end
    end
    row[key] = value
  end
  if type(row.id) ~= "string" or not status.status_value(row.status)
      or (row.kind ~= "backup" and row.kind ~= "restore") then
    return nil, string.format("bad operation file %s", path)
  end
  for _, column in ipairs(status.COLUMNS) do
    if row[column.name] == nil then
      row[column.name] = column.type == "String" and "" or 0
    end
  end
  return row
end


-- Files --------------------------------------------------------------------

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local text = f:read("a")
  f:close()
  return text
end

local function my_pid()
  local target = lfs.symlinkattributes("/proc/self", "target")
  return target and math.tointeger(tonumber(target))
end

-- mkdir -p
local function make_dirs(dir)
  if lfs.attributes(dir, "mode") == "directory" then
    return true
  end
  local path = dir:sub(1, 1) == "/" and "" or "."
  for part in dir:gmatch("[^/]+") do
    path = path .. "/" .. part
    local mode = lfs.attributes(path, "mode")
    if mode == nil then
      local ok, err = lfs.mkdir(path)
      if not ok and lfs.attributes(path, "mode") ~= "directory" then
        return nil, string.format("cannot create directory %s: %s", path, err)
      end
    elseif mode ~= "directory" then
      return nil, string.format("cannot create directory %s: not a directory",
        path)
    end
  end
  return true
end

-- Operation ids are free text (ClickHouse's `id` setting); a file name
-- keeps letters, digits, "_", "-" and "." and writes %XX for other bytes.
local function file_name(id)
  local escaped = id:gsub("[^%w_%-%.]", function(c)
    return string.format("%%%02X", c:byte())
  end)
  escaped = escaped:gsub("^%.", "%%2E")
  return escaped .. ".json"
end

-- Writes `text` to a temporary file beside `path`; returns its name.
local function write_temp(path, text)
  local temp = string.format("%s.tmp.%s", path, my_pid() or
    string.format("%08x", math.random(0, 0x7fffffff)))
  local f, err = io.open(temp, "wb")
  if not f then
    return nil, string.format("cannot write %s: %s", temp, err)
  end
  local ok, werr = f:write(text)
  if ok then
    ok, werr = f:flush()
  end
  f:close()
  if not ok then
    os.remove(temp)
    return nil, string.format("cannot write %s: %s", temp, werr)
  end
  return temp
end

-- Replaces the file atomically.
local function write_atomic(path, text)
  local temp, err = write_temp(path, text)
  if not temp then
    return nil, err
  end
  local ok, rerr = os.rename(temp, path)
  if not ok then
    os.remove(temp)
    return nil, string.format("cannot rename %s: %s", temp, rerr)
  end
  return true
end

-- Creates the file atomically, only if it does not exist yet: a hard link
-- fails with EEXIST, so two processes beginning the same id cannot both win.
local function create_atomic(path, text)
  local temp, err = write_temp(path, text)
  if not temp then
    return nil, err
  end
  local ok, lerr = lfs.link(temp, path)
  if not ok and lfs.attributes(path, "mode") == nil then
    -- no hard links on this file system: check, then rename
    ok, lerr = os.rename(temp, path)
  end
  os.remove(temp)
  if not ok then
    return nil, lerr
  end
  return true
end


-- Processes ----------------------------------------------------------------

-- Start time (clock ticks since boot) and state of a process, or nil.
local function process_info(pid)
  local text = read_file("/proc/" .. pid .. "/stat")
  if not text then
    return nil
  end
  -- "pid (comm) state ppid ..."; comm may hold spaces and parentheses
  local rest = text:match("^.*%)%s+(.*)$")
  if not rest then
    return nil
  end
  local fields = {}
  for field in rest:gmatch("%S+") do
    fields[#fields + 1] = field
  end
  -- after the ")": field 3 (state) is fields[1], field 22 (starttime) is [20]
  return math.tointeger(tonumber(fields[20])), fields[1]
end

local function process_ended(pid, pid_start)
  if lfs.attributes("/proc/self", "mode") == nil then
    return false  -- no /proc: cannot tell
  end
  local start, state = process_info(pid)
  if not start then
    return true
  end
  if state == "Z" or state == "X" then
    return true
  end
  return pid_start ~= nil and start ~= pid_start  -- the pid was reused
end


-- Ids and clock ------------------------------------------------------------

--- A random UUID (version 4) from /dev/urandom, as ClickHouse prints them.
function status.uuid4()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(16)
  if f then
    f:close()
  end
  local b = {}
  for i = 1, 16 do
    b[i] = bytes and #bytes == 16 and bytes:byte(i) or math.random(0, 255)
  end
  b[7] = (b[7] & 0x0f) | 0x40
  b[9] = (b[9] & 0x3f) | 0x80
  return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
    .. "%02x%02x%02x%02x%02x%02x", table.unpack(b))
end

local function default_clock()
  local ok, core = pcall(require, "chbackup.core")
  if ok and type(core) == "table" and type(core.now_us) == "function" then
    return core.now_us
  end
  return function()
    return os.time() * 1000000
  end
end

--- The Enum8 value of a status name (0..7), or nil.
function status.status_value(name)
  for i, known in ipairs(status.STATUSES) do
    if known == name then
      return i - 1
    end
  end
  return nil
end


-- Store --------------------------------------------------------------------

--- How many finished operations a store keeps, and for how long (as
-- ClickHouse's system.backup_log TTL): a finished row older than `days`
-- or not among the newest `keep` is removed (0: no limit).
status.DEFAULT_KEEP = 1000
status.DEFAULT_DAYS = 30


--- Opens (creating it if needed) the operations log in `dir`.
-- `options.clock`: a function returning microseconds since the epoch
-- (default: `chbackup.core.now_us` when loadable, else whole seconds).
-- `options.keep`, `options.days`: pruning of finished rows (above), done
-- as operations finish (default status.DEFAULT_KEEP, DEFAULT_DAYS).
-- @treturn[1] store
-- @treturn[2] nil, message
function status.open(dir, options)
  if type(dir) ~= "string" or dir == "" then
    error("status.open: dir must be a non-empty string", 2)
  end
  options = options or {}
  if options.clock ~= nil and type(options.clock) ~= "function" then
    error("status.open: options.clock must be a function", 2)
  end
  local ok, err = make_dirs(dir)
  if not ok then
    return nil, err
  end
  for _, k in ipairs({ "keep", "days" }) do
    local v = options[k]
    if v ~= nil and (type(v) ~= "number" or v < 0) then
      return nil, string.format("status %s must be a number >= 0 (0: no limit), got %s", k, tostring(v))
    end
  end
  return setmetatable({
    dir = dir:gsub("(.)/+$", "%1"),
    clock = options.clock or default_clock(),
    keep = math.tointeger(options.keep) or math.floor(options.keep or status.DEFAULT_KEEP),
    days = options.days or status.DEFAULT_DAYS,
  }, Store)
end


--- The file holding the row of operation `id`.
function Store:path(id)
  return self.dir .. "/" .. file_name(id)
end


-- The clock, as an integer.
local function now(store)
  local us = store.clock()
  return math.tointeger(us) or math.tointeger(math.floor(us))
end


-- The row as stored, without the liveness check.
local function read_row(store, id)
  local path = store:path(id)
  local text = read_file(path)
  if not text then
    return nil
  end
  return decode_row(text, path)
end


-- A running row whose process has ended is reported as failed.
local function report(row)
  if row.status == RUNNING[row.kind] and row.pid
      and process_ended(row.pid, row.pid_start) then
    row.status = FAILED[row.kind]
    row.error = string.format(
      "process %d ended without finishing the operation", row.pid)
  end
  row.pid_start = nil
  return row
end


local function check_id(id)
  if type(id) ~= "string" then
    error("operation id must be a string", 3)
  end
  if id == "" then
    return nil, "operation id is empty"
  end
  if #id > ID_MAX then
    return nil, string.format("operation id '%s...' is longer than %d bytes",
      id:sub(1, 40), ID_MAX)
  end
  return true
end


local function check_string(fields, key)
  local value = fields[key]
  if value ~= nil and type(value) ~= "string" then
    error(string.format("begin: %s must be a string", key), 3)
  end
  return value or ""
end


local function check_pid(value, where)
  if value == nil then
    return nil
  end
  local pid = math.tointeger(value)
  if not pid or pid <= 0 then
    error(where .. ": pid must be a positive integer", 3)
  end
  return pid
end


--- Records a new operation: status CREATING_BACKUP or RESTORING,
-- start_time now, counters 0.
-- `fields`: `kind` ("backup"|"restore"), `id` (default: a new UUID),
-- `name`, `base_backup_name`, `query_id`, `pid` (the process doing the
-- work; when it dies unfinished, the row reads as failed).
-- @treturn[1] row
-- @treturn[2] nil, message (duplicate id, unwritable directory)
function Store:begin(fields)
  if type(fields) ~= "table" then
    error("begin: fields must be a table", 2)
  end
  local kind = fields.kind
  if kind ~= "backup" and kind ~= "restore" then
    error("begin: kind must be \"backup\" or \"restore\"", 2)
  end
  local id = fields.id
  if id == nil then
    id = status.uuid4()
  end
  local ok, err = check_id(id)
  if not ok then
    return nil, err
  end
  local row = {
    id = id,
    name = check_string(fields, "name"),
    base_backup_name = check_string(fields, "base_backup_name"),
    query_id = check_string(fields, "query_id"),
    status = RUNNING[kind],
    error = "",
    start_time = now(self),
    end_time = 0,
    kind = kind,
    pid = check_pid(fields.pid, "begin"),
  }
  for _, name in ipairs(status.COUNTERS) do
    row[name] = 0
  end
  if row.pid then
    row.pid_start = process_info(row.pid)
  end
  local path = self:path(id)
  if lfs.attributes(path, "mode") ~= nil then
    return nil, string.format("operation '%s' already exists", id)
  end
  local created, cerr = create_atomic(path, encode_row(row))
  if not created then
    if lfs.attributes(path, "mode") ~= nil then
      return nil, string.format("operation '%s' already exists", id)
    end
    return nil, string.format("cannot record operation '%s': %s", id, cerr)
  end
  row.pid_start = nil
  return row
end


local function check_counter(name, value)
  local n = math.type(value) == "float" and math.tointeger(value) or value
  if math.type(n) ~= "integer" or n < 0 then
    return nil, string.format("bad value for %s: %s", name, tostring(value))
  end
  return n
end


-- Reads the row of an unfinished operation.
local function read_running(store, id)
  local ok, err = check_id(id)
  if not ok then
    return nil, err
  end
  local row, rerr = read_row(store, id)
  if not row then
    return nil, rerr or string.format("no operation '%s'", id)
  end
  if row.status ~= RUNNING[row.kind] then
    return nil, string.format("operation '%s' is already finished (%s)",
      id, row.status)
  end
  return row
end


--- Merges counters (and optionally `pid`) into a running operation's row.
-- Unknown field names raise; bad values return nil, message.
-- @treturn[1] true
-- @treturn[2] nil, message (no such operation, finished, bad value)
function Store:update(id, fields)
  if type(fields) ~= "table" then
    error("update: fields must be a table", 2)
  end
  for name in pairs(fields) do
    if not IS_COUNTER[name] and name ~= "pid" then
      error(string.format("update: unknown field '%s'", tostring(name)), 2)
    end
  end
  return self:_locked(function() return self:_update(id, fields) end)
end


-- Writers of a record read it, change it and write it whole; between
-- processes (an ASYNC parent records its child's pid while the child
-- records progress, or already its end) that must be one step, or a stale
-- copy overwrites the end: the status directory's lock makes it one.
local WRITE_LOCK = ".records.lock"
function Store:_locked(fn)
  local ok, core = pcall(require, "chbackup.core")
  if not (ok and type(core) == "table" and core.lock) then
    return fn()
  end
  local lk, err, code
  for _ = 1, 100 do   -- each try rides out 100 ms of another writer's hold
    lk, err, code = core.lock(self.dir .. "/" .. WRITE_LOCK)
    if lk or code ~= "LOCKED" then
      break
    end
  end
  if not lk then
    return nil, "cannot lock the status directory " .. self.dir .. ": " .. tostring(err)
  end
  local res = table.pack(pcall(fn))
  lk:release(true)   -- unlinked: a waiter that opened it retries on the new file
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


function Store:_update(id, fields)
  local row, err = read_running(self, id)
  if not row then
    return nil, err
  end
  for name, value in pairs(fields) do
    if name == "pid" then
      row.pid = check_pid(value, "update")
      row.pid_start = process_info(row.pid)
    else
      local n, verr = check_counter(name, value)
      if not n then
        return nil, verr
      end
      row[name] = n
    end
  end
  return write_atomic(self:path(id), encode_row(row))
end


--- Ends an operation: `final_status` is one of BACKUP_CREATED,
-- BACKUP_FAILED, BACKUP_CANCELLED (kind backup) or RESTORED,
-- RESTORE_FAILED, RESTORE_CANCELLED (kind restore); sets end_time and
-- error (default "").
-- @treturn[1] true
-- @treturn[2] nil, message
function Store:finish(id, final_status, err_text)
  if err_text ~= nil and type(err_text) ~= "string" then
    error("finish: error text must be a string", 2)
  end
  local kind = FINAL[final_status]
  if not kind then
    return nil, string.format("'%s' is not a final status", tostring(final_status))
  end
  local ok, werr = self:_locked(function() return self:_finish(id, kind, final_status, err_text) end)
  if ok then
    self:prune()
  end
  return ok, werr
end


function Store:_finish(id, kind, final_status, err_text)
  local row, err = read_running(self, id)
  if not row then
    return nil, err
  end
  if kind ~= row.kind then
    return nil, string.format("status %s does not end a %s", final_status,
      row.kind)
  end
  row.status = final_status
  row.error = err_text or ""
  row.end_time = now(self)
  return write_atomic(self:path(id), encode_row(row))
end


--- Removes finished rows older than the store's `days` or beyond its newest
-- `keep` (by the time each file was last written, its end), and temporary
-- or cancel files left by processes that died. A running row is never
-- removed. Returns the number of rows removed.
function Store:prune()
  local keep, days = self.keep, self.days
  local ok, iter, state, first, closer = pcall(lfs.dir, self.dir)
  if not ok then
    return 0
  end
  local files, now_s = {}, os.time()
  for entry in iter, state, first, closer do
    local path = self.dir .. "/" .. entry
    if entry:match("%.json$") then
      local mtime = lfs.attributes(path, "modification")
      if mtime then
        files[#files + 1] = { path = path, mtime = mtime, name = entry }
      end
    else
      local pid = entry:match("%.tmp%.(%d+)$")
      local old = (lfs.attributes(path, "modification") or now_s) < now_s - 3600
      if (pid and old and process_ended(math.tointeger(tonumber(pid)), nil))
          or (entry:match("%.cancel$") and old) then
        os.remove(path)
      end
    end
  end
  local limit = days > 0 and (now_s - days * 86400) or nil
  if (keep == 0 or #files <= keep) and not limit then
    return 0
  end
  -- newest first: by the file's time (seconds), rows written in the same
  -- second as the keep-th by their own end time (microseconds)
  local by_time = function(a, b)
    if a.t ~= b.t then
      return a.t > b.t
    end
    return a.name > b.name
  end
  for _, f in ipairs(files) do
    f.t = f.mtime * 1000000
  end
  table.sort(files, by_time)
  if keep > 0 and #files > keep then
    local edge = files[keep].mtime
    for _, f in ipairs(files) do
      if f.mtime == edge then
        local text = read_file(f.path)
        local row = text and decode_row(text, f.path)
        f.t = row and math.max(row.end_time, row.start_time) or f.t
      end
    end
    table.sort(files, by_time)
  end
  local removed = 0
  for i, f in ipairs(files) do
    if (keep > 0 and i > keep) or (limit and f.mtime < limit) then
      local text = read_file(f.path)
      local row = text and decode_row(text, f.path)
      if row and report(row).status ~= RUNNING[row.kind] then
        if os.remove(f.path) then
          removed = removed + 1
        end
      end
    end
  end
  return removed
end


--- The row of operation `id` (a fresh table), or nil.
-- @treturn[1] row
-- @treturn[2] nil (no such operation) or nil, message (unreadable file)
function Store:get(id)
  local ok, err = check_id(id)
  if not ok then
    return nil, err
  end
  local row, rerr = read_row(self, id)
  if not row then
    return nil, rerr
  end
  return report(row)
end


--- All rows, sorted by start_time then id. Unreadable files are left
-- out and described in the second result (an array of messages).
function Store:rows()
  local rows, problems = {}, {}
  local ok, iter, state, first, closer = pcall(lfs.dir, self.dir)
  if not ok then
    return rows, { string.format("cannot list %s: %s", self.dir, iter) }
  end
  for entry in iter, state, first, closer do
    if entry:match("%.json$") then
      local path = self.dir .. "/" .. entry
      local text = read_file(path)
      if text then
        local row, err = decode_row(text, path)
        if row then
          rows[#rows + 1] = report(row)
        else
          problems[#problems + 1] = err
        end
      end
    end
  end
  table.sort(rows, function(a, b)
    if a.start_time ~= b.start_time then
      return a.start_time < b.start_time
    end
    return a.id < b.id
  end)
  return rows, problems
end


return status
