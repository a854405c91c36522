//! Handlers: each decodes its input, calls one `AuthMd` method and encodes
//! the result. No protocol logic lives here.

use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{JsonBody, LogoutToken, Meta};
use crate::AuthMd;
use crate::claim::{ChallengeBody, ClaimBody, ClaimPage, CompleteBody};
use crate::credential::UserSummary;
use crate::error::ProtocolError;
use crate::middleware::Agent;
use crate::register::RegisterRequest;
use crate::time::Timestamp;
use crate::vocab::{RegistrationStatus, RegistrationType};

const JSON: &str = "application/json";
const PUBLIC_5_MIN: &str = "public, max-age=300";

fn document(body: bytes::Bytes, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, PUBLIC_5_MIN),
        ],
        body,
    )
        .into_response()
}

/// A JSON answer that must not be cached (it holds, or may hold, a secret),
/// serialized once into a buffer of the right size.
fn private_json<T: Serialize>(value: &T) -> Response {
    let mut body = Vec::with_capacity(512);
    if let Err(e) = serde_json::to_writer(&mut body, value) {
        return crate::Error::internal(e).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(JSON)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// Marks a response that holds (or may hold) a secret as uncacheable.
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub async fn protected_resource_metadata(State(app): State<AuthMd>) -> Response {
    document(app.documents().protected_resource.clone(), JSON)
}

pub async fn as_metadata(State(app): State<AuthMd>) -> Response {
    document(app.documents().authorization_server.clone(), JSON)
}

/// `GET /.well-known/jwks.json`: authmd's own public keys, including
/// those rotated out but still verifying what they signed.
pub async fn jwks(State(app): State<AuthMd>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(JSON)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static(JWKS_CACHE_CONTROL),
            ),
        ],
        app.service_keys().jwks(),
    )
        .into_response()
}

/// `max-age` is `service_keys::JWKS_MAX_AGE`: a rotated key signs only
/// after verifiers that cache this long have seen it.
const JWKS_CACHE_CONTROL: &str = "public, max-age=300";
const _: () = assert!(crate::service_keys::JWKS_MAX_AGE.as_secs() == 300);

pub async fn auth_md(State(app): State<AuthMd>) -> Response {
    document(
        app.documents().auth_md.clone(),
        "text/markdown; charset=utf-8",
    )
}

pub async fn register(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<RegisterRequest>, ProtocolError>,
) -> Response {
    let result = app
        .register(body.map(|b| b.0), &meta, Timestamp::now())
        .await;
    match result {
        Ok(registered) => {
            let mut res = private_json(&registered);
            res.extensions_mut()
                .insert(super::observe::LoggedRegistration(
                    registered.registration_id().to_owned(),
                ));
            res
        }
        Err(e) => no_store(e.into_response()),
    }
}

/// A JSON answer of the claim endpoints (never cached: it may hold a
/// secret or a code).
fn claim_json<T: Serialize>(result: Result<T, crate::Error>) -> Response {
    match result {
        Ok(v) => private_json(&v),
        Err(e) => no_store(e.into_response()),
    }
}

/// [`claim_json`], counting the step's outcome (`ok` or the error code).
fn claim_step<T: Serialize>(step: &'static str, result: Result<T, crate::Error>) -> Response {
    crate::metrics::claim(
        step,
        match &result {
            Ok(_) => "ok",
            Err(crate::Error::Protocol(e)) => e.code(),
            Err(crate::Error::Internal(_)) => "server_error",
        },
    );
    match result {
        Ok(v) => private_json(&v),
        Err(e) => no_store(e.into_response()),
    }
}

pub async fn start_claim(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<ClaimBody>, ProtocolError>,
) -> Response {
    claim_step(
        "start",
        app.start_claim(body.map(|b| b.0), &meta, Timestamp::now())
            .await,
    )
}

pub async fn challenge(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<ChallengeBody>, ProtocolError>,
) -> Response {
    claim_step(
        "challenge",
        app.challenge(body.map(|b| b.0), &meta, Timestamp::now())
            .await,
    )
}

pub async fn complete_claim(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<CompleteBody>, ProtocolError>,
) -> Response {
    claim_step(
        "complete",
        app.complete_claim(body.map(|b| b.0), &meta, Timestamp::now())
            .await,
    )
}

