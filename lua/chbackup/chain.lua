--- Backups as stored: a backup, its manifest, and the chain of bases an
-- incremental backup relies on.
--
-- A file of a backup is found by content: `use_base` means "the base has a
-- file of this size and checksum"; `base_size`/`base_checksum` mean "the
-- first base_size bytes are the base's file of that size and checksum, the
-- rest is stored here"; `data_file` names the stored copy inside the same
-- backup. `chain.pieces` turns an entry into the byte ranges that make it up,
-- across as many backups as the chain has.
-- @module chbackup.chain
local lfs = require("lfs")
local config = require("chbackup.config")
local core = require("chbackup.core")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")

local chain = {}

local MAX_DEPTH = 1000

--- The file that marks an encrypted directory backup (not in `.backup`).
chain.ENCRYPTION_FILE = ".chbackup-encryption"
-- scrypt cost of new encrypted backups: 2^15 * 8 * 128 bytes = 32 MiB.
chain.SCRYPT = { n = 32768, r = 8, p = 1 }
local CHECK_TEXT = "chbackup encryption check"


--- Parameters and key of a new encrypted directory backup: returns
-- key, json text of its ENCRYPTION_FILE; or nil, err.
function chain.new_encryption(password)
  local salt, err = core.random_hex(16)
  if not salt then
    return nil, err
  end
  local key
  key, err = core.derive_key(password, salt, chain.SCRYPT)
  if not key then
    return nil, err
  end
  local check
  check, err = core.encrypt(key, chain.ENCRYPTION_FILE, CHECK_TEXT)
  if not check then
    return nil, err
  end
  local text = require("cjson").encode({
    format = 1, cipher = "AES-256-GCM", kdf = "scrypt",
    n = chain.SCRYPT.n, r = chain.SCRYPT.r, p = chain.SCRYPT.p, salt = salt,
    check = (check:gsub(".", function(c) return string.format("%02x", c:byte()) end)),
  }) .. "\n"
  return key, text
end


-- The key of an encrypted directory backup, checked with its check block:
-- key | nil, err, code.
local function open_encryption(resolved, password)
  local path = resolved.path .. "/" .. chain.ENCRYPTION_FILE
  local f = io.open(path, "rb")
  local text = f and f:read("a")
  if f then
    f:close()
  end
  local ok, p = pcall(require("cjson").decode, text or "")
  if not ok or type(p) ~= "table" or p.format ~= 1 or p.cipher ~= "AES-256-GCM" or p.kdf ~= "scrypt"
      or type(p.salt) ~= "string" or not p.salt:match("^%x+$") or #p.salt % 2 ~= 0 or #p.salt > 128
      or type(p.check) ~= "string" or not p.check:match("^%x+$") or #p.check % 2 ~= 0 then
    return nil, "backup " .. resolved.name .. " is corrupt: cannot read " .. path, "CORRUPT"
  end
  -- scrypt's cost comes from the (untrusted) file: bounded by what a reader
  -- accepts to spend, 8 times what chbackup writes (chain.SCRYPT)
  local n, r, pp = math.tointeger(p.n), math.tointeger(p.r), math.tointeger(p.p)
  if not (n and r and pp) or n < 2 or r < 1 or pp < 1 or n > 2 ^ 20 or r > 64 or pp > 16
      or 128 * r * n > 8 * 128 * chain.SCRYPT.r * chain.SCRYPT.n then
    local function shown(x)
      return tostring(math.tointeger(x) or x)
    end
    return nil, string.format("backup %s is corrupt: %s asks for scrypt n=%s r=%s p=%s (integers, at most "
      .. "n=2^20, r=64, p=16 and 256 MiB)", resolved.name, path, shown(p.n), shown(p.r), shown(p.p)), "CORRUPT"
  end
  if not password then
    return nil, "backup " .. resolved.name .. " is encrypted: give SETTINGS password = '…'", "AUTH"
  end
  local key, err, code = core.derive_key(password, p.salt, { n = n, r = r, p = pp })
  if not key then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local check = p.check:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  if core.decrypt(key, chain.ENCRYPTION_FILE, check) ~= CHECK_TEXT then
    return nil, "wrong password for backup " .. resolved.name, "AUTH"
  end
  return key
end


