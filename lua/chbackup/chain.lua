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
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")

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


local function content_key(size, checksum)
  return size .. ":" .. tostring(checksum)
end


--- Opens a backup: dest is a destination table, or a resolved destination.
-- Returns {dest=, manifest=, by_content=} or nil, err naming the backup.
function chain.open(cfg, dest)
  local resolved, err = dest
  if not dest.path then
    resolved, err = config.resolve(cfg, dest)
    if not resolved then
      return nil, err
    end
  end
  if resolved.archive then
    return nil, "backup " .. resolved.name .. ": archive backups (.zip) are not supported yet"
  end
  local file = resolved.path .. "/" .. manifest.FILE
  if not lfs.attributes(file) then
    return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " in " .. resolved.path
  end
  local m
  m, err = manifest.read(file)
  if not m then
    return nil, err
  end
  local by_content = {}
  for _, f in ipairs(m.files) do
    if f.size > 0 then
      local key = content_key(f.size, f.checksum)
      by_content[key] = by_content[key] or f
    end
  end
  return { dest = resolved, manifest = m, by_content = by_content, cfg = cfg }
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
    base, err = chain.open(b.cfg, dest)
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
  if e.data_file and e.data_file ~= e.name then
    local primary = b.manifest.by_name[e.data_file]
    if not primary then
      return nil, "backup " .. b.dest.name .. " is corrupt: " .. e.name .. " refers to "
        .. e.data_file .. ", which it does not list"
    end
    return chain.pieces(b, primary, depth)
  end
  local stored = b.dest.path .. "/" .. e.name
  if base_size > 0 then
    local base, be, err = find_content(b, base_size, base_checksum, b.dest.name .. ": " .. e.name)
    if not base then
      return nil, err
    end
    local prefix, perr = chain.pieces(base, be, depth)
    if not prefix then
      return nil, perr
    end
    prefix[#prefix + 1] = { stored, 0, e.size - base_size }
    return prefix
  end
  return { { stored, 0, e.size } }
end


--- Checks that every piece of every file of b exists with enough bytes:
-- the chain is intact. Returns true or nil, err naming the first problem.
function chain.check(b)
  for _, e in ipairs(b.manifest.files) do
    local pieces, err = chain.pieces(b, e)
    if not pieces then
      return nil, err
    end
    for _, p in ipairs(pieces) do
      local size = lfs.attributes(p[1], "size")
      if not size then
        return nil, "backup " .. b.dest.name .. " is incomplete: " .. p[1] .. " (for " .. e.name .. ") is missing"
      end
      if size < p[2] + p[3] then
        return nil, string.format("backup %s is incomplete: %s (for %s) has %d bytes, %d expected",
          b.dest.name, p[1], e.name, size, p[2] + p[3])
      end
    end
  end
  return true
end


--- Reads a small file of a backup through the chain, verified.
function chain.read(b, e)
  local pieces, err = chain.pieces(b, e)
  if not pieces then
    return nil, err
  end
  local parts = {}
  for _, p in ipairs(pieces) do
    local f, oerr = io.open(p[1], "rb")
    if not f then
      return nil, "cannot read " .. p[1] .. ": " .. tostring(oerr)
    end
    f:seek("set", p[2])
    parts[#parts + 1] = f:read(p[3]) or ""
    f:close()
  end
  local text = table.concat(parts)
  local core = require("chbackup.core")
  if #text ~= e.size or (e.size > 0 and core.checksum(text) ~= e.checksum) then
    return nil, "backup file " .. e.name .. " of " .. b.dest.name .. " does not match its checksum in .backup"
  end
  return text
end


chain.content_key = content_key

return chain
