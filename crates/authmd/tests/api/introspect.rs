//! Token introspection (RFC 7662) at `POST /oauth2/introspect`: what an
//! active credential says, that everything else says only
//! `{"active":false}`, that callers must authenticate and are throttled
//! when they fail, and that a revocation reaches introspection within the
//! same second as the API.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::Method;
use base64::Engine;
use serde_json::{Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint};
use crate::support::{Backend, TestApp, TestResponse, request};

pub const CLIENT_ID: &str = "gateway";
pub const SECRET: &str = "introspection-secret-0123456789abcdef";

fn sha256_hex(s: &str) -> String {
    authmd::token::SecretHash::of(s)
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A configuration with one introspection client (`gateway`), plus `extra`.
pub fn introspection_toml(extra: &str) -> String {
    format!(
        "{extra}\n[introspection]\nclients = [{{ id = \"{CLIENT_ID}\", secret_sha256 = \"{}\" }}]\n",
        sha256_hex(SECRET)
    )
}

pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// `POST /oauth2/introspect` with `authorization` (a whole header value)
/// and a form body.
pub async fn introspect_as(
    t: &TestApp,
    ip: IpAddr,
    authorization: Option<&str>,
    form: &str,
) -> TestResponse {
    let mut req = request(
        Method::POST,
        "/oauth2/introspect",
        None,
        Some((
            "application/x-www-form-urlencoded",
            form.as_bytes().to_vec(),
        )),
    );
    if let Some(a) = authorization {
        req.headers_mut()
            .insert("authorization", a.parse().expect("header"));
    }
    t.send_from(ip, req).await
}

/// Introspects `token` as the configured client.
pub async fn introspect(t: &TestApp, token: &str) -> TestResponse {
    let r = introspect_as(
        t,
        crate::support::CLIENT.into(),
        Some(&basic(CLIENT_ID, SECRET)),
        &format!("token={token}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    r
}

fn key_of(v: &Value) -> String {
    v["credential"].as_str().unwrap_or_default().to_owned()
}

fn assert_inactive(r: &TestResponse, what: &str) {
    assert_eq!(
        r.text(),
        r#"{"active":false}"#,
        "{what}: nothing else is said"
    );
}

both_backends! {
    /// Every member RFC 7662 §2.2 and the issue name, for an anonymous key:
    /// the registration is both the client and the subject, `exp` is the
    /// claim deadline (when the key dies unless claimed), no email.
    async fn an_active_key_is_described(backend: Backend) {
        let t = TestApp::new(backend, &introspection_toml("")).await;
        let reg = t.register_anonymous().await;
        let k = key_of(&reg);
        let r = introspect(&t, &k).await.json();
        let whoami = t.get("/api/whoami", Some(&k)).await.json();
        let reg_id = reg["registration_id"].as_str().unwrap_or_default();
        let deadline = authmd::Timestamp::parse_rfc3339(reg["claim_token_expires"].as_str().unwrap_or_default())
            .map(|t| t.as_secs());
        assert_eq!(r["active"], true);
        assert_eq!(r["scope"], "api.read");
        assert_eq!(r["client_id"], reg_id);
        assert_eq!(r["sub"], reg_id);
        assert_eq!(r["exp"].as_i64(), deadline);
        assert!(r["iat"].as_i64().is_some_and(|iat| (iat - crate::provider::now_secs()).abs() < 10));
        assert_eq!(r["iss"], "http://127.0.0.1:8080");
        assert_eq!(r["aud"], "http://127.0.0.1:8080/api/");
        assert_eq!(r["token_type"], "Bearer");
        assert_eq!(r["jti"], whoami["credential_id"]);
        assert_eq!(r["credential_type"], "api_key");
        assert_eq!(r["registration_type"], "anonymous");
        assert!(r.get("email").is_none(), "{r}");
    }
}

both_backends! {
    /// An agent-verified credential names its user as `sub` and passes on
    /// the email only when the provider verified it.
    async fn a_users_credential_names_the_user_and_only_a_verified_email(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let iss = server.issuer().to_owned();
        let t = TestApp::new(backend, &introspection_toml(&format!("[[providers]]\nissuer = \"{iss}\"\n"))).await;
        let aud = "http://127.0.0.1:8080";

        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(&iss, aud, "ada")), "access_token")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let token = key_of(&r.json());
        let expires = authmd::Timestamp::parse_rfc3339(r.json()["credential_expires"].as_str().unwrap_or_default());
        let who = t.get("/api/whoami", Some(&token)).await.json();
        let i = introspect(&t, &token).await.json();
        assert_eq!(i["active"], true);
        assert_eq!(i["sub"], who["user"]["id"]);
        assert_ne!(i["sub"], i["client_id"]);
        assert_eq!(i["email"], "ada@example.com");
        assert_eq!(i["credential_type"], "access_token");
        assert_eq!(i["registration_type"], "agent-provider");
        assert_eq!(i["scope"], "api.read api.write");
        assert_eq!(i["exp"].as_i64(), expires.map(|e| e.as_secs()));

        // Only the phone is verified: the email is not passed on.
        let mut c = claims(&iss, aud, "bob");
        c.insert("email_verified".into(), json!(false));
        c.insert("phone_number".into(), json!("+1 555 010 0000"));
        c.insert("phone_number_verified".into(), json!(true));
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &c), "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let i = introspect(&t, &key_of(&r.json())).await.json();
        assert_eq!(i["active"], true);
        assert!(i.get("email").is_none(), "unverified email leaked: {i}");
        assert!(i.get("exp").is_none(), "an api_key of a verified user does not expire: {i}");
    }
}

