-- The operator side of S3 destinations against s3rver (scripts/s3rver):
-- `list S3('url')`, `delete` and `check` of S3 backups, policies on S3
-- (run, expire, verify), and chbackup itself killed mid-upload.
local h = require("spec.helpers")
local cjson = require("cjson")

local q = h.quote
local has = h.has
local BUCKET = "chb-ops"

describe("S3 operations", function()
  local w, dir, srv

  local function s3(name)
    return srv.dest(name)
  end

  local function chbackup(args)
    return h.run(string.format("%s/scripts/chbackup --config %s %s", h.ROOT, q(w.config), args))
  end

  -- `list DEST --json` as rows by name.
  local function list(dest)
    local ok, out, _, err = chbackup("list " .. q(dest) .. " --json")
    assert.is_truthy(ok, err)
    local rows = {}
    for line in out:gmatch("[^\n]+") do
      local r = cjson.decode(line)
      rows[r.name] = r
    end
    return rows, out
  end

  setup(function()
    dir = h.tmpdir("s3ops")
    srv = h.s3rver(dir, BUCKET, "ops")
    w = h.world("s3ops")
  end)

  teardown(function()
    if srv then srv.close() end
  end)

  it("list S3('url') groups objects into backups by .backup and .lock; delete and check work on S3", function()
    local c = srv.client
    h.sql(w, "BACKUP DATABASE shop TO " .. s3("nightly/full"))
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 3" })
    h.sql(w, "BACKUP DATABASE shop TO " .. s3("nightly/inc") .. " SETTINGS base_backup = " .. s3("nightly/full"))
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("other"))
    -- a killed BACKUP's leftovers: a .lock and a file, no .backup
    assert(c:put("ops/killed/.lock", "operation x\npid 1\nhost elsewhere\n"))
    assert(c:put("ops/killed/metadata/shop.sql", "x"))
    local rows, out = list(string.format("S3('%s', 'S3RVER', 'S3RVER')", srv.url))
    assert.is_nil(out:find("S3RVER", 1, true))   -- neither key id nor secret in any row
    local full = rows[string.format("S3('%s/nightly/full')", srv.url)]
    local inc = rows[string.format("S3('%s/nightly/inc')", srv.url)]
    assert.same({ "full", "ok", 1 }, { full.kind, full.status, full.chain })
    assert.same({ "incremental", "ok", 2 }, { inc.kind, inc.status, inc.chain })
    assert.equal(string.format("S3('%s/nightly/full')", srv.url), inc.base_backup)
    assert.is_true(inc.stored_bytes < inc.restored_bytes / 2, "an incremental stores little")
    assert.equal("ok", rows[string.format("S3('%s/other')", srv.url)].status)
    local killed = rows[string.format("S3('%s/killed')", srv.url)]
    assert.same({ "incomplete", ".lock without .backup" }, { killed.status, killed.problem:match("%((.*)%)") })
    local n = 0
    for _ in pairs(rows) do n = n + 1 end
    assert.equal(4, n)
    -- below a prefix only, credentials from the environment
    local eok, eout, _, eerr = h.run(string.format("AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER "
      .. "%s/scripts/chbackup --config %s list %s", h.ROOT, q(w.config), q("S3('" .. srv.url .. "/nightly')")))
    assert.is_truthy(eok, eerr)
    assert.same({ "nightly/full", "nightly/inc" }, { eout:match("nightly/full"), eout:match("nightly/inc") })
    assert.is_nil(eout:find("other", 1, true))

    -- check: in place, and with every byte read back; a flipped byte is found
    local ok, cout, _, cerr = chbackup("check " .. q(s3("nightly/inc")) .. " --read-data")
    assert.is_truthy(ok, cout .. cerr)
    local victim
    for _, name in ipairs(srv.objects("other")) do
      if name:match("^data/shop/customers/.*%.bin$") then victim = name break end
    end
    local bytes = c:get("ops/other/" .. victim)
    local i = #bytes // 2
    c:put("ops/other/" .. victim, bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 1) .. bytes:sub(i + 1))
    local code
    ok, cout, code, cerr = chbackup("check " .. q(s3("other")) .. " --read-data")
    assert.equal(3, code, cout .. cerr)
    assert.is_truthy((cout .. cerr):find(victim, 1, true))
    assert.is_nil((cout .. cerr):find("'S3RVER'", 1, true))
    assert.is_falsy(ok)

    -- delete: refused while an incremental relies on it; then the incremental, then the base
    local err
    ok, _, _, err = chbackup("delete " .. q(s3("nightly/full")))
    assert.is_falsy(ok)
    assert.matches("is the base of S3%('[^']*/nightly/inc'%)", err)
    assert.is_nil(err:find("'S3RVER'", 1, true), err)
    ok, _, _, err = chbackup("delete " .. q(s3("nightly/inc")))
    assert.is_truthy(ok, err)
    assert.same({}, srv.objects("nightly/inc"))
    ok, _, _, err = chbackup("delete " .. q(s3("nightly/full")))
    assert.is_truthy(ok, err)
    assert.same({}, srv.objects("nightly/full"))
    -- a killed BACKUP of another process is not deleted; a missing backup is not found
    ok, _, _, err = chbackup("delete " .. q(s3("killed")))
    assert.is_falsy(ok)
    assert.matches("has no %.backup", err)
    assert.is_true(has(srv.objects("killed"), ".lock"))
    -- a deletion cut short (its .lock says so, .backup gone) lists as such and is finished by delete
    assert(c:put("ops/other/.lock", "operation delete\npid 1\nhost elsewhere\ndeleting\n"))
    assert(c:delete("ops/other/.backup"))
    rows = list(string.format("S3('%s', 'S3RVER', 'S3RVER')", srv.url))
    assert.equal("being deleted", rows[string.format("S3('%s/other')", srv.url)].status)
    ok, _, _, err = chbackup("delete " .. q(s3("other")))
    assert.is_truthy(ok, err)
    assert.same({}, srv.objects("other"))
  end)

  it("tar archives on S3 are listed (manifest read from the archive), checked and deleted; a killed one is incomplete", function()
    local c = srv.client
    h.sql(w, "BACKUP DATABASE shop TO " .. s3("tars/full.tar"))
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 5" })
    h.sql(w, "BACKUP DATABASE shop TO " .. s3("tars/inc.tar.zst") .. " SETTINGS base_backup = " .. s3("tars/full.tar"))
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("tars/dir"))
    -- a killed tar BACKUP: its .lock beside, no archive (S3 shows no object of an unfinished upload)
    assert(c:put("ops/tars/killed.tar.gz.lock", "operation x\npid 1\nhost elsewhere\n"))
    local root = string.format("S3('%s/tars', 'S3RVER', 'S3RVER')", srv.url)
    local rows = list(root)
    local function row(rel) return rows[string.format("S3('%s/tars/%s')", srv.url, rel)] end
    local full, inc = row("full.tar"), row("inc.tar.zst")
    assert.same({ "full", "ok", 1 }, { full.kind, full.status, full.chain })
    assert.same({ "incremental", "ok", 2 }, { inc.kind, inc.status, inc.chain })
    assert.equal(string.format("S3('%s/tars/full.tar')", srv.url), inc.base_backup)
    -- sizes: the archive's bytes as stored (one object), the files' bytes as restored
    local st = assert(c:head("ops/tars/full.tar"))
    assert.equal(st.size, full.stored_bytes)
    assert.is_true(full.restored_bytes > 0 and full.restored_bytes < st.size)
    assert.equal(assert(c:head("ops/tars/inc.tar.zst")).size, inc.stored_bytes)
    assert.equal("ok", row("dir").status)
    local killed = row("killed.tar.gz")
    assert.equal("incomplete", killed.status)
    assert.matches("killed%.tar%.gz%.lock without killed%.tar%.gz", killed.problem)
    local n = 0
    for _ in pairs(rows) do n = n + 1 end
    assert.equal(4, n)

    -- check reads every byte through the chain; a flipped byte in the archive is found
    local ok, cout, _, cerr = chbackup("check " .. q(s3("tars/inc.tar.zst")) .. " --read-data")
    assert.is_truthy(ok, cout .. cerr)
    local bytes = c:get("ops/tars/full.tar")
    -- a byte inside a data file's entry (its offset from the archive's index)
    local backup = require("chbackup.store")
    local r = assert(backup.resolve(assert(require("chbackup.config").load(w.config)),
      { engine = "S3", args = { srv.url .. "/tars/full.tar", "S3RVER", "S3RVER" } }))
    local reader = assert(backup.open(r))
    local entry
    for _, e in ipairs(reader.reader:list()) do
      if e.name:match("^data/shop/customers/.*%.bin$") and e.size > 100 then entry = e break end
    end
    reader:close()
    local i = entry.offset + entry.size // 2
    assert(c:put("ops/tars/flipped.tar", bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 1) .. bytes:sub(i + 1)))
    local code
    ok, cout, code, cerr = chbackup("check " .. q(s3("tars/flipped.tar")) .. " --read-data")
    assert.is_falsy(ok)
    assert.equal(3, code, cout .. cerr)
    assert.is_truthy((cout .. cerr):find("flipped.tar", 1, true), cout .. cerr)
    assert(c:delete("ops/tars/flipped.tar"))

    -- delete: the base refused while the incremental relies on it; then both, objects gone
    local _, err
    ok, _, _, err = chbackup("delete " .. q(s3("tars/full.tar")))
    assert.is_falsy(ok)
    assert.matches("is the base of S3%('[^']*/tars/inc%.tar%.zst'%)", err)
    assert.is_truthy(c:head("ops/tars/full.tar"))
    ok, _, _, err = chbackup("delete " .. q(s3("tars/inc.tar.zst")))
    assert.is_truthy(ok, err)
    assert.is_nil(c:head("ops/tars/inc.tar.zst"))
    ok, _, _, err = chbackup("delete " .. q(s3("tars/full.tar")))
    assert.is_truthy(ok, err)
    assert.is_nil(c:head("ops/tars/full.tar"))
    rows = list(root)
    assert.is_nil(row("full.tar"))
    assert.equal("ok", row("dir").status)
  end)

  it("a password on S3 is refused saying why and what to do; nothing is written", function()
    local err = h.sql_refused(w, "BACKUP TABLE shop.customers TO " .. s3("enc") .. " SETTINGS password = 'pw'")
    assert.matches("not supported on S3: ClickHouse takes a password only for zip archives", err)
    assert.matches("Disk%(%.%.%.%) or File%(%.%.%.%) destination", err)
    assert.is_nil(err:find("S3RVER", 1, true))
    assert.same({}, srv.objects("enc"))
    -- a password given to read plain S3 backups is not needed and does not hide them (as on disks)
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("plain"))
    h.write(dir .. "/pw", "pw\n")
    local ok, out, _, lerr = chbackup("list " .. q(string.format("S3('%s', 'S3RVER', 'S3RVER')", srv.url))
      .. " --json --password-file " .. q(dir .. "/pw"))
    assert.is_truthy(ok, lerr)
    local plain = out:match('[^\n]*/plain\'%)"[^\n]*')
    assert.equal("ok", cjson.decode(plain).status)
  end)

  it("a policy on S3 makes, lists, verifies (restore drill from S3) and expires backups there", function()
    local c = srv.client
    h.write(dir .. "/secret", "S3RVER\n")
    local file = dir .. "/pol.lua"
    h.write(file, string.format([[
return {
  name = "nightly",
  source = { path = %q, config = %q },
  selection = { databases = { "shop" } },
  destination = { s3 = %q, access_key_id = "S3RVER", secret_access_key = { file = %q },
                  name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
  schedule = { full = "0 2 * * *", incremental = "0 * * * *" },
  retention = { daily = 1 },
  verification = { scratch = %q },
}
]], w.data, w.config, srv.url .. "/pol", dir .. "/secret", dir .. "/scratch"))
    local pcli = require("chbackup.policy.cli")
    local function run(sub, now)
      local out, err = {}, {}
      local code = pcli.main({ "policy", sub, file, "now=" .. now }, { path = w.data, config = w.config,
        status_dir = w.status }, {
        stdout = { write = function(_, x) out[#out + 1] = x end, flush = function() end },
        stderr = { write = function(_, x) err[#err + 1] = x end },
      })
      out, err = table.concat(out), table.concat(err)
      assert.is_nil((out .. err):find("S3RVER", 1, true))   -- neither key id nor secret in the log
      return code, out, err
    end
    local code, out, err = run("run", "2026-05-01T02:00:00Z")
    assert.equal(0, code, out .. err)
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 7" })
    code, out, err = run("run", "2026-05-01T03:00:00Z")
    assert.equal(0, code, out .. err)
    local full, incr = "pol/nightly/20260501-0200-full", "pol/nightly/20260501-0300-incr"
    assert.is_true(has(srv.objects(full), ".backup"))
    assert.is_true(has(srv.objects(incr), ".backup"))
    local m = assert(require("chbackup.manifest").from_string(c:get("ops/" .. incr .. "/.backup")))
    assert.equal(string.format("S3('%s/%s')", srv.url, full), m.base_backup)
    local record = cjson.decode((assert(c:get("ops/" .. incr .. ".chbackup.json"))))
    assert.same({ "incr", "nightly/20260501-0200-full" }, { record.kind, record.base })
    assert.is_nil(cjson.encode(record):find("S3RVER", 1, true))

    -- the restore drill: the incremental restored from S3 into the scratch path, rows counted
    code, out, err = run("verify", "2026-05-01T04:00:00Z")
    assert.equal(0, code, out .. err)
    record = cjson.decode((assert(c:get("ops/" .. incr .. ".chbackup.json"))))
    local v = record.verifications[#record.verifications]
    assert.is_true(v.ok)
    local want = tonumber(h.clickhouse(w.data, { "SELECT count() FROM shop.customers" }):match("%d+"))
    assert.equal(want, record.rows.shop.customers.total)   -- counted at backup time, compared by the drill
    local names = {}
    for _, ch in ipairs(v.checks) do
      assert.is_true(ch.ok, ch.message)
      names[#names + 1] = ch.name
    end
    assert.is_true(#names > 0)
    assert.matches("verified", out)

    -- a day later a new full, verified; a day after that daily = 1 expires the first chain (the
    -- newest verified backup is kept), objects and records
    code, out, err = run("run", "2026-05-02T02:00:00Z")
    assert.equal(0, code, out .. err)
    code, out, err = run("verify", "2026-05-02T04:00:00Z")
    assert.equal(0, code, out .. err)
    code, out, err = run("run", "2026-05-03T02:00:00Z")
    assert.equal(0, code, out .. err)
    assert.matches("delete", out)
    assert.same({}, srv.objects(full))
    assert.same({}, srv.objects(incr))
    assert.is_nil(c:get("ops/" .. incr .. ".chbackup.json"))
    assert.is_true(has(srv.objects("pol/nightly/20260502-0200-full"), ".backup"))
  end)

  it("chbackup killed -9 mid-upload: no .backup; the next BACKUP to that name takes the dead run's .lock over", function()
    -- one data file well above 32 MiB: a multipart upload, under way when the kill comes
    h.clickhouse(w.data, {
      "CREATE TABLE shop.big (n UInt64, s String) ENGINE = MergeTree ORDER BY n",
      "INSERT INTO shop.big SELECT number, randomPrintableASCII(200) FROM numbers(300000)",
    })
    local cmd = string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s",
      h.ROOT, q(w.data), q(w.config), q(w.status), q("BACKUP TABLE shop.big TO " .. s3("killed9")))
    local ok, out = h.run(string.format("%s >/dev/null 2>&1 & pid=$!; "
      .. "for i in $(seq 400); do [ -n \"$(ls %s 2>/dev/null)\" ] && break; sleep 0.05; done; sleep 0.5; "
      .. "kill -9 $pid; wait $pid; echo \"status $?\"", cmd, q(dir .. "/srv/data/" .. BUCKET .. "/ops/killed9")))
    assert.is_truthy(ok)
    assert.equal("status 137", out:match("status %d+"))   -- killed while it ran
    local left = srv.objects("killed9")
    assert.is_true(has(left, ".lock"))
    assert.is_false(has(left, ".backup"))
    local rows = list(string.format("S3('%s', 'S3RVER', 'S3RVER')", srv.url))
    assert.equal("incomplete", rows[string.format("S3('%s/killed9')", srv.url)].status)
    local _, err
    ok, _, _, err = chbackup("--path " .. q(w.data) .. " --status-dir " .. q(w.status) .. " "
      .. q("BACKUP TABLE shop.big TO " .. s3("killed9")))
    assert.is_truthy(ok, err)
    assert.matches("removed what a killed BACKUP", err)
    left = srv.objects("killed9")
    assert.is_true(has(left, ".backup"))
    assert.is_false(has(left, ".lock"))
    local target = w.dir .. "/from-killed9"
    h.sql(w, "RESTORE TABLE shop.big FROM " .. s3("killed9"), target)
    assert.equal(h.clickhouse(w.data, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }),
      h.clickhouse(target, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }))
  end)

  it("settings: s3_storage_class, use_same_s3_credentials_for_base_backup, S3(named_collection[, 'prefix'])", function()
    -- every object with the storage class (s3rver keeps it as the object's metadata); an unknown one refused
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("cold") .. " SETTINGS s3_storage_class = 'STANDARD_IA'")
    local meta = dir .. "/srv/data/" .. BUCKET .. "/ops/cold/"
    for _, name in ipairs({ ".backup", "metadata/shop/customers.sql" }) do
      local m = cjson.decode(h.read(meta .. name .. "._S3rver_metadata.json"))
      assert.equal("STANDARD_IA", m["x-amz-storage-class"], name)
    end
    local err = h.sql_refused(w, "BACKUP TABLE shop.customers TO " .. s3("bogus") .. " SETTINGS s3_storage_class = 'BOGUS'")
    assert.matches("storage class", err:lower())
    assert.is_false(has(srv.objects("bogus"), ".backup"))
    -- a base at another endpoint (localhost, the same server) with no credentials of its own
    local other = string.format("S3('http://localhost:%d/%s/ops/cold')", srv.port, BUCKET)
    err = h.sql_refused(w, "BACKUP TABLE shop.customers TO " .. s3("same-no") .. " SETTINGS base_backup = " .. other)
    assert.matches("no credentials", err)
    assert.is_nil(err:find("S3RVER", 1, true))
    local r = h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("same") .. " SETTINGS base_backup = " .. other
      .. ", use_same_s3_credentials_for_base_backup = 1")
    assert.equal("BACKUP_CREATED", r[1].status)
    err = h.sql_refused(w, "RESTORE TABLE shop.customers FROM " .. s3("same"), w.dir .. "/same-no")
    assert.matches("no credentials", err)
    r = h.sql(w, "RESTORE TABLE shop.customers FROM " .. s3("same")
      .. " SETTINGS use_same_s3_credentials_for_base_backup = 1", w.dir .. "/same")
    assert.equal("RESTORED", r[1].status)
    local want = h.clickhouse(w.data, { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" })
    assert.equal(want, h.clickhouse(w.dir .. "/same", { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" }))
    -- a named collection: url and keys from the config, the prefix appended; shown without its secret
    local text = h.read(w.config)
    h.write(w.config, (text:gsub("</clickhouse>", "<named_collections><s3ops><url>" .. srv.url .. "/nc</url>"
      .. "<access_key_id>S3RVER</access_key_id><secret_access_key>S3RVER</secret_access_key></s3ops>"
      .. "</named_collections></clickhouse>")))
    r = h.sql(w, "BACKUP TABLE shop.customers TO S3(s3ops, 'one')")
    assert.equal("BACKUP_CREATED", r[1].status)
    assert.is_true(has(srv.objects("nc/one"), ".backup"))
    r = h.sql(w, "RESTORE TABLE shop.customers FROM S3(s3ops, 'one')", w.dir .. "/nc")
    assert.equal("RESTORED", r[1].status)
    assert.equal(want, h.clickhouse(w.dir .. "/nc", { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" }))
    local ok, out = h.cli(w, "SELECT name FROM system.backups FORMAT TSV")
    assert.is_truthy(ok)
    assert.is_truthy(out:find("S3(s3ops, \\'one\\')", 1, true), out)
    assert.is_nil(out:find("S3RVER", 1, true))
    err = h.sql_refused(w, "BACKUP TABLE shop.customers TO S3(nope, 'x')")
    assert.matches("no named collection 'nope'", err)
  end)

  -- Issue 14: the tar writer streams into the upload batch by batch.
  it("a tar BACKUP to S3 of several batches is one object, restored with the same rows", function()
    local r, drains = h.backup_in_batches(h.sql, w, "BACKUP DATABASE shop TO " .. s3("tarb/b.tar.zst"), 5)
    assert.equal("BACKUP_CREATED", r[1].status)
    assert.is_true(drains > 2, "drained " .. drains .. " times")
    assert.same({ "b.tar.zst" }, srv.objects("tarb"))   -- (its .lock gone)
    local target = w.dir .. "/from-tarb"
    assert.equal("RESTORED", h.sql(w, "RESTORE DATABASE shop FROM " .. s3("tarb/b.tar.zst"), target)[1].status)
    local sum = "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers"
    assert.equal(h.clickhouse(w.data, { sum }), h.clickhouse(target, { sum }))
  end)
end)
