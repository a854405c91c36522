//! authmd's own identity assertions, the current dialect's registration
//! result (docs/protocol.md §20.3): a JWT signed with the service keys
//! (`service_keys.rs`, one key store, one JWKS, one rotation command) that
//! the agent exchanges at the token endpoint.
//!
//! Header `typ: oauth-id-jag+jwt` (as the reference implementation),
//! claims `iss` = `aud` = the issuer, `sub` = the registration, `jti`,
//! `iat`, `exp`, and when the registration is bound to a user with a
//! verified address `email` / `email_verified`.
//!
//! Unlike the reference implementation, an assertion is bound to what it
//! was issued for: it names the registration state it was issued in
//! (`registration_status`), and the token endpoint exchanges it only while
//! the registration is still in that state. A pre-claim assertion stops
//! exchanging when the claim completes (it would otherwise get the
//! post-claim scopes; while the claim is pending it still exchanges),
//! and an expired or revoked registration's assertions stop at once. It
//! never outlives an unclaimed registration's claim deadline.

use std::time::Duration;

use authmd_jose::{Algorithm, Compact};
use serde_json::{Map, Value};

use crate::AuthMd;
use crate::error::{Error, ProtocolError};
use crate::time::Timestamp;
use crate::token::{SecretHash, new_id};
use crate::vocab::RegistrationStatus;

/// The JOSE `typ` (the reference implementation's; an ID-JAG's).
pub const TYP: &str = "oauth-id-jag+jwt";
/// How long an assertion lives at most (`exp - iat`), the reference
/// implementation's hour; never more than the signing keys allow.
pub const LIFETIME: Duration = Duration::from_secs(3600);
const _: () = assert!(LIFETIME.as_secs() <= crate::service_keys::MAX_LIFETIME.as_secs());
/// The private claim that binds an assertion to the registration's state.
pub const STATUS_CLAIM: &str = "registration_status";
/// The private claim that binds an assertion to the refresh family it was
/// issued with (at the claim's completion and at each rotation): it stops
/// exchanging when the family ends, as a detected reuse ends it (RFC 9700
/// §4.14.2), so whoever rotated first cannot go on minting access tokens
/// with the assertion that rotation gave.
pub const FAMILY_CLAIM: &str = "refresh_family";

/// What an assertion is issued for.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub registration_id: &'a str,
    pub status: RegistrationStatus,
    /// The claim deadline of an unclaimed registration: the assertion
    /// expires no later.
    pub deadline: Option<Timestamp>,
    /// The bound user's address, only when verified.
    pub email: Option<&'a str>,
    /// The refresh family issued with it, if any ([`FAMILY_CLAIM`]).
    pub family: Option<&'a str>,
}

/// A signed assertion and its expiry.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub jti: String,
    pub expires_at: Timestamp,
}

/// An assertion of ours that verified: whose, and in which state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub registration_id: String,
    pub status: RegistrationStatus,
    /// The refresh family it is bound to ([`FAMILY_CLAIM`]), if any.
    pub family: Option<String>,
    pub jti: String,
    pub expires_at: Timestamp,
}

/// Assertions signed here, by the SHA-256 of their text: an agent
/// exchanges its assertion at the token endpoint, usually seconds after
/// the registration answered and at the same replica. One found here is
/// byte for byte a token this replica signed, so checking the signature
/// again would only repeat our own arithmetic (an ES256 verification, the
/// larger part of an exchange). Bounded: one not found (signed by another
/// replica, before a restart, or pushed out by newer ones) has its
/// signature verified as before. Everything else is checked either way,
/// the `kid` included: an assertion whose key is no longer published is
/// refused though it is found here.
pub struct Recent {
    signed: quick_cache::sync::Cache<SecretHash, ()>,
}

/// Assertions remembered per replica (about 100 bytes each).
const RECENT: usize = 65_536;

impl Default for Recent {
    fn default() -> Self {
        Recent {
            signed: quick_cache::sync::Cache::new(RECENT),
        }
    }
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("remembered", &self.signed.len())
            .finish()
    }
}

impl Recent {
    fn remember(&self, token: &str) {
        self.signed.insert(SecretHash::of(token), ());
    }

    /// Whether this replica signed exactly `token`.
    fn signed_here(&self, token: &str) -> bool {
        self.signed.get(&SecretHash::of(token)).is_some()
    }
}

/// Whether a token looks like one of our assertions (its unverified `iss`
/// is our issuer): the token endpoint tells ours from a provider's ID-JAG
/// by this, then verifies it by the rules of its kind.
pub fn is_ours(token: &Compact, issuer: &str) -> bool {
    token.claim_str("iss") == Some(issuer)
}

impl AuthMd {
    /// Signs an assertion for `s` (one signature, no I/O).
    pub fn issue_assertion(&self, s: &Subject<'_>, now: Timestamp) -> Result<Issued, Error> {
        self.issue_assertion_with_jti(s, new_id("jti_"), now)
    }

