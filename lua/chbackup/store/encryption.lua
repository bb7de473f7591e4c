--- Encrypted directory backups: the parameters file (`.chbackup-encryption`,
-- not listed in `.backup`) and the key derived from a password (scrypt),
-- checked with a sealed check block before any file is read.
-- @module chbackup.store.encryption
local core = require("chbackup.core")

local encryption = {}

--- The file that marks an encrypted directory backup (not in `.backup`).
encryption.FILE = ".chbackup-encryption"
-- scrypt cost of new encrypted backups: 2^15 * 8 * 128 bytes = 32 MiB.
encryption.SCRYPT = { n = 32768, r = 8, p = 1 }
local CHECK_TEXT = "chbackup encryption check"


--- Parameters and key of a new encrypted directory backup: returns
-- key, json text of its ENCRYPTION_FILE; or nil, err.
function encryption.new(password)
  local salt, err = core.random_hex(16)
  if not salt then
    return nil, err
  end
  local key
  key, err = core.derive_key(password, salt, encryption.SCRYPT)
  if not key then
    return nil, err
  end
  local check
  check, err = core.encrypt(key, encryption.FILE, CHECK_TEXT)
  if not check then
    return nil, err
  end
  local text = require("cjson").encode({
    format = 1, cipher = "AES-256-GCM", kdf = "scrypt",
    n = encryption.SCRYPT.n, r = encryption.SCRYPT.r, p = encryption.SCRYPT.p, salt = salt,
    check = (check:gsub(".", function(c) return string.format("%02x", c:byte()) end)),
  }) .. "\n"
  return key, text
end


--- The key of an encrypted directory backup, checked with its check block:
-- key | nil, err, code.
function encryption.open(resolved, password)
  local path = resolved.path .. "/" .. encryption.FILE
  local f = io.open(path, "rb")
  local text = f and f:read("a")
  if f then
    f:close()
  end
  local ok, p = pcall(require("cjson").decode, text or "")
  if not ok or type(p) ~= "table" or p.format ~= 1 or p.cipher ~= "AES-256-GCM" or p.kdf ~= "scrypt"
      or type(p.salt) ~= "string" or not p.salt:match("^%x+$") or #p.salt % 2 ~= 0 or #p.salt > 128
      or type(p.check) ~= "string" or not p.check:match("^%x+$") or #p.check % 2 ~= 0 then
    return nil, "backup " .. resolved.name .. " is corrupt: cannot read " .. path, "CORRUPT"
  end
  -- scrypt's cost comes from the (untrusted) file: bounded by what a reader
  -- accepts to spend, 8 times what chbackup writes (encryption.SCRYPT)
  local n, r, pp = math.tointeger(p.n), math.tointeger(p.r), math.tointeger(p.p)
  if not (n and r and pp) or n < 2 or r < 1 or pp < 1 or n > 2 ^ 20 or r > 64 or pp > 16
      or 128 * r * n > 8 * 128 * encryption.SCRYPT.r * encryption.SCRYPT.n then
    local function shown(x)
      return tostring(math.tointeger(x) or x)
    end
    return nil, string.format("backup %s is corrupt: %s asks for scrypt n=%s r=%s p=%s (integers, at most "
      .. "n=2^20, r=64, p=16 and 256 MiB)", resolved.name, path, shown(p.n), shown(p.r), shown(p.p)), "CORRUPT"
  end
  if not password then
    return nil, "backup " .. resolved.name .. " is encrypted: give SETTINGS password = '…'", "AUTH"
  end
  local key, err, code = core.derive_key(password, p.salt, { n = n, r = r, p = pp })
  if not key then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local check = p.check:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  if core.decrypt(key, encryption.FILE, check) ~= CHECK_TEXT then
    return nil, "wrong password for backup " .. resolved.name, "AUTH"
  end
  return key
end


return encryption
