//! The tower layer and extractor, protecting a service's own routes.

use authmd::Agent;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::{Backend, TestApp};

async fn call(
    router: &Router,
    method: Method,
    path: &str,
    bearer: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let res = router
        .clone()
        .oneshot(b.body(Body::empty()).unwrap_or_default())
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status().as_u16();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (
        status,
        challenge,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_service_protects_its_routes_with_the_same_answers() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    async fn list(agent: Agent) -> String {
        format!(
            "notes of {} with {}",
            agent.registration_id,
            agent.scopes.join(",")
        )
    }
    async fn create(_: Agent) -> &'static str {
        "created"
    }
    let service = Router::new()
        .route("/api/notes", get(list))
        .route("/api/notes", post(create))
        .layer(t.app.require_credential());

    let (status, challenge, _) = call(&service, Method::GET, "/api/notes", None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        t.get("/api/whoami", None)
            .await
            .header("www-authenticate")
            .map(str::to_owned)
    );

    let (status, challenge, _) = call(&service, Method::GET, "/api/notes", Some("nope")).await;
    assert_eq!(status, 401);
    assert!(
        challenge
            .unwrap_or_default()
            .contains("error=\"invalid_token\"")
    );

    let (status, _, body) = call(&service, Method::GET, "/api/notes", Some(&key)).await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("notes of reg_") && body.ends_with("with api.read"),
        "{body}"
    );

    // The configured rule: writes need api.write, which a pre-claim key lacks.
    let (status, challenge, _) = call(&service, Method::POST, "/api/notes", Some(&key)).await;
    assert_eq!(status, 403);
    assert!(
        challenge
            .unwrap_or_default()
            .contains("scope=\"api.write\"")
    );
}

/// An `Agent` extractor on a route without the layer refuses to serve it.
#[tokio::test]
async fn agent_without_the_layer_fails_closed() {
    async fn handler(_: Agent) -> &'static str {
        "should not be reached"
    }
    let router = Router::new().route("/x", get(handler));
    let (status, _, body) = call(&router, Method::GET, "/x", None).await;
    assert_eq!(status, 500);
    assert!(!body.contains("reached"));
}

#[tokio::test]
async fn nested_routers_match_rules_on_the_full_path() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    async fn create(_: Agent) -> &'static str {
        "created"
    }
    let inner = Router::new().route("/notes", post(create));
    let service = Router::new()
        .nest("/api", inner)
        .layer(t.app.require_credential());
    let (status, _, _) = call(&service, Method::POST, "/api/notes", Some(&key)).await;
    assert_eq!(
        status, 403,
        "the /api/ write rule must apply inside a nested router"
    );
}
