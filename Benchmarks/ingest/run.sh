#!/usr/bin/env bash
# Ingest load test: pipehook vs adnanh/webhook, all on 127.0.0.1.
#
#   Benchmarks/ingest/run.sh PATH_TO_PIPEHOOK_BINARY [seconds=10] [connections=32]
#
# Environment knobs (all optional):
#   THREADS=2            wrk threads
#   POOL_PER_SEC=40000   pre-generated requests per second of wrk run (each sent once;
#                        the run is flagged if a wrk thread runs out)
#   LAT_RATE=1000 LAT_SECONDS=10 LAT_CONNS=4   fixed-rate latency run (fixed_rate.py)
#   WEBHOOK_MODE=sync    sync: webhook answers after /bin/true exited (include-command-
#                        output-in-response); async: answers first, runs it in a goroutine
#   PIPEHOOK_URL=http://127.0.0.1:PORT   do not start pipehook; target this server
#                        (the binary argument is then ignored, pass "-")
#   PIPEHOOK_PID=PID     with PIPEHOOK_URL: sample this process's RSS
#   PIPEHOOK_DB=FILE     with PIPEHOOK_URL: count rows of this sqlite file
#   SKIP_WEBHOOK=1       only the pipehook part
#   KEEP_TMP=1           keep the temp dir (configs, logs, wrk outputs)
#   WRK_STATUS_DETAIL=1  per-status-code counts from wrk (costs client CPU)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=${1:-}
SECS=${2:-10}
CONNS=${3:-32}
THREADS=${THREADS:-2}
POOL_PER_SEC=${POOL_PER_SEC:-40000}
LAT_RATE=${LAT_RATE:-1000}
LAT_SECONDS=${LAT_SECONDS:-10}
LAT_CONNS=${LAT_CONNS:-4}
WEBHOOK_MODE=${WEBHOOK_MODE:-sync}
PIPEHOOK_URL=${PIPEHOOK_URL:-}
SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WEBHOOK_SECRET="bench-webhook-secret"   # must match gen_requests.py

usage() { sed -n '2,4p' "$0" >&2; exit 2; }
[[ -n "$PIPEHOOK_URL" || -n "$BIN" ]] || usage
[[ "$SECS" =~ ^[0-9]+$ && "$CONNS" =~ ^[0-9]+$ ]] || usage
if [[ -z "$PIPEHOOK_URL" ]]; then
  [[ -x "$BIN" ]] || { echo "not an executable: $BIN" >&2; exit 2; }
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
fi
case "$PIPEHOOK_URL" in ""|http://127.0.0.1:*|http://localhost:*) ;;
  *) echo "PIPEHOOK_URL must be a loopback http URL" >&2; exit 2 ;; esac

