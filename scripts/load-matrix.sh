#!/usr/bin/env bash
# The whole load matrix, two builds side by side: every scenario at every
# connection count on every backend, each cell run REPS times for each
# build, alternating which build goes first, on a fresh database each time;
# rep by rep, the scenarios in reverse order on even reps (see below).
# The server is pinned to CPU 0 and wrk (and the provider's JWKS server) to
# CPU 1. Prints one markdown table per backend: req/s, p50 and p99 of each
# build (medians over the reps), the ratio B/A of the rates, and the
# server's CPU use: the share of its core, and CPU time per request (user +
# system; steal excluded), which moves much less with the machine's noise
# than the rates do and is the figure to compare for a change to a shared
# path. On PostgreSQL also the database's CPU time per request (every
# postgres process of the machine: run it otherwise idle).
#
#   scripts/load-matrix.sh OLD_BINARY NEW_BINARY
#   scripts/load-matrix.sh target/release/authmd              # one build
#   SECS=5 REPS=1 BACKENDS=sqlite SCENARIOS="anon idjag" CONNS_LIST="1 50" \
#     scripts/load-matrix.sh A B
#   EXTRA_B=$'[metrics]\nlisten = "127.0.0.1:21090"' scripts/load-matrix.sh X X
#                                      # one build, a setting on one side
#
# Scenarios: valid (GET whoami with a valid key), 401 (no credential),
# anon (anonymous registration), idjag (agent-verified registration, a
# distinct ES256 assertion per request, subjects cycling through USERS),
# claim (POST /agent/auth/claim round-robin over anonymous registrations,
# each a new attempt and an email written to the outbox). The current
# dialect's (docs/protocol.md §20), not in the default list (a build
# before it cannot run them): anonc (POST /agent/identity
# {"type":"anonymous"}: a registration and a signed assertion), exchange (POST /oauth2/token with one of
# authmd's own assertions, each a new access token), idjagx (a provider's
# ID-JAG presented directly at the token endpoint, distinct per request),
# refresh (POST /agent/identity {"type":"refresh"}: each connection's chain
# of rotations, started from CONNS claimed registrations made by
# scripts/current-claims.py through the whole claim ceremony).
# WAL_DIR=DIR also counts, on SQLite, the WAL frames each b-tree got per
# commit in each run (see wal_frames below).
# PERF_DIR=DIR also records a CPU profile of the server during each run
# (perf record -e cpu-clock, and PERF_ARGS, by default -g), one file per
# cell and side in DIR.
# Rate limits are off. PostgreSQL runs use a fresh database on PG (created
# and dropped here). Also prints the core's raw ES256 verify rate (openssl,
# and aws-lc's if verify_rate is built) and the fsync latency of the scratch
# directory's file system, the bounds the registration figures are read
# against.
# Needs wrk, python3, openssl, psql for PostgreSQL, and release builds:
#   cargo build --release -p authmd-cli && cargo build --release -p authmd-jose --examples
set -euo pipefail
SCRIPTS=$(realpath "$(dirname "$0")")
. "$SCRIPTS/load-common.sh"
builds "$@"
. "$SCRIPTS/id-jag-common.sh"
SCENARIOS=${SCENARIOS:-"valid 401 anon idjag claim"}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
REPS=${REPS:-3}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-21080}
IDP_PORT=${IDP_PORT:-21797}
# Enough assertions for the fastest rate this core could reach.
TOKENS=${TOKENS:-$((SECS * 25000))}
base="http://127.0.0.1:$PORT"
results=$work/results.tsv
cd "$work"

echo "A: ${bin[A]}"
[ -n "${bin[B]:-}" ] && echo "B: ${bin[B]}"
raw_verify_rates "CPU 0" ES256
python3 - <<'PY'
import os, time
fd = os.open("fsync-probe", os.O_WRONLY | os.O_CREAT)
ts = []
for i in range(300):
    os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
    t = time.perf_counter(); os.fsync(fd); ts.append(time.perf_counter() - t)
ts.sort()
print("fsync of a 4 KiB write here: p50 %.3f ms, p99 %.3f ms" % (ts[150] * 1e3, ts[296] * 1e3))
PY

