-- Every BACKUP/RESTORE setting ClickHouse defines is either supported as
-- ClickHouse defines it or refused by name with why; none is ignored. And
-- the layouts those settings produce interoperate both ways with real
-- ClickHouse (data_file_name_generator = 'checksum', structure_only).
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")
local settings = require("chbackup.settings")

-- ClickHouse 26's settings (src/Backups/BackupSettings.h, RestoreSettings.h,
-- as listed in shared/docs/s3-live-cluster-facts.md), with a value each.
local CLICKHOUSE = {
  backup = {
    id = "x", base_backup = "Disk('backups', 'a')", compression_method = "xz", compression_level = 3,
    password = "p", s3_storage_class = "STANDARD", s3_storage_class_name = "STANDARD", structure_only = 1,
    async = 1, decrypt_files_from_encrypted_disks = 1, deduplicate_files = 1, allow_s3_native_copy = 1,
    allow_azure_native_copy = 1, use_same_s3_credentials_for_base_backup = 1,
    use_same_password_for_base_backup = 1, azure_attempt_to_create_container = 1,
    read_from_filesystem_cache = 1, shard_num = 1, replica_num = 1, check_parts = 1,
    check_projection_parts = 1, allow_backup_broken_projections = 1, write_access_entities_dependents = 1,
    allow_checksums_from_remote_paths = 1, data_file_name_generator = "checksum",
    data_file_name_prefix_length = 3, backup_data_from_refreshable_materialized_view_targets = 1,
    experimental_lightweight_snapshot = 1, internal = 1, host_id = "h", cluster_host_ids = "[]",
    backup_uuid = "u",
  },
  restore = {
    id = "x", base_backup = "Disk('backups', 'a')", password = "p", structure_only = 1, async = 1,
    create_table = "create", create_database = "create", allow_different_table_def = 1,
    allow_different_database_def = 1, shard_num = 1, replica_num = 1, shard_num_in_backup = 1,
    replica_num_in_backup = 1, allow_non_empty_tables = 1, create_access = "create",
    skip_unresolved_access_dependencies = 1, allow_unresolved_access_dependencies = 1,
    restore_access_entities_with_current_grants = 1, update_access_entities_dependents = 1,
    create_function = "create", allow_s3_native_copy = 1, allow_azure_native_copy = 1,
    use_same_s3_credentials_for_base_backup = 1, use_same_password_for_base_backup = 1,
    restore_broken_parts_as_detached = 1, storage_policy = "p", internal = 1, host_id = "h",
    cluster_host_ids = "[]", restore_uuid = "u",
  },
}


describe("BACKUP and RESTORE settings", function()
  for kind, list in pairs(CLICKHOUSE) do
    it("takes or refuses by name, saying why, every ClickHouse " .. kind .. " setting", function()
      local taken, refused = 0, 0
      for name, value in pairs(list) do
        local given = { [name] = value }
        if name == "data_file_name_prefix_length" then
          given.data_file_name_generator = "checksum"
        end
        local out, err = settings.check(kind, given)
        if out then
          taken = taken + 1
        else
          refused = refused + 1
          assert.matches("setting '" .. name .. "' is not supported by chbackup's " .. kind:upper() .. ": %S", err)
        end
      end
      assert.is_true(taken > 0 and refused > 0)
    end)
  end

  it("refuses values chbackup does not implement, naming them", function()
    local _, err = settings.check("backup", { data_file_name_generator = "random" })
    assert.equal("setting 'data_file_name_generator' must be one of 'checksum', 'first_file_name', got 'random'", err)
    _, err = settings.check("backup", { check_parts = 0 })
    assert.matches("setting 'check_parts' cannot be turned off", err)
    _, err = settings.check("backup", { data_file_name_prefix_length = 2 })
    assert.matches("needs data_file_name_generator = 'checksum'", err)
    _, err = settings.check("backup", { colour = 1 })
    assert.matches("unknown backup setting 'colour'", err)
  end)
end)


