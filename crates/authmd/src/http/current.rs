//! The current dialect's routes (docs/protocol.md §20): `POST
//! /agent/identity` and `POST /oauth2/token`. Decode, call one `AuthMd`
//! method, encode in this dialect's shapes: `{error, message}` for the
//! agent endpoints, `{error, error_description, …}` with a
//! `WWW-Authenticate: AgentAuth` challenge for its two `401`s, and RFC 6749
//! §5.2 at the token endpoint.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::status;
use super::extract::{JsonBody, Meta};
use super::oauth::{oauth_error_coded, read_form};
use crate::AuthMd;
use crate::current::{Identified, IdentityOutcome, IdentityRequest, code};
use crate::current_claim::{BROWSER_COOKIE, IdentityClaimBody, IdentityCompleteBody, VerifyAction};
use crate::error::{Error, ProtocolError, retry_after_secs};
use crate::grant::TokenRequest;
use crate::time::Timestamp;

const INTERACTION: &str =
    "ID-JAG matches existing account; user confirmation required to bind delegation";

/// `POST /agent/identity`.
pub async fn identity(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<IdentityRequest>, ProtocolError>,
) -> Response {
    let result = app
        .identity(body.map(|b| b.0), &meta, Timestamp::now())
        .await;
    match result {
        Ok(IdentityOutcome::Done(v)) => json(StatusCode::OK, &v),
        Ok(IdentityOutcome::InteractionRequired(v)) => {
            #[derive(Serialize)]
            struct StepUp<'a> {
                error: &'static str,
                error_description: &'static str,
                #[serde(flatten)]
                rest: &'a Identified,
            }
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                &StepUp {
                    error: "interaction_required",
                    error_description: INTERACTION,
                    rest: &v,
                },
            );
            let challenge = format!(
                "AgentAuth error=\"interaction_required\", error_description=\"{INTERACTION}\""
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
        Err(e) => error(e),
    }
}

/// `POST /agent/identity/claim`.
pub async fn identity_claim(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<IdentityClaimBody>, ProtocolError>,
) -> Response {
    let result = app
        .start_identity_claim(body.map(|b| b.0), &meta, Timestamp::now())
        .await;
    step("start", result)
}

/// `POST /agent/identity/claim/complete`.
pub async fn identity_claim_complete(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    body: Result<JsonBody<IdentityCompleteBody>, ProtocolError>,
) -> Response {
    let result = app
        .complete_identity_claim(body.map(|b| b.0), &meta, Timestamp::now())
        .await;
    step("complete", result)
}

/// A claim step's answer, counted like the original dialect's.
fn step<T: Serialize>(name: &'static str, result: Result<T, Error>) -> Response {
    crate::metrics::claim(
        name,
        match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        },
    );
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error(e),
    }
}

/// The browser cookie of the verification page, if sent.
fn browser_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == BROWSER_COOKIE && !v.is_empty() && v.len() <= 64)
        .map(|(_, v)| v.to_owned())
}

#[derive(serde::Deserialize)]
pub struct VerifyQuery {
    token: Option<String>,
}

#[derive(serde::Deserialize)]
pub struct VerifyForm {
    token: String,
    action: String,
}

/// `GET /agent/identity/claim/verify?token=…`: the agent's link, or the
/// emailed sign-in link. Mints nothing.
pub async fn verify_page(
    State(app): State<AuthMd>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let token = query.ok().and_then(|q| q.0.token);
    let browser = browser_cookie(&headers);
    let page = app
        .verify_page(token.as_deref(), browser.as_deref(), Timestamp::now())
        .await;
    super::routes::page_at(&app, page, crate::discovery::IDENTITY_VERIFY_PATH)
}

