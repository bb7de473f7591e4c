--- @module chbackup.config
-- Disks and backup destinations, the way a ClickHouse server sees them.
--
-- `config.load(path)` reads a ClickHouse XML configuration (`config.xml`)
-- and merges the files of `config.d/` and `conf.d/` beside it the way
-- ClickHouse's ConfigProcessor does. `config.from_table(t)` builds the same
-- shape from a Lua table. `config.resolve(cfg, dest)` checks a backup
-- destination such as `Disk('backups', '1.zip')` or `File('/backups/x')`
-- against `backups.allowed_disk` / `backups.allowed_path` and returns the
-- absolute location it names.
--
-- Every function returns `nil, message` for bad input; nothing here raises
-- for bad input.
--
-- A configuration (cfg) is:
--   {
--     disks = { [name] = { name =, type =, path = "/abs/dir/", source = } },
--     policies = { [name] = { name =, volumes = { { name =, disks = { "d1", … } }, … },
--                             source = } },   -- <storage_configuration><policies>
--     allowed_disks = { "backups", ... },  -- every <allowed_disk>, in order
--     allowed_paths = { "/backups/", ... }, -- every <allowed_path>, in order
--     data_path = "/var/lib/clickhouse/",  -- <path>: the `default` disk
--     source = "<main file>" | "lua table",
--     backups_source = "<file that last set <backups>>",
--     files = { "<main file>", "<merged file>", ... },
--     ignored = { "<file ClickHouse would merge but we cannot read>", ... },
--   }

local lxp = require("lxp")
local lfs = require("lfs")

local config = {}

config.default_path = "/etc/clickhouse-server/config.xml"

local DEFAULT_DATA_PATH = "/var/lib/clickhouse/"
local MAX_SYMLINKS = 40

-- ClickHouse's registered archive extensions
-- (IO/Archives/hasRegisteredArchiveFileExtension.cpp, ArchiveUtils.cpp);
-- matched with ends_with, so case-sensitively.
local ARCHIVE_EXTENSIONS = {
  { ".zip", "zip" },
  { ".zipx", "zip" },
  { ".tar", "tar" },
  { ".tar.gz", "tar" },
  { ".tgz", "tar" },
  { ".tar.bz2", "tar" },
  { ".tar.lzma", "tar" },
  { ".tar.zst", "tar" },
  { ".tzst", "tar" },
  { ".tar.xz", "tar" },
}

-- Attributes that do not take part in an element's identity when merging
-- (ConfigProcessor.cpp getElementIdentifier).
local NON_IDENTITY_ATTRS = {
  replace = true,
  remove = true,
  incl = true,
  from_zk = true,
  from_env = true,
}


-- Small helpers ------------------------------------------------------------

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end


local function ends_with(s, suffix)
  return #s >= #suffix and s:sub(-#suffix) == suffix
end


local function quote(s)
  return "'" .. s .. "'"
end


