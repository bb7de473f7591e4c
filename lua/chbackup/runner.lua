--- Runs a C job to its end while reporting progress into the status row.
-- @module chbackup.runner
local runner = {}

local POLL_SECONDS = 0.2

-- observer(event, p) sees every job's progress ("start", "poll", "end"):
-- the CLI's progress line (chbackup.progress); nil: none.
local observer

--- Sets the observer of every job's progress; returns the previous one.
function runner.observe(fn)
  local previous = observer
  observer = fn
  return previous
end

-- Inside a coroutine (an operation driven by Operation:poll) the wait is
-- short and control goes back to the caller between waits.
local function poll_seconds()
  return coroutine.isyieldable() and POLL_SECONDS / 4 or POLL_SECONDS
end


-- One poll of a job still running: progress, a cancel, a yield.
local function poll(job, progress, cancelled)
  if progress or observer then
    local p = job:progress()
    if progress then
      progress(p)
    end
    if observer then
      observer("poll", p)
    end
  end
  if cancelled and cancelled() then
    job:cancel()
  end
  if coroutine.isyieldable() then
    coroutine.yield()
  end
end


local function report_end(job, progress)
  local p = job:progress()
  if progress then
    progress(p)
  end
  if observer then
    observer("end", p)
  end
end


--- Starts `job`, waits for it, calls progress(p) about every 0.2 s and
-- at the end, and cancels the job once cancelled() says so. A job already
-- running (a streaming archive writer: start ends its input) is waited
-- for the same way. Returns true or nil, err, code.
function runner.run(job, progress, cancelled)
  if cancelled and cancelled() then
    job:cancel()
    while job:wait(poll_seconds()) == "running" do   -- (a writer that had begun: its thread ends)
      if coroutine.isyieldable() then
        coroutine.yield()
      end
    end
    return job:result()
  end
  local ok, err, code = job:start()
  if not ok then
    return nil, err, code
  end
  if observer then
    observer("start")
  end
  while job:wait(poll_seconds()) == "running" do
    poll(job, progress, cancelled)
  end
  report_end(job, progress)
  return job:result()
end


--- Waits until `writer`, an archive writer that has begun (w:begin), has
-- written every entry added so far, reporting progress and cancelling as
-- run does; the writer runs on. Returns true, or nil, err, code once the
-- writer failed or was cancelled.
function runner.drain(writer, progress, cancelled)
  if observer then
    observer("start")
  end
  local state = writer:wait_drained(0)
  while state == "running" do
    poll(writer, progress, cancelled)
    state = writer:wait_drained(poll_seconds())
  end
  report_end(writer, progress)
  if state == "drained" or state == "new" then
    return true
  end
  return writer:result()
end


return runner
