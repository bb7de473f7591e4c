--- The progress line of the CLI: files and bytes done of total, rate and
-- ETA of the running job, redrawn in place (carriage return) on a terminal
-- at most a few times a second. chbackup.runner reports each job's progress
-- to the meter set with runner.observe.
-- @module chbackup.progress
local core = require("chbackup.core")

local progress = {}

progress.INTERVAL = 0.3 -- seconds between two redraws at most
local WIDTH = 79

local UNITS = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" }

--- "1.5 GiB": bytes n in binary units.
function progress.bytes(n)
  local i = 1
  while n >= 1024 and i < #UNITS do
    n, i = n / 1024, i + 1
  end
  return i == 1 and string.format("%.0f B", n) or string.format("%.1f %s", n, UNITS[i])
end


local function duration(s)
  s = math.floor(s + 0.5)
  if s >= 3600 then
    return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60)
  end
  return string.format("%d:%02d", s // 60, s % 60)
end


--- The line for job progress p ({files_done=, files_total=, bytes_done=,
-- bytes_total=}) after `elapsed` seconds of work; what names the operation.
function progress.line(what, p, elapsed)
  local parts = { what, string.format("%d/%d files", p.files_done, p.files_total),
    string.format("%s/%s", progress.bytes(p.bytes_done), progress.bytes(p.bytes_total)) }
  if p.bytes_total > 0 then
    parts[#parts + 1] = string.format("%d%%", math.floor(100 * p.bytes_done / p.bytes_total))
  end
  if elapsed > 0 and p.bytes_done > 0 then
    local rate = p.bytes_done / elapsed
    parts[#parts + 1] = progress.bytes(rate) .. "/s"
    if p.bytes_done < p.bytes_total then
      parts[#parts + 1] = "ETA " .. duration((p.bytes_total - p.bytes_done) / rate)
    end
  end
  return table.concat(parts, "  "):sub(1, WIDTH)
end


local Meter = {}
Meter.__index = Meter

--- A meter drawing on stream (a terminal). now() gives seconds (tests).
function progress.meter(stream, what, now)
  return setmetatable({ stream = stream, what = what, drawn = false, last = -math.huge,
    now = now or function() return core.now_us() / 1e6 end }, Meter)
end


--- The observer for runner.observe: event is "start", "poll" or "end".
function Meter:observe(event, p)
  local t = self.now()
  if event == "start" then
    self.t0 = t
    return
  end
  if event == "end" or t - self.last >= progress.INTERVAL then
    self.last = t
    self.stream:write("\r\27[K" .. progress.line(self.what, p, t - (self.t0 or t)))
    self.stream:flush()
    self.drawn = true
  end
end


--- Erases the line (before other output, and at the end).
function Meter:clear()
  if self.drawn then
    self.stream:write("\r\27[K")
    self.stream:flush()
    self.drawn = false
  end
end


return progress
