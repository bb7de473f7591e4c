-- Loading a policy file: restricted environment, and a wrong policy refused
-- with the field named before anything runs.
local h = require("spec.helpers")
local policy = require("chbackup.policy")

local EXAMPLES = h.FIXTURES .. "/policies"


local function base()
  return {
    destination = { disk = "backups", name = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}" },
    schedule = { full = "0 2 * * *", incremental = "0 * * * *" },
  }
end


-- base() with fields replaced: path "a.b" = value (nil removes).
local function with(changes)
  local t = base()
  for path, value in pairs(changes) do
    local cur = t
    local keys = {}
    for k in path:gmatch("[^.]+") do keys[#keys + 1] = k end
    for i = 1, #keys - 1 do
      cur[keys[i]] = cur[keys[i]] or {}
      cur = cur[keys[i]]
    end
    cur[keys[#keys]] = value
  end
  return t
end


local function write_policy(text)
  local dir = h.tmpdir("policy")
  local path = dir .. "/p.lua"
  h.write(path, text)
  return path
end


describe("policy.load", function()
  it("loads the example policies", function()
    for _, f in ipairs({ "nightly.lua", "ci_drill.lua" }) do
      local pol, err = policy.load(EXAMPLES .. "/" .. f)
      assert.is_nil(err)
      assert.equal("nightly", pol.name)
    end
    local pol = policy.load(EXAMPLES .. "/nightly.lua")
    assert.equal("0 2 * * *", pol.schedule.full.text)
    assert.equal(24, pol.retention.hourly)
    assert.equal(-1, pol.retention.yearly)
    assert.equal(50, pol.retention.max_deletions)
    assert.same({ "shop" }, pol.selection.databases)
    assert.is_function(pol.hooks.on_error)
  end)

  it("names the policy after its file when it has no name", function()
    local path = write_policy("return { destination = { disk = 'backups' }, schedule = { full = '@daily' } }")
    local pol = assert(policy.load(path))
    assert.equal("p", pol.name)
    assert.equal(policy.DEFAULT_NAME_PATTERN, pol.destination.name)
  end)

  it("refuses to read an unknown global or to set one", function()
    local path = write_policy("local x = undefined_thing\nreturn {}")
    local pol, err = policy.load(path)
    assert.is_nil(pol)
    assert.truthy(err:find("unknown global 'undefined_thing'", 1, true), err)
    path = write_policy("leak = 1\nreturn {}")
    pol, err = policy.load(path)
    assert.is_nil(pol)
    assert.truthy(err:find("assigns global 'leak' (use local)", 1, true), err)
  end)

  it("names the file and line of a syntax error", function()
    local path = write_policy("return {\n  schedule = { full = '@daily' \n")
    local pol, err = policy.load(path)
    assert.is_nil(pol)
    assert.truthy(err:find(path .. ":3:", 1, true), err)
  end)

  it("loads text only (no bytecode)", function()
    local path = write_policy(string.dump(function() return {} end))
    local pol, err = policy.load(path)
    assert.is_nil(pol)
    assert.truthy(err:find("attempt to load a binary chunk", 1, true), err)
  end)

  it("gives a policy the safe library: os.getenv, string, table, math", function()
    local path = write_policy([[
      local home = os.getenv("HOME") or "/"
      return { destination = { disk = string.lower("BACKUPS") }, schedule = { full = table.concat({"0", "2", "*", "*", "*"}, " ") },
               retention = { daily = math.max(3, 7) } }
    ]])
    local pol = assert(policy.load(path))
    assert.equal("backups", pol.destination.disk)
    assert.equal(7, pol.retention.daily)
  end)
end)


describe("policy.check names the field of a wrong policy", function()
  local cases = {
    { "a string", "a policy must return a table, got string" },
    { with({ colour = "blue" }), "colour: unknown field" },
    { with({ name = "bad name!" }), "name: expected a policy name" },
    { with({ timezone = "Mars" }), "timezone: unknown time zone 'Mars'" },
    { with({ ["source.path"] = "relative/path" }), "source.path: expected an absolute data path" },
    { with({ ["source.port"] = 9000 }), "source.port: unknown field" },
    { with({ ["source.status_dir"] = "status" }), "source.status_dir: expected an absolute directory" },
    { with({ ["selection.tables"] = { "no_dot" } }), "selection.tables[1]: 'no_dot' is not \"database.table\"" },
    { with({ ["selection.databases"] = { "shop*" } }), "selection.databases[1]: give a database name" },
    { with({ ["selection.include"] = {} }), "selection.include: unknown field" },
    { with({ destination = false }), "destination: expected a table, got boolean" },
    { with({ ["destination.path"] = "/backups" }), "destination: give exactly one of disk" },
    { with({ ["destination.name"] = "{policy}/{date}" }), "destination.name: '{policy}/{date}' has an unknown placeholder {date}" },
    { with({ ["destination.name"] = "/abs/{kind}" }), "destination.name: '/abs/{kind}' must be relative" },
    { with({ ["destination.name"] = "{policy}/../{kind}" }), "destination.name: '{policy}/../{kind}' has an empty, '.' or '..'" },
    { with({ ["destination.name"] = "{policy}/{yyyy}{mm}{dd}-{kind}" }),
      "destination.name: '{policy}/{yyyy}{mm}{dd}-{kind}' gives two runs of schedule.incremental ('0 * * * *') the same name" },
    { with({ compression = { method = "lzma", level = "high" } }), "compression.level: expected an integer, got high" },
    { with({ compression = { speed = 3 } }), "compression.speed: unknown field" },
    { with({ password = "qwerty" }), "password: never write the password into the policy" },
    { with({ password = { env = "A", file = "/b" } }), "password: give exactly one of env" },
    { with({ password = { file = "relative" } }), "password.file: expected an absolute file path" },
    { with({ compression = "lzma" }), "compression: applies to zip backups only; end destination.name in .zip "
      .. "(e.g. '{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.zip')" },
    { with({ ["destination.name"] = "{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.tar.gz" }),
      "destination.name: '{policy}/{yyyy}{mm}{dd}-{HH}{MM}-{kind}.tar.gz' names a tar archive" },
    { with({ schedule = "0 2 * * *" }), "schedule: expected a table, got string" },
    { with({ ["schedule.full"] = false }), "schedule.full: expected a cron expression" },
    { with({ ["schedule.incremental"] = "0 24 * * *" }), "schedule.incremental: '0 24 * * *': hour field: 24 is out of range 0-23" },
    { with({ ["schedule.verify"] = "0 0 31 2 *" }), "schedule.verify: '0 0 31 2 *' never fires" },
    { with({ ["schedule.hourly"] = "@hourly" }), "schedule.hourly: unknown field" },
    { with({ ["schedule.max_chain"] = 0 }), "schedule.max_chain: expected a count >= 1" },
    { with({ ["retention.daily"] = -3 }), "retention.daily: expected a count >= 0 or \"unlimited\", got -3" },
    { with({ ["retention.within"] = "2 weeks" }), "retention.within: cannot read duration '2 weeks'" },
    { with({ ["retention.max_deletions"] = 3 }), "retention: no keep rule" },
    { with({ ["verification.backups"] = "oldest" }), "verification.backups: expected \"newest\", \"chain\", \"all\"" },
    { with({ ["verification.counter"] = "sql" }), "verification.counter: expected \"parts\", \"clickhouse\" or a function" },
    { with({ ["verification.checks"] = { rows = "yes" } }), "verification.checks.rows: expected a function(check), got string" },
    { with({ ["verification.scratch"] = "tmp" }), "verification.scratch: expected an absolute directory" },
    { with({ ["verification.max_age"] = "a day" }), "verification.max_age: cannot read duration 'a day'" },
    { with({ ["hooks.before_backup"] = "echo hi" }), "hooks.before_backup: expected a function(ctx), got string" },
    { with({ ["hooks.before_everything"] = function() end }), "hooks.before_everything: unknown field" },
  }
  cases[#cases + 1] = { (function()
    local t = base()
    t.schedule.full = nil
    return t
  end)(), "schedule.full: required" }
  cases[#cases + 1] = { (function()
    local t = base()
    t.destination = nil
    return t
  end)(), "destination: required" }

  for _, c in ipairs(cases) do
    it(c[2], function()
      local pol, err = policy.check(c[1], "p")
      assert.is_nil(pol)
      assert.truthy(err:find(c[2], 1, true), err)
    end)
  end

  it("refuses a wrong policy file with its path and the field, and the CLI exits 1 before anything runs", function()
    local path = write_policy("return { destination = { disk = 'backups' }, schedule = { full = '0 2 * * *' }, "
      .. "retention = { daily = 'seven' } }")
    local out, err = {}, {}
    local io_ = { stdout = { write = function(_, s) out[#out + 1] = s end, flush = function() end },
      stderr = { write = function(_, s) err[#err + 1] = s end } }
    local code = require("chbackup.policy.cli").main({ "policy", "run", path }, {}, io_)
    assert.equal(1, code)
    assert.equal("chbackup: policy " .. path .. ": retention.daily: expected a count >= 0 or \"unlimited\", "
      .. "got 'seven'\n", table.concat(err))
    assert.equal("", table.concat(out))
  end)
end)
