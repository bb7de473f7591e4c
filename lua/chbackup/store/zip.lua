--- Zip backups (`Disk('backups', '1.zip')`): ClickHouse's tree inside one
-- archive, `.backup` included, optionally WinZip-AES encrypted (SETTINGS
-- password). The C core owns libzip (csrc/engine/chb_zip*); this module
-- says what goes in and reads entries back as job pieces.
--
-- Writing and deleting are chbackup.store.archive's (shared with tar): a
-- zip that exists is whole.
-- @module chbackup.store.zip
local lfs = require("lfs")
local archive = require("chbackup.store.archive")
local core = require("chbackup.core")
local manifest = require("chbackup.manifest")

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
  -- Entries are looked up in the C reader (reader:entry), not copied into
  -- a Lua table: a backup of millions of files costs no memory per file here.
  local _, encrypted, method = reader:entry(manifest.FILE)
  if encrypted == nil then
    reader:close()
    return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
  end
  local m
  m, err, code = archive.read_manifest(reader, resolved.path .. ":" .. manifest.FILE)
  if not m then
    reader:close()
    if code == "AUTH" then
      return nil, "backup " .. resolved.name .. " is password-protected: "
        .. (password and "wrong password" or "give SETTINGS password = '…'") .. " (" .. err .. ")", code
    end
    return nil, code and ("backup " .. resolved.name .. ": " .. err) or err, code
  end
  return setmetatable({ dest = resolved, manifest = m, kind = "zip", reader = reader,
    password = password, encrypted = encrypted == true,
    method = type(method) == "string" and method or nil }, Reader)
end


--- The piece holding the first `length` bytes of the entry `name` (a C
-- job piece: the C core decrypts, inflates and verifies it while reading).
function Reader:piece(name, length)
  return { self.dest.path, 0, length, entry = name, password = self.password, from = self, name = name }
end


--- Plain bytes of the entry `name`, or nil if the archive has none.
function Reader:stored_size(name)
  return (self:entry(name))
end


Reader.read_piece = archive.Reader.read_entry_piece
Reader.entry = archive.Reader.entry
Reader.read_extra = archive.Reader.read_extra
Reader.stored_bytes = archive.Reader.stored_bytes
Reader.close = archive.Reader.close


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


-- Writing and deleting (chbackup.store.archive) -----------------------------

zip.check_new = archive.check_new
zip.remove = archive.remove


-- The piece of an entry the archive being written stores (for the chain
-- check of the manifest being made; its own entries are verified while
-- written).
local function writer_piece(w, name, length)
  return { w.dest.path, 0, length, entry = name, from = w, name = name }
end


--- Starts writing a zip backup at dest.path. opts: op_id, threads, fsync,
-- password, compression_method, compression_level. Returns a writer
-- (chbackup.store.archive's) or nil, err, code.
function zip.begin_write(dest, opts)
  return archive.begin_write(dest, opts, function(path)
    return core.zip_writer(path, {
      method = opts.compression_method, level = opts.compression_level,
      password = opts.password, threads = opts.threads, fsync = opts.fsync,
    })
  end, writer_piece)
end


return zip
