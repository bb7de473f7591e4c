--- Directory backups: ClickHouse's tree (`.backup`, `metadata/`, `data/`)
-- as files below one directory, plain or encrypted (SETTINGS password:
-- every stored file sealed, README "Encrypted directory backups").
--
-- Reading: every stored file is read confined below the backup's
-- directory (pieces carry `root=`: no symbolic link in it is followed, a
-- backup is untrusted input). Writing: the directory's marker
-- (`.chbackup-incomplete`) is the writer's lock and says "not a backup
-- yet" until `.backup` is written last; the C job copies the files.
-- Deleting: `.backup` renamed to `.backup.deleting` first, removed last.
-- @module chbackup.store.dir
local lfs = require("lfs")
local core = require("chbackup.core")
local encryption = require("chbackup.store.encryption")
local fsutil = require("chbackup.fsutil")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local runner = require("chbackup.runner")

local dir = {}

--- The marker of a directory backup being written (and its lock).
dir.MARKER = ".chbackup-incomplete"


-- Reading ----------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader


--- Opens the directory backup at resolved.path. opts.password opens an
-- encrypted one; without it the manifest can still be read (list,
-- inspect) and its files cannot (key_err says why). Returns a reader or
-- nil, err, code.
function dir.open(resolved, opts)
  local file = resolved.path .. "/" .. manifest.FILE
  if not lfs.attributes(file) then
    return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
  end
  local m, err, code = manifest.read(file)
  if not m then
    return nil, err, code
  end
  local self = setmetatable({ dest = resolved, manifest = m, kind = "dir" }, Reader)
  if lfs.attributes(resolved.path .. "/" .. encryption.FILE) then
    self.encrypted = true
    local key, key_err, kcode = encryption.open(resolved, opts.password)
    if not key and (opts.password or kcode ~= "AUTH") then
      return nil, key_err, kcode
    end
    self.key, self.key_err = key, key_err
  end
  return self
end


--- The piece holding the first `length` bytes of the file stored as
-- `name` (a C job piece; `from` is this reader). Returns it or nil, err.
function Reader:piece(name, length)
  if self.key_err then
    return nil, self.key_err
  end
  local p = { self.dest.path .. "/" .. name, 0, length, root = self.dest.path, from = self, name = name }
  if self.key then
    p.key, p.aad = self.key, name
  end
  return p
end


--- The directory a C job reads this backup's own files from by name
-- (job:add_stored: what :piece gives, without a table a file), or nil
-- when they are encrypted (pieces carry the key).
function Reader:plain_root()
  if not self.key and not self.encrypted then
    return self.dest.path
  end
end


--- Bytes the file stored as `name` holds (plain bytes), or nil if it is
-- missing or not a regular file (RESTORE would refuse to follow a link).
function Reader:stored_size(name)
  -- (one lstat: an incremental checks a file of its base per part)
  local size = core.file_size(self.dest.path .. "/" .. name)
  if size and self.key then
    return core.plain_size(size)
  end
  return size
end


