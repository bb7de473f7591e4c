-- The rockspec installs every Lua module of lua/ (a new module cannot be
-- forgotten) and nothing that does not exist.
local h = require("spec.helpers")
local lfs = require("lfs")

local ROCKSPEC = h.ROOT .. "/rockspec/chbackup-scm-1.rockspec"

local function load_rockspec()
  local env = {}
  local chunk = assert(loadfile(ROCKSPEC, "t", env))
  chunk()
  return env
end

-- Every .lua file under lua/, as module name -> path relative to the root.
local function lua_modules()
  local out = {}
  local function walk(rel)
    for e in lfs.dir(h.ROOT .. "/" .. rel) do
      local p = rel .. "/" .. e
      local mode = e:sub(1, 1) ~= "." and lfs.attributes(h.ROOT .. "/" .. p, "mode")
      if mode == "directory" then
        walk(p)
      elseif mode == "file" and e:match("%.lua$") then
        local name = p:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
        out[name] = p
      end
    end
  end
  walk("lua")
  return out
end

describe("rockspec", function()
  local spec

  setup(function()
    spec = load_rockspec()
  end)

  it("is a 3.0 rockspec of chbackup for Lua 5.4, built with CMake", function()
    assert.equal("3.0", spec.rockspec_format)
    assert.equal("chbackup", spec.package)
    assert.equal("lua >= 5.4, < 5.5", spec.dependencies[1])
    assert.equal("cmake", spec.build.type)
    assert.equal("$(LIBDIR)", spec.build.variables.CHB_LIBDIR)
    assert.equal("$(LUA_INCDIR)", spec.build.variables.LUA_INCDIR)
    assert.is_table(spec.external_dependencies.LZ4)
    assert.is_table(spec.external_dependencies.ZSTD)
  end)

  it("lists every module of lua/ in build.install.lua, under its module name", function()
    local listed = spec.build.install.lua
    local missing = {}
    for name, path in pairs(lua_modules()) do
      if listed[name] ~= path then
        missing[#missing + 1] = string.format("[%q] = %q", name, path)
      end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("lists only files that exist", function()
    local stale = {}
    for name, path in pairs(spec.build.install.lua) do
      if lfs.attributes(h.ROOT .. "/" .. path, "mode") ~= "file" then
        stale[#stale + 1] = name
      end
    end
    for name, path in pairs(spec.build.install.bin) do
      if lfs.attributes(h.ROOT .. "/" .. path, "mode") ~= "file" then
        stale[#stale + 1] = name
      end
    end
    table.sort(stale)
    assert.same({}, stale)
    assert.equal("scripts/chbackup", spec.build.install.bin.chbackup)
  end)
end)
