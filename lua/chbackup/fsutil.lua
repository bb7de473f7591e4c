--- File-system helpers for the Lua side (directories, small files).
-- @module chbackup.fsutil
local lfs = require("lfs")

local fsutil = {}


function fsutil.exists(path)
  return lfs.symlinkattributes(path, "mode") ~= nil
end


function fsutil.is_dir(path)
  return lfs.attributes(path, "mode") == "directory"
end


--- mkdir -p. Returns true or nil, err.
function fsutil.mkdir_p(path)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if not fsutil.is_dir(acc) then
      local ok, err = lfs.mkdir(acc)
      if not ok and not fsutil.is_dir(acc) then
        return nil, "cannot create directory " .. acc .. ": " .. tostring(err)
      end
    end
  end
  return true
end


--- The entries of a directory (sorted, without . and ..), or nil, err
-- naming it when it cannot be read.
function fsutil.list_dir(dir)
  local ok, iter, state = pcall(lfs.dir, dir)
  if not ok then
    return nil, "cannot read directory " .. dir .. ": " .. tostring(iter)
  end
  local out = {}
  for entry in iter, state do
    if entry ~= "." and entry ~= ".." then
      out[#out + 1] = entry
    end
  end
  table.sort(out)
  return out
end


--- The directory that holds path ("." for a bare name).
function fsutil.parent_dir(path)
  return path:match("^(.*)/[^/]*$") or "."
end


--- Is the directory empty (but for the name `except`, if given)?
function fsutil.is_empty_dir(path, except)
  for entry in lfs.dir(path) do
    if entry ~= "." and entry ~= ".." and entry ~= except then
      return false
    end
  end
  return true
end


--- Removes a tree without following symlinks (a link is removed as a
-- link); `last`, a name inside the directory (its marker), goes after
-- everything else, so that a removal cut short still carries it. Returns
-- true or nil, err naming the first thing it could not remove.
function fsutil.remove_tree(path, last)
  local attr = lfs.symlinkattributes(path)
  if not attr then
    return true
  end
  if attr.mode == "directory" then
    for entry in lfs.dir(path) do
      if entry ~= "." and entry ~= ".." and entry ~= last then
        local ok, err = fsutil.remove_tree(path .. "/" .. entry)
        if not ok then
          return nil, err
        end
      end
    end
    if last then
      local ok, err = fsutil.remove_tree(path .. "/" .. last)
      if not ok then
        return nil, err
      end
    end
    local ok, err = lfs.rmdir(path)
    if not ok then
      return nil, "cannot remove " .. path .. ": " .. tostring(err)
    end
    return true
  end
  local ok, err = os.remove(path)
  if not ok then
    return nil, "cannot remove " .. path .. ": " .. tostring(err)
  end
  return true
end


--- Writes a small file in one go (temporary name, then rename).
function fsutil.write_file(path, content)
  local tmp = path .. ".tmp"
  local f, err = io.open(tmp, "wb")
  if not f then
    return nil, "cannot write " .. path .. ": " .. tostring(err)
  end
  f:write(content)
  local ok, cerr = f:close()
  if not ok then
    os.remove(tmp)
    return nil, "cannot write " .. path .. ": " .. tostring(cerr)
  end
  local renamed, rerr = os.rename(tmp, path)
  if not renamed then
    os.remove(tmp)
    return nil, "cannot write " .. path .. ": " .. tostring(rerr)
  end
  return true
end


--- A directory of the server that the configuration may name (configured,
-- or nil for `<data path>/<default>`): one under the configuration's data
-- path is taken under cat.path, the data path being worked on; a relative
-- one is relative to it.
function fsutil.server_dir(cat, configured, default)
  if not configured or configured == "" then
    return cat.path .. "/" .. default
  end
  local p = configured:gsub("/+$", "")
  local cfg_data = (cat.config and cat.config.data_path or ""):gsub("/+$", "")
  if cfg_data ~= "" and p:sub(1, #cfg_data + 1) == cfg_data .. "/" then
    return cat.path .. p:sub(#cfg_data + 1)
  end
  return p:sub(1, 1) == "/" and p or cat.path .. "/" .. p
end


function fsutil.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    return nil, err
  end
  local s = f:read("a")
  f:close()
  return s
end


--- A password kept in a file: its text without the final line end(s).
-- Returns it, or nil, err (unreadable, or empty).
function fsutil.read_secret(path)
  local text, err = fsutil.read_file(path)
  if not text then
    return nil, "cannot read " .. tostring(err)
  end
  text = text:gsub("[\r\n]+$", "")
  if text == "" then
    return nil, path .. " is empty"
  end
  return text
end


return fsutil
