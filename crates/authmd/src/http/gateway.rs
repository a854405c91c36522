//! Gateway mode (`[upstream]`): authmd as the reverse proxy in front of an
//! API written in anything. It sits behind the credential layer
//! (`middleware.rs`), so only a request that passed validation and the
//! scope rules gets here; a refused one never reaches the upstream.
//!
//! HTTP by nature, so it lives in `http/`; what it adds (the identity
//! headers and the assertion) is decided in `identity.rs`.
//!
//! - Method, path, query and body pass unchanged (the resource path is
//!   removed first with `strip_prefix`). Bodies stream both ways, frame by
//!   frame: nothing is buffered whole, so an upload of any size or a
//!   server-sent-events response flows with flat memory.
//! - Hop-by-hop headers (RFC 9110 §7.6.1: `Connection` and every header it
//!   names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding`,
//!   `Upgrade`; and `Proxy-Authorization`, `Expect`) are removed both ways,
//!   except that an HTTP/1.1 `Upgrade` (WebSocket) is passed on and, once
//!   the upstream answers 101, both connections are spliced.
//! - Every incoming `X-Authmd-*` header is removed, then authmd's own are
//!   added; `Authorization` is removed unless `forward_authorization`.
//! - `X-Forwarded-For`/`-Proto`/`-Host` are set (a trusted proxy's values
//!   are extended, anyone else's replaced).
//! - Connections to the upstream are pooled (`gateway/pool.rs`).
//! - The upstream down or failing is `502 upstream_unavailable`; no
//!   response head within `timeout` is `504 upstream_timeout`. Neither
//!   says where the upstream is (the log does).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use crate::AuthMd;
use crate::error::ProtocolError;
use crate::identity;
use crate::middleware::Agent;

mod pool;

type Connector = HttpsConnector<HttpConnector>;

/// The gateway: a tower service forwarding to the configured upstream.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

struct Inner {
    app: AuthMd,
    pool: Arc<pool::Pool>,
    authority: Authority,
    /// The upstream URL's path, without a trailing `/`.
    base_path: String,
    /// The resource path without its trailing `/`, removed from the
    /// request's path when `strip_prefix` is on.
    strip: Option<String>,
    host: HeaderValue,
    timeout: Duration,
    forward_authorization: bool,
    assertion: bool,
    preserve_host: bool,
}

impl Gateway {
    /// The gateway of `app`'s `[upstream]`, if configured.
    pub fn new(app: &AuthMd) -> Option<Gateway> {
        let config = app.config().upstream.as_ref()?;
        let url = url::Url::parse(&config.url).ok()?;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = url.host_str()?;
        let authority: Authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
        .parse()
        .ok()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout.get()));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let target = Uri::builder()
            .scheme(scheme)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let pool = pool::Pool::new(
            connector,
            target,
            config.max_idle_connections,
            config.idle_timeout.get(),
        );
        let resource_path = app.urls().resource_path.trim_end_matches('/').to_owned();
        Some(Gateway {
            inner: Arc::new(Inner {
                app: app.clone(),
                pool: Arc::new(pool),
                host: HeaderValue::from_str(authority.as_str()).ok()?,
                authority,
                base_path: url.path().trim_end_matches('/').to_owned(),
                strip: config.strip_prefix.then_some(resource_path),
                timeout: config.timeout.get(),
                forward_authorization: config.forward_authorization,
                assertion: config.assertion_header,
                preserve_host: config.preserve_host,
            }),
        })
    }
}

/// TLS to an `https` upstream: the platform's roots, aws-lc-rs (named
/// explicitly: two providers are compiled in). No ALPN is offered: the
/// connector is HTTP/1.1 only, which is what the pool speaks.
fn tls_config() -> rustls::ClientConfig {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .and_then(|b| b.with_platform_verifier().map_err(|e| e.to_string()));
    match builder {
        Ok(b) => b.with_no_client_auth(),
        Err(e) => {
            tracing::error!(error = %e, "no TLS roots for an https upstream; it will be unreachable");
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(b) => b
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
                Err(_) => rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            }
        }
    }
}

