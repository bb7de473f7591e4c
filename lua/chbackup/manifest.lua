--- The `.backup` document: the one owner of its format (read and write).
--
-- One line of XML, as ClickHouse writes it:
--   <config><version>1</version><deduplicate_files>1</deduplicate_files>
--   <timestamp>…</timestamp><uuid>…</uuid>[<base_backup>…</base_backup>
--   <base_backup_uuid>…</base_backup_uuid>]<contents><file><name>…</name>
--   <size>…</size><checksum>…</checksum>[<data_file>…</data_file>]
--   [<use_base>true</use_base>][<base_size>…</base_size><base_checksum>…
--   </base_checksum>]</file>…</contents></config>
-- Read with expat (lxp), streaming; written file by file.
-- @module chbackup.manifest
local lxp = require("lxp")
local core = require("chbackup.core")

local manifest = {}

manifest.FILE = ".backup"
local CHUNK = 64 * 1024

-- Scalar fields of <config> and of a <file>; anything else is ignored
-- (what later ClickHouse versions may add), with its subtree.
local CONFIG_FIELDS = {
  version = true, deduplicate_files = true, timestamp = true, uuid = true,
  base_backup = true, base_backup_uuid = true, data_file_name_generator = true,
}
local FILE_FIELDS = {
  name = true, size = true, checksum = true, data_file = true, use_base = true,
  base_size = true, base_checksum = true, encrypted_by_disk = true,
}
local BOOLEANS = { ["true"] = true, ["1"] = true, ["false"] = false, ["0"] = false }
local SUPPORTED_VERSION = 1


-- A non-negative integer written in decimal digits, or nil.
local function count_of(s)
  if not s:match("^%d+$") then
    return nil
  end
  local n = math.tointeger(tonumber(s))
  return n and n >= 0 and n or nil
end


local function is_checksum(s)
  return #s == 32 and s:match("^%x+$") ~= nil
end


--- Whether name is a safe relative path inside a backup: not empty, not
-- absolute, no empty, "." or ".." component, no NUL or control character.
function manifest.safe_name(name)
  if type(name) ~= "string" or name == "" or name:find("[%z\1-\31\127]") then
    return false
  end
  -- (no string made per component: a manifest may list many files)
  if name:byte(1) == 47 or name:byte(-1) == 47 or name:find("//", 1, true) then
    return false   -- an empty component
  end
  if name:find("^%.%.?/") or name:find("^%.%.?$") or name:find("/%.%.?/") or name:find("/%.%.?$") then
    return false   -- "." or ".."
  end
  return true
end


-- A value as shown in an error: quoted, at most 64 bytes of it.
local function shown(s)
  if #s > 64 then
    s = s:sub(1, 64) .. "..."
  end
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end