# The provider's assertions for the current group of idjag cells (each
# minted set is reused by both builds and every rep: each run starts on a
# fresh database, so no jti repeats within a database).
minted=0
mint() {
  rm -rf idp
  "$MINT" "$TOKENS" "http://127.0.0.1:$IDP_PORT" "$base" idp ES256 "$USERS" >/dev/null
  if [ "$minted" = 0 ]; then
    taskset -c 1 python3 -m http.server -b 127.0.0.1 -d idp "$IDP_PORT" >/dev/null 2>&1 & pids+=($!)
  fi
  minted=$(date +%s)
}

cat > register.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat > collect.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"type":"anonymous","requested_credential_type":"api_key"}'
wrk.headers["Content-Type"] = "application/json"
local out = io.open("tokens.txt", "a")
response = function(status, headers, body)
  local t = string.match(body, '"claim_token":"(clm_[%w_]+)"')
  if t then out:write(t, "\n") end
end
LUA
cat > start.lua <<'LUA'
local tokens = {}
for line in io.lines("tokens.txt") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  local t = tokens[(i % #tokens) + 1]
  return wrk.format("POST", "/agent/auth/claim", {["Content-Type"] = "application/json"},
    '{"claim_token":"' .. t .. '","email":"user' .. (i % 5000) .. '@example.com"}')
end
LUA

# start_server SIDE BACKEND: a server for one run on a fresh database.
server=
dbname=
start_server() {
  local side=$1 backend=$2 url
  # The run before is moved aside, not deleted: deleting the tens of
  # thousands of mail files of a claim run just before the next run made
  # ext4 search its inode bitmaps past the recently deleted inodes while
  # that run created its own (recently_deleted, find_inode_bit in its
  # profile), a cost that fell on whichever build ran second. All are
  # deleted at the end.
  if [ -d run ]; then mkdir -p done && mv run "done/$RANDOM$RANDOM"; fi
  mkdir run
  if [ "$backend" = postgres ]; then
    dbname="authmd_matrix_$$_$RANDOM"
    psql "$PG/postgres" -Atqc "CREATE DATABASE $dbname" >/dev/null
    url="$PG/$dbname"
  else
    url="sqlite://$work/run/authmd.db"
  fi
  run_toml "$work/run" "$url"
  # Settings of one side only (e.g. the same binary with and without
  # metrics: EXTRA_B=$'[metrics]\nlisten = "127.0.0.1:21090"').
  local extra="EXTRA_$side"
  printf '%s\n' "${!extra:-}" >> run/load.toml
  (cd run && AUTHMD_DATABASE_URL="$url" exec taskset -c 0 "${bin[$side]}" --config load.toml serve) &
  server=$!
  wait_ready "$base" 100
}

stop_server() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ -n "$dbname" ]; then
    psql "$PG/postgres" -Atqc "DROP DATABASE IF EXISTS $dbname WITH (FORCE)" >/dev/null
    dbname=
  fi
}
trap 'stop_server; kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# WAL_DIR: which b-trees the run just measured wrote, per commit: the
# server is stopped without a checkpoint (kill -9), the database and its
# WAL copied to WAL_DIR/sqlite-SCENARIO-CONNS-SIDE-REP and read by
# scripts/wal-frames.py (its frames.txt there). The commits counted are
# those since the WAL last restarted, i.e. the end of the run.
wal_frames() {
  local dir="$WAL_DIR/$backend-$scenario-$conns-$side-$rep"
  kill -9 "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  mkdir -p "$dir" && cp run/authmd.db run/authmd.db-wal "$dir/"
  # A checkpoint can restart the WAL just before the copy: nothing to
  # count then, which must not end the whole matrix.
  python3 "$SCRIPTS/wal-frames.py" "$dir" > "$dir/frames.txt" 2>&1 ||
    echo "no committed frames in this WAL generation" > "$dir/frames.txt"
  printf '%s %s %s %s: %s\n' "$backend" "$scenario" "$conns" "$side" "$(head -n1 "$dir/frames.txt")" >&2
}

