//! The shared vocabulary: names that the protocol modules (both dialects)
//! and the store both use. It sits below both and imports nothing of
//! either, so the store never depends on a protocol module.

use serde::Serialize;

use crate::token::SecretHash;

/// `registration_type` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RegistrationType {
    #[serde(rename = "anonymous")]
    Anonymous,
    #[serde(rename = "email-verification")]
    EmailVerification,
    #[serde(rename = "agent-provider")]
    AgentProvider,
}

impl RegistrationType {
    pub const fn as_str(self) -> &'static str {
        match self {
            RegistrationType::Anonymous => "anonymous",
            RegistrationType::EmailVerification => "email-verification",
            RegistrationType::AgentProvider => "agent-provider",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anonymous" => Some(RegistrationType::Anonymous),
            "email-verification" => Some(RegistrationType::EmailVerification),
            "agent-provider" => Some(RegistrationType::AgentProvider),
            _ => None,
        }
    }
}

/// Registration states (docs/protocol.md §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    Unclaimed,
    PendingClaim,
    Claimed,
    Active,
    Expired,
    Revoked,
}

impl RegistrationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::Unclaimed => "unclaimed",
            RegistrationStatus::PendingClaim => "pending_claim",
            RegistrationStatus::Claimed => "claimed",
            RegistrationStatus::Active => "active",
            RegistrationStatus::Expired => "expired",
            RegistrationStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unclaimed" => Some(RegistrationStatus::Unclaimed),
            "pending_claim" => Some(RegistrationStatus::PendingClaim),
            "claimed" => Some(RegistrationStatus::Claimed),
            "active" => Some(RegistrationStatus::Active),
            "expired" => Some(RegistrationStatus::Expired),
            "revoked" => Some(RegistrationStatus::Revoked),
            _ => None,
        }
    }
}

/// The wire dialect a registration was made in (docs/protocol.md §20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// `POST /agent/auth` (§3).
    Original,
    /// `POST /agent/identity` (§20).
    Current,
}

impl Dialect {
    pub const fn as_str(self) -> &'static str {
        match self {
            Dialect::Original => "original",
            Dialect::Current => "current",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "original" => Some(Dialect::Original),
            "current" => Some(Dialect::Current),
            _ => None,
        }
    }
}

/// The assertion type of the agent-verified flow (§3.3).
pub const ID_JAG_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// RFC 7523's grant type, at the current dialect's token endpoint.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assertion type of the email-required flow (§3.2).
pub const VERIFIED_EMAIL_ASSERTION_TYPE: &str = "verified_email";

/// The event of the reference implementation (docs/protocol.md §5).
pub const REVOKED_EVENT: &str =
    "https://schemas.workos.com/events/agent/auth/identity/assertion/revoked";
/// The OpenID Back-Channel Logout event.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Either names a logout (`events_supported` in the metadata).
pub const EVENTS_SUPPORTED: [&str; 2] = [REVOKED_EVENT, BACKCHANNEL_LOGOUT_EVENT];

/// The invalidation log entry that drops every cached credential (written
/// instead of many single entries by a large revocation). No secret hashes
/// to all zeros.
pub const FLUSH_ALL: SecretHash = SecretHash([0; 32]);
