-- wrk script for pipehook: POST /webhooks/pipevideo with pre-signed
-- Standard Webhooks requests (webhook-id / webhook-timestamp /
-- webhook-signature), each sent at most once; stops when the pool runs out.
--   python3 gen_requests.py --format pipehook --count N --out REQS
--   wrk -t2 -c32 -d10s --latency -s pipehook.lua http://127.0.0.1:PORT/webhooks/pipevideo -- REQS 2
-- All logic lives in replay.lua next to this file.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "replay.lua")