both_backends! {
    /// Unknown, made-up, malformed, revoked and expired tokens, and secrets
    /// that are not bearer credentials, all answer exactly
    /// `{"active":false}` (RFC 7662 §2.2): nothing tells a caller why.
    async fn anything_but_a_live_credential_is_only_inactive(backend: Backend) {
        let t = TestApp::new(backend, &introspection_toml("[ttl]\naccess_token = \"1s\"\n")).await;
        let reg = t.register_anonymous().await;
        let unknown = authmd::token::PlainSecret::generate(
            authmd::token::SecretKind::ApiKey,
            &authmd::token::new_id("crd_"),
        );
        let claim_token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        let garbage = "amd_sk_not-a-real-key";
        for (token, what) in [
            (unknown.expose(), "well-formed unknown key"),
            (garbage, "malformed"),
            (claim_token.as_str(), "a claim token"),
            ("%00%ff", "binary"),
        ] {
            assert_inactive(&introspect(&t, token).await, what);
        }
        let live = key_of(&reg);
        assert_eq!(introspect(&t, &live).await.json()["active"], true);
        let r = t.send(crate::support::form_request("/oauth2/revoke", &format!("token={live}"))).await;
        assert_eq!(r.status, 200);
        assert_inactive(&introspect(&t, &live).await, "revoked");
        // An access token past its expiry.
        let expired = {
            let db = std::sync::Arc::clone(&t.db);
            let server = JwksServer::start().await;
            let k = key(authmd_jose::Algorithm::Es256, "k1");
            server.set_keys(&[&k]);
            let toml = introspection_toml(&format!(
                "[ttl]\naccess_token = \"1s\"\n[[providers]]\nissuer = \"{}\"\n",
                server.issuer()
            ));
            let t2 = TestApp::on(db, &toml).await;
            let r = t2
                .post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), "http://127.0.0.1:8080", "eve")), "access_token"))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            key_of(&r.json())
        };
        assert_eq!(introspect(&t, &expired).await.json()["active"], true);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_inactive(&introspect(&t, &expired).await, "expired");
    }
}

