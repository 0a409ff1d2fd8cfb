#!/usr/bin/env bash
# Installs (idempotently) the Debian 12 packages Chorus needs.
# Safe to run repeatedly: it only calls apt-get when something is missing.
#
# CHORUS_DEPS selects the set:
#   all (default)   the build, the tests, the benchmarks and the fuzzer
#   runtime-build   just what building chorusd and chorus needs (container images:
#                   no test, benchmark, fuzzer or ccache packages)
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake make pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev libfmt-dev libicu-dev libre2-dev
  prometheus-cpp-dev libcpp-httplib-dev nlohmann-json3-dev libcli11-dev
)
DEV_PACKAGES=(
  ccache libgtest-dev libgmock-dev libbenchmark-dev
  clang clang-format libclang-rt-14-dev openssl python3 haproxy
)

case "${CHORUS_DEPS:-all}" in
  all) PACKAGES=("${BUILD_PACKAGES[@]}" "${DEV_PACKAGES[@]}") ;;
  runtime-build) PACKAGES=("${BUILD_PACKAGES[@]}") ;;
  *) echo "install-deps: CHORUS_DEPS must be 'all' or 'runtime-build'" >&2; exit 2 ;;
esac

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The OpenAI client test (tests/http/openai-client) runs on Node.js: Debian's nodejs + npm
# unless a node and npm are already on the PATH.
if [[ "${CHORUS_DEPS:-all}" == all ]] && ! { command -v node && command -v npm; } > /dev/null; then
  missing+=(nodejs npm)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The official openai npm client at the version in its lock file (npm registry; afterwards the
# test runs offline).
if [[ "${CHORUS_DEPS:-all}" == all ]]; then
  client_dir="$(dirname "$0")/../tests/http/openai-client"
  if [[ ! -f "$client_dir/node_modules/openai/package.json" ]]; then
    echo "install-deps: npm ci in tests/http/openai-client"
    (cd "$client_dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
