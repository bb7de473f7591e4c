--- `check`: verifies a backup where it lies, without restoring it (restic's
-- `check [--read-data]`, pgBackRest's `verify`).
--
-- Without read_data: the manifest parses; every base of the chain is there
-- with the uuid recorded; every file (through the chain) exists with enough
-- bytes; every table's metadata holds its own statement; every part agrees
-- with its checksums.txt and every Log table with its sizes.json (what
-- RESTORE checks before writing). With read_data, every byte is read back
-- and each file's size and checksum compared with the manifest, on worker
-- threads (a hash-only job).
-- @module chbackup.check
local catalog = require("chbackup.catalog")
local chain = require("chbackup.chain")
local contents = require("chbackup.contents")
local core = require("chbackup.core")
local ddl = require("chbackup.ddl")
local names = require("chbackup.names")
local part_check = require("chbackup.part_check")
local runner = require("chbackup.runner")

local check = {}


-- Checks every table's metadata and data shape. Returns counts or nil, err.
local function check_tables(b)
  local dbs, err = contents.index(b.manifest, b.dest.name)
  if not dbs then
    return nil, err
  end
  local counts = { databases = 0, tables = 0, parts = 0 }
  local function read(e)
    return chain.read(b, e)
  end
  for _, db in pairs(dbs) do
    counts.databases = counts.databases + 1
    if db.metadata then
      local info, ierr = contents.statement(read, db.metadata, db.name, nil, b.dest.name)
      if not info then
        return nil, ierr
      end
    end
    for _, t in pairs(db.tables) do
      if t.metadata then
        counts.tables = counts.tables + 1
        local info, ierr = contents.statement(read, t.metadata, db.name, t.name, b.dest.name)
        if not info then
          return nil, ierr
        end
        local ok
        local has_inner = info.object == "MATERIALIZED VIEW" and ddl.inner_uuid(info.body) ~= nil
        local family = catalog.engine_family(has_inner and "TABLE" or info.object, ddl.engine(info.body))
        if family ~= "none" then
          local data, derr = contents.table_data(t, family, b.dest.name)
          if not data then
            return nil, derr
          end
          for _, p in ipairs(data.parts) do
            ok, err = part_check.check(p.where, p.files, read)
            if not ok then
              return nil, err
            end
            counts.parts = counts.parts + 1
          end
          if family == "log" then
            ok, err = part_check.log_table("backup " .. b.dest.name .. ": table "
              .. names.qualified(db.name, t.name), data.files, read)
            if not ok then
              return nil, err
            end
          end
        end
      end
    end
  end
  return counts
end


-- Reads every file of b back through the chain, checking size and checksum.
local function read_data(b, opts)
  local files, bytes, reads = 0, 0, {}
  for _, e in ipairs(b.manifest.files) do
    if e.size > 0 then
      local pieces, err = chain.pieces(b, e)
      if not pieces then
        return nil, err
      end
      reads[#reads + 1] = { pieces, e }
      files, bytes = files + 1, bytes + e.size
    end
  end
  local threads = chain.archive_order(reads, function(r) return r[1] end)
  local job = core.job({ threads = threads or opts.threads, ordered = threads ~= nil })
  for _, r in ipairs(reads) do
    job:add(r[1], nil, r[2].size, r[2].checksum)
  end
  local ok, err = runner.run(job, opts.progress, opts.cancelled)
  job:close()
  if not ok then
    return nil, "backup " .. b.dest.name .. ": " .. err
  end
  return files, bytes
end


--- Checks backup b (chain.open's result). opts: read_data, threads,
-- progress(p), cancelled(). Returns a report: { ok = bool, steps = { {name=,
-- ok=, detail=} } }, where a failed step's detail names what is wrong.
function check.run(b, opts)
  opts = opts or {}
  local report = { ok = true, steps = {} }
  local function step(name, ok, detail)
    report.steps[#report.steps + 1] = { name = name, ok = ok and true or false, detail = detail }
    report.ok = report.ok and ok and true or false
    return ok
  end
  step("manifest", true, string.format("%d files", #b.manifest.files))
  local bases, err = chain.list(b)
  if not step("chain", bases, bases and string.format("%d backup%s", #bases, #bases == 1 and "" or "s") or err) then
    return report
  end
  local present
  present, err = chain.check(b)
  if not step("files", present, present and "every file present with its size" or err) then
    return report
  end
  local counts
  counts, err = check_tables(b)
  if not step("tables", counts, counts and string.format("%d databases, %d tables, %d parts", counts.databases,
      counts.tables, counts.parts) or err) then
    return report
  end
  if opts.read_data then
    local files, bytes = read_data(b, opts)
    step("data", files, files and string.format("%d files, %d bytes read, every checksum equal", files, bytes)
      or bytes)
  end
  return report
end


return check