/// `token_type_hint` never changes the answer (RFC 7662 §2.1: the server
/// searches every type; an unknown value is no error).
#[tokio::test]
async fn the_token_type_hint_is_ignored() {
    let t = TestApp::new(Backend::Sqlite, &introspection_toml("")).await;
    let k = key_of(&t.register_anonymous().await);
    let auth = basic(CLIENT_ID, SECRET);
    for hint in ["access_token", "refresh_token", "api_key", "bogus", ""] {
        let r = introspect_as(
            &t,
            crate::support::CLIENT.into(),
            Some(&auth),
            &format!("token={k}&token_type_hint={hint}"),
        )
        .await;
        assert_eq!(r.status, 200, "{hint}: {}", r.text());
        assert_eq!(r.json()["active"], true, "{hint}");
        let r = introspect_as(
            &t,
            crate::support::CLIENT.into(),
            Some(&auth),
            &format!("token=nope&token_type_hint={hint}"),
        )
        .await;
        assert_inactive(&r, hint);
    }
}

/// RFC 7662 §2.1, §4: no answer about any token without client
/// authentication; `401 invalid_client` with the Basic challenge (RFC 6749
/// §5.2), before the body is even read. The secret is compared as a hash;
/// both raw and form-encoded (RFC 6749 §2.3.1) Basic credentials work.
/// A failed authentication logs the client id only when it is a
/// configured one: a caller that swapped its id and its secret must not
/// put the secret in the log.
#[tokio::test]
async fn a_secret_sent_as_the_client_id_is_not_logged() {
    let (logs, _capture) = crate::support::Logs::capture();
    let t = TestApp::new(
        Backend::Sqlite,
        &introspection_toml("[rate_limits]\nenabled = false\n"),
    )
    .await;
    let ip = crate::support::CLIENT.into();
    for auth in [basic(SECRET, CLIENT_ID), basic(CLIENT_ID, "wrong-secret")] {
        let r = introspect_as(&t, ip, Some(&auth), "token=x").await;
        assert_eq!(r.status, 401);
    }
    let text = logs.text();
    assert!(
        text.contains("introspection client authentication failed"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "the secret was logged: {text}");
    assert!(text.contains("not a configured client"), "{text}");
    assert!(
        text.contains(&format!("{CLIENT_ID:?}")),
        "a known id is named: {text}"
    );
}

#[tokio::test]
async fn callers_must_authenticate_as_a_configured_client() {
    let t = TestApp::new(
        Backend::Sqlite,
        &introspection_toml("[rate_limits]\nenabled = false\n"),
    )
    .await;
    let k = key_of(&t.register_anonymous().await);
    let ip = crate::support::CLIENT.into();
    let form = format!("token={k}");
    for (auth, what) in [
        (None, "no Authorization"),
        (Some(basic(CLIENT_ID, "wrong-secret")), "wrong secret"),
        (Some(basic("someone-else", SECRET)), "unknown client"),
        (Some(basic(CLIENT_ID, "")), "empty secret"),
        (
            Some(format!("Bearer {k}")),
            "a bearer credential is not client authentication",
        ),
        (Some("Basic !!!not-base64".to_owned()), "malformed Basic"),
        (
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("no-colon")
            )),
            "no colon",
        ),
    ] {
        let r = introspect_as(&t, ip, auth.as_deref(), &form).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.code(), "invalid_client", "{what}");
        assert!(
            r.json()["error_description"].is_string(),
            "{what}: RFC 6749 §5.2 shape"
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"authmd\", charset=\"UTF-8\""),
            "{what}"
        );
        assert!(
            !r.text().contains(&k) && !r.text().contains("active"),
            "{what}"
        );
    }
    // A stranger's malformed body is not even parsed: still 401, not 400.
    let r = introspect_as(&t, ip, None, "token=a&token=b").await;
    assert_eq!(r.status, 401);
    // RFC 6749 §2.3.1 form-encoding of id and secret is accepted too.
    let encoded = basic("gateway", "introspection%2Dsecret%2D0123456789abcdef");
    assert_eq!(
        introspect_as(&t, ip, Some(&encoded), &form).await.json()["active"],
        true
    );
    // No client configured: the endpoint exists and refuses everyone.
    let bare = TestApp::new(Backend::Sqlite, "").await;
    let r = introspect_as(&bare, ip, Some(&basic(CLIENT_ID, SECRET)), &form).await;
    assert_eq!(r.status, 401);
}

