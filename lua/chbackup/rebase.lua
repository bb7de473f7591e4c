--- `rebase`: turns an incremental backup into a standalone one, so that its
-- bases can be deleted (clickhouse-backup's `rebase`; ClickHouse#52190).
--
-- Every file is read through the chain and verified against its size and
-- checksum while it is written into a new directory beside the backup
-- (with the `.chbackup-incomplete` marker until its `.backup` is written);
-- then the two directories are swapped atomically (renameat2 exchange: the
-- name never lacks a backup) and the old one is deleted whole. The new
-- backup keeps the uuid and timestamp: its contents are the same, so a
-- backup made on it still finds the base it recorded.
-- @module chbackup.rebase
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local file_plan = require("chbackup.file_plan")
local fsutil = require("chbackup.fsutil")
local manifest = require("chbackup.manifest")
local runner = require("chbackup.runner")
local store = require("chbackup.store")

local rebase = {}

local MARKER = require("chbackup.store.dir").MARKER


--- Rebases backup `name` (a directory backup, not encrypted) onto no base.
-- opts: threads, password (of the chain's archives). Returns the number of
-- bytes written, or nil, err naming the backup.
function rebase.run(cfg, name, opts)
  opts = opts or {}
  local dest, err = chain.parse_name(name)
  if not dest then
    return nil, err
  end
  local b
  b, err = chain.open(cfg, dest, { password = opts.password })
  if not b then
    return nil, err
  end
  local m = b.manifest
  if not m.base_backup then
    return nil, "backup " .. name .. " has no base: it is standalone already"
  end
  if b.store.kind ~= "dir" or b.store.encrypted then
    return nil, "backup " .. name .. ": rebase of zip and encrypted backups is not supported yet"
  end
  local bases
  bases, err = chain.list(b)
  if not bases then
    return nil, err
  end
  local path = b.dest.path
  local tmp = path .. ".rebase-" .. core.getpid()
  fsutil.remove_tree(tmp)
  local ok
  ok, err = fsutil.mkdir_p(tmp)
  if ok then
    ok, err = fsutil.write_file(tmp .. "/" .. MARKER, "chbackup rebase of " .. name .. "\n")
  end
  local function fail(msg)
    fsutil.remove_tree(tmp)
    return nil, msg
  end
  if not ok then
    return fail(err)
  end
  -- every file stored once, by content, as a full backup stores them
  local job = core.job({ threads = opts.threads })
  local files, first, written = {}, {}, 0
  for i, e in ipairs(m.files) do
    local f = { name = e.name, size = e.size, checksum = e.checksum }
    files[i] = f
    local key = e.size > 0 and file_plan.content_key(e.size, e.checksum)
    if not key then
      local dir = (tmp .. "/" .. e.name):match("^(.*)/[^/]*$")
      ok, err = fsutil.mkdir_p(dir)
      if ok then
        ok, err = fsutil.write_file(tmp .. "/" .. e.name, "")
      end
      if not ok then
        job:close()
        return fail(err)
      end
    elseif first[key] then
      f.data_file = first[key]
    else
      first[key] = e.name
      local pieces, perr = chain.pieces(b, e)
      if not pieces then
        job:close()
        return fail(perr)
      end
      job:add(pieces, tmp .. "/" .. e.name, e.size, e.checksum)
      written = written + e.size
    end
  end
  ok, err = runner.run(job, nil, opts.cancelled)
  job:close()
  if not ok then
    return fail("rebase of backup " .. name .. " failed: " .. err)
  end
  local size
  size, err = manifest.write(tmp, {
    version = 1, deduplicate_files = 1, timestamp = m.timestamp, uuid = m.uuid, files = files,
  })
  if not size then
    return fail(err)
  end
  os.remove(tmp .. "/" .. MARKER)
  ok, err = core.exchange(tmp, path)
  if not ok then
    return fail("cannot put the rebased backup in place of " .. name .. ": " .. err)
  end
  -- tmp now holds the incremental: deleted whole, its .backup invalidated first
  ok, err = store.remove({ path = tmp, name = name .. " (before its rebase)" })
  if not ok then
    return nil, "backup " .. name .. " is rebased; the old copy at " .. tmp .. " could not be removed: " .. err
  end
  return written + size
end


return rebase
