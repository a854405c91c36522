//! The protocol's error table (docs/protocol.md §10) as one enum.
//!
//! [`ProtocolError::code`] is the wire string; the HTTP status lives in the
//! one mapping in `http/error.rs`. Internal failures are [`Error::Internal`]
//! and reach the client only as a generic 500.

use std::time::Duration;

use crate::store::StoreError;

/// A refusal the client is told about, with the code from docs/protocol.md §10.
/// The message is safe to show: it never says *why* a credential failed and
/// never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Request body over the cap: 413 with code `invalid_request`.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("anonymous registration is not enabled on this service")]
    AnonymousNotEnabled,
    #[error("verified-email registration is not enabled on this service")]
    VerifiedEmailNotEnabled,
    #[error("identity-assertion registration is not enabled on this service")]
    IdentityAssertionNotEnabled,
    #[error("{0}")]
    UnsupportedCredentialType(String),
    #[error("the assertion's issuer is not a trusted provider of this service")]
    InvalidIssuer,
    #[error("{0}")]
    InvalidSignature(String),
    #[error("the assertion has expired or has no exp; mint a fresh one")]
    Expired,
    #[error("{0}")]
    InvalidAudience(String),
    #[error("the assertion's client_id does not identify its issuer")]
    InvalidClientId,
    #[error("the assertion carries neither email_verified nor phone_number_verified as true")]
    MissingVerifiedEmail,
    #[error("{0}")]
    InsufficientUserAuthentication(String),
    #[error("this assertion (iss, jti) was already used; mint a fresh one")]
    ReplayDetected,
    /// A logout token broke a rule of §5 (`typ`, `iat`, `jti`, `nonce`,
    /// `sub`, `events`).
    #[error("{0}")]
    InvalidLogoutToken(String),
    #[error("no user account matches, and this service does not create accounts for agents")]
    UserNotProvisioned,
    #[error("the claim token is not known here")]
    InvalidClaimToken,
    #[error("this registration is already claimed")]
    ClaimedOrInFlight,
    #[error("the claim period is over; register again")]
    ClaimExpired,
    #[error("this link was replaced by a newer one, or is not known")]
    ClaimSuperseded,
    #[error("this claim is already completed")]
    ClaimCompleted,
    #[error("no code has been shown yet: the user must open the link and press \"Show my code\"")]
    OtpNotGenerated,
    #[error("the code has expired: the user must show a new one on the claim page")]
    OtpExpired,
    #[error("the code is wrong")]
    OtpInvalid,
    #[error("{0}")]
    TooManyAttempts(String),
    #[error("this registration was already claimed")]
    PreviouslyClaimed,
    /// An operator blocked the subject, user or address from registering
    /// (`user_not_provisioned`: this user is not let in here).
    #[error("registration is not allowed for this user or address: an operator blocked it")]
    Blocked,
    #[error("too many requests; retry after {} seconds", retry_after_secs(.retry_after))]
    RateLimited { retry_after: Duration },
    /// Missing, unknown, expired or revoked bearer credential (401).
    #[error("the credential is missing or not valid")]
    InvalidToken,
    /// Valid credential without the scopes the request needs (403).
    #[error("the credential lacks the scope this request needs")]
    InsufficientScope { needed: Vec<String> },
    /// RFC 6749 §5.2 / RFC 7662 §2.1: the caller of the introspection
    /// endpoint did not authenticate as a configured client (401).
    #[error("client authentication failed")]
    InvalidClient,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The current dialect's token endpoint (RFC 6749 §5.2): the assertion
    /// does not verify, or its registration is gone or changed. The text
    /// says why; it goes to the log and the `error_description`.
    #[error("the assertion is not valid here: {0}")]
    InvalidGrant(String),
    #[error("grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer")]
    UnsupportedGrantType,
    /// RFC 8707: `resource` is not this service's resource identifier.
    #[error("resource must be this service's resource identifier")]
    InvalidTarget,
    /// RFC 6749 §5.2: the scope an ID-JAG was issued for allows none of
    /// this service's scopes, or is malformed.
    #[error("{0}")]
    InvalidScope(String),
    /// The current dialect: the ID-JAG's `auth_time` is missing, too old
    /// or in the future (401).
    #[error(
        "the user must sign in at the provider again: auth_time must be within the last {max_age} seconds"
    )]
    LoginRequired { max_age: u64 },
    /// The current dialect: a first link to an existing account needs the
    /// user's confirmation (401; the identity endpoint answers it with a
    /// claim handle, the token endpoint as `invalid_grant`).
    #[error(
        "the assertion matches an existing account; the user must confirm the link at the identity endpoint's claim ceremony"
    )]
    InteractionRequired,
    /// The current dialect: `login_hint` is not an address authmd sends
    /// to, or not the one the registration must be claimed with.
    #[error("{0}")]
    InvalidLoginHint(String),
    /// The current dialect's completion: the claim token is not known.
    #[error("the claim token is not known here")]
    InvalidClaim,
    /// The current dialect's completion before the user confirmed on the
    /// claim page (409: wait and retry).
    #[error(
        "the user has not confirmed yet: they must open the verification_uri, sign in and press Confirm, then read you the code"
    )]
    ClaimNotConfirmed,
    /// `POST /agent/identity {"type": "refresh"}`: unknown, expired, spent
    /// or revoked, or its registration ended.
    #[error("The refresh token is invalid, expired, or already used.")]
    InvalidRefreshToken,
    /// Gateway mode: the upstream refused the connection or failed (502).
    /// Never names the upstream.
    #[error("the API behind this service is unavailable")]
    UpstreamUnavailable,
    /// Gateway mode: no response head within `upstream.timeout` (504).
    #[error("the API behind this service did not answer in time")]
    UpstreamTimeout,
}

