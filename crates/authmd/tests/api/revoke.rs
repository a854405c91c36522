//! Revocation by the provider (docs/protocol.md §5): logout tokens in both
//! encodings, the hostile catalogue L1–L30 (standards checklist §2.2) with
//! nothing revoked by any of them, the must-accept cases OK5–OK8, isolation
//! between providers, stale tokens, and registering again afterwards.

use authmd::revoke::{BACKCHANNEL_LOGOUT_EVENT, REVOKED_EVENT};
use authmd_jose::{Algorithm, SigningKey, b64};
use axum::http::Method;
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint, now_secs, raw_token, sign_raw};
use crate::support::{Backend, TestApp, TestResponse, form_request, request};

const AUD: &str = "http://127.0.0.1:8080";

/// The claims of a good logout token, in the reference's shape plus `exp`.
pub fn logout_claims(iss: &str, sub: &str) -> Map<String, Value> {
    let now = now_secs();
    json!({
        "iss": iss,
        "sub": sub,
        "aud": AUD,
        "jti": authmd::token::new_id("lo_"),
        "iat": now,
        "exp": now + 120,
        "events": { REVOKED_EVENT: {} },
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Signs `claims` as a logout token (`typ: logout+jwt`) plus `header` members.
pub fn mint_logout(
    k: &SigningKey,
    header: &[(&str, Value)],
    claims: &Map<String, Value>,
) -> String {
    let mut h = Map::new();
    h.insert("typ".into(), "logout+jwt".into());
    for (name, v) in header {
        h.insert((*name).to_owned(), v.clone());
    }
    authmd_jose::jws::sign(k, &h, claims).expect("sign")
}

pub async fn post_logout(t: &TestApp, token: &str) -> TestResponse {
    t.send(request(
        Method::POST,
        "/agent/auth/revoke",
        None,
        Some(("application/logout+jwt", token.as_bytes().to_vec())),
    ))
    .await
}

pub fn with(mut c: Map<String, Value>, k: &str, v: Value) -> Map<String, Value> {
    c.insert(k.to_owned(), v);
    c
}

fn without(mut c: Map<String, Value>, k: &str) -> Map<String, Value> {
    c.remove(k);
    c
}

fn j(v: &Map<String, Value>) -> String {
    Value::Object(v.clone()).to_string()
}

/// Registers `sub` through the provider `iss` and returns the credential.
async fn register(t: &TestApp, k: &SigningKey, iss: &str, sub: &str) -> String {
    let r = t
        .post_json(
            "/agent/auth",
            &body(&mint(k, &[], &claims(iss, AUD, sub)), "api_key"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn works(t: &TestApp, credential: &str) -> bool {
    let r = t.get("/api/whoami", Some(credential)).await;
    assert!(r.status == 200 || r.status == 401, "{}", r.text());
    r.status == 200
}

async fn setup(backend: Backend) -> (TestApp, JwksServer, SigningKey) {
    let a = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    a.set_keys(&[&k]);
    let t = TestApp::new(
        backend,
        &format!("[[providers]]\nissuer = \"{}\"\n", a.issuer()),
    )
    .await;
    (t, a, k)
}

both_backends! {
    async fn a_logout_token_revokes_the_subjects_credentials_at_once(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        let first = register(&t, &k, &iss, "alice").await;
        let second = register(&t, &k, &iss, "alice").await;
        let bob = register(&t, &k, &iss, "bob").await;
        assert!(works(&t, &first).await && works(&t, &second).await);

        let r = post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "alice"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"revoked": 2}));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert!(!works(&t, &first).await, "revoked at once on this replica");
        assert!(!works(&t, &second).await);
        assert!(works(&t, &bob).await, "another subject is untouched");

        let revoked = t.events("registration.revoked").await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].data["iss"], iss.as_str());
        assert_eq!(revoked[0].data["sub"], "alice");
        assert_eq!(revoked[0].data["by"], "provider");
        assert_eq!(revoked[0].data["credentials_revoked"], 2);
        assert!(revoked[0].data["registration_id"].as_str().is_some());
        let delegations = t
            .app
            .store()
            .list_delegations(&authmd::store::DelegationFilter { sub: Some("alice".into()), ..Default::default() })
            .await
            .expect("delegations");
        assert_eq!(delegations[0].state, "revoked", "the delegation is marked revoked");

        // A later, fresh ID-JAG registers again: the provider consented again.
        let again = register(&t, &k, &iss, "alice").await;
        assert!(works(&t, &again).await);
        let who = t.get("/api/whoami", Some(&again)).await.json();
        assert_ne!(who["registration_id"], revoked[0].data["registration_id"], "a new registration");
        let delegations = t
            .app
            .store()
            .list_delegations(&authmd::store::DelegationFilter { sub: Some("alice".into()), ..Default::default() })
            .await
            .expect("delegations");
        assert_eq!(delegations[0].state, "active");
    }
}

both_backends! {
    async fn both_encodings_and_both_event_names_are_accepted(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        // The standard back-channel form, with the OpenID event and extra
        // form fields (ignored, BCL §2.5, OK11).
        let c1 = register(&t, &k, &iss, "u1").await;
        let token = mint_logout(&k, &[], &with(logout_claims(&iss, "u1"), "events", json!({BACKCHANNEL_LOGOUT_EVENT: {}})));
        let r = t.send(form_request("/agent/auth/revoke", &format!("foo=bar&logout_token={token}&state=x"))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &c1).await);

        // The reference implementation's own shape: no exp, WorkOS event.
        let c2 = register(&t, &k, &iss, "u2").await;
        let reference = without(logout_claims(&iss, "u2"), "exp");
        let r = post_logout(&t, &mint_logout(&k, &[], &reference)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &c2).await);

        // typ application/logout+jwt; media type with parameters and case.
        let c3 = register(&t, &k, &iss, "u3").await;
        let token = mint_logout(&k, &[("typ", "application/logout+jwt".into())], &logout_claims(&iss, "u3"));
        let r = t.send(request(Method::POST, "/agent/auth/revoke", None,
            Some(("Application/Logout+JWT; charset=utf-8", format!("{token}\r\n").into_bytes())))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &c3).await);
    }
}

