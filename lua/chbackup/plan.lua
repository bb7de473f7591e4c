--- Request + catalog (or backup manifest) -> plan.
--
-- A plan is plain data: what to copy from where to where, with the size
-- and checksum already known for each file. The C job executes it; nothing
-- here reads file contents.
-- @module chbackup.plan
local catalog_mod = require("chbackup.catalog")
local ddl = require("chbackup.ddl")
local logfamily = require("chbackup.logfamily")
local names = require("chbackup.names")
local renaming = require("chbackup.renaming")

local plan = {}

local DEFAULT_DATABASE = "default"


--- Partition ids selected by a PARTITION[S] clause, as a set, or nil when
-- there is no clause. Values become ids the way MergeTree names simple
-- partitions (numbers and dates as written); anything else must be given
-- as PARTITION ID '…'.
function plan.partition_ids(partitions, where)
  if not partitions then
    return nil
  end
  local set = {}
  for _, p in ipairs(partitions) do
    if p.kind == "id" then
      set[p.value] = true
    elseif p.kind == "value" and tostring(p.value):match("^[%w%-]+$") then
      set[tostring(p.value)] = true
    elseif p.kind == "tuple" then
      set[table.concat(p.values, "-")] = true
    else
      return nil, string.format("cannot map partition value '%s' of %s to a partition id; "
        .. "use PARTITION ID '<id>'", tostring(p.value), where)
    end
  end
  return set
end


local function qualified(db, name)
  return names.qualified(db, name)
end


