--- Where a policy's backups live: names from the destination pattern,
-- restore points found on disk, the policy record kept beside each backup,
-- and deletion that never leaves half a backup looking usable.
--
-- A restore point is a directory whose name matches the pattern and that
-- has a readable `.backup`. One with `.chbackup-incomplete` and no
-- `.backup` is unfinished; one with `.backup.deleting` is being deleted.
-- A name ending in `.zip` is a zip backup: one file, its `.backup` read
-- with the policy's password. A zip is written under a temporary name
-- (`<name>.tmp-<pid>`) and renamed into place when complete, so a zip
-- under its own name is never unfinished; `<name>.deleting` is a zip
-- backup being deleted.
--
-- The policy record (`<backup>.chbackup.json`, beside the backup directory,
-- never inside it) holds what the policy knows about a backup: kind, the
-- policy clock's time, base, row counts at backup time, verifications. It
-- names the backup's uuid; a record whose uuid differs is ignored.
--
-- `store.memory()` has the same interface with no files, for simulations.
-- @module chbackup.policy.store
local lfs = require("lfs")
local cjson = require("cjson")
local chain = require("chbackup.chain")
local config = require("chbackup.config")
local backups = require("chbackup.store")
local dir_store = require("chbackup.store.dir")
local zip_store = require("chbackup.store.zip")
local fsutil = require("chbackup.fsutil")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")

local store = {}

store.RECORD_SUFFIX = ".chbackup.json"
store.RECORD_FORMAT = 1
local MAX_VERIFICATIONS = 20

-- Name patterns ----------------------------------------------------------

local PLACEHOLDERS = {
  policy = true, yyyy = "%d%d%d%d", mm = "%d%d", dd = "%d%d", HH = "%d%d", MM = "%d%d", SS = "%d%d",
  kind = "%a+",
}
store.PLACEHOLDERS = { "policy", "yyyy", "mm", "dd", "HH", "MM", "SS", "kind" }


