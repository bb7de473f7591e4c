--- BACKUP/RESTORE settings: which exist, their types, and which are not
-- delivered yet (refused by name rather than silently ignored).
-- @module chbackup.settings
local names = require("chbackup.names")
local settings = {}

local BACKUP = {
  id = "string",
  base_backup = "destination",
  compression_method = "string",
  compression_level = "integer",
  password = "string",
  deduplicate_files = "boolean",
  structure_only = "boolean",
  async = "boolean",
  data_file_name_generator = "string",
  data_file_name_prefix_length = "integer",
  check_parts = "boolean",
  check_projection_parts = "boolean",
  -- the chain's backups share one password: true or false, the base is
  -- opened with the statement's password
  use_same_password_for_base_backup = "boolean",
  -- chbackup's own: worker threads and fsync of every written file
  threads = "integer",
  fsync = "boolean",
  write_access_entities_dependents = "boolean",
  -- S3 destinations (chbackup.store.s3): x-amz-storage-class of every object
  -- written; the base takes this backup's S3 key id and secret
  s3_storage_class = "string",
  s3_storage_class_name = "string",
  use_same_s3_credentials_for_base_backup = "boolean",
}

local RESTORE = {
  id = "string",
  password = "string",
  allow_non_empty_tables = "boolean",
  structure_only = "boolean",
  async = "boolean",
  use_same_password_for_base_backup = "boolean",
  threads = "integer",
  fsync = "boolean",
  -- RESTORE ALL's functions and access entities (chbackup.udf, chbackup.access)
  create_function = "string",
  create_access = "string",
  skip_unresolved_access_dependencies = "boolean",
  allow_unresolved_access_dependencies = "boolean",   -- its old name
  update_access_entities_dependents = "boolean",
  use_same_s3_credentials_for_base_backup = "boolean",
}

-- ClickHouse's other BACKUP/RESTORE settings (src/Backups/BackupSettings.h,
-- RestoreSettings.h): none is ignored; each is refused by name, saying why.
local S3_COPY = "chbackup reads and writes local disks' files: there is no S3 disk to copy server-side"
local CLUSTER = "chbackup runs on one server's data path; ON CLUSTER plumbing does not apply"
local REFUSED = {
  backup = {
    allow_s3_native_copy = S3_COPY,
    allow_azure_native_copy = "Azure is not supported",
    azure_attempt_to_create_container = "Azure is not supported",
    read_from_filesystem_cache = "chbackup reads local disks only (no filesystem cache)",
    allow_checksums_from_remote_paths = "chbackup reads local disks only (no remote paths)",
    experimental_lightweight_snapshot = "SharedMergeTree object keys are not backed up",
    decrypt_files_from_encrypted_disks = "files of encrypted disks are copied as they lie",
    allow_backup_broken_projections = "chbackup refuses a part it cannot back up whole",
    backup_data_from_refreshable_materialized_view_targets =
      "refreshable materialized view targets are not singled out",
    shard_num = CLUSTER, replica_num = CLUSTER, internal = CLUSTER, host_id = CLUSTER,
    cluster_host_ids = CLUSTER, backup_uuid = CLUSTER,
  },
  restore = {
    base_backup = "the base recorded in the backup is used (it is checked by uuid)",
    create_table = "tables are created when missing and used when equal (if-not-exists)",
    create_database = "databases are created when missing and used when they exist (if-not-exists)",
    allow_different_table_def = "a table that exists with another definition is refused",
    allow_different_database_def = "a database that exists with another definition is used as it is",
    restore_access_entities_with_current_grants = "an offline RESTORE runs as no user whose grants"
      .. " could cap the restored ones: grants are restored as the backup has them",
    allow_s3_native_copy = S3_COPY,
    allow_azure_native_copy = "Azure is not supported",
    restore_broken_parts_as_detached = "a part that fails its checks is refused, never restored",
    storage_policy = "parts are placed on the disks of the target table's own policy",
    shard_num = CLUSTER, replica_num = CLUSTER, shard_num_in_backup = CLUSTER,
    replica_num_in_backup = CLUSTER, internal = CLUSTER, host_id = CLUSTER,
    cluster_host_ids = CLUSTER, restore_uuid = CLUSTER,
  },
}

-- Values of settings chbackup takes only in the form it implements.
local CREATE_MODES = { create = true, ["if-not-exists"] = true, replace = true }
local VALUES = {
  data_file_name_generator = { first_file_name = true, checksum = true },
  create_function = CREATE_MODES,
  create_access = CREATE_MODES,
}
-- Settings chbackup always honours: turning them off is refused.
-- Settings chbackup honours only turned off (ClickHouse's default is on).
local ONLY_OFF = {
  write_access_entities_dependents = "chbackup does not write the DEPENDENTS section of access files"
    .. " (used only by a RESTORE of some access entities without those that refer to them):"
    .. " its backups are ClickHouse's with write_access_entities_dependents = false",
}
local ALWAYS_ON = {
  check_parts = "chbackup always verifies every part's checksums",
  check_projection_parts = "chbackup always verifies every projection's checksums",
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
    local why = REFUSED[kind][name]
    if why then
      return nil, string.format("setting '%s' is not supported by chbackup's %s: %s", name, kind:upper(), why)
    end
    local t = known[name]
    if not t then
      local list = {}
      for k in pairs(known) do
        list[#list + 1] = k
      end
      table.sort(list)
      return nil, string.format("unknown %s setting '%s' (known: %s)%s", kind, name,
        table.concat(list, ", "), names.did_you_mean(name, list))
    end
    local v = coerce(t, value)
    if v == nil then
      return nil, string.format("setting '%s' must be %s, got %s", name,
        t == "integer" and "an integer" or t == "destination" and "a backup such as Disk('backups', 'a')"
        or "a " .. t, tostring(value))
    end
    if VALUES[name] and not VALUES[name][v] then
      local list = {}
      for k in pairs(VALUES[name]) do
        list[#list + 1] = "'" .. k .. "'"
      end
      table.sort(list)
      return nil, string.format("setting '%s' must be one of %s, got '%s'", name, table.concat(list, ", "), v)
    end
    if ALWAYS_ON[name] and v == false then
      return nil, string.format("setting '%s' cannot be turned off: %s", name, ALWAYS_ON[name])
    end
    if ONLY_OFF[name] and v == true then
      return nil, string.format("setting '%s' is not supported by chbackup's %s: only false is: %s",
        name, kind:upper(), ONLY_OFF[name])
    end
    out[name] = v
  end
  if out.data_file_name_prefix_length and (out.data_file_name_prefix_length < 0
      or out.data_file_name_prefix_length > 31) then
    return nil, "setting 'data_file_name_prefix_length' must be between 0 and 31"
  end
  if out.data_file_name_prefix_length and out.data_file_name_generator ~= "checksum" then
    return nil, "setting 'data_file_name_prefix_length' needs data_file_name_generator = 'checksum'"
  end
  return out
end


return settings