both_backends! {
    async fn hostile_logout_tokens_are_refused_and_revoke_nothing(backend: Backend) {
        // Provider A (trusted), provider B (trusted, same kid), an attacker
        // whose JWKS must never be asked for anything.
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let attacker = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "k1");
        let kb = key(Algorithm::Es256, "k1");
        let evil = key(Algorithm::Es256, "evil");
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        attacker.set_keys(&[&evil]);
        let t = TestApp::new(backend, &format!(
            "[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\n", a.issuer(), b.issuer()
        )).await;
        let ia = a.issuer().to_owned();
        let victim = register(&t, &ka, &ia, "victim").await;
        let before = t.stats().await;
        let good = || logout_claims(&ia, "victim");
        let sign = |h: &[(&str, Value)], c: &Map<String, Value>| mint_logout(&ka, h, c);
        let now = now_secs();
        let header = r#"{"typ":"logout+jwt","alg":"ES256","kid":"k1"}"#;
        let hmac_with_public_key = {
            let h = r#"{"typ":"logout+jwt","alg":"HS256","kid":"k1"}"#;
            let input = format!("{}.{}", b64::encode(h), b64::encode(j(&good())));
            let secret = ka.public_jwk().to_string();
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
            format!("{input}.{}", b64::encode(aws_lc_rs::hmac::sign(&key, input.as_bytes())))
        };
        let id_token = sign_raw(&ka, r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#,
            &j(&without(with(with(good(), "nonce", "n-1".into()), "aud", "client-1".into()), "events")));
        let id_jag = mint(&ka, &[], &claims(&ia, AUD, "victim"));
        let jwe = "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d".to_owned();

        let cases: Vec<(&str, String, &str)> = vec![
            ("L1 alg none", raw_token(r#"{"typ":"logout+jwt","alg":"none","kid":"k1"}"#, &j(&good()), b""), "invalid_signature"),
            ("L2 HS256 keyed with the public key", hmac_with_public_key, "invalid_signature"),
            ("L3 unknown key, known kid", mint_logout(&key(Algorithm::Es256, "k1"), &[], &good()), "invalid_signature"),
            ("L3 unknown kid", mint_logout(&evil, &[], &good()), "invalid_signature"),
            ("L3 iss A signed with B's key", mint_logout(&kb, &[], &good()), "invalid_signature"),
            ("L4 nonce", sign(&[], &with(good(), "nonce", "n".into())), "invalid_logout_token"),
            ("L5 events missing", sign(&[], &without(good(), "events")), "invalid_logout_token"),
            ("L6 only a RISC event", sign(&[], &with(good(), "events", json!({"https://schemas.openid.net/secevent/risc/event-type/account-disabled": {}}))), "invalid_logout_token"),
            ("L7 member true", sign(&[], &with(good(), "events", json!({BACKCHANNEL_LOGOUT_EVENT: true}))), "invalid_logout_token"),
            ("L7 member \"\"", sign(&[], &with(good(), "events", json!({REVOKED_EVENT: ""}))), "invalid_logout_token"),
            ("L7 member null", sign(&[], &with(good(), "events", json!({REVOKED_EVENT: null}))), "invalid_logout_token"),
            ("L7 member []", sign(&[], &with(good(), "events", json!({REVOKED_EVENT: []}))), "invalid_logout_token"),
            ("L8 events an array", sign(&[], &with(good(), "events", json!([REVOKED_EVENT]))), "invalid_logout_token"),
            ("L8 events a string", sign(&[], &with(good(), "events", REVOKED_EVENT.into())), "invalid_logout_token"),
            ("L9 neither sub nor sid", sign(&[], &without(good(), "sub")), "invalid_logout_token"),
            ("L9 sub empty", sign(&[], &with(good(), "sub", "".into())), "invalid_logout_token"),
            ("L9 sub a number", sign(&[], &with(good(), "sub", 7.into())), "invalid_logout_token"),
            ("L10 exp missing and iat older than 5 minutes", sign(&[], &with(without(good(), "exp"), "iat", (now - 600).into())), "expired"),
            ("L11 exp in the past", sign(&[], &with(with(good(), "iat", (now - 600).into()), "exp", (now - 300).into())), "expired"),
            ("L11 exp not a number", sign(&[], &with(good(), "exp", "soon".into())), "invalid_logout_token"),
            ("L12 iat missing", sign(&[], &without(good(), "iat")), "invalid_logout_token"),
            ("L12 iat a string", sign(&[], &with(good(), "iat", now.to_string().into())), "invalid_logout_token"),
            ("L13 iat far in the future", sign(&[], &with(with(good(), "iat", (now + 3600).into()), "exp", (now + 3700).into())), "invalid_logout_token"),
            ("L13 exp - iat beyond 10 minutes", sign(&[], &with(good(), "exp", (now + 3600).into())), "invalid_logout_token"),
            ("L14 jti missing", sign(&[], &without(good(), "jti")), "invalid_logout_token"),
            ("L14 jti empty", sign(&[], &with(good(), "jti", "".into())), "invalid_logout_token"),
            ("L16 aud another service", sign(&[], &with(good(), "aud", "https://other.example".into())), "invalid_audience"),
            ("L16 aud ours plus an untrusted one", sign(&[], &with(good(), "aud", json!([AUD, "untrusted"]))), "invalid_audience"),
            ("L16 aud missing", sign(&[], &without(good(), "aud")), "invalid_audience"),
            ("L17 iss untrusted", mint_logout(&evil, &[], &with(good(), "iss", attacker.issuer().into())), "invalid_issuer"),
            ("L17 iss with a trailing slash", sign(&[], &with(good(), "iss", format!("{ia}/").into())), "invalid_issuer"),
            ("L17 iss upper-case", sign(&[], &with(good(), "iss", ia.to_uppercase().into())), "invalid_issuer"),
            ("L18 typ oauth-id-jag+jwt", sign(&[("typ", "oauth-id-jag+jwt".into())], &good()), "invalid_logout_token"),
            ("L18 typ at+jwt", sign(&[("typ", "at+jwt".into())], &good()), "invalid_logout_token"),
            ("L18 a valid ID-JAG", id_jag, "invalid_logout_token"),
            ("L19 no typ", sign_raw(&ka, r#"{"alg":"ES256","kid":"k1"}"#, &j(&good())), "invalid_logout_token"),
            ("L19 typ JWT", sign(&[("typ", "JWT".into())], &good()), "invalid_logout_token"),
            ("L20 an ID token", id_token, "invalid_logout_token"),
            ("L24 JWE", jwe, "invalid_request"),
            ("L25 crit unknown", sign(&[("crit", json!(["urn:x:unknown"])), ("urn:x:unknown", true.into())], &good()), "invalid_signature"),
            ("L26 jku to the attacker", mint_logout(&evil, &[("jku", format!("{}/.well-known/jwks.json", attacker.issuer()).into())], &good()), "invalid_signature"),
            ("L26 embedded jwk", mint_logout(&evil, &[("jwk", evil.public_jwk())], &good()), "invalid_signature"),
            ("L26 x5u", mint_logout(&evil, &[("x5u", format!("{}/cert.pem", attacker.issuer()).into())], &good()), "invalid_signature"),
            ("L26 x5c", mint_logout(&evil, &[("x5c", json!(["MIIBszCCAVmgAwIBAgIUJ"]))], &good()), "invalid_signature"),
            ("L27 duplicate sub", sign_raw(&ka, header, &j(&good()).replacen('{', "{\"sub\":\"someone-else\",", 1)), "invalid_request"),
            ("L27 duplicate typ header", sign_raw(&ka, r#"{"typ":"logout+jwt","alg":"ES256","kid":"k1","typ":"JWT"}"#, &j(&good())), "invalid_request"),
            ("L27 not a JWS", "not-a-token".into(), "invalid_request"),
        ];
        assert!(cases.len() >= 45, "the catalogue shrank");
        for (name, token, code) in &cases {
            for form in [false, true] {
                let r = if form {
                    t.send(form_request("/agent/auth/revoke", &format!("logout_token={token}"))).await
                } else {
                    post_logout(&t, token).await
                };
                assert_eq!((r.status.as_u16(), r.code().as_str()), (400, *code), "{name} (form: {form}): {}", r.text());
                assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
                assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()), "{name}");
            }
        }
        assert_eq!(attacker.hits(), 0, "an attacker's URL or JWKS was fetched");

        // L21–L23, L28: the request itself.
        let form = |body: &str| form_request("/agent/auth/revoke", body);
        let raw = |ct: &str, body: Vec<u8>| request(Method::POST, "/agent/auth/revoke", None, Some((ct, body)));
        let valid = sign(&[], &good());
        let requests: Vec<(&str, axum::http::Request<axum::body::Body>, u16, &str)> = vec![
            ("L21 no logout_token", form("foo=bar"), 400, "invalid_request"),
            ("L21 empty logout_token", form("logout_token="), 400, "invalid_request"),
            ("L21 empty body", raw("application/logout+jwt", Vec::new()), 400, "invalid_request"),
            ("L22 JSON body", raw("application/json", json!({"logout_token": valid}).to_string().into_bytes()), 400, "invalid_request"),
            ("L22 in the query string only", request(Method::POST, &format!("/agent/auth/revoke?logout_token={valid}"), None, Some(("application/x-www-form-urlencoded", Vec::new()))), 400, "invalid_request"),
            ("L22 application/jwt", raw("application/jwt", valid.clone().into_bytes()), 400, "invalid_request"),
            ("L22 no content type", request(Method::POST, "/agent/auth/revoke", None, None), 400, "invalid_request"),
            ("L23 two logout_token fields", form(&format!("logout_token={valid}&logout_token={valid}")), 400, "invalid_request"),
            ("L28 1 MB body", raw("application/logout+jwt", vec![b'a'; 1 << 20]), 413, "invalid_request"),
            ("L28 17 KiB token", raw("application/logout+jwt", sign(&[], &with(good(), "pad", "p".repeat(17 * 1024).into())).into_bytes()), 400, "invalid_request"),
            ("body not UTF-8", raw("application/logout+jwt", vec![0xff, 0xfe]), 400, "invalid_request"),
        ];
        for (name, req, status, code) in requests {
            let r = t.send(req).await;
            assert_eq!((r.status.as_u16(), r.code().as_str()), (status, code), "{name}: {}", r.text());
        }
        let r = t.get("/agent/auth/revoke", None).await;
        assert_eq!(r.status, 405, "L22 GET");

        // Nothing was revoked, nothing was recorded, no jti was spent.
        assert!(works(&t, &victim).await, "a hostile token revoked the credential");
        assert!(t.events("registration.revoked").await.is_empty());
        assert!(t.events("credential.revoked").await.is_empty());
        assert_eq!(t.stats().await, before);
        let r = post_logout(&t, &valid).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &victim).await);
    }
}

both_backends! {
    async fn l15_a_replayed_token_is_refused_and_has_no_effect(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        register(&t, &k, &iss, "alice").await;
        let token = mint_logout(&k, &[], &logout_claims(&iss, "alice"));
        assert_eq!(post_logout(&t, &token).await.status, 200);
        // The user consents again; the old token replayed must not end it.
        let again = register(&t, &k, &iss, "alice").await;
        let r = post_logout(&t, &token).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "replay_detected"), "{}", r.text());
        let r = t.send(form_request("/agent/auth/revoke", &format!("logout_token={token}"))).await;
        assert_eq!(r.code(), "replay_detected", "the form encoding shares the replay table");
        assert!(works(&t, &again).await);
        assert_eq!(t.events("registration.revoked").await.len(), 1);
    }
}

