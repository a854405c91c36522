//! The current dialect's claim ceremony and refresh tokens
//! (docs/protocol.md §20.5, §20.8): what `POST /agent/identity/claim`,
//! `…/claim/complete`, the verification page and `{"type": "refresh"}`
//! receive and send. The state machine is the original dialect's
//! (`claim.rs` and the store's attempts, codes and budgets); what differs
//! is the direction of the ceremony:
//!
//! 1. the agent gets an attempt and hands its `verification_uri` to the
//!    user (so holding that link proves nothing);
//! 2. on that page the user asks for a one-time sign-in link, emailed to
//!    the attempt's address; the page sets a cookie, and the link works
//!    only in the browser holding it (the address is proven by the mail,
//!    the request by the browser that started it);
//! 3. signed in, the user sees "Authorize this agent?" and confirms: a
//!    fresh 6-digit `user_code` is minted and shown once (stored only as
//!    its keyed hash; confirming again mints a new one and kills the old);
//! 4. the user reads the code to the agent, which completes.

use serde::{Deserialize, Serialize};

use crate::AuthMd;
use crate::assertion::{self, Subject};
use crate::audit::RequestMeta;
use crate::claim::{ClaimPage, valid_email};
use crate::current::{AttemptBlock, Identified, IdentityBlock, RefreshBlock};
use crate::error::{Error, ProtocolError};
use crate::rate_limit::RateLimit;
use crate::store::{
    AttemptAction, AttemptProof, AttemptState, ClaimRequest, ClaimStarted, CompleteClaim,
    Completed, NewAttempt, NewCredential, NewRefreshToken, RefreshRotation, Rotated, SignIn,
    SignInRequest, SignInStarted,
};
use crate::time::Timestamp;
use crate::token::{PlainSecret, SecretHash, SecretKind, new_id, recognize};
use crate::vocab::{Dialect, RegistrationType};

/// The cookie that ties a sign-in link to the browser that asked for it.
pub const BROWSER_COOKIE: &str = "authmd_claim";

/// `POST /agent/identity/claim`.
#[derive(Clone, Default, Deserialize)]
pub struct IdentityClaimBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub claim_token: Option<String>,
    pub login_hint: Option<String>,
}

redacted_debug!(IdentityClaimBody {
    show: [kind, login_hint],
    hide: [claim_token]
});

/// Its answer: the new attempt.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityClaimStarted {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub attempt: AttemptBlock,
}

/// `POST /agent/identity/claim/complete`.
#[derive(Clone, Default, Deserialize)]
pub struct IdentityCompleteBody {
    pub claim_token: Option<String>,
    pub user_code: Option<String>,
}

redacted_debug!(IdentityCompleteBody {
    show: [],
    hide: [claim_token, user_code]
});

/// Its answer, once: the post-claim assertion and the first refresh token.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityClaimed {
    pub id: String,
    pub status: &'static str,
    pub identity: IdentityBlock,
}

/// What the verification page was asked to do (`action` of its forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyAction {
    /// "Email me a sign-in link" (with the attempt's link).
    SignIn,
    /// "Authorize" (with the sign-in link and the cookie).
    Confirm,
    /// "This wasn't me" (with either).
    Deny,
}

/// A new attempt: the link the agent hands to the user.
pub(crate) struct Minted {
    pub attempt: NewAttempt,
    pub link: PlainSecret,
}

impl AuthMd {
    /// A current-dialect attempt (no email: the agent hands the link over).
    pub(crate) fn new_identity_attempt(&self, now: Timestamp, deadline: Timestamp) -> Minted {
        let id = new_id("cla_");
        let link = PlainSecret::generate(SecretKind::ClaimLink, &id);
        Minted {
            attempt: NewAttempt {
                id,
                link: link.hash(),
                link_expires_at: now.plus(self.config().ttl.claim_link.get()).min(deadline),
                mail: None,
                sign_in: true,
            },
            link,
        }
    }

