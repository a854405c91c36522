//! The claim ceremony on PostgreSQL (§3.2, §4). Each operation is one
//! transaction that locks the registration row first (`FOR UPDATE`), so
//! concurrent requests on one claim are serialized across replicas; a
//! refusal drops the transaction.

use deadpool_postgres::Transaction;

use super::{admit, exec, insert_event, log_invalidations, pg};
use crate::audit::{AuditEvent, EventKind, RequestMeta};
use crate::credential::CredentialType;
use crate::rate_limit::{RateLimit, RateLimited};
use crate::store::{
    AttemptAction, AttemptProof, AttemptState, AttemptView, ClaimRequest, ClaimStarted,
    CompleteClaim, Completed, NewAttempt, NewEmailRegistration, SignIn, SignInRequest,
    SignInStarted, StoreError, WRONG_PER_CODE, WRONG_PER_REGISTRATION, join_scopes, parse_enum,
};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::users::normalize_email;
use crate::vocab::{Dialect, RegistrationType};

struct Reg {
    kind: RegistrationType,
    status: String,
    expires_at: Option<i64>,
    claim_hash: Option<Vec<u8>>,
    email: Option<String>,
    requested: Option<String>,
    attempt: Option<String>,
    wrong: i32,
    locked: bool,
    dialect: String,
    /// An agent-verified step-up's provider subject.
    subject: Option<(String, String)>,
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

/// The registration, locked for the rest of the transaction.
async fn registration(
    tx: &Transaction<'_>,
    id: &str,
    lock: bool,
) -> Result<Option<Reg>, StoreError> {
    let sql = if lock {
        "SELECT type, status, expires_at, claim_token_hash, email, requested_credential_type,
                current_attempt_id, wrong_guesses, locked_at IS NOT NULL, dialect, iss, sub
         FROM registrations WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT type, status, expires_at, claim_token_hash, email, requested_credential_type,
                current_attempt_id, wrong_guesses, locked_at IS NOT NULL, dialect, iss, sub
         FROM registrations WHERE id = $1"
    };
    let stmt = tx.prepare_cached(sql).await.map_err(pg)?;
    let Some(r) = tx.query_opt(&stmt, &[&id]).await.map_err(pg)? else {
        return Ok(None);
    };
    let kind: String = r.get(0);
    Ok(Some(Reg {
        kind: parse_enum("registration type", &kind, RegistrationType::parse)?,
        status: r.get(1),
        expires_at: r.get(2),
        claim_hash: r.get(3),
        email: r.get(4),
        requested: r.get(5),
        attempt: r.get(6),
        wrong: r.get(7),
        locked: r.get(8),
        dialect: r.get(9),
        subject: match (r.get(10), r.get(11)) {
            (Some(iss), Some(sub)) => Some((iss, sub)),
            _ => None,
        },
    }))
}

pub(super) async fn insert_attempt(
    tx: &Transaction<'_>,
    registration: &str,
    email: &str,
    a: &NewAttempt,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO claim_attempts (id, registration_id, email, link_hash, link_expires_at, status, created_at,
                                     needs_sign_in)
         VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)",
        &[&a.id, &registration, &email, &a.link.as_bytes(), &a.link_expires_at.as_millis(), &now.as_millis(), &a.sign_in],
    )
    .await?;
    if let Some(mail) = &a.mail {
        super::outbox::insert(tx, mail, a.link_expires_at, now).await?;
    }
    Ok(())
}

pub(super) async fn create_email_registration(
    tx: &Transaction<'_>,
    reg: &NewEmailRegistration,
    limits: &[RateLimit],
) -> Result<Result<(), RateLimited>, StoreError> {
    if let Err(refused) = admit(tx, limits, reg.created_at).await? {
        return Ok(Err(refused));
    }
    exec(
        tx,
        "INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent,
                                    claim_token_hash, email, requested_credential_type, current_attempt_id)
         VALUES ($1, 'email-verification', 'pending_claim', $2, $2, $3, TRUE, $4, $5, $6, $7)",
        &[
            &reg.registration_id,
            &reg.created_at.as_millis(),
            &reg.expires_at.as_millis(),
            &reg.claim_token.as_bytes(),
            &reg.email,
            &reg.requested.as_str(),
            &reg.attempt.id,
        ],
    )
    .await?;
    insert_attempt(
        tx,
        &reg.registration_id,
        &reg.email,
        &reg.attempt,
        reg.created_at,
    )
    .await?;
    for e in &reg.events {
        insert_event(tx, e).await?;
    }
    Ok(Ok(()))
}

