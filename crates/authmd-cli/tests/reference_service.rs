//! `authmd agent` and `authmd provider revoke` against a service built from
//! the reference implementation: its documents as the reference serves
//! them (no `issuer` in the authorization server metadata, protected
//! resource metadata at the root well-known URL), here also without a
//! `revocation_uri`, as some such services publish none.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

#[allow(dead_code)] // not every helper is used here
mod common;
use common::authmd;

#[derive(Clone, Default)]
struct Seen {
    /// (content type, body) of each revocation request.
    revocations: Arc<Mutex<Vec<(String, String)>>>,
}

async fn reference_service() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let b = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Seen::default();
    let prm = json!({
        "resource": format!("{b}/api/"),
        "resource_name": "Agent Auth Consumer",
        "authorization_servers": [b],
        "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"],
    });
    let asm = json!({
        "resource": format!("{b}/api/"),
        "authorization_servers": [b],
        "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"],
        "agent_auth": {
            "skill": format!("{b}/auth.md"),
            "register_uri": format!("{b}/agent/auth"),
            "claim_uri": format!("{b}/agent/auth/claim"),
            "identity_types_supported": ["anonymous", "identity_assertion"],
            "anonymous": {"credential_types_supported": ["api_key"]},
            "identity_assertion": {
                "assertion_types_supported": ["urn:ietf:params:oauth:token-type:id-jag", "verified_email"],
                "credential_types_supported": ["access_token", "api_key"]
            }
        }
    });
    let challenge =
        format!("Bearer resource_metadata=\"{b}/.well-known/oauth-protected-resource\"");
    let app = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(move || async move { axum::Json(prm) }),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(move || async move { axum::Json(asm) }),
        )
        .route(
            "/api/resource",
            get(move || async move {
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", challenge)],
                    axum::Json(
                        json!({"error": "unauthorized", "message": "Missing Bearer credential."}),
                    ),
                )
            }),
        )
        .route(
            "/agent/auth/revoke",
            post(
                |State(seen): State<Seen>, headers: HeaderMap, body: Bytes| async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.revocations
                        .lock()
                        .expect("lock")
                        .push((ct, String::from_utf8_lossy(&body).into_owned()));
                    axum::Json(json!({"revoked": 1})).into_response()
                },
            ),
        )
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (b, seen)
}

async fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut c = authmd(dir);
    c.args(args)
        .env("AUTHMD_PROVIDER_DIR", dir.join("provider"))
        .env("AUTHMD_PROVIDER_ISSUER", "http://127.0.0.1:9")
        .env("AUTHMD_AGENT_HOME", dir.join("agent"));
    tokio::process::Command::from(c)
        .output()
        .await
        .expect("run authmd")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn provider_revoke_reaches_a_reference_service_through_revocation_uri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, seen) = reference_service().await;
    let api = format!("{base}/api/resource");
    let out = run(dir.path(), &["provider", "keys", "generate"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    // The agent side discovers it, with the missing issuer pointed out.
    let out = run(dir.path(), &["agent", "discover", &api]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning") && stderr(&out).contains("no issuer"));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("issuer:        {base}")));

    // Nothing published, nothing given: a clear refusal naming the flag.
    let out = run(
        dir.path(),
        &["provider", "revoke", "--sub", "u-1", "--service", &api],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--revocation-uri"),
        "{}",
        stderr(&out)
    );

    // Another origin than the service's issuer: the token is not sent.
    let elsewhere = "http://127.0.0.1:9/agent/auth/revoke";
    let out = run(
        dir.path(),
        &[
            "provider",
            "revoke",
            "--sub",
            "u-1",
            "--service",
            &api,
            "--revocation-uri",
            elsewhere,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not on the origin"),
        "{}",
        stderr(&out)
    );
    assert!(seen.revocations.lock().expect("lock").is_empty());

    let uri = format!("{base}/agent/auth/revoke");
    let out = run(
        dir.path(),
        &[
            "provider",
            "revoke",
            "--sub",
            "u-1",
            "--service",
            &api,
            "--revocation-uri",
            &uri,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no issuer"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked 1 credential(s) of u-1"));
    let sent = seen.revocations.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "application/logout+jwt");
    let payload = sent[0].1.split('.').nth(1).unwrap_or_default();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(
        claims["aud"],
        base.as_str(),
        "the audience is the issuer the resource names"
    );
    assert_eq!(claims["sub"], "u-1");
}
