#!/usr/bin/env bash
# Serving measurements of issue #3 (numbers for notes and docs; nothing is asserted):
#   1. latency(8 agents) / latency(1 agent) at the same max_tokens, closed loop, one at a time;
#   2. how far past the latency budget responses land at budgets of 250, 500 and 1000 ms.
# Usage: scripts/bench-serving.sh [MODEL.gguf ...]  (default: the embedded stories260K and the
# random 110M F32 model of scripts/bench-cpu.sh, generated when missing)
# Environment: BACKEND (cpu | cuda, default cpu), CHORUSD and CHORUS (binaries; default the
# build's), BUILD, PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PORT=${PORT:-50099}
MODELS=("$@")
if [[ ${#MODELS[@]} -eq 0 ]]; then
  mkdir -p $BUILD/bench-models
  [[ -f $BUILD/bench-models/110m-f32.gguf ]] || $BUILD/src/tools/chorus-mkmodel \
    --out $BUILD/bench-models/110m-f32.gguf --dim 768 --layers 12 --heads 12 --ffn 2048 \
    --vocab-size 32000 --type f32
  MODELS=(models/stories260K.gguf $BUILD/bench-models/110m-f32.gguf)
fi
cli=${CHORUS:-$BUILD/src/chorus}
daemon=${CHORUSD:-$BUILD/src/chorusd}
BACKEND=${BACKEND:-cpu}
for m in "${MODELS[@]}"; do
  "$daemon" --listen 127.0.0.1:$PORT --model "$m" --backend "$BACKEND" --metrics "" \
    > /tmp/chorusd-bench.log 2>&1 &
  pid=$!
  for _ in $(seq 600); do "$cli" health --addr 127.0.0.1:$PORT >/dev/null 2>&1 && break; sleep 0.1; done
  echo "== $m ($BACKEND)"
  for agents in 1 8; do
    "$cli" bench --addr 127.0.0.1:$PORT --concurrency 1 --requests 6 --warmup 1 --agents $agents \
      --max-tokens 64 --temperature 0.8 --prompt-tokens 16 --json /tmp/agents$agents.json >/dev/null 2>&1 || true
  done
  python3 - "$m" <<'PY'
import json, sys
a1 = json.load(open('/tmp/agents1.json')); a8 = json.load(open('/tmp/agents8.json'))
r = a8['e2e_ms']['mean'] / a1['e2e_ms']['mean']
print(f"  e2e mean: 1 agent {a1['e2e_ms']['mean']:.1f} ms, 8 agents {a8['e2e_ms']['mean']:.1f} ms, ratio {r:.2f}"
      f" (output tokens {a1['output_tokens']} vs {a8['output_tokens']})")
PY
  for budget in 250 500 1000; do
    "$cli" bench --addr 127.0.0.1:$PORT --concurrency 1 --requests 5 --agents 8 --max-tokens 1500 \
      --budget-ms $budget --prompt-tokens 16 --json /tmp/budget.json >/dev/null 2>&1 || true
    python3 - $budget <<'PY'
import json, sys
b = int(sys.argv[1]); j = json.load(open('/tmp/budget.json'))
over = [r['e2e_ms'] - b for r in j['requests'] if r['status_code'] == 0]
print(f"  budget {b} ms: e2e - budget mean {sum(over)/max(1,len(over)):+.1f} ms, max {max(over) if over else 0:+.1f} ms,"
      f" budget-cut fraction {j['budget_cut_fraction']:.2f}, {j['completed']}/{j['sent']} ok")
PY
  done
  kill -TERM $pid; wait $pid || true
done
