//! Token introspection (RFC 7662): resource servers and gateways that
//! already speak it (Kong, Apigee, Spring Security, Envoy filters) ask
//! whether a credential is active and what it holds.
//!
//! Whether a credential is active is decided by the API's own validation
//! ([`crate::validation::Validator`], through [`AuthMd::validate`]): one
//! decision, with the same cache and the same one-second bound on
//! revocations. This module only authenticates the caller and shapes the
//! answer.
//!
//! Callers authenticate with HTTP Basic (RFC 6749 §2.3.1) as a configured
//! `[[introspection.clients]]` entry; only the SHA-256 of each secret is
//! kept, compared in constant time, with the same work for an unknown id.
//! RFC 7662 §4 requires that the endpoint not let anyone fish for tokens:
//! failed authentications are counted per client network in the store (so
//! replicas count together), and a network over its limit is answered
//! `429` without its credentials being looked at, until a slot frees. The
//! rate of authenticated callers costs no store access at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::AuthMd;
use crate::audit::RequestMeta;
use crate::config::Config;
use crate::credential::CredentialRecord;
use crate::error::{Error, ProtocolError};
use crate::rate_limit::{RateLimit, client_key};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::validation::Validation;

/// Throttled networks remembered per replica; past this, expired entries are
/// dropped, and if none has expired a new one is not remembered (its next
/// failure asks the store again, which still refuses it).
const MAX_THROTTLED: usize = 10_000;

/// Compared against when the presented id is unknown, so that an unknown
/// id costs the same work as a wrong secret. No secret hashes to it.
const NO_CLIENT: SecretHash = SecretHash([0xff; 32]);

/// The configured callers and the networks currently refused.
#[derive(Debug)]
pub struct Introspectors {
    clients: HashMap<String, SecretHash>,
    /// Client network → until when it is refused (its store bucket is
    /// exhausted).
    throttled: Mutex<HashMap<String, Timestamp>>,
}

