//! The current dialect (docs/protocol.md §20): what `POST /agent/identity`
//! receives and sends, in one place. The decisions are the core's: the
//! same rate limits and flow switches as the original dialect, the same
//! ID-JAG verification (`id_jag.rs`, §3.3) and user matching (the store's
//! `register_agent_as`), authmd's own assertions (`assertion.rs`).

use serde::{Deserialize, Serialize};

use crate::AuthMd;
use crate::assertion::{self, Subject};
use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::credential::CredentialType;
use crate::discovery::CurrentFlows;
use crate::error::{Error, ProtocolError};
use crate::id_jag::VerifiedIdJag;
use crate::store::current::NewIdentityRegistration;
use crate::store::{AgentMode, AgentRegistered};
use crate::time::Timestamp;
use crate::token::{PlainSecret, SecretKind, new_id};
use crate::vocab::{Dialect, ID_JAG_ASSERTION_TYPE, RegistrationStatus, RegistrationType};

/// The body of `POST /agent/identity`: one of four, chosen by `type`.
/// Every field is optional here so that a missing one is our
/// `invalid_request` with a clear message.
#[derive(Clone, Default, Deserialize)]
pub struct IdentityRequest {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub login_hint: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
    pub refresh_token: Option<String>,
}

redacted_debug!(IdentityRequest {
    show: [kind, login_hint, assertion_type],
    hide: [assertion, refresh_token]
});

/// `identity`: the assertion to exchange at the token endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityBlock {
    pub assertion: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshBlock>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshBlock {
    pub value: String,
    pub expires_at: String,
}

/// `scopes`: split for anonymous and `service_auth`, a flat list for a
/// clean ID-JAG match (as the reference implementation sends them).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Scopes {
    Split {
        #[serde(skip_serializing_if = "Option::is_none")]
        pre_claim: Option<Vec<String>>,
        post_claim: Vec<String>,
    },
    Flat(Vec<String>),
}

/// `claim`: how the user takes ownership.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimBlock {
    pub token: String,
    pub expires_at: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptBlock>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptBlock {
    pub verification_uri: String,
    pub expires_at: String,
}

/// A successful answer of `POST /agent/identity` (or the body of a `401
/// interaction_required`).
#[derive(Debug, Clone, Serialize)]
pub struct Identified {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityBlock>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Scopes>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimBlock>,
}

/// A registration to create pending a claim (see
/// `AuthMd::create_pending_claim`).
struct PendingClaim<'a> {
    /// `type` in the answer.
    kind: &'static str,
    registration_type: RegistrationType,
    /// The address the claim must prove.
    email: &'a str,
    /// A step-up's provider subject.
    subject: Option<(String, String)>,
    limits: Vec<crate::rate_limit::RateLimit>,
}

/// What `POST /agent/identity` answers.
#[derive(Debug, Clone)]
pub enum IdentityOutcome {
    /// `200`.
    Done(Identified),
    /// `401 interaction_required`: the ID-JAG's user matches an existing
    /// account by a verified address, and no delegation links them yet.
    /// The user confirms through the claim ceremony; the body carries its
    /// claim handle and first attempt.
    InteractionRequired(Identified),
}

/// The wire code of a refusal in the current dialect, where it names a
/// condition differently from the original one (docs/protocol.md §20.2).
pub fn code(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::AnonymousNotEnabled => "anonymous_registration_disabled",
        ProtocolError::VerifiedEmailNotEnabled => "service_auth_registration_disabled",
        ProtocolError::IdentityAssertionNotEnabled => "issuer_not_enabled",
        ProtocolError::RateLimited { .. } => "rate_limit_exceeded",
        ProtocolError::PreviouslyClaimed | ProtocolError::ClaimedOrInFlight => "already_claimed",
        ProtocolError::OtpExpired => "user_code_expired",
        ProtocolError::OtpInvalid => "invalid_user_code",
        other => other.code(),
    }
}

impl AuthMd {
    /// Creates a current-dialect registration under its rate limits and,
    /// once it committed, logs its events.
    async fn create_identity(
        &self,
        new: NewIdentityRegistration,
        limits: Vec<crate::rate_limit::RateLimit>,
    ) -> Result<(), Error> {
        let logged = AuditEvent::logged().then(|| new.events.clone());
        if let Err(limited) = self
            .store()
            .create_identity_registration(new, limits)
            .await?
        {
            return Err(ProtocolError::RateLimited {
                retry_after: limited.retry_after,
            }
            .into());
        }
        for e in logged.iter().flatten() {
            e.log();
        }
        Ok(())
    }

