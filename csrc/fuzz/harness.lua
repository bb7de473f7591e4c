--- The Lua side of the libFuzzer targets manifest, sql and ddl
-- (fuzz_lua.c): `...` is the target's name; returns the function run on
-- each input. That function returns nil when the code under test kept its
-- contract (a value, or nil and a message; never a raised error), else a
-- string saying how it broke it, which fuzz_lua.c prints before abort():
-- a bug found.
local target = ...

-- nil, or what is wrong with the results of pcall(f, …)
local function broken(what, ok, value, err)
  if not ok then
    return what .. " raised: " .. tostring(value)
  end
  if value == nil and type(err) ~= "string" then
    return what .. " returned nil without a message"
  end
  return nil
end

local targets = {}


-- manifest.from_string: a manifest it accepts holds only safe names and
-- well-formed values, and survives serialize + parse unchanged.
function targets.manifest()
  local manifest = require("chbackup.manifest")

  local function check_entries(m)
    for i, e in ipairs(m.files) do
      if not manifest.safe_name(e.name) then
        return "accepted an unsafe name in entry " .. i .. ": " .. string.format("%q", e.name)
      end
      if math.type(e.size) ~= "integer" or e.size < 0 then
        return "accepted size " .. tostring(e.size) .. " of " .. e.name
      end
      if e.size > 0 and not (type(e.checksum) == "string" and e.checksum:match("^%x+$") and #e.checksum == 32) then
        return "accepted checksum " .. tostring(e.checksum) .. " of " .. e.name
      end
      if e.base_size and (math.type(e.base_size) ~= "integer" or e.base_size < 0 or e.base_size > e.size) then
        return "accepted base_size " .. tostring(e.base_size) .. " of " .. e.name
      end
      if e.data_file and not m.by_name[e.data_file] then
        return "accepted a data_file that is not listed: " .. e.name
      end
      if m.by_name[e.name] ~= e then
        return "by_name does not hold entry " .. e.name
      end
    end
    return nil
  end

  -- what an entry means (the bytes it stands for), for comparing
  local function meaning(e)
    local base = e.base_size or (e.use_base and e.size) or 0
    return table.concat({ e.name, e.size, e.size > 0 and e.checksum or "", base,
      base > 0 and base < e.size and e.base_checksum or "", e.data_file or "" }, "|")
  end

  return function(text)
    local ok, m, err = pcall(manifest.from_string, text, "fuzz/.backup")
    local bad = broken("manifest.from_string", ok, m, err)
    if bad then
      return bad
    end
    if not m then
      if not err:find("^backup manifest fuzz/%.backup is corrupt: ") then
        return "an error that does not name the manifest: " .. err
      end
      return nil
    end
    bad = check_entries(m)
    if bad then
      return bad
    end
    local out = {}
    ok, err = pcall(manifest.serialize, m, function(s) out[#out + 1] = s end)
    if not ok then
      return "manifest.serialize raised on an accepted manifest: " .. tostring(err)
    end
    local again
    ok, again, err = pcall(manifest.from_string, table.concat(out), "fuzz/again")
    if not ok or not again then
      return "a serialized manifest does not parse again: " .. tostring(again or err)
    end
    if #again.files ~= #m.files then
      return "serialize + parse changed the number of files"
    end
    for i, e in ipairs(m.files) do
      if meaning(e) ~= meaning(again.files[i]) then
        return "serialize + parse changed entry " .. i .. ": " .. meaning(e) .. " -> " .. meaning(again.files[i])
      end
    end
    for _, k in ipairs({ "version", "timestamp", "uuid", "base_backup", "base_backup_uuid" }) do
      if k ~= "version" and m[k] ~= nil and again[k] ~= m[k] then
        return "serialize + parse changed " .. k .. ": " .. string.format("%q -> %q", m[k], tostring(again[k]))
      end
    end
    return nil
  end
end


-- sql.parse: statements (BACKUP, RESTORE, SELECT) from the command line.
function targets.sql()
  local sql = require("chbackup.sql")
  return function(text)
    local ok, reqs, err = pcall(sql.parse, text)
    local bad = broken("sql.parse", ok, reqs, err)
    if bad or not reqs then
      return bad
    end
    if type(reqs) ~= "table" or #reqs == 0 then
      return "sql.parse returned no statements without an error"
    end
    for i, r in ipairs(reqs) do
      if type(r) ~= "table" or type(r.kind) ~= "string" then
        return "statement " .. i .. " has no kind"
      end
      if r.destination then
        local fok, name = pcall(sql.format_destination, r.destination)
        if not fok then
          return "sql.format_destination raised on statement " .. i .. ": " .. tostring(name)
        end
      end
    end
    return nil
  end
end


-- ddl.parse_create / parse_attach: metadata files of backups and data
-- paths; what restore then does with a parsed statement must not raise.
function targets.ddl()
  local ddl = require("chbackup.ddl")
  local renaming = require("chbackup.renaming")
  local map = assert(renaming.map({
    { type = "database", name = "db", new_name = "db2" },
    { type = "table", database = "shop", name = "t", new_database = "x", new_name = "y" },
  }, "default"))

  local function use(info)
    local body = info.body
    ddl.engine(body)
    ddl.structure(body)
    ddl.inner_table_body(body)
    if ddl.inner_uuid(body) then
      ddl.with_inner_uuid(body, "00000000-0000-0000-0000-000000000000")
    end
    renaming.apply(body, map)
    ddl.attach_statement(info.object, info.uuid, body)
    ddl.create_statement(info.object, info.database, info.name or "t", info.uuid, body)
  end

  return function(text)
    for _, f in ipairs({ "parse_create", "parse_attach" }) do
      local ok, info, err = pcall(ddl[f], text)
      local bad = broken("ddl." .. f, ok, info, err)
      if bad then
        return bad
      end
      if info then
        local uok, uerr = pcall(use, info)
        if not uok then
          return "using what ddl." .. f .. " returned raised: " .. tostring(uerr)
        end
      end
    end
    local ok, err = pcall(ddl.one_line, text)
    if not ok then
      return "ddl.one_line raised: " .. tostring(err)
    end
    return nil
  end
end


local make = targets[target]
if not make then
  error("no fuzz target '" .. tostring(target) .. "'")
end
return make()
