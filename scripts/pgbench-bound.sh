#!/usr/bin/env bash
# The PostgreSQL bound of this machine for registration: the statements
# authmd runs for one anonymous and one agent-verified registration
# (scripts/pgbench/*.sql), run by pgbench with the same client counts as
# scripts/load-matrix.sh, pinned to CPU 0 where the server would run, on a
# fresh database migrated by authmd itself.
#   scripts/pgbench-bound.sh target/release/authmd
#   CLIENTS="50" SECS=5 scripts/pgbench-bound.sh target/release/authmd
set -euo pipefail
[ $# = 1 ] || { echo "usage: $0 AUTHMD_BINARY" >&2; exit 2; }
BIN=$(realpath "$1")
dir=$(cd "$(dirname "$0")/pgbench" && pwd)
PG=${PG:-postgres://postgres@127.0.0.1:5432}
CLIENTS=${CLIENTS:-"1 50 256"}
SECS=${SECS:-10}
REPS=${REPS:-3}
db="authmd_pgbench_$$"
trap 'psql "$PG/postgres" -Atqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
echo "| script | clients | rep | tps | latency avg ms |"
echo "|---|---|---|---|---|"
for script in anon idjag; do
  for c in $CLIENTS; do
    for rep in $(seq 1 "$REPS"); do
      psql "$PG/postgres" -Atqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
      psql "$PG/postgres" -Atqc "CREATE DATABASE $db" >/dev/null
      AUTHMD_DATABASE_URL="$PG/$db" AUTHMD_LOG=warn "$BIN" migrate >/dev/null
      psql "$PG/$db" -Atq -f "$dir/setup.sql" >/dev/null
      # PostgreSQL here allows 100 connections (tests share them): pgbench
      # uses at most 64 clients, more than any pool authmd opens.
      out=$(taskset -c 0 pgbench -n -M prepared -c "$(( c < 64 ? c : 64 ))" -j 1 -T "$SECS" -f "$dir/$script.sql" "$PG/$db" 2>&1)
      tps=$(awk '/^tps/{print $3}' <<<"$out")
      lat=$(awk '/latency average/{print $4}' <<<"$out")
      echo "| $script | $c | $rep | ${tps%.*} | $lat |"
    done
  done
done
