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

start_idp() { # sets ISSUER: the loopback test IdP (oidc-provider), profile rfc8707
  [ -d tests/interop/node_modules ] || (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
  mkfifo "$WORK/idp.out"
  $LOAD node tests/interop/idp.mjs --profile rfc8707 --ignore-stdin >"$WORK/idp.out" 2>/dev/null &
  pids+=($!)
  ISSUER=$(head -n1 "$WORK/idp.out" | sed -E 's/.*"issuer":"([^"]+)".*/\1/')
  cat "$WORK/idp.out" >/dev/null &
}

token() { # client secret: an access token from the test IdP for portcullis's /mcp at $GW_PORT
  curl -sf -u "$1:$2" -d grant_type=client_credentials -d scope=mcp:tools \
    --data-urlencode "resource=http://127.0.0.1:$GW_PORT/mcp" "$ISSUER/token" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

start_upstream() { # port
  $LOAD "$BIN" sample-upstream --listen "127.0.0.1:$1" >/dev/null &
  pids+=($!)
}

start_gate() { # config file, port; sets GW_PID
  RUST_LOG=error $GATE "$BIN" serve --config "$1" >"$WORK/gate.log" 2>&1 &
  GW_PID=$!
  pids+=($GW_PID)
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && break; sleep 0.1; done
}

config_head() { # port [log level]: the lines every bench configuration starts with
  cat <<TOML
public_url = "http://127.0.0.1:$1"
listen = "127.0.0.1:$1"
[log]
level = "${2:-error}"
[dangerous]
allow_unauthenticated = true
TOML
}

gateway_config() { # public port, listen port, store URL, upstream port: gateway mode on one MCP server,
  # sign-ins approved without pages as the user `bench`
  cat <<TOML
public_url = "http://127.0.0.1:$1"
listen = "127.0.0.1:$2"
[log]
level = "warn"
[dangerous]
auto_approve_as = "bench"
[store]
url = "$3"
[gateway]
operator_key_file = "$WORK/operator-$2.key"
registrations_per_minute = 100000
code_ttl_secs = 600
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$4/mcp"
scopes = ["mcp:tools"]
gateway = true
TOML
}

peers() { # sets PEERS_DIR, ISSUER, AUDIENCE, KEYS and JWKS_PORT for ../shared/bench/peers, set up, its keys made
  PEERS_DIR="$(cd "${PEERS_DIR:-../shared/bench/peers}" && pwd)"
  [ -x "$PEERS_DIR/.venv/bin/uvicorn" ] && [ -d "$PEERS_DIR/ts/node_modules" ] &&
    [ -x "$PEERS_DIR/rust-floor/target/release/rust-floor" ] ||
    { echo "setting up the peers ($PEERS_DIR/setup.sh)"; "$PEERS_DIR/setup.sh" >/dev/null; }
  # The peers' keys name this issuer; its port is theirs.
  JWKS_PORT=19400
  ISSUER="http://127.0.0.1:$JWKS_PORT"
  AUDIENCE="https://mcp.peerbench.test/mcp"
  KEYS="$PEERS_DIR/keys/out"
  grep -q "\"$ISSUER\"" "$KEYS/openid-configuration.json" 2>/dev/null ||
    ISSUER=$ISSUER AUDIENCE=$AUDIENCE "$PEERS_DIR/.venv/bin/python" "$PEERS_DIR/keys/gen_keys.py" >/dev/null
}

start_jwks() { # the peers' key set server, on CPU 0
  JWKS_PORT=$JWKS_PORT $LOAD "$PEERS_DIR/.venv/bin/python" "$PEERS_DIR/keys/jwks_server.py" >/dev/null 2>&1 &
  pids+=($!)
}

start_floor() { # cpu port: the peers' Rust axum floor, without auth
  AUTH=0 PORT=$2 JWKS_FILE="$KEYS/jwks.json" ISSUER=$ISSUER AUDIENCE=$AUDIENCE \
    taskset -c "$1" "$PEERS_DIR/rust-floor/target/release/rust-floor" >/dev/null 2>&1 &
  pids+=($!)
}
