#!/usr/bin/env bash
# Gateway mode: authorization-code exchanges per second at /token, end to end over HTTP, on SQLite with
# every grant durable before its answer (synchronous = FULL; concurrent exchanges share one commit).
# The codes are made first (Node: a registration, then authorization requests approved without pages),
# then redeemed by wrk, a load generator that costs far less CPU than the gate, so that the rate is the
# gate's. portcullis on CPU 1, the clients on CPU 0. Afterwards the gate is killed with SIGKILL and the
# refresh tokens on disk are counted against the exchanges answered 200: none may be missing.
#   bench/exchange.sh          # CODES=24000 DURATION=3 CONNECTIONS=16
# Target: ≥ 1,000 exchanges/s.
set -euo pipefail
cd "$(dirname "$0")/.."
CODES="${CODES:-24000}"
DURATION="${DURATION:-3}"
CONNECTIONS="${CONNECTIONS:-16}"
UP_PORT="${UP_PORT:-19531}"
GW_PORT="${GW_PORT:-19532}"
PIN=1
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_upstream "$UP_PORT"
gateway_config "$GW_PORT" "$GW_PORT" "sqlite://$WORK/state/portcullis.db" "$UP_PORT" >"$WORK/bench.toml"
echo 'bench-password' | "$BIN" users add bench --config "$WORK/bench.toml" >/dev/null
start_gate "$WORK/bench.toml" "$GW_PORT"
CODES_OUT="$WORK/codes.txt" $LOAD timeout 300 node bench/token.mjs "http://127.0.0.1:$GW_PORT" "$CODES" 16
out=$(CODES_FILE="$WORK/codes.txt" $LOAD timeout $((DURATION + 60)) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
  -s bench/exchange.lua "http://127.0.0.1:$GW_PORT/token" | grep '^SUMMARY')
ok=$(sed -nE 's/.* ok=([0-9]+).*/\1/p' <<<"$out")
seconds=$(sed -nE 's/.* seconds=([0-9.]+).*/\1/p' <<<"$out")
kill -9 "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
stored=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from refresh_tokens").fetchone()[0])' "$WORK/state/portcullis.db")
echo "$out"
awk -v ok="$ok" -v s="$seconds" -v codes="$CODES" -v c="$CONNECTIONS" 'BEGIN {
  printf "code exchanges: %.0f/s (%d answered 200 in %.1f s, %d connections)%s\n", ok / s, ok, s, c,
    (ok >= codes ? "; every code was spent, so this is a lower bound: raise CODES" : "") }'
echo "after SIGKILL: $stored refresh tokens on disk for $ok exchanges answered 200"
[ "$stored" -ge "$ok" ] || { echo "grants lost: $((ok - stored))" >&2; exit 1; }
