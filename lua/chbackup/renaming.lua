--- Renames inside DDL for BACKUP/RESTORE … AS.
--
-- `RESTORE DATABASE shop AS shop2` must give views and materialized views
-- that read and write shop2's tables, not shop's: ClickHouse rewrites the
-- table references a CREATE statement holds (src/Databases/
-- DDLRenamingVisitor.cpp) and so does this module, on the statement's
-- text, for the same places:
--   - a table expression: `FROM db.t`, `JOIN db.t`, a comma join
--     `FROM db.a, db.b`, and `x IN db.t` (also NOT IN, GLOBAL IN);
--   - a materialized view's `TO db.t`, and `CREATE TABLE … AS db.t`;
--   - the first argument of dictGet*, dictHas, dictIsIn and joinGet
--     ('db.name' or db.name), of the Dictionary engine, the database of
--     merge() and of the Merge engine ('db');
--   - a dictionary's SOURCE(CLICKHOUSE(… DB 'db' TABLE 't')) when it reads
--     this server (no HOST, or a local one).
-- Only qualified names change (stored views are qualified: ClickHouse adds
-- the database when it creates them); strings, comments and quoted names
-- elsewhere are kept byte for byte.
-- @module chbackup.renaming
local lpeg = require("lpeg")
local names = require("chbackup.names")

local P, R, S = lpeg.P, lpeg.R, lpeg.S
local C, Cc, Ct = lpeg.C, lpeg.Cc, lpeg.Ct

local renaming = {}


--- The renaming map of a statement's elements. default_db is the database
-- of an element that names none. Returns map or nil, err (one table renamed
-- two ways, as ClickHouse refuses it).
function renaming.map(elements, default_db)
  local m = { tables = {}, databases = {} }
  local function set(kind, key, new, old_text, new_text)
    local had = m[kind][key]
    if had and had.text ~= new_text then
      return nil, "wrong renaming: " .. old_text .. " is renamed to " .. had.text .. " and to "
        .. new_text .. " at the same time"
    end
    new.text = new_text
    m[kind][key] = new
    return true
  end
  for _, el in ipairs(elements) do
    local ok, err = true, nil
    if el.type == "table" and (el.new_name or el.new_database) then
      local db = el.database or default_db
      local new_db, new_t = el.new_database or db, el.new_name or el.name
      ok, err = set("tables", db .. "\0" .. el.name, { database = new_db, name = new_t },
        names.qualified(db, el.name), names.qualified(new_db, new_t))
    elseif el.type == "database" and el.new_name and el.new_name ~= el.name then
      ok, err = set("databases", el.name, { name = el.new_name },
        names.quote_identifier(el.name), names.quote_identifier(el.new_name))
    end
    if not ok then
      return nil, err
    end
  end
  return m
end


--- The new name of database db under map m.
function renaming.database(m, db)
  local d = m.databases[db]
  return d and d.name or db
end


--- The new database and name of table db.t under map m.
function renaming.table(m, db, t)
  local r = m.tables[db .. "\0" .. t]
  if r then
    return r.database, r.name
  end
  return renaming.database(m, db), t
end


--- True when m renames nothing.
function renaming.is_empty(m)
  return next(m.tables) == nil and next(m.databases) == nil
end


-- Tokens: {kind, text}; kinds: space (blanks and comments), string,
-- qident (`…` or "…"), ident, number, other (one character).
local function quoted(q)
  return P(q) * (P("\\") * P(1) + P(q) * P(q) + (1 - P(q)))^0 * P(q)^-1
end
local space = (S(" \t\r\n\f") + P("--") * (1 - P("\n"))^0
  + P("/*") * (1 - P("*/"))^0 * P("*/")^-1)^1
local word = (R("az", "AZ") + S("_$") + R("\128\255")) * (R("az", "AZ", "09") + S("_$") + R("\128\255"))^0
local number = R("09") * (R("az", "AZ", "09") + P("_") + P(".") * R("09"))^0
local token = Ct(Cc("space") * C(space)) + Ct(Cc("string") * C(quoted("'")))
  + Ct(Cc("qident") * C(quoted("`") + quoted('"'))) + Ct(Cc("ident") * C(word))
  + Ct(Cc("number") * C(number)) + Ct(Cc("other") * C(P(1)))
local tokens_of = Ct(token^0) * -1


-- The value of a quoted token: quotes removed, escapes and doubled quotes undone.
local ESCAPES = { n = "\n", t = "\t", r = "\r", ["0"] = "\0", b = "\b", f = "\f" }
local function unquote(text)
  local q, body = text:sub(1, 1), text:sub(2, -2)
  body = body:gsub("\\(.)", function(c) return ESCAPES[c] or c end)
  return (body:gsub(q .. q, q))
end


local function quote_string(s)
  return "'" .. s:gsub("[\\']", "\\%0") .. "'"
end


