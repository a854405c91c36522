//! The claim ceremony (docs/protocol.md §3.2, §4): the user proves their
//! mailbox by reading a one-time code from a page reached through an
//! emailed link, and gives it to the agent.
//!
//! Codes are 6 digits, uniform, from a CSPRNG; only a keyed hash (HMAC-
//! SHA-256 under `server.secret_key`, bound to the registration id) is
//! stored, and comparison is constant-time. A new code replaces the old
//! one; 5 wrong guesses kill a code; 20 lock the claim until the
//! registration expires. Completion is one atomic transition in the store.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::AuthMd;
use crate::audit::{AuditEvent, EventKind, RequestMeta};
pub use crate::claim_page::ClaimPage;
use crate::credential::CredentialType;
use crate::error::{Error, ProtocolError};
use crate::mail::Email;
pub use crate::register::EmailRegistered;
use crate::register::{RegisterRequest, Registered};
use crate::store::{
    AttemptAction, AttemptProof, AttemptState, ClaimRequest, ClaimStarted, CompleteClaim,
    Completed, NewAttempt, NewCredential, NewEmailRegistration, WRONG_PER_REGISTRATION,
};
use crate::time::Timestamp;
use crate::token::{PlainSecret, SecretHash, SecretKind, new_id, recognize};
use crate::vocab::{Dialect, RegistrationType};

/// Longest email address accepted (RFC 5321 §4.5.3.1 path limit).
pub const MAX_EMAIL: usize = 254;

/// The key of the codes' keyed hashes.
#[derive(Clone)]
pub struct OtpKey(aws_lc_rs::hmac::Key);

impl std::fmt::Debug for OtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtpKey(***)")
    }
}

impl OtpKey {
    pub fn new(bytes: &[u8]) -> OtpKey {
        OtpKey(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            bytes,
        ))
    }

    /// HMAC-SHA-256 of the code, bound to its registration: a code is
    /// worthless for any other registration, and the stored value reveals
    /// nothing without the key.
    pub fn hash(&self, registration_id: &str, code: &str) -> SecretHash {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.0);
        ctx.update(b"authmd otp\0");
        ctx.update(registration_id.as_bytes());
        ctx.update(b"\0");
        ctx.update(code.as_bytes());
        let tag = ctx.sign();
        SecretHash::from_slice(tag.as_ref()).unwrap_or(SecretHash([0; 32]))
    }
}

/// A fresh 6-digit code, uniformly distributed.
pub fn new_code() -> String {
    use rand::RngExt;
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Whether `email` is an address authmd will send to: one `@`, a local part
/// and a dotted domain, printable, no spaces, at most 254 bytes, and
/// acceptable to the mail library.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL
        && !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii())
        && !email.contains(['<', '>', '(', ')', ',', ';', '"', '\\'])
        && email.parse::<lettre::Address>().is_ok()
}

/// `POST /agent/auth/claim` body.
#[derive(Clone, Default, Deserialize)]
pub struct ClaimBody {
    pub claim_token: Option<String>,
    pub email: Option<String>,
}

redacted_debug!(ClaimBody {
    show: [email],
    hide: [claim_token]
});

/// `POST /agent/auth/claim` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimInitiated {
    pub registration_id: String,
    pub claim_attempt_id: String,
    pub status: &'static str,
    pub expires_at: String,
}

/// `POST /agent/auth/claim/attempt/challenge` body.
#[derive(Clone, Default, Deserialize)]
pub struct ChallengeBody {
    pub claim_attempt_token: Option<String>,
}

redacted_debug!(ChallengeBody {
    show: [],
    hide: [claim_attempt_token]
});

/// `POST /agent/auth/claim/attempt/challenge` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Challenge {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub challenge: String,
    pub expires_at: String,
}

/// `POST /agent/auth/claim/complete` body.
#[derive(Clone, Default, Deserialize)]
pub struct CompleteBody {
    pub claim_token: Option<String>,
    pub otp: Option<String>,
}

redacted_debug!(CompleteBody {
    show: [],
    hide: [claim_token, otp]
});

/// `POST /agent/auth/claim/complete` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimCompleted {
    pub registration_id: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_type: Option<CredentialType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Present (possibly `null`) whenever a credential is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_expires: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

