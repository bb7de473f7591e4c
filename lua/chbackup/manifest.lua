--- The `.backup` document: the one owner of its format (read and write).
--
-- One line of XML, as ClickHouse writes it:
--   <config><version>1</version><deduplicate_files>1</deduplicate_files>
--   <timestamp>…</timestamp><uuid>…</uuid>[<base_backup>…</base_backup>
--   <base_backup_uuid>…</base_backup_uuid>]<contents><file><name>…</name>
--   <size>…</size><checksum>…</checksum>[<data_file>…</data_file>]
--   [<use_base>true</use_base>][<base_size>…</base_size><base_checksum>…
--   </base_checksum>]</file>…</contents></config>
-- Read streaming and written from a core.index, its <file> records in C
-- (csrc/engine/chb_manifest.c, expat); this module owns the format: the
-- header, what each field means, the order of the checks.
-- @module chbackup.manifest
local core = require("chbackup.core")

local manifest = {}

manifest.FILE = ".backup"
local CHUNK = 64 * 1024

local SUPPORTED_VERSION = 1


-- A non-negative integer written in decimal digits, or nil.
local function count_of(s)
  if not s:match("^%d+$") then
    return nil
  end
  local n = math.tointeger(tonumber(s))
  return n and n >= 0 and n or nil
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


-- The m.files lists manifest.indexed made, and their index: serialize
-- writes from the index only while m.files is still that list (a caller
-- may put a list of its own in its place).
local index_of_files = setmetatable({}, { __mode = "k" })


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
  index_of_files[m.files] = idx
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
  -- the XML and every <file> in C (chb_manifest.c: the same expat, these
  -- checks and messages), straight into idx: nothing per file in Lua
  local reader <close> = core.manifest_reader(idx)
  local ok, err
  repeat
    local chunk = next_chunk()
    ok, err = reader:feed(chunk)
  until not ok or chunk == nil
  local function corrupt(msg)
    return nil, "backup manifest " .. tostring(what) .. " is corrupt: " .. msg
  end
  if not ok then
    return corrupt(err)
  end
  local raw = reader:header()
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
  local file_err = reader:file_error()
  if file_err then
    return corrupt(file_err)
  end
  -- A copy (data_file) names the entry of this backup that stores the same
  -- bytes, itself not a copy; with data_file_name_generator = 'checksum'
  -- (ClickHouse's), a name derived from the checksum that no entry has.
  local copy_err = reader:check_copies(m.data_file_name_generator == "checksum")
  if copy_err then
    return corrupt(copy_err)
  end
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
  -- A manifest in a core.index: its <file> records written in C, a few
  -- dozen KiB at a time (m.name_order, a manifest being made: sorted by
  -- name, as ClickHouse writes them, whatever order they were added in)
  local idx = index_of_files[m.files]
  if idx then
    local pos = 1
    while pos do
      local text
      text, pos = idx:manifest_files(pos, m.name_order)
      write(text)
    end
    write("</contents></config>")
    return
  end
  local files = m.files
  for k = 1, #files do
    local e = files[k]
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
