#!/usr/bin/env bash
# Gateway mode on PostgreSQL: sign-ins (authorization approved without pages through
# `dangerous.auto_approve_as`, code exchange) and refreshes per second with one replica, then with three
# behind HAProxy in round-robin, on a database of their own created on DATABASE_URL's server and dropped
# after. bench/token.mjs makes the load in both cases.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/replicas.sh   # ROUNDS=600 WORKERS=16
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL server this may create a database on}"
ROUNDS="${ROUNDS:-600}"
WORKERS="${WORKERS:-16}"
UP_PORT="${UP_PORT:-19521}"
LB_PORT="${LB_PORT:-19530}"
REPLICA_PORTS=(19531 19532 19533)
# shellcheck source=bench/lib.sh
source bench/lib.sh
command -v haproxy >/dev/null || { echo "installing haproxy"; apt-get install -y haproxy >/dev/null 2>&1; }
DB="portcullis_bench_$$"
psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB" 2>/dev/null
psql "$DATABASE_URL" -qc "CREATE DATABASE $DB"
STORE="${DATABASE_URL%/*}/$DB"
trap 'cleanup; psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"' EXIT
export PORTCULLIS_OPERATOR_KEY
PORTCULLIS_OPERATOR_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
start_upstream "$UP_PORT"

config() { # listen port, public port -> file
  gateway_config "$2" "$1" "$STORE" "$UP_PORT" >"$WORK/replica-$1.toml"
  echo "$WORK/replica-$1.toml"
}

echo "== one replica on PostgreSQL"
single=$(config "${REPLICA_PORTS[0]}" "${REPLICA_PORTS[0]}")
echo 'bench-password' | "$BIN" users add bench --config "$single" >/dev/null
start_gate "$single" "${REPLICA_PORTS[0]}"
$LOAD timeout 600 node bench/token.mjs "http://127.0.0.1:${REPLICA_PORTS[0]}" "$ROUNDS" "$WORKERS"
kill "$GW_PID"
wait "$GW_PID" 2>/dev/null || true

echo "== three replicas on PostgreSQL behind HAProxy (round-robin)"
servers=""
for port in "${REPLICA_PORTS[@]}"; do
  start_gate "$(config "$port" "$LB_PORT")" "$port"
  servers+="  server r$port 127.0.0.1:$port"$'\n'
done
cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend portcullis
  bind 127.0.0.1:$LB_PORT
  default_backend replicas
backend replicas
  balance roundrobin
$servers
CFG
$LOAD haproxy -db -f "$WORK/haproxy.cfg" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$LB_PORT/readyz" >/dev/null && break; sleep 0.1; done
$LOAD timeout 600 node bench/token.mjs "http://127.0.0.1:$LB_PORT" "$ROUNDS" "$WORKERS"

echo "== the database after both runs (table, rows, bytes with indexes)"
psql "$STORE" -Atc "ANALYZE" >/dev/null
psql "$STORE" -AtF ' ' -c "SELECT relname, n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE n_live_tup > 0 ORDER BY 3 DESC"
