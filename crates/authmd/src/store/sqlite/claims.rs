//! The claim ceremony on SQLite (§3.2, §4). Every function runs inside the
//! writer's transaction; refusals are decided before the first write.

use rusqlite::{Connection, OptionalExtension, params};

use super::{USER_BY_VERIFIED_EMAIL, admit, db, insert_event, log_invalidations};
use crate::audit::{AuditEvent, EventKind};
use crate::credential::CredentialType;
use crate::rate_limit::RateLimit;
use crate::store::{
    AttemptAction, AttemptProof, AttemptState, AttemptView, ClaimRequest, ClaimStarted,
    CompleteClaim, Completed, NewAttempt, NewEmailRegistration, SignIn, SignInRequest,
    SignInStarted, StoreError, WRONG_PER_CODE, WRONG_PER_REGISTRATION, join_scopes, parse_enum,
};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::users::normalize_email;
use crate::vocab::{Dialect, RegistrationType};

/// The current code of an attempt: email, hash, expiry, wrong guesses.
type CodeRow = (String, Option<Vec<u8>>, Option<i64>, i64);

/// The columns of a registration the ceremony needs.
struct Reg {
    kind: RegistrationType,
    status: String,
    expires_at: Option<i64>,
    claim_hash: Option<Vec<u8>>,
    email: Option<String>,
    requested: Option<String>,
    attempt: Option<String>,
    wrong: i64,
    locked: bool,
    dialect: String,
    /// An agent-verified step-up's provider subject.
    subject: Option<(String, String)>,
}

fn registration(c: &Connection, id: &str) -> Result<Option<Reg>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT type, status, expires_at, claim_token_hash, email, requested_credential_type,
                    current_attempt_id, wrong_guesses, locked_at IS NOT NULL, dialect, iss, sub
             FROM registrations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Reg {
                        kind: RegistrationType::Anonymous,
                        status: r.get(1)?,
                        expires_at: r.get(2)?,
                        claim_hash: r.get(3)?,
                        email: r.get(4)?,
                        requested: r.get(5)?,
                        attempt: r.get(6)?,
                        wrong: r.get(7)?,
                        locked: r.get(8)?,
                        dialect: r.get(9)?,
                        subject: match (r.get(10)?, r.get(11)?) {
                            (Some(iss), Some(sub)) => Some((iss, sub)),
                            _ => None,
                        },
                    },
                ))
            })
            .optional()
        })
        .map_err(db)?;
    row.map(|(kind, mut reg)| {
        reg.kind = parse_enum("registration type", &kind, RegistrationType::parse)?;
        Ok(reg)
    })
    .transpose()
}

impl Reg {
    fn token_matches(&self, presented: &SecretHash) -> bool {
        self.claim_hash
            .as_deref()
            .and_then(SecretHash::from_slice)
            .is_some_and(|h| h == *presented)
    }

    fn expired(&self, now: Timestamp) -> bool {
        matches!(self.status.as_str(), "expired" | "revoked")
            || (self.status != "claimed" && self.expires_at.is_some_and(|t| t <= now.as_millis()))
    }

    /// A registration is claimed through the dialect it was made in.
    fn of(&self, dialect: Dialect) -> bool {
        self.dialect == dialect.as_str()
    }

    /// Claimed, or an agent-verified step-up that joined its delegation.
    fn claimed(&self) -> bool {
        self.status == "claimed"
            || (self.status == "active" && self.kind == RegistrationType::AgentProvider)
    }
}

pub(super) fn insert_attempt(
    c: &Connection,
    registration: &str,
    email: &str,
    a: &NewAttempt,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO claim_attempts (id, registration_id, email, link_hash, link_expires_at, status, created_at,
                                     needs_sign_in)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.id,
            registration,
            email,
            a.link.as_bytes(),
            a.link_expires_at.as_millis(),
            now.as_millis(),
            a.sign_in,
        ])
    })
    .map_err(db)?;
    if let Some(mail) = &a.mail {
        super::outbox::insert(c, mail, a.link_expires_at, now)?;
    }
    Ok(())
}

