#!/usr/bin/env bash
# Two builds side by side on the request path (the accept loop, the router):
# valid-bearer and 401 rates at 1, 50 and 256 connections, and anonymous
# registration at 50, alternating A and B in each round so that the noise
# of a shared machine falls on both alike. The server is pinned to CPU 0,
# wrk to CPU 1. Each figure is requests/s and, after the slash, the
# server's CPU time per request in microseconds (user + system, from
# /proc): the rate moves with whatever else the machine runs, the CPU per
# request much less.
#   A=/path/old/authmd B=/path/new/authmd PORT=8080 SECS=5 ROUNDS=3 scripts/ab-serve.sh
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-8080}
SECS=${SECS:-5}
A=$(realpath "${A:?A=old binary}")
B=$(realpath "${B:?B=new binary}")
here=$(cd "$(dirname "$0")" && pwd)
BIN=$B
. "$here/load-common.sh"
cd "$work"
printf '[rate_limits]\nenabled = false\n' > load.toml
cat > register.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
LUA
base="http://127.0.0.1:$PORT"
one() { # binary label
  rm -rf data
  AUTHMD_LISTEN="127.0.0.1:$PORT" taskset -c 0 "$1" --config load.toml serve & local server=$!
  pids+=("$server")
  until curl -sf "$base/readyz" > /dev/null; do sleep 0.1; done
  local key
  key=$(curl -s -X POST "$base/agent/auth" -H 'content-type: application/json' \
    -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
  cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
  run() {
    local before after out
    before=$(cpu)
    out=$(taskset -c 1 wrk -t1 -c"$1" -d"${SECS}s" "${@:2}")
    after=$(cpu)
    echo "$out" | awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" \
      '/requests in/{n=$1} /Requests\/sec/{r=$2} END{printf "%s/%.1fus", r, (n ? t / hz / n * 1e6 : 0)}'
  }
  local line="$2:"
  for c in 1 50 256; do
    line+=" valid@$c=$(run "$c" -H "Authorization: Bearer $key" "$base/api/whoami")"
  done
  for c in 1 50 256; do
    line+=" 401@$c=$(run "$c" "$base/api/whoami")"
  done
  line+=" register@50=$(run 50 -s register.lua "$base/agent/auth")"
  kill "$server"; wait "$server" 2>/dev/null || true
  echo "$line"
}
echo "SECS=$SECS; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  one "$A" "  A"
  one "$B" "  B"
done