--- Parses a backup name as ClickHouse prints it ("Disk('backups', 'a')").
function chain.parse_name(name)
  local reqs = sql.parse("RESTORE ALL FROM " .. name)
  if not reqs then
    return nil, "cannot read backup name '" .. tostring(name) .. "'"
  end
  return reqs[1].destination
end


local function content_key(size, checksum)
  return size .. ":" .. tostring(checksum)
end


-- Opens a zip backup: its reader, its entries and its manifest.
local function open_archive(resolved, password)
  if resolved.archive_kind ~= "zip" then
    return nil, "backup " .. resolved.name .. ": only .zip archives are supported"
  end
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
  return reader, entries, m
end


--- Opens a backup: dest is a destination table, or a resolved destination;
-- opts.password opens password-protected archives (the whole chain).
-- Returns {dest=, manifest=, by_content=} or nil, err naming the backup.
function chain.open(cfg, dest, opts)
  opts = opts or {}
  local resolved, err = dest
  if not dest.path then
    resolved, err = config.resolve(cfg, dest)
    if not resolved then
      return nil, err
    end
  end
  local m, reader, entries, code, enc_key, key_err
  if resolved.archive then
    reader, entries, m = open_archive(resolved, opts.password)
    if not reader then
      return nil, entries, m
    end
  else
    local file = resolved.path .. "/" .. manifest.FILE
    if not lfs.attributes(file) then
      return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
    end
    m, err, code = manifest.read(file)
    if not m then
      return nil, err, code
    end
    if lfs.attributes(resolved.path .. "/" .. chain.ENCRYPTION_FILE) then
      -- Without a password the manifest can still be read (inspect, diff);
      -- its files cannot: chain.pieces says why.
      enc_key, key_err, code = open_encryption(resolved, opts.password)
      if not enc_key and (opts.password or code ~= "AUTH") then
        return nil, key_err, code
      end
    end
  end
  -- by_content[content_key(size, checksum)]: the first file of that
  -- content. Indexed by checksum (a string the entry holds already), the
  -- size checked on lookup: no key string made per file (issue 14).
  local by_checksum, other_sizes = {}, {}
  for _, f in ipairs(m.files) do
    if f.size > 0 then
      local first = by_checksum[f.checksum]
      if not first then
        by_checksum[f.checksum] = f
      elseif first.size ~= f.size then   -- (a checksum of two sizes: never, in practice)
        local key = content_key(f.size, f.checksum)
        other_sizes[key] = other_sizes[key] or f
      end
    end
  end
  local by_content = setmetatable({}, { __index = function(_, key)
    local size, checksum = key:match("^(%d+):(.*)$")
    local f = by_checksum[checksum]
    if f and f.size == math.tointeger(tonumber(size)) then
      return f
    end
    return other_sizes[key]
  end })
  return {
    dest = resolved, manifest = m, by_content = by_content, cfg = cfg,
    reader = reader, entries = entries, password = opts.password,
    key = enc_key, key_err = key_err,
  }
end


--- The base of backup b (opened once), checked against the uuid b recorded.
function chain.base(b)
  if b.base ~= nil then
    return b.base or nil, b.base_err
  end
  local m = b.manifest
  if not m.base_backup then
    b.base, b.base_err = false, "backup " .. b.dest.name .. " has no base backup"
    return nil, b.base_err
  end
  local dest, err = chain.parse_name(m.base_backup)
  local base
  if dest then
    base, err = chain.open(b.cfg, dest, { password = b.password })
  end
  if not base then
    b.base, b.base_err = false, "base backup " .. m.base_backup .. " of " .. b.dest.name
      .. " cannot be used: " .. err
    return nil, b.base_err
  end
  if m.base_backup_uuid and base.manifest.uuid ~= m.base_backup_uuid then
    b.base, b.base_err = false, string.format(
      "base backup %s of %s was replaced: its uuid is %s, %s was made on %s",
      m.base_backup, b.dest.name, tostring(base.manifest.uuid), b.dest.name, m.base_backup_uuid)
    return nil, b.base_err
  end
  -- a chain that comes back to one of its own backups would never end
  local x = b
  while x do
    if x.dest.path == base.dest.path then
      b.base, b.base_err = false, "backup chain of " .. b.dest.name .. " loops: its base "
        .. m.base_backup .. " is already in the chain"
      return nil, b.base_err
    end
    x = x.child
  end
  base.child = b
  b.base = base
  return base
