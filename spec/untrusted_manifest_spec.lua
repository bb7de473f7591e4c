-- A backup is untrusted input: a damaged `.backup` or metadata file is
-- refused with one clean error line naming the backup and the entry, by
-- the library and by every command of the CLI (show, chain, diff, RESTORE);
-- never a Lua error, a traceback or "internal error".
local h = require("spec.helpers")
local core = require("chbackup.core")
local ddl = require("chbackup.ddl")
local manifest = require("chbackup.manifest")

local FULL = h.FIXTURES .. "/ch_backups/full"
local FIRST = "data/logs/events/__marks.mrk" -- the manifest's first entry
local FIRST_SUM = "f81d850fe41f834164aa3ad200c48c26"

local function plain(s)
  return (s:gsub("%p", "%%%0"))
end

-- text with the first `from` replaced by `to` (asserted present)
local function edit(text, from, to)
  local i, j = text:find(from, 1, true)
  assert(i, "not in the manifest: " .. from)
  return text:sub(1, i - 1) .. to .. text:sub(j + 1)
end

local full_text = assert(h.read(FULL .. "/.backup"))

-- name -> {damaged manifest text, pattern the error must match}
local DAMAGED = {
  { "mismatched", edit(full_text, "</contents>", "</contentz>"), "mismatched tag" },
  { "truncated", full_text:sub(1, #full_text // 2), "no element found" },
  { "not_xml", "\0\1\2 garbage", "" },
  { "short_checksum", edit(full_text, FIRST_SUM, "f81d850f"),
    plain(FIRST) .. ": checksum \"f81d850f\" is not 32 hexadecimal digits" },
  { "negative_size", edit(full_text, "<size>288</size>", "<size>-5</size>"),
    plain(FIRST) .. ": size \"%-5\" is not a non%-negative integer" },
  { "huge_size", edit(full_text, "<size>288</size>", "<size>99999999999999999999</size>"),
    plain(FIRST) .. ": size \"9+\" is not a non%-negative integer" },
  { "no_size", edit(full_text, "<size>288</size>", ""), plain(FIRST) .. ": no <size>" },
  { "two_sizes", edit(full_text, "<size>288</size>", "<size>288</size><size>1</size>"),
    plain(FIRST) .. " has two <size>" },
  { "base_size", edit(full_text, "</checksum>", "</checksum><use_base>true</use_base><base_size>300</base_size>"),
    plain(FIRST) .. ": base_size 300 is larger than its size 288" },
  { "use_base", edit(full_text, "</checksum>", "</checksum><use_base>maybe</use_base>"),
    plain(FIRST) .. ": use_base \"maybe\" is not true or false" },
  { "dotdot", edit(full_text, FIRST, "data/../../../etc/passwd"),
    "file entry 1 has a name that is not a safe relative path: \"data/%.%./%.%./%.%./etc/passwd\"" },
  { "absolute", edit(full_text, FIRST, "/etc/passwd"), "file entry 1 .*not a safe relative path: \"/etc/passwd\"" },
  { "empty_part", edit(full_text, FIRST, "data//x"), "file entry 1 .*not a safe relative path" },
  { "control", edit(full_text, FIRST, "data/a&#9;b"), "file entry 1 .*not a safe relative path: \"data/a\\9b\"" },
  { "empty_name", edit(full_text, FIRST, ""), "file entry 1 .*not a safe relative path: \"\"" },
  { "duplicate", edit(full_text, "data/logs/events/code.bin<", FIRST .. "<"), plain(FIRST) .. " is listed twice" },
  { "version", edit(full_text, "<version>1</version>", "<version>7</version>"), "version \"7\" is not supported" },
  { "no_version", edit(full_text, "<version>1</version>", ""), "no <version>" },
  { "data_file_missing", edit(full_text, "<data_file>data/logs/mv_levels/all_1_1_0/columns.txt<",
    "<data_file>data/nowhere<"), "refers to data_file data/nowhere, which it does not list" },
  { "data_file_unsafe", edit(full_text, "<data_file>data/logs/mv_levels/all_1_1_0/columns.txt<",
    "<data_file>../x<"), "data_file is not a safe relative path: \"%.%./x\"" },
  { "root", edit(edit(full_text, "<config>", "<confog>"), "</config>", "</confog>"), "root element is <confog>" },
}


describe("manifest.parse on damaged input", function()
  it("returns nil and a message naming the manifest and the entry, and never raises", function()
    for _, d in ipairs(DAMAGED) do
      local ok, m, err = pcall(manifest.from_string, d[2], "B/.backup")
      assert.is_true(ok, d[1] .. " raised: " .. tostring(m))
      assert.is_nil(m, d[1])
      assert.matches("^backup manifest B/%.backup is corrupt: .*" .. d[3], err, 1)
    end
  end)

  it("still reads ClickHouse's own manifests", function()
    for _, name in ipairs({ "full", "inc1", "inc2" }) do
      local m = assert(manifest.read(h.FIXTURES .. "/ch_backups/" .. name .. "/.backup"))
      assert.is_true(#m.files > 300)
    end
  end)

  it("accepts safe names of any top-level directory, backslashes included", function()
    for _, name in ipairs({ "metadata/db/t.sql", "access/users.sql", "functions/f.sql", "data/a\\b/c", "x" }) do
      assert.is_true(manifest.safe_name(name), name)
    end
    for _, name in ipairs({ "", "/", "a/", "/a", "a//b", "./a", "a/.", "a/../b", "..", "a\0b", "a\nb", "a\127" }) do
      assert.is_false(manifest.safe_name(name), name)
    end
  end)
end)


describe("the CLI on a damaged backup", function()
  local w
  setup(function()
    w = h.world("untrusted")
    for _, d in ipairs(DAMAGED) do
      assert(os.execute("cp -a " .. h.quote(FULL) .. " " .. h.quote(w.backups .. "/" .. d[1])))
      h.write(w.backups .. "/" .. d[1] .. "/.backup", d[2])
    end
  end)

  local function cmd(args)
    return h.run(string.format("%s/scripts/chbackup --path %s --config %s --status-dir %s %s", h.ROOT,
      h.quote(w.data), h.quote(w.config), h.quote(w.status), args))
  end

  -- exit status 1, one line naming the backup's manifest and the entry
  local function clean_failure(what, pattern, ok, out, code)
    assert.is_falsy(ok, what)
    assert.equal(1, code, what .. ": " .. out)
    assert.matches("^chbackup: [^\n]*" .. pattern .. "[^\n]*\n$", out, 1, what)
    assert.is_nil(out:find("traceback", 1, true), what .. ": " .. out)
    assert.is_nil(out:find("internal error", 1, true), what .. ": " .. out)
    assert.is_nil(out:find(".lua:", 1, true), what .. ": " .. out)
  end

  it("show, chain, diff and RESTORE exit 1 with one line naming the backup and the entry", function()
    for _, d in ipairs(DAMAGED) do
      local name = h.quote("Disk('backups', '" .. d[1] .. "')")
      local where = "backup manifest " .. plain(w.backups .. "/" .. d[1] .. "/.backup") .. " is corrupt: .*" .. d[3]
      clean_failure(d[1] .. " show", where, cmd("show " .. name))
      clean_failure(d[1] .. " chain", where, cmd("chain " .. name))
      clean_failure(d[1] .. " diff", where, cmd("diff " .. name .. " " .. h.quote("Disk('backups', 'mismatched')")))
      clean_failure(d[1] .. " RESTORE", where, cmd(h.quote("RESTORE ALL FROM Disk('backups', '" .. d[1] .. "')")))
    end
  end)

  it("refuses a damaged .backup inside a zip archive, naming the archive and the entry", function()
    local zip = w.backups .. "/damaged.zip"
    local writer = assert(core.zip_writer(zip))
    assert(writer:add_bytes(".backup", edit(full_text, "<size>288</size>", "<size>-5</size>")))
    assert(writer:start())
    writer:wait()
    assert(writer:result())
    writer:close()
    local name = h.quote("Disk('backups', 'damaged.zip')")
    local where = "backup manifest " .. plain(zip) .. ":%.backup is corrupt: .*" .. plain(FIRST)
    clean_failure("show", where, cmd("show " .. name))
    clean_failure("chain", where, cmd("chain " .. name))
    clean_failure("RESTORE", where, cmd(h.quote("RESTORE ALL FROM Disk('backups', 'damaged.zip')")))
  end)

  it("refuses a damaged encryption file of a directory backup without spending on it", function()
    local cases = {
      { '"n":32768,"r":8,"p":1,"salt":"zz"', "cannot read .*%.chbackup%-encryption" },
      { '"n":"x","r":8,"p":1,"salt":"00"', "asks for scrypt n=x r=8 p=1" },
      { '"n":4194304,"r":64,"p":64,"salt":"00"', "asks for scrypt n=4194304 r=64 p=64 %(integers, at most" },
      { '"n":32768.5,"r":8,"p":1,"salt":"00"', "asks for scrypt n=32768%.5" },
    }
    assert(os.execute("cp -a " .. h.quote(FULL) .. " " .. h.quote(w.backups .. "/enc")))
    h.write(w.dir .. "/password", "s3cret")
    for _, c in ipairs(cases) do
      h.write(w.backups .. "/enc/.chbackup-encryption",
        '{"format":1,"cipher":"AES-256-GCM","kdf":"scrypt","check":"ab",' .. c[1] .. "}")
      local where = "backup Disk%('backups', 'enc'%) is corrupt: .*" .. c[2]
      clean_failure("show " .. c[1], where, cmd("--password-file " .. h.quote(w.dir .. "/password") .. " show "
        .. h.quote("Disk('backups', 'enc')")))
      clean_failure("RESTORE " .. c[1], where,
        cmd(h.quote("RESTORE ALL FROM Disk('backups', 'enc') SETTINGS password = 's3cret'")))
    end
  end)

  it("names the damaged base of an incremental", function()
    assert(os.execute("cp -a " .. h.quote(h.FIXTURES .. "/ch_backups/inc1") .. " " .. h.quote(w.backups .. "/inc1")))
    -- inc1's base is Disk('backups', 'full'): a damaged one
    assert(os.execute("cp -a " .. h.quote(w.backups .. "/short_checksum") .. " " .. h.quote(w.backups .. "/full")))
    local where = "base backup Disk%('backups', 'full'%) of Disk%('backups', 'inc1'%) cannot be used: backup manifest "
      .. ".*/full/%.backup is corrupt: .*" .. plain(FIRST)
    clean_failure("chain", where, cmd("chain " .. h.quote("Disk('backups', 'inc1')")))
    clean_failure("RESTORE", where, cmd(h.quote("RESTORE ALL FROM Disk('backups', 'inc1')")))
  end)

  it("refuses a backup that is its own base", function()
    local text = edit(full_text, "<contents>", "<base_backup>Disk('backups', 'self')</base_backup>"
      .. "<base_backup_uuid>4c685c48-4606-4743-a426-af4c34e1004c</base_backup_uuid><contents>")
    assert(os.execute("cp -a " .. h.quote(FULL) .. " " .. h.quote(w.backups .. "/self")))
    h.write(w.backups .. "/self/.backup", text)
    local where = "backup chain of Disk%('backups', 'self'%) loops"
    clean_failure("chain", where, cmd("chain " .. h.quote("Disk('backups', 'self')")))
  end)

  it("refuses a metadata file with a second statement, naming it", function()
    local dir = w.backups .. "/two_statements"
    assert(os.execute("cp -a " .. h.quote(FULL) .. " " .. h.quote(dir)))
    local file = "metadata/shop/v_totals.sql"
    local old = assert(h.read(dir .. "/" .. file))
    local new = old .. "; DROP DATABASE shop"
    h.write(dir .. "/" .. file, new)
    -- the manifest matches the damaged file: only the statement is wrong
    h.write(dir .. "/.backup", edit(full_text, "<name>" .. file .. "</name><size>" .. #old .. "</size><checksum>"
      .. core.checksum(old), "<name>" .. file .. "</name><size>" .. #new .. "</size><checksum>" .. core.checksum(new)))
    clean_failure("RESTORE", "cannot parse " .. plain(file) .. " in backup Disk%('backups', 'two_statements'%): "
      .. "more than one statement",
      cmd(h.quote("RESTORE TABLE shop.v_totals AS shop.v2 FROM Disk('backups', 'two_statements')")))
    assert.is_nil(h.read(w.data .. "/metadata/shop/v2.sql"))
  end)
end)


describe("ddl on metadata with more than one statement", function()
  local T = "CREATE TABLE db.t (`x` String DEFAULT ';') ENGINE = Log"

  it("accepts one statement, a final ';' and comments or quotes holding ';'", function()
    for _, text in ipairs({
      T, T .. ";", T .. ";\n  \n", T .. " -- a; b\n", T .. "; // it's; here\n", T .. "; /* x; /* nested; */ y; */\n", T .. "; # note; here",
      "CREATE TABLE db.t (`a;b` String COMMENT 'it''s; \\'; \"') ENGINE = Log",
      "CREATE TABLE db.t (\"a;\\\"b\" String) ENGINE = Log;",
    }) do
      local info, err = ddl.parse_create(text)
      assert.is_table(info, text .. ": " .. tostring(err))
      assert.equal("db", info.database)
      assert.is_nil(info.body:find(";%s*$"), info.body)
    end
    local info = assert(ddl.parse_attach("ATTACH TABLE _ UUID '11111111-2222-3333-4444-555555555555'\n"
      .. "(\n    `x` String\n)\nENGINE = Log;\n"))
    assert.equal("(`x` String) ENGINE = Log", info.body)
  end)

  it("refuses a second statement, unterminated quotes and comments, heredocs", function()
    for text, pattern in pairs({
      [T .. "; DROP DATABASE x"] = "more than one statement",
      [T .. ";\nDROP DATABASE x;"] = "more than one statement",
      [T .. ";;"] = "more than one statement",
      [T .. "; -"] = "more than one statement",
      [T .. "; #x"] = "more than one statement",
      -- ClickHouse reads "// it's" as a comment: the quote opens no string
      [T .. " // it's\n; DROP DATABASE x; -- '"] = "more than one statement",
      [T .. " 'open"] = "unterminated quoted text",
      [T .. " /* open /* */"] = "unterminated comment",
      [T .. " $$'$$; DROP DATABASE x; '"] = "unexpected %$",
    }) do
      local info, err = ddl.parse_create(text)
      assert.is_nil(info, text)
      assert.matches(pattern, err, 1, text)
      info, err = ddl.parse_attach((text:gsub("^CREATE TABLE db%.t", "ATTACH TABLE _")))
      assert.is_nil(info, text)
      assert.matches(pattern, err, 1, text)
    end
  end)
end)
