#!/usr/bin/env bash
# One run on a GPU machine (issue #5): build with CUDA (unless the binaries were carried over),
# run the CUDA parity tests, compute-sanitizer on the op tests, the card's roofline (copy
# bandwidth, cuBLAS GEMM rates), and decode/prefill benchmarks on Llama-3.2-1B-shaped random
# models in BF16, Q8_0, Q4_0 and Q4_K_M at batch 1, 8 and 64. Results go to $OUT (or $1) as text and a
# markdown table. Meant to fit well inside 10 minutes on a 16-core machine with one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-gpu-check-out}}
BUILD=${BUILD:-build-gpu}
mkdir -p "$OUT"
log() { echo "[gpu-check] $*" | tee -a "$OUT/log.txt"; }

if [[ -f gpu-bundle/bundle.tgz && ! -d gpu-bundle/bin ]]; then
  tar xzf gpu-bundle/bundle.tgz -C gpu-bundle
fi
if [[ -d gpu-bundle/bin ]]; then
  # Binaries prepared by scripts/gpu-bundle.sh on a development machine and carried here.
  BIN=gpu-bundle/bin
  CUDA_LIBS=$(python3 - <<'PY' 2>/dev/null || true
import glob, os
dirs = set()
for pat in ["/usr/local/cuda/lib64/libcublas.so*", "/usr/local/cuda/targets/*/lib/libcublas.so*",
            "/usr/local/lib/python3*/dist-packages/nvidia/*/lib/*.so*",
            "/opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib/*.so*",
            "/usr/lib/python3*/site-packages/nvidia/*/lib/*.so*"]:
    for f in glob.glob(pat):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH="$PWD/gpu-bundle/lib:${CUDA_LIBS}:${LD_LIBRARY_PATH:-}"
  log "using carried binaries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"
  CUDA_TEST=$BIN/cuda_test; BENCH=$BIN/chorus-bench-model; MKMODEL=$BIN/chorus-mkmodel; ROOF=$BIN/chorus-bench-cuda
  CHORUSD=$BIN/chorusd; CHORUS=$BIN/chorus
else
  CUDA_TEST=$BUILD/tests/cuda_test; BENCH=$BUILD/bench/chorus-bench-model
  MKMODEL=$BUILD/src/tools/chorus-mkmodel; ROOF=$BUILD/src/chorus-bench-cuda
  CHORUSD=$BUILD/src/chorusd; CHORUS=$BUILD/src/chorus
fi
if [[ ! -x $CUDA_TEST || ! -x $BENCH ]]; then
  log "building with CUDA into $BUILD"
  ./scripts/install-deps.sh >> "$OUT/log.txt" 2>&1 || log "install-deps failed (offline?); trying the build anyway"
  cmake -S . -B "$BUILD" -DCHORUS_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native \
    >> "$OUT/log.txt" 2>&1
  cmake --build "$BUILD" -j"$(nproc)" --target cuda_test chorus-bench-model chorus-mkmodel chorus-bench-cuda \
    chorusd chorus \
    >> "$OUT/log.txt" 2>&1 || { log "build failed"; tail -40 "$OUT/log.txt"; exit 1; }
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

log "CUDA parity tests (one process per test: a sticky CUDA error cannot take the others down)"
: > "$OUT/cuda_test.txt"
for t in $("$CUDA_TEST" --gtest_list_tests | awk '/^[^ ]/ {suite=$1} /^  / {print suite $1}'); do
  timeout 120 "$CUDA_TEST" --gtest_filter="$t" > "$OUT/one-test.txt" 2>&1
  rc=$?
  cat "$OUT/one-test.txt" >> "$OUT/cuda_test.txt"
  if [[ $rc != 0 ]]; then verdict="FAILED (exit $rc)"
  elif grep -q '^\[  SKIPPED' "$OUT/one-test.txt"; then verdict=skipped
  else verdict=ok; fi
  log "  $t: $verdict"
done
if command -v compute-sanitizer > /dev/null || [[ -x /usr/local/cuda/bin/compute-sanitizer ]]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  log "compute-sanitizer on the op tests"
  timeout 240 "$CS" --tool memcheck --error-exitcode 3 "$CUDA_TEST" \
    --gtest_filter='CudaTest.*-CudaTest.ModelLogits*' > "$OUT/sanitizer.txt" 2>&1
  log "compute-sanitizer exit $?"
fi

"$ROOF" > "$OUT/roofline.json" 2>&1
log "roofline: $(cat "$OUT/roofline.json")"

MODELS=${MODELS_DIR:-$BUILD/bench-models}
mkdir -p "$MODELS"
: > "$OUT/decode.jsonl"
for t in bf16 q8_0 q4_0 q4_k_m; do
  f=$MODELS/1b-$t.gguf
  [[ -f $f ]] || "$MKMODEL" --out "$f" --dim 2048 --layers 16 --heads 32 \
    --kv-heads 8 --ffn 8192 --vocab-size 128256 --type $t --rope-base 500000
  for b in 1 8 64; do
    timeout 120 "$BENCH" --backend cuda --model "$f" --batch $b \
      --prompt-tokens 512 --decode-tokens 32 --repeats 2 >> "$OUT/decode.jsonl" 2>> "$OUT/log.txt"
  done
  # The same decode steps without CUDA graphs (every op launched eagerly) and without grouped
  # GEMVs, for what each one gains.
  for b in 1 8; do
    CHORUS_CUDA_GRAPHS=0 timeout 120 "$BENCH" --backend cuda --model "$f" --batch $b \
      --prompt-tokens 512 --decode-tokens 32 --repeats 2 | sed 's/^{/{"variant": "no_graphs", /' \
      >> "$OUT/decode.jsonl" 2>> "$OUT/log.txt"
    CHORUS_CUDA_FUSE=0 timeout 120 "$BENCH" --backend cuda --model "$f" --batch $b \
      --prompt-tokens 512 --decode-tokens 32 --repeats 2 | sed 's/^{/{"variant": "no_fuse", /' \
      >> "$OUT/decode.jsonl" 2>> "$OUT/log.txt"
  done
done
rm -f "$OUT/one-test.txt"
log "decode results: $(wc -l < "$OUT/decode.jsonl") lines"

# Serving on the GPU: latency of 8 agents against 1 agent end to end, and the latency budget.
if [[ -x $CHORUSD && -x $CHORUS ]]; then
  log "serving benchmark (chorusd --backend cuda, 1B Q8_0)"
  BACKEND=cuda CHORUSD=$CHORUSD CHORUS=$CHORUS timeout 240 scripts/bench-serving.sh "$MODELS/1b-q8_0.gguf" \
    > "$OUT/serving.txt" 2>&1
  log "serving exit $?: $(tr '\n' ' ' < "$OUT/serving.txt")"
fi

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
try:
    roof = json.load(open(f"{out}/roofline.json"))
except Exception as e:  # a failed roofline run still leaves a decode table
    roof = {"device": f"unknown (roofline failed: {e})"}
bw = roof.get("copy_gb_per_s", 0) * 1e9
rows = []
for l in open(f"{out}/decode.jsonl"):
    try:
        rows.append(json.loads(l))
    except ValueError:
        pass
lines = [f"Card: {roof.get('device')} ({roof.get('memory_gib', 0)} GiB); copy bandwidth "
         f"{roof.get('copy_gb_per_s')} GB/s; cuBLAS GEMM F32 {roof.get('gemm_f32_tflops')} / "
         f"F16 {roof.get('gemm_f16_tflops')} / BF16 {roof.get('gemm_bf16_tflops')} TFLOP/s", "",
         "Decode after a 512-token prompt per sequence, 32 steps, best of 2. Roofline: step time >= "
         "(weights read per step + KV read per step) / copy bandwidth; 'weights only' ignores the KV.", "",
         "| model | batch | decode tokens/s | step ms | step ms, no graphs | step ms, no fusions "
         "| roofline fraction (weights only) | roofline fraction (weights + KV) | prefill tokens/s "
         "| prefill TFLOP/s (fraction of GEMM rate) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
variant = {(r["variant"], r["model"], r["batch"]): r for r in rows if r.get("variant")}
def step(v, r):
    x = variant.get((v, r["model"], r["batch"]))
    return f"{x['decode_step_ms']:.3f}" if x else "-"
base = {}
for r in rows:
    if r.get("variant"):
        continue
    name = r["model"].rsplit("/", 1)[-1]
    step_s = r["decode_step_ms"] / 1e3
    w_only = (r["step_weight_bytes"] / bw) / step_s if bw else 0
    w_kv = ((r["step_weight_bytes"] + r["kv_bytes_per_step"]) / bw) / step_s if bw else 0
    gemm = roof.get("gemm_bf16_tflops" if "bf16" in name else "gemm_f16_tflops", 0) or 0
    pf = r.get("prefill_tflops", 0)
    if r["batch"] == 1:
        base[name] = r["decode_step_ms"]
    lines.append(f"| {name} | {r['batch']} | {r['decode_tokens_per_s']:.1f} | {r['decode_step_ms']:.3f} | "
                 f"{step('no_graphs', r)} | {step('no_fuse', r)} | {w_only:.2f} | {w_kv:.2f} | "
                 f"{r['prefill_tokens_per_s']:.0f} | {pf:.1f} ({pf / gemm if gemm else 0:.2f}) |")
lines.append("")
if roof.get("gemv"):
    lines += ["GEMV kernel alone (100 launches back to back; weight bytes per second):", "",
              "| type | rows x cols | tokens | us | GB/s | fraction of copy bandwidth |", "|---|---|---|---|---|---|"]
    for g in roof["gemv"]:
        frac = g["weight_gb_per_s"] * 1e9 / bw if bw else 0
        lines.append(f"| {g['type']} | {g['rows']} x {g['cols']} | {g['n']} | {g['us']:.2f} | "
                     f"{g['weight_gb_per_s']:.0f} | {frac:.2f} |")
    lines.append("")
for r in rows:
    name = r["model"].rsplit("/", 1)[-1]
    if r["batch"] == 8 and name in base and not r.get("variant"):
        lines.append(f"- {name}: step time at 8 agents / 1 agent = {r['decode_step_ms'] / base[name]:.2f} "
                     "(target <= 1.3)")
open(f"{out}/PERFORMANCE-gpu.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
