//! Self-revocation (RFC 7009) at `POST /oauth2/revoke`: an agent ends its
//! own credential; any token answers 200; the credential stops on every
//! replica within a second; the event is audited (`by: "self"`); the
//! registration ends with its last live credential. Also the store
//! operations behind it, on both backends.

use std::time::{Duration, Instant};

use authmd::Timestamp;
use authmd::audit::RequestMeta;
use authmd::register::RegistrationStatus;
use authmd::store::{SelfRevocation, SelfRevoked};
use authmd::token::{PlainSecret, SecretKind, new_id};
use axum::http::Method;
use serde_json::Value;

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint};
use crate::support::{Backend, TestApp, TestResponse, form_request, request};

pub async fn revoke(t: &TestApp, token: &str) -> TestResponse {
    t.send(form_request("/oauth2/revoke", &format!("token={token}")))
        .await
}

fn key_of(v: &Value) -> String {
    v["credential"].as_str().unwrap_or_default().to_owned()
}

async fn status_of(t: &TestApp, credential: &str) -> RegistrationStatus {
    let id = credential
        .strip_prefix("amd_sk_")
        .or_else(|| credential.strip_prefix("amd_at_"))
        .map(|s| format!("crd_{}", &s[..22]))
        .unwrap_or_default();
    t.app
        .store()
        .find_credential(&id)
        .await
        .ok()
        .flatten()
        .map(|r| r.registration_status)
        .unwrap_or_else(|| panic!("no credential {id}"))
}

both_backends! {
    /// The whole flow for an anonymous key: 200 with an empty body and
    /// no-store, refused at once, `credential.revoked` and
    /// `registration.revoked` recorded `by: "self"`, the registration
    /// `revoked` (nothing of it is left); revoking again changes nothing.
    async fn an_agent_ends_its_own_key(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let k = key_of(&reg);
        assert_eq!(t.get("/api/whoami", Some(&k)).await.status, 200);
        let r = revoke(&t, &k).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body.is_empty());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        assert_eq!(t.get("/api/whoami", Some(&k)).await.status, 401, "refused at once");
        assert_eq!(status_of(&t, &k).await, RegistrationStatus::Revoked);

        let reg_id = reg["registration_id"].as_str().unwrap_or_default();
        let events = t.events("credential.revoked").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].registration_id.as_deref(), Some(reg_id));
        assert_eq!(events[0].data["by"], "self");
        assert_eq!(events[0].data["credential_type"], "api_key");
        assert_eq!(events[0].ip.as_deref(), Some(crate::support::CLIENT_IP));
        let ended = t.events("registration.revoked").await;
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].data["by"], "self");

        // The claim token of the ended registration no longer starts a claim.
        let claim = t.post_json("/agent/auth/claim", &format!(
            r#"{{"claim_token":"{}","email":"a@example.com"}}"#,
            reg["claim_token"].as_str().unwrap_or_default()
        )).await;
        assert_ne!(claim.status, 200, "{}", claim.text());

        let before = t.stats().await;
        let r = revoke(&t, &k).await;
        assert_eq!(r.status, 200);
        assert_eq!(t.stats().await, before, "a second revocation writes nothing");
    }
}

both_backends! {
    /// RFC 7009 §2.2: an invalid token is answered 200 as well, and costs
    /// nothing: no row, no event.
    async fn unknown_and_malformed_tokens_answer_200_and_change_nothing(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let before = t.stats().await;
        let unknown = PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_"));
        let claim_token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        for token in [unknown.expose(), "amd_sk_garbage", "x", claim_token.as_str()] {
            let r = revoke(&t, token).await;
            assert_eq!(r.status, 200, "{token}: {}", r.text());
            assert!(r.body.is_empty());
        }
        // The hint is ignored, whatever its value (RFC 7009 §2.1).
        let r = t.send(form_request("/oauth2/revoke", "token=x&token_type_hint=refresh_token")).await;
        assert_eq!(r.status, 200);
        assert_eq!(t.stats().await, before);
        assert_eq!(t.get("/api/whoami", Some(&key_of(&reg))).await.status, 200);
    }
}

both_backends! {
    /// An agent-verified registration with several live credentials keeps
    /// the others; its last one ends it; the delegation is untouched, so a
    /// fresh ID-JAG registers again (a new registration).
    async fn the_registration_ends_with_its_last_live_credential(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let iss = server.issuer().to_owned();
        let t = TestApp::new(backend, &format!("[[providers]]\nissuer = \"{iss}\"\n")).await;
        let register = || async {
            let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(&iss, "http://127.0.0.1:8080", "ada")), "api_key")).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        };
        let first = register().await;
        let second = register().await;
        assert_eq!(first["registration_id"], second["registration_id"]);
        let (a, b) = (key_of(&first), key_of(&second));

        assert_eq!(revoke(&t, &a).await.status, 200);
        assert_eq!(t.get("/api/whoami", Some(&a)).await.status, 401);
        assert_eq!(t.get("/api/whoami", Some(&b)).await.status, 200, "the other key works");
        assert_eq!(status_of(&t, &b).await, RegistrationStatus::Active);
        assert_eq!(t.events("credential.revoked").await.len(), 1);
        assert!(t.events("registration.revoked").await.is_empty());

        assert_eq!(revoke(&t, &b).await.status, 200);
        assert_eq!(t.get("/api/whoami", Some(&b)).await.status, 401);
        assert_eq!(status_of(&t, &b).await, RegistrationStatus::Revoked);
        assert_eq!(t.events("registration.revoked").await.len(), 1);

        let again = register().await;
        assert_ne!(again["registration_id"], first["registration_id"]);
        assert_eq!(t.get("/api/whoami", Some(&key_of(&again))).await.status, 200);
    }
}

