#!/usr/bin/env bash
# Protecting an API, measured on loopback (issue 13):
#   (a) wrk straight to a trivial upstream (nginx `return 200`)
#   (b) through Debian's nginx with a plain proxy_pass (no authentication)
#   (c) through authmd's gateway with a valid key
#   (d) through nginx auth_request to authmd's forward auth
#       (deploy/nginx/authmd.conf as shipped, addresses replaced)
# plus forward auth and whoami asked directly (valid key), and authmd's
# memory while 1 GiB streams up and down through the gateway.
#
# The proxy under test (nginx for b, authmd for c, both for d) is pinned to
# PROXY_CPU; wrk and the upstream share CLIENT_CPU. Each scenario runs at
# every connection count in CONNS_LIST for SECS seconds, ROUNDS times.
#   scripts/load-gateway.sh
#   SECS=10 CONNS_LIST="1 50 256" ROUNDS=3 scripts/load-gateway.sh
# Needs: nginx, wrk, curl, python3 (the upload sink), and a release build
# (cargo build --release -p authmd-cli). Ports BASE_PORT..BASE_PORT+9.
set -euo pipefail
ROUNDS=${ROUNDS:-1}
CONNS_LIST=${CONNS_LIST:-"1 50 256"}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-20000}
STREAM_BYTES=${STREAM_BYTES:-1073741824}
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$(dirname "$0")/load-common.sh"
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
cd "$work"

P_UP=$((BASE_PORT + 1))       # trivial upstream (nginx)
P_PLAIN=$((BASE_PORT + 2))    # nginx proxy_pass
P_GW=$((BASE_PORT + 3))       # authmd gateway (also its forward auth)
P_AUTHREQ=$((BASE_PORT + 4))  # nginx auth_request -> authmd
P_WHOAMI=$((BASE_PORT + 5))   # authmd without [upstream] (whoami baseline)
P_SINK=$((BASE_PORT + 6))     # upload sink (python)

nginx_main() {  # $1 = name, $2 = server block(s)
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/$1/body;
  proxy_temp_path $work/$1/proxy;
  fastcgi_temp_path $work/$1/fastcgi;
  uwsgi_temp_path $work/$1/uwsgi;
  scgi_temp_path $work/$1/scgi;
$2
}
CONF
}
start_nginx() {  # $1 = name, $2 = cpu
  taskset -c "$2" "$NGINX" -p "$work/$1" -e "$work/$1/error.log" -c "$work/$1/nginx.conf" &
  pids+=("$!")
}
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; exit 1; }

# The trivial upstream: 200 "ok", and a sparse 1 GiB file to download.
truncate -s "$STREAM_BYTES" big.bin
nginx_main upstream "  server { listen 127.0.0.1:$P_UP; location / { return 200 'ok\n'; } location = /api/big.bin { alias $work/big.bin; } }"
start_nginx upstream "$CLIENT_CPU"
# (b) plain proxy_pass, keepalive to the upstream as authmd has.
nginx_main plain "  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  server { listen 127.0.0.1:$P_PLAIN; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
start_nginx plain "$PROXY_CPU"
# (d) the shipped example, pointed at this run's authmd and upstream.
site=$(sed -e "s/server 127.0.0.1:8080;/server 127.0.0.1:$P_GW;/" \
           -e "s/server 127.0.0.1:3000;/server 127.0.0.1:$P_UP;/" \
           -e "s/listen 80;/listen 127.0.0.1:$P_AUTHREQ;/" "$repo/deploy/nginx/authmd.conf")
nginx_main authreq "$site"
start_nginx authreq "$PROXY_CPU"

# The upload sink: reads Content-Length bytes in 1 MiB reads, answers the count.
cat > sink.py <<'PY'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_PUT(self):
        n, left = 0, int(self.headers.get("content-length", "0"))
        while left:
            b = self.rfile.read(min(left, 1 << 20))
            if not b: break
            n += len(b); left -= len(b)
        body = str(n).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
taskset -c "$CLIENT_CPU" python3 sink.py "$P_SINK" & pids+=("$!")

# authmd: the gateway (rate limits off: one address registers the keys).
# Anonymous keys may write (the upload is a PUT).
cat > gateway.toml <<TOML
listen = "127.0.0.1:$P_GW"
[database]
url = "sqlite://$work/gw.db"
[resource]
pre_claim_scopes = ["api.read", "api.write"]
[rate_limits]
enabled = false
[server]
trusted_proxies = ["127.0.0.1"]
[upstream]
url = "http://127.0.0.1:$P_UP"
TOML
cat > whoami.toml <<TOML
listen = "127.0.0.1:$P_WHOAMI"
[database]
url = "sqlite://$work/whoami.db"
[rate_limits]
enabled = false
TOML
AUTHMD_MAIL_OUTBOX=$work/outbox taskset -c "$PROXY_CPU" "$BIN" --config gateway.toml serve & gw=$!; pids+=("$gw")
AUTHMD_MAIL_OUTBOX=$work/outbox2 taskset -c "$PROXY_CPU" "$BIN" --config whoami.toml serve & pids+=("$!")
for p in $P_UP $P_PLAIN $P_AUTHREQ $P_GW $P_WHOAMI $P_SINK; do wait_port "$p"; done
register() {
  curl -sf -X POST "http://127.0.0.1:$1/agent/auth" -H 'content-type: application/json' \
    -d '{"type":"anonymous","requested_credential_type":"api_key"}' \
    | python3 -c 'import sys, json; print(json.load(sys.stdin)["credential"])'
}
key=$(register "$P_GW")
key_whoami=$(register "$P_WHOAMI")
auth="Authorization: Bearer $key"
# Sanity: each path answers 200 before it is measured.
for url in "http://127.0.0.1:$P_UP/api/x" "http://127.0.0.1:$P_PLAIN/api/x"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { echo "no 200 from $url" >&2; exit 1; }
done
for url in "http://127.0.0.1:$P_GW/api/x" "http://127.0.0.1:$P_AUTHREQ/api/x"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" "$url")" = 200 ] || { echo "no 200 from $url" >&2; exit 1; }
done
echo "authmd idle RSS: $(awk '/VmRSS/{print $2, $3}' /proc/$gw/status)"
echo "noisy unless the machine is otherwise idle: load average $(cut -d' ' -f1-3 /proc/loadavg)"

