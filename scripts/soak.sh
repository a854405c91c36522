#!/usr/bin/env bash
# The soak: two authmd replicas on one PostgreSQL database under mixed
# traffic for DURATION seconds (30 minutes by default): registrations of
# every kind in both dialects, API calls (a key issued by one replica used
# at the other), claims (started, half of them completed through the claim
# page's code), self-revocations (RFC 7009) checked on both replicas.
# Not a CI test: run it by hand before a release, or after a change to
# something that lives as long as the process (caches, pools, the outbox,
# the invalidation log).
#
#   scripts/soak.sh                                  # 30 minutes
#   DURATION=120 scripts/soak.sh                     # a trial
#   RATE=300 THREADS=16 PG=postgres://postgres@127.0.0.1:5432 scripts/soak.sh
#
# Every minute it prints, and writes to OUT/minutes.jsonl, each replica's
# RSS, open files and threads, the requests of that minute, errors by kind
# (an unexpected status, a connection error, a failed check) and p50/p99
# latency; at the end a table, RSS at start and end, totals, the invariant
# check (every credential seen issued and not revoked answers 200 on both
# replicas, every revoked one 401), the registrations in the database and
# the replicas' warnings and errors. Exit status 1 if anything failed.
#
# Knobs: DURATION (s), RATE (operations/s; each is 1 to 4 requests), THREADS,
# MIX (see scripts/soak.py), PG (server URL without database; a database
# soak_<time> is created and dropped unless KEEP_DB=1), PORT_BASE (20080:
# replicas on PORT_BASE and +1, metrics on +10 and +11, the provider's JWKS
# on -10, the SMTP sink on -55), CACHE (server.credential_cache_capacity,
# 20000: small enough that each replica's cache is full within the first
# ten minutes, so that memory still growing after that is not the cache;
# the default 100000 would still be filling at the end), OUT (default soak-<time> in the current
# directory, kept). Needs python3 with `cryptography`, psql, createdb and a
# release build (cargo build --release -p authmd-cli).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=$(realpath -m "${BIN:-${CARGO_TARGET_DIR:-target}/release/authmd}")
DURATION=${DURATION:-1800}
RATE=${RATE:-300}
THREADS=${THREADS:-16}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
PORT_BASE=${PORT_BASE:-20080}
CACHE=${CACHE:-20000}
stamp=$(date -u +%Y%m%dT%H%M%S)
OUT=$(realpath -m "${OUT:-soak-$stamp}")
DB=${DB:-soak_$(date -u +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release -p authmd-cli" >&2; exit 2; }

a=$PORT_BASE b=$((PORT_BASE + 1)) ma=$((PORT_BASE + 10)) mb=$((PORT_BASE + 11))
idp=$((PORT_BASE - 10)) smtp=$((PORT_BASE - 55))
issuer=http://127.0.0.1:$a   # both replicas are one service: one issuer
provider=http://127.0.0.1:$idp

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_DB:-0}" != 1 ]; then psql "${PG%/}/postgres" -qc "DROP DATABASE IF EXISTS $DB" || true; fi
}
trap cleanup EXIT
psql "${PG%/}/postgres" -qc "CREATE DATABASE $DB"
export AUTHMD_DATABASE_URL="${PG%/}/$DB"

for side in A B; do
  if [ $side = A ]; then port=$a metrics=$ma; else port=$b metrics=$mb; fi
  cat > "$OUT/replica-$side.toml" <<TOML
issuer = "$issuer"
listen = "127.0.0.1:$port"
[server]
credential_cache_capacity = $CACHE
[database]
max_connections = 16
[rate_limits]
enabled = false
[dialects.current]
enabled = true
[mail]
smtp_url = "smtp://127.0.0.1:$smtp"
from = "Soak <soak@example.com>"
[[providers]]
issuer = "$provider"
algorithms = ["ES256"]
[metrics]
listen = "127.0.0.1:$metrics"
[log]
level = "warn"
TOML
done

