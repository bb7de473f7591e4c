--- BACKUP / RESTORE / SELECT-from-system.backups statements (LPeg grammar).
--
-- The grammar follows ClickHouse's `ParserBackupQuery` and the part of
-- `ParserSelectQuery` that a status query needs. Parsing turns text into
-- plain tables; nothing here knows what a setting means or whether a
-- table exists.
--
-- Errors: bad input returns `nil, message, "SYNTAX_ERROR"`; the message is
--   Syntax error at position N (line L, column C): expected <what>
--   near '<text>'
-- where N, L and C count characters (UTF-8 code points), 1-based, at the
-- furthest point the grammar reached. Lexical errors (an unterminated
-- string, quoted identifier or comment) point at the opening quote and say
-- what is unterminated instead of "expected ...".
-- @module chbackup.sql

local lpeg = require("lpeg")

local P, R, S, V = lpeg.P, lpeg.R, lpeg.S, lpeg.V
local C, Cc, Cp, Ct = lpeg.C, lpeg.Cc, lpeg.Cp, lpeg.Ct
local Cmt, Cs = lpeg.Cmt, lpeg.Cs

local sql = {}


-- Words that an unquoted identifier may not be where a name comes first
-- (a table, database, column or engine name). After a dot anything goes,
-- so `test.table` is fine; `TABLE to` needs backquotes. Without this
-- `BACKUP TABLE TO Disk(...)` would read `TO` as the table name.
local RESERVED = {}
for word in ([[
  ALL AND AS ASC ASCENDING ASYNC BACKUP BY CLUSTER DATABASE DATABASES DESC
  DESCENDING DICTIONARY EXCEPT FORMAT FROM IN LIKE LIMIT NOT ON OR ORDER
  PARTITION PARTITIONS RESTORE SELECT SETTINGS SYNC TABLE TABLES TEMPORARY
  TO VIEW WHERE
]]):gmatch("%a+") do
  RESERVED[word] = true
end


-- Failure bookkeeping: the furthest position any token failed at, and
-- what was expected there. Reset by every sql.parse call.
local state

local function reset_state()
  state = { pos = 0, expected = {}, seen = {}, hard = nil }
end

