#!/usr/bin/env bash
# CPU benchmarks of issue #2: kernel GEMV rates, then prefill/decode tokens/s on a random
# ~110M F32 model and Llama-3.2-1B-shaped Q8_0, Q4_0 and Q4_K_M models (generated once into
# $BUILD/bench-models), so K-quant speed is read next to the older types.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
MODELS=$BUILD/bench-models
mkdir -p "$MODELS"
mk=$BUILD/src/tools/chorus-mkmodel
[[ -f $MODELS/110m-f32.gguf ]] || $mk --out $MODELS/110m-f32.gguf --dim 768 --layers 12 \
  --heads 12 --ffn 2048 --vocab-size 32000 --type f32
[[ -f $MODELS/1b-q8_0.gguf ]] || $mk --out $MODELS/1b-q8_0.gguf --dim 2048 --layers 16 \
  --heads 32 --kv-heads 8 --ffn 8192 --vocab-size 128256 --type q8_0 --rope-base 500000
for t in q4_0 q4_k_m; do
  [[ -f $MODELS/1b-$t.gguf ]] || $mk --out $MODELS/1b-$t.gguf --dim 2048 --layers 16 \
    --heads 32 --kv-heads 8 --ffn 8192 --vocab-size 128256 --type $t --rope-base 500000
done
$BUILD/bench/chorus-bench-kernels --benchmark_min_time=0.2
for m in 110m-f32 1b-q8_0 1b-q4_0 1b-q4_k_m; do
  $BUILD/bench/chorus-bench-model --model $MODELS/$m.gguf --threads $THREADS \
    --prompt-tokens 128 --decode-tokens 16 --repeats 2
done