-- Reads the document through lxp: returns the raw header (every value a
-- string) or nil, err; each <file> goes, raw, to on_file(raw, i) as it
-- ends (no list of every file). Never raises: lxp's close() raises on a
-- document that ended in the middle, so it runs under pcall.
local function read_xml(next_chunk, on_file)
  local m = {}
  local nfiles = 0
  local bad                  -- the first problem the callbacks found
  local stack = {}           -- open elements, the root first
  local ignored              -- depth of an unknown element being skipped
  local field                -- the scalar element being read
  local text, ntext = {}, 0  -- its text, in pieces (one buffer, reused)
  local file                 -- the <file> being read
  local have_contents = false
  local parser
  local function fail(msg)
    if not bad then
      bad = msg
      parser:stop()
    end
  end
  parser = lxp.new({
    StartElement = function(_, name)
      if bad then
        return
      end
      stack[#stack + 1] = name
      local depth, parent = #stack, stack[#stack - 1]
      if ignored then
        return
      elseif field then
        fail("<" .. parent .. "> holds an element <" .. name .. ">")
      elseif depth == 1 then
        if name ~= "config" then
          fail("its root element is <" .. name .. ">, not <config>")
        end
      elseif depth == 2 then
        if CONFIG_FIELDS[name] then
          if m[name] ~= nil then
            fail("<" .. name .. "> appears twice")
          end
          field, ntext = name, 0
        elseif name == "contents" then
          if have_contents then
            fail("<contents> appears twice")
          end
          have_contents = true
        else
          ignored = depth
        end
      elseif depth == 3 then
        if name ~= "file" then
          fail("<contents> holds an element <" .. name .. ">")
        end
        file = { name = nil, size = nil, checksum = nil }   -- (sized for these three)
      elseif FILE_FIELDS[name] then
        if file[name] ~= nil then
          fail((file.name and ("file " .. file.name) or ("file entry " .. (nfiles + 1)))
            .. " has two <" .. name .. ">")
        end
        field, ntext = name, 0
      else
        ignored = depth
      end
    end,
    CharacterData = function(_, s)
      if field and not bad then
        ntext = ntext + 1
        text[ntext] = s
      end
    end,
    EndElement = function(_, name)
      if bad then
        return
      end
      local depth = #stack
      stack[depth] = nil
      if ignored then
        if depth == ignored then
          ignored = nil
        end
      elseif field then
        local value = ntext == 1 and text[1] or table.concat(text, "", 1, ntext)
        if depth == 2 then
          m[name] = value
        else
          file[name] = value
        end
        field, ntext = nil, 0
      elseif depth == 3 then
        nfiles = nfiles + 1
        on_file(file, nfiles)
        file = nil
      end
    end,
  })
  local ok, res, err, line = true, true, nil, nil
  while ok and res and not bad do
    local chunk = next_chunk()
    if chunk then
      ok, res, err, line = pcall(parser.parse, parser, chunk)
    else
      ok, res, err, line = pcall(parser.parse, parser)
      break
    end
  end
  pcall(parser.close, parser)
  if bad then
    return nil, bad
  elseif not ok then
    return nil, tostring(res)
  elseif not res then
    return nil, tostring(err) .. (line and (" at line " .. tostring(line)) or "")
  end
  return m
end


local CHECKSUM_FIELDS = { "checksum", "base_checksum" }
local BOOLEAN_FIELDS = { "use_base", "encrypted_by_disk" }


-- Checks and converts the values of one file entry (i-th); returns the
-- entry or nil, err.
local function bad(name, msg)
  return nil, "file " .. name .. ": " .. msg
end


-- (converted in place: the raw table, holding only FILE_FIELDS, becomes
-- the entry; no second table and no closure per file)
local function check_file(raw, i)
  local name = raw.name
  if name == nil then
    return nil, "file entry " .. i .. " has no <name>"
  end
  if not manifest.safe_name(name) then
    return nil, "file entry " .. i .. " has a name that is not a safe relative path: " .. shown(name)
  end
  local e = raw
  local size = raw.size
  if size == nil then
    return bad(name, "no <size>")
  end
  e.size = count_of(size)
  if not e.size then
    return bad(name, "size " .. shown(size) .. " is not a non-negative integer")
  end
  for _, k in ipairs(CHECKSUM_FIELDS) do
    local v = raw[k]
    if v ~= nil then
      if not is_checksum(v) then
        return bad(name, k .. " " .. shown(v) .. " is not 32 hexadecimal digits")
      end
      e[k] = v:find("[A-F]") and v:lower() or v
    end
  end
  if e.size > 0 and not e.checksum then
    return bad(name, "no <checksum>")
  end
  for _, k in ipairs(BOOLEAN_FIELDS) do
    local v = raw[k]
    if v ~= nil then
      e[k] = BOOLEANS[v]
      if e[k] == nil then
        return bad(name, k .. " " .. shown(v) .. " is not true or false")
      end
    end
  end
  local base_size = raw.base_size
  if base_size ~= nil then
    e.base_size = count_of(base_size)
    if not e.base_size then
      return bad(name, "base_size " .. shown(base_size) .. " is not a non-negative integer")
    elseif e.base_size > e.size then
      return bad(name, "base_size " .. e.base_size .. " is larger than its size " .. e.size)
    elseif not e.use_base then
      return bad(name, "base_size without <use_base>true</use_base>")
    elseif e.base_size > 0 and e.base_size < e.size and not e.base_checksum then
      return bad(name, "base_size " .. e.base_size .. " without <base_checksum>")
    end
    if e.base_size == 0 then
      -- nothing from the base (as ClickHouse reads it): all stored here
      e.base_size, e.base_checksum, e.use_base = nil, nil, false
    end
  elseif e.base_checksum then
    return bad(name, "base_checksum without <base_size>")
  end
  if raw.data_file ~= nil and not manifest.safe_name(raw.data_file) then
    return bad(name, "data_file is not a safe relative path: " .. shown(raw.data_file))
  end
  return e
end


-- A weak cache of an index's entries: one Lua table per entry while
-- something holds it (the same table each time), none for the others.
local function entries_of(idx)
  local cache = setmetatable({}, { __mode = "v" })
  return function(i)
    local e = cache[i]
    if e == nil then
      e = idx:get(i)
      cache[i] = e
    end
    return e
  end
end


--- The files of a manifest held in a core.index (one C structure, not a
-- Lua table per file: issue 14), as manifest.parse gives them: sets
-- m.index, m.files (a list: m.files[i], #m.files, ipairs) and m.by_name
-- (by_name[name]), whose entries are made on demand. Returns m.
function manifest.indexed(m, idx)
  local entry = entries_of(idx)
  m.index = idx
  m.files = setmetatable({}, {
    __index = function(_, i)
      return math.type(i) == "integer" and entry(i) or nil
    end,
    __len = function()
      return #idx
    end,
    __newindex = function()
      error("the files of a parsed manifest are read-only", 2)
    end,
  })
  m.by_name = setmetatable({}, {
    __index = function(_, name)
      local i = type(name) == "string" and idx:find(name)
      return i and entry(i) or nil
    end,
    __newindex = function()
      error("the files of a parsed manifest are read-only", 2)
    end,
  })
  return m
end


--- Parses a manifest from a chunk source: next_chunk() returns the next
-- piece of text or nil at the end; `what` names it in errors. Returns
-- {version=, timestamp=, uuid=, base_backup=, base_backup_uuid=, files = {
-- {name=, size=, checksum=, data_file=, use_base=, base_size=,
-- base_checksum=}, … }, by_name = {}, index = <core.index> } or nil,
-- "backup manifest <what> is corrupt: …" naming the entry. The files are
-- checked and indexed as they are read (manifest.indexed). Untrusted
-- input: never raises.
function manifest.parse(next_chunk, what)
  local idx = core.index()
  local file_err         -- the first problem of a file entry (reported after the header's)
  local copies = {}      -- numbers of the entries with a data_file
  local raw, err = read_xml(next_chunk, function(r, i)
    if file_err then
      return
    end
    local e, ferr = check_file(r, i)
    if not e then
      file_err = ferr
      return
    end
    if e.data_file == e.name then
      e.data_file = nil
    end
    local n = idx:add(e.name, e.size, e.checksum, e.use_base, e.encrypted_by_disk, e.base_size,
      e.base_checksum, e.data_file)
    if not n then
      file_err = "file " .. e.name .. " is listed twice"
    elseif e.data_file then
      copies[#copies + 1] = n
    end
  end)
  local function corrupt(msg)
    return nil, "backup manifest " .. tostring(what) .. " is corrupt: " .. msg
  end
  if not raw then
    return corrupt(err)
  end
  if raw.version == nil then
    return corrupt("no <version>")
  end
  local m = {
    version = count_of(raw.version), timestamp = raw.timestamp, uuid = raw.uuid,
    base_backup = raw.base_backup, base_backup_uuid = raw.base_backup_uuid,
    data_file_name_generator = raw.data_file_name_generator,
  }
  if m.data_file_name_generator and m.data_file_name_generator ~= "checksum"
      and m.data_file_name_generator ~= "first_file_name" then
    return corrupt("data_file_name_generator " .. shown(m.data_file_name_generator) .. " is not known")
  end
  if m.version ~= SUPPORTED_VERSION then
    return corrupt("version " .. shown(raw.version) .. " is not supported (only " .. SUPPORTED_VERSION .. ")")
  end
  if m.base_backup_uuid and not m.base_backup then
    return corrupt("<base_backup_uuid> without <base_backup>")
  end
  if raw.deduplicate_files ~= nil then
    m.deduplicate_files = count_of(raw.deduplicate_files)
    if not m.deduplicate_files then
      return corrupt("deduplicate_files " .. shown(raw.deduplicate_files) .. " is not a non-negative integer")
    end
  end
  if file_err then
    return corrupt(file_err)
  end
  -- A copy (data_file) names the entry of this backup that stores the same
  -- bytes, itself not a copy; with data_file_name_generator = 'checksum'
  -- (ClickHouse's), a name derived from the checksum that no entry has.
  local checksum_names = m.data_file_name_generator == "checksum"
  for _, n in ipairs(copies) do
    local e = idx:get(n)
    local p = idx:find(e.data_file)
    if p or not checksum_names then
      local primary = p and idx:get(p)
      if not primary then
        return corrupt("file " .. e.name .. " refers to data_file " .. e.data_file .. ", which it does not list")
      elseif primary.size ~= e.size or primary.checksum ~= e.checksum then
        return corrupt("file " .. e.name .. " refers to data_file " .. e.data_file .. " of another size or checksum")
      elseif primary.data_file and primary.data_file ~= primary.name then
        return corrupt("file " .. e.name .. " refers to data_file " .. e.data_file
          .. ", which is itself a copy of " .. primary.data_file)
      end
    end
  end
  idx:compact()
  return manifest.indexed(m, idx)
end


--- Reads a manifest file (`<dir>/.backup`), streaming.
function manifest.read(path)
  local f, open_err = io.open(path, "rb")
  if not f then
    return nil, "cannot read backup manifest " .. path .. ": " .. tostring(open_err)
  end
  local m, err = manifest.parse(function() return f:read(CHUNK) end, path)
  f:close()
  return m, err
end


--- Parses a manifest held in a string (read from an archive).
function manifest.from_string(text, what)
  local done = false
  return manifest.parse(function()
    if done then
      return nil
    end
    done = true
    return text
  end, what)
end


-- Element text needs only &, < and > escaped; quotes stay as they are, as
-- ClickHouse writes them (`<base_backup>Disk('backups', 'a')</base_backup>`).
-- Line ends and tabs as character references: XML reads a raw CR as LF.
local XML_ESCAPES = {
  ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
  ["\t"] = "&#9;", ["\n"] = "&#10;", ["\r"] = "&#13;",
}
local function esc(s)
  s = tostring(s)
  if not s:find("[&<>\t\n\r]") then   -- (most names: no new string)
    return s
  end
  return (s:gsub("[&<>\t\n\r]", XML_ESCAPES))
end


--- Serializes m (the shape parse returns) through write(text), in pieces.
function manifest.serialize(m, write)
  local out = {
    "<config><version>", m.version or 1, "</version><deduplicate_files>",
    m.deduplicate_files or 1, "</deduplicate_files><timestamp>", esc(m.timestamp),
    "</timestamp><uuid>", esc(m.uuid), "</uuid>",
  }
  if m.data_file_name_generator then
    -- (ClickHouse writes it here, before base_backup)
    out[#out + 1] = "<data_file_name_generator>" .. esc(m.data_file_name_generator) .. "</data_file_name_generator>"
  end
  if m.base_backup then
    out[#out + 1] = "<base_backup>" .. esc(m.base_backup) .. "</base_backup><base_backup_uuid>"
      .. esc(m.base_backup_uuid) .. "</base_backup_uuid>"
  end
  out[#out + 1] = "<contents>"
  write(table.concat(out))
  -- Pieces gathered in one buffer, written every few hundred files: no
  -- string made per file (a manifest may list hundreds of thousands).
  local buf, n = {}, 0
  local function add(a, b, c)
    buf[n + 1], buf[n + 2], buf[n + 3] = a, b, c
    n = n + 3
  end
  -- m.name_order (a manifest being made, in a core.index): written sorted
  -- by name, as ClickHouse writes them, whatever order they were added in
  local files, n_files, entry = m.files, #m.files, nil
  if m.name_order and m.index then
    local idx = m.index
    local first = idx:prefix("")
    entry = function(k)
      return idx:get(idx:sorted(first + k - 1))
    end
  end
  for k = 1, n_files do
    local e = entry and entry(k) or files[k]
    add("<file><name>", esc(e.name), "</name><size>")
    add(e.size, "</size>", "")
    if e.size > 0 then
      add("<checksum>", e.checksum, "</checksum>")
    end
    -- As ClickHouse writes them: use_base for a file whose bytes (all, or
    -- the first base_size of them) are in the base backup.
    if e.use_base or e.base_size then
      add("<use_base>true</use_base>", "", "")
    end
    if e.base_size and e.base_size < e.size then
      add("<base_size>", e.base_size, "</base_size><base_checksum>")
      add(e.base_checksum, "</base_checksum>", "")
    end
    if e.data_file and e.data_file ~= e.name then
      add("<data_file>", esc(e.data_file), "</data_file>")
    end
    add("</file>", "", "")
    if n >= 6000 then
      write(table.concat(buf, "", 1, n))
      n = 0
    end
  end
  add("</contents></config>", "", "")
  write(table.concat(buf, "", 1, n))
end


--- Writes m to a file `path` and fsyncs it. Returns its size or nil, err.
-- Callers rename it into place (or add it to an archive).
function manifest.write_file(path, m)
  local f, err = io.open(path, "wb")
  if not f then
    return nil, "cannot write backup manifest " .. path .. ": " .. tostring(err)
  end
  manifest.serialize(m, function(text) f:write(text) end)
  local size = f:seek("end")
  local ok, werr = f:close()
  if not ok then
    os.remove(path)
    return nil, "cannot write backup manifest " .. path .. ": " .. tostring(werr)
  end
  local synced, serr = core.fsync(path)
  if not synced then
    os.remove(path)
    return nil, serr
  end
  return size
end


--- Writes m to `<dir>/.backup` atomically: a temporary file, fsync,
-- rename, fsync of the directory. Returns the manifest's size, or nil, err.
function manifest.write(dir, m)
  local final = dir .. "/" .. manifest.FILE
  local tmp = final .. ".tmp"
  local size, err = manifest.write_file(tmp, m)
  if not size then
    return nil, err
  end
  local renamed, rerr = os.rename(tmp, final)
  if not renamed then
    os.remove(tmp)
    return nil, "cannot write backup manifest " .. final .. ": " .. tostring(rerr)
  end
  core.fsync(dir)
  return size
end



local XML_UNESCAPES = { amp = "&", lt = "<", gt = ">", quot = '"', apos = "'" }
local HEADER_FIELDS = { "timestamp", "uuid", "base_backup", "base_backup_uuid" }


--- The header fields of a `.backup` (timestamp, uuid, base_backup,
-- base_backup_uuid) from its text, reading the fields before `<contents>`
-- only (listings of many backups do not parse every file list); the whole
-- text parsed strictly when the fields are not found that way. `what`
-- names the file in errors. Returns table or nil, err.
function manifest.header(text, what)
  local head = text:sub(1, 65536)
  local cut = head:find("<contents>", 1, true)
  if cut and head:find("^%s*<config>") then
    head = head:sub(1, cut)
    local h = {}
    for _, k in ipairs(HEADER_FIELDS) do
      local v = head:match("<" .. k .. ">(.-)</" .. k .. ">")
      h[k] = v and v:gsub("&(%a+);", XML_UNESCAPES) or nil
    end
    return h
  end
  local m, err = manifest.from_string(text, what)
  if not m then
    return nil, err
  end
  return { timestamp = m.timestamp, uuid = m.uuid, base_backup = m.base_backup,
    base_backup_uuid = m.base_backup_uuid }
end

return manifest
