#!/usr/bin/env bash
# The load.sh scenarios on two server builds side by side: both servers
# pinned to CPU 0 at the same time, each on its own SQLite database and
# loaded by its own wrk on CPU 1 at the same time, so that neighbours on a
# shared machine affect both alike. Each line prints both rates (each
# server gets about half the core, so compare A with B, not with load.sh)
# and B/A, then each server's CPU time per request (user + system, in µs;
# steal excluded, so less noisy than the rates) and B/A. Two copies of one
# build differ by a few percent here (the second-started side tends to win
# the rates): run it both ways round. For a change to a shared path (the router, the cache, the
# writer), run it with the build before and after the change.
#   scripts/ab-load.sh OLD_BINARY NEW_BINARY
#   PORT_A=20501 PORT_B=20502 SECS=5 ROUNDS=2 scripts/ab-load.sh /tmp/authmd.old target/release/authmd
# Needs wrk and curl. Rate limits are off so that one address can register
# at full speed.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
ROUNDS=${ROUNDS:-2}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
. "$(dirname "$0")/load-common.sh"
cd "$work"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cat > register.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
LUA
declare -A port server key
port[A]=${PORT_A:-8080}; port[B]=${PORT_B:-8081}
for side in A B; do
  mkdir "$side"
  printf 'listen = "127.0.0.1:%s"\n[rate_limits]\nenabled = false\n' "${port[$side]}" > "$side/load.toml"
  bin=$([ "$side" = A ] && echo "$A" || echo "$B")
  (cd "$side" && exec taskset -c 0 "$bin" --config load.toml serve) & server[$side]=$!
  pids+=("${server[$side]}")
done
for side in A B; do
  base="http://127.0.0.1:${port[$side]}"
  for _ in $(seq 50); do curl -sf "$base/readyz" > /dev/null && break; sleep 0.1; done
  key[$side]=$(curl -s -X POST "$base/agent/auth" -H 'content-type: application/json' \
    -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
done
echo "A: $A"
echo "B: $B"
echo "$(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
# both SCENARIO CONNS: runs wrk on A and B at once, prints the rates, B/A,
# the CPU per request of each, B/A.
both() {
  local scenario=$1 c=$2 side
  declare -A waiter t0
  for side in A B; do t0[$side]=$(cpu_ticks "${server[$side]}"); done
  for side in A B; do
    local base="http://127.0.0.1:${port[$side]}"
    case $scenario in
      valid) set -- -H "Authorization: Bearer ${key[$side]}" "$base/api/whoami" ;;
      401) set -- "$base/api/whoami" ;;
      register) set -- -s register.lua "$base/agent/auth" ;;
    esac
    (taskset -c 1 wrk -t1 -c"$c" -d"${SECS}s" "$@" > "$side/out") & waiter[$side]=$!
  done
  wait "${waiter[A]}" "${waiter[B]}"
  python3 - "$hz" "$((${t0[A]}))" "$(cpu_ticks "${server[A]}")" "$((${t0[B]}))" "$(cpu_ticks "${server[B]}")" <<'PY'
import re, sys
hz, a0, a1, b0, b1 = map(int, sys.argv[1:])
def load(side):
    text = open(f"{side}/out").read()
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), \
        int(re.search(r"(\d+) requests in", text).group(1))
(ar, an), (br, bn) = load("A"), load("B")
au, bu = (a1 - a0) * 1e6 / hz / max(an, 1), (b1 - b0) * 1e6 / hz / max(bn, 1)
print(f"{ar:.0f}/s {br:.0f}/s {br / ar:.3f}; CPU {au:.1f} {bu:.1f} µs/req {bu / au:.3f}")
PY
}
for c in $CONNS_LIST; do
  for r in $(seq 1 "$ROUNDS"); do
    for s in valid 401 register; do
      echo "conns $c round $r $s: A B B/A = $(both "$s" "$c")"
    done
  done
done
