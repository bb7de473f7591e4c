--- `list`: the backups at a destination (restic's `snapshots`,
-- clickhouse-backup's `list`, pgBackRest's `info`).
--
-- A destination is a directory given as a backup name with a prefix path:
-- `Disk('backups', '')` (the whole disk), `Disk('backups', 'nightly')`,
-- `File('/backups')`. Below it, a directory holding `.backup` is a backup
-- (not descended into), a `*.zip` file is an archive backup; a directory
-- with chbackup's `.chbackup-incomplete` marker, or `.backup.deleting`, is
-- listed as what it is, so that nothing half-made looks like a backup.
-- @module chbackup.listing
local lfs = require("lfs")
local chain = require("chbackup.chain")
local config = require("chbackup.config")
local fsutil = require("chbackup.fsutil")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")
local store = require("chbackup.store")

local listing = {}

local MARKER = require("chbackup.store.dir").MARKER


-- The backup name of `rel` below the destination dest (a parsed name).
local function name_of(dest, rel)
  local args = dest.args
  if dest.engine == "Disk" then
    local prefix = args[2]:gsub("/+$", "")
    local path = prefix == "" and rel or (prefix .. "/" .. rel)
    return "Disk(" .. sql.quote_string(args[1]) .. ", " .. sql.quote_string(path) .. ")"
  end
  return "File(" .. sql.quote_string(args[1]:gsub("/+$", "") .. "/" .. rel) .. ")"
end


-- One row for a backup found at rel.
local function row_of(cfg, dest, rel, opts)
  local name = name_of(dest, rel)
  local row = { name = name, path = rel }
  local parsed = chain.parse_name(name)
  local b, err = chain.open(cfg, parsed, { password = opts.password })
  if not b then
    row.status = "unreadable"
    row.problem = err
    return row
  end
  local m = b.manifest
  row.timestamp, row.uuid = m.timestamp, m.uuid
  row.kind = m.base_backup and "incremental" or "full"
  row.base_backup = m.base_backup
  row.files = #m.files
  local total = 0
  for _, e in ipairs(m.files) do
    total = total + e.size
  end
  row.restored_bytes = total
  row.stored_bytes = b.store:stored_bytes()
  local bases, berr = chain.list(b)
  if bases then
    row.status, row.chain = "ok", #bases
  else
    row.status, row.problem = "broken chain", berr
  end
  return row
end


--- The backups below the destination named `dest_name` (a backup name such
-- as "Disk('backups', '')"). opts.password opens encrypted backups.
-- Returns rows sorted by timestamp then name: {name=, path=, timestamp=,
-- uuid=, kind=, base_backup=, files=, restored_bytes=, stored_bytes=,
-- chain=, status= ("ok" | "broken chain" | "unreadable" | "incomplete" |
-- "being deleted"), problem=}; or nil, err.
function listing.run(cfg, dest_name, opts)
  opts = opts or {}
  local dest, err = chain.parse_name(dest_name)
  if not dest then
    return nil, err
  end
  local root
  root, err = config.resolve(cfg, dest)
  if not root then
    return nil, err
  end
  if lfs.attributes(root.path, "mode") ~= "directory" then
    return nil, "destination " .. dest_name .. " (" .. root.path .. ") is not a directory"
  end
  local rows = {}
  local function walk(dir, rel)
    for _, e in ipairs(fsutil.list_dir(dir) or {}) do
      local path, r = dir .. "/" .. e, rel == "" and e or (rel .. "/" .. e)
      local c = store.classify(path)
      local what = c and c.what
      if what == "directory" then
        walk(path, r)
      elseif what == "backup" then
        rows[#rows + 1] = row_of(cfg, dest, r, opts)
      elseif what == "incomplete" then
        rows[#rows + 1] = { name = name_of(dest, r), path = r, status = "incomplete",
          problem = "an unfinished backup (" .. MARKER .. ")" }
      elseif what == "deleting" then
        local shown = c.base and (rel == "" and c.base or (rel .. "/" .. c.base)) or r
        rows[#rows + 1] = { name = name_of(dest, shown), path = shown, status = "being deleted",
          problem = "its deletion was started and not finished" }
      elseif what == "temp" then
        rows[#rows + 1] = { name = name_of(dest, r), path = r, status = "incomplete",
          problem = "the temporary file of a zip BACKUP that is running or was interrupted" }
      end
    end
  end
  walk(root.path, "")
  table.sort(rows, function(a, b)
    if (a.timestamp or "") ~= (b.timestamp or "") then
      return (a.timestamp or "") < (b.timestamp or "")
    end
    return a.name < b.name
  end)
  return rows
end


--- Deletes backup `name` (chbackup.store) unless a backup below its
-- destination's root (the disk, or a File backup's directory) relies on it
-- as its base; that one is named. Returns true or nil, err.
function listing.delete(cfg, name, opts)
  opts = opts or {}
  local dest, err = chain.parse_name(name)
  if not dest then
    return nil, err
  end
  local target
  target, err = config.resolve(cfg, dest)
  if not target then
    return nil, err
  end
  local kind = lfs.symlinkattributes(target.path, "mode")
  local is_backup = target.archive and kind == "file"
    or kind == "directory" and (lfs.symlinkattributes(target.path .. "/" .. manifest.FILE)
      or lfs.symlinkattributes(target.path .. "/" .. manifest.FILE .. ".deleting"))
  if not is_backup then
    return nil, "backup " .. name .. " not found (" .. target.path .. ")"
  end
  local root_name
  if dest.engine == "Disk" then
    root_name = "Disk(" .. sql.quote_string(dest.args[1]) .. ", '')"
  else
    root_name = "File(" .. sql.quote_string((dest.args[1]:gsub("/+$", ""):match("^(.*)/[^/]*$") or "/")) .. ")"
  end
  local rows = listing.run(cfg, root_name, opts) or {}
  for _, r in ipairs(rows) do
    local base = r.base_backup and chain.parse_name(r.base_backup)
    local resolved = base and config.resolve(cfg, base)
    if resolved and resolved.path == target.path then
      return nil, "backup " .. name .. " is the base of " .. r.name .. "; delete that one first"
        .. " (or keep both: RESTORE of " .. r.name .. " reads from " .. name .. ")"
    end
  end
  return store.remove(target, { name = name,
    finish = kind == "directory" and not lfs.symlinkattributes(target.path .. "/" .. manifest.FILE) })
end


return listing