--- Objects of a data path selected by a BACKUP's elements.
-- Returns {tables = list of {table=<catalog table>, target_db=,
-- target_name=, partitions=set|nil}, databases = list of {database=,
-- target_db=}, renaming = the elements' renaming map (chbackup.renaming)}.
function plan.select_for_backup(cat, elements)
  local map, merr = renaming.map(elements, DEFAULT_DATABASE)
  if not map then
    return nil, merr
  end
  local selected, seen = {}, {}
  local function add(tbl, target_db, target_name, partitions)
    local key = target_db .. "\0" .. target_name
    if seen[key] then
      return nil, "table " .. qualified(target_db, target_name) .. " is selected twice"
    end
    seen[key] = true
    -- every disk of the table's storage policy, or a clear refusal
    local placed, perr = cat:place(tbl)
    if not placed then
      return nil, perr
    end
    selected[#selected + 1] = {
      table = tbl, target_db = target_db, target_name = target_name, partitions = partitions,
    }
    return true
  end
  local databases = {}
  local function add_database(db, target)
    databases[#databases + 1] = { database = db, target_db = target }
  end
  local function add_all_tables(db_name, target_db, except)
    local tables, err = cat:tables(db_name)
    if not tables then
      return nil, err
    end
    for _, t in ipairs(tables) do
      if not (except and except[t.name]) then
        local ok, aerr = add(t, target_db, t.name, nil)
        if not ok then
          return nil, aerr
        end
      end
    end
    return true
  end
  for _, el in ipairs(elements) do
    if el.type == "table" then
      if el.temporary then
        return nil, "BACKUP TEMPORARY TABLE is not supported: chbackup reads data paths offline"
      end
      local db = el.database or DEFAULT_DATABASE
      if not cat:database(db) then
        return nil, "database " .. names.quote_identifier(db) .. " does not exist in " .. cat.path
          .. cat:database_hint(db)
      end
      local t, err = cat:table(db, el.name)
      if not t then
        return nil, err
      end
      local parts, perr = plan.partition_ids(el.partitions, qualified(db, el.name))
      if perr then
        return nil, perr
      end
      local ok, aerr = add(t, el.new_database or db, el.new_name or el.name, parts)
      if not ok then
        return nil, aerr
      end
    elseif el.type == "database" then
      local db = cat:database(el.name)
      if not db then
        return nil, "database " .. names.quote_identifier(el.name) .. " does not exist in " .. cat.path
          .. cat:database_hint(el.name)
      end
      local except = {}
      for _, t in ipairs(el.except_tables or {}) do
        except[t.name] = true
      end
      add_database(db, el.new_name or el.name)
      local ok, err = add_all_tables(el.name, el.new_name or el.name, except)
      if not ok then
        return nil, err
      end
    elseif el.type == "all" then
      local except_db, except_tables = {}, {}
      for _, d in ipairs(el.except_databases or {}) do
        except_db[d] = true
      end
      for _, t in ipairs(el.except_tables or {}) do
        except_tables[(t.database or DEFAULT_DATABASE) .. "\0" .. t.name] = true
      end
      for _, db in ipairs(cat:databases()) do
        if not db.system and not except_db[db.name] then
          add_database(db, db.name)
          local tables, err = cat:tables(db.name)
          if not tables then
            return nil, err
          end
          for _, t in ipairs(tables) do
            if not except_tables[db.name .. "\0" .. t.name] then
              local ok, aerr = add(t, db.name, t.name, nil)
              if not ok then
                return nil, aerr
              end
            end
          end
        end
      end
    else
      return nil, "BACKUP of " .. tostring(el.type) .. " is not supported"
    end
  end
  -- BACKUP ALL also takes the server's functions and access entities
  local server = require("chbackup.server_objects").selected(elements) and cat or nil
  return { tables = selected, databases = databases, renaming = map, server = server }
end


-- Why a table of these engines with data is refused (ClickHouse 26.5's own
-- BACKUP keeps only their definitions, so its RESTORE makes them empty).
local NOT_BACKED_UP = {
  Set = ": ClickHouse's BACKUP keeps no rows of a Set table either",
  Join = ": ClickHouse's BACKUP keeps no rows of a Join table either",
  EmbeddedRocksDB = ": its rows are in a RocksDB directory, consistent only while no server has it open,"
    .. " that only RocksDB reads (ClickHouse's BACKUP keeps no rows of it either)",
}


--- The files a backup of the selection holds. opts.structure_only: metadata
-- only. Returns { metadata = { {name=, content=} }, data = { {name=, path=,
-- size=, checksum=|nil, disk=} } } or nil, err. Data sizes come from the
-- data path. A table whose data chbackup cannot read (Memory, Buffer, an
-- engine it does not know that keeps files) is refused, never skipped.
-- opts.from_base(prefix, part_dir), for an incremental: the entries of a
-- part known unchanged since the base (`prefix` is the part's name in the
-- backup, ending in "/"), each final (no path), or nil to read the part.
-- opts.on_data(list): each part's (each Log table's) data files are given
-- to it, in the order of their tables and parts by name, instead of
-- listed in `data`; it returns true or nil, err (which ends the plan).
function plan.backup_files(selection, opts)
  local structure_only = opts and opts.structure_only
  local from_base = opts and opts.from_base
  local metadata, data = {}, {}
  local add_data = opts and opts.on_data or function(files)
    table.move(files, 1, #files, #data + 1, data)
    return true
  end
  for _, d in ipairs(selection.databases) do
    local db = d.database
    metadata[#metadata + 1] = {
      name = "metadata/" .. names.escape_file(d.target_db) .. ".sql",
      content = ddl.create_statement("DATABASE", nil, d.target_db, db.uuid, db.body),
    }
  end
  -- tables in the order of their names in the backup (`data/<db>/<t>/…`)
  local tables = table.move(selection.tables, 1, #selection.tables, 1, {})
  for _, s in ipairs(tables) do
    s.data_prefix = "data/" .. names.escape_file(s.target_db) .. "/" .. names.escape_file(s.target_name) .. "/"
  end
  table.sort(tables, function(a, b) return a.data_prefix < b.data_prefix end)
  for _, s in ipairs(tables) do
    local t = s.table
    local esc_db, esc_t = names.escape_file(s.target_db), names.escape_file(s.target_name)
    metadata[#metadata + 1] = {
      name = "metadata/" .. esc_db .. "/" .. esc_t .. ".sql",
      content = ddl.create_statement(t.object, s.target_db, s.target_name, t.uuid,
        renaming.apply(t.body, selection.renaming)),
    }
    local prefix = s.data_prefix
    local what = qualified(t.database, t.name) .. " (" .. tostring(t.engine) .. ")"
    local way_out = ": exclude it (… EXCEPT TABLES …) or use SETTINGS structure_only = true"
    local family = structure_only and "metadata only" or t.family
    if family == "memory" then
      return nil, "table " .. what .. " keeps its data in the server's memory; chbackup reads"
        .. " data paths offline and cannot back it up" .. way_out
    elseif family == "none" and t.engine == "KeeperMap" then
      -- its rows live in Keeper, not in the data path (ClickHouse's BACKUP
      -- reads them from Keeper): offline there is nothing to copy them from
      return nil, "table " .. what .. " keeps its data in Keeper; chbackup reads"
        .. " data paths offline and cannot back it up" .. way_out
    elseif family == "none" and (t.inner or t.object == "TABLE") and t.data_dir then
      local file, ferr = catalog_mod.first_file(t.data_dir)
      if ferr then
        return nil, "table " .. what .. ": " .. ferr
      end
      if file then
        return nil, "table " .. what .. " keeps data chbackup cannot back up (" .. file .. ")"
          .. (NOT_BACKED_UP[t.engine] or "") .. way_out
      end
    elseif family == "mergetree" then
      -- part by part, in name order (the order of the backup's entries:
      -- .backup lists them sorted), one partition's parts held at a time
      local visited, perr = catalog_mod.each_active_part(t, function(part)
        if s.partitions and not s.partitions[part.partition_id] then
          return nil
        end
        local part_prefix = prefix .. part.name .. "/"
        local files = from_base and from_base(part_prefix, part.dir)
        if files then
          if files[1] then   -- (disks.record: one file of the part tells its disk)
            files[1].disk = part.disk
          end
        else
          local err
          files, err = catalog_mod.part_files(part.dir)
          if not files then
            return { "table " .. qualified(t.database, t.name) .. ": " .. err }
          end
          for _, f in ipairs(files) do   -- (catalog's tables, reused)
            f.name, f.disk = part_prefix .. f.name, part.disk
          end
        end
        local ok, err = add_data(files)
        if not ok then
          return { err }
        end
      end)
      -- (the callback's errors come in a table, whole; the catalog's name no table)
      if not visited then
        return nil, type(perr) == "table" and perr[1] or "table " .. qualified(t.database, t.name) .. ": " .. perr
      end
      -- completeness: the table's directory on every disk of its policy was read
      for _, loc in ipairs(catalog_mod.locations(t)) do
        if not visited[loc.disk] then
          return nil, "table " .. qualified(t.database, t.name) .. ": its directory on disk '"
            .. loc.disk .. "' (" .. loc.dir .. ") was not read"
        end
      end
    elseif family == "log" then
      if s.partitions then
        return nil, "table " .. qualified(t.database, t.name) .. " (" .. t.engine
          .. ") has no partitions: PARTITIONS cannot be used with it"
      end
      -- as ClickHouse's backupData: committed bytes, columns.txt, count.txt
      local files, generated = logfamily.backup_entries(t, prefix)
      if not files then
        return nil, "table " .. qualified(t.database, t.name) .. ": " .. generated
      end
      local ok, err = add_data(files)
      if not ok then
        return nil, err
      end
      table.move(generated, 1, #generated, #metadata + 1, metadata)
    end
  end
  if selection.server and not structure_only then
    local extra, err = require("chbackup.server_objects").backup_entries(selection.server)
    if not extra then
      return nil, err
    end
    table.move(extra, 1, #extra, #metadata + 1, metadata)
  end
  return { metadata = metadata, data = data }
end


return plan
