-- wrk script for adnanh/webhook: POST /hooks/pipevideo with the same
-- Pipevideo bodies, signed for its payload-hmac-sha256 trigger rule
-- (X-Signature: sha256=<hex>), each sent at most once.
--   python3 gen_requests.py --format webhook --count N --out REQS
--   wrk -t2 -c32 -d10s --latency -s webhook.lua http://127.0.0.1:PORT/hooks/pipevideo -- REQS 2
-- All logic lives in replay.lua next to this file.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "replay.lua")
