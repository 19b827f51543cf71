#!/usr/bin/env bash
# Load test of the decide service (examples/decide_service) with oha, an HTTP load generator
# from crates.io (installed here if missing). Starts everything itself: a redis-server, the
# service (release build), the generator. Prints one line per run (throughput, p50/p99/p99.9
# latency, the service's CPU time per request, errors) and the machine. The CPU time per
# request is the steadier figure on a shared machine: throughput and tails swing with the
# neighbours, the work per request much less. Not part of scripts/test.sh: it takes a few minutes and
# wants a quiet machine with at least 2 cores.
#
#   scripts/loadtest.sh                 # all three scenarios
#   DURATION=60s scripts/loadtest.sh    # longer runs
#
# Scenarios (see BENCHMARKS.md for the budgets and the figures):
#   redis-RATE    POST /v1/decide at a fixed rate (RATES, default 10,000 then 5,000
#                 requests/s; open loop, latency corrected), features fetched from
#                 redis-server (no cache), decision log to Kafka (the in-process mock
#                 cluster). Generator, service and redis-server share the machine's CPUs.
#   memory-pinned POST /v1/decide at saturation, in-memory features, JSON-lines log; the
#                 service pinned to CPU 0 with one worker thread, oha pinned to CPU 1.
#   ofrep-pinned  the same for POST /ofrep/v1/evaluate/flags/{key}.
#   floor         GET /healthz, pinned the same way: what HTTP/1.1 over loopback costs on
#                 this machine before elvon does anything (the ceiling of the two above).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-20s}"
CONNECTIONS="${CONNECTIONS:-8 16 32}"
RATES="${RATES:-10000 5000}"           # open-loop rates of the redis scenario
SCENARIOS="${SCENARIOS:-redis pinned}"   # redis: redis-10k; pinned: floor, memory-pinned, ofrep-pinned
USERS=10000
step() { printf '\n==> %s\n' "$*" >&2; }

command -v oha >/dev/null || { step "installing oha"; cargo install oha --locked --quiet; }
if ! command -v redis-server >/dev/null; then
  step "installing redis-server"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
command -v taskset >/dev/null || { echo "error: taskset (util-linux) is missing" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "error: needs 2 CPUs (service on one, generator on the other)" >&2; exit 1; }

if [ -z "${SERVICE_BIN:-}" ]; then
  step "building the service (release)"
  cargo build --release --quiet --example decide_service --features http,prometheus,redis,kafka
fi
BIN="${SERVICE_BIN:-target/release/examples/decide_service}"   # SERVICE_BIN: measure another build

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Request bodies, one per line, over USERS users (oha picks a line per request).
python3 - "$WORK" "$USERS" <<'PY'
import json, sys
work, users = sys.argv[1], int(sys.argv[2])
with open(f"{work}/decide.lines", "w") as f:
    for i in range(users):
        f.write(json.dumps({"slot": "banner", "user": f"user-{i}"}) + "\n")
with open(f"{work}/ofrep.lines", "w") as f:
    for i in range(users):
        f.write(json.dumps({"context": {"targetingKey": f"user-{i}"}}) + "\n")
PY

# start_service <log> [taskset cpu list|-] [env ...]: starts it, waits until ready; sets ADDR.
start_service() {
  local log="$1" cpus="$2"; shift 2
  local port; port="$(free_port)"
  if [ "$cpus" = "-" ]; then
    env ELVON_LISTEN="127.0.0.1:$port" "$@" "$BIN" >"$log" 2>&1 &
  else
    env ELVON_LISTEN="127.0.0.1:$port" "$@" taskset -c "$cpus" "$BIN" >"$log" 2>&1 &
  fi
  SERVICE=$!; PIDS+=("$SERVICE")
  ADDR="127.0.0.1:$port"
  for _ in $(seq 1 600); do
    if curl -sf "http://$ADDR/readyz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVICE" 2>/dev/null || { cat "$log" >&2; echo "error: the service died" >&2; exit 1; }
    sleep 0.1
  done
  cat "$log" >&2; echo "error: the service did not get ready" >&2; exit 1
}

