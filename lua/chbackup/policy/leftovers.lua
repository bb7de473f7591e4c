--- What killed runs of a policy left at its destination and scratch place,
-- found (`policy plan` lists it) and removed (each `policy run`/`verify`
-- does, first, under the policy's lock). Recognised by markers and by
-- locks that no live process holds (chbackup.lock), never by age:
--
--   directory backup, `.chbackup-incomplete` nobody holds   a killed BACKUP
--   directory with only a backup's own entries (`data/`,     a deletion killed
--     `metadata/`, …) and no `.backup` nor marker            before the marker
--                                                            was removed last
--   `<name>.zip.tmp-<pid>` nobody holds, its `.backup` and   a killed zip BACKUP
--     `.spool` companions (or companions without it)
--   `<name>.zip.lock` nobody holds                           a killed zip BACKUP
--   `<name>.chbackup.json` whose backup is gone              a killed deletion
--   `<scratch>/chbackup-verify-<policy>-*` whose             a killed verify
--     `.chbackup-verify.lock` nobody holds
--
-- A name is considered only when it matches the policy's destination
-- pattern (with one of these suffixes); symbolic links are never followed.
-- @module chbackup.policy.leftovers
local lfs = require("lfs")
local core = require("chbackup.core")
local lock = require("chbackup.lock")
local fsutil = require("chbackup.fsutil")
local store = require("chbackup.policy.store")

local leftovers = {}

leftovers.VERIFY_LOCK = ".chbackup-verify.lock"

-- What a backup directory holds besides `.backup` (chbackup's and ClickHouse's).
local BACKUP_ENTRIES = { data = true, metadata = true, [".chbackup-encryption"] = true }

local RECORD_SUFFIX = ".chbackup.json"


local function mode(path)
  return lfs.symlinkattributes(path, "mode")
end


local remove_tree = fsutil.remove_tree


-- A directory matching the pattern with no `.backup`: what is it?
-- Returns why (a leftover), or nil, why not (left alone).
local function judge_dir(path)
  if mode(path .. "/.backup") or mode(path .. "/.backup.deleting") then
    return nil
  end
  local marker = path .. "/.chbackup-incomplete"
  if mode(marker) then
    local held, holder = lock.held(marker)
    if held then
      return nil, "being written by " .. holder
    end
    local text = require("chbackup.fsutil").read_file(marker)
    return "an unfinished backup of a killed BACKUP (" .. lock.who(text)
      .. "; .chbackup-incomplete that no process holds)"
  end
  for e in lfs.dir(path) do
    if e ~= "." and e ~= ".." and not BACKUP_ENTRIES[e] and not e:match("^%.backup") then
      return nil, "holds " .. e .. ", which is not a backup's"
    end
  end
  return "a half-deleted backup (a backup's entries, no .backup, no marker)"
end


-- Walks the pattern's directories; fn(dir, entry, rel_dir) for each entry
-- of the last segment's directories.
local function walk(st, fn)
  local segs = st.compiled.segments
  local function go(dir, rel, i)
    if mode(dir) ~= "directory" then
      return
    end
    for _, e in ipairs(fsutil.list_dir(dir) or {}) do
      if i < #segs then
        if e:match(segs[i].match) and mode(dir .. "/" .. e) == "directory" then
          go(dir .. "/" .. e, rel .. e .. "/", i + 1)
        end
      else
        fn(dir, e, rel, segs[i].match)
      end
    end
  end
  go(st.root, "", 1)
end


--- Finds what killed runs of the policy left. st: a disk store (memory
-- stores have none); scratch: the verification scratch root (or nil).
-- Returns a list of {path=, name=, why=, last=} (to remove) and a list of
-- {name=, why=} left alone.
function leftovers.find(st, pol, scratch)
  local found, alone = {}, {}
  if not st.root then
    return found, alone
  end
  local function add(path, rel, why, last)
    found[#found + 1] = { path = path, name = rel, why = why, last = last }
  end
  local removed = {}
  walk(st, function(dir, e, rel, match)
    local path = dir .. "/" .. e
    local m = mode(path)
    if e:match(match) then
      if m == "directory" and not store.archive_kind(e) then
        local why, not_why = judge_dir(path)
        if why then
          add(path, rel .. e, why, ".chbackup-incomplete")
          removed[path] = true
        elseif not_why then
          alone[#alone + 1] = { name = rel .. e, why = not_why }
        end
      end
      return
    end
    local base, pid, companion = e:match("^(.+)%.tmp%-(%d+)(.*)$")
    if base and base:match(match) and m ~= "link" then
      local tmp = dir .. "/" .. base .. ".tmp-" .. pid
      if companion == "" and m == "file" then
        local held, holder = lock.held(path)
        if held then
          alone[#alone + 1] = { name = rel .. e, why = "the temporary archive of a running BACKUP (" .. holder .. ")" }
        else
          add(path, rel .. e, "the temporary archive of a killed zip BACKUP (no process holds its lock)")
          removed[path] = true
        end
      elseif (companion == ".backup" or companion == ".spool") and (not mode(tmp) or removed[tmp]) then
        add(path, rel .. e, "a companion (" .. companion .. ") of a killed zip BACKUP's temporary archive")
      end
      return
    end
    base = e:match("^(.+)%.lock$")
    if base and base:match(match) and m == "file" then
      local held = lock.held(path)
      if held == false then
        add(path, rel .. e, "the lock of a killed zip BACKUP (no process holds it)")
      end
      return
    end
    base = e:sub(1, #e - #RECORD_SUFFIX)
    if e:sub(-#RECORD_SUFFIX) == RECORD_SUFFIX and base:match(match) and m == "file" then
      local b = dir .. "/" .. base
      if (not mode(b) or removed[b]) and not mode(b .. ".deleting") then
        add(path, rel .. e, "a policy record whose backup is gone")
      end
    end
  end)
  if scratch and mode(scratch) == "directory" then
    local prefix = "chbackup-verify-" .. pol.name .. "-"
    for e in lfs.dir(scratch) do
      local path = scratch .. "/" .. e
      if e:sub(1, #prefix) == prefix and e:sub(#prefix + 1):match("^%d+%-%d+$") and mode(path) == "directory" then
        local held, holder = lock.held(path .. "/" .. leftovers.VERIFY_LOCK)
        if held == false then
          add(path, e, "the scratch data path of a killed verification (no process holds its lock)",
            leftovers.VERIFY_LOCK)
        elseif held then
          alone[#alone + 1] = { name = path,
            why = "the scratch data path of a running verification (" .. holder .. ")" }
        end
      end
    end
  end
  return found, alone
end


--- Removes what find found; log(name, msg, level) for each. Returns the
-- number removed and a list of errors.
function leftovers.clean(st, list, log)
  local n, errors = 0, {}
  for _, x in ipairs(list) do
    local ok, err = remove_tree(x.path, x.last)
    if ok then
      n = n + 1
      log(x.name, "removed " .. x.path .. ": " .. x.why)
      if x.path:sub(1, #st.root + 1) == st.root .. "/" then
        st:_remove_empty_parents(x.path)
      end
    else
      errors[#errors + 1] = err
      log(x.name, "cannot remove " .. x.path .. " (" .. x.why .. "): " .. tostring(err), "error")
    end
  end
  if n > 0 then
    core.fsync(st.root)
  end
  return n, errors
end


return leftovers
