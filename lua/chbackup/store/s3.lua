--- Directory backups on S3: ClickHouse's tree (`.backup`, `metadata/`,
-- `data/`) as objects `<key prefix>/<name in backup>`, in the order of
-- ClickHouse's BackupImpl:
--
--   `.lock` created first (create-if-absent; refused if `.backup` or
--   `.lock` is there), the files (the C job: S3 sinks, verified while
--   streaming), `.backup` last, `.lock` removed after.
--
-- A `.lock` left by a killed chbackup run of this host (its process is
-- gone) is taken over: what that run wrote is deleted first (logged), as
-- the directory store does with its marker; any other `.lock` (ClickHouse's
-- holds a UUID) refuses the BACKUP. Reading: ranged GETs (C pieces with
-- `s3=`), sizes from one listing. Deleting: `.backup` first, so a
-- half-deleted backup never looks whole, then the rest in batches of 1000.
--
-- Destinations: `S3('url'[, 'key_id', 'secret'])`, path-style
-- (`http://host:port/bucket/prefix`) or virtual-hosted
-- (`http://bucket.s3.region.amazonaws.com/prefix`). Without credentials
-- they come from the backup whose base this is (same endpoint and bucket,
-- ClickHouse's base_backup_copy_s3_credentials_from_backup), else the
-- config's `<s3>` endpoint whose url prefixes this one, else the
-- environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
-- AWS_SESSION_TOKEN: use_environment_credentials). The name (status rows,
-- system.backups, a manifest's base_backup) is `S3('url')`: the secret is
-- never in it, nor in messages.
-- @module chbackup.store.s3
local core = require("chbackup.core")
local dir = require("chbackup.store.dir")
local encryption = require("chbackup.store.encryption")
local lfs = require("lfs")
local lock = require("chbackup.lock")
local manifest = require("chbackup.manifest")
local sql = require("chbackup.sql")

local s3 = {}
local from_collection, no_password

s3.LOCK = ".lock"
s3.REBASING = "rebasing\n"   -- last line of the `.lock` a rebase holds (begin_rebase)


-- Resolving -------------------------------------------------------------------------

-- endpoint, bucket, prefix, path_style, region of a url; or nil, err.
-- root: a place backups are listed below (the prefix may be empty).
local function parse_url(url, root)
  local scheme, host, path = url:match("^(https?)://([^/?#]+)/?([^?#]*)$")
  if not scheme then
    return nil, "expected http(s)://host[:port]/bucket/path"
  end
  path = path:gsub("/+$", "")
  -- virtual-hosted: bucket.s3[.-]… (S3::URI's pattern), the host's first label the bucket
  local bucket, rest = host:match("^([^.]+)%.(s3[.%-].+)$")
  local prefix
  if bucket then
    prefix = path
  else
    bucket, prefix = path:match("^([^/]+)/?(.*)$")
    rest = host
    if not bucket then
      return nil, "no bucket in the url"
    end
  end
  if prefix == "" and not root then
    return nil, "no key prefix after the bucket (a backup needs its own path)"
  end
  local region = rest:match("^s3[.%-]([%w%-]+)%.amazonaws%.com") or host:match("^s3[.%-]([%w%-]+)%.amazonaws%.com")
  return {
    endpoint = scheme .. "://" .. rest, bucket = bucket, prefix = prefix,
    path_style = host == rest, region = region ~= "dualstack" and region or nil,
  }
end


-- The config's <s3> endpoint whose url is the longest prefix of url (an
-- endpoint `…/prefix/` serves `…/prefix` itself too).
local function config_endpoint(cfg, url)
  url = url:gsub("/*$", "/")
  local best
  for _, e in ipairs(cfg.s3 or {}) do
    if e.endpoint ~= "" and url:sub(1, #e.endpoint) == e.endpoint and (not best or #e.endpoint > #best.endpoint) then
      best = e
    end
  end
  return best
end


-- Credentials of an S3 destination without them; or nil, err.
local function credentials(cfg, dest, where)
  local from = dest.inherit
  if from and from.engine == "S3" and from.key_id
      and (dest.same_s3_credentials or from.endpoint == where.endpoint and from.bucket == where.bucket) then
    return from.key_id, from.secret, from.session_token
  end
  local e = config_endpoint(cfg, dest.args[1])
  if e and e.access_key_id and e.secret_access_key then
    where.region = where.region or e.region
    return e.access_key_id, e.secret_access_key, e.session_token
  end
  if e and e.region then
    where.region = where.region or e.region
  end
  local id, secret = os.getenv("AWS_ACCESS_KEY_ID"), os.getenv("AWS_SECRET_ACCESS_KEY")
  if id and secret and (not e or e.use_environment_credentials ~= "false") then
    return id, secret, os.getenv("AWS_SESSION_TOKEN")
  end
  return nil, "no credentials: give S3('url', 'key_id', 'secret'), an <s3> endpoint with "
    .. "access_key_id and secret_access_key in the config, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
end


-- `S3(collection[, 'key_prefix'])`: url, access_key_id, secret_access_key
-- (and session_token) from the config's <named_collections>, which replace
-- the <s3> endpoints (as ClickHouse's); the prefix is appended to the url.
-- Shown as written: the collection's name, never its secret.
function from_collection(cfg, dest)
  local args = dest.args or {}
  local shown = sql.format_destination(dest)
  local coll = (cfg.named_collections or {})[dest.collection]
  if #args > 1 or dest.options then
    return nil, "Backup S3 with a named collection takes at most one more argument: S3(collection[, 'key_prefix'])"
  elseif not coll then
    return nil, shown .. ": there is no named collection '" .. dest.collection .. "' in the config's "
      .. "<named_collections>"
  elseif not coll.url then
    return nil, shown .. ": named collection '" .. dest.collection .. "' has no url"
  elseif type(args[1] or "") ~= "string" then
    return nil, "backup engine S3: its arguments must be quoted strings"
  end
  local url = coll.url:gsub("/+$", "") .. (args[1] and ("/" .. args[1]:gsub("^/+", "")) or "")
  local expanded = { engine = "S3", args = { url, coll.access_key_id, coll.secret_access_key },
    session_token = coll.session_token, shown = shown, root = dest.root, inherit = dest.inherit,
    same_s3_credentials = dest.same_s3_credentials }
  if not coll.access_key_id or not coll.secret_access_key then
    expanded.args = { url }
    if coll.use_environment_credentials ~= "true" and coll.use_environment_credentials ~= "1" then
      cfg = setmetatable({ s3 = {} }, { __index = cfg })   -- not the <s3> endpoints: the collection's own
    end
  end
  return s3.resolve(cfg, expanded)
end


--- Resolves `S3('url'[, 'key_id', 'secret'])` (dest.inherit: the resolved
-- backup whose base this is; dest.root: a place to list, whose key prefix
-- may be empty: the whole bucket). Returns the resolved destination or
-- nil, err (never naming the secret).
function s3.resolve(cfg, dest)
  local args = dest.args or {}
  if dest.collection then
    return from_collection(cfg, dest)
  end
  local url = args[1]
  local shown = type(url) == "string" and sql.format_destination({ engine = "S3", args = { url } }) or "S3"
  if (#args ~= 1 and #args ~= 3) or dest.options then
    return nil, "Backup S3 requires 1 or 3 arguments: S3('url'[, 'access_key_id', 'secret_access_key'])"
  end
  for _, a in ipairs(args) do
    if type(a) ~= "string" then
      return nil, "backup engine S3: its arguments must be quoted strings"
    end
  end
  local where, err = parse_url(url, dest.root)
  if not where then
    return nil, shown .. ": " .. err
  end
  local key_id, secret, token = args[2], args[3], dest.session_token
  if not key_id then
    key_id, secret, token = credentials(cfg, dest, where)
    if not key_id then
      return nil, shown .. ": " .. secret
    end
  end
  local file = where.prefix:match("[^/]*$")
  local kind = require("chbackup.config").archive_kind(file)
  where.name = dest.shown or shown
  where.engine = "S3"
  where.location = "s3"
  where.url = url:gsub("/+$", "")
  where.path = "s3://" .. where.bucket .. (where.prefix ~= "" and "/" .. where.prefix or "")
  where.archive = kind ~= nil
  where.archive_kind = kind
  where.key_id, where.secret, where.session_token = key_id, secret, token
  return where
end


-- Clients ----------------------------------------------------------------------------

local clients = {}   -- by configuration: one client (and its C profile) each

-- The client of a resolved destination, or nil, err.
local function client(r)
  local id = table.concat({ r.endpoint, r.bucket, r.region or "", r.key_id, r.secret, r.session_token or "",
    tostring(r.path_style), r.storage_class or "" }, "\0")
  local c = clients[id]
  if not c then
    local err
    c, err = core.s3_client({ endpoint = r.endpoint, bucket = r.bucket, region = r.region, key_id = r.key_id,
      secret = r.secret, session_token = r.session_token, path_style = r.path_style,
      storage_class = r.storage_class })
    if not c then
      return nil, err
    end
    clients[id] = c
  end
  return c
end


s3.client = client   -- (policies on S3: chbackup.policy.store)


local function key_of(r, name)
  return r.prefix .. "/" .. name
end


-- Sizes of every object below the prefix, by name in the backup; or nil, err, code.
local function list_sizes(c, r)
  local objects, err, code = c:list(r.prefix .. "/")
  if not objects then
    return nil, err, code
  end
  local sizes, n = {}, #r.prefix + 2
  for _, o in ipairs(objects) do
    sizes[o.key:sub(n)] = o.size
  end
  return sizes
end


-- Why a password is refused on S3 (docs/s3.md, "Passwords"): ClickHouse takes
-- one only for zip archives, which S3 cannot hold; chbackup's encrypted
-- directory format decrypts through local-file pieces only (the C S3 pieces
-- and sinks carry no cipher), and a backup must never be written in clear
-- when a password was asked for.
function no_password(r)
  return "backup " .. r.name .. ": a password (encrypted backup) is not supported on S3: ClickHouse takes a "
    .. "password only for zip archives, which S3 cannot hold (zip requires seeking), and chbackup's encrypted "
    .. "directory format is written to local disks only. Back up to a Disk(...) or File(...) destination with "
    .. "the password, or without one to S3 and encrypt there (the bucket's server-side encryption)"
end


-- Reading ---------------------------------------------------------------------------

local Reader = {}
Reader.__index = Reader
Reader.stored_bytes = dir.stored_bytes


--- Opens the S3 backup at resolved. Returns a reader or nil, err, code.
function s3.open(resolved)
  local c, err, code = client(resolved)
  if not c then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local text
  text, err, code = c:get(key_of(resolved, manifest.FILE))
  if not text then
    if code == "ENOENT" then
      return nil, "backup " .. resolved.name .. " not found: no " .. manifest.FILE .. " at " .. resolved.path
    end
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  local m
  m, err, code = manifest.from_string(text, resolved.path .. "/" .. manifest.FILE)
  if not m then
    return nil, err, code
  end
  local sizes
  sizes, err, code = list_sizes(c, resolved)
  if not sizes then
    return nil, "backup " .. resolved.name .. ": " .. err, code
  end
  if sizes[encryption.FILE] then   -- put there by hand: chbackup never writes it on S3
    return nil, no_password(resolved) .. " (" .. resolved.path .. "/" .. encryption.FILE .. " is there)"
  end
  return setmetatable({ dest = resolved, manifest = m, kind = "s3", client = c, sizes = sizes }, Reader)
end


--- The piece holding the first `length` bytes of the file stored as `name`.
function Reader:piece(name, length)
  return { key_of(self.dest, name), 0, length, s3 = self.client:profile(), from = self, name = name }
end


--- Bytes the object of `name` holds, or nil if there is none.
function Reader:stored_size(name)
  return self.sizes[name]
end


--- The bytes of piece p (one of this reader's). Returns them or nil, err.
function Reader:read_piece(p)
  local bytes, err = self.client:get(p[1], p[2], p[3])
  if not bytes then
    return nil, "cannot read " .. p.name .. " of backup " .. self.dest.name .. ": " .. err
  end
  return bytes
end


--- A file chbackup keeps beside the manifest; nil if there is none.
function Reader:read_extra(name)
  if not self.sizes[name] then
    return nil
  end
  return self.client:get(key_of(self.dest, name))
end


function Reader.close()
end


-- Writing ---------------------------------------------------------------------------

local held = {}   -- path -> true: the `.lock`s this process holds

local function hostname()
  local f = io.open("/proc/sys/kernel/hostname")
  local h = f and f:read("l") or "?"
  if f then
    f:close()
  end
  return h
end


-- Whether a `.lock`'s text was left by a chbackup run of this host that is
-- gone (killed, or stopped with the server unreachable).
local function stale(text, path)
  local _, pid = lock.holder(text)
  if not pid or text:match("\nhost ([^\n]*)") ~= hostname() then
    return false
  end
  if pid == core.getpid() then
    return not held[path]
  end
  return lfs.attributes("/proc/" .. pid) == nil
end


--- Read-only checks before any work. Returns true or nil, err, code.
function s3.check_new(dest)
  if dest.archive then
    return nil, "backup " .. dest.name .. ": zip archives on S3 are not supported (ClickHouse refuses zip on S3: "
      .. "zip requires seeking); use a directory backup or a tar archive (.tar, .tar.zst, ...)"
  end
  local c, err, code = client(dest)
  if not c then
    return nil, err, code
  end
  for _, f in ipairs({ manifest.FILE, s3.LOCK }) do
    local st, herr, hcode = c:head(key_of(dest, f))
    if st and f == manifest.FILE then
      return nil, "backup " .. dest.name .. " already exists"
    elseif st then
      local text = c:get(key_of(dest, f)) or ""
      if not stale(text, dest.path) then
        return nil, "backup " .. dest.name .. " is being written by " .. lock.who(text) .. " (" .. dest.path
          .. "/" .. s3.LOCK .. " exists)"
      end
    elseif hcode ~= "ENOENT" then
      return nil, "backup " .. dest.name .. ": " .. herr, hcode
    end
  end
  return true
end


-- Deletes every object below the prefix but `keep` (a name). Returns true or nil, err, code.
local function delete_all(c, r, keep)
  local sizes, err, code = list_sizes(c, r)
  if not sizes then
    return nil, err, code
  end
  local keys = {}
  for name in pairs(sizes) do
    if name ~= keep then
      keys[#keys + 1] = key_of(r, name)
    end
  end
  table.sort(keys)
  if #keys == 0 then
    return true
  end
  return c:delete_many(keys)
end


local Writer = {}
Writer.__index = Writer


--- Starts writing a backup at dest: `.lock` first. opts: op_id, threads.
-- Returns a writer or nil, err, code.
function s3.begin_write(dest, opts)
  if opts.password then
    return nil, no_password(dest)
  end
  local ok, err, code = s3.check_new(dest)
  if not ok then
    return nil, err, code
  end
  local c = client(dest)
  local lock_key = key_of(dest, s3.LOCK)
  local prev = c:get(lock_key)
  if prev then   -- stale (check_new): a killed run's; take its place
    ok, err, code = delete_all(c, dest, s3.LOCK)
    if not ok then
      return nil, "backup " .. dest.name .. ": cannot remove what a killed BACKUP left: " .. err, code
    end
    c:delete(lock_key)
    lock.log("removed what a killed BACKUP (" .. lock.who(prev) .. ") left in backup " .. dest.name)
  end
  ok, err, code = c:put_if_absent(lock_key, lock.holder_text(opts.op_id) .. "host " .. hostname() .. "\n")
  if not ok then
    if code == "EEXIST" then
      return nil, "backup " .. dest.name .. " is being written by another process (" .. lock_key .. ")", "LOCKED"
    end
    return nil, "backup " .. dest.name .. ": " .. err, code
  end
  held[dest.path] = true
  return setmetatable({ dest = dest, client = c, opts = opts, queued = {} }, Writer)
end


--- Starts rewriting the backup at dest in place (rebase: S3 has no rename).
-- The new files are written below the backup's own prefix while its
-- `.backup` still describes the old contents: a name both hold is the same
-- content (an entry's bytes are its manifest's size and checksum, kept by
-- the rebase), so overwriting it changes no byte a reader of the old
-- `.backup` sees; names only the new one stores are new objects. commit
-- then switches `.backup` (one PUT: the backup is old or new, never
-- neither) and only then deletes what the old one stored and the new one
-- does not. A `.lock` saying `rebasing` keeps BACKUP, delete and other
-- rebases off meanwhile (one left by a killed run of this host is taken
-- over). opts: op_id, threads, password (refused). Returns a writer or
-- nil, err, code.
function s3.begin_rebase(dest, opts)
  if opts.password then
    return nil, no_password(dest)
  end
  local c, err, code = client(dest)
  if not c then
    return nil, err, code
  end
  local lock_key = key_of(dest, s3.LOCK)
  local prev = c:get(lock_key)
  if prev and not stale(prev, dest.path) then
    return nil, "backup " .. dest.name .. " is being written by " .. lock.who(prev) .. " (" .. lock_key
      .. " exists); not rebasing it", "LOCKED"
  elseif prev then
    lock.log("took over " .. lock_key .. " left by a killed run (" .. lock.who(prev) .. ") of backup " .. dest.name)
    c:delete(lock_key)
  end
  local old
  old, err, code = list_sizes(c, dest)
  if not old then
    return nil, "backup " .. dest.name .. ": " .. err, code
  elseif not old[manifest.FILE] then
    return nil, "backup " .. dest.name .. " not found: no " .. manifest.FILE .. " at " .. dest.path
  end
  local ok
  local text = lock.holder_text(opts.op_id) .. "host " .. hostname() .. "\n" .. s3.REBASING
  ok, err, code = c:put_if_absent(lock_key, text)
  if not ok then
    return nil, "backup " .. dest.name .. ": " .. err, code
  end
  held[dest.path] = true
  return setmetatable({ dest = dest, client = c, opts = opts, queued = {}, old = old, written = {} }, Writer)
end


--- Stores `content` as the file `name` of the backup now.
function Writer:put_bytes(name, content)
  if self.written then
    self.written[name] = true
  end
  local dest = self.dest
  local ok, err, code = self.client:put(key_of(dest, name), content)
  return ok or nil, not ok and ("backup " .. dest.name .. ": " .. err) or nil, code
end

Writer.put_extra = Writer.put_bytes


--- Queues the file `name`, read from pieces, for commit (verified while copied).
function Writer:put(name, pieces, size, checksum)
  if self.written then
    self.written[name] = true
  end
  self.queued[#self.queued + 1] = { name, pieces, size, checksum }
  return true
end


--- The piece of a file this backup stores.
function Writer:piece(name, length)
  return { key_of(self.dest, name), 0, length, s3 = self.client:profile(), from = self, name = name }
end


--- Uploads the queued files (the C job), then `.backup`, then removes
-- `.lock`. Returns {files_done=, bytes_done=, manifest_size=} or nil, err,
-- code (the writer is aborted then).
function Writer:commit(m, progress, cancelled)
  local dest = self.dest
  local p, err, code = self:flush(progress, cancelled)
  if not p then
    return nil, err, code
  end
  local ok
  local parts = {}
  manifest.serialize(m, function(text) parts[#parts + 1] = text end)
  local text = table.concat(parts)
  ok, err, code = self.client:put(key_of(dest, manifest.FILE), text)
  if not ok then
    self:abort()
    return nil, "backup " .. dest.name .. " failed: " .. err, code
  end
  if self.old then   -- rebased: the new `.backup` is in place; what only the old one stored goes
    ok, err = self:_delete_old()
    if not ok then
      held[dest.path] = nil   -- left for the next run of this host to take over
      return nil, "backup " .. dest.name .. " is rebased; objects only the old backup used could not be deleted "
        .. "(they take space, nothing reads them): " .. err
    end
  end
  self:_unlock()
  return { files_done = self.files_done, bytes_done = self.bytes_done, manifest_size = #text }
end


--- Uploads the files queued so far (a batch of a big backup; the C job
-- holds only them). Returns true or nil, err, code (aborted then).
function Writer:flush(progress, cancelled)
  local dest, profile = self.dest, self.client:profile()
  local p, err, code = dir.copy_queued(self, { threads = self.opts.threads }, function(job, q)
    job:add(q[2], { s3 = profile, key = key_of(dest, q[1]) }, q[3], q[4])
  end, progress, cancelled)
  if not p then
    return nil, err, code
  end
  return true
end


function Writer:_unlock()
  local ok, err = self.client:delete(key_of(self.dest, s3.LOCK))
  if not ok then
    lock.log("backup " .. self.dest.name .. ": cannot remove its " .. s3.LOCK .. ": " .. err)
  end
  held[self.dest.path] = nil
end


-- After a rebase's switch: deletes the objects the old backup stored and
-- the new one does not. Returns true or nil, err.
function Writer:_delete_old()
  local keys = {}
  for name in pairs(self.old) do
    if not self.written[name] and name ~= manifest.FILE and name ~= s3.LOCK then
      keys[#keys + 1] = key_of(self.dest, name)
    end
  end
  table.sort(keys)
  if #keys == 0 then
    return true
  end
  return self.client:delete_many(keys)
end


--- Deletes what this run wrote, `.lock` last (best effort: what cannot be
-- deleted now, the server gone, the next BACKUP of that name removes). A
-- rebase's writer deletes only the objects the old backup did not have:
-- the backup stays as it was.
function Writer:abort()
  if not held[self.dest.path] then
    return
  end
  if self.old then
    local keys = {}
    for name in pairs(self.written) do
      if not self.old[name] then
        keys[#keys + 1] = key_of(self.dest, name)
      end
    end
    table.sort(keys)
    local ok, err = true, nil
    if #keys > 0 then
      ok, err = self.client:delete_many(keys)
    end
    if not ok then
      lock.log("backup " .. self.dest.name .. ": cannot remove what the failed rebase wrote: " .. tostring(err))
    end
    self:_unlock()
    return
  end
  local ok, err = delete_all(self.client, self.dest, s3.LOCK)
  if ok then
    self:_unlock()
  else
    lock.log("backup " .. self.dest.name .. ": cannot remove what the failed BACKUP wrote (the next BACKUP to "
      .. "it will): " .. err)
    held[self.dest.path] = nil
  end
end


-- Deleting ------------------------------------------------------------------------------

local DELETING = "deleting\n"   -- last line of the `.lock` a deletion holds

-- The `.lock` text of a deletion by this process.
local function deleting_text()
  return lock.holder_text("delete") .. "host " .. hostname() .. "\n" .. DELETING
end


--- Deletes the S3 backup opts.resolved: a `.lock` saying "deleting" first
-- (so a half-deleted backup lists as being deleted, and no BACKUP starts
-- over it), then `.backup` (a half-deleted backup never looks whole), then
-- every other object in DeleteObjects batches of 1000, `.lock` last.
-- opts.finish: a deletion that was started (no `.backup`). Returns true or
-- nil, err.
function s3.remove(_, opts)
  local r = opts.resolved
  local name = opts.name or r.name
  local c, err, code = client(r)
  if not c then
    return nil, err, code
  end
  local lock_key = key_of(r, s3.LOCK)
  local prev = c:get(lock_key)
  local st
  st, err, code = c:head(key_of(r, manifest.FILE))
  if not st and code ~= "ENOENT" then
    return nil, "backup " .. name .. ": " .. err, code
  elseif not st and not (prev and prev:sub(-#DELETING) == DELETING) and not opts.finish then
    return nil, "backup " .. name .. " has no " .. manifest.FILE .. " at " .. r.path .. "; not deleting it"
  end
  if prev and prev:sub(-#DELETING) ~= DELETING and not stale(prev, r.path) then
    return nil, "backup " .. name .. " is being written by " .. lock.who(prev) .. " (" .. lock_key
      .. " exists); not deleting it"
  end
  local ok
  ok, err, code = c:put(lock_key, deleting_text())
  if not ok then
    return nil, "cannot delete backup " .. name .. ": " .. err .. " (nothing was deleted)", code
  end
  if st then
    ok, err = c:delete(key_of(r, manifest.FILE))
    if not ok then
      return nil, "cannot invalidate backup " .. name .. ": " .. err .. " (deleting it again finishes)"
    end
  end
  ok, err = delete_all(c, r, s3.LOCK)
  if ok then
    ok, err = c:delete(lock_key)
  end
  if not ok then
    return nil, err .. " (the backup is invalidated; deleting it again finishes)"
  end
  return true
end


-- Listing -------------------------------------------------------------------------------

--- What the backups below the resolved root (`S3('url')`, dest.root) are:
-- one ListObjectsV2 of the prefix, keys grouped as ClickHouse lays them
-- out: a directory backup by its `.backup` and `.lock` (a prefix with
-- `.backup` is a backup, its files not looked into; a `.lock` without
-- `.backup` is a BACKUP running or killed, or a deletion's), a tar archive
-- (`x.tar`, `x.tar.zst`, ... : config.archive_kind) as one object, its
-- `x.tar.lock` alone an archive being written or killed (an upload never
-- completed: S3 shows no object then). Returns {{rel=, what = "backup" |
-- "incomplete" | "deleting", archive = true for a tar, locked = true for a
-- directory backup with a `.lock` too (a rebase)}}, sorted by rel,
-- or nil, err, code.
function s3.list(root)
  local c, err, code = client(root)
  if not c then
    return nil, err, code
  end
  local prefix = root.prefix ~= "" and root.prefix .. "/" or ""
  local objects
  objects, err, code = c:list(prefix)
  if not objects then
    return nil, root.name .. ": " .. err, code
  end
  local archive_kind = require("chbackup.config").archive_kind
  local seen, rels = {}, {}
  local function note(at, file, archive)
    if not seen[at] then
      seen[at] = { archive = archive }
      rels[#rels + 1] = at
    end
    seen[at][file] = true
  end
  for _, o in ipairs(objects) do
    local rel = o.key:sub(#prefix + 1)
    local at, file = rel:match("^(.-)/?([^/]*)$")
    local locked = rel:match("^(.+)%.lock$")
    if archive_kind(file) == "tar" then
      note(rel, "object", true)
    elseif locked and archive_kind(locked:match("[^/]*$")) == "tar" then
      note(locked, s3.LOCK, true)
    elseif at ~= "" and (file == manifest.FILE or file == s3.LOCK) then
      note(at, file, false)
    end
  end
  table.sort(rels)
  -- a key below a directory backup's prefix is one of its files, whatever its name
  local function inside(rel)
    local at = rel:match("^(.*)/[^/]*$")
    while at do
      if seen[at] and not seen[at].archive then
        return true
      end
      at = at:match("^(.*)/[^/]*$")
    end
    return false
  end
  local out = {}
  for _, rel in ipairs(rels) do
    local s = seen[rel]
    if not inside(rel) then
      local what = "backup"
      if s.archive then
        what = s.object and "backup" or "incomplete"
      elseif not s[manifest.FILE] then
        local text = c:get(prefix .. rel .. "/" .. s3.LOCK) or ""
        what = text:sub(-#DELETING) == DELETING and "deleting" or "incomplete"
      end
      out[#out + 1] = { rel = rel, what = what, archive = s.archive or nil,
        locked = what == "backup" and not s.archive and s[s3.LOCK] or nil,
        problem = s.archive and what == "incomplete" and ("an unfinished tar archive (" .. rel .. s3.LOCK
          .. " without " .. rel:match("[^/]*$") .. ": a BACKUP running or killed)") or nil }
    end
  end
  return out
end


-- For chbackup.store.s3tar (tar archives on S3): the clients and the `.lock` rules.
s3.client, s3.stale, s3.hostname, s3.held = client, stale, hostname, held
-- For chbackup.policy.leftovers: what a killed BACKUP left below a prefix,
-- removed `.lock` last (so a cut-short removal is still found).
s3.delete_all = delete_all


return s3