local function lua_escape(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end


--- Compiles a name pattern ("{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}").
-- Returns {text=, segments = {{match=, fields={...}}}} or nil, err.
function store.compile(pattern, policy_name)
  if type(pattern) ~= "string" or pattern == "" then
    return nil, "expected a name pattern like '{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}'"
  end
  if pattern:sub(1, 1) == "/" then
    return nil, "'" .. pattern .. "' must be relative to the destination (no leading /)"
  end
  local segments = {}
  for seg in (pattern .. "/"):gmatch("([^/]*)/") do
    if seg == "" or seg == "." or seg == ".." then
      return nil, "'" .. pattern .. "' has an empty, '.' or '..' path segment"
    end
    local fields, err = {}, nil
    local lp = ""
    local pos = 1
    while pos <= #seg do
      local s, e, name = seg:find("{([^}]*)}", pos)
      local literal = seg:sub(pos, (s or #seg + 1) - 1)
      if literal:find("[{}]") then
        err = "'" .. pattern .. "' has an unmatched brace"
        break
      end
      lp = lp .. lua_escape(literal)
      if not s then
        break
      end
      local ph = PLACEHOLDERS[name]
      if not ph then
        err = "'" .. pattern .. "' has an unknown placeholder {" .. name .. "} (known: {"
          .. table.concat(store.PLACEHOLDERS, "}, {") .. "})"
        break
      end
      if ph == true then
        lp = lp .. lua_escape(policy_name)
      else
        lp = lp .. "(" .. ph .. ")"
        fields[#fields + 1] = name
      end
      pos = e + 1
    end
    if err then
      return nil, err
    end
    segments[#segments + 1] = { match = "^" .. lp .. "$", fields = fields }
  end
  return { text = pattern, policy = policy_name, segments = segments }
end


--- The name of a backup made at time t (in zone) of kind "full"|"incr".
function store.format_name(compiled, t, zone, kind)
  local c = zone:civil(t)
  local v = {
    policy = compiled.policy, yyyy = string.format("%04d", c.year), mm = string.format("%02d", c.month),
    dd = string.format("%02d", c.day), HH = string.format("%02d", c.hour), MM = string.format("%02d", c.min),
    SS = string.format("%02d", c.sec), kind = kind,
  }
  return (compiled.text:gsub("{(%w+)}", v))
end


--- Matches a relative name; returns its fields ({yyyy=, kind=, ...}) or nil.
function store.match_name(compiled, name)
  local fields, i = {}, 0
  for seg in (name .. "/"):gmatch("([^/]*)/") do
    i = i + 1
    local s = compiled.segments[i]
    if not s then
      return nil
    end
    local caps = { seg:match(s.match) }
    if not seg:match(s.match) then
      return nil
    end
    for k, f in ipairs(s.fields) do
      fields[f] = caps[k]
    end
  end
  if i ~= #compiled.segments then
    return nil
  end
  if fields.kind and fields.kind ~= "full" and fields.kind ~= "incr" then
    return nil
  end
  return fields
end


-- The time a name says (needs yyyy, mm, dd), or nil.
local function name_time(fields, zone)
  if not (fields.yyyy and fields.mm and fields.dd) then
    return nil
  end
  return zone:epoch({
    year = tonumber(fields.yyyy), month = tonumber(fields.mm), day = tonumber(fields.dd),
    hour = tonumber(fields.HH or 0), min = tonumber(fields.MM or 0), sec = tonumber(fields.SS or 0),
  })
end


-- ClickHouse's archive extensions (config.lua's list): a backup named so
-- is one file. chbackup reads and writes the zip ones.
--- The archive kind a backup name says ("zip", "tar"), or nil: a directory.
store.archive_kind = config.archive_kind


--- A secret given by reference ({env=} or {file=}), read at run time; what
-- names it in messages. Returns it or nil, err.
function store.secret(ref, what)
  if ref.env then
    local v = os.getenv(ref.env)
    if not v or v == "" then
      return nil, what .. ".env: environment variable " .. ref.env .. " is not set"
    end
    return v
  end
  local text, err = fsutil.read_secret(ref.file)
  if not text then
    return nil, what .. ".file: " .. err
  end
  return text
end


--- The policy's password, read at run time from its environment variable
-- or file (nil when the policy has none). Returns pw or nil, err.
function store.password(pol)
  if not pol.password then
    return nil
  end
  return store.secret(pol.password, "password")
end


-- Manifest header --------------------------------------------------------

-- Policy records ----------------------------------------------------------

-- A policy record's text decoded (nil: no text), or nil, err.
local function decode_record(text, path)
  if not text then
    return nil
  end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" then
    return nil, "policy record " .. path .. " is not JSON"
  end
  return doc
end


local function read_json(path)
  return decode_record(fsutil.read_file(path), path)
end


local function timestamp_time(s)
  local y, mo, d, h, mi, se = tostring(s or ""):match("^(%d+)%-(%d+)%-(%d+) (%d+):(%d+):(%d+)$")
  if not y then
    return nil
  end
  return os.time({ year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = tonumber(h),
    min = tonumber(mi), sec = tonumber(se) })
end


-- Disk store -------------------------------------------------------------

local DiskStore = {}
DiskStore.__index = DiskStore


--- Opens the store of a policy: pol is a checked policy (chbackup.policy),
-- cfg the loaded ClickHouse config. Returns a store or nil, err.
function store.open(pol, cfg)
  local dst = pol.destination
  local root, engine
  if dst.s3 then
    return store.open_s3(pol, cfg)
  elseif dst.disk then
    local disk = cfg.disks[dst.disk]
    if not disk then
      return nil, "destination.disk: unknown disk '" .. dst.disk .. "' (storage_configuration.disks in "
        .. tostring(cfg.source) .. ")"
    end
    if disk.type ~= "local" then
      return nil, "destination.disk: disk '" .. dst.disk .. "' has type " .. tostring(disk.type)
        .. "; only local disks are supported"
    end
    root, engine = disk.path:gsub("/+$", ""), "Disk"
  else
    root, engine = dst.path:gsub("/+$", ""), "File"
  end
  local compiled = assert(store.compile(dst.name, pol.name))
  return setmetatable({
    policy = pol, cfg = cfg, root = root, engine = engine, compiled = compiled, zone = pol.zone,
  }, DiskStore)
end


--- The backup name as SQL (Disk('backups', 'a/b') or File('/x/a/b')).
function DiskStore:destination(name)
  if self.engine == "Disk" then
    return "Disk(" .. sql.quote_string(self.policy.destination.disk) .. ", " .. sql.quote_string(name) .. ")"
  end
  return "File(" .. sql.quote_string(self.root .. "/" .. name) .. ")"
end


function DiskStore:path_of(name)
  return self.root .. "/" .. name
end


function DiskStore:record_path(name)
  return self.root .. "/" .. name .. store.RECORD_SUFFIX
end


-- Walks the pattern's segments; calls fn(rel, path) for each last-segment
-- entry matching the pattern, and for a zip backup's `<name>.deleting` or a
-- zip writer's `<name>.tmp-<pid>` (rel is then the matching name).
-- What each is says chbackup.store.classify.
function DiskStore:_walk(fn)
  local segs = self.compiled.segments
  local function walk(dir, rel, i)
    if lfs.attributes(dir, "mode") ~= "directory" then
      return
    end
    local entries = {}
    for e in lfs.dir(dir) do
      if e ~= "." and e ~= ".." and not e:find(store.RECORD_SUFFIX, 1, true) then
        if e:match(segs[i].match) and not e:match("%.tmp$") then
          entries[#entries + 1] = { e, e }
        elseif i == #segs then
          local base, what = e:match("^(.+)%.deleting$"), "deleting"
          if not base then
            base, what = e:match("^(.+)%.tmp%-%d+$"), "temp"
          end
          if base and store.archive_kind(base) == "zip" and base:match(segs[i].match) then
            entries[#entries + 1] = { e, base, what }
          end
        end
      end
    end
    table.sort(entries, function(x, y) return x[1] < y[1] end)
    for _, x in ipairs(entries) do
      local e = x[1]
      local path = dir .. "/" .. e
      local name = rel == "" and x[2] or (rel .. "/" .. x[2])
      local attr = lfs.symlinkattributes(path)
      if i < #segs then
        if attr and attr.mode == "directory" then
          walk(path, name, i + 1)
        end
      elseif attr then
        fn(name, path)
      end
    end
  end
  walk(self.root, "", 1)
end


-- The policy's password (read once per store), or nil, err.
function DiskStore:_password()
  if self.pw == nil then
    local pw, err = store.password(self.policy)
    self.pw, self.pw_err = pw or false, err
  end
  return self.pw or nil, self.pw_err
end


-- The header of the backup at path: a zip (archive true) or a directory.
function DiskStore:_header(path, archive)
  if not archive then
    return dir_store.read_header(path)
  end
  local pw, pw_err = self:_password()
  local h, err, code = zip_store.read_header(path, pw, "the policy")
  if not h and code == "AUTH" and pw_err then
    err = err .. "; " .. pw_err
  end
  return h, err, code
end


function DiskStore:_read_record(name)
  return read_json(self:record_path(name))
end


-- Time and its source of a backup whose name, record and `.backup` say none.
function DiskStore._mtime(_, path, archive)
  if archive then
    return lfs.attributes(path, "modification") or 0, "archive mtime"
  end
  return lfs.attributes(path .. "/.backup", "modification") or 0, ".backup mtime"
end


-- The point of a backup directory or zip (without chain links).
function DiskStore:_point(name, path, archive)
  local header, err = self:_header(path, archive)
  if not header then
    return nil, err
  end
  local fields = store.match_name(self.compiled, name) or {}
  local p = {
    id = name, name = name, path = path, destination = self:destination(name),
    uuid = header.uuid, timestamp = header.timestamp, base_backup = header.base_backup,
    base_backup_uuid = header.base_backup_uuid, archive = archive or nil,
  }
  local record, rerr = self:_read_record(name)
  if record and record.uuid ~= header.uuid then
    p.note = "policy record " .. self:record_path(name) .. " is for another backup (uuid "
      .. tostring(record.uuid) .. "); ignored"
    record = nil
  elseif rerr then
    p.note = rerr
  end
  p.record = record
  p.rebased = record and record.rebased and true or nil
  p.kind = record and record.kind or fields.kind or (header.base_backup and "incr" or "full")
  if record and tonumber(record.time) then
    p.time, p.time_source = tonumber(record.time), "policy record"
  elseif name_time(fields, self.zone) then
    p.time, p.time_source = name_time(fields, self.zone), "name"
  elseif timestamp_time(header.timestamp) then
    p.time, p.time_source = timestamp_time(header.timestamp), ".backup timestamp"
  else
    p.time, p.time_source = self:_mtime(path, archive)
  end
  local v = record and record.verifications
  local last = type(v) == "table" and v[#v] or nil
  if last then
    p.verified = last.ok == true
    p.verified_at = last.time
    p.verification = last
  end
  return p
end


-- Resolves a base_backup name to an absolute path and whether it names an
-- archive (nil if it cannot be resolved).
function DiskStore:_base_path(base_name)
  local dest = chain.parse_name(base_name)
  if not dest then
    return nil
  end
  local resolved = config.resolve(self.cfg, dest)
  return resolved and resolved.path, resolved and resolved.archive
end


-- Whether path holds a backup as far as a listing looks: a zip file, or a
-- directory with a `.backup` file.
function DiskStore._looks_like_backup(_, path, archive)
  if archive then
    return lfs.attributes(path, "mode") == "file"
  end
  return lfs.attributes(path .. "/" .. manifest.FILE, "mode") == "file"
end


--- Lists the policy's backups. Returns {
--   points = {...} newest first (restore points: readable .backup),
--   incomplete = {{name=, path=, why=}}, deleting = {{name=, path=, why=,
--   archive=}}, unreadable = {...} }.
-- Each point: {id=, name=, path=, destination=, kind=, time=, time_source=,
--   uuid=, base=<id>|nil, base_backup=, foreign_base=, chain_error=, record=,
--   verified=, verified_at=, archive = true for a zip}.
function DiskStore:list()
  local out = { points = {}, incomplete = {}, deleting = {}, unreadable = {} }
  local function unreadable(name, path, why)
    out.unreadable[#out.unreadable + 1] = { name = name, path = path, why = why }
  end
  self:_walk(function(name, path)
    local c = backups.classify(path)
    local file = path:match("[^/]*$")
    if not c then
      return
    elseif c.what == "refused" then
      unreadable(name, path, c.why)
    elseif c.what == "temp" then
      out.incomplete[#out.incomplete + 1] = { name = (name:match("^(.*/)") or "") .. file, path = path,
        why = "unfinished zip (" .. file .. ": the temporary file of a BACKUP that is running or was interrupted; "
          .. "not a backup)" }
    elseif c.what == "backup" then
      local p, err = self:_point(name, path, c.archive)
      if p then
        out.points[#out.points + 1] = p
      else
        unreadable(name, path, err)
      end
    elseif c.what == "deleting" then
      out.deleting[#out.deleting + 1] = { name = name, path = path, archive = c.archive or nil,
        why = "deletion was started and not finished" .. (c.archive and (" (" .. file .. ")") or "") }
    elseif c.what == "incomplete" then
      out.incomplete[#out.incomplete + 1] = { name = name, path = path,
        why = "unfinished (.chbackup-incomplete, no .backup)" }
    else
      out.incomplete[#out.incomplete + 1] = { name = name, path = path, why = "no .backup" }
    end
  end)
  self:_link(out.points)
  return out
end


-- Links points to their bases and checks each chain as far as names go.
function DiskStore:_link(points)
  local by_path = {}
  for _, p in ipairs(points) do
    by_path[p.path] = p
  end
  for _, p in ipairs(points) do
    if p.base_backup then
      local bp, archive = self:_base_path(p.base_backup)
      local base = bp and by_path[bp]
      if base then
        p.base = base.id
        if p.base_backup_uuid and base.uuid ~= p.base_backup_uuid then
          p.chain_error = string.format("base backup %s was replaced: its uuid is %s, %s was made on %s",
            p.base_backup, tostring(base.uuid), p.name, p.base_backup_uuid)
        end
      elseif bp and self:_looks_like_backup(bp, archive) then
        p.foreign_base = p.base_backup
      else
        p.chain_error = "base backup " .. p.base_backup .. " of " .. p.name .. " is missing"
      end
    end
  end
  store.sort(points)
  store.check_chains(points)
end


--- Newest first; equal times by name, newest name first.
function store.sort(points)
  local in_order = true
  for i = 2, #points do
    local a, b = points[i - 1], points[i]
    if a.time < b.time or (a.time == b.time and a.id < b.id) then
      in_order = false
      break
    end
  end
  if in_order then
    return points
  end
  table.sort(points, function(a, b)
    if a.time ~= b.time then
      return a.time > b.time
    end
    return a.id > b.id
  end)
  return points
end


--- Marks each point's chain: chain_ok, or chain_problem naming the break
-- (memoised: each link is looked at once).
function store.check_chains(points)
  local by_id = {}
  for _, p in ipairs(points) do
    by_id[p.id] = p
  end
  local problem = {} -- id -> false (intact) | message
  for _, p in ipairs(points) do
    if problem[p.id] == nil then
      -- walk up to a known point, a break or the root
      local path, on_path, cur, err = {}, {}, p, nil
      while cur do
        if problem[cur.id] ~= nil then
          err = problem[cur.id] or nil
          break
        end
        if on_path[cur.id] then
          err = "backup chain of " .. cur.id .. " loops"
          break
        end
        on_path[cur.id] = true
        path[#path + 1] = cur
        if cur.chain_error then
          err = cur.chain_error
          break
        end
        cur = cur.base and by_id[cur.base]
      end
      for _, q in ipairs(path) do
        problem[q.id] = err or false
      end
    end
  end
  for _, p in ipairs(points) do
    local err = problem[p.id]
    p.chain_ok = not err
    p.chain_problem = err or nil
  end
end


--- Backups on the destination that are not the policy's but rely on one of
-- its points: {[point id] = "name of the dependent"}. Walks the destination
-- root (not into backups, never through symlinks, at most 8 levels). A zip
-- backup is read with the policy's password, else with none; one that
-- neither opens cannot be seen.
function DiskStore:foreign_dependents(points)
  local ours, found = {}, {}
  for _, p in ipairs(points) do
    ours[p.path] = p
  end
  local function note(path, h)
    local bp = h and h.base_backup and self:_base_path(h.base_backup)
    if bp and ours[bp] then
      found[ours[bp].id] = path:sub(#self.root + 2)
    end
  end
  local function walk(dir, depth)
    if depth > 8 then
      return
    end
    for e in lfs.dir(dir) do
      if e ~= "." and e ~= ".." then
        local path = dir .. "/" .. e
        local c = backups.classify(path)
        local what = c and c.what
        if what == "directory" then
          walk(path, depth + 1)
        elseif what == "backup" and not ours[path] and not c.archive then
          note(path, dir_store.read_header(path))
        elseif what == "backup" and not ours[path] then
          local h, _, code = zip_store.read_header(path, (self:_password()), "the policy")
          if not h and code == "AUTH" then
            h = zip_store.read_header(path, nil, "the policy")
          end
          note(path, h)
        end
      end
    end
  end
  if lfs.attributes(self.root, "mode") == "directory" then
    walk(self.root, 1)
  end
  return found
end


--- Makes a backup. req: {name=, kind=, time=, base=<point>|nil,
-- statement = function() -> sql | nil, err, execute = function(sql) ->
-- results | nil, err}. Writes the policy record. Returns point or nil, err.
function DiskStore:create(req)
  local statement, shown = req.statement(self:destination(req.name),
    req.base and req.base.destination or nil)
  if not statement then
    return nil, shown
  end
  local ok, err = req.execute(statement)
  if not ok then
    return nil, err
  end
  local path = self:path_of(req.name)
  local archive = store.archive_kind(req.name) ~= nil
  local header
  header, err = self:_header(path, archive)
  if not header then
    return nil, "the backup reported success but " .. tostring(err)
  end
  local record = {
    format = store.RECORD_FORMAT, policy = self.policy.name, name = req.name, kind = req.kind,
    time = req.time, base = req.base and req.base.id or nil, uuid = header.uuid,
    statement = shown, -- as logged: a password is never written down
  }
  ok, err = self:write_record(req.name, record)
  if not ok then
    return nil, err
  end
  local p = assert(self:_point(req.name, path, archive))
  p.base = req.base and req.base.id or nil
  p.chain_ok = true
  return p
end


--- Writes (replaces) the policy record of backup `name`.
function DiskStore:write_record(name, record)
  record.format = store.RECORD_FORMAT
  if type(record.verifications) == "table" and #record.verifications > MAX_VERIFICATIONS then
    table.remove(record.verifications, 1)
  end
  return self:_write_text(name, cjson.encode(record) .. "\n")
end


function DiskStore:_write_text(name, text)
  return fsutil.write_file(self:record_path(name), text)
end


-- Removes directories the pattern made that are now empty (not the root).
function DiskStore:_remove_empty_parents(path)
  local dir = fsutil.parent_dir(path)
  while #dir > #self.root and fsutil.is_dir(dir) and fsutil.is_empty_dir(dir) do
    if not lfs.rmdir(dir) then
      break
    end
    dir = fsutil.parent_dir(dir)
  end
end


--- Deletes a backup (chbackup.store: invalidated first, removed without
-- following symlinks, its marker last), then its policy record. Returns
-- true or nil, err; after a failure past the invalidation the next run
-- finishes the deletion (p.deleting: finish it now).
function DiskStore:delete(p)
  local archive = p.archive or store.archive_kind(p.name) ~= nil
  local path = archive and self:path_of(p.name) or p.path
  local ok, err = backups.remove({ path = path, name = p.name, archive = archive,
    archive_kind = archive and (store.archive_kind(p.name) or "zip") }, { finish = p.deleting })
  if not ok then
    return nil, err
  end
  -- A zip made since under the same name keeps its record.
  if not (archive and lfs.symlinkattributes(path)) then
    os.remove(self:record_path(p.name))
  end
  self:_remove_empty_parents(path)
  return true
end


--- Rebases backup p (chbackup.rebase: made standalone, uuid kept, swapped
-- in whole) and notes it in its policy record (base dropped, `rebased` =
-- {from=, time=}). opts: {time=, threads=}. Returns the bytes written or
-- nil, err (the backup is then as it was: still on its base).
function DiskStore:rebase(p, opts)
  local written, err = require("chbackup.rebase").run(self.cfg, p.destination,
    { password = (self:_password()), threads = opts and opts.threads })
  if not written then
    return nil, err
  end
  local record = p.record
  if record then
    record.rebased = { from = p.base or p.base_backup, time = opts and opts.time }
    record.base = nil
    local ok, werr = self:write_record(p.name, record)
    if not ok then
      return nil, "backup " .. p.name .. " is rebased; its policy record could not be written: " .. tostring(werr)
    end
  end
  return written
end


function DiskStore:exists(name)
  return lfs.symlinkattributes(self:path_of(name)) ~= nil
end


-- S3 store ---------------------------------------------------------------------

-- Backups as prefixes below the destination's url (chbackup.store.s3), the
-- policy record as the object `<name>.chbackup.json` beside the backup's
-- prefix. Credentials: destination.access_key_id and secret_access_key
-- (the secret from the environment or a file, as passwords are), given to
-- chbackup as a <s3> endpoint of the url (so backup names are `S3('url')`,
-- never with the secret); without them the config's <s3> endpoint or
-- AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. The per-run lock is an
-- object (chbackup.policy.s3lock); leftovers: chbackup.policy.leftovers.
local S3Store = setmetatable({}, { __index = DiskStore })
S3Store.__index = S3Store

local s3_store = require("chbackup.store.s3")


--- Opens the S3 store of a policy (destination.s3). Returns it or nil, err.
function store.open_s3(pol, cfg)
  local dst = pol.destination
  if dst.secret_access_key then
    local secret, err = store.secret(dst.secret_access_key, "destination.secret_access_key")
    if not secret then
      return nil, err
    end
    local endpoints = { { endpoint = dst.s3 .. "/", access_key_id = dst.access_key_id, secret_access_key = secret } }
    for _, e in ipairs(cfg.s3 or {}) do
      endpoints[#endpoints + 1] = e
    end
    cfg.s3 = endpoints
  end
  local root, err = backups.resolve(cfg, { engine = "S3", args = { dst.s3 }, root = true })
  if not root then
    return nil, "destination.s3: " .. err
  end
  local c
  c, err = s3_store.client(root)
  if not c then
    return nil, "destination.s3: " .. err
  end
  return setmetatable({
    policy = pol, cfg = cfg, s3root = root, client = c, compiled = assert(store.compile(dst.name, pol.name)),
    zone = pol.zone,
  }, S3Store)
end


function S3Store:destination(name)
  return sql.format_destination({ engine = "S3", args = { self.policy.destination.s3 .. "/" .. name } })
end


function S3Store:_key(name)
  return self.s3root.prefix ~= "" and (self.s3root.prefix .. "/" .. name) or name
end


function S3Store:path_of(name)
  return "s3://" .. self.s3root.bucket .. "/" .. self:_key(name)
end


function S3Store:record_path(name)
  return self:path_of(name) .. store.RECORD_SUFFIX
end


function S3Store:_read_record(name)
  return decode_record(self.client:get(self:_key(name) .. store.RECORD_SUFFIX), self:record_path(name))
end


function S3Store:_write_text(name, text)
  return self.client:put(self:_key(name) .. store.RECORD_SUFFIX, text)
end


-- The header of the backup at an s3:// path.
function S3Store:_header(path)
  local key = path:sub(#("s3://" .. self.s3root.bucket .. "/") + 1) .. "/" .. manifest.FILE
  local text, err = self.client:get(key)
  if not text then
    return nil, "cannot read " .. path .. "/" .. manifest.FILE .. ": " .. err
  end
  return manifest.header(text, path .. "/" .. manifest.FILE)
end


-- The header of a tar archive on S3 below the root (read from the archive:
-- its `.backup` entry), or nil.
function S3Store:_archive_header(rel)
  local name = sql.format_destination({ engine = "S3", args = { self.policy.destination.s3 .. "/" .. rel } })
  local b = chain.open(self.cfg, chain.parse_name(name), { inherit = self.s3root })
  if b then
    b.store:close()
  end
  return b and b.manifest
end


function S3Store._mtime()
  return 0, "unknown (no time in its name, record or .backup)"
end


function S3Store:_looks_like_backup(path)
  return self:_header(path) ~= nil
end


function S3Store:_base_path(base_name)
  local dest = chain.parse_name(base_name)
  local resolved = dest and backups.resolve(self.cfg, setmetatable({ inherit = self.s3root }, { __index = dest }))
  return resolved and resolved.path
end


function S3Store:list()
  local out = { points = {}, incomplete = {}, deleting = {}, unreadable = {} }
  local entries, err = backups.list(self.s3root)
  if not entries then
    out.unreadable[1] = { name = self.policy.destination.s3, path = self.s3root.path, why = err }
    return out
  end
  for _, e in ipairs(entries) do
    if store.match_name(self.compiled, e.rel) then
      local name, path = e.rel, self:path_of(e.rel)
      if e.what == "backup" then
        local p, perr = self:_point(name, path)
        if p then
          out.points[#out.points + 1] = p
        else
          out.unreadable[#out.unreadable + 1] = { name = name, path = path, why = perr }
        end
      elseif e.what == "deleting" then
        out.deleting[#out.deleting + 1] = { name = name, path = path, why = "deletion was started and not finished" }
      else
        out.incomplete[#out.incomplete + 1] = { name = name, path = path,
          why = "unfinished (.lock without .backup: a BACKUP running or killed)" }
      end
    end
  end
  self:_link(out.points)
  return out
end


function S3Store:foreign_dependents(points)
  local ours, found = {}, {}
  for _, p in ipairs(points) do
    ours[p.path] = p
  end
  for _, e in ipairs(backups.list(self.s3root) or {}) do
    local path = self:path_of(e.rel)
    if e.what == "backup" and not ours[path] then
      local h = e.archive and self:_archive_header(e.rel) or self:_header(path)
      local bp = h and h.base_backup and self:_base_path(h.base_backup)
      if bp and ours[bp] then
        found[ours[bp].id] = e.rel
      end
    end
  end
  return found
end


function S3Store:delete(p)
  local dest = chain.parse_name(self:destination(p.name))
  local resolved, err = backups.resolve(self.cfg, setmetatable({ inherit = self.s3root }, { __index = dest }))
  if not resolved then
    return nil, err
  end
  local ok
  ok, err = backups.remove(resolved, { name = p.name, finish = p.deleting })
  if not ok then
    return nil, err
  end
  self.client:delete(self:_key(p.name) .. store.RECORD_SUFFIX)
  return true
end


function S3Store:exists(name)
  return self.client:head(self:_key(name) .. "/" .. manifest.FILE) ~= nil
    or self.client:head(self:_key(name) .. "/" .. s3_store.LOCK) ~= nil
end


-- Memory store -------------------------------------------------------------

local MemoryStore = {}
MemoryStore.__index = MemoryStore


--- A store without files: points live in a table. For simulations of a
-- policy (specs, `plan` over synthetic histories). opts.fail(req) may
-- return an error message to make a create fail.
function store.memory(opts)
  return setmetatable({ points = {}, order = {}, opts = opts or {}, created = 0, deleted = 0, log = {} },
    MemoryStore)
end


function MemoryStore.destination(_, name)
  return "Memory(" .. sql.quote_string(name) .. ")"
end


function MemoryStore:list()
  local points = {}
  for i = #self.order, 1, -1 do
    local p = self.points[self.order[i]]
    local copy = {}
    for k, v in pairs(p) do
      copy[k] = v
    end
    copy.chain_error = p.base and not self.points[p.base] and ("base backup " .. p.base .. " of " .. p.id
      .. " is missing") or nil
    points[#points + 1] = copy
  end
  store.sort(points)
  store.check_chains(points)
  return { points = points, incomplete = {}, deleting = {}, unreadable = {} }
end


function MemoryStore.foreign_dependents()
  return {}
end


function MemoryStore:exists(name)
  return self.points[name] ~= nil
end


function MemoryStore:create(req)
  if self.points[req.name] then
    return nil, "backup destination " .. self:destination(req.name) .. " already exists"
  end
  local why = self.opts.fail and self.opts.fail(req)
  if why then
    return nil, why
  end
  self.created = self.created + 1
  local p = {
    id = req.name, name = req.name, destination = self:destination(req.name), kind = req.kind, time = req.time,
    base = req.base and req.base.id or nil, uuid = "memory-" .. self.created, record = { kind = req.kind },
  }
  self.points[req.name] = p
  -- keep self.order oldest first (a create is normally the newest)
  local i = #self.order
  while i > 0 and self.points[self.order[i]].time > p.time do
    i = i - 1
  end
  table.insert(self.order, i + 1, req.name)
  self.log[#self.log + 1] = { "create", req.name }
  return p
end


function MemoryStore:rebase(p)
  local q = self.points[p.id]
  if not q then
    return nil, "backup " .. p.id .. " is gone"
  end
  local why = self.opts.fail_rebase and self.opts.fail_rebase(p)
  if why then
    return nil, why
  end
  q.base, q.rebased = nil, true
  self.log[#self.log + 1] = { "rebase", p.id }
  return 0
end


function MemoryStore:write_record(name, record)
  local p = self.points[name]
  if p then
    p.record = record
    local v = record.verifications
    local last = type(v) == "table" and v[#v] or nil
    if last then
      p.verified, p.verified_at = last.ok == true, last.time
    end
  end
  return true
end


function MemoryStore:delete(p)
  if not self.points[p.id] then
    return nil, "backup " .. p.id .. " is gone already"
  end
  for _, q in pairs(self.points) do
    if q.base == p.id then
      -- what the disk would not notice at once: a dependent losing its base
      self.broken = (self.broken or 0) + 1
    end
  end
  self.points[p.id] = nil
  for i, id in ipairs(self.order) do
    if id == p.id then
      table.remove(self.order, i)
      break
    end
  end
  self.deleted = self.deleted + 1
  self.log[#self.log + 1] = { "delete", p.id }
  return true
end


return store
