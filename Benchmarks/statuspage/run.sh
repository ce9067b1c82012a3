#!/usr/bin/env bash
# Status page timings on a big store (issue 14: every page ≤ 200 ms with 1,000,000 generations and
# 5,000,000 events). Builds a SQLite store of that size with sqlite3 alone (a recursive CTE, no
# daemon in the loop: minutes, not hours), starts the given pipehook on it, and times every page
# with curl, several times each, after one warm-up request.
#
#   Benchmarks/statuspage/run.sh PATH_TO_PIPEHOOK [generations=1000000] [events_per_generation=5] [runs=5]
#
# Per generation: E events (queued, in_progress ×(E-2), completed; transitions applied/same), one
# delivery per event, one `archive` job (succeeded; every 1,000th dead, every 5,000th pending) with
# one attempt. Every 50th generation failed, every 100th still queued. The store is kept in
# $STORE_DIR (default /tmp/pipehook-statuspage-N) and reused when it already has N generations.
# With PG_URL=postgres://… the same store is built in that (empty or earlier-filled) PostgreSQL
# database with psql and generate_series, and the daemon runs on it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
N=${2:-1000000}
E=${3:-5}
RUNS=${4:-5}
LIMIT_MS=${LIMIT_MS:-200}
command -v sqlite3 >/dev/null || apt-get install -y -qq sqlite3 >/dev/null
DIR=${STORE_DIR:-/tmp/pipehook-statuspage-$N${PG_URL:+-pg}}
DB="$DIR/pipehook.sqlite"
PG_URL=${PG_URL:-}
STORE="sqlite:$DB"
[ -n "$PG_URL" ] && STORE=$PG_URL
# One query's single value, from whichever store this run uses.
q() { if [ -n "$PG_URL" ]; then psql -qAt "$PG_URL" -c "$1" 2>/dev/null; else sqlite3 "$DB" "$1" 2>/dev/null; fi; }
TOKEN=statuspage-benchmark-token-0123456789
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$DIR"
cat > "$DIR/pipehook.yaml" <<YAML
listen: "127.0.0.1:$PORT"
data_dir: "$DIR"
store: "$STORE"
log_level: warning
admin_token: "$TOKEN"
retention: 3650d
sources:
  pipevideo:
    secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
routes:
  - name: archive
    on: [completed]
    steps:
      - download: {dir: "$DIR/videos", path: "{generation_id}.{ext}"}
YAML
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
start() {
  "$BIN" serve --config "$DIR/pipehook.yaml" > "$DIR/log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "pipehook did not start:" >&2; cat "$DIR/log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

have=$(q "SELECT count(*) FROM generations" || echo 0)
if [ -n "$PG_URL" ] && [ "$have" != "$N" ]; then
  start; stop   # the daemon creates the schema (every migration)
  echo "filling the PostgreSQL store: $N generations, $((N * E)) events ..."
  t0=$(date +%s)
  psql -q -v ON_ERROR_STOP=1 "$PG_URL" <<SQL
TRUNCATE deliveries, generations, events, unrecognized, jobs, attempts;
CREATE TEMP TABLE t AS SELECT (extract(epoch from now()) * 1000)::bigint - $N::bigint * 1000 AS base;
INSERT INTO generations (source, generation_id, status, output_url, error_message, created_at, updated_at, last_event_id)
  SELECT 'pipevideo', format('gen_%s', lpad(i::text, 8, '0')),
         CASE WHEN i % 100 = 0 THEN 'queued' WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END,
         CASE WHEN i % 50 = 0 THEN NULL ELSE format('https://cdn.pipevideo.co/v/gen_%s.mp4?sig=abcdef&exp=1', lpad(i::text, 8, '0')) END,
         CASE WHEN i % 100 <> 0 AND i % 50 = 0 THEN 'content policy violation' END,
         t.base + i * 1000, t.base + i * 1000 + ($E - 1) * 3000, format('msg_%s_%s', lpad(i::text, 8, '0'), $E - 1)
  FROM generate_series(0, $N - 1) i, t;
INSERT INTO events (event_id, source, origin, generation_id, status, previous_status, transition, output_url, error_message,
                    received_at, signed_at, raw, event_type)
  SELECT format('msg_%s_%s', lpad(i::text, 8, '0'), j), 'pipevideo', 'webhook', format('gen_%s', lpad(i::text, 8, '0')),
         CASE WHEN j = 0 THEN 'queued' WHEN j = $E - 1 THEN 'completed' ELSE 'in_progress' END,
         CASE WHEN j = 0 THEN NULL WHEN j = 1 THEN 'queued' ELSE 'in_progress' END,
         CASE WHEN j <= 1 OR j = $E - 1 THEN 'applied' ELSE 'same' END,
         CASE WHEN j = $E - 1 THEN format('https://cdn.pipevideo.co/v/gen_%s.mp4?sig=abcdef&exp=1', lpad(i::text, 8, '0')) END, NULL,
         t.base + i * 1000 + j * 3000, (t.base + i * 1000 + j * 3000) / 1000,
         convert_to(format('{"eventType":"video.generation.x","generationId":"gen_%s","status":"s%s","outputUrl":null,"errorMessage":null}', lpad(i::text, 8, '0'), j), 'UTF8'),
         'video.generation.x'
  FROM generate_series(0, $N - 1) i, generate_series(0, $E - 1) j, t ORDER BY i, j;
INSERT INTO deliveries (source, delivery_id, received_at)
  SELECT 'pipevideo', format('msg_%s_%s', lpad(i::text, 8, '0'), j), t.base + i * 1000 + j * 3000
  FROM generate_series(0, $N - 1) i, generate_series(0, $E - 1) j, t;
INSERT INTO jobs (id, source, generation_id, route, event_id, state, next_step, attempts, run_at, created_at, updated_at, last_error, fence)
  SELECT 'job_' || lpad(to_hex(i), 16, '0'), 'pipevideo', format('gen_%s', lpad(i::text, 8, '0')), 'archive',
         format('msg_%s_%s', lpad(i::text, 8, '0'), $E - 1),
         CASE WHEN i % 1000 = 1 THEN 'dead' WHEN i % 5000 = 3 THEN 'pending' ELSE 'succeeded' END,
         CASE WHEN i % 1000 = 1 OR i % 5000 = 3 THEN 0 ELSE 1 END, 1,
         t.base + i * 1000 + $E * 3000, t.base + i * 1000 + $E * 3000, t.base + i * 1000 + $E * 3000 + 2000,
         CASE WHEN i % 1000 = 1 THEN 'HTTP 404 from the CDN' END, 1
  FROM generate_series(0, $N - 1) i, t WHERE i % 50 <> 0;
INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, ended_at, outcome, summary)
  SELECT id, 0, 'download', 1, created_at, updated_at, CASE state WHEN 'dead' THEN 'dead' ELSE 'succeeded' END, 'saved 12 MB'
  FROM jobs ORDER BY created_at;