/// `POST /agent/identity/claim/verify` (`token`, `action` = `sign_in` |
/// `confirm` | `deny`).
pub async fn verify_action(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    headers: axum::http::HeaderMap,
    form: Result<axum::extract::Form<VerifyForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let browser = browser_cookie(&headers);
    let now = Timestamp::now();
    let (page, cookie) = match form.ok().map(|f| f.0) {
        Some(f) => {
            let action = match f.action.as_str() {
                "sign_in" => Some(VerifyAction::SignIn),
                "confirm" => Some(VerifyAction::Confirm),
                "deny" => Some(VerifyAction::Deny),
                _ => None,
            };
            match action {
                Some(a) => {
                    let name = match a {
                        VerifyAction::SignIn => "sign_in",
                        VerifyAction::Confirm => "show_code",
                        VerifyAction::Deny => "deny",
                    };
                    let r = app
                        .verify_action(a, &f.token, browser.as_deref(), &meta, now)
                        .await;
                    crate::metrics::claim(name, if r.is_ok() { "ok" } else { "server_error" });
                    match r {
                        Ok((p, c)) => (Ok(p), c),
                        Err(e) => (Err(e), None),
                    }
                }
                None => (Ok(crate::claim::ClaimPage::MissingToken), None),
            }
        }
        None => (Ok(crate::claim::ClaimPage::MissingToken), None),
    };
    let mut r = super::routes::page_at(&app, page, crate::discovery::IDENTITY_VERIFY_PATH);
    if let Some(value) = cookie {
        // HttpOnly and SameSite=Lax: sent when the emailed link is opened
        // (a top-level navigation), never to scripts or cross-site posts.
        let secure = if app.urls().issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        let max_age = app.config().ttl.claim_link.get().as_secs();
        let c = format!(
            "{BROWSER_COOKIE}={value}; Path={}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}",
            crate::discovery::IDENTITY_VERIFY_PATH
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

/// A refusal in this dialect's envelope.
pub fn error(e: Error) -> Response {
    let p = match e {
        Error::Protocol(p) => p,
        internal @ Error::Internal(_) => return no_store(internal.into_response()),
    };
    let mut r = match &p {
        ProtocolError::LoginRequired { max_age } => {
            let description = p.to_string();
            let mut r = json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({
                    "error": "login_required",
                    "error_description": description,
                    "max_age": max_age,
                }),
            );
            let challenge = format!(
                "AgentAuth error=\"login_required\", max_age=\"{max_age}\", error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            r
        }
        ProtocolError::RateLimited { retry_after } => {
            let secs = retry_after_secs(retry_after);
            let mut r = json(
                status(&p),
                &serde_json::json!({"error": code(&p), "message": p.to_string(), "retry_after": secs}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        _ => json(
            status(&p),
            &serde_json::json!({"error": code(&p), "message": p.to_string()}),
        ),
    };
    r = no_store(r);
    r
}

/// `POST /oauth2/token`: form parameters, each at most once.
pub async fn token(State(app): State<AuthMd>, Meta(meta): Meta, req: Request<Body>) -> Response {
    let form = read_form(req, app.config().server.request_timeout.get()).await;
    let request = form.and_then(|f| token_request(&f));
    match app.token(request, &meta, Timestamp::now()).await {
        Ok(t) => json(StatusCode::OK, &t),
        Err(e) => oauth_error_coded(e, code),
    }
}

/// The token request's parameters (RFC 6749 §3.2: unknown ones are
/// ignored; one given twice is `invalid_request`; §3.1: one without a value
/// is as if omitted). `resource` may be given more than once (RFC 8707
/// §2): the same value again changes nothing, another is `invalid_target`
/// (this service is one resource).
fn token_request(form: &[u8]) -> Result<TokenRequest, ProtocolError> {
    let mut req = TokenRequest::default();
    for (k, v) in url::form_urlencoded::parse(form) {
        if v.is_empty() {
            continue;
        }
        if k == "resource" && req.resource.is_some() {
            if req.resource.as_deref() != Some(v.as_ref()) {
                return Err(ProtocolError::InvalidTarget);
            }
            continue;
        }
        let slot = match k.as_ref() {
            "grant_type" => &mut req.grant_type,
            "assertion" => &mut req.assertion,
            "resource" => &mut req.resource,
            "scope" => &mut req.scope,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(ProtocolError::invalid_request(format!(
                "{k} must appear once"
            )));
        }
    }
    Ok(req)
}

/// A JSON answer that is never cached (it holds a secret, or may).
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => no_store(
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
        ),
        Err(e) => Error::internal(e).into_response(),
    }
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// `POST /agent/event/notify` (RFC 8935 push delivery of RFC 8417
/// security events): the body is the SET itself,
/// `application/secevent+jwt`. `202` with no body when accepted; `400
/// {"err", "description"}` with RFC 8935 §2.4's codes when not.
pub async fn events(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    headers: axum::http::HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let token = if media != "application/secevent+jwt" {
        Err(ProtocolError::invalid_request(
            "Content-Type must be application/secevent+jwt",
        ))
    } else {
        match body {
            Ok(b) => std::str::from_utf8(&b)
                .map(|s| s.trim().to_owned())
                .map_err(|_| ProtocolError::invalid_request("the body is not a compact JWT")),
            Err(_) => Err(ProtocolError::invalid_request(
                "cannot read the request body",
            )),
        }
    };
    let kind = crate::revoke::RevocationToken::SecurityEvent;
    match app
        .revoke_by_token(token, kind, &meta, Timestamp::now())
        .await
    {
        Ok(_) => no_store(StatusCode::ACCEPTED.into_response()),
        Err(Error::Protocol(p)) => {
            // RFC 8935 §2.4: the error codes of SET delivery.
            let err = match &p {
                ProtocolError::InvalidIssuer => "invalid_issuer",
                ProtocolError::InvalidAudience(_) => "invalid_audience",
                ProtocolError::InvalidSignature(_) | ProtocolError::Expired => {
                    "authentication_failed"
                }
                _ => "invalid_request",
            };
            let mut r = json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"err": err, "description": p.to_string()}),
            );
            if matches!(p, ProtocolError::PayloadTooLarge(_)) {
                *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            }
            r
        }
        Err(internal) => no_store(internal.into_response()),
    }
}
