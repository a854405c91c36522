//! Writes what `identity.rs` decides into HTTP headers: the same for the
//! gateway (on the forwarded request) and forward auth (on its 200).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::AuthMd;
use crate::identity;
use crate::middleware::Agent;
use crate::time::Timestamp;

/// Adds the identity headers of `agent`, and the assertion if `assertion`;
/// with `every`, also the ones it has no value for, empty.
/// A failure to sign is an internal error, a 500 (fail closed: the API
/// expects the proof).
pub(super) fn add(
    app: &AuthMd,
    agent: &Agent,
    headers: &mut HeaderMap,
    assertion: bool,
    every: bool,
) -> Result<(), crate::Error> {
    // The values move into the headers (a `String` becomes their bytes
    // without a copy).
    for (name, value) in identity::headers(agent) {
        if let Ok(v) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if every {
        // Forward auth: a proxy copies a fixed list of headers, and some
        // (Caddy 2.6) copy an unfilled placeholder for a missing one. An
        // empty value tells "none" through every proxy (nginx drops it).
        for name in &identity::HEADERS[..identity::HEADERS.len() - 1] {
            let name = HeaderName::from_static(name);
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(""));
            }
        }
    }
    if assertion {
        let token = app
            .identity_assertion(&agent.0, Timestamp::now())
            .map_err(crate::Error::internal)?;
        // The cached assertion's own bytes, shared, not copied (it is
        // about 1 KiB).
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(Shared(token))) {
            headers.insert(HeaderName::from_static(identity::ASSERTION), v);
        }
    }
    Ok(())
}

/// A cached assertion as the bytes of a header value.
struct Shared(std::sync::Arc<str>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}