local function split_path(p)
  local parts = {}
  for part in p:gmatch("[^/]+") do
    parts[#parts + 1] = part
  end
  return parts
end


-- Lexical normalization (std::filesystem::path::lexically_normal, minus
-- the trailing-slash bookkeeping): drops "." and empty components, folds
-- "name/..", and drops ".." directly under "/". Returns is_absolute and
-- the list of components (a relative path may start with "..").
local function normalize(p)
  local absolute = p:sub(1, 1) == "/"
  local out = {}
  for _, part in ipairs(split_path(p)) do
    if part == ".." then
      if #out > 0 and out[#out] ~= ".." then
        out[#out] = nil
      elseif not absolute then
        out[#out + 1] = ".."
      end
    elseif part ~= "." then
      out[#out + 1] = part
    end
  end
  return absolute, out
end


local function join_abs(parts)
  return "/" .. table.concat(parts, "/")
end


-- Components of `parts` below `base`, or nil when `parts` is not inside.
local function strip_prefix(parts, base)
  if #parts < #base then
    return nil
  end
  for i = 1, #base do
    if parts[i] ~= base[i] then
      return nil
    end
  end
  return table.move(parts, #base + 1, #parts, 1, {})
end


--- The archive kind a file name says ("zip", "tar"), or nil: a directory
-- (ClickHouse's list of archive extensions).
function config.archive_kind(name)
  for _, ext in ipairs(ARCHIVE_EXTENSIONS) do
    if ends_with(name, ext[1]) then
      return ext[2]
    end
  end
  return nil
end


-- The last raw segment is a file name (not "", "." or ".."), so a path like
-- "1.zip/" is a directory, as in ClickHouse where the trailing slash
-- survives lexically_normal and defeats ends_with(".zip").
local function archive_kind(raw, parts)
  local last_raw = raw:match("([^/]*)$")
  if last_raw == "" or last_raw == "." or last_raw == ".." or #parts == 0 then
    return nil
  end
  return config.archive_kind(parts[#parts])
end


-- Canonical backup name, as ClickHouse prints it (BackupInfo::toString ->
-- string literals through writeAnyEscapedString<'\''>).
local ESCAPES = {
  ["\b"] = "\\b",
  ["\f"] = "\\f",
  ["\n"] = "\\n",
  ["\r"] = "\\r",
  ["\t"] = "\\t",
  ["\0"] = "\\0",
  ["\\"] = "\\\\",
  ["'"] = "\\'",
}

local function quote_literal(s)
  return "'" .. s:gsub("[\b\f\n\r\t%z\\']", ESCAPES) .. "'"
end


local function backup_name(engine, args)
  local quoted = {}
  for i, arg in ipairs(args) do
    quoted[i] = quote_literal(arg)
  end
  return engine .. "(" .. table.concat(quoted, ", ") .. ")"
end


-- XML ----------------------------------------------------------------------

-- Parses `text` (read from `file`) into a small DOM: elements are
-- { name =, attrs = { [k] = v }, children = { ... }, file =, line = } and
-- text nodes are { text = "..." }.
local function parse_xml(text, file)
  local root
  local stack = {}
  local callbacks = {
    StartElement = function(parser, name, attrs)
      local line = parser:pos()
      local node = { name = name, attrs = {}, children = {}, file = file,
        line = line }
      for k, v in pairs(attrs) do
        if type(k) == "string" then
          node.attrs[k] = v
        end
      end
      local parent = stack[#stack]
      if parent then
        parent.children[#parent.children + 1] = node
      else
        root = node
      end
      stack[#stack + 1] = node
    end,
    EndElement = function()
      stack[#stack] = nil
    end,
    CharacterData = function(_, data)
      local parent = stack[#stack]
      if parent then
        parent.children[#parent.children + 1] = { text = data }
      end
    end,
  }
  local parser = lxp.new(callbacks)
  local ok, msg, line, col = parser:parse(text)
  if ok then
    ok, msg, line, col = parser:parse()
  end
  -- close() raises when the document was left unfinished; the error is
  -- already in hand.
  pcall(parser.close, parser)
  if not ok then
    return nil, string.format("%s:%s:%s: malformed XML: %s", file,
      tostring(line), tostring(col), tostring(msg))
  end
  if not root then
    return nil, file .. ": no root element"
  end
  return root
end


local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, "cannot read " .. path .. ": " .. tostring(err)
  end
  local text, rerr = f:read("a")
  f:close()
  if not text then
    return nil, "cannot read " .. path .. ": " .. tostring(rerr)
  end
  return text
end


local function element_id(node)
  local keys = {}
  for k in pairs(node.attrs) do
    if not NON_IDENTITY_ATTRS[k] then
      keys[#keys + 1] = k
    end
  end
  table.sort(keys)
  local id = { node.name }
  for _, k in ipairs(keys) do
    id[#id + 1] = k
    id[#id + 1] = node.attrs[k]
  end
  return table.concat(id, "\0")
end


local function copy_node(node)
  if node.text then
    return { text = node.text }
  end
  local copy = { name = node.name, attrs = {}, children = {},
    file = node.file, line = node.line }
  for k, v in pairs(node.attrs) do
    copy.attrs[k] = v
  end
  for i, child in ipairs(node.children) do
    copy.children[i] = copy_node(child)
  end
  return copy
end


-- ConfigProcessor.cpp deleteAttributesRecursive: an element pasted as is
-- loses its children's "replace" attributes and its children marked
-- "remove".
local function delete_attributes_recursive(node)
  local kept = {}
  for _, child in ipairs(node.children) do
    if child.text then
      kept[#kept + 1] = child
    elseif child.attrs.remove == nil then
      child.attrs.replace = nil
      delete_attributes_recursive(child)
      kept[#kept + 1] = child
    end
  end
  node.children = kept
end


local function index_of(list, item)
  for i, v in ipairs(list) do
    if v == item then
      return i
    end
  end
  return nil
end


-- ConfigProcessor.cpp mergeRecursive: `with` is merged into `target`.
local function merge_recursive(target, with)
  -- Non-whitespace text of the target is dropped (the merged file's value
  -- replaces it); its elements are matched by identity, first come first
  -- matched.
  local kept = {}
  local by_id = {}
  for _, child in ipairs(target.children) do
    if child.text then
      if child.text:find("%S") == nil then
        kept[#kept + 1] = child
      end
    else
      kept[#kept + 1] = child
      local id = element_id(child)
      by_id[id] = by_id[id] or {}
      table.insert(by_id[id], child)
    end
  end
  target.children = kept

  for _, wchild in ipairs(with.children) do
    local merged, remove = false, false
    if not wchild.text then
      remove = wchild.attrs.remove ~= nil
      local replace = wchild.attrs.replace ~= nil
      if remove and replace then
        return nil, string.format(
          "%s:%d: both remove and replace attributes set for element <%s>",
          wchild.file, wchild.line, wchild.name)
      end
      local candidates = by_id[element_id(wchild)]
      local tchild = candidates and table.remove(candidates, 1)
      if tchild then
        local pos = index_of(target.children, tchild)
        if remove then
          table.remove(target.children, pos)
        elseif replace then
          target.children[pos] = copy_node(wchild)
        else
          for k, v in pairs(wchild.attrs) do
            tchild.attrs[k] = v
          end
          tchild.file, tchild.line = wchild.file, wchild.line
          local ok, err = merge_recursive(tchild, wchild)
          if not ok then
            return nil, err
          end
        end
        merged = true
      end
    end
    if not merged and not remove then
      local copy = copy_node(wchild)
      if not copy.text then
        delete_attributes_recursive(copy)
      end
      target.children[#target.children + 1] = copy
    end
  end
  return true
end


local function is_root_name(name)
  return name == "clickhouse" or name == "yandex"
end


-- ClickHouse parses .xml as XML, .yaml/.yml as YAML, and anything else as
-- XML when its first non-blank character is '<' (ConfigProcessor.cpp
-- parseConfig). Returns the document, or false when the file is YAML.
local function parse_config_file(path)
  local lower = path:lower()
  if ends_with(lower, ".yaml") or ends_with(lower, ".yml") then
    return false
  end
  local text, err = read_file(path)
  if not text then
    return nil, err
  end
  if not ends_with(lower, ".xml") and not text:match("^%s*<") then
    return false
  end
  return parse_xml(text, path)
end


local function is_dir(path)
  return lfs.attributes(path, "mode") == "directory"
end


-- ConfigProcessor.cpp getConfigMergeFiles: <config stem>.d/ and conf.d/
-- beside the main file; regular *.xml, *.conf, *.yaml, *.yml files (any
-- case) whose name does not start with "."; sorted by full path.
local function merge_files(path)
  local dir, base = path:match("^(.*/)([^/]*)$")
  if not dir then
    dir, base = "", path
  end
  local stem = base:match("^(.+)%.[^.]*$") or base
  local dirs = { dir .. stem .. ".d", dir .. "conf.d" }
  if dirs[1] == dirs[2] then
    dirs[2] = nil
  end
  local files = {}
  for _, d in ipairs(dirs) do
    if is_dir(d) then
      for name in lfs.dir(d) do
        local lower = name:lower()
        local file = d .. "/" .. name
        if name:sub(1, 1) ~= "."
          and (ends_with(lower, ".xml") or ends_with(lower, ".conf")
            or ends_with(lower, ".yaml") or ends_with(lower, ".yml"))
          and lfs.attributes(file, "mode") == "file" then
          files[#files + 1] = file
        end
      end
    end
  end
  table.sort(files)
  return files
end


local function first_child(node, name)
  if not node then
    return nil
  end
  for _, child in ipairs(node.children) do
    if child.name == name then
      return child
    end
  end
  return nil
end


-- Poco's innerText: all descendant text, concatenated; trimmed here.
local function inner_text(node)
  local out = {}
  local function walk(n)
    for _, child in ipairs(n.children) do
      if child.text then
        out[#out + 1] = child.text
      else
        walk(child)
      end
    end
  end
  walk(node)
  return trim(table.concat(out))
end


local function child_values(node, name)
  local values = {}
  if not node then
    return values
  end
  for _, child in ipairs(node.children) do
    if child.name == name then
      local v = inner_text(child)
      if v ~= "" then
        values[#values + 1] = v
      end
    end
  end
  return values
end


-- Building a cfg -----------------------------------------------------------

local function dir_path(p)
  if p:sub(-1) ~= "/" then
    return p .. "/"
  end
  return p
end


-- Checks one disk the way DiskLocal (Disks/loadLocalDiskConfig.cpp) does
-- and returns its record.
local function make_disk(name, disk_type, path, data_path, where, strict_slash)
  local disk = { name = name, type = disk_type, source = where }
  if disk_type ~= "local" then
    disk.path = path
    return disk
  end
  if name == "default" then
    if path and path ~= "" then
      return nil, string.format("disk 'default' in %s: its path comes from "
        .. "<path>, not from storage_configuration", where)
    end
    disk.path = data_path
    return disk
  end
  if not path or path == "" then
    return nil, string.format("disk '%s' in %s: path is empty", name, where)
  end
  if path:sub(1, 1) ~= "/" then
    return nil, string.format("disk '%s' in %s: path '%s' is not absolute",
      name, where, path)
  end
  if strict_slash and path:sub(-1) ~= "/" then
    return nil, string.format("disk '%s' in %s: path '%s' must end with /",
      name, where, path)
  end
  disk.path = dir_path(path)
  return disk
end


local function from_document(doc, path, files, ignored)
  local cfg = {
    disks = {},
    allowed_disks = {},
    allowed_paths = {},
    source = path,
    files = files,
    ignored = ignored,
  }
  local data_node = first_child(doc, "path")
  local data_path = data_node and inner_text(data_node) or ""
  if data_path == "" then
    data_path = DEFAULT_DATA_PATH
  end
  cfg.data_path = dir_path(data_path)

  local disks = first_child(first_child(doc, "storage_configuration"), "disks")
  for _, node in ipairs(disks and disks.children or {}) do
    if node.name and not cfg.disks[node.name] then
      local type_node = first_child(node, "type")
      local disk_type = type_node and inner_text(type_node) or "local"
      if disk_type == "" then
        disk_type = "local"
      end
      local path_node = first_child(node, "path")
      local where = string.format("%s:%d", node.file, node.line)
      local disk, err = make_disk(node.name, disk_type,
        path_node and inner_text(path_node), cfg.data_path, where, true)
      if not disk then
        return nil, err
      end
      local keep = first_child(node, "keep_free_space_bytes")
      if keep then
        disk.keep_free_space_bytes = math.tointeger(tonumber(inner_text(keep)))
        if not disk.keep_free_space_bytes then
          return nil, string.format("disk '%s' in %s: keep_free_space_bytes '%s' is not a number of bytes",
            node.name, where, inner_text(keep))
        end
      end
      cfg.disks[node.name] = disk
    end
  end

  cfg.policies = {}
  local policies = first_child(first_child(doc, "storage_configuration"), "policies")
  for _, node in ipairs(policies and policies.children or {}) do
    if node.name and not cfg.policies[node.name] then
      local volumes = {}
      local vols = first_child(node, "volumes")
      for _, v in ipairs(vols and vols.children or {}) do
        if v.name then
          local vol = { name = v.name, disks = child_values(v, "disk") }
          local max = first_child(v, "max_data_part_size_bytes")
          if max then
            vol.max_data_part_size_bytes = math.tointeger(tonumber(inner_text(max)))
            if not vol.max_data_part_size_bytes then
              return nil, string.format("policy '%s' volume '%s' in %s:%d: max_data_part_size_bytes '%s'"
                .. " is not a number of bytes", node.name, v.name, v.file, v.line, inner_text(max))
            end
          end
          volumes[#volumes + 1] = vol
        end
      end
      cfg.policies[node.name] = {
        name = node.name, volumes = volumes,
        source = string.format("%s:%d", node.file, node.line),
      }
    end
  end

  local backups = first_child(doc, "backups")
  cfg.allowed_disks = child_values(backups, "allowed_disk")
  cfg.allowed_paths = child_values(backups, "allowed_path")
  cfg.backups_source = backups and backups.file or path

  -- Where the server keeps SQL functions and access entities (issue 11
  -- item 5): nil paths mean the defaults under the data path.
  local ud = first_child(doc, "user_directories")
  local local_dir = first_child(first_child(ud, "local_directory"), "path")
  local acp = first_child(doc, "access_control_path")
  local udp = first_child(doc, "user_defined_path")
  cfg.server_objects = {
    user_directories = ud ~= nil and ud.file or nil,
    access_path = local_dir and inner_text(local_dir) or acp and inner_text(acp) or nil,
    access_replicated = first_child(ud, "replicated") ~= nil,
    user_defined_path = udp and inner_text(udp) or nil,
    user_defined_in_keeper = first_child(doc, "user_defined_zookeeper_path") ~= nil,
  }

  -- ClickHouse's <s3> endpoint settings: credentials for S3('url') by the
  -- longest endpoint that prefixes the url (chbackup.store.s3).
  cfg.s3 = {}
  for _, node in ipairs((first_child(doc, "s3") or {}).children or {}) do
    local ep = node.name and first_child(node, "endpoint")
    if ep then
      local e = { endpoint = inner_text(ep) }
      for _, k in ipairs({ "access_key_id", "secret_access_key", "session_token", "region",
        "use_environment_credentials" }) do
        local c = first_child(node, k)
        e[k] = c and inner_text(c) or nil
      end
      cfg.s3[#cfg.s3 + 1] = e
    end
  end
  -- <named_collections><name><key>value</key>…: S3(name[, 'key_prefix'])
  cfg.named_collections = {}
  for _, node in ipairs((first_child(doc, "named_collections") or {}).children or {}) do
    if node.name then
      local coll = {}
      for _, c in ipairs(node.children or {}) do
        if c.name then
          coll[c.name] = inner_text(c)
        end
      end
      cfg.named_collections[node.name] = coll
    end
  end
  return cfg
end


--- Reads a ClickHouse configuration file and the files merged into it.
-- @tparam[opt] string path the main file (default `config.default_path`)
-- @treturn[1] table cfg
-- @treturn[2] nil
-- @treturn[2] string message naming the file
function config.load(path)
  path = path or config.default_path
  if type(path) ~= "string" or path == "" then
    return nil, "config.load: path must be a non-empty string"
  end
  local mode = lfs.attributes(path, "mode")
  if not mode then
    return nil, "configuration file " .. path .. " does not exist"
  end
  if mode == "directory" then
    return nil, "configuration file " .. path .. " is a directory"
  end
  local doc, err = parse_config_file(path)
  if doc == false then
    return nil, path .. ": YAML configuration files are not supported"
  end
  if not doc then
    return nil, err
  end
  if not is_root_name(doc.name) then
    return nil, string.format("%s: root element is <%s>; expected "
      .. "<clickhouse> or <yandex>", path, doc.name)
  end

  local files, ignored = { path }, {}
  for _, file in ipairs(merge_files(path)) do
    local with, werr = parse_config_file(file)
    if with == false then
      ignored[#ignored + 1] = file
    elseif not with then
      return nil, werr
    elseif not is_root_name(with.name) then
      return nil, string.format("%s: root element is <%s>; it must be <%s>",
        file, with.name, doc.name)
    else
      local ok, merr = merge_recursive(doc, with)
      if not ok then
        return nil, merr
      end
      files[#files + 1] = file
    end
  end
  return from_document(doc, path, files, ignored)
end


local function string_list(value, what)
  if type(value) == "string" then
    return { value }
  end
  if type(value) ~= "table" then
    return nil, what .. " must be a string or a list of strings"
  end
  local list = {}
  for k, v in pairs(value) do
    if math.type(k) ~= "integer" or k < 1 or k > #value then
      return nil, what .. " must be a list of strings (bad key '"
        .. tostring(k) .. "')"
    end
    if type(v) ~= "string" then
      return nil, what .. " must be a list of strings"
    end
  end
  for i = 1, #value do
    if value[i] ~= "" then
      list[#list + 1] = value[i]
    end
  end
  return list
end


local function check_keys(t, allowed, what)
  for k in pairs(t) do
    if not allowed[k] then
      return nil, string.format("unknown key '%s' in %s", tostring(k), what)
    end
  end
  return true
end


--- Builds a configuration from a Lua table:
-- `{ disks = { name = { type = "local", path = "/dir/" } },
--    policies = { name = { volumes = { { "disk1" }, { "disk2", "disk3" } } } },
--    backups = { allowed_disk = { ... }, allowed_path = { ... } },
--    data_path = "/var/lib/clickhouse/" }` (every key optional).
-- @treturn[1] table cfg
-- @treturn[2] nil
-- @treturn[2] string message naming the key
function config.from_table(t)
  local where = "lua table"
  if type(t) ~= "table" then
    return nil, "config table must be a table, got " .. type(t)
  end
  local ok, err = check_keys(t, { disks = true, backups = true,
    data_path = true, policies = true }, "config table")
  if not ok then
    return nil, err
  end
  local cfg = {
    disks = {},
    allowed_disks = {},
    allowed_paths = {},
    policies = {},
    source = where,
    backups_source = where,
    files = {},
    ignored = {},
  }
  local data_path = t.data_path or DEFAULT_DATA_PATH
  if type(data_path) ~= "string" or data_path:sub(1, 1) ~= "/" then
    return nil, "data_path in config table must be an absolute path"
  end
  cfg.data_path = dir_path(data_path)

  local disks = t.disks or {}
  if type(disks) ~= "table" then
    return nil, "disks in config table must be a table"
  end
  for name, d in pairs(disks) do
    local what = "disk '" .. tostring(name) .. "'"
    if type(name) ~= "string" or type(d) ~= "table" then
      return nil, what .. " in config table must be a name and a table"
    end
    ok, err = check_keys(d, { type = true, path = true }, what)
    if not ok then
      return nil, err
    end
    if d.type ~= nil and type(d.type) ~= "string" then
      return nil, what .. ": type must be a string"
    end
    if d.path ~= nil and type(d.path) ~= "string" then
      return nil, what .. ": path must be a string"
    end
    local disk, derr = make_disk(name, d.type or "local", d.path,
      cfg.data_path, where, false)
    if not disk then
      return nil, derr
    end
    cfg.disks[name] = disk
  end

  local policies = t.policies or {}
  if type(policies) ~= "table" then
    return nil, "policies in config table must be a table"
  end
  for name, p in pairs(policies) do
    local what = "policy '" .. tostring(name) .. "'"
    if type(name) ~= "string" or type(p) ~= "table" or type(p.volumes) ~= "table" then
      return nil, what .. " in config table must be a name and { volumes = { { disk, … }, … } }"
    end
    local volumes = {}
    for i, v in ipairs(p.volumes) do
      local list, lerr = string_list(v, what .. " volume " .. i)
      if not list then
        return nil, lerr
      end
      volumes[#volumes + 1] = { name = tostring(i), disks = list }
    end
    cfg.policies[name] = { name = name, volumes = volumes, source = where }
  end

  local backups = t.backups or {}
  if type(backups) ~= "table" then
    return nil, "backups in config table must be a table"
  end
  ok, err = check_keys(backups, { allowed_disk = true, allowed_path = true },
    "backups")
  if not ok then
    return nil, err
  end
  local list, lerr = string_list(backups.allowed_disk or {},
    "backups.allowed_disk")
  if not list then
    return nil, lerr
  end
  cfg.allowed_disks = list
  list, lerr = string_list(backups.allowed_path or {}, "backups.allowed_path")
  if not list then
    return nil, lerr
  end
  cfg.allowed_paths = list
  return cfg
end


-- Symlinks -------------------------------------------------------------------

-- Resolves `parts` (an absolute, normalized path) like realpath(3) over its
-- longest existing prefix; the rest is appended lexically. `root_real`
-- (components) lets it name the symlink that took the walk out of the
-- root. Returns the real components and that symlink (or nil).
local function real_walk(parts, root_real)
  local queue = table.move(parts, 1, #parts, 1, {})
  local head = 1
  local out = {}
  local exists = true
  local links = 0
  local last_link, culprit
  local function inside()
    return root_real and strip_prefix(out, root_real) ~= nil
  end
  local was_inside = inside()
  while head <= #queue do
    local part = queue[head]
    head = head + 1
    if part == ".." then
      if #out > 0 then
        out[#out] = nil
      end
    elseif part ~= "." and part ~= "" then
      out[#out + 1] = part
      if exists then
        local p = join_abs(out)
        local mode = lfs.symlinkattributes(p, "mode")
        if not mode then
          exists = false
        elseif mode == "link" then
          links = links + 1
          if links > MAX_SYMLINKS then
            return nil, "too many levels of symbolic links at '" .. p .. "'"
          end
          local target = lfs.symlinkattributes(p, "target") or ""
          out[#out] = nil
          if target:sub(1, 1) == "/" then
            out = {}
          end
          local rest = split_path(target)
          for i = head, #queue do
            rest[#rest + 1] = queue[i]
          end
          queue, head = rest, 1
          last_link = p
        end
      end
    end
    local now_inside = inside()
    if was_inside and not now_inside and not culprit then
      culprit = last_link
    end
    was_inside = now_inside
  end
  return out, culprit or last_link
end


local function real_parts(path_string)
  local _, parts = normalize(path_string)
  return real_walk(parts, nil)
end


-- Resolving destinations ---------------------------------------------------

local function args_error(engine)
  if engine == "Disk" then
    return "backup engine 'Disk' requires 2 arguments (disk_name, path), quoted strings: Disk('backups', '1')"
  end
  return "backup engine 'File' requires 1 argument (path), a quoted string: File('/backups/1')"
end


local function check_args(engine, args, count)
  if type(args) ~= "table" or #args ~= count then
    return nil, args_error(engine)
  end
  for k, v in pairs(args) do
    if math.type(k) ~= "integer" or k < 1 or k > count
      or type(v) ~= "string" then
      return nil, args_error(engine) .. "; all of them strings"
    end
  end
  return true
end


local function absolute_allowed_path(cfg, allowed)
  if allowed:sub(1, 1) ~= "/" then
    allowed = cfg.data_path .. allowed
  end
  local _, parts = normalize(allowed)
  return parts
end


-- Checks that the real location of `parts` is under the real location of
-- one of `roots` (lists of components); `roots[1]` names the error.
local function check_symlinks(shown, parts, roots, describe)
  local first_link
  for _, root in ipairs(roots) do
    local root_real, rerr = real_walk(root, nil)
    if not root_real then
      return nil, rerr
    end
    local real, link = real_walk(parts, root_real)
    if not real then
      return nil, link
    end
    if strip_prefix(real, root_real) then
      return real
    end
    first_link = first_link or link
  end
  return nil, string.format("path %s escapes %s through symlink '%s'",
    quote(shown), describe, tostring(first_link))
end


local function finish(resolved, raw, rel)
  local kind = archive_kind(raw, rel)
  resolved.archive = kind ~= nil
  resolved.archive_kind = kind
  return resolved
end


local function resolve_disk(cfg, args)
  local disk_name, raw = args[1], args[2]
  if #cfg.allowed_disks == 0 then
    return nil, string.format("backups.allowed_disk is not set in %s; "
      .. "cannot use the 'Disk' backup engine",
      cfg.backups_source or cfg.source)
  end
  local disk = cfg.disks[disk_name]
  if not disk then
    -- most often a misspelt name: say which disks there are
    local known = {}
    for name in pairs(cfg.disks) do
      known[#known + 1] = quote(name)
    end
    table.sort(known)
    return nil, string.format("unknown disk %s: the configured disks are %s "
      .. "(storage_configuration.disks in %s)", quote(disk_name),
      #known > 0 and table.concat(known, ", ") or "none", cfg.source)
  end
  if not index_of(cfg.allowed_disks, disk_name) then
    return nil, string.format("disk %s is not allowed for backups "
      .. "(backups.allowed_disk in %s)", quote(disk_name),
      cfg.backups_source or cfg.source)
  end
  if disk.type ~= "local" then
    return nil, string.format("disk %s has type %s; only local disks are "
      .. "supported", quote(disk_name), quote(disk.type))
  end

  -- BackupEnginesFileAndDiskUtils.cpp checkBackupDiskPath: normalize; an
  -- absolute path on a local disk is taken relative to the disk's path;
  -- the result must not start with "..".
  local _, root = normalize(disk.path)
  local absolute, parts = normalize(raw)
  local rel = parts
  if absolute then
    rel = strip_prefix(parts, root)
  elseif parts[1] == ".." then
    rel = nil
  end
  if not rel then
    return nil, string.format("path %s escapes disk %s", quote(raw),
      quote(disk_name))
  end
  local full = table.move(rel, 1, #rel, #root + 1,
    table.move(root, 1, #root, 1, {}))
  local path = join_abs(full)
  local real, err = check_symlinks(path, full, { root },
    "disk " .. quote(disk_name))
  if not real then
    return nil, err
  end
  return finish({
    name = backup_name("Disk", args),
    engine = "Disk",
    disk = disk_name,
    path = path,
    root = join_abs(root),
    relative = table.concat(rel, "/"),
    real_path = join_abs(real),
  }, raw, rel)
end


local function resolve_file(cfg, args)
  local raw = args[1]
  local absolute, parts = normalize(raw)
  if raw == "" then
    return nil, "backup engine 'File': path to backup must not be empty"
  end
  if #cfg.allowed_paths == 0 then
    return nil, string.format("backups.allowed_path is not set in %s; "
      .. "cannot use the 'File' backup engine",
      cfg.backups_source or cfg.source)
  end

  -- BackupEnginesFileAndDiskUtils.cpp checkBackupFilePath: a relative path
  -- is taken under the first allowed_path; relative allowed paths are under
  -- the data path (<path>); the result must be inside one allowed_path.
  local roots = {}
  for i, allowed in ipairs(cfg.allowed_paths) do
    roots[i] = absolute_allowed_path(cfg, allowed)
  end
  local full = parts
  if not absolute then
    local _, joined = normalize(join_abs(roots[1]) .. "/" .. raw)
    full = joined
  end
  local path = join_abs(full)
  local root, rel
  for i, r in ipairs(roots) do
    rel = strip_prefix(full, r)
    if rel then
      root = r
      table.insert(roots, 1, table.remove(roots, i))
      break
    end
  end
  if not root then
    return nil, string.format("path %s is not allowed for backups "
      .. "(backups.allowed_path in %s)", quote(path),
      cfg.backups_source or cfg.source)
  end
  local real, err = check_symlinks(path, full, roots,
    "allowed path " .. quote(join_abs(root)))
  if not real then
    return nil, err
  end
  return finish({
    name = backup_name("File", args),
    engine = "File",
    path = path,
    root = join_abs(root),
    relative = table.concat(rel, "/"),
    real_path = join_abs(real),
  }, raw, rel)
end


--- Checks a backup destination against a configuration.
-- @tparam table cfg from `config.load` or `config.from_table`
-- @tparam table dest `{ engine = "Disk", args = { "backups", "1.zip" } }`
--   or `{ engine = "File", args = { "/backups/x" } }`
-- @treturn[1] table `{ name =, engine =, disk =, path =, root =, relative =,
--   real_path =, archive =, archive_kind = }`
-- @treturn[2] nil
-- @treturn[2] string message
function config.resolve(cfg, dest)
  if type(cfg) ~= "table" or type(cfg.disks) ~= "table" then
    return nil, "config.resolve: cfg must come from config.load or "
      .. "config.from_table"
  end
  if type(dest) ~= "table" then
    return nil, "config.resolve: destination must be a table"
  end
  local engine = dest.engine
  if type(engine) ~= "string" then
    return nil, "config.resolve: destination has no engine name"
  end
  if dest.collection and (engine == "Disk" or engine == "File") then
    -- Disk(backups, '1'): ClickHouse would read a named collection
    return nil, string.format("backup engine %s: its arguments must be quoted strings "
      .. "(%s is not quoted; named collections are not supported): %s",
      quote(engine), dest.collection, engine == "Disk" and "Disk('backups', '1')" or "File('/backups/1')")
  end
  if engine == "Disk" then
    local ok, err = check_args(engine, dest.args, 2)
    if not ok then
      return nil, err
    end
    return resolve_disk(cfg, dest.args)
  elseif engine == "File" then
    local ok, err = check_args(engine, dest.args, 1)
    if not ok then
      return nil, err
    end
    return resolve_file(cfg, dest.args)
  elseif engine == "S3" then
    return require("chbackup.store.s3").resolve(cfg, dest)
  end
  return nil, "backup engine " .. quote(engine) .. " is not supported"
end


--- The real (symlink-free) form of an absolute path, resolved over its
-- longest existing prefix. Exposed for callers that compare locations.
function config.realpath(p)
  if type(p) ~= "string" or p:sub(1, 1) ~= "/" then
    return nil, "config.realpath: path must be absolute"
  end
  local parts, err = real_parts(p)
  if not parts then
    return nil, err
  end
  return join_abs(parts)
end


return config
