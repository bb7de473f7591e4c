--- A ClickHouse data path, read offline: databases, tables, active parts.
--
-- Layout (Atomic databases): metadata/<db>.sql, metadata/<db>/<t>.sql
-- (`ATTACH TABLE _ UUID '…'`), table data in store/<uuid[1..3]>/<uuid>/.
-- Ordinary databases keep data in data/<db>/<t>/. Names on disk are
-- escaped as ClickHouse escapes file names.
-- @module chbackup.catalog
local lfs = require("lfs")
local core = require("chbackup.core")
local ddl = require("chbackup.ddl")
local fsutil = require("chbackup.fsutil")
local disks = require("chbackup.disks")
local names = require("chbackup.names")

local catalog = {}
local Catalog = {}
Catalog.__index = Catalog

-- Databases that belong to the server, never backed up by DATABASE/ALL.
catalog.SYSTEM_DATABASES = {
  system = true, information_schema = true, INFORMATION_SCHEMA = true,
}


local function read_file(path)
  local mode = lfs.attributes(path, "mode")
  if mode ~= "file" then
    return nil, mode and ("is a " .. mode) or "does not exist"
  end
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local text = f:read("a")
  f:close()
  return text
end


local function is_dir(path)
  return lfs.attributes(path, "mode") == "directory"
end


--- Engine family: what chbackup does with a table's data.
--   "mergetree": parts; "log": a flat directory of files; "memory": data in
--   the server's memory (Memory, Buffer), which cannot be read offline;
--   "none": no data chbackup knows of (views, dictionaries, engines over
--   external data; a data directory holding files is checked by the plan).
function catalog.engine_family(object, engine)
  if object ~= "TABLE" or not engine then
    return "none"
  end
  if engine:match("MergeTree$") then
    return "mergetree"
  end
  if engine == "Log" or engine == "TinyLog" or engine == "StripeLog" then
    return "log"
  end
  if engine == "Memory" or engine == "Buffer" then
    return "memory"
  end
  return "none"
end


--- The first regular file under dir (recursively), or nil: a table of an
-- engine chbackup does not back up must keep no data there. A directory
-- that cannot be read is nil, err.
function catalog.first_file(dir)
  local mode = lfs.symlinkattributes(dir, "mode")
  if mode == "file" then
    return dir
  elseif mode ~= "directory" then
    return nil
  end
  local entries, err = fsutil.list_dir(dir)
  if not entries then
    return nil, err
  end
  for _, entry in ipairs(entries) do
    local found, ferr = catalog.first_file(dir .. "/" .. entry)
    if found or ferr then
      return found, ferr
    end
  end
  return nil
end


--- Opens a data path. cfg (chbackup.config) gives the disks and storage
-- policies tables may use; the default disk is the data path.
-- Returns a Catalog or nil, err.
function catalog.open(path, cfg)
  path = path:gsub("/+$", "")
  if path == "" then
    path = "/"
  end
  if not is_dir(path) then
    return nil, "data path '" .. path .. "' does not exist or is not a directory"
  end
  if not is_dir(path .. "/metadata") then
    return nil, "'" .. path .. "' is not a ClickHouse data path (no metadata/ directory)"
  end
  return setmetatable({ path = path, config = cfg, _dbs = nil }, Catalog)
end