/// Seconds for `Retry-After`, rounded up, at least one.
pub fn retry_after_secs(d: &Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

impl ProtocolError {
    /// The wire code of docs/protocol.md §10.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::InvalidRequest(_) | ProtocolError::PayloadTooLarge(_) => {
                "invalid_request"
            }
            ProtocolError::AnonymousNotEnabled => "anonymous_not_enabled",
            ProtocolError::VerifiedEmailNotEnabled => "verified_email_not_enabled",
            ProtocolError::IdentityAssertionNotEnabled => "identity_assertion_not_enabled",
            ProtocolError::UnsupportedCredentialType(_) => "unsupported_credential_type",
            ProtocolError::InvalidIssuer => "invalid_issuer",
            ProtocolError::InvalidSignature(_) => "invalid_signature",
            ProtocolError::Expired => "expired",
            ProtocolError::InvalidAudience(_) => "invalid_audience",
            ProtocolError::InvalidClientId => "invalid_client_id",
            ProtocolError::MissingVerifiedEmail => "missing_verified_email",
            ProtocolError::InsufficientUserAuthentication(_) => "insufficient_user_authentication",
            ProtocolError::ReplayDetected => "replay_detected",
            ProtocolError::InvalidLogoutToken(_) => "invalid_logout_token",
            ProtocolError::UserNotProvisioned => "user_not_provisioned",
            ProtocolError::InvalidClaimToken => "invalid_claim_token",
            ProtocolError::ClaimedOrInFlight => "claimed_or_in_flight",
            ProtocolError::ClaimExpired => "claim_expired",
            ProtocolError::ClaimSuperseded => "claim_superseded",
            ProtocolError::ClaimCompleted => "claim_completed",
            ProtocolError::OtpNotGenerated => "otp_not_generated",
            ProtocolError::OtpExpired => "otp_expired",
            ProtocolError::OtpInvalid => "otp_invalid",
            ProtocolError::TooManyAttempts(_) => "too_many_attempts",
            ProtocolError::PreviouslyClaimed => "previously_claimed",
            ProtocolError::Blocked => "user_not_provisioned",
            ProtocolError::RateLimited { .. } => "rate_limited",
            ProtocolError::InvalidToken => "invalid_token",
            ProtocolError::InsufficientScope { .. } => "insufficient_scope",
            ProtocolError::InvalidClient => "invalid_client",
            ProtocolError::NotFound => "not_found",
            ProtocolError::MethodNotAllowed => "method_not_allowed",
            ProtocolError::UpstreamUnavailable => "upstream_unavailable",
            ProtocolError::UpstreamTimeout => "upstream_timeout",
            ProtocolError::InvalidGrant(_) => "invalid_grant",
            ProtocolError::UnsupportedGrantType => "unsupported_grant_type",
            ProtocolError::InvalidTarget => "invalid_target",
            ProtocolError::InvalidScope(_) => "invalid_scope",
            ProtocolError::LoginRequired { .. } => "login_required",
            ProtocolError::InteractionRequired => "interaction_required",
            ProtocolError::InvalidLoginHint(_) => "invalid_login_hint",
            ProtocolError::InvalidClaim => "invalid_claim",
            ProtocolError::ClaimNotConfirmed => "claim_not_confirmed",
            ProtocolError::InvalidRefreshToken => "invalid_refresh_token",
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        ProtocolError::InvalidRequest(message.into())
    }
}

/// Everything a protocol operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// A failure of ours (storage, mail, a bug). The client sees a generic
    /// 500; the cause chain goes to the log.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Internal(Box::new(e))
    }
}

impl Error {
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Internal(Box::new(e))
    }

    /// The protocol code, or `server_error` for internal failures.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Protocol(p) => p.code(),
            Error::Internal(_) => "server_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(&Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(&Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(&Duration::ZERO), 1);
    }
}
