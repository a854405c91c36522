//! What the current dialect's operations write (docs/protocol.md §20):
//! the types of the store methods it adds. The SQL is per backend
//! (`sqlite/current.rs`, `postgres/current.rs`).

use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::rate_limit::{RateLimit, RateLimited};
use crate::store::NewAttempt;
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::vocab::{RegistrationStatus, RegistrationType};

/// A current-dialect registration that waits for an assertion exchange or
/// a claim: anonymous (`unclaimed`), `service_auth` and an ID-JAG step-up
/// (`pending_claim`, with their first attempt). No credential yet: the
/// agent exchanges an assertion for one at the token endpoint.
#[derive(Debug, Clone)]
pub struct NewIdentityRegistration {
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub status: RegistrationStatus,
    pub claim_token: SecretHash,
    /// The address the claim must prove (`service_auth`, step-up).
    pub email: Option<String>,
    /// The provider subject of a step-up.
    pub subject: Option<(String, String)>,
    pub attempt: Option<NewAttempt>,
    pub created_at: Timestamp,
    /// The claim deadline.
    pub expires_at: Timestamp,
    pub events: Vec<AuditEvent>,
}

/// The token endpoint's exchange of one of authmd's own assertions: an
/// access token for the registration, if it is still in the state the
/// assertion was issued in.
#[derive(Debug, Clone)]
pub struct AssertionExchange {
    pub registration_id: String,
    /// The state the assertion names: the exchange happens only while the
    /// registration is in it (and, unclaimed, before its deadline).
    pub status: RegistrationStatus,
    /// The refresh family the assertion is bound to, if any: the exchange
    /// happens only while that family is live (not ended by a reuse).
    pub family: Option<String>,
    pub credential_id: String,
    pub credential: SecretHash,
    pub scopes: Vec<String>,
    pub expires_at: Timestamp,
    pub now: Timestamp,
    pub meta: RequestMeta,
    /// `grant` and the assertion's `jti`, for `token.exchanged`.
    pub assertion_jti: String,
    /// Counted only for a live registration, in the same transaction
    /// (§9: `token_exchanges_per_registration_per_hour`).
    pub limits: Vec<RateLimit>,
}

impl AssertionExchange {
    /// Whether a registration now in `now` still exchanges this assertion:
    /// in the state it names, or, for a pre-claim assertion, while a claim
    /// is pending (still pre-claim: the agent renews its pre-claim access
    /// during the ceremony, as the reference implementation lets it; the
    /// assertion stops when the claim completes).
    pub(crate) fn exchangeable_in(&self, now: RegistrationStatus) -> bool {
        now == self.status
            || (self.status == RegistrationStatus::Unclaimed
                && now == RegistrationStatus::PendingClaim)
    }

    /// `token.exchanged`.
    pub(crate) fn event(&self, user_id: Option<&str>) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::TokenExchanged, self.now, &self.meta)
            .registration(&self.registration_id)
            .with("credential_id", self.credential_id.as_str())
            .with("credential_type", "access_token")
            .with("assertion", "service")
            .with("assertion_jti", self.assertion_jti.as_str())
            .with("scopes", self.scopes.clone());
        if let Some(u) = user_id {
            e = e.user(u);
        }
        e
    }
}

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchanged {
    Issued {
        registration_type: RegistrationType,
        user_id: Option<String>,
    },
    /// No such registration, or it left the assertion's state (claimed,
    /// expired, revoked): nothing written.
    NotLive,
    /// Over a limit: nothing written.
    Limited(RateLimited),
}

/// Creation, or a refusal by a rate limit (nothing written).
pub type Created = Result<(), RateLimited>;
