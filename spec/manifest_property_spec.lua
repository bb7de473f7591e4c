-- A bounded property test of RESTORE on damaged manifests: thousands of
-- random single-byte and single-element mutations of a good `.backup`.
-- Each RESTORE is either refused with a named error (never an internal
-- error or a traceback, nothing left in the data path) or gives exactly the
-- source's rows, counted by real ClickHouse. CHB_PROPERTY_RUNS sets the
-- count (default 1500); CHB_PROPERTY_SEED the seed (default a fixed one,
-- so that CI is repeatable; "random" takes the time; printed either way so
-- that a failure can be replayed).
local h = require("spec.helpers")

local RUNS = tonumber(os.getenv("CHB_PROPERTY_RUNS")) or 1500
local SEED = os.getenv("CHB_PROPERTY_SEED") == "random" and os.time()
  or tonumber(os.getenv("CHB_PROPERTY_SEED")) or 20261205

local q = h.quote

-- The <file> elements of a manifest, as {first, last} byte positions.
local function file_elements(text)
  local out, init = {}, 1
  while true do
    local s = text:find("<file>", init, true)
    if not s then
      return out
    end
    local _, e = text:find("</file>", s, true)
    out[#out + 1] = { s, e }
    init = e + 1
  end
end

-- One random mutation of `text`: returns the new text and what was done.
local function mutate(text, rnd)
  local kind = rnd(7)
  local n = #text
  if kind == 1 then       -- a byte replaced
    local i, b = rnd(n), rnd(256) - 1
    return text:sub(1, i - 1) .. string.char(b) .. text:sub(i + 1), "byte " .. i .. " := " .. b
  elseif kind == 2 then   -- a byte removed
    local i = rnd(n)
    return text:sub(1, i - 1) .. text:sub(i + 1), "byte " .. i .. " removed"
  elseif kind == 3 then   -- a printable byte inserted
    local i, b = rnd(n), 31 + rnd(95)
    return text:sub(1, i - 1) .. string.char(b) .. text:sub(i), "byte " .. b .. " inserted at " .. i
  elseif kind == 4 or kind == 5 then   -- a <file> element removed or doubled
    local els = file_elements(text)
    local el = els[rnd(#els)]
    local body = text:sub(el[1], el[2])
    if kind == 4 then
      return text:sub(1, el[1] - 1) .. text:sub(el[2] + 1), "element removed: " .. body
    end
    return text:sub(1, el[2]) .. body .. text:sub(el[2] + 1), "element doubled: " .. body
  else                    -- a digit or a letter of a name changed
    local positions = {}
    local pattern = kind == 6 and "()%d" or "<name>[^<]-()%a[^<]*</name>"
    for p in text:gmatch(pattern) do
      positions[#positions + 1] = p
    end
    local i = positions[rnd(#positions)]
    local c = text:sub(i, i)
    local to = kind == 6 and tostring((tonumber(c) + rnd(9)) % 10) or (c == "a" and "b" or "a")
    return text:sub(1, i - 1) .. to .. text:sub(i + 1), "char " .. i .. " " .. c .. " -> " .. to
  end
end


describe("RESTORE of randomly damaged manifests (property)", function()
  it(string.format("refuses with a named error or restores every row (%d runs, seed %d)", RUNS, SEED), function()
    local w = h.world("property")
    h.sql(w, "BACKUP TABLE shop.orders, TABLE logs.events TO Disk('backups', 'good')")
    local good = h.read(w.backups .. "/good/.backup")
    math.randomseed(SEED)
    local rnd = math.random
    local bad = w.backups .. "/bad"
    assert(os.execute("cp -a " .. q(w.backups .. "/good") .. " " .. q(bad)))
    local ch = h.open(w)
    local counts = { refused = 0, restored = 0 }
    local restored = {}
    for i = 1, RUNS do
      local text, what = mutate(good, rnd)
      h.write(bad .. "/.backup", text)
      local target = "m" .. i
      local r, err = ch:execute("RESTORE TABLE shop.orders AS shop." .. target .. ", TABLE logs.events AS logs."
        .. target .. " FROM Disk('backups', 'bad')")
      local context = string.format("run %d (seed %d): %s", i, SEED, what)
      if os.getenv("CHB_PROPERTY_TRACE") then
        io.stderr:write(context, "\n")
      end
      if r then
        counts.restored = counts.restored + 1
        restored[#restored + 1] = target
        restored[target] = context
      else
        counts.refused = counts.refused + 1
        assert(type(err) == "string" and err ~= "", context)
        assert(not err:find("internal error", 1, true) and not err:find("traceback", 1, true)
          and not err:find("%.lua:%d"), context .. ": " .. err)
      end
    end
    local ok, leftover = h.run("find " .. q(w.data .. "/store") .. " -name 'tmp_restore_*'")
    assert(ok and leftover == "", leftover)
    print(string.format("\n    manifest property: %d mutations, %d refused, %d restored (seed %d)",
      RUNS, counts.refused, counts.restored, SEED))
    -- Every restore that succeeded holds exactly the source's rows, and
    -- every refused one created no table: ClickHouse sees exactly the
    -- tables restored.
    local tables = { { "shop", "orders" }, { "logs", "events" } }
    for _, t in ipairs(restored) do
      tables[#tables + 1] = { "shop", t }
      tables[#tables + 1] = { "logs", t }
    end
    local digests = h.table_digests(w.data, tables)
    local want = {
      shop = digests:match("^shop\torders\t(%d+\t%d+)\n"),
      logs = digests:match("\nlogs\tevents\t(%d+\t%d+)\n"),
    }
    assert.is_truthy(want.shop and want.logs)
    for line in digests:gmatch("[^\n]+") do
      local db, t, got = line:match("^(%a+)\t([^\t]+)\t(%d+\t%d+)$")
      assert.equal(want[db], got, "table " .. db .. "." .. tostring(t) .. ": " .. tostring(restored[t]))
    end
    local listed = h.clickhouse(w.data, { "SELECT name FROM system.tables WHERE database IN ('shop', 'logs') "
      .. "AND match(name, '^m[0-9]+$') ORDER BY name FORMAT TSV" })
    local want_list = {}
    for _, t in ipairs(restored) do
      want_list[#want_list + 1] = t
      want_list[#want_list + 1] = t
    end
    table.sort(want_list)
    assert.equal(table.concat(want_list, "\n"), (listed:gsub("\n$", "")), "tables restored, as ClickHouse lists them")
  end)
end)
