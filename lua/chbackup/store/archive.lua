--- What the archive containers (zip, tar) share: a backup that is one
-- file. Writing: under `<archive>.lock`, the C writer (core.zip_writer or
-- core.tar_writer: the same methods) writes a temporary file beside the
-- archive and renames it into place only when complete, so an archive
-- that exists is whole. Deleting: renamed to `<archive>.deleting` first,
-- then removed. Each container gives its own C writer and reader.
-- @module chbackup.store.archive
local lfs = require("lfs")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local runner = require("chbackup.runner")

local archive = {}


local parent_dir = fsutil.parent_dir


--- Read-only checks before any work. Returns true or nil, err.
function archive.check_new(dest)
  if lfs.attributes(dest.path) then
    return nil, "backup " .. dest.name .. " already exists"
  end
  local held, holder = lock.held(lock.archive_lock(dest.path))
  if held then
    return nil, "backup " .. dest.name .. " is being written by " .. holder .. " ("
      .. lock.archive_lock(dest.path) .. ")"
  end
  return true
end


-- Reading: methods the containers' readers share (self.reader: the C
-- reader, with read(name) and entry(name)).
archive.Reader = {}


--- The entry `name` of the open archive: its reader's entry(name) results
-- (nil if it has none). Raises on a closed reader: a lookup after close is
-- a bug, not a missing file.
function archive.Reader:entry(name)
  if not self.reader then
    error("backup " .. self.dest.name .. " is closed", 2)
  end
  return self.reader:entry(name)
end


--- The bytes of piece p, an entry's range (`entry=`), read whole, verified.
function archive.Reader:read_entry_piece(p)
  if not self.reader then
    return nil, "backup " .. self.dest.name .. " is closed"
  end
  local whole, err = self.reader:read(p.entry)
  if not whole then
    return nil, "cannot read " .. p.entry .. " of " .. p[1] .. ": " .. tostring(err)
  end
  return whole:sub(p[2] + 1, p[2] + p[3])
end


