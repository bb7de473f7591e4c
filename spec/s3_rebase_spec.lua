-- Rebase of S3 backups against s3rver: written in place (S3 has no
-- rename: new files below the backup's own prefix, `.backup` switched last,
-- then what only the old one stored deleted), `--onto`, a failed rebase
-- leaving the backup as it was, a live `.lock` refusing, and a policy with
-- retention.rebase = true on an S3 destination.
local h = require("spec.helpers")
local cjson = require("cjson")
local manifest = require("chbackup.manifest")

local q = h.quote
local BUCKET = "chb-rebase"
local DIGEST = "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers"

describe("rebase on S3", function()
  local w, dir, srv

  local function s3(name)
    return srv.dest(name)
  end

  local function chbackup(args)
    return h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s", h.ROOT, q(w.data),
      q(w.config), q(w.status), args))
  end

  local function manifest_of(name)
    return assert(manifest.from_string(assert(srv.client:get("rb/" .. name .. "/.backup"))))
  end

  -- The object names a manifest's files are stored under, and `.backup`, sorted.
  local function stored_names(m)
    local seen, out = { [".backup"] = true }, { ".backup" }
    for _, e in ipairs(m.files) do
      local n = e.data_file or e.name
      -- stored here unless empty or wholly in the base (a grown file's tail is stored here)
      if e.size > 0 and not e.use_base and e.base_size ~= e.size and not seen[n] then
        seen[n] = true
        out[#out + 1] = n
      end
    end
    table.sort(out)
    return out
  end

  -- Rows of shop.customers restored from backup `name` into a fresh data path.
  local function restored_digest(name, tag)
    local target = w.dir .. "/restore-" .. tag
    h.sql(w, "RESTORE TABLE shop.customers FROM " .. s3(name), target)
    return h.clickhouse(target, { DIGEST })
  end

  setup(function()
    dir = h.tmpdir("s3rebase")
    srv = h.s3rver(dir, BUCKET, "rb")
    w = h.world("s3rebase")
  end)

  teardown(function()
    if srv then srv.close() end
  end)

  it("makes an S3 incremental standalone in place: uuid kept, no object too many or too few, base deletable", function()
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("full"))
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 11" })
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("inc") .. " SETTINGS base_backup = " .. s3("full"))
    local want = h.clickhouse(w.data, { DIGEST })
    local before = manifest_of("inc")
    assert.is_truthy(before.base_backup)
    local stored_before = #srv.objects("inc")
    local ok, out, _, err = chbackup("rebase " .. q(s3("inc")))
    assert.is_truthy(ok, out .. err)
    assert.is_nil((out .. err):find("'S3RVER'", 1, true))
    local after = manifest_of("inc")
    assert.is_nil(after.base_backup)
    assert.same({ before.uuid, before.timestamp }, { after.uuid, after.timestamp })
    assert.equal(#before.files, #after.files)
    -- every object the new manifest needs, nothing else (no .lock, nothing the old one alone used)
    assert.same(stored_names(after), srv.objects("inc"))
    assert.is_true(#srv.objects("inc") > stored_before)
    -- the base can go; the rebased backup restores alone, checked by ClickHouse's rows
    ok, _, _, err = chbackup("delete " .. q(s3("full")))
    assert.is_truthy(ok, err)
    assert.same({}, srv.objects("full"))
    ok, out, _, err = chbackup("check " .. q(s3("inc")) .. " --read-data")
    assert.is_truthy(ok, out .. err)
    assert.equal(want, restored_digest("inc", "standalone"))
  end)

  it("--onto another S3 backup stores only what that one lacks; a failed rebase leaves the backup as it was", function()
    local c = srv.client
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("f2"))
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 5" })
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("i2") .. " SETTINGS base_backup = " .. s3("f2"))
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 7" })
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("i3") .. " SETTINGS base_backup = " .. s3("i2"))
    local want = h.clickhouse(w.data, { DIGEST })

    -- a byte flipped in the base's data: the rebase reads it through the chain and fails, naming it
    local victim
    for _, name in ipairs(srv.objects("f2")) do
      if name:match("^data/shop/customers/.*%.bin$") then victim = name break end
    end
    local key = "rb/f2/" .. victim
    local good = c:get(key)
    local i = #good // 2
    assert(c:put(key, good:sub(1, i - 1) .. string.char(good:byte(i) ~ 1) .. good:sub(i + 1)))
    local text_before, objects_before = c:get("rb/i3/.backup"), srv.objects("i3")
    local ok, out, _, err = chbackup("rebase " .. q(s3("i3")))
    assert.is_falsy(ok)
    assert.is_truthy((out .. err):find(victim, 1, true), out .. err)
    assert.equal(text_before, c:get("rb/i3/.backup"))   -- still the old backup, byte for byte
    assert.same(objects_before, srv.objects("i3"))      -- nothing added, nothing removed, no .lock
    assert(c:put(key, good))

    -- a live .lock (another host's) refuses
    assert(c:put("rb/i3/.lock", "operation other\npid 1\nhost elsewhere\n"))
    ok, out, _, err = chbackup("rebase " .. q(s3("i3")))
    assert.is_falsy(ok)
    assert.matches("is being written by operation other %(pid 1%)", out .. err)
    assert(c:delete("rb/i3/.lock"))

    -- onto the full: i3 no longer relies on i2, stores what f2 lacks
    ok, out, _, err = chbackup("rebase " .. q(s3("i3")) .. " --onto " .. q(s3("f2")))
    assert.is_truthy(ok, out .. err)
    local after = manifest_of("i3")
    assert.equal(string.format("S3('%s/f2')", srv.url), after.base_backup)
    assert.same(stored_names(after), srv.objects("i3"))
    ok, _, _, err = chbackup("delete " .. q(s3("i2")))
    assert.is_truthy(ok, err)
    assert.equal(want, restored_digest("i3", "onto"))
  end)

  it("a rebase killed -9 mid-upload leaves the old backup whole; the next rebase takes its .lock over", function()
    local c = srv.client
    h.clickhouse(w.data, {
      "CREATE TABLE shop.big (n UInt64, s String) ENGINE = MergeTree ORDER BY n",
      "INSERT INTO shop.big SELECT number, randomPrintableASCII(200) FROM numbers(300000)",
    })
    h.sql(w, "BACKUP TABLE shop.big TO " .. s3("bigfull"))
    h.clickhouse(w.data, { "INSERT INTO shop.big SELECT number + 1000000, 'x' FROM numbers(100)" })
    h.sql(w, "BACKUP TABLE shop.big TO " .. s3("biginc") .. " SETTINGS base_backup = " .. s3("bigfull"))
    local want = h.clickhouse(w.data, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" })
    local text_before = c:get("rb/biginc/.backup")
    local lock_file = dir .. "/srv/data/" .. BUCKET .. "/rb/biginc/.lock._S3rver_object"
    local cmd = string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s rebase %s", h.ROOT,
      q(w.data), q(w.config), q(w.status), q(s3("biginc")))
    local ok, out = h.run(string.format("%s >/dev/null 2>&1 & pid=$!; "
      .. "for i in $(seq 600); do [ -e %s ] && break; sleep 0.05; done; sleep 1; "
      .. "kill -9 $pid; wait $pid; echo \"status $?\"", cmd, q(lock_file)))
    assert.is_truthy(ok)
    assert.equal("status 137", out:match("status %d+"))   -- killed while it ran
    -- the old backup, byte for byte, with the dead run's .lock; listed whole, restorable
    assert.equal(text_before, c:get("rb/biginc/.backup"))
    assert.is_truthy(c:get("rb/biginc/.lock"))
    local rows = {}
    local lok, lout, _, lerr = chbackup("list " .. q(string.format("S3('%s', 'S3RVER', 'S3RVER')", srv.url)) .. " --json")
    assert.is_truthy(lok, lerr)
    for line in lout:gmatch("[^\n]+") do
      local r = cjson.decode(line)
      rows[r.name] = r
    end
    assert.equal("ok", rows[string.format("S3('%s/biginc')", srv.url)].status)
    local target = w.dir .. "/restore-killed"
    h.sql(w, "RESTORE TABLE shop.big FROM " .. s3("biginc"), target)
    assert.equal(want, h.clickhouse(target, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }))
    -- the next rebase takes the dead run's .lock over and finishes; nothing is left over
    local err
    ok, out, _, err = chbackup("rebase " .. q(s3("biginc")))
    assert.is_truthy(ok, out .. err)
    assert.matches("took over [^\n]*/biginc/%.lock left by a killed run", err)
    local after = manifest_of("biginc")
    assert.is_nil(after.base_backup)
    assert.same(stored_names(after), srv.objects("biginc"))
    ok, _, _, err = chbackup("delete " .. q(s3("bigfull")))
    assert.is_truthy(ok, err)
    target = w.dir .. "/restore-rebased"
    h.sql(w, "RESTORE TABLE shop.big FROM " .. s3("biginc"), target)
    assert.equal(want, h.clickhouse(target, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }))
  end)

  it("a policy with retention.rebase = true on S3 rebases the kept incremental, then deletes its base", function()
    local c = srv.client
    h.write(dir .. "/secret", "S3RVER\n")
    local function write_policy(rebase)
      local file = dir .. "/pol.lua"
      h.write(file, string.format([[
return {
  name = "nightly",
  source = { path = %q, config = %q },
  selection = { databases = { "shop" } },
  destination = { s3 = %q, access_key_id = "S3RVER", secret_access_key = { file = %q },
                  name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
  schedule = { full = "0 2 * * *", incremental = "0 * * * *" },
  retention = { last = 1%s },
}
]], w.data, w.config, srv.url .. "/pol", dir .. "/secret", rebase and ", rebase = true" or ""))
      return file
    end
    local pcli = require("chbackup.policy.cli")
    local function run(file, now)
      local out, err = {}, {}
      local code = pcli.main({ "policy", "run", file, "json", "now=" .. now }, { path = w.data, config = w.config,
        status_dir = w.status }, {
        stdout = { write = function(_, x) out[#out + 1] = x end, flush = function() end },
        stderr = { write = function(_, x) err[#err + 1] = x end },
      })
      return code, table.concat(out), table.concat(err)
    end
    local full, incr = "nightly/20260501-0200-full", "nightly/20260501-0300-incr"
    local code, out, err = run(write_policy(false), "2026-05-01T02:00:00Z")
    assert.equal(0, code, out .. err)
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 3" })
    code, out, err = run(write_policy(false), "2026-05-01T03:00:00Z")
    assert.equal(0, code, out .. err)
    local want = h.clickhouse(w.data, { DIGEST })
    local uuid = manifest_of("pol/" .. incr).uuid
    assert.is_truthy(c:head("rb/pol/" .. full .. "/.backup"))

    code, out, err = run(write_policy(true), "2026-05-01T03:30:00Z")
    assert.equal(0, code, out .. err)
    local seen = {}
    for line in out:gmatch("[^\n]+") do
      local e = cjson.decode(line)
      if e.event == "rebased" or e.event == "deleted" then
        seen[#seen + 1] = e.event .. " " .. e.backup
      end
    end
    assert.same({ "rebased " .. incr, "deleted " .. full }, seen)
    assert.same({}, srv.objects("pol/" .. full))
    assert.is_nil(c:get("rb/pol/" .. full .. ".chbackup.json"))
    local after = manifest_of("pol/" .. incr)
    assert.is_nil(after.base_backup)
    assert.equal(uuid, after.uuid)
    local record = cjson.decode((assert(c:get("rb/pol/" .. incr .. ".chbackup.json"))))
    assert.equal(full, record.rebased.from)
    assert.is_nil(record.base)
    assert.same(stored_names(after), srv.objects("pol/" .. incr))
    assert.equal(want, restored_digest("pol/" .. incr, "policy"))
  end)
end)
