//! What authmd tells the API behind it about a caller it let through: the
//! identity headers and the signed identity assertion. The gateway and
//! forward auth send the same ones (they are decided here, once, and kept
//! per credential with its assertion: a request through the gateway builds
//! none of them). No HTTP types: names as strings, values as bytes.
//!
//! Headers can be trusted only if the network between authmd and the API
//! is; the assertion is proof an API can check by itself, against
//! `/.well-known/jwks.json`, as with Pomerium's and Cloudflare Access's
//! JWTs.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::AuthMd;
use crate::credential::CredentialRecord;
use crate::service_keys::SignError;
use crate::time::Timestamp;

/// Every identity header starts with this; a client's own headers with it
/// are removed before authmd adds its own, so none can be forged.
pub const PREFIX: &str = "x-authmd-";
pub const REGISTRATION: &str = "x-authmd-registration";
pub const REGISTRATION_TYPE: &str = "x-authmd-registration-type";
/// Space-separated, as in OAuth.
pub const SCOPES: &str = "x-authmd-scopes";
pub const CREDENTIAL_TYPE: &str = "x-authmd-credential-type";
/// The user the registration is bound to (after a claim, or a provider's).
pub const USER: &str = "x-authmd-user";
/// The user's email, only when verified.
pub const EMAIL: &str = "x-authmd-email";
/// The provider (`iss`) that vouched for an agent-verified registration.
pub const PROVIDER: &str = "x-authmd-provider";
/// The user's subject at that provider.
pub const SUBJECT: &str = "x-authmd-subject";
pub const ASSERTION: &str = "x-authmd-assertion";

/// Every identity header, in the order they are sent.
pub const HEADERS: [&str; 9] = [
    REGISTRATION,
    REGISTRATION_TYPE,
    SCOPES,
    CREDENTIAL_TYPE,
    USER,
    EMAIL,
    PROVIDER,
    SUBJECT,
    ASSERTION,
];

/// The assertion's JOSE `typ`: not an ID-JAG or an access token, so that no
/// verifier of those mistakes it for one.
pub const ASSERTION_TYP: &str = "authmd-identity+jwt";
/// How long an assertion lives (`exp - iat`).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// An assertion is reused for the same credential while it has more than
/// this left: one signature per credential per 30 s, not per request.
pub const ASSERTION_REUSE: Duration = Duration::from_secs(30);
/// Credentials whose headers (and assertion, about 1 KiB) are kept per
/// replica.
const ASSERTION_CACHE: usize = 10_000;

/// The identity headers for a validated credential (lowercase names; the
/// assertion apart). Values are printable ASCII: a byte outside it, and
/// `%` itself, is percent-encoded (UTF-8), so a provider's odd `sub` can
/// neither break the header nor smuggle another.
pub fn headers(record: &CredentialRecord) -> Vec<(&'static str, String)> {
    let mut h = Vec::with_capacity(8);
    h.push((REGISTRATION, encode(&record.registration_id)));
    h.push((
        REGISTRATION_TYPE,
        record.registration_type.as_str().to_owned(),
    ));
    h.push((SCOPES, encode(&record.scopes.join(" "))));
    h.push((CREDENTIAL_TYPE, record.credential_type.as_str().to_owned()));
    if let Some(user) = &record.user {
        h.push((USER, encode(&user.id)));
        if let Some(email) = user.email.as_deref().filter(|_| user.email_verified) {
            h.push((EMAIL, encode(email)));
        }
    }
    if let Some(iss) = &record.iss {
        h.push((PROVIDER, encode(iss)));
    }
    if let Some(sub) = &record.sub {
        h.push((SUBJECT, encode(sub)));
    }
    h
}

