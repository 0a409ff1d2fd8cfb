#!/usr/bin/env bash
# Prepares, on a development machine (no GPU needed), what a bare GPU machine needs to run
# scripts/gpu-check.sh without building: the CUDA test and benchmark binaries (for sm_90 by
# default, plus PTX) and the Debian shared libraries they load, in gpu-bundle/ (git-ignored,
# meant for the device tool's `carry`, 64 MiB at most with the working tree), packed as
# gpu-bundle/bundle.tgz. The GPU machine supplies the driver and
# the CUDA libraries (cudart, cuBLAS, NCCL).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${CUDA_ARCH:-90}
BUILD=${BUILD:-build-gpu}
OUT=gpu-bundle
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCHORUS_CUDA=ON -DCHORUS_NATIVE=OFF \
  -DCMAKE_CUDA_ARCHITECTURES="${ARCH}-real;${ARCH}-virtual" > /dev/null
cmake --build "$BUILD" -j"$(nproc)" --target cuda_test chorus-bench-model chorus-mkmodel chorus-bench-cuda \
  chorusd chorus
rm -rf "$OUT" && mkdir -p "$OUT/bin" "$OUT/lib"
cp "$BUILD/tests/cuda_test" "$BUILD/bench/chorus-bench-model" "$BUILD/src/tools/chorus-mkmodel" \
   "$BUILD/src/chorus-bench-cuda" "$BUILD/src/chorusd" "$BUILD/src/chorus" "$OUT/bin/"
# Every shared library the binaries load, except the C runtime and the CUDA/NVIDIA ones.
for b in "$OUT"/bin/*; do
  ldd "$b" | awk '/=> \// {print $3}'
done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux|libgcc_s|libstdc\+\+)[.-]|/(libcuda|libcudart|libcublas|libnccl|libnvidia)' |
  while read -r lib; do cp -L "$lib" "$OUT/lib/"; done
strip --strip-unneeded "$OUT"/bin/* 2> /dev/null || true
# One gzip archive (about 40% of the folder's size): scripts/gpu-check.sh unpacks it.
tar czf bundle.tgz -C "$OUT" bin lib
rm -rf "$OUT" && mkdir -p "$OUT" && mv bundle.tgz "$OUT/"
du -sh "$OUT"
size=$(du -sm "$OUT" | cut -f1)
if (( size > 48 )); then echo "gpu-bundle is ${size} MiB: too close to the device tool's 64 MiB carry limit" >&2; exit 1; fi
echo "carry gpu-bundle, then: scripts/gpu-check.sh \$OUT"