end


--- The backups of b's chain, b first, its root last. Returns list or nil, err.
function chain.list(b)
  local out = { b }
  while out[#out].manifest.base_backup do
    if #out > MAX_DEPTH then
      return nil, "backup chain of " .. b.dest.name .. " is longer than " .. MAX_DEPTH
    end
    local base, err = chain.base(out[#out])
    if not base then
      return nil, err
    end
    out[#out + 1] = base
  end
  return out
end


-- The entry of backup b holding the bytes of (size, checksum), in b or its base.
local function find_content(b, size, checksum, needed_by)
  local base, err = chain.base(b)
  if not base then
    return nil, nil, err
  end
  local e = base.by_content[content_key(size, checksum)]
  if not e then
    return nil, nil, string.format("base backup %s has no file of %d bytes with checksum %s (needed by %s)",
      base.dest.name, size, tostring(checksum), needed_by)
  end
  return base, e
end


--- The byte ranges ({path, offset, length}) that make up entry e of
-- backup b, resolved through the chain. Returns list or nil, err.
function chain.pieces(b, e, depth)
  depth = (depth or 0) + 1
  if depth > MAX_DEPTH then
    return nil, "backup chain of " .. b.dest.name .. " is too deep at " .. e.name
  end
  if e.size == 0 then
    return {}
  end
  -- use_base alone: the whole file is in the base; with base_size too
  -- (ClickHouse writes both): only the first base_size bytes are.
  local base_size = e.base_size or (e.use_base and e.size) or 0
  local base_checksum = e.base_checksum or e.checksum
  if base_size >= e.size then
    local base, be, err = find_content(b, e.size, e.checksum, b.dest.name .. ": " .. e.name)
    if not base then
      return nil, err
    end
    return chain.pieces(base, be, depth)
  end
  -- The name the bytes are stored under: the entry's own, another entry's
  -- (a duplicate stored once), or, in a backup made with ClickHouse's
  -- data_file_name_generator = 'checksum', a name derived from the
  -- checksum that no entry has (`abc/def…`).
  local name = e.name
  if e.data_file and e.data_file ~= e.name then
    local primary = b.manifest.by_name[e.data_file]
    if primary then
      return chain.pieces(b, primary, depth)
    end
    if b.manifest.data_file_name_generator ~= "checksum" then
      return nil, "backup " .. b.dest.name .. " is corrupt: " .. e.name .. " refers to "
        .. e.data_file .. ", which it does not list"
    end
    name = e.data_file
  end
  -- root: read confined below the backup's directory (no symbolic link in
  -- it is followed: a backup is untrusted input)
  local stored = { b.dest.path .. "/" .. name, 0, e.size - base_size, root = b.dest.path }
  if b.key_err then
    return nil, b.key_err
  elseif b.key then
    stored.key, stored.aad = b.key, name
  elseif b.dest.archive then
    stored = { b.dest.path, 0, e.size - base_size, entry = name, password = b.password }
  end
  if base_size > 0 then
    local base, be, err = find_content(b, base_size, base_checksum, b.dest.name .. ": " .. e.name)
    if not base then
      return nil, err
    end
    local prefix, perr = chain.pieces(base, be, depth)
    if not prefix then
      return nil, perr
    end
    prefix[#prefix + 1] = stored
    return prefix
  end
  return { stored }
end


-- Size of the bytes a piece can supply (the file, or the archive entry).
local function piece_source_size(p, backups_by_path)
  if p.entry then
    local b = backups_by_path[p[1]]
    local e = b and b.entries and b.entries[p.entry]
    return e and e.size
  end
  -- a symbolic link is no file of the backup (RESTORE refuses to follow it)
  local attr = lfs.symlinkattributes(p[1])
  local size = attr and attr.mode == "file" and attr.size or nil
  if size and p.key then
    return core.plain_size(size)
  end
  return size
end


--- Checks that every piece of every file of b exists with enough bytes:
-- the chain is intact. With opts.only_base, the files b stores itself are
-- not checked (an archive being written). Returns true or nil, err.
function chain.check(b, opts)
  opts = opts or {}
  local by_path, x = {}, b
  while x do
    by_path[x.dest.path] = x
    x = x.base or nil
  end
  for _, e in ipairs(b.manifest.files) do
    -- (part_in_base: a file of a part found unchanged since the base by its
    -- checksums.txt, whose own entry is checked: backup.lua)
    if (not opts.only_base or e.use_base or e.base_size) and not e.part_in_base then
      local pieces, err = chain.pieces(b, e)
      if not pieces then
        return nil, err
      end
      for _, p in ipairs(pieces) do
        local own = p[1] == b.dest.path or p[1]:sub(1, #b.dest.path + 1) == b.dest.path .. "/"
        if not (opts.only_base and own) then
          local size = piece_source_size(p, by_path)
          local where = p.entry and (p[1] .. ":" .. p.entry) or p[1]
          if not size then
            return nil, "backup " .. b.dest.name .. " is incomplete: " .. where .. " (for " .. e.name .. ") is missing"
          end
          if size < p[2] + p[3] then
            return nil, string.format("backup %s is incomplete: %s (for %s) has %d bytes, %d expected",
              b.dest.name, where, e.name, size, p[2] + p[3])
          end
        end
      end
    end
  end
  return true
end


-- The readers of archives in b's chain, by archive path.
local function reader_for(b, path)
  local x = b
  while x do
    if x.dest.path == path then
      return x.reader
    end
    x = x.base or nil
  end
  return nil
end


--- Reads a small file of a backup through the chain, verified.
function chain.read(b, e)
  local pieces, err = chain.pieces(b, e)
  if not pieces then
    return nil, err
  end
  local parts = {}
  for _, p in ipairs(pieces) do
    if p.entry then
      local reader = reader_for(b, p[1])
      local whole, rerr
      if reader then
        whole, rerr = reader:read(p.entry)
      end
      if not whole then
        return nil, "cannot read " .. p.entry .. " of " .. p[1] .. ": " .. tostring(rerr)
      end
      parts[#parts + 1] = whole:sub(p[2] + 1, p[2] + p[3])
    elseif p.key then
      -- a small file of an encrypted backup: decrypted (and verified) whole
      local sealed, rerr = core.read_file(p[1], p.root)
      if not sealed then
        return nil, "cannot read " .. p[1] .. ": " .. rerr
      end
      local whole, derr = core.decrypt(p.key, p.aad, sealed, p[1])
      if not whole then
        return nil, "cannot read " .. p[1] .. ": " .. derr
      end
      parts[#parts + 1] = whole:sub(p[2] + 1, p[2] + p[3])
    else
      local bytes, rerr = core.read_file(p[1], p.root, p[2], p[3])
      if not bytes then
        return nil, rerr
      end
      parts[#parts + 1] = bytes
    end
  end
  local text = table.concat(parts)
  if #text ~= e.size or (e.size > 0 and core.checksum(text) ~= e.checksum) then
    return nil, "backup file " .. e.name .. " of " .. b.dest.name .. " does not match its checksum in .backup"
  end
  return text
end


--- The manifest of a backup being made from its entries (sorted by
-- name), on `base` or none. An incremental is checked against its chain
-- first: it is recorded as created only once every file it relies on is
-- there (ClickHouse reports success on a broken base). opts: check (for
-- chain.check), key (opens an encrypted directory backup being written),
-- data_file_name_generator ("checksum": files stored under checksum names).
-- Returns the manifest or nil, err.
function chain.new_manifest(ctx, entries, base, opts)
  opts = opts or {}
  local m = {
    version = 1, deduplicate_files = 1, timestamp = os.date("%Y-%m-%d %H:%M:%S"), uuid = ctx.op_uuid,
    files = entries, by_name = {}, data_file_name_generator = opts.data_file_name_generator,
    base_backup = base and base.dest.name, base_backup_uuid = base and base.manifest.uuid,
  }
  if base then
    for _, e in ipairs(entries) do
      if not e.part_in_base then   -- (chain.check does not look them up)
        m.by_name[e.name] = e
      end
    end
    local ok, err = chain.check({ dest = ctx.dest, manifest = m, cfg = ctx.config, base = base, key = opts.key },
      opts.check)
    if not ok then
      return nil, err
    end
  end
  return m
end


chain.content_key = content_key

return chain
