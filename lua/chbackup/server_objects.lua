--- What `BACKUP ALL` takes beside databases, as a ClickHouse server does:
-- SQL user-defined functions (chbackup.udf) and access entities
-- (chbackup.access), under `data/system/functions/` and
-- `data/system/<users|roles|…>/`. Named collections are not in ClickHouse's
-- backups (system.named_collections has no backupData): a data path that
-- has some gets a notice saying they are left out.
-- @module chbackup.server_objects
local access = require("chbackup.access")
local fsutil = require("chbackup.fsutil")
local names = require("chbackup.names")
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


--- Which of a backup's server tables (system.functions, system.users, …)
-- the RESTORE elements select, as ClickHouse's RestorerFromBackup finds
-- them: ALL (not EXCEPT DATABASE system), DATABASE system, TABLE
-- system.<t>; EXCEPT TABLES leave some out. A server table is restored
-- under its own name only. Returns a set of table names, or nil, err.
function server_objects.restore_selection(elements, dbs, backup_name)
  local set, sys = {}, dbs.system
  local function add(tname, except)
    local t = sys and sys.tables[tname]
    if t and t.metadata and server_objects.is_server_table(tname) and not except[tname] then
      set[tname] = true
    end
  end
  for _, el in ipairs(elements) do
    local except = {}
    for _, x in ipairs(el.except_tables or {}) do
      if (x.database or (el.type == "database" and el.name or "default")) == "system" then
        except[x.name] = true
      end
    end
    if el.type == "table" and (el.database or "default") == "system" and server_objects.is_server_table(el.name) then
      local what = "table system." .. el.name
      if el.new_database or el.new_name or el.partitions then
        return nil, "cannot restore " .. what .. (el.partitions and " with PARTITIONS" or " under another name")
          .. ": its data are the server's " .. (el.name == "functions" and "SQL functions" or "access entities")
          .. ", restored only as system." .. el.name .. ", as ClickHouse does"
      end
      if not (sys and sys.tables[el.name] and sys.tables[el.name].metadata) then
        return nil, what .. " is not in backup " .. backup_name
      end
      add(el.name, except)
    elseif el.type == "database" and el.name == "system" and not el.new_name or server_objects.selected({ el }) then
      for tname in pairs(sys and sys.tables or {}) do
        add(tname, except)
      end
    end
  end
  return set
end


--- Plans the RESTORE of the functions and access entities of a backup
-- (its contents.index `dbs`) that the elements select (not with
-- structure_only, as ClickHouse). Returns a plan for server_objects.write,
-- or nil, err; nothing is written.
function server_objects.prepare(cat, dbs, elements, read, settings, backup_name)
  local plan = { functions = {}, access = { write = {}, remove = {} } }
  local selected, serr = server_objects.restore_selection(elements, dbs, backup_name)
  if not selected then
    return nil, serr
  end
  if settings.structure_only or not next(selected) then
    return plan
  end
  local fn_files, access_files = {}, {}
  for tname in pairs(selected) do
    for _, d in ipairs(dbs.system.tables[tname].data) do
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


-- The files a plan writes, each first under a temporary name beside its
-- place: list of {tmp=, path=, content=, what=}.
local function staged(plan)
  local out = {}
  local function add(path, content, what)
    local dir, base = path:match("^(.*)/([^/]+)$")
    out[#out + 1] = { tmp = dir .. "/tmp_restore_" .. base, dir = dir, content = content, what = what }
  end
  for _, w in ipairs(plan.functions) do
    add(w.path, w.content, "function " .. names.quote_identifier(w.name))
  end
  for _, w in ipairs(plan.access.write) do
    add(w.path, w.content, w.label)
  end
  return out
end


--- The temporary files server_objects.write writes (to be noted in the
-- RESTORE's lock before).
function server_objects.temp_files(plan)
  local out = {}
  for _, f in ipairs(staged(plan)) do
    out[#out + 1] = f.tmp
  end
  return out
end


--- Writes a plan of server_objects.prepare so that a kill leaves none of
-- its files in place or all of them: each is written under its temporary
-- name, then guard:commit (chbackup.lock) notes and takes the renames, the
-- removal of replaced access entities and, last, need_rebuild_lists.mark
-- (the server rebuilds its `*.list` indexes from the `.sql` files when it
-- starts, and sees none of them before). Returns true or nil, err.
function server_objects.write(plan, guard)
  local files = staged(plan)
  local steps = {}
  for i, f in ipairs(files) do
    local ok, err = fsutil.mkdir_p(f.dir)
    if ok then
      ok, err = fsutil.write_file(f.tmp, f.content)
    end
    if not ok then
      for j = 1, i do
        os.remove(files[j].tmp)
      end
      return nil, "cannot restore " .. f.what .. ": " .. tostring(err)
    end
    steps[#steps + 1] = { op = "rename", path = f.tmp }
  end
  if #steps == 0 then
    return true
  end
  for _, p in ipairs(plan.access.remove) do
    steps[#steps + 1] = { op = "remove", path = p }
  end
  if #plan.access.write > 0 then
    steps[#steps + 1] = { op = "touch", path = plan.access.dir .. "/need_rebuild_lists.mark" }
  end
  local lock = require("chbackup.lock")
  local ok, err
  if guard then
    ok, err = guard:commit(steps)
  else
    ok, err = lock.apply(steps)
  end
  if not ok then
    return nil, "cannot restore functions and access entities: " .. tostring(err)
  end
  return true
end


return server_objects
