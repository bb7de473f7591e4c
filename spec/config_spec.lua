local config = require("chbackup.config")
local lfs = require("lfs")

local WORK = "/tmp/cfgwork"

-- The seed's backup_disk.xml ("Configure a backup destination"), verbatim.
local SEED_BACKUP_DISK_XML = [[
<clickhouse>
    <storage_configuration>
        <disks>
            <backups>
                <type>local</type>
                <path>/backups/</path>
            </backups>
        </disks>
    </storage_configuration>
    <backups>
        <allowed_disk>backups</allowed_disk>
        <allowed_path>/backups/</allowed_path>
    </backups>
</clickhouse>
]]

local MINIMAL_CONFIG_XML = [[
<?xml version="1.0"?>
<clickhouse>
    <path>/var/lib/clickhouse/</path>
</clickhouse>
]]


local function mkdir_p(path)
  local sofar = ""
  for part in path:gmatch("[^/]+") do
    sofar = sofar .. "/" .. part
    if not lfs.attributes(sofar) then
      assert(lfs.mkdir(sofar))
    end
  end
end


local function write(path, text)
  mkdir_p(path:match("^(.*)/[^/]*$"))
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end


-- Removes a tree without following symlinks.
local function rm_rf(path)
  local mode = lfs.symlinkattributes(path, "mode")
  if mode == "directory" then
    for name in lfs.dir(path) do
      if name ~= "." and name ~= ".." then
        rm_rf(path .. "/" .. name)
      end
    end
    assert(lfs.rmdir(path))
  elseif mode then
    assert(os.remove(path))
  end
end


local counter = 0

local function fresh_dir()
  counter = counter + 1
  local dir = string.format("%s/%d-%d-%d", WORK, os.time(), counter,
    math.random(1, 1000000))
  mkdir_p(dir)
  return dir
end


local function disk(name, path)
  return { engine = "Disk", args = { name, path } }
end


local function file(path)
  return { engine = "File", args = { path } }
end


