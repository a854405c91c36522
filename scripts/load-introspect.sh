#!/usr/bin/env bash
# Introspection (RFC 7662) against the API's own validation: the same
# server answers `GET /api/whoami` with a valid key and `POST
# /oauth2/introspect` (HTTP Basic, the same key, active) in alternating runs,
# at 1, 50 and 256 connections, ROUNDS times each; each line prints both
# rates and introspect/whoami. The server is pinned to CPU 0, wrk to CPU 1.
#   scripts/load-introspect.sh
#   PORT=20500 SECS=5 ROUNDS=3 scripts/load-introspect.sh
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load-introspect.sh
# Needs wrk and a release build (cargo build --release -p authmd-cli).
# Alternating short runs of one server let neighbours on a shared machine
# affect both sides alike; compare the ratios, not the absolute rates.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-8080}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
. "$(dirname "$0")/load-common.sh"
cd "$work"
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf %s "$secret" > introspection-secret
cat > load.toml <<TOML
listen = "127.0.0.1:$PORT"
[rate_limits]
enabled = false
[[introspection.clients]]
id = "load"
secret_file = "$work/introspection-secret"
TOML
base="http://127.0.0.1:$PORT"
taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
for _ in $(seq 50); do curl -sf "$base/readyz" > /dev/null && break; sleep 0.1; done
key=$(curl -s -X POST "$base/agent/auth" -H 'content-type: application/json' \
  -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
basic=$(printf 'load:%s' "$secret" | base64 -w0)
cat > introspect.lua <<LUA
wrk.method = "POST"
wrk.body = "token=$key"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
# Both must be answered as expected before anything is measured.
curl -sf "$base/api/whoami" -H "authorization: Bearer $key" > /dev/null
curl -s "$base/oauth2/introspect" -H "authorization: Basic $basic" -d "token=$key" | grep -q '"active":true'
run() { taskset -c 1 wrk -t1 -c"$1" -d"${SECS}s" "${@:2}" > out; \
  if grep -q Non-2xx out; then echo "non-2xx answers: $(grep Non-2xx out)" >&2; exit 1; fi; \
  awk '/Requests\/sec/{print $2}' out; }
echo "server: $BIN; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CONNS_LIST; do
  for r in $(seq 1 "$ROUNDS"); do
    w=$(run "$c" -H "Authorization: Bearer $key" "$base/api/whoami")
    i=$(run "$c" -s introspect.lua "$base/oauth2/introspect")
    echo "conns $c round $r: whoami=$w introspect=$i ratio=$(python3 -c "print(f'{$i/$w:.2f}')")"
  done
done
echo "RSS after: $(grep VmRSS /proc/$server/status)"
