#!/usr/bin/env bash
# The cost of observing: authenticated `tools/call echo` (ES256 tokens from the loopback test IdP)
# through portcullis with nothing observed, with metrics and the audit log on, and with traces configured
# on top (sampling nothing new, as a busy deployment would at a low ratio). The gates run one after the
# other on the same port, in interleaved rounds; the median of each is reported.
#
#   bench/observe.sh          # DURATION=5 ROUNDS=5 CONCURRENCY=16; PIN=1 pins as the peers harness does
# Target: metrics and audit on ≥ 95 % of both off.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5}"
ROUNDS="${ROUNDS:-5}"
CONCURRENCY="${CONCURRENCY:-16}"
UP_PORT="${UP_PORT:-19521}"
GW_PORT="${GW_PORT:-19522}"
METRICS_PORT="${METRICS_PORT:-19523}"
# Which configurations, in each round's order: off metrics audit on traced.
CASES="${CASES:-off metrics audit on traced}"

# shellcheck source=bench/lib.sh
source bench/lib.sh
start_idp
start_upstream "$UP_PORT"

config() { # extra TOML -> file
  local file="$WORK/gate-$RANDOM.toml"
  cat >"$file" <<TOML
public_url = "http://127.0.0.1:$GW_PORT"
listen = "127.0.0.1:$GW_PORT"
[log]
level = "warn"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$UP_PORT/mcp"
scopes = ["mcp:tools"]
[server.verify]
issuer = "$ISSUER"
$1
TOML
  echo "$file"
}
OFF=$(config "")
METRICS=$(config "[metrics]
listen = \"127.0.0.1:$METRICS_PORT\"")
AUDIT=$(config "[audit]
path = \"$WORK/audit.jsonl\"")
ON=$(config "[metrics]
listen = \"127.0.0.1:$METRICS_PORT\"
[audit]
path = \"$WORK/audit.jsonl\"")
TRACED=$(config "[metrics]
listen = \"127.0.0.1:$METRICS_PORT\"
[audit]
path = \"$WORK/audit.jsonl\"
[traces]
otlp_endpoint = \"http://127.0.0.1:9/v1/traces\"
sample_ratio = 0.0")

TOKEN=$(token client-es256 secret-es)

measure() { # config -> rps
  start_gate "$1" "$GW_PORT"
  local out
  out=$(TOKEN="$TOKEN" $LOAD timeout $((DURATION + 20)) wrk -t1 -c"$CONCURRENCY" -d"${DURATION}s" --latency -s bench/mcp_post.lua "http://127.0.0.1:$GW_PORT/mcp")
  kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
  echo "$out" | awk '/^SUMMARY/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["errors"] + v["non2xx"] > 0) { print "ERR"; exit } print v["rps"] }'
}
# The middle value (the mean of the two middle ones for an even count) of whitespace-separated numbers.
median() { tr -s ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Each round starts one case later than the one before (off metrics audit, then metrics audit off, …):
# a case's place in a round changes its rate by several per cent here, so every case takes every place
# equally often when ROUNDS is a multiple of the number of cases.
read -r -a cases <<<"$CASES"
declare -A results
for round in $(seq 0 $((ROUNDS - 1))); do
  for i in $(seq 0 $((${#cases[@]} - 1))); do
    name=${cases[$(((round + i) % ${#cases[@]}))]}
    case $name in off) file=$OFF ;; metrics) file=$METRICS ;; audit) file=$AUDIT ;; on) file=$ON ;; traced) file=$TRACED ;; esac
    rps=$(measure "$file")
    [ "$rps" != ERR ] || { echo "$name: errors or non-2xx answers" >&2; exit 1; }
    results[$name]="${results[$name]:-} $rps"
    [ -z "${VERBOSE:-}" ] || echo "round $round $name $rps" >&2
  done
done
lines=$(cat "$WORK/audit.jsonl" 2>/dev/null | wc -l)
base=$(echo "${results[off]}" | median)
printf '%-40s %10s %8s\n' case "rps (median)" ratio
for name in $CASES; do
  m=$(echo "${results[$name]}" | median)
  case $name in
    off) label="nothing observed" ;; metrics) label="metrics only" ;; audit) label="audit log only" ;;
    on) label="metrics + audit log" ;; traced) label="metrics + audit + traces (ratio 0)" ;;
  esac
  printf '%-40s %10s %8s\n' "$label" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN{printf "%.3f", a/b}')"
done
echo "audit lines written: $lines"
