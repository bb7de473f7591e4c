-- BACKUP/RESTORE … AS rename what views, materialized views and
-- dictionaries refer to, as ClickHouse's DDLRenamingVisitor does: checked
-- on text, then against real ClickHouse doing the same BACKUP and RESTORE.
local h = require("spec.helpers")
local renaming = require("chbackup.renaming")

describe("renaming.apply", function()
  local m = assert(renaming.map({
    { type = "database", name = "shop", new_name = "shop2" },
    { type = "table", database = "logs", name = "events", new_database = "logs", new_name = "ev2" },
    { type = "database", name = "same", new_name = "same" },
  }, "default"))

  local cases = {
    { "materialized view: TO and FROM",
      "TO shop.orders_by_day (`d` Date) AS SELECT d, count() AS orders FROM shop.orders GROUP BY d",
      "TO shop2.orders_by_day (`d` Date) AS SELECT d, count() AS orders FROM shop2.orders GROUP BY d" },
    { "joins, IN a table, subqueries, quoted names",
      "AS SELECT * FROM shop.orders AS o LEFT JOIN shop.customers AS c ON o.customer = c.id "
        .. "WHERE o.id IN shop.ids AND x GLOBAL NOT IN (SELECT id FROM `shop`.`customers`)",
      "AS SELECT * FROM shop2.orders AS o LEFT JOIN shop2.customers AS c ON o.customer = c.id "
        .. "WHERE o.id IN shop2.ids AND x GLOBAL NOT IN (SELECT id FROM shop2.customers)" },
    { "comma joins; a table renamed alone",
      "AS SELECT 1 FROM shop.a, shop.b AS x, logs.events y, logs.other",
      "AS SELECT 1 FROM shop2.a, shop2.b AS x, logs.ev2 y, logs.other" },
    { "dictGet, joinGet; strings, comments, EXTRACT and ARRAY JOIN kept",
      "AS SELECT dictGet('shop.dict', 'v', id), dictGetOrDefault('logs.events', 'v', id, 0), "
        .. "joinGet(shop.j, 'v', id), EXTRACT(DAY FROM shop.d), 'FROM shop.orders' "
        .. "FROM shop.t ARRAY JOIN shop.arr -- FROM shop.c",
      "AS SELECT dictGet('shop2.dict', 'v', id), dictGetOrDefault('logs.ev2', 'v', id, 0), "
        .. "joinGet(shop2.j, 'v', id), EXTRACT(DAY FROM shop.d), 'FROM shop.orders' "
        .. "FROM shop2.t ARRAY JOIN shop.arr -- FROM shop.c" },
    { "Merge engine, merge() and Dictionary engine",
      "(x UInt8) ENGINE = Merge('shop', '^o') AS SELECT * FROM merge('shop', 'x'), Dictionary('shop.d')",
      "(x UInt8) ENGINE = Merge('shop2', '^o') AS SELECT * FROM merge('shop2', 'x'), Dictionary('shop2.d')" },
    { "a dictionary reading this server",
      "(id UInt64) PRIMARY KEY id SOURCE(CLICKHOUSE(DB 'shop' TABLE 'customers' USER 'default')) LAYOUT(FLAT())",
      "(id UInt64) PRIMARY KEY id SOURCE(CLICKHOUSE(DB 'shop2' TABLE 'customers' USER 'default')) LAYOUT(FLAT())" },
    { "a dictionary reading another server is kept",
      "(id UInt64) PRIMARY KEY id SOURCE(CLICKHOUSE(HOST 'db1' DB 'shop' TABLE 'customers')) LAYOUT(FLAT())",
      "(id UInt64) PRIMARY KEY id SOURCE(CLICKHOUSE(HOST 'db1' DB 'shop' TABLE 'customers')) LAYOUT(FLAT())" },
    { "db.t.column and unqualified names are not tables",
      "AS SELECT shop.orders.id FROM orders WHERE x IN (1, 2)",
      "AS SELECT shop.orders.id FROM orders WHERE x IN (1, 2)" },
    { "names that need quoting",
      "AS SELECT * FROM shop.`таблица с пробелом`",
      "AS SELECT * FROM shop2.`таблица с пробелом`" },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      assert.equal(c[3], renaming.apply(c[2], m))
    end)
  end

  it("leaves text alone when nothing is renamed", function()
    local none = assert(renaming.map({ { type = "table", database = "a", name = "t" } }, "default"))
    assert.is_true(renaming.is_empty(none))
    assert.equal("FROM a.t", renaming.apply("FROM a.t", none))
  end)

  it("refuses one table renamed two ways, naming both", function()
    local map, err = renaming.map({
      { type = "table", database = "a", name = "t", new_name = "x" },
      { type = "table", database = "a", name = "t", new_name = "y" },
    }, "default")
    assert.is_nil(map)
    assert.equal("wrong renaming: a.t is renamed to a.x and to a.y at the same time", err)
  end)
end)