    /// `POST /agent/identity/claim`: a new attempt for the registration,
    /// replacing the previous one (its link, sign-in and code stop
    /// working). Rate limited per registration; the address must be one
    /// authmd sends to and, except for an anonymous registration, the one
    /// it was made for.
    pub async fn start_identity_claim(
        &self,
        body: Result<IdentityClaimBody, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityClaimStarted, Error> {
        let body = body?;
        match body.kind.as_deref() {
            Some("service_auth") => {}
            Some(other) => {
                return Err(ProtocolError::invalid_request(format!(
                    "unknown type {}; the claim method is \"service_auth\"",
                    crate::register::quoted(other)
                ))
                .into());
            }
            None => return Err(ProtocolError::invalid_request("type is required").into()),
        }
        let (Some(token), Some(hint)) = (body.claim_token.as_deref(), body.login_hint.as_deref())
        else {
            return Err(
                ProtocolError::invalid_request("claim_token and login_hint are required").into(),
            );
        };
        let hint = hint.trim();
        if !valid_email(hint) {
            return Err(invalid_hint().into());
        }
        let presented =
            recognize(token, &[SecretKind::ClaimToken]).ok_or(ProtocolError::InvalidClaimToken)?;
        self.refuse_blocked_address(hint).await?;
        let registration_id = presented.id();
        let rl = &self.config().rate_limits;
        let mut limits = Vec::new();
        if rl.enabled {
            limits.push(RateLimit::per_hour(
                format!("identity-claim:registration:{registration_id}"),
                rl.claim_emails_per_registration_per_hour,
            ));
        }
        // The deadline is the registration's; the store caps nothing, so
        // the link is capped at the widest it could be.
        let minted = self.new_identity_attempt(now, now.plus(self.config().ttl.registration.get()));
        let req = ClaimRequest {
            registration_id: registration_id.clone(),
            claim_token: presented.hash,
            email: hint.to_owned(),
            attempt: minted.attempt,
            now,
            meta: meta.clone(),
            dialect: Dialect::Current,
        };
        match self.store().start_claim(req, limits).await? {
            ClaimStarted::Started { expires_at, .. } => Ok(IdentityClaimStarted {
                id: registration_id,
                kind: "service_auth",
                attempt: AttemptBlock {
                    verification_uri: self.verification_uri(minted.link.expose()),
                    expires_at: expires_at.to_rfc3339(),
                },
            }),
            // The current dialect never reuses an attempt (the store
            // starts a new one each time).
            ClaimStarted::InFlight { .. } | ClaimStarted::UnknownToken => {
                Err(ProtocolError::InvalidClaimToken.into())
            }
            ClaimStarted::Claimed => Err(ProtocolError::ClaimedOrInFlight.into()),
            ClaimStarted::Expired => Err(ProtocolError::ClaimExpired.into()),
            ClaimStarted::OtherEmail => Err(ProtocolError::InvalidLoginHint(
                "this registration can only be claimed with the address it was made for".into(),
            )
            .into()),
            ClaimStarted::Locked => Err(crate::claim::locked().into()),
            ClaimStarted::Limited(l) => Err(ProtocolError::RateLimited {
                retry_after: l.retry_after,
            }
            .into()),
        }
    }

    /// `GET` of the verification page: the attempt's link shows the
    /// request and the sign-in button; the emailed sign-in link, in the
    /// browser that asked for it, shows "Authorize this agent?". Mints
    /// nothing.
    pub async fn verify_page(
        &self,
        token: Option<&str>,
        browser: Option<&str>,
        now: Timestamp,
    ) -> Result<ClaimPage, Error> {
        let Some(token) = token else {
            return Ok(ClaimPage::MissingToken);
        };
        let Some(presented) = recognize(token, &[SecretKind::ClaimLink, SecretKind::SignIn]) else {
            return Ok(ClaimPage::Unknown);
        };
        let Some(view) = self.store().attempt(&presented.id(), now).await? else {
            return Ok(ClaimPage::Unknown);
        };
        let proof = match presented.kind {
            SecretKind::SignIn => match browser {
                Some(b) => AttemptProof::SignIn {
                    token: presented.hash,
                    browser: SecretHash::of(b),
                },
                None => return Ok(ClaimPage::OtherBrowser),
            },
            _ => AttemptProof::Link(presented.hash),
        };
        if !view.needs_sign_in || !view.admits(&proof, false, now) {
            // A sign-in link from the right mail in the wrong browser, or
            // an old one: say what to do rather than "unknown".
            return Ok(
                if presented.kind == SecretKind::SignIn && view.state == AttemptState::Open {
                    ClaimPage::OtherBrowser
                } else {
                    ClaimPage::Unknown
                },
            );
        }
        if view.state != AttemptState::Open {
            return Ok(crate::claim::refusal_page(view.state));
        }
        let scopes = self.scope_descriptions();
        Ok(match proof {
            AttemptProof::Link(_) => ClaimPage::SignIn {
                email: view.email,
                scopes,
                link_expires: view.link_expires_at,
                token: token.to_owned(),
            },
            AttemptProof::SignIn { .. } => ClaimPage::Authorize {
                email: view.email,
                scopes,
                provider: view.provider,
                registration_type: view.registration_type,
                token: token.to_owned(),
            },
        })
    }

    /// `POST` of the verification page. Returns the page and, after a
    /// sign-in request, the cookie value to set.
    pub async fn verify_action(
        &self,
        action: VerifyAction,
        token: &str,
        browser: Option<&str>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<(ClaimPage, Option<String>), Error> {
        let kinds: &[SecretKind] = match action {
            VerifyAction::SignIn => &[SecretKind::ClaimLink],
            VerifyAction::Confirm => &[SecretKind::SignIn],
            VerifyAction::Deny => &[SecretKind::ClaimLink, SecretKind::SignIn],
        };
        let Some(presented) = recognize(token, kinds) else {
            return Ok((ClaimPage::Unknown, None));
        };
        let attempt_id = presented.id();
        let proof = if presented.kind == SecretKind::SignIn {
            let Some(b) = browser else {
                return Ok((ClaimPage::OtherBrowser, None));
            };
            AttemptProof::SignIn {
                token: presented.hash,
                browser: SecretHash::of(b),
            }
        } else {
            AttemptProof::Link(presented.hash)
        };
        match action {
            VerifyAction::SignIn => {
                self.send_sign_in(&attempt_id, presented.hash, meta, now)
                    .await
            }
            VerifyAction::Confirm => {
                let page = match self.mint_code(&attempt_id, proof, meta, now).await? {
                    Ok((code, expires)) => ClaimPage::Code { code, expires },
                    Err(AttemptAction::Refused(state)) => crate::claim::refusal_page(state),
                    Err(_) => ClaimPage::OtherBrowser,
                };
                Ok((page, None))
            }
            VerifyAction::Deny => {
                let page = match self
                    .store()
                    .deny_attempt(&attempt_id, proof, now, meta.clone())
                    .await?
                {
                    AttemptAction::Done { .. } => ClaimPage::Denied,
                    AttemptAction::Refused(state) => crate::claim::refusal_page(state),
                    AttemptAction::Unknown => ClaimPage::Unknown,
                };
                Ok((page, None))
            }
        }
    }

    /// Emails a one-time sign-in link to the attempt's address, bound to a
    /// fresh browser cookie; both kept as hashes.
    async fn send_sign_in(
        &self,
        attempt_id: &str,
        link: SecretHash,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<(ClaimPage, Option<String>), Error> {
        let Some(view) = self.store().attempt(attempt_id, now).await? else {
            return Ok((ClaimPage::Unknown, None));
        };
        if view.state != AttemptState::Open || view.link != link {
            let page = match view.state {
                AttemptState::Open => ClaimPage::Unknown,
                other => crate::claim::refusal_page(other),
            };
            return Ok((page, None));
        }
        let token = PlainSecret::generate(SecretKind::SignIn, attempt_id);
        let mut cookie = [0u8; 32];
        crate::token::fill_random(&mut cookie);
        let cookie = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cookie)
        };
        let expires_at = now
            .plus(self.config().ttl.claim_link.get())
            .min(view.link_expires_at);
        let mail = self.sign_in_email(&view.email, &token, expires_at);
        let mut limits = Vec::new();
        let rl = &self.config().rate_limits;
        if rl.enabled {
            limits.push(RateLimit::per_hour(
                format!("claim:registration:{}", view.registration_id),
                rl.claim_emails_per_registration_per_hour,
            ));
        }
        limits.extend(self.address_limits(&view.email));
        let req = SignInRequest {
            attempt_id: attempt_id.to_owned(),
            link,
            sign_in: SignIn {
                token: token.hash(),
                browser: SecretHash::of(&cookie),
                expires_at,
            },
            mail,
            now,
            meta: meta.clone(),
        };
        Ok(match self.store().start_sign_in(req, limits).await? {
            SignInStarted::Sent => {
                crate::metrics::mail_queued();
                self.outbox().wake();
                (ClaimPage::SignInSent { email: view.email }, Some(cookie))
            }
            SignInStarted::Unknown => (ClaimPage::Unknown, None),
            SignInStarted::Refused(state) => (crate::claim::refusal_page(state), None),
            SignInStarted::Limited(l) => (
                ClaimPage::TooManyEmails {
                    retry_after: l.retry_after,
                },
                None,
            ),
        })
    }

    /// `POST /agent/identity/claim/complete`: the user's code, read back.
    /// The same budgets as the original dialect's codes (5 wrong per code,
    /// 20 per registration, then locked).
    pub async fn complete_identity_claim(
        &self,
        body: Result<IdentityCompleteBody, ProtocolError>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<IdentityClaimed, Error> {
        let body = body?;
        let (Some(token), Some(code)) = (body.claim_token.as_deref(), body.user_code.as_deref())
        else {
            return Err(
                ProtocolError::invalid_request("claim_token and user_code are required").into(),
            );
        };
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                ProtocolError::invalid_request("user_code must be the 6-digit code").into(),
            );
        }
        let presented =
            recognize(token, &[SecretKind::ClaimToken]).ok_or(ProtocolError::InvalidClaim)?;
        let registration_id = presented.id();
        let config = self.config();
        let refresh_id = new_id("rft_");
        let refresh = PlainSecret::generate(SecretKind::RefreshToken, &refresh_id);
        let refresh_expires_at = now.plus(config.ttl.refresh_token.get());
        // A new family is named by its first token.
        let family_id = refresh_id.clone();
        // Never issued in this dialect; the store needs the shape.
        let unused = SecretHash::of("");
        let req = CompleteClaim {
            registration_id: registration_id.clone(),
            claim_token: presented.hash,
            otp: self.otp_key().hash(&registration_id, code),
            now,
            meta: meta.clone(),
            scopes: config.resource.post_claim_scopes.clone(),
            jit_provisioning: config.registration.jit_provisioning,
            new_user_id: new_id("usr_"),
            credential: NewCredential {
                id: new_id("crd_"),
                api_key: unused,
                access_token: unused,
                access_token_expires_at: now,
            },
            rotate_key: false,
            dialect: Dialect::Current,
            refresh: Some(NewRefreshToken {
                family_id: family_id.clone(),
                id: refresh_id,
                hash: refresh.hash(),
                expires_at: refresh_expires_at,
            }),
        };
        match self.store().complete_claim(req).await? {
            Completed::Claimed { email, status, .. } => {
                // Earlier access tokens were revoked: every replica must
                // drop them from its cache.
                self.refresh_after_commit().await;
                let issued = self.issue_assertion(
                    &Subject {
                        registration_id: &registration_id,
                        status,
                        deadline: None,
                        email: Some(&email),
                        family: Some(&family_id),
                    },
                    now,
                )?;
                crate::current::assertion_event(&registration_id, &issued, now, meta).log();
                Ok(IdentityClaimed {
                    id: registration_id,
                    status: "claimed",
                    identity: IdentityBlock {
                        assertion: issued.token,
                        expires_at: issued.expires_at.to_rfc3339(),
                        refresh_token: Some(RefreshBlock {
                            value: refresh.expose().to_owned(),
                            expires_at: refresh_expires_at.to_rfc3339(),
                        }),
                    },
                })
            }
            Completed::UnknownToken => Err(ProtocolError::InvalidClaim.into()),
            Completed::PreviouslyClaimed => Err(ProtocolError::PreviouslyClaimed.into()),
            Completed::Expired => Err(ProtocolError::ClaimExpired.into()),
            Completed::NotGenerated => Err(ProtocolError::ClaimNotConfirmed.into()),
            Completed::OtpExpired => Err(ProtocolError::OtpExpired.into()),
            Completed::TooManyAttempts => Err(ProtocolError::TooManyAttempts(
                "this code has had too many wrong guesses, or the claim is locked; the user must confirm again for a new code"
                    .into(),
            )
            .into()),
            Completed::Invalid => Err(ProtocolError::OtpInvalid.into()),
            Completed::NotProvisioned => Err(ProtocolError::UserNotProvisioned.into()),
            Completed::Blocked => Err(ProtocolError::Blocked.into()),
        }
    }

