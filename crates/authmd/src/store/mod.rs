//! Persistence: one trait listing every operation, one implementation per
//! backend.
//!
//! Each method is a unit of work in one transaction: the state change and
//! the audit events that record it commit together or not at all. Rate
//! limits that guard an operation are checked and counted inside that same
//! transaction. The contract tests in `tests/api/store_contract.rs` run
//! against both backends.

pub mod backup;
pub mod current;
pub mod listing;
mod migrate;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::audit::{AuditEvent, AuditRecord, EventFilter, EventKind, RequestMeta};
use crate::credential::{CredentialRecord, CredentialSource, CredentialType, UserSummary};
use crate::rate_limit::{RateLimit, RateLimited};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::users::ProvidedIdentity;
use crate::vocab::{Dialect, RegistrationStatus, RegistrationType};

pub use listing::{
    CredentialSummary, DelegationFilter, DelegationRecord, RegistrationFilter, RegistrationSummary,
    UserFilter, UserRecord,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A storage failure. Never becomes a 4xx: the client sees a 500.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the database connection is closed")]
    Closed,
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The database cannot be reached (refused, closed, shutting down, no
    /// connection within the pool's timeouts): answered `503
    /// temporarily_unavailable` with `Retry-After`, never 500.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// What an anonymous registration (§3.1) writes.
#[derive(Debug, Clone)]
pub struct NewAnonymousRegistration {
    pub registration_id: String,
    pub claim_token: SecretHash,
    pub credential_id: String,
    pub credential: SecretHash,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    /// The claim deadline; the key dies with it unless claimed.
    pub expires_at: Timestamp,
    /// `registration.created` and `credential.issued`.
    pub events: Vec<AuditEvent>,
}

/// What an agent-verified registration (§3.3, §6) writes.
#[derive(Debug, Clone)]
pub struct NewAgentRegistration {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    /// The replay-table key (`users::jti_key`) and how long it is kept.
    pub jti_key: [u8; 16],
    pub jti_until: Timestamp,
    /// The assertion's `iat` (the provider's clock).
    pub issued_at: Timestamp,
    pub identity: ProvidedIdentity,
    /// The provider allows matching an existing user by verified email or phone.
    pub link_by_verified: bool,
    /// The provider's `email_domains`: with it, only an email in one of
    /// these domains links (a phone never does). See [`Self::link_email`].
    pub link_email_domains: Option<Vec<String>>,
    /// Unknown users are provisioned; otherwise refused.
    pub jit_provisioning: bool,
    /// Used when the delegation has no live registration yet.
    pub new_registration_id: String,
    /// Used when a user is provisioned.
    pub new_user_id: String,
    pub credential_id: String,
    pub credential: SecretHash,
    pub credential_type: CredentialType,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    /// Live API keys kept per delegation: issuing one more revokes the
    /// oldest (`registration.max_api_keys_per_delegation`).
    pub max_api_keys: u32,
    pub now: Timestamp,
    pub meta: RequestMeta,
    /// Extra audit fields (`agent_platform`, `agent_context_id`).
    pub audit: serde_json::Map<String, serde_json::Value>,
}

/// How an agent-verified registration ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRegistered {
    Issued {
        registration_id: String,
        user_id: String,
        user_provisioned: bool,
        /// How a first registration found its existing user.
        linked_by: Option<crate::users::LinkedBy>,
    },
    /// The `jti` was used before (nothing written).
    Replay,
    /// No user matched and provisioning is off (nothing written).
    NotProvisioned,
    /// The assertion was issued before the provider (or an operator)
    /// revoked this delegation (nothing written).
    IssuedBeforeRevocation,
    /// The subject, its user or its verified email is blocked by an
    /// operator (nothing written).
    Blocked,
    Limited(RateLimited),
    /// [`AgentMode::confirm_links`]: the subject's first registration
    /// would link it to an existing user by a verified address; the user
    /// must confirm first (nothing written). `email`: the address it
    /// matched, when it matched by email.
    NeedsConfirmation {
        user_id: String,
        email: Option<String>,
    },
}

/// How [`Store::register_agent_as`] registers an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMode {
    /// Issue the request's credential (the original dialect, and the
    /// token endpoint), or none (the current dialect's identity endpoint,
    /// which signs an assertion instead).
    pub issue: bool,
    /// A subject's first link to an existing user by a verified email or
    /// phone is not made: [`AgentRegistered::NeedsConfirmation`].
    pub confirm_links: bool,
    /// Recorded on a registration it creates.
    pub dialect: Dialect,
    /// Without `issue`: the `jti` and expiry of the assertion that will be
    /// signed, for `assertion.issued`.
    pub assertion: Option<(String, Timestamp)>,
}

impl AgentMode {
    /// The original dialect: issue, link silently (docs/protocol.md §6).
    pub const ORIGINAL: AgentMode = AgentMode {
        issue: true,
        confirm_links: false,
        dialect: Dialect::Original,
        assertion: None,
    };
}

/// A claim attempt to create: its id (`cla_…`, the link token's selector),
/// the link token's hash and the link's expiry.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub id: String,
    pub link: SecretHash,
    pub link_expires_at: Timestamp,
    /// The claim email, written to the mail outbox in the same transaction
    /// (delivered by `outbox.rs`; its body is dropped when the link expires).
    pub mail: Option<crate::mail::Email>,
    /// The current dialect: the link goes to the agent, so holding it
    /// proves nothing; a code is minted only after the user signed in
    /// ([`AttemptProof::SignIn`]).
    pub sign_in: bool,
}

/// A message taken from the mail outbox for delivery.
#[derive(Debug, Clone)]
pub struct OutboxMail {
    pub id: String,
    pub email: crate::mail::Email,
    /// Tries so far, this one included.
    pub attempts: u32,
    pub created_at: Timestamp,
    /// The link's expiry: the message is not tried after it.
    pub expires_at: Timestamp,
}

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailOutcome {
    /// Accepted by the SMTP server (or written to the outbox directory).
    Sent,
    /// Try again at `at`.
    Retry { at: Timestamp, error: String },
    /// Given up.
    Failed { error: String },
}

/// The outbox's backlog (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailStatus {
    /// Messages not yet sent or given up.
    pub pending: u64,
    /// When the oldest of them was written.
    pub oldest: Option<Timestamp>,
}