    /// [`AuthMd::issue_assertion`] with a `jti` chosen earlier (recorded in
    /// the audit trail by the transaction that decided to issue it).
    pub fn issue_assertion_with_jti(
        &self,
        s: &Subject<'_>,
        jti: String,
        now: Timestamp,
    ) -> Result<Issued, Error> {
        let iat = now.as_secs();
        let mut exp = now.plus(LIFETIME).as_secs();
        if let Some(d) = s.deadline {
            exp = exp.min(d.as_secs());
        }
        let mut c = Map::new();
        let text = |v: &str| Value::String(v.to_owned());
        c.insert("iss".into(), text(&self.urls().issuer));
        c.insert("sub".into(), text(s.registration_id));
        c.insert("aud".into(), text(&self.urls().issuer));
        c.insert("jti".into(), text(&jti));
        c.insert("iat".into(), iat.into());
        c.insert("exp".into(), exp.into());
        c.insert(STATUS_CLAIM.into(), text(s.status.as_str()));
        if let Some(email) = s.email {
            c.insert("email".into(), text(email));
            c.insert("email_verified".into(), Value::Bool(true));
        }
        if let Some(family) = s.family {
            c.insert(FAMILY_CLAIM.into(), text(family));
        }
        let token = self
            .service_keys()
            .sign(TYP, &c, now)
            .map_err(Error::internal)?;
        self.recent_assertions().remember(&token);
        Ok(Issued {
            token,
            jti,
            expires_at: Timestamp::from_secs(exp),
        })
    }

    /// Verifies one of our assertions: its form, `typ`, a `kid` of our
    /// JWKS and the signature, then `iss`, `aud`, `exp` (with the clock
    /// skew between replicas), `iat`, `sub` and the state claim. Every
    /// failure is `invalid_grant`; the reason is for the log.
    pub async fn verify_assertion(
        &self,
        token: &Compact,
        now: Timestamp,
    ) -> Result<Verified, ProtocolError> {
        let refuse = |why: &str| Err(ProtocolError::InvalidGrant(why.to_owned()));
        if !token
            .header_str("typ")
            .is_some_and(|t| t.eq_ignore_ascii_case(TYP))
        {
            return refuse("the assertion's typ is not oauth-id-jag+jwt");
        }
        if token.header.contains_key("crit") {
            return refuse("the assertion has a crit header");
        }
        let Some(alg) = token.header_str("alg").and_then(Algorithm::from_name) else {
            return refuse("the assertion's alg is not accepted");
        };
        let Some(kid) = token
            .header_str("kid")
            .filter(|k| !k.is_empty() && k.len() <= 256)
        else {
            return refuse("the assertion has no usable kid");
        };
        let Some(key) = self.service_keys().verifying_key(kid, now).await else {
            return refuse("no key of this service has the assertion's kid");
        };
        let signed_here = self.recent_assertions().signed_here(token.as_str());
        if !key.supports(alg)
            || !(signed_here || key.verify(alg, token.signing_input(), &token.signature))
        {
            return refuse("the assertion's signature does not verify");
        }
        let c = &token.claims;
        let issuer = self.urls().issuer.as_str();
        if token.claim_str("iss") != Some(issuer) {
            return refuse("the assertion was not issued here");
        }
        let aud_ok = match c.get("aud") {
            Some(Value::String(a)) => a == issuer,
            Some(Value::Array(a)) => a.len() == 1 && a[0].as_str() == Some(issuer),
            _ => false,
        };
        if !aud_ok {
            return refuse("the assertion is not for this service");
        }
        let skew = self.config().assertions.clock_skew.get();
        let date = |name: &str| {
            c.get(name)
                .and_then(Value::as_i64)
                .map(Timestamp::from_secs)
        };
        let (Some(iat), Some(exp)) = (date("iat"), date("exp")) else {
            return refuse("the assertion has no integer iat and exp");
        };
        if exp.plus(skew) <= now {
            return refuse("the assertion has expired");
        }
        if iat > now.plus(skew) || exp < iat || iat.until(exp) > LIFETIME {
            return refuse("the assertion's iat and exp are not ones this service issues");
        }
        let Some(sub) = token
            .claim_str("sub")
            .filter(|s| s.starts_with("reg_") && s.len() <= 64)
        else {
            return refuse("the assertion's sub is not a registration");
        };
        let Some(jti) = token.claim_str("jti").filter(|j| j.len() <= 64) else {
            return refuse("the assertion has no jti");
        };
        let Some(status) = token
            .claim_str(STATUS_CLAIM)
            .and_then(RegistrationStatus::parse)
        else {
            return refuse("the assertion names no registration state");
        };
        let family = match token.claims.get(FAMILY_CLAIM) {
            None => None,
            Some(Value::String(f)) if f.starts_with("rft_") && f.len() <= 64 => Some(f.clone()),
            Some(_) => return refuse("the assertion's refresh family is not one"),
        };
        Ok(Verified {
            registration_id: sub.to_owned(),
            status,
            family,
            jti: jti.to_owned(),
            expires_at: exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_text_signed_here_is_recognized() {
        let recent = Recent::default();
        recent.remember("aaa.bbb.ccc");
        assert!(recent.signed_here("aaa.bbb.ccc"));
        for other in [
            "aaa.bbb.ccd",
            "aaa.bbb.cc",
            "aaa.bbb.ccc.",
            " aaa.bbb.ccc",
            "AAA.bbb.ccc",
            "",
        ] {
            assert!(!recent.signed_here(other), "{other:?}");
        }
    }
}
