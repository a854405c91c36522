//! `/authz/forward-auth`: "may this request through?" for the proxy an
//! operator already runs: nginx `auth_request`, Traefik `ForwardAuth`,
//! Caddy `forward_auth`, Envoy's HTTP `ext_authz`. The same decision as
//! the gateway (`AuthMd::authorize`) and the same answers:
//!
//! - `200` with the identity headers and `X-Authmd-Assertion`, for the
//!   proxy to copy onto the request it forwards (every identity header,
//!   empty when there is no value: proxies copy a fixed list);
//! - `401` with the protocol's `WWW-Authenticate` challenge and body (the
//!   proxy must pass the challenge to the client: the agent's discovery
//!   starts there);
//! - `403` `insufficient_scope`; `400` for a path not in its normal form
//!   (`access::abnormal_path`), when the original URI is not said, or when
//!   the original method or URI is said twice, differently (a client's own
//!   `X-Forwarded-*` or `X-Original-*` passed on beside the proxy's).
//!
//! The original request: method from `X-Forwarded-Method` and/or
//! `X-Original-Method`, which must agree (else this request's own, as
//! Envoy sends it), URI from `X-Forwarded-Uri` and/or `X-Original-URI`,
//! which must agree (else, for Envoy's `path_prefix`, whatever follows
//! `/authz/forward-auth` in this path).
//! The credential: this request's `Authorization`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AuthMd;
use crate::access::Access;
use crate::error::ProtocolError;
use crate::middleware::{Agent, bearer_token};
use crate::time::Timestamp;

/// Where forward auth answers (and, for Envoy, the prefix of the path).
pub const PATH: &str = "/authz/forward-auth";

pub async fn forward_auth(State(app): State<AuthMd>, req: Request) -> Response {
    let headers = req.headers();
    let (Ok(method), Ok(uri)) = (
        said(headers, &["x-forwarded-method", "x-original-method"]),
        said(headers, &["x-forwarded-uri", "x-original-uri"]),
    ) else {
        return ProtocolError::invalid_request(
            "the original method or URI is given more than once, differently \
             (X-Forwarded-Method/-Uri, X-Original-Method/-URI): the proxy must set them",
        )
        .into_response();
    };
    let method = method.unwrap_or_else(|| req.method().as_str().to_owned());
    let uri = uri.or_else(|| {
        req.uri()
            .path()
            .strip_prefix(PATH)
            .filter(|rest| rest.starts_with('/'))
            .map(str::to_owned)
    });
    let Some(path) = uri.as_deref().and_then(path_of) else {
        // A misconfigured proxy: say so rather than guess a path the scope
        // rules would then judge.
        return ProtocolError::invalid_request(
            "forward auth needs the original URI in X-Forwarded-Uri or X-Original-URI",
        )
        .into_response();
    };
    let bearer = bearer_token(headers);
    let access = app
        .authorize(
            bearer.as_ref().map(|b| b.0),
            &method,
            path,
            Timestamp::now(),
        )
        .await;
    let mut response = match access {
        Ok(Access::Granted(record)) => {
            let mut r = StatusCode::OK.into_response();
            if let Err(refused) =
                super::identity_headers::add(&app, &Agent(record), r.headers_mut(), true, true)
            {
                return refused.into_response();
            }
            r
        }
        Ok(refused) => app.refusal(&refused),
        Err(e) => e.into_response(),
    };
    // Per credential: never cached by the proxy or anyone else.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The value that every header of `names` present says (trimmed; empty
/// ones do not count), `Ok(None)` when none does, `Err` when two say
/// different things or one cannot be read (not UTF-8: the other would
/// otherwise decide alone). A proxy sets one pair and
/// passes the client's own headers on (nginx's `auth_request` and
/// Traefik's `ForwardAuth` do by default), so a client could add the other
/// pair: whichever pair were believed first, a client could then choose
/// the method and path the scope rules judge. Disagreement is refused.
fn said(h: &HeaderMap, names: &[&str]) -> Result<Option<String>, ()> {
    let mut said: Option<&str> = None;
    for value in names.iter().flat_map(|n| h.get_all(*n)) {
        let v = value.to_str().map_err(|_| ())?.trim();
        if v.is_empty() {
            continue;
        }
        match said {
            Some(s) if s != v => return Err(()),
            _ => said = Some(v),
        }
    }
    Ok(said.map(str::to_owned))
}

/// The path of an original URI: `/path?query` (what proxies send) or an
/// absolute URL. `None` for anything else.
fn path_of(uri: &str) -> Option<&str> {
    let path_and_query = if uri.starts_with('/') {
        uri
    } else {
        let rest = uri
            .strip_prefix("https://")
            .or_else(|| uri.strip_prefix("http://"))?;
        &rest[rest.find('/')?..]
    };
    let path = path_and_query.split(['?', '#']).next()?;
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_uris_give_their_path() {
        assert_eq!(path_of("/api/x?y=1"), Some("/api/x"));
        assert_eq!(path_of("/api/"), Some("/api/"));
        assert_eq!(path_of("https://h.example/api/x?y#z"), Some("/api/x"));
        assert_eq!(path_of("http://h.example"), None);
        assert_eq!(path_of("api/x"), None);
        assert_eq!(path_of("ftp://h/api"), None);
    }
}
