-- README.md's examples, run as they stand (only the demo's directory
-- /tmp/chbackup-demo replaced by a scratch world of the same layout:
-- data/, config.xml, status/, backups/), so that they cannot rot.
local h = require("spec.helpers")

local DEMO = "/tmp/chbackup-demo"

-- The first ```LANG block after the line that contains `after`.
local function block(after, lang)
  local readme = assert(h.read(h.ROOT .. "/README.md"))
  local from = assert(readme:find(after, 1, true), "README.md has no '" .. after .. "'")
  local code = readme:match("\n```" .. lang .. "\n(.-\n)```\n", from)
  return assert(code, "README.md has no ```" .. lang .. " block after '" .. after .. "'")
end

local function in_world(code, w)
  assert(code:find(DEMO, 1, true), "the example does not use the demo's directory " .. DEMO)
  return (code:gsub(DEMO:gsub("%p", "%%%0"), (w.dir:gsub("%%", "%%%%"))))
end

describe("README.md", function()
  it("Lua API example runs on the sample data and prints its results", function()
    local w = h.world("readme-lua")
    local file = w.dir .. "/example.lua"
    h.write(file, in_world(block("## Lua API", "lua"), w))
    local ok, out, _, err = h.run(string.format("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
      .. "LUA_CPATH='build/?.so;;' lua5.4 %s", h.quote(h.ROOT), h.quote(file)))
    assert.is_true(ok, out .. err)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      lines[#lines + 1] = line
    end
    assert.matches("^[%x%-]+\tBACKUP_CREATED$", lines[1])
    assert.matches("^[%x%-]+\tRESTORED\t$", lines[2])
    assert.truthy(out:find("\tBACKUP_CREATED\tDisk('backups', 'api-1')\t\n", 1, true), out)
    assert.equal("1370\n", h.clickhouse(w.data, { "SELECT count() FROM shop.orders_api" }))
  end)

  it("Lua API example reports an expected failure instead of crashing", function()
    local w = h.world("readme-lua-fail")
    local file = w.dir .. "/example.lua"
    h.write(file, in_world(block("## Lua API", "lua"), w):gsub("shop%.orders ", "shop.ordres "))
    local ok, out, code, err = h.run(string.format("cd %s && LUA_PATH='lua/?.lua;lua/?/init.lua;;' "
      .. "LUA_CPATH='build/?.so;;' lua5.4 %s", h.quote(h.ROOT), h.quote(file)))
    assert.is_nil(ok)
    assert.equal(1, code)
    assert.equal("", out)
    -- one line, the message: no traceback
    assert.matches("^table shop%.ordres does not exist[^\n]*\n$", err)
  end)

  it("'Try it on the sample data' commands run on the demo's layout", function()
    local w = h.world("readme-sh")
    local file = w.dir .. "/try.sh"
    h.write(file, "set -e\n" .. in_world(block("**Try it on the sample data**", "sh"), w))
    local ok, out, _, err = h.run(string.format("cd %s && bash %s", h.quote(h.ROOT), h.quote(file)))
    assert.is_true(ok, out .. err)
    assert.matches("\tBACKUP_CREATED\n[%x%-]+\tBACKUP_CREATED\n[%x%-]+\tRESTORED\n[%x%-]+\tCREATING_BACKUP\n", out)
    assert.matches("[%x%-]+\tRESTORED\n$", out)
    assert.equal("1370\n", h.clickhouse(w.data, { "SELECT count() FROM shop.orders2" }))
    assert.equal("1370\n", h.clickhouse(w.dir .. "/new", { "SELECT count() FROM shop.orders" }))
  end)
end)