both_backends! {
    async fn l29_revoking_provider_a_leaves_provider_b_alone(backend: Backend) {
        // The same person (same verified email) through two providers, and
        // B's subject id reused in A's token.
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "ka");
        let kb = key(Algorithm::Es256, "kb");
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        let t = TestApp::new(backend, &format!(
            "[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\n", a.issuer(), b.issuer()
        )).await;
        let via_a = register(&t, &ka, a.issuer(), "alice").await;
        let via_b = register(&t, &kb, b.issuer(), "alice").await;
        let via_b_other = register(&t, &kb, b.issuer(), "b-only-subject").await;
        let same_user = |c: &str| {
            let t = &t;
            let c = c.to_owned();
            async move { t.get("/api/whoami", Some(&c)).await.json()["user"]["id"].clone() }
        };
        assert_eq!(same_user(&via_a).await, same_user(&via_b).await, "one user, two delegations");

        // A names B's subject: 200, nothing of B's is touched.
        let r = post_logout(&t, &mint_logout(&ka, &[], &logout_claims(a.issuer(), "b-only-subject"))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 0})), "{}", r.text());
        assert!(works(&t, &via_b_other).await);

        // A revokes its own alice: B's alice keeps working.
        let r = post_logout(&t, &mint_logout(&ka, &[], &logout_claims(a.issuer(), "alice"))).await;
        assert_eq!(r.json(), json!({"revoked": 1}));
        assert!(!works(&t, &via_a).await);
        assert!(works(&t, &via_b).await, "provider B's credential for the same email must survive");
    }
}

