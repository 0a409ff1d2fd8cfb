#!/usr/bin/env bash
# The GPU run (issue #18): one run of about 8 minutes on a bare GPU machine that cannot come back
# green without data. Phases, in order, each with its own time limit inside one overall deadline:
#   preflight  nvidia-smi (card, driver, memory), CUDA driver and runtime versions, `ldd` of every
#              binary it runs, the test list; any failure here stops the run (exit 2)
#   build      only when no binaries were carried (gpu-bundle/) or built ($BUILD)
#   micro      chorus-bench-cuda: copy bandwidth, cuBLAS GEMM rates, GEMV (and whatever else it
#              measures: attention, LM head)
#   parity     every CUDA test in its own process, one verdict each (SKIPPED counts as a failure)
#   decode     1B-shaped BF16, Q4_0 and Q4_K_M models at batch 1 and 8, with and without graphs,
#              Q4_0 also with ggml's blocks (CHORUS_CUDA_REPACK=0); tokens sampled on the device
#   sanitizer  compute-sanitizer memcheck, racecheck and synccheck on the kernel tests
# OUT/SUMMARY.md is rewritten after every phase (and after every parity test), so a run killed at
# its limit keeps what it did. At most 8 files are written to OUT.
#
# Usage: scripts/gpu-check.sh [--dry-run] [OUT]     (OUT defaults to $OUT, else gpu-check-out)
#   --dry-run  list the phases, their time limits, the commands and the files, run nothing, exit 0
# Environment: GPU_CHECK_DEADLINE_S (480), BUILD (build-gpu), GPU_BUNDLE (gpu-bundle),
#   MODELS_DIR (/tmp/chorus-bench-models), CHORUS_SHARED_DIR (the shared fixtures; default the
#   bundle's copy, else ../shared), SANITIZER_FILTER (gtest filter of the kernel tests).
# Exit: 0 every phase passed; 1 a phase failed, timed out or did not run; 2 preflight failed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-480}
BUILD=${BUILD:-build-gpu}
BUNDLE=${GPU_BUNDLE:-gpu-bundle}
UNPACKED=${TMPDIR:-/tmp}/chorus-gpu-bundle  # the bundle is unpacked here (the carried folder stays small)
MODELS_DIR=${MODELS_DIR:-/tmp/chorus-bench-models}
SANITIZER_FILTER=${SANITIZER_FILTER:-'CudaTest.*-*Model*:*LongContext*:*RealKQuant*:*Greedy*:*Fused*:*Graphs*'}
MULTI_GPU_TESTS='*TwoGpus*'  # not run (N/A) on a machine with one GPU
FULL_SIZE_TEST='CudaTest.FullSizeModelLogitsMatchCpu'  # run by the decode phase on its 1B model
PER_TEST_S=120               # longest a single parity test may run
DECODE_TYPES=(bf16 q4_0 q4_k_m)
DECODE_BATCHES=(1 8)
SANITIZER_TOOLS=(memcheck synccheck racecheck)  # racecheck, the slowest, gets what is left
RESULT_FILES=(SUMMARY.md log.txt preflight.txt microbench.json parity.txt decode.jsonl sanitizer.txt)

# Time: preflight has a fixed limit; the measuring phases share the rest of the deadline in these
# proportions (seconds for the default 480 s deadline). A phase that ends early leaves its time
# to the next; a phase never runs past its slot's end.
PREFLIGHT_S=25
MEASURE_PHASES=(micro parity decode sanitizer)
declare -A SHARE=([micro]=45 [parity]=135 [decode]=175 [sanitizer]=100)

PHASES=(preflight micro parity decode sanitizer)
declare -A STATUS=() LIMIT=() USED=() NOTE=() BEGIN=() END=()
CURRENT=""
GPU_COUNT=0
BIN_FROM=""
MODELS_PID=""
NEED_BUILD=""
T0=$SECONDS

# ---------------------------------------------------------------------------------------------
# Helpers

now() { echo $((SECONDS - T0)); }
log() { echo "[gpu-check $(now)s] $*" | tee -a "$OUT/log.txt" >&2; }
min() { if (($1 < $2)); then echo "$1"; else echo "$2"; fi; }
# Runs a command for at most $1 seconds (then TERM, and KILL 5 s later).
limited() {
  local s=$1
  shift
  ((s >= 1)) || s=1
  timeout -k 5 "$s" "$@"
}
phase_left() { echo $((END[$CURRENT] - $(now))); }
md_cell() { printf '%s' "$1" | tr '\n|' ' /' | cut -c1-160; }
section() { echo "$WORK/sec-$1.md"; }

phase_begin() {
  CURRENT=$1
  BEGIN[$1]=$(now)
  STATUS[$1]=RUNNING
  # What this phase may use: its slot plus what earlier phases left.
  [[ -n ${END[$1]:-} ]] && LIMIT[$1]=$((END[$1] - BEGIN[$1]))
  log "== phase $1 (limit ${LIMIT[$1]} s)"
  write_summary
}

# phase_end STATUS NOTE
phase_end() {
  STATUS[$CURRENT]=$1
  NOTE[$CURRENT]=$2
  USED[$CURRENT]=$(($(now) - BEGIN[$CURRENT]))
  log "== phase $CURRENT: $1: $2"
  CURRENT=""
  write_summary
}

skip_rest() {  # marks every phase still pending as not run, with a reason
  local p
  for p in "${PHASES[@]}"; do
    [[ ${STATUS[$p]} == PENDING ]] && { STATUS[$p]="NOT RUN"; NOTE[$p]=$1; }
  done
  write_summary
}

