-- Specs for core.s3_client, the Lua face of the S3 client (csrc/chb_s3_lua.c),
-- against a real S3 server that verifies SigV4 (s3rver 5.0.0, started here
-- through scripts/s3rver on a free port, stopped at the end). The C test
-- csrc/tests/test_s3.c covers the client itself (signer vectors, retries, a
-- server that dies mid-upload, 40 MiB multipart); this covers the binding:
-- arguments, results, the `nil, message, code` shape, and secrets kept out.
local h = require("spec.helpers")
local core = require("chbackup.core")

local q = h.quote
local SECRET_BAD = "wrong-secret-5b1c"

describe("core.s3_client", function()
  local dir, port, c

  local function client(over)
    local o = { endpoint = "http://127.0.0.1:" .. port, bucket = "chb-spec", key_id = "S3RVER",
                secret = "S3RVER", path_style = true, max_retries = 1, retry_base_ms = 10 }
    for k, v in pairs(over or {}) do o[k] = v end
    return core.s3_client(o)
  end

  setup(function()
    dir = h.tmpdir("s3rver")
    local p = io.popen(string.format("CHB_S3RVER_PARENT=%d %s/scripts/s3rver start %s chb-spec",
      h.pid(), q(h.ROOT), q(dir .. "/srv")))
    local out = p:read("a")
    assert(p:close(), "scripts/s3rver start failed")
    port = assert(tonumber(out:match("^(%d+) %d+")), "no port from scripts/s3rver: " .. out)
    c = assert(client())
  end)

  teardown(function()
    if c then c:close() end
    if dir then os.execute(string.format("%s/scripts/s3rver stop %s", q(h.ROOT), q(dir .. "/srv"))) end
  end)

  it("puts, heads and gets objects, whole and by byte range", function()
    local data = string.rep("0123456789abcdef", 4096) -- 64 KiB
    assert.is_true(c:put("a/b c+d.bin", data))
    local st = assert(c:head("a/b c+d.bin"))
    assert.are.equal(#data, st.size)
    assert.are.equal(32, #st.etag)
    assert.are.equal(data, c:get("a/b c+d.bin"))
    assert.are.equal(data:sub(101, 150), c:get("a/b c+d.bin", 100, 50))
    assert.are.equal(data:sub(-5), c:get("a/b c+d.bin", #data - 5))
    assert.are.equal("", c:get("a/b c+d.bin", 0, 0))
  end)

  it("puts a file range and gets an object into a file", function()
    local src, dst = dir .. "/src", dir .. "/dst"
    h.write(src, string.rep("x", 1000) .. "payload" .. string.rep("y", 1000))
    assert.is_true(c:put_file("files/one", src, 1000, 7))
    assert.is_true(c:get_file("files/one", dst))
    assert.are.equal("payload", h.read(dst))
  end)

  it("uploads a file in parts of 16 MiB and reads it back equal", function()
    local src, dst = dir .. "/big", dir .. "/big.back"
    local block = string.rep("chbackup", 128 * 1024) -- 1 MiB
    local f = assert(io.open(src, "wb"))
    for i = 1, 20 do f:write(string.format("%08d", i), block:sub(9)) end
    f:close()
    assert.is_true(c:upload_file_multipart("files/big", src))
    assert.are.equal(20 * 1024 * 1024, c:head("files/big").size)
    assert.is_true(c:get_file("files/big", dst))
    assert.are.equal(core.checksum_file(src), core.checksum_file(dst))
    assert.is_true(c:upload_file("files/small", dst)) -- one PUT below 32 MiB
    assert.are.equal(20 * 1024 * 1024, c:head("files/small").size)
  end)

  it("lists every page, deletes in a batch, and reports a missing key", function()
    local keys = {}
    for i = 1, 12 do
      keys[i] = string.format("many/%02d", i)
      assert.is_true(c:put(keys[i], tostring(i)))
    end
    local listed = assert(c:list("many/", 5))
    assert.are.equal(12, #listed)
    for i, o in ipairs(listed) do
      assert.are.equal(keys[i], o.key)
      assert.are.equal(#tostring(i), o.size)
    end
    assert.is_true(c:delete_many(keys))
    assert.are.same({}, c:list("many/"))
    local ok, msg, code = c:head("many/01")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
    assert.matches("s3://chb%-spec/many/01", msg)
    assert.is_true(c:delete("many/01")) -- a missing key deletes fine
  end)

  it("lists more than 1000 keys (two pages) and deletes them in two batches", function()
    local keys = {}
    for i = 1, 1001 do
      keys[i] = string.format("thousand/%04d", i)
      assert.is_true(c:put(keys[i], ""))
    end
    local listed = assert(c:list("thousand/"))
    assert.are.equal(1001, #listed)
    assert.are.equal("thousand/1001", listed[1001].key)
    assert.is_true(c:delete_many(keys))
    assert.are.same({}, c:list("thousand/"))
  end)

  it("put_if_absent writes once, then refuses with EEXIST", function()
    assert.is_true(c:put_if_absent("bk/.lock", "first"))
    local ok, msg, code = c:put_if_absent("bk/.lock", "second")
    assert.is_nil(ok)
    assert.are.equal("EEXIST", code)
    assert.matches("already exists", msg)
    assert.are.equal("first", c:get("bk/.lock"))
  end)

  it("says SignatureDoesNotMatch for a wrong secret, and never shows the secret", function()
    local bad = assert(client({ secret = SECRET_BAD }))
    local ok, msg, code = bad:put("x", "x")
    assert.is_nil(ok)
    assert.are.equal("AUTH", code)
    assert.matches("SignatureDoesNotMatch", msg)
    assert.is_nil(msg:find(SECRET_BAD, 1, true))
    ok, msg, code = bad:head("x")
    assert.is_nil(ok)
    assert.are.equal("AUTH", code)
    assert.is_nil(msg:find(SECRET_BAD, 1, true))
    bad:close()
  end)

  it("says NoSuchBucket for a missing bucket", function()
    local nob = assert(client({ bucket = "no-such-bucket" }))
    local ok, msg, code = nob:put("x", "x")
    assert.is_nil(ok)
    assert.are.equal("NO_BUCKET", code)
    assert.matches("NoSuchBucket", msg)
    assert.matches("no%-such%-bucket", msg)
  end)

  it("signs a session token and a storage class along", function()
    local t = assert(client({ session_token = "FQoGZXIvYXdzEXAMPLE", storage_class = "STANDARD_IA" }))
    assert.is_true(t:put("classy", "x"))
    assert.is_true(t:upload_file_multipart("classy-big", h.ROOT .. "/README.md"))
    assert.are.equal("x", t:get("classy"))
    t:close()
    local bad = assert(client({ storage_class = "NO_SUCH_CLASS" }))
    local ok, msg = bad:put("x", "x")
    assert.is_nil(ok)
    assert.matches("InvalidStorageClass", msg)
    bad:close()
  end)

  it("refuses bad options and a closed client", function()
    assert.has_error(function() core.s3_client({ endpoint = "http://x", bucket = "b" }) end)
    assert.has_error(function() client({ colour = "blue" }) end)
    local ok, msg, code = client({ endpoint = "ftp://127.0.0.1" })
    assert.is_nil(ok)
    assert.are.equal("INVALID", code)
    assert.matches("endpoint", msg)
    local t = assert(client())
    t:close()
    assert.has_error(function() t:head("x") end)
  end)

  it("is told a dropped server after its retries, naming the object", function()
    local gone = assert(client({ endpoint = "http://127.0.0.1:1" }))
    local ok, msg, code = gone:put("lost/key", "x")
    assert.is_nil(ok)
    assert.are.equal("EIO", code)
    assert.matches("s3://chb%-spec/lost/key", msg)
    assert.matches("after 2 attempts", msg)
  end)
end)