/// Printable ASCII but `%` as is; every other byte as `%XX`.
fn encode(s: &str) -> String {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'%') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The claims of an identity assertion: `iss` (authmd's issuer), `aud`
/// (the resource identifier), `sub` (the user when the registration is
/// bound to one, else the registration), `registration_id`,
/// `registration_type`, `scope` (space-separated), `credential_type`,
/// `iat`, `exp`; and when known `email` (verified only), `provider` and
/// `provider_sub`.
pub fn claims(app: &AuthMd, record: &CredentialRecord, now: Timestamp) -> Map<String, Value> {
    let mut c = Map::new();
    let s = |v: &str| Value::String(v.to_owned());
    c.insert("iss".into(), s(&app.urls().issuer));
    c.insert("aud".into(), s(&app.urls().resource));
    let sub = record
        .user
        .as_ref()
        .map_or(record.registration_id.as_str(), |u| u.id.as_str());
    c.insert("sub".into(), s(sub));
    c.insert("registration_id".into(), s(&record.registration_id));
    c.insert(
        "registration_type".into(),
        s(record.registration_type.as_str()),
    );
    c.insert("scope".into(), Value::String(record.scopes.join(" ")));
    c.insert("credential_type".into(), s(record.credential_type.as_str()));
    c.insert("iat".into(), now.as_secs().into());
    c.insert("exp".into(), now.plus(ASSERTION_LIFETIME).as_secs().into());
    if let Some(user) = &record.user
        && let Some(email) = user.email.as_deref().filter(|_| user.email_verified)
    {
        c.insert("email".into(), s(email));
    }
    if let Some(iss) = &record.iss {
        c.insert("provider".into(), s(iss));
    }
    if let Some(sub) = &record.sub {
        c.insert("provider_sub".into(), s(sub));
    }
    c
}

/// What authmd tells the API about one credential: its identity headers
/// (as [`headers`] gives them, each value's bytes shared, not copied), and
/// the assertion when one was asked for.
#[derive(Clone)]
pub struct Told {
    pub headers: Arc<[(&'static str, bytes::Bytes)]>,
    pub assertion: Option<Arc<str>>,
}

impl std::fmt::Debug for Told {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The assertion is a bearer proof for the API: never printed.
        f.debug_struct("Told")
            .field("headers", &self.headers)
            .field("assertion", &self.assertion.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Clone)]
struct Cached {
    /// What it was built for: reused only for an equal record, so a scope
    /// change or a claim gets fresh headers and a fresh assertion.
    record: Arc<CredentialRecord>,
    headers: Arc<[(&'static str, bytes::Bytes)]>,
    /// The signed assertion and its `exp`, once one was asked for.
    assertion: Option<(Arc<str>, Timestamp)>,
}

/// The per-replica cache of what is told about a credential, by credential
/// id: its headers, and its signed assertion.
pub struct Assertions {
    cache: quick_cache::sync::Cache<String, Cached>,
}

impl std::fmt::Debug for Assertions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertions")
            .field("cached", &self.cache.len())
            .finish()
    }
}

impl Default for Assertions {
    fn default() -> Self {
        Assertions {
            cache: quick_cache::sync::Cache::new(ASSERTION_CACHE),
        }
    }
}

impl AuthMd {
    /// What to tell the API about a validated credential: its identity
    /// headers, built once per credential (and again when the credential
    /// changes), and with `assertion` its identity assertion: the cached
    /// one while it has more than [`ASSERTION_REUSE`] left and the
    /// credential is unchanged, else a fresh one (one signature).
    pub fn told(
        &self,
        record: &Arc<CredentialRecord>,
        assertion: bool,
        now: Timestamp,
    ) -> Result<Told, SignError> {
        let cache = &self.assertions().cache;
        let cached = cache
            .get(&record.credential_id)
            .filter(|c| Arc::ptr_eq(&c.record, record) || *c.record == **record);
        if let Some(c) = &cached {
            match &c.assertion {
                _ if !assertion => {
                    return Ok(Told {
                        headers: Arc::clone(&c.headers),
                        assertion: None,
                    });
                }
                Some((token, exp))
                    if now.plus(ASSERTION_REUSE) < *exp && *exp <= now.plus(ASSERTION_LIFETIME) =>
                {
                    return Ok(Told {
                        headers: Arc::clone(&c.headers),
                        assertion: Some(Arc::clone(token)),
                    });
                }
                _ => {}
            }
        }
        let headers = match cached {
            Some(c) => c.headers,
            None => headers(record)
                .into_iter()
                .map(|(name, value)| (name, bytes::Bytes::from(value)))
                .collect(),
        };
        let signed = if assertion {
            let token: Arc<str> = self
                .service_keys()
                .sign(ASSERTION_TYP, &claims(self, record, now), now)?
                .into();
            Some((
                token,
                Timestamp::from_secs(now.plus(ASSERTION_LIFETIME).as_secs()),
            ))
        } else {
            None
        };
        cache.insert(
            record.credential_id.clone(),
            Cached {
                record: Arc::clone(record),
                headers: Arc::clone(&headers),
                assertion: signed.clone(),
            },
        );
        Ok(Told {
            headers,
            assertion: signed.map(|(token, _)| token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_stay_printable_ascii() {
        assert_eq!(encode("reg_123"), "reg_123");
        assert_eq!(encode("a b"), "a b");
        assert_eq!(
            encode("x\r\nX-Authmd-User: evil"),
            "x%0D%0AX-Authmd-User: evil"
        );
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(encode("tab\there"), "tab%09here");
    }
}