run() {  # prints "rps p99"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$1" -d"${SECS}s" --latency "${@:2}" \
    | awk '/Requests\/sec/{r=$2} $1=="99%"{p=$2} END{print r, p}'
}
printf '%-26s %6s %12s %10s\n' scenario conns req/s p99
row() {  # name conns rps p99: prints the row, keeps rps for the summary
  printf '%-26s %6s %12s %10s\n' "$1" "$2" "$3" "$4"
  echo "$5 $2 $3" >> rates.txt
}
for r in $(seq 1 "$ROUNDS"); do
  for c in $CONNS_LIST; do
    row "(a) upstream direct" "$c" $(run "$c" "http://127.0.0.1:$P_UP/api/x") a
    row "(b) nginx proxy_pass" "$c" $(run "$c" "http://127.0.0.1:$P_PLAIN/api/x") b
    row "(c) authmd gateway" "$c" $(run "$c" -H "$auth" "http://127.0.0.1:$P_GW/api/x") c
    row "(d) nginx auth_request" "$c" $(run "$c" -H "$auth" "http://127.0.0.1:$P_AUTHREQ/api/x") d
    row "forward auth (direct)" "$c" $(run "$c" -H "$auth" -H "X-Forwarded-Uri: /api/x" "http://127.0.0.1:$P_GW/authz/forward-auth") fa
    row "whoami (valid key)" "$c" $(run "$c" -H "Authorization: Bearer $key_whoami" "http://127.0.0.1:$P_WHOAMI/api/whoami") who
  done
done
# The goals' ratios, per round (each pair measured one right after the
# other) and their median: a single round on a shared machine moves by
# 10-20%, so compare medians over ROUNDS >= 3.
python3 - <<'PY'
import statistics
rates = {}
for line in open("rates.txt"):
    k, c, v = line.split()
    rates.setdefault((k, c), []).append(float(v))
conns = sorted({c for _, c in rates}, key=int)
print("\n| ratio | conns | per round | median |\n|---|---|---|---|")
for num, den, label in (("c", "b", "(c) gateway / (b) nginx proxy_pass"),
                        ("fa", "who", "forward auth / whoami")):
    for c in conns:
        r = [n / d for n, d in zip(rates[(num, c)], rates[(den, c)]) if d > 0]
        print(f"| {label} | {c} | {' '.join(f'{x:.2f}' for x in r)} | {statistics.median(r):.2f} |")
PY

# Memory while STREAM_BYTES stream through the gateway, sampled every 0.2 s.
peak_rss() {  # runs "$@" in the background; prints authmd's peak RSS (kB) meanwhile
  "$@" & local job=$! peak=0 rss
  while kill -0 "$job" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' /proc/$gw/status); [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.2
  done
  wait "$job"
  echo "$peak"
}
before=$(awk '/VmRSS/{print $2}' /proc/$gw/status)
down=$(peak_rss curl -s -o /dev/null -H "$auth" "http://127.0.0.1:$P_GW/api/big.bin")
echo "download $STREAM_BYTES bytes through the gateway: RSS before ${before} kB, peak ${down} kB"
# Uploads: a second gateway (same database, same key) whose upstream is
# the sink, which reads every byte before answering.
cat > upload.toml <<TOML
listen = "127.0.0.1:$((BASE_PORT + 7))"
[database]
url = "sqlite://$work/gw.db"
[resource]
pre_claim_scopes = ["api.read", "api.write"]
[rate_limits]
enabled = false
[upstream]
url = "http://127.0.0.1:$P_SINK"
TOML
AUTHMD_MAIL_OUTBOX=$work/outbox3 taskset -c "$PROXY_CPU" "$BIN" --config upload.toml serve & gw=$!; pids+=("$gw")
wait_port $((BASE_PORT + 7))
before=$(awk '/VmRSS/{print $2}' /proc/$gw/status)
up=$(peak_rss curl -s -o "$work/uploaded" -T big.bin -H "$auth" "http://127.0.0.1:$((BASE_PORT + 7))/api/upload")
echo "upload $STREAM_BYTES bytes through the gateway: RSS before ${before} kB, peak ${up} kB; the upstream counted $(cat "$work/uploaded") bytes"
[ "$(cat "$work/uploaded")" = "$STREAM_BYTES" ] || { echo "the upload did not arrive whole" >&2; exit 1; }
