//! Both dialects side by side (issue 18): discovery publishes the members
//! of each, and each flow can be switched off per dialect.

use serde_json::json;

use crate::support::{Backend, TestApp};

const CURRENT_ON: &str = "[dialects.current]\nenabled = true\n";
const CURRENT_OFF: &str = "[dialects.current]\nenabled = false\n";
const PROVIDER: &str = "[[providers]]\nissuer = \"https://provider.example\"\n";

async fn metadata(t: &TestApp) -> serde_json::Value {
    let r = t.get("/.well-known/oauth-authorization-server", None).await;
    assert_eq!(r.status, 200);
    r.json()
}

/// With both dialects on, the metadata keeps every member of the original
/// one and adds the current one's; `identity_types_supported` is the union.
#[tokio::test]
async fn metadata_publishes_both_dialects() {
    let t = TestApp::new(Backend::Sqlite, &format!("{CURRENT_ON}{PROVIDER}")).await;
    let asm = metadata(&t).await;
    let base = "http://127.0.0.1:8080";
    let a = &asm["agent_auth"];
    // The original dialect, unchanged.
    assert_eq!(a["register_uri"], format!("{base}/agent/auth"));
    assert_eq!(a["claim_uri"], format!("{base}/agent/auth/claim"));
    assert_eq!(a["revocation_uri"], format!("{base}/agent/auth/revoke"));
    assert_eq!(
        a["anonymous"]["credential_types_supported"],
        json!(["api_key"])
    );
    assert_eq!(
        a["identity_assertion"]["credential_types_supported"],
        json!(["access_token", "api_key"])
    );
    // The current dialect.
    assert_eq!(a["identity_endpoint"], format!("{base}/agent/identity"));
    assert_eq!(a["events_endpoint"], format!("{base}/agent/event/notify"));
    assert_eq!(a["claim_endpoint"], format!("{base}/agent/identity/claim"));
    assert_eq!(asm["token_endpoint"], format!("{base}/oauth2/token"));
    assert_eq!(asm["revocation_endpoint"], format!("{base}/oauth2/revoke"));
    assert_eq!(asm["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(
        asm["grant_types_supported"],
        json!(["urn:ietf:params:oauth:grant-type:jwt-bearer"])
    );
    assert_eq!(
        asm["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );
    assert_eq!(asm["response_types_supported"], json!([]));
    assert_eq!(
        a["identity_types_supported"],
        json!(["anonymous", "identity_assertion", "service_auth"])
    );
    assert_eq!(
        a["identity_assertion"]["assertion_types_supported"],
        json!(["urn:ietf:params:oauth:token-type:id-jag", "verified_email"])
    );
    assert_eq!(
        a["events_supported"][0],
        "https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"
    );
}

/// Off, the current dialect leaves no trace.
#[tokio::test]
async fn current_dialect_off_publishes_nothing_of_it() {
    let t = TestApp::new(Backend::Sqlite, &format!("{CURRENT_OFF}{PROVIDER}")).await;
    let asm = metadata(&t).await;
    for member in ["identity_endpoint", "claim_endpoint", "events_endpoint"] {
        assert!(asm["agent_auth"].get(member).is_none(), "{member}");
    }
    assert!(asm.get("token_endpoint").is_none());
    assert_eq!(asm["grant_types_supported"], json!([]));
    assert_eq!(
        asm["agent_auth"]["identity_types_supported"],
        json!(["anonymous", "identity_assertion"])
    );
}

/// A flow switched off in one dialect stays in the other.
#[tokio::test]
async fn flows_switch_off_per_dialect() {
    let toml = format!(
        "{CURRENT_ON}{PROVIDER}[dialects.original]\nanonymous = false\nverified_email = false\nidentity_assertion = false\n"
    );
    let t = TestApp::new(Backend::Sqlite, &toml).await;
    let asm = metadata(&t).await;
    let a = &asm["agent_auth"];
    assert_eq!(
        a["identity_types_supported"],
        json!(["anonymous", "identity_assertion", "service_auth"])
    );
    assert!(a.get("anonymous").is_none(), "original's per-type block");
    assert!(
        a["identity_assertion"]
            .get("credential_types_supported")
            .is_none()
    );
    assert!(a.get("revocation_uri").is_none());
    assert!(a.get("claim_uri").is_none());
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"anonymous","requested_credential_type":"api_key"}"#,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "anonymous_not_enabled")
    );
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"identity_assertion","assertion_type":"verified_email","assertion":"a@example.com","requested_credential_type":"api_key"}"#,
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "verified_email_not_enabled")
    );

    // And the other way round.
    let toml = format!(
        "{PROVIDER}[dialects.current]\nenabled = true\nanonymous = false\nservice_auth = false\n"
    );
    let t = TestApp::new(Backend::Sqlite, &toml).await;
    let a = metadata(&t).await["agent_auth"].clone();
    assert_eq!(
        a["identity_types_supported"],
        json!(["anonymous", "identity_assertion"])
    );
    assert_eq!(
        a["anonymous"]["credential_types_supported"],
        json!(["api_key"])
    );
    t.register_anonymous().await;

    // The original dialect off entirely: no register_uri.
    let t = TestApp::new(
        Backend::Sqlite,
        &format!("{CURRENT_ON}[dialects.original]\nenabled = false\n"),
    )
    .await;
    let a = metadata(&t).await["agent_auth"].clone();
    assert!(a.get("register_uri").is_none());
    assert_eq!(
        a["identity_types_supported"],
        json!(["anonymous", "service_auth"])
    );
}

/// `[registration]` switches a flow off in both dialects.
#[tokio::test]
async fn registration_switches_apply_to_both() {
    let t = TestApp::new(
        Backend::Sqlite,
        &format!("{CURRENT_ON}[registration]\nanonymous = false\nverified_email = false\n"),
    )
    .await;
    let a = metadata(&t).await["agent_auth"].clone();
    assert_eq!(a["identity_types_supported"], json!([]));
}

/// `/auth.md` explains the current dialect first, and the original one as
/// still supported; off, the document is unchanged (the snapshots).
#[tokio::test]
async fn auth_md_explains_the_current_dialect_first() {
    let t = TestApp::new(Backend::Sqlite, &format!("{CURRENT_ON}{PROVIDER}")).await;
    let md = t.get("/auth.md", None).await.text();
    let current = md.find("## The current dialect").unwrap_or(usize::MAX);
    let original = md.find("## 1. Discover").unwrap_or(0);
    assert!(current < original, "current dialect first");
    for needle in [
        "http://127.0.0.1:8080/agent/identity",
        "http://127.0.0.1:8080/oauth2/token",
        "{\"type\": \"anonymous\"}",
        "urn:ietf:params:oauth:token-type:id-jag",
        "login_required",
        "interaction_required",
        "is still supported",
    ] {
        assert!(md.contains(needle), "{needle}");
    }
    assert!(
        !md.contains("provider.example"),
        "the trust list stays private"
    );
    let t = TestApp::new(Backend::Sqlite, &format!("{CURRENT_OFF}{PROVIDER}")).await;
    assert!(
        !t.get("/auth.md", None)
            .await
            .text()
            .contains("## The current dialect")
    );
}
