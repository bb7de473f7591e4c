--- Log-family tables (Log, TinyLog, StripeLog) as ClickHouse backs them up
-- and restores them (src/Storages/StorageLog.cpp, StorageStripeLog.cpp:
-- backupData, restoreDataFromBackup, restoreDataImpl).
--
-- BACKUP: nothing for an empty table; otherwise every file sizes.json
-- lists, cut at the size it records, sizes.json itself, `columns.txt` (the
-- physical columns as NamesAndTypesList writes them) and, for Log and
-- StripeLog, `count.txt` (the rows: the last mark's for Log, the sum of the
-- index blocks' for StripeLog).
-- RESTORE into a table that already exists appends, as restoreDataImpl
-- does: each data file gets the backup's bytes after its committed ones,
-- Log's marks and StripeLog's index are appended with their offsets (and
-- Log's row counts) moved past the old data, and sizes.json, written last,
-- commits it all (ClickHouse truncates files to sizes.json when it opens
-- the table, so an interrupted append leaves the table as it was).
-- @module chbackup.logfamily
local lfs = require("lfs")
local core = require("chbackup.core")
local catalog_mod = require("chbackup.catalog")
local fsutil = require("chbackup.fsutil")
local names = require("chbackup.names")
local runner = require("chbackup.runner")

local logfamily = {}

local MARK_SIZE = 16                       -- StorageLog::Mark: rows, offset (UInt64 LE)
local MAX_BLOCK = 1024 * 1024              -- max_compress_block_size
local METHOD_NONE, METHOD_LZ4 = 0x02, 0x82 -- CompressionMethodByte

-- Files ClickHouse adds to a Log-family table in a backup: not the table's.
local GENERATED = { ["columns.txt"] = true, ["count.txt"] = true }
logfamily.GENERATED = GENERATED


-- Column list ------------------------------------------------------------------

-- Walks s outside quotes: visit(i, c) for each character not quoted;
-- visit returning true stops the walk.
local function walk_unquoted(s, visit)
  local i, n = 1, #s
  while i <= n do
    local c = s:sub(i, i)
    if c == "'" or c == "`" or c == '"' then
      i = i + 1
      while i <= n and s:sub(i, i) ~= c do
        i = i + (s:sub(i, i) == "\\" and 2 or 1)
      end
    elseif visit(i, c) then
      return
    end
    i = i + 1
  end
end


-- Splits s at top-level `sep` characters (outside quotes and brackets).
local function split_top(s, sep)
  local out, depth, start = {}, 0, 1
  walk_unquoted(s, function(i, c)
    if c == "(" or c == "[" then
      depth = depth + 1
    elseif c == ")" or c == "]" then
      depth = depth - 1
    elseif depth == 0 and c == sep then
      out[#out + 1] = s:sub(start, i - 1)
      start = i + 1
    end
  end)
  out[#out + 1] = s:sub(start)
  return out
end


-- The text inside the first top-level parentheses of body, or nil.
local function column_list(body)
  local depth, open, list = 0, nil, nil
  walk_unquoted(body, function(i, c)
    if c == "(" then
      depth = depth + 1
      open = open or i
    elseif c == ")" then
      depth = depth - 1
      if depth == 0 then
        list = body:sub(open + 1, i - 1)
        return true
      end
    end
  end)
  return list
end


local NOT_COLUMNS = { INDEX = true, CONSTRAINT = true, PROJECTION = true, PRIMARY = true }
local UNESCAPE = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", ["0"] = "\0" }

--- The physical columns of a table statement's body (ALIAS and EPHEMERAL
-- columns have no data), in order: list of {name=, quoted=, type=}, where
-- `quoted` is the name as ClickHouse back-quotes it and `type` the type as
-- the metadata spells it (ClickHouse writes metadata with canonical type
-- names, those of IDataType::getName). Returns list or nil, err.
function logfamily.columns(body)
  local list = column_list(body)
  if not list then
    return nil, "no column list"
  end
  local out = {}
  for _, el in ipairs(split_top(list, ",")) do
    el = el:gsub("^%s+", ""):gsub("%s+$", "")
    local word = el:match("^[%a_]+")
    if el ~= "" and not (word and NOT_COLUMNS[word:upper()] and el:match("^[%a_]+%s")) then
      local name, rest
      local q = el:sub(1, 1)
      if q == "`" or q == '"' then
        local j = 2
        while j <= #el and el:sub(j, j) ~= q do
          j = j + (el:sub(j, j) == "\\" and 2 or 1)
        end
        name = el:sub(2, j - 1):gsub("\\(.)", function(c) return UNESCAPE[c] or c end)
        rest = el:sub(j + 1)
      else
        name = el:match("^[%a_][%w_]*")
        if not name then
          return nil, "cannot read column " .. el
        end
        rest = el:sub(#name + 1)
      end
      rest = rest:gsub("^%s+", "")
      local type_text = split_top(rest, " ")[1]
      local after = rest:sub(#type_text + 1):match("^%s*([%a_]+)")
      after = after and after:upper()
      local kw = type_text:upper()
      if type_text == "" or kw == "DEFAULT" or kw == "MATERIALIZED" or kw == "ALIAS" or kw == "EPHEMERAL" then
        return nil, "column " .. names.quote_identifier(name) .. " has no type in the metadata"
      end
      if after ~= "ALIAS" and after ~= "EPHEMERAL" then
        out[#out + 1] = { name = name, type = type_text,
          quoted = "`" .. name:gsub("[\\`]", "\\%0"):gsub("[\n\t\r\b\f%z]", {
            ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ["\b"] = "\\b", ["\f"] = "\\f", ["\0"] = "\\0" })
            .. "`" }
      end
    end
  end
  if #out == 0 then
    return nil, "no columns"
  end
  return out
end


--- columns.txt as ClickHouse's BACKUP writes it for a Log-family table
-- (NamesAndTypesList::toString of the physical columns).
function logfamily.columns_txt(columns)
  local lines = { "columns format version: 1\n", #columns .. " columns:\n" }
  for _, c in ipairs(columns) do
    lines[#lines + 1] = c.quoted .. " " .. c.type .. "\n"
  end
  return table.concat(lines)
end


-- Streams of a Log table ---------------------------------------------------------

-- Splits "Name(args)" into name and its top-level arguments.
local function parse_type(s)
  s = s:gsub("^%s+", ""):gsub("%s+$", "")
  local name, inner = s:match("^([%w_]+)%((.*)%)$")
  if not name then
    return s, {}
  end
  local args = split_top(inner, ",")
  for i, a in ipairs(args) do
    args[i] = a:gsub("^%s+", ""):gsub("%s+$", "")
  end
  return name, args
end

local OPAQUE = { Variant = true, Dynamic = true, JSON = true, Object = true, Nested = true }

-- Appends the file names (escaped, without ".bin") of a type's streams, in
-- ISerialization::enumerateStreams order, named by getFileNameForStream.
local function type_streams(column, prefix, typ, level, out)
  local name, args = parse_type(typ)
  if OPAQUE[name] then
    return nil, "its column " .. names.quote_identifier(column) .. " is of type " .. typ
      .. ", whose files depend on the data"
  elseif name == "Nullable" then
    out[#out + 1] = prefix .. ".null"
    return type_streams(column, prefix, args[1], level, out)
  elseif name == "Array" then
    local sizes = prefix
    local dot = column:find(".", 1, true)
    if level == 0 and dot and prefix == names.escape_file(column) then
      sizes = names.escape_file(column:sub(1, dot - 1))   -- Nested: offsets shared by name
    end
    out[#out + 1] = sizes .. ".size" .. level
    return type_streams(column, prefix, args[1], level + 1, out)
  elseif name == "Map" then
    return type_streams(column, prefix, "Array(Tuple(keys " .. args[1] .. ", values " .. args[2] .. "))",
      level, out)
  elseif name == "LowCardinality" then
    out[#out + 1] = prefix .. ".dict"
    out[#out + 1] = prefix
    return true
  elseif name == "SimpleAggregateFunction" then
    return type_streams(column, prefix, args[#args], level, out)
  elseif name == "Tuple" then
    for i, a in ipairs(args) do
      local elem, etype = a:match("^([%a_][%w_]*)%s+(%S.*)$")
      if not elem or elem:match("^%u") and not etype:match("^%u") then
        elem, etype = tostring(i), a   -- an unnamed element: its type only
      end
      local ok, err = type_streams(column, prefix .. names.escape_file("." .. elem), etype, level, out)
      if not ok then
        return nil, err
      end
    end
    return true
  end
  out[#out + 1] = prefix
  return true
end


--- A Log table's data files in the order its marks file keeps them
-- (StorageLog::addDataFiles: each physical column's streams in turn, a
-- stream shared with an earlier column counted once). Returns list of
-- file names ("….bin") or nil, err.
function logfamily.log_data_files(columns)
  local out, seen = {}, {}
  for _, c in ipairs(columns) do
    local streams = {}
    local ok, err = type_streams(c.name, names.escape_file(c.name), c.type, 0, streams)
    if not ok then
      return nil, err
    end
    for _, s in ipairs(streams) do
      if not seen[s] then
        seen[s] = true
        out[#out + 1] = s .. ".bin"
      end
    end
  end
  return out
end


-- Binary helpers -------------------------------------------------------------------

local function u64(s, pos)
  return (string.unpack("<I8", s, pos))
end

local function read_range(path, offset, length)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, "cannot read " .. path .. ": " .. tostring(err)
  end
  f:seek("set", offset)
  local s = f:read(length) or ""
  f:close()
  if #s ~= length then
    return nil, "cannot read " .. path .. ": it is shorter than " .. (offset + length) .. " bytes"
  end
  return s
end


--- Offsets where compressed blocks start in the first `size` bytes of a
-- file (and `size` itself): a set, or nil, err. Headers only are read.
local function block_starts(path, size)
  if size == 0 then
    return { [0] = true }
  end
  local f, err = io.open(path, "rb")
  if not f then
    return nil, "cannot read " .. path .. ": " .. tostring(err)
  end
  local set, pos = { [0] = true }, 0
  while pos < size do
    f:seek("set", pos + 16)
    local h = f:read(9)
    if not h or #h < 9 then
      f:close()
      return nil, path .. " is not a compressed file"
    end
    local csize = string.unpack("<I4", h, 2)
    if csize < 9 then
      f:close()
      return nil, path .. " is not a compressed file"
    end
    pos = pos + 16 + csize
    set[pos] = true
  end
  f:close()
  if pos ~= size then
    return nil, path .. " does not end at a compressed block's end"
  end
  return set
end


-- LZ4 block decompression (the format ClickHouse's LZ4 codec writes).
local function lz4_decompress(src, dsize)
  local out, o, i, n = {}, 0, 1, #src
  -- a length of 15 goes on in the next bytes, each 255 meaning more
  local function length(v, pos)
    if v == 15 then
      repeat
        local b = src:byte(pos) or 0
        pos = pos + 1
        v = v + b
      until b ~= 255 or pos > n
    end
    return v, pos
  end
  while i <= n do
    local token = src:byte(i)
    i = i + 1
    local lit
    lit, i = length(token >> 4, i)
    if o + lit > dsize or i + lit - 1 > n then
      return nil
    end
    for k = 1, lit do
      out[o + k] = src:byte(i + k - 1)
    end
    o, i = o + lit, i + lit
    if i > n then
      break
    end
    if i + 1 > n then
      return nil
    end
    local off = src:byte(i) | (src:byte(i + 1) << 8)
    i = i + 2
    local ml
    ml, i = length(token & 15, i)
    ml = ml + 4
    if off == 0 or off > o or o + ml > dsize then
      return nil
    end
    for k = o + 1, o + ml do
      out[k] = out[k - off]
    end
    o = o + ml
  end
  if o ~= dsize then
    return nil
  end
  local parts = {}
  for k = 1, o, 4096 do
    parts[#parts + 1] = string.char(table.unpack(out, k, math.min(k + 4095, o)))
  end
  return table.concat(parts)
end


-- A compressed block's checksum as stored: CityHash128's low then high
-- 64 bits, little-endian (core's hex is high then low).
local function checksum_bytes(block)
  local hex = core.cityhash128(block)
  local bytes = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  return bytes:sub(9, 16):reverse() .. bytes:sub(1, 8):reverse()
end


--- The bytes of a ClickHouse compressed file (NONE or LZ4 blocks, each
-- checked against its CityHash128). Returns bytes, method or nil, err.
local function decompress(data, where)
  local out, pos, method = {}, 1, nil
  while pos <= #data do
    if pos + 24 > #data then
      return nil, where .. " is not a compressed file"
    end
    local m, csize, dsize = string.unpack("<BI4I4", data, pos + 16)
    local block = data:sub(pos + 16, pos + 15 + csize)
    if csize < 9 or #block ~= csize then
      return nil, where .. " is not a compressed file"
    end
    if checksum_bytes(block) ~= data:sub(pos, pos + 15) then
      return nil, where .. ": a compressed block's checksum does not match"
    end
    local payload = block:sub(10)
    local plain
    if m == METHOD_NONE then
      plain = payload
    elseif m == METHOD_LZ4 then
      plain = lz4_decompress(payload, dsize)
    else
      return nil, string.format("%s is compressed with method 0x%02x; chbackup reads NONE and LZ4", where, m)
    end
    if not plain or #plain ~= dsize then
      return nil, where .. ": a compressed block does not decompress"
    end
    out[#out + 1] = plain
    method = method or m
    pos = pos + 16 + csize
  end
  return table.concat(out), method
end


-- One compressed block as ClickHouse's CompressedWriteBuffer writes it:
-- checksum, method, sizes, payload (LZ4: one run of literals).
local function compress_block(plain, method)
  local payload = plain
  if method == METHOD_LZ4 then
    local len = #plain
    local token
    local ext = {}
    if len < 15 then
      token = len << 4
    else
      token = 0xF0
      local rest = len - 15
      while rest >= 255 do
        ext[#ext + 1] = "\255"
        rest = rest - 255
      end
      ext[#ext + 1] = string.char(rest)
    end
    payload = string.char(token) .. table.concat(ext) .. plain
  end
  local block = string.pack("<BI4I4", method, 9 + #payload, #plain) .. payload
  return checksum_bytes(block) .. block
end

local function compress(plain, method)
  local out = {}
  for k = 1, #plain, MAX_BLOCK do
    out[#out + 1] = compress_block(plain:sub(k, k + MAX_BLOCK - 1), method)
  end
  return table.concat(out)
end


-- StripeLog's index.mrk (IndexForNativeFormat): blocks of
-- {num_columns, num_rows, columns = {name, type, offset_in_compressed_file,
-- offset_in_decompressed_block}}. Returns rows, offsets (positions of every
-- offset_in_compressed_file) or nil.
local function parse_index(s)
  local function varuint(pos)
    local v, shift = 0, 0
    repeat
      local b = s:byte(pos)
      if not b or shift > 63 then
        return nil
      end
      v = v | ((b & 0x7f) << shift)
      shift, pos = shift + 7, pos + 1
    until b < 0x80
    return v, pos
  end
  local rows, offsets, pos = 0, {}, 1
  while pos <= #s do
    local ncols, nrows
    ncols, pos = varuint(pos)
    if not ncols then
      return nil
    end
    nrows, pos = varuint(pos)
    if not nrows then
      return nil
    end
    rows = rows + nrows
    for _ = 1, ncols do
      for _ = 1, 2 do   -- name, type
        local len
        len, pos = varuint(pos)
        if not len then
          return nil
        end
        pos = pos + len
      end
      if pos + 15 > #s then
        return nil
      end
      offsets[#offsets + 1] = pos
      pos = pos + 16
    end
  end
  return rows, offsets
end


-- BACKUP -----------------------------------------------------------------------------

local function data_name(engine, name)
  if engine == "StripeLog" then
    return name == "data.bin"
  end
  return name:match("%.bin$") ~= nil
end


--- The entries of a Log-family table in a backup, as ClickHouse's
-- backupData makes them. Returns data (list of {name=, path=, size=}),
-- generated (list of {name=, content=}) or nil, err.
function logfamily.backup_entries(t, prefix)
  local files, committed = catalog_mod.log_files(t)
  if not files then
    return nil, committed
  end
  if not committed then   -- never written: no data, as for an empty table
    return {}, {}
  end
  local data, by_name = {}, {}
  local empty = true
  for _, f in ipairs(files) do
    if committed[f.name] then
      by_name[f.name] = f
      data[#data + 1] = { name = prefix .. f.name, path = f.path, size = f.size }
      if data_name(t.engine, f.name) and f.size > 0 then
        empty = false
      end
    elseif f.name ~= "sizes.json" and not f.name:match("^tmp_") then
      return nil, "its directory holds " .. f.path .. ", which its sizes.json does not list"
    end
  end
  if empty then
    return {}, {}
  end
  local sizes = by_name["sizes.json"] or { name = "sizes.json", path = t.data_dir .. "/sizes.json" }
  local attr = lfs.attributes(sizes.path)
  data[#data + 1] = { name = prefix .. "sizes.json", path = sizes.path, size = attr and attr.size or 0 }
  local columns, cerr = logfamily.columns(t.body)
  if not columns then
    return nil, "cannot read its columns: " .. cerr
  end
  local generated = { { name = prefix .. "columns.txt", content = logfamily.columns_txt(columns) } }
  local rows, rerr
  if t.engine == "Log" then
    local n = 0
    for name in pairs(committed) do
      n = n + (name:match("%.bin$") and 1 or 0)
    end
    local size = committed["__marks.mrk"] or 0
    if n == 0 or size % (n * MARK_SIZE) ~= 0 then
      return nil, "the size of its __marks.mrk (" .. size .. " bytes) does not fit its " .. n .. " data files"
    end
    rows = 0
    if size > 0 then
      local last
      last, rerr = read_range(t.data_dir .. "/__marks.mrk", size - n * MARK_SIZE, 8)
      rows = last and u64(last, 1)
    end
  elseif t.engine == "StripeLog" then
    local bytes
    bytes, rerr = read_range(t.data_dir .. "/index.mrk", 0, committed["index.mrk"] or 0)
    if bytes then
      local plain, derr = decompress(bytes, t.data_dir .. "/index.mrk")
      rows = plain and parse_index(plain)
      rerr = (not plain and derr) or (not rows and t.data_dir .. "/index.mrk is not a StripeLog index") or nil
    end
  end
  if rerr then
    return nil, rerr
  end
  if rows then
    generated[#generated + 1] = { name = prefix .. "count.txt", content = tostring(rows) }
  end
  return data, generated
end


-- RESTORE ----------------------------------------------------------------------------

--- sizes.json as FileChecker::save writes it (names sorted, escaped).
function logfamily.sizes_json(sizes)
  local list = {}
  for name in pairs(sizes) do
    list[#list + 1] = name
  end
  table.sort(list)
  local items = {}
  for _, name in ipairs(list) do
    items[#items + 1] = string.format('"%s":{"size":"%d"}', names.escape_file(name), sizes[name])
  end
  return '{"clickhouse":{' .. table.concat(items, ",") .. "}}"
end


-- Checks that every mark of file j (0-based place in each group of n)
-- starts a compressed block of that file.
local function check_marks(marks, n, files, dir, where)
  for j, name in ipairs(files) do
    local starts, err = block_starts(dir .. "/" .. name, files.sizes[name])
    if not starts then
      return nil, err
    end
    for pos = (j - 1) * MARK_SIZE + 1, #marks, n * MARK_SIZE do
      if not starts[u64(marks, pos + 8)] then
        return nil, where .. ": the marks do not fall on " .. name .. "'s compressed blocks, so the order of"
          .. " its files is not the one chbackup works out from the columns"
      end
    end
  end
  return true
end


--- Plans a RESTORE into a Log-family table. t: restore's target
-- ({existing=, data_dir=, engine=, body=, qname=}); data: contents.table_data
-- of the backup's table; read(entry): a small file of the backup, verified;
-- add_file(dst, entry) copies a file of the backup (checked as it streams).
-- A new table gets the backup's files as they are (not columns.txt and
-- count.txt, which are no files of the table). An existing one is appended
-- to: the backup's files are copied beside its own and `appends` gets what
-- logfamily.finish does once they are there. Returns true or nil, err.
function logfamily.plan_restore(t, data, read, add_file, appends, backup_name)
  if not next(data.files) then
    return true   -- the backup holds no data for the table: nothing to add
  end
  if not t.existing then
    for _, x in ipairs(data.list) do
      if not GENERATED[x.rel] then
        local ok, err = add_file(t.data_dir .. "/" .. x.rel, x.file)
        if not ok then
          return nil, err
        end
      end
    end
    return true
  end
  local where = "table " .. t.qname .. " (" .. t.engine .. ")"
  local _, committed = catalog_mod.log_files(t.existing)
  local backup_sizes = {}
  for name, e in pairs(data.files) do
    backup_sizes[name] = e.size
  end
  -- the table's files: those of its sizes.json, else (never written) the backup's
  local sizes = {}
  for name, size in pairs(committed or backup_sizes) do
    if name ~= "sizes.json" and not GENERATED[name] then
      sizes[name] = committed and size or 0
    end
  end
  local a = { t = t, where = where, dir = t.data_dir, sizes = sizes, files = {}, tmp = {} }
  local marks_name = t.engine == "Log" and "__marks.mrk" or t.engine == "StripeLog" and "index.mrk" or nil
  local list = {}
  for name in pairs(sizes) do
    if name ~= marks_name then
      list[#list + 1] = name
    end
  end
  table.sort(list)
  for _, name in ipairs(list) do
    local e = data.files[name]
    if not e then
      return nil, "cannot restore " .. where .. ": file data/…/" .. name .. " in backup " .. backup_name
        .. " is required to restore the table"
    end
    a.files[#a.files + 1] = name
    a.tmp[name] = a.dir .. "/tmp_restore_" .. name
    local ok, err = add_file(a.tmp[name], e)
    if not ok then
      return nil, err
    end
  end
  if marks_name then
    local e = data.files[marks_name]
    if not e then
      return nil, "cannot restore " .. where .. ": file data/…/" .. marks_name .. " in backup " .. backup_name
        .. " is required to restore the table"
    end
    local bytes, err = read(e)
    if not bytes then
      return nil, err
    end
    local old = read_range(a.dir .. "/" .. marks_name, 0, sizes[marks_name] or 0)
    if not old then
      return nil, "cannot restore " .. where .. ": cannot read its " .. marks_name
    end
    a.marks_name, a.old_marks = marks_name, old
    if marks_name == "__marks.mrk" then
      local n = #a.files
      if #bytes % (n * MARK_SIZE) ~= 0 or #old % (n * MARK_SIZE) ~= 0 then
        return nil, "cannot restore " .. where .. ": the size of a marks file is inconsistent with its "
          .. n .. " data files"
      end
      a.new_marks = bytes
      if #old > 0 then
        -- old rows and sizes move the backup's marks: the order of the
        -- files in the marks must be known (from the columns' types)
        local columns, cerr = logfamily.columns(t.body)
        local order = columns and logfamily.log_data_files(columns)
        if not order then
          return nil, "cannot append to " .. where .. " offline: " .. tostring(cerr or select(2,
            logfamily.log_data_files(columns)))
        end
        local set = {}
        for _, name in ipairs(order) do
          set[name] = true
        end
        for _, name in ipairs(a.files) do
          if not set[name] then
            return nil, "cannot append to " .. where .. " offline: its file " .. name
              .. " is not one chbackup works out from its columns"
          end
        end
        if #order ~= n then
          return nil, "cannot append to " .. where .. " offline: its columns have " .. #order
            .. " files, its sizes.json lists " .. n
        end
        order.sizes = sizes
        local ok, verr = check_marks(old, n, order, a.dir, where)
        if not ok then
          return nil, "cannot append to " .. where .. " offline: " .. verr
        end
        a.order = order
      end
    else
      local plain, derr = decompress(bytes, "backup " .. backup_name .. ": " .. e.name)
      if not plain then
        return nil, derr
      end
      local rows, offsets = parse_index(plain)
      if not rows then
        return nil, "backup " .. backup_name .. ": " .. e.name .. " is not a StripeLog index"
      end
      local method = METHOD_LZ4
      if #old > 0 then
        local _, m = decompress(old, a.dir .. "/index.mrk")
        method = m or METHOD_LZ4
      end
      local shift = sizes["data.bin"] or 0
      local parts, last = {}, 1
      for _, pos in ipairs(offsets) do
        parts[#parts + 1] = plain:sub(last, pos - 1)
        parts[#parts + 1] = string.pack("<I8", u64(plain, pos) + shift)
        last = pos + 8
      end
      parts[#parts + 1] = plain:sub(last)
      a.new_index = compress(table.concat(parts), method)
    end
  end
  appends[#appends + 1] = a
  return true
end


--- Builds one file: the first `old` bytes of `final` then all of `tmp`,
-- into `out`, with a C job. Returns true or nil, err.
local function join_files(jobs, final, old, tmp, out)
  local attr = lfs.attributes(tmp)
  local size = attr and attr.size or 0
  local pieces = {}
  if old == 0 then
    local ok, err = os.rename(tmp, out)
    return ok, ok or "cannot write " .. out .. ": " .. tostring(err)
  end
  pieces[#pieces + 1] = { final, 0, old }
  if size > 0 then
    pieces[#pieces + 1] = { tmp, 0, size }
  end
  jobs[#jobs + 1] = { pieces, out, old + size }
  return true
end


--- Every temporary file plan_restore and finish may write beside the
-- tables' own (each `tmp_restore_*`, to be noted in the RESTORE's lock).
function logfamily.temp_files(appends)
  local out = {}
  for _, a in ipairs(appends) do
    for _, name in ipairs(a.files) do
      out[#out + 1] = a.tmp[name]
      out[#out + 1] = a.tmp[name] .. ".new"
    end
    if a.marks_name then
      out[#out + 1] = a.dir .. "/tmp_restore_" .. a.marks_name
    end
    out[#out + 1] = a.dir .. "/tmp_restore_sizes.json"
  end
  return out
end


--- Removes what plan_restore and finish left beside the tables' files.
function logfamily.discard(appends)
  for _, path in ipairs(logfamily.temp_files(appends)) do
    os.remove(path)
    os.remove(path .. ".tmp")
  end
end


--- Appends, once the backup's files are beside the tables' own: each data
-- file is rebuilt as its committed bytes and the backup's (a new file,
-- then renamed over), the marks or index follow, sizes.json last. opts:
-- {threads=, fsync=}. Returns true or nil, err (nothing renamed then).
function logfamily.finish(appends, opts)
  if #appends == 0 then
    return true
  end
  local jobs = {}
  local new_sizes = {}
  for _, a in ipairs(appends) do
    local sizes = {}
    for name, size in pairs(a.sizes) do
      sizes[name] = size
    end
    for _, name in ipairs(a.files) do
      local attr = lfs.attributes(a.tmp[name])
      sizes[name] = (a.sizes[name] or 0) + (attr and attr.size or 0)
    end
    if a.new_marks then
      local n, marks = #a.files, a.new_marks
      if a.order then
        -- the backup's marks against its files, now beside the table's
        local tmp_order = { sizes = {} }
        for j, name in ipairs(a.order) do
          tmp_order[j] = "tmp_restore_" .. name
          tmp_order.sizes[tmp_order[j]] = sizes[name] - (a.sizes[name] or 0)
        end
        local ok, err = check_marks(marks, n, tmp_order, a.dir, "backup's " .. a.where)
        if not ok then
          return nil, "cannot append to " .. a.where .. " offline: " .. err
        end
        local old_rows, parts = {}, {}
        local last = #a.old_marks - n * MARK_SIZE
        for j = 1, n do
          old_rows[j] = u64(a.old_marks, last + (j - 1) * MARK_SIZE + 1)
        end
        for pos = 1, #marks, MARK_SIZE do
          local j = ((pos - 1) // MARK_SIZE) % n + 1
          local name = a.order[j]
          parts[#parts + 1] = string.pack("<I8I8", u64(marks, pos) + old_rows[j],
            u64(marks, pos + 8) + (a.sizes[name] or 0))
        end
        marks = table.concat(parts)
      end
      a.marks_bytes = a.old_marks .. marks
    elseif a.new_index then
      a.marks_bytes = a.old_marks .. a.new_index
    end
    for _, name in ipairs(a.files) do
      local ok, err = join_files(jobs, a.dir .. "/" .. name, a.sizes[name] or 0, a.tmp[name],
        a.tmp[name] .. ".new")
      if not ok then
        return nil, err
      end
    end
    if a.marks_bytes then
      sizes[a.marks_name] = #a.marks_bytes
      local ok, err = fsutil.write_file(a.dir .. "/tmp_restore_" .. a.marks_name, a.marks_bytes)
      if not ok then
        return nil, err
      end
    end
    new_sizes[a] = sizes
  end
  if #jobs > 0 then
    local job = core.job({ threads = opts.threads, fsync = opts.fsync })
    for _, j in ipairs(jobs) do
      job:add(j[1], j[2], j[3])
    end
    local ok, err, code = runner.run(job, nil, opts.cancelled)
    job:close()
    if not ok then
      return nil, "cannot append to a Log-family table: " .. tostring(err), code
    end
  end
  -- into place: data files, marks or index, then sizes.json (the commit)
  for _, a in ipairs(appends) do
    for _, name in ipairs(a.files) do
      local ok, err = os.rename(a.tmp[name] .. ".new", a.dir .. "/" .. name)
      if not ok then
        return nil, "cannot append to " .. a.where .. ": " .. tostring(err)
      end
      os.remove(a.tmp[name])
    end
    if a.marks_bytes then
      local ok, err = os.rename(a.dir .. "/tmp_restore_" .. a.marks_name, a.dir .. "/" .. a.marks_name)
      if not ok then
        return nil, "cannot append to " .. a.where .. ": " .. tostring(err)
      end
    end
    -- written beside, then renamed: a kill leaves the old sizes.json whole
    local tmp = a.dir .. "/tmp_restore_sizes.json"
    local ok, err = fsutil.write_file(tmp, logfamily.sizes_json(new_sizes[a]))
    if ok then
      ok, err = os.rename(tmp, a.dir .. "/sizes.json")
    end
    if not ok then
      return nil, "cannot append to " .. a.where .. ": " .. tostring(err)
    end
  end
  return true
end


return logfamily
