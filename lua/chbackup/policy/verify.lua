--- Proving a backup restores: its chain, every checksum, a real restore
-- into a scratch data path, row counts against those recorded at backup
-- time, and the policy's own Lua checks.
--
-- verify.backup(ctx, point) runs, in order (a failed step skips the rest):
--   chain      every base is there with the uuid the backup recorded, and
--              every byte the backup relies on exists (chbackup.chain)
--   checksums  every file of the backup, read through its chain, hashes to
--              the checksum in .backup (ClickHouse's CityHash128)
--   restore    RESTORE ALL into a fresh scratch data path (verifies size and
--              checksum of every file again while copying); its time is the
--              measured restore time
--   row_counts rows per table and partition, recorded at backup time,
--              against the restored data (read with embedded ClickHouse
--              when it is installed: count() and a full read of every
--              column; otherwise from the restored parts' count.txt)
--   <name>     each function of verification.checks
-- @module chbackup.policy.verify
local chain = require("chbackup.chain")
local core = require("chbackup.core")
local counter = require("chbackup.policy.counter")
local disks = require("chbackup.disks")
local fsutil = require("chbackup.fsutil")
local leftovers = require("chbackup.policy.leftovers")
local lock = require("chbackup.lock")
local runner = require("chbackup.runner")
local store_mod = require("chbackup.policy.store")

local verify = {}

local scratch_counter = 0


local function seconds_since(us)
  return (core.now_us() - us) / 1e6
end


-- The backup file named by a job error: the stored file or zip entry it
-- names ("... for /path: ...", "... in entry E of /x.zip"), else, for a
-- checksum mismatch reported on a whole archive, the file whose expected
-- checksum it quotes.
local function name_failed_entry(msg, by_key, by_checksum)
  for key, entry in pairs(by_key) do
    if msg:find(key, 1, true) then
      return entry
    end
  end
  local want = msg:match("checksum mismatch for .-: expected (%x+),")
  return want and by_checksum[want:lower()]
end


--- Checks every file of backup b through its chain with a hash-only job.
-- Returns true or nil, err naming the backup file.
function verify.checksums(b, threads)
  local job, err = core.job({ threads = threads })
  if not job then
    return nil, err
  end
  local by_key, by_checksum = {}, {}
  for _, e in ipairs(b.manifest.files) do
    if e.size > 0 then
      local pieces, perr = chain.pieces(b, e)
      if not pieces then
        job:close()
        return nil, perr
      end
      local in_zip = false
      for _, p in ipairs(pieces) do
        in_zip = in_zip or p.entry ~= nil
      end
      if in_zip then
        -- an error names a zip entry as "entry E of /x.zip"
        for _, p in ipairs(pieces) do
          local key = p.entry and ("entry " .. p.entry .. " of " .. p[1]) or p[1]
          by_key[key] = by_key[key] or e.name
        end
      else
        local path = pieces[#pieces][1]
        by_key[path] = by_key[path] or e.name
      end
      by_checksum[tostring(e.checksum):lower()] = by_checksum[tostring(e.checksum):lower()] or e.name
      job:add(pieces, nil, e.size, e.checksum)
    end
  end
  local ok, rerr = runner.run(job)
  job:close()
  if not ok then
    local entry = name_failed_entry(rerr or "", by_key, by_checksum)
    if entry then
      return nil, "corrupted file " .. entry .. " in backup " .. b.dest.name .. ": " .. rerr
    end
    return nil, "backup " .. b.dest.name .. " failed its checksum check: " .. tostring(rerr)
  end
  return true
end


-- The configuration a scratch restore uses: the source's, with every local
-- disk other than the default one and the backup disks moved into the
-- scratch directory, so that parts restored onto a storage policy's other
-- disks (`cold`, …) land in scratch, never on the production disks.
function verify.scratch_config(cfg, scratch)
  local out = {}
  for k, v in pairs(cfg) do
    out[k] = v
  end
  local keep = {}
  for _, name in ipairs(cfg.allowed_disks or {}) do
    keep[name] = true
  end
  out.disks = {}
  for name, d in pairs(cfg.disks or {}) do
    if d.type == "local" and name ~= "default" and not keep[name] then
      local copy = {}
      for k, v in pairs(d) do
        copy[k] = v
      end
      copy.path = scratch .. "/disks/" .. name .. "/"
      out.disks[name] = copy
    else
      out.disks[name] = d
    end
  end
  return out
end


local function default_restore(ctx, data, point)
  local chbackup = require("chbackup")
  local inst, err = chbackup.open({ path = data, config = verify.scratch_config(ctx.cfg, data:gsub("/data$", "")),
    status_dir = data:gsub("/data$", "") .. "/status", threads = ctx.threads })
  if not inst then
    return nil, err
  end
  local statement = "RESTORE ALL FROM " .. point.destination
  if ctx.password then
    statement = statement .. " SETTINGS password = " .. require("chbackup.sql").quote_string(ctx.password)
  end
  local ok, rerr = inst:execute(statement)
  if not ok then
    return nil, rerr
  end
  return true
end


local function check_list(checks)
  local list = {}
  if type(checks) ~= "table" then
    return list
  end
  for i, f in ipairs(checks) do
    list[#list + 1] = { name = "check " .. i, f = f }
  end
  local named = {}
  for k, f in pairs(checks) do
    if type(k) == "string" then
      named[#named + 1] = { name = k, f = f }
    end
  end
  table.sort(named, function(a, b) return a.name < b.name end)
  for _, c in ipairs(named) do
    list[#list + 1] = c
  end
  return list
end


--- Verifies one restore point. ctx: {cfg=, policy=, now=, threads=,
-- scratch = root dir for scratch data paths, keep_scratch=, password=,
-- clickhouse = run|nil, clickhouse_why=, restore = function(ctx, data,
-- point) (default: chbackup RESTORE ALL), log = function(msg)}.
-- Returns {backup=, ok=, time=, duration=, restore_seconds=, checks =
-- {{name=, ok = true|false|nil (skipped), message=, seconds=}}, scratch=}.
function verify.backup(ctx, point)
  local started = core.now_us()
  local result = { backup = point.name, time = ctx.now, checks = {}, ok = true }
  local failed = false
  local function step(name, fn)
    local t0 = core.now_us()
    local c = { name = name }
    if failed then
      c.ok, c.message = nil, "skipped: an earlier step failed"
    else
      local ok, res, msg = pcall(fn)
      if not ok then
        c.ok, c.message = false, tostring(res)
      elseif res == false or res == nil then
        c.ok, c.message = false, msg or "failed"
      else
        c.ok, c.message = true, type(res) == "string" and res or msg
      end
      if c.ok == false then
        failed = true
        result.ok = false
      end
    end
    if type(c.message) == "string" then
      c.message = c.message:gsub("%s+$", "")
    end
    c.seconds = seconds_since(t0)
    result.checks[#result.checks + 1] = c
    return c
  end

  local b
  step("chain", function()
    local dest, err = chain.parse_name(point.destination)
    if not dest then
      return false, err
    end
    b, err = chain.open(ctx.cfg, dest, { password = ctx.password })
    if not b then
      return false, "backup " .. point.name .. " cannot be read: " .. err
    end
    local list
    list, err = chain.list(b)
    if not list then
      return false, "missing base: " .. err
    end
    local ok, cerr = chain.check(b)
    if not ok then
      return false, "broken chain: " .. cerr
    end
    return string.format("%d backup(s) in the chain", #list)
  end)

  step("checksums", function()
    local ok, err = verify.checksums(b, ctx.threads)
    if not ok then
      return false, err
    end
    return string.format("%d files match their checksums", #b.manifest.files)
  end)

  scratch_counter = scratch_counter + 1
  local scratch = string.format("%s/chbackup-verify-%s-%d-%d", ctx.scratch, ctx.policy.name, core.getpid(),
    scratch_counter)
  local data = scratch .. "/data"
  local restored_ok = false
  local scratch_lock
  local rc = step("restore", function()
    store_mod.remove_tree(scratch)
    local ok, err = fsutil.mkdir_p(scratch)
    if not ok then
      return false, err
    end
    -- held while the scratch data path is in use: one nobody holds is a
    -- killed verification's, removed by the policy's next run
    scratch_lock, err = lock.take(scratch .. "/" .. leftovers.VERIFY_LOCK, "verify " .. point.name,
      function(holder) return scratch .. " is in use by " .. holder end)
    if not scratch_lock then
      return false, err
    end
    local t0 = core.now_us()
    ok, err = (ctx.restore or default_restore)(ctx, data, point)
    result.restore_seconds = seconds_since(t0)
    if not ok then
      return false, "restore failed: " .. tostring(err)
    end
    restored_ok = true
    return string.format("RESTORE ALL into a scratch data path took %.2f s (%s)", result.restore_seconds, data)
  end)
  result.scratch = scratch

  -- ClickHouse on the scratch data path needs the disks and storage
  -- policies its tables use (moved into scratch, as the restore used them)
  local clickhouse = ctx.clickhouse
  local ch_xml = ctx.clickhouse and disks.clickhouse_config(verify.scratch_config(ctx.cfg, scratch))
  if ch_xml and fsutil.write_file(scratch .. "/clickhouse-config.xml", ch_xml) then
    clickhouse = function(path, statements)
      return ctx.clickhouse(path, statements, scratch .. "/clickhouse-config.xml")
    end
  end

  local restored_rows
  step("row_counts", function()
    local recorded = point.record and point.record.rows
    local how
    local rerr
    if ctx.clickhouse then
      restored_rows, rerr = counter.with_clickhouse(clickhouse, data, { digest = true })
      how = "read with " .. (ctx.clickhouse_name or "ClickHouse")
    else
      restored_rows, rerr = counter.from_data_path(data, verify.scratch_config(ctx.cfg, scratch))
      how = "from the restored parts' count.txt (no ClickHouse: " .. tostring(ctx.clickhouse_why) .. ")"
    end
    if not restored_rows then
      return false, "cannot count the restored rows: " .. tostring(rerr)
    end
    if type(recorded) ~= "table" and ctx.policy.verification.row_counts and point.record
        and not point.record.rows_error then
      -- the policy counts rows at backup time: a run killed before it
      -- recorded them (and no later run could) leaves nothing to compare
      return false, "no row counts were recorded for " .. point.name .. " (policy record "
        .. tostring(point.record.name or point.name) .. ".chbackup.json has none; the run that made it was "
        .. "interrupted and they could not be counted since); restored data " .. how
    end
    if type(recorded) ~= "table" then
      return "no row counts were recorded at backup time; restored data " .. how
    end
    local problems, notes = counter.compare(recorded, restored_rows)
    if #problems > 0 then
      return false, table.concat(problems, "; ")
    end
    local n = 0
    for _, ts in pairs(recorded) do
      for _ in pairs(ts) do n = n + 1 end
    end
    local msg = string.format("%d tables agree with the counts recorded at backup time (%s)", n, how)
    if #notes > 0 then
      msg = msg .. "; " .. table.concat(notes, "; ")
    end
    return msg
  end)

  for _, c in ipairs(check_list(ctx.policy.verification.checks)) do
    step(c.name, function()
      local env = {
        backup = point.name, kind = point.kind, time = point.time, path = data, policy = ctx.policy.name,
        now = ctx.now, rows = restored_rows, recorded = point.record and point.record.rows,
        log = ctx.log or function() end,
        query = function(text)
          if not ctx.clickhouse then
            error("no ClickHouse to query the restored data with: " .. tostring(ctx.clickhouse_why), 2)
          end
          local out, err = clickhouse(data, { text })
          if not out then
            error(err, 2)
          end
          return out
        end,
      }
      local res, msg = c.f(env)
      if res == false then
        return false, msg or ("check '" .. c.name .. "' failed")
      end
      return type(res) == "string" and res or "ok"
    end)
  end

  if b then
    counter.close(b)
  end
  if not ctx.keep_scratch and (restored_ok or rc.ok ~= nil) then
    leftovers.remove_tree(scratch, leftovers.VERIFY_LOCK)
    result.scratch = nil
  end
  if scratch_lock then
    scratch_lock:release(true)
  end
  result.duration = seconds_since(started)
  return result
end


--- A short summary of a result for the policy record.
function verify.summary(result)
  local checks = {}
  for _, c in ipairs(result.checks) do
    checks[#checks + 1] = { name = c.name, ok = c.ok, message = c.message }
  end
  return {
    time = result.time, ok = result.ok, duration = result.duration, restore_seconds = result.restore_seconds,
    checks = checks,
  }
end


return verify
