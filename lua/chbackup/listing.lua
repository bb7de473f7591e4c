--- `list`: the backups at a destination (restic's `snapshots`,
-- clickhouse-backup's `list`, pgBackRest's `info`).
--
-- A destination is a directory given as a backup name with a prefix path:
-- `Disk('backups', '')` (the whole disk), `Disk('backups', 'nightly')`,
-- `File('/backups')`. Below it, a directory holding `.backup` is a backup
-- (not descended into), a `*.zip` file is an archive backup; a directory
-- with chbackup's `.chbackup-incomplete` marker, or `.backup.deleting`, is
-- listed as what it is, so that nothing half-made looks like a backup.
-- `S3('http://host/bucket/prefix')`: the objects below the prefix, grouped
-- by their `.backup` and `.lock` (chbackup.store.s3.list).
-- @module chbackup.listing
local lfs = require("lfs")
local chain = require("chbackup.chain")
local fsutil = require("chbackup.fsutil")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")
local store = require("chbackup.store")

local listing = {}

local MARKER = require("chbackup.store.dir").MARKER


-- The backup name of `rel` below the destination dest (a parsed name).
local function name_of(dest, rel)
  local args = dest.args
  if dest.engine == "S3" then
    return sql.format_destination({ engine = "S3", args = { args[1]:gsub("/+$", "") .. "/" .. rel } })
  elseif dest.engine == "Disk" then
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
  local b, err = chain.open(cfg, parsed, { password = opts.password, inherit = opts.root })
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


-- The entries below a local root ({rel=, what=, problem=}), walked with
-- store.classify; or nil, err.
local function walk_local(root, dest_name)
  if lfs.attributes(root.path, "mode") ~= "directory" then
    return nil, "destination " .. dest_name .. " (" .. root.path .. ") is not a directory"
  end
  local entries = {}
  local function walk(dir, rel)
    for _, e in ipairs(fsutil.list_dir(dir) or {}) do
      local path, r = dir .. "/" .. e, rel == "" and e or (rel .. "/" .. e)
      local c = store.classify(path)
      local what = c and c.what
      if what == "directory" then
        walk(path, r)
      elseif what == "backup" or what == "incomplete" then
        entries[#entries + 1] = { rel = r, what = what }
      elseif what == "deleting" then
        entries[#entries + 1] = { rel = c.base and (rel == "" and c.base or (rel .. "/" .. c.base)) or r,
          what = "deleting" }
      elseif what == "temp" then
        entries[#entries + 1] = { rel = r, what = "incomplete",
          problem = "the temporary file of a zip BACKUP that is running or was interrupted" }
      end
    end
  end
  walk(root.path, "")
  return entries
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
  root, err = store.resolve(cfg, setmetatable({ root = true, inherit = opts.inherit }, { __index = dest }))
  if not root then
    return nil, err
  end
  local entries
  entries, err = store.list(root)
  if entries == false then
    entries, err = walk_local(root, dest_name)
  end
  if not entries then
    return nil, err
  end
  opts = setmetatable({ root = root }, { __index = opts })
  local rows = {}
  for _, e in ipairs(entries) do
    local r = e.rel
    if e.what == "backup" then
      rows[#rows + 1] = row_of(cfg, dest, r, opts)
    elseif e.what == "incomplete" then
      rows[#rows + 1] = { name = name_of(dest, r), path = r, status = "incomplete",
        problem = e.problem or ("an unfinished backup (" .. (root.location == "s3" and ".lock without .backup"
          or MARKER) .. ")") }
    elseif e.what == "deleting" then
      rows[#rows + 1] = { name = name_of(dest, r), path = r, status = "being deleted",
        problem = "its deletion was started and not finished" }
    end
  end
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
  target, err = store.resolve(cfg, dest)
  if not target then
    return nil, err
  end
  local root_name, finish
  if target.location == "s3" then
    name = target.name   -- without key id and secret
    -- existence and a started deletion: store.remove looks (`.backup`, a deletion's `.lock`)
    local bucket_url = target.url:sub(1, #target.url - #target.prefix - 1)
    root_name = sql.format_destination({ engine = "S3", args = { bucket_url } })
  else
    local kind = lfs.symlinkattributes(target.path, "mode")
    local is_backup = target.archive and kind == "file"
      or kind == "directory" and (lfs.symlinkattributes(target.path .. "/" .. manifest.FILE)
        or lfs.symlinkattributes(target.path .. "/" .. manifest.FILE .. ".deleting"))
    if not is_backup then
      return nil, "backup " .. name .. " not found (" .. target.path .. ")"
    end
    finish = kind == "directory" and not lfs.symlinkattributes(target.path .. "/" .. manifest.FILE)
    if dest.engine == "Disk" then
      root_name = "Disk(" .. sql.quote_string(dest.args[1]) .. ", '')"
    else
      root_name = "File(" .. sql.quote_string((dest.args[1]:gsub("/+$", ""):match("^(.*)/[^/]*$") or "/")) .. ")"
    end
  end
  local rows = listing.run(cfg, root_name, setmetatable({ inherit = target }, { __index = opts })) or {}
  for _, r in ipairs(rows) do
    local base = r.base_backup and chain.parse_name(r.base_backup)
    local resolved = base and store.resolve(cfg, setmetatable({ inherit = target }, { __index = base }))
    if resolved and resolved.path == target.path then
      return nil, "backup " .. name .. " is the base of " .. r.name .. "; delete that one first"
        .. " (or keep both: RESTORE of " .. r.name .. " reads from " .. name .. ")"
    end
  end
  return store.remove(target, { name = name, finish = finish })
end


return listing
