#!/usr/bin/env bash
# Container smoke test (issue 16): builds docker/Dockerfile.cpu with podman and checks that the
# image serves the way docs/DEPLOYMENT.md says, with nothing but Debian's archive:
#   1. podman, buildah, mmdebstrap, runc from Debian when missing; podman set up for these
#      machines (runc, cgroupfs, file events, nofile and nproc <= the hard limits) through a
#      private containers.conf (CONTAINERS_CONF), so the host's podman configuration is left
#      alone;
#   2. the base image: `mmdebstrap --variant=minbase bookworm` (merged /usr without perl, docs
#      and man pages left out, like debian:12-slim) + `podman import`, made once and kept
#      (CHORUS_SMOKE_NEW_BASE=1 makes it again);
#   3. the image: `podman build --format docker` (the OCI format drops HEALTHCHECK), both stages
#      on the local base;
#   4. the container: read-only, all capabilities dropped, on non-default host ports; then
#      health, uid and read-only root, a generate with 4 agents, /metrics, `podman healthcheck
#      run`, and a drain with calls in flight (`podman stop`: exit 0, every call OK).
# Prints PASS/FAIL per check and exits 1 when any failed. The client is the image's own
# `chorus` run on the host network (CHORUS_SMOKE_CLIENT=PATH uses another binary).
# Environment: CHORUS_SMOKE_JOBS (compile jobs, default nproc), CHORUS_SMOKE_GRPC_PORT (55051),
# CHORUS_SMOKE_METRICS_PORT (59464), CHORUS_SMOKE_MAX_MB (image size limit, 250).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${CHORUS_SMOKE_JOBS:-$(nproc)}
GRPC_PORT=${CHORUS_SMOKE_GRPC_PORT:-55051}
METRICS_PORT=${CHORUS_SMOKE_METRICS_PORT:-59464}
MAX_MB=${CHORUS_SMOKE_MAX_MB:-250}
# The base image's tag carries a hash of how it is made, so a change here makes a new one.
MMDEBSTRAP_OPTS=(
  --variant=minbase
  # usr-is-merged instead of usrmerge, which would pull in perl (50 MB)
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  # no documentation, man pages or translations (as in debian:12-slim), in later layers too
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias'
)
BASE=localhost/chorus-base:bookworm-minbase-$(echo "${MMDEBSTRAP_OPTS[*]}" | sha256sum | cut -c1-8)
IMAGE=localhost/chorusd:smoke
NAME=chorusd-smoke-$$
ADDR=127.0.0.1:$GRPC_PORT
WORK=$(mktemp -d /tmp/chorus-smoke.XXXXXX)
START=$SECONDS
failures=0

step() { printf '[%4ds] %s\n' $((SECONDS - START)) "$*"; }
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
cleanup() {
  podman rm -f -t 0 "$NAME" > /dev/null 2>> "$WORK/podman.err" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. tools --------------------------------------------------------------------------------
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
need=()
for p in podman buildah mmdebstrap runc curl; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  step "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" > "$WORK/apt.log" 2>&1 ||
    { tail -n 20 "$WORK/apt.log"; exit 1; }
fi
# crun fails on the hybrid cgroup layout of these machines; podman's default rlimits (nofile
# 1048576, nproc 4194304) are above their hard limits (20000 open files), and runc could not
# set nproc at the hard limit either: 20000 of each works; no systemd: cgroupfs and a file
# event log.
limit() { local hard; hard=$(ulimit -H "$1"); [[ $hard == unlimited || $hard -gt 20000 ]] && hard=20000; echo "$hard"; }
nofile=$(limit -n)
nproc=$(limit -u)
cat > "$WORK/containers.conf" << EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF=$WORK/containers.conf

# ---- 2. base image ---------------------------------------------------------------------------
if [[ ${CHORUS_SMOKE_NEW_BASE:-0} == 1 ]] || ! podman image exists "$BASE"; then
  step "making $BASE with mmdebstrap"
  # The host's own Debian sources (its mirror and bookworm-updates, -security) when it has them.
  sources=()
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [[ -s $f ]]; then sources=("$f"); break; fi
  done
  $SUDO mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" bookworm "$WORK/base.tar" "${sources[@]}" < /dev/null
  podman import --change 'CMD ["/bin/bash"]' "$WORK/base.tar" "$BASE" > /dev/null
  rm -f "$WORK/base.tar"
fi
step "base image $BASE: $(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%.0f MB", $1 / 1e6}')"

# ---- 3. build --------------------------------------------------------------------------------
step "building $IMAGE (docker/Dockerfile.cpu, $JOBS jobs)"
if podman build --format docker -f docker/Dockerfile.cpu -t "$IMAGE" \
     --build-arg BASE_IMAGE="$BASE" --build-arg RUNTIME_IMAGE="$BASE" --build-arg JOBS="$JOBS" \
     --build-arg REVISION="$(git rev-parse HEAD 2> /dev/null || echo unknown)" \
     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" . > "$WORK/build.log" 2>&1; then
  pass "build ($((SECONDS - START)) s so far)"
else
  tail -n 40 "$WORK/build.log"
  fail "build"
  exit 1