    /// `POST /agent/identity`. Every refusal is counted for
    /// `registration.rejected` like the original dialect's.
    pub async fn identity(
        &self,
        request: Result<IdentityRequest, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityOutcome, Error> {
        let flow = request.as_ref().ok().and_then(|r| match r.kind.as_deref() {
            Some("anonymous") => Some("anonymous"),
            Some("service_auth") => Some("service_auth"),
            Some("identity_assertion") => Some(ID_JAG_ASSERTION_TYPE),
            Some("refresh") => Some("refresh"),
            _ => None,
        });
        let result = match request {
            Ok(req) => match req.kind.as_deref() {
                Some("anonymous") => self.identity_anonymous(meta, now).await,
                Some("service_auth") => self.identity_service_auth(&req, meta, now).await,
                Some("refresh") => self
                    .identity_refresh(req.refresh_token.as_deref(), meta, now)
                    .await
                    .map(IdentityOutcome::Done),
                Some("identity_assertion") => self.identity_id_jag(&req, meta, now).await,
                Some(other) => Err(ProtocolError::invalid_request(format!(
                    "unknown type {}; expected \"anonymous\", \"service_auth\", \"identity_assertion\" or \"refresh\"",
                    crate::register::quoted(other)
                ))
                .into()),
                None => Err(ProtocolError::invalid_request("type is required").into()),
            },
            Err(e) => Err(e.into()),
        };
        if let Err(Error::Protocol(e)) = &result {
            tracing::debug!(code = e.code(), flow, ip = ?meta.ip, reason = %e, "registration refused");
            self.refusals().count(meta, e.code(), flow, now);
        }
        result
    }

    /// An anonymous registration in the current dialect: no credential, an
    /// assertion limited to the pre-claim state, and a claim handle. The
    /// same rate limits as the original dialect's anonymous flow.
    async fn identity_anonymous(
        &self,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityOutcome, Error> {
        let config = self.config();
        if !CurrentFlows::of(config).anonymous {
            return Err(ProtocolError::AnonymousNotEnabled.into());
        }
        let registration_id = new_id("reg_");
        let claim_token = PlainSecret::generate(SecretKind::ClaimToken, &registration_id);
        let expires_at = now.plus(config.ttl.registration.get());
        let issued = self.issue_assertion(
            &Subject {
                registration_id: &registration_id,
                status: RegistrationStatus::Unclaimed,
                deadline: Some(expires_at),
                email: None,
                family: None,
            },
            now,
        )?;
        let events = vec![
            AuditEvent::new(EventKind::RegistrationCreated, now, meta)
                .registration(&registration_id)
                .with("registration_type", RegistrationType::Anonymous.as_str())
                .with("dialect", Dialect::Current.as_str()),
            assertion_event(&registration_id, &issued, now, meta),
        ];
        let new = NewIdentityRegistration {
            registration_id: registration_id.clone(),
            registration_type: RegistrationType::Anonymous,
            status: RegistrationStatus::Unclaimed,
            claim_token: claim_token.hash(),
            email: None,
            subject: None,
            attempt: None,
            created_at: now,
            expires_at,
            events,
        };
        let limits = self.limits(
            "anonymous",
            meta,
            config.rate_limits.anonymous_per_ip_per_hour,
            config.rate_limits.anonymous_per_hour,
        );
        self.create_identity(new, limits).await?;
        Ok(IdentityOutcome::Done(Identified {
            id: registration_id,
            kind: "anonymous",
            identity: Some(IdentityBlock {
                assertion: issued.token,
                expires_at: issued.expires_at.to_rfc3339(),
                refresh_token: None,
            }),
            scopes: Some(Scopes::Split {
                pre_claim: Some(config.resource.pre_claim_scopes.clone()),
                post_claim: config.resource.post_claim_scopes.clone(),
            }),
            claim: Some(ClaimBlock {
                token: claim_token.expose().to_owned(),
                expires_at: expires_at.to_rfc3339(),
                url: self.urls().identity_claim.clone(),
                attempt: None,
            }),
        }))
    }

    /// `service_auth`: a registration pending the claim of `login_hint`,
    /// with its first attempt (the user signs in on its page; nothing is
    /// mailed until they ask). No identity until the claim completes.
    async fn identity_service_auth(
        &self,
        req: &IdentityRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityOutcome, Error> {
        let config = self.config();
        if !CurrentFlows::of(config).service_auth {
            return Err(ProtocolError::VerifiedEmailNotEnabled.into());
        }
        let email = crate::current_claim::login_hint(req.login_hint.as_deref())?;
        self.refuse_blocked_address(email).await?;
        // The email flow's buckets, one for both dialects.
        let limits = self.limits(
            "verified_email",
            meta,
            config.rate_limits.verified_email_per_ip_per_hour,
            config.rate_limits.verified_email_per_hour,
        );
        let pending = PendingClaim {
            kind: "service_auth",
            registration_type: RegistrationType::EmailVerification,
            email,
            subject: None,
            limits,
        };
        let body = self
            .create_pending_claim(pending, now, |id, attempt_id| {
                vec![
                    AuditEvent::new(EventKind::RegistrationCreated, now, meta)
                        .registration(id)
                        .with(
                            "registration_type",
                            RegistrationType::EmailVerification.as_str(),
                        )
                        .with("dialect", Dialect::Current.as_str()),
                    AuditEvent::new(EventKind::ClaimRequested, now, meta)
                        .registration(id)
                        .with("email", email)
                        .with("claim_attempt_id", attempt_id),
                ]
            })
            .await?;
        Ok(IdentityOutcome::Done(body))
    }

    /// A registration pending the claim of `p.email`, with its first
    /// attempt (`service_auth`, and an ID-JAG step-up), created under
    /// `p.limits` with the events `events(registration_id, attempt_id)`;
    /// returns the answer's body: no identity, the post-claim scopes, the
    /// claim handle and the attempt's `verification_uri`.
    async fn create_pending_claim(
        &self,
        p: PendingClaim<'_>,
        now: Timestamp,
        events: impl FnOnce(&str, &str) -> Vec<AuditEvent>,
    ) -> Result<Identified, Error> {
        let config = self.config();
        let registration_id = new_id("reg_");
        let claim_token = PlainSecret::generate(SecretKind::ClaimToken, &registration_id);
        let expires_at = now.plus(config.ttl.registration.get());
        let minted = self.new_identity_attempt(now, expires_at);
        let link_expires_at = minted.attempt.link_expires_at;
        let events = events(&registration_id, &minted.attempt.id);
        let new = NewIdentityRegistration {
            registration_id: registration_id.clone(),
            registration_type: p.registration_type,
            status: RegistrationStatus::PendingClaim,
            claim_token: claim_token.hash(),
            email: Some(p.email.to_owned()),
            subject: p.subject,
            attempt: Some(minted.attempt),
            created_at: now,
            expires_at,
            events,
        };
        self.create_identity(new, p.limits).await?;
        Ok(Identified {
            id: registration_id,
            kind: p.kind,
            identity: None,
            scopes: Some(Scopes::Split {
                pre_claim: None,
                post_claim: config.resource.post_claim_scopes.clone(),
            }),
            claim: Some(ClaimBlock {
                token: claim_token.expose().to_owned(),
                expires_at: expires_at.to_rfc3339(),
                url: self.urls().identity_claim.clone(),
                attempt: Some(AttemptBlock {
                    verification_uri: self.verification_uri(minted.link.expose()),
                    expires_at: link_expires_at.to_rfc3339(),
                }),
            }),
        })
    }

    /// An ID-JAG in the current dialect: the §3.3 checks (the same code as
    /// the original dialect), then `auth_time` (`login_required`), then the
    /// same user matching, except that a first link to an existing account
    /// by a verified address needs the user's confirmation.
    async fn identity_id_jag(
        &self,
        req: &IdentityRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityOutcome, Error> {
        let config = self.config();
        if !CurrentFlows::of(config).id_jag {
            return Err(ProtocolError::IdentityAssertionNotEnabled.into());
        }
        match req.assertion_type.as_deref() {
            Some(ID_JAG_ASSERTION_TYPE) => {}
            Some(other) => {
                return Err(ProtocolError::invalid_request(format!(
                    "unknown assertion_type {}; expected \"{ID_JAG_ASSERTION_TYPE}\"",
                    crate::register::quoted(other)
                ))
                .into());
            }
            None => return Err(ProtocolError::invalid_request("assertion_type is required").into()),
        }
        let assertion = req
            .assertion
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ProtocolError::invalid_request("assertion is required (the ID-JAG)"))?;
        let verified = self.verifier().verify(assertion, now).await?;
        self.check_auth_time(&verified, now)?;
        let jti = new_id("jti_");
        let (reg, _secret) =
            self.agent_registration(&verified, CredentialType::AccessToken, meta, now);
        let limits = self.limits(
            "identity_assertion",
            meta,
            config.rate_limits.identity_assertion_per_ip_per_hour,
            config.rate_limits.identity_assertion_per_hour,
        );
        let exp = now.plus(assertion::LIFETIME);
        let mode = AgentMode {
            issue: false,
            confirm_links: true,
            dialect: Dialect::Current,
            assertion: Some((jti.clone(), exp)),
        };
        let outcome = self.store().register_agent_as(reg, limits, mode).await?;
        match outcome {
            AgentRegistered::Issued {
                registration_id, ..
            } => {
                let email = verified
                    .email
                    .as_deref()
                    .filter(|_| verified.email_verified);
                let issued = self.issue_assertion_with_jti(
                    &Subject {
                        registration_id: &registration_id,
                        status: RegistrationStatus::Active,
                        deadline: None,
                        email,
                        family: None,
                    },
                    jti,
                    now,
                )?;
                Ok(IdentityOutcome::Done(Identified {
                    id: registration_id,
                    kind: "identity_assertion",
                    identity: Some(IdentityBlock {
                        assertion: issued.token,
                        expires_at: issued.expires_at.to_rfc3339(),
                        refresh_token: None,
                    }),
                    scopes: Some(Scopes::Flat(config.resource.post_claim_scopes.clone())),
                    claim: None,
                }))
            }
            AgentRegistered::NeedsConfirmation {
                email: Some(email), ..
            } => self.step_up(&verified, &email, meta, now).await,
            // Matched by a verified phone: there is no address to confirm
            // through.
            AgentRegistered::NeedsConfirmation { email: None, .. } => {
                Err(ProtocolError::InteractionRequired.into())
            }
            AgentRegistered::Replay => Err(ProtocolError::ReplayDetected.into()),
            AgentRegistered::NotProvisioned => Err(ProtocolError::UserNotProvisioned.into()),
            AgentRegistered::IssuedBeforeRevocation => Err(ProtocolError::Expired.into()),
            AgentRegistered::Blocked => Err(ProtocolError::Blocked.into()),
            AgentRegistered::Limited(l) => Err(ProtocolError::RateLimited {
                retry_after: l.retry_after,
            }
            .into()),
        }
    }

    /// `login_required`: the current dialect needs a recent sign-in at the
    /// provider (`auth_time` within `dialects.current.max_auth_age`, not in
    /// the future, both with the clock skew). Checked before anything is
    /// written: a refused ID-JAG does not spend its `jti`.
    pub(crate) fn check_auth_time(
        &self,
        verified: &VerifiedIdJag,
        now: Timestamp,
    ) -> Result<(), ProtocolError> {
        let max_age = self.config().dialects.current.max_auth_age.get();
        let skew = self.verifier().skew();
        let fresh = verified
            .auth_time
            .is_some_and(|t| t <= now.plus(skew) && t.until(now) <= max_age + skew);
        if fresh {
            Ok(())
        } else {
            Err(ProtocolError::LoginRequired {
                max_age: max_age.as_secs(),
            })
        }
    }

    /// `401 interaction_required`: a pending registration for the
    /// provider subject, with a claim handle and its first attempt, bound
    /// to the matched account's address. Nothing links the subject to the
    /// account until the user confirms (docs/protocol.md §20.5).
    async fn step_up(
        &self,
        verified: &VerifiedIdJag,
        user_email: &str,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityOutcome, Error> {
        let config = self.config();
        let limits = self.limits(
            "identity_assertion",
            meta,
            config.rate_limits.identity_assertion_per_ip_per_hour,
            config.rate_limits.identity_assertion_per_hour,
        );
        let pending = PendingClaim {
            kind: "identity_assertion",
            registration_type: RegistrationType::AgentProvider,
            email: user_email,
            subject: Some((verified.iss.clone(), verified.sub.clone())),
            limits,
        };
        let body = self
            .create_pending_claim(pending, now, |id, _| {
                vec![
                    AuditEvent::new(EventKind::StepUpRequired, now, meta)
                        .registration(id)
                        .with(
                            "registration_type",
                            RegistrationType::AgentProvider.as_str(),
                        )
                        .with("dialect", Dialect::Current.as_str())
                        .with("iss", verified.iss.as_str())
                        .with("sub", verified.sub.as_str()),
                ]
            })
            .await?;
        Ok(IdentityOutcome::InteractionRequired(body))
    }

    /// Where the user confirms a current-dialect claim attempt.
    pub fn verification_uri(&self, link: &str) -> String {
        format!(
            "{}{}?token={link}",
            self.urls().issuer,
            crate::discovery::IDENTITY_VERIFY_PATH
        )
    }
}

/// `assertion.issued`.
pub(crate) fn assertion_event(
    registration_id: &str,
    issued: &assertion::Issued,
    now: Timestamp,
    meta: &RequestMeta,
) -> AuditEvent {
    AuditEvent::new(EventKind::AssertionIssued, now, meta)
        .registration(registration_id)
        .with("jti", issued.jti.as_str())
        .with("expires_at", issued.expires_at.to_rfc3339())
}