impl Introspectors {
    pub fn new(config: &Config) -> Introspectors {
        Introspectors {
            clients: config
                .introspection
                .clients
                .iter()
                .map(|c| (c.id.clone(), c.secret_hash()))
                .collect(),
            throttled: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any caller is configured (the endpoint is published then).
    pub fn any(&self) -> bool {
        !self.clients.is_empty()
    }

    /// The id if `id`/`secret` are a configured client's. Both the raw
    /// strings and their `application/x-www-form-urlencoded` decoding are
    /// tried: RFC 6749 §2.3.1 says clients encode them before Basic, and
    /// many (curl -u among them) do not.
    fn verify(&self, id: &str, secret: &str) -> Option<&str> {
        if let Some(found) = self.verify_exact(id, secret) {
            return Some(found);
        }
        let (did, dsecret) = (form_decode(id), form_decode(secret));
        if did.is_none() && dsecret.is_none() {
            return None;
        }
        self.verify_exact(
            did.as_deref().unwrap_or(id),
            dsecret.as_deref().unwrap_or(secret),
        )
    }

    fn verify_exact(&self, id: &str, secret: &str) -> Option<&str> {
        let presented = SecretHash::of(secret);
        match self.clients.get_key_value(id) {
            Some((id, expected)) => (*expected == presented).then_some(id.as_str()),
            None => {
                let _ = NO_CLIENT == presented;
                None
            }
        }
    }

    /// `id` as configured, if a client has it (raw or form-decoded): what
    /// a failed authentication may log. Anything else may be a secret sent
    /// in the id's place.
    fn configured_id(&self, id: &str) -> Option<&str> {
        let decoded = form_decode(id);
        [Some(id), decoded.as_deref()]
            .into_iter()
            .flatten()
            .find_map(|i| self.clients.get_key_value(i).map(|(k, _)| k.as_str()))
    }

    /// How long the network of `ip` is still refused at `now`, if it is.
    /// Nothing is computed while no network is refused (the common case).
    fn throttled_for(&self, ip: Option<IpAddr>, now: Timestamp) -> Option<Duration> {
        let map = self.throttled.lock().ok()?;
        if map.is_empty() {
            return None;
        }
        map.get(&network(ip))
            .filter(|until| **until > now)
            .map(|until| now.until(*until))
    }

    fn throttle(&self, network: String, until: Timestamp, now: Timestamp) {
        let Ok(mut map) = self.throttled.lock() else {
            return;
        };
        if map.len() >= MAX_THROTTLED {
            map.retain(|_, u| *u > now);
        }
        if map.len() < MAX_THROTTLED {
            map.insert(network, until);
        }
    }
}

/// What a limit counts for a caller: its network, or one bucket for callers
/// of unknown address (an embedder that serves without peer addresses).
fn network(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), client_key)
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a
/// space, `%XX` a byte); `None` if there is nothing to decode, or the
/// result is not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    if !s.bytes().any(|b| b == b'+' || b == b'%') {
        return None;
    }
    let hex = |b: u8| char::from(b).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(u8::try_from(h * 16 + l).ok()?);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Credentials of an `Authorization: Basic` header, as presented (the
/// HTTP layer decodes the base64; the `:` split is RFC 7617 §2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BasicCredentials<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

impl std::fmt::Debug for BasicCredentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// What the caller presented as client authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth<'a> {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not well-formed Basic.
    Malformed,
    Basic(BasicCredentials<'a>),
}

/// The answer of RFC 7662 §2.2.
#[derive(Debug, Clone)]
pub enum Introspection {
    /// Unknown, revoked, expired or malformed: only `{"active": false}`
    /// (§2.2: nothing else is said about it).
    Inactive,
    Active(Arc<CredentialRecord>),
}

/// `{"active": true, …}`: RFC 7662 §2.2 members, then authmd's own.
#[derive(Debug, Serialize)]
struct Active<'a> {
    active: bool,
    scope: String,
    /// The registration: the client the credential was issued to.
    client_id: &'a str,
    /// The user the registration is bound to, or the registration itself
    /// when no user is (an anonymous agent acts for itself).
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    iat: i64,
    iss: &'a str,
    aud: &'a str,
    token_type: &'static str,
    /// The credential's id (public: it names the credential in the audit
    /// trail and the admin API, never the secret).
    jti: &'a str,
    credential_type: &'static str,
    registration_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

/// The inactive answer, byte for byte.
pub const INACTIVE: &[u8] = br#"{"active":false}"#;

impl Introspection {
    /// The JSON body.
    pub fn to_json(&self, app: &AuthMd) -> Vec<u8> {
        let Introspection::Active(r) = self else {
            return INACTIVE.to_vec();
        };
        let mut out = Vec::with_capacity(512);
        let body = Active {
            active: true,
            scope: r.scopes.join(" "),
            client_id: &r.registration_id,
            sub: r
                .user
                .as_ref()
                .map_or(r.registration_id.as_str(), |u| u.id.as_str()),
            exp: r.valid_until().map(Timestamp::as_secs),
            iat: r.issued_at.as_secs(),
            iss: &app.urls().issuer,
            aud: &app.urls().resource,
            token_type: "Bearer",
            jti: &r.credential_id,
            credential_type: r.credential_type.as_str(),
            registration_type: r.registration_type.as_str(),
            email: r.verified_email(),
        };
        match serde_json::to_writer(&mut out, &body) {
            Ok(()) => out,
            Err(_) => INACTIVE.to_vec(),
        }
    }
}

impl AuthMd {
    /// Authenticates the caller of `POST /oauth2/introspect`: the client's
    /// id, or `invalid_client` (counted against the caller's network) or
    /// `rate_limited` (the network failed too often; nothing presented is
    /// looked at).
    pub async fn authenticate_introspector(
        &self,
        auth: ClientAuth<'_>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<&str, Error> {
        let introspectors = self.introspectors();
        if let Some(wait) = introspectors.throttled_for(meta.ip, now) {
            return Err(ProtocolError::RateLimited { retry_after: wait }.into());
        }
        let presented = match auth {
            ClientAuth::Basic(b) => Some(b),
            ClientAuth::Missing | ClientAuth::Malformed => None,
        };
        if let Some(id) = presented.and_then(|b| introspectors.verify(b.id, b.secret)) {
            return Ok(id);
        }
        let network = network(meta.ip);
        // The id is logged only when it is a configured client's (a wrong
        // secret): a caller that swapped its id and secret would otherwise
        // put the secret in the log. The secret never.
        let shown = presented.map_or("", |b| {
            introspectors
                .configured_id(b.id)
                .unwrap_or("(not a configured client)")
        });
        let how = match auth {
            ClientAuth::Missing => "no Authorization header",
            ClientAuth::Malformed => "malformed Authorization header",
            ClientAuth::Basic(_) => "unknown client or wrong secret",
        };
        tracing::info!(ip = ?meta.ip, client_id = ?shown, how,
            "introspection client authentication failed");
        let rl = &self.config().rate_limits;
        if !rl.enabled {
            return Err(ProtocolError::InvalidClient.into());
        }
        let limit = RateLimit::per_hour(
            format!("introspect:ip:{network}"),
            self.config().introspection.failures_per_ip_per_hour,
        );
        match self.store().count_request(vec![limit], now).await? {
            Ok(()) => Err(ProtocolError::InvalidClient.into()),
            Err(limited) => {
                introspectors.throttle(network, now.plus(limited.retry_after), now);
                Err(ProtocolError::RateLimited {
                    retry_after: limited.retry_after,
                }
                .into())
            }
        }
    }

    /// RFC 7662 §2.2 for a presented token: active exactly when the API
    /// would accept it now. `token_type_hint` is not taken: every token
    /// is looked up the same way (§2.1 lets a server ignore it).
    pub async fn introspect(&self, token: &str, now: Timestamp) -> Result<Introspection, Error> {
        Ok(match self.validate(Some(token), now).await? {
            Validation::Valid(record) => Introspection::Active(record),
            Validation::Missing | Validation::Invalid(_) => Introspection::Inactive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn introspectors(id: &str, secret: &str) -> Introspectors {
        let mut config = Config::default();
        config.introspection.clients = vec![crate::config::IntrospectionClient {
            id: id.into(),
            secret_sha256: SecretHash::of(secret)
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }];
        Introspectors::new(&config)
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("plain"), None);
        assert_eq!(form_decode("a+b%2Fc%3d").as_deref(), Some("a b/c="));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(form_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn secrets_match_raw_or_form_encoded() {
        let i = introspectors("kong", "s3cret+/=");
        assert_eq!(
            i.verify("kong", "s3cret+/="),
            Some("kong"),
            "raw, as curl -u sends it"
        );
        assert_eq!(
            i.verify("kong", "s3cret%2B%2F%3D"),
            Some("kong"),
            "RFC 6749 §2.3.1"
        );
        assert_eq!(i.verify("kong", "s3cret"), None);
        assert_eq!(i.verify("other", "s3cret+/="), None);
        assert_eq!(i.verify("kong", ""), None);
    }

    #[test]
    fn throttled_networks_are_bounded() {
        let i = introspectors("kong", "x");
        let now = Timestamp::from_secs(1000);
        let until = now.plus(Duration::from_secs(60));
        let v4 = |n: u32| Some(IpAddr::from(n.to_be_bytes()));
        assert!(i.throttled_for(v4(1), now).is_none());
        let max = u32::try_from(MAX_THROTTLED).unwrap_or(u32::MAX);
        for n in 0..max + 10 {
            i.throttle(network(v4(n)), until, now);
        }
        assert_eq!(
            i.throttled.lock().map(|m| m.len()).unwrap_or(0),
            MAX_THROTTLED
        );
        assert!(i.throttled_for(v4(0), now).is_some());
        assert!(
            i.throttled_for(v4(max + 5), now).is_none(),
            "not remembered: full"
        );
        assert!(
            i.throttled_for(v4(0), until).is_none(),
            "over at its Retry-After"
        );
        // Once they expire, new ones find room again.
        let later = now.plus(Duration::from_secs(61));
        i.throttle(network(None), later.plus(Duration::from_secs(5)), later);
        assert!(i.throttled_for(None, later).is_some());
    }
}
