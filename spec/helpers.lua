-- Shared spec helpers: scratch directories, fixture copies, configs, and
-- real ClickHouse (chDB through spec/tools/chq) for counting rows.
local lfs = require("lfs")

local helpers = {}

local ROOT = lfs.currentdir()
helpers.ROOT = ROOT
helpers.FIXTURES = ROOT .. "/spec/fixtures"

package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
package.cpath = ROOT .. "/build/?.so;" .. package.cpath


local function sh(cmd)
  local ok = os.execute(cmd)
  return ok
end


function helpers.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local q = helpers.quote


local TMP = ROOT .. "/spec/.tmp"
local stderr_seq = 0

--- Runs a shell command. Returns ok, out, code, stderr: out is its stdout
-- followed by chbackup's own stderr lines (those starting "chbackup"), so
-- that a child's warnings (embedded ClickHouse's, 7-Zip's) never get into
-- what specs compare; stderr is all of it, for assertion messages.
function helpers.run(cmd)
  stderr_seq = stderr_seq + 1
  assert(sh("mkdir -p " .. q(TMP)))
  local errfile = string.format("%s/%d-stderr-%d", TMP, helpers.pid(), stderr_seq)
  local p = io.popen("(" .. cmd .. ") 2>" .. q(errfile))
  local out = p:read("a")
  local ok, _, code = p:close()
  local f = io.open(errfile, "rb")
  local err = f and f:read("a") or ""
  if f then
    f:close()
  end
  os.remove(errfile)
  for line in err:gmatch("[^\n]*\n?") do
    if line:match("^chbackup[%s:]") then
      out = out .. line
    end
  end
  return ok, out, code, err
end


-- Scratch directories: spec/.tmp/<pid>-<n>-<name>. Each copy of this module
-- (busted loads it once per spec file) removes the directories it made when
-- the Lua state closes, and, when loaded, those that a process no longer
-- running left (a run that was killed). CHBACKUP_KEEP_SPEC_TMP=1 keeps them.
local made = {}
local keep = os.getenv("CHBACKUP_KEEP_SPEC_TMP") == "1"

local function remove_made()
  for _, dir in ipairs(made) do
    os.execute("rm -rf " .. q(dir))
  end
  made = {}
end

if not keep then
  -- a value whose finalizer runs when the module is collected or the state closes
  helpers._cleanup = setmetatable({}, { __gc = remove_made })
  if lfs.attributes(TMP, "mode") == "directory" then
    for entry in lfs.dir(TMP) do
      local pid = entry:match("^(%d+)%-")
      if pid and not lfs.attributes("/proc/" .. pid) then
        os.execute("rm -rf " .. q(TMP .. "/" .. entry))
      end
    end
  end
end


local counter = 0
--- A fresh scratch directory under spec/.tmp, removed when this run ends.
function helpers.tmpdir(name)
  assert(sh("mkdir -p " .. q(TMP)))
  local dir
  repeat
    -- busted loads this module once per spec file, each with its own counter
    counter = counter + 1
    dir = string.format("%s/%d-%d-%s", TMP, helpers.pid(), counter, name or "t")
  until lfs.mkdir(dir)
  made[#made + 1] = dir
  return dir
end


function helpers.pid()
  local f = io.open("/proc/self/stat")
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  return tonumber(pid)
end


--- A copy of a fixture data path (with the empty directories git cannot
-- keep recreated), ready to be opened by chbackup or ClickHouse.
function helpers.copy_datapath(dst)
  assert(sh("cp -a " .. q(helpers.FIXTURES .. "/datapath") .. " " .. q(dst)))
  for line in io.lines(helpers.FIXTURES .. "/empty_dirs.txt") do
    local rel = line:match("^datapath/(.+)$")
    if rel then
      assert(sh("mkdir -p " .. q(dst .. "/" .. rel)))
    end
  end
  return dst
end


--- A ClickHouse XML config with disk `backups` at `dir` (allowed).
function helpers.write_config(path, backups_dir)
  local f = assert(io.open(path, "w"))
  f:write((([[
<clickhouse>
  <timezone>UTC</timezone>
  <storage_configuration><disks>
    <backups><type>local</type><path>@/</path></backups>
  </disks></storage_configuration>
  <backups><allowed_disk>backups</allowed_disk><allowed_path>@/</allowed_path></backups>
</clickhouse>
]]):gsub("@", backups_dir)))
  f:close()
  return path
end


--- A scratch world: data path copy, backups dir, config, status dir.
function helpers.world(name)
  local dir = helpers.tmpdir(name)
  local w = {
    dir = dir, data = dir .. "/data", backups = dir .. "/backups",
    config = dir .. "/config.xml", status = dir .. "/status",
  }
  helpers.copy_datapath(w.data)
  assert(sh("mkdir -p " .. q(w.backups)))
  helpers.write_config(w.config, w.backups)
  return w
end


function helpers.open(w, path)
  local chbackup = require("chbackup")
  return assert(chbackup.open({ path = path or w.data, config = w.config, status_dir = w.status }))
end


--- Runs statement (BACKUP/RESTORE/SELECT; several with ';') through the Lua
-- API on w's data path (or path); asserts success and returns the results.
function helpers.sql(w, statement, path)
  local r, err = helpers.open(w, path):execute(statement)
  assert(r, err)
  return r
end


--- The error of a statement that must be refused (asserted).
function helpers.sql_refused(w, statement, path)
  local r, err = helpers.open(w, path):execute(statement)
  if r then
    error("not refused: " .. statement, 2)
  end
  return err
end


--- Runs the CLI as a separate process. Returns ok, output.
function helpers.cli(w, statement, extra)
  local cmd = string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s %s",
    ROOT, q(extra and extra.path or w.data), q(w.config), q(w.status),
    extra and extra.args or "", q(statement))
  return helpers.run(cmd)