describe("BACKUP and RESTORE … AS with views (real ClickHouse)", function()
  local w
  setup(function()
    w = h.world("renaming")
    assert(os.execute("cp -a " .. h.quote(h.FIXTURES .. "/ch_backups/full") .. " " .. h.quote(w.backups .. "/chfull")))
  end)

  -- Each table's CREATE as ClickHouse shows it, UUIDs removed, the database as `db`.
  local function creates(path, database, config)
    local out = h.clickhouse(path, { "SELECT name, replaceRegexpAll(create_table_query, "
      .. "'UUID \\'[0-9a-f-]+\\'', 'UUID') FROM system.tables WHERE database = '" .. database
      .. "' ORDER BY name FORMAT TSV" }, config)
    return (out:gsub("%f[%w_]" .. database .. "%f[^%w_]", "db"))
  end

  it("RESTORE DATABASE … AS points views at the restored tables, as ClickHouse's RESTORE does", function()
    h.sql(w, "RESTORE DATABASE shop AS shop2 FROM Disk('backups', 'chfull')")
    local theirs_path = w.dir .. "/theirs"
    h.clickhouse(theirs_path, { "RESTORE DATABASE shop AS shop3 FROM Disk('backups', 'chfull')" }, w.config)
    local ours, theirs = creates(w.data, "shop2"), creates(theirs_path, "shop3")
    assert.equal(theirs, ours)
    assert.truthy(ours:find("TO db.orders_by_day", 1, true), ours)
    assert.truthy(ours:find("FROM db.orders", 1, true), ours)
    -- the copy's materialized view feeds the copy's table, the original's stays as it was
    local before = h.clickhouse(w.data, { "SELECT sum(orders) FROM shop.orders_by_day" })
    local out = h.clickhouse(w.data, {
      "INSERT INTO shop2.orders SELECT * FROM shop2.orders LIMIT 10",
      "SELECT sum(orders) - (SELECT sum(orders) FROM shop.orders_by_day) FROM shop2.orders_by_day",
      "SELECT sum(orders) FROM shop.orders_by_day",
      "SELECT (SELECT sum(orders) FROM shop2.v_totals) - (SELECT sum(orders) FROM shop.v_totals)",
    })
    assert.equal("10\n" .. before .. "10\n", out)
  end)

  it("RESTORE TABLE … AS renames the tables restored together", function()
    h.sql(w, "RESTORE TABLE logs.events AS logs.events2, TABLE logs.mv_levels AS logs.mv2 "
      .. "FROM Disk('backups', 'chfull')")
    local out = h.clickhouse(w.data, { "SELECT create_table_query FROM system.tables "
      .. "WHERE database = 'logs' AND name = 'mv2'" })
    assert.truthy(out:find("FROM logs.events2 GROUP BY level", 1, true), out)
  end)

  it("BACKUP DATABASE … AS writes the metadata ClickHouse's BACKUP … AS writes, byte for byte", function()
    h.sql(w, "BACKUP DATABASE shop AS shop9 TO Disk('backups', 'as-ours')")
    h.clickhouse(w.data, { "BACKUP DATABASE shop AS shop9 TO Disk('backups', 'as-theirs')" }, w.config)
    local dir = w.backups .. "/as-theirs/metadata/shop9"
    local compared = 0
    for name in require("lfs").dir(dir) do
      if name:match("%.sql$") then
        assert.equal(h.read(dir .. "/" .. name), h.read(w.backups .. "/as-ours/metadata/shop9/" .. name), name)
        compared = compared + 1
      end
    end
    assert.is_true(compared >= 5, "compared " .. compared)
    assert.truthy(h.read(dir .. "/v_totals.sql"):find("FROM shop9.orders", 1, true))
  end)
end)
