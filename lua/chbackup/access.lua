--- Access entities (users, roles, settings profiles, row policies, quotas,
-- masking policies) of the server's local access storage, as ClickHouse
-- keeps them on disk and in a backup.
--
-- On disk (src/Access/DiskAccessStorage.cpp): `<access dir>/<uuid>.sql`,
-- one entity each, its `ATTACH …;` statements one a line (AccessEntityIO.cpp
-- serializeAccessEntity: the entity, then `ATTACH GRANT …` for users and
-- roles); references to other entities are written `ID('<uuid>')`. The
-- `<type>s.list` files index them; `need_rebuild_lists.mark` makes the server
-- rebuild the lists from the `.sql` files when it starts.
-- In a backup (AccessBackup.cpp, IAccessStorage::backup): one file
-- `data/system/<users|roles|…>/access-<uuid>.txt` per type:
--   <uuid>\t<TYPE>\t<name>\n<its ATTACH statements>\n   (then an empty line)
--   …
--   DEPENDENCIES\n<uuid>\t<TYPE>\t<name>\n…   (entities referred to, not in the file)
--   [\nDEPENDENTS\n<entities referring to these, reduced to the references>]
-- RESTORE (AccessRestorerFromBackup) gives restored entities new UUIDs and
-- follows create_access, skip_unresolved_access_dependencies and
-- update_access_entities_dependents.
-- @module chbackup.access
local lfs = require("lfs")
local ddl = require("chbackup.ddl")
local fsutil = require("chbackup.fsutil")
local names = require("chbackup.names")
local uuid_mod = require("chbackup.uuid")

local access = {}

-- type name (AccessEntityTypeInfo::name), the system table holding it
access.TYPES = {
  { type = "USER", table = "users" },
  { type = "ROLE", table = "roles" },
  { type = "SETTINGS PROFILE", table = "settings_profiles" },
  { type = "ROW POLICY", table = "row_policies" },
  { type = "QUOTA", table = "quotas" },
  { type = "MASKING POLICY", table = "masking_policies" },
}
local BY_TABLE, BY_TYPE = {}, {}
for _, t in ipairs(access.TYPES) do
  BY_TABLE[t.table], BY_TYPE[t.type] = t, t
end
access.BY_TABLE = BY_TABLE

local UUID = "%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x"
local MAX_SIZE = 16 * 1024 * 1024


