--- One writer per target, and what a killed writer left removed by the next.
--
-- A lock is a file held under an exclusive flock(2) (`core.lock`) for the
-- whole run of an operation; the kernel releases it when the process dies,
-- so a lock file that nobody holds was left by a killed run. The file's
-- text names its holder (`operation <id>`, `pid <n>`) and, for a RESTORE,
-- what the run is about to create, so that the next one can remove it.
--
--   RESTORE                 `<data path>/.chbackup/restore.lock`
--   BACKUP to a directory   `<backup>/.chbackup-incomplete` (the marker)
--   BACKUP to a zip         `<archive>.lock`, beside the archive
--
-- A holder unlinks its lock file before releasing it (core.lock retakes a
-- lock whose file was replaced meanwhile).
-- @module chbackup.lock
local lfs = require("lfs")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")

local lock = {}

--- Where a RESTORE's lock lives, inside the data path (ClickHouse ignores
-- `.chbackup/`, as every name in the data path root it does not own).
lock.RESTORE_LOCK = ".chbackup/restore.lock"


--- The text naming a holder: "operation <id>\npid <pid>\n".
function lock.holder_text(op_id)
  return string.format("operation %s\npid %d\n", op_id, core.getpid())
end


--- Who a lock file's text names: op id (or "unknown"), pid (or nil).
function lock.holder(text)
  text = text or ""
  local id = text:match("^operation ([^\n]+)") or text:match("^chbackup (%S+)")
  return id or "unknown", tonumber(text:match("\npid (%d+)"))
end


-- "operation <id> (pid <n>)"
local function who(text)
  local id, pid = lock.holder(text)
  return "operation " .. id .. (pid and (" (pid " .. pid .. ")") or "")
end
lock.who = who


--- Writes chbackup's own log line on stderr.
function lock.log(msg)
  io.stderr:write("chbackup: ", msg, "\n")
end


--- Takes the lock `path` for operation op_id. `busy(holder)` phrases the
-- refusal when a live process holds it. Returns lk, previous (the text a
-- killed holder left, or nil), created; or nil, message, code.
function lock.take(path, op_id, busy)
  local lk, prev, created, holder = core.lock(path)
  if not lk then
    if created == "LOCKED" then
      return nil, busy(who(holder)), "LOCKED"
    end
    return nil, prev, created
  end
  local ok, err = lk:write(lock.holder_text(op_id))
  if not ok then
    lk:release(created)
    return nil, err
  end
  return lk, prev ~= "" and prev or nil, created
end


--- Whether a live process holds the lock file path: true, "operation <id>
-- (pid <n>)" | false (a file nobody holds) | nil (no file).
function lock.held(path)
  local held, text = core.lock_held(path)
  if held then
    return true, who(text)
  end
  return held
end


-- RESTORE -------------------------------------------------------------------