/// What an email-required registration (§3.2) writes: the registration
/// (`pending_claim`), its first claim attempt, and `registration.created`
/// and `claim.requested`.
#[derive(Debug, Clone)]
pub struct NewEmailRegistration {
    pub registration_id: String,
    pub claim_token: SecretHash,
    pub email: String,
    pub requested: CredentialType,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub attempt: NewAttempt,
    pub events: Vec<AuditEvent>,
}

/// `POST /agent/auth/claim` (§4.1).
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub registration_id: String,
    pub claim_token: SecretHash,
    pub email: String,
    /// Used if a new attempt is started.
    pub attempt: NewAttempt,
    pub now: Timestamp,
    pub meta: RequestMeta,
    /// The dialect of the endpoint: a registration is claimed through the
    /// dialect it was made in (another's claim token is unknown here). The
    /// current dialect always starts a new attempt (its link is returned,
    /// and only its hash is kept).
    pub dialect: Dialect,
}

/// How a claim request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStarted {
    /// A new attempt; its email must be sent.
    Started {
        attempt_id: String,
        expires_at: Timestamp,
    },
    /// The same attempt is still in flight: nothing sent.
    InFlight {
        attempt_id: String,
        expires_at: Timestamp,
    },
    UnknownToken,
    Claimed,
    Expired,
    /// An email-required registration asked for another address.
    OtherEmail,
    Locked,
    Limited(RateLimited),
}

/// A claim attempt as the claim page sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptView {
    pub attempt_id: String,
    pub registration_id: String,
    pub registration_type: RegistrationType,
    pub email: String,
    pub link: SecretHash,
    pub state: AttemptState,
    pub link_expires_at: Timestamp,
    /// A current-dialect attempt: codes need a sign-in.
    pub needs_sign_in: bool,
    /// A step-up's provider (`iss`), for the page.
    pub provider: Option<String>,
    /// The sign-in link last emailed for it, if any.
    pub sign_in: Option<SignIn>,
}

/// A sign-in link emailed for a current-dialect attempt: its token's hash,
/// the hash of the cookie of the browser that asked for it, its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignIn {
    pub token: SecretHash,
    pub browser: SecretHash,
    pub expires_at: Timestamp,
}

/// What a page presents to act on an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptProof {
    /// The attempt's link (the original dialect's emailed link; the
    /// current dialect's `verification_uri`).
    Link(SecretHash),
    /// The current dialect's emailed sign-in link, with the cookie of the
    /// browser that asked for it.
    SignIn {
        token: SecretHash,
        browser: SecretHash,
    },
}

impl AttemptView {
    /// Whether `proof` lets its holder act on this attempt: deny it with
    /// either; mint a code with the link only where no sign-in is needed,
    /// else with a live sign-in from the same browser.
    pub fn admits(&self, proof: &AttemptProof, mint: bool, now: Timestamp) -> bool {
        match proof {
            AttemptProof::Link(link) => *link == self.link && !(mint && self.needs_sign_in),
            AttemptProof::SignIn { token, browser } => self
                .sign_in
                .is_some_and(|s| s.token == *token && s.browser == *browser && s.expires_at > now),
        }
    }
}

/// The current dialect's "email me a sign-in link": recorded on an open
/// attempt whose link matches, replacing an earlier one, with its email
/// written to the outbox in the same transaction.
#[derive(Debug, Clone)]
pub struct SignInRequest {
    pub attempt_id: String,
    pub link: SecretHash,
    pub sign_in: SignIn,
    /// Built by the caller once the address is known (`mail(address)`).
    pub mail: crate::mail::Email,
    pub now: Timestamp,
    pub meta: RequestMeta,
}

/// How a sign-in request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInStarted {
    Sent,
    Unknown,
    Refused(AttemptState),
    Limited(RateLimited),
}

/// Where an attempt stands, most decisive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    Open,
    Superseded,
    Denied,
    /// The registration is claimed (by this attempt or another).
    Claimed,
    /// The registration or the link expired.
    Expired,
    /// Too many wrong codes: the claim is locked until the registration expires.
    Locked,
}

/// What a code request or a denial on the page did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptAction {
    /// A code was minted (valid until), or the attempt denied.
    Done {
        registration_id: String,
        until: Timestamp,
    },
    Unknown,
    Refused(AttemptState),
}

/// `claim.sign_in_requested`.
pub(crate) fn sign_in_event(req: &SignInRequest, view: &AttemptView) -> AuditEvent {
    AuditEvent::new(EventKind::SignInRequested, req.now, &req.meta)
        .registration(&view.registration_id)
        .with("claim_attempt_id", req.attempt_id.as_str())
        .with("email", view.email.as_str())
}

/// A registration's state once claimed: an agent-verified step-up joins
/// its delegation as `active`; every other one is `claimed`.
pub(crate) fn claimed_status(kind: RegistrationType, req: &CompleteClaim) -> RegistrationStatus {
    if kind == RegistrationType::AgentProvider && req.refresh.is_some() {
        RegistrationStatus::Active
    } else {
        RegistrationStatus::Claimed
    }
}

/// `credential.revoked` of a credential the claim replaces.
pub(crate) fn revoked_at_claim(req: &CompleteClaim, credential_id: &str) -> AuditEvent {
    let reason = if req.refresh.is_some() {
        "pre-claim scopes, ended at claim"
    } else {
        "rotated at claim"
    };
    AuditEvent::new(EventKind::CredentialRevoked, req.now, &req.meta)
        .registration(&req.registration_id)
        .with("credential_id", credential_id)
        .with("reason", reason)
}

/// `delegation.linked` of a step-up the user confirmed.
pub(crate) fn linked_at_claim(
    req: &CompleteClaim,
    user_id: &str,
    iss: &str,
    sub: &str,
) -> AuditEvent {
    AuditEvent::new(EventKind::DelegationLinked, req.now, &req.meta)
        .registration(&req.registration_id)
        .user(user_id)
        .with("iss", iss)
        .with("sub", sub)
        .with("matched_by", "verified_email")
        .with("confirmed", true)
}

/// A credential that may be issued at claim, ready in both types (the
/// store knows which one the registration asked for): the same id, an API
/// key secret and an access token secret with its expiry.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub id: String,
    pub api_key: SecretHash,
    pub access_token: SecretHash,
    pub access_token_expires_at: Timestamp,
}

