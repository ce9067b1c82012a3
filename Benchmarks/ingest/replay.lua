-- replay.lua: shared wrk logic for pipehook.lua and webhook.lua (also used
-- without a request file for the plain GET /healthz run).
--
-- Usage:  wrk -t T -c C -d D -s pipehook.lua URL -- REQUEST_FILE T
--   REQUEST_FILE  lines written by gen_requests.py: BODY<TAB>Header: v<TAB>...
--   T             the wrk thread count (wrk does not tell init() how many
--                 threads there are, and we need it to slice the file)
-- Without REQUEST_FILE the script sends wrk's static request (GET URL).
--
-- Each thread keeps lines i with (i-1) % T == thread index, pre-formats them
-- in init() (before wrk's clock starts) and sends each one at most once.
-- When its slice is EXHAUSTED the thread stops itself (no wrap-around: a
-- replayed webhook-id would be answered as a cheaper duplicate). The few
-- requests still needed to finish in-flight writes are GET /healthz, and
-- done() reports "exhausted"; the run's req/s is then a lower bound and
-- run.sh flags it (wrk still divides by the full duration).
--
-- done() prints one machine-readable line that run.sh parses:
--   RESULT requests=.. rps=.. p50_us=.. p90_us=.. p99_us=.. max_us=..
--          non2xx=.. socket_errors=.. sent=.. exhausted_threads=..
-- non2xx is wrk's own count of responses with status > 399 (free).
-- Set WRK_STATUS_DETAIL=1 for a per-status-code histogram; this defines a
-- response() callback, which makes wrk parse every response's headers and
-- call Lua, so it costs client CPU and is off by default.

local threads = {}   -- main Lua state: every thread, for done()
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local queue = {}     -- per thread: pre-formatted requests
local next_i = 1
local fallback       -- GET /healthz, only used after exhaustion
sent = 0
exhausted = 0

local function split_tabs(line)
   local fields = {}
   for f in string.gmatch(line, "[^\t]+") do fields[#fields + 1] = f end
   return fields
end

function init(args)
   -- wrk passes its own argv from the URL on: args[0] = URL, then what follows "--"
   local file = args[1]
   if file == nil or file == "" then
      request = nil  -- static request: wrk.method / wrk.path / wrk.headers
      return
   end
   local nthreads = tonumber(args[2] or "1")
   local n = 0
   for line in io.lines(file) do
      if n % nthreads == tid then
         local f = split_tabs(line)
         local headers = {}
         for k = 2, #f do
            local name, value = string.match(f[k], "^([^:]+):%s*(.*)$")
            headers[name] = value
         end
         queue[#queue + 1] = wrk.format("POST", wrk.path, headers, f[1])
      end
      n = n + 1
   end
   fallback = wrk.format("GET", "/healthz")
   -- wrk calls request() once on thread 0 right after init() to check the request parses, and
   -- throws that one away: give it a GET /healthz, or the pool's first line would never be sent.
   if tid == 0 then
      table.insert(queue, 1, fallback)
      sent = -1
   end
end

function request()
   local r = queue[next_i]
   if r == nil then
      if exhausted == 0 then
         exhausted = 1
         -- REPLAY_KEEP_GOING=1: keep sending GET /healthz until wrk is stopped from outside, so
         -- no request of the pool is cut off in flight (the exec benchmark counts every one).
         if os.getenv("REPLAY_KEEP_GOING") ~= "1" then wrk.thread:stop() end
      end
      return fallback
   end
   queue[next_i] = nil  -- used once; let it be collected
   next_i = next_i + 1
   sent = sent + 1
   return r
end

-- With REPLAY_KEEP_GOING=1 the GET /healthz sent after the pool is spent come one per second per
-- connection, so the idle load generator takes no CPU from what is being measured.
if os.getenv("REPLAY_KEEP_GOING") == "1" then
   function delay()
      if queue[next_i] == nil then return 1000 end
      return 0
   end
end

if os.getenv("WRK_STATUS_DETAIL") == "1" then
   statuses = {}
   function response(status, headers, body)
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   local total_sent, total_exhausted = 0, 0
   local codes = {}
   for _, t in ipairs(threads) do
      total_sent = total_sent + (t:get("sent") or 0)
      total_exhausted = total_exhausted + (t:get("exhausted") or 0)
      local s = t:get("statuses")
      if s then
         for code, n in pairs(s) do codes[code] = (codes[code] or 0) + n end
      end
   end
   local detail = {}
   for code, n in pairs(codes) do detail[#detail + 1] = code .. ":" .. n end
   table.sort(detail)
   if #detail > 0 then
      io.write("STATUS ", table.concat(detail, " "), "\n")
   end
   if total_exhausted > 0 then
      io.write(string.format("WARNING: %d thread(s) ran out of pre-generated requests; "
         .. "req/s below is a lower bound, raise POOL_PER_SEC\n", total_exhausted))
   end
   io.write(string.format(
      "RESULT requests=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "non2xx=%d socket_errors=%d sent=%d exhausted_threads=%d\n",
      summary.requests, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout,
      total_sent, total_exhausted))
end
