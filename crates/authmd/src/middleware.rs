//! Protecting an API: a tower layer that validates the bearer credential of
//! every request, and an extractor for the validated [`Agent`].
//!
//! The server protects its own resource with exactly this layer, so a Rust
//! service that embeds authmd gets the same answers: 401 with the RFC 6750 /
//! RFC 9728 challenge for a missing or bad credential, 403
//! `insufficient_scope` when a `[[resource.rules]]` rule is not met.
//!
//! ```no_run
//! # async fn run(app: authmd::AuthMd) {
//! use axum::{Router, routing::get};
//! use authmd::Agent;
//!
//! async fn hello(agent: Agent) -> String {
//!     format!("hello, {}", agent.registration_id)
//! }
//! let api: Router = Router::new()
//!     .route("/api/hello", get(hello))
//!     .layer(app.require_credential());
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::{HeaderValue, Method, Request, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::AuthMd;
use crate::access::Access;
use crate::credential::CredentialRecord;
use crate::error::ProtocolError;
use crate::time::Timestamp;

/// The two 401 answers, rendered once per handle.
#[derive(Debug, Clone)]
pub struct Challenges {
    missing_header: HeaderValue,
    missing_body: bytes::Bytes,
    invalid_header: HeaderValue,
    invalid_body: bytes::Bytes,
}

impl Challenges {
    pub fn new(prm: &str) -> Challenges {
        let header = |s: String| {
            HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        let body = |message: &str| -> bytes::Bytes {
            serde_json::to_vec(&serde_json::json!({"error": "invalid_token", "message": message}))
                .unwrap_or_default()
                .into()
        };
        Challenges {
            missing_header: header(format!("Bearer resource_metadata=\"{prm}\"")),
            missing_body: body(
                "a bearer credential is required; see the resource_metadata in WWW-Authenticate",
            ),
            invalid_header: header(format!(
                "Bearer error=\"invalid_token\", resource_metadata=\"{prm}\""
            )),
            invalid_body: body(&ProtocolError::InvalidToken.to_string()),
        }
    }
}

/// The validated credential of the current request.
#[derive(Debug, Clone)]
pub struct Agent(pub Arc<CredentialRecord>);

impl Deref for Agent {
    type Target = CredentialRecord;
    fn deref(&self) -> &CredentialRecord {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Agent {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Agent>().cloned().ok_or_else(|| {
            // The route was not wrapped in `require_credential`: a wiring
            // mistake. Refuse rather than serve it unauthenticated.
            tracing::error!("Agent extractor used on a route without the authmd layer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": "server_error"})),
            )
                .into_response()
        })
    }
}

impl AuthMd {
    /// The tower layer that protects routes with this handle's validation
    /// and scope rules.
    pub fn require_credential(&self) -> RequireCredentialLayer {
        RequireCredentialLayer { app: self.clone() }
    }
}

/// See [`AuthMd::require_credential`].
#[derive(Debug, Clone)]
pub struct RequireCredentialLayer {
    app: AuthMd,
}

impl<S> Layer<S> for RequireCredentialLayer {
    type Service = RequireCredential<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequireCredential {
            inner,
            app: self.app.clone(),
        }
    }
}

/// The service produced by [`RequireCredentialLayer`].
#[derive(Debug, Clone)]
pub struct RequireCredential<S> {
    inner: S,
    app: AuthMd,
}

impl<S> Service<Request<Body>> for RequireCredential<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone that was polled ready handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        Box::pin(async move {
            let bearer = bearer_token(req.headers());
            let path = req
                .extensions()
                .get::<OriginalUri>()
                .map_or_else(|| req.uri().path(), |o| o.0.path());
            let access = app
                .authorize(
                    bearer.as_ref().map(|b| b.0),
                    req.method().as_str(),
                    path,
                    Timestamp::now(),
                )
                .await;
            match access {
                Ok(Access::Granted(record)) => {
                    let registration = record.registration_id.clone();
                    req.extensions_mut().insert(Agent(record));
                    let mut res = inner.call(req).await?;
                    res.extensions_mut()
                        .insert(crate::http::observe::LoggedRegistration(registration));
                    Ok(res)
                }
                Ok(refused) => Ok(app.refusal(&refused)),
                Err(e) => Ok(e.into_response()),
            }
        })
    }
}

/// A bearer token as presented (`Authorization: Bearer <token>`).
pub struct Bearer<'a>(pub &'a str);

impl std::fmt::Debug for Bearer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(***)")
    }
}

/// The token of an `Authorization: Bearer` header, if the request has one.
/// Another scheme counts as no credential; a `Bearer` header with an empty
/// token is a presented (and invalid) credential.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<Bearer<'_>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok();
    let Some(value) = value else {
        return Some(Bearer(""));
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Bearer(token.trim()))
}

impl AuthMd {
    /// Scopes a request needs: the first matching rule's, if any.
    pub fn scopes_needed(&self, method: &Method, path: &str) -> Option<&[String]> {
        self.scopes_for(method.as_str(), path)
    }

    /// The answer to a request [`AuthMd::authorize`] refused.
    pub fn refusal(&self, access: &Access) -> Response {
        match access {
            Access::Missing => self.unauthorized(false),
            Access::Invalid(reason) => {
                // The reason is logged, never told (docs/protocol.md §2.1).
                tracing::debug!(reason = reason.as_str(), "credential refused");
                self.unauthorized(true)
            }
            Access::AbnormalPath(what) => ProtocolError::invalid_request(format!(
                "the path has {what}: write it in its normal form (RFC 3986 §6.2.2)"
            ))
            .into_response(),
            Access::Forbidden(needed) => self.forbidden(needed),
            Access::Granted(_) => {
                tracing::error!("refusal() called for a granted request");
                crate::Error::internal(std::io::Error::other("granted request refused"))
                    .into_response()
            }
        }
    }

    /// The 401 answer: the challenge names the protected resource metadata,
    /// and, when a credential was presented, `error="invalid_token"`. The
    /// body is the same whatever was wrong with the credential. Both answers
    /// are rendered once (`Challenges`): a flood of bad requests costs no
    /// formatting.
    pub fn unauthorized(&self, presented: bool) -> Response {
        crate::metrics::refusal("invalid_token");
        let c = &self.challenges();
        let (header, body) = if presented {
            (&c.invalid_header, &c.invalid_body)
        } else {
            (&c.missing_header, &c.missing_body)
        };
        (
            StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, header.clone()),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            body.clone(),
        )
            .into_response()
    }

    /// The 403 answer for a valid credential without the needed scopes.
    pub fn forbidden(&self, needed: &[String]) -> Response {
        let scope = needed.join(" ");
        let challenge = format!(
            "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{}\"",
            self.urls().prm
        );
        let mut r = ProtocolError::InsufficientScope {
            needed: needed.to_vec(),
        }
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        if let Ok(v) = v.parse() {
            m.insert(header::AUTHORIZATION, v);
        }
        m
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&h("Bearer abc")).map(|b| b.0), Some("abc"));
        assert_eq!(bearer_token(&h("bearer abc")).map(|b| b.0), Some("abc"));
        assert_eq!(bearer_token(&h("Bearer")).map(|b| b.0), Some(""));
        assert!(bearer_token(&h("Basic dXNlcjpwYXNz")).is_none());
        assert!(bearer_token(&HeaderMap::new()).is_none());
    }
}