pub(super) fn create_email_registration(
    c: &Connection,
    reg: &NewEmailRegistration,
    limits: &[RateLimit],
) -> Result<Result<(), crate::rate_limit::RateLimited>, StoreError> {
    if let Err(refused) = admit(c, limits, reg.created_at)? {
        return Ok(Err(refused));
    }
    c.prepare_cached(
        "INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent,
                                    claim_token_hash, email, requested_credential_type, current_attempt_id)
         VALUES (?1, 'email-verification', 'pending_claim', ?2, ?2, ?3, 1, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            reg.registration_id,
            reg.created_at.as_millis(),
            reg.expires_at.as_millis(),
            reg.claim_token.as_bytes(),
            reg.email,
            reg.requested.as_str(),
            reg.attempt.id,
        ])
    })
    .map_err(db)?;
    insert_attempt(
        c,
        &reg.registration_id,
        &reg.email,
        &reg.attempt,
        reg.created_at,
    )?;
    for e in &reg.events {
        insert_event(c, e)?;
    }
    Ok(Ok(()))
}

pub(super) fn start_claim(
    c: &Connection,
    req: &ClaimRequest,
    limits: &[RateLimit],
) -> Result<ClaimStarted, StoreError> {
    let Some(reg) = registration(c, &req.registration_id)? else {
        return Ok(ClaimStarted::UnknownToken);
    };
    if !reg.token_matches(&req.claim_token) || !reg.of(req.dialect) {
        return Ok(ClaimStarted::UnknownToken);
    }
    if reg.claimed() {
        return Ok(ClaimStarted::Claimed);
    }
    if reg.expired(req.now) {
        return Ok(ClaimStarted::Expired);
    }
    if reg.locked {
        return Ok(ClaimStarted::Locked);
    }
    let wanted = normalize_email(&req.email);
    if reg.kind != RegistrationType::Anonymous
        && reg.email.as_deref().and_then(normalize_email) != wanted
    {
        return Ok(ClaimStarted::OtherEmail);
    }
    if let Some(current) = reg
        .attempt
        .as_ref()
        .filter(|_| req.dialect == Dialect::Original)
    {
        let open: Option<(String, i64)> = c
            .prepare_cached(
                "SELECT email, link_expires_at FROM claim_attempts WHERE id = ?1 AND status = 'open'",
            )
            .and_then(|mut s| s.query_row([current], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(db)?;
        if let Some((email, until)) = open
            && normalize_email(&email) == wanted
            && until > req.now.as_millis()
        {
            return Ok(ClaimStarted::InFlight {
                attempt_id: current.clone(),
                expires_at: Timestamp::from_millis(until),
            });
        }
    }
    if let Err(refused) = admit(c, limits, req.now)? {
        return Ok(ClaimStarted::Limited(refused));
    }
    if let Some(current) = &reg.attempt {
        c.prepare_cached(
            "UPDATE claim_attempts SET status = 'superseded', otp_hash = NULL
             WHERE id = ?1 AND status = 'open'",
        )
        .and_then(|mut s| s.execute([current]))
        .map_err(db)?;
    }
    insert_attempt(c, &req.registration_id, &req.email, &req.attempt, req.now)?;
    c.prepare_cached(
        "UPDATE registrations SET status = 'pending_claim', email = ?2, current_attempt_id = ?3, updated_at = ?4
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![req.registration_id, req.email, req.attempt.id, req.now.as_millis()]))
    .map_err(db)?;
    let event = AuditEvent::new(EventKind::ClaimRequested, req.now, &req.meta)
        .registration(&req.registration_id)
        .with("email", req.email.as_str())
        .with("claim_attempt_id", req.attempt.id.as_str());
    insert_event(c, &event)?;
    event.log();
    Ok(ClaimStarted::Started {
        attempt_id: req.attempt.id.clone(),
        expires_at: req.attempt.link_expires_at,
    })
}

pub(super) fn attempt(
    c: &Connection,
    id: &str,
    now: Timestamp,
) -> Result<Option<AttemptView>, StoreError> {
    type Row = (String, String, Vec<u8>, i64, String, bool, Option<SignIn>);
    let row: Option<Row> = c
        .prepare_cached(
            "SELECT registration_id, email, link_hash, link_expires_at, status,
                    needs_sign_in, sign_in_hash, sign_in_browser, sign_in_expires_at
             FROM claim_attempts WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id], |r| {
                let sign_in = sign_in(r.get(6)?, r.get(7)?, r.get(8)?);
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    sign_in,
                ))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((registration_id, email, link, link_expires_at, status, needs_sign_in, sign_in)) = row
    else {
        return Ok(None);
    };
    let Some(reg) = registration(c, &registration_id)? else {
        return Ok(None);
    };
    let link =
        SecretHash::from_slice(&link).ok_or_else(|| StoreError::Corrupt("link hash".into()))?;
    let state = if reg.claimed() {
        AttemptState::Claimed
    } else if status == "superseded" {
        AttemptState::Superseded
    } else if status == "denied" {
        AttemptState::Denied
    } else if status == "completed" {
        AttemptState::Claimed
    } else if reg.expired(now) || link_expires_at <= now.as_millis() {
        AttemptState::Expired
    } else if reg.locked {
        AttemptState::Locked
    } else {
        AttemptState::Open
    };
    Ok(Some(AttemptView {
        attempt_id: id.to_owned(),
        registration_id,
        registration_type: reg.kind,
        email,
        link,
        state,
        link_expires_at: Timestamp::from_millis(link_expires_at),
        needs_sign_in,
        provider: reg.subject.map(|(iss, _)| iss),
        sign_in,
    }))
}

