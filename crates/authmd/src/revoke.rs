//! Revocation by the provider (docs/protocol.md §5): logout tokens.
//!
//! A logout token is checked like an ID-JAG where the two share a rule (the
//! trust list, the key lookup and signature of `id_jag.rs` step 4, the
//! audience), in the order of §5, and the first failure decides the code.
//! Its `jti` is remembered in the same replay table, under a key of its own.
//!
//! Two choices beyond the letter of §5, both toward BCL 1.0:
//! - a token naming only a session (`sid`, no `sub`) is accepted (OIDC
//!   Back-Channel Logout §2.4 allows it): nothing here is keyed by
//!   session, so it revokes nothing, answers `{"revoked": 0}` and spends
//!   its `jti`;
//! - a token revokes the credentials whose ID-JAG was issued up to its
//!   `iat` (plus the clock skew), by the assertion's `iat` and not by when
//!   authmd redeemed it: an ID-JAG minted before the user withdrew consent
//!   but redeemed after (a provider's retry, an outage, an agent racing the
//!   revocation) carries the withdrawn consent, while a stale token cannot
//!   end a credential the provider issued after consenting again; and
//!   assertions the provider issued before the token's `iat` no longer
//!   register for that subject.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::AuthMd;
use crate::audit::RequestMeta;
use crate::error::{Error, ProtocolError};
use crate::id_jag::{
    MAX_IDENTIFIER, REPLAY_RETENTION_SKEWS, Verifier, numeric_date, unverified_parse,
};
use crate::store::{SubjectRevocation, SubjectRevoked};
use crate::time::Timestamp;
use crate::users::logout_jti_key;
pub use crate::vocab::{BACKCHANNEL_LOGOUT_EVENT, EVENTS_SUPPORTED, REVOKED_EVENT};

/// A token without `exp` is accepted this long after its `iat`.
pub const MAX_AGE_WITHOUT_EXP: Duration = Duration::from_secs(300);

/// A logout token that passed every rule but the replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogout {
    pub iss: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    pub iat: Timestamp,
    /// When the token stops being acceptable (`exp`, or `iat` + 5 min).
    pub valid_until: Timestamp,
    /// Whether it asks for a revocation: a security event of another kind
    /// is accepted and changes nothing.
    pub revokes: bool,
}

/// The two ways a provider says "revoke": a logout token at
/// `POST /agent/auth/revoke` (original dialect, §5) and a security event at
/// `POST /agent/event/notify` (current dialect, RFC 8417/8935, §20.7).
/// Verified by the same rules (`Verifier::verify_logout`) and applied by
/// the same transaction (`Store::revoke_subject`); they differ in `typ`,
/// in whether `sub` may be absent, and in what other events mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationToken {
    /// `typ: logout+jwt`; `sub` or `sid`; events must name a logout.
    Logout,
    /// `typ: secevent+jwt`; `sub` required; events a non-empty object,
    /// and only the assertion-revoked event acts.
    SecurityEvent,
}

/// `POST /agent/auth/revoke`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// Credentials revoked.
    pub revoked: u64,
}

fn refuse(why: &str) -> ProtocolError {
    ProtocolError::InvalidLogoutToken(why.to_owned())
}

/// A non-empty string without control characters, at most
/// [`MAX_IDENTIFIER`] bytes; `Err` if present and not one.
fn identifier(
    claims: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ProtocolError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s))
            if !s.is_empty() && s.len() <= MAX_IDENTIFIER && !s.chars().any(char::is_control) =>
        {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ProtocolError::InvalidLogoutToken(format!(
            "{name} must be a non-empty string of at most {MAX_IDENTIFIER} bytes"
        ))),
    }
}

