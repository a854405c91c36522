#!/usr/bin/env python3
"""N claimed registrations in the current dialect, for the refresh load
scenario (scripts/load-matrix.sh): each through the whole ceremony, as a
user would (docs/protocol.md §20.5): service_auth, the verification page,
the sign-in email (read from the server's mail outbox directory), the
sign-in link with the page's cookie, Authorize, the code, completion.
Prints one refresh token per line.

    current-claims.py BASE_URL OUTBOX_DIR N refresh
"""
import email
import email.policy
import glob
import http.client
import json
import os
import re
import sys
import time
import urllib.parse

base, outbox, n, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert what == "refresh", what
u = urllib.parse.urlsplit(base)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def call(method, path, body=None, ctype=None, cookie=None):
    headers = {}
    if ctype:
        headers["Content-Type"] = ctype
    if cookie:
        headers["Cookie"] = cookie
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.getheader("Set-Cookie"), r.read().decode()


def mail_for(address, seen):
    """The newest unseen outbox message to `address` (the queue delivers it
    within moments of the commit)."""
    deadline = time.time() + 20
    while time.time() < deadline:
        for path in sorted(glob.glob(os.path.join(outbox, "*.eml"))):
            if path in seen:
                continue
            with open(path, "rb") as f:
                m = email.message_from_binary_file(f, policy=email.policy.default)
            if address in str(m["To"]):
                seen.add(path)
                return m.get_body(("plain",)).get_content()
        time.sleep(0.02)
    sys.exit(f"no sign-in email for {address} in {outbox}")


seen = set()
for i in range(n):
    address = f"load-{os.getpid()}-{i}@example.com"
    status, _, body = call("POST", "/agent/identity",
                           json.dumps({"type": "service_auth", "login_hint": address}),
                           "application/json")
    assert status == 200, body
    reg = json.loads(body)
    link = re.search(r"token=(cvt_\w+)", reg["claim"]["attempt"]["verification_uri"]).group(1)
    status, cookie, body = call("POST", "/agent/identity/claim/verify",
                                f"token={link}&action=sign_in",
                                "application/x-www-form-urlencoded")
    assert status == 200 and cookie, body
    cookie = cookie.split(";")[0]
    sign_in = re.search(r"token=(sgn_\w+)", mail_for(address, seen)).group(1)
    status, _, body = call("POST", "/agent/identity/claim/verify",
                           f"token={sign_in}&action=confirm",
                           "application/x-www-form-urlencoded", cookie)
    code = re.search(r'id="otp"[^>]*>(\d{6})<', body).group(1)
    status, _, body = call("POST", "/agent/identity/claim/complete",
                           json.dumps({"claim_token": reg["claim"]["token"], "user_code": code}),
                           "application/json")
    assert status == 200, body
    print(json.loads(body)["identity"]["refresh_token"]["value"])
