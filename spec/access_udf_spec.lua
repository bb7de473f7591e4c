-- BACKUP ALL beyond tables (issue 11 item 5): SQL user-defined functions
-- and access entities, in ClickHouse's backup layout, and RESTORE ALL with
-- create_function / create_access / skip_unresolved_access_dependencies /
-- update_access_entities_dependents.
--
-- The functions are made by real ClickHouse (embedded, CREATE FUNCTION
-- writes user_defined/function_<name>.sql). Embedded ClickHouse (chDB) has
-- no local access storage (its EmbeddedServer::setupUsers loads users.xml
-- only: CREATE USER fails with "no writeable access storage"), so the access
-- directory below is written in ClickHouse's on-disk format
-- (DiskAccessStorage: <uuid>.sql of ATTACH statements); real ClickHouse
-- then reads chbackup's backup of it (RESTORE ALL parses every access file,
-- resolves the references and checks the grants it needs, and stops only
-- where chDB has no storage to put them).
local h = require("spec.helpers")
local core = require("chbackup.core")
local manifest = require("chbackup.manifest")
local q = h.quote

local ROLE = "11111111-1111-4111-8111-111111111111"
local USER = "22222222-2222-4222-8222-222222222222"
local QUOTA = "33333333-3333-4333-8333-333333333333"
local PROFILE = "44444444-4444-4444-8444-444444444444"
local POLICY = "55555555-5555-4555-8555-555555555555"
local HASH = "2BB80D537B1DA3E38BD30361AA855686BDE0EACD7162FEF6A25FE97BF527A25B"   -- sha256('secret')

local ENTITIES = {
  [ROLE] = "ATTACH ROLE reader;\nATTACH GRANT SELECT ON d.* TO reader;\n",
  [USER] = "ATTACH USER alice IDENTIFIED WITH sha256_hash BY '" .. HASH .. "' SETTINGS PROFILE ID('"
    .. PROFILE .. "') DEFAULT ROLE ID('" .. ROLE .. "');\nATTACH GRANT ID('" .. ROLE
    .. "') TO alice;\nATTACH GRANT INSERT ON d.t TO alice;\n",
  [QUOTA] = "ATTACH QUOTA q1 FOR INTERVAL 1 hour MAX queries = 100 TO ID('" .. USER .. "');\n",
  [PROFILE] = "ATTACH SETTINGS PROFILE p1 SETTINGS max_threads = 2;\n",
  [POLICY] = "ATTACH ROW POLICY only_small ON d.t FOR SELECT USING x < 10 AS permissive TO ID('" .. ROLE .. "');\n",
}

local CHECK = {
  "SELECT linear(2, 3, 4), `we ird.f`('x')",
  "SELECT count(), sum(x) FROM d.t",
}

local function sh(cmd)
  assert(os.execute(cmd), cmd)
end

local function chb(w, stmt, path)
  return h.open(w, path):execute(stmt)
end

local access_by_name = h.access_by_name

-- A copy of backup `from` named `to` whose entry `name` is renamed to
-- `new_name` and/or holds `content` (size and checksum updated).
local function crafted(w, from, to, name, new_name, content)
  local dir = w.backups .. "/" .. to
  sh("rm -rf " .. q(dir) .. " && cp -a " .. q(w.backups .. "/" .. from) .. " " .. q(dir))
  local m = assert(manifest.read(dir .. "/.backup"))
  local e = assert(m.by_name[name], name)
  local text = h.read(dir .. "/.backup")
  local old = "<name>" .. name .. "</name><size>" .. e.size .. "</size><checksum>" .. e.checksum .. "</checksum>"
  local s, n = text:find(old, 1, true)
  assert(s, old)
  local body = content or h.read(dir .. "/" .. name)
  os.remove(dir .. "/" .. name)
  local target = new_name or name
  sh("mkdir -p " .. q((dir .. "/" .. target):match("^(.*)/")))
  h.write(dir .. "/" .. target, body)
  h.write(dir .. "/.backup", text:sub(1, s - 1) .. "<name>" .. target .. "</name><size>" .. #body
    .. "</size><checksum>" .. core.checksum(body) .. "</checksum>" .. text:sub(n + 1))
end

local function entry_named(w, backup, pattern)
  for _, f in ipairs(assert(manifest.read(w.backups .. "/" .. backup .. "/.backup")).files) do
    if f.name:match(pattern) then
      return f.name
    end
  end
