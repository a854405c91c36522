#!/usr/bin/env bash
# Introspection (RFC 7662) against the API's own validation, side by side:
# two servers of one build, both pinned to CPU 0 at the same time, one
# loaded with `GET /api/whoami` (a valid key), the other with `POST
# /oauth2/introspect` (HTTP Basic, an active key), each by its own wrk on
# CPU 1 at the same time, so that neighbours on a shared machine slow both
# alike. Each line prints both rates, their ratio, and each server's CPU
# time per request (user + system) and that ratio; at 1, 50 and 256
# connections, ROUNDS times each. The goal is introspect/whoami >= 0.8.
#   scripts/load-introspect.sh
#   PORT=20500 SECS=5 ROUNDS=3 BIN=/tmp/authmd scripts/load-introspect.sh
# Needs wrk, curl and a release build (cargo build --release -p authmd-cli).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-8080}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
. "$(dirname "$0")/load-common.sh"
cd "$work"
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf %s "$secret" > introspection-secret
basic=$(printf 'load:%s' "$secret" | base64 -w0)
declare -A port server key
port[W]=$PORT; port[I]=$((PORT + 1))
for side in W I; do
  mkdir "$side"
  cat > "$side/load.toml" <<TOML
listen = "127.0.0.1:${port[$side]}"
[rate_limits]
enabled = false
[[introspection.clients]]
id = "load"
secret_file = "$work/introspection-secret"
TOML
  (cd "$side" && exec taskset -c 0 "$BIN" --config load.toml serve) & server[$side]=$!
  pids+=("${server[$side]}")
done
for side in W I; do
  base="http://127.0.0.1:${port[$side]}"
  for _ in $(seq 50); do curl -sf "$base/readyz" > /dev/null && break; sleep 0.1; done
  key[$side]=$(curl -s -X POST "$base/agent/auth" -H 'content-type: application/json' \
    -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
done
cat > introspect.lua <<LUA
wrk.method = "POST"
wrk.body = "token=${key[I]}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $basic"
LUA
whoami="http://127.0.0.1:${port[W]}/api/whoami"
introspect="http://127.0.0.1:${port[I]}/oauth2/introspect"
# Both must answer as expected before anything is measured.
curl -sf "$whoami" -H "authorization: Bearer ${key[W]}" > /dev/null
curl -s "$introspect" -H "authorization: Basic $basic" -d "token=${key[I]}" | grep -q '"active":true'
echo "server: $BIN; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in $CONNS_LIST; do
  for r in $(seq 1 "$ROUNDS"); do
    w0=$(cpu_ticks "${server[W]}"); i0=$(cpu_ticks "${server[I]}")
    taskset -c 1 wrk -t1 -c"$c" -d"${SECS}s" -H "Authorization: Bearer ${key[W]}" "$whoami" > W/out & ww=$!
    taskset -c 1 wrk -t1 -c"$c" -d"${SECS}s" -s introspect.lua "$introspect" > I/out & wi=$!
    wait "$ww" "$wi"
    w1=$(cpu_ticks "${server[W]}"); i1=$(cpu_ticks "${server[I]}")
    if grep -q Non-2xx W/out I/out; then echo "non-2xx answers" >&2; grep Non-2xx W/out I/out >&2; exit 1; fi
    python3 - "$c" "$r" "$hz" "$w0" "$w1" "$i0" "$i1" <<'PY'
import re, sys
c, r, hz, w0, w1, i0, i1 = sys.argv[1:]
def load(side):
    text = open(f"{side}/out").read()
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)), \
        int(re.search(r"(\d+) requests in", text).group(1))
(wr, wn), (ir, inn) = load("W"), load("I")
wus = (int(w1) - int(w0)) * 1e6 / int(hz) / max(wn, 1)
ius = (int(i1) - int(i0)) * 1e6 / int(hz) / max(inn, 1)
print(f"conns {c} round {r}: whoami {wr:.0f}/s {wus:.1f} µs CPU/req, "
      f"introspect {ir:.0f}/s {ius:.1f} µs CPU/req; rate ratio {ir / wr:.2f}, "
      f"CPU ratio whoami/introspect {wus / ius:.2f}")
PY
  done
done
for side in W I; do echo "RSS $side after: $(grep VmRSS /proc/${server[$side]}/status)"; done
