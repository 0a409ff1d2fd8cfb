#!/usr/bin/env bash
# Three chorusd replicas behind HAProxy (docker/haproxy/haproxy.cfg), `chorus bench` through
# it, while one replica is SIGTERM-drained and another kill -9'd: with the client's retry on
# UNAVAILABLE / broken connections, no request may fail (issue 16, docs/DEPLOYMENT.md).
#
#   scripts/fleet-test.sh [--build DIR] [--duration S] [--base-port P] [--json OUT] [--no-faults]
# (--no-faults: the same load with every replica up, for the baseline.)
# Needs haproxy (Debian: apt-get install haproxy). Prints the bench summary and PASS/FAIL;
# exits 0 only on PASS. Replica logs and the bench JSON stay in the work folder it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build DURATION=24 BASE=50300 JSON="" FAULTS=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --base-port) BASE="$2"; shift 2 ;;
    --json) JSON="$2"; shift 2 ;;
    --no-faults) FAULTS=0; shift ;;
    *) echo "fleet-test: unknown argument $1" >&2; exit 2 ;;
  esac
done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[[ -x "$HAPROXY" ]] || { echo "fleet-test: haproxy not installed (apt-get install haproxy)"; exit 2; }
CHORUSD="$BUILD/src/chorusd" CHORUS="$BUILD/src/chorus"
[[ -x "$CHORUSD" && -x "$CHORUS" ]] || { echo "fleet-test: build $CHORUSD and $CHORUS first"; exit 2; }

WORK=$(mktemp -d /tmp/chorus-fleet.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2> /dev/null || true; done
  wait 2> /dev/null || true
}
trap cleanup EXIT

export CHORUS_LB_BIND="127.0.0.1:$BASE"
declare -A REPLICA_PID
for i in 1 2 3; do
  grpc_port=$((BASE + i)) http_port=$((BASE + 10 + i))
  export "CHORUS_R$i=127.0.0.1:$grpc_port" "CHORUS_R${i}_HTTP=127.0.0.1:$http_port"
  cat > "$WORK/r$i.pbtxt" <<EOF
model_path: "models/stories260K.gguf"
listen_address: "127.0.0.1:$grpc_port"
http_listen_address: "127.0.0.1:$http_port"
metrics_listen_address: ""
num_threads: 1
drain_timeout_ms: 10000
EOF
  "$CHORUSD" --config "$WORK/r$i.pbtxt" > "$WORK/r$i.log" 2>&1 &
  REPLICA_PID[$i]=$!
  PIDS+=($!)
done
"$HAPROXY" -f docker/haproxy/haproxy.cfg -db > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)

# Every replica healthy through its own port, then through the balancer.
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    "$CHORUS" health --addr "127.0.0.1:$((BASE + i))" > /dev/null 2>&1 && break
    sleep 0.1
  done
done
lb_ok=0
for _ in $(seq 1 100); do
  if "$CHORUS" health --addr "$CHORUS_LB_BIND" > /dev/null 2>&1; then lb_ok=1; break; fi
  sleep 0.1
done
if [[ $lb_ok -ne 1 ]]; then
  echo "fleet-test: FAIL (no healthy replica through HAProxy)"
  cat "$WORK/haproxy.log"
  exit 1
fi
sleep 1.5  # HAProxy's checks (rise 2, every 500 ms) mark all three up

echo "fleet-test: 3 replicas behind HAProxy on $CHORUS_LB_BIND; bench for ${DURATION}s (work folder $WORK)"
"$CHORUS" bench --addr "$CHORUS_LB_BIND" --retries 5 --duration "$DURATION" --requests 10000000 \
  --concurrency 8 --agents 4 --max-tokens 64 --json "$WORK/bench.json" > "$WORK/bench.txt" 2> /dev/null &
BENCH=$!
drain_rc=0
if [[ $FAULTS -eq 1 ]]; then
  sleep $((DURATION / 3))
  echo "fleet-test: t=$((DURATION / 3))s  SIGTERM replica 1 (drain)"
  kill -TERM "${REPLICA_PID[1]}"
  sleep $((DURATION / 3))
  echo "fleet-test: t=$((2 * DURATION / 3))s kill -9 replica 2"
  kill -9 "${REPLICA_PID[2]}"
fi
bench_rc=0
wait "$BENCH" || bench_rc=$?
if [[ $FAULTS -eq 1 ]]; then
  wait "${REPLICA_PID[1]}" || drain_rc=$?
fi
cat "$WORK/bench.txt"
[[ -n "$JSON" ]] && cp "$WORK/bench.json" "$JSON"

failed=$(python3 -c "import json; print(json.load(open('$WORK/bench.json'))['failed'])")
completed=$(python3 -c "import json; print(json.load(open('$WORK/bench.json'))['completed'])")
ok=1
[[ "$failed" == 0 && "$completed" -gt 0 && $bench_rc -eq 0 ]] || ok=0
echo "fleet-test: drained replica exit code $drain_rc (want 0)"
[[ $drain_rc -eq 0 ]] || ok=0
# The survivor served to the end.
"$CHORUS" health --addr "127.0.0.1:$((BASE + 3))" > /dev/null || ok=0
if [[ $ok -eq 1 ]]; then
  echo "fleet-test: PASS ($completed completed, $failed failed$([[ $FAULTS -eq 1 ]] && echo ", one replica drained, one killed"))"
else
  echo "fleet-test: FAIL ($completed completed, $failed failed, bench exit $bench_rc, drain exit $drain_rc)"
  tail -n 20 "$WORK"/r*.log "$WORK/haproxy.log"
  exit 1
fi
