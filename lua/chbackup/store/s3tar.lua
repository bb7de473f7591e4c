--- Tar archives on S3 (`S3('http://host/bucket/prefix/x.tar')`, `.tar.zst`,
-- `.tar.gz`, ...), as ClickHouse keeps them: the archive is one object at
-- the url's key, `<key>.lock` beside it while it is written
-- (BackupImpl's lock file of an archive).
--
-- Writing: `.lock` created first (create-if-absent; refused if the archive
-- or a live `.lock` is there; one left by a killed chbackup run of this
-- host is taken over, as chbackup.store.s3 does), then the C tar writer
-- streams the archive into a multipart upload of the key (no local copy:
-- memory is one upload part), `.backup` its last entry; the object exists
-- only once complete, a failure aborts the upload. `.lock` is removed
-- after.
--
-- Reading: chbackup.store.tar's reader over the object: one pass indexes it
-- (ranged GETs; a `.tar`'s entry data is skipped, not fetched); a `.tar`'s
-- entries are S3 ranged pieces read by any number of threads, a
-- compressed tar's are read from the spool the one pass decompressed it
-- into (chb_tar.h): the object is fetched once.
--
-- Deleting: the object (the archive is the backup: gone at once).
-- @module chbackup.store.s3tar
local archive = require("chbackup.store.archive")
local core = require("chbackup.core")
local lock = require("chbackup.lock")
local s3 = require("chbackup.store.s3")
local tar = require("chbackup.store.tar")

local s3tar = {}


local function lock_key(dest)
  return dest.prefix .. ".lock"
end


-- The client of r and the size of its object (false when there is none);
-- or nil, err (naming the backup `name`), code.
local function object(r, name)
  local c, err, code = s3.client(r)
  local st
  if c then
    st, err, code = c:head(r.prefix)
    if st or code == "ENOENT" then
      return c, st and st.size or false
    end
  end
  return nil, "backup " .. name .. ": " .. err, code
end


--- Opens the tar backup at resolved (the object resolved.prefix). Returns
-- a reader (chbackup.store.tar's) or nil, err, code.
function s3tar.open(resolved, opts)
  local c, size, code = object(resolved, resolved.name)
  if not (c and size) then
    return nil, c and ("backup " .. resolved.name .. " not found: no object " .. resolved.path) or size, code
  end
  local key = resolved.prefix
  return tar.open(resolved, opts, { key = key, s3 = c:profile(), size = size, read = function(offset, length)
    return c:get(key, offset, length)
  end })
end


--- Read-only checks before any work. Returns true or nil, err, code.
function s3tar.check_new(dest)
  local c, size, code = object(dest, dest.name)
  if not c or size then
    return nil, c and ("backup " .. dest.name .. " already exists") or size, code
  end
  local text = c:get(lock_key(dest))
  if text and not s3.stale(text, dest.path) then
    return nil, "backup " .. dest.name .. " is being written by " .. lock.who(text) .. " (" .. lock_key(dest)
      .. " exists)"
  end
  return true
end


--- Starts writing a tar backup at dest: `.lock` first. opts: op_id,
-- compression_method, compression_level and password (refused, as
-- chbackup.store.tar). Returns a writer (chbackup.store.archive's) or nil,
-- err, code.
function s3tar.begin_write(dest, opts)
  local ok, err, code = tar.check_options(dest, opts)
  if ok then
    ok, err, code = s3tar.check_new(dest)
  end
  if not ok then
    return nil, err, code
  end
  local c = s3.client(dest)
  local key, profile = lock_key(dest), c:profile()
  local prev = c:get(key)
  if prev then   -- stale (check_new): a killed run's, whose upload never completed
    c:delete(key)
    lock.log("took over " .. key .. " left by a killed BACKUP (" .. lock.who(prev) .. ") of backup " .. dest.name)
  end
  ok, err, code = c:put_if_absent(key, lock.holder_text(opts.op_id) .. "host " .. s3.hostname() .. "\n")
  if not ok then
    if code == "EEXIST" then
      return nil, "backup " .. dest.name .. " is being written by another process (" .. key .. ")", "LOCKED"
    end
    return nil, "backup " .. dest.name .. ": " .. err, code
  end
  s3.held[dest.path] = true
  local lk = { release = function()
    local dok, derr = c:delete(key)
    if not dok then
      lock.log("backup " .. dest.name .. ": cannot remove its " .. key .. ": " .. derr)
    end
    s3.held[dest.path] = nil
  end }
  local writer
  writer, err, code = core.tar_writer(dest.prefix, { s3 = profile, threads = opts.threads })
  if not writer then
    lk.release()
    return nil, "backup " .. dest.name .. ": " .. err, code
  end
  return archive.writer(dest, lk, writer, tar.writer_piece, { key = dest.prefix, s3 = profile,
    manifest_tmp = os.tmpname(), size = function()
      local st = c:head(dest.prefix)
      return st and st.size
    end })
end


--- Rebasing a tar archive on S3 is refused: the archive is one object that
-- would have to be rewritten beside and renamed, and S3 has no rename
-- (a server-side copy is not in chbackup's client). Returns nil, err.
function s3tar.begin_rebase(dest)
  return nil, "backup " .. dest.name .. ": rebasing a tar archive on S3 is not supported (S3 has no rename to put "
    .. "a rewritten archive in its place); restore it and back it up again as a full backup, or keep its base"
end


--- Deletes the tar backup opts.resolved (its object). Returns true or nil, err.
function s3tar.remove(_, opts)
  local r = opts.resolved
  local name = opts.name or r.name
  local c, size, code = object(r, name)
  if not (c and size) then
    return nil, c and ("backup " .. name .. " is gone already (no object " .. r.path .. ")") or size, code
  end
  local ok, derr = c:delete(r.prefix)
  if not ok then
    return nil, "cannot delete backup " .. name .. ": " .. derr
  end
  return true
end


return s3tar
