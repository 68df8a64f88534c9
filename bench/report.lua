-- Unique transaction ids per request, and the latency percentiles wrk --latency omits (p99.9).
-- WRK_UNIVERSE names the universe; WRK_PACE_MS, when set, makes each connection wait that
-- long after every answer: C connections then send about C * 1000 / (pace + latency) per s.
local counter = 0
local universe = os.getenv("WRK_UNIVERSE") or "bench"
local pace = tonumber(os.getenv("WRK_PACE_MS") or "")
if pace then
  function delay()
    return pace
  end
end
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid or 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/sales.php?universe=" .. universe .. "&amount=12,50&id=w" .. thread_id .. "-" .. counter)
end

function done(summary, latency, requests)
  io.write(string.format(
    "JSON {\"requests\": %d, \"duration_us\": %d, \"errors\": %d, \"non2xx\": %d, " ..
    "\"p50\": %d, \"p99\": %d, \"p999\": %d, \"mean\": %.1f}\n",
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
