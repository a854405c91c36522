#!/usr/bin/env bash
# Load runs of the claim endpoints on loopback: the server pinned to CPU 0,
# wrk on CPU 1, rate limits off, mail to the outbox (one file per message).
#   scripts/load-claim.sh                      # SQLite
#   DATABASE=postgres://postgres@127.0.0.1:5432/authmd_load scripts/load-claim.sh
# Needs wrk, python3 (to read the outbox) and a release build
# (cargo build --release -p authmd-cli).
#
# Scenarios:
#   start     POST /agent/auth/claim, round-robin over many anonymous
#             registrations (each a new attempt and a queued email)
#   view      GET  /agent/auth/claim/view?token=… (the page; mints nothing)
#   show      POST /agent/auth/claim/view action=show (mints a code)
#   guess     POST /agent/auth/claim/complete, wrong code, unknown claim
#             token (what a guesser costs)
set -euo pipefail
ROUNDS=${ROUNDS:-3}
. "$(dirname "$0")/load-common.sh"
cd "$work"
printf '[rate_limits]\nenabled = false\n' > load.toml
taskset -c 0 "$BIN" --config load.toml serve & server=$!
pids+=("$server")
sleep 1.5
base=http://127.0.0.1:8080

# Registrations to claim: wrk registers for 2 s and keeps the claim tokens.
cat > register.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
local out = io.open("tokens.txt", "a")
response = function(status, headers, body)
  local t = string.match(body, '"claim_token":"(clm_[%w_]+)"')
  if t then out:write(t, "\n") end
end
LUA
taskset -c 1 wrk -t1 -c16 -d2s -s register.lua "$base/agent/auth" > /dev/null
echo "registrations to claim: $(wc -l < tokens.txt)"

cat > start.lua <<'LUA'
local tokens = {}
for line in io.lines("start-tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  local t = tokens[(i % #tokens) + 1]
  return wrk.format("POST", "/agent/auth/claim", {["Content-Type"] = "application/json"},
    '{"claim_token":"' .. t .. '","email":"user' .. (i % 5000) .. '@example.com"}')
end
LUA

# One claim whose link the view scenarios use.
first=$(head -1 tokens.txt)
tail -n +2 tokens.txt > start-tokens.txt   # the viewer's claim is never restarted
curl -s -o /dev/null -X POST "$base/agent/auth/claim" -H 'content-type: application/json' \
  -d "{\"claim_token\":\"$first\",\"email\":\"viewer@example.com\"}"
sleep 0.5
cvt=$(python3 - <<'PY'
import email, glob, os, re
path = max(glob.glob("data/outbox/*.eml"), key=os.path.getmtime)
m = email.message_from_file(open(path))
text = next(p for p in m.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
print(re.search(r"token=(cvt_[A-Za-z0-9]+)", text).group(1))
PY
)
printf 'wrk.method = "POST"\nwrk.body = "token=%s&action=show"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n' "$cvt" > show.lua
cat > guess.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"claim_token":"clm_0000000000000000000000000000000000000000000000000000000000","otp":"123456"}'
wrk.headers["Content-Type"] = "application/json"
LUA

run() {
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$@" \
    | awk '/Requests\/sec/{rps=$2} /^ +99%/{p99=$2} /Non-2xx/{non=$NF} END{printf "%s req/s (p99 %s%s)", rps, p99, non ? ", non-2xx " non : ""}'
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r:"
  echo "  view:  $(run "$base/agent/auth/claim/view?token=$cvt")"
  echo "  show:  $(run -s show.lua "$base/agent/auth/claim/view")"
  echo "  guess: $(run -s guess.lua "$base/agent/auth/claim/complete")"
  echo "  start: $(run -s start.lua "$base/agent/auth/claim")"
done
echo "emails in the outbox: $(ls data/outbox | wc -l)"
echo "RSS after: $(grep VmRSS /proc/$server/status)"