# ---------------------------------------------------------------- tools
need() {  # need COMMAND [DEBIAN_PACKAGE]
  command -v "$1" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${2:-$1} ..." >&2
    { apt-get install -y -qq "${2:-$1}" || { apt-get update -qq && apt-get install -y -qq "${2:-$1}"; }; } >/dev/null
  fi
  command -v "$1" >/dev/null 2>&1
}
need wrk || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
need curl || { echo "curl is required" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
HAVE_SQLITE=0; need sqlite3 && HAVE_SQLITE=1
HAVE_WEBHOOK=0; [[ "${SKIP_WEBHOOK:-0}" == 1 ]] || { need webhook && HAVE_WEBHOOK=1; }
python3 "$HERE/gen_requests.py" --selftest

# ---------------------------------------------------------------- cleanup
TMP=$(mktemp -d /tmp/pipehook-bench.XXXXXX)
PIDS=()
stop_pid() {  # stop one process we started: TERM, wait up to 10 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() {  # wait_http URL PID : up to 30 s for a 200, fails if PID dies
  local url=$1 pid=${2:-} i
  for i in $(seq 1 300); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}
mem_kb() {  # mem_kb PID VmRSS|VmHWM
  [[ -n "${1:-}" && -r /proc/$1/status ]] || { echo ""; return; }
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}
mib() { [[ -n "${1:-}" ]] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo "n/a"; }
field() {  # field FILE PREFIX KEY : value of KEY=... on the line starting with PREFIX
  awk -v p="$2" -v k="$3" '$1 == p { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$1" | tail -1
}
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
ms() { [[ -n "${1:-}" ]] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || echo "n/a"; }
run_wrk() {  # run_wrk NAME URL [REQUEST_FILE] : output in $TMP/NAME.wrk
  local name=$1 url=$2 reqs=${3:-} script=$HERE/replay.lua
  [[ -n "$reqs" ]] && script=$HERE/$([[ $name == webhook ]] && echo webhook.lua || echo pipehook.lua)
  echo; echo "=== wrk $name: $url (${SECS}s, $CONNS connections, $THREADS threads)"
  # init() loads the pool before wrk's clock starts; the outer timeout bounds everything.
  timeout $((SECS + 180)) wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --timeout 5s --latency \
    -s "$script" "$url" ${reqs:+-- "$reqs" "$THREADS"} | tee "$TMP/$name.wrk"
}
gen() {  # gen FORMAT COUNT FILE
  python3 "$HERE/gen_requests.py" --format "$1" --count "$2" --out "$3"
}
count_rows() {
  [[ $HAVE_SQLITE == 1 && -n "${DB:-}" && -f "$DB" ]] || { echo "n/a"; return; }
  sqlite3 -cmd '.timeout 5000' "$DB" 'SELECT count(*) FROM deliveries;' 2>&1 | tail -1
}

POOL=$((SECS * POOL_PER_SEC))
LAT_POOL=$(awk -v r="$LAT_RATE" -v s="$LAT_SECONDS" 'BEGIN { printf "%d", r * s + 100 }')

# ================================================================ pipehook
echo "=== pipehook"
DB=""
if [[ -n "$PIPEHOOK_URL" ]]; then
  PH=${PIPEHOOK_URL%/}
  PH_PID=${PIPEHOOK_PID:-}
  DB=${PIPEHOOK_DB:-}
  echo "using running server $PH (pid ${PH_PID:-unknown})"
  wait_http "$PH/healthz" || { echo "$PH/healthz does not answer 200" >&2; exit 1; }
else
  PORT=$(free_port)
  mkdir -p "$TMP/data"
  DB=$TMP/data/pipehook.sqlite
  cat >"$TMP/pipehook.yaml" <<EOF
listen: "127.0.0.1:$PORT"
data_dir: "$TMP/data"
store: "sqlite:$DB"
log_level: warning
sources:
  pipevideo:
    format: pipevideo
    secrets: ["$SECRET"]
routes: []
EOF
  "$BIN" serve --config "$TMP/pipehook.yaml" >"$TMP/pipehook.log" 2>&1 &
  PH_PID=$!
  PIDS+=("$PH_PID")
  PH=http://127.0.0.1:$PORT
  if ! wait_http "$PH/healthz" "$PH_PID"; then
    echo "pipehook did not become healthy; its log:" >&2; tail -50 "$TMP/pipehook.log" >&2; exit 1
  fi
  echo "pipehook pid $PH_PID on $PH"
fi
sleep 1
PH_IDLE_RSS=$(mem_kb "$PH_PID" VmRSS)

run_wrk healthz "$PH/healthz"

gen pipehook "$POOL" "$TMP/pipehook.tsv"
run_wrk ingest "$PH/webhooks/pipevideo" "$TMP/pipehook.tsv"
rm -f "$TMP/pipehook.tsv"
sleep 1   # let group commit flush
ROWS_AFTER_WRK=$(count_rows)
PH_LOAD_RSS=$(mem_kb "$PH_PID" VmRSS)

echo; echo "=== fixed rate against pipehook: $LAT_RATE req/s for ${LAT_SECONDS}s over $LAT_CONNS connections"
gen pipehook "$LAT_POOL" "$TMP/pipehook-lat.tsv"
python3 "$HERE/fixed_rate.py" --url "$PH/webhooks/pipevideo" --requests "$TMP/pipehook-lat.tsv" \
  --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --conns "$LAT_CONNS" | tee "$TMP/ingest.fixed"
sleep 1
ROWS_TOTAL=$(count_rows)
PH_PEAK=$(mem_kb "$PH_PID" VmHWM)
PH_END_RSS=$(mem_kb "$PH_PID" VmRSS)
[[ -z "$PIPEHOOK_URL" ]] && stop_pid "$PH_PID"   # the webhook run gets the machine to itself

# ================================================================ adnanh/webhook
if [[ $HAVE_WEBHOOK == 1 ]]; then
  echo; echo "=== adnanh/webhook ($(webhook -version), mode $WEBHOOK_MODE)"
  CAPTURE=true; [[ "$WEBHOOK_MODE" == async ]] && CAPTURE=false
  cat >"$TMP/hooks.json" <<EOF
[
  {
    "id": "pipevideo",
    "execute-command": "/bin/true",
    "http-methods": ["POST"],
    "include-command-output-in-response": $CAPTURE,
    "response-message": "accepted",
    "trigger-rule-mismatch-http-response-code": 401,
    "trigger-rule": {
      "match": {
        "type": "payload-hmac-sha256",
        "secret": "$WEBHOOK_SECRET",
        "parameter": { "source": "header", "name": "X-Signature" }
      }
    }
  }
]
EOF
  # 1) Verify once, with a verbose log, that a signed request passes the rule and
  #    /bin/true really runs, and that a wrongly signed one is rejected.
  VPORT=$(free_port)
  webhook -hooks "$TMP/hooks.json" -ip 127.0.0.1 -port "$VPORT" -verbose -logfile "$TMP/webhook-verify.log" \
    >/dev/null 2>&1 &
  VPID=$!; PIDS+=("$VPID")
  wait_http "http://127.0.0.1:$VPORT/" "$VPID" || { echo "webhook did not start" >&2; cat "$TMP/webhook-verify.log" >&2; exit 1; }
  gen webhook 1 "$TMP/one.tsv" 2>/dev/null
  IFS=$'\t' read -r BODY CT SIG <"$TMP/one.tsv"
  GOOD=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "$CT" -H "$SIG" --data-binary "$BODY" \
    "http://127.0.0.1:$VPORT/hooks/pipevideo")
  BAD=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "$CT" -H "X-Signature: sha256=00" \
    --data-binary "$BODY" "http://127.0.0.1:$VPORT/hooks/pipevideo")
  sleep 0.5   # async mode runs the command after answering
  EXECUTED=$(grep -c 'executing /bin/true' "$TMP/webhook-verify.log" || true)
  FINISHED=$(grep -c 'finished handling pipevideo' "$TMP/webhook-verify.log" || true)
  stop_pid "$VPID"
  echo "verify: signed request -> HTTP $GOOD, bad signature -> HTTP $BAD," \
       "log: 'executing /bin/true' x$EXECUTED, 'finished handling pipevideo' x$FINISHED"
  if [[ "$GOOD" != 200 || "$BAD" == 200 || "$EXECUTED" != 1 || "$FINISHED" != 1 ]]; then
    echo "webhook hook verification FAILED; log:" >&2; cat "$TMP/webhook-verify.log" >&2; exit 1
  fi

  # 2) The measured instance: same hooks, no verbose logging (pipehook runs at log_level warning).
  WPORT=$(free_port)
  webhook -hooks "$TMP/hooks.json" -ip 127.0.0.1 -port "$WPORT" >"$TMP/webhook.log" 2>&1 &
  WH_PID=$!; PIDS+=("$WH_PID")
  wait_http "http://127.0.0.1:$WPORT/" "$WH_PID" || { echo "webhook did not start" >&2; cat "$TMP/webhook.log" >&2; exit 1; }
  WH=http://127.0.0.1:$WPORT
  sleep 1
  WH_IDLE_RSS=$(mem_kb "$WH_PID" VmRSS)
  gen webhook "$POOL" "$TMP/webhook.tsv"
  run_wrk webhook "$WH/hooks/pipevideo" "$TMP/webhook.tsv"
  rm -f "$TMP/webhook.tsv"
  WH_LOAD_RSS=$(mem_kb "$WH_PID" VmRSS)
  echo; echo "=== fixed rate against webhook: $LAT_RATE req/s for ${LAT_SECONDS}s over $LAT_CONNS connections"
  gen webhook "$LAT_POOL" "$TMP/webhook-lat.tsv"
  python3 "$HERE/fixed_rate.py" --url "$WH/hooks/pipevideo" --requests "$TMP/webhook-lat.tsv" \
    --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --conns "$LAT_CONNS" | tee "$TMP/webhook.fixed"
  sleep 1
  WH_PEAK=$(mem_kb "$WH_PID" VmHWM)
  WH_END_RSS=$(mem_kb "$WH_PID" VmRSS)
  stop_pid "$WH_PID"
