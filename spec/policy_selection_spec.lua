-- Selection: databases, tables, glob patterns and exclusions, expanded
-- against the data path at backup time into BACKUP elements that chbackup
-- (and ClickHouse) accept.
local h = require("spec.helpers")
local catalog = require("chbackup.catalog")
local selection = require("chbackup.policy.selection")


local function expand(w, t)
  local s = assert(selection.check(t))
  return selection.expand(s, assert(catalog.open(w.data)))
end


describe("policy selection", function()
  local w
  setup(function()
    w = h.world("policy-selection")
  end)

  it("selects every non-system database when it names nothing", function()
    local r = assert(expand(w, {}))
    assert.same({ "DATABASE empty_db", "DATABASE logs", "DATABASE shop" }, r.elements)
  end)

  it("turns exclusions inside a selected database into EXCEPT TABLES, saying why", function()
    local r = assert(expand(w, { databases = { "shop" }, exclude = { "shop.orders*", "shop.v_*" } }))
    assert.same({ "DATABASE shop EXCEPT TABLES shop.orders, shop.orders_by_day, shop.v_totals" }, r.elements)
    assert.same({ "table shop.orders is excluded by 'shop.orders*'",
      "table shop.orders_by_day is excluded by 'shop.orders*'", "table shop.v_totals is excluded by 'shop.v_*'" },
      r.notes)
  end)

  it("expands glob patterns to tables; a table is selected once", function()
    local r = assert(expand(w, { tables = { "shop.customers" }, patterns = { "logs.t*", "*.customers", "shop.таблица*" } }))
    assert.same({ "TABLE shop.customers", "TABLE logs.tiny", "TABLE shop.`таблица с пробелом`" }, r.elements)
  end)

  it("excludes whole databases by a name without a dot", function()
    local r = assert(expand(w, { exclude = { "logs", "empty_*" } }))
    assert.same({ "DATABASE shop" }, r.elements)
  end)

  it("takes a {database, table} pair for names with dots", function()
    local s = assert(selection.check({ tables = { { "shop", "customers" } } }))
    assert.same({ { "shop", "customers" } }, s.tables)
  end)

  it("names what does not exist, or that nothing is selected", function()
    local r, err = expand(w, { databases = { "nope" } })
    assert.is_nil(r)
    assert.equal("selection.databases: database nope does not exist in " .. w.data, err)
    r, err = expand(w, { tables = { "shop.nope" } })
    assert.is_nil(r)
    assert.truthy(err:find("selection.tables: table shop.nope does not exist", 1, true), err)
    r, err = expand(w, { patterns = { "nothing_*.*" } })
    assert.is_nil(r)
    assert.equal("selection matches nothing in " .. w.data, err)
  end)

  it("makes statements chbackup runs", function()
    local ch = h.open(w)
    for i, t in ipairs({ {}, { databases = { "shop" }, exclude = { "shop.orders*" } },
      { patterns = { "logs.t*", "*.customers" } } }) do
      local r = assert(expand(w, t))
      local res, err = ch:execute("BACKUP " .. table.concat(r.elements, ", ") .. " TO Disk('backups', 'sel" .. i .. "')")
      assert.is_nil(err)
      assert.equal("BACKUP_CREATED", res[1].status)
    end
  end)
end)
