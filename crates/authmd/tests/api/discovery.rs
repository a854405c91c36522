//! Discovery documents (docs/protocol.md §2), pinned by snapshots.

use crate::support::{Backend, TestApp};

#[tokio::test]
async fn protected_resource_metadata_is_pinned() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t
        .get("/.well-known/oauth-protected-resource/api", None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    insta::assert_snapshot!("protected_resource_metadata", r.text());
}

#[tokio::test]
async fn protected_resource_metadata_is_served_at_every_well_known_form() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let canonical = t
        .get("/.well-known/oauth-protected-resource/api", None)
        .await
        .body;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/api/",
    ] {
        let r = t.get(path, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, canonical, "{path}");
    }
}

#[tokio::test]
async fn authorization_server_metadata_is_pinned() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t.get("/.well-known/oauth-authorization-server", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    insta::assert_snapshot!("authorization_server_metadata", r.text());
}

#[tokio::test]
async fn auth_md_is_pinned() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t.get("/auth.md", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    let text = r.text();
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("# ") && first.contains("auth.md"),
        "{first}"
    );
    insta::assert_snapshot!("auth_md", text);
}

/// With a trusted provider, the agent-verified flow is advertised and
/// explained (how to mint the ID-JAG); the trust list itself is not.
#[tokio::test]
async fn agent_verified_flow_is_advertised_with_a_provider() {
    let toml = "[[providers]]\nissuer = \"https://provider.example\"";
    let t = TestApp::new(Backend::Sqlite, toml).await;
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .text();
    insta::assert_snapshot!("authorization_server_metadata_with_provider", asm);
    let md = t.get("/auth.md", None).await.text();
    assert!(
        md.contains("**`http://127.0.0.1:8080`**, exactly"),
        "aud instruction"
    );
    assert!(!md.contains("provider.example"));
    insta::assert_snapshot!("auth_md_with_provider", md);
}

/// RFC 8414 §3.3 / RFC 9728 §3.3: identifiers are compared byte for byte,
/// so every document must repeat them exactly as configured.
#[tokio::test]
async fn identifiers_are_byte_identical_everywhere() {
    let toml = r#"
        issuer = "https://auth.example.com"
        [resource]
        identifier = "https://api.example.com/v2/"
        name = "Widgets"
    "#;
    let t = TestApp::new(Backend::Sqlite, toml).await;
    let prm = t
        .get("/.well-known/oauth-protected-resource/v2", None)
        .await
        .json();
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(prm["resource"], "https://api.example.com/v2/");
    assert_eq!(prm["authorization_servers"][0], "https://auth.example.com");
    assert_eq!(asm["issuer"], "https://auth.example.com");
    assert_eq!(
        asm["agent_auth"]["register_uri"],
        "https://auth.example.com/agent/auth"
    );
    let challenge = t.get("/v2/whoami", None).await;
    assert_eq!(
        challenge.header("www-authenticate"),
        Some(
            "Bearer resource_metadata=\"https://api.example.com/.well-known/oauth-protected-resource/v2\""
        )
    );
    let md = t.get("/auth.md", None).await.text();
    assert!(md.contains("https://api.example.com/v2/"));
    assert!(md.contains("# auth.md: Widgets"));
}

/// A disabled flow disappears from discovery and is refused with its code.
#[tokio::test]
async fn disabled_anonymous_flow_is_not_advertised() {
    let t = TestApp::new(Backend::Sqlite, "[registration]\nanonymous = false").await;
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(
        asm["agent_auth"]["identity_types_supported"],
        serde_json::json!(["identity_assertion", "service_auth"])
    );
    assert!(asm["agent_auth"].get("anonymous").is_none());
    let md = t.get("/auth.md", None).await.text();
    assert!(!md.contains("\"type\": \"anonymous\""));
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"anonymous","requested_credential_type":"api_key"}"#,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "anonymous_not_enabled".into())
    );
}

/// The trust list of providers is never published (ID-JAG draft §8.4).
#[tokio::test]
async fn provider_trust_list_is_never_published() {
    let toml = "[[providers]]\nissuer = \"https://secret-provider.example\"";
    let t = TestApp::new(Backend::Sqlite, toml).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/auth.md",
    ] {
        assert!(
            !t.get(path, None).await.text().contains("secret-provider"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn discovery_documents_are_get_only() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t
        .post_json("/.well-known/oauth-authorization-server", "{}")
        .await;
    assert_eq!(r.status, 405);
}

/// In gateway mode the API behind authmd owns every path under the
/// resource: /auth.md does not promise `whoami`, and lists the gateway's
/// own refusals.
#[tokio::test]
async fn auth_md_in_gateway_mode_is_pinned() {
    let t = TestApp::new(
        Backend::Sqlite,
        "[upstream]\nurl = \"http://127.0.0.1:3000\"",
    )
    .await;
    let md = t.get("/auth.md", None).await.text();
    assert!(!md.contains("/api/whoami"));
    assert!(md.contains("upstream_unavailable") && md.contains("upstream_timeout"));
    insta::assert_snapshot!("auth_md_gateway", md);
}
