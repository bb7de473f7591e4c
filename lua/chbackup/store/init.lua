--- Where backups live and in which container: the one place that knows.
--
-- A destination (`Disk('backups', 'x')`, `File('/b/x.zip')`) is resolved
-- by its location engine to a place (today the local engines Disk and
-- File, through config.resolve: a path below an allowed disk or path);
-- the container its name asks for (a directory, or the archive kind its
-- name ends in) reads, writes and deletes the backup there. Every
-- container module has the same shape:
--
--   open(resolved, {password=})        -> reader: dest, manifest, kind,
--       piece(name, length), stored_size(name), read_piece(p),
--       read_extra(name), stored_bytes(), close()
--   check_new(resolved)                -> true | nil, err   (read-only)
--   begin_write(resolved, opts)        -> writer: put_bytes(name, bytes),
--       put_extra(name, bytes),
--       put(name, pieces, size, checksum), piece(name, length),
--       flush(progress, cancelled) (copies what put queued, if it queues),
--       commit(manifest, progress, cancelled), abort()
--   remove(path, {name=, finish=})     -> true | nil, err
--   begin_rebase(resolved, opts)       -> a writer rewriting it in place
--       (only containers without rename: S3)
--   list(resolved_root)                -> {{rel=, what=}} | nil, err
--       (only locations without a local tree: S3; local paths are walked
--       with store.classify)
--
-- A new container (tar was) is one module and one line in CONTAINERS; a
-- new location is one resolver in LOCATIONS and a container that takes its
-- places: S3 (`S3('url'[, 'key_id', 'secret'])`) resolves to
-- chbackup.store.s3, directory backups as objects, or for a tar name to
-- chbackup.store.s3tar, the archive as one object (docs/s3.md).
-- @module chbackup.store
local config = require("chbackup.config")
local lfs = require("lfs")
local manifest = require("chbackup.manifest")

local store = {}

