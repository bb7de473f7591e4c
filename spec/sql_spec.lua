local sql = require("chbackup.sql")

local NAME = "Disk('backups', '1.zip')"

local function disk(file)
  return { engine = "Disk", args = { "backups", file } }
end

local function tbl(database, name, extra)
  local element = { type = "table", database = database, name = name,
    temporary = false }
  for key, value in pairs(extra or {}) do
    element[key] = value
  end
  return element
end

local function statement(kind, elements, destination, text, extra)
  local result = {
    kind = kind,
    elements = elements,
    destination = destination,
    async = false,
    sync = false,
    settings = {},
    settings_order = {},
    text = text,
  }
  for key, value in pairs(extra or {}) do
    result[key] = value
  end
  return result
end

-- Parses `text` and returns its only statement.
local function one(text)
  local statements, err = sql.parse(text)
  assert.is_nil(err)
  assert.equal(1, #statements)
  return statements[1]
end

-- Asserts that `text` fails at character `position` and returns the message.
local function fails_at(text, position, expected)
  local statements, err, code = sql.parse(text)
  assert.is_nil(statements)
  assert.equal("SYNTAX_ERROR", code)
  assert.equal(position, tonumber(err:match("^Syntax error at position (%d+) ")),
    err)
  if expected then
    assert.truthy(err:find(expected, 1, true), err)
  end
  return err
end


describe("chbackup.sql", function()
  describe("seed statements (verbatim)", function()
    it("BACKUP TABLE test.table TO {backup_name}", function()
      assert.same({ statement("backup", { tbl("test", "table") },
        disk("1.zip"), "BACKUP TABLE test.table TO " .. NAME) },
        sql.parse("\nBACKUP TABLE test.table TO " .. NAME .. "\n"))
    end)

    it("RESTORE TABLE test.table FROM {backup_name}", function()
      assert.same({ statement("restore", { tbl("test", "table") },
        disk("1.zip"), "RESTORE TABLE test.table FROM " .. NAME) },
        sql.parse("\nRESTORE TABLE test.table FROM " .. NAME .. "\n"))
    end)

    it("RESTORE ... SETTINGS allow_non_empty_tables=true", function()
      local text = "RESTORE TABLE test.table FROM " .. NAME
        .. " \nSETTINGS allow_non_empty_tables=true"
      assert.same({ statement("restore", { tbl("test", "table") },
        disk("1.zip"), text, {
          settings = { allow_non_empty_tables = true },
          settings_order = { "allow_non_empty_tables" },
        }) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("RESTORE TABLE test.table AS test.table2 FROM {backup_name}", function()
      local text = "RESTORE TABLE test.table AS test.table2 FROM " .. NAME
      assert.same({ statement("restore", {
        tbl("test", "table", { new_database = "test", new_name = "table2" }),
      }, disk("1.zip"), text) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("BACKUP TABLE test.table3 AS test.table4 TO {backup_name}", function()
      local text = "BACKUP TABLE test.table3 AS test.table4 TO " .. NAME
      assert.same({ statement("backup", {
        tbl("test", "table3", { new_database = "test", new_name = "table4" }),
      }, disk("1.zip"), text) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("BACKUP TABLE tbl TO Disk('backups', 'a.zip');", function()
      assert.same({ statement("backup", { tbl(nil, "tbl") }, disk("a.zip"),
        "BACKUP TABLE tbl TO Disk('backups', 'a.zip')") },
        sql.parse("\nBACKUP TABLE tbl TO Disk('backups', 'a.zip');\n"))
    end)

    it("BACKUP ... SETTINGS base_backup=Disk(...);", function()
      local text = "BACKUP TABLE tbl TO Disk('backups', 'c.zip')\n"
        .. "  SETTINGS base_backup=Disk('backups', 'a.zip')"
      assert.same({ statement("backup", { tbl(nil, "tbl") }, disk("c.zip"),
        text, {
          settings = { base_backup = disk("a.zip") },
          settings_order = { "base_backup" },
        }) }, sql.parse("\n" .. text .. ";\n"))
    end)

    it("BACKUP TABLE test.table TO Disk('backups', 'd.zip');", function()
      local s = one("\nBACKUP TABLE test.table TO Disk('backups', 'd.zip');\n")
      assert.same(disk("d.zip"), s.destination)
      assert.same({ tbl("test", "table") }, s.elements)
    end)

    it("incremental BACKUP with base_backup = Disk(...)", function()
      local text = "BACKUP TABLE test.table TO Disk('backups', "
        .. "'incremental-a.zip')\n  SETTINGS base_backup = Disk('backups', "
        .. "'d.zip')"
      assert.same({ statement("backup", { tbl("test", "table") },
        disk("incremental-a.zip"), text, {
          settings = { base_backup = disk("d.zip") },
          settings_order = { "base_backup" },
        }) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("RESTORE ... AS test.table2 across lines", function()
      local text = "RESTORE TABLE test.table AS test.table2 \n"
        .. "  FROM Disk('backups', 'incremental-a.zip')"
      assert.same({ statement("restore", {
        tbl("test", "table", { new_database = "test", new_name = "table2" }),
      }, disk("incremental-a.zip"), text) }, sql.parse("\n" .. text .. ";\n"))
    end)

    it("BACKUP with a password", function()
      local text = "BACKUP TABLE test.table\n"
        .. "  TO Disk('backups', 'password-protected.zip')\n"
        .. "  SETTINGS password='qwerty'"
      assert.same({ statement("backup", { tbl("test", "table") },
        disk("password-protected.zip"), text, {
          settings = { password = "qwerty" },
          settings_order = { "password" },
        }) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("RESTORE with a password", function()
      local text = "RESTORE TABLE test.table\n"
        .. "  FROM Disk('backups', 'password-protected.zip')\n"
        .. "  SETTINGS password='qwerty'"
      assert.same({ statement("restore", { tbl("test", "table") },
        disk("password-protected.zip"), text, {
          settings = { password = "qwerty" },
          settings_order = { "password" },
        }) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("BACKUP with compression settings", function()
      local text = "BACKUP TABLE test.table\n"
        .. "  TO Disk('backups', 'lzma-level3.zip')\n"
        .. "  SETTINGS compression_method='lzma', compression_level=3"
      local s = one("\n" .. text .. "\n")
      assert.same(statement("backup", { tbl("test", "table") },
        disk("lzma-level3.zip"), text, {
          settings = { compression_method = "lzma", compression_level = 3 },
          settings_order = { "compression_method", "compression_level" },
        }), s)
      assert.equal("integer", math.type(s.settings.compression_level))
    end)

    it("RESTORE specific partitions", function()
      local text = "RESTORE TABLE test.table PARTITIONS '2', '3'\n"
        .. "  FROM Disk('backups', 'lzma-level3.zip')"
      assert.same({ statement("restore", {
        tbl("test", "table", { partitions = {
          { kind = "value", value = "2" },
          { kind = "value", value = "3" },
        } }),
      }, disk("lzma-level3.zip"), text) }, sql.parse("\n" .. text .. "\n"))
    end)

    it("SELECT status, error FROM system.backups FORMAT Vertical;", function()
      assert.same({ {
        kind = "select",
        table = "system.backups",
        columns = { "status", "error" },
        format = "Vertical",
        text = "SELECT status, error FROM system.backups FORMAT Vertical",
      } }, sql.parse("\nSELECT status, error FROM system.backups FORMAT Vertical;\n"))
    end)

    it("the options list of the Use section, with its missing comma added", function()
      local s = one("BACKUP TABLE t TO " .. NAME .. " ASYNC SETTINGS "
        .. "compression_method='lzma', compression_level=3, password='qwerty', "
        .. "id='first',\nbase_backup = Disk('backups', '1.zip') ")
      assert.is_true(s.async)
      assert.same({ "compression_method", "compression_level", "password",
        "id", "base_backup" }, s.settings_order)
      assert.same(disk("1.zip"), s.settings.base_backup)
      assert.equal("first", s.settings.id)
    end)
  end)

  describe("statements", function()
    it("splits on ';' and allows empty statements and comments", function()
      local statements = assert(sql.parse([[
        -- first
        BACKUP TABLE a TO Disk('backups', 'a.zip'); ;
        /* second */ RESTORE TABLE a FROM Disk('backups', 'a.zip') -- trailing
        ;
        select * from SYSTEM.BACKUPS;;
      ]]))
      assert.equal(3, #statements)
      assert.equal("backup", statements[1].kind)
      assert.equal("BACKUP TABLE a TO Disk('backups', 'a.zip')",
        statements[1].text)
      assert.equal("restore", statements[2].kind)
      assert.equal("RESTORE TABLE a FROM Disk('backups', 'a.zip')",
        statements[2].text)
      assert.equal("select", statements[3].kind)
      assert.equal("system.backups", statements[3].table)
      assert.equal("*", statements[3].columns)
    end)

    it("takes keywords in any case", function()
      local s = one("bAcKuP tAbLe Db.T tO dIsK('b', 'x') sEtTiNgS k = 1 AsYnC")
      assert.same(tbl("Db", "T"), s.elements[1])
      assert.equal("dIsK", s.destination.engine)
      assert.is_true(s.async)
    end)

    it("records ASYNC or SYNC before or after SETTINGS", function()
      local s = one("BACKUP TABLE t TO Null ASYNC SETTINGS a = 1")
      assert.is_true(s.async)
      assert.is_false(s.sync)
      s = one("BACKUP TABLE t TO Null SETTINGS a = 1 SYNC")
      assert.is_false(s.async)
      assert.is_true(s.sync)
      s = one("RESTORE TABLE t FROM Null SYNC")
      assert.is_true(s.sync)
    end)

    it("records ON CLUSTER", function()
      assert.equal("main", one("BACKUP TABLE t ON CLUSTER main TO Null").cluster)
      assert.equal("c 1", one("BACKUP TABLE t ON CLUSTER 'c 1' TO Null").cluster)
      assert.is_nil(one("BACKUP TABLE t TO Null").cluster)
    end)
  end)

  describe("identifiers", function()
    it("reads backquoted, double-quoted and non-ASCII names", function()
      local s = one("BACKUP TABLE `таблица с пробелом`.\"my \"\"t\"\"\" AS "
        .. "`a``b`.`c\\`d` TO Null")
      assert.same(tbl("таблица с пробелом", "my \"t\"", {
        new_database = "a`b", new_name = "c`d",
      }), s.elements[1])
    end)

    it("reads escapes inside quoted names", function()
      local s = one("BACKUP TABLE `a\\tb\\\\c\\x41` TO Null")
      assert.equal("a\tb\\cA", s.elements[1].name)
    end)

    it("accepts a keyword after a dot but not as a leading bare name", function()
      assert.equal("table", one("BACKUP TABLE db.table TO Null").elements[1].name)
      assert.equal("to", one("BACKUP TABLE `to` TO Null").elements[1].name)
      fails_at("BACKUP TABLE to TO Null", 14, "expected table name")
    end)
  end)

  describe("string literals", function()
    it("decodes '' and backslash escapes as ClickHouse does", function()
      local s = one([[BACKUP TABLE t TO File('it''s', 'a\'b', 'c\\d', 'e\nf', ]]
        .. [['g\th', 'like\%')]])
      assert.same({ "it's", "a'b", "c\\d", "e\nf", "g\th", "like\\%" },
        s.destination.args)
    end)
  end)

  describe("partitions", function()
    it("reads numbers, strings, ID and tuples", function()
      local s = one("RESTORE TABLE t PARTITION 2, '3', 202401, ID '202401_1', "
        .. "(1, 'a'), tuple(2, 'b'), tuple(), (7) FROM Null")
      assert.same({
        { kind = "value", value = "2" },
        { kind = "value", value = "3" },
        { kind = "value", value = "202401" },
        { kind = "id", value = "202401_1" },
        { kind = "tuple", values = { "1", "a" } },
        { kind = "tuple", values = { "2", "b" } },
        { kind = "tuple", values = {} },
        { kind = "value", value = "7" },
      }, s.elements[1].partitions)
    end)

    it("ends a partition list at the next element", function()
      local s = one("BACKUP TABLE a PARTITIONS 1, 2, TABLE b PARTITION 3 TO Null")
      assert.same({
        tbl(nil, "a", { partitions = {
          { kind = "value", value = "1" }, { kind = "value", value = "2" },
        } }),
        tbl(nil, "b", { partitions = { { kind = "value", value = "3" } } }),
      }, s.elements)
    end)

    it("reports a missing partition", function()
      fails_at("BACKUP TABLE a PARTITION TO Null", 26, "expected partition")
    end)
  end)

  describe("elements", function()
    it("reads DATABASE with AS and EXCEPT TABLES", function()
      local s = one("BACKUP DATABASE db AS db2 EXCEPT TABLES db.a, b TO Null")
      assert.same({ {
        type = "database",
        name = "db",
        new_name = "db2",
        except_tables = { { database = "db", name = "a" }, { name = "b" } },
      } }, s.elements)
      assert.same({ { type = "database", name = "db" } },
        one("BACKUP DATABASE db TO Null").elements)
      assert.same({ { database = nil, name = "x" } },
        one("BACKUP DATABASE db EXCEPT TABLE x TO Null")
          .elements[1].except_tables)
    end)

    it("rejects EXCEPT TABLES from another database", function()
      fails_at("BACKUP DATABASE db EXCEPT TABLES other.a TO Null", 34,
        "doesn't match the database name")
    end)

    it("reads ALL with EXCEPT DATABASES and EXCEPT TABLES", function()
      assert.same({ { type = "all" } }, one("BACKUP ALL TO Null").elements)
      assert.same({ {
        type = "all",
        except_databases = { "a", "b" },
        except_tables = { { database = "c", name = "d" }, { name = "e" } },
      } }, one("BACKUP ALL EXCEPT DATABASES a, b EXCEPT TABLES c.d, e TO Null")
        .elements)
      assert.same({ { type = "all", except_databases = { "system" } } },
        one("RESTORE ALL EXCEPT DATABASE system FROM Null").elements)
    end)

    it("reads TEMPORARY TABLE, DICTIONARY and VIEW", function()
      local s = one("BACKUP TEMPORARY TABLE tmp AS tmp2, DICTIONARY d.dict, "
        .. "VIEW v AS w, TABLE t TO Null")
      assert.same({
        { type = "table", name = "tmp", new_name = "tmp2", temporary = true },
        tbl("d", "dict", { object = "dictionary" }),
        tbl(nil, "v", { object = "view", new_name = "w" }),
        tbl(nil, "t"),
      }, s.elements)
    end)
  end)

  describe("destinations and settings", function()
    it("reads every setting value type in order", function()
      local s = one("BACKUP TABLE t TO File('x') SETTINGS s = 'str', i = 42, "
        .. "n = -7, f = 1.5, e = 2e3, h = 0x1F, yes = true, no = FALSE, "
        .. "base_backup = File('y'), arr = [1, 'a'], s = 'again'")
      assert.same({ s = "again", i = 42, n = -7, f = 1.5, e = 2000.0, h = 31,
        yes = true, no = false, base_backup = { engine = "File", args = { "y" } },
        arr = { 1, "a" } }, s.settings)
      assert.same({ "s", "i", "n", "f", "e", "h", "yes", "no", "base_backup",
        "arr" }, s.settings_order)
      assert.equal("integer", math.type(s.settings.i))
      assert.equal("float", math.type(s.settings.f))
      assert.equal("float", math.type(s.settings.e))
    end)

    it("accepts a bare engine name only for base_backup", function()
      assert.same({ engine = "Null", args = {} },
        one("BACKUP TABLE t TO Null SETTINGS base_backup = Null")
          .settings.base_backup)
      fails_at("BACKUP TABLE t TO Null SETTINGS compression_method = lzma", 54,
        "expected setting value near 'lzma'")
    end)

    it("reads named collections and key = value arguments", function()
      local s = one("BACKUP TABLE t TO S3(conn, 'dir/b.zip', url = 'https://h/b')")
      assert.same({ engine = "S3", collection = "conn", args = { "dir/b.zip" },
        options = { url = "https://h/b" }, options_order = { "url" } },
        s.destination)
      assert.equal("S3(conn, 'dir/b.zip', url = 'https://h/b')",
        sql.format_destination(s.destination))
    end)

    it("reads numeric destination arguments", function()
      local s = one("BACKUP TABLE t TO Memory('m', 3)")
      assert.same({ engine = "Memory", args = { "m", 3 } }, s.destination)
    end)
  end)

  describe("SELECT", function()
    it("reads all clauses", function()
      local s = one("SELECT id, name, status FROM system.backups "
        .. "WHERE status = 'BACKUP_CREATED' ORDER BY start_time DESC, id ASC, "
        .. "name LIMIT 5 FORMAT JSONEachRow")
      assert.same({
        kind = "select",
        table = "system.backups",
        columns = { "id", "name", "status" },
        where = { op = "=", column = "status", value = "BACKUP_CREATED" },
        order_by = {
          { column = "start_time", desc = true },
          { column = "id", desc = false },
          { column = "name", desc = false },
        },
        limit = 5,
        format = "JSONEachRow",
        text = "SELECT id, name, status FROM system.backups "
          .. "WHERE status = 'BACKUP_CREATED' ORDER BY start_time DESC, id ASC, "
          .. "name LIMIT 5 FORMAT JSONEachRow",
      }, s)
    end)

    it("binds AND tighter than OR, with parentheses and NOT", function()
      local s = one("SELECT * FROM system.backups WHERE status = 'A' AND "
        .. "(error != '' OR NOT name LIKE '%x%') OR num_files >= 3 AND "
        .. "total_size < 10")
      assert.same({ op = "or", args = {
        { op = "and", args = {
          { op = "=", column = "status", value = "A" },
          { op = "or", args = {
            { op = "!=", column = "error", value = "" },
            { op = "not", arg = { op = "like", column = "name", value = "%x%" } },
          } },
        } },
        { op = "and", args = {
          { op = ">=", column = "num_files", value = 3 },
          { op = "<", column = "total_size", value = 10 },
        } },
      } }, s.where)
    end)

    it("reads IN, NOT IN, NOT LIKE and every comparison", function()
      local s = one("SELECT * FROM system.backups WHERE status IN ('A', 'B') "
        .. "AND id NOT IN ('x') AND name NOT LIKE 'y%' AND a <> 1 AND b <= 2 "
        .. "AND c > 3 AND d == 4")
      assert.same({ op = "and", args = {
        { op = "in", column = "status", values = { "A", "B" } },
        { op = "not in", column = "id", values = { "x" } },
        { op = "not like", column = "name", value = "y%" },
        { op = "<>", column = "a", value = 1 },
        { op = "<=", column = "b", value = 2 },
        { op = ">", column = "c", value = 3 },
        { op = "=", column = "d", value = 4 },
      } }, s.where)
    end)

    it("lowercases the table name", function()
      assert.equal("system.backups", one("SELECT * FROM System.Backups").table)
    end)

    it("rejects FORMAT before LIMIT", function()
      fails_at("SELECT * FROM system.backups FORMAT TSV LIMIT 1", 41)
    end)
  end)

  describe("errors", function()
    it("reports a missing table name", function()
      local err = fails_at("BACKUP TABLE TO Disk('a','b')", 14)
      assert.equal("Syntax error at position 14 (line 1, column 14): "
        .. "expected table name near 'TO Disk('a','b')'", err)
    end)

    it("reports a missing destination", function()
      local err = fails_at("BACKUP TABLE t TO", 18)
      assert.equal("Syntax error at position 18 (line 1, column 18): "
        .. "expected backup destination near end of input", err)
      fails_at("BACKUP TABLE t TO SETTINGS a = 1", 19, "expected backup destination")
      fails_at("BACKUP TABLE t", 15, "TO")
    end)

    it("reports an unterminated string at its opening quote", function()
      local err = fails_at("BACKUP TABLE t TO Disk('backups', '1.zip)", 35)
      assert.equal("Syntax error at position 35 (line 1, column 35): "
        .. "unterminated string literal near ''1.zip)'", err)
      fails_at("BACKUP TABLE `t TO Null", 14, "unterminated quoted identifier")
      fails_at("BACKUP TABLE t TO Null /* x", 24, "unterminated comment")
    end)

    it("says that destination arguments must be quoted strings (Disk(backups, m1))", function()
      local err = fails_at("BACKUP TABLE t TO Disk(backups, m1)", 33)
      assert.equal("Syntax error at position 33 (line 1, column 33): the arguments of a backup destination "
        .. "must be quoted strings, as in Disk('backups', '1') near 'm1)'", err)
      fails_at("BACKUP TABLE t TO Disk('backups', m1)", 35, "must be quoted strings")
      fails_at("BACKUP TABLE t TO Null SETTINGS base_backup = Disk('b', `x`)", 57, "must be quoted strings")
    end)

    it("reports a missing setting value", function()
      local err = fails_at("RESTORE TABLE t FROM Disk('a', 'b') SETTINGS x =", 49)
      assert.equal("Syntax error at position 49 (line 1, column 49): "
        .. "expected setting value near end of input", err)
    end)

    it("reports a missing comma between settings", function()
      fails_at("BACKUP TABLE t TO Null SETTINGS password='q' id='first'", 46,
        "near 'id='first''")
    end)

    it("reports trailing garbage", function()
      fails_at("BACKUP TABLE t TO Disk('a', 'b') now", 34,
        "expected ASYNC, SYNC, SETTINGS, ';' or end of input")
    end)

    it("reports an unknown statement and empty input", function()
      fails_at("DROP TABLE t", 1, "expected BACKUP, RESTORE or SELECT near 'DROP TABLE t'")
      fails_at("  -- nothing\n", 14, "near end of input")
    end)

    it("counts lines, columns and characters (not bytes)", function()
      local err = fails_at("BACKUP TABLE t TO Null;\nBACKUP TABLE `ä` TO\n  Disk(", 52)
      assert.truthy(err:find("(line 3, column 8)", 1, true), err)
      err = fails_at("BACKUP TABLE `äö`\n  TO Disk('a' 'b')", 33)
      assert.truthy(err:find("(line 2, column 15)", 1, true), err)
      assert.truthy(err:find("expected ',' or ')' near ''b')'", 1, true), err)
    end)

    it("reports the error in a later statement", function()
      fails_at("BACKUP TABLE t TO Null; RESTORE TABLE FROM Null", 39,
        "expected table name")
    end)

    it("cuts the near text at 20 characters and at a newline", function()
      local err = fails_at("BACKUP TABLE t TO Null nope_this_is_too_long_to_show", 24)
      assert.truthy(err:find("near 'nope_this_is_too_lon'$"), err)
      err = fails_at("BACKUP TABLE t TO Null nope\nmore", 24)
      assert.truthy(err:find("near 'nope'$"), err)
    end)

    it("returns an error for absurd nesting", function()
      local depth = 1000
      local text = "SELECT * FROM system.backups WHERE " .. ("("):rep(depth)
        .. "a = 1" .. (")"):rep(depth)
      local statements, err = sql.parse(text)
      assert.is_nil(statements)
      assert.truthy(err:find("too deeply nested", 1, true), err)
      assert.truthy(sql.parse("SELECT * FROM system.backups WHERE "
        .. ("("):rep(30) .. "a = 1" .. (")"):rep(30)))
    end)

    it("raises on misuse", function()
      assert.has_error(function() sql.parse(nil) end)
      assert.has_error(function() sql.quote_identifier(1) end)
      assert.has_error(function() sql.format_destination({}) end)
    end)
  end)

  describe("quoting", function()
    it("quotes identifiers only when needed", function()
      assert.equal("orders", sql.quote_identifier("orders"))
      assert.equal("_t1", sql.quote_identifier("_t1"))
      assert.equal("`1t`", sql.quote_identifier("1t"))
      assert.equal("`my table`", sql.quote_identifier("my table"))
      assert.equal("`таблица`", sql.quote_identifier("таблица"))
      assert.equal("`a\\`b`", sql.quote_identifier("a`b"))
      assert.equal("`table`", sql.quote_identifier("table"))
      assert.equal("`NULL`", sql.quote_identifier("NULL"))
    end)

    it("quotes strings with ClickHouse's escapes", function()
      assert.equal("'plain'", sql.quote_string("plain"))
      assert.equal("'it\\'s'", sql.quote_string("it's"))
      assert.equal("'a\\\\b\\n\\t\\0'", sql.quote_string("a\\b\n\t\0"))
    end)

    it("round-trips names and strings through the parser", function()
      for _, name in ipairs({ "plain", "a`b", "sp ace", "таблица", "to",
        "x\"y", "back\\slash", "new\nline" }) do
        local text = "BACKUP TABLE " .. sql.quote_identifier(name) .. "."
          .. sql.quote_identifier(name) .. " TO File("
          .. sql.quote_string(name) .. ")"
        local s = one(text)
        assert.equal(name, s.elements[1].database)
        assert.equal(name, s.elements[1].name)
        assert.same({ name }, s.destination.args)
      end
    end)

    it("formats destinations as system.backups shows them", function()
      assert.equal("Disk('backups', '1.zip')",
        sql.format_destination(one("BACKUP TABLE t TO Disk( 'backups' ,'1.zip' )")
          .destination))
      assert.equal("File('it\\'s')",
        sql.format_destination({ engine = "File", args = { "it's" } }))
      assert.equal("Memory('m', 3, 1.5)",
        sql.format_destination({ engine = "Memory", args = { "m", 3, 1.5 } }))
      assert.equal("Null", sql.format_destination({ engine = "Null", args = {} }))
    end)
  end)
end)
