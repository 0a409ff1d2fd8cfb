#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests (docker/k8s): renders each overlay, validates every
# object against the Kubernetes schemas, and asserts the restricted Pod Security fields and the
# chorusd sizing rules (tests/deploy/check-k8s.mjs). Needs node and npm; the npm packages are
# pinned by tests/deploy/package-lock.json and installed by `npm ci` when missing or stale.
#   scripts/check-k8s.sh                 the checks; exit 1 on any failure
#   scripts/check-k8s.sh --print cpu     the rendered overlay, like `kubectl kustomize`
set -euo pipefail
cd "$(dirname "$0")/../tests/deploy"

if ! command -v node > /dev/null; then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  echo "check-k8s: installing nodejs and npm (Debian)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
command -v npm > /dev/null || { echo "check-k8s: node is installed without npm" >&2; exit 1; }
# npm ci records what it installed in node_modules/.package-lock.json.
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node check-k8s.mjs "$@"
