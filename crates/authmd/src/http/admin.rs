//! The admin API: operator controls and the audit trail, on a listener of
//! its own (`[admin] listen`), behind a bearer token (`[admin] token`).
//! Handlers call [`crate::admin::Admin`], as the CLI does.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /admin/registrations` | list (`status`, `type`, `user`, `email`, `provider`, `created_after`, `created_before`, `expires_after`, `expires_before`, `after`, `limit`) |
//! | `GET /admin/registrations/{id}` | one, with its credentials and events |
//! | `POST /admin/registrations/{id}/revoke` | revoke it |
//! | `GET /admin/users` | list (`email`, `after`, `limit`) |
//! | `POST /admin/users/{id}/revoke` | revoke all of a user's registrations |
//! | `GET /admin/delegations` | list (`provider`, `sub`, `user`, `state`, `after`, `limit`) |
//! | `POST /admin/providers/revoke` | revoke all a provider issued (`{"iss": …}`) |
//! | `POST /admin/revoke-all` | revoke every live registration (`{"confirm": "revoke-all"}`) |
//! | `GET /admin/blocks` | the blocks in force |
//! | `POST /admin/blocks` | block a subject, user or address from registering (`{"kind": …}`) |
//! | `POST /admin/blocks/remove` | lift a block (same body) |
//! | `GET /admin/events` | audit events (`event`, `registration`, `user`, `provider`, `ip`, `since`, `until`, `after`, `limit`) |
//! | `GET /admin/events/export` | the same as JSON lines, every page |
//! | `GET /admin/events/stream` | server-sent events, live, from every replica |
//!
//! Revocations take an optional JSON body `{"reason": …}`; the operator is
//! named by the `X-Authmd-Operator` header (default `admin-api`).

use std::convert::Infallible;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::extract::{MAX_BODY, Meta};
use crate::AuthMd;
use crate::admin::{Admin, AdminError, BlockRequest, EventQuery, RevokeRequest};
use crate::store::{DelegationFilter, RegistrationFilter, RevokeTarget, TailCursor, UserFilter};
use crate::time::Timestamp;
use crate::token::SecretHash;

/// The operator named when a request does not say.
pub const DEFAULT_OPERATOR: &str = "admin-api";
/// The header naming the operator.
pub const OPERATOR_HEADER: &str = "x-authmd-operator";
/// The body `POST /admin/revoke-all` requires.
pub const REVOKE_ALL_CONFIRMATION: &str = "revoke-all";

#[derive(Clone)]
struct AdminState {
    app: AuthMd,
    admin: Admin,
    token: SecretHash,
}

impl axum::extract::FromRef<AdminState> for AuthMd {
    fn from_ref(s: &AdminState) -> AuthMd {
        s.app.clone()
    }
}

/// The admin API, or `None` when `[admin]` is not configured.
pub fn admin_router(app: AuthMd) -> Option<Router> {
    let token = SecretHash::of(app.config().admin.token.as_ref()?.expose());
    let state = AdminState {
        admin: Admin::new(std::sync::Arc::clone(app.store())),
        app,
        token,
    };
    let router = Router::new()
        .route("/admin/registrations", get(registrations))
        .route("/admin/registrations/{id}", get(registration))
        .route(
            "/admin/registrations/{id}/revoke",
            post(revoke_registration),
        )
        .route("/admin/users", get(users))
        .route("/admin/users/{id}/revoke", post(revoke_user))
        .route("/admin/delegations", get(delegations))
        .route("/admin/providers/revoke", post(revoke_provider))
        .route("/admin/revoke-all", post(revoke_all))
        .route("/admin/blocks", get(blocks).post(block))
        .route("/admin/blocks/remove", post(unblock))
        .route("/admin/events", get(events))
        .route("/admin/events/export", get(export))
        .route("/admin/events/stream", get(stream))
        .route("/metrics", get(admin_metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
        .layer(super::observe::ObserveLayer::new());
    Some(router)
}

async fn admin_metrics(State(state): State<AdminState>) -> Response {
    super::metrics_response(&state.app).await
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        match self {
            AdminError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
            AdminError::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", &m),
            AdminError::Store(e) => crate::Error::from(e).into_response(),
        }
    }
}

fn json<T: serde::Serialize>(result: Result<T, AdminError>) -> Response {
    match result {
        Ok(v) => {
            let mut r = axum::Json(v).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

/// Every admin request carries `Authorization: Bearer <admin token>`,
/// compared in constant time (as hashes, so the length leaks nothing).
async fn authenticate(State(state): State<AdminState>, req: Request<Body>, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, token)| SecretHash::of(token.trim()));
    let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(state.token.as_bytes())));
    if !ok {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the admin token is missing or wrong",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"authmd-admin\""),
        );
        return r;
    }
    next.run(req).await
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
}

/// A query string, refused as `invalid_request` when it does not fit.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, AdminError> {
    q.map(|q| q.0)
        .map_err(|e| AdminError::Invalid(e.body_text()))
}

/// An optional JSON body (empty means every field absent).
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, AdminError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    if bytes.len() > MAX_BODY {
        return Err(AdminError::Invalid("the body is too large".into()));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError::Invalid(format!("the body is not the expected JSON: {e}")))
}

fn operator(headers: &HeaderMap) -> String {
    headers
        .get(OPERATOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| DEFAULT_OPERATOR.to_owned(), str::to_owned)
}

