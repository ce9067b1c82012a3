#!/usr/bin/env bash
# Ingest by store, side by side in one run (SPEC §10): the SQLite store, one instance on
# PostgreSQL, and two instances sharing one PostgreSQL database, each under wrk, with the CPU time
# per delivery of pipehook and of the PostgreSQL server (from /proc).
#
#   Benchmarks/ingest/stores.sh BIN [BASE_BIN]      # BASE_BIN: an older build, measured beside it
#
# Needs a local PostgreSQL (`PG_URL`, default postgres://pipehook:pipehook@127.0.0.1:5432/pipehook_test,
# a role that may create schemas) and wrk, curl, python3, psql. SECS (default 10), CONNS (32),
# ROUNDS (default 1: each configuration this many times, interleaved).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BINS=("$(readlink -f "$1")")
[[ -n "${2:-}" ]] && BINS+=("$(readlink -f "$2")")
SECS=${SECS:-10}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-1}
PG_URL=${PG_URL:-postgres://pipehook:pipehook@127.0.0.1:5432/pipehook_test}
SECRET=$(python3 -c "import sys; sys.path.insert(0, '$HERE'); from gen_requests import PIPEHOOK_SECRET; print(PIPEHOOK_SECRET)")
TMP=$(mktemp -d /tmp/pipehook-stores.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS -o /dev/null --max-time 1 "$1" && return 0; sleep 0.1; done; return 1; }
# CPU seconds (user + system) of the given processes, or of every process of a user.
cpu_of_pids() { python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in sys.argv[1:]:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except OSError: pass
print(total / tick)
PY
}
cpu_of_user() { cpu_of_pids $(pgrep -u "$1" || true); }
psql_admin() { psql "$PG_URL" -q -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

python3 "$HERE/gen_requests.py" --format pipehook --count $((SECS * 40000)) --out "$TMP/requests.tsv"

start() {  # start NAME BIN STORE → prints "PID PORT"
  local name=$1 bin=$2 store=$3 port
  port=$(free_port)
  mkdir -p "$TMP/$name"
  cat >"$TMP/$name/pipehook.yaml" <<EOF
listen: "127.0.0.1:$port"
data_dir: "$TMP/$name"
store: "$store"
log_level: warning
sources:
  pipevideo:
    format: pipevideo
    secrets: ["$SECRET"]
routes: []
EOF
  "$bin" serve --config "$TMP/$name/pipehook.yaml" >"$TMP/$name/log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_http "http://127.0.0.1:$port/healthz" || { echo "$name did not start:" >&2; tail -20 "$TMP/$name/log" >&2; exit 1; }
  echo "$pid $port"
}

# measure LABEL STORE INSTANCES BIN: wrk split over the instances, rates summed.
measure() {
  local label=$1 store=$2 instances=$3 bin=$4 pids=() ports=() i
  for i in $(seq 1 "$instances"); do
    read -r pid port < <(start "$label-$i-$RANDOM" "$bin" "$store")
    pids+=("$pid"); ports+=("$port"); PIDS+=("$pid")
  done
  sleep 1
  local before_ph before_pg
  before_ph=$(cpu_of_pids "${pids[@]}"); before_pg=$(cpu_of_user postgres)
  local outs=() per=$((CONNS / instances)) threads=$((2 / instances))
  [[ $threads -lt 1 ]] && threads=1
  for i in $(seq 0 $((instances - 1))); do
    # Each instance gets its own slice of the request pool, so nothing is a duplicate.
    awk -v n="$instances" -v k="$i" 'NR % n == k' "$TMP/requests.tsv" >"$TMP/slice-$i.tsv"
    wrk -t"$threads" -c"$per" -d"${SECS}s" --timeout 5s -s "$HERE/pipehook.lua" \
      "http://127.0.0.1:${ports[$i]}/webhooks/pipevideo" -- "$TMP/slice-$i.tsv" "$threads" >"$TMP/wrk-$i.out" 2>&1 &
    outs+=("$!")
  done
  wait "${outs[@]}"
  local after_ph after_pg
  after_ph=$(cpu_of_pids "${pids[@]}"); after_pg=$(cpu_of_user postgres)
  local rate=0 non2xx=0
  for i in $(seq 0 $((instances - 1))); do
    rate=$(awk -v r="$rate" '/^Requests\/sec/ { printf "%.0f", r + $2 }' "$TMP/wrk-$i.out")
    non2xx=$((non2xx + $(awk '/Non-2xx/ { print $5 }' "$TMP/wrk-$i.out" | tail -1 | tr -d ' ' || echo 0) + 0)) || true
  done
  python3 - "$label" "$rate" "$SECS" "$before_ph" "$after_ph" "$before_pg" "$after_pg" "$non2xx" <<'PY'
import sys
label, rate, secs, b_ph, a_ph, b_pg, a_pg, bad = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), *map(float, sys.argv[4:8]), sys.argv[8]
n = rate * secs
per = lambda x: f"{1000 * x / n:.3f}" if n else "n/a"
print(f"{label:<34} {rate:>9.0f}/s   pipehook {per(a_ph - b_ph)} ms CPU/delivery   postgres {per(a_pg - b_pg)} ms   non-2xx {bad}")
PY
  for pid in "${pids[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
}

echo "$(nproc) cores; ${SECS}s per run, $CONNS connections in all"
for round in $(seq 1 "$ROUNDS"); do
  for b in "${!BINS[@]}"; do
    bin=${BINS[$b]}
    tag=$([[ $b == 0 ]] && echo new || echo base)
    measure "$tag sqlite" "sqlite:$TMP/$tag-sqlite-$round/pipehook.sqlite" 1 "$bin"
    for instances in 1 2; do
      schema="bench_${tag}_${round}_${instances}_$RANDOM"
      psql_admin "CREATE SCHEMA $schema"
      measure "$tag postgres x$instances" "$PG_URL?search_path=$schema" "$instances" "$bin"
      psql_admin "DROP SCHEMA $schema CASCADE"
    done
  done
done
