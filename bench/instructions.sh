#!/usr/bin/env bash
# Instructions portcullis executes per proxied request, counted by callgrind: a measure of the hot
# path's cost that, unlike a rate, does not move with whatever else the machine is doing.
#
# `tools/call echo` to the sample upstream, through a path without authentication and through a
# verify-mode path with an ES256 token from the test IdP (verified once, then from the cache); each
# counted over the requests wrk sends in DURATION seconds after a warm-up.
#
#   bench/instructions.sh                        # the release build; DURATION=10
#   BIN_UNDER_TEST=/path/to/portcullis bench/instructions.sh   # another build, to compare
#   EXTRA_TOML=$'[traces]\notlp_endpoint = "http://127.0.0.1:9/v1/traces"\nsample_ratio = 0.0' \
#     bench/instructions.sh                      # with more configuration (tables after the servers)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
UP_PORT="${UP_PORT:-19581}"
GW_PORT="${GW_PORT:-19582}"
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
# shellcheck source=bench/lib.sh
source bench/lib.sh
GATE_BIN="${BIN_UNDER_TEST:-$BIN}"
start_idp
start_upstream "$UP_PORT"
{ config_head "$GW_PORT"; cat <<TOML; } >"$WORK/bench.toml"
[[server]]
path = "/pub"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
[server.verify]
issuer = "$ISSUER"
TOML
[ -n "${EXTRA_TOML:-}" ] && printf '%s\n' "$EXTRA_TOML" >>"$WORK/bench.toml"
RUST_LOG=error valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out.%p" \
  "$GATE_BIN" serve --config "$WORK/bench.toml" >"$WORK/gate.log" 2>&1 &
GW_PID=$!
pids+=($GW_PID)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$GW_PORT/readyz" >/dev/null && break; sleep 0.2; done
ES=$(token client-es256 secret-es)

count() { # path token -> "instructions requests"
  TOKEN="$2" timeout 120 wrk -t1 -c4 -d3s -s bench/mcp_post.lua "http://127.0.0.1:$GW_PORT$1" >/dev/null
  callgrind_control --instr=on "$GW_PID" >/dev/null
  local out
  out=$(TOKEN="$2" timeout $((DURATION + 120)) wrk -t1 -c4 -d"${DURATION}s" -s bench/mcp_post.lua "http://127.0.0.1:$GW_PORT$1")
  callgrind_control --instr=off "$GW_PID" >/dev/null
  callgrind_control --dump "$GW_PID" >/dev/null
  local requests errors
  requests=$(sed -nE 's/.*requests=([0-9]+).*/\1/p' <<<"$out")
  errors=$(sed -nE 's/.*errors=([0-9]+) non2xx=([0-9]+).*/\1 \2/p' <<<"$out")
  [ "$errors" = "0 0" ] || { echo "$1: errors or unexpected statuses: $errors" >&2; exit 1; }
  local file
  file=$(ls -t "$WORK"/callgrind.out.* | head -n1)
  echo "$(sed -nE 's/^totals: ([0-9]+).*/\1/p' "$file") $requests"
  [ -n "${KEEP:-}" ] && cp "$file" /tmp/ || true
  rm -f "$WORK"/callgrind.out.*
}
printf '%-28s %12s %10s %16s\n' case requests instructions per_request
for c in "no authentication:/pub:" "verify mode, valid ES256:/mcp:$ES"; do
  IFS=: read -r name path tok <<<"$c"
  read -r ir n <<<"$(count "$path" "$tok")"
  printf '%-28s %12s %10s %16s\n' "$name" "$n" "$ir" "$((ir / n))"
done
