//! Anonymous registration (docs/protocol.md §3.1) and the error rules of §3.

use axum::http::Method;
use serde_json::Value;

use crate::both_backends;
use crate::support::{Backend, TestApp, request};

const ANON: &str = r#"{"type":"anonymous","requested_credential_type":"api_key"}"#;

both_backends! {
    async fn anonymous_registration_issues_a_working_pre_claim_key(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let r = t.post_json("/agent/auth", ANON).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("pragma"), Some("no-cache"));
        let body = r.json();
        assert_eq!(body["registration_type"], "anonymous");
        assert_eq!(body["credential_type"], "api_key");
        assert_eq!(body["credential_expires"], Value::Null);
        assert_eq!(body["scopes"], serde_json::json!(["api.read"]));
        assert_eq!(body["post_claim_scopes"], serde_json::json!(["api.read", "api.write"]));
        assert_eq!(body["claim_url"], "http://127.0.0.1:8080/agent/auth/claim");
        assert!(body["registration_id"].as_str().unwrap_or_default().starts_with("reg_"));
        assert!(body["claim_token"].as_str().unwrap_or_default().starts_with("clm_"));
        let key = body["credential"].as_str().unwrap_or_default();
        assert!(key.starts_with("amd_sk_"));
        // ≥ 160 bits: 40 base62 characters carry 238.
        assert!(key.len() >= "amd_sk_".len() + 40);

        let expires = authmd::Timestamp::parse_rfc3339(body["claim_token_expires"].as_str().unwrap_or_default());
        let in_a_day = authmd::Timestamp::now().plus(std::time::Duration::from_secs(86_400));
        let drift = expires.map(|e| (e.as_millis() - in_a_day.as_millis()).abs());
        assert!(drift.is_some_and(|d| d < 60_000), "claim_token_expires {expires:?}");

        let who = t.get("/api/whoami", Some(key)).await;
        assert_eq!(who.status, 200, "{}", who.text());
        let who = who.json();
        assert_eq!(who["registration_id"], body["registration_id"]);
        assert_eq!(who["registration_type"], "anonymous");
        assert_eq!(who["registration_status"], "unclaimed");
        assert_eq!(who["scopes"], serde_json::json!(["api.read"]));
        assert_eq!(who["credential_type"], "api_key");
        assert_eq!(who["credential_expires"], Value::Null);
        assert_eq!(who["user"], Value::Null);

        let created = t.events("registration.created").await;
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].registration_id.as_deref(), body["registration_id"].as_str());
        assert_eq!(created[0].ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(created[0].data["registration_type"], "anonymous");
        assert_eq!(t.events("credential.issued").await.len(), 1);
    }
}

both_backends! {
    /// Secrets are stored only as hashes and never reach the audit trail.
    async fn secrets_are_not_stored_or_audited_in_clear(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let body = t.register_anonymous().await;
        let key = body["credential"].as_str().unwrap_or_default();
        let claim = body["claim_token"].as_str().unwrap_or_default();
        let all = t
            .app
            .store()
            .list_events(&authmd::audit::EventFilter { limit: 100, ..Default::default() })
            .await
            .unwrap_or_default();
        let dump = serde_json::to_string(&all).unwrap_or_default();
        assert!(!dump.contains(key) && !dump.contains(claim));
        if backend == Backend::Sqlite {
            let path = t.db.url.trim_start_matches("sqlite://").to_owned();
            let mut bytes = std::fs::read(&path).unwrap_or_default();
            bytes.extend(std::fs::read(format!("{path}-wal")).unwrap_or_default());
            let haystack = String::from_utf8_lossy(&bytes);
            assert!(!haystack.contains(&key[7..]), "API key body found in the database file");
            assert!(!haystack.contains(&claim[4..]), "claim token body found in the database file");
        }
    }
}