both_backends! {
    async fn l30_a_stale_token_spares_credentials_issued_after_it(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        let old = register(&t, &k, &iss, "alice").await;
        // Minted three minutes ago (still acceptable), delivered late.
        let stale = with(logout_claims(&iss, "alice"), "iat", (now_secs() - 180).into());
        // Meanwhile an earlier logout ended the old credential and the user
        // consented again.
        let r = post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "alice"))).await;
        assert_eq!(r.json(), json!({"revoked": 1}));
        assert!(!works(&t, &old).await);
        let fresh = register(&t, &k, &iss, "alice").await;
        let r = post_logout(&t, &mint_logout(&k, &[], &stale)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 0})), "{}", r.text());
        assert!(works(&t, &fresh).await, "a stale logout must not end a newer credential");
    }
}

both_backends! {
    async fn assertions_minted_before_the_logout_no_longer_register(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        register(&t, &k, &iss, "alice").await;
        // Minted a minute before the logout, not used yet.
        let early = with(claims(&iss, AUD, "alice"), "iat", (now_secs() - 60).into());
        let early = mint(&k, &[], &early);
        assert_eq!(post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "alice"))).await.status, 200);
        let r = t.post_json("/agent/auth", &body(&early, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "expired"), "{}", r.text());
        // A fresh one (issued at or after the logout) registers.
        register(&t, &k, &iss, "alice").await;
    }
}

