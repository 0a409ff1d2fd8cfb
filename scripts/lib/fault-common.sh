# Sourced by the fault and load scripts (kill-restart.sh, overload.sh, soak.sh) after they
# parse their flags into BUILD and PORT. fault_setup NAME sets CHORUSD, CHORUS, ADDR and WORK
# (a fresh folder under /tmp) and writes $WORK/chorusd.pbtxt: stories260K on ADDR, one engine
# thread, no metrics listener; a script appends its own fields. wait_serving prints the ms
# until chorusd on ADDR reports SERVING, or fails after 10 s.
fault_setup() {
  local name=$1
  CHORUSD="$BUILD/src/chorusd" CHORUS="$BUILD/src/chorus"
  if [[ ! -x "$CHORUSD" || ! -x "$CHORUS" ]]; then
    echo "$name: build $CHORUSD and $CHORUS first" >&2
    exit 2
  fi
  ADDR="127.0.0.1:$PORT"
  WORK=$(mktemp -d "/tmp/chorus-$name.XXXXXX")
  cat > "$WORK/chorusd.pbtxt" <<CONF
model_path: "models/stories260K.gguf"
listen_address: "$ADDR"
metrics_listen_address: ""
num_threads: 1
CONF
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_serving() {  # with DAEMON set, that process must be alive (not a stale one on the port)
  local t0 t
  t0=$(now_ms)
  for _ in $(seq 1 200); do
    if [[ -n "${DAEMON:-}" ]] && ! kill -0 "$DAEMON" 2> /dev/null; then return 1; fi
    if "$CHORUS" health --addr "$ADDR" > /dev/null 2>&1; then
      t=$(now_ms); echo $((t - t0)); return 0
    fi
    sleep 0.05
  done
  return 1
}
