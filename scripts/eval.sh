#!/usr/bin/env bash
# make eval: chorusd on the trained arithmetic model (models/arith.gguf), then `chorus eval` on
# its eval set at 1, 2, 4, 8 and 16 agents with VOTE and CONFIDENCE (early stop under a token
# probability of 0.6; seed 7, so every setting's agent i samples the same way); writes the table, the JSON
# and the accuracy-vs-latency SVG to OUT (default build/eval/). docs/EVAL.md has a measured run.
#   scripts/eval.sh [--build DIR] [--out DIR] [--limit N] [--budget-ms B] [extra chorus eval flags]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build OUT="" LIMIT=200 BUDGET=0 PORT=50890 EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) BUILD="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --budget-ms) BUDGET="$2"; shift 2 ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
OUT=${OUT:-$BUILD/eval}
mkdir -p "$OUT"
"$BUILD/src/chorusd" --model models/arith.gguf --listen "127.0.0.1:$PORT" --metrics "" > "$OUT/chorusd.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2> /dev/null || true; wait 2> /dev/null || true' EXIT
for _ in $(seq 1 100); do "$BUILD/src/chorus" health --addr "127.0.0.1:$PORT" > /dev/null 2>&1 && break; sleep 0.1; done
budget=()
[[ "$BUDGET" != 0 ]] && budget=(--budget-ms "$BUDGET")
"$BUILD/src/chorus" eval --addr "127.0.0.1:$PORT" --dataset models/arith-eval.jsonl --limit "$LIMIT" \
  --agents 1,2,4,8,16 --merge vote,confidence --answer-regex 'answer: (-?\d+)' --max-tokens 64 \
  --temperature 0.8 --concurrency 4 --confidence-threshold 0.6 --confidence-window 1 --seed 7 \
  "${budget[@]}" --json "$OUT/eval.json" --plot "$OUT/eval.svg" "${EXTRA[@]}" \
  | tee "$OUT/eval.txt"
echo "eval: table, JSON and SVG in $OUT"