both_backends! {
    /// RFC 7662 §4: failed client authentications are counted per client
    /// network, across replicas; over the limit the network is answered
    /// `429` with `Retry-After`, even with the right secret (a guess is not
    /// even looked at), while other networks are not affected.
    async fn failed_authentications_are_throttled_per_network(backend: Backend) {
        // [introspection] is the last table of introspection_toml.
        let toml = format!("{}failures_per_ip_per_hour = 3\n", introspection_toml(""));
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let k = key_of(&a.register_anonymous().await);
        let form = format!("token={k}");
        let attacker: IpAddr = [198, 51, 100, 7].into();
        let wrong = basic(CLIENT_ID, "guess");
        for i in 0..3 {
            let r = introspect_as(&a, attacker, Some(&wrong), &form).await;
            assert_eq!(r.status, 401, "failure {i}");
        }
        let r = introspect_as(&a, attacker, Some(&wrong), &form).await;
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.code(), "rate_limited");
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(retry > 0 && retry <= 1200, "{retry}");
        let right = basic(CLIENT_ID, SECRET);
        let r = introspect_as(&a, attacker, Some(&right), &form).await;
        assert_eq!(r.status, 429, "the right secret is not even tried from a throttled network");
        // The other replica counts in the same buckets.
        let r = introspect_as(&b, attacker, Some(&wrong), &form).await;
        assert_eq!(r.status, 429, "{}", r.text());
        // Another network, and the right client elsewhere, are unaffected.
        let r = introspect_as(&a, crate::support::CLIENT.into(), Some(&right), &form).await;
        assert_eq!(r.json()["active"], true);
        let r = introspect_as(&b, [192, 0, 2, 44].into(), Some(&wrong), &form).await;
        assert_eq!(r.status, 401);
        // IPv6: one /64 is one network.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0; 4]));
        for i in 0..3 {
            let r = introspect_as(&a, v6(&format!("2001:db8:1:2::{i}")), Some(&wrong), &form).await;
            assert_eq!(r.status, 401);
        }
        let r = introspect_as(&a, v6("2001:db8:1:2::9"), Some(&wrong), &form).await;
        assert_eq!(r.status, 429);
        let r = introspect_as(&a, v6("2001:db8:1:2:ffff::1"), Some(&right), &form).await;
        assert_eq!(r.status, 429);
    }
}

