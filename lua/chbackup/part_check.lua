--- A MergeTree part in a backup, checked as ClickHouse would load it.
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
local core = require("chbackup.core")

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


return part_check
