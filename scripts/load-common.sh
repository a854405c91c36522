# Sourced by the load scripts: the release binary (an absolute path: the
# scripts then `cd "$work"`), the knobs every run shares, and that scratch
# directory, removed on exit after every process in `pids` is killed.
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-target}/release/authmd}")
SECS=${SECS:-10}
CONNS=${CONNS:-64}
pids=()
work=$(mktemp -d)
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
export AUTHMD_LOG=warn
if [ -n "${DATABASE:-}" ]; then export AUTHMD_DATABASE_URL="$DATABASE"; fi

# builds BINARY_A [BINARY_B]: the builds a script compares, as bin[A]
# (and bin[B]), absolute, and sides=(A) or (A B); else the usage, exit 2.
builds() {
  [ $# = 1 ] || [ $# = 2 ] || { echo "usage: $0 BINARY_A [BINARY_B]" >&2; exit 2; }
  declare -gA bin
  bin[A]=$(realpath "$1")
  sides=(A)
  if [ $# = 2 ]; then bin[B]=$(realpath "$2"); sides=(A B); fi
}

# run_toml DIR DATABASE_URL: DIR/load.toml, the settings the matrix and the
# instruction count start a server with: listening on $PORT, mail to
# DIR/outbox, rate limits off, the minted provider at $IDP_PORT (ES256).
run_toml() {
  cat > "$1/load.toml" <<TOML
listen = "127.0.0.1:$PORT"
[database]
url = "$2"
[mail]
outbox = "$1/outbox"
[rate_limits]
enabled = false
[[providers]]
issuer = "http://127.0.0.1:$IDP_PORT"
algorithms = ["ES256"]
TOML
}

# wait_ready BASE_URL TRIES: polls /readyz every 0.1 s; fails the run if
# the server is not ready after TRIES polls.
wait_ready() {
  for _ in $(seq 1 "$2"); do
    curl -sf -o /dev/null "$1/readyz" && return 0
    sleep 0.1
  done
  echo "the server did not become ready" >&2
  exit 1
}
