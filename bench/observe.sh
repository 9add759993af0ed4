#!/usr/bin/env bash
# The cost of observing: authenticated `tools/call echo` (ES256 tokens from the loopback test IdP)
# through portcullis with nothing observed, with metrics and the audit log on, and with traces configured
# on top (sampling nothing new, as a busy deployment would at a low ratio). One gate per configuration
# runs for the whole measurement, each on its own port.
#
# The load moves from one gate to the next in one-second slices, round after round (each round starting
# one case later). Rates on this kind of machine swing by ±25 % from one second to the next, far more
# than the cost measured, and the swings last several seconds: so each case's ratio is taken within its
# round, against the unobserved gate's slice of the same round, and the median of those ratios is
# reported beside the median rate.
#
#   bench/observe.sh          # SLICES=31 SLICE=1 (seconds) CONCURRENCY=16; PIN=1 as the peers harness
# Target: metrics and audit on ≥ 95 % of both off.
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES="${SLICES:-31}"
SLICE="${SLICE:-1}"
CONCURRENCY="${CONCURRENCY:-16}"
UP_PORT="${UP_PORT:-19521}"
GW_PORT="${GW_PORT:-19522}"
METRICS_PORT="${METRICS_PORT:-19540}"
# Which configurations, in each slice round's order: off metrics audit on traced (and policy: ten
# [[server.policy]] rules, four governing the call, for the policy issue's throughput aim).
CASES="${CASES:-off metrics audit on traced}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
start_idp
start_upstream "$UP_PORT"

config() { # port, extra TOML -> file (every gate publishes the same public URL: one token fits all)
  local file="$WORK/gate-$1.toml"
  cat >"$file" <<TOML
public_url = "http://127.0.0.1:$GW_PORT"
listen = "127.0.0.1:$1"
[log]
level = "warn"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
scopes = ["mcp:tools"]
[server.verify]
issuer = "$ISSUER"
$2
TOML
  echo "$file"
}
observed() { # case -> its extra TOML
  local metrics="[metrics]
listen = \"127.0.0.1:$((METRICS_PORT + $2))\""
  local audit="[audit]
path = \"$WORK/audit-$1.jsonl\""
  case $1 in
    off) echo "" ;;
    metrics) echo "$metrics" ;;
    audit) echo "$audit" ;;
    on) printf '%s\n%s\n' "$metrics" "$audit" ;;
    traced) printf '%s\n%s\n[traces]\notlp_endpoint = "http://127.0.0.1:9/v1/traces"\nsample_ratio = 0.0\n' "$metrics" "$audit" ;;
    # Not observation but the same method: the ten [[server.policy]] rules of bench/policy-rules.toml,
    # four of which govern echo.
    policy) cat bench/policy-rules.toml ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}

TOKEN=$(token client-es256 secret-es)

read -r -a cases <<<"$CASES"
declare -A port
for i in "${!cases[@]}"; do
  name=${cases[$i]}
  port[$name]=$((GW_PORT + 1 + i))
  start_gate "$(config "${port[$name]}" "$(observed "$name" "$i")")" "${port[$name]}"
done

slice() { # port -> rps of one slice
  local out
  out=$(TOKEN="$TOKEN" $LOAD timeout $((SLICE + 20)) wrk -t1 -c"$CONCURRENCY" -d"${SLICE}s" -s bench/mcp_post.lua "http://127.0.0.1:$1/mcp")
  echo "$out" | awk '/^SUMMARY/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["errors"] + v["non2xx"] > 0) { print "ERR"; exit } print v["rps"] }'
}
# The middle value (the mean of the two middle ones for an even count) of whitespace-separated numbers.
median() { tr -s ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# A warm-up slice each (connections, caches, the first JWKS fetch), not counted.
for name in "${cases[@]}"; do slice "${port[$name]}" >/dev/null; done
# Each round starts one case later than the one before, so every case takes every place equally often.
declare -A results ratios this
for round in $(seq 0 $((SLICES - 1))); do
  for i in "${!cases[@]}"; do
    name=${cases[$(((round + i) % ${#cases[@]}))]}
    rps=$(slice "${port[$name]}")
    [ "$rps" != ERR ] || { echo "$name: errors or non-2xx answers" >&2; exit 1; }
    results[$name]="${results[$name]:-} $rps"
    this[$name]=$rps
    [ -z "${VERBOSE:-}" ] || echo "slice $round $name $rps" >&2
  done
  for name in "${cases[@]:1}"; do
    ratios[$name]="${ratios[$name]:-} $(awk -v a="${this[$name]}" -v b="${this[${cases[0]}]}" 'BEGIN{printf "%.4f", a/b}')"
  done
done
# The median of decimal numbers.
fmedian() { tr -s ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

lines=$(cat "$WORK"/audit-*.jsonl 2>/dev/null | wc -l || true)
printf '%-40s %12s %14s\n' case "rps (median)" "ratio (median)"
for name in "${cases[@]}"; do
  m=$(echo "${results[$name]}" | median)
  case $name in
    off) label="nothing observed" ;; metrics) label="metrics only" ;; audit) label="audit log only" ;;
    on) label="metrics + audit log" ;; traced) label="metrics + audit + traces (ratio 0)" ;;
    policy) label="ten policy rules" ;;
  esac
  if [ "$name" = "${cases[0]}" ]; then r="1.000"; else r=$(echo "${ratios[$name]}" | fmedian); fi
  printf '%-40s %12s %14s\n' "$label" "$m" "$r"
done
echo "audit lines written: $lines"
