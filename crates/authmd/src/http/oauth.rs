//! The OAuth endpoints: `POST /oauth2/introspect` (RFC 7662) and
//! `POST /oauth2/revoke` (RFC 7009). Form bodies in, RFC 6749 §5.2 errors
//! out (`{"error", "error_description"}`, the shape OAuth libraries read);
//! the statuses are the one mapping of `http/error.rs`.

use std::borrow::Cow;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
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

/// The `token` parameter of both endpoints (RFC 7662 §2.1, RFC 7009 §2.1),
/// decoded once. `token_type_hint` is accepted and not used: every token is
/// looked up the same way (both RFCs let a server ignore it; an unknown
/// value is not an error). Other parameters are ignored (RFC 6749 §3.2); one
/// given twice is `invalid_request` (RFC 6749 §3.1).
pub fn token_param(form: &[u8]) -> Result<Cow<'_, str>, ProtocolError> {
    let mut token = None;
    let mut hint = None;
    for (k, v) in form_pairs(form) {
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
    token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProtocolError::invalid_request("token is required"))
}

/// The pairs of a form body. A body without escapes (`%`, `+`), the usual
/// `token=amd_…`, is split in place; any other is decoded by the `url`
/// crate. The body was checked to be UTF-8.
fn form_pairs(form: &[u8]) -> Box<dyn Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> + '_> {
    match std::str::from_utf8(form) {
        Ok(text) if !form.iter().any(|b| *b == b'%' || *b == b'+') => {
            Box::new(text.split('&').filter(|p| !p.is_empty()).map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (Cow::Borrowed(k), Cow::Borrowed(v))
            }))
        }
        _ => Box::new(url::form_urlencoded::parse(form)),
    }
}

/// An `application/x-www-form-urlencoded` body of at most [`MAX_FORM`]
/// bytes, UTF-8, read within `limit` (`server.request_timeout`: a client
/// that sends its body slowly is cut off).
pub async fn read_form(req: Request, limit: Duration) -> Result<Bytes, ProtocolError> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.as_bytes().split(|b| *b == b';').next())
        .is_some_and(|m| {
            m.trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ProtocolError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let read = tokio::time::timeout(limit, axum::body::to_bytes(req.into_body(), MAX_FORM));
    let bytes = read
        .await
        .map_err(|_| ProtocolError::invalid_request("request timed out"))?
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
    Ok(bytes)
}

/// Longest `Authorization: Basic` credentials read (decoded).
const MAX_BASIC: usize = 1024;

/// The client authentication of an `Authorization: Basic` header
/// (RFC 7617 §2: base64 of `id:secret`, split at the first colon), decoded
/// into `buf` (nothing is allocated).
pub fn client_auth<'a>(headers: &HeaderMap, buf: &'a mut [u8; MAX_BASIC]) -> ClientAuth<'a> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return ClientAuth::Missing;
    };
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, b64)| b64.trim());
    let Some(len) = encoded.and_then(|b64| {
        base64::engine::general_purpose::STANDARD
            .decode_slice(b64, buf)
            .ok()
    }) else {
        return ClientAuth::Malformed;
    };
    let pair = std::str::from_utf8(&buf[..len]).ok();
    match pair.and_then(|p| p.split_once(':')) {
        Some((id, secret)) => ClientAuth::Basic(BasicCredentials { id, secret }),
        None => ClientAuth::Malformed,
    }
}

/// An RFC 6749 §5.2 error answer, never cached, with authmd's codes.
pub fn oauth_error(e: Error) -> Response {
    oauth_error_coded(e, ProtocolError::code)
}

/// An RFC 6749 §5.2 error answer, never cached, its `error` named by
/// `code` (the token endpoint names its refusals in the current dialect's
/// words). `invalid_client` carries the `WWW-Authenticate: Basic`
/// challenge §5.2 asks for; a rate limit its `Retry-After`, also as a
/// `retry_after` member. Internal failures answer the generic 500.
pub fn oauth_error_coded(e: Error, code: fn(&ProtocolError) -> &'static str) -> Response {
    let p = match e {
        Error::Protocol(p) => p,
        internal @ Error::Internal(_) => return no_store(internal.into_response()),
    };
    let mut body = serde_json::json!({"error": code(&p), "error_description": p.to_string()});
    let retry_after = match &p {
        ProtocolError::RateLimited { retry_after } => Some(retry_after_secs(retry_after)),
        _ => None,
    };
    if let Some(secs) = retry_after {
        body["retry_after"] = secs.into();
    }
    let mut r = (status(&p), axum::Json(body)).into_response();
    let h = r.headers_mut();
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let ProtocolError::InvalidClient = p {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"authmd\", charset=\"UTF-8\""),
        );
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
    let mut buf = [0u8; MAX_BASIC];
    let auth = client_auth(req.headers(), &mut buf);
    if let Err(e) = app.authenticate_introspector(auth, &meta, now).await {
        return oauth_error(e);
    }
    let answer = match read_form(req, app.config().server.request_timeout.get()).await {
        Ok(form) => match token_param(&form) {
            Ok(token) => app.introspect(&token, now).await,
            Err(e) => Err(e.into()),
        },
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
pub async fn revoke(State(app): State<AuthMd>, Meta(meta): Meta, req: Request<Body>) -> Response {
    let form = read_form(req, app.config().server.request_timeout.get()).await;
    let token = form
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|f| token_param(f).map(|t| t.into_owned()));
    match app.revoke_own(token, &meta, Timestamp::now()).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => oauth_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_with_or_without_escapes() {
        let token = |form: &str| token_param(form.as_bytes()).map(Cow::into_owned);
        assert_eq!(token("token=amd_sk_x").as_deref(), Ok("amd_sk_x"));
        assert_eq!(token("&&token=x&token_type_hint=y&z").as_deref(), Ok("x"));
        assert_eq!(token("token=a%2Bb").as_deref(), Ok("a+b"));
        assert_eq!(token("token=a+b").as_deref(), Ok("a b"));
        assert_eq!(token("x=1&token=t%26u").as_deref(), Ok("t&u"));
        for bad in [
            "",
            "token",
            "token=",
            "tok=x",
            "token=a&token=b",
            "token=a%2B&token=b",
        ] {
            assert!(token(bad).is_err(), "{bad}");
        }
    }
}
