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
local core = require("chbackup.core")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")
local store = require("chbackup.store")

local chain = {}

local MAX_DEPTH = 1000

--- Parses a backup name as ClickHouse prints it ("Disk('backups', 'a')").
function chain.parse_name(name)
  local reqs = sql.parse("RESTORE ALL FROM " .. name)
  if not reqs then
    return nil, "cannot read backup name '" .. tostring(name) .. "'"
  end
  return reqs[1].destination
end


--- Opens a backup: dest is a destination table, or a resolved destination;
-- opts.password opens password-protected backups (the whole chain).
-- Returns {dest=, manifest=, by_content=<function(size, checksum) -> the
-- first entry of that content, or nil>, store=<chbackup.store reader>}
-- or nil, err naming the backup.
function chain.open(cfg, dest, opts)
  opts = opts or {}
  if opts.inherit and not dest.path then   -- S3 credentials for a base (chbackup.store.s3)
    dest = setmetatable({ inherit = opts.inherit, same_s3_credentials = opts.same_s3_credentials },
      { __index = dest })
  end
  local resolved, err = store.resolve(cfg, dest)
  if not resolved then
    return nil, err
  end
  local reader, code
  reader, err, code = store.open(resolved, { password = opts.password })
  if not reader then
    return nil, err, code
  end
  local m = reader.manifest
  -- by content: the first file of that size and checksum, looked up in the
  -- manifest's index (core.index; no Lua table per file: issue 14)
  local idx, files = m.index, m.files
  local function by_content(size, checksum)
    local i = idx:find_content(size, checksum)
    return i and files[i] or nil
  end
  return {
    dest = resolved, manifest = m, by_content = by_content, cfg = cfg, password = opts.password,
    same_s3_credentials = opts.same_s3_credentials,
    store = reader,
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
    base, err = chain.open(b.cfg, dest, { password = b.password, inherit = b.dest,
      same_s3_credentials = b.same_s3_credentials })
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
  local e = base.by_content(size, checksum)
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
  local stored, serr = b.store:piece(name, e.size - base_size)
  if not stored then
    return nil, serr
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


--- b's chain as the C core resolves it without Lua (core.plain_stop,
-- job:add_stored: csrc/engine/chb_stored.h): {{index=, root=}, ...}, b
-- first, then its bases; root: the directory of a backup whose files are
-- stored in the clear (false: none, its files go through chain.pieces).
-- nil when no backup of the chain has one, or when one reads a compressed
-- tar (its entries are read in archive order, chain.archive_order).
function chain.plain_levels(b)
  local bases = assert(chain.list(b))
  local levels, any = {}, false
  for k, x in ipairs(bases) do
    if x.store.sequential then
      return nil
    end
    local root = x.store.plain_root and x.store:plain_root() or false
    levels[k] = { index = x.manifest.index, root = root }
    any = any or root ~= false
  end
  return any and levels or nil
end


--- Checks that every piece of every file of b exists with enough bytes:
-- the chain is intact. With opts.only_base, the files b stores itself are
-- not checked (an archive being written). Returns true or nil, err.
function chain.check(b, opts)
  opts = opts or {}
  for _, e in ipairs(b.manifest.files) do
    if not opts.only_base or e.use_base or e.base_size then
      local pieces, err = chain.pieces(b, e)
      if not pieces then
        return nil, err
      end
      for _, p in ipairs(pieces) do
        if not (opts.only_base and p.from == b.store) then
          local size = p.from:stored_size(p.name)
          local where = p.entry and (p[1] .. ":" .. p.entry) or p[1]
          if not size then
            return nil, "backup " .. b.dest.name .. " is incomplete: " .. where .. " (for " .. e.name .. ") is missing"
          end
          local need = p[2] - (p.start or 0) + p[3]   -- (start: where the entry begins in p[1])
          if size < need then
            return nil, string.format("backup %s is incomplete: %s (for %s) has %d bytes, %d expected",
              b.dest.name, where, e.name, size, need)
          end
        end
      end
    end
  end
  return true
