--- Disks and storage policies of a data path, read offline.
--
-- A MergeTree table's parts live on the disks of its storage policy
-- (`SETTINGS storage_policy = 'p'`; `SETTINGS disk = 'd'` is a policy of one
-- disk; without either, the policy `default`, whose one disk is `default`).
-- On every disk the table's directory has the same relative path as on the
-- default disk (`store/<uuid3>/<uuid>/`, or `data/<db>/<t>/` in Ordinary
-- databases). The default disk is the data path chbackup was given.
-- Only local disks can be read offline: any other type (s3, s3_plain,
-- azure_blob_storage, web, cache, encrypted, …) is refused, naming the
-- table and the disk.
-- @module chbackup.disks
local ddl = require("chbackup.ddl")
local names = require("chbackup.names")

local disks = {}


local function trim_slash(p)
  p = p:gsub("/+$", "")
  return p == "" and "/" or p
end


--- A disk of the configuration by name: {name=, type=, path=} with path
-- without a trailing slash. The default disk is the data path. nil, err
-- when the config has no such disk.
function disks.disk(cfg, data_path, name)
  local d = cfg and cfg.disks and cfg.disks[name]
  if name == "default" and (not d or d.type == "local") then
    return { name = "default", type = "local", path = trim_slash(data_path),
      keep_free = d and d.keep_free_space_bytes }
  end
  if not d then
    return nil
  end
  return { name = d.name or name, type = d.type, path = d.path and trim_slash(d.path),
    keep_free = d.keep_free_space_bytes }
end


--- The storage policy a table's body names: policy name, or nil, err.
-- `disk = 'd'` gives a policy of that one disk, named "disk 'd'".
function disks.policy_of(body)
  local disk, raw = ddl.setting(body, "disk")
  if disk then
    if raw then
      return nil, "its SETTINGS disk = " .. disk .. " (a disk defined in the query) cannot be read offline"
    end
    return { disk = disk }
  end
  local policy = ddl.setting(body, "storage_policy")
  return { policy = policy or "default" }
end


