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


--- The backup's contents grouped by database and table:
-- { [db] = {name=, escaped=, metadata=<entry>, tables = { [t] = {name=,
-- escaped=, metadata=<entry>, data = { {rel=, file=<entry>} } } } } }
-- (data: a list made on demand, read-only). Every data file
-- must belong to a table whose metadata the backup holds: a name damaged in
-- `.backup` would otherwise leave its data behind unnoticed.
-- Returns dbs or nil, err.
-- A table's data files, {rel=, file=} made on demand (t.data[k], #t.data,
-- ipairs) from the positions of the names under its prefix in the
-- manifest's name order (core.index): nothing held per file (issue 14).
-- With it, the same files' names under the prefix (strings only: k -> rel).
local function data_list(m, prefix)
  local idx, files = m.index, m.files
  local first, last = idx:prefix(prefix)
  local function rel_name(k)
    if k >= 1 and k <= last - first + 1 then
      return idx:name(idx:sorted(first + k - 1)):sub(#prefix + 1)
    end
  end
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
  }), rel_name
end


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
      t.data, t.rel_name = data_list(m, "data/" .. esc_db .. "/" .. esc_t .. "/")
      db.tables[name] = t
    end
    return t
  end
  for i = 1, #idx do
    local name = idx:name(i)   -- (a string, not an entry's table: most are data files)
    local esc_db = name:match("^metadata/([^/]+)%.sql$")
    local mdb, mt = name:match("^metadata/([^/]+)/([^/]+)%.sql$")
    local ddb, dt = name:match("^data/([^/]+)/([^/]+)/.")
    if esc_db then
      db_entry(esc_db).metadata = m.files[i]
    elseif mdb then
      tbl_entry(mdb, mt).metadata = m.files[i]
    elseif ddb then
      tbl_entry(ddb, dt)
    else
      -- Everything ClickHouse writes into a backup is under metadata/ or
      -- data/; anything else is a damaged name whose file would be lost.
      return nil, "backup " .. backup_name .. " is corrupt: it lists " .. name
        .. ", which is no file of a database or table"
    end
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


--- Calls f(p) for each part of MergeTree table t of the backup, in the
-- name order of its files (where a part's files come together): p =
-- {name=, info=, files = {[rel]=<entry>}, list = {{rel=, file=}}, where=}.
-- One part's Lua tables at a time: a table of 10^5 parts costs what one
-- part does (issue 14; a list of the table's parts with their files took
-- 200 MiB for 20,000 parts in 2 tables). Stops at the first f that returns
-- a value and returns it; returns an error for a file that is no part's.
function contents.each_part(t, backup_name, f)
  local cur
  for k, d in ipairs(t.data) do
    local part_name, rel = d.rel:match("^([^/]+)/(.+)$")
    if not cur or cur.name ~= part_name then
      local info = part_name and catalog.parse_part_name(part_name)
      if not info then
        return not_a_part(t, backup_name, k)
      end
      if cur then
        local r = f(cur)
        if r ~= nil then
          return r
        end
      end
      cur = { name = part_name, info = info, files = {}, list = {},
        where = "backup " .. backup_name .. ": part " .. d.file.name:sub(1, -#rel - 2) }
    end
    cur.files[rel] = d.file
    cur.list[#cur.list + 1] = { rel = rel, file = d.file }
  end
  if cur then
    return f(cur)
  end
end


--- As each_part, with only each part's name and parsed name: f(name,
-- info), from the names of its files (no entry read: RESTORE's moves).
function contents.each_part_name(t, backup_name, f)
  local cur
  for k = 1, #t.data do
    local part_name = t.rel_name(k):match("^([^/]+)/.")
    if part_name ~= cur then
      local info = part_name and catalog.parse_part_name(part_name)
      if not info then
        return not_a_part(t, backup_name, k)
      end
      cur = part_name
      local r = f(part_name, info)
      if r ~= nil then
        return r
      end
    end
  end
end


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