describe("data_file_name_generator = 'checksum'", function()
  local w
  local TABLES = { { "logs", "tiny" }, { "logs", "events" }, { "shop", "customers" }, { "shop", "orders" } }
  local SELECT = "TABLE logs.tiny, TABLE logs.events, TABLE shop.customers, TABLE shop.orders"
  setup(function()
    w = h.world("dfng")
  end)

  -- name -> data_file of every entry, and the files stored (not .backup).
  local function layout(dir)
    local m = assert(manifest.read(dir .. "/.backup"))
    local map = {}
    for _, f in ipairs(m.files) do
      map[f.name] = f.data_file or ""
    end
    local stored = {}
    for _, f in ipairs(h.tree(dir)) do
      if f ~= ".backup" then
        stored[#stored + 1] = f
      end
    end
    return map, stored, m
  end

  it("is written as ClickHouse writes it (the same names, the same stored files)", function()
    h.clickhouse(w.data, { "BACKUP " .. SELECT .. " TO Disk('backups', 'theirs') SETTINGS "
      .. "data_file_name_generator = 'checksum', data_file_name_prefix_length = 3" }, w.config)
    h.sql(w, "BACKUP " .. SELECT .. " TO Disk('backups', 'ours') SETTINGS "
      .. "data_file_name_generator = 'checksum', data_file_name_prefix_length = 3")
    local their_map, their_files, their_m = layout(w.backups .. "/theirs")
    local our_map, our_files, our_m = layout(w.backups .. "/ours")
    assert.equal("checksum", their_m.data_file_name_generator)
    assert.equal("checksum", our_m.data_file_name_generator)
    -- ClickHouse's columns.txt/count.txt of Log tables aside (README), every entry agrees
    for name, df in pairs(their_map) do
      if not (name:match("^data/logs/[^/]+/columns%.txt$") or name:match("^data/logs/[^/]+/count%.txt$")) then
        assert.equal(df, our_map[name], name)
      end
    end
    local ours = {}
    for _, f in ipairs(our_files) do
      ours[f] = true
    end
    for _, f in ipairs(their_files) do
      assert.is_truthy(ours[f] or f:match("^%x%x%x/%x+$"), f)
    end
    assert.is_true(#our_files > 10)
    for _, f in ipairs(our_files) do
      assert.matches("^%x%x%x/%x+$", f)
    end
  end)

  it("made by ClickHouse is restored by chbackup with the same rows", function()
    local target = w.dir .. "/from-theirs"
    h.copy_datapath(target)
    h.clickhouse(target, { "DROP TABLE logs.tiny SYNC", "DROP TABLE logs.events SYNC",
      "DROP TABLE shop.orders SYNC", "DROP TABLE shop.customers SYNC" })
    h.sql(w, "RESTORE " .. SELECT .. " FROM Disk('backups', 'theirs')", target)
    assert.equal(h.table_digests(w.data, TABLES), h.table_digests(target, TABLES))
  end)

  it("made by chbackup (prefix 0 too, and an incremental on it) is restored by ClickHouse", function()
    h.sql(w, "BACKUP " .. SELECT .. " TO Disk('backups', 'flat') SETTINGS data_file_name_generator = 'checksum', "
      .. "data_file_name_prefix_length = 0")
    local _, flat = layout(w.backups .. "/flat")
    for _, f in ipairs(flat) do
      assert.matches("^%x+$", f)
    end
    local want = { flat = h.table_digests(w.data, TABLES) }
    h.clickhouse(w.data, { "INSERT INTO logs.tiny SELECT * FROM logs.tiny LIMIT 5" })
    want.inc = h.table_digests(w.data, TABLES)
    assert.are_not.equal(want.flat, want.inc)
    h.sql(w, "BACKUP " .. SELECT .. " TO Disk('backups', 'inc') SETTINGS data_file_name_generator = 'checksum', "
      .. "base_backup = Disk('backups', 'ours')")
    for _, name in ipairs({ "flat", "inc" }) do
      local target = w.dir .. "/ch-" .. name
      h.clickhouse(target, { "CREATE DATABASE logs", "CREATE DATABASE shop",
        "RESTORE " .. SELECT .. " FROM Disk('backups', '" .. name .. "')" }, w.config)
      assert.equal(want[name], h.table_digests(target, TABLES))
    end
  end)
end)


describe("SETTINGS structure_only and async on BACKUP", function()
  it("backs up CREATE statements only, which ClickHouse restores as empty tables", function()
    local w = h.world("structure")
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 's') SETTINGS structure_only = 1")
    for _, f in ipairs(assert(manifest.read(w.backups .. "/s/.backup")).files) do
      assert.matches("^metadata/", f.name)
    end
    local target = w.dir .. "/ch"
    h.clickhouse(target, { "RESTORE DATABASE shop FROM Disk('backups', 's')" }, w.config)
    assert.equal("shop\torders\t0\t0\n", h.table_digests(target, { { "shop", "orders" } }))
  end)

  it("returns at once with SETTINGS async = 1, as with ASYNC", function()
    local w = h.world("async-setting")
    local ok, out = h.cli(w, "BACKUP DATABASE shop TO Disk('backups', 'a') SETTINGS async = 1")
    assert.is_true(ok, out)
    local id, status = out:match("^([%x%-]+)\t(%S+)\n$")
    assert.equal("CREATING_BACKUP", status)
    ok, out = h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s wait %s",
      h.ROOT, h.quote(w.data), h.quote(w.config), h.quote(w.status), id))
    assert.is_true(ok, out)
    assert.equal(id .. "\tBACKUP_CREATED\n", out)
  end)
end)
