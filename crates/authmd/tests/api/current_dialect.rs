//! The current dialect (docs/protocol.md §20): `POST /agent/identity`,
//! authmd's own assertions and the token endpoint, with hostile inputs.

use authmd::store::RevokeTarget;
use authmd_jose::Algorithm;
use serde_json::{Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, claims, key, mint, now_secs, trusting};
use crate::support::{Backend, TestApp, form_request};

const ISSUER: &str = "http://127.0.0.1:8080";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ON: &str = "[dialects.current]\nenabled = true\n";

fn decode(segment: &str) -> Value {
    let bytes = authmd_jose::b64::decode(segment).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The header and claims of a compact JWS.
fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = decode(it.next().unwrap_or_default());
    let c = decode(it.next().unwrap_or_default());
    (h, c)
}

async fn identity(t: &TestApp, body: &str) -> crate::support::TestResponse {
    t.post_json("/agent/identity", body).await
}

async fn exchange(t: &TestApp, form: &str) -> crate::support::TestResponse {
    t.send(form_request("/oauth2/token", form)).await
}

fn grant(assertion: &str) -> String {
    format!("grant_type={}&assertion={assertion}", urlencode(JWT_BEARER))
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn id_jag_body(assertion: &str) -> String {
    json!({
        "type": "identity_assertion",
        "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
        "assertion": assertion,
    })
    .to_string()
}

/// An ID-JAG with a fresh `auth_time`.
fn fresh(issuer: &str, sub: &str) -> serde_json::Map<String, Value> {
    let mut c = claims(issuer, ISSUER, sub);
    c.insert("auth_time".into(), json!(now_secs() - 60));
    c
}

both_backends! {
    /// Anonymous registration: the nested envelope, an ES256 assertion
    /// bound to the pre-claim state, exchanged for a pre-claim token.
    async fn anonymous_registers_and_exchanges(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let r = identity(&t, r#"{"type":"anonymous"}"#).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let b = r.json();
        let id = b["id"].as_str().unwrap_or_default().to_owned();
        assert!(id.starts_with("reg_"));
        assert_eq!(b["type"], "anonymous");
        assert_eq!(b["scopes"], json!({"pre_claim": ["api.read"], "post_claim": ["api.read", "api.write"]}));
        assert!(b["claim"]["token"].as_str().unwrap_or_default().starts_with("clm_"));
        assert_eq!(b["claim"]["url"], format!("{ISSUER}/agent/identity/claim"));
        assert!(b["claim"]["expires_at"].is_string());
        assert!(b["claim"].get("attempt").is_none(), "anonymous: no attempt yet");
        assert!(b["identity"]["expires_at"].is_string());
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let (h, c) = parts(&assertion);
        assert_eq!(h["typ"], "oauth-id-jag+jwt");
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["kid"].as_str(), t.app.service_keys().current_kid(authmd::Timestamp::now()).as_deref());
        assert_eq!(c["iss"], ISSUER);
        assert_eq!(c["aud"], ISSUER);
        assert_eq!(c["sub"], id.as_str());
        assert_eq!(c["registration_status"], "unclaimed");
        assert!(c.get("email").is_none());
        assert_eq!(c["exp"].as_i64().unwrap_or(0) - c["iat"].as_i64().unwrap_or(0), 3600);

        let x = exchange(&t, &grant(&assertion)).await;
        assert_eq!(x.status, 200, "{}", x.text());
        assert_eq!(x.header("cache-control"), Some("no-store"));
        assert_eq!(x.header("pragma"), Some("no-cache"));
        let tok = x.json();
        assert_eq!(tok["token_type"], "Bearer");
        assert_eq!(tok["expires_in"], 3600);
        assert_eq!(tok["scope"], "api.read");
        assert!(tok.get("refresh_token").is_none());
        let access = tok["access_token"].as_str().unwrap_or_default();
        let who = t.get("/api/whoami", Some(access)).await;
        assert_eq!(who.status, 200, "{}", who.text());
        assert_eq!(who.json()["registration_id"], id.as_str());
        assert_eq!(who.json()["scopes"], json!(["api.read"]));

        // The assertion is reusable until it expires (one token each time).
        let again = exchange(&t, &grant(&assertion)).await;
        assert_eq!(again.status, 200);
        assert_ne!(again.json()["access_token"], tok["access_token"]);

        // Operators see each registration's dialect.
        let original = t.register_anonymous().await;
        let list = t
            .app
            .store()
            .list_registrations(&Default::default(), authmd::Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dialect = |rid: &str| list.iter().find(|r| r.id == rid).map(|r| r.dialect.clone());
        assert_eq!(dialect(&id).as_deref(), Some("current"));
        assert_eq!(dialect(original["registration_id"].as_str().unwrap_or_default()).as_deref(), Some("original"));

        // Audited: created (with the dialect), assertion issued, exchanged.
        let created = t.events("registration.created").await;
        assert_eq!(created[0].data["dialect"], "current");
        assert_eq!(t.events("assertion.issued").await.len(), 1);
        assert_eq!(t.events("assertion.issued").await[0].data["jti"], c["jti"]);
        let exchanged = t.events("token.exchanged").await;
        assert_eq!(exchanged.len(), 2);
        assert_eq!(exchanged[0].registration_id.as_deref(), Some(id.as_str()));
    }
}

both_backends! {
    /// The replica that signed an assertion recognizes it by its digest;
    /// another replica, or this one after a restart, checks its signature.
    /// Either way it exchanges, and a copy differing in any segment is
    /// refused where it was signed as anywhere else.
    async fn assertions_exchange_wherever_they_are_presented(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let other = t.replica(ON).await;
        let b = identity(&t, r#"{"type":"anonymous"}"#).await.json();
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        for (replica, which) in [(&t, "the replica that signed it"), (&other, "another replica")] {
            let x = exchange(replica, &grant(&assertion)).await;
            assert_eq!(x.status, 200, "{which}: {}", x.text());
            assert_eq!(x.json()["scope"], "api.read", "{which}");
        }
        let restarted = t.replica(ON).await;
        drop(t);
        let x = exchange(&restarted, &grant(&assertion)).await;
        assert_eq!(x.status, 200, "after a restart: {}", x.text());

        let signer = TestApp::new(backend, ON).await;
        let b = identity(&signer, r#"{"type":"anonymous"}"#).await.json();
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let segments: Vec<&str> = assertion.split('.').collect();
        for i in 0..3 {
            let mut altered: Vec<String> = segments.iter().map(|s| (*s).to_owned()).collect();
            // One character of the segment swapped for another base64url one.
            let mid = altered[i].len() / 2;
            let c = altered[i].as_bytes()[mid];
            let swapped = if c == b'A' { 'B' } else { 'A' };
            altered[i].replace_range(mid..=mid, &swapped.to_string());
            let x = exchange(&signer, &grant(&altered.join("."))).await;
            assert_eq!(x.status, 400, "segment {i} altered: {}", x.text());
            assert_eq!(x.code(), "invalid_grant", "segment {i} altered");
        }
        assert_eq!(signer.events("token.exchanged").await.len(), 0);
    }
}

both_backends! {
    /// Unlike the reference implementation, a revoked or expired
    /// registration's assertions stop exchanging at once.
    async fn assertions_die_with_their_registration(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let b = identity(&t, r#"{"type":"anonymous"}"#).await.json();
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let id = b["id"].as_str().unwrap_or_default().to_owned();
        t.app
            .store()
            .revoke(authmd::store::OperatorRevocation {
                target: RevokeTarget::Registration(id),
                operator: "test".into(),
                reason: None,
                now: authmd::Timestamp::now(),
                meta: Default::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let x = exchange(&t, &grant(&assertion)).await;
        assert_eq!((x.status.as_u16(), x.code().as_str()), (400, "invalid_grant"), "{}", x.text());
        assert!(x.json()["error_description"].is_string());

        // Expired by the sweep (past the claim deadline).
        let b = identity(&t, r#"{"type":"anonymous"}"#).await.json();
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let later = authmd::Timestamp::now().plus(std::time::Duration::from_secs(25 * 3600));
        t.app.sweep(later).await.unwrap_or_else(|e| panic!("{e}"));
        let x = exchange(&t, &grant(&assertion)).await;
        assert_eq!(x.code(), "invalid_grant");
        assert_eq!(t.events("token.exchanged").await.len(), 0);
    }
}

both_backends! {
    /// An ID-JAG: the same §3.3 checks, then `auth_time`; a clean match
    /// answers a flat scope list and an assertion with the user's email.
    async fn id_jag_registers_and_exchanges(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &trusting(&[server.issuer()], ON)).await;
        let r = identity(&t, &id_jag_body(&mint(&k, &[], &fresh(server.issuer(), "alice")))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        assert_eq!(b["type"], "identity_assertion");
        assert_eq!(b["scopes"], json!(["api.read", "api.write"]));
        assert!(b.get("claim").is_none());
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let (_, c) = parts(&assertion);
        assert_eq!(c["email"], "alice@example.com");
        assert_eq!(c["email_verified"], true);
        assert_eq!(c["registration_status"], "active");
        assert_eq!(c["sub"], b["id"]);
        let x = exchange(&t, &grant(&assertion)).await;
        assert_eq!(x.status, 200, "{}", x.text());
        assert_eq!(x.json()["scope"], "api.read api.write");
        let who = t.get("/api/whoami", Some(x.json()["access_token"].as_str().unwrap_or_default())).await;
        assert_eq!(who.json()["user"]["email"], "alice@example.com");
        assert_eq!(who.json()["registration_type"], "agent-provider");
        // The same delegation registers again with the same id.
        let again = identity(&t, &id_jag_body(&mint(&k, &[], &fresh(server.issuer(), "alice")))).await;
        assert_eq!(again.json()["id"], b["id"]);
        // No credential at registration: only the exchange issued one.
        assert_eq!(t.events("credential.issued").await.len(), 0);
        assert_eq!(t.events("assertion.issued").await.len(), 2);

        // A replay is refused, as in the original dialect.
        let once = mint(&k, &[], &fresh(server.issuer(), "bob"));
        assert_eq!(identity(&t, &id_jag_body(&once)).await.status, 200);
        let replay = identity(&t, &id_jag_body(&once)).await;
        assert_eq!((replay.status.as_u16(), replay.code().as_str()), (400, "replay_detected"));
    }
}

both_backends! {
    /// `login_required`: `auth_time` missing, too old or in the future;
    /// the refused assertion's `jti` is not spent.
    async fn stale_sign_in_is_login_required(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &trusting(&[server.issuer()], ON)).await;
        let mut missing = claims(server.issuer(), ISSUER, "alice");
        let mut old = missing.clone();
        old.insert("auth_time".into(), json!(now_secs() - 3600 - 61 - 5));
        let mut future = missing.clone();
        future.insert("auth_time".into(), json!(now_secs() + 600));
        let mut text = missing.clone();
        text.insert("auth_time".into(), json!("1700000000"));
        for c in [&missing, &old, &future, &text] {
            let r = identity(&t, &id_jag_body(&mint(&k, &[], c))).await;
            assert_eq!(r.status, 401, "{}", r.text());
            assert_eq!(r.code(), "login_required");
            assert_eq!(r.json()["max_age"], 3600);
            assert!(r.json()["error_description"].is_string());
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("AgentAuth error=\"login_required\", max_age=\"3600\""), "{challenge}");
        }
        // The jti was not spent: the same assertion with a fresh auth_time
        // is another token, but this one registers once signed in again.
        missing.insert("auth_time".into(), json!(now_secs()));
        assert_eq!(identity(&t, &id_jag_body(&mint(&k, &[], &missing))).await.status, 200);
        // A shorter configured maximum.
        let t = TestApp::new(backend, &trusting(&[server.issuer()], &format!("{ON}max_auth_age = \"5m\"\n"))).await;
        let r = identity(&t, &id_jag_body(&mint(&k, &[], &fresh(server.issuer(), "carol")))).await;
        assert_eq!(r.status, 200);
        let mut ten = claims(server.issuer(), ISSUER, "dave");
        ten.insert("auth_time".into(), json!(now_secs() - 600));
        let r = identity(&t, &id_jag_body(&mint(&k, &[], &ten))).await;
        assert_eq!((r.status.as_u16(), r.json()["max_age"].clone()), (401, json!(300)));
    }
}

both_backends! {
    /// A first link to an existing account by a verified email is not made
    /// silently: `401 interaction_required` with a claim handle and an
    /// attempt, and nothing is bound.
    async fn first_link_by_email_needs_the_user(backend: Backend) {
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "k1");
        let kb = key(Algorithm::Es256, "k2");
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        let t = TestApp::new(backend, &trusting(&[a.issuer(), b.issuer()], ON)).await;
        // alice@example.com exists (provisioned through provider a).
        assert_eq!(identity(&t, &id_jag_body(&mint(&ka, &[], &fresh(a.issuer(), "alice")))).await.status, 200);
        // Provider b asserts the same verified address for another subject.
        let r = identity(&t, &id_jag_body(&mint(&kb, &[], &fresh(b.issuer(), "alice")))).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("AgentAuth error=\"interaction_required\""), "{challenge}");
        let body = r.json();
        assert_eq!(body["error"], "interaction_required");
        assert!(body["error_description"].is_string());
        assert!(body["id"].as_str().unwrap_or_default().starts_with("reg_"));
        assert_eq!(body["type"], "identity_assertion");
        assert_eq!(body["scopes"], json!({"post_claim": ["api.read", "api.write"]}));
        assert!(body["claim"]["token"].as_str().unwrap_or_default().starts_with("clm_"));
        let uri = body["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default();
        assert!(uri.starts_with(&format!("{ISSUER}/agent/identity/claim/verify?token=cvt_")), "{uri}");
        assert!(body.get("identity").is_none(), "nothing to exchange before the user confirms");
        assert_eq!(t.events("step_up.required").await.len(), 1);
        assert_eq!(t.events("delegation.linked").await.len(), 0);
        // The token endpoint cannot ask the user: invalid_grant.
        let x = exchange(&t, &grant(&mint(&kb, &[], &fresh(b.issuer(), "alice")))).await;
        assert_eq!(x.code(), "invalid_grant");
        assert!(x.json()["error_description"].as_str().unwrap_or_default().contains("interaction_required"));
    }
}

both_backends! {
    /// A provider's ID-JAG presented directly at the token endpoint: the
    /// same checks, replay protection and matching as registration.
    async fn id_jag_exchanges_directly(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &trusting(&[server.issuer()], ON)).await;
        let jag = mint(&k, &[], &fresh(server.issuer(), "alice"));
        let x = exchange(&t, &format!("{}&resource={}", grant(&jag), urlencode("http://127.0.0.1:8080/api/"))).await;
        assert_eq!(x.status, 200, "{}", x.text());
        assert_eq!(x.json()["scope"], "api.read api.write");
        let who = t.get("/api/whoami", Some(x.json()["access_token"].as_str().unwrap_or_default())).await;
        assert_eq!(who.json()["user"]["email"], "alice@example.com");
        let replay = exchange(&t, &grant(&jag)).await;
        assert_eq!(replay.code(), "invalid_grant");
        assert!(replay.json()["error_description"].as_str().unwrap_or_default().contains("replay_detected"));
        let stale = exchange(&t, &grant(&mint(&k, &[], &claims(server.issuer(), ISSUER, "bob")))).await;
        assert!(stale.json()["error_description"].as_str().unwrap_or_default().contains("login_required"));
        let untrusted = mint(&key(Algorithm::Es256, "k9"), &[], &fresh("https://stranger.example", "eve"));
        assert_eq!(exchange(&t, &grant(&untrusted)).await.code(), "invalid_grant");

        // What the provider authorized bounds the grant (ID-JAG §4.4.1):
        // its scope narrows the post-claim scopes, never widens them; its
        // resource must name this service's (RFC 8707).
        let with = |sub: &str, extra: Value| {
            let mut c = fresh(server.issuer(), sub);
            if let Value::Object(m) = extra {
                c.extend(m);
            }
            mint(&k, &[], &c)
        };
        let ours = "http://127.0.0.1:8080/api/";
        for (sub, extra, asked, scope) in [
            ("dan", json!({"scope": "api.read"}), "", "api.read"),
            ("dan", json!({"scope": "api.read admin.all", "resource": ours}), "", "api.read"),
            ("dan", json!({"resource": ["https://other.example/", ours]}), "", "api.read api.write"),
            // The client may ask for less (RFC 6749 §3.3).
            ("dan", json!({"scope": "api.read api.write"}), "&scope=api.write", "api.write"),
        ] {
            let x = exchange(&t, &format!("{}{asked}", grant(&with(sub, extra.clone())))).await;
            assert_eq!(x.status, 200, "{extra}: {}", x.text());
            assert_eq!(x.json()["scope"], scope, "{extra}");
            let who = t.get("/api/whoami", Some(x.json()["access_token"].as_str().unwrap_or_default())).await;
            assert_eq!(who.json()["scopes"], json!(scope.split(' ').collect::<Vec<_>>()), "{extra}");
        }
        let before = t.stats().await;
        let x = exchange(&t, &format!("{}&scope=api.write", grant(&with("erin", json!({"scope": "api.read"})))))
            .await;
        assert_eq!((x.status.as_u16(), x.code()), (400, "invalid_scope".to_owned()), "{}", x.text());
        for (extra, code) in [
            (json!({"scope": "admin.all"}), "invalid_scope"),
            (json!({"scope": ["api.read"]}), "invalid_scope"),
            (json!({"resource": "https://other.example/api/"}), "invalid_target"),
            (json!({"resource": ["https://other.example/api/"]}), "invalid_target"),
            (json!({"resource": 7}), "invalid_target"),
        ] {
            let x = exchange(&t, &grant(&with("erin", extra.clone()))).await;
            assert_eq!((x.status.as_u16(), x.code()), (400, code.to_owned()), "{extra}: {}", x.text());
        }
        let after = t.stats().await;
        assert_eq!((after.registrations, after.credentials), (before.registrations, before.credentials),
            "a refused grant wrote nothing");
    }
}

/// Hostile and malformed token requests: RFC 6749 §5.2 codes, never a
/// 500, never cached.
#[tokio::test]
async fn token_endpoint_refuses_bad_requests() {
    let t = TestApp::new(Backend::Sqlite, ON).await;
    let b = identity(&t, r#"{"type":"anonymous"}"#).await.json();
    let assertion = b["identity"]["assertion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut tampered = assertion.clone();
    let last = tampered
        .pop()
        .map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
    tampered.push(last);
    let (h, c) = assertion.split_once('.').map_or(("", ""), |(h, rest)| {
        (h, rest.split('.').next().unwrap_or_default())
    });
    let mut claims = decode(c);
    claims["registration_status"] = json!("claimed");
    let forged_payload = authmd_jose::b64::encode(claims.to_string());
    let sig = assertion.rsplit('.').next().unwrap_or_default();
    let forged = format!("{h}.{forged_payload}.{sig}");
    let cases: Vec<(String, u16, &str)> = vec![
        (format!("assertion={assertion}"), 400, "invalid_request"),
        (
            format!("grant_type=authorization_code&assertion={assertion}"),
            400,
            "unsupported_grant_type",
        ),
        (
            format!(
                "grant_type=urn%3Aworkos%3Aagent-auth%3Agrant-type%3Aclaim&assertion={assertion}"
            ),
            400,
            "unsupported_grant_type",
        ),
        (
            format!("grant_type={}", urlencode(JWT_BEARER)),
            400,
            "invalid_request",
        ),
        (grant("not-a-jwt"), 400, "invalid_grant"),
        (grant(&tampered), 400, "invalid_grant"),
        (grant(&forged), 400, "invalid_grant"),
        (
            format!(
                "{}&resource={}",
                grant(&assertion),
                urlencode("https://evil.example/api/")
            ),
            400,
            "invalid_target",
        ),
        (
            format!(
                "{}&resource={}",
                grant(&assertion),
                urlencode("http://127.0.0.1:8080/api")
            ),
            400,
            "invalid_target",
        ),
        (
            format!("{}&grant_type={}", grant(&assertion), urlencode(JWT_BEARER)),
            400,
            "invalid_request",
        ),
        // RFC 6749 §3.3: less than the grant may be asked, never more.
        (
            format!("{}&scope=api.write", grant(&assertion)),
            400,
            "invalid_scope",
        ),
        (grant(&"a".repeat(20_000)), 413, "invalid_request"),
        // RFC 6749 §3.1: a parameter without a value is as if omitted.
        (
            format!("grant_type=&assertion={assertion}"),
            400,
            "invalid_request",
        ),
        // RFC 8707 §2: resource may repeat; another resource is not ours.
        (
            format!(
                "{}&resource={}&resource={}",
                grant(&assertion),
                urlencode("http://127.0.0.1:8080/api/"),
                urlencode("https://evil.example/api/")
            ),
            400,
            "invalid_target",
        ),
    ];
    for (form, status, code) in cases {
        let r = exchange(&t, &form).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (status, code),
            "{form:.80}: {}",
            r.text()
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{form:.80}");
        assert!(r.json()["error_description"].is_string());
    }
    // JSON is not a token request.
    let r = t
        .post_json(
            "/oauth2/token",
            &json!({"grant_type": JWT_BEARER, "assertion": assertion}).to_string(),
        )
        .await;
    assert_eq!(r.code(), "invalid_request");
    // An upstream identity assertion (another typ, aud) is not a grant.
    assert_eq!(
        exchange(&t, &grant(&assertion)).await.status,
        200,
        "the genuine one still works"
    );
    // Empty parameters are as if omitted (RFC 6749 §3.1), and the resource
    // given twice, the same, is that resource (RFC 8707 §2).
    let resource = urlencode("http://127.0.0.1:8080/api/");
    for form in [
        format!("{}&scope=&resource=", grant(&assertion)),
        format!(
            "{}&resource={resource}&resource={resource}",
            grant(&assertion)
        ),
        format!("{}&scope=api.read", grant(&assertion)),
        format!("{}&scope=api.read+api.write", grant(&assertion)),
    ] {
        let r = exchange(&t, &form).await;
        assert_eq!(r.status, 200, "{form:.80}: {}", r.text());
        assert_eq!(
            r.json()["scope"],
            "api.read",
            "{form:.80}: never more than the grant"
        );
    }
}

/// Off, the current dialect's endpoints refuse (and nothing is published).
#[tokio::test]
async fn current_dialect_off_refuses() {
    let t = TestApp::new(Backend::Sqlite, "[dialects.current]\nenabled = false\n").await;
    let r = identity(&t, r#"{"type":"anonymous"}"#).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "anonymous_registration_disabled")
    );
    let r = exchange(&t, &grant("x.y.z")).await;
    assert_eq!(r.code(), "unsupported_grant_type");
}

/// Bodies the union does not know: `invalid_request`, counted as refusals.
#[tokio::test]
async fn identity_endpoint_refuses_bad_bodies() {
    let t = TestApp::new(Backend::Sqlite, ON).await;
    for body in [
        "",
        "{",
        "[]",
        r#"{}"#,
        r#"{"type":"bogus"}"#,
        r#"{"type":7}"#,
    ] {
        let r = identity(&t, body).await;
        assert_eq!(
            (r.status.as_u16(), r.code().as_str()),
            (400, "invalid_request"),
            "{body}: {}",
            r.text()
        );
        assert!(r.json()["message"].is_string());
    }
    // ID-JAGs without a trusted provider: this dialect's code.
    let r = identity(&t, &id_jag_body("x.y.z")).await;
    assert_eq!(r.code(), "issuer_not_enabled");
    let r = t
        .send(crate::support::request(
            axum::http::Method::POST,
            "/agent/identity",
            None,
            Some(("text/plain", br#"{"type":"anonymous"}"#.to_vec())),
        ))
        .await;
    assert_eq!(r.code(), "invalid_request", "no content type");
}

/// The anonymous flow's rate limits are the original dialect's (one
/// bucket), answered in this dialect's words.
#[tokio::test]
async fn rate_limits_are_shared_and_renamed() {
    let t = TestApp::new(
        Backend::Sqlite,
        &format!("{ON}[rate_limits]\nanonymous_per_ip_per_hour = 2\n"),
    )
    .await;
    t.register_anonymous().await;
    assert_eq!(identity(&t, r#"{"type":"anonymous"}"#).await.status, 200);
    let r = identity(&t, r#"{"type":"anonymous"}"#).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (429, "rate_limit_exceeded")
    );
    assert!(r.json()["retry_after"].as_u64().is_some_and(|s| s > 0));
    assert!(r.header("retry-after").is_some());
}

both_backends! {
    /// §9: the access tokens one registration gets for authmd's own
    /// assertions are limited (each is a credential written, and an
    /// assertion exchanges for its whole hour). Over the limit: 429
    /// `rate_limit_exceeded` (the dialect's name) with `Retry-After` and
    /// `retry_after`, and nothing written; the bucket is the
    /// registration's, so another registration is not affected.
    async fn exchanges_per_registration_are_limited(backend: Backend) {
        let t = TestApp::new(
            backend,
            &format!("{ON}[rate_limits]\ntoken_exchanges_per_registration_per_hour = 2\n"),
        )
        .await;
        let assertion_of = |r: &crate::support::TestResponse| {
            r.json()["identity"]["assertion"].as_str().unwrap_or_default().to_owned()
        };
        let first = assertion_of(&identity(&t, r#"{"type":"anonymous"}"#).await);
        let other = assertion_of(&identity(&t, r#"{"type":"anonymous"}"#).await);
        for _ in 0..2 {
            let r = exchange(&t, &grant(&first)).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        let credentials = t.db.rows("credentials").await;
        let events = t.events("token.exchanged").await.len();
        let r = exchange(&t, &grant(&first)).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (429, "rate_limit_exceeded"), "{}", r.text());
        let secs = r.header("retry-after").and_then(|s| s.parse::<u64>().ok());
        assert!(secs.is_some_and(|s| s > 0), "{}", r.text());
        assert_eq!(r.json()["retry_after"].as_u64(), secs);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(t.db.rows("credentials").await, credentials, "nothing written");
        assert_eq!(t.events("token.exchanged").await.len(), events);
        let r = exchange(&t, &grant(&other)).await;
        assert_eq!(r.status, 200, "another registration's bucket: {}", r.text());
    }
}

fn set_token(
    k: &authmd_jose::SigningKey,
    typ: &str,
    claims: &serde_json::Map<String, Value>,
) -> String {
    let mut h = serde_json::Map::new();
    h.insert("typ".into(), typ.into());
    authmd_jose::jws::sign(k, &h, claims).expect("sign")
}

async fn notify(t: &TestApp, media: &str, token: &str) -> crate::support::TestResponse {
    t.send(crate::support::request(
        axum::http::Method::POST,
        "/agent/event/notify",
        None,
        Some((media, token.as_bytes().to_vec())),
    ))
    .await
}

both_backends! {
    /// A provider's security event (RFC 8417/8935) revokes like a logout
    /// token, through the same verification and transaction: the
    /// subject's access tokens die, its assertions stop exchanging, and a
    /// replay or a forged event is refused with RFC 8935's codes.
    async fn security_events_revoke_like_logout_tokens(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &trusting(&[server.issuer()], ON)).await;
        let asm = t.get("/.well-known/oauth-authorization-server", None).await.json();
        assert_eq!(asm["agent_auth"]["events_endpoint"], format!("{ISSUER}/agent/event/notify"));
        // alice: registered in the current dialect, exchanged; and directly.
        let b = identity(&t, &id_jag_body(&mint(&k, &[], &fresh(server.issuer(), "alice")))).await.json();
        let assertion = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let x = exchange(&t, &grant(&assertion)).await.json();
        let access = x["access_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 200);
        // bob is untouched by alice's event.
        let bob = exchange(&t, &grant(&mint(&k, &[], &fresh(server.issuer(), "bob")))).await.json();
        let bob = bob["access_token"].as_str().unwrap_or_default().to_owned();

        let event = crate::revoke::logout_claims(server.issuer(), "alice");
        let mut no_exp = event.clone();
        no_exp.remove("exp");
        // Refusals first: nothing is revoked by any.
        let other = key(Algorithm::Es256, "k1");
        let cases: Vec<(String, &str, &str)> = vec![
            (set_token(&k, "secevent+jwt", &event), "application/json", "invalid_request"),
            (set_token(&k, "logout+jwt", &event), "application/secevent+jwt", "invalid_request"),
            (set_token(&other, "secevent+jwt", &event), "application/secevent+jwt", "authentication_failed"),
            (set_token(&k, "secevent+jwt", &crate::revoke::with(event.clone(), "aud", json!("https://elsewhere.example"))), "application/secevent+jwt", "invalid_audience"),
            (set_token(&k, "secevent+jwt", &crate::revoke::with(event.clone(), "iss", json!("https://stranger.example"))), "application/secevent+jwt", "invalid_issuer"),
            (set_token(&k, "secevent+jwt", &crate::revoke::with(event.clone(), "events", json!({}))), "application/secevent+jwt", "invalid_request"),
            (set_token(&k, "secevent+jwt", &crate::revoke::with(crate::revoke::with(event.clone(), "iat", json!(now_secs() - 3700)), "exp", json!(now_secs() - 3600))), "application/secevent+jwt", "authentication_failed"),
            ("not a jwt".into(), "application/secevent+jwt", "invalid_request"),
        ];
        for (token, media, err) in cases {
            let r = notify(&t, media, &token).await;
            assert_eq!((r.status.as_u16(), r.json()["err"].as_str().unwrap_or_default()), (400, err), "{}", r.text());
            assert!(r.json()["description"].is_string());
        }
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 200);

        // An event of another kind: accepted, nothing happens.
        let other_event = crate::revoke::with(event.clone(), "events", json!({"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}}));
        let r = notify(&t, "application/secevent+jwt", &set_token(&k, "secevent+jwt", &other_event)).await;
        assert_eq!(r.status, 202);
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 200);

        // The revocation, as the reference's provider mints it (no exp).
        let set = set_token(&k, "secevent+jwt", &no_exp);
        let r = notify(&t, "application/secevent+jwt", &set).await;
        assert_eq!(r.status, 202, "{}", r.text());
        assert!(r.body.is_empty());
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 401);
        assert_eq!(exchange(&t, &grant(&assertion)).await.code(), "invalid_grant");
        assert_eq!(t.get("/api/whoami", Some(&bob)).await.status, 200);
        let revoked = t.events("registration.revoked").await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].data["by"], "provider");
        // A replay: refused.
        let r = notify(&t, "application/secevent+jwt", &set).await;
        assert_eq!(r.json()["err"], "invalid_request");
        // The same subject registers again with a fresh ID-JAG: a new id.
        let again = identity(&t, &id_jag_body(&mint(&k, &[], &fresh(server.issuer(), "alice")))).await.json();
        assert_ne!(again["id"], b["id"]);
        assert_eq!(exchange(&t, &grant(again["identity"]["assertion"].as_str().unwrap_or_default())).await.status, 200);
    }
}

/// Tokens authmd signs for other purposes, or forged ones, are never a
/// grant: the identity assertion it sends to the API behind it (another
/// `typ` and `aud`), an assertion with `alg: none`, one re-signed with a
/// key that is not authmd's, and authmd's own assertion presented as an
/// ID-JAG at the identity endpoint (its issuer is no trusted provider).
#[tokio::test]
async fn other_tokens_are_not_grants() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    let t = TestApp::new(Backend::Sqlite, &trusting(&[server.issuer()], ON)).await;
    let b = identity(&t, r#"{"type":"anonymous"}"#).await.json();
    let assertion = b["identity"]["assertion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let access = exchange(&t, &grant(&assertion)).await.json()["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let now = authmd::Timestamp::now();
    let authmd::validation::Validation::Valid(record) = t
        .app
        .validate(Some(&access), now)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    else {
        panic!("the access token is valid");
    };
    let upstream = t
        .app
        .told(&record, true, now)
        .unwrap_or_else(|e| panic!("{e}"))
        .assertion
        .unwrap_or_else(|| panic!("an assertion was asked for"));
    let r = exchange(&t, &grant(&upstream)).await;
    assert_eq!(r.code(), "invalid_grant", "an upstream identity assertion");

    let (_, c) = parts(&assertion);
    let c = c.as_object().cloned().unwrap_or_default();
    let none = crate::provider::raw_token(
        r#"{"alg":"none","typ":"oauth-id-jag+jwt"}"#,
        &Value::Object(c.clone()).to_string(),
        b"",
    );
    assert_eq!(
        exchange(&t, &grant(&none)).await.code(),
        "invalid_grant",
        "alg none"
    );
    let kid = parts(&assertion).0["kid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let stranger = key(Algorithm::Es256, &kid);
    let resigned = authmd_jose::jws::sign(
        &stranger,
        &json!({"typ": "oauth-id-jag+jwt"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        &c,
    )
    .expect("sign");
    assert_eq!(
        exchange(&t, &grant(&resigned)).await.code(),
        "invalid_grant",
        "a stranger's key with our kid"
    );

    let r = identity(&t, &id_jag_body(&assertion)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_issuer")
    );
    // Nothing above issued anything.
    assert_eq!(t.events("token.exchanged").await.len(), 1);
}