impl Verifier {
    /// Checks a logout token in the order of §5: issuer, signature, `typ`,
    /// audience, `iat`, `exp`, `jti`, `nonce`, `sub`, `events`.
    pub async fn verify_logout(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<VerifiedLogout, ProtocolError> {
        self.verify_revocation(token, RevocationToken::Logout, now)
            .await
    }

    /// [`Verifier::verify_logout`] for either kind of token.
    pub async fn verify_revocation(
        &self,
        token: &str,
        kind: RevocationToken,
        now: Timestamp,
    ) -> Result<VerifiedLogout, ProtocolError> {
        let token = unverified_parse(token)?;
        let provider = token
            .claim_str("iss")
            .and_then(|iss| self.provider(iss))
            .ok_or(ProtocolError::InvalidIssuer)?;
        self.check_signature(&token, provider).await?;
        let claims = &token.claims;

        // Explicit typing (BCL §4.1 recommends it; §5 requires it), so that
        // an ID token or an ID-JAG of the same provider is never a logout.
        let typ = token
            .header_str("typ")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let wanted = match kind {
            RevocationToken::Logout => "logout+jwt",
            RevocationToken::SecurityEvent => "secevent+jwt",
        };
        if typ != wanted && typ.strip_prefix("application/") != Some(wanted) {
            return Err(refuse(&format!("the token's typ header must be {wanted}")));
        }
        self.audience(claims)?;

        let skew = self.skew();
        let iat = numeric_date(claims.get("iat"))
            .ok_or_else(|| refuse("the token needs iat, a NumericDate"))?;
        if iat > now.plus(skew) {
            return Err(refuse("the token's iat is in the future"));
        }
        let valid_until = match claims.get("exp") {
            Some(exp) => {
                let exp =
                    numeric_date(Some(exp)).ok_or_else(|| refuse("exp must be a NumericDate"))?;
                if exp.plus(skew) <= now {
                    return Err(ProtocolError::Expired);
                }
                if exp < iat || iat.until(exp) > self.max_lifetime() {
                    return Err(ProtocolError::InvalidLogoutToken(format!(
                        "the token lives longer than {} (exp - iat)",
                        crate::config::duration_words(self.max_lifetime())
                    )));
                }
                exp
            }
            None => {
                let until = iat.plus(MAX_AGE_WITHOUT_EXP);
                if until.plus(skew) <= now {
                    return Err(ProtocolError::Expired);
                }
                until
            }
        };
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(Some(nbf)).ok_or_else(|| refuse("nbf must be a NumericDate"))?;
            if nbf > now.plus(skew) {
                return Err(refuse("the token is not valid yet (nbf)"));
            }
        }
        let jti = identifier(claims, "jti")?.ok_or_else(|| refuse("the token needs a jti"))?;
        if claims.contains_key("nonce") {
            return Err(refuse("a logout token must not carry a nonce"));
        }
        let sub = identifier(claims, "sub")?;
        let sid = identifier(claims, "sid")?;
        if sub.is_none() && (sid.is_none() || kind == RevocationToken::SecurityEvent) {
            return Err(refuse("the token needs sub"));
        }
        let events = claims
            .get("events")
            .and_then(Value::as_object)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| refuse("the token needs events, a non-empty JSON object"))?;
        let logout = EVENTS_SUPPORTED
            .iter()
            .any(|name| events.get(*name).is_some_and(Value::is_object));
        if !logout && kind == RevocationToken::Logout {
            return Err(ProtocolError::InvalidLogoutToken(format!(
                "events must hold {REVOKED_EVENT:?} or {BACKCHANNEL_LOGOUT_EVENT:?} with an object value"
            )));
        }
        Ok(VerifiedLogout {
            iss: provider.config.issuer.clone(),
            sub,
            sid,
            jti,
            iat,
            valid_until,
            revokes: logout,
        })
    }
}

impl AuthMd {
    /// §5: verifies the logout token and revokes what its subject holds
    /// through that provider. `token` is the request's decoded token (or
    /// why it could not be read).
    pub async fn revoke_by_provider(
        &self,
        token: Result<String, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Revoked, Error> {
        self.revoke_by_token(token, RevocationToken::Logout, meta, now)
            .await
    }

    /// The one revocation path of both dialects: a logout token (§5) or a
    /// security event (§20.7), verified and applied alike. A security
    /// event that names no revocation is accepted and changes nothing
    /// (its `jti` is not recorded: it changes nothing if replayed).
    pub async fn revoke_by_token(
        &self,
        token: Result<String, ProtocolError>,
        kind: RevocationToken,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Revoked, Error> {
        let verified = match self.verifier().verify_revocation(&token?, kind, now).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(code = e.code(), reason = %e, ip = ?meta.ip, "logout token refused");
                return Err(e.into());
            }
        };
        if !verified.revokes {
            return Ok(Revoked { revoked: 0 });
        }
        let skew = self.verifier().skew();
        let revocation = SubjectRevocation {
            jti_key: logout_jti_key(&verified.iss, &verified.jti),
            jti_until: verified.valid_until.plus(skew * REPLAY_RETENTION_SKEWS),
            assertions_through: verified.iat.plus(skew),
            assertions_before: verified.iat,
            iss: verified.iss,
            sub: verified.sub,
            now,
            meta: meta.clone(),
        };
        match self.store().revoke_subject(revocation).await? {
            SubjectRevoked::Replay => Err(ProtocolError::ReplayDetected.into()),
            SubjectRevoked::Done(report) => {
                crate::metrics::revocations("logout", report.credentials);
                if report.credentials > 0 {
                    self.refresh_after_commit().await;
                }
                Ok(Revoked {
                    revoked: report.credentials,
                })
            }
        }
    }
}