--- The manifest of the archive open in `reader` (core.zip_reader or
-- core.tar_reader), parsed as it is read in chunks (reader:stream): a
-- `.backup` of 240,000 files is about 45 MB, which a whole read held twice
-- at once. `what` names it in errors. Returns the manifest or nil, err,
-- code (a read error: the reader's code, e.g. "AUTH").
function archive.read_manifest(reader, what)
  local stream, err, code = reader:stream(manifest.FILE)
  if not stream then
    return nil, err, code
  end
  local read_err, read_code
  local m, perr = manifest.parse(function()
    if read_err then
      return nil
    end
    local chunk, e, c = stream:read()
    if not chunk and e then
      read_err, read_code = e, c
    end
    return chunk
  end, what)
  stream:close()
  if read_err then   -- before the parse error it caused (a manifest cut short)
    return nil, read_err, read_code
  end
  return m, perr
end


--- An entry chbackup keeps beside the manifest (not listed in it), e.g.
-- the disks record; nil if there is none.
function archive.Reader:read_extra(name)
  if not (self.reader and self.reader:entry(name)) then
    return nil
  end
  return self.reader:read(name)
end


--- Bytes the backup takes: the archive's size.
function archive.Reader:stored_bytes()
  return lfs.attributes(self.dest.path, "size") or 0
end


function archive.Reader:close()
  if self.reader then
    self.reader:close()
    self.reader = nil
  end
end


local Writer = {}
Writer.__index = Writer


--- Starts writing an archive backup at dest.path with the C writer that
-- new_writer(path) makes (nil, err, code on failure); piece(self, name,
-- length) is the container's piece of an entry it stores. opts: op_id.
-- Holds the archive's lock until commit or abort. Returns a writer or nil,
-- err, code.
function archive.begin_write(dest, opts, new_writer, piece)
  local lk, err = lock.archive(dest, opts.op_id)
  if not lk then
    return nil, err
  end
  if lfs.attributes(dest.path) then
    lk:release(true)
    return nil, "backup " .. dest.name .. " already exists"
  end
  local ok, merr = fsutil.mkdir_p(parent_dir(dest.path))
  if not ok then
    lk:release(true)
    return nil, merr
  end
  local writer, werr, code = new_writer(dest.path)
  if not writer then
    lk:release(true)
    if code == "EEXIST" then
      return nil, "backup " .. dest.name .. " already exists"
    end
    return nil, "backup " .. dest.name .. ": " .. werr, code
  end
  return archive.writer(dest, lk, writer, piece)
end


--- A writer of the archive backup at dest through the C writer `writer`,
-- holding `lk` (released with lk:release(true) at commit or abort).
-- at: where the archive is not a local file (chbackup.store.s3tar):
-- manifest_tmp (a local temporary file for `.backup`) and size() (the
-- archive's size once written).
-- A C writer that can stream (w:begin succeeds: tar's) writes entries as
-- they are put, and flush waits for them: what it holds is the entries of
-- one batch, not one record per file of the backup (issue 14). One that
-- cannot (zip's, for now) holds them all and writes them at commit.
function archive.writer(dest, lk, writer, piece, at)
  local streaming = writer.begin ~= nil and writer:begin() == true
  return setmetatable({ dest = dest, lk = lk, writer = writer, piece = piece, at = at, streaming = streaming },
    Writer)
end


--- Adds `content` as the entry `name`.
function Writer:put_bytes(name, content)
  local ok, err, code = self.writer:add_bytes(name, content)
  if not ok then
    return nil, "backup " .. self.dest.name .. ": " .. err, code
  end
  return true
end


--- Adds a file chbackup keeps beside the manifest (not listed in it;
-- read back with the reader's read_extra).
Writer.put_extra = Writer.put_bytes


--- Adds the entry `name`, read from pieces when the archive is written
-- (streaming: by the writer's thread, soon; else at commit); `size` and
-- `checksum` (nil: unknown) are verified then. A streaming writer that
-- failed answers with its error (naming the archive and the entry).
function Writer:put(name, pieces, size, checksum)
  local ok, err, code = self.writer:add(name, pieces, size, checksum)
  if not ok then
    return nil, "backup " .. self.dest.name .. ": " .. err, code
  end
  return true
end


--- Waits until the entries put so far are written (a streaming writer:
-- their records are freed then); progress(p) sees the writer's progress,
-- cancelled() cancels it. A writer that does not stream writes them all
-- at commit: nothing to do. Returns true or nil, err, code (the writer is
-- aborted then).
function Writer:flush(progress, cancelled)
  if not self.streaming then
    return true
  end
  local ok, err, code = runner.drain(self.writer, progress, cancelled)
  if not ok then
    self:abort()
    return nil, "backup " .. self.dest.name .. " failed: " .. err, code
  end
  return true
end


--- Adds `m` as `.backup` (last), writes the rest of the archive (on the
-- writer's threads) and renames it into place. Returns {files_done=,
-- bytes_done=, manifest_size=, stored_size=} or nil, err, code (the writer
-- is aborted).
function Writer:commit(m, progress, cancelled)
  local dest = self.dest
  -- `.backup` from a temporary file beside the archive, named as the
  -- writer's companion so that the next writer of this archive removes it
  -- if this run is killed.
  local manifest_tmp = self.at and self.at.manifest_tmp or (dest.path .. ".tmp-" .. core.getpid() .. ".backup")
  local size, err = manifest.write_file(manifest_tmp, m)
  if not size then
    self:abort()
    return nil, err
  end
  local ok, code
  ok, err, code = self.writer:add(manifest.FILE, manifest_tmp, size)
  if ok then
    ok, err, code = runner.run(self.writer, progress, cancelled)
    err = err and ("backup " .. dest.name .. " failed: " .. err)
  else
    err = "backup " .. dest.name .. ": " .. err
  end
  os.remove(manifest_tmp)
  if not ok then
    self:abort()
    return nil, err, code
  end
  local p = self.writer:progress()
  self.writer:close()
  self.writer = nil
  self.lk:release(true)
  self.lk = nil
  return { files_done = p.files_done, bytes_done = p.bytes_done, manifest_size = size,
    stored_size = self.at and self.at.size() or lfs.attributes(dest.path, "size") }
end


--- Drops the archive being written (its temporary files are removed; an
-- upload is aborted).
function Writer:abort()
  if self.at then
    os.remove(self.at.manifest_tmp)
  end
  if self.writer then
    self.writer:close()
    self.writer = nil
  end
  if self.lk then
    self.lk:release(true)
    self.lk = nil
  end
end


--- Deletes the archive backup at path: renamed to `<path>.deleting`, then
-- removed. opts: finish (a deletion already started), name. Returns true
-- or nil, err.
function archive.remove(path, opts)
  local name = opts.name or path
  local deleting = path .. ".deleting"
  if not opts.finish then
    local attr = lfs.symlinkattributes(path)
    if not attr then
      return nil, "backup " .. name .. " is gone already"
    end
    if attr.mode ~= "file" then
      return nil, "backup " .. name .. " (" .. path .. ") is a " .. tostring(attr.mode)
        .. "; chbackup deletes only archive files it can see are backups and never follows symlinks"
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
    return nil, deleting .. " is a " .. tostring(attr.mode) .. "; chbackup removes only an archive file it renamed"
  end
  local ok, err = os.remove(deleting)
  if not ok then
    return nil, "cannot remove " .. deleting .. ": " .. tostring(err)
      .. " (the backup is invalidated; the next run finishes the deletion)"
  end
  core.fsync(parent_dir(path))
  return true
end


return archive