async fn registrations(
    State(s): State<AdminState>,
    q: Result<Query<RegistrationFilter>, QueryRejection>,
) -> Response {
    let result = async { s.admin.registrations(&query(q)?, Timestamp::now()).await };
    json(result.await)
}

async fn registration(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    json(s.admin.registration(&id, Timestamp::now()).await)
}

async fn users(
    State(s): State<AdminState>,
    q: Result<Query<UserFilter>, QueryRejection>,
) -> Response {
    let result = async { s.admin.users(&query(q)?).await };
    json(result.await)
}

async fn delegations(
    State(s): State<AdminState>,
    q: Result<Query<DelegationFilter>, QueryRejection>,
) -> Response {
    let result = async { s.admin.delegations(&query(q)?).await };
    json(result.await)
}

async fn events(
    State(s): State<AdminState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Response {
    let result = async { s.admin.events(&query(q)?).await };
    json(result.await)
}

/// Every matching event as JSON lines.
async fn export(
    State(s): State<AdminState>,
    q: Result<Query<EventQuery>, QueryRejection>,
) -> Response {
    let stream = match query(q).and_then(|q| s.admin.export(&q)) {
        Ok(stream) => stream,
        Err(e) => return e.into_response(),
    };
    let lines = stream.map(|record| {
        let record = record.map_err(|e| {
            tracing::error!(error = %e, "audit export failed");
            std::io::Error::other("audit export failed")
        })?;
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(line))
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(lines),
    )
        .into_response()
}

/// Server-sent events: each event with its cursor as the SSE `id`, so a
/// reconnecting client resumes with `Last-Event-ID` (or `?from=`). Without
/// either it starts at the end of the trail.
async fn stream(
    State(s): State<AdminState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let (from, filter) = match stream_query(raw.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from);
    let from = match resume {
        Some(c) => match c.parse::<TailCursor>() {
            Ok(c) => c,
            Err(e) => return AdminError::Invalid(e).into_response(),
        },
        None => match s.admin.tail_position().await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        },
    };
    let tail = match s.admin.tail(from, &filter) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let events = tail.filter_map(|item| async move {
        match item {
            Ok((cursor, record)) => Some(Ok::<_, Infallible>(
                Event::default()
                    .id(cursor.to_string())
                    .event(record.event.clone())
                    .json_data(&record)
                    .unwrap_or_else(|_| Event::default().comment("unserializable event")),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "audit stream cannot read the trail");
                None
            }
        }
    });
    let mut r = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `from` is the stream's own parameter; the rest is an event filter.
fn stream_query(raw: &str) -> Result<(Option<String>, EventQuery), AdminError> {
    let mut from = None;
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if k == "from" {
            from = Some(v.into_owned());
        } else {
            rest.append_pair(&k, &v);
        }
    }
    let uri = format!("/?{}", rest.finish())
        .parse::<axum::http::Uri>()
        .map_err(|_| AdminError::Invalid("unreadable query string".into()))?;
    Ok((from, query(Query::<EventQuery>::try_from_uri(&uri))?))
}

async fn revoke(
    s: &AdminState,
    target: RevokeTarget,
    headers: &HeaderMap,
    meta: &crate::audit::RequestMeta,
    reason: Option<String>,
) -> Response {
    let result = s
        .admin
        .revoke(target, &operator(headers), reason, meta, Timestamp::now())
        .await;
    if result.is_ok() {
        s.app.refresh_after_commit().await;
    }
    json(result)
}

async fn revoke_registration(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    match body::<RevokeRequest>(&bytes) {
        Ok(b) => {
            revoke(
                &s,
                RevokeTarget::Registration(id),
                &headers,
                &meta,
                b.reason,
            )
            .await
        }
        Err(e) => e.into_response(),
    }
}

async fn revoke_user(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    match body::<RevokeRequest>(&bytes) {
        Ok(b) => revoke(&s, RevokeTarget::User(id), &headers, &meta, b.reason).await,
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRevoke {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke_provider(
    State(s): State<AdminState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    match body::<ProviderRevoke>(&bytes) {
        Ok(ProviderRevoke {
            iss: Some(iss),
            reason,
        }) => revoke(&s, RevokeTarget::Provider(iss), &headers, &meta, reason).await,
        Ok(_) => {
            AdminError::Invalid("iss (the provider's issuer) is required".into()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeAll {
    #[serde(default)]
    confirm: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke_all(
    State(s): State<AdminState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    match body::<RevokeAll>(&bytes) {
        Ok(b) if b.confirm.as_deref() == Some(REVOKE_ALL_CONFIRMATION) => {
            revoke(&s, RevokeTarget::All, &headers, &meta, b.reason).await
        }
        Ok(_) => AdminError::Invalid(format!(
            "revoking every registration needs {{\"confirm\": \"{REVOKE_ALL_CONFIRMATION}\"}}"
        ))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn blocks(State(s): State<AdminState>) -> Response {
    json(s.admin.blocks().await)
}

async fn block(
    State(s): State<AdminState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let result = async {
        let req = body::<BlockRequest>(&bytes)?;
        s.admin
            .block(
                req.target()?,
                &operator(&headers),
                req.reason,
                &meta,
                Timestamp::now(),
            )
            .await
    };
    json(result.await)
}

async fn unblock(
    State(s): State<AdminState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let result = async {
        let req = body::<BlockRequest>(&bytes)?;
        s.admin
            .unblock(
                req.target()?,
                &operator(&headers),
                req.reason,
                &meta,
                Timestamp::now(),
            )
            .await
    };
    json(result.await)
}
