--- Tar backups (`Disk('backups', 'x.tar')`, `.tar.gz`/`.tgz`,
-- `.tar.zst`/`.tzst`, `.tar.xz`, `.tar.bz2`, `.tar.lzma`): ClickHouse's tree
-- inside one archive, `.backup` last, written as ClickHouse's
-- TarArchiveWriter writes it (the C core's chb_tar.h: pax restricted, the
-- compression filter chosen by the suffix). As ClickHouse, tar takes no
-- compression_method, compression_level or password.
--
-- Reading: the archive is read once when opened (core.tar_reader), which
-- indexes its entries. A `.tar`'s entries are byte ranges of the file:
-- their pieces are plain pieces with an offset, read by any number of
-- threads. A compressed tar is decompressed that one time into the C
-- core's spool (an unlinked temporary file of its uncompressed data, see
-- chb_tar.h): its pieces name their entry, which the core reads from the
-- spool while this reader is open, in any order. The reader still says
-- `sequential` (its pieces are entries, not ranges of the archive), and
-- readers of many entries put them in archive order (chain.archive_order).
--
-- On S3 (chbackup.store.s3tar) the archive is an object: the same reader
-- over it (`place`: its key, S3 profile, size and a ranged read), its
-- pieces S3 pieces.
--
-- Writing and deleting are chbackup.store.archive's (shared with zip).
-- @module chbackup.store.tar
local lfs = require("lfs")
local archive = require("chbackup.store.archive")
local core = require("chbackup.core")
local manifest = require("chbackup.manifest")

local tar = {}


-- Reading ----------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader


--- Opens the tar backup at resolved.path: its entries and manifest.
-- place: where the archive is when not a local file (chbackup.store.s3tar):
-- {key=, s3= (a profile id), size=, read = function(offset, length)}.
-- Returns a reader or nil, err, code.
function tar.open(resolved, _, place)
  if not place then
    local path = resolved.path
    local size = lfs.attributes(path, "size")
    if not size then
      return nil, "backup " .. resolved.name .. " not found: no archive " .. path
    end
    place = { key = path, size = size, read = function(offset, length)
      return core.read_file(path, nil, offset, length)
    end }
  end
  local reader, err, code = core.tar_reader(place.key, { s3 = place.s3 })
  if not reader then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  -- Entries are looked up in the C index (reader:entry), not copied into a
  -- Lua table: a backup of millions of files costs no memory per file here.
  if not reader:entry(manifest.FILE) then
    reader:close()
    return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
  end
  local m
  m, err, code = archive.read_manifest(reader, resolved.path .. ":" .. manifest.FILE)
  if not m then
    reader:close()
    return nil, code and ("backup " .. resolved.name .. ": " .. err) or err, code
  end
  return setmetatable({ dest = resolved, manifest = m, kind = "tar", reader = reader,
    sequential = reader:compressed(), place = place }, Reader)
end


--- The piece holding the first `length` bytes of the entry `name`: in a
-- `.tar`, the range of the file (`start`: where the entry begins there);
-- in a compressed tar, the entry, which the C core reads from its spool.
function Reader:piece(name, length)
  local at = self.place
  local size, offset = self:entry(name)
  if self.sequential or not size then
    return { at.key, 0, length, entry = name, s3 = at.s3, from = self, name = name }
  end
  return { at.key, offset, length, start = offset, s3 = at.s3, from = self, name = name }
end


--- Where the entry `name` is in the archive (1: first); for archive order.
function Reader:position(name)
  local _, _, position = self:entry(name)
  return position or math.huge
end


--- Plain bytes of the entry `name`, or nil if the archive has none.
function Reader:stored_size(name)
  return (self:entry(name))
end


--- The bytes of piece p (one of this reader's).
function Reader:read_piece(p)
  if self.reader and not p.entry then
    return self.place.read(p[2], p[3])
  end
  return archive.Reader.read_entry_piece(self, p)
end


Reader.entry = archive.Reader.entry
Reader.read_extra = archive.Reader.read_extra
Reader.close = archive.Reader.close


--- Bytes the backup takes: the archive's size.
function Reader:stored_bytes()
  return self.place.size
end


-- Writing and deleting (chbackup.store.archive) -----------------------------

tar.check_new = archive.check_new
tar.remove = archive.remove


-- The piece of an entry the archive being written stores (for the chain
-- check of the manifest being made: only its existence and size).
local function writer_piece(w, name, length)
  local at = w.at or {}
  return { at.key or w.dest.path, 0, length, entry = name, s3 = at.s3, from = w, name = name }
end
tar.writer_piece = writer_piece


--- Refuses the options a tar archive does not take (as ClickHouse's
-- TarArchiveWriter and LibArchiveWriter refuse them). true or nil, err.
function tar.check_options(dest, opts)
  if opts.compression_method or opts.compression_level then
    return nil, "backup " .. dest.name .. ": compression_method and compression_level are not supported for "
      .. "tar archives (the name's suffix says the compression: .tar.gz, .tar.zst, .tar.xz, ...)"
  end
  if opts.password and opts.password ~= "" then
    return nil, "backup " .. dest.name .. ": a password is not supported for tar archives (zip takes one)"
  end
  return true
end


--- Starts writing a tar backup at dest.path. opts: op_id, fsync;
-- compression_method, compression_level and password are refused, as
-- ClickHouse's TarArchiveWriter and LibArchiveWriter refuse them. Returns
-- a writer (chbackup.store.archive's) or nil, err, code.
function tar.begin_write(dest, opts)
  local ok, err = tar.check_options(dest, opts)
  if ok then
    return archive.begin_write(dest, opts, function(path)
      return core.tar_writer(path, { fsync = opts.fsync })
    end, writer_piece)
  end
  return nil, err
end


return tar
