-- Policy runs on an S3 destination against s3rver: one at a time (a lock
-- object with a heartbeat, chbackup.policy.s3lock), a kill -9'd run's lock
-- taken over and what it left removed by the next run, another host's
-- lock refused until its heartbeat is stale, and what cannot be proven
-- dead left alone with a warning.
local h = require("spec.helpers")
local policy = require("chbackup.policy")
local schedule = require("chbackup.policy.schedule")
local s3lock = require("chbackup.policy.s3lock")

local q = h.quote
local has = h.has
local BUCKET = "chb-plock"
local UTC = schedule.zone("UTC")

local function T(s)
  return assert(schedule.parse_time(s, UTC))
end


local function log_text(report)
  local out = {}
  for _, rec in ipairs(report.log) do
    out[#out + 1] = rec.event .. " " .. (rec.backup or "-") .. ": " .. rec.reason
  end
  return table.concat(out, "\n")
end




describe("policy runs on S3", function()
  local w, dir, srv, env

  -- The policy text (a file for the CLI) and the checked policy, its destination below `prefix`.
  local function make_policy(prefix)
    local text = string.format([[
return {
  name = "nightly",
  source = { path = %q, config = %q },
  selection = { databases = { "shop" } },
  destination = { s3 = %q, access_key_id = "S3RVER", secret_access_key = { file = %q },
                  name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
  schedule = { full = "0 2 * * *" },
  retention = { daily = 7 },
}
]], w.data, w.config, srv.url .. "/" .. prefix, dir .. "/secret")
    local file = dir .. "/" .. prefix .. ".lua"
    h.write(file, text)
    return file, assert(policy.load(file))
  end

  setup(function()
    dir = h.tmpdir("s3plock")
    srv = h.s3rver(dir, BUCKET, "pl")
    w = h.world("s3plock")
    env = { path = w.data, config = w.config, status_dir = w.status }
    h.write(dir .. "/secret", "S3RVER\n")
  end)

  teardown(function()
    if srv then srv.close() end
  end)

  it("a second run is refused naming the lock; a kill -9'd run's lock is taken over and its leftovers removed", function()
    local c = srv.client
    h.clickhouse(w.data, {
      "CREATE TABLE shop.big (n UInt64, s String) ENGINE = MergeTree ORDER BY n",
      "INSERT INTO shop.big SELECT number, randomPrintableASCII(200) FROM numbers(300000)",
    })
    local file, pol = make_policy("one")
    local killed = "nightly/20260501-0200-full"
    local cmd = string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s "
      .. "policy run %s now=2026-05-01T02:00:00Z", h.ROOT, q(w.data), q(w.config), q(w.status), q(file))
    local lock_file = dir .. "/srv/data/" .. BUCKET .. "/pl/one/.chbackup-policy-nightly.lock._S3rver_object"
    local data_dir = dir .. "/srv/data/" .. BUCKET .. "/pl/one/" .. killed .. "/data"
    -- the first run in the background; the second, in this process, once the first holds the lock
    -- and is uploading; then the first is killed
    local fifo = dir .. "/second"
    local script = string.format("%s >%s 2>&1 & pid=$!; echo \"pid $pid\"; "
      .. "for i in $(seq 600); do [ -e %s ] && [ -n \"$(ls %s 2>/dev/null)\" ] && break; sleep 0.05; done; "
      .. "echo go > %s; for i in $(seq 600); do [ -e %s.done ] && break; sleep 0.05; done; "
      .. "kill -9 $pid; wait $pid; echo \"status $?\"", cmd, q(dir .. "/first.out"), q(lock_file), q(data_dir),
      q(fifo), q(fifo))
    assert.is_truthy(os.execute("sh -c " .. q(script) .. " >" .. q(dir .. "/first.log") .. " 2>&1 &"))
    -- (the shell runs on: wait for its go)
    local second_err
    for _ = 1, 600 do
      if io.open(fifo) then
        local rep, err = policy.run(pol, T("2026-05-01T03:00:00"), env)
        second_err = rep and ("ran: " .. log_text(rep)) or err
        h.write(fifo .. ".done", "")
        break
      end
      os.execute("sleep 0.05")
    end
    assert.is_string(second_err)
    assert.matches("another run of policy nightly is in progress %(pid %d+ on host [^,]+, started ", second_err)
    assert.is_truthy(second_err:find("lock s3://" .. BUCKET .. "/pl/one/.chbackup-policy-nightly.lock", 1, true),
      second_err)
    -- the first run was killed while it uploaded: its lock and an unfinished backup are left
    local status
    for _ = 1, 600 do
      status = (h.read(dir .. "/first.log") or ""):match("status (%d+)")
      if status then break end
      os.execute("sleep 0.05")
    end
    assert.equal("137", status, h.read(dir .. "/first.out"))   -- killed while it ran
    local killed_pid = tonumber(second_err:match("%(pid (%d+)"))
    for _ = 1, 200 do
      if not io.open("/proc/" .. killed_pid .. "/stat") then break end
      os.execute("sleep 0.05")
    end
    assert.is_nil(io.open("/proc/" .. killed_pid .. "/stat"), "the first run was killed")
    assert.is_truthy(c:head("pl/one/.chbackup-policy-nightly.lock"))
    local left = srv.objects("one/" .. killed)
    assert.is_true(has(left, ".lock"))
    assert.is_false(has(left, ".backup"))

    -- the next run takes the dead run's lock over, removes what it left, makes its backup
    local rep = assert(policy.run(pol, T("2026-05-01T03:00:00"), env))
    local text = log_text(rep)
    assert.is_true(rep.ok, text)
    assert.matches("took over the lock s3://chb%-plock/pl/one/%.chbackup%-policy%-nightly%.lock of a dead run of "
      .. "policy nightly %(pid " .. killed_pid .. " on host", text)
    assert.matches("its process is gone", text)
    assert.matches("removed s3://chb%-plock/pl/one/nightly/20260501%-0200%-full: an unfinished backup of a "
      .. "killed BACKUP", text)
    assert.same({}, srv.objects("one/" .. killed))
    assert.is_true(has(srv.objects("one/nightly/20260501-0300-full"), ".backup"))
    assert.is_nil(c:head("pl/one/.chbackup-policy-nightly.lock"))   -- released
    -- the backup is whole: ClickHouse's rows come back
    h.sql(w, string.format("RESTORE TABLE shop.big FROM S3('%s/one/nightly/20260501-0300-full', 'S3RVER', 'S3RVER')",
      srv.url), w.dir .. "/restored")
    assert.equal(h.clickhouse(w.data, { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }),
      h.clickhouse(w.dir .. "/restored", { "SELECT count(), sum(cityHash64(s)) FROM shop.big" }))
  end)

  it("another host's lock refuses until its heartbeat is stale; what cannot be proven dead is left alone", function()
    local c = srv.client
    local _, pol = make_policy("two")
    local key = "pl/two/.chbackup-policy-nightly.lock"
    local function foreign_lock(pid, age)
      local t = os.time() - age
      assert(c:put(key, string.format("operation policy nightly run\npid %d\nhost elsewhere\ntoken abc\n"
        .. "started %d\nheartbeat %d\n", pid, t - 60, t)))
    end
    foreign_lock(4242, 60)
    local rep, err = policy.run(pol, T("2026-05-03T02:00:00"), env)
    assert.is_nil(rep)
    assert.matches("another run of policy nightly is in progress %(pid 4242 on host elsewhere, started "
      .. "[%d%-T:]+Z, last heartbeat %d+ s ago; lock s3://chb%-plock/pl/two/", err)
    assert.is_truthy(c:head(key))   -- not touched

    -- its holder died (heartbeat 2 h old) while writing a backup; another host's unfinished backup
    -- (pid 5151) cannot be proven dead; a record's backup is gone
    foreign_lock(4242, 7200)
    local dead, alive = "pl/two/nightly/20260502-0200-full/", "pl/two/nightly/20260502-0300-full/"
    assert(c:put(dead .. ".lock", "operation x\npid 4242\nhost elsewhere\n"))
    assert(c:put(dead .. "data/shop/orders/all_1_1_0/data.bin", "x"))
    assert(c:put(alive .. ".lock", "operation y\npid 5151\nhost elsewhere\n"))
    assert(c:put(alive .. "metadata/shop.sql", "x"))
    assert(c:put("pl/two/nightly/20260428-0200-full.chbackup.json", "{}"))
    -- a deletion killed after `.backup` went (its `.lock` says so)
    local half = "pl/two/nightly/20260427-0200-full/"
    assert(c:put(half .. ".lock", "operation delete\npid 4343\nhost elsewhere\ndeleting\n"))
    assert(c:put(half .. "data/shop/orders/all_1_1_0/data.bin", "x"))
    -- plan (no lock taken) lists what the run will remove and what it will leave
    local plan = assert(policy.plan(pol, T("2026-05-03T02:00:00"), env))
    local planned = log_text(plan)
    assert.matches("leftover nightly/20260502%-0200%-full: [^\n]*an unfinished backup of a killed BACKUP %(operation x "
      .. "%(pid 4242%) on host elsewhere[^\n]*; the next run removes it", planned)
    assert.matches("leftover nightly/20260502%-0300%-full: [^\n]*pid 5151%) on host elsewhere, which cannot be "
      .. "proven dead", planned)
    assert.is_truthy(c:head(dead .. ".lock"))   -- plan changes nothing
    rep = assert(policy.run(pol, T("2026-05-03T02:00:00"), env))
    local text = log_text(rep)
    assert.is_true(rep.ok, text)
    assert.matches("took over the lock [^\n]* %(pid 4242 on host elsewhere, [^\n]*its heartbeat is %d+ s old "
      .. "%(stale after 1800 s%)", text)
    assert.same({}, srv.objects("two/nightly/20260502-0200-full"))
    assert.matches("removed [^\n]*20260502%-0200%-full: an unfinished backup of a killed BACKUP %(operation x "
      .. "%(pid 4242%) on host elsewhere", text)
    assert.same({ ".lock", "metadata/shop.sql" }, srv.objects("two/nightly/20260502-0300-full"))
    assert.matches("leftover nightly/20260502%-0300%-full: [^\n]*pid 5151%) on host elsewhere, which cannot be "
      .. "proven dead from here; if it is, `chbackup delete` it; left alone", text)
    assert.same({}, srv.objects("two/nightly/20260427-0200-full"))
    assert.matches("deleted nightly/20260427%-0200%-full: finished a deletion an earlier run started", text)
    assert.is_nil(c:head("pl/two/nightly/20260428-0200-full.chbackup.json"))
    assert.matches("a policy record whose backup is gone", text)
    assert.is_true(has(srv.objects("two/nightly/20260503-0200-full"), ".backup"))
    assert.is_nil(c:head(key))
  end)

  it("a tar archive on S3 whose base is one of the policy's backups keeps that base (read from the archive)", function()
    local _, pol = make_policy("four")
    local rep = assert(policy.run(pol, T("2026-05-01T02:00:00"), env))
    assert.is_true(rep.ok, log_text(rep))
    local full = "nightly/20260501-0200-full"
    h.sql(w, string.format("BACKUP TABLE shop.customers TO S3('%s/four/other/ext.tar.zst', 'S3RVER', 'S3RVER') "
      .. "SETTINGS base_backup = S3('%s/four/%s', 'S3RVER', 'S3RVER')", srv.url, srv.url, full))
    local st = assert(require("chbackup.policy.store").open(pol, assert(require("chbackup.config").load(w.config))))
    local points = st:list().points
    assert.equal(1, #points)
    assert.same({ [full] = "other/ext.tar.zst" }, st:foreign_dependents(points))
  end)

  it("a killed rebase's leftovers (a dead holder's .lock beside .backup, objects nothing reads) are removed", function()
    local c = srv.client
    local _, pol = make_policy("five")
    local rep = assert(policy.run(pol, T("2026-05-01T02:00:00"), env))
    assert.is_true(rep.ok, log_text(rep))
    local name = "nightly/20260501-0200-full"
    local prefix = "pl/five/" .. name .. "/"
    local before = srv.objects("five/" .. name)
    -- as a rebase killed mid-upload leaves it: new objects the old `.backup` does not read, its .lock
    local host = require("chbackup.store.s3").hostname()
    assert(c:put(prefix .. "data/shop/orders/all_9_9_0/data.bin", "new bytes"))
    assert(c:put(prefix .. ".lock", "operation rebase-1\npid 999999\nhost " .. host .. "\nrebasing\n"))
    -- another host's rebase, not provably dead: left alone
    local other = "pl/five/nightly/20260430-0200-full/"
    h.sql(w, string.format("BACKUP TABLE shop.customers TO S3('%s/five/nightly/20260430-0200-full', 'S3RVER', "
      .. "'S3RVER')", srv.url))
    assert(c:put(other .. ".lock", "operation rebase-2\npid 7\nhost elsewhere\nrebasing\n"))
    assert(c:put(other .. "data/x.bin", "x"))
    rep = assert(policy.run(pol, T("2026-05-01T03:00:00"), env))
    local text = log_text(rep)
    assert.is_true(rep.ok, text)
    assert.matches("removed [^\n]*20260501%-0200%-full: what a killed rebase %(operation rebase%-1 %(pid 999999%) on "
      .. "host [^\n]*objects no file of the backup reads, and its %.lock", text)
    assert.same(before, srv.objects("five/" .. name))
    assert.matches("leftover nightly/20260430%-0200%-full: being rebased by operation rebase%-2 %(pid 7%) on host "
      .. "elsewhere, which cannot be proven dead from here; left alone", text)
    assert.is_truthy(c:head(other .. "data/x.bin"))
    -- the backup is whole: every byte checked
    local ok, out, _, err = h.run(string.format("%s/scripts/chbackup --config %s check %s --read-data", h.ROOT,
      q(w.config), q(string.format("S3('%s/five/%s', 'S3RVER', 'S3RVER')", srv.url, name))))
    assert.is_truthy(ok, out .. err)
  end)

  it("a run whose lock was taken over knows it at its next refresh and leaves the new holder's lock", function()
    local c = srv.client
    local root = { bucket = BUCKET, prefix = "pl/three" }
    local logged = {}
    local lk = assert(s3lock.take(c, root, "nightly", { log = function(m) logged[#logged + 1] = m end }))
    local key = s3lock.key(root, "nightly")
    local mine = s3lock.parse(c:get(key))
    assert.is_truthy(mine.token and #mine.token == 32)
    assert.is_true(lk:refresh(true))
    -- a second take while held: refused
    local none, err = s3lock.take(c, root, "nightly", { log = function() end })
    assert.is_nil(none)
    assert.matches("another run of policy nightly is in progress", err)
    -- another run takes it over (as if this one had stopped refreshing)
    assert(c:put(key, "operation policy nightly run\npid 1\nhost other\ntoken fff\nstarted 1\nheartbeat 1\n"))
    local ok
    ok, err = lk:refresh(true)
    assert.is_nil(ok)
    assert.matches("is no longer this run's %(taken over by pid 1 on host other", err)
    lk:release()
    assert.equal("fff", s3lock.parse(c:get(key)).token)   -- the new holder's lock stays
    assert.same({}, logged)
    -- this process's own lock that no run of it holds (a release that failed) is taken over
    local again = assert(s3lock.take(c, root, "nightly", { log = function() end }))
    assert(c:put(key .. ".copy", c:get(key)))
    again.lost = "simulated: its release failed"
    again:release()
    assert(c:put(key, c:get(key .. ".copy")))
    lk = assert(s3lock.take(c, root, "nightly", { log = function(m) logged[#logged + 1] = m end }))
    assert.matches("it is this process's, from a run whose release failed", logged[1])
    lk:release()
    assert.is_nil(c:head(key))
  end)
end)
