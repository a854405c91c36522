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
    let told = app
        .told(&agent.0, assertion, Timestamp::now())
        .map_err(crate::Error::internal)?;
    // The cached values' bytes, shared, not copied.
    for (name, value) in told.headers.iter() {
        if let Ok(v) = HeaderValue::from_maybe_shared(value.clone()) {
            headers.insert(name_of(name), v);
        }
    }
    if every {
        // Forward auth: a proxy copies a fixed list of headers, and some
        // (Caddy 2.6) copy an unfilled placeholder for a missing one. An
        // empty value tells "none" through every proxy (nginx drops it).
        for name in &identity::HEADERS[..identity::HEADERS.len() - 1] {
            let name = name_of(name);
            if !headers.contains_key(&name) {
                headers.insert(name, HeaderValue::from_static(""));
            }
        }
    }
    if let Some(token) = told.assertion {
        // The cached assertion's own bytes, shared, not copied (it is
        // about 1 KiB).
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(Shared(token))) {
            headers.insert(name_of(identity::ASSERTION), v);
        }
    }
    Ok(())
}

/// The header names, parsed once (`HeaderName::from_static` checks its
/// argument byte by byte each time it runs).
static NAMES: [HeaderName; 9] = [
    HeaderName::from_static(identity::HEADERS[0]),
    HeaderName::from_static(identity::HEADERS[1]),
    HeaderName::from_static(identity::HEADERS[2]),
    HeaderName::from_static(identity::HEADERS[3]),
    HeaderName::from_static(identity::HEADERS[4]),
    HeaderName::from_static(identity::HEADERS[5]),
    HeaderName::from_static(identity::HEADERS[6]),
    HeaderName::from_static(identity::HEADERS[7]),
    HeaderName::from_static(identity::HEADERS[8]),
];

/// One of [`identity::HEADERS`] as a `HeaderName`. Their lengths differ, so
/// the length finds the candidate and one comparison confirms it.
fn name_of(name: &'static str) -> HeaderName {
    match NAMES.iter().find(|n| n.as_str().len() == name.len()) {
        Some(n) if n.as_str() == name => n.clone(),
        _ => HeaderName::from_static(name),
    }
}

/// A cached assertion as the bytes of a header value.
struct Shared(std::sync::Arc<str>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_header_has_its_own_length_and_name() {
        let mut lengths: Vec<usize> = identity::HEADERS.iter().map(|h| h.len()).collect();
        lengths.sort_unstable();
        lengths.dedup();
        assert_eq!(
            lengths.len(),
            identity::HEADERS.len(),
            "name_of finds by length"
        );
        for h in identity::HEADERS {
            assert_eq!(name_of(h).as_str(), h);
        }
        assert_eq!(name_of("x-authmd-unknown!").as_str(), "x-authmd-unknown!");
    }
}
