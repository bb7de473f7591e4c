--- The command line: `main(argv) -> exit code` (0 ok, 1 failure, 2 usage,
-- 3 `check` found a problem in a backup).
-- @module chbackup.cli
local jsonl = require("chbackup.jsonl")
local chbackup = require("chbackup")
local config = require("chbackup.config")
local core = require("chbackup.core")
local fsutil = require("chbackup.fsutil")
local progress = require("chbackup.progress")
local runner = require("chbackup.runner")

local cli = {}

local USAGE = [[
usage: chbackup [options] 'STATEMENT[; STATEMENT...]'
       chbackup [options] show BACKUP        list a backup's tables and files
       chbackup [options] chain BACKUP       list the backups an incremental relies on
       chbackup [options] diff BACKUP1 BACKUP2   parts added, removed, changed
       chbackup [options] check BACKUP [--read-data]   verify a backup in place
       chbackup [options] list DEST          the backups at a destination, e.g. "Disk('backups', '')"
       chbackup [options] delete BACKUP      remove a backup whole (refused while another relies on it)
       chbackup [options] rebase BACKUP [--onto BASE]   make an incremental standalone (its
                                             bases can then go), or an incremental on BASE
       chbackup [options] wait ID            wait for an ASYNC operation
       chbackup [options] cancel ID          cancel a running operation
       chbackup [options] policy plan|run|watch|verify FILE   policy as code
       chbackup --help

Runs BACKUP, RESTORE and SELECT ... FROM system.backups statements the way
clickhouse-local does, against a ClickHouse data path read offline.

  BACKUP TABLE db.t TO Disk('backups', 'b1')
  RESTORE TABLE db.t AS db.t2 FROM Disk('backups', 'b1')
  SELECT status, error FROM system.backups FORMAT Vertical

options:
  --path DIR         ClickHouse data path (default /var/lib/clickhouse); RESTORE
                     into a new data path takes an empty directory
  --config FILE      ClickHouse config (default /etc/clickhouse-server/config.xml,
                     plus its config.d/*.xml)
  --status-dir DIR   where operations are recorded (default <path>/.chbackup/status;
                     also $CHBACKUP_STATUS_DIR)
  --status-keep N    finished operations kept in the status directory: the
                     newest N (default 1000; 0: no limit)
  --status-days D    ... and none older than D days (default 30; 0: no limit)
  --threads N        worker threads (default: number of cores, at least 8)
  --read-data        check: read every byte back and compare every checksum
  --onto BASE        rebase: onto this backup (files it holds are not stored again)
  --json             one JSON object per result line instead of text (BACKUP,
                     RESTORE, show, chain, diff, list, check, delete, wait,
                     cancel; SELECT prints in its FORMAT)
  --quiet, -q        nothing on stdout, no progress line; errors still go to
                     stderr and the exit status says the rest
  --password-file F  show, chain, diff, check, list, delete, rebase: the password of
                     encrypted backups, the
                     text of file F without its final line end (BACKUP and
                     RESTORE take SETTINGS password = '…' as ClickHouse does)

exit status: 0 ok, 1 failed (the message on stderr names what), 2 usage,
             3 verification found a problem (check; policy verify exits 1)
]]


local function parse_args(argv)
  local opts, rest = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if #rest == 0 and a == "policy" then
      -- policy sub-commands parse their own options (--junit=FILE, …)
      table.move(argv, i, #argv, 1, rest)
      break
    end
    local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
    name = name or a:match("^%-%-([%w%-]+)$")
    if name == "help" or a == "-h" then
      opts.help = true
    elseif (name == "quiet" and not value) or a == "-q" then
      opts.quiet = true
    elseif name == "read-data" and not value then
      opts.read_data = true
    elseif name == "json" and not value then
      opts.json = true
    elseif name == "path" or name == "config" or name == "status-dir" or name == "threads"
        or name == "status-keep" or name == "status-days"
        or name == "run-operation" or name == "password-file" or name == "onto" then
      if not value then
        i = i + 1
        value = argv[i]
      end
      if not value then
        return nil, "option --" .. name .. " needs a value"
      end
      if (name == "status-keep" or name == "status-days") and not (tonumber(value) and tonumber(value) >= 0) then
        return nil, "option --" .. name .. " needs a number >= 0 (0: no limit), got '" .. value .. "'"
      end
      opts[name:gsub("%-", "_")] = value
    elseif name then
      return nil, "unknown option --" .. name
    else
      rest[#rest + 1] = a
    end
    i = i + 1
  end
  return opts, rest
end


-- inspect: show, chain and diff read backups only; they create no status
-- directory (nor a data path's .chbackup)
local function open(opts, inspect)
  local status_dir = opts.status_dir
  if status_dir == nil and inspect then
    status_dir = false
  end
  return chbackup.open({
    path = opts.path, config = opts.config or config.default_path,
    status_dir = status_dir, threads = tonumber(opts.threads),
    status_keep = tonumber(opts.status_keep), status_days = tonumber(opts.status_days),
  })
end


-- The config file must exist; a message about the default names --config.
local function check_config(opts)
  local file = opts.config or config.default_path
  if fsutil.exists(file) then
    return true
  end
  if opts.config then
    return nil, "--config: configuration file " .. file .. " does not exist"
  end
  return nil, "configuration file " .. file .. " does not exist (the default; give ClickHouse's config "
    .. "with --config FILE)"
end


-- The data path must be one: a misspelt --path must not become a new data
-- path (nor get a status directory). `kinds` says what will run: "backup",
-- "restore" (which may start from an empty directory), "status" (SELECT,
-- wait, cancel: the status directory is under the data path).
local function check_path(opts, kinds)
  local path = opts.path or chbackup.DEFAULT_PATH
  local named = opts.path and ("--path '" .. path .. "'") or ("data path '" .. path .. "'")
  local hint = opts.path and "" or " (the default; give ClickHouse's data path with --path DIR)"
  if not fsutil.exists(path) then
    return nil, named .. " does not exist" .. hint .. (kinds.restore and opts.path
      and " (to RESTORE into a new data path, create it as an empty directory first)" or "")
  end
  if not fsutil.is_dir(path) then
    return nil, named .. " is not a directory" .. hint
  end
  if fsutil.is_dir(path .. "/metadata") then
    return true
  end
  local empty = true
  for entry in require("lfs").dir(path) do
    if entry ~= "." and entry ~= ".." and entry ~= ".chbackup" then
      empty = false
      break
    end
  end
  if empty and not kinds.backup then
    return true -- a fresh data path for RESTORE; or where status is kept
  end
  return nil, named .. " is not a ClickHouse data path (no metadata/ directory)"
    .. (opts.path and "; give ClickHouse's data path with --path DIR" or hint)
end


-- What a command will do with the data path (nil: nothing to check;
-- false, err: a syntax error).
local function path_use(opts, rest)
  local explicit_status = opts.status_dir or os.getenv("CHBACKUP_STATUS_DIR")
  local sub = rest[1]
  if opts.run_operation or sub == "show" or sub == "chain" or sub == "diff" or sub == "check" or sub == "list"
      or sub == "delete" or sub == "rebase" then
    return nil
  end
  if sub == "wait" or sub == "cancel" then
    return not explicit_status and { status = true } or nil
  end
  local reqs, err = chbackup.parse(sub)
  if not reqs then
    return false, err -- reported before anything is opened
  end
  local kinds = {}
  for _, req in ipairs(reqs) do
    kinds[req.kind == "select" and "status" or req.kind] = true
  end
  if kinds.status and explicit_status and not kinds.backup and not kinds.restore then
    return nil
  end
  return kinds
end


-- The one line an escaped Lua error (a bug) prints; exit status 1.
local function internal_error(errout, what, op, message, id)
  if op then
    id = op.id
    what = op.request and op.request.kind and op.request.kind:upper() or what
    -- best effort: record the operation failed rather than leave it running
    pcall(function()
      op.instance.store:finish(op.id, op.request.kind == "backup" and "BACKUP_FAILED" or "RESTORE_FAILED",
        "internal error: " .. message)
    end)
  end
  message = tostring(message):gsub("%s*\n%s*", " ")
  errout:write(string.format("chbackup: internal error in %s%s: %s — this is a bug, please report it\n",
    what, id and (" (" .. id .. ")") or "", message))
  return 1
end


-- ASYNC in the CLI: the operation is already registered; a detached
-- process of this same program runs it and records its end.
local function spawn_async(opts, op, statement)
  local argv = table.move(cli.launcher, 1, #cli.launcher, 1, {})
  for _, k in ipairs({ "path", "config", "status_dir", "threads", "status_keep", "status_days" }) do
    if opts[k] then
      argv[#argv + 1] = "--" .. k:gsub("_", "-")
      argv[#argv + 1] = tostring(opts[k])
    end
  end
  argv[#argv + 1] = "--run-operation"
  argv[#argv + 1] = op.id
  argv[#argv + 1] = statement
  local pid, err = core.spawn_detached(argv, "/dev/null")
  if not pid then
    op.instance.store:finish(op.id, op.request.kind == "backup" and "BACKUP_FAILED" or "RESTORE_FAILED", err)
    return { id = op.id, status = "FAILED", error = err }
  end
  op.instance.store:update(op.id, { pid = pid })
  return { id = op.id, status = op.request.kind == "backup" and "CREATING_BACKUP" or "RESTORING" }
end


local js = jsonl.value

-- The order of the fields of a JSON line (the same for every run; fields
-- not named here follow, sorted).
local FIELD_ORDER = jsonl.order({ "id", "status", "error", "backup", "name", "file", "database", "table",
  "partition", "part", "change", "bytes", "uuid", "timestamp", "kind", "files", "size", "checksum", "data_file",
  "use_base", "total_size", "restored_bytes", "stored_files", "stored_bytes", "base_backup", "ok", "steps", "totals",
  "deleted" })

local function json_line(out, t, order)
  out:write(jsonl.line(t, order or FIELD_ORDER))
end


local function cmd_show(inst, target, out, secret, json)
  local b, err = inst:_open_backup(target, secret)
  if not b then
    return nil, err
  end
  local m = b.manifest
  if json then
    json_line(out, { backup = b.dest.name, uuid = js(m.uuid), timestamp = js(m.timestamp), files = #m.files,
      base_backup = js(m.base_backup) })
    for _, f in ipairs(m.files) do
      json_line(out, { file = f.name, size = f.size, checksum = js(f.checksum), data_file = js(f.data_file),
        use_base = f.use_base and true or false })
    end
    return true
  end
  out:write(string.format("backup\t%s\nuuid\t%s\ntimestamp\t%s\nfiles\t%d\n", b.dest.name,
    tostring(m.uuid), tostring(m.timestamp), #m.files))
  if m.base_backup then
    out:write("base_backup\t" .. m.base_backup .. "\n")
  end
  for _, f in ipairs(m.files) do
    out:write(string.format("%s\t%d\t%s%s\n", f.name, f.size, f.checksum or "",
      f.data_file and ("\tdata_file=" .. f.data_file) or (f.use_base and "\tuse_base" or "")))
  end
  return true
end


local CHAIN_COLUMNS = { "name", "uuid", "timestamp", "num_files", "total_size", "stored_files", "stored_bytes",
  "base_backup" }

local function cmd_chain(inst, name, out, secret, json)
  local rows, err = inst:chain(name, secret)
  if not rows then
    return nil, err
  end
  if json then
    for _, r in ipairs(rows) do
      local t = {}
      for _, c in ipairs(CHAIN_COLUMNS) do
        t[c == "num_files" and "files" or c] = js(r[c])
      end
      json_line(out, t)
    end
    return true
  end
  out:write("name\tuuid\ttimestamp\tfiles\ttotal_size\tstored_files\tstored_bytes\tbase_backup\n")
  for _, r in ipairs(rows) do
    out:write(table.concat({ r.name, tostring(r.uuid), tostring(r.timestamp), r.num_files, r.total_size,
      r.stored_files, r.stored_bytes, r.base_backup or "" }, "\t") .. "\n")
  end
  return true
end


local function cmd_diff(inst, a, b, out, secret, json)
  local rows, totals = inst:diff(a, b, secret)
  if not rows then
    return nil, totals
  end
  if json then
    for _, r in ipairs(rows) do
      json_line(out, { database = r.database, table = r.table, partition = r.partition, part = r.part,
        change = r.change, bytes = r.bytes })
    end
    json_line(out, { totals = { added = totals.added, added_bytes = totals.added_bytes, removed = totals.removed,
      removed_bytes = totals.removed_bytes, changed = totals.changed, changed_bytes = totals.changed_bytes } })
    return true
  end
  out:write("database\ttable\tpartition\tpart\tchange\tbytes\n")
  for _, r in ipairs(rows) do
    out:write(table.concat({ r.database, r.table, r.partition, r.part, r.change, r.bytes }, "\t") .. "\n")
  end
  out:write(string.format("-- %d added (%d bytes), %d removed (%d bytes), %d changed (%d bytes)\n",
    totals.added, totals.added_bytes, totals.removed, totals.removed_bytes, totals.changed, totals.changed_bytes))
  return true
end


local LIST_COLUMNS = { "name", "timestamp", "kind", "base_backup", "files", "restored_bytes", "stored_bytes",
  "status", "problem" }

local LIST_ORDER = jsonl.order(LIST_COLUMNS)

local function cmd_list(inst, dest, out, secret, json)
  local rows, err = inst:list(dest, secret)
  if not rows then
    return nil, err
  end
  if not json then
    out:write(table.concat(LIST_COLUMNS, "\t") .. "\n")
  end
  for _, r in ipairs(rows) do
    if json then
      for _, c in ipairs(LIST_COLUMNS) do
        r[c] = js(r[c])
      end
      json_line(out, r, LIST_ORDER)
    else
      local cells = {}
      for i, c in ipairs(LIST_COLUMNS) do
        cells[i] = r[c] == nil and "" or tostring(r[c]):gsub("[\t\n]", " ")
      end
      out:write(table.concat(cells, "\t") .. "\n")
    end
  end
  return true
end


local function cmd_wait(inst, id, out, json)
  while true do
    local row = inst.store:get(id)
    if not row then
      return nil, "no operation with id '" .. id .. "'"
    end
    if row.status ~= "CREATING_BACKUP" and row.status ~= "RESTORING" then
      if json then
        json_line(out, { id = row.id, status = row.status, error = row.error or "" })
      else
        out:write(row.id .. "\t" .. row.status .. "\n")
      end
      if row.error ~= "" and not row.status:match("CANCELLED$") then
        return nil, row.error
      end
      return true
    end
    os.execute("sleep 0.2")
  end
end


local run


--- Runs the CLI. io_ = {stdout=, stderr=} for tests. Expected failures
-- print their message (exit 1); a Lua error that escapes is a bug and
-- prints one line naming the operation (exit 1), never a traceback.
function cli.main(argv, io_)
  local out = io_ and io_.stdout or io.stdout
  local errout = io_ and io_.stderr or io.stderr
  local state = {}
  local ok, code = pcall(run, argv, out, errout, state)
  if state.meter then
    runner.observe(nil)
    state.meter:clear()
  end
  if ok then
    return code
  end
  return internal_error(errout, state.what or "chbackup", state.op, code)
end


function run(argv, out, errout, state)
  local opts, rest = parse_args(argv)
  if not opts then
    errout:write("chbackup: " .. rest .. "\n" .. USAGE)
    return 2
  end
  if opts.help then
    out:write(USAGE)
    return 0
  end
  if opts.quiet then
    out = { write = function(self) return self end, flush = function() end }
  end
  if #rest == 0 then
    errout:write("chbackup: no statement given\n" .. USAGE)
    return 2
  end
  if rest[1] == "policy" then
    -- policy as code: its own sub-commands (chbackup.policy.cli)
    state.what = "policy " .. tostring(rest[2])
    return require("chbackup.policy.cli").main(rest, opts, { stdout = out, stderr = errout })
  end
  local sub = rest[1]
  if sub == "show" or sub == "chain" or sub == "diff" or sub == "check" or sub == "list" or sub == "wait"
      or sub == "cancel" or sub == "delete" or sub == "rebase" then
    state.what = sub
  else
    state.what = (sub:match("^%s*(%a+)") or "statement"):upper()
  end
  local arity = { show = 2, chain = 2, diff = 3, check = 2, list = 2, delete = 2, rebase = 2, cancel = 2,
    wait = 2 }
  if #rest > 1 and arity[sub] ~= #rest then
    errout:write("chbackup: give statements as one argument, separated by ';'\n")
    return 2
  end
  local inspecting = rest[1] == "show" or rest[1] == "chain" or rest[1] == "diff" or rest[1] == "check"
    or rest[1] == "list" or rest[1] == "delete" or rest[1] == "rebase"
  if opts.password_file and not inspecting then
    errout:write("chbackup: --password-file applies to show, chain, diff, check, list, delete and rebase; "
      .. "give BACKUP and RESTORE "
      .. "SETTINGS password = '…'\n")
    return 2
  end
  if opts.onto and rest[1] ~= "rebase" then
    errout:write("chbackup: --onto applies to rebase\n")
    return 2
  end
  if opts.read_data and rest[1] ~= "check" then
    errout:write("chbackup: --read-data applies to check\n")
    return 2
  end
  -- The progress line: on a terminal only, for what reads data.
  local meter
  if not opts.quiet and errout == io.stderr and core.isatty(2) and (opts.read_data or not inspecting) then
    meter = progress.meter(errout, rest[1] == "check" and "check" or state.what)
    runner.observe(function(event, p) meter:observe(event, p) end)
    state.meter = meter
    -- whatever else is written first erases the line
    local function erasing(stream)
      return { write = function(self, ...)
        meter:clear()
        stream:write(...)
        return self
      end, flush = function() stream:flush() end }
    end
    out, errout = erasing(out), erasing(errout)
  end
  local secret
  if opts.password_file then
    local perr
    secret, perr = fsutil.read_secret(opts.password_file)
    if not secret then
      errout:write("chbackup: --password-file: " .. perr .. "\n")
      return 1
    end
    secret = { password = secret }
  end
  local kinds, cerr = path_use(opts, rest)
  local checked = kinds ~= false
  if checked then
    checked, cerr = check_config(opts)
  end
  if checked and kinds then
    checked, cerr = check_path(opts, kinds)
  end
  if not checked then
    errout:write("chbackup: " .. cerr .. "\n")
    return 1
  end
  local inst, err = open(opts, inspecting)
  if not inst then
    errout:write("chbackup: " .. err .. "\n")
    return 1
  end
  local ok
  -- the backup as shown: S3's key id and secret left out, as ClickHouse shows it
  local dest = rest[2] and require("chbackup.chain").parse_name(rest[2])
  local shown = dest and require("chbackup.sql").format_destination(dest) or rest[2]
  if rest[1] == "show" and #rest == 2 then
    ok, err = cmd_show(inst, rest[2], out, secret, opts.json)
  elseif rest[1] == "chain" and #rest == 2 then
    ok, err = cmd_chain(inst, rest[2], out, secret, opts.json)
  elseif rest[1] == "diff" and #rest == 3 then
    ok, err = cmd_diff(inst, rest[2], rest[3], out, secret, opts.json)
  elseif rest[1] == "check" and #rest == 2 then
    local report
    report, err = inst:check(rest[2], { read_data = opts.read_data, password = secret and secret.password })
    if report and opts.json then
      json_line(out, { backup = shown, ok = report.ok, steps = report.steps })
    elseif report then
      for _, st in ipairs(report.steps) do
        out:write(string.format("%s\t%s\t%s\n", st.ok and "ok" or "PROBLEM", st.name, st.detail))
      end
    end
    if report then
      if not report.ok then
        errout:write("chbackup: backup " .. shown .. " failed its check: " .. report.steps[#report.steps].detail
          .. "\n")
        return 3
      end
      ok = true
    end
  elseif rest[1] == "delete" and #rest == 2 then
    ok, err = inst:delete(rest[2], secret)
    if ok and opts.json then
      json_line(out, { deleted = shown })
    elseif ok then
      out:write("deleted\t" .. shown .. "\n")
    end
  elseif rest[1] == "rebase" and #rest == 2 then
    local bytes
    bytes, err = inst:rebase(rest[2], { password = secret and secret.password, onto = opts.onto })
    ok = bytes ~= nil
    if ok and opts.json then
      json_line(out, { rebased = shown, bytes_written = bytes })
    elseif ok then
      out:write("rebased\t" .. shown .. "\t" .. bytes .. " bytes written\n")
    end
  elseif rest[1] == "list" and #rest == 2 then
    ok, err = cmd_list(inst, rest[2], out, secret, opts.json)
  elseif rest[1] == "cancel" and #rest == 2 then
    ok, err = inst:cancel(rest[2])
    if ok then
      ok, err = cmd_wait(inst, rest[2], out, opts.json)
    end
  elseif rest[1] == "wait" and #rest == 2 then
    ok, err = cmd_wait(inst, rest[2], out, opts.json)
  elseif #rest > 1 then
    errout:write("chbackup: give statements as one argument, separated by ';'\n")
    return 2
  elseif opts.run_operation then
    ok, err = cli.run_operation(inst, opts.run_operation, rest[1], state)
  else
    local r
    ok, err, r = inst:execute(rest[1], {
      on_start = function(op)
        state.op = op
        if meter then
          meter.what = op.request.kind:upper()
        end
      end,
      on_async = function(op) return spawn_async(opts, op, op.request.text) end,
      on_result = function(res)
        state.op = nil
        if res.text or not opts.json then
          out:write(res.text or (res.id .. "\t" .. res.status .. "\n"))
        else
          json_line(out, { id = res.id, status = res.status, error = res.error or "" })
        end
        out:flush()
      end,
    })
    if not ok and r and r.internal then
      -- a bug inside the operation, caught and recorded by it
      local op = state.op
      state.op = nil
      return internal_error(errout, op and op.request.kind:upper() or state.what, nil,
        tostring(err):gsub("^internal error: ", ""), r.id)
    end
  end
  if not ok then
    err = tostring(err)
    if inspecting and not secret and err:find("password", 1, true) then
      err = err .. "; " .. rest[1] .. " takes it as --password-file FILE"
    end
    errout:write("chbackup: " .. err .. "\n")
    return 1
  end
  return 0
end


--- The detached half of an ASYNC operation: runs the statement under the
-- id its parent registered.
function cli.run_operation(inst, id, statement, state)
  local reqs, err = chbackup.parse(statement)
  if not reqs then
    inst.store:finish(id, "BACKUP_FAILED", err)
    return nil, err
  end
  for _, req in ipairs(reqs) do
    if req.kind ~= "select" then
      local op, serr = inst:resume(id, req)
      if not op then
        inst.store:finish(id, req.kind == "backup" and "BACKUP_FAILED" or "RESTORE_FAILED", serr)
        return nil, serr
      end
      if state then
        state.op = op
      end
      local r = op:wait()
      if r.error and r.error ~= "" then
        return nil, r.error
      end
      return true
    end
  end
  return true
end


-- argv that starts this program again (set by the launcher)
cli.launcher = { "lua5.4", "chbackup" }

return cli
