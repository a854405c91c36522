#!/usr/bin/env bash
# The valid-bearer rate (GET /api/whoami with a live key) while slow clients
# are attached, side by side with none attached:
#   none       nothing else attached
#   keepalive  IDLE connections idle after one request each, and a client
#              whose request body trickles in at a byte a second
#   silent     IDLE connections that send nothing (opened again as the
#              server closes them), and the same slow-body client
# The server is pinned to CPU 0; wrk and the slow clients share CPU 1.
#   PORT=8080 IDLE=5000 CONNS=64 SECS=10 ROUNDS=3 scripts/load-slow-clients.sh
# Needs wrk, python3 and a release build (cargo build --release -p authmd-cli).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-8080}
IDLE=${IDLE:-5000}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/load-common.sh"
cd "$work"
printf '[rate_limits]\nenabled = false\n' > load.toml
AUTHMD_LISTEN="127.0.0.1:$PORT" taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
sleep 1.5
base="http://127.0.0.1:$PORT"
key=$(curl -s -X POST "$base/agent/auth" -H 'content-type: application/json' \
  -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
  | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
valid() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Authorization: Bearer $key" "$base/api/whoami" \
  | awk '/Requests\/sec/{print $2} /Non-2xx/{print "non-2xx:" $4}' | paste -sd' '; }
attached() {
  taskset -c 1 python3 "$here/slow-clients.py" "$PORT" "$IDLE" "$1" "$((SECS + 35))" > holder.log & holder=$!
  pids+=("$holder")
  until grep -q attached holder.log; do sleep 0.2; done
  sleep 3 # let the server finish accepting (and answering) them
  local rate; rate=$(valid)
  local rss; rss=$(awk '/VmRSS/{print $2 $3}' "/proc/$server/status")
  kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
  echo "$rate ($(grep attached holder.log), server RSS $rss; $(grep held holder.log))"
}
echo "CONNS=$CONNS SECS=$SECS IDLE=$IDLE; $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: none=$(valid)"
  echo "round $r: keepalive=$(attached keepalive)"
  echo "round $r: silent=$(attached silent)"
done