-- The uuids of the store directories an Atomic data path's tables use,
-- from metadata (the same uuid names a table's directory on every disk).
-- Returns nil when the metadata cannot be read (then nothing is removed).
local function referenced_uuids(path)
  local cat = require("chbackup.catalog").open(path)
  if not cat then
    return nil
  end
  local ok, dirs = pcall(function()
    local dirs = {}
    for _, db in ipairs(cat:databases()) do
      for _, t in ipairs(assert(cat:tables(db.name))) do
        local uuid = t.data_dir and t.data_dir:match("/store/%x%x%x/([%x%-]+)$")
        if uuid then
          dirs[uuid] = true
        end
      end
    end
    return dirs
  end)
  return ok and dirs or nil
end


-- Files a RESTORE writes outside table directories (access entities,
-- SQL functions) and beside a Log table's own (an append) go under
-- temporary names `tmp_restore_<name>`, noted (`tmp_file <path>`) before
-- they are written; once all are written, the run notes `commit` and the
-- steps that put them into place (`rename <tmp path>`: to <name> in the
-- same directory; `remove <path>`; `touch <path>`), then takes them. The
-- next RESTORE removes a killed run's noted files when it did not commit,
-- and finishes its steps when it did: a kill leaves none of the set or
-- all of it.
local function tmp_name(path)
  local dir, base = path:match("^(.*)/(tmp_restore_[^/]+)$")
  return dir and base ~= "tmp_restore_", dir, base and base:sub(13)
end


--- Takes the steps of a commit ({op = "rename"|"remove"|"touch", path =}),
-- each idempotent (a rename whose file is gone was taken). done(path) is
-- called for each path put into place or removed. Returns true or nil, err.
function lock.apply(steps, done)
  for _, s in ipairs(steps) do
    local ok, err = true, nil
    if s.op == "rename" then
      local _, dir, final = tmp_name(s.path)
      if fsutil.exists(s.path) then
        ok, err = os.rename(s.path, dir .. "/" .. final)
        if ok and done then
          done(dir .. "/" .. final)
        end
      end
    elseif s.op == "remove" then
      if fsutil.exists(s.path) then
        ok, err = os.remove(s.path)
        if ok and done then
          done(s.path)
        end
      end
    elseif s.op == "touch" and not fsutil.exists(s.path) then
      ok, err = fsutil.write_file(s.path, "")
    end
    if not ok then
      return nil, tostring(err)
    end
  end
  return true
end


-- The steps of a commit as noted, the safe ones only: renames of
-- temporary files, removals and touches of access entity files and marks.
local function noted_steps(prev)
  local steps = {}
  for op, p in prev:gmatch("\n(%l+) ([^\n]+)") do
    local base = p:match("[^/]+$") or ""
    if op == "rename" and tmp_name(p)
        or (op == "remove" and base:match("^%x+%-[%x%-]+%.sql$"))
        or (op == "touch" and base == "need_rebuild_lists.mark") then
      steps[#steps + 1] = { op = op, path = p }
    end
  end
  return steps
end


-- Removes what a killed RESTORE noted in its lock file and did not finish:
-- table directories no metadata refers to, databases without metadata,
-- temporary files; finishes the steps of a commit it noted.
local function remove_noted(path, prev, removed, roots, completed)
  local commit = prev:find("\ncommit\n", 1, true)
  for p in prev:gmatch("\ntmp_file ([^\n]+)") do
    if tmp_name(p) and not commit then
      for _, f in ipairs({ p, p .. ".tmp" }) do
        if fsutil.exists(f) then
          os.remove(f)
          removed[#removed + 1] = f
        end
      end
    end
  end
  if commit then
    local ok, err = lock.apply(noted_steps(prev:sub(commit)), function(p)
      completed[#completed + 1] = p
    end)
    if not ok then
      lock.log("cannot finish what a killed RESTORE committed: " .. err)
    end
  end
  local refs
  for dir in prev:gmatch("\ntable_dir ([^\n]+)") do
    -- only a table directory (store/<xyz>/<uuid>) below the data path or
    -- another local disk of the config
    local root, uuid = dir:match("^(.+)/store/%x%x%x/([%x%-]+)$")
    if fsutil.exists(dir) and root and roots[root] then
      if refs == nil then
        refs = referenced_uuids(path) or false
      end
      if refs and not refs[uuid] then
        fsutil.remove_tree(dir)
        removed[#removed + 1] = dir
      end
    end
  end
  for esc, uuid in prev:gmatch("\ndatabase ([^\n ]+) (%x+%-[%x%-]+)") do
    if not fsutil.exists(path .. "/metadata/" .. esc .. ".sql") then
      local link = path .. "/metadata/" .. esc
      if lfs.symlinkattributes(link, "mode") == "link" then
        os.remove(link)
        removed[#removed + 1] = link
      end
      local dir = path .. "/store/" .. uuid:sub(1, 3) .. "/" .. uuid
      local has_sql = false
      if fsutil.is_dir(dir) then
        for e in lfs.dir(dir) do
          has_sql = has_sql or e:match("%.sql$") ~= nil
        end
        if not has_sql then
          fsutil.remove_tree(dir)
          removed[#removed + 1] = dir
        end
      end
    end
  end
end


-- Removes every `tmp_restore_*` entry of the table directories
-- (store/<xyz>/<uuid>/) below root (the data path or another of its local
-- disks): under the data path's lock, none is a live one.
local function remove_tmp_restore(root, removed)
  local store = root .. "/store"
  if not fsutil.is_dir(store) then
    return
  end
  for shard in lfs.dir(store) do
    local sdir = store .. "/" .. shard
    if shard ~= "." and shard ~= ".." and lfs.symlinkattributes(sdir, "mode") == "directory" then
      for t in lfs.dir(sdir) do
        local tdir = sdir .. "/" .. t
        if t ~= "." and t ~= ".." and lfs.symlinkattributes(tdir, "mode") == "directory" then
          for e in lfs.dir(tdir) do
            if e:sub(1, 12) == "tmp_restore_" then
              fsutil.remove_tree(tdir .. "/" .. e)
              removed[#removed + 1] = tdir .. "/" .. e
            end
          end
        end
      end
    end
  end
end


local Guard = {}
Guard.__index = Guard


--- Notes in the lock file what the run is about to create (table
-- directories; databases as {escaped=, uuid=}; temporary files, each
-- named `tmp_restore_*`), before creating it. Each call adds to the notes.
function Guard:note(table_dirs, databases, files)
  local lines = self.lines
  for _, d in ipairs(table_dirs or {}) do
    lines[#lines + 1] = "table_dir " .. d .. "\n"
  end
  for _, db in ipairs(databases or {}) do
    lines[#lines + 1] = "database " .. db.escaped .. " " .. db.uuid .. "\n"
  end
  for _, f in ipairs(files or {}) do
    if not tmp_name(f) or f:find("\n", 1, true) then
      return nil, "cannot note " .. f .. " in " .. lock.RESTORE_LOCK .. ": not a tmp_restore_* file"
    end
    lines[#lines + 1] = "tmp_file " .. f .. "\n"
  end
  return self.lk:write(table.concat(lines))
end


--- Notes `commit` and steps (see lock.apply), then takes them: from here
-- a killed run is finished by the next RESTORE. Returns true or nil, err.
function Guard:commit(steps)
  local lines = { table.concat(self.lines), "commit\n" }
  for _, s in ipairs(steps) do
    lines[#lines + 1] = s.op .. " " .. s.path .. "\n"
  end
  local ok, err = self.lk:write(table.concat(lines))
  if not ok then
    return nil, err
  end
  return lock.apply(steps)
end


--- Takes a data path's RESTORE lock for operation op_id and removes what
-- killed RESTOREs left there and on the other local disks `disk_paths`
-- (logged on stderr). Returns a guard {lk=, removed = {paths}}
-- (guard:note, guard:release) or nil, message.
function lock.restore(path, op_id, disk_paths)
  path = path:gsub("/+$", "")
  local roots = { [path] = true }
  for _, d in ipairs(disk_paths or {}) do
    roots[d:gsub("/+$", "")] = true
  end
  local ok, err = fsutil.mkdir_p(path .. "/.chbackup")
  if not ok then
    return nil, err
  end
  local file = path .. "/" .. lock.RESTORE_LOCK
  local lk, prev = lock.take(file, op_id, function(holder)
    return "data path " .. path .. " is being restored into by " .. holder .. " (lock " .. file
      .. "); one RESTORE at a time"
  end)
  if not lk then
    return nil, prev
  end
  local removed, completed = {}, {}
  if prev then
    remove_noted(path, "\n" .. prev, removed, roots, completed)
  end
  for root in pairs(roots) do
    remove_tmp_restore(root, removed)
  end
  -- a database link without its .sql (a RESTORE killed between the two, by
  -- a version that did not note it): ClickHouse skips it, but a RESTORE
  -- creating that database would write its .sql beside a link elsewhere
  if fsutil.is_dir(path .. "/metadata") then
    for e in lfs.dir(path .. "/metadata") do
      local link = path .. "/metadata/" .. e
      if lfs.symlinkattributes(link, "mode") == "link" and not fsutil.exists(link .. ".sql") then
        os.remove(link)
        removed[#removed + 1] = link
      end
    end
  end
  for _, r in ipairs(removed) do
    lock.log("removed " .. r .. ", left by a killed RESTORE" .. (prev and (" (" .. who(prev) .. ")") or ""))
  end
  for _, c in ipairs(completed) do
    lock.log("finished " .. c .. ", committed by a killed RESTORE (" .. who(prev) .. ")")
  end
  return setmetatable({ lk = lk, op_id = op_id, removed = removed, path = path,
    lines = { lock.holder_text(op_id) } }, Guard)
end


function Guard:release()
  self.lk:release(true)
end


--- Runs a RESTORE (run(ctx, req)) under its data path's lock: ctx.lock is
-- the guard. Returns what run returns.
function lock.run_restore(run, ctx, req)
  local disk_paths = {}
  for name, d in pairs(ctx.config and ctx.config.disks or {}) do
    local disk = d.type == "local" and require("chbackup.disks").disk(ctx.config, ctx.catalog.path, name)
    if disk and disk.path then
      disk_paths[#disk_paths + 1] = disk.path
    end
  end
  local guard, err = lock.restore(ctx.catalog.path, ctx.op_id, disk_paths)
  if not guard then
    return nil, err
  end
  ctx.lock = guard
  local res = table.pack(pcall(run, ctx, req))
  guard:release()
  if not res[1] then
    error(res[2], 0)
  end
  return table.unpack(res, 2, res.n)
end


-- BACKUP to a zip -------------------------------------------------------------

--- The lock of a zip backup being written: `<archive>.lock`.
function lock.archive_lock(archive_path)
  return archive_path .. ".lock"
end


--- Takes a zip destination's lock. Returns lk or nil, message.
function lock.archive(dest, op_id)
  local file = lock.archive_lock(dest.path)
  local ok, err = fsutil.mkdir_p(fsutil.parent_dir(dest.path))
  if not ok then
    return nil, err
  end
  local lk, prev = lock.take(file, op_id, function(holder)
    return "backup " .. dest.name .. " is being written by " .. holder .. " (lock " .. file .. ")"
  end)
  if lk and prev then
    lock.log("took over " .. file .. " from a killed BACKUP (" .. who(prev) .. ")")
  end
  return lk, prev
end


return lock
