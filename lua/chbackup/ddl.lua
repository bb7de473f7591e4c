--- Table and database DDL as ClickHouse stores it.
--
-- A data path keeps `ATTACH TABLE _ UUID '…'` statements, several lines
-- each; a backup keeps `CREATE TABLE db.t UUID '…' …` on one line. This
-- module converts between the two and pulls out the parts chbackup needs
-- (object kind, UUID, engine). Quoted text is never touched.
-- @module chbackup.ddl
local names = require("chbackup.names")

local ddl = {}


-- Splits sql into a list of {text=, quoted=bool} segments so that rewrites
-- only see unquoted text. Handles '…' strings, `…` and "…" identifiers,
-- backslash escapes and doubled quotes.
local function segments(sql)
  local out, i, n = {}, 1, #sql
  local plain_start = 1
  while i <= n do
    local c = sql:sub(i, i)
    if c == "'" or c == "`" or c == '"' then
      if i > plain_start then
        out[#out + 1] = { text = sql:sub(plain_start, i - 1), quoted = false }
      end
      local j = i + 1
      while j <= n do
        local d = sql:sub(j, j)
        if d == "\\" then
          j = j + 2
        elseif d == c then
          if sql:sub(j + 1, j + 1) == c then
            j = j + 2
          else
            break
          end
        else
          j = j + 1
        end
      end
      out[#out + 1] = { text = sql:sub(i, j), quoted = true }
      i = j + 1
      plain_start = i
    else
      i = i + 1
    end
  end
  if plain_start <= n then
    out[#out + 1] = { text = sql:sub(plain_start), quoted = false }
  end
  return out
end


--- The statement on one line, as ClickHouse formats DDL inside backups:
-- line breaks and indentation become one space, none after "(" or before ")".
function ddl.one_line(sql)
  local parts = {}
  for _, seg in ipairs(segments(sql)) do
    local text = seg.text
    if not seg.quoted then
      text = text:gsub("%s*\n%s*", "\n")
    end
    parts[#parts + 1] = text
  end
  local joined = table.concat(parts)
  -- Newlines now only stand where unquoted line breaks were.
  local out = {}
  for _, seg in ipairs(segments(joined)) do
    local text = seg.text
    if not seg.quoted then
      text = text:gsub("%(\n", "("):gsub("\n%)", ")"):gsub("\n", " ")
    end
    out[#out + 1] = text
  end
  return (table.concat(out):gsub("^%s+", ""):gsub("%s+$", ""))
end


-- Reads an identifier (bare, `quoted` or "quoted") at position i.
local function read_identifier(s, i)
  i = s:find("%S", i) or #s + 1
  local q = s:sub(i, i)
  if q == "`" or q == '"' then
    local buf, j = {}, i + 1
    while j <= #s do
      local c = s:sub(j, j)
      if c == "\\" then
        buf[#buf + 1] = s:sub(j + 1, j + 1)
        j = j + 2
      elseif c == q then
        if s:sub(j + 1, j + 1) == q then
          buf[#buf + 1] = q
          j = j + 2
        else
          return table.concat(buf), j + 1
        end
      else
        buf[#buf + 1] = c
        j = j + 1
      end
    end
    return nil
  end
  local word = s:match("^[%a_][%w_]*", i)
  if not word then
    return nil
  end
  return word, i + #word
end


local OBJECTS = {
  "MATERIALIZED VIEW", "LIVE VIEW", "WINDOW VIEW", "VIEW", "DICTIONARY",
  "TABLE", "DATABASE",
}

-- Matches "<VERB> <OBJECT> " at the start of s; returns object, rest index.
local function read_head(s, verb)
  local upper = s:upper()
  local i = upper:find("%S") or 1
  if upper:sub(i, i + #verb - 1) ~= verb then
    return nil
  end
  i = upper:find("%S", i + #verb) or #s + 1
  for _, object in ipairs(OBJECTS) do
    local pattern = "^" .. object:gsub(" ", "%%s+") .. "%s"
    local _, e = upper:find(pattern, i)
    if e then
      -- "IF NOT EXISTS" may follow CREATE
      local _, e2 = upper:find("^%s*IF%s+NOT%s+EXISTS%s", e)
      return object, (e2 or e) + 1
    end
  end
  return nil
end


-- UUID '…' at position i (optional); returns uuid, next index.
local function read_uuid(s, i)
  local uuid, e = s:match("^%s*UUID%s+'(%x+%-%x+%-%x+%-%x+%-%x+)'()", i)
  if uuid then
    return uuid, e
  end
  return nil, i
end


-- What one_statement looks for: quotes, comment starts, ";" and "$".
local SPECIAL = "[`'\"#/;%$%-]"

-- The length of the one statement sql holds, without a final ";" and what
-- follows it (white space and comments only), or nil, err. Reads sql as
-- ClickHouse's lexer (src/Parsers/Lexer.cpp) does: '…' strings, `…` and
-- "…" identifiers (backslash escapes, doubled quotes), comments (--, //,
-- "# " and "#!" to the line end, /* … */ nested) hold no statement end. A
-- "$" outside them (a heredoc $tag$…$tag$, which ClickHouse never writes
-- into metadata) is refused: read as code, its text could hide a ";".
local function one_statement(sql)
  local i, n, stop = 1, #sql, nil
  while true do
    i = sql:find(stop and "%S" or SPECIAL, i)
    if not i then
      break
    end
    local c, c2 = sql:sub(i, i), sql:sub(i + 1, i + 1)
    if stop and c ~= "-" and c ~= "#" and c ~= "/" then
      return nil, "more than one statement"
    end
    if c == "'" or c == "`" or c == '"' then
      local j = i + 1
      while true do
        local d = sql:sub(j, j)
        if d == "" then
          return nil, "unterminated quoted text"
        elseif d == "\\" then
          j = j + 2
        elseif d == c and sql:sub(j + 1, j + 1) == c then
          j = j + 2
        elseif d == c then
          break
        else
          j = sql:find("[\\" .. c .. "]", j + 1) or n + 1
        end
      end
      i = j + 1
    elseif (c == "-" and c2 == "-") or (c == "/" and c2 == "/") or (c == "#" and (c2 == " " or c2 == "!")) then
      i = (sql:find("\n", i, true) or n) + 1
    elseif c == "/" and c2 == "*" then
      local depth, j = 1, i + 2
      while depth > 0 do
        j = sql:find("[/*]", j)
        if not j then
          return nil, "unterminated comment"
        end
        local two = sql:sub(j, j + 1)
        if two == "/*" then
          depth, j = depth + 1, j + 2
        elseif two == "*/" then
          depth, j = depth - 1, j + 2
        else
          j = j + 1
        end
      end
      i = j
    elseif stop then
      return nil, "more than one statement"
    elseif c == ";" then
      stop, i = i, i + 1
    elseif c == "$" then
      return nil, "unexpected $ outside quotes"
    else
      i = i + 1
    end
  end
  return stop and stop - 1 or n
end


-- The one statement of a metadata file (see one_statement), or nil, err.
local function single(sql, verb)
  local len, err = one_statement(sql)
  if not len then
    return nil, err .. " (a metadata file holds one " .. verb .. " statement)"
  end
  return sql:sub(1, len)
end


-- (for other readers of ClickHouse's statements: chbackup.udf, chbackup.access)
ddl.read_identifier = read_identifier
ddl.single = single


--- Parses an `ATTACH <object> _ [UUID '…'] …` statement of a data path
-- (dictionaries are kept as `CREATE DICTIONARY _ UUID '…' …`), the only
-- statement of its text (a final ";" is dropped). Returns {object=,
-- uuid=|nil, body=} or nil, err.
function ddl.parse_attach(text)
  local sql, err = single(text, "ATTACH")
  if not sql then
    return nil, err
  end
  local object, i = read_head(sql, "ATTACH")
  if not object then
    object, i = read_head(sql, "CREATE")
    if object ~= "DICTIONARY" then
      return nil, "not an ATTACH statement"
    end
  end
  local _, j = read_identifier(sql, i)
  if not j then
    return nil, "no name after ATTACH " .. object
  end
  local uuid, k = read_uuid(sql, j)
  return { object = object, uuid = uuid, body = ddl.one_line(sql:sub(k)) }
end


--- Parses a `CREATE <object> [db.]name [UUID '…'] …` statement (a
-- backup's metadata), the only statement of its text (a final ";" is
-- dropped). Returns {object=, database=|nil, name=, uuid=|nil, body=} or
-- nil, err.
function ddl.parse_create(text)
  local sql, err = single(text, "CREATE")
  if not sql then
    return nil, err
  end
  local object, i = read_head(sql, "CREATE")
  if not object then
    return nil, "not a CREATE statement"
  end
  local first, j = read_identifier(sql, i)
  if not first then
    return nil, "no name after CREATE " .. object
  end
  local database, name = nil, first
  if sql:sub(j, j) == "." then
    database = first
    name, j = read_identifier(sql, j + 1)
    if not name then
      return nil, "no table name after '" .. first .. ".'"
    end
  end
  local uuid, k = read_uuid(sql, j)
  return {
    object = object, database = database, name = name, uuid = uuid,
    body = ddl.one_line(sql:sub(k)),
  }
end


--- The CREATE statement a backup stores for an object.
function ddl.create_statement(object, database, name, uuid, body)
  local target = database and names.qualified(database, name)
    or names.quote_identifier(name)
  local parts = { "CREATE", object, target }
  if uuid then
    parts[#parts + 1] = "UUID '" .. uuid .. "'"
  end
  if body ~= "" then
    parts[#parts + 1] = body
  end
  return table.concat(parts, " ")
end


--- The statement a data path stores for an object: `ATTACH <object> _ …`,
-- but `CREATE DICTIONARY _ …` for dictionaries, as ClickHouse writes them
-- (it cannot parse `ATTACH DICTIONARY _` with a definition at start-up).
function ddl.attach_statement(object, uuid, body)
  local parts = { object == "DICTIONARY" and "CREATE" or "ATTACH", object, "_" }
  if uuid then
    parts[#parts + 1] = "UUID '" .. uuid .. "'"
  end
  if body ~= "" then
    parts[#parts + 1] = body
  end
  return table.concat(parts, " ") .. "\n"
end


--- The table engine name (ENGINE = X at bracket depth 0), or nil.
function ddl.engine(body)
  local depth, flat = 0, {}
  for _, seg in ipairs(segments(body)) do
    if seg.quoted then
      -- a quoted identifier may be the engine's name (ENGINE = `Null`)
      flat[#flat + 1] = depth == 0 and (seg.text:match('^[`"]([%a_][%w_]*)[`"]$') or " '' ") or ""
    else
      for c in seg.text:gmatch(".") do
        if c == "(" then
          depth = depth + 1
        elseif c == ")" then
          depth = depth - 1
        elseif depth == 0 then
          flat[#flat + 1] = c
        end
      end
    end
  end
  return table.concat(flat):match("ENGINE%s*=%s*([%a_][%w_]*)")
end


--- A table setting's value from the body's top-level SETTINGS clause:
-- `SETTINGS storage_policy = 'hot_cold'` gives "hot_cold". A quoted value
-- comes back unquoted; an unquoted one (a number, `disk(…)`) comes back as
-- written with `raw` = true. nil when the setting is not there.
function ddl.setting(body, name)
  local segs = segments(body)
  local depth, in_settings = 0, false
  for i, seg in ipairs(segs) do
    if not seg.quoted then
      local text = seg.text
      local pos = 1
      while pos <= #text do
        local c = text:sub(pos, pos)
        if c == "(" then
          depth = depth + 1
        elseif c == ")" then
          depth = depth - 1
        elseif depth == 0 then
          local word = text:match("^[%a_][%w_]*", pos)
          if word and (pos == 1 or not text:sub(pos - 1, pos - 1):match("[%w_]")) then
            if word:upper() == "SETTINGS" then
              in_settings = true
            elseif in_settings and word == name then
              local rest = text:sub(pos + #word)
              if rest:match("^%s*=%s*$") and segs[i + 1] and segs[i + 1].quoted then
                local v = segs[i + 1].text
                return (v:sub(2, -2):gsub("\\(.)", "%1"):gsub("''", "'"))
              end
              local raw = rest:match("^%s*=%s*(.-)%s*,") or rest:match("^%s*=%s*(.-)%s*$")
              if raw then
                return raw, true
              end
            end
            pos = pos + #word - 1
          end
        end
        pos = pos + 1
      end
    end
  end
  return nil
end


--- A materialized view's inner table: `TO INNER UUID '…'` at the start of
-- its body. Returns the inner table's uuid and the body without that clause.
function ddl.inner_uuid(body)
  local u, rest = body:match("^TO%s+INNER%s+UUID%s+'([%x%-]+)'%s*(.*)$")
  return u, rest
end


--- Replaces the `TO INNER UUID '…'` clause's uuid.
function ddl.with_inner_uuid(body, new_uuid)
  local _, rest = ddl.inner_uuid(body)
  return "TO INNER UUID '" .. new_uuid .. "' " .. rest
end


--- The inner table's body of a materialized view with an inner table:
-- the columns and ENGINE part, before the top-level `AS SELECT`.
function ddl.inner_table_body(body)
  local _, rest = ddl.inner_uuid(body)
  rest = rest or body
  local depth, pos = 0, 1
  for _, seg in ipairs(segments(rest)) do
    if not seg.quoted then
      local i = 1
      while i <= #seg.text do
        local c = seg.text:sub(i, i)
        if c == "(" then
          depth = depth + 1
        elseif c == ")" then
          depth = depth - 1
        elseif depth == 0 and seg.text:sub(i):match("^%sAS%s+[SW(]") then
          return (rest:sub(1, pos + i - 2):gsub("%s+$", ""))
        end
        i = i + 1
      end
    end
    pos = pos + #seg.text
  end
  return nil
end


--- The body without things that may differ between equal structures
-- (comments and settings are kept): for "same structure" checks.
function ddl.structure(body)
  local _, rest = ddl.inner_uuid(body)
  return ddl.one_line(rest or body)
end


return ddl
