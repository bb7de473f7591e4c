--- BACKUP into a zip archive (`Disk('backups', '1.zip')`), ClickHouse's
-- layout inside (the same tree as a directory backup, `.backup` included).
--
-- Every decision is made before the archive is written, since nothing can
-- be taken back out of it: files that checksums.txt does not list are
-- hashed first (a hash-only job on worker threads), then each file is in
-- the base (use_base), a copy of one stored earlier (data_file), a grown
-- file whose tail alone is stored (base_size), or stored. The zip writer
-- (C, libzip) compresses files in parallel and renames the archive into
-- place only when it is complete.
-- @module chbackup.backup_archive
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local disks = require("chbackup.disks")
local fsutil = require("chbackup.fsutil")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local runner = require("chbackup.runner")

local backup_archive = {}


--- Hashes what is not known yet: whole files without a checksum, and the
-- prefixes that may match a base file of the same name (base may be nil).
-- Returns files hashed, bytes read; or nil, err, code.
function backup_archive.hash_unknown(ctx, entries, base)
  local job = core.job({ threads = ctx.threads })
  local asked = {}
  for _, e in ipairs(entries) do
    if e.src and e.size > 0 and not e.checksum then
      asked[#asked + 1] = { e, "checksum", job:add({ { e.src, 0, e.size } }, nil, e.size) }
      local be = base and base.manifest.by_name[e.name]
      if be and be.size > 0 and be.size < e.size then
        asked[#asked + 1] = { e, "prefix", job:add({ { e.src, 0, be.size } }, nil, be.size), be }
      end
    end
  end
  if #asked == 0 then
    job:close()
    return 0, 0
  end
  local ok, err, code = runner.run(job, nil, ctx.cancelled)
  if not ok then
    job:close()
    return nil, err, code
  end
  local bytes = 0
  for _, a in ipairs(asked) do
    local size, sum = job:entry(a[3])
    bytes = bytes + size
    if a[2] == "checksum" then
      a[1].checksum = sum
    elseif sum == a[4].checksum then
      a[1].grown_from = a[4]
    end
  end
  job:close()
  return #asked, bytes
end


local write_archive

--- Runs a BACKUP into an archive. files: plan.backup_files' result.
-- Holds the archive's lock (`<archive>.lock`, chbackup.lock) throughout.
-- Returns the status counters, or nil, err, code.
function backup_archive.run(ctx, files)
  local lk, err = lock.archive(ctx.dest, ctx.op_id)
  if not lk then
    return nil, err
  end
  local res
  if require("lfs").attributes(ctx.dest.path) then
    res = { nil, "backup " .. ctx.dest.name .. " already exists" }
  else
    res = table.pack(pcall(write_archive, ctx, files))
    if not res[1] then
      lk:release(true)
      error(res[2], 0)
    end
    table.remove(res, 1)
  end
  lk:release(true)
  return res[1], res[2], res[3]
end


function write_archive(ctx, files)
  local dest, base, settings = ctx.dest, ctx.base, ctx.settings
  if ctx.dest.archive_kind ~= "zip" then
    return nil, "backup " .. dest.name .. ": only .zip archives are supported"
  end
  local entries = {}
  for _, m in ipairs(files.metadata) do
    entries[#entries + 1] = { name = m.name, size = #m.content, checksum = core.checksum(m.content),
      content = m.content }
  end
  for _, d in ipairs(files.data) do
    entries[#entries + 1] = { name = d.name, size = d.size, checksum = d.checksum, src = d.path }
  end
  table.sort(entries, function(a, b) return a.name < b.name end)
  local hashed_files, hashed_bytes, code = backup_archive.hash_unknown(ctx, entries, base)
  if not hashed_files then
    return nil, "backup " .. dest.name .. " failed: " .. hashed_bytes, code
  end

  local ok0, merr = fsutil.mkdir_p(dest.path:match("^(.*)/[^/]*$"))
  if not ok0 then
    return nil, merr
  end
  local writer, err
  writer, err, code = core.zip_writer(dest.path, {
    method = settings.compression_method, level = settings.compression_level,
    password = settings.password, threads = ctx.threads, fsync = settings.fsync,
  })
  if not writer then
    if code == "EEXIST" then
      return nil, "backup " .. dest.name .. " already exists"
    end
    return nil, "backup " .. dest.name .. ": " .. err, code
  end
  local function fail(msg, fcode)
    writer:close()   -- aborts: the temporary archive is removed
    return nil, msg, fcode
  end

  local first, to_add = {}, {}
  local counters = { num_files = 0, total_size = 0, num_entries = 0, uncompressed_size = 0 }
  for _, e in ipairs(entries) do
    counters.num_files = counters.num_files + 1
    counters.total_size = counters.total_size + e.size
    local key = e.size > 0 and chain.content_key(e.size, e.checksum)
    if e.size == 0 then
      e.checksum = nil
    elseif base and base.by_content[key] then
      e.use_base = true
    elseif e.grown_from then
      e.base_size, e.base_checksum = e.grown_from.size, e.grown_from.checksum
      to_add[#to_add + 1] = e
    elseif first[key] then
      e.data_file = first[key]
    else
      first[key] = e.name
      to_add[#to_add + 1] = e
    end
  end
  -- Largest first, so that compression of a big file starts early.
  table.sort(to_add, function(a, b)
    if a.size ~= b.size then
      return a.size > b.size
    end
    return a.name < b.name
  end)
  for _, e in ipairs(to_add) do
    local ok, aerr, acode
    if e.content then
      ok, aerr, acode = writer:add_bytes(e.name, e.content)
    elseif e.base_size then
      ok, aerr, acode = writer:add(e.name, { { e.src, e.base_size, e.size - e.base_size } }, e.size - e.base_size)
    else
      ok, aerr, acode = writer:add(e.name, { { e.src, 0, e.size } }, e.size, e.checksum)
    end
    if not ok then
      return fail("backup " .. dest.name .. ": " .. aerr, acode)
    end
    counters.num_entries = counters.num_entries + 1
    counters.uncompressed_size = counters.uncompressed_size + e.size - (e.base_size or 0)
  end

  -- which disk each part was on, when not the default one (disks.RECORD_FILE)
  local record = disks.record(files.data)
  if record then
    local ok, aerr, acode = writer:add_bytes(disks.RECORD_FILE, record)
    if not ok then
      return fail("backup " .. dest.name .. ": " .. aerr, acode)
    end
  end

  -- the files this archive stores are not in it yet: check only the base
  local m, merr2 = chain.new_manifest(ctx, entries, base, { check = { only_base = true } })
  if not m then
    return fail(merr2)
  end
  -- `.backup` goes in last, from a temporary file beside the archive, named
  -- as the writer's companion so that the next writer of this archive
  -- removes it if this run is killed.
  local manifest_tmp = dest.path .. ".tmp-" .. core.getpid() .. ".backup"
  local size
  size, err = manifest.write_file(manifest_tmp, m)
  if not size then
    return fail(err)
  end
  local ok, aerr, acode = writer:add(manifest.FILE, manifest_tmp, size)
  if not ok then
    os.remove(manifest_tmp)
    return fail("backup " .. dest.name .. ": " .. aerr, acode)
  end
  counters.num_entries = counters.num_entries + 1
  counters.uncompressed_size = counters.uncompressed_size + size

  local store, op_id = ctx.store, ctx.op_id
  local werr, wcode
  ok, werr, wcode = runner.run(writer, function(p)
    store:update(op_id, { files_read = hashed_files + p.files_done, bytes_read = hashed_bytes + p.bytes_done })
  end, ctx.cancelled)
  os.remove(manifest_tmp)
  if not ok then
    return fail("backup " .. dest.name .. " failed: " .. werr, wcode)
  end
  local p = writer:progress()
  writer:close()
  counters.files_read = hashed_files + p.files_done
  counters.bytes_read = hashed_bytes + p.bytes_done
  local attr = require("lfs").attributes(dest.path)
  counters.compressed_size = attr and attr.size or counters.uncompressed_size
  return counters
end


return backup_archive
