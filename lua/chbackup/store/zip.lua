--- Zip backups (`Disk('backups', '1.zip')`): ClickHouse's tree inside one
-- archive, `.backup` included, optionally WinZip-AES encrypted (SETTINGS
-- password). The C core owns libzip (csrc/engine/chb_zip*); this module
-- says what goes in and reads entries back as job pieces.
--
-- Writing: the archive is written under `<archive>.lock` to a temporary
-- file and renamed into place by the C writer only when complete, so a
-- zip that exists is whole. Deleting: renamed to `<archive>.deleting`
-- first, then removed.
-- @module chbackup.store.zip
local lfs = require("lfs")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local runner = require("chbackup.runner")

local zip = {}


-- Reading ----------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader


--- Opens the zip backup at resolved.path: its entries and manifest.
-- opts.password opens a password-protected one. Returns a reader (with
-- `encrypted` and `method`, the compression method its `.backup` was
-- written with) or nil, err, code.
function zip.open(resolved, opts)
  local password = opts.password
  if not lfs.attributes(resolved.path) then
    return nil, "backup " .. resolved.name .. " not found: no archive " .. resolved.path
  end
  local reader, err, code = core.zip_reader(resolved.path, password)
  if not reader then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local entries = {}
  for _, e in ipairs(reader:list()) do
    entries[e.name] = e
  end
  if not entries[manifest.FILE] then
    reader:close()
    return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
  end
  local text
  text, err, code = reader:read(manifest.FILE)
  if not text then
    reader:close()
    if code == "AUTH" then
      return nil, "backup " .. resolved.name .. " is password-protected: "
        .. (password and "wrong password" or "give SETTINGS password = '…'") .. " (" .. err .. ")", code
    end
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local m
  m, err = manifest.from_string(text, resolved.path .. ":" .. manifest.FILE)
  if not m then
    reader:close()
    return nil, err
  end
  local own = entries[manifest.FILE]
  return setmetatable({ dest = resolved, manifest = m, kind = "zip", reader = reader, entries = entries,
    password = password, encrypted = own.encrypted == true,
    method = type(own.method) == "string" and own.method or nil }, Reader)
end


--- The piece holding the first `length` bytes of the entry `name` (a C
-- job piece: the C core decrypts, inflates and verifies it while reading).
function Reader:piece(name, length)
  return { self.dest.path, 0, length, entry = name, password = self.password, from = self, name = name }
end


--- Plain bytes of the entry `name`, or nil if the archive has none.
function Reader:stored_size(name)
  local e = self.entries[name]
  return e and e.size
end


--- The bytes of piece p (one of this reader's), verified.
function Reader:read_piece(p)
  if not self.reader then
    return nil, "backup " .. self.dest.name .. " is closed"
  end
  local whole, err = self.reader:read(p.entry)
  if not whole then
    return nil, "cannot read " .. p.entry .. " of " .. p[1] .. ": " .. tostring(err)
  end
  return whole:sub(p[2] + 1, p[2] + p[3])
end


--- An entry chbackup keeps beside the manifest (not listed in it), e.g.
-- the disks record; nil if there is none.
function Reader:read_extra(name)
  if not (self.reader and self.entries[name]) then
    return nil
  end
  return self.reader:read(name)
end


--- Bytes the backup takes: the archive's size.
function Reader:stored_bytes()
  return lfs.attributes(self.dest.path, "size") or 0
end


function Reader:close()
  if self.reader then
    self.reader:close()
    self.reader = nil
  end
end


--- The header fields of the zip backup at path (manifest.header), read
-- with password (nil: none), which `whose` gave ("the policy"; default
-- "the statement"). Returns table or nil, err, code ("AUTH": a password
-- problem).
function zip.read_header(path, password, whose)
  whose = whose or "the statement"
  local reader, err, code = core.zip_reader(path, password)
  if not reader then
    return nil, "cannot read " .. path .. ": " .. tostring(err), code
  end
  local text
  text, err, code = reader:read(manifest.FILE)
  reader:close()
  if not text then
    if code == "AUTH" then
      return nil, tostring(err) .. (password and (" (" .. whose .. "'s password does not open this zip)")
        or (" (the zip is password-protected and " .. whose .. " has no password)")), code
    end
    return nil, "cannot read " .. manifest.FILE .. " of " .. path .. ": " .. tostring(err), code
  end
  return manifest.header(text, path .. ":" .. manifest.FILE)
end


-- Writing ----------------------------------------------------------------------

--- Read-only checks before any work. Returns true or nil, err.
function zip.check_new(dest)
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


local Writer = {}
Writer.__index = Writer


--- Starts writing a zip backup at dest.path. opts: op_id, threads, fsync,
-- password, compression_method, compression_level. Holds the archive's
-- lock until commit or abort. Returns a writer or nil, err, code.
function zip.begin_write(dest, opts)
  local lk, err = lock.archive(dest, opts.op_id)
  if not lk then
    return nil, err
  end
  if lfs.attributes(dest.path) then
    lk:release(true)
    return nil, "backup " .. dest.name .. " already exists"
  end
  local ok, merr = fsutil.mkdir_p(fsutil.parent_dir(dest.path))
  if not ok then
    lk:release(true)
    return nil, merr
  end
  local writer, werr, code = core.zip_writer(dest.path, {
    method = opts.compression_method, level = opts.compression_level,
    password = opts.password, threads = opts.threads, fsync = opts.fsync,
  })
  if not writer then
    lk:release(true)
    if code == "EEXIST" then
      return nil, "backup " .. dest.name .. " already exists"
    end
    return nil, "backup " .. dest.name .. ": " .. werr, code
  end
  return setmetatable({ dest = dest, lk = lk, writer = writer }, Writer)
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
-- read back with Reader:read_extra).
Writer.put_extra = Writer.put_bytes


--- Adds the entry `name`, read from pieces when the archive is written;
-- `size` and `checksum` (nil: unknown) are verified then.
function Writer:put(name, pieces, size, checksum)
  local ok, err, code = self.writer:add(name, pieces, size, checksum)
  if not ok then
    return nil, "backup " .. self.dest.name .. ": " .. err, code
  end
  return true
end


--- The piece of an entry this archive stores (for the chain check of the
-- manifest being made; its own entries are verified while written).
function Writer:piece(name, length)
  return { self.dest.path, 0, length, entry = name, from = self, name = name }
end


--- Adds `m` as `.backup` (last), writes the archive (compressing on worker
-- threads) and renames it into place. Returns {files_done=, bytes_done=,
-- manifest_size=, stored_size=} or nil, err, code (the writer is aborted).
function Writer:commit(m, progress, cancelled)
  local dest = self.dest
  -- `.backup` from a temporary file beside the archive, named as the
  -- writer's companion so that the next writer of this archive removes it
  -- if this run is killed.
  local manifest_tmp = dest.path .. ".tmp-" .. core.getpid() .. ".backup"
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
    stored_size = lfs.attributes(dest.path, "size") }
end


--- Drops the archive being written (its temporary files are removed).
function Writer:abort()
  if self.writer then
    self.writer:close()
    self.writer = nil
  end
  if self.lk then
    self.lk:release(true)
    self.lk = nil
  end
end


-- Deleting ---------------------------------------------------------------------

--- Deletes the zip backup at path: renamed to `<path>.deleting`, then
-- removed. opts: finish (a deletion already started), name. Returns true
-- or nil, err.
function zip.remove(path, opts)
  local name = opts.name or path
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
    core.fsync(fsutil.parent_dir(path))
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
  core.fsync(fsutil.parent_dir(path))
  return true
end


return zip