--- The data path's local access storage directory (`user_directories/
-- local_directory/path`, or `access_control_path`, or `<data path>/access`),
-- or nil, err when the configuration keeps access entities where chbackup
-- cannot read them offline.
function access.dir(cat)
  local so = cat.config and cat.config.server_objects or {}
  if so.access_replicated then
    return nil, "the configuration (" .. tostring(so.user_directories) .. ") keeps access entities in"
      .. " Keeper (user_directories/replicated); chbackup reads data paths offline"
  end
  if so.user_directories and not so.access_path then
    return nil, "the configuration (" .. so.user_directories .. ") has no local_directory access storage"
  end
  return fsutil.server_dir(cat, so.access_path, "access")
end


local function entity_label(e)
  return e.type:lower() .. " " .. names.quote_identifier(e.name)
end
access.label = entity_label


-- A row or masking policy's name as ClickHouse prints it (RowPolicyName):
-- `<short> ON <db>.<table>`; reads it at i of line.
local function policy_name(line, i)
  local short, j = ddl.read_identifier(line, i)
  local k = short and line:match("^%s+ON%s+()", j)
  local db, l = nil, nil
  if k then
    db, l = ddl.read_identifier(line, k)
  end
  if not db or line:sub(l, l) ~= "." then
    return nil
  end
  local tbl, m
  if line:sub(l + 1, l + 1) == "*" then
    tbl, m = "*", l + 2
  else
    tbl, m = ddl.read_identifier(line, l + 1)
  end
  if not tbl then
    return nil
  end
  return names.quote_identifier(short) .. " ON " .. names.quote_identifier(db) .. "."
    .. (tbl == "*" and "*" or names.quote_identifier(tbl)), m
end


--- Parses one entity's statements (text: `ATTACH …;` lines). Returns
-- {type=, name=, lines=, refs = {uuid...}} or nil, err.
function access.parse_entity(text)
  if text:find("[%z\r]") then
    return nil, "holds a NUL or CR byte"
  end
  local lines = {}
  for line in (text:gsub("\n$", "") .. "\n"):gmatch("([^\n]*)\n") do
    if not line:match("^ATTACH .*;$") then
      return nil, "line '" .. line:sub(1, 80) .. "' is not an ATTACH statement"
    end
    lines[#lines + 1] = line
  end
  local first = lines[1] or ""
  local e = {}
  for _, t in ipairs(access.TYPES) do
    local i = first:match("^ATTACH " .. t.type .. " ()")
    if i then
      e.type = t.type
      if t.type:match("POLICY$") then
        e.name = policy_name(first, i)
      else
        e.name = ddl.read_identifier(first, i)
      end
      break
    end
  end
  if not e.type or not e.name or e.name == "" then
    return nil, "the first statement does not attach a user, role, settings profile, row policy,"
      .. " quota or masking policy by name"
  end
  for n = 2, #lines do
    if not lines[n]:match("^ATTACH GRANT ") or not (e.type == "USER" or e.type == "ROLE") then
      return nil, "statement " .. n .. " of " .. entity_label(e) .. " is not a GRANT of a user or role"
    end
  end
  e.lines = lines
  e.refs = {}
  for _, line in ipairs(lines) do
    for ref in line:gmatch("ID%('([^']*)'%)") do
      if not ref:match("^" .. UUID .. "$") then
        return nil, "ID('" .. ref:sub(1, 40) .. "') in " .. entity_label(e) .. " is not a UUID"
      end
      e.refs[#e.refs + 1] = ref:lower()
    end
  end
  return e
end


--- The entities of an access directory: by_id[uuid] = entity (with .id,
-- .path), by_key[type .. "\0" .. name] = entity. A file the server would
-- load that does not parse is an error naming it.
function access.read_dir(dir)
  local by_id, by_key = {}, {}
  if not fsutil.is_dir(dir) then
    return by_id, by_key
  end
  for entry in lfs.dir(dir) do
    local id = entry:match("^(" .. UUID .. ")%.sql$")
    if id then
      local path = dir .. "/" .. entry
      local text, rerr = fsutil.read_file(path)
      local e, perr = nil, rerr
      if text then
        e, perr = access.parse_entity(text)
      end
      if not e then
        return nil, "cannot read access entity file " .. path .. ": " .. tostring(perr)
      end
      local key = e.type .. "\0" .. e.name
      if by_key[key] then
        return nil, "access entity files " .. by_key[key].path .. " and " .. path .. " both hold "
          .. entity_label(e)
      end
      e.id, e.path = id:lower(), path
      by_id[e.id], by_key[key] = e, e
    end
  end
  return by_id, by_key
end


local function header(id, e)
  return id .. "\t" .. e.type .. "\t" .. e.name .. "\n"
end


--- The access storage's entities as backup entries {name=, content=}, one
-- file per type that has any (as IAccessStorage::backup makes them).
function access.backup_entries(cat)
  local dir, err = access.dir(cat)
  if not dir then
    if fsutil.is_dir(cat.path .. "/access") then
      return nil, err
    end
    return {}   -- nothing in the data path to take
  end
  local by_id, rerr = access.read_dir(dir)
  if not by_id then
    return nil, rerr
  end
  local out = {}
  for _, t in ipairs(access.TYPES) do
    local list = {}
    for _, e in pairs(by_id) do
      if e.type == t.type then
        list[#list + 1] = e
      end
    end
    if #list > 0 then
      table.sort(list, function(a, b) return a.name < b.name end)
      local body, mine, deps = {}, {}, {}
      for _, e in ipairs(list) do
        mine[e.id] = true
      end
      for _, e in ipairs(list) do
        body[#body + 1] = header(e.id, e) .. table.concat(e.lines, "\n") .. "\n\n"
        for _, ref in ipairs(e.refs) do
          if not mine[ref] and by_id[ref] and not deps[ref] then
            deps[ref] = true
            deps[#deps + 1] = ref
          end
        end
      end
      if #deps > 0 then
        table.sort(deps)
        body[#body + 1] = "DEPENDENCIES\n"
        for _, ref in ipairs(deps) do
          body[#body + 1] = header(ref, by_id[ref])
        end
      end
      out[#out + 1] = {
        name = "data/system/" .. t.table .. "/access-" .. uuid_mod.new() .. ".txt",
        content = table.concat(body),
      }
    end
  end
  return out
end


--- Parses a backup's access file (content) into {entities = {…},
-- dependencies = {…}, dependents = {…}}, each entity with .id; as
-- AccessEntitiesInBackup::fromBackupEntry reads it, strictly. Returns it or
-- nil, err.
function access.parse_backup_file(content)
  if #content > MAX_SIZE then
    return nil, "larger than " .. MAX_SIZE .. " bytes"
  end
  local out = { entities = {}, dependencies = {}, dependents = {} }
  local section = out.entities
  local lines = {}
  for line in (content .. (content:sub(-1) == "\n" and "" or "\n")):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
  end
  local i = 1
  while i <= #lines do
    local line = lines[i]
    i = i + 1
    if line == "DEPENDENCIES" then
      section = out.dependencies
    elseif line == "DEPENDENTS" then
      section = out.dependents
    elseif line ~= "" then
      local id, tname, name = line:match("^(" .. UUID .. ")\t([^\t]+)\t(.*)$")
      local t = tname and BY_TYPE[tname:upper()]
      if not t then
        return nil, "line " .. (i - 1) .. " is not '<uuid>\\t<type>\\t<name>'"
      end
      id = id:lower()
      if section == out.dependencies then
        section[#section + 1] = { id = id, type = t.type, name = name }
      else
        local stmts = {}
        while i <= #lines and lines[i] ~= "" do
          stmts[#stmts + 1] = lines[i]
          i = i + 1
        end
        local e, perr = access.parse_entity(table.concat(stmts, "\n"))
        if not e then
          return nil, "entity " .. id .. ": " .. perr
        end
        if e.type ~= t.type or e.name ~= name then
          return nil, "entity " .. id .. " is listed as " .. t.type:lower() .. " " .. names.quote_identifier(name)
            .. " but its statements attach " .. entity_label(e)
        end
        e.id = id
        section[#section + 1] = e
      end
    end
  end
  return out
end


local function same(a, b)
  return table.concat(a.lines, "\n") == table.concat(b.lines, "\n")
end


-- Rewrites an entity's statements: ID('old') -> ID('new'); references to
-- `drop` ids removed from GRANT lines (a GRANT left without roles goes).
-- Returns lines or nil, err (a dropped reference elsewhere).
local function remap(e, map, drop)
  local out = {}
  for n, line in ipairs(e.lines) do
    local keep = true
    if n > 1 and next(drop) then
      local roles, rest = line:match("^ATTACH GRANT (ID%('[^']*'%)[^ ]*.-) (TO .*)$")
      if roles then
        local kept = {}
        for item in (roles .. ", "):gmatch("(.-), ") do
          local ref = item:match("^ID%('([^']*)'%)$")
          if not (ref and drop[ref:lower()]) then
            kept[#kept + 1] = item
          end
        end
        keep = #kept > 0
        line = "ATTACH GRANT " .. table.concat(kept, ", ") .. " " .. rest
      end
    end
    for ref in line:gmatch("ID%('([^']*)'%)") do
      if drop[ref:lower()] then
        return nil, entity_label(e) .. " refers to an entity the target lacks in '" .. line:sub(1, 120)
          .. "'; chbackup can leave out only such references in GRANT statements"
      end
    end
    if keep then
      out[#out + 1] = (line:gsub("ID%('([^']*)'%)", function(ref)
        return "ID('" .. (map[ref:lower()] or ref) .. "')"
      end))
    end
  end
  return out
end


--- Plans the RESTORE of a backup's access entities. files: list of
-- {rel=, file=} of data/system/<access table>/; read(entry) gives verified
-- bytes; s: the RESTORE settings. Returns {dir=, write = {{path=, content=,
-- label=}}, remove = {paths}} or nil, err. Nothing is written.
function access.prepare(cat, files, read, s, backup_name)
  if #files == 0 then
    return { write = {}, remove = {} }
  end
  local dir, derr = access.dir(cat)
  if not dir then
    return nil, "cannot restore access entities of backup " .. backup_name .. ": " .. derr
  end
  local mode = s.create_access or "if-not-exists"
  local skip_unresolved = s.skip_unresolved_access_dependencies or s.allow_unresolved_access_dependencies
  local update_dependents = s.update_access_entities_dependents ~= false
  -- every entity the backup names, by its id in the backup
  local infos = {}
  local function info_of(x, where)
    local i = infos[x.id]
    if i and (i.type ~= x.type or i.name ~= x.name) then
      error({ "conflicting names for UUID " .. x.id .. " in " .. where }, 0)
    end
    if not i then
      i = { id = x.id, type = x.type, name = x.name }
      infos[x.id] = i
      infos[#infos + 1] = i
    end
    return i
  end
  table.sort(files, function(a, b) return a.file.name < b.file.name end)
  local ok, perr = pcall(function()
    for _, f in ipairs(files) do
      local where = "backup " .. backup_name .. ": " .. f.file.name
      local text, rerr = read(f.file)
      if not text then
        error({ rerr }, 0)
      end
      local parsed, err = access.parse_backup_file(text)
      if not parsed then
        error({ "cannot restore access entities from " .. where .. ": " .. err }, 0)
      end
      for _, e in ipairs(parsed.entities) do
        local i = info_of(e, where)
        if i.restore and not same(i.entity, e) then
          error({ "conflicting definitions for UUID " .. e.id .. " in " .. where }, 0)
        end
        i.entity, i.restore = e, true
      end
      for _, d in ipairs(parsed.dependencies) do
        info_of(d, where)
      end
      for _, e in ipairs(parsed.dependents) do
        local i = info_of(e, where)
        if not i.restore then
          i.entity = i.entity or e
        end
      end
    end
  end)
  if not ok then
    return nil, type(perr) == "table" and perr[1] or tostring(perr)
  end
  table.sort(infos, function(a, b) return a.type .. "\0" .. a.name < b.type .. "\0" .. b.name end)

  local by_id, by_key = access.read_dir(dir)
  if not by_id then
    return nil, by_key
  end
  local map, drop, restored = {}, {}, {}
  local plan = { dir = dir, write = {}, remove = {} }
  for _, i in ipairs(infos) do
    local existing = by_key[i.type .. "\0" .. i.name]
    if i.restore and mode == "replace" then
      i.new_id = uuid_mod.new()
      if existing then
        plan.remove[#plan.remove + 1] = existing.path
      end
    elseif existing then
      if i.restore and mode == "create" then
        return nil, "cannot restore " .. entity_label(i) .. ": it already exists in " .. dir
          .. " (create_access = 'create'; 'if-not-exists' keeps it, 'replace' replaces it)"
      end
      i.new_id, i.restore, i.existing = existing.id, false, existing
    elseif i.restore then
      i.new_id = uuid_mod.new()
    elseif skip_unresolved then
      drop[i.id] = true
    else
      return nil, "cannot resolve " .. entity_label(i) .. " while restoring from backup " .. backup_name
        .. ": it is neither in the backup nor in " .. dir
        .. " (SETTINGS skip_unresolved_access_dependencies = true restores without it)"
    end
    map[i.id] = i.new_id
    if i.restore then
      restored[i.id] = true
    end
  end
  for _, i in ipairs(infos) do
    if i.restore then
      local lines, rerr = remap(i.entity, map, drop)
      if not lines then
        return nil, "cannot restore " .. rerr
      end
      plan.write[#plan.write + 1] = { path = dir .. "/" .. i.new_id .. ".sql",
        content = table.concat(lines, "\n") .. "\n", label = entity_label(i) }
    elseif update_dependents and i.entity and i.new_id then
      -- an entity kept as it is that the backup has referring to restored
      -- ones: ClickHouse would add those references to it
      for _, ref in ipairs(i.entity.refs) do
        if restored[ref] then
          return nil, "cannot restore access entities of backup " .. backup_name .. ": existing "
            .. entity_label(i) .. " would have to be changed to refer to restored "
            .. entity_label(infos[ref]) .. ", and chbackup does not edit existing entities"
            .. " (SETTINGS update_access_entities_dependents = false leaves it as it is,"
            .. " create_access = 'replace' replaces it)"
        end
      end
    end
  end
  return plan
end


return access
