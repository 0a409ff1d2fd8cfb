#!/usr/bin/env bash
# Elastic against fixed agents under rising load (issue 14, docs/EVAL.md): for each request
# rate, an open-loop `chorus bench` (Poisson arrivals, the eval questions as prompts) runs while
# `chorus eval` measures accuracy on the same server, once with a fixed agent count and once
# with an elastic range, all under one latency budget. Prints one table line per (mode, rate).
#
#   scripts/eval-under-load.sh [--build DIR] [--model GGUF] [--dataset JSONL] [--rates "1 3 6"]
#       [--budget-ms B] [--fixed N] [--elastic MIN-MAX] [--duration S] [--limit N] [--out DIR]
#       [--seed S]   (the eval's sampling seed: the same drafts for fixed and elastic, paired)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build MODEL=models/arith.gguf DATASET=models/arith-eval.jsonl RATES="2 4 8 12" SEED=1
BUDGET=600 FIXED=8 ELASTIC=1-8 DURATION=20 LIMIT=100 OUT="" PORT=50880 MAXTOK=64
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --dataset) DATASET="$2"; shift 2 ;;
    --rates) RATES="$2"; shift 2 ;;
    --budget-ms) BUDGET="$2"; shift 2 ;;
    --fixed) FIXED="$2"; shift 2 ;;
    --elastic) ELASTIC="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "eval-under-load: unknown argument $1" >&2; exit 2 ;;
  esac
done
CHORUSD="$BUILD/src/chorusd" CHORUS="$BUILD/src/chorus"
OUT=${OUT:-$(mktemp -d /tmp/chorus-evalload.XXXXXX)}
mkdir -p "$OUT"
python3 -c "
import json, sys
with open('$DATASET') as f, open('$OUT/prompts.jsonl', 'w') as o:
    for line in f:
        if line.strip(): o.write(json.dumps({'prompt': json.loads(line)['question']}) + '\n')"
"$CHORUSD" --model "$MODEL" --listen "127.0.0.1:$PORT" --metrics "" > "$OUT/chorusd.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true; wait 2> /dev/null || true' EXIT
for _ in $(seq 1 100); do "$CHORUS" health --addr "127.0.0.1:$PORT" > /dev/null 2>&1 && break; sleep 0.1; done
COMMON=(--addr "127.0.0.1:$PORT" --max-tokens "$MAXTOK" --temperature 1 --budget-ms "$BUDGET")
EMIN=${ELASTIC%-*} EMAX=${ELASTIC#*-}

printf "%-14s %6s | %9s %9s %9s %8s %7s %7s | %9s %15s %8s\n" mode rate "bench ok" "rejected" "p99 ms" "cut" \
  agents "> budget" accuracy "95% interval" "eval p99"
for rate in $RATES; do
  for mode in fixed elastic; do
    if [[ $mode == fixed ]]; then AG=(--agents "$FIXED"); EV=(--agents "$FIXED" --merge vote)
    else AG=(--min-agents "$EMIN" --max-agents "$EMAX"); EV=(--agents 1 --elastic "$ELASTIC" --merge vote); fi
    tag="$mode-$rate"
    "$CHORUS" bench "${COMMON[@]}" "${AG[@]}" --rate "$rate" --duration "$DURATION" --requests 1000000 \
      --prompts "$OUT/prompts.jsonl" --json "$OUT/bench-$tag.json" > "$OUT/bench-$tag.txt" 2> /dev/null &
    BENCH=$!
    sleep 2
    "$CHORUS" eval "${COMMON[@]}" "${EV[@]}" --dataset "$DATASET" --limit "$LIMIT" --concurrency 2 \
      --seed "$SEED" --answer-regex 'answer: (-?\d+)' --json "$OUT/eval-$tag.json" > "$OUT/eval-$tag.txt" 2> /dev/null || true
    wait "$BENCH" || true
    python3 - "$OUT" "$tag" "$mode" "$rate" "$BUDGET" <<'EOF'
import json, sys
out, tag, mode, rate, budget = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
b = json.load(open(f"{out}/bench-{tag}.json"))
e = json.load(open(f"{out}/eval-{tag}.json"))
row = [r for r in e if (r["max_agents"] > 0) == (mode == "elastic")][-1]
reqs = [r for r in b["requests"] if not r["warmup"]]
over = sum(1 for r in reqs if r["status_code"] == 0 and r["e2e_ms"] > budget)
rejected = sum(1 for r in reqs if r["status_code"] != 0)
print(f"{mode:<14} {rate:>6} | {b['completed']:>9} {rejected:>9} {b['e2e_ms']['p99']:>9.1f} {b['budget_cut_fraction']:>8.3f} "
      f"{b['agents_mean']:>7.2f} {over:>7} | {100 * row['accuracy']:>8.1f}% [{100 * row['ci95'][0]:5.1f}, {100 * row['ci95'][1]:5.1f}]% "
      f"{row['latency_ms']['p99']:>8.1f}")
EOF
  done
done
echo "(bench: open loop for ${DURATION}s at each rate, budget ${BUDGET} ms, ${MAXTOK} tokens; rejected = any non-OK"
echo " status; > budget = OK responses later than the budget; eval: $LIMIT problems, concurrency 2, same budget;"
echo " files in $OUT)"