both_backends! {
    async fn must_not_reject_ok5_to_ok8(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        // OK5: unknown extra claims (and header members) are ignored.
        let c = register(&t, &k, &iss, "ok5").await;
        let extra = with(with(logout_claims(&iss, "ok5"), "x-unknown", json!({"a": [1, 2]})), "sid", "s-1".into());
        let r = post_logout(&t, &mint_logout(&k, &[("x-hint", "h".into())], &extra)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "OK5: {}", r.text());
        assert!(!works(&t, &c).await);
        // OK6: a non-empty object as the event's value.
        let c = register(&t, &k, &iss, "ok6").await;
        let r = post_logout(&t, &mint_logout(&k, &[], &with(logout_claims(&iss, "ok6"), "events", json!({BACKCHANNEL_LOGOUT_EVENT: {"foo": 1}})))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "OK6: {}", r.text());
        assert!(!works(&t, &c).await);
        // OK7: only sid (nothing here is keyed by session: 200, nothing
        // revoked), or only sub.
        let c = register(&t, &k, &iss, "ok7").await;
        let sid_only = with(without(logout_claims(&iss, "ok7"), "sub"), "sid", "session-1".into());
        let r = post_logout(&t, &mint_logout(&k, &[], &sid_only)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 0})), "OK7 sid: {}", r.text());
        assert!(works(&t, &c).await);
        let r = post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "ok7"))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "OK7 sub: {}", r.text());
        // OK8: already revoked, and never known.
        let r = post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "ok7"))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 0})), "OK8 revoked: {}", r.text());
        let r = post_logout(&t, &mint_logout(&k, &[], &logout_claims(&iss, "nobody"))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 0})), "OK8 unknown: {}", r.text());
        // OK4-like: exp a few seconds ago, within the skew.
        let c = register(&t, &k, &iss, "skew").await;
        let r = post_logout(&t, &mint_logout(&k, &[], &with(with(logout_claims(&iss, "skew"), "iat", (now_secs() - 30).into()), "exp", (now_secs() - 5).into()))).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &c).await);
    }
}