overall() {
  local p failed=()
  if [[ ${STATUS[preflight]} == FAIL ]]; then
    echo "FAIL: ${NOTE[preflight]}"
    return
  fi
  for p in "${PHASES[@]}"; do
    if [[ ${STATUS[$p]} == RUNNING ]]; then
      echo "INCOMPLETE: phase $p was running when this was written"
      return
    fi
    [[ ${STATUS[$p]} == PASS || ${STATUS[$p]} == PENDING ]] || failed+=("$p ${STATUS[$p]}")
  done
  for p in "${PHASES[@]}"; do
    [[ ${STATUS[$p]} == PENDING ]] && { echo "INCOMPLETE: phase $p not reached yet"; return; }
  done
  if ((${#failed[@]} == 0)); then echo PASS; else (IFS=,; echo "FAIL:${failed[*]/#/ }"); fi
}

write_summary() {
  local p f used tmp="$WORK/SUMMARY.md"
  {
    echo "# gpu-check: $(overall)"
    echo
    echo "Started $STARTED_UTC on $(hostname); deadline $DEADLINE_S s, $(now) s elapsed;" \
      "commit $COMMIT; binaries: ${BIN_FROM:-none}."
    echo
    echo "| phase | status | limit s | used s | result |"
    echo "|---|---|---|---|---|"
    for p in "${PHASES[@]}"; do
      used=${USED[$p]:--}
      [[ ${STATUS[$p]} == RUNNING ]] && used="$(($(now) - BEGIN[$p])) so far"
      echo "| $p | ${STATUS[$p]} | ${LIMIT[$p]:--} | $used | $(md_cell "${NOTE[$p]:-}") |"
    done
    for p in "${PHASES[@]}"; do
      if [[ -s $(section "$p") ]]; then
        echo
        echo "## $p"
        echo
        cat "$(section "$p")"
      fi
    done
    echo
    echo -n "Files in $OUT:"
    for f in "${RESULT_FILES[@]}"; do [[ -f $OUT/$f ]] && echo -n " $f"; done
    echo " (log.txt has every command's messages)."
  } > "$tmp"
  cp "$tmp" "$OUT/SUMMARY.md"
}

on_exit() {
  local rc=$?
  if [[ -n $MODELS_PID ]] && kill -0 "$MODELS_PID" 2> /dev/null; then kill "$MODELS_PID" 2> /dev/null || true; fi
  if [[ -n $CURRENT ]]; then
    STATUS[$CURRENT]=FAIL
    NOTE[$CURRENT]="interrupted (exit $rc) at $(now) s${NOTE[$CURRENT]:+; ${NOTE[$CURRENT]}}"
    USED[$CURRENT]=$(($(now) - BEGIN[$CURRENT]))
    CURRENT=""
  fi
  skip_rest "the run ended early (exit $rc)"
  cat "$OUT/SUMMARY.md"
  rm -rf "$WORK"
}

# ---------------------------------------------------------------------------------------------
# Binaries and the commands run (the same builders serve --dry-run)

bundle_present() { [[ -f $BUNDLE/bundle.tgz ]]; }

set_binaries() {  # $1: directory layout (bundle or build)
  if [[ $1 == bundle ]]; then
    CUDA_TEST=$UNPACKED/bin/cuda_test MICRO=$UNPACKED/bin/chorus-bench-cuda
    BENCH=$UNPACKED/bin/chorus-bench-model MKMODEL=$UNPACKED/bin/chorus-mkmodel
  else
    CUDA_TEST=$BUILD/tests/cuda_test MICRO=$BUILD/src/chorus-bench-cuda
    BENCH=$BUILD/bench/chorus-bench-model MKMODEL=$BUILD/src/tools/chorus-mkmodel
  fi
  BINARIES=("$CUDA_TEST" "$MICRO" "$BENCH" "$MKMODEL")
}

# The tests find models/ and the shared fixtures through these (tests/test_util.h); the build
# machine's paths are only the fallback.
set_source_paths() {
  export CHORUS_SOURCE_DIR=$REPO
  if [[ -z ${CHORUS_SHARED_DIR:-} ]]; then
    if bundle_present && grep -q '^fixtures: included' "$BUNDLE/BUILD-INFO.txt" 2> /dev/null; then
      CHORUS_SHARED_DIR=$UNPACKED/shared
    else
      CHORUS_SHARED_DIR=$(cd "$REPO/.." && pwd)/shared
    fi
  fi
  export CHORUS_SHARED_DIR
}

cuda_lib_path() {
  local d dirs=()
  [[ $BIN_FROM == "$BUNDLE"* ]] && dirs+=("$UNPACKED/lib")
  shopt -s nullglob
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/*/lib \
    /usr/local/lib/python3*/dist-packages/nvidia/*/lib /opt/*/.venv/lib/python3*/site-packages/nvidia/*/lib \
    /usr/lib/python3*/site-packages/nvidia/*/lib /usr/local/nvidia/lib64; do
    [[ -d $d ]] && dirs+=("$d")
  done
  shopt -u nullglob
  (IFS=:; echo "${dirs[*]}")
}

sanitizer_bin() { command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer; }
micro_cmd() { CMD=("$MICRO"); }
test_cmd() { CMD=("$CUDA_TEST" "--gtest_filter=$1"); }
full_size_cmd() { CMD=(env "CHORUS_PARITY_MODEL=$MODELS_DIR/1b-q4_0.gguf" "$CUDA_TEST" "--gtest_filter=$FULL_SIZE_TEST"); }
mkmodel_cmd() {  # type out
  CMD=("$MKMODEL" --out "$2" --dim 2048 --layers 16 --heads 32 --kv-heads 8 --ffn 8192
    --vocab-size 128256 --type "$1" --rope-base 500000)
}
bench_cmd() {  # variant type batch
  CMD=()
  [[ $1 == no_graphs ]] && CMD=(env CHORUS_CUDA_GRAPHS=0)
  [[ $1 == no_repack ]] && CMD=(env CHORUS_CUDA_REPACK=0)
  CMD+=("$BENCH" --backend cuda --model "$MODELS_DIR/1b-$2.gguf" --batch "$3" --prompt-tokens 512
    --decode-tokens 32 --repeats 2)
}
sanitizer_cmd() {
  CMD=("$(sanitizer_bin)" --tool "$1" --error-exitcode 3 --print-limit 30 "$CUDA_TEST"
    "--gtest_filter=$SANITIZER_FILTER")
}
build_cmds() {
  BUILD_CONFIGURE=(cmake -S . -B "$BUILD" -DCHORUS_CUDA=ON -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_CUDA_ARCHITECTURES=native -DCMAKE_CUDA_FLAGS=-lineinfo)
  BUILD_BUILD=(cmake --build "$BUILD" -j"$(nproc)" --target cuda_test chorus-bench-model chorus-mkmodel
    chorus-bench-cuda)
}

# ---------------------------------------------------------------------------------------------
# Phases

phase_preflight() {
  phase_begin preflight
  local pf=$OUT/preflight.txt sec fails=() q="" rc=0 cuda_drv="" cudart="" nvcc="" n line
  sec=$(section preflight)
  : > "$pf"
  # 1. The device.
  if ! command -v nvidia-smi > /dev/null; then
    fails+=("no device: nvidia-smi not found (no NVIDIA driver on this machine)")
    echo "nvidia-smi: not found" >> "$pf"
  else
    q=$(limited 15 nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap \
      --format=csv,noheader 2>&1) || q=$(limited 15 nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used \
      --format=csv,noheader 2>&1) || rc=$?
    if ((rc != 0)) || ! grep -q , <<< "$q"; then
      fails+=("no device: nvidia-smi lists no GPU (exit $rc: $(head -1 <<< "$q"))")
      echo "$q" >> "$pf"
    else
      GPU_COUNT=$(grep -c , <<< "$q")
      echo "- GPUs ($GPU_COUNT): index, name, driver, memory total, used, compute capability" >> "$sec"
      while IFS= read -r line; do echo "  - $line"; done <<< "$q" >> "$sec"
      { limited 15 nvidia-smi || true; } >> "$pf" 2>&1
      cuda_drv=$(grep -o 'CUDA Version: [0-9.]*' "$pf" | head -1 | awk '{print $3}') || true
    fi
  fi
  echo "- CUDA supported by the driver: ${cuda_drv:-unknown}" >> "$sec"
  # 2. Toolchain and bundle versions.
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  if [[ -x $nvcc ]]; then nvcc=$("$nvcc" --version 2>&1 | grep -i release | head -1) || true; else nvcc=""; fi
  echo "- nvcc on this machine: ${nvcc:-not found}" >> "$sec"
  if [[ -x $(sanitizer_bin) ]]; then
    echo "- compute-sanitizer: $(sanitizer_bin) $("$(sanitizer_bin)" --version 2>&1 | grep -i version | head -1)" >> "$sec"
  else
    echo "- compute-sanitizer: not found (the sanitizer phase will fail)" >> "$sec"
  fi
  # 3. The binaries: carried (gpu-bundle/), else built ($BUILD), else the build phase makes them.
  if bundle_present; then
    rm -rf "$UNPACKED" && mkdir -p "$UNPACKED"
    tar xzf "$BUNDLE/bundle.tgz" -C "$UNPACKED" || fails+=("cannot unpack $BUNDLE/bundle.tgz")
  fi
  if bundle_present && [[ -x $UNPACKED/bin/cuda_test ]]; then
    set_binaries bundle
    BIN_FROM="$BUNDLE (carried; $(grep -E '^(commit|built):' "$BUNDLE/BUILD-INFO.txt" 2> /dev/null | tr '\n' ' ' || true))"
  elif [[ -x $BUILD/tests/cuda_test ]]; then
    set_binaries build
    BIN_FROM="$BUILD (built here)"
  else
    set_binaries build
    NEED_BUILD=1
    echo "- binaries: none in $BUNDLE/ or $BUILD/ (the build phase makes them when a device is present)" >> "$sec"
  fi
  set_source_paths
  LD_LIBRARY_PATH="$(cuda_lib_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
  if [[ -f $BUNDLE/BUILD-INFO.txt ]]; then
    echo "- bundle: $(tr '\n' ';' < "$BUNDLE/BUILD-INFO.txt")" >> "$sec"
    grep -q -- '-lineinfo' "$BUNDLE/BUILD-INFO.txt" ||
      echo "- WARNING: the bundle's kernels were built without -lineinfo (sanitizer reports without source lines)" >> "$sec"
  fi
  echo "- tests read CHORUS_SOURCE_DIR=$CHORUS_SOURCE_DIR, CHORUS_SHARED_DIR=$CHORUS_SHARED_DIR" \
    "(real-formats fixtures $([[ -f $CHORUS_SHARED_DIR/fixtures/real-formats/expected.json ]] && echo present || echo ABSENT))" >> "$sec"
  # 4. Shared libraries and the test list (also without a device: they tell what else is wrong).
  if [[ -z $NEED_BUILD ]]; then
    check_binaries fails
    cudart=$(ldd "$CUDA_TEST" 2> /dev/null | awk '/libcudart/ {print $3}' | head -1) || true
    [[ -n $cudart ]] && cudart=$(readlink -f "$cudart" | sed -n 's/.*libcudart\.so\.//p')
    echo "- CUDA runtime loaded by cuda_test: ${cudart:-unknown}" >> "$sec"
    if [[ -n $cudart && -n $cuda_drv ]] && ((${cudart%%.*} > ${cuda_drv%%.*})); then
      fails+=("driver too old: it supports CUDA $cuda_drv, the binaries load cudart $cudart")
    fi
  fi
  command -v python3 > /dev/null || fails+=("python3 not found (needed to read the benchmarks' JSON)")
  if ((${#fails[@]} > 0)); then
    printf -- '- **FAILED**: %s\n' "${fails[@]}" >> "$sec"
    phase_end FAIL "$(IFS=';'; echo "${fails[*]}")"
    skip_rest "preflight failed"
    return
  fi
  n=$(wc -l < "$WORK/tests.txt" 2> /dev/null || echo 0)
  phase_end PASS "$(head -1 <<< "$q" | cut -d, -f2,4 | sed 's/^ //') x$GPU_COUNT; driver CUDA $cuda_drv; cudart ${cudart:-?}; ${n} tests listed"
}

# ldd of every binary and the test list; appends failures to the array named $1.
check_binaries() {
  local -n failures=$1
  local b out missing rc=0 sec
  sec=$(section preflight)
  for b in "${BINARIES[@]}"; do
    if [[ ! -x $b ]]; then
      failures+=("binary missing: $b")
      continue
    fi
    out=$(ldd "$b" 2>&1) || true
    { echo "== ldd $b"; echo "$out"; } >> "$OUT/preflight.txt"
    # "libX.so => not found", or "...: version `GLIBCXX_3.4.32' not found (required by ...)".
    missing=$(awk '/=> not found/ {print $1; next} /not found/ {sub(/^[^:]*: /, ""); sub(/ \(required.*/, ""); print}' <<< "$out" |
      sort -u | tr '\n' ' ')
    [[ -n $missing ]] && failures+=("$(basename "$b") needs libraries not found: ${missing% } (LD_LIBRARY_PATH in preflight.txt)")
  done
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$OUT/preflight.txt"
  [[ -x $CUDA_TEST ]] || return 0
  out=$(limited 30 "$CUDA_TEST" --gtest_list_tests 2>&1) || rc=$?
  awk '/^[^ ].*\.$/ {suite = $1; next} /^  [^ ]/ {print suite $1}' <<< "$out" > "$WORK/tests.txt"
  if ((rc != 0)); then
    failures+=("cuda_test --gtest_list_tests failed (exit $rc: $(tail -1 <<< "$out"))")
  elif [[ ! -s $WORK/tests.txt ]]; then
    failures+=("cuda_test lists zero tests")
  else
    echo "- cuda_test lists $(wc -l < "$WORK/tests.txt") tests" >> "$sec"
  fi
}

