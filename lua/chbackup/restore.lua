--- RESTORE: a backup -> tables of a data path (opened later by ClickHouse).
--
-- Order of work, so that nothing appears under a final name unverified:
--   1. read `.backup`; select tables; check every target (exists with
--      another structure, not empty) before writing anything;
--   2. copy parts into temporary `tmp_restore_*` directories (ClickHouse
--      drops `tmp_*` directories on startup), every file checked against
--      the manifest's size and checksum while streaming;
--   3. rename parts into place; write table metadata last (a table is
--      visible to ClickHouse only through its metadata file).
-- A failure removes what this run created.
-- @module chbackup.restore
local lfs = require("lfs")
local core = require("chbackup.core")
local catalog_mod = require("chbackup.catalog")
local disks = require("chbackup.disks")
local chain = require("chbackup.chain")
local contents = require("chbackup.contents")
local ddl = require("chbackup.ddl")
local fsutil = require("chbackup.fsutil")
local logfamily = require("chbackup.logfamily")
local names = require("chbackup.names")
local part_check = require("chbackup.part_check")
local plan = require("chbackup.plan")
local renaming = require("chbackup.renaming")
local runner = require("chbackup.runner")
local server_objects = require("chbackup.server_objects")
local uuid = require("chbackup.uuid")

local restore = {}

local DEFAULT_DATABASE = "default"

