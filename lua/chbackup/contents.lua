--- What a backup holds, as ClickHouse lays it out: databases, tables and
-- their data files, indexed from the manifest and checked for shape (every
-- data file belongs to a table with metadata; each metadata file holds the
-- statement its name says). RESTORE and `check` read backups through it.
-- @module chbackup.contents
local catalog = require("chbackup.catalog")
local ddl = require("chbackup.ddl")
local names = require("chbackup.names")
local server_objects = require("chbackup.server_objects")

local contents = {}


-- A table's data files, {rel=, file=} made on demand (t.data[k], #t.data,
-- ipairs) from the positions of the names under its prefix in the
-- manifest's name order (core.index): nothing held per file (issue 14).
local function data_list(m, prefix)
  local idx, files = m.index, m.files
  local first, last = idx:prefix(prefix)
  return setmetatable({}, {
    __index = function(_, k)
      if math.type(k) == "integer" and k >= 1 and k <= last - first + 1 then
        local f = files[idx:sorted(first + k - 1)]
        return { rel = f.name:sub(#prefix + 1), file = f }
      end
    end,
    __len = function()
      return last - first + 1
    end,
  })
end


--- The backup's contents grouped by database and table:
-- { [db] = {name=, escaped=, metadata=<entry>, tables = { [t] = {name=,
-- escaped=, metadata=<entry>, data = { {rel=, file=<entry>} }, prefix=,
-- index=, files= } } } } (data: a list made on demand, read-only; prefix:
-- "data/<db>/<t>/" as the backup spells it, index and files: the
-- manifest's). Every data file
-- must belong to a table whose metadata the backup holds: a name damaged in
-- `.backup` would otherwise leave its data behind unnoticed.
-- Returns dbs or nil, err.
function contents.index(m, backup_name)
  local dbs, idx = {}, m.index
  local function db_entry(esc)
    local name = names.unescape_file(esc)
    dbs[name] = dbs[name] or { name = name, escaped = esc, tables = {} }
    return dbs[name]
  end
  local function tbl_entry(esc_db, esc_t)
    local db = db_entry(esc_db)
    local name = names.unescape_file(esc_t)
    local t = db.tables[name]
    if not t then
      t = { name = name, escaped = esc_t }
      -- (its files are the names under this prefix: exactly those the
      -- pattern below gives this table)
      t.prefix, t.index, t.files = "data/" .. esc_db .. "/" .. esc_t .. "/", m.index, m.files
      t.data = data_list(m, t.prefix)
      db.tables[name] = t
    end
    return t
  end
  -- in name order, a table's data files skipped at once (one lookup of
  -- its prefix: nothing done per data file, most of a backup's files)
  local pos, n = idx:prefix("")
  while pos <= n do
    local i = idx:sorted(pos)
    local name = idx:name(i)
    local esc_db = name:match("^metadata/([^/]+)%.sql$")
    local mdb, mt = name:match("^metadata/([^/]+)/([^/]+)%.sql$")
    local ddb, dt = name:match("^data/([^/]+)/([^/]+)/.")
    if esc_db then
      db_entry(esc_db).metadata = m.files[i]
    elseif mdb then
      tbl_entry(mdb, mt).metadata = m.files[i]
    elseif ddb then
      local t, prefix = tbl_entry(ddb, dt), "data/" .. ddb .. "/" .. dt .. "/"
      if t.prefix ~= prefix then   -- (two spellings of one name: %61 is a)
        return nil, "backup " .. backup_name .. " is corrupt: it lists " .. name .. " and files under "
          .. t.prefix .. ", two names of table " .. names.qualified(names.unescape_file(ddb), t.name)
      end
      local _, last = idx:prefix(prefix)
      pos = last
    else
      -- Everything ClickHouse writes into a backup is under metadata/ or
      -- data/; anything else is a damaged name whose file would be lost.
      return nil, "backup " .. backup_name .. " is corrupt: it lists " .. name
        .. ", which is no file of a database or table"
    end
    pos = pos + 1
  end
  for _, db in pairs(dbs) do
    for _, t in pairs(db.tables) do
      -- data/system/functions/ and data/system/<users|roles|…>/ hold what
      -- ClickHouse backs up of the server itself (functions, access
      -- entities): only the files its RESTORE reads
      if db.name == "system" and server_objects.is_server_table(t.escaped) then
        for _, d in ipairs(t.data) do
          if not server_objects.entry_kind(t.escaped, d.rel) then
            return nil, "backup " .. backup_name .. " is corrupt: it lists " .. d.file.name
              .. ", which is no file of a function or of access entities"
          end
        end
      elseif not t.metadata then
        return nil, "backup " .. backup_name .. " is corrupt: it lists " .. t.data[1].file.name
          .. " but has no metadata of table " .. names.qualified(db.name, t.name)
      end
    end
  end
  return dbs
end


-- Checks that a metadata file of the backup holds the statement its name
-- says: a database's for metadata/<db>.sql, a table's (view's,
-- dictionary's) for metadata/<db>/<t>.sql, named as the file is.
local function check_metadata_name(info, entry, db_name, table_name, backup_name)
  local want = table_name and "a table" or "database " .. names.quote_identifier(db_name)
  local ok
  if table_name then
    ok = info.object ~= "DATABASE" and info.name == table_name
      and (info.database == nil or info.database == db_name)
  else
    ok = info.object == "DATABASE" and info.name == db_name and info.database == nil
  end
  if not ok then
    return nil, string.format("backup %s is corrupt: %s holds CREATE %s %s, not the statement of %s",
      backup_name, entry.name, info.object,
      info.database and names.qualified(info.database, info.name) or names.quote_identifier(info.name),
      table_name and names.qualified(db_name, table_name) or want)
  end
  return true
end


--- The statement of a metadata entry of the backup: read(entry) gives its
-- bytes (verified), it must parse as one CREATE and be the statement of
-- database db_name (table_name nil) or of table db_name.table_name.
-- Returns ddl.parse_create's info or nil, err naming the file.
function contents.statement(read, entry, db_name, table_name, backup_name)
  local text, err = read(entry)
  if not text then
    return nil, err
  end
  local info, perr = ddl.parse_create(text)
  if not info then
    return nil, "cannot parse " .. entry.name .. " in backup " .. backup_name .. ": " .. perr
  end
  local ok, nerr = check_metadata_name(info, entry, db_name, table_name, backup_name)
  if not ok then
    return nil, nerr
  end
  return info
end


-- The error for a file of a MergeTree table's data that is no part's.
local function not_a_part(t, backup_name, k)
  return "backup " .. backup_name .. " has an unexpected file " .. t.data[k].file.name
    .. " (not a file of a mergetree table)"
end


--- Calls f(name, info, lo, hi) for each part of MergeTree table t of the
-- backup, in name order: its name, parsed name (catalog.parse_part_name)
-- and the positions lo..hi of its files in the manifest's name order
-- (t.index:sorted(pos)). A part's files are found by one lookup of its
-- directory's prefix: nothing is made per file (issue 14). Stops at the
-- first f that returns a value and returns it; returns an error for a
-- file that is no part's.
function contents.each_part_range(t, backup_name, f)
  local idx, prefix = t.index, t.prefix
  local first, last = idx:prefix(prefix)
  local pos = first
  while pos <= last do
    local part_name = idx:name(idx:sorted(pos)):match("^([^/]+)/.", #prefix + 1)
    local info = part_name and catalog.parse_part_name(part_name)
    if not info then
      return not_a_part(t, backup_name, pos - first + 1)
    end
    -- (the names under "<part>/" come together, from this one on)
    local lo, hi = idx:prefix(prefix .. part_name .. "/")
    assert(lo == pos, "a part's files are not together in the name order")
    local r = f(part_name, info, lo, hi)
    if r ~= nil then
      return r
    end
    pos = hi + 1
  end
end


--- Calls f(p) for each part of MergeTree table t of the backup, in the
-- name order of its files (where a part's files come together): p =
-- {name=, info=, files = {[rel]=<entry>}, list = {{rel=, file=}}, where=,
-- lo=, hi=} (lo..hi: as each_part_range gives them).
-- One part's Lua tables at a time: a table of 10^5 parts costs what one
-- part does (issue 14; a list of the table's parts with their files took
-- 200 MiB for 20,000 parts in 2 tables). Stops at the first f that returns
-- a value and returns it; returns an error for a file that is no part's.
function contents.each_part(t, backup_name, f)
  local idx, files = t.index, t.files
  return contents.each_part_range(t, backup_name, function(name, info, lo, hi)
    local strip = #t.prefix + #name + 1
    local p = { name = name, info = info, files = {}, list = {}, lo = lo, hi = hi,
      where = "backup " .. backup_name .. ": part " .. t.prefix .. name }
    for pos = lo, hi do
      local file = files[idx:sorted(pos)]
      local rel = file.name:sub(strip + 1)
      p.files[rel] = file
      p.list[#p.list + 1] = { rel = rel, file = file }
    end
    return f(p)
  end)
end


--- As each_part, with only each part's name and parsed name: f(name,
-- info), from the names of its files (no entry read: RESTORE's moves).
contents.each_part_name = contents.each_part_range


--- A table's data files in the backup, shaped by its engine family:
-- "mergetree": { parts = { <each_part's p>, ... } } sorted by part name;
-- "log": { files = {[name] = entry}, list = { {rel=, file=} } }; or nil,
-- err naming a file that is not where that family keeps files (outside a
-- part directory, in a subdirectory of a Log table). Holds every file of
-- the table: for Log tables (a few files a column) and `check`, not for
-- RESTORE's parts (each_part).
function contents.table_data(t, family, backup_name)
  local out = { parts = {}, files = {}, list = {} }
  if family == "mergetree" then
    local err = contents.each_part(t, backup_name, function(p)
      out.parts[#out.parts + 1] = p
    end)
    if err then
      return nil, err
    end
    table.sort(out.parts, function(a, b) return a.name < b.name end)
    return out
  end
  for _, d in ipairs(t.data) do
    if family == "log" and d.rel:find("/", 1, true) then
      return nil, "backup " .. backup_name .. " has an unexpected file " .. d.file.name
        .. " (not a file of a " .. family .. " table)"
    end
    out.files[d.rel] = d.file
    out.list[#out.list + 1] = { rel = d.rel, file = d.file }
  end
  return out
end


return contents
