#!/usr/bin/env bash
# Valid traffic under a flood of forged tokens from another source address. Two gates in verify mode
# (ES256 tokens from the loopback test IdP), one with the default allowance of failed verifications per
# address (proxy.failed_tokens_per_minute = 60) and one without (0). For each, ROUNDS rounds of: valid
# `tools/call echo` alone (wrk from 127.0.0.1, a verified token, SECONDS s), then the same while
# bench/flood.mjs sends new forged signatures from 127.0.0.2 as fast as it can. The ratio of the two
# valid rates is taken within each round (this machine's rate swings by ±25 % over seconds); the median
# is reported.
#   bench/flood.sh              # ROUNDS=5 SECONDS=3 CONCURRENCY=16; PIN=1 puts the gates on CPU 1
# Target: valid traffic keeps ≥ 80 % of its rate under the flood.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-5}"
SECS="${SECONDS_PER_RUN:-3}"
CONCURRENCY="${CONCURRENCY:-16}"
UP_PORT="${UP_PORT:-19551}"
ON_PORT="${ON_PORT:-19552}"
OFF_PORT="${OFF_PORT:-19553}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
start_idp
start_upstream "$UP_PORT"
config() { # port, failed_tokens_per_minute (both gates publish ON_PORT's URL: one token fits both)
  cat >"$WORK/gate-$1.toml" <<TOML
public_url = "http://127.0.0.1:$ON_PORT"
listen = "127.0.0.1:$1"
[log]
level = "error"
[proxy]
failed_tokens_per_minute = $2
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
scopes = ["mcp:tools"]
[server.verify]
issuer = "$ISSUER"
TOML
  echo "$WORK/gate-$1.toml"
}
start_gate "$(config "$ON_PORT" 60)" "$ON_PORT"
start_gate "$(config "$OFF_PORT" 0)" "$OFF_PORT"
GW_PORT=$ON_PORT
VALID=$(token client-es256 secret-es)

valid_rate() { # port -> requests/s of valid traffic for SECS
  TOKEN="$VALID" $LOAD wrk -t1 -c"$CONCURRENCY" -d"${SECS}s" -s bench/mcp_post.lua "http://127.0.0.1:$1/mcp" |
    awk '/^SUMMARY/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } print v["rps"], v["non2xx"] }'
}
median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

for port in "$ON_PORT" "$OFF_PORT"; do
  label=$([ "$port" = "$ON_PORT" ] && echo "allowance 60/min per address" || echo "no allowance (0)")
  ratios=()
  for round in $(seq "$ROUNDS"); do
    read -r alone bad_alone < <(valid_rate "$port")
    $LOAD node bench/flood.mjs "http://127.0.0.1:$port/mcp" "$VALID" "$((SECS + 1))" >"$WORK/flood.out" &
    flood=$!
    sleep 0.5
    read -r flooded bad_flooded < <(valid_rate "$port")
    wait "$flood"
    ratio=$(awk -v a="$alone" -v b="$flooded" 'BEGIN { printf "%.3f", b / a }')
    ratios+=("$ratio")
    echo "$label, round $round: valid alone $alone/s, under flood $flooded/s (ratio $ratio; valid non-2xx $bad_alone/$bad_flooded); $(cat "$WORK/flood.out")"
  done
  echo "$label: median ratio $(printf '%s\n' "${ratios[@]}" | median)"
done
