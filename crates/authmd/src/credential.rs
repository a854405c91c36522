//! Credentials as the store knows them, and the rules that decide whether a
//! presented one is valid (docs/protocol.md §7).

use serde::Serialize;

use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::vocab::{RegistrationStatus, RegistrationType};

/// `api_key` or `access_token` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialType {
    ApiKey,
    AccessToken,
}

impl CredentialType {
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialType::ApiKey => "api_key",
            CredentialType::AccessToken => "access_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api_key" => Some(CredentialType::ApiKey),
            "access_token" => Some(CredentialType::AccessToken),
            _ => None,
        }
    }
}

/// How a credential came to be issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    Anonymous,
    Email,
    Provider,
}

impl CredentialSource {
    /// The source of a credential issued to a registration of `kind` by
    /// the current dialect's token endpoint.
    pub const fn of(kind: RegistrationType) -> Self {
        match kind {
            RegistrationType::Anonymous => CredentialSource::Anonymous,
            RegistrationType::EmailVerification => CredentialSource::Email,
            RegistrationType::AgentProvider => CredentialSource::Provider,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Anonymous => "anonymous",
            CredentialSource::Email => "email",
            CredentialSource::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anonymous" => Some(CredentialSource::Anonymous),
            "email" => Some(CredentialSource::Email),
            "provider" => Some(CredentialSource::Provider),
            _ => None,
        }
    }
}

/// The user a credential is bound to, as `whoami` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserSummary {
    pub id: String,
    pub email: Option<String>,
    /// Whether `email` was verified (by a claim, or by the provider). Not
    /// shown by `whoami`; what gateways and introspection pass on only
    /// when true ([`CredentialRecord::verified_email`]).
    #[serde(skip)]
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Everything validation needs to know about one credential, read in one
/// query and cached per replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRecord {
    pub credential_id: String,
    /// SHA-256 of the secret; compared in constant time with the presented one.
    pub secret_hash: SecretHash,
    pub credential_type: CredentialType,
    pub source: CredentialSource,
    pub scopes: Vec<String>,
    pub issued_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub registration_status: RegistrationStatus,
    /// The registration's claim deadline; it binds the credential only while
    /// the registration is unclaimed.
    pub registration_expires_at: Option<Timestamp>,
    pub user: Option<UserSummary>,
    pub iss: Option<String>,
    pub sub: Option<String>,
}

/// Why a known credential is refused. Logged, never told to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Revoked,
    Expired,
    UnclaimedExpired,
    RegistrationInactive,
}

impl Refusal {
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::UnclaimedExpired => "unclaimed_expired",
            Refusal::RegistrationInactive => "registration_inactive",
        }
    }
}

impl CredentialRecord {
    /// Whether the credential may be used at `now`. Pure: the same record
    /// gives the same answer on every replica.
    pub fn check(&self, now: Timestamp) -> Result<(), Refusal> {
        if self.revoked_at.is_some_and(|t| t <= now) {
            return Err(Refusal::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(Refusal::Expired);
        }
        match self.registration_status {
            RegistrationStatus::Unclaimed | RegistrationStatus::PendingClaim => {
                if self.registration_expires_at.is_some_and(|t| t <= now) {
                    return Err(Refusal::UnclaimedExpired);
                }
            }
            RegistrationStatus::Claimed | RegistrationStatus::Active => {}
            RegistrationStatus::Expired | RegistrationStatus::Revoked => {
                return Err(Refusal::RegistrationInactive);
            }
        }
        Ok(())
    }

    /// When the credential stops being valid by itself: its own expiry,
    /// or, while its registration is unclaimed, the claim deadline, whichever
    /// comes first (what [`CredentialRecord::check`] enforces). `None`:
    /// valid until revoked.
    pub fn valid_until(&self) -> Option<Timestamp> {
        let deadline = match self.registration_status {
            RegistrationStatus::Unclaimed | RegistrationStatus::PendingClaim => {
                self.registration_expires_at
            }
            _ => None,
        };
        match (self.expires_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The bound user's email, only if it was verified.
    pub fn verified_email(&self) -> Option<&str> {
        self.user
            .as_ref()
            .filter(|u| u.email_verified)
            .and_then(|u| u.email.as_deref())
    }

    /// Whether every scope in `needed` was granted.
    pub fn has_scopes(&self, needed: &[String]) -> bool {
        needed.iter().all(|n| self.scopes.iter().any(|s| s == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> CredentialRecord {
        CredentialRecord {
            credential_id: "crd_1".into(),
            secret_hash: SecretHash([7; 32]),
            credential_type: CredentialType::ApiKey,
            source: CredentialSource::Anonymous,
            scopes: vec!["api.read".into()],
            issued_at: Timestamp::from_secs(1000),
            expires_at: None,
            revoked_at: None,
            registration_id: "reg_1".into(),
            registration_type: RegistrationType::Anonymous,
            registration_status: RegistrationStatus::Unclaimed,
            registration_expires_at: Some(Timestamp::from_secs(2000)),
            user: None,
            iss: None,
            sub: None,
        }
    }

    #[test]
    fn unclaimed_key_dies_with_its_registration() {
        let r = record();
        assert_eq!(r.check(Timestamp::from_secs(1999)), Ok(()));
        assert_eq!(
            r.check(Timestamp::from_secs(2000)),
            Err(Refusal::UnclaimedExpired)
        );
    }

    #[test]
    fn claimed_key_outlives_the_claim_deadline() {
        let mut r = record();
        r.registration_status = RegistrationStatus::Claimed;
        assert_eq!(r.check(Timestamp::from_secs(5000)), Ok(()));
    }

    #[test]
    fn revoked_expired_and_inactive_are_refused() {
        let now = Timestamp::from_secs(1500);
        let mut r = record();
        r.revoked_at = Some(now);
        assert_eq!(r.check(now), Err(Refusal::Revoked));
        let mut r = record();
        r.expires_at = Some(now.minus(Duration::from_millis(1)));
        assert_eq!(r.check(now), Err(Refusal::Expired));
        let mut r = record();
        r.registration_status = RegistrationStatus::Expired;
        assert_eq!(r.check(now), Err(Refusal::RegistrationInactive));
    }

    #[test]
    fn valid_until_is_the_earlier_of_expiry_and_claim_deadline() {
        let mut r = record();
        assert_eq!(r.valid_until(), Some(Timestamp::from_secs(2000)));
        r.expires_at = Some(Timestamp::from_secs(1500));
        assert_eq!(r.valid_until(), Some(Timestamp::from_secs(1500)));
        r.registration_status = RegistrationStatus::Claimed;
        r.expires_at = None;
        assert_eq!(r.valid_until(), None, "a claimed key has no deadline");
    }

    #[test]
    fn only_a_verified_email_is_passed_on() {
        let mut r = record();
        let user = |verified| UserSummary {
            id: "usr_1".into(),
            email: Some("a@example.com".into()),
            email_verified: verified,
            name: None,
        };
        r.user = Some(user(false));
        assert_eq!(r.verified_email(), None);
        r.user = Some(user(true));
        assert_eq!(r.verified_email(), Some("a@example.com"));
    }

    #[test]
    fn scopes_must_all_be_granted() {
        let r = record();
        assert!(r.has_scopes(&[]));
        assert!(r.has_scopes(&["api.read".into()]));
        assert!(!r.has_scopes(&["api.read".into(), "api.write".into()]));
    }
}