# CPU ticks of every PostgreSQL server process (0 on SQLite): the
# database's share of each request, which a change can move to or from
# the server's.
db_ticks() {
  if [ "$backend" != postgres ]; then echo 0; return; fi
  local t=0 p
  for p in $(pgrep -x postgres); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# measure SCENARIO CONNS: runs wrk against the current server and prints
# "req/s p50 p99 non2xx cpu% cpu-µs-per-request db-cpu-µs-per-request".
measure() {
  local scenario=$1 conns=$2 args=() c0 c1 out
  case $scenario in
    valid)
      local key
      key=$(curl -sf -X POST "$base/agent/auth" -H 'content-type: application/json' \
        -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
        | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])')
      args=(-H "Authorization: Bearer $key" "$base/api/whoami") ;;
    401) args=("$base/api/whoami") ;;
    anon) args=(-s register.lua "$base/agent/auth") ;;
    anonc)
      printf 'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' "'{\"type\":\"anonymous\"}'" > anonc.lua
      args=(-s anonc.lua "$base/agent/identity") ;;
    idjag) args=(-s "$LUA" "$base/agent/auth" -- idp/bodies.txt 1) ;;
    claim)
      rm -f tokens.txt
      taskset -c 1 wrk -t1 -c16 -d1s -s collect.lua "$base/agent/auth" >/dev/null
      args=(-s start.lua "$base/agent/auth/claim") ;;
    exchange)
      curl -sf -X POST "$base/agent/identity" -H 'content-type: application/json' \
        -d '{"type":"anonymous"}' \
        | python3 -c 'import sys, json; print(json.load(sys.stdin)["identity"]["assertion"])' > exchange.txt
      printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\nwrk.body = "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s"\n' \
        "$(cat exchange.txt)" > exchange.lua
      args=(-s exchange.lua "$base/oauth2/token") ;;
    idjagx)
      python3 - idp/bodies.txt > idp/forms.txt <<'PY'
import json, sys
for line in open(sys.argv[1]):
    print("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=" + json.loads(line)["assertion"])
PY
      args=(-s "$LUA" "$base/oauth2/token" -- idp/forms.txt 1 /oauth2/token application/x-www-form-urlencoded) ;;
    refresh)
      # One chain per connection, and spares: wrk builds one request per
      # thread that it never sends (seen: its token is lost, and with it
      # a chain).
      python3 "$SCRIPTS/current-claims.py" "$base" "$work/run/outbox" $((conns + 4)) refresh > refresh.txt
      args=(-s "$SCRIPTS/refresh.lua" "$base/agent/identity") ;;
  esac
  c0=$(cpu_ticks "$server")
  d0=$(db_ticks)
  if [ -n "${PERF_DIR:-}" ]; then  # a CPU profile of the server for the run
    mkdir -p "$PERF_DIR"
    perf record -q -e cpu-clock ${PERF_ARGS:--g} -p "$server" -o "$PERF_DIR/$backend-$scenario-$conns-$side.data" \
      -- sleep "$SECS" >/dev/null 2>&1 &
  fi
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${SECS}s" --latency "${args[@]}")
  c1=$(cpu_ticks "$server")
  d1=$(db_ticks)
  awk -v ticks=$((c1 - c0)) -v dbticks=$((d1 - d0)) -v hz="$hz" -v secs="$SECS" '
    /requests in/ {n = $1}
    /Requests\/sec/ {rps = $2}
    /^ +50%/ {p50 = $2}
    /^ +99%/ {p99 = $2}
    /Non-2xx/ {bad = $NF}
    END {printf "%s %s %s %d %d %.1f %.1f\n", rps, p50, p99, bad, ticks * 100 / hz / secs, n ? ticks * 1e6 / hz / n : 0, n ? dbticks * 1e6 / hz / n : 0}' <<<"$out"
}

