--- Deleting a backup so that nothing half-deleted ever looks like one:
-- the backup is invalidated first (`.backup` renamed to `.backup.deleting`;
-- a zip renamed to `<name>.deleting`), then removed without following
-- symlinks, its marker last, so that a deletion cut short is recognised
-- and finished by the next run (chbackup list shows it "being deleted").
-- Used by `chbackup delete` and by policy retention.
-- @module chbackup.erase
local lfs = require("lfs")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")

local erase = {}

local function parent_dir(path)
  return path:match("^(.*)/[^/]*$") or "."
end


-- A zip backup at path: renamed to `<path>.deleting`, then removed.
local function erase_archive(path, opts, name)
  local deleting = path .. ".deleting"
  if not opts.finish then
    local attr = lfs.symlinkattributes(path)
    if not attr then
      return nil, "backup " .. name .. " is gone already"
    end
    if attr.mode ~= "file" then
      return nil, "backup " .. name .. " (" .. path .. ") is a " .. tostring(attr.mode)
        .. "; chbackup deletes only zip files it can see are backups and never follows symlinks"
    end
    local ok, err = os.rename(path, deleting)
    if not ok then
      return nil, "cannot invalidate " .. path .. ": " .. tostring(err) .. " (nothing was deleted)"
    end
    core.fsync(parent_dir(path))
  end
  local attr = lfs.symlinkattributes(deleting)
  if not attr then
    return nil, "backup " .. name .. " is gone already (no " .. deleting .. ")"
  end
  if attr.mode ~= "file" then
    return nil, deleting .. " is a " .. tostring(attr.mode) .. "; chbackup removes only a zip file it renamed"
  end
  local ok, err = os.remove(deleting)
  if not ok then
    return nil, "cannot remove " .. deleting .. ": " .. tostring(err)
      .. " (the backup is invalidated; the next run finishes the deletion)"
  end
  core.fsync(parent_dir(path))
  return true
end


--- Deletes the backup at path. opts: archive (a zip file), finish (finish a
-- deletion already started), name (for messages). Returns true or nil, err.
function erase.backup(path, opts)
  opts = opts or {}
  local name = opts.name or path
  if opts.archive then
    return erase_archive(path, opts, name)
  end
  local attr = lfs.symlinkattributes(path)
  if not attr then
    return nil, "backup " .. name .. " is gone already"
  end
  if attr.mode ~= "directory" then
    return nil, "backup " .. name .. " (" .. path .. ") is a " .. tostring(attr.mode)
      .. "; chbackup deletes only directories it can see are backups and never follows symlinks"
  end
  if lfs.attributes(path .. "/.backup", "mode") == "file" then
    local ok, err = os.rename(path .. "/.backup", path .. "/.backup.deleting")
    if not ok then
      return nil, "cannot invalidate " .. path .. "/.backup: " .. tostring(err) .. " (nothing was deleted)"
    end
    core.fsync(path)
  elseif not lfs.symlinkattributes(path .. "/.backup.deleting") then
    return nil, "backup " .. name .. " has neither .backup nor .backup.deleting; not deleting it"
  end
  -- `.backup.deleting` goes last: a deletion cut short is still recognised
  local ok, err = fsutil.remove_tree(path, ".backup.deleting")
  if not ok then
    return nil, err .. " (the backup is invalidated; the next run finishes the deletion)"
  end
  core.fsync(parent_dir(path))
  return true
end


return erase
