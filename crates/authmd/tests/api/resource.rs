//! The protected resource (docs/protocol.md §2.1, §2.4, §7).

use axum::http::Method;

use crate::both_backends;
use crate::support::{Backend, TestApp, request};

const CHALLENGE: &str =
    "Bearer resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/api\"";
const INVALID: &str = "Bearer error=\"invalid_token\", resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/api\"";

#[tokio::test]
async fn missing_credential_gets_the_discovery_challenge() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    for path in ["/api/whoami", "/api/anything", "/api/", "/api/a/b?c=d"] {
        let r = t.get(path, None).await;
        assert_eq!(r.status, 401, "{path}");
        // RFC 6750 §3.1: no error code when no credential was presented.
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE), "{path}");
        assert_eq!(r.code(), "invalid_token");
    }
    // Another scheme is no bearer credential at all.
    let req = axum::http::Request::builder()
        .uri("/api/whoami")
        .header("authorization", "Basic dXNlcjpwYXNz")
        .body(axum::body::Body::empty())
        .unwrap_or_default();
    assert_eq!(
        t.send(req).await.header("www-authenticate"),
        Some(CHALLENGE)
    );
}

/// DO NOT WEAKEN: a client must not learn *why* a credential failed
/// (unknown, revoked, expired, malformed): the status, challenge and body
/// are byte-identical for all of them (docs/protocol.md §2.1).
#[tokio::test]
async fn every_bad_credential_gets_the_same_answer() {
    use authmd::token::{PlainSecret, SecretKind, new_id, recognize};
    let t = TestApp::new(Backend::Sqlite, "[ttl]\nregistration = \"2s\"").await;
    let expired = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // A well-formed key that was never issued: right prefix and checksum.
    let unknown = PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_"));
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // The selector of a real, live credential with another verifier.
    let live = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let live_id = recognize(&live, &[SecretKind::ApiKey])
        .map(|p| p.id())
        .unwrap_or_default();
    let forged = PlainSecret::generate(SecretKind::ApiKey, &live_id);
    let bad = [
        "garbage".to_owned(),
        String::new(),
        unknown.expose().to_owned(),
        forged.expose().to_owned(),
        format!("{}x", &expired[..expired.len() - 1]),
        expired.clone(),
        "amd_sk_\u{0}".to_owned(),
    ];
    let mut answers = Vec::new();
    for token in &bad {
        let req = axum::http::Request::builder()
            .uri("/api/whoami")
            .header(
                "authorization",
                format!("Bearer {}", token.replace('\u{0}', "")),
            )
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        let r = t.send(req).await;
        assert_eq!(r.status, 401, "{token}");
        assert_eq!(r.header("www-authenticate"), Some(INVALID), "{token}");
        answers.push(r.body);
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "bodies differ");
    // The live key itself is fine: only its verifier proves it.
    assert_eq!(t.get("/api/whoami", Some(&live)).await.status, 200);
}

both_backends! {
    async fn scope_rules_are_enforced(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let key = t.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            let r = t.send(request(method.clone(), "/api/things", Some(&key), None)).await;
            assert_eq!(r.status, 403, "{method}");
            assert_eq!(r.code(), "insufficient_scope");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"insufficient_scope\", scope=\"api.write\", resource_metadata=\"http://127.0.0.1:8080/.well-known/oauth-protected-resource/api\"")
            );
        }
        // Reads pass validation, then find nothing there yet.
        let r = t.get("/api/things", Some(&key)).await;
        assert_eq!((r.status.as_u16(), r.code()), (404, "not_found".into()));
    }
}

#[tokio::test]
async fn custom_rules_first_match_wins() {
    let toml = r#"
        [resource]
        pre_claim_scopes = ["api.read"]
        post_claim_scopes = ["api.read", "api.write", "admin"]
        [resource.scopes]
        "api.read" = "Read"
        "api.write" = "Write"
        "admin" = "Administer"
        [[resource.rules]]
        path_prefix = "/api/public/"
        scopes = ["api.read"]
        [[resource.rules]]
        path_prefix = "/api/"
        scopes = ["admin"]
    "#;
    let t = TestApp::new(Backend::Sqlite, toml).await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(t.get("/api/public/x", Some(&key)).await.status, 404);
    let r = t
        .send(request(Method::DELETE, "/api/public/x", Some(&key), None))
        .await;
    assert_eq!(
        r.status, 404,
        "methods absent = any method; api.read suffices"
    );
    let r = t.get("/api/whoami", Some(&key)).await;
    assert_eq!(r.status, 403);
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("scope=\"admin\"")
    );
}

#[tokio::test]
async fn paths_outside_the_resource_are_not_protected() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t.get("/elsewhere", None).await;
    assert_eq!((r.status.as_u16(), r.code()), (404, "not_found".into()));
    assert!(r.header("www-authenticate").is_none());
    assert_eq!(t.get("/healthz", None).await.status, 200);
    assert_eq!(t.get("/readyz", None).await.status, 200);
}

both_backends! {
    /// Validation and the scope rules come before routing under the
    /// resource path: a method the path does not serve is 401 to a
    /// stranger and 403 to a key without the scope, never 405.
    async fn validation_comes_before_routing(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let r = t.send(request(Method::POST, "/api/whoami", None, None)).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
        assert_eq!(r.code(), "invalid_token");
        assert!(r.header("allow").is_none());
        let r = t.send(request(Method::POST, "/api/whoami", Some("amd_sk_garbage"), None)).await;
        assert_eq!((r.status.as_u16(), r.header("www-authenticate")), (401, Some(INVALID)));

        let key = t.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let r = t.send(request(method.clone(), "/api/whoami", Some(&key), None)).await;
            assert_eq!((r.status.as_u16(), r.code()), (403, "insufficient_scope".into()), "{method}");
        }
        // Methods no rule covers pass the rules, then meet the router.
        let r = t.send(request(Method::OPTIONS, "/api/whoami", Some(&key), None)).await;
        assert_eq!((r.status.as_u16(), r.code()), (405, "method_not_allowed".into()));
        let r = t.send(request(Method::HEAD, "/api/whoami", Some(&key), None)).await;
        assert_eq!(r.status, 200);
    }
}

/// A path not in its normal form is refused once validated: the scope
/// rules match prefixes as written, and whatever serves the path might
/// resolve the dots, merge the slashes or decode the escapes.
#[tokio::test]
async fn paths_not_in_their_normal_form_are_refused() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [
        "/api/x/../whoami",
        "/api/x/%2e%2e/whoami",
        "/api/./whoami",
        "/api/%77hoami",
        "/api//whoami",
        "/api/x%2F..%2Fwhoami",
        "/api/x;y/whoami",
    ] {
        let r = t.get(path, Some(&key)).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_request".into()),
            "{path}"
        );
        assert_eq!(t.get(path, None).await.status, 401, "{path}");
    }
}
