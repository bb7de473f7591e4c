--- BACKUP: a data path's tables -> a backup in ClickHouse's format.
--
-- One pipeline for every container (chbackup.store: a directory, a zip):
--   1. read-only checks: the destination is new, the base opens;
--   2. select (plan.select_for_backup) and list the files (plan.backup_files;
--      parts unchanged since the base come from its manifest);
--   3. decide every file before a byte moves (chbackup.file_plan): in the
--      base, a duplicate, a grown file's tail, or stored;
--   4. the container writer stores the files (C job or zip writer,
--      verifying sizes and checksums while streaming) and writes `.backup`
--      last; until then nothing there looks like a backup.
-- A failure removes what this run created.
-- @module chbackup.backup
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local disks = require("chbackup.disks")
local file_plan = require("chbackup.file_plan")
local lfs = require("lfs")
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


-- Entries of part_from_base: use_base; part_in_base: chain.check trusts
-- the base for them (the part's checksums.txt, checked, stands for its
-- files). Shared through a metatable: three fields a file, not five, where
-- an unchanged incremental has hundreds of thousands of them.
local IN_BASE = { __index = { use_base = true, part_in_base = true } }
local EMPTY_IN_BASE = { __index = { part_in_base = true } }


-- opts.from_base of plan.backup_files for an incremental on `base`: a part
-- whose checksums.txt has the size and checksum of the base's checksums.txt
-- of the part of the same name is that part unchanged (checksums.txt lists
-- every file's size and checksum; ClickHouse never changes a part in
-- place): its files are the base's entries under the part's name, all
-- use_base, without a stat or a read of any other file. Costs per part one
-- stat and one read of checksums.txt, and a binary search in the base's
-- entries.
local function part_from_base(base, read)
  local files = base.manifest.files
  for i = 2, #files do
    if files[i - 1].name >= files[i].name then   -- (chbackup and ClickHouse write them sorted)
      files = table.move(files, 1, #files, 1, {})
      table.sort(files, function(a, b) return a.name < b.name end)
      break
    end
  end
  local by_name = base.manifest.by_name
  return function(prefix, part_dir)
    local sums = by_name[prefix .. "checksums.txt"]
    if not sums or sums.size == 0 then
      return nil
    end
    local path = part_dir .. "/checksums.txt"
    if lfs.symlinkattributes(path, "mode") ~= "file" then   -- (catalog.part_files says why)
      return nil
    end
    local sum, size = core.checksum_file(path)
    if sum then
      read.files, read.bytes = read.files + 1, read.bytes + size
    end
    if sum ~= sums.checksum or size ~= sums.size then
      return nil
    end
    local lo, hi = 1, #files + 1
    while lo < hi do
      local mid = (lo + hi) // 2
      if files[mid].name < prefix then
        lo = mid + 1
      else
        hi = mid
      end
    end
    local out, f = {}, files[lo]
    while f and f.name:find(prefix, 1, true) == 1 do
      if f == sums then
        out[#out + 1] = { name = f.name, size = f.size, checksum = f.checksum, use_base = true }
      elseif f.size > 0 then
        out[#out + 1] = setmetatable({ name = f.name, size = f.size, checksum = f.checksum }, IN_BASE)
      else
        out[#out + 1] = setmetatable({ name = f.name, size = 0 }, EMPTY_IN_BASE)
      end
      lo = lo + 1
      f = files[lo]
    end
    return out
  end
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


-- Every entry of the new manifest, sorted by name: the metadata (bytes
-- given) and the data files (read from the data path, or decided already
-- as unchanged since the base).
local function entries_of(files)
  local entries = {}
  for _, m in ipairs(files.metadata) do
    entries[#entries + 1] = { name = m.name, size = #m.content, checksum = core.checksum(m.content),
      content = m.content }
  end
  for _, d in ipairs(files.data) do   -- (the plan's tables, reused: one table a file)
    d.src, d.path = d.path, nil
    entries[#entries + 1] = d
  end
  sort_by_name(entries)
  return entries
end


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
  local files
  local base_read = { files = 0, bytes = 0 }   -- checksums.txt read by part_from_base
  files, err = plan.backup_files(selection, {
    structure_only = settings.structure_only,
    from_base = base and part_from_base(base, base_read) or nil,
  })
  if not files then
    return nil, err
  end
  if settings.structure_only then   -- CREATE statements only, as ClickHouse's
    files.data = {}
  end
  -- which disk each part was on, when not the default one (disks.RECORD_FILE)
  local record = disks.record(files.data)
  local entries = entries_of(files)
  files = nil   -- luacheck: ignore (free the plan's lists early)

  -- (system.backups counts what planning reads too, while it reads)
  local status, op_id = ctx.store, ctx.op_id
  local hashed_files, hashed_bytes, code = file_plan.hash_unknown(ctx, entries, base, function(p)
    status:update(op_id, { files_read = base_read.files + p.files_done, bytes_read = base_read.bytes + p.bytes_done })
  end)
  if not hashed_files then
    return nil, "backup " .. dest.name .. " failed: " .. hashed_bytes, code
  end
  hashed_files, hashed_bytes = hashed_files + base_read.files, hashed_bytes + base_read.bytes
  -- data_file_name_generator = 'checksum' (ClickHouse's): every file is
  -- stored once under a name made of its checksum, `abc/def…` with a
  -- prefix of data_file_name_prefix_length characters (default 3).
  local layout = settings.data_file_name_generator == "checksum" and (settings.data_file_name_prefix_length or 3)
  local to_store, counters = file_plan.decide(entries, base, layout)

  local writer
  writer, err, code = store.begin_write(dest, {
    op_id = ctx.op_id, threads = ctx.threads, fsync = settings.fsync, password = settings.password,
    compression_method = settings.compression_method, compression_level = settings.compression_level,
  })
  if not writer then
    return nil, err, code
  end
  ok, err, code = file_plan.put_all(writer, to_store)
  if ok and record then
    ok, err, code = writer:put_extra(disks.RECORD_FILE, record)
  end
  to_store = nil   -- luacheck: ignore
  local m
  if ok then
    -- the files this backup stores are verified while written: check the base
    m, err = chain.new_manifest(ctx, entries, base, { writer = writer,
      data_file_name_generator = layout and "checksum" or nil })
    ok = m ~= nil
  end
  if not ok then
    writer:abort()
    return nil, err, code
  end
  local done
  done, err, code = writer:commit(m, function(p)
    status:update(op_id, { files_read = hashed_files + p.files_done, bytes_read = hashed_bytes + p.bytes_done })
  end, ctx.cancelled)
  if not done then
    return nil, err, code
  end
  counters.files_read = hashed_files + done.files_done
  counters.bytes_read = hashed_bytes + done.bytes_done
  counters.num_entries = counters.num_entries + 1
  counters.uncompressed_size = counters.uncompressed_size + done.manifest_size
  counters.compressed_size = done.stored_size or counters.uncompressed_size
  return counters
end


return backup
