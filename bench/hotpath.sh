#!/usr/bin/env bash
# The hot path against the peers, in one run: every row measured in the same rounds of 1 s slices
# (`wrk -t1 -c16`, stateless JSON `tools/call echo`), the rows taken in a rotating order, the server
# under test pinned to CPU 1 and the load generator, the JWKS server and the upstreams of the gate on
# CPU 0 (the method of ../shared/bench/peers, whose servers, keys and tokens are used).
#
# Rows:
#   floor          the Rust axum floor of the peers harness, direct (CPU 1)
#   open           portcullis without authentication in front of the floor (floor on CPU 0)
#   valid          portcullis verify mode, a valid ES256 token
#   forged         portcullis verify mode, a new forged ES256 signature on every request (401; the
#                  failed-token allowance is off, so each one is a full signature check)
#   fastmcp        FastMCP + JWTVerifier ES256 (CPU 1)
#   fastmcp-open   FastMCP without auth, direct (CPU 1): what the gate in front of it can at most reach
#   gate+fastmcp   portcullis verify mode (valid ES256) in front of FastMCP without auth, both on CPU 1
#   gate+fastmcp-unix  the same with FastMCP on a Unix domain socket (`uvicorn --uds`), as a sidecar
#   gate+fastmcp-batch, gate+fastmcp-unix-batch  the same two through a second portcullis run as
#                  SCHED_BATCH (`chrt -b 0`, as docs/deployment.md advises for a gate sharing the
#                  upstream's core): its wake-ups no longer preempt FastMCP
#   ts             MCP TypeScript SDK + requireBearerAuth ES256 (CPU 1)
#   gate+ts        portcullis verify mode in front of the TS SDK without auth, both on CPU 1
#   sample         the gate's own sample MCP server, direct (CPU 1), over TCP
#   open-sample    portcullis without authentication in front of it over TCP (sample on CPU 0)
#   open-unix      the same over a Unix domain socket, as a sidecar reaches its MCP server: no TCP on
#                  the upstream hop (sample on CPU 0)
#
# Prints each row's median rate (and range) over the rounds, the server under test's CPU per request
# (the floor's for its row, portcullis's for the gate rows), how busy CPU 0 was (wrk and the upstreams:
# near 100 %, it and not the server under test bounds the row), and each goal as the median of its
# per-round ratios.
#
#   bench/hotpath.sh                 # ROUNDS=15 SLICE=1 ROWS="floor open … open-unix" (the rows above)
set -euo pipefail
if [ "${BOOST:-1}" = 1 ] && [ "${HOTPATH_SESSION:-}" != 1 ]; then
  # A new session is a new scheduler autogroup, whose priority can be raised over other sessions' work.
  export HOTPATH_SESSION=1
  exec setsid --wait "$0" "$@"
fi
[ "${BOOST:-1}" = 1 ] && { echo -20 >/proc/self/autogroup 2>/dev/null || echo "warning: cannot raise the autogroup's priority" >&2; }
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-15}"
SLICE="${SLICE:-1}"
ROWS="${ROWS:-floor open valid forged fastmcp fastmcp-open gate+fastmcp gate+fastmcp-unix gate+fastmcp-batch gate+fastmcp-unix-batch ts gate+ts sample open-sample open-unix}"
PIN=1
# shellcheck source=bench/lib.sh
source bench/lib.sh
peers
FLOOR_PORT=19451 FLOOR_UP_PORT=19452 FASTMCP_PORT=19453 FASTMCP_UP_PORT=19454 TS_PORT=19455 TS_UP_PORT=19456
GW_PORT=19457 GW_BATCH_PORT=19458 SAMPLE_PORT=19459 SAMPLE_UP_PORT=19460
for p in $JWKS_PORT $FLOOR_PORT $FLOOR_UP_PORT $FASTMCP_PORT $FASTMCP_UP_PORT $TS_PORT $TS_UP_PORT $GW_PORT $GW_BATCH_PORT \
  $SAMPLE_PORT $SAMPLE_UP_PORT; do
  ! ss -ltnH "sport = :$p" | grep -q . || { echo "port $p is busy" >&2; exit 1; }