/// `POST /agent/auth/revoke` (§5): the logout token as the body
/// (`application/logout+jwt`) or as the form field `logout_token`.
pub async fn revoke(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    token: Result<LogoutToken, ProtocolError>,
) -> Response {
    claim_json(
        app.revoke_by_provider(token.map(|t| t.0), &meta, Timestamp::now())
            .await,
    )
}

#[derive(Deserialize)]
pub struct ViewQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub struct ViewForm {
    token: String,
    action: String,
}

/// `GET /agent/auth/claim/view?token=…`: shows the request; mints nothing
/// (link scanners and reloads must not burn or reveal codes).
pub async fn claim_view(
    State(app): State<AuthMd>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|q| q.0.token);
    let page = app.claim_page(token.as_deref(), Timestamp::now()).await;
    page_response(&app, page)
}

/// `POST /agent/auth/claim/view` (`token`, `action` = `show` | `deny`).
pub async fn claim_view_action(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    form: Result<Form<ViewForm>, FormRejection>,
) -> Response {
    let now = Timestamp::now();
    let page = match form.ok().map(|f| f.0) {
        Some(f) if f.action == "show" => {
            let page = app.claim_page_show(&f.token, &meta, now).await;
            crate::metrics::claim(
                "show_code",
                if page.is_ok() { "ok" } else { "server_error" },
            );
            page
        }
        Some(f) if f.action == "deny" => {
            let page = app.claim_page_deny(&f.token, &meta, now).await;
            crate::metrics::claim("deny", if page.is_ok() { "ok" } else { "server_error" });
            page
        }
        _ => Ok(ClaimPage::MissingToken),
    };
    page_response(&app, page)
}

fn page_response(app: &AuthMd, page: Result<ClaimPage, crate::Error>) -> Response {
    page_at(app, page, CLAIM_VIEW_PATH)
}

/// A claim page whose forms post to `path`, with its security headers:
/// no script at all, its one style sheet by hash, never framed or cached.
pub(super) fn page_at(app: &AuthMd, page: Result<ClaimPage, crate::Error>, path: &str) -> Response {
    let page = match page {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (status, html) = crate::claim_page::render(&page, &app.config().resource.name, path);
    let csp = format!(
        "default-src 'none'; style-src {}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        crate::claim_page::style_hash()
    );
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

pub const CLAIM_VIEW_PATH: &str = "/agent/auth/claim/view";

/// `GET <resource>whoami` (docs/protocol.md §2.4).
#[derive(Serialize)]
struct WhoAmI<'a> {
    registration_id: &'a str,
    registration_type: RegistrationType,
    registration_status: RegistrationStatus,
    /// The claim deadline while unclaimed; `null` once claimed.
    registration_expires: Option<Timestamp>,
    credential_id: &'a str,
    credential_type: &'a str,
    credential_expires: Option<Timestamp>,
    scopes: &'a [String],
    user: Option<&'a UserSummary>,
}

pub async fn whoami(agent: Agent) -> Response {
    let r = &agent.0;
    let unclaimed = matches!(
        r.registration_status,
        RegistrationStatus::Unclaimed | RegistrationStatus::PendingClaim
    );
    private_json(&WhoAmI {
        registration_id: &r.registration_id,
        registration_type: r.registration_type,
        registration_status: r.registration_status,
        registration_expires: r.registration_expires_at.filter(|_| unclaimed),
        credential_id: &r.credential_id,
        credential_type: r.credential_type.as_str(),
        credential_expires: r.expires_at,
        scopes: &r.scopes,
        user: r.user.as_ref(),
    })
}

/// A validated request for a path the resource does not serve (yet).
pub async fn resource_not_found(_: Agent) -> Response {
    ProtocolError::NotFound.into_response()
}

pub async fn not_found() -> Response {
    ProtocolError::NotFound.into_response()
}

pub async fn method_not_allowed() -> Response {
    ProtocolError::MethodNotAllowed.into_response()
}

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the store answers.
pub async fn readyz(State(app): State<AuthMd>) -> Response {
    match app.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// Bounds the time of a request to the agent endpoints (body read and
/// processing) by `server.request_timeout`.
pub async fn agent_timeout(State(app): State<AuthMd>, req: Request<Body>, next: Next) -> Response {
    let limit = app.config().server.request_timeout.get();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(
                serde_json::json!({"error": "invalid_request", "message": "request timed out"}),
            ),
        )
            .into_response(),
    }
}
