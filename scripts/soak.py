#!/usr/bin/env python3
"""The soak's load generator (scripts/soak.sh starts it; Python stdlib plus
`cryptography` for the provider's ES256 key).

Drives mixed traffic at several authmd replicas for --duration seconds, at
about --rate operations a second spread over --threads threads, each thread
holding one keep-alive connection per replica. It is also the agent
provider (an ES256 key, its JWKS served on --provider-port) and the mail
server (an SMTP sink on --smtp-port that reads the claim link out of each
message). Operations, by weight (--mix):

  whoami      GET /api/whoami with a live credential, at a random replica
  anon        POST /agent/auth anonymous; the key is used at another replica
  idjag       POST /agent/auth with an ID-JAG (access token, or an API key
              for a new subject); used at another replica
  email       POST /agent/auth verified_email (pending until claimed)
  cur_anon    POST /agent/identity anonymous, the assertion exchanged at
              POST /oauth2/token on another replica, the token used
  cur_idjag   current dialect with an ID-JAG: POST /agent/identity then
              /oauth2/token, or the ID-JAG straight at /oauth2/token
  claim       POST /agent/auth/claim for an anonymous registration
  revoke      POST /oauth2/revoke (RFC 7009) of a live credential; the same
              replica must refuse it at once, another one 1.5 s later
  noauth      GET /api/whoami without a credential (401 expected)
  madeup      GET /api/whoami with a made-up key (401 expected)

Claims (started by `claim` and `email`) are completed for --complete of
them: when the message arrives, "Show my code" on the claim page
(POST /agent/auth/claim/view action=show) at one replica, the code read
from the page and POST /agent/auth/claim/complete at another; 1.5 s later
the anonymous key must hold the post-claim scopes at a third pick, and an
email registration's new credential must work. The rest are only started.

Every minute one JSON line goes to OUT/minutes.jsonl (and a line to
stdout): per replica RSS (VmRSS), open files, threads, requests, errors by
kind, p50 and p99 latency, and a few of the replica's metrics. At the end:
the invariant check (live credentials answer 200 on every replica, revoked
ones 401), OUT/summary.json and the table.
"""

import argparse
import base64
import collections
import email
import email.policy
import heapq
import http.client
import http.server
import json
import os
import queue
import random
import re
import secrets
import sys
import threading
import time
import urllib.parse
import uuid
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore  # the SMTP sink's loop: deprecated, still in 3.11
    import smtpd

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

DEFAULT_MIX = ("whoami=60,anon=8,idjag=6,email=3,cur_anon=4,cur_idjag=2,"
               "claim=5,revoke=5,noauth=2,madeup=1")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


# ---------------------------------------------------------------- provider

class Provider:
    """An agent provider: one ES256 key, its JWKS served over HTTP."""

    def __init__(self, issuer, audience, port):
        self.issuer, self.audience = issuer, audience
        self.key = ec.generate_private_key(ec.SECP256R1())
        pub = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "soak-1",
               "x": b64(pub.x.to_bytes(32, "big")), "y": b64(pub.y.to_bytes(32, "big"))}
        body = json.dumps({"keys": [jwk]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "max-age=86400")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.header = b64(json.dumps({"typ": "oauth-id-jag+jwt", "alg": "ES256", "kid": "soak-1"}).encode())

    def mint(self, sub, email_addr, auth_time=False):
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": sub, "aud": self.audience,
                  "client_id": self.issuer + "/agent", "jti": str(uuid.uuid4()),
                  "iat": now, "exp": now + 300, "email": email_addr, "email_verified": True}
        if auth_time:
            claims["auth_time"] = now
        signing_input = self.header + "." + b64(json.dumps(claims).encode())
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = utils.decode_dss_signature(der)
        return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


# ---------------------------------------------------------------- mail sink

