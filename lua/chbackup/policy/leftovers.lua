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
-- On S3 (no flock: a lock's holder is judged by its text, chbackup.store.s3
-- and chbackup.policy.s3lock):
--
--   `<name>/.lock` without `.backup`, its holder on this     a killed BACKUP
--     host and gone, or the holder of the policy lock this
--     run took over as dead
--   `<name>.chbackup.json` whose backup is gone              a killed deletion
--   `<name>/.lock` saying `rebasing` beside `.backup`, its   a killed rebase:
--     holder provably dead (as above)                        the objects no
--                                                            file of `.backup`
--                                                            reads, `.lock` last
--
-- Any other `.lock` without `.backup` (another host's, not provably dead) is
-- left alone and warned about; a deletion cut short (its `.lock` says
-- `deleting`) is finished by the run (finish_deletions), as on disks.
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
local killed_rebase


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


-- Whether the holder a `.lock`'s text names is provably gone: on this
-- host with its process gone, or the dead holder of the policy lock.
local function s3_dead(text, path, dead)
  local _, pid = lock.holder(text)
  local host = text:match("\nhost ([^\n]*)")
  return require("chbackup.store.s3").stale(text, path) or (dead and pid == dead.pid and host == dead.host),
    lock.who(text) .. " on host " .. tostring(host)
end


-- A backup at rel with a `.lock` beside `.backup`: a rebase's (s3.REBASING)
-- whose holder is provably dead left objects that no file of the backup
-- reads (those only the new manifest would have used, or after the switch
-- those only the old one used). They are the objects below the prefix
-- but `.backup`, `.lock`, the disks record and every object a piece of the
-- chain reads from this backup (chain.pieces, as RESTORE reads).
function killed_rebase(st, rel, found, alone, dead)
  local s3 = require("chbackup.store.s3")
  local chain = require("chbackup.chain")
  local c, prefix, path = st.client, st:_key(rel), st:path_of(rel)
  local text = c:get(prefix .. "/" .. s3.LOCK) or ""
  if text:sub(-#s3.REBASING) ~= s3.REBASING then
    return
  end
  local gone, who = s3_dead(text, path, dead)
  if not gone then
    alone[#alone + 1] = { name = rel, why = "being rebased by " .. who .. ", which cannot be proven dead from here" }
    return
  end
  local b, err = chain.open(st.cfg, chain.parse_name(st:destination(rel)), { inherit = st.s3root })
  local used = { [prefix .. "/" .. require("chbackup.manifest").FILE] = true, [prefix .. "/" .. s3.LOCK] = true,
    [prefix .. "/" .. require("chbackup.disks").RECORD_FILE] = true }
  for _, e in ipairs(b and b.manifest.files or {}) do
    local pieces, perr = chain.pieces(b, e)
    if not pieces then
      err = perr
      break
    end
    for _, p in ipairs(pieces) do
      if p.from == b.store then
        used[p[1]] = true
      end
    end
  end
  if err then
    alone[#alone + 1] = { name = rel, why = "a killed rebase's (" .. who .. ") .lock beside a backup that cannot be "
      .. "read (" .. err .. "); left for `chbackup check`" }
    return
  end
  found[#found + 1] = { name = rel, path = path,
    why = "what a killed rebase (" .. who .. ") left: objects no file of the backup reads, and its .lock",
    remove = function()
      local keys = {}
      for _, o in ipairs(c:list(prefix .. "/") or {}) do
        if not used[o.key] then
          keys[#keys + 1] = o.key
        end
      end
      local ok, derr = true, nil
      if #keys > 0 then
        ok, derr = c:delete_many(keys)
      end
      if ok then
        ok, derr = c:delete(prefix .. "/" .. s3.LOCK)
      end
      return ok, derr
    end }
end


-- What killed runs left on an S3 store (see the table above): adds to
-- found ({name=, path=, why=, remove = function() -> true | nil, err})
-- and alone. dead: the holder ({host=, pid=}) of a policy lock this run
-- took over as dead, or nil.
local function find_s3(st, found, alone, dead)
  local s3 = require("chbackup.store.s3")
  local c, root = st.client, st.s3root
  local entries = require("chbackup.store").list(root)
  if not entries then
    return
  end
  local present = {}
  for _, e in ipairs(entries) do
    present[e.rel] = true
    if e.locked and store.match_name(st.compiled, e.rel) then
      killed_rebase(st, e.rel, found, alone, dead)
    end
    if e.what == "incomplete" and not e.archive and store.match_name(st.compiled, e.rel) then
      local prefix = st:_key(e.rel)
      local text = c:get(prefix .. "/" .. s3.LOCK) or ""
      local path = st:path_of(e.rel)
      local gone, who = s3_dead(text, path, dead)
      if gone then
        found[#found + 1] = { name = e.rel, path = path,
          why = "an unfinished backup of a killed BACKUP (" .. who .. "; .lock without .backup)",
          remove = function()
            local ok, err = s3.delete_all(c, { prefix = prefix }, s3.LOCK)
            if ok then
              ok, err = c:delete(prefix .. "/" .. s3.LOCK)
            end
            return ok, err
          end }
      else
        alone[#alone + 1] = { name = e.rel, why = "an unfinished backup (.lock without .backup) of " .. who
          .. ", which cannot be proven dead from here; if it is, `chbackup delete` it" }
      end
    end
  end
  local prefix = root.prefix ~= "" and root.prefix .. "/" or ""
  for _, o in ipairs(c:list(prefix) or {}) do
    local rel = o.key:sub(#prefix + 1)
    local name = rel:sub(1, #rel - #RECORD_SUFFIX)
    if rel:sub(-#RECORD_SUFFIX) == RECORD_SUFFIX and store.match_name(st.compiled, name) and not present[name] then
      found[#found + 1] = { name = rel, path = st:record_path(name), why = "a policy record whose backup is gone",
        remove = function() return c:delete(o.key) end }
    end
  end
end


--- Finds what killed runs of the policy left. st: a disk or S3 store
-- (memory stores have none); scratch: the verification scratch root (or
-- nil); dead: on S3, the holder of the policy lock taken over (or nil).
-- Returns a list of {path=, name=, why=, last= | remove=} (to remove) and
-- a list of {name=, why=} left alone.
function leftovers.find(st, pol, scratch, dead)
  local found, alone = {}, {}
  if st.s3root then
    find_s3(st, found, alone, dead)
    leftovers.find_scratch(pol, scratch, found, alone)
    return found, alone
  elseif not st.root then
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
  leftovers.find_scratch(pol, scratch, found, alone)
  return found, alone
end


--- Adds killed verifications' scratch data paths below scratch to found
-- (those a live one holds to alone).
function leftovers.find_scratch(pol, scratch, found, alone)
  local function add(path, rel, why, last)
    found[#found + 1] = { path = path, name = rel, why = why, last = last }
  end
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
end


--- Removes what find found; log(name, msg, level) for each. Returns the
-- number removed and a list of errors.
function leftovers.clean(st, list, log)
  local n, errors = 0, {}
  for _, x in ipairs(list) do
    local ok, err
    if x.remove then
      ok, err = x.remove()
    else
      ok, err = remove_tree(x.path, x.last)
    end
    if ok then
      n = n + 1
      log(x.name, "removed " .. x.path .. ": " .. x.why)
      if st.root and x.path:sub(1, #st.root + 1) == st.root .. "/" then
        st:_remove_empty_parents(x.path)
      end
    else
      errors[#errors + 1] = err
      log(x.name, "cannot remove " .. x.path .. " (" .. x.why .. "): " .. tostring(err), "error")
    end
  end
  if n > 0 and st.root then
    core.fsync(st.root)
  end
  return n, errors
end


return leftovers