end


-- Real ClickHouse ------------------------------------------------------------

local chdb_lib
function helpers.chdb_lib()
  if chdb_lib == nil then
    local p = io.popen(ROOT .. "/scripts/get-clickhouse")
    chdb_lib = (p:read("a") or ""):match("[^\n]+")
    p:close()
    assert(chdb_lib and chdb_lib ~= "", "real ClickHouse is not available: scripts/get-clickhouse failed")
  end
  return chdb_lib
end


--- Runs statements with embedded ClickHouse on a data path. Returns output
-- (TSV); raises with ClickHouse's error if a statement fails.
function helpers.clickhouse(path, statements, config)
  local cmd = { q(ROOT .. "/build/chq"), "--lib", q(helpers.chdb_lib()), "--path", q(path) }
  if config then
    cmd[#cmd + 1] = "--config " .. q(config)
  end
  for _, s in ipairs(statements) do
    cmd[#cmd + 1] = q(s)
  end
  -- stdout only: ClickHouse's warnings on stderr are not results
  local ok, out, _, err = helpers.run(table.concat(cmd, " "))
  assert(ok, "ClickHouse failed: " .. out .. err)
  return out
end


--- A shell command that must succeed.
function helpers.sh(cmd)
  assert(os.execute(cmd), cmd)
end


--- A place {data=, config=, status=}: statements run by embedded ClickHouse
-- on it (output, raises on failure), or by chbackup's Lua API (its results,
-- or nil, err).
function helpers.ch(p, stmts)
  return helpers.clickhouse(p.data, stmts, p.config)
end

function helpers.chb(p, statement)
  local chbackup = require("chbackup")
  local inst = assert(chbackup.open({ path = p.data, config = p.config, status_dir = p.status }))
  return inst:execute(statement)
end


--- The JSON lines of a command's output, each decoded (`--json`).
function helpers.json_lines(out)
  local rows = {}
  for line in out:gmatch("[^\n]+") do
    rows[#rows + 1] = require("cjson").decode(line)
  end
  return rows
end


--- count() and sum(cityHash64(tuple(*))) of each table, as "db\ttable\tcount\thash" lines.
function helpers.table_digests(path, tables)
  local stmts = {}
  for _, t in ipairs(tables) do
    stmts[#stmts + 1] = string.format(
      "SELECT '%s', '%s', count(), sum(cityHash64(tuple(*))) FROM `%s`.`%s` FORMAT TSV",
      t[1], t[2], t[1], t[2])
  end
  return helpers.clickhouse(path, stmts)
end


--- The fixture's expected digests: list of {db, table, count, hash}.
function helpers.expected(file)
  local rows = {}
  for line in io.lines(helpers.FIXTURES .. "/" .. (file or "expected.tsv")) do
    local db, t, n, h = line:match("^([^\t]+)\t([^\t]+)\t(%d+)\t(%d+)$")
    if db then
      rows[#rows + 1] = { db, t, n, h }
    end
  end
  return rows
end


function helpers.digest_text(rows)
  local out = {}
  for _, r in ipairs(rows) do
    out[#out + 1] = table.concat(r, "\t")
  end
  return table.concat(out, "\n") .. "\n"
end


--- A data path `<w.dir>/<name>` made by real ClickHouse (statements, with
-- w's config) with access entities written in ClickHouse's on-disk format
-- (entities: uuid -> `ATTACH …;` lines; chDB has no local access storage
-- to make them). Returns its path.
function helpers.server_source(w, name, statements, entities)
  local src = w.dir .. "/" .. name
  helpers.clickhouse(src, statements, w.config)
  assert(sh("mkdir -p " .. q(src .. "/access")))
  for id, text in pairs(entities) do
    helpers.write(src .. "/access/" .. id .. ".sql", text)
  end
  return src
end


--- The entities of an access directory with every ID('…') replaced by the
-- name of the entity it refers to: equal for a source and its restore.
function helpers.access_by_name(dir)
  local by_id = assert(require("chbackup.access").read_dir(dir))
  local out = {}
  for _, e in pairs(by_id) do
    out[#out + 1] = (table.concat(e.lines, "\n"):gsub("ID%('([^']*)'%)", function(id)
      return "<" .. (by_id[id] and by_id[id].name or "?") .. ">"
    end))
  end
  table.sort(out)
  return out
end


-- Files ----------------------------------------------------------------------

function helpers.read(path)
  local f = io.open(path, "rb")
  if not f then
    return nil
  end
  local s = f:read("a")
  f:close()
  return s
end


function helpers.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end


function helpers.exists(path)
  return lfs.symlinkattributes(path) ~= nil
end


--- Every file under dir (relative names), sorted.
function helpers.tree(dir)
  local out = {}
  local function walk(d, prefix)
    for e in lfs.dir(d) do
      if e ~= "." and e ~= ".." then
        local p = d .. "/" .. e
        local mode = lfs.symlinkattributes(p, "mode")
        if mode == "directory" then
          walk(p, prefix .. e .. "/")
        else
          out[#out + 1] = prefix .. e
        end
      end
    end
  end
  if lfs.attributes(dir, "mode") == "directory" then
    walk(dir, "")
  end
  table.sort(out)
  return out
end


--- Whether list holds x.
function helpers.has(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end


--- An s3rver (scripts/s3rver) on a free port serving `bucket` from dir/srv
-- (key id and secret S3RVER). Returns {port=, url = "http://127.0.0.1:port/
-- bucket/" .. prefix, client = core.s3_client, start(), stop()}: start()
-- (again after a stop: what was written stays) renews port, url and client.
function helpers.s3rver(dir, bucket, prefix)
  local srv = { dir = dir .. "/srv" }
  function srv.start()
    local p = io.popen(string.format("CHB_S3RVER_PARENT=%d %s/scripts/s3rver start %s %s",
      helpers.pid(), helpers.quote(helpers.ROOT), helpers.quote(srv.dir), bucket))
    local out = p:read("a")
    assert(p:close(), "scripts/s3rver start failed")
    srv.port = assert(tonumber(out:match("^(%d+) %d+")), "no port from scripts/s3rver: " .. out)
    srv.url = "http://127.0.0.1:" .. srv.port .. "/" .. bucket .. "/" .. prefix
    if srv.client then
      srv.client:close()
    end
    srv.client = assert(require("chbackup.core").s3_client({ endpoint = "http://127.0.0.1:" .. srv.port,
      bucket = bucket, key_id = "S3RVER", secret = "S3RVER", path_style = true }))
    return srv
  end
  function srv.stop()
    os.execute(string.format("%s/scripts/s3rver stop %s", helpers.quote(helpers.ROOT), helpers.quote(srv.dir)))
  end
  --- For a spec's teardown: the client closed, the server stopped.
  function srv.close()
    srv.client:close()
    srv.stop()
  end
  --- The S3 destination `name` below the url, as SQL, with the server's credentials.
  function srv.dest(name)
    return string.format("S3('%s/%s', 'S3RVER', 'S3RVER')", srv.url, name)
  end
  --- Names below `prefix/name/`, sorted.
  function srv.objects(name)
    local out, n = {}, #prefix + #name + 3
    for _, o in ipairs(assert(srv.client:list(prefix .. "/" .. name .. "/"))) do
      out[#out + 1] = o.key:sub(n)
    end
    table.sort(out)
    return out
  end
  return srv.start()
end


--- Runs `statement` with run(w, statement) while BACKUP plans batches of
-- `batch` files (backup.BATCH) and counts the archive writer's drains (one
-- a batch: runner.drain). Returns run's result and the count; raises what
-- run raised, after putting both back.
function helpers.backup_in_batches(run, w, statement, batch)
  local backup, runner = require("chbackup.backup"), require("chbackup.runner")
  local was_batch, drain = backup.BATCH, runner.drain
  local drains = 0
  backup.BATCH = batch
  runner.drain = function(...)
    drains = drains + 1
    return drain(...)
  end
  local ok, r = pcall(run, w, statement)
  backup.BATCH, runner.drain = was_batch, drain
  assert(ok, tostring(r))
  return r, drains
end


--- The entry names of an archive, in order, as bsdtar lists them.
function helpers.archive_names(path)
  local ok, out = helpers.run("bsdtar -tf " .. helpers.quote(path))
  assert(ok, out)
  local names = {}
  for name in out:gmatch("[^\n]+") do
    names[#names + 1] = name
  end
  return names
end


--- Lua's heap at its largest while a walk runs, less before it, in KiB:
-- walk(step) calls step() once an item (a part); every `every` steps a
-- full collection, then the heap is read (what the walk holds, not its
-- garbage). For specs that a structure does not grow with parts.
function helpers.heap_peak_kib(walk, every)
  collectgarbage()
  local before, peak, n = collectgarbage("count"), 0, 0
  walk(function()
    n = n + 1
    if n % every == 0 then
      collectgarbage()
      peak = math.max(peak, collectgarbage("count") - before)
    end
  end)
  return peak
end


return helpers
