--- SQL user-defined functions (`CREATE FUNCTION f AS (x) -> …`), as
-- ClickHouse keeps them in a data path and in a backup.
--
-- On disk (UserDefinedSQLObjectsDiskStorage): `<user_defined_path>/
-- function_<escaped name>.sql`, the statement and a line end.
-- In a backup (UserDefinedSQLObjectsBackup.cpp, StorageSystemFunctions::
-- backupData): `data/system/functions/<escaped name>.sql`, the statement
-- without a line end. RESTORE's `create_function` ('create',
-- 'if-not-exists' (default), 'replace') decides what an existing function
-- of the same name gets, as UserDefinedSQLFunctionFactory::restore does.
-- @module chbackup.udf
local lfs = require("lfs")
local ddl = require("chbackup.ddl")
local fsutil = require("chbackup.fsutil")
local names = require("chbackup.names")

local udf = {}

udf.BACKUP_DIR = "data/system/functions/"
local MAX_SIZE = 1024 * 1024


--- Where the data path keeps its functions: cfg.server_objects.user_defined_path
-- (ClickHouse's `user_defined_path`) or `<data path>/user_defined`. A config
-- that keeps them in Keeper (`user_defined_zookeeper_path`) cannot be read
-- offline. Returns dir or nil, err.
function udf.dir(cat)
  local so = cat.config and cat.config.server_objects or {}
  if so.user_defined_in_keeper then
    return nil, "the configuration keeps SQL functions in Keeper (user_defined_zookeeper_path);"
      .. " chbackup reads data paths offline and cannot read or write them"
  end
  return fsutil.server_dir(cat, so.user_defined_path, "user_defined")
end


--- The function a statement creates: `CREATE FUNCTION <name> AS …`, one
-- statement. Returns name or nil, err.
function udf.parse(text)
  if #text > MAX_SIZE then
    return nil, "larger than " .. MAX_SIZE .. " bytes"
  end
  if text:find("%z") then
    return nil, "holds a NUL byte"
  end
  local sql, err = ddl.single(text, "CREATE FUNCTION")
  if not sql then
    return nil, err
  end
  local _, e = sql:upper():find("^%s*CREATE%s+FUNCTION%s")
  if not e then
    return nil, "not a CREATE FUNCTION statement"
  end
  local name, j = ddl.read_identifier(sql, e)
  if not name or name == "" then
    return nil, "no function name after CREATE FUNCTION"
  end
  if not sql:upper():find("^%s+AS%s", j) then
    return nil, "no AS after the function name"
  end
  return name
end


-- A file name made of escapeForFileName's output only, canonical: the
-- name it stands for escapes back to it.
local function canonical_escaped(esc)
  if not esc:match("^[%w_%%]+$") then
    return nil
  end
  local name = names.unescape_file(esc)
  if names.escape_file(name) ~= esc then
    return nil
  end
  return name
end
udf.canonical_escaped = canonical_escaped


--- The data path's functions as backup entries {name=, content=}, sorted
-- by name; none when there is no directory. A file that is not a
-- function's statement is an error naming it.
function udf.backup_entries(cat)
  local dir, err = udf.dir(cat)
  if not dir then
    return nil, err
  end
  local out = {}
  if not fsutil.is_dir(dir) then
    return out
  end
  for entry in lfs.dir(dir) do
    local esc = entry:match("^function_(.+)%.sql$")
    if esc then
      local path = dir .. "/" .. entry
      local name = canonical_escaped(esc)
      local text = name and fsutil.read_file(path)
      local parsed, perr = nil, "its name is not an escaped function name"
      if text then
        parsed, perr = udf.parse(text)
      end
      if parsed and parsed ~= name then
        parsed, perr = nil, "it creates function " .. names.quote_identifier(parsed)
      end
      if not parsed then
        return nil, "cannot back up SQL function file " .. path .. ": " .. tostring(perr)
      end
      out[#out + 1] = { name = udf.BACKUP_DIR .. esc .. ".sql", content = (text:gsub("\n+$", "")) }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end


--- Plans the RESTORE of a backup's functions. files: list of {rel=<file
-- name under data/system/functions/>, file=<manifest entry>}; read(entry)
-- gives its verified bytes; mode: create_function. Returns a list of
-- {path=, content=, name=} to write, or nil, err. Nothing is written.
function udf.prepare(cat, files, read, mode, backup_name)
  local dir, derr = udf.dir(cat)
  if not dir then
    return nil, derr
  end
  local out = {}
  for _, f in ipairs(files) do
    local where = "backup " .. backup_name .. ": " .. f.file.name
    local esc = f.rel:match("^([^/]+)%.sql$")
    local name = esc and canonical_escaped(esc)
    if not name then
      return nil, where .. " is not a function's file (data/system/functions/<escaped name>.sql)"
    end
    local text, rerr = read(f.file)
    if not text then
      return nil, rerr
    end
    local parsed, perr = udf.parse(text)
    if parsed ~= name then
      return nil, "cannot restore SQL function from " .. where .. ": "
        .. (parsed and ("it creates " .. names.quote_identifier(parsed) .. ", not " .. names.quote_identifier(name))
          or perr)
    end
    local path = dir .. "/function_" .. esc .. ".sql"
    local content = text:gsub("\n+$", "") .. "\n"
    local existing = fsutil.read_file(path)
    if existing and mode == "create" then
      return nil, "cannot restore function " .. names.quote_identifier(name) .. ": it already exists in "
        .. dir .. " (create_function = 'create'; 'if-not-exists' keeps it, 'replace' replaces it)"
    elseif existing and mode ~= "replace" then
      if existing ~= content then
        require("chbackup.lock").log("function " .. names.quote_identifier(name)
          .. " exists with another definition; kept (create_function = 'if-not-exists')")
      end
    else
      out[#out + 1] = { path = path, content = content, name = name }
    end
  end
  return out
end


return udf