fn sign_in(token: Option<Vec<u8>>, browser: Option<Vec<u8>>, until: Option<i64>) -> Option<SignIn> {
    Some(SignIn {
        token: SecretHash::from_slice(&token?)?,
        browser: SecretHash::from_slice(&browser?)?,
        expires_at: Timestamp::from_millis(until?),
    })
}

/// The attempt `proof` admits, if it is open.
fn open_attempt(
    c: &Connection,
    id: &str,
    proof: &AttemptProof,
    mint: bool,
    now: Timestamp,
) -> Result<Result<AttemptView, AttemptAction>, StoreError> {
    Ok(match attempt(c, id, now)? {
        Some(view) if view.admits(proof, mint, now) => match view.state {
            AttemptState::Open => Ok(view),
            other => Err(AttemptAction::Refused(other)),
        },
        _ => Err(AttemptAction::Unknown),
    })
}

pub(super) fn mint_otp(
    c: &Connection,
    id: &str,
    proof: &AttemptProof,
    otp: &SecretHash,
    until: Timestamp,
    now: Timestamp,
    meta: &crate::audit::RequestMeta,
) -> Result<AttemptAction, StoreError> {
    let view = match open_attempt(c, id, proof, true, now)? {
        Ok(v) => v,
        Err(refusal) => return Ok(refusal),
    };
    c.prepare_cached(
        "UPDATE claim_attempts SET otp_hash = ?2, otp_expires_at = ?3, otp_wrong = 0 WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, otp.as_bytes(), until.as_millis()]))
    .map_err(db)?;
    let event = AuditEvent::new(EventKind::OtpGenerated, now, meta)
        .registration(&view.registration_id)
        .with("claim_attempt_id", id);
    insert_event(c, &event)?;
    event.log();
    Ok(AttemptAction::Done {
        registration_id: view.registration_id,
        until,
    })
}

pub(super) fn deny_attempt(
    c: &Connection,
    id: &str,
    proof: &AttemptProof,
    now: Timestamp,
    meta: &crate::audit::RequestMeta,
) -> Result<AttemptAction, StoreError> {
    let view = match open_attempt(c, id, proof, false, now)? {
        Ok(v) => v,
        Err(refusal) => return Ok(refusal),
    };
    c.prepare_cached(
        "UPDATE claim_attempts SET status = 'denied', otp_hash = NULL, sign_in_hash = NULL WHERE id = ?1",
    )
        .and_then(|mut s| s.execute([id]))
        .map_err(db)?;
    let event = AuditEvent::new(EventKind::ClaimDenied, now, meta)
        .registration(&view.registration_id)
        .with("claim_attempt_id", id)
        .with("email", view.email.as_str());
    insert_event(c, &event)?;
    event.log();
    Ok(AttemptAction::Done {
        registration_id: view.registration_id,
        until: now,
    })
}

pub(super) fn start_sign_in(
    c: &Connection,
    req: &SignInRequest,
    limits: &[RateLimit],
) -> Result<SignInStarted, StoreError> {
    let view = match open_attempt(
        c,
        &req.attempt_id,
        &AttemptProof::Link(req.link),
        false,
        req.now,
    )? {
        Ok(v) if v.needs_sign_in => v,
        Ok(_) | Err(AttemptAction::Unknown | AttemptAction::Done { .. }) => {
            return Ok(SignInStarted::Unknown);
        }
        Err(AttemptAction::Refused(state)) => return Ok(SignInStarted::Refused(state)),
    };
    if let Err(refused) = admit(c, limits, req.now)? {
        return Ok(SignInStarted::Limited(refused));
    }
    let s = &req.sign_in;
    c.prepare_cached(
        "UPDATE claim_attempts SET sign_in_hash = ?2, sign_in_browser = ?3, sign_in_expires_at = ?4
         WHERE id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            req.attempt_id,
            s.token.as_bytes(),
            s.browser.as_bytes(),
            s.expires_at.as_millis()
        ])
    })
    .map_err(db)?;
    super::outbox::insert(c, &req.mail, s.expires_at, req.now)?;
    let event = crate::store::sign_in_event(req, &view);
    insert_event(c, &event)?;
    event.log();
    Ok(SignInStarted::Sent)
}

