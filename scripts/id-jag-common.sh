# Sourced by the agent-verified load scripts after load-common.sh: the
# assertion minter and its knobs, and `id_jag_setup PORT IDP_PORT`, which
# mints TOKENS assertions for a server at PORT from a provider at IDP_PORT
# into the current directory (idp/: its JWKS and idp/bodies.txt, one
# request body per line), serves that JWKS on CPU 1 and writes load.toml.
# Send the bodies with `wrk -s "$LUA" ... -- idp/bodies.txt FIRST_LINE`;
# wrk leaves the number it sent in ./sent.
MINT=$(realpath -m "${MINT:-${CARGO_TARGET_DIR:-target}/release/examples/mint_tokens}")
# The raw verification rate with authmd's own library, printed beside
# openssl's (crates/authmd-jose/examples/verify_rate.rs); skipped if absent.
VERIFY_RATE=$(realpath -m "${VERIFY_RATE:-$(dirname "$MINT")/verify_rate}")
LUA=$(realpath "$(dirname "${BASH_SOURCE[0]}")/id-jag.lua")
ALG=${ALG:-ES256}
USERS=${USERS:-1000}

id_jag_setup() {
  local port=$1 idp_port=$2 users=$USERS
  [ "$users" = 0 ] && users=$TOKENS
  "$MINT" "$TOKENS" "http://127.0.0.1:$idp_port" "http://127.0.0.1:$port" idp "$ALG" "$users"
  taskset -c 1 python3 -m http.server -b 127.0.0.1 -d idp "$idp_port" >/dev/null 2>&1 & pids+=($!)
  cat > load.toml <<TOML
listen = "127.0.0.1:$port"
[rate_limits]
enabled = false
[[providers]]
issuer = "http://127.0.0.1:$idp_port"
algorithms = ["$ALG"]
TOML
}

# CPU time a process has used (user + system, in clock ticks; this kernel
# excludes steal), and the ticks per second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# raw_verify_rates WHERE ALG: the core's raw verification rate, by openssl
# (ES256 only: `speed ecdsap256`) and by aws-lc if verify_rate is built,
# each on its own line, on CPU 0.
raw_verify_rates() {
  if [ "$2" = ES256 ]; then
    echo "raw ES256 verify on $1: $(taskset -c 0 openssl speed -seconds 2 ecdsap256 2>/dev/null | awk '/nistp256/{print $NF}')/s (openssl speed)"
  fi
  if [ -x "$VERIFY_RATE" ]; then
    echo "raw $2 verify on $1: $(taskset -c 0 "$VERIFY_RATE" 2 "$2")/s (aws-lc, the library authmd verifies with)"
  fi
}