-- archive kind (config.resolve's archive_kind; nil: a directory) -> module
local CONTAINERS = {
  dir = "chbackup.store.dir",
  zip = "chbackup.store.zip",
  tar = "chbackup.store.tar",
}

-- location engine -> resolver(cfg, dest) -> resolved or nil, err
local LOCATIONS = {
  Disk = config.resolve,
  File = config.resolve,
  S3 = function(cfg, dest) return require("chbackup.store.s3").resolve(cfg, dest) end,
}


--- Resolves a parsed destination ({engine=, args=}) to its place.
-- Returns config.resolve's table or nil, err.
function store.resolve(cfg, dest)
  if dest.path then   -- resolved already
    return dest
  end
  local resolver = LOCATIONS[dest.engine] or config.resolve   -- (which names the engine it refuses)
  return resolver(cfg, dest)
end


--- The container module of a resolved destination, or nil, err naming it.
function store.container(resolved)
  if resolved.location == "s3" then   -- (s3 refuses zip itself, as ClickHouse)
    return require(resolved.archive_kind == "tar" and "chbackup.store.s3tar" or "chbackup.store.s3")
  end
  local kind = resolved.archive and resolved.archive_kind or "dir"
  local name = CONTAINERS[kind]
  if not name then
    return nil, "backup " .. resolved.name .. ": only .zip and tar archives are supported"
  end
  return require(name)
end


-- Calls container method `fn` for a resolved destination.
local function call(resolved, fn, ...)
  local c, err = store.container(resolved)
  if not c then
    return nil, err
  end
  return c[fn](...)
end


--- Opens an existing backup for reading (see the module's reader shape).
function store.open(resolved, opts)
  return call(resolved, "open", resolved, opts or {})
end


--- Read-only checks that a new backup may be made at resolved.
function store.check_new(resolved)
  return call(resolved, "check_new", resolved)
end


--- Starts writing a new backup at resolved (see the writer shape).
function store.begin_write(resolved, opts)
  return call(resolved, "begin_write", resolved, opts)
end


--- Starts rewriting the backup at resolved in place, for a container that
-- cannot put a copy in its place by rename (S3: chbackup.store.s3's
-- begin_rebase). Returns its writer, or false when the container rebases
-- by copy and swap (the caller writes beside it), or nil, err.
function store.begin_rebase(resolved, opts)
  local c, err = store.container(resolved)
  if not c then
    return nil, err
  end
  if not c.begin_rebase then
    return false
  end
  return c.begin_rebase(resolved, opts)
end


--- Deletes the backup at resolved. opts: name, finish.
function store.remove(resolved, opts)
  opts = opts or {}
  opts.name = opts.name or resolved.name
  opts.resolved = resolved
  return call(resolved, "remove", resolved.path, opts)
end



--- The backups below a resolved root whose location lists them itself
-- (S3: by object keys): {{rel=, what = "backup" | "incomplete" |
-- "deleting"}} or nil, err; false for a local root (walk it, with
-- store.classify).
function store.list(root)
  if root.location == "s3" then   -- a location concern: any key prefix lists, whatever its name says
    return require("chbackup.store.s3").list(root)
  end
  local c = root.location and store.container(root)
  if not (c and c.list) then
    return false
  end
  return c.list(root)
end


-- Does a file name say an archive chbackup reads (zip, tar)?
local function is_archive(name)
  local kind = config.archive_kind(name)
  return kind ~= nil and CONTAINERS[kind] ~= nil
end


--- What the entry at `path` of a destination is, as far as backups go,
-- looked at without following a symbolic link:
--   {what = "backup", archive = bool}        a backup (a zip or tar archive,
--                                            or a directory with `.backup`)
--   {what = "deleting", archive = bool}      its deletion was started
--   {what = "incomplete"}                    a directory BACKUP being written
--                                            or killed (its marker)
--   {what = "temp", base = <name>}           an archive writer's `<name>.tmp-<pid>`
--   {what = "directory"}                     a directory that is none of these
--   {what = "refused", why = …}              not something chbackup reads
-- or nil when nothing is there.
function store.classify(path)
  local attr = lfs.symlinkattributes(path)
  if not attr then
    return nil
  end
  local file = path:match("[^/]*$")
  if attr.mode == "link" then
    return { what = "refused", why = "is a symbolic link; chbackup does not follow it" }
  end
  local deleting = file:match("^(.+)%.deleting$")
  if deleting and is_archive(deleting) then
    if attr.mode ~= "file" then
      return { what = "refused", why = file .. " is a " .. tostring(attr.mode)
        .. ", not an archive backup being deleted; left alone" }
    end
    return { what = "deleting", archive = true, base = deleting }
  end
  local temp = file:match("^(.+)%.tmp%-%d+$")
  if temp and is_archive(temp) then
    return { what = "temp", base = temp }
  end
  local kind = config.archive_kind(file)
  if kind and not CONTAINERS[kind] then
    return { what = "refused", why = "is a " .. kind .. " archive; chbackup reads only .zip and tar archives" }
  elseif kind then
    if attr.mode ~= "file" then
      return { what = "refused", why = "is a " .. tostring(attr.mode) .. ", not a " .. kind .. " archive (a name "
        .. "ending in .zip or a tar suffix is an archive)" }
    end
    return { what = "backup", archive = true }
  elseif attr.mode ~= "directory" then
    return { what = "refused", why = "is a " .. tostring(attr.mode) .. ", not a backup directory (an archive "
      .. "backup's name ends in .zip or a tar suffix: .tar, .tar.gz, .tar.zst, ...)" }
  end
  if lfs.attributes(path .. "/" .. manifest.FILE, "mode") == "file" then
    return { what = "backup", archive = false }
  elseif lfs.symlinkattributes(path .. "/" .. manifest.FILE .. ".deleting") then
    return { what = "deleting", archive = false }
  elseif lfs.symlinkattributes(path .. "/" .. require("chbackup.store.dir").MARKER) then
    return { what = "incomplete" }
  end
  return { what = "directory" }
end

return store
