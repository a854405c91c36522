//! The identity assertion (`X-Authmd-Assertion`): what it says, that it
//! verifies against `/.well-known/jwks.json` before and after a rotation,
//! and that it is reused rather than signed per request.

use std::sync::Arc;
use std::time::Duration;

use authmd::Timestamp;
use authmd::audit::RequestMeta;
use authmd::validation::Validation;
use authmd_jose::Compact;
use serde_json::Value;

use crate::both_backends;
use crate::gateway::{anon, toml};
use crate::service_keys::verifies;
use crate::support::{Backend, TestApp};
use crate::upstream::Upstream;

/// The assertion the upstream received with the last request.
fn received(up: &Upstream) -> String {
    up.last()
        .header("x-authmd-assertion")
        .expect("an assertion reached the upstream")
        .to_owned()
}

fn claims(token: &str) -> serde_json::Map<String, Value> {
    Compact::parse(token, 16 * 1024)
        .unwrap_or_else(|e| panic!("{e}"))
        .claims
}

async fn jwks(t: &TestApp) -> Vec<u8> {
    t.get("/.well-known/jwks.json", None).await.body
}

both_backends! {
    async fn the_assertion_names_the_caller_and_verifies(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, "", "")).await;
        let (key, reg) = anon(&t).await;
        assert_eq!(t.get("/api/x", Some(&key)).await.status, 201);
        let token = received(&up);
        let c = Compact::parse(&token, 16 * 1024).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.header_str("alg"), Some("ES256"));
        assert_eq!(c.header_str("typ"), Some("authmd-identity+jwt"));
        assert!(verifies(&jwks(&t).await, &token));
        let claims = c.claims;
        assert_eq!(claims["iss"], "http://127.0.0.1:8080");
        assert_eq!(claims["aud"], "http://127.0.0.1:8080/api/");
        assert_eq!(claims["sub"], reg.as_str(), "no user yet: the registration");
        assert_eq!(claims["registration_id"], reg.as_str());
        assert_eq!(claims["registration_type"], "anonymous");
        assert_eq!(claims["scope"], "api.read");
        assert_eq!(claims["credential_type"], "api_key");
        let (iat, exp) = (claims["iat"].as_i64().unwrap_or(0), claims["exp"].as_i64().unwrap_or(0));
        assert_eq!(exp - iat, 60);
        assert!((iat - Timestamp::now().as_secs()).abs() <= 2);
        assert!(claims.get("email").is_none());
    }
}

both_backends! {
    /// The assertion of an agent-verified caller names the user and the
    /// verified email.
    async fn an_agent_verified_callers_assertion_names_the_user(backend: Backend) {
        use crate::provider::{JwksServer, body, claims as id_jag, key, mint, trusting};
        let up = Upstream::start().await;
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &toml(&up.url, &trusting(&[server.issuer()], ""), "")).await;
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &id_jag(server.issuer(), "http://127.0.0.1:8080", "ada")), "api_key")).await;
        let credential = r.json()["credential"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.get("/api/x", Some(&credential)).await.status, 201);
        let seen = up.last();
        let c = claims(seen.header("x-authmd-assertion").unwrap_or_default());
        assert_eq!(c["sub"].as_str(), seen.header("x-authmd-user"));
        assert_eq!(c["email"], "ada@example.com");
        assert_eq!(c["provider"].as_str(), Some(server.issuer()));
        assert_eq!(c["provider_sub"], "ada");
    }
}