function Catalog:_load_databases()
  if self._dbs then
    return self._dbs
  end
  local dbs, list = {}, {}
  for entry in lfs.dir(self.path .. "/metadata") do
    local esc = entry:match("^(.+)%.sql$")
    if esc then
      local name = names.unescape_file(esc)
      local file = self.path .. "/metadata/" .. entry
      local text, err = read_file(file)
      local info
      if not text then
        err = "cannot read database metadata " .. file .. ": " .. tostring(err)
      else
        info = ddl.parse_attach(text)
        if not info or info.object ~= "DATABASE" then
          info, err = nil, "cannot parse database metadata " .. file
            .. ": not an ATTACH DATABASE statement"
        end
      end
      info = info or { object = "DATABASE", body = "" }
      local db = {
        name = name, escaped = esc, uuid = info.uuid, body = info.body,
        engine = err and "unknown" or ddl.engine(info.body) or "Atomic",
        error = err,   -- metadata that cannot be read: no table of it is listed
        metadata_file = file,
        metadata_dir = self.path .. "/metadata/" .. esc,
        system = catalog.SYSTEM_DATABASES[name] or false,
      }
      dbs[name] = db
      list[#list + 1] = db
    end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  self._dbs, self._db_list = dbs, list
  return dbs
end


--- " (did you mean db?)" for a database name not in the data path, or "".
function Catalog:database_hint(name)
  local list = {}
  for _, db in ipairs(self:databases()) do
    if not db.system then
      list[#list + 1] = db.name
    end
  end
  return names.did_you_mean(name, list, names.quote_identifier)
end


--- All databases (sorted by name), system ones included but flagged.
function Catalog:databases()
  self:_load_databases()
  return self._db_list
end


function Catalog:database(name)
  return self:_load_databases()[name]
end


-- Where a table's data lives.
function Catalog:_data_dir(db, esc_table, uuid)
  if uuid then
    return self.path .. "/store/" .. uuid:sub(1, 3) .. "/" .. uuid
  end
  return self.path .. "/data/" .. db.escaped .. "/" .. esc_table
end


--- Tables, views and dictionaries of a database, sorted by name.
-- Each: {database=, name=, object=, uuid=, body=, engine=, family=, data_dir=}
function Catalog:tables(db_name)
  local db = self:database(db_name)
  if not db then
    return nil, "database " .. names.quote_identifier(db_name) .. " does not exist in " .. self.path
      .. self:database_hint(db_name)
  end
  if db.error then
    return nil, db.error
  end
  local list = {}
  if not is_dir(db.metadata_dir) then
    return list
  end
  local entries, lerr = fsutil.list_dir(db.metadata_dir)
  if not entries then
    return nil, lerr
  end
  for _, entry in ipairs(entries) do
    local esc = entry:match("^(.+)%.sql$")
    if esc then
      local file = db.metadata_dir .. "/" .. entry
      local text, rerr = read_file(file)
      if not text then
        return nil, "cannot read table metadata " .. file .. ": " .. tostring(rerr)
      end
      local info, perr = ddl.parse_attach(text)
      if not info or info.object == "DATABASE" then
        return nil, "cannot parse table metadata " .. file .. ": " .. (perr or "a DATABASE statement")
      end
      local engine = ddl.engine(info.body)
      if info.object == "TABLE" and not engine then
        return nil, "cannot parse table metadata " .. file .. ": no ENGINE"
      end
      list[#list + 1] = {
        database = db_name, name = names.unescape_file(esc), escaped = esc,
        object = info.object, uuid = info.uuid, body = info.body,
        engine = engine, family = catalog.engine_family(info.object, engine),
        metadata_file = file,
        data_dir = self:_data_dir(db, esc, info.uuid),
      }
    end
  end
  -- A materialized view's inner table (`.inner_id.<uuid>`) is not listed
  -- on its own: its data is the view's data, as in ClickHouse's backups.
  local by_uuid = {}
  for _, t in ipairs(list) do
    if t.uuid then
      by_uuid[t.uuid] = t
    end
  end
  local visible = {}
  for _, t in ipairs(list) do
    local inner_uuid = t.object == "MATERIALIZED VIEW" and ddl.inner_uuid(t.body)
    local inner = inner_uuid and by_uuid[inner_uuid]
    if inner then
      t.inner = inner
      t.family, t.data_dir, t.engine = inner.family, inner.data_dir, inner.engine
      t.table_body = inner.body
    end
    if not t.name:match("^%.inner") then
      visible[#visible + 1] = t
    end
  end
  table.sort(visible, function(a, b) return a.name < b.name end)
  return visible
end


function Catalog:table(db_name, table_name)
  local list, err = self:tables(db_name)
  if not list then
    return nil, err
  end
  local known = {}
  for _, t in ipairs(list) do
    if t.name == table_name then
      return t
    end
    known[#known + 1] = t.name
  end
  return nil, "table " .. names.qualified(db_name, table_name) .. " does not exist in " .. self.path
    .. names.did_you_mean(table_name, known, function(n) return names.qualified(db_name, n) end)
end


--- Finds where a table's data lives on the disks of its storage policy:
-- sets `t.locations` (list of {disk=, dir=}; a Log-family table on another
-- disk gets that disk's dir as data_dir). Refuses, naming table and disk, a
-- policy or disk the configuration lacks, a disk that is not local, and
-- parts of the table on a local disk outside its policy (ClickHouse does
-- not load such a table). Returns true or nil, err.
function Catalog:place(t)
  if (t.family ~= "mergetree" and t.family ~= "log") or t.locations then
    return true
  end
  local locations, rel = disks.locations(self.config, self.path, t)
  if not locations then
    return nil, rel
  end
  if t.family == "log" then
    if #locations ~= 1 then
      return nil, "table " .. names.qualified(t.database, t.name) .. " (" .. t.engine
        .. ") is on a storage policy of " .. #locations .. " disks; Log-family tables use one"
    end
    t.data_dir = locations[1].dir
  end
  for _, loc in ipairs(locations) do
    -- a disk whose path is gone (not mounted?) would look like a disk without parts
    if lfs.attributes(loc.disk_path, "mode") ~= "directory" then
      return nil, string.format("table %s: disk '%s' of its storage policy has no directory %s (not mounted?)",
        names.qualified(t.database, t.name), loc.disk, loc.disk_path)
    end
  end
  local stray = disks.stray(self.config, self.path, locations, rel,
    function(e) return catalog.parse_part_name(e) ~= nil end)
  if stray and stray.error then
    return nil, "table " .. names.qualified(t.database, t.name) .. ": " .. stray.error
  elseif stray then
    return nil, string.format("table %s has part %s on disk '%s' (%s), which is not in its storage policy",
      names.qualified(t.database, t.name), stray.part, stray.disk, stray.dir)
  end
  t.locations = locations
  return true
end


--- Parses a part directory name: <partition>_<min>_<max>_<level>[_<mutation>].
function catalog.parse_part_name(name)
  local partition, min, max, level, mutation =
    name:match("^([^_]+)_(%d+)_(%d+)_(%d+)_?(%d*)$")
  if not partition then
    return nil
  end
  return {
    name = name, partition_id = partition,
    min_block = tonumber(min), max_block = tonumber(max),
    level = tonumber(level), mutation = tonumber(mutation) or 0,
  }
end


-- b covers a (same partition): a's block range inside b's, and b is newer
-- (a merge: a level at least a's; the same range: a higher level, or the
-- same level and a higher mutation). Sorted by `cover_order`, every part
-- that can cover a comes before a, and an earlier one covers a exactly when
-- its max_block and level are at least a's (the same range sorts first
-- only when newer); parts of one key (all_1_1_0 and all_1_1_0_0) cover
-- neither each other.
local function cover_order(x, y)
  if x.min_block ~= y.min_block then
    return x.min_block < y.min_block
  end
  if x.max_block ~= y.max_block then
    return x.max_block > y.max_block
  end
  if x.level ~= y.level then
    return x.level > y.level
  end
  return x.mutation > y.mutation
end

local function same_key(x, y)
  return x.min_block == y.min_block and x.max_block == y.max_block
    and x.level == y.level and x.mutation == y.mutation
end

--- The parts of one partition (parsed names) that no other one covers,
-- in O(n log n): a partition with thousands of outdated parts beside its
-- active ones is no quadratic walk. In cover order, a Fenwick tree over
-- the levels (highest first, so "a level at least L" is a prefix) keeps
-- the largest max_block seen; a part is covered when its prefix's
-- reaches the part's own.
function catalog.uncovered(parts)
  local order, levels, rank = {}, {}, {}
  for i, p in ipairs(parts) do
    order[i] = p
    if not rank[p.level] then
      rank[p.level] = true
      levels[#levels + 1] = p.level
    end
  end
  table.sort(order, cover_order)
  table.sort(levels, function(x, y) return x > y end)
  for i, l in ipairs(levels) do
    rank[l] = i
  end
  local tree, n, out = {}, #levels, {}
  local function seen_max(r)
    local best
    while r > 0 do
      local v = tree[r]
      if v and (not best or v > best) then
        best = v
      end
      r = r - (r & -r)
    end
    return best
  end
  local function note(r, max_block)
    while r <= n do
      if not tree[r] or tree[r] < max_block then
        tree[r] = max_block
      end
      r = r + (r & -r)
    end
  end
  local i = 1
  while i <= #order do
    local j = i   -- order[i..j]: one key, looked up before any is noted
    while j < #order and same_key(order[j + 1], order[i]) do
      j = j + 1
    end
    local r = rank[order[i].level]
    local best = seen_max(r)
    for k = i, j do
      if not best or best < order[k].max_block then
        out[#out + 1] = order[k]
      end
    end
    note(r, order[i].max_block)
    i = j + 1
  end
  return out
end


--- The directories a table's data lives in: list of {disk=, dir=}. A
-- table placed on several disks (a storage policy) has set
-- `tbl.locations`; otherwise its one data_dir is on the default disk.
function catalog.locations(tbl)
  return tbl.locations or { { disk = "default", dir = tbl.data_dir } }
end


-- Part names read ahead from a table directory's index: a few hundred
-- names and kinds held at a time, whatever the directory's size.
local AHEAD = 512

--- A cursor over the part-named entries of a table's directory on one
-- disk, in name order, each with what its checksums.txt is: the names
-- are read into a core.index (its pages: memory bounded however many
-- parts the table has, not a Lua string a part) and given AHEAD at a time,
-- each batch's checksums.txt looked up from the directory opened once (no
-- walk of a whole path a part). A part-named entry that is not a
-- directory is an error (ClickHouse makes no such entries); it is told
-- from a part without checksums.txt only when there is none, so a healthy
-- part costs no stat of its own. cursor.name / cursor.info (its parsed
-- name, a fresh table) / cursor.sums_kind: the current entry (nil at the
-- end); cursor.next() moves on (true, or nil, err). An absent directory has
-- no entries. Returns the cursor or nil, err.
local function part_cursor(tbl, loc)
  local mode = lfs.attributes(loc.dir, "mode")
  if mode and mode ~= "directory" then
    return nil, "data directory " .. loc.dir .. " of table "
      .. names.qualified(tbl.database, tbl.name) .. " is not a directory"
  end
  local idx, pos, last = core.index(), 0, 0
  if mode then
    local n, err = idx:add_dir(loc.dir)
    if not n then
      return nil, err
    end
    pos, last = idx:prefix("")   -- (the name order, made here)
    pos = pos - 1
  end
  local ahead, infos, sums, at = {}, {}, {}, 0
  local cursor = {}
  local function read_ahead()
    ahead, infos, at = {}, {}, 1
    while #ahead < AHEAD and pos < last do
      pos = pos + 1
      local entry = idx:name(idx:sorted(pos))
      local info = catalog.parse_part_name(entry)
      if info then
        ahead[#ahead + 1], infos[#ahead + 1] = entry, info
      end
    end
    if #ahead == 0 then
      sums = {}
      return true
    end
    local kinds, kerr = core.kinds(loc.dir, ahead, "/checksums.txt")
    if not kinds then
      return nil, kerr
    end
    for i, entry in ipairs(ahead) do
      if kinds[i] ~= "file" then
        local m = lfs.symlinkattributes(loc.dir .. "/" .. entry, "mode")
        if m and m ~= "directory" then
          return nil, "part " .. loc.dir .. "/" .. entry .. " is not a directory (ClickHouse makes no such entries)"
        end
      end
    end
    sums = kinds
    return true
  end
  function cursor.next()
    at = at + 1
    if at > #ahead then
      local ok, err = read_ahead()
      if not ok then
        return nil, err
      end
    end
    cursor.name, cursor.info, cursor.sums_kind = ahead[at], infos[at], sums[at]
    return true
  end
  local ok, err = cursor.next()
  if not ok then
    return nil, err
  end
  return cursor
end


-- The active parts of one partition (infos: its parts, each with dir=,
-- disk= and sums_kind=, what its checksums.txt is), checked complete (a
-- readable checksums.txt) and sorted by name; or nil, err.
local function active_of_partition(tbl, infos)
  local active = catalog.uncovered(infos)
  for _, a in ipairs(active) do
    local mode, why = a.sums_kind, nil
    if not mode then   -- (nothing there: why, for the message)
      mode, why = lfs.symlinkattributes(a.dir .. "/checksums.txt", "mode")
    end
    if mode ~= "file" then
      return nil, "part " .. a.dir .. " of table " .. names.qualified(tbl.database, tbl.name)
        .. " has no readable checksums.txt (" .. (mode and ("it is a " .. mode) or tostring(why)) .. ")"
    end
    a.sums_kind = nil
  end
  table.sort(active, function(x, y) return x.name < y.name end)
  return active
end


--- Calls f(part) for each active part of a MergeTree table on every disk
-- it uses, in name order: every part not covered by another one (outdated
-- parts left by merges are skipped, so is detached/); part = {name=,
-- partition_id=, min_block=, max_block=, level=, mutation=, dir=, disk=}.
-- Partition by partition: what is held is one partition's parts and a few
-- hundred names read ahead from each directory (part_cursor; issue 14: a
-- table of 10^5 parts held a table of fields for each, then every name). An active part must be complete (a
-- readable checksums.txt); a part on two disks, a part-named entry that is
-- not a directory, or a directory that cannot be read is an error: nothing
-- is skipped silently. f may return a value to stop (an error). Returns
-- the set of disks whose table directory was read (or found absent), or
-- nil, err (f's value, or what was wrong).
function catalog.each_active_part(tbl, f)
  local locs, cursors, visited = catalog.locations(tbl), {}, {}
  for i, loc in ipairs(locs) do
    visited[loc.disk] = true
    local c, err = part_cursor(tbl, loc)
    if not c then
      return nil, err
    end
    cursors[i] = c
  end
  -- the locations' sorted names merged: a partition's parts come together
  -- (its id has no '_': every name starting "<id>_" is its part)
  local infos, partition = {}, nil
  local function flush()
    if #infos == 0 then
      return nil
    end
    local active, err = active_of_partition(tbl, infos)
    infos = {}
    if not active then
      return err
    end
    for _, a in ipairs(active) do
      local r = f(a)
      if r ~= nil then
        return r
      end
    end
  end
  while true do
    local best, name = nil, nil
    for i = 1, #locs do
      local x = cursors[i].name
      if x and (not name or x < name) then
        best, name = i, x
      elseif x and x == name then
        return nil, string.format("part %s of table %s is on disk '%s' (%s) and on disk '%s' (%s)",
          name, names.qualified(tbl.database, tbl.name), locs[best].disk, locs[best].dir .. "/" .. name,
          locs[i].disk, locs[i].dir .. "/" .. name)
      end
    end
    if not best then
      break
    end
    local info = cursors[best].info
    info.sums_kind = cursors[best].sums_kind
    local ok, cerr = cursors[best].next()
    if not ok then
      return nil, cerr
    end
    if info.partition_id ~= partition then
      local r = flush()
      if r ~= nil then
        return nil, r
      end
      partition = info.partition_id
    end
    info.dir, info.disk = locs[best].dir .. "/" .. name, locs[best].disk
    infos[#infos + 1] = info
  end
  local r = flush()
  if r ~= nil then
    return nil, r
  end
  return visited
end


-- Adds the files of a directory tree to `out` (name relative to `base`).
-- Anything but regular files and directories (symlinks, sockets, …) is
-- refused, naming it: ClickHouse puts none in parts or table dirs.
local function walk(dir, prefix, out)
  local entries, err = fsutil.list_dir(dir)
  if not entries then
    return nil, err
  end
  for _, entry in ipairs(entries) do
    local path = dir .. "/" .. entry
    local attr = lfs.symlinkattributes(path)
    if attr and attr.mode == "directory" then
      local ok, werr = walk(path, prefix .. entry .. "/", out)
      if not ok then
        return nil, werr
      end
    elseif attr and attr.mode == "file" then
      out[#out + 1] = { name = prefix .. entry, path = path, size = attr.size }
    else
      return nil, string.format("%s is a %s, not a regular file: refusing to back it up",
        path, attr and attr.mode or "vanished entry")
    end
  end
  return true
end


--- The files of a part with the checksums its checksums.txt records
-- (projection files from the projection's own checksums.txt). Files not
-- listed there (checksums.txt itself) have checksum nil. Every file
-- checksums.txt lists must be there, a regular file of the listed size.
-- Returns list of {name=, path=, size=, checksum=} or nil, err.
function catalog.part_files(part_dir)
  local files = {}
  local ok, err = walk(part_dir, "", files)
  if not ok then
    return nil, err
  end
  local known, order = {}, {}
  local function load(sub)
    local path = part_dir .. "/" .. sub .. "checksums.txt"
    if lfs.symlinkattributes(path, "mode") ~= "file" then
      return nil, "part " .. part_dir .. ": " .. sub .. "checksums.txt is missing or not a regular file"
    end
    local sums, serr = core.read_checksums(path)
    if not sums then
      return nil, serr
    end
    for name, f in pairs(sums) do
      known[sub .. name] = f
      order[#order + 1] = sub .. name
    end
    return true
  end
  ok, err = load("")
  if not ok then
    return nil, err
  end
  local loaded = { [""] = true }
  for _, f in ipairs(files) do
    local sub = f.name:match("^(.-/)checksums%.txt$")
    if sub and not loaded[sub] then
      loaded[sub] = true
      ok, err = load(sub)
      if not ok then
        return nil, err
      end
    end
  end
  -- projections listed by their part but not on disk (or without checksums.txt)
  local i = 1
  while i <= #order do
    local name = order[i]
    if name:match("%.proj$") and not loaded[name .. "/"] then
      loaded[name .. "/"] = true
      if lfs.symlinkattributes(part_dir .. "/" .. name, "mode") ~= "directory" then
        return nil, "part " .. part_dir .. ": projection " .. name
          .. " is listed in checksums.txt but is not a directory on disk"
      end
      ok, err = load(name .. "/")
      if not ok then
        return nil, err
      end
    end
    i = i + 1
  end
  local by_name = {}
  for _, f in ipairs(files) do
    by_name[f.name] = f
    local k = known[f.name]
    if k then
      if k.size ~= f.size then
        return nil, string.format("part file %s has %d bytes but its checksums.txt says %d",
          f.path, f.size, k.size)
      end
      f.checksum = k.checksum
    end
  end
  table.sort(order)
  for _, name in ipairs(order) do
    if not by_name[name] and not name:match("%.proj$") then
      local mode = lfs.symlinkattributes(part_dir .. "/" .. name, "mode")
      return nil, string.format("part file %s/%s is listed in checksums.txt but %s",
        part_dir, name, mode and ("is a " .. mode .. ", not a regular file") or "is missing")
    end
  end
  return files
end


--- The files of a Log-family table (a flat directory). sizes.json records
-- how many bytes of each data file are committed; bytes past that (left by
-- an interrupted insert) are not part of the table, so `size` is capped
-- there, as ClickHouse's own backup does. A file sizes.json lists that is
-- missing or shorter is an error. Returns list, committed (name -> size
-- from sizes.json, nil without one) or nil, err.
function catalog.log_files(tbl)
  local files = {}
  local mode = lfs.attributes(tbl.data_dir, "mode")
  if not mode then
    return files
  end
  if mode ~= "directory" then
    return nil, "data directory " .. tbl.data_dir .. " of table "
      .. names.qualified(tbl.database, tbl.name) .. " is not a directory"
  end
  local ok, err = walk(tbl.data_dir, "", files)
  if not ok then
    return nil, err
  end
  local sizes_path = tbl.data_dir .. "/sizes.json"
  local text = read_file(sizes_path)
  if not text then
    return files
  end
  local dok, doc = pcall(require("cjson").decode, text)
  if not dok or type(doc) ~= "table" or type(doc.clickhouse) ~= "table" then
    return nil, "cannot read " .. sizes_path .. ": not the sizes.json ClickHouse writes"
  end
  local committed = {}
  for name, v in pairs(doc.clickhouse) do
    local size = math.tointeger(tonumber(type(v) == "table" and v.size))
    if not size then
      return nil, "cannot read " .. sizes_path .. ": no size for " .. name
    end
    committed[names.unescape_file(name)] = size
  end
  local present = {}
  for _, f in ipairs(files) do
    present[f.name] = true
    local limit = committed[f.name]
    if limit and limit < f.size then
      f.size = limit
    elseif limit and limit > f.size then
      return nil, string.format("Log file %s/%s has %d bytes but sizes.json says %d",
        tbl.data_dir, f.name, f.size, limit)
    end
  end
  local listed = {}
  for name in pairs(committed) do
    listed[#listed + 1] = name
  end
  table.sort(listed)
  for _, name in ipairs(listed) do
    if not present[name] and committed[name] > 0 then
      return nil, string.format("Log file %s/%s is listed in sizes.json (%d bytes) but is missing",
        tbl.data_dir, name, committed[name])
    end
  end
  return files, committed
end


return catalog
