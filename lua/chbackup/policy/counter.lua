--- Row counts per table and partition, and finding real ClickHouse.
--
-- A count table: { [db] = { [table] = { engine=, total = n|nil,
--   partitions = { [partition_id] = n } | nil, digest = "n"|nil } } }.
-- total = nil means "not counted" (a Log-family table read without
-- ClickHouse). digest is sum(cityHash64(tuple(*))) as a decimal string.
--
-- Counters:
--   counter.from_backup(cfg, dest, o)      count.txt of every part in the
--       backup (read through its chain, each file checked against its
--       checksum): exact for MergeTree tables, reads no data file, needs no
--       server; Log-family tables are not counted.
--   counter.from_data_path(path[, cfg])    the same, from a data path's active parts (cfg: on
--                                          every disk of each table's storage policy).
--   counter.with_clickhouse(run, path, o)  real ClickHouse (embedded) on a
--       data path: rows per partition from system.parts, count() and, with
--       o.digest, sum(cityHash64(tuple(*))) — a full read of every column.
-- @module chbackup.policy.counter
local catalog = require("chbackup.catalog")
local chain = require("chbackup.chain")
local ddl = require("chbackup.ddl")
local fsutil = require("chbackup.fsutil")
local names = require("chbackup.names")
local sql = require("chbackup.sql")

local counter = {}


local function family_of(object, body)
  local engine = ddl.engine(body or "")
  if object == "MATERIALIZED VIEW" and ddl.inner_uuid(body or "") then
    return catalog.engine_family("TABLE", engine), engine
  end
  return catalog.engine_family(object, engine), engine
end


local function slot(rows, db, t)
  rows[db] = rows[db] or {}
  rows[db][t] = rows[db][t] or {}
  return rows[db][t]
end


--- Closes the zip readers of an opened backup's chain (chain.open).
function counter.close(b)
  local x = b
  while x do
    x.store:close()
    x = x.base or nil
  end
end


-- Counts the rows of an opened backup (chain.open).
local function count_opened(b)
  local rows = {}
  for _, f in ipairs(b.manifest.files) do
    local edb, et = f.name:match("^metadata/([^/]+)/([^/]+)%.sql$")
    if edb then
      local text, rerr = chain.read(b, f)
      if not text then
        return nil, rerr
      end
      local info = ddl.parse_create(text)
      local family, engine = family_of(info and info.object, info and info.body)
      if family ~= "none" then
        local s = slot(rows, names.unescape_file(edb), names.unescape_file(et))
        s.engine = engine
        if family == "mergetree" then
          s.total, s.partitions = s.total or 0, s.partitions or {}
        end
      end
    end
  end
  for _, f in ipairs(b.manifest.files) do
    local edb, et, part = f.name:match("^data/([^/]+)/([^/]+)/([^/]+)/count%.txt$")
    local info = part and catalog.parse_part_name(part)
    if info then
      local text, rerr = chain.read(b, f)
      if not text then
        return nil, rerr
      end
      local n = math.tointeger(tonumber(text:match("^%s*(%d+)")))
      if not n then
        return nil, "backup " .. b.dest.name .. ": " .. f.name .. " is not a row count"
      end
      local s = slot(rows, names.unescape_file(edb), names.unescape_file(et))
      s.total = (s.total or 0) + n
      s.partitions = s.partitions or {}
      s.partitions[info.partition_id] = (s.partitions[info.partition_id] or 0) + n
    end
  end
  return rows
end


--- Counts a backup's rows from its parts' count.txt. dest is a destination
-- table (as chain.parse_name returns), a directory or a zip backup;
-- opts.password opens password-protected zips. Returns rows or nil, err.
function counter.from_backup(cfg, dest, opts)
  local b, err = chain.open(cfg, dest, { password = opts and opts.password })
  if not b then
    return nil, err
  end
  local rows
  rows, err = count_opened(b)
  counter.close(b)
  return rows, err
end