impl tower::Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { Ok(inner.forward(req).await) })
    }
}

/// Hop-by-hop headers that are never forwarded (RFC 9110 §7.6.1), beside
/// those `Connection` names. `Proxy-Authorization` is for a proxy in front
/// of authmd; `Expect` was answered towards the client already.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
];

impl Inner {
    async fn forward(&self, mut req: Request) -> Response {
        let Some(agent) = req.extensions().get::<Agent>().cloned() else {
            // Only reachable if wired without the credential layer.
            tracing::error!("gateway reached without a validated credential");
            return crate::Error::internal(std::io::Error::other("gateway without credential"))
                .into_response();
        };
        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let (parts, body) = req.into_parts();
        let Some(uri) = self.upstream_uri(&parts.uri) else {
            return ProtocolError::invalid_request("the request URI cannot be forwarded")
                .into_response();
        };
        let mut headers = parts.headers;
        // Room for what is added below (forwarding and identity headers, the
        // assertion), so the map grows once instead of rehashing twice.
        headers.reserve(12);
        let original_host = headers
            .get(header::HOST)
            .cloned()
            .or_else(|| parts.uri.authority().and_then(|a| a.as_str().parse().ok()));
        strip_hop_by_hop(&mut headers);
        remove_prefixed(&mut headers, identity::PREFIX);
        if !self.forward_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        self.set_forwarded(&mut headers, peer, original_host.as_ref());
        // Set in every case: an HTTP/2 client's host is the URI's
        // authority, not a header, and hyper's HTTP/1.1 client adds none.
        let host = match &original_host {
            Some(h) if self.preserve_host => h.clone(),
            _ => self.host.clone(),
        };
        headers.insert(header::HOST, host);
        if let Err(refused) =
            super::identity_headers::add(&self.app, &agent, &mut headers, self.assertion, false)
        {
            return refused.into_response();
        }
        if let Some(protocol) = &upgrade {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol.clone());
        }
        let mut out = axum::http::Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.headers_mut() = headers;