done

start_jwks
fastmcp() { # auth port [socket] ; the defaults `uvicorn app` gives (asyncio loop, h11 parser, access log)
  local at=(--host 127.0.0.1 --port "$2")
  [ -z "${3:-}" ] || at=(--uds "$3")
  (cd "$PEERS_DIR/peers" && AUTH=$1 ALG=ES256 PORT=$2 JWKS_URI="$ISSUER/.well-known/jwks.json" ISSUER=$ISSUER AUDIENCE=$AUDIENCE \
    exec taskset -c 1 "$PEERS_DIR/.venv/bin/uvicorn" fastmcp_server:app "${at[@]}" --loop asyncio --http h11) >/dev/null 2>&1 &
  pids+=($!)
}
ts() { # auth port
  (cd "$PEERS_DIR/ts" && AUTH=$1 PORT=$2 JWKS_URI="$ISSUER/.well-known/jwks.json" ISSUER=$ISSUER AUDIENCE=$AUDIENCE \
    exec taskset -c 1 node server.mjs) >/dev/null 2>&1 &
  pids+=($!)
}
start_floor 1 $FLOOR_PORT
FLOOR_PID=${pids[-1]}
start_floor 0 $FLOOR_UP_PORT
fastmcp 1 $FASTMCP_PORT
fastmcp 0 $FASTMCP_UP_PORT
fastmcp 0 $FASTMCP_UP_PORT "$WORK/fastmcp.sock"
sample() { # cpu, then where it listens (--listen addr or --socket path)
  taskset -c "$1" "$BIN" sample-upstream "${@:2}" >/dev/null 2>&1 &
  pids+=($!)
}
ts 1 $TS_PORT
ts 0 $TS_UP_PORT
sample 1 --listen "127.0.0.1:$SAMPLE_PORT"
SAMPLE_PID=${pids[-1]}
sample 0 --listen "127.0.0.1:$SAMPLE_UP_PORT"
sample 0 --socket "$WORK/sample.sock"

verified() { # path upstream: a verify-mode server for the peers' tokens
  cat <<TOML
[[server]]
path = "$1"
upstream = "$2"
[server.verify]
issuer = "$ISSUER"
audiences = ["$AUDIENCE"]
TOML
}
gate_config() { # port
  config_head "$1"
  cat <<TOML
[proxy]
failed_tokens_per_minute = 0
[[server]]
path = "/open"
upstream = "http://127.0.0.1:$FLOOR_UP_PORT/mcp"
TOML
  verified /mcp "http://127.0.0.1:$FLOOR_UP_PORT/mcp"
  verified /fastmcp "http://127.0.0.1:$FASTMCP_UP_PORT/mcp"
  verified /fastmcp-unix "unix:$WORK/fastmcp.sock:/mcp"
  verified /ts "http://127.0.0.1:$TS_UP_PORT/mcp"
  cat <<TOML
[[server]]
path = "/open-sample"
upstream = "http://127.0.0.1:$SAMPLE_UP_PORT/mcp"
[[server]]
path = "/open-unix"
upstream = "unix:$WORK/sample.sock:/mcp"
TOML
}
gate_config "$GW_PORT" >"$WORK/gate.toml"
gate_config "$GW_BATCH_PORT" >"$WORK/gate-batch.toml"
wait_for() { # url
  for _ in $(seq 150); do curl -s -o /dev/null -X POST "$1" -d '{}' && return 0; sleep 0.2; done
  echo "nothing answers at $1" >&2; exit 1
}
for _ in $(seq 50); do curl -sf -o /dev/null "$ISSUER/.well-known/jwks.json" && break; sleep 0.1; done
for port in $FLOOR_PORT $FLOOR_UP_PORT $FASTMCP_PORT $FASTMCP_UP_PORT $TS_PORT $TS_UP_PORT $SAMPLE_PORT $SAMPLE_UP_PORT; do
  wait_for "http://127.0.0.1:$port/mcp"
done
for sock in fastmcp sample; do
  for _ in $(seq 150); do [ -S "$WORK/$sock.sock" ] && break; sleep 0.2; done
