--- Names as ClickHouse writes them: file-name escaping and SQL quoting.
-- @module chbackup.names
local names = {}


--- ClickHouse's escapeForFileName: [A-Za-z0-9_] stay, every other byte
-- becomes %XX (upper-case hex). "таблица с пробелом" -> "%D1%82...%20...".
function names.escape_file(name)
  return (name:gsub("[^%w_]", function(c)
    return string.format("%%%02X", c:byte())
  end))
end


function names.unescape_file(name)
  return (name:gsub("%%(%x%x)", function(h)
    return string.char(tonumber(h, 16))
  end))
end


--- An identifier as ClickHouse prints it: bare when it is a plain word,
-- otherwise in backquotes with ` and \ escaped.
function names.quote_identifier(name)
  if name:match("^[%a_][%w_]*$") then
    return name
  end
  return "`" .. name:gsub("[\\`]", "\\%0") .. "`"
end


function names.qualified(database, name)
  return names.quote_identifier(database) .. "." .. names.quote_identifier(name)
end


return names