/// `POST /agent/auth/claim/complete` (§4.4).
#[derive(Debug, Clone)]
pub struct CompleteClaim {
    pub registration_id: String,
    pub claim_token: SecretHash,
    /// Keyed hash of the presented code (claim.rs).
    pub otp: SecretHash,
    pub now: Timestamp,
    pub meta: RequestMeta,
    pub scopes: Vec<String>,
    pub jit_provisioning: bool,
    pub new_user_id: String,
    /// Issued for an email-required registration (in its requested type),
    /// or for an anonymous one when keys rotate at claim.
    pub credential: NewCredential,
    pub rotate_key: bool,
    /// The dialect of the endpoint (see [`ClaimRequest::dialect`]).
    pub dialect: Dialect,
    /// The current dialect: no credential is issued or kept (earlier
    /// access tokens are revoked: they carry pre-claim scopes); the first
    /// refresh token of a family is issued; a step-up's subject joins the
    /// user's delegation.
    pub refresh: Option<NewRefreshToken>,
}

/// A refresh token to store (docs/protocol.md §20.8).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub id: String,
    pub hash: SecretHash,
    /// The first token's id; a new family's first token is its own.
    pub family_id: String,
    pub expires_at: Timestamp,
}

/// How long after its expiry a refresh family's row may wait for the
/// purge (migration 0014). A family's `purge_after` is at least its
/// `expires_at`, and is moved only when a rotation passes it, this far
/// beyond: so the purge's index entry moves about once a day per family
/// rather than at every rotation, and an expired family is deleted at most
/// this late. What must be exact reads `expires_at`.
pub const FAMILY_PURGE_SLACK: Duration = Duration::from_secs(24 * 60 * 60);

impl NewRefreshToken {
    /// Its family's `purge_after` when it is the family's first token, or
    /// a rotation's that outlives the stored `purge_after`.
    pub(crate) fn purge_after(&self) -> i64 {
        self.expires_at.plus(FAMILY_PURGE_SLACK).as_millis()
    }
}

/// `POST /agent/identity {"type": "refresh"}`: spend `presented`, issue
/// `next` in its family.
#[derive(Debug, Clone)]
pub struct RefreshRotation {
    pub id: String,
    pub presented: SecretHash,
    /// `family_id` is ignored: the next token joins the presented one's.
    pub next: NewRefreshToken,
    pub now: Timestamp,
    pub meta: RequestMeta,
    /// `jti` and expiry of the assertion that will be signed.
    pub assertion: (String, Timestamp),
}

impl RefreshRotation {
    /// `refresh.rotated` and the new assertion's `assertion.issued`.
    pub(crate) fn events(&self, registration_id: &str, family_id: &str) -> [AuditEvent; 2] {
        [
            AuditEvent::new(EventKind::RefreshRotated, self.now, &self.meta)
                .registration(registration_id)
                .with("refresh_token_id", self.id.as_str())
                .with("next_refresh_token_id", self.next.id.as_str())
                .with("family_id", family_id),
            AuditEvent::new(EventKind::AssertionIssued, self.now, &self.meta)
                .registration(registration_id)
                .with("jti", self.assertion.0.as_str())
                .with("expires_at", self.assertion.1.to_rfc3339()),
        ]
    }

    /// `refresh.reused`.
    pub(crate) fn reused_event(
        &self,
        registration_id: &str,
        family_id: &str,
        revoked: u64,
    ) -> AuditEvent {
        AuditEvent::new(EventKind::RefreshReused, self.now, &self.meta)
            .registration(registration_id)
            .with("refresh_token_id", self.id.as_str())
            .with("family_id", family_id)
            .with("refresh_tokens_revoked", revoked)
    }
}

/// How a rotation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// Spent and replaced; what the new assertion names.
    Rotated {
        registration_id: String,
        status: RegistrationStatus,
        email: Option<String>,
        /// The family, which the new assertion is bound to.
        family_id: String,
    },
    /// Unknown, expired, revoked, or its registration ended: nothing
    /// written.
    Invalid,
    /// Already spent: the family is revoked now (`refresh.reused`,
    /// committed).
    Reused { registration_id: String },
}

/// Wrong guesses allowed per code, then the code is dead (§4.4).
pub const WRONG_PER_CODE: i64 = 5;
/// Wrong guesses allowed per registration, then its claim is locked.
pub const WRONG_PER_REGISTRATION: i64 = 20;

/// How a completion ended, in the order of the §4.4 table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    Claimed {
        registration_type: RegistrationType,
        user_id: String,
        /// Which type of `CompleteClaim::credential` was issued, if any.
        issued: Option<CredentialType>,
        /// The proven address.
        email: String,
        /// The registration's state now (`claimed`; `active` for an
        /// agent-verified step-up, which joins its delegation).
        status: RegistrationStatus,
    },
    UnknownToken,
    PreviouslyClaimed,
    Expired,
    NotGenerated,
    OtpExpired,
    TooManyAttempts,
    /// Wrong code (counted).
    Invalid,
    NotProvisioned,
    /// The user the claim would bind to, or its address, is blocked by an
    /// operator (nothing written).
    Blocked,
}

/// One entry of the invalidation log: a credential whose validity or
/// scopes changed, so every replica must drop what it cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub seq: i64,
    pub credential: SecretHash,
}

/// A verified logout token to apply (§5): the credentials of the
/// delegation `(iss, sub)` whose assertions were issued up to
/// `assertions_through` are revoked.
#[derive(Debug, Clone)]
pub struct SubjectRevocation {
    pub iss: String,
    /// `None` for a token naming only a session (`sid`): nothing here is
    /// keyed by session, so only its `jti` is recorded.
    pub sub: Option<String>,
    /// The replay-table key of the token and how long it is kept.
    pub jti_key: [u8; 16],
    pub jti_until: Timestamp,
    /// The token's `iat` plus the clock skew (the provider's clock): a
    /// credential whose ID-JAG was issued up to then is revoked, however
    /// late it was redeemed (the user withdrew the consent it carried); one
    /// whose ID-JAG was issued later (the provider consented again) is kept.
    /// A credential without a recorded assertion `iat` (issued before
    /// migration 0006) is revoked.
    pub assertions_through: Timestamp,
    /// The token's `iat` (the provider's clock): assertions issued before
    /// it no longer register for this subject.
    pub assertions_before: Timestamp,
    pub now: Timestamp,
    pub meta: RequestMeta,
}

