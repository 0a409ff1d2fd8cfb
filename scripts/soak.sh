#!/usr/bin/env bash
# Soak (issue 11; ../shared/RELIABILITY.md R9): mixed traffic against one chorusd for a given
# time, in rounds; after each round the traffic stops, the server goes idle, and a checkpoint
# records its RSS, open fds, threads and KV blocks in use.
#
# Traffic per round, all at once:
#   - `chorus bench` streams, 12 clients, 4 agents, 22% cancelled by the client mid-stream;
#   - `chorus bench` streams, 2 clients, deadlines of 150 ms (most end DEADLINE_EXCEEDED or
#     budget-cut);
#   - a loop of unary calls: good ones (VOTE, CONFIDENCE, SYNTHESIZE) and bad ones (too many
#     agents, tiny temperature, max_tokens over the limit) that must get INVALID_ARGUMENT.
#
#   scripts/soak.sh [--build DIR] [--duration S] [--round S] [--port P] [--csv OUT]
#
# PASS when: KV blocks in use are 0 at every checkpoint; fds do not grow after the first
# round; every bench call ended within its deadline + 2 s (no call without progress); the bad
# calls all got INVALID_ARGUMENT; the daemon is alive. The RSS slope (least squares over the
# checkpoints after the first quarter) is reported, and enforced (< 1 MB/h) only for runs of
# 20 minutes or more, where it means something.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build DURATION=60 ROUND=15 PORT=50495 CSV=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --round) ROUND="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --csv) CSV="$2"; shift 2 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
done
. scripts/lib/fault-common.sh
fault_setup soak
DAEMON=""
cleanup() {
  [[ -n "$DAEMON" ]] && kill -9 "$DAEMON" 2> /dev/null || true
  jobs -p | xargs -r kill 2> /dev/null || true
  wait 2> /dev/null || true
}
trap cleanup EXIT
cat >> "$WORK/chorusd.pbtxt" <<EOF
kv_num_blocks: 512
EOF
"$CHORUSD" --config "$WORK/chorusd.pbtxt" > "$WORK/chorusd.log" 2>&1 &
DAEMON=$!
wait_serving > /dev/null || { echo "$(basename "$0" .sh): FAIL (chorusd never SERVING)"; cat "$WORK/chorusd.log"; exit 1; }

stat_field() {  # -1 when the server does not answer three times (the checkpoint then fails)
  local v
  for _ in 1 2 3; do
    v=$("$CHORUS" stats --addr "$ADDR" 2> /dev/null | python3 -c "import json,sys; print(int(json.load(sys.stdin)['$1']))" 2> /dev/null) && { echo "$v"; return; }
    sleep 0.5
  done
  echo -1
}
settled_fds() {  # the least over 2 s: sockets of clients that just exited close asynchronously
  local least=1000000 n
  for _ in $(seq 1 10); do
    n=$(ls "/proc/$DAEMON/fd" | wc -l)
    [[ $n -lt $least ]] && least=$n
    sleep 0.2
  done
  echo "$least"
}
wait_idle() {
  for _ in $(seq 1 300); do
    local s
    s=$("$CHORUS" stats --addr "$ADDR" 2> /dev/null) || { sleep 0.1; continue; }
    if python3 -c "import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if int(s['running_requests'])+int(s['waiting_requests'])==0 else 1)" "$s"; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}
bad_call() {  # a call that must be refused INVALID_ARGUMENT
  if "$CHORUS" generate "$@" > /dev/null 2> "$WORK/bad.err"; then
    echo "bad-accepted"
  elif grep -q INVALID_ARGUMENT "$WORK/bad.err"; then
    echo "bad-refused"
  else
    echo "bad-other"
    cp "$WORK/bad.err" "$WORK/bad-$(date +%s%N).err"
  fi
}
good_call() {  # a call that must succeed; its stderr is kept when it does not
  local err="$WORK/good-$(date +%s%N).err"
  if "$CHORUS" generate "$@" --addr "$ADDR" > /dev/null 2> "$err"; then
    rm -f "$err"
  else
    echo "good-failed"
  fi
}
unary_loop() {  # until $1 (epoch s): good and bad unary calls; counts bad-call outcomes
  local until=$1 round=$2 i=0
  while [[ $(date +%s) -lt $until ]]; do
    case $((i % 6)) in
      0) good_call "Once upon a time" --agents 3 --merge vote --max-tokens 32 ;;
      1) good_call "The cat" --agents 4 --merge confidence --max-tokens 32 ;;
      2) good_call "Lily" --agents 3 --merge synthesize --max-tokens 24 ;;
      3) bad_call "x" --addr "$ADDR" --agents 999 ;;
      4) bad_call "x" --addr "$ADDR" --temperature 0.000001 ;;
      5) bad_call "x" --addr "$ADDR" --max-tokens 100000 ;;
    esac
    i=$((i + 1))
  done > "$WORK/unary-$round.txt"
}

