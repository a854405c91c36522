//! Writes what `identity.rs` decides into HTTP headers: the same for the
//! gateway (on the forwarded request) and forward auth (on its 200).

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::AuthMd;
use crate::identity;
use crate::middleware::Agent;
use crate::time::Timestamp;

/// Adds the identity headers of `agent`, and the assertion if `assertion`.
/// A failure to sign is an internal error, a 500 (fail closed: the API
/// expects the proof).
pub(super) fn add(
    app: &AuthMd,
    agent: &Agent,
    headers: &mut HeaderMap,
    assertion: bool,
) -> Result<(), crate::Error> {
    for (name, value) in identity::headers(agent) {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if assertion {
        let token = app
            .identity_assertion(&agent.0, Timestamp::now())
            .map_err(crate::Error::internal)?;
        if let Ok(v) = HeaderValue::from_str(&token) {
            headers.insert(HeaderName::from_static(identity::ASSERTION), v);
        }
    }
    Ok(())
}
