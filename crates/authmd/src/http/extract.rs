//! Request extractors: a JSON body with the protocol's error rules, and the
//! request's origin (client IP and user agent).

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;

use crate::AuthMd;
use crate::audit::RequestMeta;
use crate::error::ProtocolError;

/// Request bodies are capped at 64 KiB (docs/protocol.md §3).
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON request body. Refuses, as `invalid_request`: a content type other
/// than `application/json`, a body that is not JSON or not of the expected
/// shape, and (413) one over [`MAX_BODY`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ProtocolError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ProtocolError::invalid_request(
                "Content-Type must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ProtocolError::PayloadTooLarge(MAX_BODY)
            } else {
                ProtocolError::invalid_request("cannot read the request body")
            }
        })?;
        let value: T = serde_json::from_slice(&bytes).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => "the body does not have the expected fields",
                _ => "the body is not valid JSON",
            };
            ProtocolError::invalid_request(format!("{what} ({})", clip(&e.to_string())))
        })?;
        Ok(JsonBody(value))
    }
}

/// The logout token of `POST /agent/auth/revoke`: the whole body for
/// `application/logout+jwt`, or the one `logout_token` field of an
/// `application/x-www-form-urlencoded` body (other fields are ignored, BCL
/// §2.5). Anything else is `invalid_request`; a body over [`MAX_BODY`] is
/// 413.
#[derive(Debug)]
pub struct LogoutToken(pub String);

impl<S: Send + Sync> FromRequest<S> for LogoutToken {
    type Rejection = ProtocolError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let form = match media.as_str() {
            "application/logout+jwt" => false,
            "application/x-www-form-urlencoded" => true,
            _ => {
                return Err(ProtocolError::invalid_request(
                    "Content-Type must be application/logout+jwt, or \
                     application/x-www-form-urlencoded with logout_token",
                ));
            }
        };
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ProtocolError::PayloadTooLarge(MAX_BODY)
            } else {
                ProtocolError::invalid_request("cannot read the request body")
            }
        })?;
        let token = if form {
            let mut tokens = url::form_urlencoded::parse(&bytes)
                .filter(|(k, _)| k == "logout_token")
                .map(|(_, v)| v.into_owned());
            match (tokens.next(), tokens.next()) {
                (Some(t), None) => t,
                (None, _) => {
                    return Err(ProtocolError::invalid_request("logout_token is required"));
                }
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::invalid_request(
                        "logout_token must appear once",
                    ));
                }
            }
        } else {
            std::str::from_utf8(&bytes)
                .map_err(|_| ProtocolError::invalid_request("the body is not UTF-8"))?
                .trim_matches(|c: char| c.is_ascii_whitespace())
                .to_owned()
        };
        if token.is_empty() {
            return Err(ProtocolError::invalid_request("the logout token is empty"));
        }
        Ok(LogoutToken(token))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(160).collect()
}

/// Where a request came from: the client IP (the socket peer, or for a
/// configured trusted proxy the nearest untrusted `X-Forwarded-For` hop)
/// and the user agent.
#[derive(Debug, Clone)]
pub struct Meta(pub RequestMeta);

impl<S> FromRequestParts<S> for Meta
where
    AuthMd: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AuthMd::from_ref(state);
        Ok(Meta(request_meta(
            parts,
            &app.config().server.trusted_proxies,
        )))
    }
}

/// Reads the client IP and user agent from request parts.
pub fn request_meta(parts: &Parts, trusted: &[ipnet::IpNet]) -> RequestMeta {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = peer.map(|peer| client_ip(peer, &parts.headers, trusted));
    let ua = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let id = parts
        .extensions
        .get::<super::observe::RequestId>()
        .map(super::observe::RequestId::as_str);
    RequestMeta::new(ip, ua).with_request_id(id)
}

/// The peer, unless it is a trusted proxy: then the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left
/// of that one are client-supplied and never believed.
pub fn client_ip(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed hop: nothing left of it can be believed.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = xff.parse() {
            h.insert("x-forwarded-for", v);
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn untrusted_peers_cannot_claim_another_address() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        assert_eq!(
            client_ip(ip("203.0.113.9"), &headers("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        // The client forged the left-most entry; the proxy appended the real one.
        let h = headers("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        let h = headers("garbage, 198.51.100.7");
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }
}