ANALYZE;
SQL
  echo "filled in $(( $(date +%s) - t0 )) s"
elif [ "$have" != "$N" ]; then
  rm -f "$DB" "$DB-wal" "$DB-shm"
  start; stop   # the daemon creates the schema (every migration)
  echo "filling the store: $N generations, $((N * E)) events ..."
  t0=$(date +%s)
  sqlite3 "$DB" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -400000;
BEGIN;
CREATE TEMP TABLE n(i INTEGER PRIMARY KEY);
WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < $N) INSERT INTO n SELECT i FROM c;
CREATE TEMP TABLE k(j INTEGER PRIMARY KEY);
WITH RECURSIVE c(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM c WHERE j + 1 < $E) INSERT INTO k SELECT j FROM c;
-- Time: one generation per second, ending now; events a few seconds apart.
CREATE TEMP TABLE t(base INTEGER);
INSERT INTO t VALUES (CAST(strftime('%s', 'now') AS INTEGER) * 1000 - $N * 1000);
INSERT INTO generations (source, generation_id, status, output_url, error_message, created_at, updated_at, last_event_id)
  SELECT 'pipevideo', printf('gen_%08d', i),
         CASE WHEN i % 100 = 0 THEN 'queued' WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END,
         CASE WHEN i % 50 = 0 THEN NULL ELSE printf('https://cdn.pipevideo.co/v/gen_%08d.mp4?sig=abcdef&exp=1', i) END,
         CASE WHEN i % 100 <> 0 AND i % 50 = 0 THEN 'content policy violation' END,
         (SELECT base FROM t) + i * 1000, (SELECT base FROM t) + i * 1000 + ($E - 1) * 3000, printf('msg_%08d_%d', i, $E - 1)
  FROM n;
INSERT INTO events (event_id, source, origin, generation_id, status, previous_status, transition, output_url, error_message,
                    received_at, signed_at, raw, event_type)
  SELECT printf('msg_%08d_%d', i, j), 'pipevideo', 'webhook', printf('gen_%08d', i),
         CASE WHEN j = 0 THEN 'queued' WHEN j = $E - 1 THEN 'completed' ELSE 'in_progress' END,
         CASE WHEN j = 0 THEN NULL WHEN j = 1 THEN 'queued' ELSE 'in_progress' END,
         CASE WHEN j <= 1 OR j = $E - 1 THEN 'applied' ELSE 'same' END,
         CASE WHEN j = $E - 1 THEN printf('https://cdn.pipevideo.co/v/gen_%08d.mp4?sig=abcdef&exp=1', i) END, NULL,
         (SELECT base FROM t) + i * 1000 + j * 3000, ((SELECT base FROM t) + i * 1000 + j * 3000) / 1000,
         CAST(printf('{"eventType":"video.generation.x","generationId":"gen_%08d","status":"s%d","outputUrl":null,"errorMessage":null}', i, j) AS BLOB),
         'video.generation.x'
  FROM n, k ORDER BY i, j;
