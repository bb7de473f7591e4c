-- BACKUP and RESTORE with S3 destinations (chbackup.store.s3, the C job's
-- S3 pieces and sinks) against s3rver 5.0.0 (scripts/s3rver: SigV4 checked),
-- and with real ClickHouse both ways through an `s3_plain` disk pointed at
-- the same bucket and prefix (`BACKUP … TO Disk('s3plain', 'x')` writes the
-- layout ClickHouse's S3() does; chDB's own S3() backups cannot run).
local h = require("spec.helpers")
local manifest = require("chbackup.manifest")

local q = h.quote
local has = h.has
local ALL_TABLES = h.expected()
local BUCKET = "chb-backups"
local SECRET = "S3RVER"

describe("S3 destinations", function()
  local w, dir, port, c, url, ch_config
  local write_ch_config

  local srv

  local function s3(name, secret)
    return string.format("S3('%s/%s', 'S3RVER', '%s')", url, name, secret or SECRET)
  end

  local function objects(name)
    return srv.objects(name)
  end


  setup(function()
    dir = h.tmpdir("s3backup")
    srv = h.s3rver(dir, BUCKET, "ch")
    port, url, c = srv.port, srv.url, srv.client
    w = h.world("s3backup")
    write_ch_config()
  end)

  -- ClickHouse's view of the same bucket and prefix: an s3_plain disk (on the
  -- server's port of now: a test restarts it)
  function write_ch_config()
    ch_config = w.dir .. "/ch.xml"
    h.write(ch_config, ([[
<clickhouse>
  <timezone>UTC</timezone>
  <storage_configuration><disks>
    <s3plain><type>s3_plain</type><endpoint>@/</endpoint>
      <access_key_id>S3RVER</access_key_id><secret_access_key>S3RVER</secret_access_key></s3plain>
  </disks></storage_configuration>
  <backups><allowed_disk>s3plain</allowed_disk></backups>
</clickhouse>
]]):gsub("@", url))
  end

  teardown(function()
    if srv then srv.close() end
  end)

  it("BACKUP to S3 writes ClickHouse's layout, .lock gone; RESTORE from it gives the same rows", function()
    local r = h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO " .. s3("full"))
    assert.equal("BACKUP_CREATED", r[1].status)
    local names = objects("full")
    assert.is_true(has(names, ".backup"))
    assert.is_false(has(names, ".lock"))
    assert.is_true(has(names, "metadata/shop.sql"))
    -- the secret (and key id) is in no status row: the name is S3('url'), as ClickHouse strips it
    local ok, out = h.cli(w, "SELECT name, base_backup_name, error FROM system.backups FORMAT TSV")
    assert.is_truthy(ok)
    assert.is_nil(out:find("S3RVER", 1, true))
    assert.is_truthy(out:find(string.format("S3(\\'%s/full\\')", url), 1, true), out)
    local target = w.dir .. "/from-s3"
    r = h.sql(w, "RESTORE ALL FROM " .. s3("full"), target)
    assert.equal("RESTORED", r[1].status)
    assert.equal(h.digest_text(ALL_TABLES), h.table_digests(target, ALL_TABLES))
  end)

  it("ClickHouse RESTOREs chbackup's S3 backup (s3_plain disk on the same prefix): same rows", function()
    local target = w.dir .. "/ch-restores-ours"
    h.copy_datapath(target)
    h.sh("rm -rf " .. q(target .. "/metadata/shop") .. " " .. q(target .. "/metadata/logs") .. " "
      .. q(target .. "/metadata/shop.sql") .. " " .. q(target .. "/metadata/logs.sql"))
    h.clickhouse(target, { "RESTORE DATABASE shop, DATABASE logs FROM Disk('s3plain', 'full')" }, ch_config)
    assert.equal(h.digest_text(ALL_TABLES), h.table_digests(target, ALL_TABLES))
  end)

  it("chbackup restores ClickHouse's S3 backup, with ClickHouse's checksums", function()
    local src = w.dir .. "/ch-src"
    h.copy_datapath(src)
    h.clickhouse(src, { "BACKUP DATABASE shop, DATABASE logs TO Disk('s3plain', 'theirs')" }, ch_config)
    assert.is_true(has(objects("theirs"), ".backup"))
    local target = w.dir .. "/ours-restores-ch"
    local r = h.sql(w, "RESTORE ALL FROM " .. s3("theirs"), target)
    assert.equal("RESTORED", r[1].status)
    assert.equal(h.digest_text(ALL_TABLES), h.table_digests(target, ALL_TABLES))
    -- the same files and checksums as chbackup's own backup of the same data
    local theirs = assert(manifest.from_string(c:get("ch/theirs/.backup")))
    local ours = assert(manifest.from_string(c:get("ch/full/.backup")))
    local by_name, compared = {}, 0
    for _, f in ipairs(ours.files) do by_name[f.name] = f end
    for _, f in ipairs(theirs.files) do
      local o = by_name[f.name]
      if o and f.name:match("^data/shop/") then
        assert.same({ f.size, f.checksum }, { o.size, o.checksum }, f.name)
        compared = compared + 1
      end
    end
    assert.is_true(compared > 10)
  end)

  it("makes incrementals on an S3 base (credentials inherited) and on a Disk base, both restorable", function()
    h.clickhouse(w.data, { "INSERT INTO shop.customers SELECT * FROM shop.customers LIMIT 5" })
    local r = h.sql(w, "BACKUP DATABASE shop TO " .. s3("inc") .. " SETTINGS base_backup = S3('" .. url .. "/full')")
    assert.equal("BACKUP_CREATED", r[1].status)
    local m = assert(manifest.from_string(c:get("ch/inc/.backup")))
    assert.equal(string.format("S3('%s/full')", url), m.base_backup)   -- no secret
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'dbase')")
    h.sql(w, "BACKUP DATABASE shop TO " .. s3("inc-disk") .. " SETTINGS base_backup = Disk('backups', 'dbase')")
    local want = h.clickhouse(w.data, { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" })
    for _, name in ipairs({ "inc", "inc-disk" }) do
      local target = w.dir .. "/restore-" .. name
      h.sql(w, "RESTORE DATABASE shop FROM " .. s3(name), target)
      assert.equal(want, h.clickhouse(target, { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" }),
        name)
    end
    -- a Disk incremental on the S3 base: its manifest names the base without credentials,
    -- which RESTORE then takes from the config's <s3> endpoint
    local text = h.read(w.config)
    h.write(w.config, (text:gsub("</clickhouse>", "<s3><local><endpoint>" .. url .. "/</endpoint>"
      .. "<access_key_id>S3RVER</access_key_id><secret_access_key>S3RVER</secret_access_key></local></s3>"
      .. "</clickhouse>")))
    h.sql(w, "BACKUP DATABASE shop TO Disk('backups', 'on-s3') SETTINGS base_backup = " .. s3("full"))
    local target = w.dir .. "/restore-on-s3"
    h.sql(w, "RESTORE DATABASE shop FROM Disk('backups', 'on-s3')", target)
    assert.equal(want, h.clickhouse(target, { "SELECT count(), sum(cityHash64(tuple(*))) FROM shop.customers" }))
  end)

  it("refuses an existing backup, a zip on S3 and a wrong secret (never shown), a missing bucket", function()
    local err = h.sql_refused(w, "BACKUP DATABASE shop TO " .. s3("full"))
    assert.matches("already exists", err)
    err = h.sql_refused(w, "BACKUP DATABASE shop TO " .. s3("x.zip"))
    assert.matches("zip requires seeking", err)
    err = h.sql_refused(w, "BACKUP DATABASE shop TO " .. s3("wrong", "not-the-secret"))
    assert.matches("secret access key is wrong", err)
    assert.is_nil(err:find("not-the-secret", 1, true))
    err = h.sql_refused(w, "RESTORE ALL FROM " .. s3("full", "not-the-secret"), w.dir .. "/never")
    assert.matches("secret access key is wrong", err)
    assert.is_nil(err:find("not-the-secret", 1, true))
    err = h.sql_refused(w, "BACKUP DATABASE shop TO S3('http://127.0.0.1:" .. port .. "/no-such-bucket/x', 'S3RVER', 'S3RVER')")
    assert.matches("bucket 'no%-such%-bucket' does not exist", err)
  end)

  it("RESTORE of an object with a flipped byte fails naming the file and restores nothing", function()
    h.sql(w, "BACKUP TABLE shop.customers TO " .. s3("flip"))
    local victim
    for _, n in ipairs(objects("flip")) do
      if n:match("^data/shop/customers/.*%.bin$") then victim = n break end
    end
    assert.is_truthy(victim)
    local bytes = c:get("ch/flip/" .. victim)
    local i = #bytes // 2
    c:put("ch/flip/" .. victim, bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 1) .. bytes:sub(i + 1))
    local target = w.dir .. "/flipped"
    local err = h.sql_refused(w, "RESTORE TABLE shop.customers FROM " .. s3("flip"), target)
    assert.matches("checksum mismatch for ch/flip/" .. victim:gsub("%p", "%%%0"), err)
    assert.is_false(h.exists(target .. "/metadata/shop/customers.sql"))
  end)

  it("server stopped mid-upload: no .backup; after a restart the next BACKUP to that name succeeds", function()
    -- a big enough table that the upload is under way when the server goes
    h.clickhouse(w.data, {
      "CREATE TABLE shop.big (n UInt64, s String) ENGINE = MergeTree ORDER BY n",
      "INSERT INTO shop.big SELECT number, randomPrintableASCII(200) FROM numbers(300000)",
    })
    local srv_pid = tonumber(h.read(dir .. "/srv/pid") or "")
    local cmd = string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s",
      h.ROOT, q(w.data), q(w.config), q(w.status), q("BACKUP DATABASE shop TO " .. s3("cut")))
    -- stop the server once the upload has begun (its .lock is there)
    local killer = string.format("for i in $(seq 200); do [ -n \"$(ls %s 2>/dev/null)\" ] && break; sleep 0.05; done; "
      .. "kill -9 %d", q(dir .. "/srv/data/" .. BUCKET .. "/ch/cut"), srv_pid or 0)
    local ok, out, _, err = h.run("(" .. killer .. ") & " .. cmd)
    assert.is_falsy(ok, out)
    assert.matches("chbackup:", err)
    -- S3 never shows an object whose PUT did not finish; s3rver, killed
    -- mid-write, leaves its files (`<key>._S3rver_object`, `.md5`,
    -- `_metadata.json`) half made and answers 500 to listings then: what a
    -- killed PUT left goes, as S3 would never have had it.
    local function drop_unfinished(d)
      local lfs = require("lfs")
      for e in lfs.dir(d) do
        local path = d .. "/" .. e
        if e ~= "." and e ~= ".." and lfs.symlinkattributes(path, "mode") == "directory" then
          drop_unfinished(path)
        else
          local orphan = e:match("^(.*)%._S3rver_metadata%.json$") or e:match("^(.*)%._S3rver_object%.md5$")
          if orphan and not h.exists(d .. "/" .. orphan .. "._S3rver_object") then
            os.remove(path)
          end
          local key = e:match("^(.*)%._S3rver_object$")
          local meta = key and h.read(d .. "/" .. key .. "._S3rver_metadata.json")
          if key and not (meta and pcall(require("cjson").decode, meta) and h.exists(path .. ".md5")) then
            os.remove(path)
            os.remove(path .. ".md5")
            os.remove(d .. "/" .. key .. "._S3rver_metadata.json")
          end
        end
      end
    end
    drop_unfinished(dir .. "/srv/data/" .. BUCKET)
    srv.start()   -- the same directory: what was written stays
    port, url, c = srv.port, srv.url, srv.client
    assert.is_false(has(objects("cut"), ".backup"))
    local r = h.sql(w, "BACKUP DATABASE shop TO " .. s3("cut"))
    assert.equal("BACKUP_CREATED", r[1].status)
    assert.is_false(has(objects("cut"), ".lock"))
  end)

  -- Tar archives on S3: one object at the url's key (ClickHouse's layout).
  describe("tar archives", function()
    local SHOP = {}
    for _, t in ipairs(ALL_TABLES) do
      if t[1] == "shop" then SHOP[#SHOP + 1] = t end
    end

    setup(function()
      write_ch_config()   -- the server may have been restarted on another port
    end)

    -- chbackup RESTOREs the tar `name` with the rows of data path `src`.
    local function restores_all(name, src)
      local target = w.dir .. "/tar-" .. name
      local r = h.sql(w, "RESTORE ALL FROM " .. s3(name), target)
      assert.equal("RESTORED", r[1].status)
      assert.equal(h.table_digests(src, ALL_TABLES), h.table_digests(target, ALL_TABLES))
    end

    it("BACKUP to S3 as .tar and .tar.zst: one object, no .lock left; RESTORE gives the same rows", function()
      for _, name in ipairs({ "x.tar", "x.tar.zst" }) do
        local r = h.sql(w, "BACKUP DATABASE shop, DATABASE logs TO " .. s3(name))
        assert.equal("BACKUP_CREATED", r[1].status)
        local keys = {}
        for _, o in ipairs(assert(c:list("ch/" .. name))) do keys[#keys + 1] = o.key end
        assert.same({ "ch/" .. name }, keys)
        restores_all(name, w.data)
      end
      assert.equal("\40\181\47\253", assert(c:get("ch/x.tar.zst", 0, 4)))   -- zstd's magic
      assert.equal("ustar", assert(c:get("ch/x.tar", 257, 5)))
      assert.matches("already exists", h.sql_refused(w, "BACKUP DATABASE shop TO " .. s3("x.tar")))
    end)

    it("ClickHouse RESTOREs chbackup's S3 tar and chbackup restores ClickHouse's (s3_plain disk)", function()
      for _, name in ipairs({ "x.tar", "x.tar.zst" }) do
        local target = w.dir .. "/ch-restores-" .. name
        h.copy_datapath(target)
        h.sh("rm -rf " .. q(target .. "/metadata/shop") .. " " .. q(target .. "/metadata/shop.sql"))
        h.clickhouse(target, { "RESTORE DATABASE shop FROM Disk('s3plain', '" .. name .. "')" }, ch_config)
        assert.equal(h.table_digests(w.data, SHOP), h.table_digests(target, SHOP), name)
      end
      local src = w.dir .. "/ch-tar-src"
      h.copy_datapath(src)
      for _, name in ipairs({ "theirs.tar", "theirs.tar.zst" }) do
        h.clickhouse(src, { "BACKUP DATABASE shop, DATABASE logs TO Disk('s3plain', '" .. name .. "')" }, ch_config)
        assert.truthy(c:head("ch/" .. name))
        restores_all(name, src)
      end
    end)

    it("RESTORE of a tar object with a flipped byte fails naming it and restores nothing", function()
      for _, name in ipairs({ "flip.tar", "flip.tar.zst" }) do
        h.sql(w, "BACKUP TABLE shop.customers TO " .. s3(name))
        local bytes = c:get("ch/" .. name)
        local i = #bytes // 3
        c:put("ch/" .. name, bytes:sub(1, i - 1) .. string.char(bytes:byte(i) ~ 0x55) .. bytes:sub(i + 1))
        local target = w.dir .. "/flipped-" .. name
        local err = h.sql_refused(w, "RESTORE TABLE shop.customers FROM " .. s3(name), target)
        assert.matches("ch/" .. name:gsub("%p", "%%%0"), err)
        assert.is_false(h.exists(target .. "/metadata/shop/customers.sql"))
      end
    end)
  end)
end)