-- The tables of a data path that hold data, outside the system databases:
-- list of {db = name, t = catalog table}, or nil, err.
local function data_tables(path, cfg)
  local cat, err = catalog.open(path, cfg)
  if not cat then
    return nil, err
  end
  local out = {}
  for _, db in ipairs(cat:databases()) do
    if not db.system then
      local list, terr = cat:tables(db.name)
      if not list then
        return nil, terr
      end
      for _, t in ipairs(list) do
        if t.family ~= "none" then
          if cfg then   -- the table's parts on every disk of its storage policy
            local ok, perr = cat:place(t)
            if not ok then
              return nil, perr
            end
          end
          out[#out + 1] = { db = db.name, t = t }
        end
      end
    end
  end
  return out
end


--- Counts rows of a data path from its active parts' count.txt.
function counter.from_data_path(path, cfg)
  local tables, err = data_tables(path, cfg)
  if not tables then
    return nil, err
  end
  local rows = {}
  for _, x in ipairs(tables) do
    local t = x.t
    local s = slot(rows, x.db, t.name)
    s.engine = t.engine
    if t.family == "mergetree" then
      s.total, s.partitions = 0, {}
      local visited, perr = catalog.each_active_part(t, function(part)
        local text = fsutil.read_file(part.dir .. "/count.txt")
        local n = math.tointeger(tonumber(text and text:match("^%s*(%d+)")))
        if not n then
          return "cannot read a row count from " .. part.dir .. "/count.txt"
        end
        s.total = s.total + n
        s.partitions[part.partition_id] = (s.partitions[part.partition_id] or 0) + n
      end)
      if not visited then
        return nil, perr
      end
    end
  end
  return rows
end


-- TSV as ClickHouse escapes it.
local TSV_UNESCAPE = { t = "\t", n = "\n", ["\\"] = "\\", r = "\r", ["0"] = "\0", ["'"] = "'", b = "\b", f = "\f" }
local function tsv_fields(line)
  local out = {}
  for field in (line .. "\t"):gmatch("([^\t]*)\t") do
    out[#out + 1] = field:gsub("\\(.)", function(c) return TSV_UNESCAPE[c] or c end)
  end
  return out
end


--- Counts with real ClickHouse: run(path, statements) -> text | nil, err
-- (see counter.find_clickhouse). o.digest adds a full read of every column.
-- Returns rows or nil, err.
function counter.with_clickhouse(run, path, o)
  o = o or {}
  local tables, err = data_tables(path)
  if not tables then
    return nil, err
  end
  local stmts = {
    "SELECT 'part', database, table, partition_id, sum(rows) FROM system.parts WHERE active "
      .. "AND database NOT IN ('system', 'information_schema', 'INFORMATION_SCHEMA') "
      .. "GROUP BY database, table, partition_id FORMAT TSV",
  }
  local rows, inner = {}, {}
  local what = o.digest and "count(), toString(sum(cityHash64(tuple(*))))" or "count(), ''"
  for _, x in ipairs(tables) do
    local db, t = x.db, x.t
    slot(rows, db, t.name).engine = t.engine
    if t.inner then
      inner[db .. "\0" .. t.inner.name] = t.name
    end
    stmts[#stmts + 1] = string.format("SELECT 'count', %s, %s, %s FROM %s.%s FORMAT TSV",
      sql.quote_string(db), sql.quote_string(t.name), what, sql.quote_identifier(db), sql.quote_identifier(t.name))
  end
  local text
  text, err = run(path, stmts)
  if not text then
    return nil, err
  end
  for line in text:gmatch("[^\n]+") do
    local f = tsv_fields(line)
    if f[1] == "part" then
      local name = inner[f[2] .. "\0" .. f[3]] or f[3]
      local s = rows[f[2]] and rows[f[2]][name]
      if s then
        s.partitions = s.partitions or {}
        s.partitions[f[4]] = (s.partitions[f[4]] or 0) + math.tointeger(tonumber(f[5]))
      end
    elseif f[1] == "count" then
      local s = slot(rows, f[2], f[3])
      s.total = math.tointeger(tonumber(f[4]))
      s.digest = f[5] ~= "" and f[5] or nil
    end
  end
  return rows
end


local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


-- The checkout this module runs from (for build/chq), or nil.
local function checkout_root()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)/lua/chbackup/policy/counter%.lua$")
end


--- The runner an installed rock puts beside chbackup/core.so (CMake
-- installs chq there), or nil.
function counter.installed_chq()
  local core_so = package.searchpath("chbackup.core", package.cpath)
  return core_so and core_so:gsub("core%.so$", "chq") or nil
end


--- Finds real ClickHouse to read data paths with. spec: nil or "auto"
-- (CHBACKUP_CHQ / CHDB_LIB, else the checkout's build/chq with the library
-- scripts/get-clickhouse caches), false (none), {chq=, lib=}, or a function
-- run(path, statements) -> text | nil, err used as is.
-- Returns run, description or nil, why.
function counter.find_clickhouse(spec)
  if spec == false then
    return nil, "verification.clickhouse is false"
  end
  if type(spec) == "function" then
    return spec, "the policy's clickhouse function"
  end
  local chq, lib
  if type(spec) == "table" then
    chq, lib = spec.chq, spec.lib
  end
  local root = checkout_root()
  chq = chq or os.getenv("CHBACKUP_CHQ") or (root and root .. "/build/chq") or counter.installed_chq()
  local cache = os.getenv("CHBACKUP_CACHE") or ((os.getenv("HOME") or "/root") .. "/.cache/chbackup")
  lib = lib or os.getenv("CHDB_LIB") or (cache .. "/chdb/package/libchdb.so")
  if not chq or not fsutil.exists(chq) then
    return nil, "embedded ClickHouse runner not found (" .. tostring(chq) .. "; set CHBACKUP_CHQ)"
  end
  if not fsutil.exists(lib) then
    return nil, "ClickHouse library not found (" .. lib .. "; run scripts/get-clickhouse or set CHDB_LIB)"
  end
  local function run(path, statements, config_file)
    local cmd = { q(chq), "--lib", q(lib), "--path", q(path) }
    if config_file then   -- disks and storage policies the data path's tables use
      cmd[#cmd + 1] = "--config " .. q(config_file)
    end
    for _, s in ipairs(statements) do
      cmd[#cmd + 1] = q(s)
    end
    local errfile = os.tmpname()
    local p = io.popen(table.concat(cmd, " ") .. " 2>" .. q(errfile))
    local out = p:read("a")
    local ok = p:close()
    local errtext = fsutil.read_file(errfile) or ""
    os.remove(errfile)
    if not ok then
      return nil, "ClickHouse failed on " .. path .. ": " .. (errtext ~= "" and errtext:gsub("%s+$", "") or out)
    end
    return out
  end
  return run, "embedded ClickHouse (" .. lib .. ")"
end


--- Compares counts recorded at backup time with counts of restored data.
-- Returns a list of problems (strings), empty when they agree, and a list
-- of notes (what could not be compared).
function counter.compare(recorded, restored)
  local problems, notes = {}, {}
  local dbs = {}
  for db in pairs(recorded) do dbs[#dbs + 1] = db end
  table.sort(dbs)
  for _, db in ipairs(dbs) do
    local tnames = {}
    for t in pairs(recorded[db]) do tnames[#tnames + 1] = t end
    table.sort(tnames)
    for _, t in ipairs(tnames) do
      local want = recorded[db][t]
      local got = restored[db] and restored[db][t]
      local name = db .. "." .. t
      if not got then
        problems[#problems + 1] = "table " .. name .. " is missing after the restore"
      elseif want.total == nil then
        notes[#notes + 1] = name .. ": not counted at backup time (" .. tostring(want.engine) .. ")"
      elseif got.total == nil then
        notes[#notes + 1] = name .. ": not counted after the restore (" .. tostring(got.engine) .. ")"
      else
        if got.total ~= want.total then
          problems[#problems + 1] = string.format("row count mismatch in %s: %d rows at backup time, %d restored",
            name, want.total, got.total)
        end
        if want.partitions and got.partitions then
          local pids, seen = {}, {}
          for pid in pairs(want.partitions) do pids[#pids + 1] = pid; seen[pid] = true end
          for pid in pairs(got.partitions) do if not seen[pid] then pids[#pids + 1] = pid end end
          table.sort(pids)
          for _, pid in ipairs(pids) do
            local a, b = want.partitions[pid] or 0, got.partitions[pid] or 0
            if a ~= b then
              problems[#problems + 1] = string.format(
                "row count mismatch in %s partition %s: %d rows at backup time, %d restored", name, pid, a, b)
            end
          end
        end
        if want.digest and got.digest and want.digest ~= got.digest then
          problems[#problems + 1] = string.format("content mismatch in %s: sum(cityHash64(tuple(*))) was %s at "
            .. "backup time, %s restored", name, want.digest, got.digest)
        end
      end
    end
  end
  return problems, notes
end


return counter