INSERT INTO deliveries (source, delivery_id, received_at)
  SELECT 'pipevideo', printf('msg_%08d_%d', i, j), (SELECT base FROM t) + i * 1000 + j * 3000 FROM n, k;
INSERT INTO jobs (id, source, generation_id, route, event_id, state, next_step, attempts, run_at, created_at, updated_at, last_error, fence)
  SELECT printf('job_%016x', i), 'pipevideo', printf('gen_%08d', i), 'archive', printf('msg_%08d_%d', i, $E - 1),
         CASE WHEN i % 1000 = 1 THEN 'dead' WHEN i % 5000 = 3 THEN 'pending' ELSE 'succeeded' END,
         CASE WHEN i % 1000 = 1 OR i % 5000 = 3 THEN 0 ELSE 1 END, 1,
         (SELECT base FROM t) + i * 1000 + $E * 3000, (SELECT base FROM t) + i * 1000 + $E * 3000,
         (SELECT base FROM t) + i * 1000 + $E * 3000 + 2000,
         CASE WHEN i % 1000 = 1 THEN 'HTTP 404 from the CDN' END, 1
  FROM n WHERE i % 50 <> 0;
INSERT INTO attempts (job_id, step, step_kind, attempt, started_at, ended_at, outcome, summary)
  SELECT id, 0, 'download', 1, created_at, updated_at, CASE state WHEN 'dead' THEN 'dead' ELSE 'succeeded' END, 'saved 12 MB'
  FROM jobs ORDER BY created_at;
COMMIT;
ANALYZE;
SQL
  echo "filled in $(( $(date +%s) - t0 )) s; $(du -h "$DB" | cut -f1)"
fi
echo "store ($([ -n "$PG_URL" ] && echo PostgreSQL || echo SQLite)): $(q "SELECT (SELECT count(*) FROM generations) || ' generations, ' || (SELECT count(*) FROM events) || ' events, ' || (SELECT count(*) FROM jobs) || ' jobs, ' || (SELECT count(*) FROM deliveries) || ' deliveries'")"

start
BASE="http://127.0.0.1:$PORT"
AUTH="Authorization: Bearer $TOKEN"
# The very first page after start (the charts' kept buckets are being read by then, or not yet).
first=$(curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" "$BASE/" | awk '{printf "%.1f", $1 * 1000}')
sleep 2
second=$(curl -s -o /dev/null -w '%{time_total}' -H "$AUTH" "$BASE/" | awk '{printf "%.1f", $1 * 1000}')
echo "GET / right after /healthz answered: $first ms; 2 s later: $second ms"
mid=$((N / 2))
mid_gen=$(printf 'gen_%08d' "$mid")
updated=$(q "SELECT updated_at FROM generations WHERE generation_id = '$mid_gen'")
deep=$(python3 - "$updated" "$mid_gen" <<'PY'
import base64, sys
updated, gen = sys.argv[1], sys.argv[2]
text = f"{updated}:{len(gen.encode())}:{gen}pipevideo".encode()
print(base64.urlsafe_b64encode(text).decode().rstrip("="))
PY
)
next=$(curl -fsS -H "$AUTH" "$BASE/" | sed -n 's/.*id="next-page" href="\/?\([^"]*\)".*/\1/p' | sed 's/&amp;/\&/g')
dead_job=$(q "SELECT id FROM jobs WHERE state = 'dead' ORDER BY created_at DESC LIMIT 1")
pages=(
  "/"
  "/?$next"
  "/?after=$deep"
  "/?status=failed"
  "/?status=queued&after=$deep"
  "/?job_state=dead"
  "/?job_state=pending&route=archive"
  "/?job_state=succeeded&route=archive&after=$deep"
  "/?source=pipevideo&after=$deep"
  "/generation?source=pipevideo&id=$mid_gen"
  "/search?q=$mid_gen"
  "/search?q=msg_$(printf '%08d' "$mid")_2"
  "/search?q=$dead_job"
  "/search?q=nothing-has-this-id"
  "/api/generations?limit=100&after=$deep"
  "/api/generations/$mid_gen"
)
worst=0
printf '%-62s %8s %8s %8s\n' "page" "status" "median" "max"
for page in "${pages[@]}"; do
  curl -s -o /dev/null -H "$AUTH" "$BASE$page"   # warm-up
  times=()
  code=0
  for _ in $(seq 1 "$RUNS"); do
    out=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' -H "$AUTH" "$BASE$page")
    code=${out% *}
    times+=("${out#* }")
  done
  read -r median max < <(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f %.1f\n", a[int((NR+1)/2)]*1000, a[NR]*1000}')
  label=${page:0:62}
  printf '%-62s %8s %6s ms %6s ms\n' "$label" "$code" "$median" "$max"
  worst=$(python3 -c "print(max($worst, $max))")
done
stop
echo "slowest answer: $worst ms (bar: ≤ $LIMIT_MS ms)"
python3 -c "import sys; sys.exit(0 if $worst <= $LIMIT_MS else 1)" || { echo "OVER THE BAR"; exit 1; }
