#!/usr/bin/env bash
# Side-by-side comparison of two server builds on agent-verified
# registration: both servers pinned to CPU 0 at the same time, each on its
# own SQLite database and loaded by its own wrk on CPU 1, so that steal,
# clock and neighbours on a shared machine affect both alike. For each slice
# it prints each server's CPU time per registration (user + system; steal
# excluded). Two copies of one build agree within about 1% here, where two
# runs of one build one after the other differ by up to 20%: use this, not
# two load-id-jag.sh runs, to tell whether a change is faster.
#   scripts/ab-id-jag.sh OLD_BINARY NEW_BINARY
#   USERS=0 SLICES=6 scripts/ab-id-jag.sh /tmp/authmd.old target/release/authmd
#   PORT_A=19081 PORT_B=19082 IDP_A=19797 IDP_B=19798 scripts/ab-id-jag.sh …   # other ports
# Needs what load-id-jag.sh needs.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
. "$(dirname "$0")/load-common.sh"
. "$(dirname "$0")/id-jag-common.sh"
SLICES=${SLICES:-4}
TOKENS=${TOKENS:-$((SLICES * SECS * 4000))}
cd "$work"

declare -A server next port idp
port[A]=${PORT_A:-8080}; port[B]=${PORT_B:-8081}; idp[A]=${IDP_A:-9797}; idp[B]=${IDP_B:-9798}
for side in A B; do
  mkdir "$side"
  cd "$work/$side"
  id_jag_setup "${port[$side]}" "${idp[$side]}"   # not in a subshell: it adds to pids
  cd "$work"
  bin=$([ "$side" = A ] && echo "$A" || echo "$B")
  (cd "$side" && exec taskset -c 0 "$bin" --config load.toml serve) & server[$side]=$!
  pids+=("${server[$side]}")
  next[$side]=1
done
sleep 1.5
echo "A: $A"
echo "B: $B"
for s in $(seq 1 "$SLICES"); do
  declare -A c0 waiters
  for side in A B; do
    c0[$side]=$(cpu_ticks "${server[$side]}")
    (cd "$side" && taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$LUA" \
      "http://127.0.0.1:${port[$side]}/agent/auth" -- idp/bodies.txt "${next[$side]}" > out) &
    waiters[$side]=$!
  done
  wait "${waiters[A]}" "${waiters[B]}"
  line="slice $s:"
  for side in A B; do
    n=$(awk '/requests in/{print $1}' "$side/out")
    bad=$(awk '/Non-2xx/{print $NF}' "$side/out")
    us=$(( ($(cpu_ticks "${server[$side]}") - ${c0[$side]}) * 1000000 / hz / (n > 0 ? n : 1) ))
    line="$line  $side ${us} µs/request (${n} requests, non-2xx ${bad:-0})"
    next[$side]=$(( ${next[$side]} + $(cat "$side/sent") ))
  done
  echo "$line"
done
