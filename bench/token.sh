#!/usr/bin/env bash
# Gateway mode: the server-side cost of sign-ins and token requests (authorization approved without pages
# through `dangerous.auto_approve_as`, so only portcullis's own work is measured), on SQLite.
#   bench/token.sh                 # ROUNDS=300 WORKERS=8
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-300}"
WORKERS="${WORKERS:-8}"
UP_PORT="${UP_PORT:-19521}"
GW_PORT="${GW_PORT:-19522}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_upstream "$UP_PORT"
gateway_config "$GW_PORT" "$GW_PORT" "sqlite://$WORK/state/portcullis.db" "$UP_PORT" >"$WORK/bench.toml"
echo 'bench-password' | "$BIN" users add bench --config "$WORK/bench.toml" >/dev/null
start_gate "$WORK/bench.toml" "$GW_PORT"
$LOAD timeout 300 node bench/token.mjs "http://127.0.0.1:$GW_PORT" "$ROUNDS" "$WORKERS"
