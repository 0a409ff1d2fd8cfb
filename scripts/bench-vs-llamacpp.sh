#!/usr/bin/env bash
# Chorus against llama.cpp on the same GGUF files, side by side in one run (issue 13).
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin scripts/bench-vs-llamacpp.sh [--rounds 3]
#       [--models 110m-f32,l1b-q8_0,l1b-q4_0,l1b-q4_k_m] [--threads 2] [--long]
#
# LLAMA_CPP_BIN holds llama-bench and llama-batched-bench from a CPU build of llama.cpp made
# outside this repository (docs/PERFORMANCE.md says how). This is a measurement tool, never a
# test dependency. It
#   1. makes the models with chorus-mkmodel into $BUILD/bench-models (random weights; l1b-* are
#      Llama-3.2-1B-shaped, 1.24B parameters, tied embeddings as the real model, 8192 context),
#   2. probes the read bandwidth with $THREADS threads (chorus-bench-kernels BM_ReadBandwidth),
#   3. alternates llama-bench and chorus-bench-model per model, --rounds times (prefill of 128
#      tokens, 32 decode steps, $THREADS threads), and takes medians,
#   4. times a 1-row and an 8-row decode step on 1B Q8_0 in both (llama-batched-bench),
#   5. compares Chorus's int8-activation logits with its exact path (chorus-bench-model
#      --logit-diff),
#   6. with --long, a decode step at 4096 positions of context in both,
# and prints a markdown table with the ratios and each decode speed as a fraction of the
# read-bandwidth roofline (weight bytes read per token / bandwidth). Raw results: $OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=3
MODELS=110m-f32,l1b-q8_0,l1b-q4_0,l1b-q4_k_m
LONG=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --long) LONG=1; shift ;;
    *) echo "bench-vs-llamacpp: unknown argument $1" >&2; exit 2 ;;
  esac
done
: "${LLAMA_CPP_BIN:?set LLAMA_CPP_BIN to the folder with llama-bench and llama-batched-bench}"
for b in llama-bench llama-batched-bench; do
  [[ -x $LLAMA_CPP_BIN/$b ]] || { echo "bench-vs-llamacpp: $LLAMA_CPP_BIN/$b missing" >&2; exit 2; }
done
MK=$BUILD/src/tools/chorus-mkmodel
BENCH_MODEL=$BUILD/bench/chorus-bench-model
BENCH_KERNELS=$BUILD/bench/chorus-bench-kernels
for b in "$MK" "$BENCH_MODEL" "$BENCH_KERNELS"; do
  [[ -x $b ]] || { echo "bench-vs-llamacpp: $b missing (cmake --build $BUILD)" >&2; exit 2; }
done
DIR=$BUILD/bench-models
OUT_DIR=${OUT_DIR:-$(mktemp -d /tmp/bench-vs-llamacpp.XXXXXX)}
mkdir -p "$DIR" "$OUT_DIR"
RESULTS=$OUT_DIR/results.jsonl
: > "$RESULTS"

make_model() {  # name -> path (made once)
  local name=$1 path=$DIR/$1.gguf
  if [[ ! -f $path ]]; then
    case $name in
      110m-f32) "$MK" --out "$path" --dim 768 --layers 12 --heads 12 --ffn 2048 \
                  --vocab-size 32000 --type f32 >&2 ;;
      l1b-*) "$MK" --out "$path" --dim 2048 --layers 16 --heads 32 --kv-heads 8 --ffn 8192 \
              --vocab-size 128256 --type "${name#l1b-}" --rope-base 500000 --tied --context 8192 >&2 ;;
      *) echo "bench-vs-llamacpp: unknown model $name" >&2; exit 2 ;;
    esac
  fi
  echo "$path"
}

record() {  # engine model kind json-line
  python3 -c 'import json,sys; d=json.loads(sys.argv[4]); d.update(engine=sys.argv[1], name=sys.argv[2], kind=sys.argv[3]); print(json.dumps(d))' \
    "$1" "$2" "$3" "$4" >> "$RESULTS"
}

