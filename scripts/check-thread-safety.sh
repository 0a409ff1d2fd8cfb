#!/usr/bin/env bash
# clang's thread-safety analysis over every source file of the daemon, the client and the tools
# (-Wthread-safety -Werror=thread-safety from cmake/flags.cmake), syntax only: no code is
# generated, so this costs a fraction of a build. Fails on the first file with a finding.
# Usage: scripts/check-thread-safety.sh [BUILD_DIR]   (default build-tsa; CI: make check-thread-safety)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-tsa}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$BUILD"
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DCHORUS_CUDA=OFF \
  -DCHORUS_CUDA_EMU=OFF -DCHORUS_BUILD_BENCHMARKS=OFF -DCHORUS_BUILD_TESTS=OFF > "$BUILD/tsa-cmake.log"
cmake --build "$BUILD" --target chorus_proto -j "$JOBS" > "$BUILD/tsa-proto.log"
# One "cd DIR && COMMAND -fsyntax-only" line per source file under src/.
python3 - "$BUILD/compile_commands.json" "$PWD/src/" > "$BUILD/tsa-commands.txt" <<'PY'
import json, shlex, sys
root = sys.argv[2]
for e in json.load(open(sys.argv[1])):
    if not e["file"].startswith(root) or not e["file"].endswith(".cc"):
        continue
    args = shlex.split(e["command"])
    out = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "-o":
            skip = True
            continue
        if a == "-c":
            continue
        out.append(a)
    print("cd " + shlex.quote(e["directory"]) + " && " + shlex.join(out + ["-fsyntax-only"]))
PY
n=$(wc -l < "$BUILD/tsa-commands.txt")
echo "thread-safety: checking $n files with clang -Wthread-safety -Werror=thread-safety"
if ! xargs -P "$JOBS" -I{} -d '\n' bash -c '{}' < "$BUILD/tsa-commands.txt"; then
  echo "thread-safety: FAILED"
  exit 1
fi
echo "thread-safety: $n files clean"