describe("chbackup.config", function()
  local dir

  before_each(function()
    dir = fresh_dir()
  end)

  after_each(function()
    rm_rf(dir)
  end)

  describe("load", function()
    it("reads the seed's backup_disk.xml from config.d verbatim", function()
      write(dir .. "/config.xml", MINIMAL_CONFIG_XML)
      write(dir .. "/config.d/backup_disk.xml", SEED_BACKUP_DISK_XML)
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.same({ "backups" }, cfg.allowed_disks)
      assert.same({ "/backups/" }, cfg.allowed_paths)
      assert.equal("local", cfg.disks.backups.type)
      assert.equal("/backups/", cfg.disks.backups.path)
      assert.equal("backups", cfg.disks.backups.name)
      assert.equal(dir .. "/config.xml", cfg.source)
      assert.same({ dir .. "/config.xml", dir .. "/config.d/backup_disk.xml" },
        cfg.files)
      assert.is_nil(cfg.disks.default)

      local r = assert(config.resolve(cfg, disk("backups", "1.zip")))
      assert.equal("Disk('backups', '1.zip')", r.name)
      assert.equal("Disk", r.engine)
      assert.equal("backups", r.disk)
      assert.equal("/backups/1.zip", r.path)
      assert.equal("/backups", r.root)
      assert.is_true(r.archive)
      assert.equal("zip", r.archive_kind)

      r = assert(config.resolve(cfg, file("/backups/x")))
      assert.equal("File('/backups/x')", r.name)
      assert.equal("File", r.engine)
      assert.is_nil(r.disk)
      assert.equal("/backups/x", r.path)
      assert.equal("/backups", r.root)
      assert.is_false(r.archive)
      assert.is_nil(r.archive_kind)
    end)

    it("accepts a single file with no config.d and a <yandex> root", function()
      write(dir .. "/server.xml", [[
<yandex>
  <storage_configuration><disks>
    <b><path>]] .. dir .. [[/b/</path></b>
  </disks></storage_configuration>
  <backups><allowed_disk>b</allowed_disk></backups>
</yandex>]])
      local cfg = assert(config.load(dir .. "/server.xml"))
      assert.equal("local", cfg.disks.b.type)
      local r = assert(config.resolve(cfg, disk("b", "x/./y//z")))
      assert.equal(dir .. "/b/x/y/z", r.path)
      assert.equal("x/y/z", r.relative)
    end)

    it("fails naming a file that does not exist", function()
      local cfg, err = config.load(dir .. "/nope.xml")
      assert.is_nil(cfg)
      assert.matches(dir .. "/nope.xml", err, 1, true)
    end)

    it("merges config.d files in name order, the last one winning",
      function()
        write(dir .. "/config.xml", [[<clickhouse>
  <storage_configuration><disks>
    <b><path>/from/main/</path></b>
  </disks></storage_configuration>
</clickhouse>]])
        write(dir .. "/config.d/20-second.xml", [[<clickhouse>
  <storage_configuration><disks>
    <b><path>/from/second/</path></b>
  </disks></storage_configuration>
</clickhouse>]])
        write(dir .. "/config.d/10-first.xml", [[<clickhouse>
  <storage_configuration><disks>
    <b><path>/from/first/</path></b>
  </disks></storage_configuration>
</clickhouse>]])
        write(dir .. "/config.d/.30-hidden.xml", [[<clickhouse>
  <storage_configuration><disks>
    <b><path>/from/hidden/</path></b>
  </disks></storage_configuration>
</clickhouse>]])
        write(dir .. "/config.d/40-notes.txt",
          "<clickhouse><oops></clickhouse>")
        local cfg = assert(config.load(dir .. "/config.xml"))
        assert.equal("/from/second/", cfg.disks.b.path)
        assert.same({ dir .. "/config.xml", dir .. "/config.d/10-first.xml",
          dir .. "/config.d/20-second.xml" }, cfg.files)
      end)

    it("merges conf.d too, sorted by full path like ClickHouse", function()
      write(dir .. "/config.xml", "<clickhouse/>")
      write(dir .. "/conf.d/z.xml", [[<clickhouse><storage_configuration>
  <disks><b><path>/from/conf.d/</path></b></disks>
</storage_configuration></clickhouse>]])
      write(dir .. "/config.d/a.xml", [[<clickhouse><storage_configuration>
  <disks><b><path>/from/config.d/</path></b></disks>
</storage_configuration></clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      -- ".../conf.d/z.xml" sorts before ".../config.d/a.xml".
      assert.equal("/from/config.d/", cfg.disks.b.path)
    end)

    it("honours replace=\"replace\"", function()
      write(dir .. "/config.xml", [[<clickhouse>
  <backups>
    <allowed_disk>a</allowed_disk>
    <allowed_disk>b</allowed_disk>
    <allowed_path>/p/</allowed_path>
  </backups>
</clickhouse>]])
      write(dir .. "/config.d/backups.xml", [[<clickhouse>
  <backups replace="replace">
    <allowed_disk>c</allowed_disk>
  </backups>
</clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.same({ "c" }, cfg.allowed_disks)
      assert.same({}, cfg.allowed_paths)
      assert.equal(dir .. "/config.d/backups.xml", cfg.backups_source)
    end)

    it("honours remove=\"remove\"", function()
      write(dir .. "/config.xml", [[<clickhouse>
  <storage_configuration><disks>
    <old><path>/old/</path></old>
    <keep><path>/keep/</path></keep>
  </disks></storage_configuration>
  <backups><allowed_path>/p/</allowed_path></backups>
</clickhouse>]])
      write(dir .. "/config.d/rm.xml", [[<clickhouse>
  <storage_configuration><disks>
    <old remove="remove"/>
    <never remove="1"><path>/never/</path></never>
  </disks></storage_configuration>
  <backups><allowed_path remove="remove"/></backups>
</clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.is_nil(cfg.disks.old)
      assert.is_nil(cfg.disks.never)
      assert.equal("/keep/", cfg.disks.keep.path)
      assert.same({}, cfg.allowed_paths)
    end)

    it("refuses an element with both remove and replace", function()
      write(dir .. "/config.xml", "<clickhouse><backups/></clickhouse>")
      write(dir .. "/config.d/bad.xml",
        "<clickhouse>\n<backups remove=\"1\" replace=\"1\"/></clickhouse>")
      local cfg, err = config.load(dir .. "/config.xml")
      assert.is_nil(cfg)
      assert.matches(dir .. "/config.d/bad.xml:2", err, 1, true)
      assert.matches("both remove and replace", err, 1, true)
    end)

    it("keeps every allowed_disk and allowed_path", function()
      write(dir .. "/config.xml", [[<clickhouse>
  <storage_configuration><disks>
    <one><path>]] .. dir .. [[/one/</path></one>
    <two><path>]] .. dir .. [[/two/</path></two>
  </disks></storage_configuration>
  <backups>
    <allowed_disk>one</allowed_disk>
    <allowed_disk>two</allowed_disk>
    <allowed_path>]] .. dir .. [[/p1/</allowed_path>
    <allowed_path>]] .. dir .. [[/p2/</allowed_path>
  </backups>
</clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.same({ "one", "two" }, cfg.allowed_disks)
      assert.same({ dir .. "/p1/", dir .. "/p2/" }, cfg.allowed_paths)
      assert.truthy(config.resolve(cfg, disk("one", "a")))
      assert.truthy(config.resolve(cfg, disk("two", "a")))
      local r = assert(config.resolve(cfg, file(dir .. "/p2/x")))
      assert.equal(dir .. "/p2", r.root)
    end)

    it("merges repeated elements pairwise, as ClickHouse does", function()
      write(dir .. "/config.xml", [[<clickhouse><backups>
  <allowed_disk>a</allowed_disk>
  <allowed_disk>b</allowed_disk>
</backups></clickhouse>]])
      write(dir .. "/config.d/more.xml", [[<clickhouse><backups>
  <allowed_disk>c</allowed_disk>
</backups></clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      -- The first <allowed_disk> of config.d merges into the first of
      -- config.xml (its text replaces "a"); the second stays.
      assert.same({ "c", "b" }, cfg.allowed_disks)
    end)

    it("names the file and line of malformed XML", function()
      write(dir .. "/config.xml", MINIMAL_CONFIG_XML)
      write(dir .. "/config.d/broken.xml",
        "<clickhouse>\n  <backups>\n  </backupz>\n</clickhouse>\n")
      local cfg, err = config.load(dir .. "/config.xml")
      assert.is_nil(cfg)
      assert.matches(dir .. "/config.d/broken.xml:3:", err, 1, true)
      assert.matches("malformed XML", err, 1, true)
    end)

    it("refuses a merged file whose root is not <clickhouse>", function()
      write(dir .. "/config.xml", MINIMAL_CONFIG_XML)
      write(dir .. "/config.d/other.xml", "<other/>")
      local cfg, err = config.load(dir .. "/config.xml")
      assert.is_nil(cfg)
      assert.matches(dir .. "/config.d/other.xml", err, 1, true)
    end)

    it("refuses a local disk path without a trailing slash", function()
      write(dir .. "/config.xml", [[<clickhouse><storage_configuration>
<disks><b><path>/b</path></b></disks></storage_configuration></clickhouse>]])
      local cfg, err = config.load(dir .. "/config.xml")
      assert.is_nil(cfg)
      assert.matches("disk 'b'", err, 1, true)
      assert.matches("must end with /", err, 1, true)
    end)

    it("records YAML files it cannot read in cfg.ignored", function()
      write(dir .. "/config.xml", MINIMAL_CONFIG_XML)
      write(dir .. "/config.d/x.yaml", "backups:\n  allowed_disk: b\n")
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.same({ dir .. "/config.d/x.yaml" }, cfg.ignored)
    end)

    it("gives the default disk the data path when it is declared", function()
      write(dir .. "/config.xml", [[<clickhouse>
<path>/data/ch</path>
<storage_configuration><disks><default>
  <keep_free_space_bytes>1024</keep_free_space_bytes>
</default></disks></storage_configuration>
</clickhouse>]])
      local cfg = assert(config.load(dir .. "/config.xml"))
      assert.equal("/data/ch/", cfg.disks.default.path)
    end)
  end)

  describe("from_table", function()
    it("builds the same shape as load", function()
      local cfg = assert(config.from_table({
        disks = { backups = { type = "local", path = "/backups" } },
        backups = { allowed_disk = { "backups" }, allowed_path = "/backups/" },
      }))
      assert.equal("lua table", cfg.source)
      assert.same({ name = "backups", type = "local", path = "/backups/",
        source = "lua table" }, cfg.disks.backups)
      assert.same({ "backups" }, cfg.allowed_disks)
      assert.same({ "/backups/" }, cfg.allowed_paths)
    end)

    it("refuses an unknown top-level key, naming it", function()
      local cfg, err = config.from_table({ disks = {}, status_dir = "/x" })
      assert.is_nil(cfg)
      assert.matches("status_dir", err, 1, true)
    end)

    it("refuses an unknown key inside backups, naming it", function()
      local cfg, err = config.from_table({ backups = { allowed_disks = "b" } })
      assert.is_nil(cfg)
      assert.matches("allowed_disks", err, 1, true)
    end)

    it("refuses a local disk without an absolute path", function()
      local cfg, err = config.from_table({ disks = { b = { path = "rel/" } } })
      assert.is_nil(cfg)
      assert.matches("disk 'b'", err, 1, true)
    end)
  end)

  describe("resolve", function()
    local cfg, root

    before_each(function()
      root = dir .. "/disk"
      mkdir_p(root)
      cfg = assert(config.from_table({
        disks = {
          backups = { path = root .. "/" },
          other = { path = dir .. "/other/" },
          remote = { type = "s3" },
        },
        backups = {
          allowed_disk = { "backups", "ghost", "remote" },
          allowed_path = { dir .. "/files/", dir .. "/more/" },
        },
      }))
    end)

    it("refuses an unknown disk", function()
      local r, err = config.resolve(cfg, disk("ghost", "1.zip"))
      assert.is_nil(r)
      assert.equal("unknown disk 'ghost': the configured disks are 'backups', 'other', 'remote' "
        .. "(storage_configuration.disks in lua table)", err)
    end)

    it("names an unknown disk as unknown even when it is not allowed either (a misspelt name)", function()
      local r, err = config.resolve(cfg, disk("backup", "1"))
      assert.is_nil(r)
      assert.equal("unknown disk 'backup': the configured disks are 'backups', 'other', 'remote' "
        .. "(storage_configuration.disks in lua table)", err)
    end)

    it("refuses a disk not in allowed_disk", function()
      local r, err = config.resolve(cfg, disk("other", "1.zip"))
      assert.is_nil(r)
      assert.equal("disk 'other' is not allowed for backups "
        .. "(backups.allowed_disk in lua table)", err)
    end)

    it("refuses a disk that is not local", function()
      local r, err = config.resolve(cfg, disk("remote", "1.zip"))
      assert.is_nil(r)
      assert.equal("disk 'remote' has type 's3'; only local disks are "
        .. "supported", err)
    end)

    it("refuses a path that climbs out of the disk with '..'", function()
      local r, err = config.resolve(cfg, disk("backups", "a/../../x.zip"))
      assert.is_nil(r)
      assert.equal("path 'a/../../x.zip' escapes disk 'backups'", err)
      r = assert(config.resolve(cfg, disk("backups", "a/../x.zip")))
      assert.equal(root .. "/x.zip", r.path)
    end)

    it("refuses an absolute path outside the disk", function()
      local r, err = config.resolve(cfg, disk("backups", "/etc/passwd"))
      assert.is_nil(r)
      assert.equal("path '/etc/passwd' escapes disk 'backups'", err)
    end)

    it("takes an absolute path inside the disk relative to it", function()
      local r = assert(config.resolve(cfg, disk("backups", root .. "/b/1.zip")))
      assert.equal(root .. "/b/1.zip", r.path)
      assert.equal("b/1.zip", r.relative)
    end)

    it("refuses a symlink that leads out of the disk", function()
      local outside = dir .. "/elsewhere"
      mkdir_p(outside)
      assert(lfs.link(outside, root .. "/escape", true))
      local r, err = config.resolve(cfg, disk("backups", "escape/1.zip"))
      assert.is_nil(r)
      assert.equal("path '" .. root .. "/escape/1.zip' escapes disk "
        .. "'backups' through symlink '" .. root .. "/escape'", err)
    end)

    it("accepts a symlink that stays inside the disk", function()
      mkdir_p(root .. "/real")
      assert(lfs.link("real", root .. "/alias", true))
      local r = assert(config.resolve(cfg, disk("backups", "alias/1.zip")))
      assert.equal(root .. "/alias/1.zip", r.path)
      assert.equal(root .. "/real/1.zip", r.real_path)
    end)

    it("accepts a disk whose own path is a symlink", function()
      local real_root = dir .. "/real-root"
      mkdir_p(real_root)
      assert(lfs.link(real_root, dir .. "/linked", true))
      local c = assert(config.from_table({
        disks = { l = { path = dir .. "/linked/" } },
        backups = { allowed_disk = "l" },
      }))
      local r = assert(config.resolve(c, disk("l", "1.zip")))
      assert.equal(dir .. "/linked/1.zip", r.path)
      assert.equal(real_root .. "/1.zip", r.real_path)
    end)

    it("refuses a File path outside allowed_path", function()
      local r, err = config.resolve(cfg, file(dir .. "/filesX/1.zip"))
      assert.is_nil(r)
      assert.equal("path '" .. dir .. "/filesX/1.zip' is not allowed for "
        .. "backups (backups.allowed_path in lua table)", err)
      r, err = config.resolve(cfg, file(dir .. "/files/../x"))
      assert.is_nil(r)
      assert.matches("is not allowed for backups", err, 1, true)
    end)

    it("puts a relative File path under the first allowed_path", function()
      local r = assert(config.resolve(cfg, file("sub/1.tar.gz")))
      assert.equal(dir .. "/files/sub/1.tar.gz", r.path)
      assert.equal(dir .. "/files", r.root)
      assert.is_true(r.archive)
      assert.equal("tar", r.archive_kind)
      local _, err = config.resolve(cfg, file("../x"))
      assert.matches("is not allowed for backups", err, 1, true)
    end)

    it("refuses an empty File path", function()
      local r, err = config.resolve(cfg, file(""))
      assert.is_nil(r)
      assert.matches("must not be empty", err, 1, true)
    end)

    it("refuses a File symlink that leads out of allowed_path", function()
      mkdir_p(dir .. "/files")
      mkdir_p(dir .. "/elsewhere")
      assert(lfs.link(dir .. "/elsewhere", dir .. "/files/out", true))
      local r, err = config.resolve(cfg, file(dir .. "/files/out/b"))
      assert.is_nil(r)
      assert.matches("through symlink '" .. dir .. "/files/out'", err, 1, true)
    end)

    it("refuses an unsupported engine", function()
      local r, err = config.resolve(cfg, { engine = "Azure", args = { "u" } })
      assert.is_nil(r)
      assert.equal("backup engine 'Azure' is not supported", err)
      -- S3 is resolved by chbackup.store.s3 (spec/s3_backup_spec.lua)
      r, err = config.resolve(cfg, { engine = "S3", args = { "u" } })
      assert.is_nil(r)
      assert.equal("S3('u'): expected http(s)://host[:port]/bucket/path", err)
      r, err = config.resolve(cfg, { engine = "disk", args = { "b", "x" } })
      assert.is_nil(r)
      assert.equal("backup engine 'disk' is not supported", err)
    end)

    it("refuses the wrong number or type of arguments", function()
      local _, err = config.resolve(cfg, { engine = "Disk", args = { "b" } })
      assert.matches("'Disk' requires 2 arguments (disk_name, path)", err, 1,
        true)
      _, err = config.resolve(cfg, { engine = "File", args = { 1 } })
      assert.matches("'File' requires 1 argument (path)", err, 1, true)
      _, err = config.resolve(cfg, { engine = "File" })
      assert.matches("'File' requires 1 argument", err, 1, true)
    end)

    it("says that the arguments must be quoted strings when the first is a bare word", function()
      -- Disk(backups, '1') parses as a named collection `backups`
      local _, err = config.resolve(cfg, { engine = "Disk", collection = "backups", args = { "1" } })
      assert.equal("backup engine 'Disk': its arguments must be quoted strings (backups is not quoted; "
        .. "named collections are not supported): Disk('backups', '1')", err)
    end)

    it("quotes the canonical name like ClickHouse", function()
      local r = assert(config.resolve(cfg, disk("backups", "it's\\a\n.zip")))
      assert.equal("Disk('backups', 'it\\'s\\\\a\\n.zip')", r.name)
    end)

    it("matches archive extensions case-sensitively, as ClickHouse", function()
      local r = assert(config.resolve(cfg, disk("backups", "1.ZIP")))
      assert.is_false(r.archive)
      r = assert(config.resolve(cfg, disk("backups", "1.zip/")))
      assert.is_false(r.archive)
      r = assert(config.resolve(cfg, disk("backups", "x.tzst")))
      assert.equal("tar", r.archive_kind)
    end)

    it("allows the disk root itself, as ClickHouse", function()
      local r = assert(config.resolve(cfg, disk("backups", "")))
      assert.equal(root, r.path)
      assert.equal("", r.relative)
    end)

    it("says when allowed_disk is not set at all", function()
      local c = assert(config.from_table({ disks = { b = { path = "/b/" } } }))
      local _, err = config.resolve(c, disk("b", "x"))
      assert.matches("backups.allowed_disk is not set", err, 1, true)
    end)
  end)
end)
