//! The HTTP surface: [`router`] builds the whole server; handlers in
//! `routes.rs` are thin (decode, call one `AuthMd` method, encode).

mod admin;
mod cors;
mod current;
mod error;
pub mod extract;
pub mod forward_auth;
pub mod gateway;
mod identity_headers;
pub mod oauth;
pub mod observe;
mod routes;

pub use admin::{DEFAULT_OPERATOR, OPERATOR_HEADER, REVOKE_ALL_CONFIRMATION, admin_router};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::routing::{any, get, post};
use tower::Layer;

use crate::AuthMd;

pub use error::status;

/// The complete authmd server: [`agent_router`] plus the protected
/// resource: with `[upstream]`, the gateway to the API behind authmd
/// (`gateway.rs`); without, the built-in resource (`whoami`; other paths
/// under the resource answer 404 once validated). Drive it in-process with `tower::ServiceExt::oneshot`, or
/// serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// that client IPs are known.
pub fn router(app: AuthMd) -> Router {
    let resource_path = app.urls().resource_path.clone();
    let builtin = Router::new()
        .route(&format!("{resource_path}whoami"), get(routes::whoami))
        .fallback(routes::resource_not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let resource = match gateway::Gateway::new(&app) {
        Some(gateway) => protect(&app, gateway),
        None => protect(&app, builtin),
    };
    with_agent_routes(app, resource)
}

/// Routes everything under the resource path to `service`, behind the
/// credential layer. The layer wraps the whole service, so validation and
/// the scope rules come before any routing there: a stranger gets 401 and
/// a key without the scope 403 whatever the method or path (never a 405
/// or 404 that would tell what exists).
fn protect<S>(app: &AuthMd, service: S) -> Router<AuthMd>
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let resource_path = &app.urls().resource_path;
    let protected = app.require_credential().layer(service);
    Router::new()
        .route_service(&format!("{resource_path}{{*rest}}"), protected.clone())
        .route_service(resource_path, protected)
}

/// `GET /metrics` alone, without authentication, for `[metrics] listen`
/// (the admin router serves it too, behind its token).
pub fn metrics_router(app: AuthMd) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<AuthMd>| async move { metrics_response(&app).await }),
        )
        .fallback(routes::not_found)
        .with_state(app)
}

/// The Prometheus text exposition (404 when no recorder is installed).
async fn metrics_response(app: &AuthMd) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    match app.render_metrics().await {
        Some(text) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            text,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not enabled in this process",
        )
            .into_response(),
    }
}

/// What a service that serves its own API needs from authmd: discovery,
/// registration and health. Protect the API's routes with
/// [`AuthMd::require_credential`] and merge the two routers.
pub fn agent_router(app: AuthMd) -> Router {
    with_agent_routes(app, Router::new())
}

fn with_agent_routes(app: AuthMd, base: Router<AuthMd>) -> Router {
    let mut router = base
        .route(
            "/.well-known/oauth-authorization-server",
            get(routes::as_metadata),
        )
        .route("/auth.md", get(routes::auth_md))
        .route(crate::discovery::JWKS_PATH, get(routes::jwks))
        .route(forward_auth::PATH, any(forward_auth::forward_auth))
        .route(
            &format!("{}/{{*original}}", forward_auth::PATH),
            any(forward_auth::forward_auth),
        );
    for path in &app.urls().prm_paths {
        router = router.route(path, get(routes::protected_resource_metadata));
    }
    let agent = Router::new()
        .route("/agent/auth", post(routes::register))
        .route("/agent/auth/claim", post(routes::start_claim))
        .route(
            routes::CLAIM_VIEW_PATH,
            get(routes::claim_view).post(routes::claim_view_action),
        )
        .route(
            "/agent/auth/claim/attempt/challenge",
            post(routes::challenge),
        )
        .route("/agent/auth/claim/complete", post(routes::complete_claim))
        .route("/agent/auth/revoke", post(routes::revoke))
        .route(crate::discovery::IDENTITY_PATH, post(current::identity))
        .route(
            crate::discovery::IDENTITY_CLAIM_PATH,
            post(current::identity_claim),
        )
        .route(
            crate::discovery::IDENTITY_CLAIM_COMPLETE_PATH,
            post(current::identity_claim_complete),
        )
        .route(
            crate::discovery::IDENTITY_VERIFY_PATH,
            get(current::verify_page).post(current::verify_action),
        )
        .route(crate::discovery::EVENTS_PATH, post(current::events))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            routes::agent_timeout,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY));
    router
        .merge(agent)
        // Outside the agent endpoints' timeout layer: these bound their
        // body read themselves (introspection is a hot path).
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(crate::discovery::TOKEN_PATH, post(current::token))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(app.clone())
        .layer(cors::CorsLayer::new(app))
        .layer(observe::ObserveLayer::new())
}