pub(super) async fn start_claim(
    tx: &Transaction<'_>,
    req: &ClaimRequest,
    limits: &[RateLimit],
) -> Result<ClaimStarted, StoreError> {
    let Some(reg) = registration(tx, &req.registration_id, true).await? else {
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
        let stmt = tx
            .prepare_cached("SELECT email, link_expires_at FROM claim_attempts WHERE id = $1 AND status = 'open'")
            .await
            .map_err(pg)?;
        if let Some(r) = tx.query_opt(&stmt, &[current]).await.map_err(pg)? {
            let (email, until): (String, i64) = (r.get(0), r.get(1));
            if normalize_email(&email) == wanted && until > req.now.as_millis() {
                return Ok(ClaimStarted::InFlight {
                    attempt_id: current.clone(),
                    expires_at: Timestamp::from_millis(until),
                });
            }
        }
    }
    if let Err(refused) = admit(tx, limits, req.now).await? {
        return Ok(ClaimStarted::Limited(refused));
    }
    if let Some(current) = &reg.attempt {
        exec(
            tx,
            "UPDATE claim_attempts SET status = 'superseded', otp_hash = NULL WHERE id = $1 AND status = 'open'",
            &[current],
        )
        .await?;
    }
    insert_attempt(tx, &req.registration_id, &req.email, &req.attempt, req.now).await?;
    exec(
        tx,
        "UPDATE registrations SET status = 'pending_claim', email = $2, current_attempt_id = $3, updated_at = $4
         WHERE id = $1",
        &[&req.registration_id, &req.email, &req.attempt.id, &req.now.as_millis()],
    )
    .await?;
    let event = AuditEvent::new(EventKind::ClaimRequested, req.now, &req.meta)
        .registration(&req.registration_id)
        .with("email", req.email.as_str())
        .with("claim_attempt_id", req.attempt.id.as_str());
    insert_event(tx, &event).await?;
    Ok(ClaimStarted::Started {
        attempt_id: req.attempt.id.clone(),
        expires_at: req.attempt.link_expires_at,
    })
}