    /// `POST /agent/identity {"type": "refresh"}`: spends the token, issues
    /// its successor and a fresh assertion. A spent token presented again
    /// revokes its whole family (RFC 9700 §4.14.2).
    pub(crate) async fn identity_refresh(
        &self,
        token: Option<&str>,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> Result<Identified, Error> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProtocolError::invalid_request("refresh_token is required"))?;
        let presented = recognize(token, &[SecretKind::RefreshToken])
            .ok_or(ProtocolError::InvalidRefreshToken)?;
        let next_id = new_id("rft_");
        let next = PlainSecret::generate(SecretKind::RefreshToken, &next_id);
        let next_expires_at = now.plus(self.config().ttl.refresh_token.get());
        let jti = new_id("jti_");
        let exp = Timestamp::from_secs(now.plus(assertion::LIFETIME).as_secs());
        let rotation = RefreshRotation {
            id: presented.id(),
            presented: presented.hash,
            next: NewRefreshToken {
                id: next_id.clone(),
                hash: next.hash(),
                family_id: next_id,
                expires_at: next_expires_at,
            },
            now,
            meta: meta.clone(),
            assertion: (jti.clone(), exp),
        };
        match self.store().rotate_refresh(rotation).await? {
            Rotated::Rotated {
                registration_id,
                status,
                email,
                family_id,
            } => {
                let issued = self.issue_assertion_with_jti(
                    &Subject {
                        registration_id: &registration_id,
                        status,
                        deadline: None,
                        email: email.as_deref(),
                        family: Some(&family_id),
                    },
                    jti,
                    now,
                )?;
                Ok(Identified {
                    id: registration_id,
                    kind: "refresh",
                    identity: Some(IdentityBlock {
                        assertion: issued.token,
                        expires_at: issued.expires_at.to_rfc3339(),
                        refresh_token: Some(RefreshBlock {
                            value: next.expose().to_owned(),
                            expires_at: next_expires_at.to_rfc3339(),
                        }),
                    }),
                    scopes: None,
                    claim: None,
                })
            }
            Rotated::Reused { registration_id } => {
                tracing::warn!(
                    registration_id,
                    "a spent refresh token was presented again; its family is revoked"
                );
                Err(ProtocolError::InvalidRefreshToken.into())
            }
            Rotated::Invalid => Err(ProtocolError::InvalidRefreshToken.into()),
        }
    }

    /// The post-claim scopes with their descriptions, for the pages.
    pub(crate) fn scope_descriptions(&self) -> Vec<(String, String)> {
        let r = &self.config().resource;
        r.post_claim_scopes
            .iter()
            .map(|s| (s.clone(), r.scopes.get(s).cloned().unwrap_or_default()))
            .collect()
    }

    /// The sign-in email: which service, why, the link and its expiry.
    fn sign_in_email(
        &self,
        to: &str,
        token: &PlainSecret,
        expires: Timestamp,
    ) -> crate::mail::Email {
        let service = &self.config().resource.name;
        let url = self.verification_uri(token.expose());
        let minutes = Timestamp::now().until(expires).as_secs().div_ceil(60);
        let human = expires.to_human();
        let text = format!(
            "You asked to sign in to {service} as {to} to authorize an AI agent.\n\n\
             Open this link in the same browser where you asked for it:\n\n{url}\n\n\
             It works once you are there, for {minutes} minutes (until {human}).\n\n\
             If you did not ask for this, ignore this message: nothing happens without you.\n"
        );
        let e = crate::claim_page::escape;
        let html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif;max-width:36rem\">\
             <p>You asked to sign in to <strong>{}</strong> as {} to authorize an AI agent.</p>\
             <p><a href=\"{}\">Sign in</a> (open it in the same browser where you asked for it).</p>\
             <p>The link works for {minutes} minutes (until {human}).</p>\
             <p>If you did not ask for this, ignore this message: nothing happens without you.</p>\
             </body></html>",
            e(service),
            e(to),
            e(&url),
        );
        crate::mail::Email {
            to: to.to_owned(),
            subject: format!("{service}: your sign-in link"),
            text,
            html,
        }
    }
}

fn invalid_hint() -> ProtocolError {
    ProtocolError::InvalidLoginHint("login_hint must be the user's email address".into())
}

/// `service_auth` registration's check of its hint (shared with
/// `current.rs`).
pub(crate) fn login_hint(hint: Option<&str>) -> Result<&str, ProtocolError> {
    let hint = hint.map(str::trim).unwrap_or_default();
    if hint.is_empty() {
        return Err(ProtocolError::invalid_request(
            "login_hint is required (the user's email address)",
        ));
    }
    if !valid_email(hint) {
        return Err(invalid_hint());
    }
    Ok(hint)
}

/// Which kind of registration a page describes.
pub fn describe(kind: RegistrationType, provider: Option<&str>) -> String {
    match (kind, provider) {
        (RegistrationType::AgentProvider, Some(p)) => format!(
            "An AI agent signed in through {p} asks to be linked to your account. This is the first time this provider's account is linked here."
        ),
        (RegistrationType::Anonymous, _) => {
            "An AI agent that registered on its own asks to be connected to your account.".into()
        }
        _ => "An AI agent asks to act for your account.".into(),
    }
}