local function note(pos, what)
  if pos > state.pos then
    state.pos = pos
    state.expected = {}
    state.seen = {}
  end
  if pos == state.pos and not state.seen[what] then
    state.seen[what] = true
    state.expected[#state.expected + 1] = what
  end
end

local function note_hard(pos, message)
  if not state.hard or pos < state.hard.pos then
    state.hard = { pos = pos, message = message }
  end
end

-- Always fails; records that `what` was expected here. (The trailing
-- P(false) tells LPeg statically that this never matches the empty string.)
local function fail(what)
  return Cmt(P(true), function(_, pos)
    note(pos, what)
    return false
  end) * P(false)
end

-- Always fails; records a lexical error here.
local function fail_hard(message)
  return Cmt(P(true), function(_, pos)
    note_hard(pos, message)
    return false
  end) * P(false)
end


-- Lexical pieces ------------------------------------------------------------

local word_char = R("az", "AZ", "09") + P("_")
local digit = R("09")
local xdigit = R("09", "af", "AF")

local block_comment = P("/*") * (1 - P("*/")) ^ 0 * P("*/")
local line_comment = P("--") * (1 - P("\n")) ^ 0
local ws = (S(" \t\r\n\f\v") ^ 1 + line_comment + block_comment) ^ 0
  * (#P("/*") * fail_hard("unterminated comment") + P(true))

local function ci(word)
  local pattern = P(true)
  for ch in word:gmatch(".") do
    pattern = pattern * S(ch:lower() .. ch:upper())
  end
  return pattern
end

-- A keyword, case-insensitive, not followed by a word character.
local function kw(word)
  return ws * (ci(word) * -word_char + fail(word))
end

-- A punctuation token.
local function sym(text, what)
  return ws * (P(text) + fail(what or ("'" .. text .. "'")))
end

-- `pattern` after whitespace, recorded as `what` when it fails.
local function token(what, pattern)
  return ws * (pattern + fail(what))
end

-- Escapes inside quoted strings and identifiers, as ClickHouse reads them
-- (parseComplexEscapeSequence): \b \f \n \r \t \a \v \e \0 \xHH decode; an
-- unknown escape keeps its backslash except before \ ' " ` / =.
local ESCAPES = {
  a = "\a", b = "\b", e = "\27", f = "\f", n = "\n", r = "\r", t = "\t",
  v = "\v", ["0"] = "\0",
}
local KEEP_PLAIN = { ["\\"] = true, ["'"] = true, ['"'] = true, ["`"] = true,
  ["/"] = true, ["="] = true }

local function decode_escape(ch)
  local decoded = ESCAPES[ch] or ch
  if KEEP_PLAIN[decoded] or decoded:byte() < 32 then
    return decoded
  end
  return "\\" .. decoded
end

local escape = (P("\\") * S("xX") * C(xdigit * xdigit)) / function(hex)
  return string.char(tonumber(hex, 16))
end + (P("\\") * C(1)) / decode_escape

-- A quoted token: the quote doubled or backslash-escaped stands for itself.
local function quoted(q, what)
  local body = Cs((P(q .. q) / q + escape + (1 - S(q .. "\\"))) ^ 0)
  return P(q) * body * P(q) + #P(q) * fail_hard("unterminated " .. what)
end

local string_literal = quoted("'", "string literal")

local bare_word = (R("az", "AZ") + P("_")) * word_char ^ 0
local quoted_identifier = quoted("`", "quoted identifier")
  + quoted('"', "quoted identifier")

-- Any identifier (used after a dot and for setting names).
local any_identifier = C(bare_word) + quoted_identifier

-- An identifier where a reserved word would be ambiguous.
local first_identifier = Cmt(C(bare_word), function(_, pos, word)
  if RESERVED[word:upper()] then
    return false
  end
  return pos, word
end) + quoted_identifier

-- Numbers: integers become Lua integers, the rest floats.
local number_text = S("+-") ^ -1 * (
  P("0") * S("xX") * xdigit ^ 1
  + (digit ^ 1 * (P(".") * digit ^ 0) ^ -1 + P(".") * digit ^ 1)
    * (S("eE") * S("+-") ^ -1 * digit ^ 1) ^ -1
) * -word_char

-- tonumber keeps the literal's kind: 42 and 0x1F are integers, 1.5 and
-- 2e3 floats (as in ClickHouse, where 2e3 is a Float64).
local number_literal = C(number_text) / tonumber

local string_token = token("string literal", string_literal)


-- Names ---------------------------------------------------------------------

local function qualified(what)
  return (token(what, first_identifier)
    * (sym(".") * token(what, any_identifier)) ^ -1)
    / function(first, second)
      if second then
        return { database = first, name = second }
      end
      return { name = first }
    end
end

local function optional(pattern)
  return pattern + Cc(false)
end

local function nil_if_false(value)
  if value == false then
    return nil
  end
  return value
end


-- BACKUP / RESTORE ----------------------------------------------------------

-- A partition: `ID 'x'`, a literal, or a tuple `(1, 'a')` / `tuple(1, 'a')`.
local literal_text = string_literal + C(number_text)
local partition_literal = token("literal", literal_text)
local literal_list = Ct((partition_literal
  * (sym(",") * partition_literal) ^ 0) ^ -1)

local function bare_keyword(word)
  return ci(word) * -word_char
end

local function partition_id(id)
  return { kind = "id", value = id }
end

local function partition_tuple(values)
  return { kind = "tuple", values = values }
end

-- `(x)` is just x, as in ClickHouse; `tuple(x)` stays a tuple.
local function partition_parenthesized(values)
  if #values == 1 then
    return { kind = "value", value = values[1] }
  end
  return { kind = "tuple", values = values }
end

local function partition_value(value)
  return { kind = "value", value = value }
end

local partition = ws * (
  bare_keyword("ID") * string_token / partition_id
  + bare_keyword("TUPLE") * sym("(") * literal_list * sym(")") / partition_tuple
  + P("(") * literal_list * sym(")") / partition_parenthesized
  + literal_text / partition_value
  + fail("partition"))

local partitions = (kw("PARTITIONS") + kw("PARTITION"))
  * Ct(partition * (sym(",") * partition) ^ 0)

-- EXCEPT TABLE[S] list; entries carry their position for the check below.
local except_table = ws * Cp() * qualified("table name")
  / function(pos, name)
    name.pos = pos
    return name
  end
local except_tables = kw("EXCEPT") * (kw("TABLES") + kw("TABLE"))
  * Ct(except_table * (sym(",") * except_table) ^ 0)

local except_databases = kw("EXCEPT") * (kw("DATABASES") + kw("DATABASE"))
  * Ct(token("database name", first_identifier)
    * (sym(",") * token("database name", first_identifier)) ^ 0)

local function strip_positions(list)
  if not list then
    return nil
  end
  for _, entry in ipairs(list) do
    entry.pos = nil
  end
  return list
end

local table_element = (kw("TABLE") * Cc("table")
    + kw("DICTIONARY") * Cc("dictionary")
    + kw("VIEW") * Cc("view"))
  * qualified("table name")
  * optional(kw("AS") * qualified("table name"))
  * optional(partitions)
  / function(object, source, target, parts)
    local element = {
      type = "table",
      database = source.database,
      name = source.name,
      temporary = false,
      partitions = nil_if_false(parts),
    }
    if object ~= "table" then
      element.object = object
    end
    if target then
      element.new_database = target.database
      element.new_name = target.name
    end
    return element
  end

local temporary_element = kw("TEMPORARY") * kw("TABLE")
  * token("table name", first_identifier)
  * optional(kw("AS") * token("table name", first_identifier))
  / function(name, new_name)
    return {
      type = "table",
      name = name,
      new_name = nil_if_false(new_name),
      temporary = true,
    }
  end

-- ClickHouse rejects EXCEPT TABLES naming another database than the
-- DATABASE element's own.
local database_element = Cmt(kw("DATABASE")
  * token("database name", first_identifier)
  * optional(kw("AS") * token("database name", first_identifier))
  * optional(except_tables),
  function(_, pos, name, new_name, excepted)
    for _, entry in ipairs(excepted or {}) do
      if entry.database and entry.database ~= name then
        note_hard(entry.pos, "database name in EXCEPT TABLES clause doesn't"
          .. " match the database name in DATABASE clause: "
          .. entry.database .. " != " .. name)
        return false
      end
    end
    return pos, {
      type = "database",
      name = name,
      new_name = nil_if_false(new_name),
      except_tables = strip_positions(nil_if_false(excepted)),
    }
  end)

local all_element = kw("ALL") * optional(except_databases)
  * optional(except_tables)
  / function(databases, tables)
    return {
      type = "all",
      except_databases = nil_if_false(databases),
      except_tables = strip_positions(nil_if_false(tables)),
    }
  end

local element = table_element + temporary_element + database_element
  + all_element

local elements = Ct(element * (sym(",") * element) ^ 0)

-- A destination: Engine or Engine(args). The first argument may be an
-- identifier (a named collection); later ones literals or key = literal.
local destination_value = string_literal + number_literal
local option_arg = any_identifier * sym("=")
  * token("literal", destination_value) / function(key, value)
    return { option = key, value = value }
  end
local literal_arg = destination_value / function(value)
  return { value = value }
end
local collection_arg = first_identifier / function(name)
  return { collection = name }
end
-- Disk(backups, m1): a bare word where only a literal may be; no statement
-- can parse on from here, so say what is wrong instead of "expected '='".
local bare_arg = #any_identifier * fail_hard("the arguments of a backup destination must be "
  .. "quoted strings, as in Disk('backups', '1')")
local destination_args = Ct((
  ws * (option_arg + literal_arg + collection_arg + fail("argument"))
  * (sym(",") * ws * (option_arg + literal_arg + bare_arg + fail("argument"))) ^ 0
) ^ -1)

local function make_destination(engine, items)
  local destination = { engine = engine, args = {} }
  for _, item in ipairs(items or {}) do
    if item.collection then
      destination.collection = item.collection
    elseif item.option then
      if not destination.options then
        destination.options = {}
        destination.options_order = {}
      end
      if destination.options[item.option] == nil then
        local order = destination.options_order
        order[#order + 1] = item.option
      end
      destination.options[item.option] = item.value
    else
      destination.args[#destination.args + 1] = item.value
    end
  end
  return destination
end

local destination_pattern = token("backup destination", first_identifier)
  * optional(sym("(") * destination_args * sym(")"))
  / make_destination

-- Setting values: literal, true/false, an array, or a destination
-- (`base_backup = Disk('backups', 'd.zip')`). A bare identifier is a value
-- only for base_backup, as in ClickHouse.
local setting_value = P({
  "value",
  value = token("setting value", string_literal + number_literal
    + ci("true") * -word_char * Cc(true)
    + ci("false") * -word_char * Cc(false)
    + V("array")
    + first_identifier * ws * P("(") * destination_args * sym(")")
      / make_destination
    + Cp() * first_identifier / function(pos, name)
      return { bare = pos, engine = name }
    end),
  array = P("[") * Ct((V("value") * (sym(",") * V("value")) ^ 0) ^ -1)
    * sym("]"),
})

local setting_name = (token("setting name", any_identifier)
  * (P(".") * C(bare_word)) ^ 0) / function(...)
    return table.concat({ ... }, ".")
  end

local setting = Cmt(setting_name * sym("=") * setting_value,
  function(_, pos, name, value)
    if type(value) == "table" and value.bare then
      if name ~= "base_backup" then
        note(value.bare, "setting value")
        return false
      end
      value = { engine = value.engine, args = {} }
    end
    return pos, { name = name, value = value }
  end)

local settings = kw("SETTINGS") * Ct(setting * (sym(",") * setting) ^ 0)

local mode = kw("ASYNC") * Cc("async") + kw("SYNC") * Cc("sync")

local on_cluster = kw("ON") * kw("CLUSTER")
  * token("cluster name", any_identifier + string_literal)

local function backup_statement(keyword, kind, direction)
  return kw(keyword) * Cc(kind) * elements * optional(on_cluster)
    * kw(direction) * destination_pattern
    * optional(mode) * optional(settings) * optional(mode)
    / function(statement_kind, element_list, cluster, dest, mode1,
               setting_pairs, mode2)
      local statement = {
        kind = statement_kind,
        elements = element_list,
        destination = dest,
        cluster = nil_if_false(cluster),
        settings = {},
        settings_order = {},
      }
      local last_mode = mode2 or mode1
      statement.async = last_mode == "async"
      statement.sync = last_mode == "sync"
      for _, pair in ipairs(setting_pairs or {}) do
        if statement.settings[pair.name] == nil then
          local order = statement.settings_order
          order[#order + 1] = pair.name
        end
        statement.settings[pair.name] = pair.value
      end
      return statement
    end
end


-- SELECT ... FROM system.backups --------------------------------------------

local column_name = token("column name", first_identifier)
local where_value = token("value", string_literal + number_literal)

local comparison_op = token("comparison operator",
  C(P("<=") + P(">=") + P("<>") + P("!=") + P("<") + P(">"))
  + (P("==") + P("=")) * Cc("="))

local value_list = sym("(") * Ct(where_value * (sym(",") * where_value) ^ 0)
  * sym(")")

local comparison = column_name * (
  comparison_op * where_value / function(op, value)
    return { op = op, value = value }
  end
  + kw("NOT") * (kw("LIKE") * string_token / function(value)
    return { op = "not like", value = value }
  end + kw("IN") * value_list / function(values)
    return { op = "not in", values = values }
  end)
  + kw("LIKE") * string_token / function(value)
    return { op = "like", value = value }
  end
  + kw("IN") * value_list / function(values)
    return { op = "in", values = values }
  end
) / function(name, condition)
  condition.column = name
  return condition
end

local function combine(op)
  return function(first, ...)
    if select("#", ...) == 0 then
      return first
    end
    return { op = op, args = { first, ... } }
  end
end

local condition = P({
  "disjunction",
  disjunction = V("conjunction") * (kw("OR") * V("conjunction")) ^ 0
    / combine("or"),
  conjunction = V("negation") * (kw("AND") * V("negation")) ^ 0
    / combine("and"),
  negation = kw("NOT") * V("negation") / function(arg)
    return { op = "not", arg = arg }
  end + V("primary"),
  primary = sym("(") * V("disjunction") * sym(")") + comparison,
})

local order_item = column_name * optional(
  (kw("DESCENDING") + kw("DESC")) * Cc(true)
  + (kw("ASCENDING") + kw("ASC")) * Cc(false))
  / function(name, desc)
    return { column = name, desc = desc }
  end

local select_columns = sym("*") * Cc("*")
  + Ct(column_name * (sym(",") * column_name) ^ 0)

local select_statement = kw("SELECT") * select_columns
  * kw("FROM") * qualified("table name")
  * optional(kw("WHERE") * condition)
  * optional(kw("ORDER") * kw("BY")
    * Ct(order_item * (sym(",") * order_item) ^ 0))
  * optional(kw("LIMIT")
    * token("row count", C(digit ^ 1) * -word_char / tonumber))
  * optional(kw("FORMAT") * token("format name", any_identifier))
  / function(columns, from, where, order_by, limit, format)
    local name = from.name
    if from.database then
      name = from.database .. "." .. name
    end
    return {
      kind = "select",
      table = name:lower(),
      columns = columns,
      where = nil_if_false(where),
      order_by = nil_if_false(order_by),
      limit = nil_if_false(limit),
      format = nil_if_false(format),
    }
  end


-- Script --------------------------------------------------------------------

local statement = ws * Cp() * (backup_statement("BACKUP", "backup", "TO")
    + backup_statement("RESTORE", "restore", "FROM")
    + select_statement)
  * Cp() / function(start, result, stop)
    result.start, result.stop = start, stop
    return result
  end

local quiet_separator = ws * P(";")
local script = quiet_separator ^ 0
  * Ct(statement * (sym(";") * quiet_separator ^ 0 * statement) ^ 0)
  * quiet_separator ^ 0 * ws * (P(-1) + fail("end of input"))


-- Error messages ------------------------------------------------------------

local function char_count(text)
  return utf8.len(text) or #text
end

local function join_expected(list)
  if #list == 1 then
    return list[1]
  end
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

local function syntax_error(text, pos, message)
  local before = text:sub(1, pos - 1)
  local line, line_start = 1, 1
  for newline in before:gmatch("()\n") do
    line = line + 1
    line_start = newline + 1
  end
  local column = char_count(before:sub(line_start)) + 1
  local rest = text:sub(pos):match("^[^\n]*")
  local near
  if pos > #text then
    near = "end of input"
  else
    local chars = {}
    for ch in rest:gmatch(utf8.charpattern) do
      if #chars == 20 then
        break
      end
      chars[#chars + 1] = ch
    end
    near = "'" .. table.concat(chars) .. "'"
  end
  return string.format(
    "Syntax error at position %d (line %d, column %d): %s near %s",
    char_count(before) + 1, line, column, message, near)
end


-- Public API ----------------------------------------------------------------

--- Parse one or more statements separated by `;`.
-- @tparam string text
-- @treturn[1] table array of statements (see the module's spec for shapes)
-- @treturn[2] nil
-- @treturn[2] string syntax error message
-- @treturn[2] string `"SYNTAX_ERROR"`
function sql.parse(text)
  if type(text) ~= "string" then
    error("sql.parse: expected a string, got " .. type(text), 2)
  end
  reset_state()
  local ok, statements = pcall(lpeg.match, script, text)
  local failure = state
  state = nil
  if not ok then
    -- LPeg's backtrack stack (400 entries) bounds nesting, as ClickHouse's
    -- max_parser_depth does; anything else is a bug here and is raised.
    if not tostring(statements):find("stack overflow", 1, true) then
      error(statements, 0)
    end
    return nil, syntax_error(text, math.max(failure.pos, 1),
      "statement is too deeply nested"), "SYNTAX_ERROR"
  end
  if not statements then
    if failure.hard then
      return nil, syntax_error(text, failure.hard.pos, failure.hard.message),
        "SYNTAX_ERROR"
    end
    return nil, syntax_error(text, failure.pos,
      "expected " .. join_expected(failure.expected)), "SYNTAX_ERROR"
  end
  for _, parsed in ipairs(statements) do
    parsed.text = text:sub(parsed.start, parsed.stop - 1)
    parsed.start, parsed.stop = nil, nil
  end
  return statements
end


local function quote(text, q)
  return q .. text:gsub("[\\\b\f\n\r\t\0" .. q .. "]", {
    ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
    ["\r"] = "\\r", ["\t"] = "\\t", ["\0"] = "\\0", [q] = "\\" .. q,
  }) .. q
end

--- Quote an identifier the way ClickHouse does (backQuoteIfNeed): bare when
-- it is a plain word, backquoted otherwise. Words this grammar reserves
-- (TABLE, TO, ...) and NULL are backquoted too, so the result always
-- parses back.
-- @tparam string name
-- @treturn string
function sql.quote_identifier(name)
  if type(name) ~= "string" then
    error("sql.quote_identifier: expected a string, got " .. type(name), 2)
  end
  local upper = name:upper()
  if name:match("^[%a_][%w_]*$") and not RESERVED[upper]
    and upper ~= "NULL" then
    return name
  end
  return quote(name, "`")
end

--- Quote a string literal as ClickHouse prints it: '...' with backslash
-- escapes for \ ' and control characters.
-- @tparam string text
-- @treturn string
function sql.quote_string(text)
  if type(text) ~= "string" then
    error("sql.quote_string: expected a string, got " .. type(text), 2)
  end
  return quote(text, "'")
end

local function format_value(value)
  local kind = math.type(value)
  if kind == "integer" then
    return string.format("%d", value)
  elseif kind == "float" then
    for digits = 1, 17 do
      local text = string.format("%." .. digits .. "g", value)
      if tonumber(text) == value then
        return text
      end
    end
    return string.format("%.17g", value)
  elseif type(value) == "boolean" then
    return tostring(value)
  elseif type(value) == "string" then
    return sql.quote_string(value)
  end
  error("sql.format_destination: unsupported argument " .. tostring(value), 3)
end

--- Format a destination as ClickHouse shows it in system.backups, e.g.
-- `Disk('backups', '1.zip')`. An engine without arguments prints bare.
-- @tparam table destination `{engine =, args =}`, optionally with
-- `collection =` and `options =`/`options_order =`
-- @treturn string
function sql.format_destination(destination)
  if type(destination) ~= "table" or type(destination.engine) ~= "string" then
    error("sql.format_destination: expected a destination table", 2)
  end
  local parts = {}
  if destination.collection then
    parts[#parts + 1] = destination.collection
  end
  for i, value in ipairs(destination.args or {}) do
    -- S3('url', 'key_id', 'secret') is shown as S3('url'): ClickHouse's withoutS3Credentials
    if destination.engine ~= "S3" or i == 1 then
      parts[#parts + 1] = format_value(value)
    end
  end
  if destination.options then
    local order = destination.options_order
    if not order then
      order = {}
      for key in pairs(destination.options) do
        order[#order + 1] = key
      end
      table.sort(order)
    end
    for _, key in ipairs(order) do
      parts[#parts + 1] = key .. " = " .. format_value(destination.options[key])
    end
  end
  if #parts == 0 then
    return destination.engine
  end
  return destination.engine .. "(" .. table.concat(parts, ", ") .. ")"
end


return sql
