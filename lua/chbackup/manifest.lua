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

local NUMERIC = { size = true, base_size = true, version = true, deduplicate_files = true }


--- Parses a manifest from a chunk source: next_chunk() returns the next
-- piece of text or nil at the end; `what` names it in errors. Returns
-- {version=, timestamp=, uuid=, base_backup=, base_backup_uuid=, files = {
-- {name=, size=, checksum=, data_file=, use_base=, base_size=,
-- base_checksum=}, … }, by_name = {} } or nil, err.
function manifest.parse(next_chunk, what)
  local m = { files = {}, by_name = {} }
  -- (one text buffer, reused: no table per element of a manifest that may
  -- list hundreds of thousands of files)
  local stack, text, ntext, file = {}, {}, 0, nil
  local parser = lxp.new({
    StartElement = function(_, name)
      stack[#stack + 1] = name
      ntext = 0
      if name == "file" and stack[#stack - 1] == "contents" then
        file = { name = nil, size = nil, checksum = nil }   -- (sized for these three)
      end
    end,
    CharacterData = function(_, s)
      ntext = ntext + 1
      text[ntext] = s
    end,
    EndElement = function(_, name)
      local value = ntext == 1 and text[1] or table.concat(text, "", 1, ntext)
      ntext = 0
      stack[#stack] = nil
      local parent = stack[#stack]
      if name == "file" and file then
        m.files[#m.files + 1] = file
        file = nil
      elseif file and parent == "file" then
        if NUMERIC[name] then
          file[name] = math.tointeger(tonumber(value))
        elseif name == "use_base" or name == "encrypted_by_disk" then
          file[name] = value == "true" or value == "1"
        else
          file[name] = value
        end
      elseif parent == "config" and name ~= "contents" then
        m[name] = NUMERIC[name] and math.tointeger(tonumber(value)) or value
      end
    end,
  })
  while true do
    local chunk = next_chunk()
    if not chunk then
      break
    end
    local ok, err, line = parser:parse(chunk)
    if not ok then
      parser:close()
      return nil, string.format("backup manifest %s is corrupt: %s at line %s",
        what, tostring(err), tostring(line))
    end
  end
  local ok, err = parser:parse()
  parser:close()
  if not ok then
    return nil, "backup manifest " .. what .. " is corrupt: " .. tostring(err)
  end
  if m.version == nil then
    return nil, "backup manifest " .. what .. " is corrupt: no <version>"
  end
  for i, entry in ipairs(m.files) do
    if not entry.name or not entry.size then
      return nil, string.format("backup manifest %s is corrupt: file entry %d has no name or size", what, i)
    end
    if entry.size > 0 and not entry.checksum then
      return nil, "backup manifest " .. what .. " is corrupt: no checksum for " .. entry.name
    end
    m.by_name[entry.name] = entry
  end
  return m
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


-- Element text needs only these; quotes stay as they are, as ClickHouse
-- writes them (`<base_backup>Disk('backups', 'a')</base_backup>`).
local XML_ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;" }
local function esc(s)
  s = tostring(s)
  if not s:find("[&<>]") then   -- (most names: no new string)
    return s
  end
  return (s:gsub("[&<>]", XML_ESCAPES))
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
  for _, e in ipairs(m.files) do
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


return manifest