--- The bytes of piece p (one of this reader's), verified for an
-- encrypted backup. Returns them or nil, err.
function Reader.read_piece(_, p)
  if p.key then
    -- a small file of an encrypted backup: decrypted (and verified) whole
    local sealed, err = core.read_file(p[1], p.root)
    if not sealed then
      return nil, "cannot read " .. p[1] .. ": " .. err
    end
    local whole, derr = core.decrypt(p.key, p.aad, sealed, p[1])
    if not whole then
      return nil, "cannot read " .. p[1] .. ": " .. derr
    end
    return whole:sub(p[2] + 1, p[2] + p[3])
  end
  return core.read_file(p[1], p.root, p[2], p[3])
end


--- A file chbackup keeps beside the manifest (not listed in it), e.g.
-- the disks record; nil if there is none.
function Reader:read_extra(name)
  return core.read_file(self.dest.path .. "/" .. name, self.dest.path)
end


--- Bytes the backup stores itself (not in its base, each copy once).
function Reader:stored_bytes()
  local m, n = self.manifest, 0
  for _, e in ipairs(m.files) do
    if not (e.data_file and e.data_file ~= e.name and m.by_name[e.data_file]) then
      n = n + e.size - (e.base_size or (e.use_base and e.size) or 0)
    end
  end
  return n
end


function Reader.close()
end

--- Reader:stored_bytes for readers of other stores with the same layout.
dir.stored_bytes = Reader.stored_bytes


--- The header fields of the directory backup at path (manifest.header).
-- Returns table or nil, err.
function dir.read_header(path)
  local file = path .. "/" .. manifest.FILE
  local text, err = fsutil.read_file(file)
  if not text then
    return nil, "cannot read " .. file .. ": " .. tostring(err)
  end
  return manifest.header(text, file)
end


-- Writing ----------------------------------------------------------------------

-- Every entry of a backup directory but its marker.
local function remove_all_but_marker(path)
  for entry in lfs.dir(path) do
    if entry ~= "." and entry ~= ".." and entry ~= dir.MARKER then
      fsutil.remove_tree(path .. "/" .. entry)
    end
  end
end


--- Read-only checks before any work (the destination is locked when it is
-- created, by begin_write). Returns true or nil, err.
function dir.check_new(dest)
  local path = dest.path
  if fsutil.exists(path .. "/" .. manifest.FILE) then
    return nil, "backup " .. dest.name .. " already exists"
  end
  if fsutil.exists(path) then
    if not fsutil.is_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") exists and is not a directory"
    end
    local marker = path .. "/" .. dir.MARKER
    local held, holder = lock.held(marker)
    if held then
      return nil, "backup " .. dest.name .. " is being written by " .. holder .. " (" .. marker .. ")"
    end
    if held == nil and not fsutil.is_empty_dir(path) then
      return nil, "backup destination " .. dest.name .. " (" .. path .. ") is not empty"
    end
  end
  return true
end


-- Creates the destination directory and takes its marker as the lock of
-- the run (held until `.backup` is written, its text naming the
-- operation). A marker nobody holds was left by a killed run: what that
-- run wrote is removed first (logged). Returns lk, created or nil, err.
local function take_destination(dest, op_id)
  local path = dest.path
  local created = not fsutil.exists(path)
  local ok, err = fsutil.mkdir_p(path)
  if not ok then
    return nil, err
  end
  local marker = path .. "/" .. dir.MARKER
  local lk, prev, made = lock.take(marker, op_id, function(holder)
    return "backup " .. dest.name .. " is being written by " .. holder .. " (" .. marker .. ")"
  end)
  if not lk then
    return nil, prev
  end
  local function refuse(msg)
    lk:release(made)
    if created then
      lfs.rmdir(path)
    end
    return nil, msg
  end
  if fsutil.exists(path .. "/" .. manifest.FILE) then
    return refuse("backup " .. dest.name .. " already exists")
  end
  if prev or not made then
    -- a marker nobody holds: a killed (or failed) run's; take its place
    remove_all_but_marker(path)
    lock.log("removed what a killed BACKUP (" .. lock.who(prev) .. ") left in backup " .. dest.name
      .. " (" .. path .. ")")
  elseif not fsutil.is_empty_dir(path, dir.MARKER) then
    return refuse("backup destination " .. dest.name .. " (" .. path .. ") is not empty")
  end
  return lk, created
end


local Writer = {}
Writer.__index = Writer


--- Copies writer w's queued files ({name, pieces, size, checksum}) with a
-- C job of job_opts, add(job, q) adding each (the stores of this layout
-- share it: store.s3). On failure w is aborted. Returns the job's progress
-- or nil, err, code.
function dir.copy_queued(w, job_opts, add, progress, cancelled)
  local job = core.job(job_opts)
  for _, q in ipairs(w.queued) do
    add(job, q)
  end
  w.queued = {}
  -- counted from the writer's first file: a big backup flushes in batches
  local files, bytes = w.files_done or 0, w.bytes_done or 0
  local ok, err, code = runner.run(job, progress and function(p)
    progress({ files_done = files + p.files_done, bytes_done = bytes + p.bytes_done })
  end, cancelled)
  local p = job:progress()
  job:close()
  w.files_done, w.bytes_done = files + p.files_done, bytes + p.bytes_done
  if not ok then
    w:abort()
    return nil, "backup " .. w.dest.name .. " failed: " .. err, code
  end
  return { files_done = w.files_done, bytes_done = w.bytes_done }
end


--- Starts writing a directory backup at dest.path. opts: op_id, threads,
-- fsync, password (every stored file encrypted). Returns a writer or nil,
-- err. Nothing counts as a backup until commit has written `.backup`.
function dir.begin_write(dest, opts)
  local lk, created = take_destination(dest, opts.op_id)
  if not lk then
    return nil, created
  end
  local self = setmetatable({ dest = dest, lk = lk, created = created, opts = opts, queued = {} }, Writer)
  if opts.password then
    local key, text = encryption.new(opts.password)
    local ok, err = key ~= nil, text
    if ok then
      ok, err = fsutil.write_file(dest.path .. "/" .. encryption.FILE, text)
    end
    if not ok then
      self:abort()
      return nil, "backup " .. dest.name .. ": " .. err
    end
    self.key = key
  end
  return self
end


--- Stores `content` as the file `name` of the backup now.
function Writer:put_bytes(name, content)
  local path = self.dest.path .. "/" .. name
  local ok, err = fsutil.mkdir_p(fsutil.parent_dir(path))
  if ok and self.key then
    content, err = core.encrypt(self.key, name, content)
    ok = content ~= nil
  end
  if ok then
    ok, err = fsutil.write_file(path, content)
  end
  if not ok then
    return nil, err
  end
  return true
end


--- Stores `content` as a file chbackup keeps beside the manifest (not
-- listed in it; read back with Reader:read_extra), as it is.
function Writer:put_extra(name, content)
  return fsutil.write_file(self.dest.path .. "/" .. name, content)
end


--- Queues the file `name`, read from pieces, for commit. `checksum` (nil:
-- unknown) and `size` are verified while copying.
function Writer:put(name, pieces, size, checksum)
  self.queued[#self.queued + 1] = { name, pieces, size, checksum }
  return true
end


--- The piece of a file this backup stores (for the chain check of the
-- manifest being made: this writer's own files are checked by the copy).
function Writer:piece(name, length)
  return { self.dest.path .. "/" .. name, 0, length, from = self, name = name }
end


--- Copies the files queued so far (the C job; a batch of a big backup:
-- the job holds only them). progress(p) sees the copy's progress, counted
-- from this writer's first file. Returns true or nil, err, code (the
-- writer is aborted then).
function Writer:flush(progress, cancelled)
  local dest, opts = self.dest, self.opts
  local p, err, code = dir.copy_queued(self, { threads = opts.threads, fsync = opts.fsync, key = self.key },
    function(job, q)
      job:add(q[2], dest.path .. "/" .. q[1], q[3], q[4], nil, self.key and q[1])
    end, progress, cancelled)
  if not p then
    return nil, err, code
  end
  return true
end


--- Copies the queued files (Writer:flush), then writes `m` as `.backup`
-- and removes the marker: the backup exists from then on. progress(p)
-- sees the copy's progress. Returns {files_done=, bytes_done=,
-- manifest_size=, stored_size=} or nil, err, code (the writer is aborted
-- then).
function Writer:commit(m, progress, cancelled)
  local ok, err, code = self:flush(progress, cancelled)
  if not ok then
    return nil, err, code
  end
  local size
  size, err = manifest.write(self.dest.path, m)
  if not size then
    self:abort()
    return nil, err
  end
  self.lk:release(true)   -- removes the marker: the backup is complete
  self.lk = nil
  return { files_done = self.files_done, bytes_done = self.bytes_done, manifest_size = size }
end


--- Removes what this run wrote, its marker (the lock) last.
function Writer:abort()
  if not self.lk then
    return
  end
  remove_all_but_marker(self.dest.path)
  self.lk:release(true)
  self.lk = nil
  if self.created then
    lfs.rmdir(self.dest.path)
  end
end


-- Deleting ---------------------------------------------------------------------

--- Deletes the directory backup at path so that nothing half-deleted
-- looks like a backup. opts: finish (a deletion already started), name.
-- Returns true or nil, err.
function dir.remove(path, opts)
  local name = opts.name or path
  local attr = lfs.symlinkattributes(path)
  if not attr then
    return nil, "backup " .. name .. " is gone already"
  end
  if attr.mode ~= "directory" then
    return nil, "backup " .. name .. " (" .. path .. ") is a " .. tostring(attr.mode)
      .. "; chbackup deletes only directories it can see are backups and never follows symlinks"
  end
  local file = path .. "/" .. manifest.FILE
  if lfs.attributes(file, "mode") == "file" then
    local ok, err = os.rename(file, file .. ".deleting")
    if not ok then
      return nil, "cannot invalidate " .. file .. ": " .. tostring(err) .. " (nothing was deleted)"
    end
    core.fsync(path)
  elseif not lfs.symlinkattributes(file .. ".deleting") then
    return nil, "backup " .. name .. " has neither .backup nor .backup.deleting; not deleting it"
  end
  -- `.backup.deleting` goes last: a deletion cut short is still recognised
  local ok, err = fsutil.remove_tree(path, manifest.FILE .. ".deleting")
  if not ok then
    return nil, err .. " (the backup is invalidated; the next run finishes the deletion)"
  end
  core.fsync(fsutil.parent_dir(path))
  return true
end


return dir