both_backends! {
    /// The same one-second bound as the API (the same validation): a
    /// credential revoked through one replica is reported inactive by
    /// another that had it cached as active.
    async fn a_revocation_reaches_introspection_on_another_replica_within_a_second(backend: Backend) {
        let toml = introspection_toml("");
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let k = key_of(&a.register_anonymous().await);
        assert_eq!(introspect(&b, &k).await.json()["active"], true);
        assert!(b.app.validator().cached() >= 1);
        let r = a.send(crate::support::form_request("/oauth2/revoke", &format!("token={k}"))).await;
        assert_eq!(r.status, 200);
        let start = Instant::now();
        loop {
            if introspect(&b, &k).await.text() == r#"{"active":false}"# {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "still active after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Malformed requests from an authenticated caller are `400
/// invalid_request` (413 over the size cap), never a 500; the endpoint is
/// POST only (RFC 7662 §2.1).
#[tokio::test]
async fn malformed_requests_are_invalid_request() {
    let t = TestApp::new(Backend::Sqlite, &introspection_toml("")).await;
    let auth = basic(CLIENT_ID, SECRET);
    let ip = crate::support::CLIENT.into();
    for (form, what) in [
        ("", "empty body"),
        ("token=", "empty token"),
        ("tok=abc", "no token"),
        ("token=a&token=b", "token twice"),
        ("token=a&token_type_hint=x&token_type_hint=y", "hint twice"),
    ] {
        let r = introspect_as(&t, ip, Some(&auth), form).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.code(), "invalid_request", "{what}");
        assert!(r.json()["error_description"].is_string());
    }
    let send = |ct: &str, body: Vec<u8>| {
        let mut req = request(Method::POST, "/oauth2/introspect", None, Some((ct, body)));
        req.headers_mut()
            .insert("authorization", auth.parse().expect("header"));
        t.send(req)
    };
    let r = send("application/json", br#"{"token":"x"}"#.to_vec()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let r = send(
        "application/x-www-form-urlencoded",
        b"token=\xff\xfe".to_vec(),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let big = format!("token={}", "a".repeat(9000));
    let r = send("application/x-www-form-urlencoded", big.into_bytes()).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (413, "invalid_request")
    );
    let mut get = request(Method::GET, "/oauth2/introspect?token=x", None, None);
    get.headers_mut()
        .insert("authorization", auth.parse().expect("header"));
    assert_eq!(t.send(get).await.status, 405);
}

/// `secret_file` is read and hashed when the configuration loads (the
/// secret itself is not kept); a short secret, or both forms, are refused
/// naming the key.
#[tokio::test]
async fn a_secret_file_is_hashed_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, format!("{SECRET}\n")).expect("write");
    let toml = format!(
        "[introspection]\nclients = [{{ id = \"{CLIENT_ID}\", secret_file = \"{}\" }}]\n",
        path.display()
    );
    let config = crate::support::config(&toml);
    assert_eq!(
        config.introspection.clients[0].secret_sha256,
        sha256_hex(SECRET)
    );
    assert!(!format!("{config:?}").contains(SECRET));
    let t = TestApp::new(Backend::Sqlite, &toml).await;
    let k = key_of(&t.register_anonymous().await);
    assert_eq!(introspect(&t, &k).await.json()["active"], true);

    // From the environment too, as an inline TOML array.
    let env = [(
        "AUTHMD_INTROSPECTION_CLIENTS".to_owned(),
        format!("[{{ id = \"env\", secret_file = \"{}\" }}]", path.display()),
    )]
    .into_iter()
    .collect();
    let c = authmd::config::load_str("", &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.introspection.clients[0].id, "env");

    std::fs::write(&path, "short").expect("write");
    let e = authmd::config::load_str(&toml, &Default::default()).err();
    assert_eq!(
        e.map(|e| e.key),
        Some("introspection.clients[0].secret_file".into())
    );
    let both = toml.replace(
        " }]",
        &format!(", secret_sha256 = \"{}\" }}]", sha256_hex(SECRET)),
    );
    let e = authmd::config::load_str(&both, &Default::default()).err();
    assert_eq!(
        e.map(|e| e.key),
        Some("introspection.clients[0].secret_file".into())
    );
    let e = authmd::config::load_str(
        "[introspection]\nclients = [{ id = \"a:b\", secret_sha256 = \"00\" }]",
        &Default::default(),
    )
    .err();
    assert_eq!(e.map(|e| e.key), Some("introspection.clients[0].id".into()));
}

/// RFC 8414 §2: the endpoint is published with its authentication method
/// while a caller is configured, and not otherwise.
#[tokio::test]
async fn the_endpoint_is_published_while_a_caller_is_configured() {
    let t = TestApp::new(Backend::Sqlite, &introspection_toml("")).await;
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(
        asm["introspection_endpoint"],
        "http://127.0.0.1:8080/oauth2/introspect"
    );
    assert_eq!(
        asm["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic"])
    );
    let bare = TestApp::new(Backend::Sqlite, "").await;
    let asm = bare
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert!(asm.get("introspection_endpoint").is_none());
    assert!(
        asm.get("introspection_endpoint_auth_methods_supported")
            .is_none()
    );
}
