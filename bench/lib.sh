# Shared by the bench scripts (sourced from the project root): wrk, the release build, CPU pinning,
# child-process clean-up, and starting the sample upstream and portcullis.

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }; }
cargo build --release --locked -p portcullis >/dev/null
BIN=target/release/portcullis
# PIN=1: portcullis alone on CPU 1; the load generator and everything else on CPU 0 (the peers' method).
if [ "${PIN:-0}" = 1 ]; then GATE="taskset -c 1"; LOAD="taskset -c 0"; else GATE=""; LOAD=""; fi
WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

start_upstream() { # port
  $LOAD "$BIN" sample-upstream --listen "127.0.0.1:$1" >/dev/null &
  pids+=($!)
}

start_gate() { # config file, port; sets GW_PID
  RUST_LOG=error $GATE "$BIN" serve --config "$1" >/dev/null 2>&1 &
  GW_PID=$!
  pids+=($GW_PID)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.1; done
}