pub(super) fn complete_claim(c: &Connection, req: &CompleteClaim) -> Result<Completed, StoreError> {
    let now = req.now.as_millis();
    let Some(reg) = registration(c, &req.registration_id)? else {
        return Ok(Completed::UnknownToken);
    };
    if !reg.token_matches(&req.claim_token) || !reg.of(req.dialect) {
        return Ok(Completed::UnknownToken);
    }
    if reg.claimed() {
        return Ok(Completed::PreviouslyClaimed);
    }
    if reg.expired(req.now) {
        return Ok(Completed::Expired);
    }
    let Some(attempt_id) = reg.attempt.as_deref() else {
        return Ok(Completed::NotGenerated);
    };
    let code: Option<CodeRow> = c
        .prepare_cached(
            "SELECT email, otp_hash, otp_expires_at, otp_wrong FROM claim_attempts
             WHERE id = ?1 AND status = 'open'",
        )
        .and_then(|mut s| {
            s.query_row([attempt_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((email, Some(otp_hash), Some(otp_until), otp_wrong)) = code else {
        return Ok(Completed::NotGenerated);
    };
    if otp_until <= now {
        return Ok(Completed::OtpExpired);
    }
    if reg.locked || otp_wrong >= WRONG_PER_CODE {
        return Ok(Completed::TooManyAttempts);
    }
    if SecretHash::from_slice(&otp_hash) != Some(req.otp) {
        c.prepare_cached("UPDATE claim_attempts SET otp_wrong = otp_wrong + 1 WHERE id = ?1")
            .and_then(|mut s| s.execute([attempt_id]))
            .map_err(db)?;
        let wrong = reg.wrong + 1;
        let lock = wrong >= WRONG_PER_REGISTRATION;
        c.prepare_cached(
            "UPDATE registrations SET wrong_guesses = ?2, locked_at = CASE WHEN ?3 THEN ?4 ELSE locked_at END
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![req.registration_id, wrong, lock, now]))
        .map_err(db)?;
        let failed = AuditEvent::new(EventKind::OtpFailed, req.now, &req.meta)
            .registration(&req.registration_id)
            .with("claim_attempt_id", attempt_id)
            .with("wrong_guesses", wrong);
        insert_event(c, &failed)?;
        failed.log();
        if lock {
            let locked = AuditEvent::new(EventKind::ClaimLocked, req.now, &req.meta)
                .registration(&req.registration_id)
                .with("wrong_guesses", wrong);
            insert_event(c, &locked)?;
            locked.log();
        }
        return Ok(Completed::Invalid);
    }

    // The right code: the mailbox is proven. Match or provision its user.
    let normalized = normalize_email(&email);
    let existing: Option<String> = match &normalized {
        Some(n) => c
            .prepare_cached(USER_BY_VERIFIED_EMAIL)
            .and_then(|mut s| s.query_row([n], |r| r.get(0)))
            .map_err(db)?,
        None => None,
    };
    let keys = super::super::block_keys(None, existing.as_deref(), Some(&email));
    if super::governance::is_blocked(c, &keys)? {
        return Ok(Completed::Blocked);
    }
    if existing.is_none() && !req.jit_provisioning {
        return Ok(Completed::NotProvisioned);
    }
    let user_id = match existing {
        Some(u) => u,
        None => {
            c.prepare_cached(
                "INSERT INTO users (id, email, email_normalized, email_verified, created_by_agent, created_at)
                 VALUES (?1, ?2, ?3, 1, 1, ?4)",
            )
            .and_then(|mut s| s.execute(params![req.new_user_id, email, normalized, now]))
            .map_err(db)?;
            req.new_user_id.clone()
        }
    };
    let status = crate::store::claimed_status(reg.kind, req);
    c.prepare_cached(
        "UPDATE registrations SET status = ?4, user_id = ?2, expires_at = NULL, updated_at = ?3
         WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![req.registration_id, user_id, now, status.as_str()]))
    .map_err(db)?;
    c.prepare_cached(
        "UPDATE claim_attempts SET status = 'completed', otp_hash = NULL WHERE id = ?1",
    )
    .and_then(|mut s| s.execute([attempt_id]))
    .map_err(db)?;

    let scopes = join_scopes(&req.scopes);
    // The current dialect revokes what the pre-claim assertions yielded.
    let revoke = req.rotate_key || req.refresh.is_some();
    if reg.kind == RegistrationType::Anonymous {
        // Upgrade the key in place (or, rotating, revoke it): either way
        // every replica must drop what it cached.
        let changed: Vec<(Vec<u8>, String)> = if revoke {
            let mut s = c
                .prepare_cached(
                    "UPDATE credentials SET revoked_at = ?2
                     WHERE registration_id = ?1 AND revoked_at IS NULL RETURNING token_hash, id",
                )
                .map_err(db)?;
            let rows = s
                .query_map(params![req.registration_id, now], hash_and_id)
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        } else {
            let mut s = c
                .prepare_cached(
                    "UPDATE credentials SET scopes = ?2, user_id = ?3
                     WHERE registration_id = ?1 AND revoked_at IS NULL RETURNING token_hash, id",
                )
                .map_err(db)?;
            let rows = s
                .query_map(params![req.registration_id, scopes, user_id], hash_and_id)
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)?
        };
        for (_, id) in &changed {
            if revoke {
                let e = crate::store::revoked_at_claim(req, id);
                insert_event(c, &e)?;
            }
        }
        log_invalidations(c, changed.into_iter().map(|(h, _)| h).collect(), req.now)?;
    }
    let issued = match reg.kind {
        _ if req.refresh.is_some() => None,
        RegistrationType::EmailVerification => Some(
            reg.requested
                .as_deref()
                .and_then(CredentialType::parse)
                .unwrap_or(CredentialType::ApiKey),
        ),
        _ if req.rotate_key => Some(CredentialType::ApiKey),
        _ => None,
    };
    if let Some(kind) = issued {
        let cred = &req.credential;
        let source = if reg.kind == RegistrationType::Anonymous {
            "anonymous"
        } else {
            "email"
        };
        let (hash, expires) = match kind {
            CredentialType::ApiKey => (cred.api_key, None),
            CredentialType::AccessToken => (
                cred.access_token,
                Some(cred.access_token_expires_at.as_millis()),
            ),
        };
        c.prepare_cached(
            "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut s| {
            s.execute(params![
                cred.id,
                hash.as_bytes(),
                req.registration_id,
                user_id,
                kind.as_str(),
                source,
                scopes,
                now,
                expires,
            ])
        })
        .map_err(db)?;
        let e = AuditEvent::new(EventKind::CredentialIssued, req.now, &req.meta)
            .registration(&req.registration_id)
            .user(&user_id)
            .with("credential_id", cred.id.as_str())
            .with("credential_type", kind.as_str())
            .with("source", source)
            .with("scopes", req.scopes.clone());
        insert_event(c, &e)?;
    }
    let confirmed = AuditEvent::new(EventKind::ClaimConfirmed, req.now, &req.meta)
        .registration(&req.registration_id)
        .user(&user_id)
        .with("claimed_by_user_id", user_id.as_str())
        .with("claim_attempt_id", attempt_id);
    insert_event(c, &confirmed)?;
    confirmed.log();
    if let Some(refresh) = &req.refresh {
        if let Some((iss, sub)) = &reg.subject {
            // The step-up's subject joins the user it was confirmed for.
            c.prepare_cached(
                "INSERT INTO delegations (iss, sub, user_id, registration_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (iss, sub) DO UPDATE SET user_id = excluded.user_id,
                     registration_id = excluded.registration_id, updated_at = excluded.updated_at,
                     revoked_at = NULL",
            )
            .and_then(|mut s| s.execute(params![iss, sub, user_id, req.registration_id, now]))
            .map_err(db)?;
            insert_event(c, &crate::store::linked_at_claim(req, &user_id, iss, sub))?;
        }
        c.prepare_cached(
            "INSERT INTO refresh_families (id, registration_id, created_at, expires_at, purge_after)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| {
            s.execute(params![
                refresh.family_id,
                req.registration_id,
                now,
                refresh.expires_at.as_millis(),
                refresh.purge_after(),
            ])
        })
        .map_err(db)?;
        insert_refresh(c, refresh, req.now)?;
    }
    Ok(Completed::Claimed {
        registration_type: reg.kind,
        user_id,
        issued,
        email,
        status,
    })
}

/// A refresh token of an existing family.
pub(super) fn insert_refresh(
    c: &Connection,
    t: &crate::store::NewRefreshToken,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO refresh_tokens (id, token_hash, family_id, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.id,
            t.hash.as_bytes(),
            t.family_id,
            now.as_millis(),
            t.expires_at.as_millis()
        ])
    })
    .map_err(db)?;
    Ok(())
}

fn hash_and_id(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Vec<u8>, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

pub(super) fn secret_key(c: &Connection) -> Result<Vec<u8>, StoreError> {
    let mut fresh = [0u8; 32];
    crate::token::fill_random(&mut fresh);
    c.prepare_cached(
        "INSERT INTO settings (name, value) VALUES ('otp_key', ?1) ON CONFLICT (name) DO NOTHING",
    )
    .and_then(|mut s| s.execute([&fresh[..]]))
    .map_err(db)?;
    c.prepare_cached("SELECT value FROM settings WHERE name = 'otp_key'")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)
}
