#!/usr/bin/env bash
# The valid-bearer rate with and without a flood of made-up API keys (well
# formed, never issued: the checksum is public), on loopback: the server
# pinned to CPU 0, wrk on CPU 1. Compares builds side by side, interleaved.
#   BIN_A=old/authmd BIN_B=new/authmd scripts/load-unknown.sh
#   BIN=target/release/authmd scripts/load-unknown.sh          # one build
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load-unknown.sh
# Knobs: SECS (10), ROUNDS (3), CONNS_LIST ("1 50 256"), KEYS (200 valid
# keys, rotated), JUNK (200000 made-up keys, each used once: every one is a
# cache miss and a store read), PORT (19080). Needs wrk and a release build
# of the made_up_tokens example (cargo build --release -p authmd --example
# made_up_tokens). Rate limits are off so that one address can register.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
KEYS=${KEYS:-200}
JUNK=${JUNK:-200000}
PORT=${PORT:-19080}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/load-common.sh"
MINT=$(realpath -m "${MINT:-${CARGO_TARGET_DIR:-target}/release/examples/made_up_tokens}")
if [ -n "${BIN_A:-}" ]; then
  builds=("A=$(realpath -m "$BIN_A")" "B=$(realpath -m "$BIN_B")")
else
  builds=("B=$BIN")
fi
cd "$work"
cp "$here/unknown.lua" .
"$MINT" "$JUNK" > junk.txt
printf '[rate_limits]\nenabled = false\n' > load.toml

# Starts build $1 on a fresh database, registers $KEYS keys into valid.txt.
start() {
  rm -rf data && mkdir data
  AUTHMD_LISTEN=127.0.0.1:$PORT taskset -c 0 "$1" --config load.toml serve > server.log 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  : > valid.txt
  for _ in $(seq "$KEYS"); do
    curl -s -X POST "http://127.0.0.1:$PORT/agent/auth" -H 'content-type: application/json' \
      -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
      | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])' >> valid.txt
  done
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; }
run() { MIX=$1 taskset -c 1 wrk -t1 -c"$2" -d"${SECS}s" -s unknown.lua "http://127.0.0.1:$PORT/api/whoami" | tail -1; }

for r in $(seq 1 "$ROUNDS"); do
  for b in "${builds[@]}"; do
    name=${b%%=*}; bin=${b#*=}
    start "$bin"
    for c in $CONNS_LIST; do
      echo "round $r build $name conns $c  valid-only: $(run 0 "$c")"
      echo "round $r build $name conns $c  50% unknown: $(run 1 "$c")"
      echo "round $r build $name conns $c  50% none:    $(run 2 "$c")"
    done
    stop
  done
done
