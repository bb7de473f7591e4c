--- Looking into backups without restoring them: the chain an incremental
-- relies on, and what changed between two backups.
-- @module chbackup.inspect
local chain = require("chbackup.chain")
local names = require("chbackup.names")
local catalog = require("chbackup.catalog")

local inspect = {}


--- The chain of backup b, b first: list of {name=, uuid=, timestamp=,
-- base_backup=, num_files=, total_size=, stored_files=, stored_bytes=}.
function inspect.chain(b)
  local list, err = chain.list(b)
  if not list then
    return nil, err
  end
  local out = {}
  for _, x in ipairs(list) do
    local row = {
      name = x.dest.name, uuid = x.manifest.uuid, timestamp = x.manifest.timestamp,
      base_backup = x.manifest.base_backup, num_files = #x.manifest.files,
      total_size = 0, stored_files = 0, stored_bytes = 0,
    }
    for _, f in ipairs(x.manifest.files) do
      row.total_size = row.total_size + f.size
      local in_base = (f.use_base and not f.base_size) or f.data_file or f.size == 0
      if not in_base then
        row.stored_files = row.stored_files + 1
        row.stored_bytes = row.stored_bytes + f.size - (f.base_size or 0)
      end
    end
    out[#out + 1] = row
  end
  return out
end


-- Parts of every table of a backup: key "db\0table" -> {database=, table=,
-- parts = {[part] = {partition=, bytes=, digest=}}}. A Log-family table is
-- one "part" named "" (its files).
local function contents(b)
  local tables = {}
  for _, f in ipairs(b.manifest.files) do
    local edb, et, rest = f.name:match("^data/([^/]+)/([^/]+)/(.+)$")
    if edb then
      local key = edb .. "\0" .. et
      local t = tables[key]
      if not t then
        t = { database = names.unescape_file(edb), table = names.unescape_file(et), parts = {} }
        tables[key] = t
      end
      local part_name = rest:match("^([^/]+)/")
      local info = part_name and catalog.parse_part_name(part_name)
      local pname = info and part_name or ""
      local p = t.parts[pname]
      if not p then
        p = { partition = info and info.partition_id or "", bytes = 0, sums = {} }
        t.parts[pname] = p
      end
      p.bytes = p.bytes + f.size
      p.sums[#p.sums + 1] = rest .. "=" .. tostring(f.checksum)
    end
  end
  for _, t in pairs(tables) do
    for _, p in pairs(t.parts) do
      table.sort(p.sums)
      p.digest = table.concat(p.sums, ";")
      p.sums = nil
    end
  end
  return tables
end


--- What changed from backup a to backup b, per database, table, partition
-- and part: list of {database=, table=, partition=, part=, change=
-- "added"|"removed"|"changed", bytes=} sorted, and totals
-- {added=, removed=, changed=, added_bytes=, removed_bytes=}.
function inspect.diff(a, b)
  local ca, cb = contents(a), contents(b)
  local rows = {}
  local function add(t, pname, p, change)
    rows[#rows + 1] = {
      database = t.database, table = t.table, partition = p.partition, part = pname,
      change = change, bytes = p.bytes,
    }
  end
  for key, tb in pairs(cb) do
    local ta = ca[key]
    for pname, p in pairs(tb.parts) do
      local old = ta and ta.parts[pname]
      if not old then
        add(tb, pname, p, "added")
      elseif old.digest ~= p.digest then
        add(tb, pname, p, "changed")
      end
    end
  end
  for key, ta in pairs(ca) do
    local tb = cb[key]
    for pname, p in pairs(ta.parts) do
      if not (tb and tb.parts[pname]) then
        add(ta, pname, p, "removed")
      end
    end
  end
  table.sort(rows, function(x, y)
    if x.database ~= y.database then return x.database < y.database end
    if x.table ~= y.table then return x.table < y.table end
    if x.partition ~= y.partition then return x.partition < y.partition end
    return x.part < y.part
  end)
  local totals = { added = 0, removed = 0, changed = 0, added_bytes = 0, removed_bytes = 0, changed_bytes = 0 }
  for _, r in ipairs(rows) do
    totals[r.change] = totals[r.change] + 1
    totals[r.change .. "_bytes"] = totals[r.change .. "_bytes"] + r.bytes
  end
  return rows, totals
end


return inspect