/// How a logout token was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectRevoked {
    Done(RevokeReport),
    /// The token's `jti` was used before (nothing written).
    Replay,
}

/// An agent ending its own credential (RFC 7009 at `POST /oauth2/revoke`):
/// the presented token authenticated itself, so it names exactly one
/// credential, by id and hash.
#[derive(Debug, Clone)]
pub struct SelfRevocation {
    pub credential_id: String,
    pub credential: SecretHash,
    pub now: Timestamp,
    pub meta: RequestMeta,
    /// A current-dialect refresh token (`rft_` id, not yet spent): its
    /// family ends, and with it the grant (RFC 7009 §2.1: the registration's
    /// access tokens, and the registration once nothing of it is left).
    pub refresh: bool,
}

/// `credential.revoked` of a refresh family ended by its holder, and
/// `registration.revoked` when nothing of the registration is left.
pub(crate) fn refresh_revoked_events(
    r: &SelfRevocation,
    registration_id: &str,
    access_tokens: usize,
    ended: bool,
) -> Vec<AuditEvent> {
    let mut events = vec![
        r.event(
            EventKind::CredentialRevoked,
            registration_id,
            None,
            "refresh_token",
        )
        .with("access_tokens_revoked", access_tokens),
    ];
    if ended {
        events.push(r.event(
            EventKind::RegistrationRevoked,
            registration_id,
            None,
            "refresh_token",
        ));
    }
    events
}

impl SelfRevocation {
    /// `credential.revoked`, or `registration.revoked` when the
    /// registration ended with it, both `by: "self"`.
    pub(crate) fn event(
        &self,
        kind: EventKind,
        registration_id: &str,
        user_id: Option<&str>,
        credential_type: &str,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(kind, self.now, &self.meta)
            .registration(registration_id)
            .with("by", "self")
            .with("credential_id", self.credential_id.as_str())
            .with("credential_type", credential_type);
        if kind == EventKind::RegistrationRevoked {
            e = e.with("credentials_revoked", 1);
        }
        if let Some(u) = user_id {
            e = e.user(u);
        }
        e
    }
}

/// What a self-revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfRevoked {
    /// The credential is revoked. `registration_ended`: nothing else of its
    /// registration was live, so the registration is `revoked` too.
    Revoked { registration_ended: bool },
    /// Not a live credential (already revoked, or unknown): nothing written.
    Nothing,
}

/// What an operator revokes (§5, §11: "any ──operator revoke──▶ revoked").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    Registration(String),
    /// Every registration bound to this user.
    User(String),
    /// Every registration issued through this provider (`iss`).
    Provider(String),
    /// Every live registration: incident response.
    All,
}

impl RevokeTarget {
    /// The operator action's name in the audit trail.
    pub const fn action(&self) -> &'static str {
        match self {
            RevokeTarget::Registration(_) => "revoke_registration",
            RevokeTarget::User(_) => "revoke_user",
            RevokeTarget::Provider(_) => "revoke_provider",
            RevokeTarget::All => "revoke_all",
        }
    }
}

/// An operator's revocation: who, why, and what.
#[derive(Debug, Clone)]
pub struct OperatorRevocation {
    pub target: RevokeTarget,
    /// Who did it (an operator name; never a secret).
    pub operator: String,
    pub reason: Option<String>,
    pub now: Timestamp,
    pub meta: RequestMeta,
}

impl OperatorRevocation {
    /// Assertions issued before this (the start of the revocation's second,
    /// since `iat` counts whole seconds) no longer register for a revoked
    /// delegation; one minted later in the same second still does.
    pub(crate) fn assertions_before(&self) -> i64 {
        self.now.as_millis().div_euclid(1000) * 1000
    }

    /// The `operator.action` event that records it.
    pub(crate) fn event(&self, report: &RevokeReport) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::OperatorAction, self.now, &self.meta)
            .with("action", self.target.action())
            .with("operator", self.operator.as_str())
            .with("reason", self.reason.clone())
            .with("registrations_revoked", report.registrations)
            .with("credentials_revoked", report.credentials);
        match &self.target {
            RevokeTarget::Registration(id) => e = e.registration(id),
            RevokeTarget::User(id) => e = e.user(id),
            RevokeTarget::Provider(iss) => e = e.with("iss", iss.as_str()),
            RevokeTarget::All => {}
        }
        e
    }
}

/// Who an operator stops from registering again (issue 15: revocation
/// that lasts). Each has one key in the `blocks` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockTarget {
    /// A provider's subject: its ID-JAGs no longer register.
    Subject { iss: String, sub: String },
    /// A user: no registration is bound to it any more (its delegations,
    /// a subject linked to it by verified email, a claim).
    User(String),
    /// An address: no email registration, claim or ID-JAG with it, and no
    /// claim email to it. Stored as its mailbox (`users::mailbox_key`).
    Email(String),
}

impl BlockTarget {
    pub const fn kind(&self) -> &'static str {
        match self {
            BlockTarget::Subject { .. } => "subject",
            BlockTarget::User(_) => "user",
            BlockTarget::Email(_) => "email",
        }
    }

    /// The table key. No part can hold a newline (identifiers and operator
    /// input refuse control characters), so the subject's two parts are
    /// joined by one.
    pub fn key(&self) -> String {
        match self {
            BlockTarget::Subject { iss, sub } => subject_block(iss, sub),
            BlockTarget::User(id) => user_block(id),
            BlockTarget::Email(email) => email_block(email),
        }
    }
}

pub(crate) fn subject_block(iss: &str, sub: &str) -> String {
    format!("subject:{iss}\n{sub}")
}
pub(crate) fn user_block(id: &str) -> String {
    format!("user:{id}")
}
pub(crate) fn email_block(email: &str) -> String {
    format!("email:{}", crate::users::mailbox_key(email))
}

/// An operator's block or unblock: what, who, why.
#[derive(Debug, Clone)]
pub struct BlockChange {
    pub target: BlockTarget,
    pub operator: String,
    pub reason: Option<String>,
    pub now: Timestamp,
    pub meta: RequestMeta,
}