impl AuthMd {
    /// §3.2: no credential until the user proves the mailbox. The answer
    /// is the same whether or not a user with that email exists.
    pub(crate) async fn register_email(
        &self,
        req: &RegisterRequest,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Registered, Error> {
        let config = self.config();
        if !crate::discovery::Flows::of(config).verified_email {
            return Err(ProtocolError::VerifiedEmailNotEnabled.into());
        }
        let email = req
            .assertion
            .as_deref()
            .filter(|e| valid_email(e))
            .ok_or_else(|| {
                ProtocolError::invalid_request("assertion must be the user's email address")
            })?;
        let requested = match req.requested_credential_type.as_deref() {
            None => {
                return Err(ProtocolError::invalid_request(
                    "requested_credential_type is required (\"access_token\" or \"api_key\")",
                )
                .into());
            }
            Some(t) => CredentialType::parse(t).ok_or_else(|| {
                ProtocolError::UnsupportedCredentialType(
                    "requested_credential_type must be \"access_token\" or \"api_key\"".into(),
                )
            })?,
        };
        // An address an operator blocked gets no registration and no mail.
        self.refuse_blocked_address(email).await?;
        let registration_id = new_id("reg_");
        let claim_token = PlainSecret::generate(SecretKind::ClaimToken, &registration_id);
        let attempt_id = new_id("cla_");
        let link = PlainSecret::generate(SecretKind::ClaimLink, &attempt_id);
        let expires_at = now.plus(config.ttl.registration.get());
        let link_expires_at = now.plus(config.ttl.claim_link.get()).min(expires_at);
        let events = vec![
            AuditEvent::new(EventKind::RegistrationCreated, now, meta)
                .registration(&registration_id)
                .with(
                    "registration_type",
                    RegistrationType::EmailVerification.as_str(),
                ),
            AuditEvent::new(EventKind::ClaimRequested, now, meta)
                .registration(&registration_id)
                .with("email", email)
                .with("claim_attempt_id", attempt_id.as_str()),
        ];
        // Buckets of its own (never the agent-verified ones), then the
        // recipient's.
        let rl = &config.rate_limits;
        let mut limits = self.limits(
            "verified_email",
            meta,
            rl.verified_email_per_ip_per_hour,
            rl.verified_email_per_hour,
        );
        limits.extend(self.address_limits(email));
        let new = NewEmailRegistration {
            registration_id: registration_id.clone(),
            claim_token: claim_token.hash(),
            email: email.to_owned(),
            requested,
            created_at: now,
            expires_at,
            attempt: NewAttempt {
                id: attempt_id,
                link: link.hash(),
                link_expires_at,
                mail: Some(claim_email(self, email, &link, link_expires_at)),
                sign_in: false,
            },
            events: events.clone(),
        };
        if let Err(l) = self.store().create_email_registration(new, limits).await? {
            return Err(ProtocolError::RateLimited {
                retry_after: l.retry_after,
            }
            .into());
        }
        for e in &events {
            e.log();
        }
        // The message committed with the registration: deliver it now.
        crate::metrics::mail_queued();
        self.outbox().wake();
        Ok(Registered::Email(EmailRegistered {
            registration_id,
            registration_type: RegistrationType::EmailVerification,
            claim_url: self.urls().claim.clone(),
            claim_token: claim_token.expose().to_owned(),
            claim_token_expires: expires_at.to_rfc3339(),
            post_claim_scopes: config.resource.post_claim_scopes.clone(),
        }))
    }

    /// §4.1.
    pub async fn start_claim(
        &self,
        body: Result<ClaimBody, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<ClaimInitiated, Error> {
        let body = body?;
        let (Some(token), Some(email)) = (body.claim_token.as_deref(), body.email.as_deref())
        else {
            return Err(
                ProtocolError::invalid_request("claim_token and email are required").into(),
            );
        };
        if !valid_email(email) {
            return Err(ProtocolError::invalid_request("email is not a valid address").into());
        }
        let presented =
            recognize(token, &[SecretKind::ClaimToken]).ok_or(ProtocolError::InvalidClaimToken)?;
        self.refuse_blocked_address(email).await?;
        let registration_id = presented.id();
        let config = self.config();
        let attempt_id = new_id("cla_");
        let link = PlainSecret::generate(SecretKind::ClaimLink, &attempt_id);
        let link_expires_at = now.plus(config.ttl.claim_link.get());
        let rl = &config.rate_limits;
        let mut limits = Vec::new();
        if rl.enabled {
            limits.push(crate::rate_limit::RateLimit::per_hour(
                format!("claim:registration:{registration_id}"),
                rl.claim_emails_per_registration_per_hour,
            ));
        }
        limits.extend(self.address_limits(email));
        let req = ClaimRequest {
            registration_id: registration_id.clone(),
            claim_token: presented.hash,
            email: email.to_owned(),
            attempt: NewAttempt {
                id: attempt_id,
                link: link.hash(),
                link_expires_at,
                mail: Some(claim_email(self, email, &link, link_expires_at)),
                sign_in: false,
            },
            now,
            meta: meta.clone(),
            dialect: Dialect::Original,
        };
        let (attempt_id, expires_at) = match self.store().start_claim(req, limits).await? {
            ClaimStarted::Started {
                attempt_id,
                expires_at,
            } => {
                // The message committed with the attempt: deliver it now.
                crate::metrics::mail_queued();
                self.outbox().wake();
                (attempt_id, expires_at)
            }
            ClaimStarted::InFlight {
                attempt_id,
                expires_at,
            } => (attempt_id, expires_at),
            ClaimStarted::UnknownToken => return Err(ProtocolError::InvalidClaimToken.into()),
            ClaimStarted::Claimed => return Err(ProtocolError::ClaimedOrInFlight.into()),
            ClaimStarted::Expired => return Err(ProtocolError::ClaimExpired.into()),
            ClaimStarted::OtherEmail => {
                return Err(ProtocolError::invalid_request(
                    "this registration can only be claimed with the email it was registered with",
                )
                .into());
            }
            ClaimStarted::Locked => return Err(locked().into()),
            ClaimStarted::Limited(l) => {
                return Err(ProtocolError::RateLimited {
                    retry_after: l.retry_after,
                }
                .into());
            }
        };
        Ok(ClaimInitiated {
            registration_id,
            claim_attempt_id: attempt_id,
            status: "initiated",
            expires_at: expires_at.to_rfc3339(),
        })
    }

    /// `GET /agent/auth/claim/view`: what the link shows. Mints nothing.
    pub async fn claim_page(
        &self,
        token: Option<&str>,
        now: Timestamp,
    ) -> Result<ClaimPage, Error> {
        let Some(token) = token else {
            return Ok(ClaimPage::MissingToken);
        };
        let Some(presented) = recognize(token, &[SecretKind::ClaimLink]) else {
            return Ok(ClaimPage::Unknown);
        };
        let view = self.store().attempt(&presented.id(), now).await?;
        let Some(view) = view.filter(|v| v.link == presented.hash) else {
            return Ok(ClaimPage::Unknown);
        };
        Ok(match view.state {
            AttemptState::Open => ClaimPage::Open {
                email: view.email,
                scopes: self
                    .config()
                    .resource
                    .post_claim_scopes
                    .iter()
                    .map(|s| {
                        let d = self
                            .config()
                            .resource
                            .scopes
                            .get(s)
                            .cloned()
                            .unwrap_or_default();
                        (s.clone(), d)
                    })
                    .collect(),
                link_expires: view.link_expires_at,
                token: token.to_owned(),
            },
            other => refusal_page(other),
        })
    }

    /// The page's "show my code" and the challenge endpoint: mints a code.
    async fn mint(
        &self,
        token: &str,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Result<(String, Timestamp), AttemptAction>, Error> {
        let Some(presented) = recognize(token, &[SecretKind::ClaimLink]) else {
            return Ok(Err(AttemptAction::Unknown));
        };
        let proof = AttemptProof::Link(presented.hash);
        self.mint_code(&presented.id(), proof, meta, now).await
    }

    /// Mints a code for the attempt `proof` admits (replacing any earlier
    /// one). The code is returned once and kept only as its keyed hash.
    pub(crate) async fn mint_code(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Result<(String, Timestamp), AttemptAction>, Error> {
        // The code's hash is bound to the registration: look it up first.
        let Some(view) = self.store().attempt(attempt_id, now).await? else {
            return Ok(Err(AttemptAction::Unknown));
        };
        let code = new_code();
        let otp = self.otp_key().hash(&view.registration_id, &code);
        let until = now.plus(self.config().ttl.otp.get());
        match self
            .store()
            .mint_otp(attempt_id, proof, otp, until, now, meta.clone())
            .await?
        {
            AttemptAction::Done { .. } => Ok(Ok((code, until))),
            other => Ok(Err(other)),
        }
    }

    /// `POST /agent/auth/claim/view` with `action=show`.
    pub async fn claim_page_show(
        &self,
        token: &str,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<ClaimPage, Error> {
        Ok(match self.mint(token, meta, now).await? {
            Ok((code, expires)) => ClaimPage::Code { code, expires },
            Err(AttemptAction::Refused(state)) => refusal_page(state),
            Err(_) => ClaimPage::Unknown,
        })
    }

    /// `POST /agent/auth/claim/view` with `action=deny`: "this wasn't me".
    pub async fn claim_page_deny(
        &self,
        token: &str,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<ClaimPage, Error> {
        let Some(presented) = recognize(token, &[SecretKind::ClaimLink]) else {
            return Ok(ClaimPage::Unknown);
        };
        Ok(
            match self
                .store()
                .deny_attempt(
                    &presented.id(),
                    AttemptProof::Link(presented.hash),
                    now,
                    meta.clone(),
                )
                .await?
            {
                AttemptAction::Done { .. } => ClaimPage::Denied,
                AttemptAction::Refused(state) => refusal_page(state),
                AttemptAction::Unknown => ClaimPage::Unknown,
            },
        )
    }

    /// §4.3 (called by pages, never by agents).
    pub async fn challenge(
        &self,
        body: Result<ChallengeBody, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Challenge, Error> {
        let token = body?
            .claim_attempt_token
            .ok_or_else(|| ProtocolError::invalid_request("claim_attempt_token is required"))?;
        match self.mint(&token, meta, now).await? {
            Ok((code, until)) => Ok(Challenge {
                kind: "otp",
                challenge: code,
                expires_at: until.to_rfc3339(),
            }),
            Err(AttemptAction::Refused(AttemptState::Claimed)) => {
                Err(ProtocolError::ClaimCompleted.into())
            }
            Err(AttemptAction::Refused(AttemptState::Expired)) => {
                Err(ProtocolError::ClaimExpired.into())
            }
            Err(AttemptAction::Refused(AttemptState::Locked)) => Err(locked().into()),
            // Unknown, rotated or cancelled links.
            Err(_) => Err(ProtocolError::ClaimSuperseded.into()),
        }
    }

    /// §4.4: the agent finishes the claim with the code its user read.
    pub async fn complete_claim(
        &self,
        body: Result<CompleteBody, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<ClaimCompleted, Error> {
        let body = body?;
        let (Some(token), Some(otp)) = (body.claim_token.as_deref(), body.otp.as_deref()) else {
            return Err(ProtocolError::invalid_request("claim_token and otp are required").into());
        };
        if otp.len() != 6 || !otp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProtocolError::invalid_request("otp must be the 6-digit code").into());
        }
        let presented =
            recognize(token, &[SecretKind::ClaimToken]).ok_or(ProtocolError::InvalidClaimToken)?;
        let registration_id = presented.id();
        let config = self.config();
        let credential_id = new_id("crd_");
        let api_key = PlainSecret::generate(SecretKind::ApiKey, &credential_id);
        let access_token = PlainSecret::generate(SecretKind::AccessToken, &credential_id);
        let access_token_expires_at = now.plus(config.ttl.access_token.get());
        let req = CompleteClaim {
            registration_id: registration_id.clone(),
            claim_token: presented.hash,
            otp: self.otp_key().hash(&registration_id, otp),
            now,
            meta: meta.clone(),
            scopes: config.resource.post_claim_scopes.clone(),
            jit_provisioning: config.registration.jit_provisioning,
            new_user_id: new_id("usr_"),
            credential: NewCredential {
                id: credential_id,
                api_key: api_key.hash(),
                access_token: access_token.hash(),
                access_token_expires_at,
            },
            rotate_key: config.registration.rotate_key_on_claim,
            dialect: Dialect::Original,
            refresh: None,
        };
        match self.store().complete_claim(req).await? {
            Completed::Claimed { issued, .. } => {
                // The scope change must reach this replica's cache at once;
                // the claim is committed whatever happens to that.
                self.refresh_after_commit().await;
                let scopes = config.resource.post_claim_scopes.clone();
                let (credential_type, credential, credential_expires, scopes) = match issued {
                    None => (None, None, None, None),
                    Some(CredentialType::ApiKey) => (
                        Some(CredentialType::ApiKey),
                        Some(api_key.expose().to_owned()),
                        Some(None),
                        Some(scopes),
                    ),
                    Some(CredentialType::AccessToken) => (
                        Some(CredentialType::AccessToken),
                        Some(access_token.expose().to_owned()),
                        Some(Some(access_token_expires_at.to_rfc3339())),
                        Some(scopes),
                    ),
                };
                Ok(ClaimCompleted {
                    registration_id,
                    status: "claimed",
                    credential_type,
                    credential,
                    credential_expires,
                    scopes,
                })
            }
            Completed::UnknownToken => Err(ProtocolError::InvalidClaimToken.into()),
            Completed::PreviouslyClaimed => Err(ProtocolError::PreviouslyClaimed.into()),
            Completed::Expired => Err(ProtocolError::ClaimExpired.into()),
            Completed::NotGenerated => Err(ProtocolError::OtpNotGenerated.into()),
            Completed::OtpExpired => Err(ProtocolError::OtpExpired.into()),
            Completed::TooManyAttempts => Err(ProtocolError::TooManyAttempts(
                "this code has had too many wrong guesses, or the claim is locked; the user must show a new code"
                    .into(),
            )
            .into()),
            Completed::Invalid => Err(ProtocolError::OtpInvalid.into()),
            Completed::NotProvisioned => Err(ProtocolError::UserNotProvisioned.into()),
            Completed::Blocked => Err(ProtocolError::Blocked.into()),
        }
    }

    /// Refuses an address an operator blocked (before any work or mail;
    /// completing a claim checks again, with the user, in its transaction).
    pub(crate) async fn refuse_blocked_address(&self, email: &str) -> Result<(), Error> {
        let keys = crate::store::block_keys(None, None, Some(email));
        if self.store().blocked(keys).await? {
            return Err(ProtocolError::Blocked.into());
        }
        Ok(())
    }

    /// Claim emails per recipient mailbox (§9), per hour and per day,
    /// across every registration and flow, counted with the other limits:
    /// each message goes to an address the requester chose.
    pub(crate) fn address_limits(&self, email: &str) -> Vec<crate::rate_limit::RateLimit> {
        use crate::rate_limit::RateLimit;
        let rl = &self.config().rate_limits;
        if !rl.enabled {
            return Vec::new();
        }
        let mailbox = crate::users::mailbox_key(email);
        vec![
            RateLimit::per_hour(
                format!("claim:address:{mailbox}"),
                rl.claim_emails_per_address_per_hour,
            ),
            RateLimit::per_day(
                format!("claim:address-day:{mailbox}"),
                rl.claim_emails_per_address_per_day,
            ),
        ]
    }
}

pub(crate) fn locked() -> ProtocolError {
    ProtocolError::TooManyAttempts(format!(
        "this claim had {WRONG_PER_REGISTRATION} wrong codes and is locked until the registration expires"
    ))
}

pub(crate) fn refusal_page(state: AttemptState) -> ClaimPage {
    match state {
        AttemptState::Open => ClaimPage::Unknown,
        AttemptState::Superseded => ClaimPage::Superseded,
        AttemptState::Denied => ClaimPage::Cancelled,
        AttemptState::Claimed => ClaimPage::Claimed,
        AttemptState::Expired => ClaimPage::Expired,
        AttemptState::Locked => ClaimPage::Locked,
    }
}

/// The claim email: which service, what the agent asks for, the link and
/// its expiry. Never the code.
pub fn claim_email(app: &AuthMd, to: &str, link: &PlainSecret, expires: Timestamp) -> Email {
    let config = app.config();
    let service = &config.resource.name;
    let url = format!("{}/view?token={}", app.urls().claim, link.expose());
    let minutes = Timestamp::now().until(expires).as_secs().div_ceil(60);
    let human = expires.to_human();
    let scopes: Vec<(String, String)> = config
        .resource
        .post_claim_scopes
        .iter()
        .map(|s| {
            (
                s.clone(),
                config.resource.scopes.get(s).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let mut text = format!(
        "An AI agent asked to connect to your {service} account ({to}).\n\n\
         If you asked your agent to do this, open the link below, press \"Show my code\" and \
         give the 6-digit code to your agent. The agent will then be able to:\n\n"
    );
    for (scope, description) in &scopes {
        let _ = writeln!(text, "  - {description} ({scope})");
    }
    let _ = write!(
        text,
        "\n{url}\n\nThe link works for {minutes} minutes (until {human}).\n\n\
         If this wasn't you, open the link and choose \"This wasn't me\", or ignore this message: \
         nothing happens without the code.\n"
    );
    let e = crate::claim_page::escape;
    let mut html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;max-width:36rem\">\
         <p>An AI agent asked to connect to your <strong>{}</strong> account ({}).</p>\
         <p>If you asked your agent to do this, open the link below, press <em>Show my code</em> \
         and give the 6-digit code to your agent. The agent will then be able to:</p><ul>",
        e(service),
        e(to)
    );
    for (scope, description) in &scopes {
        let _ = write!(
            html,
            "<li>{} (<code>{}</code>)</li>",
            e(description),
            e(scope)
        );
    }
    let _ = write!(
        html,
        "</ul><p><a href=\"{url}\">Review the request</a></p>\
         <p>The link works for {minutes} minutes (until {human}).</p>\
         <p>If this wasn't you, open the link and choose <em>This wasn't me</em>, or ignore this \
         message: nothing happens without the code.</p></body></html>",
        url = e(&url),
    );
    Email {
        to: to.to_owned(),
        subject: format!("{service}: an AI agent asks to connect to your account"),
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_never_debug_print_their_secrets() {
        let complete = CompleteBody {
            claim_token: Some("clm_presented".into()),
            otp: Some("123456".into()),
        };
        let shown = format!(
            "{complete:?} {:?} {:?}",
            ClaimBody {
                claim_token: Some("clm_presented".into()),
                email: Some("a@example.com".into()),
            },
            crate::current::IdentityRequest {
                kind: Some("refresh".into()),
                refresh_token: Some("amd_rt_presented".into()),
                assertion: Some("eyJ.presented.jwt".into()),
                ..Default::default()
            }
        );
        for secret in [
            "clm_presented",
            "123456",
            "amd_rt_presented",
            "eyJ.presented.jwt",
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("a@example.com") && shown.contains("\"refresh\""));
        assert!(shown.contains("otp: Some(\"***\")"), "{shown}");
    }

    #[test]
    fn codes_are_six_digits_and_spread() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let c = new_code();
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
            seen.insert(c);
        }
        assert!(seen.len() > 990);
    }

    #[test]
    fn codes_are_bound_to_their_registration_and_key() {
        let k = OtpKey::new(&[7; 32]);
        assert_eq!(k.hash("reg_a", "123456"), k.hash("reg_a", "123456"));
        assert_ne!(k.hash("reg_a", "123456"), k.hash("reg_b", "123456"));
        assert_ne!(
            k.hash("reg_a", "123456"),
            OtpKey::new(&[8; 32]).hash("reg_a", "123456")
        );
    }

    #[test]
    fn emails_are_checked() {
        for good in [
            "user@example.com",
            "a.b+c@sub.example.org",
            "Zoë@exämple.com",
        ] {
            assert!(valid_email(good), "{good}");
        }
        for bad in [
            "",
            "user",
            "user@",
            "@example.com",
            "user@localhost",
            "a b@example.com",
            "user@example.com\r\nBcc: x@y.z",
            "<user@example.com>",
            "user@.example.com",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
        assert!(!valid_email(&format!("{}@example.com", "a".repeat(65))));
    }
}