echo "soak: ${DURATION}s in ${ROUND}s rounds against pid $DAEMON (work folder $WORK)"
echo "round,t_s,rss_kb,fds,threads,kv_blocks_used,calls,bad_refused" > "$WORK/checkpoints.csv"
T0=$(date +%s)
round=0
ok=1
while [[ $(( $(date +%s) - T0 )) -lt $DURATION ]]; do
  round=$((round + 1))
  end=$(( $(date +%s) + ROUND ))
  "$CHORUS" bench --addr "$ADDR" --concurrency 12 --duration "$ROUND" --requests 10000000 --agents 4 \
    --max-tokens 64 --cancel-rate 0.22 --cancel-delay-max-ms 200 --timeout-ms 20000 --seed "$round" \
    --json "$WORK/main-$round.json" > /dev/null 2>&1 &
  b1=$!
  "$CHORUS" bench --addr "$ADDR" --concurrency 2 --duration "$ROUND" --requests 10000000 --agents 2 \
    --max-tokens 200 --timeout-ms 150 --seed "$((round + 1000))" --json "$WORK/deadline-$round.json" > /dev/null 2>&1 &
  b2=$!
  unary_loop "$end" "$round" &
  u=$!
  wait "$b1" || true
  wait "$b2" || true
  wait "$u" || true
  if ! kill -0 "$DAEMON" 2> /dev/null; then echo "soak: FAIL (chorusd died in round $round)"; ok=0; break; fi
  if ! wait_idle; then echo "soak: FAIL (not idle 30 s after round $round)"; ok=0; break; fi
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DAEMON/status")
  fds=$(settled_fds)
  threads=$(awk '/^Threads/ {print $2}' "/proc/$DAEMON/status")
  kv=$(stat_field kv_blocks_used)
  calls=$(python3 -c "import json; print(json.load(open('$WORK/main-$round.json'))['sent'] + json.load(open('$WORK/deadline-$round.json'))['sent'])")
  refused=$(grep -c bad-refused "$WORK/unary-$round.txt" || true)
  t=$(( $(date +%s) - T0 ))
  echo "$round,$t,$rss,$fds,$threads,$kv,$calls,$refused" >> "$WORK/checkpoints.csv"
  printf 'soak: t=%5ss round %3d  RSS %7d kB  fds %3d  threads %3d  KV blocks used %d  calls %d\n' \
    "$t" "$round" "$rss" "$fds" "$threads" "$kv" "$calls"
done
[[ -n "$CSV" ]] && cp "$WORK/checkpoints.csv" "$CSV"
python3 - "$WORK" "$DURATION" "$ok" <<'EOF'
import csv, glob, json, sys
work, duration, ok = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rows = list(csv.DictReader(open(f"{work}/checkpoints.csv")))
if not rows:
    print("soak: FAIL (no checkpoint)"); sys.exit(1)
kv_bad = [r["round"] for r in rows if int(r["kv_blocks_used"]) != 0]
fds = [int(r["fds"]) for r in rows]
codes, longest, calls = {}, 0.0, 0
for f in glob.glob(f"{work}/main-*.json") + glob.glob(f"{work}/deadline-*.json"):
    b = json.load(open(f))
    deadline = 150 if "deadline-" in f else 20000
    for r in b["requests"]:
        codes[r["status_code"]] = codes.get(r["status_code"], 0) + 1
        longest = max(longest, r["e2e_ms"] - deadline)
        calls += 1
unary = "".join(open(f).read() for f in glob.glob(f"{work}/unary-*.txt")).split()
bad_wrong = sum(1 for u in unary if u in ("bad-accepted", "bad-other"))
good_failed = sum(1 for u in unary if u == "good-failed")
tail = rows[len(rows) // 4:] if len(rows) >= 4 else rows
slope = 0.0
if len(tail) >= 2:
    ts = [int(r["t_s"]) / 3600 for r in tail]
    rs = [int(r["rss_kb"]) / 1024 for r in tail]
    mt, mr = sum(ts) / len(ts), sum(rs) / len(rs)
    den = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (r - mr) for t, r in zip(ts, rs)) / den if den else 0.0
print(f"soak: {len(rows)} checkpoints over {rows[-1]['t_s']} s; {calls} bench calls, status codes {dict(sorted(codes.items()))}; "
      f"{len(unary)} unary calls ({good_failed} good ones failed, {bad_wrong} bad ones not refused INVALID_ARGUMENT)")
print(f"soak: RSS {rows[0]['rss_kb']} -> {rows[-1]['rss_kb']} kB, slope {slope:+.2f} MB/h over the last {len(tail)} checkpoints; "
      f"fds {fds[0]} -> {fds[-1]} (max {max(fds)}); KV blocks used at idle: {'0 at every checkpoint' if not kv_bad else 'NOT 0 in rounds ' + ','.join(kv_bad)}")
print(f"soak: longest bench call past its deadline: {max(0.0, longest):.0f} ms")
reasons = []
if not ok: reasons.append("a round failed (see above)")
if kv_bad: reasons.append("KV blocks in use at idle")
if max(fds) > fds[0] + 4: reasons.append(f"fds grew {fds[0]} -> {max(fds)} (limit +4)")
if longest > 2000: reasons.append(f"a bench call ended {longest:.0f} ms past its deadline (limit 2000)")
if bad_wrong: reasons.append(f"{bad_wrong} bad calls not refused INVALID_ARGUMENT")
if good_failed: reasons.append(f"{good_failed} good unary calls failed")
for u in sorted(set(glob.glob(f"{work}/bad-*.err") + glob.glob(f"{work}/good-*.err"))):
    print(f"soak: {u}: " + open(u).read().strip().replace("\n", " | ")[:300])
passed = not reasons
if duration >= 1200:
    if slope >= 1.0: reasons.append(f"RSS slope {slope:+.2f} MB/h (limit 1)")
    passed = not reasons
    print(f"soak: RSS slope {'<' if slope < 1.0 else '>='} 1 MB/h (enforced for runs of 20 min or more)")
print("soak: " + ("PASS" if passed else "FAIL: " + "; ".join(reasons)))
sys.exit(0 if passed else 1)
EOF
