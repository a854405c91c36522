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
