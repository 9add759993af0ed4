#!/usr/bin/env bash
# Two builds of portcullis side by side on the hot path: each in front of the Rust axum floor of the
# peers harness, on the same configuration, pinned to CPU 1 (wrk and the floor on CPU 0, the peers'
# method), measured in alternating slices so that the machine's swings, which last seconds, hit both
# alike. Prints, per build and row, the median rate and the build's CPU per request (user + system
# time over the slices' requests), then B against A.
#
#   BIN_A=/tmp/portcullis-old bench/ab.sh              # B is the release build of this tree
#   BIN_A=… BIN_B=… ROUNDS=10 SLICE=2 ROWS="open valid" bench/ab.sh
#
# Rows: `open` (a server without authentication) and `valid` (verify mode, the peers' ES256 token).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-10}"
SLICE="${SLICE:-2}"
ROWS="${ROWS:-open valid}"
PIN=1
# shellcheck source=bench/lib.sh
source bench/lib.sh
peers
BIN_A="${BIN_A:?BIN_A names the build to compare with}"
BIN_B="${BIN_B:-$BIN}"
FLOOR_PORT=19471 A_PORT=19472 B_PORT=19473
for p in $JWKS_PORT $FLOOR_PORT $A_PORT $B_PORT; do
  ! ss -ltnH "sport = :$p" | grep -q . || { echo "port $p is busy" >&2; exit 1; }
done
start_jwks
start_floor 0 $FLOOR_PORT
for _ in $(seq 50); do curl -s "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json" >/dev/null && break; sleep 0.1; done

declare -A GATE_PID
for build in A B; do
  port_var=${build}_PORT bin_var=BIN_$build
  port=${!port_var}
  { config_head "$port"; cat <<TOML; } >"$WORK/$build.toml"
[[server]]
path = "/open"
upstream = "http://127.0.0.1:$FLOOR_PORT/mcp"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:$FLOOR_PORT/mcp"
[server.verify]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
TOML
  RUST_LOG=error taskset -c 1 "${!bin_var}" serve --config "$WORK/$build.toml" >"$WORK/$build.log" 2>&1 &
  GATE_PID[$build]=$!
  pids+=($!)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "build $build did not start:" >&2; cat "$WORK/$build.log" >&2; exit 1; }
done
TOKEN_ES=$(cat "$KEYS/token-es256.jwt")

slice() { # build row seconds -> "rps requests"; fails on any error or status other than 200
  local port_var=${1}_PORT path token="" out
  case $2 in open) path=/open ;; valid) path=/mcp token=$TOKEN_ES ;; *) echo "unknown row $2" >&2; exit 2 ;; esac
  out=$(TOKEN="$token" $LOAD timeout $(($3 + 20)) wrk -t1 -c16 -d"${3}s" -s bench/mcp_post.lua \
    "http://127.0.0.1:${!port_var}$path")
  awk -v what="$1 $2" '/^SUMMARY/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      if (v["errors"] + v["non2xx"] > 0) { print what ": errors or statuses other than 200" > "/dev/stderr"; exit 1 }
      print v["rps"], v["requests"] }' <<<"$out"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

read -ra rows <<<"$ROWS"
for b in A B; do for r in "${rows[@]}"; do slice "$b" "$r" 2 >/dev/null; done; done
: >"$WORK/slices"
for ((round = 0; round < ROUNDS; round++)); do
  # A then B in even rounds, B then A in odd ones.
  order="A B"
  ((round % 2)) && order="B A"
  for r in "${rows[@]}"; do
    for b in $order; do
      t0=$(ticks "${GATE_PID[$b]}")
      read -r rps requests <<<"$(slice "$b" "$r" "$SLICE")"
      echo "$b $r $rps $requests $(($(ticks "${GATE_PID[$b]}") - t0))" >>"$WORK/slices"
    done
  done
  printf '.' >&2
done
echo >&2
awk -v hz="$(getconf CLK_TCK)" -v order="$ROWS" '
  function median(list,   a, m, i, j, t) {
    m = split(list, a, " ")
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  { rates[$1, $2] = rates[$1, $2] " " $3; req[$1, $2] += $4; ticks[$1, $2] += $5 }
  END {
    printf "%-6s %-6s %10s %12s\n", "row", "build", "median/s", "CPU us/req"
    n = split(order, rows, " ")
    for (i = 1; i <= n; i++) {
      r = rows[i]
      for (k = 0; k < 2; k++) {
        b = k ? "B" : "A"
        med[b] = median(rates[b, r]); cpu[b] = 1e6 * ticks[b, r] / hz / req[b, r]
        printf "%-6s %-6s %10.0f %12.1f\n", r, b, med[b], cpu[b]
      }
      printf "%-6s B/A    rate %.3f, CPU per request %.3f\n", r, med["B"] / med["A"], cpu["B"] / cpu["A"]
    }
  }' "$WORK/slices"
