#!/usr/bin/env bash
# Prepares, on a development machine (no GPU needed), what a bare GPU machine needs to run
# scripts/gpu-check.sh without building: the CUDA test and benchmark binaries (for sm_90 by
# default, plus PTX; kernels with -lineinfo for compute-sanitizer), the Debian shared libraries
# they load, and the shared fixtures the CUDA tests read (../shared/fixtures/real-formats), packed
# as gpu-bundle/bundle.tgz (git-ignored, meant for the device tool's `carry`, 64 MiB at most
# together with the working tree), with gpu-bundle/BUILD-INFO.txt (commit, nvcc and CUDA runtime
# versions, flags). models/stories260K.gguf is tracked by git and travels with the working tree.
# The GPU machine supplies the driver and the CUDA libraries (cudart, cuBLAS, NCCL).
#
# Usage: scripts/gpu-bundle.sh [--no-build]   (--no-build packs the binaries already in $BUILD)
# Environment: CUDA_ARCH (90), BUILD (build-gpu), CHORUS_SHARED_DIR (../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${CUDA_ARCH:-90}
BUILD=${BUILD:-build-gpu}
SHARED=${CHORUS_SHARED_DIR:-../shared}
OUT=gpu-bundle
LIMIT_MIB=60  # the carry limit is 64 MiB with the working tree; keep a margin
TARGETS=(cuda_test chorus-bench-model chorus-mkmodel chorus-bench-cuda)
BINARIES=("$BUILD/tests/cuda_test" "$BUILD/bench/chorus-bench-model" "$BUILD/src/tools/chorus-mkmodel"
  "$BUILD/src/chorus-bench-cuda")
FIXTURES=(fixtures/real-formats/expected.json fixtures/real-formats/tiny-rope-freqs-Q4_K_M.gguf
  fixtures/real-formats/tiny-rope-freqs-Q6_K.gguf)

if [[ ${1:-} != --no-build ]]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCHORUS_CUDA=ON -DCHORUS_NATIVE=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="${ARCH}-real;${ARCH}-virtual" -DCMAKE_CUDA_FLAGS=-lineinfo > /dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}"
fi
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"
cp "${BINARIES[@]}" "$STAGE/bin/"
# Every shared library the binaries load, except the C runtime and the CUDA/NVIDIA ones.
for b in "$STAGE"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux|libgcc_s|libstdc\+\+)[.-]|/(libcuda|libcudart|libcublas|libnccl|libnvidia)' |
  while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
strip --strip-unneeded "$STAGE"/bin/* 2> /dev/null || true

# What the binaries were built with, for gpu-check's preflight.
cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
nvcc=$(cache CMAKE_CUDA_COMPILER | grep . || command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cudart=$(ldd "${BINARIES[0]}" | awk '/libcudart/ {print $3}' | head -1)
{
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
  echo "nvcc: $("$nvcc" --version | grep -i release)"
  echo "cuda_runtime: $(readlink -f "$cudart" | sed -n 's/.*libcudart\.so\.//p') (CUDART_VERSION" \
    "$(awk '/define CUDART_VERSION/ {print $3}' "$(dirname "$nvcc")/../include/cuda_runtime_api.h" 2> /dev/null))"
  echo "cuda_architectures: $(cache CMAKE_CUDA_ARCHITECTURES | grep . || echo 'default of cmake/cuda.cmake (80-real;90-real;90-virtual)')"
  echo "cuda_flags: $(cache CMAKE_CUDA_FLAGS)"
  echo "build_type: $(cache CMAKE_BUILD_TYPE)"
} > "$STAGE/BUILD-INFO.txt"

# Working-tree bytes that travel with the bundle (tracked and untracked-not-ignored files).
tree_bytes=$(git ls-files -co --exclude-standard -z | { xargs -0 stat -c %s 2> /dev/null || true; } |
  awk '{s += $1} END {print s + 0}')
pack() {  # pack [with fixtures]: writes $STAGE/bundle.tgz, echoes MiB with the working tree
  local parts=(bin lib BUILD-INFO.txt)
  [[ -d $STAGE/shared ]] && parts+=(shared)
  tar czf "$STAGE/bundle.tgz" -C "$STAGE" "${parts[@]}"
  echo $((($(stat -c %s "$STAGE/bundle.tgz") + tree_bytes + 1048575) / 1048576))
}
fixtures="left out: $SHARED/fixtures/real-formats not found"
if [[ -f $SHARED/${FIXTURES[0]} ]]; then
  mkdir -p "$STAGE/shared/fixtures/real-formats"
  for f in "${FIXTURES[@]}"; do cp "$SHARED/$f" "$STAGE/shared/$f"; done
  fixtures="included (shared/fixtures/real-formats)"
fi
echo "fixtures: $fixtures" >> "$STAGE/BUILD-INFO.txt"
size=$(pack)
if ((size > LIMIT_MIB)) && [[ -d $STAGE/shared ]]; then
  echo "gpu-bundle: ${size} MiB with the fixtures and the working tree, over ${LIMIT_MIB} MiB: leaving the fixtures out" \
    "(CudaTest.RealKQuantFilesDecodeLikeTheFloat64Reference will SKIP, and gpu-check counts that as a failure)" >&2
  rm -rf "$STAGE/shared"
  sed -i 's/^fixtures: .*/fixtures: left out (over the carry limit)/' "$STAGE/BUILD-INFO.txt"
  size=$(pack)
fi
if ((size > LIMIT_MIB)); then
  echo "gpu-bundle: ${size} MiB with the working tree: over the device tool's carry limit (${LIMIT_MIB} of 64 MiB)" >&2
  exit 1
fi
rm -rf "$OUT" && mkdir -p "$OUT"
mv "$STAGE/bundle.tgz" "$OUT/"
cp "$STAGE/BUILD-INFO.txt" "$OUT/"
cat "$OUT/BUILD-INFO.txt"
echo "gpu-bundle: $(du -sh "$OUT" | cut -f1) ($size MiB with the working tree)"
echo "carry gpu-bundle, then: scripts/gpu-check.sh \$OUT   (scripts/gpu-check.sh --dry-run shows the plan)"
