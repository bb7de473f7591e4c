--- What `BACKUP ALL` takes beside databases, as a ClickHouse server does:
-- SQL user-defined functions (chbackup.udf) and access entities
-- (chbackup.access), under `data/system/functions/` and
-- `data/system/<users|roles|…>/`. Named collections are not in ClickHouse's
-- backups (system.named_collections has no backupData): a data path that
-- has some gets a notice saying they are left out.
-- @module chbackup.server_objects
local access = require("chbackup.access")
local fsutil = require("chbackup.fsutil")
local udf = require("chbackup.udf")

local server_objects = {}

local ENGINES = {
  functions = "SystemFunctions", users = "SystemUsers", roles = "SystemRoles",
  settings_profiles = "SystemSettingsProfiles", row_policies = "SystemRowPolicies",
  quotas = "SystemQuotas", masking_policies = "SystemMaskingPolicies",
}


--- True when elements hold ALL without EXCEPT DATABASE system.
function server_objects.selected(elements)
  for _, el in ipairs(elements) do
    if el.type == "all" then
      for _, d in ipairs(el.except_databases or {}) do
        if d == "system" then
          return false
        end
      end
      return true
    end
  end
  return false
end


--- The backup entries {name=, content=} of the data path's functions and
-- access entities, or nil, err naming what cannot be read.
function server_objects.backup_entries(cat)
  local out = {}
  for _, mod in ipairs({ udf, access }) do
    local entries, err = mod.backup_entries(cat)
    if not entries then
      return nil, err
    end
    table.move(entries, 1, #entries, #out + 1, out)
  end
  -- ClickHouse's RESTORE finds a table of the backup by its metadata file,
  -- system ones too (RestorerFromBackup::findTableInBackupImpl); their
  -- definitions are not compared (predefined tables), only parsed.
  local seen = {}
  for i = 1, #out do
    local t = out[i].name:match("^data/system/([^/]+)/")
    if not seen[t] then
      seen[t] = true
      out[#out + 1] = { name = "metadata/system/" .. t .. ".sql",
        content = "CREATE TABLE system." .. t .. " ENGINE = " .. ENGINES[t] }
    end
  end
  local nc = cat.path .. "/named_collections"
  if fsutil.is_dir(nc) and not fsutil.is_empty_dir(nc) then
    require("chbackup.lock").log("named collections in " .. nc .. " are not in the backup:"
      .. " ClickHouse's BACKUP does not take them either; copy the directory yourself")
  end
  return out
end


--- True for the system tables whose backup data is functions or access entities.
function server_objects.is_server_table(tbl)
  return tbl == "functions" or access.BY_TABLE[tbl] ~= nil
end


--- Which file of a backup's `data/system/<t>/` ClickHouse's RESTORE reads: "function" for
-- functions/<escaped name>.sql, "access" for <access table>/access*.txt,
-- nil for anything else.
function server_objects.entry_kind(tbl, rel)
  if tbl == "functions" then
    local esc = rel:match("^([^/]+)%.sql$")
    return esc and udf.canonical_escaped(esc) and "function" or nil
  end
  if access.BY_TABLE[tbl] and rel:match("^access[%w_%-]*%.txt$") then
    return "access"
  end
  return nil
end


--- Plans the RESTORE of the functions and access entities of a backup
-- (its contents.index `dbs`) when the elements select them. Returns a plan
-- for server_objects.write, or nil, err; nothing is written.
function server_objects.prepare(cat, dbs, elements, read, settings, backup_name)
  local plan = { functions = {}, access = { write = {}, remove = {} } }
  local sys = dbs.system
  if not sys or not server_objects.selected(elements) then
    return plan
  end
  local fn_files, access_files = {}, {}
  for tname, t in pairs(sys.tables) do
    for _, d in ipairs(t.data) do
      local kind = server_objects.entry_kind(tname, d.rel)
      local list = kind == "function" and fn_files or kind == "access" and access_files
      if list then
        list[#list + 1] = d
      end
    end
  end
  table.sort(fn_files, function(a, b) return a.file.name < b.file.name end)
  local err
  plan.functions, err = udf.prepare(cat, fn_files, read, settings.create_function or "if-not-exists", backup_name)
  if not plan.functions then
    return nil, err
  end
  plan.access, err = access.prepare(cat, access_files, read, settings, backup_name)
  if not plan.access then
    return nil, err
  end
  return plan
end


--- Writes a plan of server_objects.prepare. Returns true or nil, err.
function server_objects.write(plan)
  local ok, err = udf.write(plan.functions)
  if ok then
    ok, err = access.write(plan.access)
  end
  return ok, err
end


return server_objects