done
GATE="taskset -c 1 chrt -b 0" start_gate "$WORK/gate-batch.toml" "$GW_BATCH_PORT"
GW_BATCH_PID=$GW_PID
start_gate "$WORK/gate.toml" "$GW_PORT"

TOKEN_ES=$(cat "$KEYS/token-es256.jwt")
# row -> url, token, expected status, whether the signature varies
row_url() {
  case $1 in
    floor) echo "http://127.0.0.1:$FLOOR_PORT/mcp" ;;
    open) echo "http://127.0.0.1:$GW_PORT/open" ;;
    valid | forged) echo "http://127.0.0.1:$GW_PORT/mcp" ;;
    fastmcp) echo "http://127.0.0.1:$FASTMCP_PORT/mcp" ;;
    fastmcp-open) echo "http://127.0.0.1:$FASTMCP_UP_PORT/mcp" ;;
    gate+fastmcp) echo "http://127.0.0.1:$GW_PORT/fastmcp" ;;
    gate+fastmcp-unix) echo "http://127.0.0.1:$GW_PORT/fastmcp-unix" ;;
    gate+fastmcp-batch) echo "http://127.0.0.1:$GW_BATCH_PORT/fastmcp" ;;
    gate+fastmcp-unix-batch) echo "http://127.0.0.1:$GW_BATCH_PORT/fastmcp-unix" ;;
    ts) echo "http://127.0.0.1:$TS_PORT/mcp" ;;
    gate+ts) echo "http://127.0.0.1:$GW_PORT/ts" ;;
    sample) echo "http://127.0.0.1:$SAMPLE_PORT/mcp" ;;
    open-sample | open-unix) echo "http://127.0.0.1:$GW_PORT/$1" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}
