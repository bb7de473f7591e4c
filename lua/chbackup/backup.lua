--- BACKUP: a data path's tables -> a backup in ClickHouse's format.
--
-- Order of work, so that nothing looks finished until it is:
--   1. refuse an existing destination; create it with a marker file;
--   2. write metadata; copy data files with the C job (checksums from
--      checksums.txt verified while streaming, others computed);
--   3. store identical files once (data_file), as ClickHouse does;
--   4. write `.backup` last, atomically; remove the marker.
-- A failure removes what this run created.
-- @module chbackup.backup
local backup_archive = require("chbackup.backup_archive")
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local disks = require("chbackup.disks")
local fsutil = require("chbackup.fsutil")
local lfs = require("lfs")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local plan = require("chbackup.plan")
local runner = require("chbackup.runner")

local backup = {}

backup.MARKER = ".chbackup-incomplete"

-- Files up to this size that checksums.txt does not list are hashed while
-- planning an incremental backup, so that they can match the base.
local SMALL_FILE = 1024 * 1024

-- Files the job copies first, largest first (the rest: in name order).
local BIG_FILE = 1024 * 1024


-- Read-only checks before any work; the destination is locked later, when
-- it is created (take_destination).
local function check_destination(dest)
  local path = dest.path
  if fsutil.exists(path .. "/" .. manifest.FILE) then
    return nil, "backup " .. dest.name .. " already exists"
  end
  if fsutil.exists(path) then
    if not fsutil.is_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") exists and is not a directory"
    end
    local marker = path .. "/" .. backup.MARKER
    local held, holder = lock.held(marker)
    if held then
      return nil, "backup " .. dest.name .. " is being written by " .. holder .. " (" .. marker .. ")"
    end
    if held == nil and not fsutil.is_empty_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") is not empty"
    end
  end
  return true
end


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


-- Every entry of a backup directory but its marker.
local function remove_all_but_marker(path)
  for entry in require("lfs").dir(path) do
    if entry ~= "." and entry ~= ".." and entry ~= backup.MARKER then
      fsutil.remove_tree(path .. "/" .. entry)
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


-- Creates the destination directory and takes its marker as the lock of
-- this run (held until `.backup` is written, its text naming the
-- operation). A marker nobody holds was left by a killed run: what that
-- run wrote is removed first (logged). Returns lk, created or nil, err.
local function take_destination(dest, op_id)
  local path = dest.path
  local created = not fsutil.exists(path)
  local ok, err = fsutil.mkdir_p(path)
  if not ok then
    return nil, err
  end
  local marker = path .. "/" .. backup.MARKER
  local lk, prev, made = lock.take(marker, op_id, function(holder)
    return "backup " .. dest.name .. " is being written by " .. holder .. " (" .. marker .. ")"
  end)
  if not lk then
    return nil, prev
  end
  local function refuse(msg)
    lk:release(made)
    if created then
      require("lfs").rmdir(path)
    end
    return nil, msg
  end
  if fsutil.exists(path .. "/" .. manifest.FILE) then
    return refuse("backup " .. dest.name .. " already exists")
  end
  if prev or not made then
    -- a marker nobody holds: a killed (or failed) run's; take its place
    remove_all_but_marker(path)
    lock.log("removed what a killed BACKUP (" .. lock.who(prev) .. ") left in backup " .. dest.name
      .. " (" .. path .. ")")
  else
    for entry in require("lfs").dir(path) do
      if entry ~= "." and entry ~= ".." and entry ~= backup.MARKER then
        return refuse("backup destination " .. dest.name .. " (" .. path .. ") is not empty")
      end
    end
  end
  return lk, created
end