-- Engines that keep files in their table directory without a chbackup family
-- (their rows are not in backups, as in ClickHouse's): restored empty.
local OWN_DIRECTORY = { EmbeddedRocksDB = true, Set = true, Join = true }


-- Which tables of the backup the elements select:
-- list of {db=<backup db>, tbl=<backup table>, target_db=, target_name=, partitions=}
local function select_tables(backup_dbs, elements, backup_name)
  local out, db_creates, seen = {}, {}, {}
  local function add(db, t, target_db, target_name, partitions)
    local key = target_db .. "\0" .. target_name
    if seen[key] then
      return nil, "table " .. names.qualified(target_db, target_name) .. " is restored twice"
    end
    seen[key] = true
    out[#out + 1] = { db = db, tbl = t, target_db = target_db, target_name = target_name,
      partitions = partitions }
    return true
  end
  local function sorted_tables(db)
    local list = {}
    for _, t in pairs(db.tables) do
      if t.metadata then
        list[#list + 1] = t
      end
    end
    table.sort(list, function(a, b) return a.name < b.name end)
    return list
  end
  local function add_db(db, target, except)
    db_creates[#db_creates + 1] = { db = db, target_db = target }
    for _, t in ipairs(sorted_tables(db)) do
      if not (except and except[t.name]) then
        local ok, err = add(db, t, target, t.name, nil)
        if not ok then
          return nil, err
        end
      end
    end
    return true
  end
  for _, el in ipairs(elements) do
    local from = el.type == "table" and (el.database or DEFAULT_DATABASE) or el.type == "database" and el.name
    local to = el.type == "table" and el.new_database or el.type == "database" and el.new_name
    -- system.functions, system.users, …: the server's own objects
    -- (server_objects); DATABASE system: those, nothing else with data
    local server_el = from == "system" and (el.type == "database" and not to
      or el.type == "table" and server_objects.is_server_table(el.name))
    if server_el and el.type == "database" then
      local except = {}
      for _, x in ipairs(el.except_tables or {}) do
        except[x.name] = true
      end
      for _, t in ipairs(sorted_tables(backup_dbs.system or { tables = {} })) do
        if #t.data > 0 and not except[t.name] and not server_objects.is_server_table(t.name) then
          return nil, "cannot restore table " .. names.qualified("system", t.name) .. " of backup " .. backup_name
            .. ": database system belongs to the server, and chbackup restores only its functions and"
            .. " access entities (EXCEPT TABLES leaves the table out)"
        end
      end
    end
    for _, db_name in ipairs({ from or "", to or "" }) do
      if catalog_mod.SYSTEM_DATABASES[db_name] and not server_el then
        return nil, "database " .. names.quote_identifier(db_name)
          .. " belongs to the server: chbackup does not restore into or from it"
          .. (db_name == "system" and " (only RESTORE TABLE system.functions, system.users, system.roles, …"
            .. " restore the server's functions and access entities under their own names)" or "")
      end
    end
    if server_el then
      goto next_element   -- restored by server_objects.prepare
    end
    if el.type == "table" then
      local db_name = el.database or DEFAULT_DATABASE
      local db = backup_dbs[db_name]
      local t = db and db.tables[el.name]
      if not t or not t.metadata then
        local known = {}
        for _, bdb in pairs(backup_dbs) do
          for _, bt in pairs(bdb.tables) do
            if bt.metadata then
              known[#known + 1] = names.qualified(bdb.name, bt.name)
            end
          end
        end
        return nil, "table " .. names.qualified(db_name, el.name) .. " is not in backup " .. backup_name
          .. names.did_you_mean(names.qualified(db_name, el.name), known)
      end
      local parts, perr = plan.partition_ids(el.partitions, names.qualified(db_name, el.name))
      if perr then
        return nil, perr
      end
      local ok, err = add(db, t, el.new_database or db_name, el.new_name or el.name, parts)
      if not ok then
        return nil, err
      end
    elseif el.type == "database" then
      local db = backup_dbs[el.name]
      if not db then
        local known = {}
        for name in pairs(backup_dbs) do
          known[#known + 1] = name
        end
        return nil, "database " .. names.quote_identifier(el.name) .. " is not in backup " .. backup_name
          .. names.did_you_mean(el.name, known, names.quote_identifier)
      end
      local except = {}
      for _, t in ipairs(el.except_tables or {}) do
        except[t.name] = true
      end
      local ok, err = add_db(db, el.new_name or el.name, except)
      if not ok then
        return nil, err
      end
    elseif el.type == "all" then
      local except_db = {}
      for _, d in ipairs(el.except_databases or {}) do
        except_db[d] = true
      end
      local list = {}
      for _, db in pairs(backup_dbs) do
        list[#list + 1] = db
      end
      table.sort(list, function(a, b) return a.name < b.name end)
      for _, db in ipairs(list) do
        -- ClickHouse's BACKUP ALL holds the metadata of system,
        -- information_schema, …: databases of the server, never restored
        if not except_db[db.name] and not catalog_mod.SYSTEM_DATABASES[db.name] then
          local ok, err = add_db(db, db.name, nil)
          if not ok then
            return nil, err
          end
        end
      end
    else
      return nil, "RESTORE of " .. tostring(el.type) .. " is not supported"
    end
    ::next_element::
  end
  return out, db_creates
end


-- True when a table of the data path holds data.
local function table_has_data(t)
  if t.family == "mergetree" then
    -- stopped at its first part, or unreadable (not known to be empty)
    return catalog_mod.each_active_part(t, function() return true end) == nil
  elseif t.family == "log" then
    local files = catalog_mod.log_files(t)
    if not files then
      return true
    end
    for _, f in ipairs(files) do
      if f.size > 0 and f.name:match("%.bin$") then
        return true
      end
    end
  end
  return false
end


-- Highest block number used by a table's parts (outdated ones included),
-- on every disk of its policy.
local function max_block(t)
  local max = 0
  for _, loc in ipairs(catalog_mod.locations(t)) do
    if fsutil.is_dir(loc.dir) then
      for entry in lfs.dir(loc.dir) do
        local p = catalog_mod.parse_part_name(entry:gsub("^tmp_restore_", ""))
        if p and p.max_block > max then
          max = p.max_block
        end
      end
    end
  end
  return max
end


-- Free bytes on the file system that holds path (or its nearest parent).
local function disk_free(path)
  while path ~= "" do
    local free = core.disk_free(path)
    if free then
      return free
    end
    path = path:match("^(.*)/[^/]*$") or ""
  end
  return 0
end


-- A table's parts' moves are not kept (a list of them grew with parts,
-- issue 14): t.moves counts them, and they are made again from the
-- backup's part names, in the same order each time (contents.each_part):
-- the k-th part restored into t goes to location t.move_locs[k] of
-- t.place_locs (only for tables of several locations; else the first), as
-- its own name or, into a table with parts already, as a new block
-- number after t.first_block (as ClickHouse's RESTORE names them).
local function note_move(t, loc_no)
  t.moves = t.moves + 1
  if #t.place_locs > 1 then
    t.move_locs = t.move_locs or {}
    t.move_locs[t.moves] = loc_no
  end
end

-- The final name of part p (name, info), the k-th restored into t.
local function final_name(t, name, info, k)
  if not t.first_block then
    return name
  end
  local block = t.first_block + k
  return string.format("%s_%d_%d_%d", info.partition_id, block, block, info.level)
end

-- The temporary and final directory of the k-th part restored into t.
local function move_paths(t, k, name, info)
  local dir, final = t.place_locs[t.move_locs and t.move_locs[k] or 1].dir, final_name(t, name, info, k)
  return dir .. "/tmp_restore_" .. final, dir .. "/" .. final
end

-- Whether part p of the backup is restored into target t (its partition
-- selected, or all).
local function part_selected(t, info)
  return not (t.sel.partitions and not t.sel.partitions[info.partition_id])
end

-- Calls f(tmp, final) for every part move of every target, in the order
-- planned; stops at the first that returns a value, and returns it.
local STOP = {}
local function each_move(targets, backup_name, f)
  for _, t in ipairs(targets) do
    if (t.moves or 0) > 0 then
      local k = 0
      local r = contents.each_part_name(t.sel.tbl, backup_name, function(name, info)
        if part_selected(t, info) then
          k = k + 1
          if k > t.moves then   -- (a failed plan noted only its first parts)
            return STOP
          end
          return f(move_paths(t, k, name, info))
        end
      end)
      if r ~= nil and r ~= STOP then
        return r
      end
    end
  end
end


-- Calls f(entry) for each file of backup b at sorted positions lo..hi
-- (a part's) that take(pos, hi) leaves: take is core.plain_stop or
-- job:add_stored, which deal with the files whose bytes the chain stores
-- plainly and return true or the position of the first other one; without
-- take, every file. Stops at f's first value and returns it.
local function each_left(b, lo, hi, take, f)
  local idx, files, pos = b.manifest.index, b.manifest.files, lo
  while pos <= hi do
    local stop = take and take(pos, hi) or pos
    if stop == true then
      return nil
    end
    local r = f(files[idx:sorted(stop)])
    if r ~= nil then
      return r
    end
    pos = stop + 1
  end
end


-- Files copied by one job: its entries (the C job copies their names in)
-- and their Lua plans are freed batch by batch (issue 14). A file's plan
-- is about 1 KiB of Lua tables and strings (its entry, pieces, paths):
-- 2,500 of them keep a batch under a few MiB (measured on 20,000 parts:
-- peak RSS 70.7 MiB with 10,000, 48.3 MiB with 2,500).
local BATCH = 2500


-- Phase 2's copies: `copies` (Log tables' files, planned already) and every
-- file of the parts planned (t's moves), in jobs of about BATCH files,
-- added part by part: the job copies a part's small files as one batch
-- (one lookup of its directory, one fsync of it) and runs its biggest
-- batches first (no big file left for one thread at the end). The files
-- whose bytes the chain stores plainly (in this backup, deduplicated, or
-- in a base) go from the indexes into the job in C (job:add_stored,
-- chain.plain_levels: no Lua value a file); the others' pieces are resolved
-- through the chain (chain.pieces) as they come. From a chain that reads a
-- compressed tar, every file is resolved and a batch's run in archive
-- order, on one thread (chain.archive_order). levels: chain.plain_levels(b).
-- Returns true or nil, err, code.
local function copy_parts(ctx, b, levels, targets, copies)
  local store, op_id = ctx.store, ctx.op_id
  local files_done, bytes_done = 0, 0
  local function new_job(threads)
    return core.job({ threads = threads or ctx.threads, fsync = ctx.settings.fsync, ordered = threads ~= nil })
  end
  -- with levels, entries go straight into the job (made on demand); else into batch
  local job, batch = nil, {}
  local function direct_job()
    job = job or new_job()
    return job
  end
  local function run()
    if levels then
      direct_job()
    else
      -- from a compressed tar: in archive order, on one thread (chain.archive_order)
      local threads = chain.archive_order(batch, function(c) return c[1] end)
      job = new_job(threads)
      for _, c in ipairs(batch) do
        job:add(c[1], c[2], c[3], c[4])
      end
      batch = {}
    end
    local last
    local ok, err, code = runner.run(job, function(p)
      last = p
      store:update(op_id, { files_read = files_done + p.files_done, bytes_read = bytes_done + p.bytes_done })
    end, ctx.cancelled)
    job:close()
    job = nil
    if last then
      files_done, bytes_done = files_done + last.files_done, bytes_done + last.bytes_done
    end
    collectgarbage()   -- the batch's tables, before they pile up (a few ms a batch)
    return ok, err, code
  end
  local function add(pieces, dst, size, checksum)
    if levels then
      direct_job():add(pieces, dst, size, checksum)
    else
      batch[#batch + 1] = { pieces, dst, size, checksum }
    end
  end
  for _, c in ipairs(copies) do
    add(c[1], c[2], c[3], c[4])
  end
  local failed = {}
  for _, t in ipairs(targets) do
    if (t.moves or 0) > 0 then
      local k = 0
      -- (the parts checked in phase 2)
      local r = contents.each_part_range(t.sel.tbl, ctx.dest.name, function(name, info, lo, hi)
        if part_selected(t, info) then
          k = k + 1
          if (levels and direct_job():count() or #batch) >= BATCH then
            local ok, err, code = run()
            if not ok then
              failed.err, failed.code = err, code
              return failed
            end
          end
          local dir, strip = move_paths(t, k, name, info) .. "/", #t.sel.tbl.prefix + #name + 1
          each_left(b, lo, hi, levels and function(pos, last)
            return direct_job():add_stored(levels, pos, last, strip, dir)
          end, function(f)
            if f.size > 0 then
              add(assert(chain.pieces(b, f)), dir .. f.name:sub(strip + 1), f.size, f.checksum)
            end
          end)
        end
      end)
      if r == failed then
        if job then
          job:close()
        end
        return nil, failed.err, failed.code
      end
      assert(r == nil, r)
    end
  end
  return run()
end


--- Runs a RESTORE request.
-- ctx: {catalog=, store=, op_id=, threads=, settings=, dest=<resolved source>}
-- Returns the status counters table, or nil, err.
function restore.run(ctx, req)
  local src, cat, settings = ctx.dest, ctx.catalog, ctx.settings
  local b, err = chain.open(ctx.config, src, { password = settings.password,
    same_s3_credentials = settings.use_same_s3_credentials_for_base_backup })
  if not b then
    return nil, err
  end
  -- A missing or replaced base is found here, before anything is written.
  local bases
  bases, err = chain.list(b)
  if not bases then
    return nil, err
  end
  local m = b.manifest
  -- a small file of the backup, read whole through the chain and verified
  local function read(e)
    return chain.read(b, e)
  end
  local backup_dbs
  backup_dbs, err = contents.index(m, src.name)
  if not backup_dbs then
    return nil, err
  end
  local selected, db_creates = select_tables(backup_dbs, req.elements, src.name)
  if not selected then
    return nil, db_creates
  end
  local map, map_err = renaming.map(req.elements, DEFAULT_DATABASE)
  if not map then
    return nil, map_err
  end
  -- RESTORE ALL: the backup's functions and access entities, checked now
  local server_plan, sp_err = server_objects.prepare(cat, backup_dbs, req.elements, read, settings, src.name)
  if not server_plan then
    return nil, sp_err
  end

  -- Phase 1: decide every target; nothing is written yet.
  local new_dbs, targets = {}, {}
  local function target_db(name, from_backup)
    local existing = cat:database(name)
    if existing then
      if existing.uuid == nil then
        return nil, "database " .. names.quote_identifier(name) .. " uses engine "
          .. existing.engine .. "; chbackup restores into Atomic databases only"
      end
      return existing
    end
    if not new_dbs[name] then
      local body = "ENGINE = Atomic"
      if from_backup and from_backup.metadata then
        local info, ierr = contents.statement(read, from_backup.metadata, from_backup.name, nil, src.name)
        if not info then
          return nil, ierr
        end
        if ddl.engine(info.body) == "Atomic" then
          body = info.body
        end
      end
      new_dbs[name] = { name = name, uuid = uuid.new(), body = body, new = true }
      new_dbs[#new_dbs + 1] = new_dbs[name]
    end
    return new_dbs[name]
  end
  for _, d in ipairs(db_creates) do
    local ok, derr = target_db(d.target_db, d.db)
    if not ok then
      return nil, derr
    end
  end
  for _, s in ipairs(selected) do
    local qname = names.qualified(s.target_db, s.target_name)
    local info, ierr = contents.statement(read, s.tbl.metadata, s.db.name, s.tbl.name, src.name)
    if not info then
      return nil, ierr
    end
    -- views and dictionaries follow the tables and databases renamed with them
    info.body = renaming.apply(info.body, map)
    local db, derr = target_db(s.target_db, s.db)
    if not db then
      return nil, derr
    end
    local existing = not db.new and cat:table(s.target_db, s.target_name) or nil
    local engine = ddl.engine(info.body)
    local has_inner = info.object == "MATERIALIZED VIEW" and ddl.inner_uuid(info.body) ~= nil
    local t = {
      sel = s, qname = qname, object = info.object, body = info.body, db = db,
      family = catalog_mod.engine_family(has_inner and "TABLE" or info.object, engine),
      engine = engine, has_inner = has_inner,
    }
    if t.family == "memory" then
      -- Memory/Buffer: ClickHouse's backup may hold a Memory table's rows,
      -- which only a running server can load; offline, the table is created
      -- empty only when asked for the structure alone.
      if #s.tbl.data > 0 and not settings.structure_only then
        return nil, "table " .. qname .. " (" .. engine .. ") has data in backup " .. src.name
          .. " that only a running server can load into memory; use SETTINGS structure_only = true"
          .. " or exclude it"
      end
      t.family = "none"
    end
    if existing then
      if ddl.structure(existing.body) ~= ddl.structure(info.body) or existing.object ~= info.object then
        return nil, "table " .. qname .. " already exists with a different structure"
          .. " (in the data path: " .. existing.body .. "; in the backup: " .. info.body .. ")"
      end
      -- as ClickHouse's restoreDataFromBackup: checked only when there is
      -- data to add (the backup has files of the table, not structure_only)
      if #s.tbl.data > 0 and not settings.structure_only and not settings.allow_non_empty_tables
          and table_has_data(existing) then
        return nil, "cannot restore table " .. qname .. ": it is not empty"
          .. " (use SETTINGS allow_non_empty_tables=true to add the backup's data to it)"
      end
      local placed, place_err = cat:place(existing)
      if not placed then
        return nil, place_err
      end
      t.existing, t.uuid, t.data_dir = existing, existing.uuid, existing.data_dir
      t.locations = existing.locations
    else
      t.uuid = uuid.new()
      local data_uuid = t.uuid
      if has_inner then
        -- the view's data lives in its inner table `.inner_id.<view uuid>`
        t.inner_uuid = uuid.new()
        t.body = ddl.with_inner_uuid(info.body, t.inner_uuid)
        t.inner_body = ddl.inner_table_body(info.body)
        if not t.inner_body then
          return nil, "cannot find the inner table definition of materialized view " .. qname
        end
        data_uuid = t.inner_uuid
      end
      t.data_uuid = data_uuid
      t.data_dir = cat.path .. "/store/" .. data_uuid:sub(1, 3) .. "/" .. data_uuid
      if t.family ~= "none" then
        -- the disks of the target's storage policy; a missing or non-local
        -- disk is refused here, before anything is written
        local tdisks, derr2 = disks.for_body(ctx.config, cat.path,
          t.inner_body or t.body, "table " .. qname)
        if not tdisks then
          return nil, derr2
        end
        local rel = "store/" .. data_uuid:sub(1, 3) .. "/" .. data_uuid
        t.locations = {}
        for _, d in ipairs(tdisks) do
          t.locations[#t.locations + 1] = { disk = d.name, dir = d.path .. "/" .. rel, disk_path = d.path,
            keep_free = d.keep_free, max_part = d.max_part }
        end
        if t.family == "log" then
          if #t.locations ~= 1 then
            return nil, "table " .. qname .. " (" .. tostring(engine)
              .. ") is on a storage policy of " .. #t.locations .. " disks; Log-family tables use one"
          end
          t.data_dir = t.locations[1].dir
        end
      end
    end
    targets[#targets + 1] = t
  end

  -- What this run creates is noted in the data path's lock file first, so
  -- that the next RESTORE removes it if this one is killed (chbackup.lock).
  if ctx.lock then
    local dirs, dbs = {}, {}
    for _, t in ipairs(targets) do
      if not t.existing and t.family ~= "none" then
        for _, loc in ipairs(t.locations or { { dir = t.data_dir } }) do
          dirs[#dirs + 1] = loc.dir
        end
      end
    end
    for _, db in ipairs(new_dbs) do
      dbs[#dbs + 1] = { escaped = names.escape_file(db.name), uuid = db.uuid }
    end
    local noted, nerr = ctx.lock:note(dirs, dbs, server_objects.temp_files(server_plan))
    if not noted then
      return nil, nerr
    end
  end

  -- Phase 2: plan the copies into temporary names. A part goes to the disk
  -- it was on when the target's policy has a disk of that name, else to the
  -- policy's first disk with room for it (its volume's max_data_part_size_bytes
  -- and the disk's keep_free_space_bytes counted).
  local reserved, was_on = {}, disks.read_record(b) or {}
  local levels = chain.plain_levels(b)
  local function plain_stop(pos, last)
    return core.plain_stop(levels, pos, last)
  end
  -- the error of a file whose pieces do not resolve through the chain, or nil
  local function unresolved(f)
    local pieces, perr = chain.pieces(b, f)
    if not pieces then
      return perr
    end
  end
  -- Returns the location and its number in t.place_locs.
  local function place_part(t, part_name, size, from_disk)
    t.place_locs = t.place_locs or t.locations or catalog_mod.locations(t)
    local locs = t.place_locs
    for i, loc in ipairs(locs) do
      if from_disk and loc.disk == from_disk then
        return loc, i
      end
    end
    for i, loc in ipairs(locs) do
      -- as ClickHouse reserves: a volume takes parts up to its max_data_part_size_bytes,
      -- a disk keeps its keep_free_space_bytes free
      local key = loc.disk_path or loc.dir
      local free = disk_free(key) - (loc.keep_free or 0) - (reserved[key] or 0)
      if free >= size and not (loc.max_part and loc.max_part > 0 and size > loc.max_part) then
        reserved[key] = (reserved[key] or 0) + size
        return loc, i
      end
    end
    return nil, string.format("no disk of table %s's storage policy has room for part %s (%d bytes)",
      t.qname, part_name, size)
  end
  -- Parts' files are only checked here (their chain pieces resolve) and
  -- copied later in batches (copy_parts): no list of every file is kept.
  local created, counters = {}, { num_files = 0, total_size = 0 }
  local empty_files, copies, appends = {}, {}, {}
  for _, t in ipairs(targets) do
    local next_block = t.existing and max_block(t.existing) or nil
    if not settings.structure_only and t.family == "none" and #t.sel.tbl.data > 0 then
      return nil, "cannot restore the data of " .. t.qname .. " (" .. tostring(t.engine or t.object)
        .. ") from backup " .. src.name .. ": chbackup does not restore data of this engine"
        .. " (SETTINGS structure_only=true restores its definition only)"
    end
    if not settings.structure_only and t.family ~= "none" then
      local data, derr
      if t.family == "log" then
        data, derr = contents.table_data(t.sel.tbl, t.family, src.name)
        if not data then
          return nil, derr
        end
      end
      -- Every part (or Log table) is checked as ClickHouse will load it
      -- before a byte is copied. A part's files are copied by copy_parts;
      -- a Log table's are listed in copies now (add_file).
      local function note_file(dst, f)
        if f.size == 0 then
          empty_files[#empty_files + 1] = dst   -- no bytes in the backup
        end
        counters.num_files = counters.num_files + 1
        counters.total_size = counters.total_size + f.size
      end
      local function add_file(dst, f)
        note_file(dst, f)
        if f.size > 0 then
          local pieces, perr = chain.pieces(b, f)
          if not pieces then
            return nil, perr
          end
          copies[#copies + 1] = { pieces, dst, f.size, f.checksum }
        end
        return true
      end
      -- its parts, one at a time (contents.each_part; moves: note_move)
      t.moves, t.first_block = 0, next_block
      local ok, ferr = true, nil
      if t.family == "mergetree" then
        ferr = contents.each_part(t.sel.tbl, src.name, function(p)
          if not part_selected(t, p.info) then
            return nil
          end
          local checked, cerr = part_check.check(p.where, p.files, read)
          if not checked then
            return cerr
          end
          -- room the part takes: whole 4 KiB blocks per file and one for its directory
          local size = 4096
          for _, x in ipairs(p.list) do
            size = size + (x.file.size + 4095) // 4096 * 4096
          end
          local loc, loc_no = place_part(t, p.name, size, was_on[t.sel.tbl.prefix .. p.name])
          if not loc then
            return loc_no
          end
          note_move(t, loc_no)
          local tmp = move_paths(t, t.moves, p.name, p.info)
          for _, x in ipairs(p.list) do
            note_file(tmp .. "/" .. x.rel, x.file)
          end
          -- its files' bytes are where the manifest says: those the chain
          -- stores plainly, checked in C (core.plain_stop), the others'
          -- pieces through the chain (copy_parts copies them later)
          return each_left(b, p.lo, p.hi, levels and plain_stop, unresolved)
        end)
        ok = ferr == nil
      end
      if ok and t.family == "log" then
        ok, ferr = part_check.log_table("backup " .. src.name .. ": table " .. t.qname, data.files, read)
        if ok then
          -- an existing table is appended to, as ClickHouse's restoreDataImpl does
          ok, ferr = logfamily.plan_restore(t, data, read, add_file, appends, src.name)
        end
      end
      if not ok then
        return nil, ferr
      end
    end
  end
  -- the temporary files of appends to Log-family tables, noted before written
  if ctx.lock and #appends > 0 then
    local noted, nerr = ctx.lock:note(nil, nil, logfamily.temp_files(appends))
    if not noted then
      return nil, nerr
    end
  end

  local function cleanup()
    logfamily.discard(appends)
    each_move(targets, src.name, function(tmp)
      fsutil.remove_tree(tmp)
    end)
    for i = #created, 1, -1 do
      fsutil.remove_tree(created[i])
    end
  end
  for _, t in ipairs(targets) do
    -- (EmbeddedRocksDB opens its directory at ATTACH without making its
    -- parent: "Failed to open rocksdb path"; it is made here, empty)
    if not t.existing and (t.family ~= "none" or OWN_DIRECTORY[t.engine] and not t.has_inner) then
      local dirs = { t.data_dir }
      if t.family == "mergetree" then
        dirs = {}
        for _, loc in ipairs(t.locations) do
          dirs[#dirs + 1] = loc.dir
        end
      end
      local ok, merr = true, nil
      for i, dir in ipairs(dirs) do
        created[#created + 1] = dir
        ok, merr = fsutil.mkdir_p(dir)
        if ok and t.family == "mergetree" then
          ok, merr = fsutil.mkdir_p(dir .. "/detached")
          if ok and i == 1 then
            ok, merr = fsutil.write_file(dir .. "/format_version.txt", "1")
          end
        end
        if not ok then
          break
        end
      end
      if not ok then
        cleanup()
        return nil, merr
      end
    end
  end

  for _, path in ipairs(empty_files) do
    local ok, eerr = fsutil.mkdir_p(path:match("^(.*)/[^/]*$"))
    if ok then
      ok, eerr = fsutil.write_file(path, "")
    end
    if not ok then
      cleanup()
      return nil, eerr
    end
  end
  local ok, jerr, jcode = copy_parts(ctx, b, levels, targets, copies)
  if not ok then
    cleanup()
    return nil, "restore from backup " .. src.name .. " failed: " .. jerr, jcode
  end

  -- Phase 3: into place. Log-family tables appended to, parts, then
  -- databases, then table metadata.
  local appended, aerr, acode = logfamily.finish(appends,
    { threads = ctx.threads, fsync = settings.fsync, cancelled = ctx.cancelled })
  if not appended then
    cleanup()
    return nil, "restore from backup " .. src.name .. " failed: " .. aerr, acode
  end
  -- (one renameat2 a part, refused when the name exists: never replaces)
  local move_err = each_move(targets, src.name, function(tmp, final)
    local renamed, rerr, rcode = core.rename_new(tmp, final)
    if rcode == "EEXIST" then
      return "cannot restore part " .. final .. ": it already exists"
    elseif not renamed then
      return "cannot move restored part into place: " .. tostring(rerr)
    end
  end)
  if move_err then
    cleanup()
    return nil, move_err
  end
  for _, db in ipairs(new_dbs) do
    local esc = names.escape_file(db.name)
    local store_dir = cat.path .. "/store/" .. db.uuid:sub(1, 3) .. "/" .. db.uuid
    local dok, derr = fsutil.mkdir_p(store_dir)
    if dok then
      dok, derr = fsutil.mkdir_p(cat.path .. "/metadata")
    end
    if dok and not fsutil.exists(cat.path .. "/metadata/" .. esc) then
      dok, derr = lfs.link("../store/" .. db.uuid:sub(1, 3) .. "/" .. db.uuid,
        cat.path .. "/metadata/" .. esc, true)
    end
    if dok then
      dok, derr = fsutil.write_file(cat.path .. "/metadata/" .. esc .. ".sql",
        ddl.attach_statement("DATABASE", db.uuid, db.body))
    end
    if not dok then
      return nil, "cannot create database " .. names.quote_identifier(db.name) .. ": " .. tostring(derr)
    end
  end
  for _, t in ipairs(targets) do
    if not t.existing then
      local esc_db = names.escape_file(t.sel.target_db)
      local esc_t = names.escape_file(t.sel.target_name)
      if t.inner_uuid then
        esc_t = names.escape_file(".inner_id." .. t.uuid)
        local iok, ierr = fsutil.write_file(
          cat.path .. "/metadata/" .. esc_db .. "/" .. esc_t .. ".sql",
          ddl.attach_statement("TABLE", t.inner_uuid, t.inner_body))
        if not iok then
          return nil, "cannot write metadata of " .. t.qname .. ": " .. tostring(ierr)
        end
      end
      local wok, werr = fsutil.write_file(
        cat.path .. "/metadata/" .. esc_db .. "/" .. names.escape_file(t.sel.target_name) .. ".sql",
        ddl.attach_statement(t.object, t.uuid, t.body))
      if not wok then
        return nil, "cannot write metadata of " .. t.qname .. ": " .. tostring(werr)
      end
      if t.family ~= "none" then
        fsutil.mkdir_p(cat.path .. "/data/" .. esc_db)
        -- to the table's directory on the first disk of its policy, as ClickHouse links it
        local first = t.locations and t.locations[1]
        lfs.link(first and disks.relative(cat.path .. "/data/" .. esc_db, first.dir)
          or ("../../store/" .. t.data_uuid:sub(1, 3) .. "/" .. t.data_uuid),
          cat.path .. "/data/" .. esc_db .. "/" .. esc_t, true)
      end
    end
  end
  -- Replicated* tables (issue 11): their parts are restored like any
  -- MergeTree's, but the replica is not registered in Keeper (nothing offline
  -- can). ClickHouse opens such a table read-only (rows visible, INSERT
  -- refused); SYSTEM RESTORE REPLICA, run once the server is up with Keeper,
  -- writes the replica's metadata from its parts and makes it live again.
  -- One notice per table on stderr, as lock.log does.
  for _, t in ipairs(targets) do
    if t.family ~= "none" and tostring(t.engine):match("^Replicated") then
      local q = names.quote_identifier(t.sel.target_db) .. "." .. names.quote_identifier(t.sel.target_name)
      require("chbackup.lock").log("restored " .. t.engine .. " table " .. q
        .. " offline: its replica is not registered in Keeper; ClickHouse opens it read-only"
        .. " until SYSTEM RESTORE REPLICA " .. q .. " is run once the server is up with Keeper")
    end
  end
  local sok, serr = server_objects.write(server_plan, ctx.lock)
  if not sok then
    return nil, serr
  end
  counters.num_entries = counters.num_files
  counters.uncompressed_size = counters.total_size
  counters.compressed_size = counters.total_size
  return counters
end


return restore
