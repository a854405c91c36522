#!/usr/bin/env bash
# Instructions per request, two builds side by side: the user-space CPU
# work of one request, counted by valgrind's callgrind, which does not
# move with the machine's noise the way req/s and µs do (the same build
# gives the same count within a fraction of a percent, whatever else the
# machine is doing). For a change whose effect is a few percent, which the
# load runs (scripts/load-matrix.sh) cannot tell from their ±10-25% noise.
#
#   scripts/instructions.sh OLD_BINARY NEW_BINARY
#   scripts/instructions.sh target/release/authmd                 # one build
#   N=500 SCENARIOS="anonc refresh" scripts/instructions.sh A B
#   KEEP=/tmp/cg SCENARIOS=gateway scripts/instructions.sh A   # and then:
#   callgrind_annotate --inclusive=yes /tmp/cg/A-gateway/callgrind.out*
#
# Each scenario runs on a fresh SQLite database, one connection, one
# request at a time: WARM requests first (not counted: the caches, the
# prepared statements and the provider's keys are warm after them), then
# N counted. Scenarios: valid (GET whoami with a valid key), anon
# (anonymous registration), anonc (the current dialect's anonymous
# registration, with its signed assertion), exchange (one of authmd's
# assertions at the token endpoint), refresh (a claimed registration's
# chain of rotations), idjag (agent-verified registration, a distinct
# ES256 assertion per request, subjects cycling through USERS), claim
# (POST /agent/auth/claim round-robin over 16 anonymous registrations, each
# a new attempt and an email to the outbox, as in the load matrix), gateway
# (GET through the gateway with a valid key to a small HTTP/1.1 upstream
# that answers 200 and keeps the connection: what authmd adds to a
# proxied request, identity headers and cached assertion included).
#
# What it does not count: the kernel (system calls, the fsync, the
# network), and waiting. And under valgrind aws-lc takes its portable
# P-256 code (valgrind does not offer the CPU's ADX/BMI2 extensions), so
# the signature work is counted a little higher than it costs natively;
# the same for both builds.
# Needs valgrind, python3, curl and release builds:
#   cargo build --release -p authmd-cli && cargo build --release -p authmd-jose --examples
set -euo pipefail
SCRIPTS=$(realpath "$(dirname "$0")")
. "$SCRIPTS/load-common.sh"
builds "$@"
. "$SCRIPTS/id-jag-common.sh"
SCENARIOS=${SCENARIOS:-"valid anon anonc exchange refresh idjag gateway"}
N=${N:-200}
WARM=${WARM:-50}
PORT=${PORT:-21480}
IDP_PORT=${IDP_PORT:-21497}
UPSTREAM_PORT=${UPSTREAM_PORT:-21498}
base="http://127.0.0.1:$PORT"
command -v valgrind >/dev/null || { echo "needs valgrind" >&2; exit 1; }
cd "$work"

# The provider's assertions, if an idjag run is asked for: WARM + N for
# each run, the same set for both builds (each run has a fresh database).
if [[ " $SCENARIOS " == *" idjag "* ]]; then
  "$MINT" $((WARM + N)) "http://127.0.0.1:$IDP_PORT" "$base" idp ES256 "$USERS" >/dev/null
  python3 -m http.server -b 127.0.0.1 -d idp "$IDP_PORT" >/dev/null 2>&1 & pids+=($!)
fi

# The gateway's upstream: 200 "ok" on a kept connection.
if [[ " $SCENARIOS " == *" gateway "* ]]; then
  cat > upstream.py <<'PY'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  python3 upstream.py "$UPSTREAM_PORT" & pids+=($!)
fi

# The client: SCENARIO FIRST COUNT, one keep-alive connection, every
# answer checked. State between calls (the refresh chain's head, the
# assertion, the key) is kept in files of the run's directory.
cat > client.py <<'PY'
import http.client, json, os, sys, urllib.parse
base, scenario, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(base)
c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
def call(method, path, body=None, ctype="application/json", headers=None):
    h = dict(headers or {})
    if body is not None:
        h["Content-Type"] = ctype
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    d = r.read()
    if r.status not in (200, 201):
        sys.exit(f"{scenario}: {method} {path} answered {r.status}: {d[:200]!r}")
    return d
def state(name, make):
    if not os.path.exists(name):
        open(name, "w").write(make())
    return open(name).read().strip()
