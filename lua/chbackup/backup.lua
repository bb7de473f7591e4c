--- BACKUP: a data path's tables -> a backup in ClickHouse's format.
--
-- One pipeline for every container (chbackup.store: a directory, a zip):
--   1. read-only checks: the destination is new, the base opens;
--   2. select (plan.select_for_backup) and list the files part by part
--      (plan.backup_files; parts unchanged since the base come from its
--      manifest);
--   3. in batches of up to BATCH files: decide each file before its bytes
--      move (chbackup.file_plan): in the base, a duplicate, a grown file's
--      tail, or stored; the container writer stores them (C job or zip
--      writer, verifying sizes and checksums while streaming);
--   4. `.backup` last, from the new manifest's core.index; until then
--      nothing there looks like a backup.
-- A failure removes what this run created.
-- @module chbackup.backup
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local disks = require("chbackup.disks")
local file_plan = require("chbackup.file_plan")
local plan = require("chbackup.plan")
local store = require("chbackup.store")

local backup = {}


-- Entries sorted by name, as `.backup` lists them. They come mostly in
-- order (plan.backup_files emits tables and parts by name): checked in one
-- pass, sorted only if needed, by name without a Lua comparator.
local function sort_by_name(list)
  for i = 2, #list do
    if list[i - 1].name >= list[i].name then
      local by_name, sorted = {}, {}
      for j, e in ipairs(list) do
        if by_name[e.name] then   -- (never: names are unique)
          table.sort(list, function(a, b) return a.name < b.name end)
          return
        end
        by_name[e.name], sorted[j] = e, e.name
      end
      table.sort(sorted)
      for j, name in ipairs(sorted) do
        list[j] = by_name[name]
      end
      return
    end
  end
end


-- opts.from_base of plan.backup_files for an incremental on `base`: a part
-- whose checksums.txt has the size and checksum of the base's checksums.txt
-- of the part of the same name is that part unchanged (checksums.txt lists
-- every file's size and checksum; ClickHouse never changes a part in
-- place): its files are the base's entries under the part's name, all
-- use_base, without a stat or a read of any other file. Costs per part one
-- read of checksums.txt (open, fstat, read: a symlink or anything but a
-- regular file is not taken from the base, catalog.part_files says why),
-- and lookups in the base's index.
-- Returns one entry, its checksums.txt's, with `base_part` = {first, last}:
-- the positions of the part's entries in the base's name order, which
-- add_base_part copies in C (no Lua value per file).
local function part_from_base(base, read)
  local idx = base.manifest.index   -- (core.index: by name, and by name prefix in name order)
  return function(prefix, part_dir)
    local si = idx:find(prefix .. "checksums.txt")
    local _, sums_size, sums_checksum = idx:fields(si or 0)
    if not si or sums_size == 0 then
      return nil
    end
    local sum, size = core.checksum_file(part_dir .. "/checksums.txt")
    if sum then
      read.files, read.bytes = read.files + 1, read.bytes + size
    end
    if sum ~= sums_checksum or size ~= sums_size then
      return nil
    end
    local first, last = idx:prefix(prefix)
    return { { name = prefix .. "checksums.txt", size = size, checksum = sum, use_base = true,
      base_part = { first, last }, base_i = si } }
  end
end


-- The files of an unchanged part (part_from_base), checksums.txt with
-- them, into the new manifest's index straight from the base's, in name
-- order, counted: decided here, never by file_plan.decide.
local function add_base_part(decisions, base, e)
  local range = e.base_part
  local files, bytes = decisions.index:add_from_base(base.manifest.index, range[1], range[2])
  if not files then   -- (never: plan.backup_files lists each part once)
    return nil, "file " .. bytes .. " is listed twice"
  end
  local counters = decisions.counters
  counters.num_files, counters.total_size = counters.num_files + files, counters.total_size + bytes
  e.base_part = nil
  return true
end


-- The base of an incremental (SETTINGS base_backup): opened, its whole
-- chain readable. Returns it or nil, err.
local function open_base(ctx, dest)
  local settings = ctx.settings
  local base, err = chain.open(ctx.config, settings.base_backup, { password = settings.password, inherit = dest,
    same_s3_credentials = settings.use_same_s3_credentials_for_base_backup })
  if not base then
    return nil, "base_backup: " .. err
  end
  local bases
  bases, err = chain.list(base)
  if not bases then
    return nil, "base_backup: " .. err
  end
  if base.dest.path == dest.path then
    return nil, "base_backup " .. base.dest.name .. " is the backup being made"
  end
  for _, b in ipairs(bases) do
    if b.store.key_err then   -- an encrypted base: the chain needs its password
      return nil, "base_backup: " .. b.store.key_err
    end
  end
  return base
end


-- Read-only checks of a BACKUP's settings against its destination.
local function check_settings(dest, settings)
  if not dest.archive and (settings.compression_method or settings.compression_level) then
    return nil, "compression_method and compression_level apply to archive destinations"
      .. " (a name ending in .zip), not to directory backup " .. dest.name
  end
  if dest.archive and settings.data_file_name_generator == "checksum" then
    return nil, "data_file_name_generator = 'checksum' is supported for directory backups, not for archive "
      .. dest.name .. " (ClickHouse's zip, the reference, is not available to test it against here)"
  end
  return true
end


-- The entries of the files given as bytes (metadata, Log tables'
-- generated files, server objects).
local function content_entries(metadata)
  local entries = {}
  for _, m in ipairs(metadata) do
    entries[#entries + 1] = { name = m.name, size = #m.content, checksum = core.checksum(m.content),
      content = m.content }
  end
  return entries
end


