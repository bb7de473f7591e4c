--- SELECT over in-memory rows (system.backups): WHERE, ORDER BY, LIMIT
-- and ClickHouse's output formats, byte for byte.
--
-- Column types are ClickHouse type names: String, Enum8('A' = 0, ...),
-- DateTime64(P) (an integer count of 10^-P seconds since the epoch) and
-- UInt64 (or any other integer type). Output formats (case-insensitive,
-- as in ClickHouse): TSV/TabSeparated, TSVRaw/TabSeparatedRaw, each also
-- WithNames and WithNamesAndTypes; CSV, CSVWithNames, CSVWithNamesAndTypes;
-- JSONEachRow (JSONLines, NDJSON); Vertical. The default is TSV.
-- @module chbackup.query
local query = {}


--- Vertical stops after this many rows, as ClickHouse does with its
-- default output_format_pretty_max_rows.
query.VERTICAL_MAX_ROWS = 1000


-- Types --------------------------------------------------------------------

-- { kind = "string" | "enum" | "datetime" | "integer", ... }
local function type_info(type_name)
  if type_name == "String" then
    return { kind = "string" }
  end
  if type_name:match("^Enum8%(") or type_name:match("^Enum16%(") then
    local values, names = {}, {}
    for name, value in type_name:gmatch("'([^']*)'%s*=%s*(%-?%d+)") do
      values[name] = math.tointeger(tonumber(value))
      names[#names + 1] = name
    end
    return { kind = "enum", values = values, names = names }
  end
  local scale = type_name:match("^DateTime64%((%d)[,)]")
  if scale then
    return { kind = "datetime", scale = math.tointeger(tonumber(scale)) }
  end
  if type_name:match("^U?Int%d+$") then
    return { kind = "integer" }
  end
  error(string.format("query: unsupported column type '%s'", type_name), 3)
end


-- Time ---------------------------------------------------------------------

--- Formats a DateTime64 value (`ticks` of 10^-scale seconds since the
-- epoch) as ClickHouse does: 'YYYY-MM-DD hh:mm:ss.ffffff', in local time,
-- or in UTC when `utc` is true. Zero is the epoch in that time zone.
function query.format_time(ticks, scale, utc)
  scale = scale or 6
  local unit = math.tointeger(10 ^ scale)
  local seconds, fraction = ticks // unit, ticks % unit
  local text = os.date(utc and "!%Y-%m-%d %H:%M:%S" or "%Y-%m-%d %H:%M:%S",
    seconds)
  if scale == 0 then
    return text
  end
  return text .. string.format(".%0" .. scale .. "d", fraction)
end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- 'YYYY-MM-DD', 'YYYY-MM-DD hh:mm:ss[.fff...]' (or with a 'T') or a number
-- of seconds, as ClickHouse reads a DateTime64 literal; nil if not one.
local function parse_time(text, scale, utc)
  local unit = math.tointeger(10 ^ scale)
  if text:match("^%d+$") then
    return math.tointeger(tonumber(text)) * unit
  end
  local y, mo, d, rest = text:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then
    return nil
  end
  local h, mi, s, fraction = 0, 0, 0, ""
  if rest ~= "" then
    h, mi, s, fraction = rest:match("^[ T](%d%d):(%d%d):(%d%d)(.*)$")
    if not h then
      return nil
    end
    if fraction ~= "" then
      fraction = fraction:match("^%.(%d+)$")
      if not fraction then
        return nil
      end
    end
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  h, mi, s = tonumber(h), tonumber(mi), tonumber(s)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or s > 59 then
    return nil
  end
  local seconds
  if utc then
    seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
  else
    seconds = os.time({ year = y, month = mo, day = d, hour = h, min = mi,
      sec = s })
  end
  fraction = (fraction .. string.rep("0", scale)):sub(1, scale)
  return seconds * unit + (tonumber(fraction) or 0)
end


-- Byte-wise string order (ClickHouse compares bytes, not collation).
local function string_less(a, b)
  if a == b then
    return false
  end
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end


-- LIKE ---------------------------------------------------------------------

-- Index after the UTF-8 character at `i` (one byte if it is not valid).
local function next_char(s, i)
  local c = s:byte(i)
  local n = c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC0 and 2 or 1
  for k = i + 1, i + n - 1 do
    local b = s:byte(k)
    if not b or b < 0x80 or b > 0xBF then
      return i + 1
    end
  end
  return i + n
end

-- ClickHouse's LIKE: % any run of characters, _ one (UTF-8) character,
-- \% \_ \\ escape them; a backslash before any other character is kept.
local function compile_like(pattern)
  local tokens, literal = {}, {}
  local function flush()
    if #literal > 0 then
      tokens[#tokens + 1] = { literal = table.concat(literal) }
      literal = {}
    end
  end
  local i = 1
  while i <= #pattern do
    local c = pattern:sub(i, i)
    if c == "\\" then
      local nxt = pattern:sub(i + 1, i + 1)
      if nxt == "" then
        return nil, string.format(
          "invalid escape sequence at the end of LIKE pattern '%s'", pattern)
      end
      if nxt == "%" or nxt == "_" or nxt == "\\" then
        literal[#literal + 1] = nxt
      else
        literal[#literal + 1] = c .. nxt
      end
      i = i + 2
    elseif c == "%" then
      flush()
      if not (tokens[#tokens] and tokens[#tokens].any) then
        tokens[#tokens + 1] = { any = true }
      end
      i = i + 1
    elseif c == "_" then
      flush()
      tokens[#tokens + 1] = { one = true }
      i = i + 1
    else
      literal[#literal + 1] = c
      i = i + 1
    end
  end
  flush()
  return function(s)
    local ti, si, len = 1, 1, #s
    local star_ti, star_si
    while true do
      local token = tokens[ti]
      local advanced = false
      if token == nil then
        if si > len then
          return true
        end
      elseif token.any then
        star_ti, star_si = ti, si
        ti = ti + 1
        advanced = true
      elseif token.one then
        if si <= len then
          si = next_char(s, si)
          ti = ti + 1
          advanced = true
        end
      elseif s:sub(si, si + #token.literal - 1) == token.literal then
        si = si + #token.literal
        ti = ti + 1
        advanced = true
      end
      if not advanced then
        if not star_ti or star_si > len then
          return false
        end
        star_si = next_char(s, star_si)
        ti, si = star_ti + 1, star_si
      end
    end
  end
end


-- WHERE --------------------------------------------------------------------

local COMPARE = {
  ["="] = function(a, b) return a == b end,
  ["=="] = function(a, b) return a == b end,
  ["!="] = function(a, b) return a ~= b end,
  ["<>"] = function(a, b) return a ~= b end,
  ["<"] = function(a, b, less) return less(a, b) end,
  [">"] = function(a, b, less) return less(b, a) end,
  ["<="] = function(a, b, less) return not less(b, a) end,
  [">="] = function(a, b, less) return not less(a, b) end,
}

local function number_less(a, b)
  return a < b
end

local function quote(value)
  if type(value) == "string" then
    return "'" .. value .. "'"
  end
  return tostring(value)
end

-- Converts a literal to the column's comparable form.
local function literal(column, value, utc)
  local info = column.info
  if info.kind == "string" then
    if type(value) ~= "string" then
      return nil, string.format("cannot compare String column '%s' with %s",
        column.name, quote(value))
    end
    return value
  end
  if info.kind == "enum" then
    if math.type(value) == "integer" or math.type(value) == "float" then
      return value
    end
    local n = type(value) == "string" and info.values[value]
    if not n then
      return nil, string.format(
        "unknown value %s for column '%s' (expected one of %s)",
        quote(value), column.name, table.concat(info.names, ", "))
    end
    return n
  end
  if type(value) == "number" then
    if info.kind == "datetime" then
      local ticks = value * 10 ^ info.scale
      return math.tointeger(ticks) or ticks
    end
    return value
  end
  if type(value) == "string" then
    if info.kind == "integer" then
      local n = value:match("^%-?%d+$") and math.tointeger(tonumber(value))
      if n then
        return n
      end
    else
      local ticks = parse_time(value, info.scale, utc)
      if ticks then
        return ticks
      end
    end
    return nil, string.format("cannot convert '%s' to %s for column '%s'",
      value, column.type, column.name)
  end
  return nil, string.format("cannot compare column '%s' with %s",
    column.name, tostring(value))
end

-- The comparable value of a column in a row.
local function getter(column)
  local name, info = column.name, column.info
  if info.kind == "enum" then
    return function(row)
      return info.values[row[name]] or -1
    end
  end
  local default = info.kind == "string" and "" or 0
  return function(row)
    local value = row[name]
    if value == nil then
      return default
    end
    return value
  end
end

local function compile_where(expr, lookup, utc)
  if type(expr) ~= "table" then
    error("query: a WHERE expression must be a table", 0)
  end
  local op = expr.op
  if op == "and" or op == "or" then
    local parts = {}
    for i, arg in ipairs(expr.args or {}) do
      local f, err = compile_where(arg, lookup, utc)
      if not f then
        return nil, err
      end
      parts[i] = f
    end
    if op == "and" then
      return function(row)
        for _, f in ipairs(parts) do
          if not f(row) then
            return false
          end
        end
        return true
      end
    end
    return function(row)
      for _, f in ipairs(parts) do
        if f(row) then
          return true
        end
      end
      return false
    end
  end
  if op == "not" then
    local f, err = compile_where(expr.arg, lookup, utc)
    if not f then
      return nil, err
    end
    return function(row)
      return not f(row)
    end
  end
  local column, cerr = lookup(expr.column)
  if not column then
    return nil, cerr
  end
  local name = column.name
  if op == "like" or op == "not like" then
    if column.info.kind ~= "string" and column.info.kind ~= "enum" then
      return nil, string.format("LIKE needs a String column: '%s' is %s",
        name, column.type)
    end
    if type(expr.value) ~= "string" then
      return nil, string.format("LIKE pattern for column '%s' must be a string",
        name)
    end
    local match, err = compile_like(expr.value)
    if not match then
      return nil, err
    end
    local negate = op == "not like"
    return function(row)
      return match(row[name] or "") ~= negate
    end
  end
  local get = getter(column)
  if op == "in" or op == "not in" then
    if type(expr.values) ~= "table" then
      error("query: IN needs a values list", 0)
    end
    local set = {}
    for _, value in ipairs(expr.values) do
      local v, err = literal(column, value, utc)
      if not v then
        return nil, err
      end
      set[#set + 1] = v
    end
    local negate = op == "not in"
    return function(row)
      local v = get(row)
      for _, candidate in ipairs(set) do
        if v == candidate then
          return not negate
        end
      end
      return negate
    end
  end
  local compare = COMPARE[op]
  if not compare then
    return nil, string.format("unsupported operator '%s'", tostring(op))
  end
  local value, err = literal(column, expr.value, utc)
  if value == nil then
    return nil, err
  end
  local less = column.info.kind == "string" and string_less or number_less
  return function(row)
    return compare(get(row), value, less)
  end
end


-- Output -------------------------------------------------------------------

-- The value as ClickHouse's text serialization writes it, unescaped.
local function plain(column, value, utc)
  local kind = column.info.kind
  if kind == "datetime" then
    return query.format_time(math.tointeger(value) or 0, column.info.scale, utc)
  end
  if kind == "integer" then
    return string.format("%d", math.tointeger(value) or 0)
  end
  return value or ""
end

local TSV_ESCAPES = {
  ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["'"] = "\\'",
  ["\0"] = "\\0", ["\b"] = "\\b", ["\f"] = "\\f", ["\r"] = "\\r",
}

local function tsv_escape(s)
  return (s:gsub("[\\\t\n'\0\b\f\r]", TSV_ESCAPES))
end

local function csv_quote(s)
  return "\"" .. s:gsub("\"", "\"\"") .. "\""
end

local JSON_ESCAPES = {
  ["\""] = "\\\"", ["\\"] = "\\\\", ["/"] = "\\/", ["\b"] = "\\b",
  ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
  ["\226\128\168"] = "\\u2028", ["\226\128\169"] = "\\u2029",
}

local function json_quote(s)
  s = s:gsub("[\0-\31\"\\/]", function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04X", c:byte())
  end)
  s = s:gsub("\226\128[\168\169]", JSON_ESCAPES)
  return "\"" .. s .. "\""
end

local function width(s)
  return utf8.len(s) or #s
end

local function write_tsv(out, columns, rows, options, utc)
  local escape = options.raw and function(s) return s end or tsv_escape
  local line = {}
  if options.names then
    for i, column in ipairs(columns) do
      line[i] = escape(column.name)
    end
    out[#out + 1] = table.concat(line, "\t") .. "\n"
  end
  if options.types then
    for i, column in ipairs(columns) do
      line[i] = escape(column.type)
    end
    out[#out + 1] = table.concat(line, "\t") .. "\n"
  end
  for _, row in ipairs(rows) do
    for i, column in ipairs(columns) do
      line[i] = escape(plain(column, row[column.name], utc))
    end
    out[#out + 1] = table.concat(line, "\t") .. "\n"
  end
end

local function write_csv(out, columns, rows, options, utc)
  local line = {}
  if options.names then
    for i, column in ipairs(columns) do
      line[i] = csv_quote(column.name)
    end
    out[#out + 1] = table.concat(line, ",") .. "\n"
  end
  if options.types then
    for i, column in ipairs(columns) do
      line[i] = csv_quote(column.type)
    end
    out[#out + 1] = table.concat(line, ",") .. "\n"
  end
  for _, row in ipairs(rows) do
    for i, column in ipairs(columns) do
      local text = plain(column, row[column.name], utc)
      line[i] = column.info.kind == "integer" and text or csv_quote(text)
    end
    out[#out + 1] = table.concat(line, ",") .. "\n"
  end
end

local function write_json_each_row(out, columns, rows, _, utc)
  local keys, line = {}, {}
  for i, column in ipairs(columns) do
    keys[i] = json_quote(column.name) .. ":"
  end
  for _, row in ipairs(rows) do
    for i, column in ipairs(columns) do
      local text = plain(column, row[column.name], utc)
      line[i] = keys[i]
        .. (column.info.kind == "integer" and text or json_quote(text))
    end
    out[#out + 1] = "{" .. table.concat(line, ",") .. "}\n"
  end
end

-- Vertical's tip after a large number: " -- 1.23 million" (ClickHouse's
-- writeReadableNumberTip: above output_format_pretty_single_large_number_
-- tip_threshold, 1000000, except (1e17, 1.844675e19), where hashes live).
local QUANTITIES = { "", " thousand", " million", " billion", " trillion",
  " quadrillion", " quintillion" }

local function number_tip(value)
  local x = value + 0.0
  local magnitude = math.abs(x)
  if magnitude <= 1000000 or (magnitude > 1e17 and magnitude < 1.844675e19) then
    return ""
  end
  local unit = 1
  while unit < #QUANTITIES and math.abs(x) >= 1000 do
    x = x / 1000
    unit = unit + 1
  end
  -- double-conversion's ToFixed rounds an exact tie away from zero
  local hundredths = x * 100
  if x * 8 == math.floor(x * 8) and math.abs(hundredths % 1) == 0.5 then
    x = x + (x < 0 and -0.001 or 0.001)
  end
  return string.format(" -- %.2f%s", x, QUANTITIES[unit])
end

local function write_vertical(out, columns, rows, _, utc)
  local longest = 0
  for _, column in ipairs(columns) do
    longest = math.max(longest, width(column.name))
  end
  local labels = {}
  for i, column in ipairs(columns) do
    labels[i] = column.name .. ":"
      .. string.rep(" ", longest - width(column.name) + 1)
  end
  local max_rows = query.VERTICAL_MAX_ROWS
  for n, row in ipairs(rows) do
    if n > max_rows then
      out[#out + 1] = string.format("\nShowed first %d.\n", max_rows)
      break
    end
    -- ClickHouse draws log10(n + 1) + 1 + #"Row :" dashes: one more than
    -- the title's width when n + 1 is a power of ten ("Row 9:", 7 dashes)
    out[#out + 1] = string.format("%sRow %d:\n%s\n", n > 1 and "\n" or "", n,
      string.rep("─", #tostring(n + 1) + 5))
    for i, column in ipairs(columns) do
      local value = row[column.name]
      local text = plain(column, value, utc)
      if column.info.kind == "integer" then
        text = text .. number_tip(math.tointeger(value) or 0)
      end
      out[#out + 1] = labels[i] .. text .. "\n"
    end
  end
end

local FORMATS = {
  tsv = { write_tsv },
  tsvwithnames = { write_tsv, names = true },
  tsvwithnamesandtypes = { write_tsv, names = true, types = true },
  tsvraw = { write_tsv, raw = true },
  tsvrawwithnames = { write_tsv, raw = true, names = true },
  tsvrawwithnamesandtypes = { write_tsv, raw = true, names = true,
    types = true },
  csv = { write_csv },
  csvwithnames = { write_csv, names = true },
  csvwithnamesandtypes = { write_csv, names = true, types = true },
  jsoneachrow = { write_json_each_row },
  vertical = { write_vertical },
}
FORMATS.tabseparated = FORMATS.tsv
FORMATS.tabseparatedwithnames = FORMATS.tsvwithnames
FORMATS.tabseparatedwithnamesandtypes = FORMATS.tsvwithnamesandtypes
FORMATS.tabseparatedraw = FORMATS.tsvraw
FORMATS.tabseparatedrawwithnames = FORMATS.tsvrawwithnames
FORMATS.tabseparatedrawwithnamesandtypes = FORMATS.tsvrawwithnamesandtypes
FORMATS.jsonlines = FORMATS.jsoneachrow
FORMATS.ndjson = FORMATS.jsoneachrow


--- True when `name` is an output format query.run writes.
function query.has_format(name)
  return type(name) == "string" and FORMATS[name:lower()] ~= nil
end


-- Running ------------------------------------------------------------------

local function column_lookup(columns, table_name)
  local by_name, names = {}, {}
  for i, column in ipairs(columns) do
    if type(column) ~= "table" or type(column.name) ~= "string"
        or type(column.type) ~= "string" then
      error("query: columns must be a list of { name =, type = }", 3)
    end
    by_name[column.name] = {
      name = column.name, type = column.type, info = type_info(column.type),
    }
    names[i] = column.name
  end
  return function(name)
    local column = by_name[name]
    if not column then
      return nil, string.format("unknown column '%s' in %s (columns: %s)",
        tostring(name), table_name, table.concat(names, ", "))
    end
    return column
  end
end

local function sort_rows(rows, order_by, lookup)
  local keys = {}
  for i, item in ipairs(order_by) do
    if type(item) ~= "table" then
      error("query: ORDER BY items must be { column =, desc = }", 0)
    end
    local column, err = lookup(item.column)
    if not column then
      return nil, err
    end
    keys[i] = {
      get = getter(column),
      less = column.info.kind == "string" and string_less or number_less,
      desc = item.desc and true or false,
    }
  end
  local decorated = {}
  for i, row in ipairs(rows) do
    local values = {}
    for k, key in ipairs(keys) do
      values[k] = key.get(row)
    end
    decorated[i] = { row = row, index = i, values = values }
  end
  table.sort(decorated, function(a, b)
    for k, key in ipairs(keys) do
      local x, y = a.values[k], b.values[k]
      if key.less(x, y) then
        return not key.desc
      elseif key.less(y, x) then
        return key.desc
      end
    end
    return a.index < b.index
  end)
  local sorted = {}
  for i, item in ipairs(decorated) do
    sorted[i] = item.row
  end
  return sorted
end

local function check_count(value, what)
  if value == nil then
    return nil
  end
  local n = math.tointeger(value)
  if not n or n < 0 then
    return nil, string.format("bad %s %s", what, tostring(value))
  end
  return n
end


--- Evaluates a parsed SELECT over `rows` and formats the result.
-- `stmt`: `{ table =, columns = "*" | { names }, where =, order_by =
-- { { column =, desc = } }, limit =, offset =, format = }`.
-- `columns`: the table's columns, `{ { name =, type = }, ... }`.
-- `options.utc`: format and read DateTime64 values in UTC instead of the
-- local time zone.
-- @treturn[1] string the output, as ClickHouse writes it
-- @treturn[2] nil, message (unknown column or format, bad literal)
function query.run(stmt, rows, columns, options)
  if type(stmt) ~= "table" or type(rows) ~= "table"
      or type(columns) ~= "table" then
    error("query.run(stmt, rows, columns[, options]): tables expected", 2)
  end
  options = options or {}
  local utc = options.utc and true or false
  local table_name = stmt.table or "system.backups"
  local format_name = stmt.format or "TSV"
  local format = type(format_name) == "string" and FORMATS[format_name:lower()]
  if not format then
    return nil, string.format("unknown format '%s'", tostring(format_name))
  end
  local lookup = column_lookup(columns, table_name)

  local selected = {}
  if stmt.columns == nil or stmt.columns == "*" then
    for i, column in ipairs(columns) do
      selected[i] = lookup(column.name)
    end
  elseif type(stmt.columns) == "table" then
    for i, name in ipairs(stmt.columns) do
      local column, err = lookup(name)
      if not column then
        return nil, err
      end
      selected[i] = column
    end
  else
    error("query: stmt.columns must be \"*\" or a list of names", 2)
  end

  local keep
  if stmt.where ~= nil then
    local err
    keep, err = compile_where(stmt.where, lookup, utc)
    if not keep then
      return nil, err
    end
  end
  local limit, lerr = check_count(stmt.limit, "LIMIT")
  if lerr then
    return nil, lerr
  end
  local offset, oerr = check_count(stmt.offset, "OFFSET")
  if oerr then
    return nil, oerr
  end

  local result = {}
  for _, row in ipairs(rows) do
    if not keep or keep(row) then
      result[#result + 1] = row
    end
  end
  if stmt.order_by ~= nil and #stmt.order_by > 0 then
    local err
    result, err = sort_rows(result, stmt.order_by, lookup)
    if not result then
      return nil, err
    end
  end
  if limit or offset then
    local first = (offset or 0) + 1
    local last = limit and first + limit - 1 or #result
    result = table.move(result, first, math.min(last, #result), 1, {})
  end

  local out = {}
  format[1](out, selected, result, format, utc)
  return table.concat(out)
end


return query