class Sink(smtpd.SMTPServer):
    """Takes every message; puts (recipient, claim link token) on a queue."""

    def __init__(self, port, out_queue, stats):
        super().__init__(("127.0.0.1", port), None, decode_data=False)
        self.out_queue, self.stats = out_queue, stats

    def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
        try:
            m = email.message_from_bytes(data, policy=email.policy.default)
            text = m.get_body(("plain",)).get_content()
            token = re.search(r"token=(cvt_\w+)", text).group(1)
            for rcpt in rcpttos:
                self.out_queue.put((rcpt.lower(), token))
            self.stats.count("mail_received")
        except Exception as e:  # a message we cannot read is an error of the run
            self.stats.error(None, f"mail:unreadable:{type(e).__name__}", repr(data[:200]))
        return None


# ---------------------------------------------------------------- stats

class Stats:
    def __init__(self, replicas):
        self.lock = threading.Lock()
        self.replicas = replicas
        self.t0 = None
        self.minutes = collections.defaultdict(lambda: {r: {"lat": [], "n": 0, "errs": collections.Counter()} for r in replicas})
        self.op_lat = collections.defaultdict(list)  # reservoir per operation
        self.op_n = collections.Counter()
        self.errors = collections.Counter()  # kind -> count, whole run
        self.error_samples = {}
        self.counters = collections.Counter()

    def minute(self):
        return int((time.monotonic() - self.t0) // 60) if self.t0 else -1

    def record(self, replica, op, latency, err=None, sample=None):
        m = self.minute()
        with self.lock:
            b = self.minutes[m][replica]
            b["n"] += 1
            b["lat"].append(latency)
            if err:
                b["errs"][err] += 1
                self.errors[err] += 1
                self.error_samples.setdefault(err, sample)
            self.op_n[op] += 1
            lat = self.op_lat[op]
            if len(lat) < 50000:
                lat.append(latency)
            else:
                j = random.randrange(self.op_n[op])
                if j < 50000:
                    lat[j] = latency

    def error(self, replica, kind, sample=None):
        """A failed check that is not a request's status (counted in the
        minute, under the replica when there is one)."""
        m = self.minute()
        with self.lock:
            if replica is not None:
                self.minutes[m][replica]["errs"][kind] += 1
            else:
                self.counters["errors_without_replica"] += 1
            self.errors[kind] += 1
            self.error_samples.setdefault(kind, sample)

    def count(self, name, n=1):
        with self.lock:
            self.counters[name] += n


# ---------------------------------------------------------------- state

class Cred:
    __slots__ = ("secret", "kind", "reg", "claim_token", "revoking", "revoked", "claiming", "issued_by")

    def __init__(self, secret, kind, reg, claim_token=None, issued_by=None):
        self.secret, self.kind, self.reg, self.claim_token = secret, kind, reg, claim_token
        self.revoking = self.revoked = self.claiming = False
        self.issued_by = issued_by


class Pool:
    """A set with O(1) random pick and removal."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items, self.index = [], {}

    def add(self, item):
        with self.lock:
            self.index[id(item)] = len(self.items)
            self.items.append(item)

    def _remove(self, item):
        i = self.index.pop(id(item))
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.index[id(last)] = i

    def pick(self):
        with self.lock:
            return random.choice(self.items) if self.items else None

    def take(self, pred=lambda x: True, tries=8):
        with self.lock:
            for _ in range(tries):
                if not self.items:
                    return None
                item = random.choice(self.items)
                if pred(item):
                    self._remove(item)
                    return item
            return None

    def __len__(self):
        return len(self.items)

    def snapshot(self):
        with self.lock:
            return list(self.items)


class Claim:
    __slots__ = ("kind", "claim_token", "cred", "complete", "started", "requested")

    def __init__(self, kind, claim_token, cred, complete, requested=None):
        self.kind, self.claim_token, self.cred, self.complete = kind, claim_token, cred, complete
        self.started = time.monotonic()
        self.requested = requested


# ---------------------------------------------------------------- the run

class Soak:
    def __init__(self, args):
        self.args = args
        self.replicas = {}
        for spec in args.replicas.split(","):
            name, url = spec.split("=", 1)
            u = urllib.parse.urlsplit(url)
            self.replicas[name] = (u.hostname, u.port)
        self.names = list(self.replicas)
        self.pids = dict(zip(self.names, (int(p) for p in args.pids.split(","))))
        self.metrics = dict(zip(self.names, args.metrics.split(","))) if args.metrics else {}
        self.stats = Stats(self.names)
        self.live = Pool()        # credentials that must work
        self.claimable = Pool()   # anonymous (original) registrations not yet claimed
        self.revoked = []         # credentials revoked (and seen refused)
        self.revoked_lock = threading.Lock()
        self.claims = {}          # recipient -> Claim
        self.claims_lock = threading.Lock()
        self.mail = queue.Queue()
        self.checks = []          # heap of (due, seq, fn)
        self.checks_lock = threading.Lock()
        self.seq = 0
        self.stop = threading.Event()
        mix = dict(kv.split("=") for kv in args.mix.split(","))
        self.ops = list(mix)
        self.weights = [float(mix[o]) for o in self.ops]
        self.provider = Provider(args.provider_issuer, args.issuer, args.provider_port)
        self.sink = Sink(args.smtp_port, self.mail, self.stats)
        threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.2}, daemon=True).start()
        self.n = 0
        self.n_lock = threading.Lock()

    def next_n(self):
        with self.n_lock:
            self.n += 1
            return self.n

    def other(self, replica):
        others = [r for r in self.names if r != replica]
        return random.choice(others) if others else replica

    def later(self, delay, fn):
        with self.checks_lock:
            self.seq += 1
            heapq.heappush(self.checks, (time.monotonic() + delay, self.seq, fn))

    def due_check(self):
        with self.checks_lock:
            if self.checks and self.checks[0][0] <= time.monotonic():
                return heapq.heappop(self.checks)[2]
        return None

    # ------------------------------------------------------------ requests

    def request(self, conns, replica, method, path, op, body=None, headers=None, expect=(200,)):
        """One request; returns (status, parsed JSON or text or None).
        A request that fails on a reused keep-alive connection before any
        answer is retried once on a new one (as any HTTP client does) and
        counted in `stale_retries`, not as an error."""
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):
            conn = conns.get(replica)
            reused = conn is not None
            if conn is None:
                conn = conns[replica] = http.client.HTTPConnection(*self.replicas[replica], timeout=30)
            t = time.monotonic()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except Exception as e:
                conn.close()
                conns.pop(replica, None)
                if reused and attempt == 1 and isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)):
                    self.stats.count("stale_retries")
                    continue
                self.stats.record(replica, op, time.monotonic() - t, f"conn:{op}:{type(e).__name__}", repr(e))
                return None, None
            latency = time.monotonic() - t
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conns.pop(replica, None)
            err = None if status in expect else f"status:{op}:{status}"
            self.stats.record(replica, op, latency, err, data[:300].decode(errors="replace") if err else None)
            if status == 500 or status >= 502:
                self.stats.count(f"5xx_{status}")
            try:
                parsed = json.loads(data) if data[:1] in (b"{", b"[") else data.decode(errors="replace")
            except ValueError:
                parsed = data.decode(errors="replace")
            return status, parsed
        return None, None

    def whoami(self, conns, replica, cred, op="whoami", expect_revoked=False, check=None):
        hdr = {"Authorization": "Bearer " + cred.secret}
        if expect_revoked:
            status, body = self.request(conns, replica, "GET", "/api/whoami", op, headers=hdr, expect=(401,))
            return status
        expect = (200, 401) if (cred.revoking or cred.revoked) else (200,)
        status, body = self.request(conns, replica, "GET", "/api/whoami", op, headers=hdr, expect=expect)
        if status == 200 and isinstance(body, dict):
            if cred.reg and body.get("registration_id") != cred.reg:
                self.stats.error(replica, f"check:{op}:wrong_registration", str(body)[:200])
            if check:
                check(replica, body)
        elif status == 200:
            self.stats.error(replica, f"check:{op}:not_json", str(body)[:200])
        return status

    # ------------------------------------------------------------ operations

    def op_whoami(self, conns):
        cred = self.live.pick()
        if cred is None:
            return self.op_anon(conns)
        self.whoami(conns, random.choice(self.names), cred)

    def op_noauth(self, conns):
        self.request(conns, random.choice(self.names), "GET", "/api/whoami", "noauth", expect=(401,))

    def op_madeup(self, conns):
        self.request(conns, random.choice(self.names), "GET", "/api/whoami", "madeup",
                     headers={"Authorization": "Bearer amd_sk_" + secrets.token_hex(24)}, expect=(401,))

    def issued(self, conns, replica, cred, kind):
        """A credential just issued by `replica` works at another one at once."""
        self.stats.count("issued_" + kind)
        self.live.add(cred)
        self.whoami(conns, self.other(replica), cred, op="whoami_new")

    def op_anon(self, conns):
        r = random.choice(self.names)
        status, body = self.request(conns, r, "POST", "/agent/auth", "anon",
                                    body={"type": "anonymous", "requested_credential_type": "api_key"})
        if status != 200:
            return
        cred = Cred(body["credential"], "anon", body["registration_id"], body["claim_token"], r)
        self.claimable.add(cred)
        self.issued(conns, r, cred, "anon")

    def op_idjag(self, conns):
        r = random.choice(self.names)
        if random.random() < 0.25:   # an API key: a new subject each time (a delegation keeps 10)
            n = self.next_n()
            sub, ctype, kind = f"key-{n}", "api_key", "idjag_key"
        else:
            u = random.randrange(self.args.users)
            sub, ctype, kind = f"user-{u}", "access_token", "idjag_at"
        jag = self.provider.mint(sub, f"{sub}@idp.example")
        status, body = self.request(conns, r, "POST", "/agent/auth", "idjag", body={
            "type": "identity_assertion", "assertion_type": ID_JAG, "assertion": jag,
            "requested_credential_type": ctype})
        if status != 200:
            return
        self.issued(conns, r, Cred(body["credential"], kind, body["registration_id"], issued_by=r), kind)

    def op_email(self, conns):
        r = random.choice(self.names)
        addr = f"email-{self.next_n()}@example.com"
        ctype = random.choice(("api_key", "access_token"))
        complete = random.random() < self.args.complete
        # Registered before the request so that a fast message finds it.
        claim = Claim("email", None, None, complete, ctype)
        with self.claims_lock:
            self.claims[addr] = claim
        status, body = self.request(conns, r, "POST", "/agent/auth", "email", body={
            "type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": addr, "requested_credential_type": ctype})
        if status != 200:
            with self.claims_lock:
                self.claims.pop(addr, None)
            return
        claim.claim_token = body["claim_token"]
        claim.cred = body["registration_id"]
        self.stats.count("issued_email_pending")

    def op_cur_anon(self, conns):
        r = random.choice(self.names)
        status, body = self.request(conns, r, "POST", "/agent/identity", "cur_anon", body={"type": "anonymous"})
        if status != 200:
            return
        self.stats.count("created_cur_anon")
        self.exchange(conns, self.other(r), body["identity"]["assertion"], body["id"], "cur_anon")

    def exchange(self, conns, r, assertion, reg, kind):
        form = urllib.parse.urlencode({"grant_type": JWT_BEARER, "assertion": assertion})
        status, body = self.request(conns, r, "POST", "/oauth2/token", "token", body=form,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            return
        self.issued(conns, r, Cred(body["access_token"], kind, reg, issued_by=r), kind)

    def op_cur_idjag(self, conns):
        r = random.choice(self.names)
        sub = f"cur-{self.next_n()}"   # a new subject: a first link by email would need the user
        jag = self.provider.mint(sub, f"{sub}@idp.example", auth_time=True)
        if random.random() < 0.5:
            status, body = self.request(conns, r, "POST", "/agent/identity", "cur_idjag", body={
                "type": "identity_assertion", "assertion_type": ID_JAG, "assertion": jag})
            if status == 200:
                self.exchange(conns, self.other(r), body["identity"]["assertion"], body["id"], "cur_idjag")
        else:
            self.exchange(conns, r, jag, None, "cur_idjag_direct")

    def op_claim(self, conns):
        cred = self.claimable.take(lambda c: not (c.revoking or c.revoked))
        if cred is None:
            return self.op_anon(conns)
        cred.claiming = True
        addr = f"claim-{self.next_n()}@example.com"
        claim = Claim("anon", cred.claim_token, cred, random.random() < self.args.complete)
        with self.claims_lock:
            self.claims[addr] = claim
        r = random.choice(self.names)
        status, body = self.request(conns, r, "POST", "/agent/auth/claim", "claim",
                                    body={"claim_token": cred.claim_token, "email": addr})
        if status != 200:
            with self.claims_lock:
                self.claims.pop(addr, None)
            return
        self.stats.count("claims_started")

    def op_revoke(self, conns):
        cred = self.live.take(lambda c: not c.claiming)
        if cred is None:
            return
        cred.revoking = True
        r = random.choice(self.names)
        form = urllib.parse.urlencode({"token": cred.secret})
        status, _ = self.request(conns, r, "POST", "/oauth2/revoke", "revoke", body=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            self.live.add(cred)   # not revoked: it must still work (checked at the end)
            cred.revoking = False
            return
        cred.revoked = True
        self.stats.count("revoked_" + cred.kind)
        with self.revoked_lock:
            self.revoked.append(cred)
        # This replica refuses it at once; another within a second.
        self.whoami(conns, r, cred, op="revoked_here", expect_revoked=True)
        other = self.other(r)
        self.later(1.5, lambda c: self.whoami(c, other, cred, op="revoked_there", expect_revoked=True))

    def handle_mail(self, conns, rcpt, link):
        with self.claims_lock:
            claim = self.claims.pop(rcpt, None)
        if claim is None:
            self.stats.error(None, "check:mail_for_unknown_recipient", rcpt)
            return
        self.stats.count("mail_matched")
        if not claim.complete:
            return
        # The claim token may not be known yet (the registration's answer
        # is still on its way); wait for it briefly.
        deadline = time.monotonic() + 5
        while claim.claim_token is None and time.monotonic() < deadline:
            time.sleep(0.01)
        r1 = random.choice(self.names)
        form = urllib.parse.urlencode({"token": link, "action": "show"})
        status, page = self.request(conns, r1, "POST", "/agent/auth/claim/view", "claim_show", body=form,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            return
        m = re.search(r'id="otp"[^>]*>\s*(\d{6})', page if isinstance(page, str) else "")
        if not m:
            self.stats.error(r1, "check:claim_show:no_code", str(page)[:300])
            return
        r2 = self.other(r1)
        status, body = self.request(conns, r2, "POST", "/agent/auth/claim/complete", "claim_complete",
                                    body={"claim_token": claim.claim_token, "otp": m.group(1)})
        if status != 200:
            return
        self.stats.count("claims_completed_" + claim.kind)
        if claim.kind == "anon":
            cred = claim.cred

            def scopes_upgraded(c):
                def check(replica, who):
                    if "api.write" not in who.get("scopes", []):
                        self.stats.error(replica, "check:claimed_key_scopes", str(who)[:200])
                    cred.claiming = False   # claimed: it may now be revoked like any other
                self.whoami(c, random.choice(self.names), cred, op="whoami_claimed", check=check)
            self.later(1.5, scopes_upgraded)
        else:
            kind = "email_" + claim.requested
            self.issued(conns, r2, Cred(body["credential"], kind, body["registration_id"], issued_by=r2), kind)

    # ------------------------------------------------------------ threads

    def worker(self, idx):
        conns = {}
        interval = self.args.threads / self.args.rate
        next_t = time.monotonic() + random.random() * interval
        while not self.stop.is_set():
            fn = self.due_check()
            if fn:
                fn(conns)
                continue
            try:
                rcpt, link = self.mail.get_nowait()
                self.handle_mail(conns, rcpt, link)
                continue
            except queue.Empty:
                pass
            now = time.monotonic()
            if next_t > now:
                time.sleep(min(next_t - now, 0.05))
                continue
            next_t = max(next_t + interval, now - 1.0)  # no burst after a stall
            op = random.choices(self.ops, self.weights)[0]
            try:
                getattr(self, "op_" + op)(conns)
            except Exception as e:  # a bug of the generator or an answer of the wrong shape
                self.stats.error(None, f"generator:{op}:{type(e).__name__}", repr(e)[:300])
        for c in conns.values():
            c.close()

    def proc(self, name):
        pid = self.pids[name]
        out = {}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "Threads:")):
                        k, v = line.split(":", 1)
                        out[k] = int(v.split()[0])
            out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                out["cpu_ticks"] = int(fields[11]) + int(fields[12])
        except OSError:
            out["gone"] = True
        return {"rss_kb": out.get("VmRSS"), "threads": out.get("Threads"), "fds": out.get("fds"),
                "cpu_s": out["cpu_ticks"] / os.sysconf("SC_CLK_TCK") if "cpu_ticks" in out else None}

    WANTED = ("authmd_mail_queue_depth", "authmd_mail_queue_age_seconds", "authmd_credential_cache_entries",
              "authmd_db_pool_connections", "authmd_invalidation_log_lag_seconds",
              "authmd_mail_sent_total", "authmd_mail_failed_total", "authmd_mail_retries_total")

    def scrape(self, name):
        url = self.metrics.get(name)
        if not url:
            return {}
        u = urllib.parse.urlsplit(url)
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            c.request("GET", u.path or "/metrics")
            text = c.getresponse().read().decode()
            c.close()
        except Exception as e:
            return {"error": repr(e)}
        out = {}
        for line in text.splitlines():
            if line.startswith(self.WANTED):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def finish_minute(self, m, out, last=False):
        """Writes minute m (the last one also takes whatever was recorded
        after the end: the settling of checks and claims in flight)."""
        with self.stats.lock:
            buckets = {r: {"lat": [], "n": 0, "errs": collections.Counter()} for r in self.names}
            for k in [k for k in self.stats.minutes if k == m or (last and k > m)]:
                for r, b in self.stats.minutes.pop(k).items():
                    buckets[r]["lat"] += b["lat"]
                    buckets[r]["n"] += b["n"]
                    buckets[r]["errs"] += b["errs"]
        row = {"minute": m + 1, "t": time.strftime("%H:%M:%S", time.gmtime()), "replicas": {},
               "live_credentials": len(self.live), "claims_waiting_for_mail": len(self.claims)}
        all_lat, all_errs, n = [], collections.Counter(), 0
        for r in self.names:
            b = buckets[r]
            lat = sorted(b["lat"])
            all_lat += lat
            all_errs += b["errs"]
            n += b["n"]
            row["replicas"][r] = dict(self.proc(r), requests=b["n"], errors=sum(b["errs"].values()),
                                      errors_by_kind=dict(b["errs"]),
                                      p50_ms=round(percentile(lat, 50) * 1000, 2) if lat else None,
                                      p99_ms=round(percentile(lat, 99) * 1000, 2) if lat else None,
                                      metrics=self.scrape(r))
        all_lat.sort()
        row.update(requests=n, errors=sum(all_errs.values()), errors_by_kind=dict(all_errs),
                   p50_ms=round(percentile(all_lat, 50) * 1000, 2) if all_lat else None,
                   p99_ms=round(percentile(all_lat, 99) * 1000, 2) if all_lat else None)
        out.write(json.dumps(row) + "\n")
        out.flush()
        rss = " ".join(f"{r}={row['replicas'][r]['rss_kb'] / 1024:.1f}MB" for r in self.names
                       if row["replicas"][r]["rss_kb"])
        print(f"[{row['t']}] minute {m + 1}: {n} requests ({n / 60:.0f}/s), {row['errors']} errors, "
              f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, RSS {rss}, live credentials {row['live_credentials']}",
              flush=True)
        return row

    def invariants(self):
        """Every credential seen issued and not revoked works on every
        replica; every revoked one is refused on every replica."""
        live = [c for c in self.live.snapshot() if not (c.revoking or c.revoked)]
        revoked = list(self.revoked)
        cap = self.args.check_max
        live_s = live if len(live) <= cap else random.sample(live, cap)
        rev_s = revoked if len(revoked) <= cap else random.sample(revoked, cap)
        work = [(c, r, 200) for c in live_s for r in self.names] + [(c, r, 401) for c in rev_s for r in self.names]
        result = collections.Counter()
        failures = []
        lock = threading.Lock()
        it = iter(work)

        def run():
            conns = {}
            while True:
                with lock:
                    item = next(it, None)
                if item is None:
                    break
                c, r, want = item
                status, body = self.request(conns, r, "GET", "/api/whoami", "final_check",
                                            headers={"Authorization": "Bearer " + c.secret}, expect=(want,))
                ok = status == want
                with lock:
                    result[("live" if want == 200 else "revoked", ok)] += 1
                    if not ok and len(failures) < 20:
                        failures.append({"kind": c.kind, "reg": c.reg, "replica": r, "want": want,
                                         "got": status, "body": str(body)[:200]})
        ts = [threading.Thread(target=run) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return {"live_total": len(live), "live_checked": len(live_s), "revoked_total": len(revoked),
                "revoked_checked": len(rev_s), "replicas": self.names,
                "live_ok": result[("live", True)], "live_failed": result[("live", False)],
                "revoked_refused": result[("revoked", True)], "revoked_accepted": result[("revoked", False)],
                "failures": failures}

    def run(self):
        args = self.args
        os.makedirs(args.out, exist_ok=True)
        out = open(os.path.join(args.out, "minutes.jsonl"), "w")
        start = {r: self.proc(r) for r in self.names}
        start_metrics = {r: self.scrape(r) for r in self.names}
        self.stats.t0 = t0 = time.monotonic()
        print(f"soak: {args.duration}s, ~{args.rate} operations/s over {args.threads} threads, "
              f"replicas {self.replicas}, RSS at start "
              + " ".join(f"{r}={start[r]['rss_kb'] / 1024:.1f}MB" for r in self.names), flush=True)
        threads = [threading.Thread(target=self.worker, args=(i,), daemon=True) for i in range(args.threads)]
        for t in threads:
            t.start()
        rows = []
        m = 0
        while True:
            end_of_minute = t0 + 60 * (m + 1)
            end = t0 + args.duration
            wait = min(end_of_minute, end) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() >= end - 0.001:
                break
            rows.append(self.finish_minute(m, out))
            m += 1
        self.stop.set()
        for t in threads:
            t.join()
        # Due checks and mail still in flight: let them finish.
        conns = {}
        settle = time.monotonic() + 10
        while time.monotonic() < settle and (self.checks or not self.mail.empty()):
            fn = self.due_check()
            if fn:
                fn(conns)
                continue
            try:
                self.handle_mail(conns, *self.mail.get(timeout=0.2))
            except queue.Empty:
                pass
        rows.append(self.finish_minute(m, out, last=True))   # the last (perhaps partial) minute, with the settling
        time.sleep(1.5)   # every revocation has reached every replica
        with self.claims_lock:
            unmailed = [c for c in self.claims.values() if time.monotonic() - c.started > 60]
        for c in unmailed:
            self.stats.error(None, "check:claim_mail_not_received_in_60s")
        self.stats.minute = lambda: 10**6   # the final check is kept apart from the minutes
        inv = self.invariants()
        end = {r: self.proc(r) for r in self.names}
        ops = {}
        for op, lat in sorted(self.stats.op_lat.items()):
            lat = sorted(lat)
            ops[op] = {"n": self.stats.op_n[op], "p50_ms": round(percentile(lat, 50) * 1000, 2),
                       "p99_ms": round(percentile(lat, 99) * 1000, 2)}
        final_errors = self.stats.minutes.get(10**6, {})
        summary = {"duration_s": args.duration, "rate": args.rate, "threads": args.threads, "mix": args.mix,
                   "start": start, "end": end, "start_metrics": start_metrics,
                   "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
                   "errors_by_kind": dict(self.stats.errors), "error_samples": self.stats.error_samples,
                   "counters": dict(self.stats.counters), "operations": ops, "invariants": inv,
                   "claims_waiting_at_end": len(self.claims),
                   "final_check_errors": {r: dict(b["errs"]) for r, b in final_errors.items()}}
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)
        self.table(rows, summary)
        bad = summary["errors"] or inv["live_failed"] or inv["revoked_accepted"]
        return 1 if bad else 0

    def table(self, rows, s):
        names = self.names
        hdr = ["min"] + [f"RSS {r} MB" for r in names] + ["req", "req/s", "err", "p50 ms", "p99 ms"] + \
              [f"p99 {r}" for r in names] + [f"fds {r}" for r in names] + [f"cache {r}" for r in names]
        print()
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for row in rows:
            rep = row["replicas"]
            cells = [str(row["minute"])] + \
                    [f"{rep[r]['rss_kb'] / 1024:.1f}" if rep[r]["rss_kb"] else "-" for r in names] + \
                    [str(row["requests"]), f"{row['requests'] / 60:.0f}", str(row["errors"]),
                     str(row["p50_ms"]), str(row["p99_ms"])] + \
                    [str(rep[r]["p99_ms"]) for r in names] + [str(rep[r]["fds"]) for r in names] + \
                    [str(int(rep[r]["metrics"].get('authmd_credential_cache_entries{kind="record"}', -1))) for r in names]
            print("| " + " | ".join(cells) + " |")
        print()
        for r in names:
            a, b = s["start"][r], s["end"][r]
            print(f"replica {r}: RSS {a['rss_kb'] / 1024:.1f} MB at start, {b['rss_kb'] / 1024:.1f} MB at end; "
                  f"threads {a['threads']} -> {b['threads']}; open files {a['fds']} -> {b['fds']}; "
                  f"CPU {b['cpu_s'] - a['cpu_s']:.0f} s")
        print(f"requests: {s['requests']}, errors: {s['errors']}")
        print("errors by kind: " + (json.dumps(s["errors_by_kind"]) if s["errors_by_kind"] else "none"))
        print("counters: " + json.dumps(dict(sorted(s["counters"].items()))))
        print("per operation (whole run):")
        for op, v in s["operations"].items():
            print(f"  {op:18} {v['n']:8}  p50 {v['p50_ms']:8} ms  p99 {v['p99_ms']:8} ms")
        inv = s["invariants"]
        print(f"invariants: live credentials {inv['live_total']} (checked {inv['live_checked']} on each replica): "
              f"{inv['live_ok']} answered 200, {inv['live_failed']} did not; revoked {inv['revoked_total']} "
              f"(checked {inv['revoked_checked']}): {inv['revoked_refused']} refused, {inv['revoked_accepted']} not")
        for f in inv["failures"]:
            print("  failure: " + json.dumps(f))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", required=True, help="A=http://127.0.0.1:20080,B=http://127.0.0.1:20081")
    p.add_argument("--pids", required=True, help="the replicas' process ids, in the same order")
    p.add_argument("--metrics", default="", help="each replica's metrics URL, in the same order")
    p.add_argument("--issuer", required=True, help="the service's issuer (the ID-JAGs' audience)")
    p.add_argument("--provider-issuer", required=True)
    p.add_argument("--provider-port", type=int, required=True)
    p.add_argument("--smtp-port", type=int, required=True)
    p.add_argument("--duration", type=int, default=1800)
    p.add_argument("--rate", type=float, default=300, help="operations a second, all threads together")
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--mix", default=DEFAULT_MIX)
    p.add_argument("--users", type=int, default=500, help="subjects the access-token ID-JAGs cycle through")
    p.add_argument("--complete", type=float, default=0.5, help="share of claims completed")
    p.add_argument("--check-max", type=int, default=5000, help="credentials of each kind checked at the end")
    p.add_argument("--out", required=True)
    sys.exit(Soak(p.parse_args()).run())


if __name__ == "__main__":
    main()