IFS=, read -r -a NAMES <<< "$MODELS"
declare -A PATHS
for n in "${NAMES[@]}"; do PATHS[$n]=$(make_model "$n"); done

echo "bench-vs-llamacpp: read-bandwidth probe ($THREADS threads)" >&2
"$BENCH_KERNELS" --benchmark_filter="BM_ReadBandwidth/real_time/threads:$THREADS\$" \
  --benchmark_repetitions=3 --benchmark_format=json > "$OUT_DIR/bandwidth.json"

llama_bench() {  # model-path extra-args... -> one JSON line per test
  "$LLAMA_CPP_BIN/llama-bench" -m "$1" -t "$THREADS" -r 1 -o jsonl "${@:2}" 2>>"$OUT_DIR/llama.log"
}

for ((round = 1; round <= ROUNDS; ++round)); do
  for n in "${NAMES[@]}"; do
    m=${PATHS[$n]}
    echo "bench-vs-llamacpp: round $round/$ROUNDS $n" >&2
    # Alternate which engine goes first, so drift in the machine's speed hits both alike.
    order=(llama chorus)
    ((round % 2 == 0)) && order=(chorus llama)
    for e in "${order[@]}"; do
      if [[ $e == llama ]]; then
        while read -r line; do record llama.cpp "$n" run "$line"; done \
          < <(llama_bench "$m" -p 128 -n 32)
      else
        record chorus "$n" run "$("$BENCH_MODEL" --model "$m" --threads "$THREADS" \
          --prompt-tokens 128 --decode-tokens 32 --repeats 1)"
        if [[ $n != *f32* && $n != *f16* ]]; then
          record chorus-exact "$n" run "$("$BENCH_MODEL" --model "$m" --threads "$THREADS" \
            --prompt-tokens 128 --decode-tokens 32 --repeats 1 --exact)"
        fi
      fi
    done
  done
done

# Batched decode on 1B Q8_0: an 8-row step against a 1-row step, in both engines.
if [[ -n ${PATHS[l1b-q8_0]:-} ]]; then
  m=${PATHS[l1b-q8_0]}
  for ((round = 1; round <= ROUNDS; ++round)); do
    echo "bench-vs-llamacpp: batched round $round/$ROUNDS" >&2
    while read -r line; do
      [[ $line == '{'* ]] && record llama.cpp l1b-q8_0 batched "$line"
    done < <("$LLAMA_CPP_BIN/llama-batched-bench" -m "$m" -t "$THREADS" -c 2048 -b 512 -ub 512 \
      -npp 32 -ntg 16 -npl 1,8 --output-format jsonl 2>&1)
    for b in 1 8; do
      record chorus l1b-q8_0 batched "$("$BENCH_MODEL" --model "$m" --threads "$THREADS" \
        --prompt-tokens 32 --decode-tokens 16 --batch "$b" --repeats 1)"
    done
  done
  if ((LONG)); then
    echo "bench-vs-llamacpp: decode at 4096 positions of context" >&2
    while read -r line; do record llama.cpp l1b-q8_0 long "$line"; done \
      < <(llama_bench "$m" -p 0 -n 16 -d 4096)
    record chorus l1b-q8_0 long "$("$BENCH_MODEL" --model "$m" --threads "$THREADS" \
      --prompt-tokens 16 --context 4096 --decode-tokens 16 --repeats 2)"
  fi
fi

for n in "${NAMES[@]}"; do
  [[ $n == *f32* || $n == *f16* ]] && continue
  record chorus "$n" logit-diff "$("$BENCH_MODEL" --model "${PATHS[$n]}" --threads "$THREADS" \
    --prompt-tokens 64 --logit-diff)"
done

python3 - "$RESULTS" "$OUT_DIR/bandwidth.json" "$THREADS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
bw = [b["bytes_per_second"] for b in json.load(open(sys.argv[2]))["benchmarks"]
      if b.get("run_type") == "iteration"]
