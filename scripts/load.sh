#!/usr/bin/env bash
# Load runs on loopback: the server pinned to CPU 0, wrk on CPU 1.
#   scripts/load.sh                      # SQLite
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load.sh
# Needs wrk (Debian: apt-get install wrk) and a release build
# (cargo build --release -p authmd-cli). Each scenario runs ROUNDS times;
# rate limits are off so that one address can register at full speed.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
. "$(dirname "$0")/load-common.sh"
cd "$work"
printf '[rate_limits]\nenabled = false\n' > load.toml
cat > register.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
LUA
taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
sleep 1.5
echo "idle RSS: $(grep VmRSS /proc/$server/status)"
key=$(curl -s -X POST http://127.0.0.1:8080/agent/auth -H 'content-type: application/json' \
  -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
run() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "$@" | awk '/Requests\/sec/{print $2}'; }
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: valid=$(run -H "Authorization: Bearer $key" http://127.0.0.1:8080/api/whoami)" \
       "401=$(run http://127.0.0.1:8080/api/whoami)" \
       "register=$(run -s register.lua http://127.0.0.1:8080/agent/auth)"
done
echo "RSS after: $(grep VmRSS /proc/$server/status)"
