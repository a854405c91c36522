#!/usr/bin/env bash
# Load run of agent-verified registration (POST /agent/auth with an ID-JAG)
# on loopback: the server pinned to CPU 0, wrk and the provider's JWKS on
# CPU 1. Every request carries a distinct assertion, so every one verifies a
# signature, spends a jti and issues a credential. The run is cut into
# slices of SECS seconds and prints the rate of each with the number of jti
# remembered so far, to show whether it slows down as they accumulate.
#   scripts/load-id-jag.sh                          # ES256, 1000 users, SQLite
#   ALG=EdDSA USERS=0 SLICES=12 scripts/load-id-jag.sh   # USERS=0: all new users
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load-id-jag.sh
# Needs wrk, python3 and a release build of the server and the token minter:
#   cargo build --release -p authmd-cli && cargo build --release -p authmd-jose --examples
# Tokens are minted before the run with a 10-minute lifetime (the default
# assertions.max_lifetime), so the whole run must fit in 10 minutes.
set -euo pipefail
. "$(dirname "$0")/load-common.sh"
MINT=$(realpath -m "${MINT:-${CARGO_TARGET_DIR:-target}/release/examples/mint_tokens}")
ALG=${ALG:-ES256}
SLICES=${SLICES:-8}
TOKENS=${TOKENS:-$((SLICES * SECS * 15000))}
USERS=${USERS:-1000}
[ "$USERS" = 0 ] && USERS=$TOKENS
PORT=${PORT:-8080}
IDP_PORT=${IDP_PORT:-9797}
cd "$work"

issuer="http://127.0.0.1:$PORT"
provider="http://127.0.0.1:$IDP_PORT"
echo "minting $TOKENS $ALG assertions for $USERS users"
"$MINT" "$TOKENS" "$provider" "$issuer" idp "$ALG" "$USERS"
taskset -c 1 python3 -m http.server -b 127.0.0.1 -d idp "$IDP_PORT" >/dev/null 2>&1 & pids+=($!)

cat > load.toml <<TOML
listen = "127.0.0.1:$PORT"
[rate_limits]
enabled = false
[[providers]]
issuer = "$provider"
algorithms = ["$ALG"]
TOML
cat > idjag.lua <<'LUA'
-- args: bodies file, first line to send (1-based)
local bodies = {}
i = 0 -- global: done() reads it from the thread
function init(args)
  local first = tonumber(args[2])
  local n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    if n >= first then bodies[#bodies + 1] = line end
  end
end
function request()
  i = i + 1
  return wrk.format("POST", "/agent/auth", {["Content-Type"] = "application/json"}, bodies[i])
end
local threads = {}
function setup(t) threads[#threads + 1] = t end
function done()
  local f = io.open("sent", "w")
  f:write(threads[1]:get("i"))
  f:close()
end
LUA

taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
sleep 1.5
# CPU time of the server (user + system, in clock ticks; steal excluded).
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)
echo "raw ES256 verify on this core: $(taskset -c 0 openssl speed -seconds 2 ecdsap256 2>/dev/null | awk '/nistp256/{print $NF}')/s (openssl speed)"
next=1
for s in $(seq 1 "$SLICES"); do
  c0=$(cpu)
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s idjag.lua "$issuer/agent/auth" -- idp/bodies.txt "$next")
  c1=$(cpu)
  sent=$(cat sent)
  done_=$(awk '/requests in/{print $1}' <<<"$out")
  rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  max=$(awk '$1 == "Latency" {print $4}' <<<"$out")
  bad=$(awk '/Non-2xx/{print $NF}' <<<"$out")
  us=$(( (c1 - c0) * 1000000 / hz / (done_ > 0 ? done_ : 1) ))
  echo "slice $s: ${rate} req/s, server CPU ${us} µs/request, latency max ${max}, jti before: $((next - 1)), non-2xx: ${bad:-0}"
  next=$((next + sent))
done
echo "RSS after: $(grep VmRSS /proc/$server/status)"