row_token() { case $1 in floor | open | fastmcp-open | sample | open-sample | open-unix) echo "" ;; *) echo "$TOKEN_ES" ;; esac; }
row_status() { case $1 in forged) echo 401 ;; *) echo 200 ;; esac; }
row_vary() { case $1 in forged) echo 1 ;; *) echo 0 ;; esac; }
check() { # row: one request with the row's token, its status and (for 200) the echo result
  local url tok out code auth=()
  url=$(row_url "$1"); tok=$(row_token "$1")
  [ "$(row_vary "$1")" = 1 ] && tok=$(cat "$KEYS/bad-es256.jwt")
  [ -n "$tok" ] && auth=(-H "authorization: Bearer $tok")
  out=$(curl -s --max-time 10 -w '\n%{http_code}' -X POST "$url" -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2025-11-25' "${auth[@]}" \
    -d '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}') || true
  code=${out##*$'\n'}
  [ "$code" != 000 ] || { echo "$1: no answer at $url; the gate's log:" >&2; cat "$WORK/gate.log" >&2; exit 1; }
  [ "$code" = "$(row_status "$1")" ] || { echo "$1: expected $(row_status "$1"), got $code: ${out%$'\n'*}" >&2; exit 1; }
  [ "$code" != 200 ] || grep -q '"text":"hello"' <<<"$out" || { echo "$1: no echo in ${out%$'\n'*}" >&2; exit 1; }
}
slice() { # row seconds -> "rps requests"; fails on any unexpected status or socket error
  local out
  out=$(VARY_SIG="$(row_vary "$1")" TOKEN="$(row_token "$1")" $LOAD timeout $(($2 + 20)) \
    wrk -t1 -c16 -d"${2}s" -s bench/mcp_post.lua "$(row_url "$1")")
  awk -v want="$(row_status "$1")" -v row="$1" '/^SUMMARY/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      bad = v["errors"] + ((want == 200) ? v["non2xx"] : v["requests"] - v["non2xx"])
      if (bad > 0) { print row ": " bad " errors or unexpected statuses" > "/dev/stderr"; exit 1 }
      print v["rps"], v["requests"] }' <<<"$out"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # pid -> its user + system time so far
cpu0() { awk '/^cpu0 / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; } # busy, all

read -ra rows <<<"$ROWS"
for r in "${rows[@]}"; do check "$r"; slice "$r" 2 >/dev/null; done

HZ=$(getconf CLK_TCK)
: >"$WORK/slices"
for ((round = 0; round < ROUNDS; round++)); do
  n=${#rows[@]}
  for ((i = 0; i < n; i++)); do
    r=${rows[$(((i + round) % n))]}
    # The server under test's CPU: the floor's for its own row, the gate's for the others.
    pid=$GW_PID
    [ "$r" = floor ] && pid=$FLOOR_PID
    [ "$r" = sample ] && pid=$SAMPLE_PID
    [ "${r%-batch}" != "$r" ] && pid=$GW_BATCH_PID
    t0=$(ticks "$pid")
    read -r b0 a0 <<<"$(cpu0)"
    read -r rps requests <<<"$(slice "$r" "$SLICE")"
    read -r b1 a1 <<<"$(cpu0)"
    echo "$round $r $rps $requests $(($(ticks "$pid") - t0)) $((b1 - b0)) $((a1 - a0))" >>"$WORK/slices"
  done
  printf '.' >&2
done
echo >&2

awk -v hz="$HZ" -v rounds="$ROUNDS" -v order="$ROWS" '
  function median(list, k,   a, m, i, j, t) {
    m = split(list, a, " ")
    for (i = 2; i <= m; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    if (k == "min") return a[1]; if (k == "max") return a[m]
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  { rate[$1, $2] = $3; all[$2] = all[$2] " " $3; req[$2] += $4; ticks[$2] += $5; busy0[$2] += $6; all0[$2] += $7 }
  END {
    n = split(order, rows, " ")
    printf "%-24s %10s %17s %16s %10s\n", "row", "median/s", "range", "CPU us/req", "CPU 0 busy"
    for (i = 1; i <= n; i++) {
      r = rows[i]; cpu = "-"
      if (r != "fastmcp" && r != "fastmcp-open" && r != "ts") cpu = sprintf("%.1f", ticks[r] / hz * 1e6 / req[r])
      printf "%-24s %10.0f %8.0f–%-8.0f %16s %9.0f%%\n", r, median(all[r]), median(all[r], "min"), median(all[r], "max"), cpu,
        all0[r] ? 100 * busy0[r] / all0[r] : 0
    }
    if (req["floor"] && req["open"] && ticks["open"])
      printf "\nfloor CPU / gate CPU per request (open): %.3f  (what open/floor would be if CPU 0, wrk and the upstream, kept up)\n",
        (ticks["floor"] / req["floor"]) / (ticks["open"] / req["open"])
    split("open-sample open-unix", sidecar, " ")
    for (k = 1; k <= 2; k++) {
      r = sidecar[k]
      if (req["sample"] && req[r] && ticks[r])
        printf "sample CPU / gate CPU per request (%s): %.3f\n", r, (ticks["sample"] / req["sample"]) / (ticks[r] / req[r])
    }
    printf "\n%-44s %8s %6s\n", "goal (median of per-round ratios)", "ratio", "aim"
    ngoals = split("open/floor valid/fastmcp valid/ts gate+fastmcp/fastmcp gate+fastmcp-unix/fastmcp gate+fastmcp-batch/fastmcp gate+fastmcp-unix-batch/fastmcp fastmcp-open/fastmcp gate+ts/ts forged/valid gate+fastmcp/fastmcp-open gate+fastmcp-batch/fastmcp-open gate+fastmcp-unix-batch/fastmcp-open open-sample/sample open-unix/sample", goals, " ")
    split("0.6 50 25 1.3 1.3 1.3 1.3 - - - - - - - -", aims, " ")
    for (g = 1; g <= ngoals; g++) {
      split(goals[g], ab, "/"); list = ""
      for (k = 0; k < rounds; k++) if (((k, ab[1]) in rate) && ((k, ab[2]) in rate) && rate[k, ab[2]] > 0)
        list = list " " rate[k, ab[1]] / rate[k, ab[2]]
      if (list != "") printf "%-44s %8.3f %6s\n", goals[g], median(list), aims[g]
    }
  }' "$WORK/slices"
echo "portcullis RSS: $(($(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status") / 1024)) MiB"
