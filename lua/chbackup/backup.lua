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
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local manifest = require("chbackup.manifest")
local plan = require("chbackup.plan")
local runner = require("chbackup.runner")

local backup = {}

backup.MARKER = ".chbackup-incomplete"


local function check_destination(dest)
  local path = dest.path
  if fsutil.exists(path .. "/" .. manifest.FILE) then
    return nil, "backup " .. dest.name .. " already exists"
  end
  if fsutil.exists(path) then
    if not fsutil.is_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") exists and is not a directory"
    end
    if fsutil.exists(path .. "/" .. backup.MARKER) then
      return nil, "an unfinished backup is at " .. dest.name .. " (" .. path
        .. "), left by a failed or killed run; remove it first"
    end
    if not fsutil.is_empty_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") is not empty"
    end
  end
  return true
end


local function timestamp()
  return os.date("%Y-%m-%d %H:%M:%S")
end


--- Runs a BACKUP request.
-- ctx: {catalog=, store=, op_id=, threads=, settings=, dest=<resolved>}
-- Returns the status counters table, or nil, err.
function backup.run(ctx, req)
  local dest, cat = ctx.dest, ctx.catalog
  if dest.archive then
    return nil, "backup " .. dest.name .. ": archive destinations (.zip) are not supported yet"
  end
  local ok, err = check_destination(dest)
  if not ok then
    return nil, err
  end
  local selection
  selection, err = plan.select_for_backup(cat, req.elements)
  if not selection then
    return nil, err
  end
  local files
  files, err = plan.backup_files(selection)
  if not files then
    return nil, err
  end

  local created = not fsutil.exists(dest.path)
  ok, err = fsutil.mkdir_p(dest.path)
  if not ok then
    return nil, err
  end
  local function cleanup()
    if created then
      fsutil.remove_tree(dest.path)
    else
      for entry in require("lfs").dir(dest.path) do
        if entry ~= "." and entry ~= ".." then
          fsutil.remove_tree(dest.path .. "/" .. entry)
        end
      end
    end
  end
  local function fail(msg, code)
    cleanup()
    return nil, msg, code
  end
  ok, err = fsutil.write_file(dest.path .. "/" .. backup.MARKER, "chbackup " .. ctx.op_id .. "\n")
  if not ok then
    return fail(err)
  end

  -- Every entry of the manifest, sorted by name as ClickHouse lists them.
  local entries = {}
  for _, m in ipairs(files.metadata) do
    local path = dest.path .. "/" .. m.name
    local dir = path:match("^(.*)/[^/]*$")
    ok, err = fsutil.mkdir_p(dir)
    if ok then
      ok, err = fsutil.write_file(path, m.content)
    end
    if not ok then
      return fail(err)
    end
    entries[#entries + 1] = {
      name = m.name, size = #m.content, checksum = core.checksum(m.content), stored = true,
    }
  end
  for _, d in ipairs(files.data) do
    entries[#entries + 1] = { name = d.name, size = d.size, checksum = d.checksum, src = d.path }
  end
  table.sort(entries, function(a, b) return a.name < b.name end)

  -- Files whose checksum is known are stored once; the rest after hashing.
  local first = {}
  local job = core.job({ threads = ctx.threads, fsync = ctx.settings.fsync })
  for _, e in ipairs(entries) do
    if e.src and e.size == 0 then
      -- ClickHouse stores no bytes (and no checksum) for an empty file
      e.checksum = nil
    elseif e.src then
      local key = e.checksum and (e.size .. ":" .. e.checksum)
      if key and first[key] then
        e.data_file = first[key]
      else
        if key then
          first[key] = e.name
        end
        e.stored = true
        e.job_index = job:add(e.src, dest.path .. "/" .. e.name, e.size, e.checksum)
      end
    end
  end
  local store, op_id = ctx.store, ctx.op_id
  local code
  ok, err, code = runner.run(job, function(p)
    store:update(op_id, { files_read = p.files_done, bytes_read = p.bytes_done })
  end, ctx.cancelled)
  if not ok then
    job:close()
    return fail("backup " .. dest.name .. " failed: " .. err, code)
  end
  for _, e in ipairs(entries) do
    if e.job_index and not e.checksum then
      local _, sum = job:entry(e.job_index)
      e.checksum = sum
    end
  end
  job:close()

  -- Final dedup pass over files hashed while copying.
  first = {}
  local counters = {
    num_files = 0, total_size = 0, num_entries = 0, uncompressed_size = 0,
  }
  for _, e in ipairs(entries) do
    local key = e.size .. ":" .. tostring(e.checksum)
    counters.num_files = counters.num_files + 1
    counters.total_size = counters.total_size + e.size
    if e.stored and first[key] and first[key] ~= e.name then
      os.remove(dest.path .. "/" .. e.name)
      e.stored, e.data_file = false, first[key]
    elseif e.stored then
      first[key] = first[key] or e.name
    elseif e.size > 0 then
      e.data_file = first[key] or e.data_file
    end
    if e.stored then
      counters.num_entries = counters.num_entries + 1
      counters.uncompressed_size = counters.uncompressed_size + e.size
    end
  end

  local m = {
    version = 1, deduplicate_files = 1, timestamp = timestamp(), uuid = ctx.op_uuid,
    files = entries,
  }
  local size
  size, err = manifest.write(dest.path, m)
  if not size then
    return fail(err)
  end
  os.remove(dest.path .. "/" .. backup.MARKER)
  counters.num_entries = counters.num_entries + 1
  counters.uncompressed_size = counters.uncompressed_size + size
  counters.compressed_size = counters.uncompressed_size
  return counters
end


return backup
