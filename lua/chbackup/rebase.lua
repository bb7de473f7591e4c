--- `rebase`: turns an incremental backup into a standalone one, or into an
-- incremental on another backup (`--onto`), so that its bases can be
-- deleted (clickhouse-backup's `rebase`; ClickHouse#52190).
--
-- The standalone copy is written beside the backup by the container's own
-- writer (chbackup.store: a directory, a zip; encrypted again with the
-- password when the backup is), every file read through the chain and
-- verified against its size and checksum while written, each content
-- stored once (file_plan.decide, as a full backup stores them). Then it
-- takes the backup's place so that the name never lacks a backup: two
-- directories are swapped atomically (renameat2 exchange) and the old one
-- is deleted whole; a zip is renamed over the old one. On S3 (no rename)
-- the new files are written into the backup's own prefix, `.backup`
-- switched last, then what only the old one stored deleted
-- (chbackup.store.s3's begin_rebase). The new backup keeps
-- the uuid and timestamp: its contents are the same, so a backup made on it
-- still finds the base it recorded.
-- @module chbackup.rebase
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local disks = require("chbackup.disks")
local file_plan = require("chbackup.file_plan")
local fsutil = require("chbackup.fsutil")
local store = require("chbackup.store")

local rebase = {}


-- Where the standalone copy of backup b is written: beside it, of the
-- same container kind (an archive's name keeps its suffix).
local function beside(b)
  local tmp = {}
  for k, v in pairs(b.dest) do
    tmp[k] = v
  end
  local tag = ".rebase-" .. core.getpid()
  if b.dest.archive then
    -- before the name's first dot, so that its archive suffix (.zip,
    -- .tar.zst, …) and thus its container stay
    local dir, stem, suffix = b.dest.path:match("^(.*/)([^/.]*)(%.[^/]*)$")
    tmp.path = dir .. stem .. tag .. suffix
  else
    tmp.path = b.dest.path .. tag
  end
  tmp.name = b.dest.name .. " (its rebased copy " .. tmp.path .. ")"
  return tmp
end


-- Puts the finished copy at tmp in the place of backup b; the old bytes
-- are removed. Returns true or nil, err.
local function swap_in(b, tmp, name)
  if b.dest.archive then
    local ok, err = os.rename(tmp.path, b.dest.path)
    if not ok then
      store.remove(tmp, { name = tmp.name })
      return nil, "cannot put the rebased backup in place of " .. name .. ": " .. tostring(err)
    end
    core.fsync(fsutil.parent_dir(b.dest.path))
    return true
  end
  local ok, err = core.exchange(tmp.path, b.dest.path)
  if not ok then
    store.remove(tmp, { name = tmp.name })
    return nil, "cannot put the rebased backup in place of " .. name .. ": " .. err
  end
  -- tmp now holds the incremental: deleted whole, its .backup invalidated first
  ok, err = store.remove(tmp, { name = name .. " (before its rebase)" })
  if not ok then
    return nil, "backup " .. name .. " is rebased; the old copy at " .. tmp.path .. " could not be removed: " .. err
  end
  return true
end


-- The backup named opts.onto, opened with its chain, for backup b to be
-- rebased onto: not b, nor a backup that relies on b (the chain would
-- come back to b). Returns it or nil, err.
local function open_onto(cfg, b, opts)
  local dest, err = chain.parse_name(opts.onto)
  local onto
  if dest then
    onto, err = chain.open(cfg, dest, { password = opts.password })
  end
  if not onto then
    return nil, "--onto " .. opts.onto .. ": " .. err
  end
  local list
  list, err = chain.list(onto)
  if not list then
    return nil, "--onto " .. opts.onto .. ": " .. err
  end
  for _, x in ipairs(list) do
    if x.dest.path == b.dest.path then
      return nil, "cannot rebase backup " .. b.dest.name .. " onto " .. opts.onto .. ": "
        .. (x == onto and "it is the same backup" or (opts.onto .. " relies on it"))
    end
    if x.store.key_err then
      return nil, "--onto " .. opts.onto .. ": " .. x.store.key_err
    end
  end
  return onto
end


--- Rebases backup `name` onto no base, or onto opts.onto.
-- opts: threads, password (of the chains' backups; the copy is encrypted
-- with it when the backup is), onto (a backup name: files it holds are
-- not stored again, the rebased backup relies on it), op_id. Returns the
-- number of bytes written, or nil, err naming the backup.
function rebase.run(cfg, name, opts)
  opts = opts or {}
  local dest, err = chain.parse_name(name)
  if not dest then
    return nil, err
  end
  local b
  b, err = chain.open(cfg, dest, { password = opts.password })
  if not b then
    return nil, err
  end
  local m = b.manifest
  if not m.base_backup and not opts.onto then
    b.store:close()
    return nil, "backup " .. name .. " has no base: it is standalone already"
  end
  if b.store.key_err then
    b.store:close()
    return nil, b.store.key_err
  end
  local bases
  bases, err = chain.list(b)
  if not bases then
    return nil, err
  end
  local onto
  if opts.onto then
    onto, err = open_onto(cfg, b, opts)
    if not onto then
      return nil, err
    end
  end
  local files = {}
  for i, e in ipairs(m.files) do
    files[i] = { name = e.name, size = e.size, checksum = e.checksum, from = e }
  end
  local decisions = file_plan.decisions(onto, nil)
  local to_store, derr = file_plan.decide(files, decisions)
  if not to_store then
    return nil, derr
  end
  local wopts = {
    op_id = opts.op_id or ("rebase-" .. core.getpid()), threads = opts.threads,
    password = b.store.encrypted and opts.password or nil, compression_method = b.store.method,
  }
  -- in place where there is no rename (S3), else beside and swapped in
  local tmp = b.dest
  local writer, code
  writer, err, code = store.begin_rebase(b.dest, wopts)
  local in_place = writer ~= false
  if not in_place then
    tmp = beside(b)
    writer, err, code = store.begin_write(tmp, wopts)
  end
  if not writer then
    return nil, err, code
  end
  local written = 0
  local function fail(msg, fcode)
    writer:abort()
    return nil, msg, fcode
  end
  for _, f in ipairs(to_store) do
    local pieces, perr = chain.pieces(b, f.from)
    if not pieces then
      return fail(perr)
    end
    local ok, aerr, acode = writer:put(f.stored_as, pieces, f.size, f.checksum)
    if not ok then
      return fail(aerr, acode)
    end
    written = written + f.size
  end
  local record = b.store:read_extra(disks.RECORD_FILE)
  if record then
    local ok, aerr, acode = writer:put_extra(disks.RECORD_FILE, record)
    if not ok then
      return fail(aerr, acode)
    end
  end
  for _, f in ipairs(files) do
    f.from = nil
  end
  -- on a base: everything it relies on checked there first, as for a BACKUP
  local new_m
  local ctx = { op_uuid = m.uuid, dest = tmp, config = cfg }
  if onto then
    local ok
    ok, err = chain.check_new(ctx, files, onto, writer)
    if not ok then
      writer:abort()
      return nil, err
    end
  end
  new_m, err = chain.new_manifest(ctx, decisions.index, onto)
  if not new_m then
    writer:abort()
    return nil, err
  end
  new_m.timestamp = m.timestamp
  local done
  done, err, code = writer:commit(new_m, nil, opts.cancelled)
  for _, x in ipairs(bases) do
    x.store:close()
  end
  if not done then
    return nil, "rebase of backup " .. name .. " failed: " .. err, code
  end
  if in_place then
    return written + done.manifest_size
  end
  local ok
  ok, err = swap_in(b, tmp, name)
  if not ok then
    return nil, err
  end
  return written + done.manifest_size
end


return rebase