fi
# Old build layers go after three days; recent ones stay as the next run's cache.
podman image prune -f --filter until=72h > /dev/null 2>&1 || true
size_mb=$(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f", $1 / 1e6}')
if [[ $size_mb -le $MAX_MB ]]; then pass "image size $size_mb MB (<= $MAX_MB)"; else fail "image size $size_mb MB (> $MAX_MB)"; fi
labels=$(podman image inspect --format '{{json .Labels}}' "$IMAGE")
if grep -q '"org.opencontainers.image.revision"' <<< "$labels" && grep -q '"org.opencontainers.image.title":"chorusd"' <<< "$labels"; then
  pass "OCI labels"
else
  fail "OCI labels: $labels"
fi

# ---- 4. run ----------------------------------------------------------------------------------
if [[ -n ${CHORUS_SMOKE_CLIENT:-} ]]; then
  client() { "$CHORUS_SMOKE_CLIENT" "$@"; }
else
  client() { podman run --rm --network host --entrypoint chorus "$IMAGE" "$@"; }
fi

step "starting $NAME on $ADDR (metrics 127.0.0.1:$METRICS_PORT), read-only, no capabilities"
# No systemd here to time the image's HEALTHCHECK (podman logs errors about its timers, kept in
# podman.err): `podman healthcheck run` runs it below.
podman run -d --name "$NAME" --read-only --cap-drop=ALL --security-opt no-new-privileges \
  --health-interval disable -p "$ADDR:50051" -p "127.0.0.1:$METRICS_PORT:9464" "$IMAGE" \
  > /dev/null 2>> "$WORK/podman.err"
healthy=0
for _ in $(seq 120); do
  if client health --addr "$ADDR" > /dev/null 2>&1; then healthy=1; break; fi
  sleep 0.5
done
if [[ $healthy == 1 ]]; then
  pass "chorus health: SERVING"
else
  podman logs "$NAME" 2>&1 | tail -n 20
  cat "$WORK/podman.err"
  fail "chorus health: not SERVING within 60 s"
  exit 1
fi

uid=$(podman exec "$NAME" id -u)
caps=$(podman exec "$NAME" sh -c 'grep CapEff /proc/1/status' | awk '{print $2}')
if [[ $uid == 10001 && $caps == 0000000000000000 ]]; then pass "uid 10001, no capabilities"; else fail "uid $uid, CapEff $caps"; fi
if podman exec "$NAME" sh -c ': > /opt/chorus/write-test' 2> /dev/null; then fail "root filesystem is writable"; else pass "read-only root filesystem"; fi

if client generate "Once upon a time" --agents 4 --max-tokens 32 --seed 7 --drafts --addr "$ADDR" > "$WORK/generate.out" 2>&1 &&
   grep -q -- "--- draft 3" "$WORK/generate.out" && grep -q -- "--- answer" "$WORK/generate.out"; then
  pass "generate with 4 agents: $(tail -n 1 "$WORK/generate.out" | cut -c1-60)"
else
  cat "$WORK/generate.out"
  fail "generate with 4 agents"
fi

if curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" > "$WORK/metrics.txt" &&
   grep -q '^chorus_requests_total{.*} [1-9]' "$WORK/metrics.txt" && grep -q '^chorus_kv_blocks_total ' "$WORK/metrics.txt"; then
  pass "/metrics: $(grep -c '^chorus_' "$WORK/metrics.txt") chorus_ samples, requests counted"
else
  head -n 20 "$WORK/metrics.txt" 2> /dev/null || true
  fail "/metrics"
fi

if podman healthcheck run "$NAME" > "$WORK/healthcheck.out" 2>&1; then
  pass "podman healthcheck run: exit 0 $(tr '\n' ' ' < "$WORK/healthcheck.out")"
else
  cat "$WORK/healthcheck.out"
  fail "podman healthcheck run (an OCI-format image has no HEALTHCHECK: --format docker)"
fi

# Drain: 4 long calls (16 agents, no early stop), `podman stop` (SIGTERM) once all have arrived
# and some are still running; chorusd finishes them and exits 0.
step "drain: 4 calls in flight, then podman stop"
sum_metrics() {  # the sum of the samples of the metrics matching $1
  curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2> /dev/null | awk -v re="$1" '$0 ~ re {n += $NF} END {print n + 0}'
}
done_before=$(sum_metrics '^chorus_requests_total[{ ]')
pids=()
for i in 1 2 3 4; do
  client generate "Once upon a time" --agents 16 --max-tokens 2000 --merge best_logprob --seed "$i" \
    --timeout-ms 60000 --addr "$ADDR" > "$WORK/drain-$i.out" 2>&1 &
  pids+=($!)
done
inflight=0
arrived=0
for _ in $(seq 300); do
  inflight=$(sum_metrics '^chorus_(running|waiting)_requests ')
  arrived=$(($(sum_metrics '^chorus_requests_total[{ ]') - done_before + inflight))
  [[ $arrived -ge 4 || $inflight -ge 4 ]] && break
  sleep 0.1
done
podman stop -t 40 "$NAME" > /dev/null 2>> "$WORK/podman.err"
exit_code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
ok=0
for i in "${!pids[@]}"; do
  if wait "${pids[$i]}"; then ok=$((ok + 1)); else sed 's/^/  /' "$WORK/drain-$((i + 1)).out"; fi
done
drained=$(podman logs "$NAME" 2>&1 | sed -n 's/.*draining \([0-9]*\) in-flight.*/\1/p' | tail -n 1)
if [[ $exit_code == 0 && $ok == 4 && $inflight -ge 1 && ${drained:-0} -ge 1 ]]; then
  pass "drain: exit 0, 4/4 calls OK, $drained in flight at SIGTERM"
else
  podman logs "$NAME" 2>&1 | tail -n 10
  fail "drain: exit code $exit_code, $ok/4 calls OK, ${drained:-?} in flight at SIGTERM ($inflight seen before stop)"
fi

step "done"
if [[ $failures -eq 0 ]]; then
  echo "container smoke: all checks passed in $((SECONDS - START)) s"
else
  echo "container smoke: $failures check(s) FAILED"
  exit 1
fi
