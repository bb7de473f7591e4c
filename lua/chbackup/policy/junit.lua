--- JUnit XML for a verification report, the format CI systems (GitLab,
-- Jenkins, GitHub test reporters) read: one <testsuite> for the policy's
-- own checks, one per verified backup, one <testcase> per check, with
-- <failure> or <skipped>.
-- @module chbackup.policy.junit
local junit = {}

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&apos;" }


local function esc(s)
  -- XML 1.0 cannot carry most control characters: drop them.
  s = tostring(s or ""):gsub("[%z\1-\8\11\12\14-\31]", "")
  return (s:gsub("[&<>\"']", ESC))
end


local function testcase(out, classname, c)
  out[#out + 1] = string.format('    <testcase classname="%s" name="%s" time="%.3f"', esc(classname), esc(c.name),
    c.seconds or 0)
  if c.ok == true then
    out[#out + 1] = "/>\n"
  elseif c.ok == false then
    out[#out + 1] = string.format('>\n      <failure message="%s" type="%s">%s</failure>\n    </testcase>\n',
      esc(c.message), esc(c.name), esc(c.message))
  else
    out[#out + 1] = string.format('>\n      <skipped message="%s"/>\n    </testcase>\n', esc(c.message))
  end
end


local function counts(checks)
  local failures, skipped, time = 0, 0, 0
  for _, c in ipairs(checks) do
    if c.ok == false then
      failures = failures + 1
    elseif c.ok == nil then
      skipped = skipped + 1
    end
    time = time + (c.seconds or 0)
  end
  return failures, skipped, time
end


--- The XML text for a report from chbackup.policy.runner.verify.
-- timestamp: epoch seconds of the run (ISO 8601 in UTC in the output).
function junit.render(report, timestamp)
  local ts = os.date("!%Y-%m-%dT%H:%M:%S", math.floor(timestamp or report.now or 0))
  local suites = { { name = "policy " .. report.policy, classname = "chbackup.policy." .. report.policy,
    checks = report.suite } }
  for _, r in ipairs(report.results) do
    suites[#suites + 1] = { name = r.backup, classname = "chbackup.policy." .. report.policy .. "." .. r.backup,
      checks = r.checks }
  end
  local body, total, total_failures, total_skipped, total_time = {}, 0, 0, 0, 0
  for _, s in ipairs(suites) do
    local failures, skipped, time = counts(s.checks)
    total, total_failures, total_skipped = total + #s.checks, total_failures + failures, total_skipped + skipped
    total_time = total_time + time
    body[#body + 1] = string.format(
      '  <testsuite name="%s" tests="%d" failures="%d" errors="0" skipped="%d" time="%.3f" timestamp="%s">\n',
      esc(s.name), #s.checks, failures, skipped, time, ts)
    for _, c in ipairs(s.checks) do
      testcase(body, s.classname, c)
    end
    body[#body + 1] = "  </testsuite>\n"
  end
  return string.format('<?xml version="1.0" encoding="UTF-8"?>\n'
    .. '<testsuites name="%s" tests="%d" failures="%d" errors="0" skipped="%d" time="%.3f">\n',
    esc("chbackup policy " .. report.policy), total, total_failures, total_skipped, total_time)
    .. table.concat(body) .. "</testsuites>\n"
end


return junit