impl BlockChange {
    /// The `operator.action` that records it (`block` or `unblock`).
    pub(crate) fn event(&self, action: &str) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::OperatorAction, self.now, &self.meta)
            .with("action", action)
            .with("operator", self.operator.as_str())
            .with("reason", self.reason.clone())
            .with("kind", self.target.kind());
        match &self.target {
            BlockTarget::Subject { iss, sub } => {
                e = e.with("iss", iss.as_str()).with("sub", sub.as_str());
            }
            BlockTarget::User(id) => e = e.user(id),
            BlockTarget::Email(email) => {
                e = e.with("email", crate::users::mailbox_key(email));
            }
        }
        e
    }

    /// The columns of its row.
    pub(crate) fn columns(&self) -> BlockColumns<'_> {
        let t = &self.target;
        let mut c = BlockColumns {
            key: t.key(),
            kind: t.kind(),
            iss: None,
            sub: None,
            user: None,
            email: None,
        };
        match t {
            BlockTarget::Subject { iss, sub } => {
                (c.iss, c.sub) = (Some(iss.as_str()), Some(sub.as_str()))
            }
            BlockTarget::User(id) => c.user = Some(id.as_str()),
            BlockTarget::Email(email) => c.email = Some(crate::users::mailbox_key(email)),
        }
        c
    }
}

/// The row of a block.
pub(crate) struct BlockColumns<'a> {
    pub key: String,
    pub kind: &'static str,
    pub iss: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub user: Option<&'a str>,
    pub email: Option<String>,
}

/// A block in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BlockRecord {
    pub kind: String,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub created_at: Timestamp,
    pub operator: String,
    pub reason: Option<String>,
}

/// The block keys that refuse a registration: its subject, its user (when
/// matched) and its address (when given). At most three.
pub(crate) fn block_keys(
    subject: Option<(&str, &str)>,
    user: Option<&str>,
    email: Option<&str>,
) -> [Option<String>; 3] {
    [
        subject.map(|(iss, sub)| subject_block(iss, sub)),
        user.map(user_block),
        email.map(email_block),
    ]
}

/// The query that lists blocks (both backends).
pub(crate) const BLOCKS_QUERY: &str =
    "SELECT kind, iss, sub, user_id, email, created_at, operator, reason
     FROM blocks ORDER BY created_at, key";

/// What a revocation ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RevokeReport {
    pub registrations: u64,
    pub credentials: u64,
}

/// A position in the audit trail, for following it live
/// ([`Store::tail_events`]). Written `id` on SQLite, where commit order is
/// id order, and `tx.id` on PostgreSQL (see migration 0004).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TailCursor {
    pub tx: i64,
    pub id: i64,
}

impl std::fmt::Display for TailCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tx == 0 {
            write!(f, "{}", self.id)
        } else {
            write!(f, "{}.{}", self.tx, self.id)
        }
    }
}

impl std::str::FromStr for TailCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |p: &str| {
            p.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0 && !p.starts_with('+'))
                .ok_or_else(|| format!("{s:?} is not an audit cursor"))
        };
        match s.split_once('.') {
            Some((tx, id)) => Ok(TailCursor {
                tx: number(tx)?,
                id: number(id)?,
            }),
            None => Ok(TailCursor {
                tx: 0,
                id: number(s)?,
            }),
        }
    }
}

/// One of authmd's own signing keys as stored (`service_keys.rs`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub alg: String,
    /// The public JWK (JSON text).
    pub public_jwk: String,
    /// The PKCS#8 private key, sealed (`service_keys::seal`).
    pub private_key: Vec<u8>,
    pub created_at: Timestamp,
    /// From when it is the signing key (until a newer key's `signs_from`).
    pub signs_from: Timestamp,
    /// Published until then; `None` for the newest key.
    pub published_until: Option<Timestamp>,
}

impl std::fmt::Debug for SigningKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("signs_from", &self.signs_from)
            .field("published_until", &self.published_until)
            .finish_non_exhaustive()
    }
}

/// Row counts, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub registrations: u64,
    pub credentials: u64,
    pub audit_events: u64,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired_registrations: Vec<String>,
    pub revoked_credentials: usize,
}

/// A connection pool's use (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub in_use: usize,
    pub idle: usize,
    pub max: usize,
}