fi

# ================================================================ summary
H=$TMP/healthz.wrk I=$TMP/ingest.wrk W=$TMP/webhook.wrk IF=$TMP/ingest.fixed WF=$TMP/webhook.fixed
[[ -f $W ]] || W=/dev/null WF=/dev/null
r() { field "$1" RESULT "$2"; }
f() { field "$1" FIXED "$2"; }
row() { printf '%-34s %18s %18s %18s\n' "$@"; }
echo
echo "==================== summary: ${SECS}s, $CONNS connections, $THREADS wrk threads, same 2-core machine"
row "" "pipehook /healthz" "pipehook ingest" "adnanh/webhook"
row "wrk req/s" "$(r $H rps)" "$(r $I rps)" "$(r $W rps)"
row "wrk requests" "$(r $H requests)" "$(r $I requests)" "$(r $W requests)"
row "wrk latency p50 / p99 (ms)" "$(ms "$(r $H p50_us)") / $(ms "$(r $H p99_us)")" \
    "$(ms "$(r $I p50_us)") / $(ms "$(r $I p99_us)")" "$(ms "$(r $W p50_us)") / $(ms "$(r $W p99_us)")"
row "wrk non-2xx (status>399)" "$(r $H non2xx)" "$(r $I non2xx)" "$(r $W non2xx)"
row "wrk socket errors" "$(r $H socket_errors)" "$(r $I socket_errors)" "$(r $W socket_errors)"
row "$LAT_RATE/s latency p50 / p99 (ms)" "-" "$(f $IF p50_ms) / $(f $IF p99_ms)" "$(f $WF p50_ms) / $(f $WF p99_ms)"
row "$LAT_RATE/s corrected p50 / p99 (ms)" "-" "$(f $IF cp50_ms) / $(f $IF cp99_ms)" "$(f $WF cp50_ms) / $(f $WF cp99_ms)"
row "$LAT_RATE/s achieved req/s" "-" "$(f $IF achieved_rps)" "$(f $WF achieved_rps)"
row "$LAT_RATE/s non-2xx / errors" "-" "$(f $IF non2xx) / $(f $IF errors)" "$(f $WF non2xx) / $(f $WF errors)"
row "RSS idle (MiB, VmRSS)" "" "$(mib "$PH_IDLE_RSS")" "$(mib "${WH_IDLE_RSS:-}")"
row "RSS after wrk (MiB, VmRSS)" "" "$(mib "$PH_LOAD_RSS")" "$(mib "${WH_LOAD_RSS:-}")"
row "RSS at end (MiB, VmRSS)" "" "$(mib "$PH_END_RSS")" "$(mib "${WH_END_RSS:-}")"
row "RSS peak (MiB, VmHWM)" "" "$(mib "$PH_PEAK")" "$(mib "${WH_PEAK:-}")"
echo
echo "ratio pipehook ingest / webhook req/s : $(ratio "$(r $I rps)" "$(r $W rps)")"
echo "ratio pipehook ingest / healthz req/s : $(ratio "$(r $I rps)" "$(r $H rps)")"
OK_WRK=$(awk -v a="$(r $I requests)" -v b="$(r $I non2xx)" 'BEGIN { print a - b }')
echo "sqlite deliveries rows after wrk ingest: $ROWS_AFTER_WRK (wrk counted $OK_WRK answers <400;" \
     "requests still in flight at wrk's stop may add a few)"
echo "sqlite deliveries rows at the end       : $ROWS_TOTAL (after + $(f $IF ok) fixed-rate 2xx)"
[[ $HAVE_WEBHOOK == 1 ]] && echo "webhook mode: $WEBHOOK_MODE (sync: each 200 means /bin/true ran and exited 0)"
for x in $I $W; do
  [[ "$(r "$x" exhausted_threads)" =~ ^[1-9] ]] && echo "WARNING: $(basename "$x" .wrk): request pool ran out;" \
    "its req/s is a lower bound. Re-run with a larger POOL_PER_SEC (now $POOL_PER_SEC)."
done
exit 0