bw = statistics.median(bw) / 1e9
threads = sys.argv[3]
med = lambda xs: statistics.median(xs) if xs else float("nan")
names = []
for r in rows:
    if r["name"] not in names: names.append(r["name"])
step_bytes = {r["name"]: r["step_weight_bytes"] for r in rows if r["engine"] == "chorus" and "step_weight_bytes" in r}
def runs(engine, name, kind="run"):
    return [r for r in rows if r["engine"] == engine and r["name"] == name and r["kind"] == kind]
def llama(name, key):
    return med([r["avg_ts"] for r in runs("llama.cpp", name)
                if (r["n_prompt"] > 0) == (key == "prefill") and r.get("n_depth", 0) == 0])
def chorus(engine, name, key):
    f = "prefill_tokens_per_s" if key == "prefill" else "decode_tokens_per_s"
    return med([r[f] for r in runs(engine, name)])
print(f"\nread bandwidth ({threads} threads, median of 3): {bw:.1f} GB/s")
print("\n| model (weight bytes read per token) | llama.cpp prefill / decode tok/s | Chorus int8 activations (default) | Chorus exact | decode roofline % llama.cpp / Chorus |")
print("|---|---|---|---|---|")
for n in names:
    if not runs("llama.cpp", n): continue
    gb = step_bytes.get(n, 0) / 1e9
    lp, ld = llama(n, "prefill"), llama(n, "decode")
    cp, cd = chorus("chorus", n, "prefill"), chorus("chorus", n, "decode")
    cell = f"{cp:.1f} ({cp/lp:.2f}x) / {cd:.1f} ({cd/ld:.2f}x)"
    exact = "-"
    if runs("chorus-exact", n):
        ep, ed = chorus("chorus-exact", n, "prefill"), chorus("chorus-exact", n, "decode")
        exact = f"{ep:.1f} ({ep/lp:.2f}x) / {ed:.1f} ({ed/ld:.2f}x)"
    roof = bw / gb if gb else float("nan")
    print(f"| {n} ({gb:.2f} GB) | {lp:.1f} / {ld:.1f} | {cell} | {exact} | {100*ld/roof:.0f}% / {100*cd/roof:.0f}% |")
b = [r for r in rows if r["kind"] == "batched"]
if b:
    def step_ms_llama(pl):
        return med([1000.0 * pl / r["speed_tg"] for r in b if r["engine"] == "llama.cpp" and r["pl"] == pl])
    def step_ms_chorus(batch):
        return med([r["decode_step_ms"] for r in b if r["engine"] == "chorus" and r["batch"] == batch])
    l1, l8, c1, c8 = step_ms_llama(1), step_ms_llama(8), step_ms_chorus(1), step_ms_chorus(8)
    print(f"\nbatched decode, l1b-q8_0: llama.cpp 1-row {l1:.1f} ms, 8-row {l8:.1f} ms ({l8/l1:.2f}x; "
          f"{1000/l1:.1f} -> {8000/l8:.1f} tok/s); Chorus 1-row {c1:.1f} ms, 8-row {c8:.1f} ms "
          f"({c8/c1:.2f}x; {1000/c1:.1f} -> {8000/c8:.1f} tok/s)")
lg = [r for r in rows if r["kind"] == "long"]
if lg:
    l = med([1000.0 / r["avg_ts"] for r in lg if r["engine"] == "llama.cpp"])
    c = med([r["decode_step_ms"] for r in lg if r["engine"] == "chorus"])
    print(f"decode step at 4096 positions, l1b-q8_0: llama.cpp {l:.1f} ms, Chorus {c:.1f} ms ({l/c:.2f}x)")
for r in rows:
    if r["kind"] == "logit-diff":
        print(f"int8 vs exact logits, {r['name']}: max {100*r['max_rel_logit_diff']:.2f}% / mean "
              f"{100*r['mean_rel_logit_diff']:.2f}% of the largest logit, top-1 agreement "
              f"{100*r['top1_agreement']:.1f}% over {r['positions']} positions")
EOF
echo "bench-vs-llamacpp: raw results in $OUT_DIR" >&2
