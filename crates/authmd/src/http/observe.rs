//! What every request leaves behind: its id (`X-Request-Id`), one
//! access-log line (target `authmd::access`) and its metrics.
//!
//! The layer sits on every route of the router (`Router::layer`), so it runs
//! after routing and knows the route template (`/api/{*rest}`,
//! `/admin/registrations/{id}`): the access log and the metrics never see a
//! raw path, which may carry a token or an id an attacker chose.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use tower::{Layer, Service};

/// The header that carries a request's id, both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept; the rest is cut.
pub const MAX_REQUEST_ID: usize = 64;

/// The route label of a request no route matched (a 404 or 405 fallback).
pub const UNMATCHED: &str = "(unmatched)";

/// The current request's id, in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored (see `sanitise`).
        self.0.to_str().unwrap_or_default()
    }
}

/// Set on a response by whatever learnt which registration the request
/// acted for (the credential layer, registration): the access log names it.
#[derive(Debug, Clone)]
pub struct LoggedRegistration(pub String);

/// A client's `X-Request-Id`, made safe for logs: visible ASCII letters,
/// digits and `-_.:/+=@` only (anything else dropped), at most
/// [`MAX_REQUEST_ID`] bytes. `None` when nothing is left.
pub fn sanitise(value: &[u8]) -> Option<HeaderValue> {
    let keep = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b);
    if value.len() <= MAX_REQUEST_ID && value.iter().all(keep) {
        return (!value.is_empty())
            .then(|| HeaderValue::from_bytes(value).ok())
            .flatten();
    }
    let kept: Vec<u8> = value
        .iter()
        .copied()
        .filter(keep)
        .take(MAX_REQUEST_ID)
        .collect();
    (!kept.is_empty())
        .then(|| HeaderValue::from_bytes(&kept).ok())
        .flatten()
}

/// Generated ids: a random prefix per process (replicas differ) and a
/// counter, so that naming a request costs no random draw.
#[derive(Debug)]
struct Ids {
    prefix: String,
    next: AtomicU64,
}

impl Ids {
    fn new() -> Ids {
        // 22 characters: 8 of time, 14 random (token::new_id).
        let id = crate::token::new_id("");
        Ids {
            prefix: id[8..].to_owned(),
            next: AtomicU64::new(1),
        }
    }

    fn generate(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // `<prefix>-<n in hex>`, written without the formatting machinery
        // (this runs for every request).
        let mut id = Vec::with_capacity(self.prefix.len() + 17);
        id.extend_from_slice(self.prefix.as_bytes());
        id.push(b'-');
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            id.push(b"0123456789abcdef"[((n >> (shift * 4)) & 0xf) as usize]);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
            .unwrap_or_else(|_| HeaderValue::from_static("unnamed"))
    }
}

/// The layer: `router.layer(ObserveLayer::new())`.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    ids: Arc<Ids>,
}

impl ObserveLayer {
    pub fn new() -> ObserveLayer {
        ObserveLayer {
            ids: Arc::new(Ids::new()),
        }
    }
}

impl Default for ObserveLayer {
    fn default() -> Self {
        ObserveLayer::new()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            ids: Arc::clone(&self.ids),
        }
    }
}

/// The service produced by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    ids: Arc<Ids>,
}

impl<S> Service<Request<Body>> for Observe<S>
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
        let start = Instant::now();
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| sanitise(v.as_bytes()))
            .unwrap_or_else(|| self.ids.generate());
        req.extensions_mut().insert(RequestId(id.clone()));
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = req.method().clone();
        // The clone that was polled ready handles this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let Ok(mut res) = inner.call(req).await;
            let latency = start.elapsed();
            let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            let registration = res.extensions_mut().remove::<LoggedRegistration>();
            crate::metrics::request(route, method.as_str(), res.status().as_u16(), latency);
            tracing::info!(
                target: "authmd::access",
                method = method.as_str(),
                route,
                status = res.status().as_u16(),
                latency_ms = latency.as_secs_f64() * 1000.0,
                request_id = RequestId(id.clone()).as_str(),
                registration_id = registration.as_ref().map(|r| r.0.as_str()),
                "request"
            );
            res.headers_mut().insert(REQUEST_ID.clone(), id);
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_sanitised() {
        let ok = |s: &[u8]| sanitise(s).map(|v| v.to_str().unwrap_or_default().to_owned());
        assert_eq!(ok(b"abc-123"), Some("abc-123".into()));
        assert_eq!(ok(b"a b\x1b[31mc\n"), Some("ab31mc".into()));
        assert_eq!(ok(&[b'x'; 500]).map(|s| s.len()), Some(MAX_REQUEST_ID));
        assert_eq!(ok(b""), None);
        assert_eq!(ok(b"\xff\xfe  "), None);
    }

    #[test]
    fn generated_ids_differ() {
        let ids = Ids::new();
        assert_ne!(ids.generate(), ids.generate());
    }

    #[test]
    fn generated_ids_end_in_the_counter_in_hex() {
        let ids = Ids::new();
        for n in [0_u64, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            let id = ids.generate();
            assert_eq!(
                id.to_str().ok(),
                Some(format!("{}-{n:x}", ids.prefix).as_str())
            );
        }
    }
}