-- A name written in a string, 'db.t' or '`d b`.t', as ClickHouse's
-- QualifiedTableName::tryParseFromString reads it; nil if not db.t.
local function parse_qualified_string(s)
  local list = tokens_of:match(s)
  if not list then
    return nil
  end
  local parts, want_name = {}, true
  for _, t in ipairs(list) do
    if t[1] ~= "space" then
      if want_name and (t[1] == "ident" or t[1] == "qident") then
        parts[#parts + 1] = t[1] == "ident" and t[2] or unquote(t[2])
        want_name = false
      elseif not want_name and t[2] == "." then
        want_name = true
      else
        return nil
      end
    end
  end
  if #parts ~= 2 or want_name then
    return nil
  end
  return parts[1], parts[2]
end


local TABLE_BEFORE = { FROM = true, JOIN = true, IN = true, TO = true, AS = true }
local TABLE_FUNCTIONS = { dictHas = true, dictIsIn = true, joinGet = true }
local NOT_TABLE_FROM = { EXTRACT = true, SUBSTRING = true, SUBSTR = true, TRIM = true }
local LOCAL_HOSTS = { localhost = true, ["127.0.0.1"] = true, ["::1"] = true }


--- The statement sql with its table and database references renamed by m.
function renaming.apply(sql, m)
  if renaming.is_empty(m) then
    return sql
  end
  local list = tokens_of:match(sql)
  if not list then
    return sql
  end
  local sig = {}                -- indexes of tokens that are not space
  for i, t in ipairs(list) do
    if t[1] ~= "space" then
      sig[#sig + 1] = i
    end
  end
  local function tok(k)
    local i = sig[k]
    return i and list[i]
  end
  local function is_name(k)
    local t = tok(k)
    return t and (t[1] == "ident" or t[1] == "qident")
  end
  local function name_of(k)
    local t = tok(k)
    return t[1] == "ident" and t[2] or unquote(t[2])
  end
  local function text_of(k)
    local t = tok(k)
    return t and t[2]
  end
  local function upper(k)
    local t = tok(k)
    return t and t[1] == "ident" and t[2]:upper()
  end
  -- Replaces tokens sig[a]..sig[b] (and what lies between) with text.
  local function replace(a, b, text)
    list[sig[a]][2] = text
    for i = sig[a] + 1, sig[b] do
      list[i][2] = ""
    end
  end
  -- db.t at k (not db.t.c): renames it, returns the index after it.
  local function table_ref(k)
    if not (is_name(k) and text_of(k + 1) == "." and is_name(k + 2) and text_of(k + 3) ~= ".") then
      return nil
    end
    local db, t = name_of(k), name_of(k + 2)
    local new_db, new_t = renaming.table(m, db, t)
    if new_db ~= db or new_t ~= t then
      replace(k, k + 2, names.qualified(new_db, new_t))
    end
    return k + 3
  end
  -- The string or db.t argument at k holding a table name.
  local function table_arg(k)
    local t = tok(k)
    if t and t[1] == "string" then
      local db, name = parse_qualified_string(unquote(t[2]))
      if db then
        local new_db, new_t = renaming.table(m, db, name)
        if new_db ~= db or new_t ~= name then
          t[2] = quote_string(names.qualified(new_db, new_t))
        end
      end
    else
      table_ref(k)
    end
  end
  local function database_arg(k)
    local t = tok(k)
    if t and t[1] == "string" then
      local db = unquote(t[2])
      if db ~= "" and renaming.database(m, db) ~= db then
        t[2] = quote_string(renaming.database(m, db))
      end
    end
  end
  -- SOURCE(CLICKHOUSE(name value …)) at k, the index of CLICKHOUSE.
  local function clickhouse_source(k)
    local fields, depth, j = {}, 0, k + 1
    repeat
      local x = text_of(j)
      if x == "(" then
        depth = depth + 1
      elseif x == ")" then
        depth = depth - 1
      elseif depth == 1 and upper(j) and tok(j + 1) and tok(j + 1)[1] == "string" then
        fields[upper(j)] = j + 1
      end
      j = j + 1
    until depth <= 0 or not tok(j)
    local host = fields.HOST and unquote(text_of(fields.HOST))
    if not (fields.DB and fields.TABLE) or (host and not LOCAL_HOSTS[host]) then
      return
    end
    local db, t = unquote(text_of(fields.DB)), unquote(text_of(fields.TABLE))
    local new_db, new_t = renaming.table(m, db, t)
    list[sig[fields.DB]][2] = quote_string(new_db)
    list[sig[fields.TABLE]][2] = quote_string(new_t)
  end

  -- Open parentheses, each with the word before it: FROM inside
  -- EXTRACT(DAY FROM t.d) or TRIM(… FROM s) is not a table expression.
  local parens, k = {}, 1
  while k <= #sig do
    local u, nxt = upper(k), nil
    local x = text_of(k)
    if x == "(" then
      parens[#parens + 1] = upper(k - 1) or ""
    elseif x == ")" then
      parens[#parens] = nil
    elseif u and TABLE_BEFORE[u] and not (u == "FROM" and NOT_TABLE_FROM[parens[#parens]])
        and not (u == "JOIN" and upper(k - 1) == "ARRAY") then
      nxt = table_ref(k + 1)
      -- a comma join: FROM db.a [[AS] x], db.b
      while nxt and u == "FROM" do
        local j = nxt
        if upper(j) == "AS" then
          j = j + 2
        elseif is_name(j) then
          j = j + 1
        end
        if text_of(j) ~= "," then
          break
        end
        nxt = table_ref(j + 1)
      end
    elseif text_of(k + 1) == "(" and is_name(k) then
      local f = text_of(k)
      if f:sub(1, 7) == "dictGet" or TABLE_FUNCTIONS[f] or f == "Dictionary" then
        table_arg(k + 2)
      elseif f == "merge" or f == "Merge" then
        database_arg(k + 2)
      elseif u == "CLICKHOUSE" and upper(k - 2) == "SOURCE" then
        clickhouse_source(k)
      end
    end
    k = nxt or k + 1
  end
  local out = {}
  for i, t in ipairs(list) do
    out[i] = t[2]
  end
  return table.concat(out)
end


return renaming