pub(super) async fn attempt(
    tx: &Transaction<'_>,
    id: &str,
    now: Timestamp,
    lock: bool,
) -> Result<Option<AttemptView>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT registration_id, email, link_hash, link_expires_at, status,
                    needs_sign_in, sign_in_hash, sign_in_browser, sign_in_expires_at
             FROM claim_attempts WHERE id = $1",
        )
        .await
        .map_err(pg)?;
    let Some(r) = tx.query_opt(&stmt, &[&id]).await.map_err(pg)? else {
        return Ok(None);
    };
    let (registration_id, email, link, link_expires_at, status): (
        String,
        String,
        Vec<u8>,
        i64,
        String,
    ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    let needs_sign_in: bool = r.get(5);
    let sign_in = sign_in(r.get(6), r.get(7), r.get(8));
    let Some(reg) = registration(tx, &registration_id, lock).await? else {
        return Ok(None);
    };
    let link =
        SecretHash::from_slice(&link).ok_or_else(|| StoreError::Corrupt("link hash".into()))?;
    let state = if reg.claimed() || status == "completed" {
        AttemptState::Claimed
    } else if status == "superseded" {
        AttemptState::Superseded
    } else if status == "denied" {
        AttemptState::Denied
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

/// The attempt `proof` admits, if it is open (its registration locked).
async fn open_attempt(
    tx: &Transaction<'_>,
    id: &str,
    proof: &AttemptProof,
    mint: bool,
    now: Timestamp,
) -> Result<Result<AttemptView, AttemptAction>, StoreError> {
    Ok(match attempt(tx, id, now, true).await? {
        Some(view) if view.admits(proof, mint, now) => match view.state {
            AttemptState::Open => Ok(view),
            other => Err(AttemptAction::Refused(other)),
        },
        _ => Err(AttemptAction::Unknown),
    })
}

pub(super) async fn mint_otp(
    tx: &Transaction<'_>,
    id: &str,
    proof: &AttemptProof,
    otp: &SecretHash,
    until: Timestamp,
    now: Timestamp,
    meta: &RequestMeta,
) -> Result<AttemptAction, StoreError> {
    let view = match open_attempt(tx, id, proof, true, now).await? {
        Ok(v) => v,
        Err(refusal) => return Ok(refusal),
    };
    exec(
        tx,
        "UPDATE claim_attempts SET otp_hash = $2, otp_expires_at = $3, otp_wrong = 0 WHERE id = $1",
        &[&id, &otp.as_bytes(), &until.as_millis()],
    )
    .await?;
    let event = AuditEvent::new(EventKind::OtpGenerated, now, meta)
        .registration(&view.registration_id)
        .with("claim_attempt_id", id);
    insert_event(tx, &event).await?;
    Ok(AttemptAction::Done {
        registration_id: view.registration_id,
        until,
    })
}

pub(super) async fn deny_attempt(
    tx: &Transaction<'_>,
    id: &str,
    proof: &AttemptProof,
    now: Timestamp,
    meta: &RequestMeta,
) -> Result<AttemptAction, StoreError> {
    let view = match open_attempt(tx, id, proof, false, now).await? {
        Ok(v) => v,
        Err(refusal) => return Ok(refusal),
    };
    exec(
        tx,
        "UPDATE claim_attempts SET status = 'denied', otp_hash = NULL, sign_in_hash = NULL WHERE id = $1",
        &[&id],
    )
    .await?;
    let event = AuditEvent::new(EventKind::ClaimDenied, now, meta)
        .registration(&view.registration_id)
        .with("claim_attempt_id", id)
        .with("email", view.email.as_str());
    insert_event(tx, &event).await?;
    Ok(AttemptAction::Done {
        registration_id: view.registration_id,
        until: now,
    })
}

pub(super) async fn start_sign_in(
    tx: &Transaction<'_>,
    req: &SignInRequest,
    limits: &[RateLimit],
) -> Result<SignInStarted, StoreError> {
    let proof = AttemptProof::Link(req.link);
    let view = match open_attempt(tx, &req.attempt_id, &proof, false, req.now).await? {
        Ok(v) if v.needs_sign_in => v,
        Ok(_) | Err(AttemptAction::Unknown | AttemptAction::Done { .. }) => {
            return Ok(SignInStarted::Unknown);
        }
        Err(AttemptAction::Refused(state)) => return Ok(SignInStarted::Refused(state)),
    };
    if let Err(refused) = admit(tx, limits, req.now).await? {
        return Ok(SignInStarted::Limited(refused));
    }
    let s = &req.sign_in;
    exec(
        tx,
        "UPDATE claim_attempts SET sign_in_hash = $2, sign_in_browser = $3, sign_in_expires_at = $4
         WHERE id = $1",
        &[
            &req.attempt_id,
            &s.token.as_bytes(),
            &s.browser.as_bytes(),
            &s.expires_at.as_millis(),
        ],
    )
    .await?;
    super::outbox::insert(tx, &req.mail, s.expires_at, req.now).await?;
    insert_event(tx, &crate::store::sign_in_event(req, &view)).await?;
    Ok(SignInStarted::Sent)
}

/// Returns the outcome and whether the transaction must be committed
/// (a counted wrong guess is committed too).
pub(super) async fn complete_claim(
    tx: &Transaction<'_>,
    req: &CompleteClaim,
) -> Result<(Completed, bool), StoreError> {
    let now = req.now.as_millis();
    let Some(reg) = registration(tx, &req.registration_id, true).await? else {
        return Ok((Completed::UnknownToken, false));
    };
    if !reg.token_matches(&req.claim_token) || !reg.of(req.dialect) {
        return Ok((Completed::UnknownToken, false));
    }
    if reg.claimed() {
        return Ok((Completed::PreviouslyClaimed, false));
    }
    if reg.expired(req.now) {
        return Ok((Completed::Expired, false));
    }
    let Some(attempt_id) = reg.attempt.as_deref() else {
        return Ok((Completed::NotGenerated, false));
    };
    let stmt = tx
        .prepare_cached(
            "SELECT email, otp_hash, otp_expires_at, otp_wrong FROM claim_attempts WHERE id = $1 AND status = 'open'",
        )
        .await
        .map_err(pg)?;
    let row = tx.query_opt(&stmt, &[&attempt_id]).await.map_err(pg)?;
    let Some((email, Some(otp_hash), Some(otp_until), otp_wrong)) = row.map(|r| {
        (
            r.get::<_, String>(0),
            r.get::<_, Option<Vec<u8>>>(1),
            r.get::<_, Option<i64>>(2),
            r.get::<_, i32>(3),
        )
    }) else {
        return Ok((Completed::NotGenerated, false));
    };
    if otp_until <= now {
        return Ok((Completed::OtpExpired, false));
    }
    if reg.locked || i64::from(otp_wrong) >= WRONG_PER_CODE {
        return Ok((Completed::TooManyAttempts, false));
    }
    if SecretHash::from_slice(&otp_hash) != Some(req.otp) {
        exec(
            tx,
            "UPDATE claim_attempts SET otp_wrong = otp_wrong + 1 WHERE id = $1",
            &[&attempt_id],
        )
        .await?;
        let wrong = reg.wrong + 1;
        let lock = i64::from(wrong) >= WRONG_PER_REGISTRATION;
        exec(
            tx,
            "UPDATE registrations SET wrong_guesses = $2,
                    locked_at = CASE WHEN $3 THEN $4 ELSE locked_at END
             WHERE id = $1",
            &[&req.registration_id, &wrong, &lock, &now],
        )
        .await?;
        let failed = AuditEvent::new(EventKind::OtpFailed, req.now, &req.meta)
            .registration(&req.registration_id)
            .with("claim_attempt_id", attempt_id)
            .with("wrong_guesses", wrong);
        insert_event(tx, &failed).await?;
        if lock {
            let locked = AuditEvent::new(EventKind::ClaimLocked, req.now, &req.meta)
                .registration(&req.registration_id)
                .with("wrong_guesses", wrong);
            insert_event(tx, &locked).await?;
        }
        return Ok((Completed::Invalid, true));
    }

    let normalized = normalize_email(&email);
    if let Some(n) = &normalized {
        super::lock(tx, &format!("email {n}")).await?;
    }
    let existing = match &normalized {
        Some(n) => {
            let stmt = tx
                .prepare_cached(
                    "SELECT id FROM users WHERE email_normalized = $1 AND email_verified
                     ORDER BY created_at LIMIT 1",
                )
                .await
                .map_err(pg)?;
            tx.query_opt(&stmt, &[n])
                .await
                .map_err(pg)?
                .map(|r| r.get::<_, String>(0))
        }
        None => None,
    };
    let keys = super::super::block_keys(None, existing.as_deref(), Some(&email));
    if super::governance::is_blocked(tx, &keys).await? {
        return Ok((Completed::Blocked, false));
    }
    if existing.is_none() && !req.jit_provisioning {
        return Ok((Completed::NotProvisioned, false));
    }
    let user_id = match existing {
        Some(u) => u,
        None => {
            exec(
                tx,
                "INSERT INTO users (id, email, email_normalized, email_verified, created_by_agent, created_at)
                 VALUES ($1, $2, $3, TRUE, TRUE, $4)",
                &[&req.new_user_id, &email, &normalized, &now],
            )
            .await?;
            req.new_user_id.clone()
        }
    };
    let status = crate::store::claimed_status(reg.kind, req);
    exec(
        tx,
        "UPDATE registrations SET status = $4, user_id = $2, expires_at = NULL, updated_at = $3 WHERE id = $1",
        &[&req.registration_id, &user_id, &now, &status.as_str()],
    )
    .await?;
    exec(
        tx,
        "UPDATE claim_attempts SET status = 'completed', otp_hash = NULL WHERE id = $1",
        &[&attempt_id],
    )
    .await?;

    let scopes = join_scopes(&req.scopes);
    let mut invalidated = Vec::new();
    // The current dialect revokes what the pre-claim assertions yielded.
    let revoke = req.rotate_key || req.refresh.is_some();
    if reg.kind == RegistrationType::Anonymous {
        let rows = if revoke {
            let stmt = tx
                .prepare_cached(
                    "UPDATE credentials SET revoked_at = $2 WHERE registration_id = $1 AND revoked_at IS NULL
                     RETURNING token_hash, id",
                )
                .await
                .map_err(pg)?;
            tx.query(&stmt, &[&req.registration_id, &now])
                .await
                .map_err(pg)?
        } else {
            let stmt = tx
                .prepare_cached(
                    "UPDATE credentials SET scopes = $2, user_id = $3 WHERE registration_id = $1 AND revoked_at IS NULL
                     RETURNING token_hash, id",
                )
                .await
                .map_err(pg)?;
            tx.query(&stmt, &[&req.registration_id, &scopes, &user_id])
                .await
                .map_err(pg)?
        };
        for r in rows {
            let (hash, id): (Vec<u8>, String) = (r.get(0), r.get(1));
            if revoke {
                let e = crate::store::revoked_at_claim(req, &id);
                insert_event(tx, &e).await?;
            }
            invalidated.push(hash);
        }
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
        exec(
            tx,
            "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&cred.id, &hash.as_bytes(), &req.registration_id, &user_id, &kind.as_str(), &source, &scopes, &now, &expires],
        )
        .await?;
        let e = AuditEvent::new(EventKind::CredentialIssued, req.now, &req.meta)
            .registration(&req.registration_id)
            .user(&user_id)
            .with("credential_id", cred.id.as_str())
            .with("credential_type", kind.as_str())
            .with("source", source)
            .with("scopes", req.scopes.clone());
        insert_event(tx, &e).await?;
    }
    let confirmed = AuditEvent::new(EventKind::ClaimConfirmed, req.now, &req.meta)
        .registration(&req.registration_id)
        .user(&user_id)
        .with("claimed_by_user_id", user_id.as_str())
        .with("claim_attempt_id", attempt_id);
    insert_event(tx, &confirmed).await?;
    log_invalidations(tx, invalidated, req.now).await?;
    if let Some(refresh) = &req.refresh {
        if let Some((iss, sub)) = &reg.subject {
            // The step-up's subject joins the user it was confirmed for.
            exec(
                tx,
                "INSERT INTO delegations (iss, sub, user_id, registration_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (iss, sub) DO UPDATE SET user_id = excluded.user_id,
                     registration_id = excluded.registration_id, updated_at = excluded.updated_at,
                     revoked_at = NULL",
                &[iss, sub, &user_id, &req.registration_id, &now],
            )
            .await?;
            let e = crate::store::linked_at_claim(req, &user_id, iss, sub);
            insert_event(tx, &e).await?;
        }
        // A new family, and its first token.
        exec(
            tx,
            "INSERT INTO refresh_families (id, registration_id, created_at, expires_at, purge_after)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &refresh.family_id,
                &req.registration_id,
                &now,
                &refresh.expires_at.as_millis(),
                &refresh.purge_after(),
            ],
        )
        .await?;
        exec(
            tx,
            "INSERT INTO refresh_tokens (id, token_hash, family_id, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &refresh.id,
                &refresh.hash.as_bytes(),
                &refresh.family_id,
                &now,
                &refresh.expires_at.as_millis(),
            ],
        )
        .await?;
    }
    Ok((
        Completed::Claimed {
            registration_type: reg.kind,
            user_id,
            issued,
            email,
            status,
        },
        true,
    ))
}

pub(super) async fn secret_key(tx: &Transaction<'_>) -> Result<Vec<u8>, StoreError> {
    let mut fresh = [0u8; 32];
    crate::token::fill_random(&mut fresh);
    exec(
        tx,
        "INSERT INTO settings (name, value) VALUES ('otp_key', $1) ON CONFLICT (name) DO NOTHING",
        &[&&fresh[..]],
    )
    .await?;
    let stmt = tx
        .prepare_cached("SELECT value FROM settings WHERE name = 'otp_key'")
        .await
        .map_err(pg)?;
    Ok(tx.query_one(&stmt, &[]).await.map_err(pg)?.get(0))
}
