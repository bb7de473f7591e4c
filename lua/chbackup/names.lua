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


--- Edit distance between a and b (optimal string alignment: insertions,
-- deletions, substitutions and swaps of two neighbours, one each).
function names.distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do
    d[i] = { [0] = i }
  end
  for j = 0, lb do
    d[0][j] = j
  end
  for i = 1, la do
    local ca = a:byte(i)
    for j = 1, lb do
      local cost = ca == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and ca == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end


--- The candidate closest to word (case aside), when close enough to be
-- a misspelling of it: at most 1 edit for words up to 3 bytes, 2 up to 6,
-- 3 beyond; ties go to the first in sorted order. nil when none.
function names.closest(word, candidates)
  local limit = #word <= 3 and 1 or #word <= 6 and 2 or 3
  local lower = word:lower()
  local sorted = {}
  for _, c in ipairs(candidates) do
    if c ~= word then
      sorted[#sorted + 1] = c
    end
  end
  table.sort(sorted)
  local best, best_d
  for _, c in ipairs(sorted) do
    local d = names.distance(lower, c:lower())
    if d <= limit and (not best_d or d < best_d) then
      best, best_d = c, d
    end
  end
  return best
end


--- " (did you mean X?)" for the candidate closest to word, or "".
-- show(candidate) prints it (default: as it is).
function names.did_you_mean(word, candidates, show)
  local best = names.closest(word, candidates)
  if not best then
    return ""
  end
  return " (did you mean " .. (show and show(best) or best) .. "?)"
end


return names
