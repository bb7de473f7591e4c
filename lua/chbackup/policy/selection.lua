--- What a policy backs up: databases, tables, glob patterns and
-- exclusions, turned into the elements of a BACKUP statement against the
-- data path as it is at backup time (a table created since the last run is
-- picked up by a database or a pattern that covers it).
--
--   selection = {
--     databases = { "shop" },              -- whole databases
--     tables = { "logs.events" },          -- "db.table" or { "db", "table" }
--     patterns = { "metrics_*.*" },        -- globs over "db.table" (* and ?)
--     exclude = { "shop.tmp_*", "scratch" } -- "db.table" globs, or a database glob
--   }
-- No databases, tables or patterns means every database but the system ones.
-- @module chbackup.policy.selection
local sql = require("chbackup.sql")

local selection = {}


local function glob(text)
  local p = text:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
  return "^" .. p .. "$"
end


-- "db.table" -> db, table (split at the first dot); {db, table} as is.
local function split(entry)
  if type(entry) == "table" then
    return entry[1], entry[2]
  end
  return entry:match("^([^.]+)%.(.+)$")
end


local function string_list(t, field)
  if t == nil then
    return {}
  end
  if type(t) == "string" then
    t = { t }
  end
  if type(t) ~= "table" then
    return nil, field .. ": expected a list of strings, got " .. type(t)
  end
  for i, v in ipairs(t) do
    if type(v) ~= "string" and not (type(v) == "table" and type(v[1]) == "string" and type(v[2]) == "string") then
      return nil, string.format("%s[%d]: expected a string, got %s", field, i, type(v))
    end
    if v == "" then
      return nil, string.format("%s[%d]: empty name", field, i)
    end
  end
  return t
end


--- Checks a selection table; returns the normalised selection or nil, err
-- naming the field.
function selection.check(t, prefix)
  prefix = prefix or "selection"
  if t == nil then
    t = {}
  end
  if type(t) ~= "table" then
    return nil, prefix .. ": expected a table, got " .. type(t)
  end
  local known = { databases = true, tables = true, patterns = true, exclude = true }
  for k in pairs(t) do
    if not known[k] then
      return nil, prefix .. "." .. tostring(k) .. ": unknown field (known: databases, exclude, patterns, tables)"
    end
  end
  local s = {}
  local err
  s.databases, err = string_list(t.databases, prefix .. ".databases")
  if not s.databases then
    return nil, err
  end
  for i, d in ipairs(s.databases) do
    if type(d) ~= "string" or d:find("[*?]") then
      return nil, string.format("%s.databases[%d]: give a database name (use patterns for globs)", prefix, i)
    end
  end
  s.tables, err = string_list(t.tables, prefix .. ".tables")
  if not s.tables then
    return nil, err
  end
  for i, e in ipairs(s.tables) do
    local db, name = split(e)
    if not db then
      return nil, string.format("%s.tables[%d]: '%s' is not \"database.table\"", prefix, i, tostring(e))
    end
    s.tables[i] = { db, name }
  end
  s.patterns, err = string_list(t.patterns, prefix .. ".patterns")
  if not s.patterns then
    return nil, err
  end
  for i, e in ipairs(s.patterns) do
    local db, name = split(e)
    if not db then
      return nil, string.format("%s.patterns[%d]: '%s' is not \"database_glob.table_glob\"", prefix, i, tostring(e))
    end
    s.patterns[i] = { glob(db), glob(name), text = type(e) == "string" and e or (db .. "." .. name) }
  end
  s.exclude, err = string_list(t.exclude, prefix .. ".exclude")
  if not s.exclude then
    return nil, err
  end
  for i, e in ipairs(s.exclude) do
    local db, name = split(e)
    if not db then
      db, name = e, nil -- a database glob
    end
    s.exclude[i] = { glob(db), name and glob(name), text = type(e) == "string" and e or (db .. "." .. name) }
  end
  s.all = #s.databases == 0 and #s.tables == 0 and #s.patterns == 0
  return s
end


local function excluded_db(s, db)
  for _, x in ipairs(s.exclude) do
    if not x[2] and db:match(x[1]) then
      return x.text
    end
  end
end


local function excluded_table(s, db, name)
  for _, x in ipairs(s.exclude) do
    if db:match(x[1]) and (not x[2] or name:match(x[2])) then
      return x.text
    end
  end
end


local function qualified(db, name)
  return sql.quote_identifier(db) .. "." .. sql.quote_identifier(name)
end


--- The BACKUP elements for selection s on catalog cat. Returns
-- { elements = {"DATABASE `shop` EXCEPT TABLES ...", "TABLE `logs`.`events`"},
--   tables = {{db, name}...}, notes = {...} } or nil, err.
function selection.expand(s, cat)
  local out, notes, tables = {}, {}, {}
  local whole = {}
  local dbs = {}
  if s.all then
    for _, db in ipairs(cat:databases()) do
      if not db.system then
        dbs[#dbs + 1] = db.name
      end
    end
  else
    for _, name in ipairs(s.databases) do
      if not cat:database(name) then
        return nil, "selection.databases: database " .. sql.quote_identifier(name) .. " does not exist in " .. cat.path
      end
      dbs[#dbs + 1] = name
    end
  end
  for _, name in ipairs(dbs) do
    local why = excluded_db(s, name)
    if why then
      notes[#notes + 1] = "database " .. name .. " is excluded by '" .. why .. "'"
    else
      whole[name] = true
      local list, err = cat:tables(name)
      if not list then
        return nil, err
      end
      local except = {}
      for _, t in ipairs(list) do
        local x = excluded_table(s, name, t.name)
        if x then
          except[#except + 1] = qualified(name, t.name)
          notes[#notes + 1] = "table " .. name .. "." .. t.name .. " is excluded by '" .. x .. "'"
        else
          tables[#tables + 1] = { name, t.name }
        end
      end
      local el = "DATABASE " .. sql.quote_identifier(name)
      if #except > 0 then
        el = el .. " EXCEPT TABLES " .. table.concat(except, ", ")
      end
      out[#out + 1] = el
    end
  end
  local picked = {}
  local function pick(db, name, why)
    local key = db .. "\0" .. name
    if whole[db] or picked[key] then
      return
    end
    local x = excluded_table(s, db, name)
    if x then
      notes[#notes + 1] = "table " .. db .. "." .. name .. " (" .. why .. ") is excluded by '" .. x .. "'"
      return
    end
    picked[key] = true
    tables[#tables + 1] = { db, name }
    out[#out + 1] = "TABLE " .. qualified(db, name)
  end
  for _, t in ipairs(s.tables) do
    local tbl, err = cat:table(t[1], t[2])
    if not tbl then
      return nil, "selection.tables: " .. err
    end
    pick(t[1], t[2], "selection.tables")
  end
  if #s.patterns > 0 then
    for _, db in ipairs(cat:databases()) do
      if not db.system then
        for _, p in ipairs(s.patterns) do
          if db.name:match(p[1]) then
            local list, err = cat:tables(db.name)
            if not list then
              return nil, err
            end
            for _, t in ipairs(list) do
              if t.name:match(p[2]) then
                pick(db.name, t.name, "pattern '" .. p.text .. "'")
              end
            end
          end
        end
      end
    end
  end
  if #out == 0 then
    local why = #notes > 0 and (" (" .. table.concat(notes, "; ") .. ")") or ""
    return nil, "selection matches nothing in " .. cat.path .. why
  end
  return { elements = out, tables = tables, notes = notes }
end


return selection
