--- Where each file of a new backup gets its bytes: decided once, for every
-- container, before a byte is written.
--
-- plan.backup_files says which files a backup holds; this module says,
-- for each, one of:
--   use_base              the base has a file of this size and checksum;
--   base_size             a file that grew since the base (Log-family
--                         tables append): its first base_size bytes are the
--                         base's file of that name, only the tail is stored;
--   data_file             a copy of a file stored earlier in this backup
--                         (ClickHouse's deduplicate_files), or, with
--                         data_file_name_generator = 'checksum', the
--                         checksum-derived name its bytes are stored under;
--   stored                its bytes are stored here.
-- Checksums a part's checksums.txt does not give are computed first (a
-- hash-only C job on worker threads), so that nothing is copied and then
-- found to be in the base or a duplicate.
-- @module chbackup.file_plan
local core = require("chbackup.core")
local runner = require("chbackup.runner")

local file_plan = {}

-- Files stored first, largest first, so that no big file is left for one
-- thread at the end; smaller ones (most of them, with many small parts)
-- after them in name order, unsorted.
local BIG_FILE = 1024 * 1024


--- The key of a file's content (size and checksum) in a Lua table.
function file_plan.content_key(size, checksum)
  return size .. ":" .. tostring(checksum)
end


--- Hashes what is not known yet: whole files without a checksum, and the
-- prefixes that may match a base file of the same name (base: an opened
-- backup, or nil). A prefix that matches sets e.grown_from to the base's
-- entry. progress(p) (may be nil) sees the hashing job's progress.
-- Returns files hashed, bytes read; or nil, err, code.
function file_plan.hash_unknown(ctx, entries, base, progress)
  local job = core.job({ threads = ctx.threads })
  local asked = {}
  for _, e in ipairs(entries) do
    if e.src and e.size > 0 and not e.checksum then
      -- read exactly `size` bytes (a Log file may hold uncommitted bytes)
      asked[#asked + 1] = { e, "checksum", job:add({ { e.src, 0, e.size } }, nil, e.size) }
      local be = base and base.manifest.by_name[e.name]
      if be and be.size > 0 and be.size < e.size then
        asked[#asked + 1] = { e, "prefix", job:add({ { e.src, 0, be.size } }, nil, be.size), be }
      end
    end
  end
  if #asked == 0 then
    job:close()
    return 0, 0
  end
  local ok, err, code = runner.run(job, progress, ctx.cancelled)
  if not ok then
    job:close()
    return nil, err, code
  end
  local bytes = 0
  for _, a in ipairs(asked) do
    local size, sum = job:entry(a[3])
    bytes = bytes + size
    if a[2] == "checksum" then
      a[1].checksum = sum
    elseif sum == a[4].checksum then
      a[1].grown_from = a[4]
    end
  end
  job:close()
  return #asked, bytes
end


--- The name the bytes of a file of this checksum are stored under: its
-- own name, or with data_file_name_generator = 'checksum' (`layout`, the
-- prefix length), `abc/def…` made of its checksum, as ClickHouse names them.
function file_plan.stored_name(name, checksum, layout)
  if not layout then
    return name
  elseif layout == 0 then
    return checksum
  end
  return checksum:sub(1, layout) .. "/" .. checksum:sub(layout + 1)
end
local stored_name = file_plan.stored_name


--- The state of the decisions of one backup, entries decided batch by
-- batch (file_plan.decide): base (an opened backup or nil), layout (see
-- stored_name); its `index` (core.index) is the new manifest's files, in
-- the order decided, and finds a file stored earlier by content (entries
-- not stored here are added with no_content); `counters` {num_files,
-- total_size, num_entries, uncompressed_size}.
function file_plan.decisions(base, layout)
  return {
    base = base, layout = layout, index = core.index(),
    counters = { num_files = 0, total_size = 0, num_entries = 0, uncompressed_size = 0 },
  }
end


--- Decides a batch of entries (each with a checksum or empty; entries
-- already marked use_base stay so) and adds them to state.index. Returns
-- the entries to store, in the order to store them, each with `stored_as`
-- (its name in the container); or nil, err.
function file_plan.decide(entries, state)
  local base, layout, idx, counters = state.base, state.layout, state.index, state.counters
  local to_store = {}
  for _, e in ipairs(entries) do
    counters.num_files = counters.num_files + 1
    counters.total_size = counters.total_size + e.size
    if e.use_base then   -- luacheck: ignore 542 (decided: a part unchanged since the base)
    elseif e.size == 0 then
      e.checksum = nil   -- ClickHouse stores no bytes (and no checksum) for an empty file
    elseif base and base.by_content(e.size, e.checksum) then
      e.use_base = true
    elseif e.grown_from then
      e.base_size, e.base_checksum = e.grown_from.size, e.grown_from.checksum
      e.stored, e.stored_as = true, e.name
      to_store[#to_store + 1] = e
    else
      local first = idx:find_content(e.size, e.checksum)
      if first then
        local name, _, checksum = idx:fields(first)
        e.data_file = stored_name(name, checksum, layout)
      else
        e.stored, e.stored_as = true, stored_name(e.name, e.checksum, layout)
        e.data_file = layout and e.stored_as or nil
        to_store[#to_store + 1] = e
      end
    end
    if e.stored then
      counters.num_entries = counters.num_entries + 1
      counters.uncompressed_size = counters.uncompressed_size + e.size - (e.base_size or 0)
    end
    local added = idx:add(e.name, e.size, e.checksum, e.use_base, nil, e.base_size, e.base_checksum,
      e.data_file, not (e.stored and not e.base_size))
    if not added then   -- (never: plan.backup_files lists each name once)
      return nil, "file " .. e.name .. " is listed twice"
    end
  end
  local big, small = {}, {}
  for _, e in ipairs(to_store) do
    local list = e.size >= BIG_FILE and big or small
    list[#list + 1] = e
  end
  table.sort(big, function(a, b)
    if a.size ~= b.size then
      return a.size > b.size
    end
    return a.name < b.name
  end)
  return table.move(small, 1, #small, #big + 1, big)
end


--- Hands the decided files to a container writer (chbackup.store):
-- contents given as bytes, the others read from the data path — the tail
-- only of a grown file. Returns true or nil, err, code.
function file_plan.put_all(writer, to_store)
  for _, e in ipairs(to_store) do
    local ok, err, code
    if e.content then
      ok, err, code = writer:put_bytes(e.stored_as, e.content)
    elseif e.base_size then
      ok, err, code = writer:put(e.stored_as, { { e.src, e.base_size, e.size - e.base_size } },
        e.size - e.base_size)
    else
      ok, err, code = writer:put(e.stored_as, { { e.src, 0, e.size } }, e.size, e.checksum)
    end
    if not ok then
      return nil, err, code
    end
  end
  return true
end


return file_plan
