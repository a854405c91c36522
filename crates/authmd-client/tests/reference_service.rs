//! The client against a service built from the reference implementation:
//! its documents exactly as the reference serves them (protected resource
//! metadata at the root well-known URL only, authorization server metadata
//! without `issuer`, the `{error, message}` bodies, the bare challenge).

use std::sync::{Arc, Mutex};

use authmd_client::{Client, ClientError, Method, MethodKind};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// A service shaped like the reference (`http://localhost:8000` there).
struct Reference {
    base: String,
    /// The AS metadata served; tests change it.
    asm: Arc<Mutex<Value>>,
}

const KEY: &str = "amd_sk_reference-shaped-key";

impl Reference {
    async fn start() -> Reference {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let asm = Arc::new(Mutex::new(reference_asm(&base)));
        let state = (base.clone(), Arc::clone(&asm));
        let app = Router::new()
            .route(
                "/.well-known/oauth-protected-resource",
                get(|State((b, _)): State<Shared>| async move {
                    json_ok(json!({
                        "resource": format!("{b}/api/"),
                        "resource_name": "Agent Auth Consumer",
                        "resource_logo_uri": format!("{b}/logo.png"),
                        "authorization_servers": [b],
                        "scopes_supported": ["api.read", "api.write"],
                        "bearer_methods_supported": ["header"],
                    }))
                }),
            )
            .route(
                "/.well-known/oauth-authorization-server",
                get(|State((_, asm)): State<Shared>| async move {
                    let v = asm.lock().expect("lock").clone();
                    json_ok(v)
                }),
            )
            .route(
                "/agent/auth",
                post(|State((b, _)): State<Shared>| async move {
                    json_ok(json!({
                        "registration_id": "reg_0123456789abcdef012345",
                        "registration_type": "anonymous",
                        "credential_type": "api_key",
                        "credential": KEY,
                        "credential_expires": null,
                        "scopes": ["api.read"],
                        "claim_url": format!("{b}/agent/auth/claim"),
                        "claim_token": "clm_reference",
                        "claim_token_expires": "2030-01-01T00:00:00.000Z",
                        "post_claim_scopes": ["api.read", "api.write"],
                    }))
                }),
            )
            .route(
                "/api/resource",
                get(
                    |State((b, _)): State<Shared>, headers: HeaderMap| async move {
                        let bearer = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "));
                        if bearer == Some(KEY) {
                            return json_ok(json!({"ok": true}));
                        }
                        (
                            StatusCode::UNAUTHORIZED,
                            [(
                                "www-authenticate",
                                format!(
                                    "Bearer resource_metadata=\"{b}/.well-known/oauth-protected-resource\""
                                ),
                            )],
                            axum::Json(json!({
                                "error": "unauthorized",
                                "message": "Missing Bearer credential."
                            })),
                        )
                            .into_response()
                    },
                ),
            )
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Reference { base, asm }
    }

    fn set_asm(&self, v: Value) {
        *self.asm.lock().expect("lock") = v;
    }
}

type Shared = (String, Arc<Mutex<Value>>);

fn json_ok(v: Value) -> Response {
    ([("cache-control", "public, max-age=300")], axum::Json(v)).into_response()
}

/// The reference's AS metadata, field for field: no `issuer`, PRM fields
/// restated, the `agent_auth` block.
fn reference_asm(b: &str) -> Value {
    json!({
        "resource": format!("{b}/api/"),
        "authorization_servers": [b],
        "scopes_supported": ["api.read", "api.write"],
        "bearer_methods_supported": ["header"],
        "agent_auth": {
            "skill": format!("{b}/auth.md"),
            "register_uri": format!("{b}/agent/auth"),
            "claim_uri": format!("{b}/agent/auth/claim"),
            "revocation_uri": format!("{b}/agent/auth/revoke"),
            "identity_types_supported": ["anonymous", "identity_assertion"],
            "anonymous": {"credential_types_supported": ["api_key"]},
            "identity_assertion": {
                "assertion_types_supported": ["urn:ietf:params:oauth:token-type:id-jag", "verified_email"],
                "credential_types_supported": ["access_token", "api_key"]
            },
            "events_supported": ["https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"]
        }
    })
}

fn client() -> Client {
    Client::new().expect("client")
}

/// The whole anonymous flow against the reference's documents: discovered
/// from the API's 401 (and from the issuer alone), with a warning naming
/// the missing `issuer`; registered; the key works.
#[tokio::test]
async fn metadata_without_issuer_is_accepted_with_a_warning_when_the_resource_names_it() {
    let r = Reference::start().await;
    let api = format!("{}/api/resource", r.base);
    let service = client().discover(&api).await.expect("discovered");
    assert_eq!(service.issuer, r.base);
    assert_eq!(service.metadata.issuer, None);
    assert_eq!(service.warnings.len(), 1, "{:?}", service.warnings);
    assert!(
        service.warnings[0].contains("no issuer"),
        "{:?}",
        service.warnings
    );
    assert!(service.supports(MethodKind::Anonymous));
    assert!(service.supports(MethodKind::IdJag));

    let registration = client()
        .register(&service, &Method::Anonymous)
        .await
        .expect("registered");
    let mut credential = registration.credential(&service).expect("a key");
    let answer = client()
        .call(&mut credential, reqwest::Method::GET, &api, |b| b)
        .await
        .expect("called");
    assert_eq!(answer.status(), 200);

    // From the issuer alone: its metadata points at the resource, whose
    // metadata names the issuer.
    let from_issuer = client().discover(&r.base).await.expect("from the issuer");
    assert_eq!(from_issuer.issuer, r.base);
    assert_eq!(from_issuer.warnings, service.warnings);
}

/// The reservation covers an absent `issuer` only: a present one that
/// differs is refused as before, and an issuer named by the caller (not by
/// the resource) must be confirmed by its metadata.
#[tokio::test]
async fn a_present_issuer_that_differs_is_still_refused() {
    let r = Reference::start().await;
    let api = format!("{}/api/resource", r.base);
    let mut asm = reference_asm(&r.base);
    asm["issuer"] = json!("https://idp.other.example");
    r.set_asm(asm);
    match client().discover(&api).await {
        Err(ClientError::Discovery(m)) => assert!(m.contains("names issuer"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }

    r.set_asm(reference_asm(&r.base));
    match client().authorization_server(&r.base).await {
        Err(ClientError::Discovery(m)) => assert!(m.contains("has no issuer"), "{m}"),
        other => panic!("the caller's own issuer must be confirmed, got {other:?}"),
    }

    let mut asm = reference_asm(&r.base);
    asm["issuer"] = json!(r.base);
    r.set_asm(asm);
    let service = client().discover(&api).await.expect("with issuer");
    assert!(service.warnings.is_empty(), "{:?}", service.warnings);
}