# CPU time the service has used (user + system, clock ticks, all its threads).
service_cpu() { awk '{print $14 + $15}' "/proc/$SERVICE/stat"; }

stop_service() {
  kill -TERM "$SERVICE"; wait "$SERVICE" || { echo "error: the service exited with $?" >&2; exit 1; }
}

# run <name> <oha cpu|-> <method> <path> <bodies> [oha args]: one oha run, one result line.
run() {
  local name="$1" cpu="$2" method="$3" path="$4" bodies="$5"; shift 5
  local out="$WORK/$name.json"
  local pin=(); [ "$cpu" = "-" ] || pin=(taskset -c "$cpu")
  # A short warm-up (connections, caches), not counted.
  "${pin[@]}" oha --no-tui -z 2s -c 8 -m "$method" -T application/json -Z "$bodies" \
    "http://$ADDR$path" >/dev/null
  local cpu0 cpu1; cpu0="$(service_cpu)"
  "${pin[@]}" oha --no-tui --output-format json -z "$DURATION" -w -m "$method" -T application/json \
    -Z "$bodies" "$@" "http://$ADDR$path" >"$out"
  cpu1="$(service_cpu)"
  python3 - "$name" "$out" "$*" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
name, path, args = sys.argv[1], sys.argv[2], sys.argv[3]
ticks, hz = int(sys.argv[4]), int(sys.argv[5])
r = json.load(open(path))
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
bad = sum(v for k, v in codes.items() if k != "200") + sum(r.get("errorDistribution", {}).values())
ms = lambda v: f"{v * 1000:.3f}"
cpu_us = ticks / hz / max(ok + bad, 1) * 1e6
print(f"{name:14} {args:28} {s['requestsPerSec']:>9.0f} req/s  p50 {ms(p['p50'])} ms  "
      f"p99 {ms(p['p99'])} ms  p99.9 {ms(p['p99.9'])} ms  max {ms(s['slowest'])} ms  "
      f"service CPU {cpu_us:.1f} µs/req  200: {ok}  other: {bad}")
PY
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
echo "oha $(oha --version | awk '{print $2}'), duration $DURATION per run, $USERS users"

if [[ " $SCENARIOS " == *" redis "* ]]; then
step "scenario redis (open loop)"
RPORT="$(free_port)"
redis-server --port "$RPORT" --save '' --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
# The mock cluster's config topic holds the quickstart config.
start_service "$WORK/redis-service.log" - REDIS_URL="redis://127.0.0.1:$RPORT/" \
  KAFKA_BROKERS=mock ELVON_DEMO_USERS="$USERS"
for rate in $RATES; do
  run "redis-$rate" - POST /v1/decide "$WORK/decide.lines" -q "$rate" --latency-correction -c 64
done
curl -s "http://$ADDR/metrics" | grep -E '^elvon_(fallbacks_total|sink_records_total|feature_fetch_seconds_count).* [1-9]' | sed 's/^/  /' || true
stop_service
fi

if [[ " $SCENARIOS " == *" pinned "* ]]; then
step "scenarios floor / memory-pinned / ofrep-pinned"
start_service "$WORK/memory-service.log" 0 ELVON_THREADS=1 ELVON_DECISION_LOG="$WORK/decisions.jsonl"
printf '\n' >"$WORK/empty.lines"
for c in $CONNECTIONS; do
  run floor 1 GET /healthz "$WORK/empty.lines" -c "$c"
done
for c in $CONNECTIONS; do
  run memory-pinned 1 POST /v1/decide "$WORK/decide.lines" -c "$c"
done
for c in $CONNECTIONS; do
  run ofrep-pinned 1 POST /ofrep/v1/evaluate/flags/banner "$WORK/ofrep.lines" -c "$c"
done
curl -s "http://$ADDR/metrics" | grep -E '^elvon_sink_records_total.* [1-9]' | sed 's/^/  /' || true
stop_service
fi
