#!/usr/bin/env bash
# Authentication overhead: `tools/call echo` through one portcullis process, at a path without
# authentication and at a verify-mode path, with real RS256 and ES256 tokens minted by the loopback test
# IdP (oidc-provider), and with the same tokens carrying a wrong signature (same kid, so the full
# signature check runs).
#
#   bench/auth.sh                  # DURATION=10 CONCURRENCY="16"; PIN=1 pins as the peers harness does
# Targets: authenticated ≥ 90 % of unauthenticated; invalid-signature rejections at least as fast as
# valid requests are served.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
CONCURRENCY="${CONCURRENCY:-16}"
UP_PORT="${UP_PORT:-19511}"
GW_PORT="${GW_PORT:-19512}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
start_idp

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
scopes = ["mcp:tools"]
[server.verify]
issuer = "$ISSUER"
[[server]]
path = "/pub"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
TOML
start_gate "$WORK/bench.toml" "$GW_PORT"

# The first token's header and claims with the second token's signature: same kid, wrong signature.
forge() { echo "${1%.*}.${2##*.}"; }
RS=$(token client-rs secret-rs); RS2=$(token client-rs secret-rs)
ES=$(token client-es256 secret-es); ES2=$(token client-es256 secret-es)
BAD_RS=$(forge "$RS" "$RS2"); BAD_ES=$(forge "$ES" "$ES2")

run() { # path token expected_status [vary]
  local out
  out=$(VARY_SIG="${4:-0}" TOKEN="$2" $LOAD timeout $((DURATION + 20)) wrk -t1 -c"$CONCURRENCY" -d"${DURATION}s" --latency -s bench/mcp_post.lua "http://127.0.0.1:$GW_PORT$1")
  echo "$out" | awk -v want="$3" '/^SUMMARY/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    bad = (want == 200) ? v["non2xx"] : 0; print v["rps"], v["p50_us"], v["p99_us"], v["errors"] + bad }'
}
check() { # path token -> status
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' -H "authorization: Bearer $2" \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}' "http://127.0.0.1:$GW_PORT$1"
}
for pair in "/mcp $RS 200" "/mcp $ES 200" "/mcp $BAD_RS 401" "/mcp $BAD_ES 401"; do
  set -- $pair
  got=$(check "$1" "$2"); [ "$got" = "$3" ] || { echo "expected $3 from $1, got $got" >&2; exit 1; }
done

printf '%-32s %10s %8s %8s %8s\n' case rps p50_us p99_us ratio
read -r base _ _ e <<<"$(run /pub "" 200)"; printf '%-32s %10s %8s %8s %8s\n' "no auth" "$base" - - 1.00
for c in "valid RS256:/mcp:$RS:200:0" "valid ES256:/mcp:$ES:200:0" \
  "bad signature RS256, replayed:/mcp:$BAD_RS:401:0" "bad signature ES256, replayed:/mcp:$BAD_ES:401:0" \
  "bad signature RS256, each new:/mcp:$RS:401:1" "bad signature ES256, each new:/mcp:$ES:401:1"; do
  IFS=: read -r name path tok want vary <<<"$c"
  read -r rps p50 p99 e <<<"$(run "$path" "$tok" "$want" "$vary")"
  [ "$e" = 0 ] || { echo "$name: $e errors or unexpected statuses" >&2; exit 1; }
  printf '%-32s %10s %8s %8s %8s\n' "$name" "$rps" "$p50" "$p99" "$(awk -v a="$rps" -v b="$base" 'BEGIN{printf "%.2f", a/b}')"
done