start_replica() {   # side; sets $pid
  local side=$1
  rm -f "$OUT/replica-$side.ready"
  "$BIN" serve --config "$OUT/replica-$side.toml" --ready-file "$OUT/replica-$side.ready" \
    > "$OUT/replica-$side.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    [ -e "$OUT/replica-$side.ready" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/replica-$side.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "replica $side did not become ready" >&2; exit 1
}
# One after the other: the first runs the migrations and creates the
# signing key and the server secret, which the second then reads.
start_replica A; pid_a=$pid
start_replica B; pid_b=$pid
echo "replicas: A pid $pid_a on :$a, B pid $pid_b on :$b; database $DB; output in $OUT"

set +e
python3 "$here/soak.py" \
  --replicas "A=http://127.0.0.1:$a,B=http://127.0.0.1:$b" --pids "$pid_a,$pid_b" \
  --metrics "http://127.0.0.1:$ma/metrics,http://127.0.0.1:$mb/metrics" \
  --issuer "$issuer" --provider-issuer "$provider" --provider-port "$idp" --smtp-port "$smtp" \
  --duration "$DURATION" --rate "$RATE" --threads "$THREADS" ${MIX:+--mix "$MIX"} \
  --out "$OUT" 2>&1 | tee "$OUT/soak.txt"
status=${PIPESTATUS[0]}
set -e

{
  echo
  echo "registrations in the database (type, status):"
  psql "$AUTHMD_DATABASE_URL" -qAt -F ' ' -c \
    "SELECT type, status, count(*) FROM registrations GROUP BY 1, 2 ORDER BY 1, 2"
  echo "credentials (type, revoked):"
  psql "$AUTHMD_DATABASE_URL" -qAt -F ' ' -c \
    "SELECT type, revoked_at IS NOT NULL, count(*) FROM credentials GROUP BY 1, 2 ORDER BY 1, 2"
  echo "mail outbox (status):"
  psql "$AUTHMD_DATABASE_URL" -qAt -F ' ' -c "SELECT status, count(*) FROM mail_outbox GROUP BY 1 ORDER BY 1"
  echo "database size: $(psql "$AUTHMD_DATABASE_URL" -qAt -c "SELECT pg_size_pretty(pg_database_size(current_database()))")"
  for side in A B; do
    log="$OUT/replica-$side.log"
    echo "replica $side log: $(grep -c . "$log" || true) lines," \
      "$(grep -c ' WARN ' "$log" || true) WARN, $(grep -c ' ERROR ' "$log" || true) ERROR," \
      "$(grep -ci 'panic' "$log" || true) panic"
    { grep -E ' (WARN|ERROR) ' "$log" || true; } | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c | sort -rn | head -10
  done
  # What the generator saw created against what the database holds.
  if ! python3 - "$OUT/summary.json" "$AUTHMD_DATABASE_URL" <<'PY'
import json, subprocess, sys
s = json.load(open(sys.argv[1]))
c = s["counters"]
q = lambda sql: int(subprocess.check_output(["psql", sys.argv[2], "-qAtc", sql]).strip())
issued = sum(v for k, v in c.items() if k.startswith("issued_") and k != "issued_email_pending")
revoked = sum(v for k, v in c.items() if k.startswith("revoked_"))
checks = [
    ("anonymous registrations", c.get("issued_anon", 0) + c.get("created_cur_anon", 0),
     q("SELECT count(*) FROM registrations WHERE type = 'anonymous'")),
    ("email registrations", c.get("issued_email_pending", 0),
     q("SELECT count(*) FROM registrations WHERE type = 'email-verification'")),
    ("credentials issued", issued, q("SELECT count(*) FROM credentials")),
    ("credentials revoked", revoked, q("SELECT count(*) FROM credentials WHERE revoked_at IS NOT NULL")),
    ("claim emails", c.get("mail_received", 0), q("SELECT count(*) FROM mail_outbox WHERE status = 'sent'")),
]
bad = 0
for name, seen, db in checks:
    print(f"{name}: generator {seen}, database {db}" + ("" if seen == db else "  <-- differ"))
    bad += seen != db
sys.exit(1 if bad else 0)
PY
  then touch "$OUT/database-check.failed"; fi
} 2>&1 | tee -a "$OUT/soak.txt"
[ -e "$OUT/database-check.failed" ] && status=1
echo "soak: $([ "$status" = 0 ] && echo passed || echo FAILED); output in $OUT"
exit "$status"