        let (mut response, lease) = match tokio::time::timeout(self.timeout, self.pool.send(out))
            .await
        {
            Err(_) => {
                tracing::warn!(upstream = %self.authority, "upstream timeout");
                return ProtocolError::UpstreamTimeout.into_response();
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.authority, error = %error_chain(&*e), "upstream unavailable");
                return ProtocolError::UpstreamUnavailable.into_response();
            }
            Ok(Ok(r)) => r,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            match client_upgrade {
                Some(client) => {
                    let upstream = hyper::upgrade::on(&mut response);
                    // The connection is the upgraded exchange's now: held
                    // until both sides are spliced, never given back.
                    tokio::spawn(async move {
                        splice(client, upstream).await;
                        drop(lease);
                    });
                    let protocol = response.headers().get(header::UPGRADE).cloned();
                    strip_hop_by_hop(response.headers_mut());
                    if let Some(p) = protocol {
                        let h = response.headers_mut();
                        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                        h.insert(header::UPGRADE, p);
                    }
                    return response.map(|_| Body::empty());
                }
                None => {
                    tracing::warn!("upstream switched protocols without being asked");
                    return ProtocolError::UpstreamUnavailable.into_response();
                }
            }
        }
        strip_hop_by_hop(response.headers_mut());
        response.map(|body| Body::new(pool::PooledBody::new(body, lease)))
    }

    /// `<base path><path, stripped?><?query>`, in origin form (the pool's
    /// connection is to the upstream's address already).
    fn upstream_uri(&self, uri: &Uri) -> Option<Uri> {
        if self.strip.is_none()
            && self.base_path.is_empty()
            && uri.scheme().is_none()
            && uri.authority().is_none()
        {
            // Already `<path><?query>` and nothing to change: its bytes,
            // shared.
            return Some(uri.clone());
        }
        let mut path = uri.path();
        if let Some(prefix) = &self.strip {
            path = path.strip_prefix(prefix.as_str()).unwrap_or(path);
            if path.is_empty() {
                path = "/";
            }
        }
        let mut pq = String::with_capacity(self.base_path.len() + uri.path().len() + 64);
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = uri.query() {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .path_and_query(PathAndQuery::from_maybe_shared(pq).ok()?)
            .build()
            .ok()
    }

    /// `X-Forwarded-For` gets the peer appended when the peer is a trusted
    /// proxy (whose list it extends), and is the peer alone otherwise;
    /// `-Proto` and `-Host` are kept from a trusted proxy and set (`http`,
    /// the request's `Host`) otherwise. An untrusted peer's `Forwarded` is
    /// dropped.
    fn set_forwarded(&self, h: &mut HeaderMap, peer: Option<IpAddr>, host: Option<&HeaderValue>) {
        let trusted = peer.is_some_and(|ip| {
            self.app
                .config()
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&ip))
        });
        let (xff, xfp, xfh) = (&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST);
        let mut chain = String::new();
        if trusted {
            for v in h.get_all(xff).iter().filter_map(|v| v.to_str().ok()) {
                if !chain.is_empty() {
                    chain.push_str(", ");
                }
                chain.push_str(v);
            }
        }
        h.remove(xff);
        if let Some(ip) = peer {
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            crate::audit::push_ip(&mut chain, ip);
        }
        if let Ok(v) = HeaderValue::from_str(&chain)
            && !chain.is_empty()
        {
            h.insert(xff, v);
        }
        if !trusted || !h.contains_key(xfp) {
            h.insert(xfp, HeaderValue::from_static("http"));
        }
        if !trusted || !h.contains_key(xfh) {
            match host {
                Some(v) => {
                    h.insert(xfh, v.clone());
                }
                None => {
                    h.remove(xfh);
                }
            }
        }
        if !trusted {
            h.remove(header::FORWARDED);
        }
    }
}

// Parsed once: `HeaderName::from_static` checks its argument on every run.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The protocol asked for by an HTTP/1.1 upgrade request (`Connection:
/// upgrade` and `Upgrade: <protocol>`).
fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Removes the hop-by-hop headers: the fixed list, and those named in
/// `Connection`. One pass over the names finds the ones present; most
/// requests carry none, and a response usually only `Connection` and
/// `Keep-Alive`, so nothing is looked up that is not there.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    doomed.extend(
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok()),
    );
    for name in doomed {
        h.remove(name);
    }
}

/// Removes every header whose (lowercase) name starts with `prefix`.
fn remove_prefixed(h: &mut HeaderMap, prefix: &str) {
    if !h.keys().any(|k| k.as_str().starts_with(prefix)) {
        return;
    }
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for name in names {
        h.remove(name);
    }
}

/// Copies bytes both ways between the client's and the upstream's upgraded
/// connections until either side closes.
async fn splice(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(client = c.is_ok(), upstream = u.is_ok(), "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, X-Secret-Hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example"));
        h.append(header::ACCEPT, HeaderValue::from_static("a/b"));
        h.append(header::ACCEPT, HeaderValue::from_static("c/d"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        remove_prefixed(&mut h, identity::PREFIX);
        assert_eq!(h, before);
    }

    #[test]
    fn upgrades_need_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&h).is_none());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_protocol(&h),
            Some(HeaderValue::from_static("websocket"))
        );
    }

    #[test]
    fn prefixed_headers_are_removed_whatever_their_case() {
        let mut h = HeaderMap::new();
        h.insert("X-Authmd-Email", HeaderValue::from_static("forged"));
        h.insert("x-authmd-anything", HeaderValue::from_static("forged"));
        h.insert("x-authmdnot", HeaderValue::from_static("kept"));
        remove_prefixed(&mut h, identity::PREFIX);
        assert_eq!(h.len(), 1);
    }
}
