//! CORS (the Fetch standard's CORS protocol) for browser-based agents and
//! tools, by path:
//!
//! - **public**: the discovery documents (everything under
//!   `/.well-known/`, the JWKS included) and `/auth.md` answer any origin
//!   (`Access-Control-Allow-Origin: *`): they are public and carry no
//!   credential.
//! - **listed**: the agent endpoints (`/agent/…`, `/oauth2/revoke`) and
//!   everything under the protected resource answer only the origins in
//!   `[cors] allowed_origins`, echoed one at a time with `Vary: Origin`,
//!   with `WWW-Authenticate` and `Retry-After` exposed to scripts (an agent
//!   needs the challenge to discover). Preflights are answered here, before
//!   any credential is asked for.
//! - **none**: the claim page (a page for people, read by no script),
//!   introspection (server to server) and health checks.
//!
//! `Access-Control-Allow-Credentials` is never sent: bearer credentials
//! travel in `Authorization`, which needs no cookies or credentials mode,
//! so no origin is ever trusted with the browser's ambient credentials.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use tower::{Layer, Service};

use crate::AuthMd;

/// Response headers scripts of a listed origin may read.
const EXPOSED: HeaderValue = HeaderValue::from_static("WWW-Authenticate, Retry-After");
/// Methods a listed origin may use (any the API may serve).
const LISTED_METHODS: HeaderValue =
    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
const PUBLIC_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");
/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: HeaderValue = HeaderValue::from_static("600");
const ANY: HeaderValue = HeaderValue::from_static("*");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Public,
    Listed,
    None,
}

fn policy(app: &AuthMd, path: &str) -> Policy {
    if path == "/auth.md" || path.starts_with("/.well-known/") {
        return Policy::Public;
    }
    if path == super::routes::CLAIM_VIEW_PATH {
        return Policy::None;
    }
    let resource = &app.urls().resource_path;
    if path.starts_with("/agent/")
        || path == "/oauth2/revoke"
        || path.starts_with(resource.as_str())
        || path == resource.trim_end_matches('/')
    {
        return Policy::Listed;
    }
    Policy::None
}

/// The layer: wraps every route, outside every credential check.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    app: AuthMd,
}

impl CorsLayer {
    pub fn new(app: AuthMd) -> CorsLayer {
        CorsLayer { app }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;
    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            app: self.app.clone(),
        }
    }
}

/// See [`CorsLayer`].
#[derive(Debug, Clone)]
pub struct Cors<S> {
    inner: S,
    app: AuthMd,
}

type Answer = Result<Response, Infallible>;
type BoxedAnswer = Pin<Box<dyn Future<Output = Answer> + Send>>;

fn vary_origin(r: Answer) -> Answer {
    r.map(|mut r| {
        r.headers_mut()
            .append(header::VARY, HeaderValue::from_static("Origin"));
        r
    })
}

impl<S> Service<Request<Body>> for Cors<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    /// Without an `Origin` (the API's hot path) the inner future itself,
    /// or with `Vary` added: nothing is boxed.
    type Future = Either<Either<S::Future, Map<S::Future, fn(Answer) -> Answer>>, BoxedAnswer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let policy = policy(&self.app, req.uri().path());
        let listed = &self.app.config().cors.allowed_origins;
        let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
            // No origin, nothing to say, beyond `Vary` where the answer
            // would depend on one.
            return if policy == Policy::Listed && !listed.is_empty() {
                let add: fn(Answer) -> Answer = vary_origin;
                Either::Left(Either::Right(self.inner.call(req).map(add)))
            } else {
                Either::Left(Either::Left(self.inner.call(req)))
            };
        };
        let allowed = match policy {
            Policy::None => return Either::Left(Either::Left(self.inner.call(req))),
            Policy::Public => Some(ANY),
            Policy::Listed => listed
                .iter()
                .any(|o| o.as_bytes() == origin.as_bytes())
                .then_some(origin),
        };
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            let answer = preflight_answer(policy, allowed, req.headers());
            return Either::Right(Box::pin(std::future::ready(Ok(answer))));
        }
        let inner = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let Ok(mut r) = inner.await;
            let h = r.headers_mut();
            if policy == Policy::Listed {
                h.append(header::VARY, HeaderValue::from_static("Origin"));
            }
            if let Some(allowed) = allowed {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
                if policy == Policy::Listed {
                    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
                }
            }
            Ok(r)
        }))
    }
}

/// `204` to a preflight: for an allowed origin, what it may send; for
/// another, no CORS headers at all (the browser then refuses the request).
fn preflight_answer(policy: Policy, allowed: Option<HeaderValue>, req: &HeaderMap) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    if policy == Policy::Listed {
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
    }
    let Some(allowed) = allowed else {
        return r;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        if policy == Policy::Listed {
            LISTED_METHODS
        } else {
            PUBLIC_METHODS
        },
    );
    // The headers asked for are allowed (`Authorization`, `Content-Type`,
    // an API's own): what a request may carry is the API's business, and
    // no credentials mode is ever granted. Only a well-formed list is
    // echoed.
    if let Some(asked) = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| is_header_list(v.as_bytes()))
    {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    r
}

/// A comma-separated list of header names (RFC 9110 tokens), at most 1 KiB.
fn is_header_list(v: &[u8]) -> bool {
    v.len() <= 1024
        && v.split(|b| *b == b',').all(|name| {
            let name = name.trim_ascii();
            !name.is_empty()
                && name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        })
}

#[cfg(test)]
mod tests {
    use super::is_header_list;

    #[test]
    fn only_header_name_lists_are_echoed() {
        assert!(is_header_list(b"authorization, content-type"));
        assert!(is_header_list(b"X-Trace-Id"));
        assert!(!is_header_list(b"a b"));
        assert!(!is_header_list(b"a,,b"));
        assert!(!is_header_list(b"x\r\ny"));
        assert!(!is_header_list(&[b'a'; 2000]));
    }
}
