//! The HTTP surface: [`router`] builds the whole server; handlers in
//! `routes.rs` are thin (decode, call one `AuthMd` method, encode).

mod admin;
mod error;
pub mod extract;
mod routes;

pub use admin::{DEFAULT_OPERATOR, OPERATOR_HEADER, REVOKE_ALL_CONFIRMATION, admin_router};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};

use crate::AuthMd;

pub use error::status;

/// The complete authmd server: [`agent_router`] plus the built-in protected
/// resource (`whoami`; other paths under the resource answer 404 once
/// validated). Drive it in-process with `tower::ServiceExt::oneshot`, or
/// serve it with `into_make_service_with_connect_info::<SocketAddr>()` so
/// that client IPs are known.
pub fn router(app: AuthMd) -> Router {
    // Everything under the resource path is validated before routing, so an
    // unknown path there answers 401 to a stranger and 404 to an agent.
    let resource_path = app.urls().resource_path.clone();
    let resource = Router::new()
        .route(&format!("{resource_path}whoami"), get(routes::whoami))
        .route(
            &format!("{resource_path}{{*rest}}"),
            any(routes::resource_not_found),
        )
        .route(&resource_path, any(routes::resource_not_found))
        .layer(app.require_credential());
    with_agent_routes(app, resource)
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
        .route(crate::discovery::JWKS_PATH, get(routes::jwks));
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
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            routes::agent_timeout,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY));
    router
        .merge(agent)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(app)
}