/// Every persistence operation authmd performs.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Applies the backend's pending migrations.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The connection pool's use, where there is one to report.
    fn pool_status(&self) -> Option<PoolStatus> {
        None
    }

    /// Takes up to `limit` due messages from the mail outbox for delivery,
    /// moving each forward to `lease_until` (no other replica takes it
    /// before then) and counting the try.
    async fn take_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<OutboxMail>, StoreError>;

    /// Records how the delivery of a taken message went (`sent` and
    /// `failed` clear its body).
    async fn mail_done(
        &self,
        id: &str,
        now: Timestamp,
        outcome: MailOutcome,
    ) -> Result<(), StoreError>;

    /// Fails what is still pending past its link's expiry (clearing the
    /// body) and deletes sent and failed messages done before
    /// `done_before`; returns the rows changed.
    async fn purge_mail(&self, now: Timestamp, done_before: Timestamp) -> Result<u64, StoreError>;

    /// The outbox's backlog.
    async fn mail_status(&self) -> Result<MailStatus, StoreError>;

    /// Cheap liveness check (readiness probe).
    async fn ping(&self) -> Result<(), StoreError>;

    /// §3.1: checks `limits` in order (the first refusal wins and nothing is
    /// written), then creates the registration (status `unclaimed`), its API
    /// key and claim token, and records `reg.events`.
    async fn create_anonymous_registration(
        &self,
        reg: NewAnonymousRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError>;

    /// §3.3 steps 12 and the issuance after it, atomically: refuses a used
    /// `jti` (shared by every replica), matches or provisions the user
    /// (§6), checks `limits`, then records the `jti`, upserts the
    /// delegation `(iss, sub)` (its registration id is stable while the
    /// registration lives), issues the credential and records
    /// `registration.created` and `credential.issued`. A refusal writes
    /// nothing.
    async fn register_agent(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<AgentRegistered, StoreError>;

    /// [`Store::register_agent`] as `mode` says: with or without the
    /// credential, linking silently or asking for confirmation, recording
    /// the dialect. The new operations of the current dialect have
    /// defaults so that a `Store` written for the original dialect (a
    /// wrapper, a test double) still builds; both backends implement them.
    async fn register_agent_as(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
        mode: AgentMode,
    ) -> Result<AgentRegistered, StoreError> {
        if mode == AgentMode::ORIGINAL {
            self.register_agent(reg, limits).await
        } else {
            Err(unsupported())
        }
    }

    /// The current dialect (docs/protocol.md §20): checks `limits`, then
    /// creates a registration without a credential (anonymous, or pending
    /// a claim with its first attempt) and records `reg.events`.
    async fn create_identity_registration(
        &self,
        reg: current::NewIdentityRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<current::Created, StoreError> {
        let _ = (reg, limits);
        Err(unsupported())
    }

    /// The token endpoint's exchange of authmd's own assertion: issues an
    /// access token and records `token.exchanged` only while the
    /// registration is in the assertion's state (unclaimed ones before
    /// their deadline).
    async fn exchange_assertion(
        &self,
        x: current::AssertionExchange,
    ) -> Result<current::Exchanged, StoreError> {
        let _ = x;
        Err(unsupported())
    }

    /// Records a block and `operator.action` (`block`); `false` (and
    /// nothing written) if it was in force already.
    async fn block(&self, b: BlockChange) -> Result<bool, StoreError>;

    /// Lifts a block and records `operator.action` (`unblock`); `false`
    /// (and nothing written) if there was none.
    async fn unblock(&self, b: BlockChange) -> Result<bool, StoreError>;

    /// The blocks in force, oldest first.
    async fn list_blocks(&self) -> Result<Vec<BlockRecord>, StoreError>;

    /// Whether any of `keys` (see [`block_keys`]) is blocked: a read, for
    /// refusing before any work (the registering transactions check again).
    async fn blocked(&self, keys: [Option<String>; 3]) -> Result<bool, StoreError>;

    /// Whether a `jti` key is remembered (a read; `register_agent` is the
    /// atomic check).
    async fn jti_used(&self, key: [u8; 16]) -> Result<bool, StoreError>;

    /// §3.2: checks `limits`, creates the registration and its first
    /// attempt.
    async fn create_email_registration(
        &self,
        reg: NewEmailRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError>;

    /// §4.1: starts a claim attempt (superseding the previous one), echoes
    /// one in flight, or refuses. Records `claim.requested` for a new one.
    async fn start_claim(
        &self,
        req: ClaimRequest,
        limits: Vec<RateLimit>,
    ) -> Result<ClaimStarted, StoreError>;

    /// The attempt a claim link names (its hash is checked by the caller).
    async fn attempt(
        &self,
        attempt_id: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptView>, StoreError>;

    /// §4.3: mints a code for an open attempt whose link hash matches,
    /// replacing any previous code; records `otp.generated`.
    async fn mint_otp(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        otp: SecretHash,
        otp_expires_at: Timestamp,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError>;

    /// §4.2 "this wasn't me": cancels an open attempt; records `claim.denied`.
    async fn deny_attempt(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError>;

    /// §4.4: one atomic transition. A wrong code is counted (and may lock
    /// the claim) and committed; a right one claims the registration.
    async fn complete_claim(&self, req: CompleteClaim) -> Result<Completed, StoreError>;

    /// The current dialect's sign-in link (docs/protocol.md §20.5): checks
    /// `limits`, records the sign-in on the open attempt and queues its
    /// email, in one transaction.
    async fn start_sign_in(
        &self,
        req: SignInRequest,
        limits: Vec<RateLimit>,
    ) -> Result<SignInStarted, StoreError> {
        let _ = (req, limits);
        Err(unsupported())
    }

    /// Refresh token rotation with reuse detection (docs/protocol.md
    /// §20.8), one transaction.
    async fn rotate_refresh(&self, r: RefreshRotation) -> Result<Rotated, StoreError> {
        let _ = r;
        Err(unsupported())
    }

    /// The key of the one-time codes' keyed hashes, created on first use
    /// (shared by replicas).
    async fn secret_key(&self) -> Result<Vec<u8>, StoreError>;

    /// authmd's signing keys still published at `now` (`published_until`
    /// unset or later), the most recent `signs_from` first.
    async fn signing_keys(&self, now: Timestamp) -> Result<Vec<SigningKeyRow>, StoreError>;

    /// Adds `key` as the first signing key, unless a current key (one
    /// without `published_until`) exists: replicas starting together on an
    /// empty database create one key between them. Whether it was added.
    async fn add_first_signing_key(&self, key: SigningKeyRow) -> Result<bool, StoreError>;

    /// Rotation: every current key is published until `retire_until`, `key`
    /// becomes the current one, and `event` (an `operator.action`) is
    /// recorded, in one transaction.
    async fn rotate_signing_key(
        &self,
        key: SigningKeyRow,
        retire_until: Timestamp,
        event: AuditEvent,
    ) -> Result<(), StoreError>;

    /// Records an event that accompanies no state change (a refusal).
    async fn record_event(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// Counts one request against `limits` in order (the first refusal
    /// wins and nothing is written), for requests that change nothing
    /// else but must be throttled across replicas: failed client
    /// authentications at the introspection endpoint.
    async fn count_request(
        &self,
        limits: Vec<RateLimit>,
        now: Timestamp,
    ) -> Result<Result<(), RateLimited>, StoreError>;

    /// Records events that accompany no state change, in one transaction
    /// (counted refusals, see `refusals.rs`).
    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;

    /// Deletes up to `limit` audit events recorded before `before`, oldest
    /// first (`[audit] retention`); returns how many. Never the newest
    /// event (the greatest id): on SQLite, ids are rowids, and keeping it
    /// keeps every id ever given from being given again. Safe on several
    /// replicas at once.
    async fn purge_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError>;

    /// The credential with this id, joined with its registration and user.
    /// The caller compares the stored hash with the presented secret's.
    async fn find_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError>;

    /// Invalidation log entries after `seq`, oldest first. Entries become
    /// visible in `seq` order (writers serialize on the log), so a reader
    /// that remembers the last `seq` it saw never misses one.
    async fn invalidations_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Invalidation>, StoreError>;

    /// The newest invalidation `seq` (0 when the log is empty), counting
    /// purged entries.
    async fn latest_invalidation(&self) -> Result<i64, StoreError>;

    /// The newest `seq` purged from the invalidation log (0 if none): a
    /// reader whose position is below it may have missed entries.
    async fn purged_invalidations(&self) -> Result<i64, StoreError>;

    /// Expires up to `limit` registrations still unclaimed or pending at
    /// `now`: marks them `expired`, revokes their credentials, logs the
    /// invalidations and records `registration.expired`. Safe to run on
    /// several replicas at once: each registration is expired once.
    async fn expire_registrations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<SweepReport, StoreError>;

    /// Deletes bookkeeping that can no longer matter at `now`: rate-limit
    /// state older than its window, invalidation entries older than
    /// `keep_invalidations_since` (recording the newest `seq` purged, see
    /// [`Store::purged_invalidations`]), signing keys no longer published.
    async fn purge(
        &self,
        now: Timestamp,
        keep_invalidations_since: Timestamp,
    ) -> Result<u64, StoreError>;

    /// How many registrations, credentials and events exist.
    async fn stats(&self) -> Result<Stats, StoreError>;

    /// Audit events matching `filter`, oldest first.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Applies a verified logout token (§5) atomically: refuses a used
    /// `jti`, records it, revokes the subject's credentials whose
    /// assertions were issued up to `assertions_through`, and when none is
    /// left marks the registration and the delegation revoked and records
    /// `registration.revoked`. Later assertions issued before
    /// `assertions_before` are refused.
    async fn revoke_subject(&self, r: SubjectRevocation) -> Result<SubjectRevoked, StoreError>;

    /// RFC 7009: revokes the one credential `r` names (id and hash) if it
    /// is not revoked yet, records `credential.revoked` (`by: "self"`) and
    /// appends it to the invalidation log. When no other credential of
    /// its registration is live, the registration is `revoked` too and
    /// `registration.revoked` is recorded; a delegation is left as it is
    /// (the user withdrew nothing: a fresh ID-JAG registers again).
    async fn revoke_credential(&self, r: SelfRevocation) -> Result<SelfRevoked, StoreError>;

    /// Revokes every live registration of the target and all their
    /// credentials; records `registration.revoked` for each and one
    /// `operator.action`.
    async fn revoke(&self, r: OperatorRevocation) -> Result<RevokeReport, StoreError>;

    /// Registrations matching `filter`, by id (creation order).
    async fn list_registrations(
        &self,
        filter: &RegistrationFilter,
        now: Timestamp,
    ) -> Result<Vec<RegistrationSummary>, StoreError>;

    /// The credentials of one registration (never their hashes).
    async fn registration_credentials(
        &self,
        registration_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError>;

    async fn list_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>, StoreError>;

    async fn list_delegations(
        &self,
        filter: &DelegationFilter,
    ) -> Result<Vec<DelegationRecord>, StoreError>;

    /// The end of the audit trail now: a tail started here shows what is
    /// recorded from now on.
    async fn tail_position(&self) -> Result<TailCursor, StoreError>;

    /// Events after `after` that match `filter` (its cursor and time fields
    /// aside from `since`/`until` apply too), in an order in which no event
    /// committed later can sort before one returned; and the cursor to ask
    /// from next (past everything examined, even what did not match).
    async fn tail_events(
        &self,
        after: TailCursor,
        filter: &EventFilter,
    ) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError>;
}

/// What a `Store` without the current dialect's operations answers them.
fn unsupported() -> StoreError {
    StoreError::Database("this store does not implement the current dialect".into())
}

/// Opens the store named by a `database.url`.
pub async fn open(url: &str, max_connections: usize) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, max_connections)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections).await?,
        ))
    } else {
        Err(StoreError::Url("expected sqlite: or postgres://".into()))
    }
}

/// Scopes are stored space-separated, as in OAuth.
pub(crate) fn join_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn parse_enum<T>(
    what: &str,
    s: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(s).ok_or_else(|| StoreError::Corrupt(format!("{what} {s:?}")))
}

impl NewAgentRegistration {
    /// The block keys of this registration once its user is known.
    pub(crate) fn block_keys(&self, user: Option<&str>) -> [Option<String>; 3] {
        block_keys(
            Some((&self.iss, &self.sub)),
            user,
            self.identity.verified_email().as_deref(),
        )
    }

    /// `credential.revoked` for an API key past the per-delegation cap.
    pub(crate) fn capped_event(
        &self,
        registration_id: &str,
        user_id: &str,
        credential_id: &str,
    ) -> AuditEvent {
        AuditEvent::new(EventKind::CredentialRevoked, self.now, &self.meta)
            .registration(registration_id)
            .user(user_id)
            .with("iss", self.iss.as_str())
            .with("sub", self.sub.as_str())
            .with("credential_id", credential_id)
            .with("by", "cap")
            .with("reason", "max_api_keys_per_delegation")
            .with("max_live_api_keys", self.max_api_keys)
    }

    /// Whether the assertion predates the delegation's last revocation
    /// (`delegations.revoked_before`). Both times are the provider's clock
    /// for a logout; an assertion issued in the same second is accepted.
    pub(crate) fn issued_before_revocation(&self, revoked_before: Option<i64>) -> bool {
        revoked_before.is_some_and(|t| self.issued_at.as_millis() < t)
    }

    /// The verified email an existing user may be matched by (§6 step 2),
    /// if the provider's policy lets this one link.
    pub(crate) fn link_email(&self) -> Option<String> {
        let email = self
            .identity
            .verified_email()
            .filter(|_| self.link_by_verified)?;
        match &self.link_email_domains {
            Some(domains) => crate::users::email_in_domains(&email, domains).then_some(email),
            None => Some(email),
        }
    }

    /// The verified phone an existing user may be matched by (§6 step 3):
    /// never for a provider limited to `email_domains`.
    pub(crate) fn link_phone(&self) -> Option<String> {
        if !self.link_by_verified || self.link_email_domains.is_some() {
            return None;
        }
        self.identity.verified_phone()
    }

    /// `delegation.linked`: this subject's first registration went to an
    /// existing user, found by `how`.
    pub(crate) fn linked_event(
        &self,
        registration_id: &str,
        user_id: &str,
        how: crate::users::LinkedBy,
    ) -> AuditEvent {
        AuditEvent::new(EventKind::DelegationLinked, self.now, &self.meta)
            .registration(registration_id)
            .user(user_id)
            .with("iss", self.iss.as_str())
            .with("sub", self.sub.as_str())
            .with("matched_by", how.as_str())
    }

    /// The events of a successful registration in `mode`: the two of
    /// [`Self::events`] when it issues; otherwise `registration.created`
    /// (with the dialect) and `assertion.issued`.
    pub(crate) fn events_as(
        &self,
        registration_id: &str,
        user_id: &str,
        provisioned: bool,
        mode: &AgentMode,
    ) -> Vec<AuditEvent> {
        let [created, issued] = self.events(registration_id, user_id, provisioned);
        if mode.issue {
            return vec![created, issued];
        }
        let mut assertion = AuditEvent::new(EventKind::AssertionIssued, self.now, &self.meta)
            .registration(registration_id)
            .user(user_id)
            .with("iss", self.iss.as_str())
            .with("sub", self.sub.as_str());
        if let Some((jti, exp)) = &mode.assertion {
            assertion = assertion
                .with("jti", jti.as_str())
                .with("expires_at", exp.to_rfc3339());
        }
        vec![created.with("dialect", mode.dialect.as_str()), assertion]
    }

    /// The two events of a successful registration.
    pub(crate) fn events(
        &self,
        registration_id: &str,
        user_id: &str,
        provisioned: bool,
    ) -> [AuditEvent; 2] {
        let with_subject = |e: AuditEvent| {
            let mut e = e
                .registration(registration_id)
                .user(user_id)
                .with("iss", self.iss.as_str())
                .with("sub", self.sub.as_str());
            for (k, v) in &self.audit {
                e = e.with(k, v.clone());
            }
            e
        };
        [
            with_subject(
                AuditEvent::new(EventKind::RegistrationCreated, self.now, &self.meta)
                    .with("registration_type", "agent-provider")
                    .with("user_provisioned", provisioned),
            ),
            with_subject(
                AuditEvent::new(EventKind::CredentialIssued, self.now, &self.meta)
                    .with("credential_id", self.credential_id.as_str())
                    .with("credential_type", self.credential_type.as_str())
                    .with("source", "provider")
                    .with("scopes", self.scopes.clone()),
            ),
        ]
    }
}

pub(crate) const STATS_QUERY: &str = "SELECT (SELECT COUNT(*) FROM registrations), \
     (SELECT COUNT(*) FROM credentials), (SELECT COUNT(*) FROM audit_events)";

/// Above this many changed credentials in one transaction, the
/// invalidation log gets one entry telling every replica to drop its whole
/// cache instead of one entry per credential.
pub(crate) const FLUSH_OVER: usize = 1000;

/// The entries to append to the invalidation log for `hashes`.
pub(crate) fn invalidation_entries(hashes: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if hashes.len() > FLUSH_OVER {
        vec![crate::vocab::FLUSH_ALL.as_bytes().to_vec()]
    } else {
        hashes
    }
}

/// The columns of the credential lookup (validation's hot path): the
/// credential by primary key, joined with its registration and user. Each
/// backend writes its own `WHERE` (its own placeholders).
macro_rules! credential_columns {
    () => {
        "c.id, c.type, c.source, c.scopes, c.issued_at, c.expires_at, c.revoked_at,
         c.iss, c.sub, r.id, r.type, r.status, r.expires_at, u.id, u.email, u.name,
         c.token_hash, u.email_verified"
    };
}
pub(crate) use credential_columns;

/// A row of the credential lookup, before its text columns are checked.
pub(crate) struct RawCredential {
    pub credential_id: String,
    pub credential_type: String,
    pub source: String,
    pub scopes: String,
    pub issued_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub registration_id: String,
    pub registration_type: String,
    pub registration_status: String,
    pub registration_expires_at: Option<i64>,
    pub user_id: Option<String>,
    pub user_email: Option<String>,
    pub user_name: Option<String>,
    pub token_hash: Vec<u8>,
    pub user_email_verified: Option<bool>,
}

impl RawCredential {
    pub(crate) fn into_record(self) -> Result<CredentialRecord, StoreError> {
        Ok(CredentialRecord {
            credential_type: parse_enum(
                "credential type",
                &self.credential_type,
                CredentialType::parse,
            )?,
            source: parse_enum("credential source", &self.source, CredentialSource::parse)?,
            scopes: split_scopes(&self.scopes),
            issued_at: Timestamp::from_millis(self.issued_at),
            expires_at: self.expires_at.map(Timestamp::from_millis),
            revoked_at: self.revoked_at.map(Timestamp::from_millis),
            registration_type: parse_enum(
                "registration type",
                &self.registration_type,
                RegistrationType::parse,
            )?,
            registration_status: parse_enum(
                "registration status",
                &self.registration_status,
                RegistrationStatus::parse,
            )?,
            registration_expires_at: self.registration_expires_at.map(Timestamp::from_millis),
            user: self.user_id.map(|id| UserSummary {
                id,
                email: self.user_email,
                email_verified: self.user_email_verified.unwrap_or(false),
                name: self.user_name,
            }),
            secret_hash: SecretHash::from_slice(&self.token_hash)
                .ok_or_else(|| StoreError::Corrupt("credential hash length".into()))?,
            credential_id: self.credential_id,
            registration_id: self.registration_id,
            iss: self.iss,
            sub: self.sub,
        })
    }
}

impl SubjectRevocation {
    /// `registration.revoked` (or `credential.revoked` when newer
    /// credentials remain) for a logout token.
    pub(crate) fn event(
        &self,
        kind: EventKind,
        registration_id: &str,
        user_id: &str,
        sub: &str,
        credentials: u64,
    ) -> AuditEvent {
        AuditEvent::new(kind, self.now, &self.meta)
            .registration(registration_id)
            .user(user_id)
            .with("iss", self.iss.as_str())
            .with("sub", sub)
            .with("by", "provider")
            .with("credentials_revoked", credentials)
    }
}

impl OperatorRevocation {
    /// `registration.revoked` for one registration an operator revoked.
    pub(crate) fn registration_event(
        &self,
        registration_id: &str,
        user_id: Option<&str>,
        iss: Option<String>,
        sub: Option<String>,
        credentials: usize,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::RegistrationRevoked, self.now, &self.meta)
            .registration(registration_id)
            .with("iss", iss)
            .with("sub", sub)
            .with("by", "operator")
            .with("operator", self.operator.as_str())
            .with("action", self.target.action())
            .with("credentials_revoked", credentials);
        if let Some(u) = user_id {
            e = e.user(u);
        }
        e
    }
}