end


--- Puts items (each with pieces, pieces_of(item)) that read entries of a
-- compressed tar (a reader with `sequential`: it cannot seek, see
-- chbackup.store.tar) in archive order, stably (items in no such archive
-- keep their order, after them), and returns 1: read on one thread, the
-- archive is decompressed once. Returns nil (and changes nothing) when no
-- item reads one.
function chain.archive_order(items, pieces_of)
  local key, any = {}, false
  for i, item in ipairs(items) do
    local k = { 1, "", 0, i }
    for _, p in ipairs(pieces_of(item)) do
      if p.from and p.from.sequential then
        k = { 0, p[1], p.from:position(p.name), i }
        any = true
        break
      end
    end
    key[item] = k
  end
  if not any then
    return nil
  end
  table.sort(items, function(x, y)
    local a, b = key[x], key[y]
    for j = 1, 4 do
      if a[j] ~= b[j] then
        return a[j] < b[j]
      end
    end
    return false
  end)
  return 1
end


--- Reads a small file of a backup through the chain, verified.
function chain.read(b, e)
  local pieces, err = chain.pieces(b, e)
  if not pieces then
    return nil, err
  end
  local parts = {}
  for _, p in ipairs(pieces) do
    local bytes, rerr = p.from:read_piece(p)
    if not bytes then
      return nil, rerr
    end
    parts[#parts + 1] = bytes
  end
  local text = table.concat(parts)
  if #text ~= e.size or (e.size > 0 and core.checksum(text) ~= e.checksum) then
    return nil, "backup file " .. e.name .. " of " .. b.dest.name .. " does not match its checksum in .backup"
  end
  return text
end


--- Checks a batch of the entries of a backup being made on `base` against
-- the chain: an incremental is recorded as created only once every file it
-- relies on is there (ClickHouse reports success on a broken base); the
-- files it stores itself are checked by its writer while written. (A part
-- unchanged since the base comes here as its checksums.txt alone: that the
-- base holds it stands for the part's other files, listed in it.)
-- writer: the chbackup.store writer of the backup. Returns true or nil, err.
function chain.check_new(ctx, entries, base, writer)
  return chain.check({ dest = ctx.dest, manifest = { files = entries, by_name = {} }, cfg = ctx.config,
    base = base, store = writer }, { only_base = true })
end


--- chain.check_new for the checksums.txt of parts unchanged since `base`
-- (entries {name=, size=, checksum=, base_i=}: base_i, the number of the
-- base's entry of that name, size and checksum): one that the base stores
-- itself is checked as stored there, with no Lua value made for it (one a
-- part, at 10^5 parts); the others (in the base's base, or a copy) and any
-- found missing go through chain.check_new, which names what is missing.
function chain.check_base_parts(ctx, entries, base, writer)
  local idx, reader, rest = base.manifest.index, base.store, {}
  for _, e in ipairs(entries) do
    local size = not reader.key_err and idx:stored(e.base_i) and reader:stored_size(e.name)
    if not size or size < e.size then
      rest[#rest + 1] = e
    end
  end
  if #rest == 0 then
    return true
  end
  return chain.check_new(ctx, rest, base, writer)
end


--- The manifest of a backup being made: its files are `index` (the
-- core.index of file_plan.decisions), on `base` or none.
-- opts.data_file_name_generator: "checksum" (files stored under checksum
-- names). Returns the manifest (written sorted by name: name_order).
function chain.new_manifest(ctx, index, base, opts)
  return manifest.indexed({
    name_order = true,
    version = 1, deduplicate_files = 1, timestamp = os.date("%Y-%m-%d %H:%M:%S"), uuid = ctx.op_uuid,
    data_file_name_generator = opts and opts.data_file_name_generator,
    base_backup = base and base.dest.name, base_backup_uuid = base and base.manifest.uuid,
  }, index)
end



return chain