# Rep by rep: each rep runs every scenario at every connection count, the
# scenarios in reverse order on even reps, so that a comparison between
# scenarios (refresh rotation against anonymous registration, issue 18) is
# not decided by which ran first. Run one after the other, the same
# PostgreSQL cell differed by up to 1.4x between the start and the end of a
# run (refresh against anonc: 1.20 measured after it, 0.84 before it).
for backend in $BACKENDS; do
  for rep in $(seq 1 "$REPS"); do
    scenarios=($SCENARIOS)
    if [ $((rep % 2)) = 0 ]; then
      reversed=()
      for ((i = ${#scenarios[@]} - 1; i >= 0; i--)); do reversed+=("${scenarios[i]}"); done
      scenarios=("${reversed[@]}")
    fi
    for scenario in "${scenarios[@]}"; do
      for conns in $CONNS_LIST; do
        if { [ "$scenario" = idjag ] || [ "$scenario" = idjagx ]; } && [ $(( $(date +%s) - minted )) -gt 300 ]; then
          mint   # assertions live 10 minutes
        fi
        order=("${sides[@]}")
        if [ $((rep % 2)) = 0 ] && [ ${#sides[@]} = 2 ]; then order=(B A); fi
        for side in "${order[@]}"; do
          start_server "$side" "$backend"
          printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$backend" "$scenario" "$conns" "$side" "$rep" \
            "$(measure "$scenario" "$conns")" >> "$results"
          if [ -n "${WAL_DIR:-}" ] && [ "$backend" = sqlite ]; then wal_frames; fi
          stop_server
        done
        tail -n "${#sides[@]}" "$results" >&2
      done
    done
  done
done

python3 - "$results" "$SCENARIOS" "$CONNS_LIST" <<'PY'
import sys, statistics, collections
def ms(v):
    if v.endswith("us"): return float(v[:-2]) / 1000
    if v.endswith("ms"): return float(v[:-2])
    if v.endswith("s"): return float(v[:-1]) * 1000
    return float("nan")
cells = collections.OrderedDict()
scenario_rank = {s: i for i, s in enumerate(sys.argv[2].split())}
conns_rank = {c: i for i, c in enumerate(sys.argv[3].split())}
for line in sorted(open(sys.argv[1]), key=lambda l: (
        l.split("\t")[0] != "sqlite", scenario_rank.get(l.split("\t")[1], 99),
        conns_rank.get(l.split("\t")[2], 99))):
    backend, scenario, conns, side, rep, rest = line.rstrip("\n").split("\t", 5)
    rps, p50, p99, bad, cpu, us, dbus = (rest.split() + ["0"])[:7]
    cells.setdefault((backend, scenario, conns), {}).setdefault(side, []).append(
        (float(rps), ms(p50), ms(p99), int(bad), int(cpu), float(us), float(dbus)))
med = lambda xs: statistics.median(xs)
two = any("B" in v for v in cells.values())
for backend in dict.fromkeys(k[0] for k in cells):
    print(f"\n### {backend}\n")
    db = backend == "postgres"
    if two:
        print("| scenario | conns | A req/s | B req/s | B/A | A p50 ms | B p50 ms | A p99 ms | B p99 ms | A cpu% | B cpu% | A µs/req | B µs/req | B/A µs |"
              + (" A db µs/req | B db µs/req |" if db else "") + " non-2xx A/B |")
        print("|---" * (17 if db else 15) + "|")
    else:
        print("| scenario | conns | req/s | p50 ms | p99 ms | cpu% | µs/req |" + (" db µs/req |" if db else "") + " non-2xx |")
        print("|---" * (9 if db else 8) + "|")
    for (b, scenario, conns), sides in cells.items():
        if b != backend: continue
        row = {}
        for side, runs in sides.items():
            row[side] = [med([r[i] for r in runs]) for i in range(7)]
            row[side][3] = sum(r[3] for r in runs)
        a = row["A"]
        if two and "B" in row:
            bb = row["B"]
            ratio = lambda x, y: f"{x / y:.2f}" if y else "-"
            dbcols = f" {a[6]:.1f} | {bb[6]:.1f} |" if db else ""
            print(f"| {scenario} | {conns} | {a[0]:,.0f} | {bb[0]:,.0f} | {ratio(bb[0], a[0])} | {a[1]:.2f} | {bb[1]:.2f} | {a[2]:.2f} | {bb[2]:.2f} | {a[4]:.0f} | {bb[4]:.0f} | {a[5]:.1f} | {bb[5]:.1f} | {ratio(bb[5], a[5])} |{dbcols} {a[3]}/{bb[3]} |")
        else:
            dbcols = f" {a[6]:.1f} |" if db else ""
            print(f"| {scenario} | {conns} | {a[0]:,.0f} | {a[1]:.2f} | {a[2]:.2f} | {a[4]:.0f} | {a[5]:.1f} |{dbcols} {a[3]} |")
PY
