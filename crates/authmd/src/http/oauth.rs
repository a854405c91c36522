//! The OAuth endpoints: `POST /oauth2/introspect` (RFC 7662) and
//! `POST /oauth2/revoke` (RFC 7009). Form bodies in, RFC 6749 §5.2 errors
//! out (`{"error", "error_description"}`, the shape OAuth libraries read);
//! the statuses are the one mapping of `http/error.rs`.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::error::status;
use super::extract::Meta;
use crate::AuthMd;
use crate::error::{Error, ProtocolError, retry_after_secs};
use crate::introspect::{BasicCredentials, ClientAuth};
use crate::time::Timestamp;

/// Form bodies of these endpoints are capped: they carry one token.
pub const MAX_FORM: usize = 8 * 1024;

/// The two parameters both endpoints take (RFC 7662 §2.1, RFC 7009 §2.1).
/// Others are ignored (RFC 6749 §3.2); one given twice is
/// `invalid_request` (RFC 6749 §3.1).
#[derive(Debug)]
pub struct TokenForm {
    pub token: Result<String, ProtocolError>,
}

impl<S: Send + Sync> FromRequest<S> for TokenForm {
    type Rejection = ProtocolError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(ProtocolError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|e| {
                let too_large = e
                    .into_inner()
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                if too_large {
                    ProtocolError::PayloadTooLarge(MAX_FORM)
                } else {
                    ProtocolError::invalid_request("cannot read the request body")
                }
            })?;
        if std::str::from_utf8(&bytes).is_err() {
            return Err(ProtocolError::invalid_request("the body is not UTF-8"));
        }
        let mut token = None;
        let mut hint = None;
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            let slot = match k.as_ref() {
                "token" => &mut token,
                "token_type_hint" => &mut hint,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(ProtocolError::invalid_request(format!(
                    "{k} must appear once"
                )));
            }
        }
        // token_type_hint is accepted and not used: every token is looked
        // up the same way (RFC 7662 §2.1, RFC 7009 §2.1 let a server
        // ignore it; an unknown value is not an error).
        let token = match token {
            Some(t) if !t.is_empty() => Ok(t.into_owned()),
            _ => Err(ProtocolError::invalid_request("token is required")),
        };
        Ok(TokenForm { token })
    }
}

/// The client authentication of an `Authorization: Basic` header
/// (RFC 7617 §2: base64 of `id:secret`, split at the first colon).
pub fn client_auth(headers: &HeaderMap) -> ClientAuth {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return ClientAuth::Missing;
    };
    let basic = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some(BasicCredentials {
                id: id.to_owned(),
                secret: secret.to_owned(),
            })
        });
    basic.map_or(ClientAuth::Malformed, ClientAuth::Basic)
}

/// An RFC 6749 §5.2 error answer, never cached. `invalid_client` carries
/// the `WWW-Authenticate: Basic` challenge §5.2 asks for; `rate_limited`
/// its `Retry-After`. Internal failures answer the generic 500.
pub fn oauth_error(e: Error) -> Response {
    let p = match e {
        Error::Protocol(p) => p,
        internal @ Error::Internal(_) => return no_store(internal.into_response()),
    };
    let body = serde_json::json!({"error": p.code(), "error_description": p.to_string()});
    let mut r = (status(&p), axum::Json(body)).into_response();
    let h = r.headers_mut();
    match &p {
        ProtocolError::InvalidClient => {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authmd\", charset=\"UTF-8\""),
            );
        }
        ProtocolError::RateLimited { retry_after } => {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(retry_after)),
            );
        }
        _ => {}
    }
    no_store(r)
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// `POST /oauth2/introspect`: the caller is authenticated before the body
/// is read, so a stranger's request costs no parsing.
pub async fn introspect(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    req: Request<Body>,
) -> Response {
    let now = Timestamp::now();
    let auth = client_auth(req.headers());
    if let Err(e) = app.authenticate_introspector(&auth, &meta, now).await {
        return oauth_error(e);
    }
    let token = match TokenForm::from_request(req, &()).await {
        Ok(form) => form.token,
        Err(e) => Err(e),
    };
    let answer = match token {
        Ok(t) => app.introspect(&t, now).await,
        Err(e) => Err(e.into()),
    };
    match answer {
        Ok(a) => no_store(
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                a.to_json(&app),
            )
                .into_response(),
        ),
        Err(e) => oauth_error(e),
    }
}

/// `POST /oauth2/revoke`: `200` with an empty body for any token.
pub async fn revoke(
    State(app): State<AuthMd>,
    Meta(meta): Meta,
    form: Result<TokenForm, ProtocolError>,
) -> Response {
    let token = form.and_then(|f| f.token);
    match app.revoke_own(token, &meta, Timestamp::now()).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(e),
    }
}