/// Every malformed request is 400 `invalid_request`, creates nothing, and is
/// recorded as `registration.rejected`.
#[tokio::test]
async fn malformed_requests_are_invalid_request_and_change_nothing() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let cases: &[(&str, &str)] = &[
        ("application/json", "{"),
        ("application/json", ""),
        ("application/json", "null"),
        ("application/json", "[]"),
        ("application/json", "\"anonymous\""),
        ("application/json", "{}"),
        ("application/json", r#"{"type": 7}"#),
        (
            "application/json",
            r#"{"type": "bogus", "requested_credential_type": "api_key"}"#,
        ),
        ("application/json", r#"{"type": "anonymous"}"#),
        (
            "application/json",
            r#"{"type": "anonymous", "requested_credential_type": 1}"#,
        ),
        ("application/json", r#"{"type": "identity_assertion"}"#),
        (
            "application/json",
            r#"{"type": "identity_assertion", "assertion_type": "x"}"#,
        ),
        ("application/json", "{\"type\": \"anonymous\"} trailing"),
        ("text/plain", ANON),
        ("application/x-www-form-urlencoded", "type=anonymous"),
        ("application/jsonx", ANON),
    ];
    for (ct, body) in cases {
        let r = t
            .send(request(
                Method::POST,
                "/agent/auth",
                None,
                Some((ct, body.as_bytes().to_vec())),
            ))
            .await;
        assert_eq!(r.status, 400, "{ct} {body}: {}", r.text());
        assert_eq!(r.code(), "invalid_request", "{ct} {body}");
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let no_content_type = axum::http::Request::builder()
        .method("POST")
        .uri("/agent/auth")
        .body(axum::body::Body::from(ANON))
        .unwrap_or_default();
    let r = t.send(no_content_type).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_request".into())
    );

    let stats = t.stats().await;
    assert_eq!((stats.registrations, stats.credentials), (0, 0));
    let rejected = t.rejected().await;
    let counted: u64 = rejected
        .iter()
        .map(|e| e.data["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, cases.len() as u64 + 1);
    assert!(rejected.iter().all(|e| e.data["code"] == "invalid_request"));
    assert!(
        rejected
            .iter()
            .all(|e| e.ip.as_deref() == Some("203.0.113.10"))
    );
}

#[tokio::test]
async fn rejections_record_the_user_agent() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/agent/auth")
        .header("content-type", "application/json")
        .header("user-agent", "test-agent/1.0")
        .body(axum::body::Body::from("{"))
        .unwrap_or_default();
    t.send(req).await;
    let rejected = t.rejected().await;
    assert_eq!(rejected[0].user_agent.as_deref(), Some("test-agent/1.0"));
}

#[tokio::test]
async fn credential_types_other_than_api_key_are_unsupported() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    for kind in ["access_token", "password", ""] {
        let body = format!(r#"{{"type":"anonymous","requested_credential_type":"{kind}"}}"#);
        let r = t.post_json("/agent/auth", &body).await;
        assert_eq!(r.status, 400, "{kind}");
        assert_eq!(r.code(), "unsupported_credential_type", "{kind}");
    }
    assert_eq!(t.stats().await.registrations, 0);
    let rejected = t.rejected().await;
    assert_eq!(t.rejected_count().await, 3, "three refusals, written once");
    assert!(!rejected.is_empty());
    assert!(
        rejected
            .iter()
            .all(|e| e.data["code"] == "unsupported_credential_type")
    );
}

/// Disabled flows answer their `*_not_enabled` code and are not advertised.
#[tokio::test]
async fn disabled_identity_assertion_flows_are_not_enabled() {
    let toml = "[registration]\nverified_email = false\nidentity_assertion = false";
    let t = TestApp::new(Backend::Sqlite, toml).await;
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"identity_assertion","assertion_type":"verified_email","assertion":"u@example.com","requested_credential_type":"api_key"}"#,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "verified_email_not_enabled".into())
    );
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"identity_assertion","assertion_type":"urn:ietf:params:oauth:token-type:id-jag","assertion":"a.b.c","requested_credential_type":"api_key"}"#,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "identity_assertion_not_enabled".into())
    );
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(
        asm["agent_auth"]["identity_types_supported"],
        serde_json::json!(["anonymous"])
    );
    assert!(asm["agent_auth"].get("identity_assertion").is_none());
    assert_eq!(t.mailer.sent().len(), 0);
}

/// Bodies over 64 KiB are refused with 413 before they are parsed.
#[tokio::test]
async fn oversized_bodies_are_413() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let big = format!(
        r#"{{"type":"anonymous","requested_credential_type":"api_key","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    );
    let r = t.post_json("/agent/auth", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "invalid_request");
    // Just under the cap is fine: unknown fields are ignored.
    let fits = format!(
        r#"{{"type":"anonymous","requested_credential_type":"api_key","pad":"{}"}}"#,
        "x".repeat(60 * 1024)
    );
    let r = t.post_json("/agent/auth", &fits).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.stats().await.registrations, 1);
}

#[tokio::test]
async fn registration_endpoint_is_post_only() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t.get("/agent/auth", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "method_not_allowed");
}

#[tokio::test]
async fn every_registration_gets_its_own_secrets() {
    let t = TestApp::new(Backend::Sqlite, "[rate_limits]\nenabled = false").await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let b = t.register_anonymous().await;
        for field in ["registration_id", "credential", "claim_token"] {
            assert!(seen.insert(b[field].as_str().unwrap_or_default().to_owned()));
        }
    }
}
