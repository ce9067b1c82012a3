#!/usr/bin/env bash
# Route benchmarks against a release build, all on 127.0.0.1:
#   1. completed events → finished exec steps per second (exec: /bin/true), beside the machine's own
#      spawn rate of /bin/true at the dispatcher's parallelism (8), measured just before and just
#      after in the same run, and the ratio (SPEC §10 asks ≥ 0.70). The events are pre-signed and
#      sent by wrk (each once), so intake takes a fraction of the time and the figure is the
#      dispatcher's, not the sender's;
#   2. a 1 GiB download from a local HTTP server: throughput and how much resident memory it adds.
#
#   Benchmarks/handlers/run.sh PATH_TO_PIPEHOOK [events=2000] [download_mib=1024, 0 to skip]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
EVENTS=${2:-2000}
MIB=${3:-1024}
command -v sqlite3 >/dev/null || apt-get install -y -qq sqlite3 >/dev/null
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
TMP=$(mktemp -d /tmp/pipehook-handlers.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 1 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "not up: $1" >&2; return 1; }
count_succeeded() { sqlite3 "$1" "SELECT count(*) FROM jobs WHERE state='succeeded'" 2>/dev/null || echo 0; }
count_finished() { sqlite3 "$1" "SELECT count(*) FROM jobs WHERE state IN ('succeeded','dead')" 2>/dev/null || echo 0; }

start_pipehook() {  # start_pipehook NAME ROUTES_YAML → sets PID, PORT, DB
  local name=$1 routes=$2
  PORT=$(free_port)
  mkdir -p "$TMP/$name"
  DB="$TMP/$name/pipehook.sqlite"
  cat > "$TMP/$name/pipehook.yaml" <<YAML
listen: "127.0.0.1:$PORT"
data_dir: "$TMP/$name"
store: "sqlite:$DB"
log_level: warning
sources:
  pipevideo:
    secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
$routes
YAML
  "$BIN" serve --config "$TMP/$name/pipehook.yaml" > "$TMP/$name/log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  wait_http "http://127.0.0.1:$PORT/healthz"
}

cc -O2 -o "$TMP/spawn_rate" "$HERE/spawn_rate.c"
spawn_rate() { "$TMP/spawn_rate" "$EVENTS" 8 /bin/true | sed -n 's/.*rate=\([0-9]*\)\/s/\1/p'; }

echo "=== 1. completed events → finished exec steps ($EVENTS events, exec /bin/true)"
start_pipehook exec 'routes:
  - name: run-true
    on: [completed]
    steps:
      - exec: {command: ["/bin/true"], timeout: 30s}'
spawn_before=$(spawn_rate)
python3 "$HERE/../ingest/gen_requests.py" --format pipehook --count "$EVENTS" --out "$TMP/requests.tsv"
count_events() { sqlite3 "$1" "SELECT count(*) FROM events" 2>/dev/null || echo 0; }
start=$(date +%s.%N)
# wrk runs for a duration, not a count: once its pool is spent it only sends GET /healthz, and it is
# stopped when every step has finished.
REPLAY_KEEP_GOING=1 wrk -t2 -c8 -d300s --timeout 5s -s "$HERE/../ingest/pipehook.lua" "http://127.0.0.1:$PORT/webhooks/pipevideo" \
  -- "$TMP/requests.tsv" 2 > "$TMP/wrk.out" 2>&1 &
WRK=$!
PIDS+=("$WRK")
sent=""
while [ "$(count_finished "$DB")" -lt "$EVENTS" ]; do
  [ -z "$sent" ] && [ "$(count_events "$DB")" -ge "$EVENTS" ] && sent=$(date +%s.%N)
  kill -0 "$WRK" 2>/dev/null || { echo "wrk ended early:" >&2; cat "$TMP/wrk.out" >&2; exit 1; }
  sleep 0.05
done
done_at=$(date +%s.%N)
[ -z "$sent" ] && sent=$done_at
kill -INT "$WRK" 2>/dev/null || true; wait "$WRK" 2>/dev/null || true
ok=$(count_succeeded "$DB")
spawn_after=$(spawn_rate)
python3 - "$start" "$sent" "$done_at" "$EVENTS" "$ok" "$spawn_before" "$spawn_after" <<'PY'
import sys
start, sent, done, n, ok, before, after = map(float, sys.argv[1:])
steps = n / (done - start)
spawn = (before + after) / 2
print(f"intake {n/(sent-start):.0f} events/s; {int(ok)}/{int(n)} exec steps succeeded after {done-start:.2f} s "
      f"→ {steps:.0f} finished exec steps/s end to end")
print(f"spawn rate of /bin/true, 8 in parallel: {before:.0f}/s before, {after:.0f}/s after (mean {spawn:.0f}/s)")
print(f"ratio exec steps / spawn rate: {steps/spawn:.2f} (SPEC §10: ≥ 0.70)")
PY
echo "RSS after: $(( $(rss_kib "$PID" VmRSS) / 1024 )) MiB, peak $(( $(rss_kib "$PID" VmHWM) / 1024 )) MiB"
# CPU of the daemon itself (user + system, without its children) per finished step.
python3 - "$PID" "$EVENTS" <<'PY'
import os, sys
fields = open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
print(f"pipehook CPU {cpu:.2f} s in all → {1000 * cpu / float(sys.argv[2]):.2f} ms per step (intake included)")
PY
kill "$PID"; wait "$PID" 2>/dev/null || true
[ "$MIB" -gt 0 ] || exit 0  # download_mib=0: exec steps only

echo "=== 2. download of a ${MIB} MiB file from a local HTTP server"
mkdir -p "$TMP/www"
head -c $((MIB * 1024 * 1024)) /dev/urandom > "$TMP/www/video.mp4"
want=$(sha256sum "$TMP/www/video.mp4" | cut -d' ' -f1)
WWW_PORT=$(free_port)
(cd "$TMP/www" && exec python3 -m http.server "$WWW_PORT" --bind 127.0.0.1 > "$TMP/www.log" 2>&1) &
PIDS+=("$!")
wait_http "http://127.0.0.1:$WWW_PORT/video.mp4" >/dev/null || true
start_pipehook download "routes:
  - name: archive
    on: [completed]
    steps:
      - download: {dir: \"$TMP/videos\", path: \"{generation_id}.{ext}\", max_bytes: 2GiB, allow_http: true, timeout: 30s}"
sleep 0.5
before=$(rss_kib "$PID" VmRSS)
start=$(date +%s.%N)
python3 "$HERE/send_many.py" "http://127.0.0.1:$PORT/webhooks/pipevideo" 1 --threads 1 --output-url "http://127.0.0.1:$WWW_PORT/video.mp4"
while [ "$(count_finished "$DB")" -lt 1 ]; do sleep 0.05; done
done_at=$(date +%s.%N)
peak=$(rss_kib "$PID" VmHWM)
state=$(sqlite3 "$DB" "SELECT state || ' ' || coalesce(artifact_sha256,'') || ' ' || coalesce(artifact_bytes,0) FROM jobs")
python3 - "$start" "$done_at" "$MIB" "$before" "$peak" <<'PY'
import sys
start, done, mib, before, peak = map(float, sys.argv[1:])
print(f"{mib:.0f} MiB in {done-start:.2f} s → {mib/(done-start):.0f} MiB/s; RSS before {before/1024:.1f} MiB, "
      f"peak {peak/1024:.1f} MiB → the download added {(peak-before)/1024:.1f} MiB")
PY
echo "job: $state"
[ "${state#succeeded $want}" != "$state" ] && echo "sha256 matches the served file" || echo "SHA-256 MISMATCH (want $want)"