--- Runs a BACKUP request.
-- ctx: {catalog=, store=, op_id=, threads=, settings=, dest=<resolved>}
-- Returns the status counters table, or nil, err.
function backup.run(ctx, req)
  local dest, cat, settings = ctx.dest, ctx.catalog, ctx.settings
  local ok, err
  if dest.archive then
    if require("lfs").attributes(dest.path) then
      return nil, "backup " .. dest.name .. " already exists"
    end
    local held, holder = lock.held(lock.archive_lock(dest.path))
    if held then
      return nil, "backup " .. dest.name .. " is being written by " .. holder .. " ("
        .. lock.archive_lock(dest.path) .. ")"
    end
  else
    if settings.compression_method or settings.compression_level then
      return nil, "compression_method and compression_level apply to archive destinations"
        .. " (a name ending in .zip), not to directory backup " .. dest.name
    end
    ok, err = check_destination(dest)
    if not ok then
      return nil, err
    end
  end
  if settings.base_backup then
    local base, berr = chain.open(ctx.config, settings.base_backup, { password = settings.password })
    if not base then
      return nil, "base_backup: " .. berr
    end
    local bases
    bases, berr = chain.list(base)
    if not bases then
      return nil, "base_backup: " .. berr
    end
    if base.dest.path == dest.path then
      return nil, "base_backup " .. base.dest.name .. " is the backup being made"
    end
    for _, b in ipairs(bases) do
      if b.key_err then   -- an encrypted base: the chain needs its password
        return nil, "base_backup: " .. b.key_err
      end
    end
    ctx.base = base
  end
  local selection
  selection, err = plan.select_for_backup(cat, req.elements)
  if not selection then
    return nil, err
  end
  local files
  local base_read = { files = 0, bytes = 0 }   -- checksums.txt read by part_from_base
  files, err = plan.backup_files(selection, {
    structure_only = settings.structure_only,
    from_base = ctx.base and not dest.archive and part_from_base(ctx.base, base_read) or nil,
  })
  if not files then
    return nil, err
  end
  if settings.structure_only then   -- CREATE statements only, as ClickHouse's
    files.data = {}
  end
  if dest.archive and settings.data_file_name_generator == "checksum" then
    return nil, "data_file_name_generator = 'checksum' is supported for directory backups, not for archive "
      .. dest.name .. " (ClickHouse's zip, the reference, is not available to test it against here)"
  end
  if dest.archive then
    return backup_archive.run(ctx, files)
  end
  -- data_file_name_generator = 'checksum' (ClickHouse's): every file is
  -- stored once under a name made of its checksum, `abc/def…` with a
  -- prefix of data_file_name_prefix_length characters (default 3).
  local layout = settings.data_file_name_generator == "checksum" and (settings.data_file_name_prefix_length or 3)
  local function stored_name(e)
    if not layout then
      return e.name
    elseif layout == 0 then
      return e.checksum
    end
    return e.checksum:sub(1, layout) .. "/" .. e.checksum:sub(layout + 1)
  end

  local lk, created = take_destination(dest, ctx.op_id)
  if not lk then
    return nil, created
  end
  -- What this run wrote goes first, its marker (the lock) last.
  local function cleanup()
    remove_all_but_marker(dest.path)
    lk:release(true)
    if created then
      require("lfs").rmdir(dest.path)
    end
  end
  local function fail(msg, code)
    cleanup()
    return nil, msg, code
  end
  -- SETTINGS password: every stored file is encrypted (chain.ENCRYPTION_FILE,
  -- README "Encrypted directory backups"); `.backup` keeps plain checksums.
  local enc_key
  if settings.password then
    local text
    enc_key, text = chain.new_encryption(settings.password)
    if not enc_key then
      return fail("backup " .. dest.name .. ": " .. text)
    end
    ok, err = fsutil.write_file(dest.path .. "/" .. chain.ENCRYPTION_FILE, text)
    if not ok then
      return fail(err)
    end
  end

  -- Which disk each part was on, when not the default one (disks.RECORD_FILE).
  local record = disks.record(files.data)
  if record then
    ok, err = fsutil.write_file(dest.path .. "/" .. disks.RECORD_FILE, record)
    if not ok then
      return fail(err)
    end
  end

  -- Every entry of the manifest, sorted by name as ClickHouse lists them.
  local base = ctx.base
  local function in_base(e)
    return base and e.checksum and base.by_content[chain.content_key(e.size, e.checksum)]
  end
  local meta_entries, entries, hashed_files, hashed_bytes = {}, {}, base_read.files, base_read.bytes
  local written = {}
  for _, m in ipairs(files.metadata) do
    local e = { name = m.name, size = #m.content, checksum = core.checksum(m.content) }
    if in_base(e) then
      e.use_base = true
    elseif layout and written[stored_name(e)] then
      e.data_file = stored_name(e)
    else
      local name = stored_name(e)
      written[name] = true
      e.data_file = layout and name or nil
      local path = dest.path .. "/" .. name
      ok, err = fsutil.mkdir_p(path:match("^(.*)/[^/]*$"))
      local content = m.content
      if ok and enc_key then
        content, err = core.encrypt(enc_key, name, content)
        ok = content ~= nil
      end
      if ok then
        ok, err = fsutil.write_file(path, content)
      end
      if not ok then
        return fail(err)
      end
      e.stored = true
    end
    meta_entries[#meta_entries + 1] = e
  end
  for _, d in ipairs(files.data) do
    if not d.path then   -- a file of a part unchanged since the base, decided
      entries[#entries + 1] = d
      goto next_file
    end
    local e = d   -- (the plan's table, reused: one table a file)
    e.src, e.path = d.path, nil
    local grown = base and base.manifest.by_name[e.name]
    grown = grown and grown.size > 0 and grown.size < e.size
    if base and not e.checksum and e.size > 0 and e.size <= SMALL_FILE and not grown then
      -- Small files that checksums.txt does not list (checksums.txt itself,
      -- columns.txt, …): hashing them now lets them match the base.
      local sum, size_or_err = core.checksum_file(e.src)
      if not sum then
        return fail(size_or_err)
      end
      hashed_files, hashed_bytes = hashed_files + 1, hashed_bytes + size_or_err
      if size_or_err == e.size then   -- else uncommitted bytes: the job hashes e.size
        e.checksum = sum
      end
    end
    entries[#entries + 1] = e
    ::next_file::
  end
  files = nil   -- luacheck: ignore (free the plan's per-file tables early)
  -- ("data/…" sorts before "metadata/…")
  table.move(meta_entries, 1, #meta_entries, #entries + 1, entries)
  meta_entries = nil   -- luacheck: ignore
  sort_by_name(entries)
  if layout then
    -- a file's name in the backup comes from its checksum: know them all first
    local data_entries = {}
    for _, e in ipairs(entries) do
      if e.src then
        data_entries[#data_entries + 1] = e
      end
    end
    local n, bytes_or_err, hcode = backup_archive.hash_unknown(ctx, data_entries, nil)
    if not n then
      return fail("backup " .. dest.name .. " failed: " .. bytes_or_err, hcode)
    end
    hashed_files, hashed_bytes = hashed_files + n, hashed_bytes + bytes_or_err
  end

  -- Decide each file: in the base (use_base), a copy of a file stored
  -- earlier (data_file), or stored; a file that may have grown since the
  -- base (Log-family tables append) is stored tail only if its prefix matches.
  local first, to_copy = {}, {}
  local job = core.job({ threads = ctx.threads, fsync = ctx.settings.fsync, key = enc_key })
  for _, e in ipairs(entries) do
    if e.src and e.size == 0 then
      -- ClickHouse stores no bytes (and no checksum) for an empty file
      e.checksum = nil
    elseif e.src and in_base(e) then
      e.use_base = true
    elseif e.src then
      local key = e.checksum and chain.content_key(e.size, e.checksum)
      if layout and written[stored_name(e)] then
        e.data_file = stored_name(e)
      elseif key and first[key] then
        e.data_file = first[key]
      else
        if key then
          first[key] = stored_name(e)
        end
        if layout then
          written[stored_name(e)] = true
          e.data_file = stored_name(e)
        end
        e.stored = true
        to_copy[#to_copy + 1] = e
      end
    end
  end
  -- Largest files first, so that no big file is left for one thread at the
  -- end; files under BIG_FILE (most of them, with many small parts) after
  -- them in name order, unsorted.
  local big, small = {}, {}
  for _, e in ipairs(to_copy) do
    local list = e.size >= BIG_FILE and big or small
    list[#list + 1] = e
  end
  table.sort(big, function(a, b)
    if a.size ~= b.size then
      return a.size > b.size
    end
    return a.name < b.name
  end)
  to_copy = table.move(small, 1, #small, #big + 1, big)
  big, small = nil, nil   -- luacheck: ignore
  for _, e in ipairs(to_copy) do
    -- read exactly `size` bytes (a Log file may hold uncommitted bytes)
    e.job_index = job:add({ { e.src, 0, e.size } }, dest.path .. "/" .. stored_name(e), e.size, e.checksum,
      nil, enc_key and stored_name(e))
    local be = base and not e.checksum and base.manifest.by_name[e.name]
    if be and be.size > 0 and be.size < e.size then
      job:set_base(e.job_index, be.size, be.checksum)
      e.prefix_of = be
    end
  end
  local store, op_id = ctx.store, ctx.op_id
  local code
  ok, err, code = runner.run(job, function(p)
    store:update(op_id, {
      files_read = hashed_files + p.files_done, bytes_read = hashed_bytes + p.bytes_done,
    })
  end, ctx.cancelled)
  if not ok then
    job:close()
    return fail("backup " .. dest.name .. " failed: " .. err, code)
  end
  for _, e in ipairs(entries) do
    if e.job_index then
      local _, sum, tail_only = job:entry(e.job_index)
      e.checksum = e.checksum or sum
      if tail_only then
        e.base_size, e.base_checksum = e.prefix_of.size, e.prefix_of.checksum
      elseif in_base(e) then
        os.remove(dest.path .. "/" .. e.name)
        e.stored, e.use_base = false, true
      end
    end
  end
  local job_progress = job:progress()
  job:close()

  -- Final dedup pass over files hashed while copying.
  first = {}
  local counters = {
    num_files = 0, total_size = 0, num_entries = 0, uncompressed_size = 0,
    files_read = hashed_files + job_progress.files_done,
    bytes_read = hashed_bytes + job_progress.bytes_done,
  }
  for _, e in ipairs(entries) do
    counters.num_files = counters.num_files + 1
    counters.total_size = counters.total_size + e.size
    -- (with a checksum layout every checksum was known before copying:
    -- nothing to undo)
    if not layout and not e.base_size and (e.stored or (e.size > 0 and not e.use_base)) then
      local key = chain.content_key(e.size, e.checksum)
      if e.stored and first[key] and first[key] ~= e.name then
        os.remove(dest.path .. "/" .. e.name)
        e.stored, e.data_file = false, first[key]
      elseif e.stored then
        first[key] = first[key] or e.name
      else
        e.data_file = first[key] or e.data_file
      end
    end
    if e.stored then
      counters.num_entries = counters.num_entries + 1
      counters.uncompressed_size = counters.uncompressed_size + e.size - (e.base_size or 0)
    end
  end

  local m
  m, err = chain.new_manifest(ctx, entries, base,
    { key = enc_key, data_file_name_generator = layout and "checksum" or nil })
  if not m then
    return fail(err)
  end
  local size
  size, err = manifest.write(dest.path, m)
  if not size then
    return fail(err)
  end
  lk:release(true)   -- removes the marker: the backup is complete
  counters.num_entries = counters.num_entries + 1
  counters.uncompressed_size = counters.uncompressed_size + size
  counters.compressed_size = counters.uncompressed_size
  return counters
end


return backup
