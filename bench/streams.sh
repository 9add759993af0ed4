#!/usr/bin/env bash
# Memory per idle SSE stream, and whether it comes back: N server-to-client streams (GET, the sample
# server sending one event a second on each) through portcullis at once, then all closed. Prints
# portcullis's RSS idle, with the streams open, just after they close, and WAIT seconds later.
#   bench/streams.sh           # N=2000 WAIT=60; H2=true: HTTP/2 to the upstream (upstream_http2)
# Targets: ≤ 32 KiB per open stream; RSS within 2× idle a minute after the streams close.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-2000}"
WAIT="${WAIT:-60}"
UP_PORT="${UP_PORT:-19561}"
GW_PORT="${GW_PORT:-19562}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
ulimit -n 65536 2>/dev/null || true
start_upstream "$UP_PORT"
cat >"$WORK/bench.toml" <<TOML
public_url = "http://127.0.0.1:$GW_PORT"
listen = "127.0.0.1:$GW_PORT"
[log]
level = "error"
[proxy]
# All the streams come from one address.
max_connections_per_address = $((N + 64))
[dangerous]
allow_unauthenticated = true
[[server]]
path = "/pub"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
upstream_http2 = ${H2:-false}
TOML
start_gate "$WORK/bench.toml" "$GW_PORT"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status"; }
# Warm up: one stream, opened and closed, so that idle counts what a served gate keeps.
echo | timeout 30 node bench/streams.mjs "http://127.0.0.1:$GW_PORT/pub" 1 >/dev/null
sleep 1
idle=$(rss_kib)
mkfifo "$WORK/in"
node bench/streams.mjs "http://127.0.0.1:$GW_PORT/pub" "$N" <"$WORK/in" >"$WORK/out" &
client=$!
exec 3>"$WORK/in"
for _ in $(seq 600); do grep -q OPEN "$WORK/out" 2>/dev/null && break; sleep 0.1; done
sleep 3
open=$(rss_kib)
echo >&3
wait "$client"
sleep 1
closed=$(rss_kib)
sleep "$WAIT"
later=$(rss_kib)
echo "portcullis RSS: idle $idle KiB; $N streams open $open KiB ($(( (open - idle) / N )) KiB per stream); just closed $closed KiB; ${WAIT} s later $later KiB ($(awk -v a="$later" -v b="$idle" 'BEGIN { printf "%.1f", a / b }')× idle)"