end


describe("BACKUP ALL with SQL functions and access entities", function()
  local w, src, source_digest
  setup(function()
    w = h.world("access")
    src = h.server_source(w, "src", {
      "CREATE DATABASE d",
      "CREATE TABLE d.t (x UInt32) ENGINE = MergeTree ORDER BY x",
      "INSERT INTO d.t SELECT number FROM numbers(20)",
      "CREATE FUNCTION linear AS (x, k, b) -> k * x + b",
      "CREATE FUNCTION `we ird.f` AS (s) -> concat(s, 'it''s')",
    }, ENTITIES)
    source_digest = h.clickhouse(src, CHECK, w.config)
    local r, err = chb(w, "BACKUP ALL TO Disk('backups', 'all')", src)
    assert(r, err)
  end)

  it("writes ClickHouse's layout: data/system/functions/<name>.sql, data/system/<type>/access-<uuid>.txt", function()
    local names = {}
    for _, f in ipairs(assert(manifest.read(w.backups .. "/all/.backup")).files) do
      if f.name:match("system") then
        names[#names + 1] = (f.name:gsub("access%-%x+%-%x+%-%x+%-%x+%-%x+%.txt$", "access-<uuid>.txt"))
      end
    end
    assert.same({
      "data/system/functions/linear.sql", "data/system/functions/we%20ird%2Ef.sql",
      "data/system/quotas/access-<uuid>.txt", "data/system/roles/access-<uuid>.txt",
      "data/system/row_policies/access-<uuid>.txt", "data/system/settings_profiles/access-<uuid>.txt",
      "data/system/users/access-<uuid>.txt",
      "metadata/system/functions.sql", "metadata/system/quotas.sql", "metadata/system/roles.sql",
      "metadata/system/row_policies.sql", "metadata/system/settings_profiles.sql", "metadata/system/users.sql",
    }, names)
    -- the statement as ClickHouse stored it, one line, no line end
    assert.equal("CREATE FUNCTION linear AS (x, k, b) -> ((k * x) + b)",
      h.read(w.backups .. "/all/data/system/functions/linear.sql"))
    assert.equal(USER .. "\tUSER\talice\n" .. ENTITIES[USER] .. "\nDEPENDENCIES\n"
      .. ROLE .. "\tROLE\treader\n" .. PROFILE .. "\tSETTINGS PROFILE\tp1\n",
      h.read(w.backups .. "/all/" .. entry_named(w, "all", "^data/system/users/")))
  end)

  it("ClickHouse RESTOREs chbackup's functions: they answer as in the source", function()
    local dst = w.dir .. "/ch-restored"
    local out = h.clickhouse(dst, { "RESTORE DATABASE d, TABLE system.functions FROM Disk('backups', 'all')",
      table.unpack(CHECK) }, w.config)
    assert.equal(source_digest, out:gsub("^[^\n]*\tRESTORED\n", ""))
  end)

  it("ClickHouse reads every access file of chbackup's backup (chDB then has no storage for them)", function()
    local users = w.dir .. "/users.xml"
    h.write(users, [[<clickhouse><profiles><default/></profiles><quotas><default/></quotas>
      <users><default><password></password><networks><ip>::/0</ip></networks><profile>default</profile>
      <quota>default</quota><access_management>1</access_management></default></users></clickhouse>]])
    local cfg = w.dir .. "/with-users.xml"
    h.write(cfg, h.read(w.config):gsub("</clickhouse>",
      "<user_directories><users_xml><path>" .. users .. "</path></users_xml></user_directories></clickhouse>"))
    local ok, _, _, err = h.run(table.concat({ q(h.ROOT .. "/build/chq"), "--lib", q(h.chdb_lib()),
      "--path", q(w.dir .. "/ch-access"), "--config", q(cfg),
      q("RESTORE ALL FROM Disk('backups', 'all')") }, " "))
    assert.is_falsy(ok)
    -- parsed, resolved and checked: only the storage is missing
    assert.matches("Backup of access entities is not allowed in user directories", err)
  end)

  it("chbackup RESTORE ALL: ClickHouse opens the data path, functions answer, the entities are the source's", function()
    local dst = w.dir .. "/restored"
    assert(chb(w, "RESTORE ALL FROM Disk('backups', 'all')", dst))
    assert.equal(source_digest, h.clickhouse(dst, CHECK, w.config))
    assert.equal(h.read(src .. "/user_defined/function_linear.sql"), h.read(dst .. "/user_defined/function_linear.sql"))
    assert.same(access_by_name(src .. "/access"), access_by_name(dst .. "/access"))
    assert.is_true(h.exists(dst .. "/access/need_rebuild_lists.mark"))
    for id in pairs(ENTITIES) do   -- new UUIDs, as ClickHouse gives them
      assert.is_false(h.exists(dst .. "/access/" .. id .. ".sql"))
    end
  end)

  it("create_function: 'create' refuses an existing function by name, 'if-not-exists' keeps it, 'replace' replaces it", function()
    local dst = w.dir .. "/fn-conflict"
    sh("mkdir -p " .. q(dst .. "/metadata"))
    h.clickhouse(dst, { "CREATE FUNCTION linear AS (x, k, b) -> 0" }, w.config)
    local before = h.tree(dst)
    local _, err = chb(w, "RESTORE ALL FROM Disk('backups', 'all') SETTINGS create_function = 'create'", dst)
    assert.matches("cannot restore function linear: it already exists", err)
    assert.same(before, h.tree(dst))
    assert(chb(w, "RESTORE ALL FROM Disk('backups', 'all')", dst))
    assert.equal("0\n", h.clickhouse(dst, { "SELECT linear(2, 3, 4)" }, w.config))
    sh("rm -rf " .. q(dst .. "/d") .. " " .. q(dst .. "/metadata/d.sql"))
    local dst2 = w.dir .. "/fn-replace"
    sh("mkdir -p " .. q(dst2 .. "/metadata"))
    h.clickhouse(dst2, { "CREATE FUNCTION linear AS (x, k, b) -> 0" }, w.config)
    assert(chb(w, "RESTORE ALL FROM Disk('backups', 'all') SETTINGS create_function = 'replace'", dst2))
    assert.equal("10\n", h.clickhouse(dst2, { "SELECT linear(2, 3, 4)" }, w.config))
  end)

  it("create_access: 'create' refuses an existing user by name; 'if-not-exists' keeps it; 'replace' replaces it", function()
    local function target(name)
      local dst = w.dir .. "/" .. name
      sh("mkdir -p " .. q(dst .. "/access") .. " " .. q(dst .. "/metadata"))
      h.write(dst .. "/access/66666666-6666-4666-8666-666666666666.sql", "ATTACH USER alice;\n")
      return dst
    end
    local dst = target("acc-create")
    local _, err = chb(w, "RESTORE ALL FROM Disk('backups', 'all') SETTINGS create_access = 'create'", dst)
    assert.matches("cannot restore user alice: it already exists", err)
    assert.same({ "66666666-6666-4666-8666-666666666666.sql" }, h.tree(dst .. "/access"))
    -- kept, and the backup's alice refers to roles being restored: ClickHouse
    -- would edit the existing user; chbackup refuses unless told not to
    _, err = chb(w, "RESTORE ALL FROM Disk('backups', 'all')", dst)
    assert.matches("existing user alice would have to be changed", err)
    assert(chb(w, "RESTORE ALL FROM Disk('backups', 'all') SETTINGS update_access_entities_dependents = 0", dst))
    assert.equal("ATTACH USER alice;\n", h.read(dst .. "/access/66666666-6666-4666-8666-666666666666.sql"))
    local kept = access_by_name(dst .. "/access")
    assert.equal(5, #kept)
    dst = target("acc-replace")
    assert(chb(w, "RESTORE ALL FROM Disk('backups', 'all') SETTINGS create_access = 'replace'", dst))
    assert.is_false(h.exists(dst .. "/access/66666666-6666-4666-8666-666666666666.sql"))
    assert.same(access_by_name(src .. "/access"), access_by_name(dst .. "/access"))
  end)

  it("an entity the backup refers to but does not hold must exist, or skip_unresolved_access_dependencies drops it", function()
    -- a backup of users only: its DEPENDENCIES name role reader and profile p1
    local users = entry_named(w, "all", "^data/system/users/")
    local only_users = w.backups .. "/only-users"
    sh("rm -rf " .. q(only_users) .. " && cp -a " .. q(w.backups .. "/all") .. " " .. q(only_users))
    for _, t in ipairs({ "roles", "quotas", "row_policies", "settings_profiles" }) do
      local name = entry_named(w, "all", "^data/system/" .. t .. "/")
      local text = h.read(only_users .. "/.backup")
      local s = text:find("<file><name>" .. name, 1, true)
      local e = text:find("</file>", s, true)
      h.write(only_users .. "/.backup", text:sub(1, s - 1) .. text:sub(e + 7))
      os.remove(only_users .. "/" .. name)
    end
    local dst = w.dir .. "/unresolved"
    sh("mkdir -p " .. q(dst .. "/metadata"))
    local _, err = chb(w, "RESTORE ALL FROM Disk('backups', 'only-users')", dst)
    assert.matches("cannot resolve role reader while restoring from backup Disk%('backups', 'only%-users'%)", err)
    assert.is_false(h.exists(dst .. "/access"))
    -- the role's GRANT goes; DEFAULT ROLE and SETTINGS PROFILE cannot be cut out of the statement
    _, err = chb(w, "RESTORE ALL FROM Disk('backups', 'only-users') SETTINGS skip_unresolved_access_dependencies = 1", dst)
    assert.matches("user alice refers to an entity the target lacks", err)
    assert.truthy(users)
  end)

  it("refuses hostile names and malformed files of data/system/, naming the entry, writing nothing", function()
    local dst = w.dir .. "/hostile"
    sh("mkdir -p " .. q(dst .. "/metadata"))
    local function refused(backup, pattern)
      local before = h.tree(dst)
      local _, err = chb(w, "RESTORE ALL FROM Disk('backups', '" .. backup .. "')", dst)
      assert.matches(pattern, err)
      assert.same(before, h.tree(dst))
      assert.is_false(h.exists(w.dir .. "/escaped"))
    end
    local fn = "data/system/functions/linear.sql"
    crafted(w, "all", "h1", fn, "data/system/evil/x.sql")
    refused("h1", "is corrupt: it lists data/system/evil/x.sql but has no metadata of table system.evil")
    crafted(w, "all", "h2", fn, "data/system/functions/lin%2fear.sql")
    refused("h2", "it lists data/system/functions/lin%%2fear.sql, which is no file")
    crafted(w, "all", "h3", fn, nil, "DROP TABLE d.t")
    refused("h3", "cannot restore SQL function from backup Disk%('backups', 'h3'%): "
      .. "data/system/functions/linear.sql: not a CREATE FUNCTION")
    crafted(w, "all", "h4", fn, nil, "CREATE FUNCTION other AS x -> x")
    refused("h4", "it creates other, not linear")
    local users = entry_named(w, "all", "^data/system/users/")
    crafted(w, "all", "h5", users, nil, "not-a-uuid\tUSER\talice\nATTACH USER alice;\n")
    refused("h5", "cannot restore access entities from backup Disk%('backups', 'h5'%): "
      .. users:gsub("%-", "%%-") .. ": line 1 is not")
    crafted(w, "all", "h6", users, nil, USER .. "\tUSER\tbob\nATTACH USER alice;\n")
    refused("h6", "is listed as user bob but its statements attach user alice")
    crafted(w, "all", "h7", users, nil, USER .. "\tUSER\talice\nATTACH USER alice;\nDROP USER alice;\n")
    refused("h7", "is not an ATTACH statement")
    crafted(w, "all", "h8", users, "data/system/users/../../x.txt")
    refused("h8", "x%.txt")
  end)

  it("a function file of the data path that is not a function's statement stops BACKUP ALL, naming it", function()
    local bad = w.dir .. "/bad-src"
    sh("cp -a " .. q(src) .. " " .. q(bad))
    h.write(bad .. "/user_defined/function_x.sql", "SELECT 1\n")
    local _, err = chb(w, "BACKUP ALL TO Disk('backups', 'bad')", bad)
    assert.matches("cannot back up SQL function file .*/user_defined/function_x.sql: not a CREATE FUNCTION", err)
    h.write(bad .. "/user_defined/function_x.sql", "CREATE FUNCTION x AS y -> y\n")
    h.write(bad .. "/access/" .. USER .. ".sql", "ATTACH USER alice;\nATTACH QUOTA q;\n")
    _, err = chb(w, "BACKUP ALL TO Disk('backups', 'bad')", bad)
    assert.matches("cannot read access entity file .*" .. USER:gsub("%-", "%%-") .. "%.sql: statement 2 of user alice", err)
  end)
end)
