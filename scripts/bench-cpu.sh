#!/usr/bin/env bash
# CPU benchmarks of issue #2: kernel GEMV rates, then prefill/decode tokens/s on a random
# ~110M F32 model and a Llama-3.2-1B-shaped Q8_0 model (generated once into $BUILD/bench-models).
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
$BUILD/bench/chorus-bench-kernels --benchmark_min_time=0.2
for m in 110m-f32 1b-q8_0; do
  $BUILD/bench/chorus-bench-model --model $MODELS/$m.gguf --threads $THREADS \
    --prompt-tokens 128 --decode-tokens 16 --repeats 2
done