phase_build() {
  phase_begin build
  local fails=() rc=0
  build_cmds
  log "building with CUDA into $BUILD (a fresh build may not fit the deadline: carry gpu-bundle/ instead)"
  { limited "$(phase_left)" "${BUILD_CONFIGURE[@]}" &&
    limited "$(phase_left)" "${BUILD_BUILD[@]}"; } >> "$OUT/log.txt" 2>&1 || rc=$?
  if ((rc != 0)); then
    phase_end FAIL "build failed or timed out (exit $rc; see log.txt)"
    skip_rest "no binaries"
    return
  fi
  BIN_FROM="$BUILD (built by this run)"
  check_binaries fails
  if ((${#fails[@]} > 0)); then
    phase_end FAIL "$(IFS=';'; echo "${fails[*]}")"
    skip_rest "no usable binaries"
    return
  fi
  phase_end PASS "built in $(($(now) - BEGIN[build])) s"
}

# Gives each measuring phase its share of what is left of the deadline.
plan_schedule() {
  local p t total=0 left
  t=$(now)
  left=$((DEADLINE_S - t))
  for p in "${MEASURE_PHASES[@]}"; do total=$((total + SHARE[$p])); done
  for p in "${MEASURE_PHASES[@]}"; do
    LIMIT[$p]=$((SHARE[$p] * left / total))
    t=$((t + LIMIT[$p]))
    END[$p]=$t
  done
}

phase_micro() {
  phase_begin micro
  local rc=0 verdict
  micro_cmd
  limited "$(phase_left)" "${CMD[@]}" > "$OUT/microbench.json" 2>> "$OUT/log.txt" || rc=$?
  verdict=$(python3 - "$OUT/microbench.json" "$rc" "$(section micro)" << 'PY'
import json, sys
path, rc, sec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = []
for line in open(path, errors="replace"):
    try:
        rows.append(json.loads(line))
    except ValueError:
        pass
if not rows:
    print(f"FAIL\tno JSON from chorus-bench-cuda (exit {rc})"); sys.exit()
r = rows[-1]
if r.get("device") in (None, "none"):
    print("FAIL\tno device: chorus-bench-cuda printed {\"device\": \"none\"} (the CUDA runtime sees no GPU)"); sys.exit()
bw = r.get("copy_gb_per_s") or 0
out = [f"Card {r['device']} ({r.get('memory_gib')} GiB): copy {bw} GB/s (read + write); cuBLAS GEMM "
       f"F32 {r.get('gemm_f32_tflops')} / F16 {r.get('gemm_f16_tflops')} / BF16 {r.get('gemm_bf16_tflops')} TFLOP/s."]
best = 0
for key, val in r.items():  # every list of measurements (gemv, and attention or lm_head when present)
    if not (isinstance(val, list) and val and isinstance(val[0], dict)):
        continue
    cols = list(val[0].keys())
    rate = next((c for c in cols if c.endswith("gb_per_s")), None) if bw else None
    out += ["", f"{key}:", "", "| " + " | ".join(cols + (["fraction of copy"] if rate else [])) + " |",
            "|" + "---|" * (len(cols) + (1 if rate else 0))]
    for m in val:
        cells = [str(m.get(c)) for c in cols]
        if rate:
            frac = m.get(rate, 0) / bw
            best = max(best, frac) if key == "gemv" else best
            cells.append(f"{frac:.2f}")
        out.append("| " + " | ".join(cells) + " |")
missing = [k for k in ("attention", "lm_head") if k not in r]
if missing:
    out += ["", f"Not measured by this chorus-bench-cuda: {', '.join(missing)}."]
open(sec, "w").write("\n".join(out) + "\n")
err = r.get("cuda_error", "no error")
note = f"copy {bw} GB/s; GEMM BF16 {r.get('gemm_bf16_tflops')} TFLOP/s; best GEMV {best:.2f} of copy"
if rc != 0 or err != "no error":
    print(f"FAIL\texit {rc}, CUDA error '{err}'; {note}")
else:
    print(f"PASS\t{note}")
PY
  ) || verdict=$'FAIL\tcould not read microbench.json'
  phase_end "${verdict%%$'\t'*}" "${verdict#*$'\t'}"
  if [[ ${NOTE[micro]} == "no device"* ]]; then skip_rest "the CUDA runtime sees no device (micro phase)"; fi
}

# Sets VERDICT and DETAIL from a test's exit code ($1) and output file ($2).
test_verdict() {
  local rc=$1 f=$2
  DETAIL=""
  if ((rc == 124 || rc == 137)); then
    VERDICT=TIMEOUT DETAIL="killed at its time limit"
  elif ((rc > 128)); then
    VERDICT=CRASH DETAIL="signal $((rc - 128)): $(grep -v '^\[' "$f" | tail -1 || true)"
  elif ((rc != 0)); then
    VERDICT=FAIL DETAIL=$(grep -m1 -E 'Failure|[Ee]rror|Expected|Which is' "$f" || tail -1 "$f")
  elif grep -q '^\[  SKIPPED \]' "$f"; then
    VERDICT=SKIPPED DETAIL="did not test: $(grep -m1 -A1 ': Skipped$' "$f" | tail -1 || true)"
  elif grep -qx '\[  PASSED  \] 1 test\.' "$f"; then
    VERDICT=PASS
  else
    VERDICT="NO RESULT" DETAIL="no '[  PASSED  ] 1 test.' line (the filter matched nothing?)"
  fi
}

phase_parity() {
  phase_begin parity
  local sec t t1 rc left pass=0 bad=0 na=0 total one=$WORK/one.txt
  sec=$(section parity)
  total=$(wc -l < "$WORK/tests.txt")
  start_models
  : > "$OUT/parity.txt"
  printf '| test | verdict | s | detail |\n|---|---|---|---|\n' > "$sec"
  while read -r t; do
    # shellcheck disable=SC2053  # glob match on purpose
    if [[ $t == "$FULL_SIZE_TEST" ]]; then
      echo "| $t | N/A here | - | runs in the decode phase on the 1B Q4_0 model |" >> "$sec"
      na=$((na + 1))
      continue
    fi
    if [[ $t == $MULTI_GPU_TESTS ]] && ((GPU_COUNT < 2)); then
      echo "| $t | N/A | - | needs 2 GPUs, this machine has $GPU_COUNT |" >> "$sec"
      na=$((na + 1))
      continue
    fi
    left=$(phase_left)
    if ((left < 5)); then
      echo "| $t | NOT RUN | - | the phase's time was spent |" >> "$sec"
      bad=$((bad + 1))
      continue
    fi
    t1=$SECONDS rc=0
    test_cmd "$t"
    limited "$(min "$PER_TEST_S" "$left")" "${CMD[@]}" > "$one" 2>&1 < /dev/null || rc=$?
    { echo "===== $t: exit $rc, $((SECONDS - t1)) s"; cat "$one"; } >> "$OUT/parity.txt"
    test_verdict "$rc" "$one"
    echo "| $t | $VERDICT | $((SECONDS - t1)) | $(md_cell "$DETAIL") |" >> "$sec"
    if [[ $VERDICT == PASS ]]; then pass=$((pass + 1)); else bad=$((bad + 1)); fi
    NOTE[parity]="$pass passed, $bad failed of $total so far"
    write_summary
  done < "$WORK/tests.txt"
  if ((bad == 0 && pass > 0)); then
    phase_end PASS "all $pass tests passed ($na N/A)"
  else
    phase_end FAIL "$pass of $((total - na)) tests passed; $bad failed, skipped, timed out or not run ($na N/A)"
  fi
}

# The decode models are generated on the CPU in the background while the parity tests run.
start_models() {
  mkdir -p "$MODELS_DIR"
  (
    trap 'kill "$child" 2> /dev/null; exit 1' TERM
    for t in "${DECODE_TYPES[@]}"; do
      f=$MODELS_DIR/1b-$t.gguf
      [[ -f $f ]] && continue
      mkmodel_cmd "$t" "$f.part"
      "${CMD[@]}" > /dev/null &
      child=$!
      wait "$child" && mv "$f.part" "$f" && echo "[gpu-check] generated $f"
    done
  ) >> "$OUT/log.txt" 2>&1 &
  MODELS_PID=$!
}

phase_decode() {
  phase_begin decode
  local v t b rc=0 line runs=0 t1
  [[ -n $MODELS_PID ]] || start_models
  while kill -0 "$MODELS_PID" 2> /dev/null && (($(phase_left) > 20)); do sleep 1; done
  if kill -0 "$MODELS_PID" 2> /dev/null; then
    log "model generation still running; the missing models' runs fail"
  fi
  : > "$OUT/decode.jsonl"
  # The full-size parity test first: prefill and decode logits of the 1B Q4_0 model against the
  # CPU backend (its output goes to parity.txt, its verdict into this phase's).
  local parity_1b="NOT RUN (no 1B Q4_0 model)" one=$WORK/one.txt
  if [[ -f $MODELS_DIR/1b-q4_0.gguf ]] && (($(phase_left) > 30)); then
    t1=$SECONDS rc=0
    full_size_cmd
    limited "$(min 60 "$(phase_left)")" "${CMD[@]}" > "$one" 2>&1 < /dev/null || rc=$?
    { echo "===== $FULL_SIZE_TEST (1B Q4_0): exit $rc, $((SECONDS - t1)) s"; cat "$one"; } >> "$OUT/parity.txt"
    test_verdict "$rc" "$one"
    parity_1b="$VERDICT in $((SECONDS - t1)) s${DETAIL:+: $DETAIL}"
  fi
  log "1B parity: $parity_1b"
  for v in graphs no_graphs no_repack; do
    for t in "${DECODE_TYPES[@]}"; do
      # ggml's Q4_0 blocks against the regrouped layout (CHORUS_CUDA_REPACK=0): Q4_0 only.
      [[ $v == no_repack && $t != q4_0 ]] && continue
      for b in "${DECODE_BATCHES[@]}"; do
        runs=$((runs + 1)) rc=0
        bench_cmd "$v" "$t" "$b"
        if [[ ! -f $MODELS_DIR/1b-$t.gguf ]]; then
          line="{\"error\": \"model not generated (see log.txt)\"}"
        elif (($(phase_left) < 5)); then
          line="{\"error\": \"not run: the phase's time was spent\"}"
        else
          t1=$SECONDS
          limited "$(min 90 "$(phase_left)")" "${CMD[@]}" > "$WORK/bench.out" 2> "$WORK/bench.err" || rc=$?
          { echo "== ${CMD[*]}: exit $rc"; cat "$WORK/bench.err"; } >> "$OUT/log.txt"
          line=$(grep -m1 '^{' "$WORK/bench.out") ||
            line="{\"error\": \"no JSON (exit $rc, $((SECONDS - t1)) s): $(tail -1 "$WORK/bench.err" | tr -d '\\"')\"}"
        fi
        echo "{\"variant\": \"$v\", \"type\": \"$t\", \"batch\": $b, \"exit\": $rc, ${line#\{}" >> "$OUT/decode.jsonl"
      done
    done
    write_summary
  done
  local verdict
  verdict=$(python3 - "$OUT/decode.jsonl" "$OUT/microbench.json" "$runs" "$(section decode)" << 'PY'
import json, sys
path, micro, runs, sec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.strip()]
bw = 0
try:
    bw = [json.loads(l) for l in open(micro) if l.startswith("{")][-1].get("copy_gb_per_s", 0) * 1e9
except Exception:
    pass
ok = {(r["variant"], r["type"], r["batch"]): r for r in rows if "decode_step_ms" in r}
bad = [r for r in rows if "decode_step_ms" not in r or r.get("exit") or "cuda" not in str(r.get("backend"))]
out = ["Decode after a 512-token prompt per sequence, 32 steps, best of 2 (1B Llama-shaped random "
       "weights; each step samples its tokens on the device, no logits copied). Roofline fraction: (weights read per step [+ KV read per step]) / copy bandwidth / step time.", "",
       "| type | batch | tokens/s | step ms | step ms, no graphs | graphs gain | roofline (weights) "
       "| roofline (weights + KV) | prefill tokens/s | graphs replayed |", "|---|---|---|---|---|---|---|---|---|---|"]
for (v, t, b), r in ok.items():
    if v != "graphs":
        continue
    s = r["decode_step_ms"] / 1e3
    ng = ok.get(("no_graphs", t, b))
    w = r["step_weight_bytes"] / bw / s if bw else 0
    wkv = (r["step_weight_bytes"] + r["kv_bytes_per_step"]) / bw / s if bw else 0
    gain = f"{ng['decode_step_ms'] / r['decode_step_ms']:.2f}x" if ng else "-"
    out.append(f"| {t} | {b} | {r['decode_tokens_per_s']:.1f} | {r['decode_step_ms']:.3f} | "
               f"{ng['decode_step_ms'] if ng else '-'} | {gain} | {w:.2f} | {wkv:.2f} | "
               f"{r['prefill_tokens_per_s']:.0f} | {r.get('graphs_replayed')} |")
out.append("")
for t in sorted({k[1] for k in ok}):
    one, eight = ok.get(("graphs", t, 1)), ok.get(("graphs", t, 8))
    if one and eight:
        out.append(f"- {t}: step time at batch 8 / batch 1 = {eight['decode_step_ms'] / one['decode_step_ms']:.2f} (target <= 1.3)")
    plain = ok.get(("no_repack", t, 1))
    if one and plain:
        out.append(f"- {t}: batch-1 step with ggml's blocks / regrouped = {plain['decode_step_ms'] / one['decode_step_ms']:.2f}x (CHORUS_CUDA_REPACK=0)")
    if one and not one.get("graphs_replayed"):
        out.append(f"- {t}: WARNING no graph replayed at batch 1 with graphs on")
for r in bad:
    out.append(f"- FAILED {r.get('variant')} {r.get('type')} batch {r.get('batch', '?')}: {r.get('error', r)}")
open(sec, "w").write("\n".join(out) + "\n")
best = min((r for r in ok.values() if r["variant"] == "graphs" and r["batch"] == 1),
           key=lambda r: r["decode_step_ms"], default=None)
note = f"{len(ok)} of {runs} runs" + (f"; fastest batch-1 step {best['decode_step_ms']:.3f} ms ({best['type']})" if best else "")
print(("PASS" if len(ok) == runs and not bad else "FAIL") + "\t" + note)
PY
  ) || verdict=$'FAIL\tcould not read decode.jsonl'
  [[ $parity_1b == PASS* ]] || verdict="FAIL"$'\t'"${verdict#*$'\t'}"
  phase_end "${verdict%%$'\t'*}" "${verdict#*$'\t'}; 1B parity ${parity_1b}"
}

phase_sanitizer() {
  phase_begin sanitizer
  local sec tool i=0 n=${#SANITIZER_TOOLS[@]} rc left one=$WORK/one.txt errors passed verdict bad=0 t1
  sec=$(section sanitizer)
  : > "$OUT/sanitizer.txt"
  if [[ ! -x $(sanitizer_bin) ]]; then
    phase_end FAIL "compute-sanitizer not found"
    return
  fi
  printf "Filter: \`%s\`\n\n| tool | verdict | s | tests passed | summary |\n|---|---|---|---|---|\n" \
    "$SANITIZER_FILTER" > "$sec"
  for tool in "${SANITIZER_TOOLS[@]}"; do
    left=$(phase_left)
    if ((left < 10)); then
      echo "| $tool | NOT RUN | - | - | the phase's time was spent |" >> "$sec"
      bad=$((bad + 1)) i=$((i + 1))
      continue
    fi
    rc=0 t1=$SECONDS
    sanitizer_cmd "$tool"
    limited $((left / (n - i))) "${CMD[@]}" > "$one" 2>&1 < /dev/null || rc=$?
    i=$((i + 1))
    { echo "===== $tool: exit $rc, $((SECONDS - t1)) s"; cat "$one"; } >> "$OUT/sanitizer.txt"
    errors=$(grep -m1 -E '(ERROR|RACECHECK) SUMMARY' "$one" | sed 's/^=* *//') || true
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$one")
    if ((rc == 124 || rc == 137)); then
      verdict=TIMEOUT
    elif grep -q -i 'device not supported\|Unable to\|Target application terminated before first instrumented' "$one"; then
      verdict=FAIL errors="sanitizer could not run: $(grep -m1 -i 'not supported\|unable to\|terminated' "$one" || true)"
    elif ((rc != 0)); then
      verdict=FAIL
    elif grep -q '^\[  SKIPPED \]' "$one" || ((${passed:-0} == 0)); then
      verdict=FAIL errors="no test ran or a test skipped; $errors"
    else
      verdict=PASS
    fi
    [[ $verdict == PASS ]] || bad=$((bad + 1))
    echo "| $tool | $verdict (exit $rc) | $((SECONDS - t1)) | ${passed:-0} | $(md_cell "${errors:-no summary line}") |" >> "$sec"
    write_summary
  done
  if ((bad == 0)); then phase_end PASS "memcheck, synccheck and racecheck clean"; else phase_end FAIL "$bad of $n tools failed, timed out or did not run"; fi
}

# ---------------------------------------------------------------------------------------------
# --dry-run

dry_run() {
  local t v b tool
  if bundle_present; then set_binaries bundle; BIN_FROM="$BUNDLE (carried)";
  elif [[ -x $BUILD/tests/cuda_test ]]; then set_binaries build; BIN_FROM="$BUILD";
  else set_binaries build; BIN_FROM="none yet: the build phase would build into $BUILD"; fi
  set_source_paths
  LIMIT[preflight]=$PREFLIGHT_S
  T0=$((SECONDS - PREFLIGHT_S))  # as if preflight used its whole limit
  plan_schedule
  echo "gpu-check --dry-run: nothing is run or written."
  echo "Output folder: $OUT    Deadline: $DEADLINE_S s (GPU_CHECK_DEADLINE_S)    Repo: $REPO"
  echo "Binaries: $BIN_FROM"
  echo "Tests read CHORUS_SOURCE_DIR=$CHORUS_SOURCE_DIR CHORUS_SHARED_DIR=$CHORUS_SHARED_DIR"
  echo
  echo "1. preflight  limit $PREFLIGHT_S s; any failure stops the run (exit 2), before any build"
  echo "     nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap --format=csv,noheader"
  echo "       (no nvidia-smi or no GPU listed: FAIL 'no device'); nvidia-smi >> preflight.txt (driver's CUDA version)"
  echo "     nvcc --version; compute-sanitizer --version; $BUNDLE/BUILD-INFO.txt (the bundle's runtime, flags, commit)"
  if bundle_present; then echo "     tar xzf $BUNDLE/bundle.tgz -C $UNPACKED"; fi
  for b in "${BINARIES[@]}"; do echo "     ldd $b   (FAIL on any 'not found')"; done
  echo "     $CUDA_TEST --gtest_list_tests   (FAIL on an error or zero tests); cudart version vs the driver's CUDA"
  echo "   build  only when no binaries exist (none carried in $BUNDLE/, none in $BUILD/); takes from the deadline"
  build_cmds
  echo "     ${BUILD_CONFIGURE[*]}"
  echo "     ${BUILD_BUILD[*]}"
  echo "   Then the measuring phases share what is left of the deadline (ends at t = seconds from the start):"
  echo "2. micro      limit ${LIMIT[micro]} s, ends by t=${END[micro]} s"
  micro_cmd
  echo "     ${CMD[*]} > microbench.json   (FAIL on no JSON, {\"device\": \"none\"}, a CUDA error or a non-zero exit;"
  echo "       'device none' stops the run)"
  echo "3. parity     limit ${LIMIT[parity]} s, ends by t=${END[parity]} s; each test at most $PER_TEST_S s, in its own process"
  test_cmd TEST
  echo "     for TEST in \$(cuda_test --gtest_list_tests): ${CMD[*]} >> parity.txt"
  echo "       verdict PASS only on '[  PASSED  ] 1 test.'; SKIPPED, FAIL, CRASH, TIMEOUT, NO RESULT fail the phase;"
  echo "       $MULTI_GPU_TESTS is N/A on a one-GPU machine; $FULL_SIZE_TEST runs in the decode phase"
  echo "     meanwhile, in the background, the decode models (skipped when present in $MODELS_DIR):"
  for t in "${DECODE_TYPES[@]}"; do mkmodel_cmd "$t" "$MODELS_DIR/1b-$t.gguf"; echo "     ${CMD[*]}"; done
  echo "4. decode     limit ${LIMIT[decode]} s, ends by t=${END[decode]} s; each run at most 90 s; one JSON line each in decode.jsonl"
  full_size_cmd
  echo "     first, at most 60 s: ${CMD[*]} >> parity.txt   (1B parity; not PASS fails the phase)"
  for v in graphs no_graphs no_repack; do
    for t in "${DECODE_TYPES[@]}"; do
      [[ $v == no_repack && $t != q4_0 ]] && continue
      for b in "${DECODE_BATCHES[@]}"; do bench_cmd "$v" "$t" "$b"; echo "     ${CMD[*]}"; done
    done
  done
  echo "       (FAIL on a run without JSON, a backend other than cuda, a missing model)"
  echo "5. sanitizer  limit ${LIMIT[sanitizer]} s, ends by t=${END[sanitizer]} s; the time left is split between the tools"
  for tool in "${SANITIZER_TOOLS[@]}"; do sanitizer_cmd "$tool"; echo "     ${CMD[*]} >> sanitizer.txt"; done
  echo "       (FAIL on errors, a timeout, a skipped test or no test run)"
  echo
  echo "Files written to $OUT (${#RESULT_FILES[@]}, at most 8):"
  echo "  SUMMARY.md       verdict, per-phase status, limit, time used, key numbers; rewritten after every phase"
  echo "  log.txt          the script's messages, build and model generation output, benchmarks' stderr"
  echo "  preflight.txt    nvidia-smi, ldd of every binary, LD_LIBRARY_PATH"
  echo "  microbench.json  chorus-bench-cuda's JSON line"
  echo "  parity.txt       every parity test's output"
  echo "  decode.jsonl     one line per decode run (or its error)"
  echo "  sanitizer.txt    compute-sanitizer's output per tool"
  echo "Exit: 0 every phase passed; 1 a phase failed, timed out or did not run; 2 preflight failed."
}

# ---------------------------------------------------------------------------------------------

main() {
  local dry=0
  while (($# > 0)); do
    case $1 in
      --dry-run) dry=1 ;;
      -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
      -*) echo "gpu-check: unknown option $1" >&2; exit 2 ;;
      *) OUT=$1 ;;
    esac
    shift
  done
  OUT=$(realpath -m "${OUT:-gpu-check-out}")
  cd "$REPO"
  if ((dry)); then
    dry_run
    exit 0
  fi
  mkdir -p "$OUT"
  local f p
  for f in "${RESULT_FILES[@]}"; do rm -f "${OUT:?}/$f"; done
  WORK=$(mktemp -d)
  STARTED_UTC=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
  COMMIT="$(git rev-parse --short HEAD 2> /dev/null || echo unknown)$(git diff --quiet HEAD 2> /dev/null || echo ' (with local changes)')"
  for p in "${PHASES[@]}"; do STATUS[$p]=PENDING; done
  LIMIT[preflight]=$PREFLIGHT_S END[preflight]=$PREFLIGHT_S
  trap on_exit EXIT
  trap 'log "interrupted by a signal"; exit 143' TERM INT
  log "output in $OUT; deadline $DEADLINE_S s"

  phase_preflight
  [[ ${STATUS[preflight]} == PASS ]] || exit 2
  if [[ -n $NEED_BUILD ]]; then
    PHASES=(preflight build micro parity decode sanitizer)
    LIMIT[build]=$((DEADLINE_S - $(now) - 60)) END[build]=$((DEADLINE_S - 60))
    phase_build
    [[ ${STATUS[build]} == PASS ]] || exit 2
  fi
  if ((DEADLINE_S - $(now) < 60)); then
    skip_rest "less than 60 s of the deadline left"
    exit 1
  fi
  plan_schedule
  phase_micro
  if [[ ${STATUS[parity]} == PENDING ]]; then phase_parity; fi
  if [[ ${STATUS[decode]} == PENDING ]]; then phase_decode; fi
  if [[ ${STATUS[sanitizer]} == PENDING ]]; then phase_sanitizer; fi
  log "done in $(now) s: $(overall)"
  for p in "${PHASES[@]}"; do [[ ${STATUS[$p]} == PASS ]] || exit 1; done
  exit 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