--- The disks of the storage policy a table body names, in the policy's
-- order (volumes in order, disks of a volume in order): list of
-- {name=, type=, path=, volume=} or nil, err naming `what`, the policy
-- and the disk. Every disk must be local.
function disks.for_body(cfg, data_path, body, what)
  local p, err = disks.policy_of(body)
  if not p then
    return nil, what .. ": " .. err
  end
  local list_names, pname = {}, nil
  if p.disk then
    list_names = { { p.disk, "" } }
  else
    pname = p.policy
    local policy = cfg and cfg.policies and cfg.policies[pname]
    if not policy and pname == "default" then
      list_names = { { "default", "default" } }
    elseif not policy then
      return nil, string.format("%s uses storage policy '%s', which is not in the configuration (%s)",
        what, pname, cfg and cfg.source or "no configuration")
    else
      for _, v in ipairs(policy.volumes) do
        for _, d in ipairs(v.disks) do
          list_names[#list_names + 1] = { d, v.name, v.max_data_part_size_bytes }
        end
      end
      if #list_names == 0 then
        return nil, string.format("%s uses storage policy '%s', which has no disks (%s)",
          what, pname, policy.source or cfg.source)
      end
    end
  end
  local out, seen = {}, {}
  for _, nd in ipairs(list_names) do
    local name = nd[1]
    local d = disks.disk(cfg, data_path, name)
    local via = pname and (" (storage policy '" .. pname .. "')") or ""
    if not d then
      return nil, string.format("%s uses disk '%s'%s, which is not in the configuration (%s)",
        what, name, via, cfg and cfg.source or "no configuration")
    end
    if d.type ~= "local" then
      return nil, string.format("%s uses disk '%s'%s of type %s: chbackup reads local disks only",
        what, name, via, d.type)
    end
    if not seen[name] then
      seen[name] = true
      d.volume, d.max_part = nd[2], nd[3]
      out[#out + 1] = d
    end
  end
  return out
end


--- The relative path from directory `from` to `to` (both absolute, no
-- trailing slash): how ClickHouse writes a table's `data/<db>/<t>` link.
function disks.relative(from, to)
  local a, b = {}, {}
  for c in from:gmatch("[^/]+") do
    a[#a + 1] = c
  end
  for c in to:gmatch("[^/]+") do
    b[#b + 1] = c
  end
  local i = 1
  while a[i] and b[i] and a[i] == b[i] do
    i = i + 1
  end
  local out = {}
  for _ = i, #a do
    out[#out + 1] = ".."
  end
  for j = i, #b do
    out[#out + 1] = b[j]
  end
  return table.concat(out, "/")
end


--- A table's directory on each disk of its policy: list of {disk=, dir=}
-- (the table's data_dir rebased from the data path onto each disk's path),
-- or nil, err naming the table and the disk.
function disks.locations(cfg, data_path, tbl)
  local what = "table " .. names.qualified(tbl.database, tbl.name)
  local list, err = disks.for_body(cfg, data_path, tbl.table_body or tbl.body, what)
  if not list then
    return nil, err
  end
  local root = trim_slash(data_path)
  local rel = tbl.data_dir:sub(#root + 2)
  if tbl.data_dir:sub(1, #root + 1) ~= root .. "/" or rel == "" then
    return nil, what .. ": its data directory " .. tbl.data_dir .. " is not inside " .. root
  end
  local out = {}
  for _, d in ipairs(list) do
    out[#out + 1] = { disk = d.name, dir = d.path .. "/" .. rel, disk_path = d.path,
      keep_free = d.keep_free, max_part = d.max_part }
  end
  return out, rel
end


--- Local disks of the configuration that are not in `locations` but hold
-- the table's directory with part-named entries: ClickHouse refuses to
-- load such a table ("found on disk … which is not defined in the storage
-- policy"), so a backup must not pretend the table is whole. Returns the
-- first such {disk=, dir=} or nil.
function disks.stray(cfg, data_path, locations, rel, is_part_name)
  local used = {}
  for _, l in ipairs(locations) do
    used[l.disk] = true
  end
  local lfs = require("lfs")
  local list = {}
  for name in pairs(cfg and cfg.disks or {}) do
    list[#list + 1] = name
  end
  table.sort(list)
  for _, name in ipairs(list) do
    local d = disks.disk(cfg, data_path, name)
    if not used[name] and d and d.type == "local" and d.path then
      local dir = d.path .. "/" .. rel
      local is_dir = lfs.attributes(dir, "mode") == "directory"
      local ok, iter, state = pcall(lfs.dir, dir)
      if is_dir and not ok then
        return { disk = name, dir = dir, error = "cannot read directory " .. dir .. ": " .. tostring(iter) }
      end
      if ok and is_dir then
        local found = {}
        for entry in iter, state do
          if is_part_name(entry) then
            found[#found + 1] = entry
          end
        end
        table.sort(found)
        if found[1] then
          return { disk = name, dir = dir, part = found[1] }
        end
      end
    end
  end
  return nil
end


local function xml_text(v)
  return (tostring(v):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"))
end


--- A ClickHouse XML config holding the local disks (but `default`) and
-- the storage policies of cfg, for running ClickHouse on a data path whose
-- tables use them; nil when cfg has neither.
function disks.clickhouse_config(cfg)
  local dnames, pnames = {}, {}
  for name, d in pairs(cfg.disks or {}) do
    if name ~= "default" and d.type == "local" and d.path then
      dnames[#dnames + 1] = name
    end
  end
  for name in pairs(cfg.policies or {}) do
    pnames[#pnames + 1] = name
  end
  if #dnames == 0 and #pnames == 0 then
    return nil
  end
  table.sort(dnames)
  table.sort(pnames)
  local out = { "<clickhouse><storage_configuration><disks>" }
  for _, name in ipairs(dnames) do
    out[#out + 1] = string.format("<%s><type>local</type><path>%s</path></%s>", name,
      xml_text(trim_slash(cfg.disks[name].path) .. "/"), name)
  end
  out[#out + 1] = "</disks><policies>"
  for _, name in ipairs(pnames) do
    out[#out + 1] = "<" .. name .. "><volumes>"
    for i, v in ipairs(cfg.policies[name].volumes) do
      out[#out + 1] = "<v" .. i .. ">"
      for _, d in ipairs(v.disks) do
        out[#out + 1] = "<disk>" .. xml_text(d) .. "</disk>"
      end
      out[#out + 1] = "</v" .. i .. ">"
    end
    out[#out + 1] = "</volumes></" .. name .. ">"
  end
  out[#out + 1] = "</policies></storage_configuration></clickhouse>\n"
  return table.concat(out)
end


--- chbackup's own record, in a backup (a file of a directory backup, an
-- entry of a zip), of the disk each part
-- was on (only parts not on the default disk): JSON
-- `{"data/<db>/<t>/<part>": "<disk>", …}`. Not listed in `.backup` (like
-- `.chbackup-encryption`); ClickHouse ignores it. RESTORE puts a part back
-- on that disk when the target's policy has a disk of that name.
disks.RECORD_FILE = ".chbackup-disks"


--- The record's text of map (disks.note), or nil when every part is on
-- the default disk.
function disks.record(map)
  if not next(map) then
    return nil
  end
  return require("cjson").encode(map)
end


--- Notes in map (part prefix -> disk, for disks.record) the disk of each
-- part of data (plan.backup_files' entries) that is not on the default disk.
function disks.note(map, data)
  for _, d in ipairs(data) do
    local part = d.disk and d.disk ~= "default" and d.name:match("^(data/[^/]+/[^/]+/[^/]+)/")
    if part then
      map[part] = d.disk
    end
  end
end


--- The record of an opened backup (chain.open; directory or zip) as a map part
-- prefix -> disk, or nil when it has none.
function disks.read_record(b)
  if not b then
    return nil
  end
  local text = b.store:read_extra(disks.RECORD_FILE)
  local ok, map = pcall(require("cjson").decode, text or "")
  if not ok or type(map) ~= "table" then
    return nil
  end
  return map
end


return disks