both_backends! {
    /// Issue 15, item 1: an ID-JAG minted before the user withdrew consent
    /// but redeemed before the (late) logout arrives yields a credential the
    /// logout must end: decided by the assertion's `iat`, not by when authmd
    /// issued the credential. An `api_key` made that way never expires.
    async fn a_late_logout_ends_credentials_from_assertions_minted_before_it(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        let now = now_secs();
        // Minted two minutes ago (before the logout), redeemed now.
        let early = mint(&k, &[], &with(with(claims(&iss, AUD, "alice"), "iat", (now - 120).into()), "exp", (now + 300).into()));
        let r = t.post_json("/agent/auth", &body(&early, "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let key = r.json()["credential"].as_str().unwrap_or_default().to_owned();
        let registration = r.json()["registration_id"].as_str().unwrap_or_default().to_owned();
        assert!(works(&t, &key).await);

        // The logout was minted 90 s ago (after the assertion, before the
        // redemption) and arrives only now.
        let late = with(logout_claims(&iss, "alice"), "iat", (now - 90).into());
        let r = post_logout(&t, &mint_logout(&k, &[], &late)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &key).await, "the withdrawn consent's key must stop working");

        // Nothing of the registration survives: it is revoked, and recorded.
        let revoked = t.events("registration.revoked").await;
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0].data["registration_id"], registration.as_str());
        let regs = t
            .app
            .store()
            .list_registrations(
                &authmd::store::RegistrationFilter { id: Some(registration.clone()), ..Default::default() },
                authmd::Timestamp::now(),
            )
            .await
            .expect("registrations");
        assert_eq!(regs[0].status, "revoked");
    }
}

both_backends! {
    /// Item 1, the other side: of two credentials in one registration, the
    /// one whose assertion predates the logout ends and the one the provider
    /// issued after consenting again survives; the registration stays.
    async fn a_logout_spares_credentials_from_assertions_minted_after_it(backend: Backend) {
        let (t, a, k) = setup(backend).await;
        let iss = a.issuer().to_owned();
        let now = now_secs();
        let early = mint(&k, &[], &with(claims(&iss, AUD, "alice"), "iat", (now - 200).into()));
        let r = t.post_json("/agent/auth", &body(&early, "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let old = r.json()["credential"].as_str().unwrap_or_default().to_owned();
        let fresh = register(&t, &k, &iss, "alice").await;
        // Minted 130 s ago: after the first assertion, and (even with the 60 s
        // skew) before the second.
        let logout = with(logout_claims(&iss, "alice"), "iat", (now - 130).into());
        let r = post_logout(&t, &mint_logout(&k, &[], &logout)).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"revoked": 1})), "{}", r.text());
        assert!(!works(&t, &old).await);
        assert!(works(&t, &fresh).await, "issued after the provider consented again");
        assert!(t.events("registration.revoked").await.is_empty());
        assert_eq!(t.events("credential.revoked").await.len(), 1);
    }
}