both_backends! {
    /// The credential stops on every replica within a second: another
    /// replica that had it cached refuses it, through the invalidation log.
    async fn another_replica_refuses_it_within_a_second(backend: Backend) {
        let a = TestApp::new(backend, "").await;
        let b = a.replica("").await;
        let k = key_of(&a.register_anonymous().await);
        assert_eq!(b.get("/api/whoami", Some(&k)).await.status, 200);
        assert!(b.app.validator().cached() >= 1);
        assert_eq!(revoke(&a, &k).await.status, 200);
        let start = Instant::now();
        while b.get("/api/whoami", Some(&k)).await.status != 401 {
            assert!(start.elapsed() < Duration::from_secs(1), "still accepted after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Malformed requests are `400 invalid_request` in the RFC 6749 §5.2 shape
/// (413 over the size cap), and change nothing; the endpoint is POST only.
#[tokio::test]
async fn malformed_revocation_requests_are_invalid_request() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let k = key_of(&t.register_anonymous().await);
    for (form, what) in [
        ("", "empty"),
        ("token=", "empty token"),
        ("access_token=abc", "no token"),
        (format!("token={k}&token=x").as_str(), "token twice"),
    ] {
        let r = t.send(form_request("/oauth2/revoke", form)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.code(), "invalid_request", "{what}");
        assert!(r.json()["error_description"].is_string(), "{what}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let r = t
        .send(request(
            Method::POST,
            "/oauth2/revoke",
            None,
            Some((
                "application/json",
                format!(r#"{{"token":"{k}"}}"#).into_bytes(),
            )),
        ))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    let big = format!("token={k}&pad={}", "a".repeat(9000));
    let r = t.send(form_request("/oauth2/revoke", &big)).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (413, "invalid_request")
    );
    assert_eq!(t.get("/oauth2/revoke", None).await.status, 405);
    assert_eq!(
        t.get("/api/whoami", Some(&k)).await.status,
        200,
        "nothing was revoked"
    );
}

both_backends! {
    /// Store contract: the credential is revoked only with its own hash,
    /// once, even when two revocations race; each revocation appends to
    /// the invalidation log.
    async fn store_revokes_a_credential_once_and_only_with_its_hash(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let k = key_of(&reg);
        let id = format!("crd_{}", &k["amd_sk_".len().."amd_sk_".len() + 22]);
        let store = t.app.store();
        let now = Timestamp::now();
        let rev = |hash| SelfRevocation {
            credential_id: id.clone(),
            credential: hash,
            now,
            meta: RequestMeta::default(),
            refresh: false,
        };
        let wrong = authmd::token::SecretHash::of("not the key");
        assert_eq!(store.revoke_credential(rev(wrong)).await, Ok(SelfRevoked::Nothing));
        let hash = authmd::token::SecretHash::of(&k);
        let before = store.latest_invalidation().await.unwrap_or_default();
        let (x, y) = tokio::join!(store.revoke_credential(rev(hash)), store.revoke_credential(rev(hash)));
        let outcomes = [x, y];
        let done = SelfRevoked::Revoked { registration_ended: true };
        assert_eq!(outcomes.iter().filter(|o| **o == Ok(done)).count(), 1, "{outcomes:?}");
        assert_eq!(outcomes.iter().filter(|o| **o == Ok(SelfRevoked::Nothing)).count(), 1, "{outcomes:?}");
        assert_eq!(t.events("credential.revoked").await.len(), 1);
        assert!(store.latest_invalidation().await.unwrap_or_default() > before);
        let record = store.find_credential(&id).await.ok().flatten();
        assert_eq!(record.and_then(|r| r.revoked_at), Some(now));
    }
}

both_backends! {
    /// Store contract: `count_request` admits up to the limit, then refuses
    /// with the exact wait, writing nothing else.
    async fn store_counts_requests_against_limits(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let store = t.app.store();
        let now = Timestamp::from_secs(1_800_000_000);
        let limit = || vec![authmd::rate_limit::RateLimit::per_hour("test:x", 2)];
        assert_eq!(store.count_request(limit(), now).await, Ok(Ok(())));
        assert_eq!(store.count_request(limit(), now).await, Ok(Ok(())));
        let refused = store.count_request(limit(), now).await;
        assert!(matches!(refused, Ok(Err(r)) if r.retry_after == Duration::from_secs(1800)), "{refused:?}");
        let other = vec![authmd::rate_limit::RateLimit::per_hour("test:y", 2)];
        assert_eq!(store.count_request(other, now).await, Ok(Ok(())));
        assert_eq!(t.stats().await.audit_events, 0);
    }
}

/// A body sent too slowly is cut off at `server.request_timeout`: the
/// OAuth endpoints bound their body read themselves.
#[tokio::test]
async fn a_body_that_never_arrives_is_cut_off() {
    let t = TestApp::new(Backend::Sqlite, "[server]\nrequest_timeout = \"300ms\"\n").await;
    let stalled = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/oauth2/revoke")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from_stream(stalled))
        .expect("request");
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), t.send(req))
        .await
        .expect("answered");
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_request")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
