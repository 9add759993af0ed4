#!/usr/bin/env bash
# Proxy overhead: `tools/call echo` straight at the sample upstream, then through portcullis (no auth),
# on loopback. Prints both rates, the ratio, the added median latency at concurrency 1, and RSS.
#
#   bench/proxy.sh                 # DURATION=10 CONCURRENCY="1 16 64"; PIN=1 pins as the peers harness does
# Targets (2-core machine): proxied ≥ 60 % of direct; added p50 < 150 µs at c=1; idle RSS < 15 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-1 16 64}"
UP_PORT="${UP_PORT:-19501}"
GW_PORT="${GW_PORT:-19502}"

# shellcheck source=bench/lib.sh
source bench/lib.sh

start_upstream "$UP_PORT"
cat >"$WORK/bench.toml" <<TOML
public_url = "http://127.0.0.1:$GW_PORT"
listen = "127.0.0.1:$GW_PORT"
[log]
level = "warn"
[dangerous]
allow_unauthenticated = true
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
TOML
start_gate "$WORK/bench.toml" "$GW_PORT"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kib "$GW_PID")

run() { # url conc -> "rps p50 p99 errors non2xx"
  $LOAD timeout $((DURATION + 20)) wrk -t1 -c"$2" -d"${DURATION}s" --latency -s bench/mcp_post.lua "$1" |
    awk '/^SUMMARY/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["rps"], v["p50_us"], v["p99_us"], v["errors"], v["non2xx"] }'
}

printf '%-6s %12s %12s %8s %10s %10s %12s\n' conc direct_rps proxied_rps ratio direct_p50 proxy_p50 added_p50_us
for c in $CONCURRENCY; do
  read -r drps dp50 _ derr dnon <<<"$(run "http://127.0.0.1:$UP_PORT/mcp" "$c")"
  read -r prps pp50 _ perr pnon <<<"$(run "http://127.0.0.1:$GW_PORT/mcp" "$c")"
  if [ "$derr$dnon$perr$pnon" != "0000" ]; then echo "errors during run: direct $derr/$dnon proxied $perr/$pnon" >&2; exit 1; fi
  printf '%-6s %12s %12s %8s %10s %10s %12s\n' "$c" "$drps" "$prps" "$(awk -v a="$prps" -v b="$drps" 'BEGIN{printf "%.2f", a/b}')" \
    "$dp50" "$pp50" "$((pp50 - dp50))"
done
echo "portcullis RSS: idle $((IDLE_RSS / 1024)) MiB ($IDLE_RSS KiB), after load $(( $(rss_kib "$GW_PID") / 1024 )) MiB"
