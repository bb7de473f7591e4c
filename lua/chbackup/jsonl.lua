--- JSON lines for `--json`: one object a line, its fields in a stable
-- order (the order given first, then the others sorted), absent values
-- written as null where the caller says a field is always there.
-- @module chbackup.jsonl
local cjson = require("cjson")

local jsonl = {}


--- A value for a field that is always there: null when absent.
function jsonl.value(v)
  if v == nil then
    return cjson.null
  end
  return v
end


local ARRAY = {}

--- Marks list as a JSON array (so that an empty one is [] rather than {}).
function jsonl.array(list)
  return setmetatable(list or {}, ARRAY)
end


-- Encodes v: tables recursively (a list or a marked array as an array,
-- other tables as objects with sorted keys), the rest by cjson.
local function encode(v)
  if type(v) ~= "table" or v == cjson.null then
    return cjson.encode(v)
  end
  local parts = {}
  if getmetatable(v) == ARRAY or v[1] ~= nil then
    for i, x in ipairs(v) do
      parts[i] = encode(x)
    end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    parts[i] = cjson.encode(tostring(k)) .. ":" .. encode(v[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end


--- An order from a list of field names: {[name] = position}.
function jsonl.order(names)
  local order = {}
  for i, k in ipairs(names) do
    order[k] = i
  end
  return order
end


--- Table t as one JSON line (with "\n"); fields in `order` ({[name] = position})
-- first, then the others sorted; nested objects' fields sorted.
function jsonl.line(t, order)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys, function(a, b)
    local ia, ib = order[a] or math.huge, order[b] or math.huge
    if ia ~= ib then
      return ia < ib
    end
    return a < b
  end)
  for i, k in ipairs(keys) do
    keys[i] = cjson.encode(k) .. ":" .. encode(t[k])
  end
  return "{" .. table.concat(keys, ",") .. "}\n"
end


return jsonl