both_backends! {
    /// An assertion signed before `authmd keys rotate` keeps verifying
    /// against the published JWKS; after the new key takes over, new
    /// assertions carry its kid and verify too, on every replica.
    async fn assertions_verify_before_and_after_a_rotation(backend: Backend) {
        let up = Upstream::start().await;
        let toml = toml(&up.url, "", "");
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let (first, _) = anon(&a).await;
        assert_eq!(a.get("/api/x", Some(&first)).await.status, 201);
        let before = received(&up);
        let old_kid = Compact::parse(&before, 16 * 1024).ok().and_then(|c| c.header_str("kid").map(str::to_owned));
        assert!(verifies(&jwks(&a).await, &before));

        let rotated = a.app.service_keys()
            .rotate(Timestamp::now(), true, "test", &RequestMeta::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        b.app.service_keys().reload(Timestamp::now()).await.unwrap_or_else(|e| panic!("{e}"));
        for replica in [&a, &b] {
            assert!(verifies(&jwks(replica).await, &before), "the old key's assertion");
        }
        // A new credential gets an assertion from the new key, on either
        // replica; the first keeps its cached one until it is half spent.
        let (second, _) = anon(&a).await;
        for replica in [&a, &b] {
            assert_eq!(replica.get("/api/x", Some(&second)).await.status, 201);
            let after = received(&up);
            let kid = Compact::parse(&after, 16 * 1024).ok().and_then(|c| c.header_str("kid").map(str::to_owned));
            assert_eq!(kid.as_deref(), Some(rotated.kid.as_str()));
            assert_ne!(kid, old_kid);
            for verifier in [&a, &b] {
                assert!(verifies(&jwks(verifier).await, &after), "the new key's assertion");
            }
        }
    }
}

/// One signature per credential per half lifetime: the same assertion is
/// reused while it has more than 30 s left; then, or when the credential
/// changes, a new one is signed.
#[tokio::test]
async fn an_assertion_is_reused_while_it_has_half_its_life() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let (key, _) = anon(&t).await;
    let (other, _) = anon(&t).await;
    let record = |k: String| {
        let app = t.app.clone();
        async move {
            match app.validate(Some(&k), Timestamp::now()).await {
                Ok(Validation::Valid(r)) => r,
                other => panic!("{other:?}"),
            }
        }
    };
    let r = record(key.clone()).await;
    let now = Timestamp::now();
    let sign = |r: &Arc<authmd::credential::CredentialRecord>, at: Timestamp| {
        t.app
            .told(r, true, at)
            .unwrap_or_else(|e| panic!("{e}"))
            .assertion
            .unwrap_or_else(|| panic!("an assertion was asked for"))
    };
    let first = sign(&r, now);
    assert_eq!(sign(&r, now.plus(Duration::from_secs(29))), first);
    // Another credential, an equal record read again: as expected.
    assert_ne!(sign(&record(other).await, now), first);
    assert_eq!(
        sign(
            &record(key.clone()).await,
            now.plus(Duration::from_secs(10))
        ),
        first
    );
    // A changed credential (more scopes) is never given the old assertion.
    let mut changed = (*r).clone();
    changed.scopes.push("api.write".into());
    let fresh = sign(&Arc::new(changed), now.plus(Duration::from_secs(1)));
    assert_ne!(fresh, first);
    assert_eq!(claims(&fresh)["scope"], "api.read api.write");
    // Half spent: a new one.
    let renewed = sign(&r, now.plus(Duration::from_secs(31)));
    assert_ne!(renewed, first);
    assert!(claims(&renewed)["exp"].as_i64() > claims(&first)["exp"].as_i64());
}

/// The identity headers are built once per credential and kept with its
/// assertion: asking for the headers alone neither signs nor drops the
/// cached assertion, and a changed credential gets its own headers.
#[tokio::test]
async fn identity_headers_are_built_once_and_follow_the_credential() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let (key, _) = anon(&t).await;
    let r = match t.app.validate(Some(&key), Timestamp::now()).await {
        Ok(Validation::Valid(r)) => r,
        other => panic!("{other:?}"),
    };
    let now = Timestamp::now();
    let told = |r: &Arc<authmd::credential::CredentialRecord>, assertion: bool| {
        t.app
            .told(r, assertion, now)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let value = |told: &authmd::identity::Told, name: &str| {
        told.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let bare = told(&r, false);
    assert!(bare.assertion.is_none());
    assert_eq!(value(&bare, "x-authmd-scopes").as_deref(), Some("api.read"));
    assert_eq!(
        value(&bare, "x-authmd-registration").as_deref(),
        Some(r.registration_id.as_str())
    );
    let signed = told(&r, true);
    let first = signed
        .assertion
        .clone()
        .unwrap_or_else(|| panic!("asked for"));
    assert!(Arc::ptr_eq(&bare.headers, &signed.headers), "built once");
    let again = told(&r, false);
    assert!(again.assertion.is_none());
    assert!(Arc::ptr_eq(&again.headers, &bare.headers));
    assert_eq!(told(&r, true).assertion, Some(first), "not signed again");
    let mut changed = (*r).clone();
    changed.scopes.push("api.write".into());
    let changed = told(&Arc::new(changed), false);
    assert_eq!(
        value(&changed, "x-authmd-scopes").as_deref(),
        Some("api.read api.write")
    );
}

#[tokio::test]
async fn assertion_header_false_sends_none() {
    let up = Upstream::start().await;
    let t = TestApp::new(
        Backend::Sqlite,
        &toml(&up.url, "", "assertion_header = false"),
    )
    .await;
    let (key, _) = anon(&t).await;
    let mut req = crate::support::request(axum::http::Method::GET, "/api/x", Some(&key), None);
    req.headers_mut().insert(
        "x-authmd-assertion",
        axum::http::HeaderValue::from_static("forged"),
    );
    assert_eq!(t.send(req).await.status, 201);
    assert!(up.last().header("x-authmd-assertion").is_none());
    assert!(up.last().header("x-authmd-registration").is_some());
}
