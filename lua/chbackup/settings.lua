--- BACKUP/RESTORE settings: which exist, their types, and which are not
-- delivered yet (refused by name rather than silently ignored).
-- @module chbackup.settings
local settings = {}

local BACKUP = {
  id = "string",
  base_backup = "destination",
  compression_method = "string",
  compression_level = "integer",
  password = "string",
  deduplicate_files = "boolean",
  structure_only = "boolean",
  -- chbackup's own: worker threads and fsync of every written file
  threads = "integer",
  fsync = "boolean",
}

local RESTORE = {
  id = "string",
  password = "string",
  allow_non_empty_tables = "boolean",
  structure_only = "boolean",
  threads = "integer",
  fsync = "boolean",
}

-- Known to ClickHouse, delivered by later work: refused by name.
local NOT_YET = {
  use_same_s3_credentials_for_base_backup = true,
  async = true, allow_different_table_def = true,
}


local function coerce(kind, value)
  if kind == "boolean" then
    if value == true or value == 1 or value == "1" or value == "true" then
      return true
    elseif value == false or value == 0 or value == "0" or value == "false" then
      return false
    end
    return nil
  elseif kind == "destination" then
    -- base_backup = Disk('backups', 'a') (also accepted as a string)
    if type(value) == "table" and value.engine then
      return value
    end
    if type(value) == "string" then
      return require("chbackup.chain").parse_name(value)
    end
    return nil
  elseif kind == "integer" then
    local n = math.tointeger(tonumber(value))
    return n
  end
  if type(value) == "string" then
    return value
  end
  if type(value) == "number" then
    return tostring(value)
  end
  return nil
end


--- Validates a statement's settings for `kind` ("backup"|"restore").
-- Returns a table of coerced values or nil, err naming the setting.
function settings.check(kind, given)
  local known = kind == "backup" and BACKUP or RESTORE
  local out = {}
  for name, value in pairs(given or {}) do
    if NOT_YET[name] and not known[name] then
      return nil, string.format("setting '%s' is not supported yet", name)
    end
    local t = known[name]
    if not t then
      local list = {}
      for k in pairs(known) do
        list[#list + 1] = k
      end
      table.sort(list)
      return nil, string.format("unknown %s setting '%s' (known: %s)", kind, name,
        table.concat(list, ", "))
    end
    local v = coerce(t, value)
    if v == nil then
      return nil, string.format("setting '%s' must be %s, got %s", name,
        t == "integer" and "an integer" or t == "destination" and "a backup such as Disk('backups', 'a')"
        or "a " .. t, tostring(value))
    end
    out[name] = v
  end
  return out
end


return settings
