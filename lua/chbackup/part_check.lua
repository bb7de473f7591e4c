--- A table's data in a backup, checked as ClickHouse would load it: a
-- MergeTree part against its checksums.txt, a Log-family table against its
-- sizes.json.
--
-- A part's `checksums.txt` is the list of files the part must have, with
-- the size and checksum of each (a projection `p.proj` is listed by name
-- and has a checksums.txt of its own). ClickHouse detaches a part whose
-- files disagree with it (`broken-on-start_…`), so RESTORE checks, before
-- any part appears under a final name, that the backup's entries for the
-- part are exactly those files (plus the few ClickHouse writes beside them)
-- and that each entry's size and checksum are the ones checksums.txt
-- records. The copy then verifies every byte against the entry, so the
-- restored bytes agree with checksums.txt too.
-- @module chbackup.part_check
local cjson = require("cjson")
local core = require("chbackup.core")
local names = require("chbackup.names")

local part_check = {}

-- Files ClickHouse keeps in a part (or projection) directory without
-- listing them in its checksums.txt (its isFileWithoutChecksum).
part_check.UNLISTED = {
  ["checksums.txt"] = true, ["columns.txt"] = true, ["columns_substreams.txt"] = true,
  ["default_compression_codec.txt"] = true, ["metadata_version.txt"] = true,
  ["txn_version.txt"] = true,
}

-- Files a part directory cannot be loaded without.
local REQUIRED = { "checksums.txt", "columns.txt" }


--- columns_substreams.txt is not listed in checksums.txt, so a part
-- without it cannot be told damaged from its checksums alone. ClickHouse
-- 26 writes it into every part and cannot load a part whose String columns
-- use the separate-sizes serialization (serialization.json:
-- "types_serialization_versions": {"string": 1}) without it (it detaches
-- the part as broken); parts of numeric columns, or of single-stream
-- strings, load without it (checked with ClickHouse 26.5). So such a part
-- must have it. Returns true or nil, err.
function part_check.substreams_present(where, prefix, files, read)
  local sj, cols = files[prefix .. "serialization.json"], files[prefix .. "columns.txt"]
  if files[prefix .. "columns_substreams.txt"] or not sj or not cols then
    return true
  end
  local sj_text, err = read(sj)
  if not sj_text then
    return nil, err
  end
  local versions = sj_text:match('"types_serialization_versions"%s*:%s*(%b{})')
  if not (versions and versions:match('"string"%s*:%s*1[^%d]')) then
    return true
  end
  local cols_text
  cols_text, err = read(cols)
  if not cols_text then
    return nil, err
  end
  if cols_text:match("String") then
    return nil, where .. " has no " .. prefix .. "columns_substreams.txt, which ClickHouse needs to read "
      .. "its String columns (serialization.json has string serialization version 1)"
  end
  return true
end


--- Checks one part. `where` names it in messages ("backup b: part
-- data/db/t/all_1_1_0"); `files` maps each file's name relative to the part
-- directory to its manifest entry; read(entry) returns the entry's bytes,
-- verified (chain.read). Returns true or nil, err naming the part and file.
function part_check.check(where, files, read)
  local covered, dirs = {}, {}
  local function check_dir(prefix)
    dirs[prefix] = true
    for _, name in ipairs(REQUIRED) do
      if not files[prefix .. name] then
        return nil, where .. " has no " .. prefix .. name
      end
    end
    local text, err = read(files[prefix .. "checksums.txt"])
    if not text then
      return nil, err
    end
    local sums
    sums, err = core.parse_checksums(text, where .. "/" .. prefix .. "checksums.txt")
    if not sums then
      return nil, err
    end
    local listed = {}
    for name in pairs(sums) do
      listed[#listed + 1] = name
    end
    table.sort(listed)
    for _, name in ipairs(listed) do
      local want = sums[name]
      if name:find("/", 1, true) then
        return nil, where .. "/" .. prefix .. "checksums.txt lists " .. name .. ", which is not a file of the part"
      end
      if name:match("%.proj$") then
        local ok, perr = check_dir(prefix .. name .. "/")
        if not ok then
          return nil, perr
        end
      else
        local rel = prefix .. name
        local e = files[rel]
        if not e then
          return nil, where .. " has no " .. rel .. ", which its checksums.txt lists"
        end
        if e.size ~= want.size then
          return nil, string.format("%s: %s is %d bytes in the backup, its checksums.txt says %d",
            where, rel, e.size, want.size)
        end
        if e.size > 0 and e.checksum ~= want.checksum then
          return nil, string.format("%s: %s has checksum %s in the backup, its checksums.txt says %s",
            where, rel, tostring(e.checksum), want.checksum)
        end
        covered[rel] = true
      end
    end
    return true
  end
  local ok, err = check_dir("")
  if not ok then
    return nil, err
  end
  for dir in pairs(dirs) do
    ok, err = part_check.substreams_present(where, dir, files, read)
    if not ok then
      return nil, err
    end
  end
  local unexpected = {}
  for rel in pairs(files) do
    local dir, base = rel:match("^(.-)([^/]*)$")
    if not covered[rel] and not (dirs[dir] and part_check.UNLISTED[base]) then
      unexpected[#unexpected + 1] = rel
    end
  end
  if #unexpected > 0 then
    table.sort(unexpected)
    return nil, where .. " has " .. unexpected[1] .. ", which its checksums.txt does not list"
  end
  return true
end


-- Files of a Log-family table in a backup that its sizes.json does not
-- list (ClickHouse adds columns.txt and count.txt to a backup).
local LOG_UNLISTED = { ["sizes.json"] = true, ["columns.txt"] = true, ["count.txt"] = true }

--- Checks a Log-family table's files: `files` maps each file's name (flat)
-- to its manifest entry. sizes.json lists every data and marks file with
-- its committed size; ClickHouse refuses a table whose files disagree with
-- it, so each listed file must be in the backup with exactly that size, and
-- no other file may be. Returns true or nil, err naming the table and file.
function part_check.log_table(where, files, read)
  if not next(files) then
    return true
  end
  local e = files["sizes.json"]
  if not e then
    return nil, where .. " has data files but no sizes.json"
  end
  local text, err = read(e)
  if not text then
    return nil, err
  end
  local ok, doc = pcall(cjson.decode, text)
  if not ok or type(doc) ~= "table" or type(doc.clickhouse) ~= "table" then
    return nil, where .. "/sizes.json is not the sizes.json ClickHouse writes"
  end
  local listed = {}
  for esc, v in pairs(doc.clickhouse) do
    local size = type(v) == "table" and math.tointeger(tonumber(v.size))
    if type(esc) ~= "string" or not size then
      return nil, where .. "/sizes.json is not the sizes.json ClickHouse writes"
    end
    listed[names.unescape_file(esc)] = size
  end
  for name, size in pairs(listed) do
    local f = files[name]
    if not f then
      return nil, where .. " has no " .. name .. ", which its sizes.json lists"
    end
    if f.size ~= size then
      return nil, string.format("%s: %s is %d bytes in the backup, its sizes.json says %d",
        where, name, f.size, size)
    end
  end
  local unexpected = {}
  for name in pairs(files) do
    if not listed[name] and not LOG_UNLISTED[name] then
      unexpected[#unexpected + 1] = name
    end
  end
  if #unexpected > 0 then
    table.sort(unexpected)
    return nil, where .. " has " .. unexpected[1] .. ", which its sizes.json does not list"
  end
  return true
end


return part_check
