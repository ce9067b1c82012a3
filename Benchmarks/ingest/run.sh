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
#   WEBHOOK_MODES="sync default"   adnanh/webhook modes measured, in this order: sync answers
#                        after /bin/true exited (include-command-output-in-response); default
#                        answers first and runs it in a goroutine (keeps nothing)
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
WEBHOOK_MODES=${WEBHOOK_MODES:-sync default}
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
cpu_s() {  # cpu_s PID : user + system CPU seconds of the process so far
  [[ -n "${1:-}" && -r /proc/$1/stat ]] || { echo ""; return; }
  python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"
}
cpu_with_children() {  # cpu_with_children PID : its CPU seconds plus its reaped children's
  [[ -n "${1:-}" && -r /proc/$1/stat ]] || { echo ""; return; }
  python3 -c 'import os,sys; f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split(); print(sum(int(x) for x in f[11:15])/os.sysconf("SC_CLK_TCK"))' "$1"
}
per_request_us() {  # per_request_us CPU_BEFORE CPU_AFTER REQUESTS
  awk -v a="${1:-}" -v b="${2:-}" -v n="${3:-}" 'BEGIN { if (a == "" || b == "" || n + 0 == 0) print "n/a"; else printf "%.0f", 1e6 * (b - a) / n }'
}
mib() { [[ -n "${1:-}" ]] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }' || echo "n/a"; }
field() {  # field FILE PREFIX KEY : value of KEY=... on the line starting with PREFIX
  awk -v p="$2" -v k="$3" '$1 == p { for (i = 2; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' "$1" | tail -1
}
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
ms() { [[ -n "${1:-}" ]] && awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }' || echo "n/a"; }
run_wrk() {  # run_wrk NAME URL [REQUEST_FILE] : output in $TMP/NAME.wrk
  local name=$1 url=$2 reqs=${3:-} script=$HERE/replay.lua
  [[ -n "$reqs" ]] && script=$HERE/$([[ $name == webhook* ]] && echo webhook.lua || echo pipehook.lua)
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
log_level: info
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
PH_CPU_BEFORE=$(cpu_s "$PH_PID")
run_wrk ingest "$PH/webhooks/pipevideo" "$TMP/pipehook.tsv"
PH_CPU_AFTER=$(cpu_s "$PH_PID")
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
# run_webhook MODE: verify the hook once (verbose log), then measure it as pipehook was measured;
# results in $TMP/webhook-MODE.{wrk,fixed,cpu,rss}.
run_webhook() {
  local mode=$1 capture=true
  [[ "$mode" == default ]] && capture=false
  echo; echo "=== adnanh/webhook ($(webhook -version), mode $mode)"
  cat >"$TMP/hooks-$mode.json" <<EOF
[
  {
    "id": "pipevideo",
    "execute-command": "/bin/true",
    "http-methods": ["POST"],
    "include-command-output-in-response": $capture,
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
  # 1) Once, with a verbose log: a signed request passes the rule and /bin/true really runs, and
  #    a wrongly signed one is rejected.
  local vport vpid good bad executed finished
  vport=$(free_port)
  webhook -hooks "$TMP/hooks-$mode.json" -ip 127.0.0.1 -port "$vport" -verbose -logfile "$TMP/webhook-verify-$mode.log" \
    >/dev/null 2>&1 &
  vpid=$!; PIDS+=("$vpid")
  wait_http "http://127.0.0.1:$vport/" "$vpid" || { echo "webhook did not start" >&2; cat "$TMP/webhook-verify-$mode.log" >&2; exit 1; }
  gen webhook 1 "$TMP/one.tsv" 2>/dev/null
  IFS=$'\t' read -r BODY CT SIG <"$TMP/one.tsv"
  good=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "$CT" -H "$SIG" --data-binary "$BODY" \
    "http://127.0.0.1:$vport/hooks/pipevideo")
  bad=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 -H "$CT" -H "X-Signature: sha256=00" \
    --data-binary "$BODY" "http://127.0.0.1:$vport/hooks/pipevideo")
  sleep 0.5   # the default mode runs the command after answering
  executed=$(grep -c 'executing /bin/true' "$TMP/webhook-verify-$mode.log" || true)
  finished=$(grep -c 'finished handling pipevideo' "$TMP/webhook-verify-$mode.log" || true)
  stop_pid "$vpid"
  echo "verify: signed request -> HTTP $good, bad signature -> HTTP $bad," \
       "log: 'executing /bin/true' x$executed, 'finished handling pipevideo' x$finished"
  if [[ "$good" != 200 || "$bad" == 200 || "$executed" != 1 || "$finished" != 1 ]]; then
    echo "webhook hook verification FAILED; log:" >&2; cat "$TMP/webhook-verify-$mode.log" >&2; exit 1
  fi

  # 2) The measured instance: same hook, its default logging.
  local wport wh_pid wh before after
  wport=$(free_port)
  webhook -hooks "$TMP/hooks-$mode.json" -ip 127.0.0.1 -port "$wport" >"$TMP/webhook-$mode.log" 2>&1 &
  wh_pid=$!; PIDS+=("$wh_pid")
  wait_http "http://127.0.0.1:$wport/" "$wh_pid" || { echo "webhook did not start" >&2; cat "$TMP/webhook-$mode.log" >&2; exit 1; }
  wh=http://127.0.0.1:$wport
  sleep 1
  echo "idle=$(mem_kb "$wh_pid" VmRSS)" >"$TMP/webhook-$mode.rss"
  gen webhook "$POOL" "$TMP/webhook.tsv"
  # Its CPU includes the /bin/true children it has reaped (all of them in sync mode).
  before=$(cpu_with_children "$wh_pid")
  run_wrk "webhook-$mode" "$wh/hooks/pipevideo" "$TMP/webhook.tsv"
  sleep 0.5
  after=$(cpu_with_children "$wh_pid")
  echo "$before $after" >"$TMP/webhook-$mode.cpu"
  rm -f "$TMP/webhook.tsv"
  echo "load=$(mem_kb "$wh_pid" VmRSS)" >>"$TMP/webhook-$mode.rss"
  echo; echo "=== fixed rate against webhook ($mode): $LAT_RATE req/s for ${LAT_SECONDS}s over $LAT_CONNS connections"
  gen webhook "$LAT_POOL" "$TMP/webhook-lat.tsv"
  python3 "$HERE/fixed_rate.py" --url "$wh/hooks/pipevideo" --requests "$TMP/webhook-lat.tsv" \
    --rate "$LAT_RATE" --seconds "$LAT_SECONDS" --conns "$LAT_CONNS" | tee "$TMP/webhook-$mode.fixed"
  sleep 1
  echo "peak=$(mem_kb "$wh_pid" VmHWM)" >>"$TMP/webhook-$mode.rss"
  stop_pid "$wh_pid"
}
if [[ $HAVE_WEBHOOK == 1 ]]; then
  for mode in $WEBHOOK_MODES; do run_webhook "$mode"; done
fi

# ================================================================ summary
H=$TMP/healthz.wrk I=$TMP/ingest.wrk IF=$TMP/ingest.fixed
r() { field "$1" RESULT "$2"; }
f() { field "$1" FIXED "$2"; }
MODES=()
[[ $HAVE_WEBHOOK == 1 ]] && read -r -a MODES <<<"$WEBHOOK_MODES"
# One column per webhook mode: wcol FUNCTION → FUNCTION MODE for each mode.
wcol() { local m; for m in "${MODES[@]}"; do printf '%18s ' "$("$1" "$m")"; done; }
row() {  # row LABEL HEALTHZ INGEST [WEBHOOK_FUNCTION]
  printf '%-34s %18s %18s ' "$1" "$2" "$3"
  [[ -n "${4:-}" ]] && wcol "$4"
  echo
}
w_rps() { r "$TMP/webhook-$1.wrk" rps; }
w_requests() { r "$TMP/webhook-$1.wrk" requests; }
w_lat() { echo "$(ms "$(r "$TMP/webhook-$1.wrk" p50_us)") / $(ms "$(r "$TMP/webhook-$1.wrk" p99_us)")"; }
w_non2xx() { r "$TMP/webhook-$1.wrk" non2xx; }
w_errors() { r "$TMP/webhook-$1.wrk" socket_errors; }
w_cpu() { local c; read -r -a c <"$TMP/webhook-$1.cpu"; per_request_us "${c[0]:-}" "${c[1]:-}" "$(w_requests "$1")"; }
w_fixed() { echo "$(f "$TMP/webhook-$1.fixed" p50_ms) / $(f "$TMP/webhook-$1.fixed" p99_ms)"; }
w_fixed_c() { echo "$(f "$TMP/webhook-$1.fixed" cp50_ms) / $(f "$TMP/webhook-$1.fixed" cp99_ms)"; }
w_achieved() { f "$TMP/webhook-$1.fixed" achieved_rps; }
w_rss() { mib "$(awk -F= -v k="$2" '$1 == k { print $2 }' "$TMP/webhook-$1.rss")"; }
w_rss_idle() { w_rss "$1" idle; }
w_rss_load() { w_rss "$1" load; }
w_rss_peak() { w_rss "$1" peak; }
echo
echo "==================== summary: ${SECS}s, $CONNS connections, $THREADS wrk threads, same 2-core machine"
printf '%-34s %18s %18s ' "" "pipehook /healthz" "pipehook ingest"
for m in "${MODES[@]}"; do printf '%18s ' "webhook $m"; done
echo
row "wrk req/s" "$(r $H rps)" "$(r $I rps)" w_rps
row "wrk requests" "$(r $H requests)" "$(r $I requests)" w_requests
row "wrk latency p50 / p99 (ms)" "$(ms "$(r $H p50_us)") / $(ms "$(r $H p99_us)")" \
    "$(ms "$(r $I p50_us)") / $(ms "$(r $I p99_us)")" w_lat
row "wrk non-2xx (status>399)" "$(r $H non2xx)" "$(r $I non2xx)" w_non2xx
row "wrk socket errors" "$(r $H socket_errors)" "$(r $I socket_errors)" w_errors
row "CPU per request (µs, /proc)" "-" "$(per_request_us "$PH_CPU_BEFORE" "$PH_CPU_AFTER" "$(r $I requests)")" w_cpu
row "$LAT_RATE/s latency p50 / p99 (ms)" "-" "$(f $IF p50_ms) / $(f $IF p99_ms)" w_fixed
row "$LAT_RATE/s corrected p50 / p99 (ms)" "-" "$(f $IF cp50_ms) / $(f $IF cp99_ms)" w_fixed_c
row "$LAT_RATE/s achieved req/s" "-" "$(f $IF achieved_rps)" w_achieved
row "RSS idle (MiB, VmRSS)" "" "$(mib "$PH_IDLE_RSS")" w_rss_idle
row "RSS after wrk (MiB, VmRSS)" "" "$(mib "$PH_LOAD_RSS")" w_rss_load
row "RSS at end (MiB, VmRSS)" "" "$(mib "$PH_END_RSS")"
row "RSS peak (MiB, VmHWM)" "" "$(mib "$PH_PEAK")" w_rss_peak
echo
echo "ratio pipehook ingest / healthz req/s          : $(ratio "$(r $I rps)" "$(r $H rps)")   (SPEC §10: >= 0.6)"
for m in "${MODES[@]}"; do
  bar=2.5; [[ $m == sync ]] && bar=8
  printf 'ratio pipehook ingest / webhook %-7s req/s : %s   (SPEC §10: >= %s)\n' "$m" "$(ratio "$(r $I rps)" "$(w_rps "$m")")" "$bar"
done
OK_WRK=$(awk -v a="$(r $I requests)" -v b="$(r $I non2xx)" 'BEGIN { print a - b }')
echo "sqlite deliveries rows after wrk ingest: $ROWS_AFTER_WRK (wrk counted $OK_WRK answers <400;" \
     "requests still in flight at wrk's stop may add a few)"
echo "sqlite deliveries rows at the end       : $ROWS_TOTAL (after + $(f $IF ok) fixed-rate 2xx)"
echo "pipehook: log_level info (the default), one line per delivery to a file. webhook sync: each 200"
echo "means /bin/true ran and exited 0; default: answered before running it, keeps nothing."
for x in "$I" "${MODES[@]/#/$TMP/webhook-}"; do
  [[ $x == *.wrk ]] || x=$x.wrk
  [[ -f "$x" && "$(r "$x" exhausted_threads)" =~ ^[1-9] ]] && echo "WARNING: $(basename "$x" .wrk): request pool ran out;" \
    "its req/s is a lower bound. Re-run with a larger POOL_PER_SEC (now $POOL_PER_SEC)."
done
exit 0
