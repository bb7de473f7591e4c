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


--- Starts `job`, waits for it, calls progress(p) about every 0.2 s and
-- at the end, and cancels the job once cancelled() says so.
-- Returns true or nil, err, code.
function runner.run(job, progress, cancelled)
  if cancelled and cancelled() then
    job:cancel()
    return job:result()
  end
  local ok, err, code = job:start()
  if not ok then
    return nil, err, code
  end
  if observer then
    observer("start")
  end
  -- Inside a coroutine (an operation driven by Operation:poll) the wait
  -- is short and control goes back to the caller between waits.
  local yieldable = coroutine.isyieldable()
  while job:wait(yieldable and POLL_SECONDS / 4 or POLL_SECONDS) == "running" do
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
    if yieldable then
      coroutine.yield()
    end
  end
  local p = job:progress()
  if progress then
    progress(p)
  end
  if observer then
    observer("end", p)
  end
  return job:result()
end


return runner