-- Files decided and handed to the writer together: their Lua tables (and
-- a directory writer's copy job) are freed batch by batch; what stays per
-- file is its record in the new manifest's core.index (issue 14). A
-- field, so that a spec can make a small backup take several batches.
backup.BATCH = 2500


--- Runs a BACKUP request.
-- ctx: {catalog=, store=, op_id=, threads=, settings=, dest=<resolved>}
-- Returns the status counters table, or nil, err.
function backup.run(ctx, req)
  local dest, settings = ctx.dest, ctx.settings
  local ok, err = check_settings(dest, settings)
  -- (an S3 setting, as ClickHouse's: the other destinations have no storage class)
  dest.storage_class = settings.s3_storage_class or settings.s3_storage_class_name
  if ok then
    ok, err = store.check_new(dest)
  end
  if not ok then
    return nil, err
  end
  if settings.base_backup then
    ctx.base, err = open_base(ctx, dest)
    if not ctx.base then
      return nil, err
    end
  end
  local base = ctx.base
  local selection
  selection, err = plan.select_for_backup(ctx.catalog, req.elements)
  if not selection then
    return nil, err
  end
  -- data_file_name_generator = 'checksum' (ClickHouse's): every file is
  -- stored once under a name made of its checksum, `abc/def…` with a
  -- prefix of data_file_name_prefix_length characters (default 3).
  local layout = settings.data_file_name_generator == "checksum" and (settings.data_file_name_prefix_length or 3)
  local decisions = file_plan.decisions(base, layout)
  local writer, code
  writer, err, code = store.begin_write(dest, {
    op_id = ctx.op_id, threads = ctx.threads, fsync = settings.fsync, password = settings.password,
    compression_method = settings.compression_method, compression_level = settings.compression_level,
  })
  if not writer then
    return nil, err, code
  end
  local function fail(msg, fcode)
    writer:abort()
    return nil, msg, fcode
  end
  local status, op_id = ctx.store, ctx.op_id
  local read = { files = 0, bytes = 0 }   -- read to hash files, and checksums.txt read by part_from_base
  local function progress(p)
    status:update(op_id, { files_read = read.files + p.files_done, bytes_read = read.bytes + p.bytes_done })
  end

  -- A batch of entries: hashed where their checksums are not known, decided
  -- (file_plan), handed to the writer, checked against the chain.
  local function put_batch(entries)
    sort_by_name(entries)
    local files, bytes, hcode = file_plan.hash_unknown(ctx, entries, base, progress)
    if not files then
      return nil, "backup " .. dest.name .. " failed: " .. bytes, hcode
    end
    read.files, read.bytes = read.files + files, read.bytes + bytes
    local to_store, derr = file_plan.decide(entries, decisions)
    if not to_store then
      return nil, derr
    end
    local pok, perr, pcode = file_plan.put_all(writer, to_store)
    if pok and base then
      -- the files this backup stores are verified while written: check the base
      pok, perr = chain.check_new(ctx, entries, base, writer)
    end
    return pok, perr, pcode
  end
  -- unchanged parts' checksums.txt, to check against the chain (a part's
  -- other files come with it: that the base holds it stands for them)
  local from_base = {}
  local function check_from_base()
    local cok, cerr = true, nil
    if #from_base > 0 then
      cok, cerr = chain.check_base_parts(ctx, from_base, base, writer)
      from_base = {}
    end
    return cok, cerr
  end
  local pending, record, batch_code = {}, {}, nil
  local files
  files, err = plan.backup_files(selection, {
    structure_only = settings.structure_only,
    from_base = base and part_from_base(base, read) or nil,
    on_data = function(list)
      disks.note(record, list)   -- which disk each part was on, when not the default one
      local d1 = list[1]
      if d1 and d1.base_part then   -- (an unchanged part: its checksums.txt alone)
        local aok, aerr = add_base_part(decisions, base, d1)
        if not aok then
          return nil, aerr
        end
        from_base[#from_base + 1] = d1
        if #from_base >= backup.BATCH then
          return check_from_base()
        end
        return true
      end
      for _, d in ipairs(list) do   -- (the plan's tables, reused: one table a file)
        d.src, d.path = d.path, nil
        pending[#pending + 1] = d
      end
      if #pending < backup.BATCH then
        return true
      end
      local batch = pending
      pending = {}
      local bok, berr
      bok, berr, batch_code = put_batch(batch)
      if bok then
        bok, berr, batch_code = writer:flush(progress, ctx.cancelled)
      end
      batch = nil   -- luacheck: ignore
      collectgarbage()   -- the batch's tables, before they pile up (a few ms a batch)
      return bok, berr
    end,
  })
  if files then
    ok, err = check_from_base()
    files = ok and files or nil
  end
  if not files then
    return fail(err, batch_code)
  end
  -- the last batch: what is left of the data, and the files given as bytes
  local last = content_entries(files.metadata)
  table.move(pending, 1, #pending, #last + 1, last)
  pending, files = nil, nil   -- luacheck: ignore
  ok, err, code = put_batch(last)
  last = nil   -- luacheck: ignore
  if not ok then
    return fail(err, code)
  end
  local text = disks.record(record)
  if text then
    ok, err, code = writer:put_extra(disks.RECORD_FILE, text)
    if not ok then
      return fail(err, code)
    end
  end
  local m = chain.new_manifest(ctx, decisions.index, base,
    { data_file_name_generator = layout and "checksum" or nil })
  local done
  done, err, code = writer:commit(m, progress, ctx.cancelled)
  if not done then
    return nil, err, code
  end
  local counters = decisions.counters
  counters.files_read = read.files + done.files_done
  counters.bytes_read = read.bytes + done.bytes_done
  counters.num_entries = counters.num_entries + 1
  counters.uncompressed_size = counters.uncompressed_size + done.manifest_size
  counters.compressed_size = done.stored_size or counters.uncompressed_size
  return counters
end


return backup
