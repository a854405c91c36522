#!/usr/bin/env bash
# Load run of agent-verified registration (POST /agent/auth with an ID-JAG)
# on loopback: the server pinned to CPU 0, wrk and the provider's JWKS on
# CPU 1. Every request carries a distinct assertion, so every one verifies a
# signature, spends a jti and issues a credential. The run is cut into
# slices of SECS seconds and prints the rate of each with the number of jti
# remembered so far, to show whether it slows down as they accumulate.
# 256 connections by default (scripts/load-matrix.sh runs 1, 50 and 256).
#   scripts/load-id-jag.sh                          # ES256, 1000 users, SQLite
#   ALG=EdDSA USERS=0 SLICES=12 scripts/load-id-jag.sh   # USERS=0: all new users
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load-id-jag.sh
# Needs wrk, python3 and a release build of the server and the token minter:
#   cargo build --release -p authmd-cli && cargo build --release -p authmd-jose --examples
# Tokens are minted before the run with a 10-minute lifetime (the default
# assertions.max_lifetime), so the whole run must fit in 10 minutes.
set -euo pipefail
CONNS=${CONNS:-256}
. "$(dirname "$0")/load-common.sh"
. "$(dirname "$0")/id-jag-common.sh"
SLICES=${SLICES:-8}
TOKENS=${TOKENS:-$((SLICES * SECS * 15000))}
PORT=${PORT:-8080}
IDP_PORT=${IDP_PORT:-9797}
cd "$work"

issuer="http://127.0.0.1:$PORT"
echo "minting $TOKENS $ALG assertions ($([ "$USERS" = 0 ] && echo "a new user each" || echo "$USERS users"))"
id_jag_setup "$PORT" "$IDP_PORT"

taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
sleep 1.5
raw_verify_rates "this core" "$ALG"
next=1
for s in $(seq 1 "$SLICES"); do
  c0=$(cpu_ticks "$server")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$LUA" "$issuer/agent/auth" -- idp/bodies.txt "$next")
  c1=$(cpu_ticks "$server")
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