anon_body = json.dumps({"type": "anonymous", "requested_credential_type": "api_key"})
if scenario in ("valid", "gateway"):
    key = state("key", lambda: json.loads(call("POST", "/agent/auth", anon_body))["credential"])
elif scenario == "exchange":
    assertion = state("assertion", lambda: json.loads(
        call("POST", "/agent/identity", json.dumps({"type": "anonymous"})))["identity"]["assertion"])
elif scenario == "idjag":
    bodies = open(os.environ["BODIES"]).read().splitlines()[first:first + count]
elif scenario == "claim":
    tokens = state("claims", lambda: "\n".join(
        json.loads(call("POST", "/agent/auth", anon_body))["claim_token"] for _ in range(16))).split()
for i in range(count):
    if scenario == "valid":
        call("GET", "/api/whoami", headers={"Authorization": "Bearer " + key})
    elif scenario == "gateway":
        call("GET", "/api/x", headers={"Authorization": "Bearer " + key})
    elif scenario == "anon":
        call("POST", "/agent/auth", anon_body)
    elif scenario == "anonc":
        call("POST", "/agent/identity", json.dumps({"type": "anonymous"}))
    elif scenario == "exchange":
        call("POST", "/oauth2/token",
             "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" + assertion,
             "application/x-www-form-urlencoded")
    elif scenario == "refresh":
        token = open("refresh").read().split()[0]
        d = call("POST", "/agent/identity", json.dumps({"type": "refresh", "refresh_token": token}))
        open("refresh", "w").write(json.loads(d)["identity"]["refresh_token"]["value"])
    elif scenario == "idjag":
        call("POST", "/agent/auth", bodies[i])
    elif scenario == "claim":
        n = first + i
        call("POST", "/agent/auth/claim", json.dumps(
            {"claim_token": tokens[n % len(tokens)], "email": f"user{n % 5000}@example.com"}))
    else:
        sys.exit(f"unknown scenario {scenario}")
PY

# count SIDE SCENARIO: prints the instructions per counted request.
count() {
  local side=$1 scenario=$2 vg total
  rm -rf run && mkdir run
  run_toml "$work/run" "sqlite://$work/run/authmd.db"
  if [ "$scenario" = gateway ]; then
    printf '[resource]\npre_claim_scopes = ["api.read", "api.write"]\n[upstream]\nurl = "http://127.0.0.1:%s"\n' \
      "$UPSTREAM_PORT" >> run/load.toml
  fi
  (cd run && exec valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/run/callgrind.out" "${bin[$side]}" --config load.toml serve \
    >"$work/run/valgrind.log" 2>&1) &
  vg=$!
  wait_ready "$base" 1200   # valgrind starts it slowly
  if [ "$scenario" = refresh ]; then
    python3 "$SCRIPTS/current-claims.py" "$base" "$work/run/outbox" 1 refresh > run/refresh
  fi
  (cd run && BODIES="$work/idp/bodies.txt" python3 ../client.py "$base" "$scenario" 0 "$WARM")
  callgrind_control -i on "$vg" >/dev/null 2>&1
  (cd run && BODIES="$work/idp/bodies.txt" python3 ../client.py "$base" "$scenario" "$WARM" "$N")
  callgrind_control -i off "$vg" >/dev/null 2>&1
  kill "$vg"
  wait "$vg" 2>/dev/null || true
  # One file per dump (a thread's or the process's): their totals add up.
  total=0
  for f in run/callgrind.out*; do
    t=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    total=$((total + ${t:-0}))
  done
  if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP/$side-$scenario" && cp run/callgrind.out* "$KEEP/$side-$scenario/"
  fi
  echo $((total / N))
}

printf '| scenario | %s |%s\n' "$(printf '%s instr/req | ' "${sides[@]}" | sed 's/ | $//')" \
  "$([ ${#sides[@]} = 2 ] && echo ' B/A |')"
printf '|---|%s\n' "$(printf -- '---|%.0s' "${sides[@]}")$([ ${#sides[@]} = 2 ] && echo '---|')"
for scenario in $SCENARIOS; do
  declare -A got=()
  for side in "${sides[@]}"; do got[$side]=$(count "$side" "$scenario"); done
  if [ ${#sides[@]} = 2 ]; then
    printf '| %s | %s | %s | %s |\n' "$scenario" "${got[A]}" "${got[B]}" \
      "$(awk -v a="${got[A]}" -v b="${got[B]}" 'BEGIN {printf "%.3f", b / a}')"
  else
    printf '| %s | %s |\n' "$scenario" "${got[A]}"
  fi
done
