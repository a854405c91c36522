//! The current dialect's operations on SQLite (`store/current.rs`).

use rusqlite::{Connection, OptionalExtension, params};

use super::claims::insert_attempt;
use super::{admit, db, insert_event};
use crate::credential::CredentialSource;
use crate::rate_limit::RateLimit;
use crate::store::current::{AssertionExchange, Created, Exchanged, NewIdentityRegistration};
use crate::store::{RefreshRotation, Rotated, StoreError, join_scopes, parse_enum};
use crate::token::SecretHash;
use crate::vocab::{RegistrationStatus, RegistrationType};

pub(super) fn create_identity_registration(
    c: &Connection,
    reg: &NewIdentityRegistration,
    limits: &[RateLimit],
) -> Result<Created, StoreError> {
    if let Err(refused) = admit(c, limits, reg.created_at)? {
        return Ok(Err(refused));
    }
    let (iss, sub) = reg.subject.clone().unzip();
    c.prepare_cached(
        "INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent,
                                    claim_token_hash, email, current_attempt_id, iss, sub, dialect)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, 1, ?6, ?7, ?8, ?9, ?10, 'current')",
    )
    .and_then(|mut s| {
        s.execute(params![
            reg.registration_id,
            reg.registration_type.as_str(),
            reg.status.as_str(),
            reg.created_at.as_millis(),
            reg.expires_at.as_millis(),
            reg.claim_token.as_bytes(),
            reg.email,
            reg.attempt.as_ref().map(|a| a.id.as_str()),
            iss,
            sub,
        ])
    })
    .map_err(db)?;
    if let (Some(attempt), Some(email)) = (&reg.attempt, &reg.email) {
        insert_attempt(c, &reg.registration_id, email, attempt, reg.created_at)?;
    }
    for e in &reg.events {
        insert_event(c, e)?;
    }
    Ok(Ok(()))
}

/// type, status, expires_at, user_id, iss, sub
type RegistrationRow = (
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) fn exchange_assertion(
    c: &Connection,
    x: &AssertionExchange,
) -> Result<Exchanged, StoreError> {
    let now = x.now.as_millis();
    let row: Option<RegistrationRow> = c
        .prepare_cached(
            "SELECT type, status, expires_at, user_id, iss, sub FROM registrations WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&x.registration_id], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((kind, status, expires_at, user_id, iss, sub)) = row else {
        return Ok(Exchanged::NotLive);
    };
    let status = parse_enum("registration status", &status, RegistrationStatus::parse)?;
    let kind = parse_enum("registration type", &kind, RegistrationType::parse)?;
    let deadline_passed = matches!(
        status,
        RegistrationStatus::Unclaimed | RegistrationStatus::PendingClaim
    ) && expires_at.is_none_or(|e| e <= now);
    if !x.exchangeable_in(status) || deadline_passed {
        return Ok(Exchanged::NotLive);
    }
    if let Some(family) = &x.family {
        let live: Option<bool> = c
            .prepare_cached(
                "SELECT revoked_at IS NULL FROM refresh_families
                 WHERE id = ?1 AND registration_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row([family, &x.registration_id], |r| r.get(0))
                    .optional()
            })
            .map_err(db)?;
        if live != Some(true) {
            return Ok(Exchanged::NotLive);
        }
    }
    if let Err(refused) = admit(c, &x.limits, x.now)? {
        return Ok(Exchanged::Limited(refused));
    }
    c.prepare_cached(
        "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes,
                                  issued_at, expires_at, iss, sub)
         VALUES (?1, ?2, ?3, ?4, 'access_token', ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .and_then(|mut s| {
        s.execute(params![
            x.credential_id,
            x.credential.as_bytes(),
            x.registration_id,
            user_id,
            CredentialSource::of(kind).as_str(),
            join_scopes(&x.scopes),
            now,
            x.expires_at.as_millis(),
            iss,
            sub,
        ])
    })
    .map_err(db)?;
    insert_event(c, &x.event(user_id.as_deref()))?;
    Ok(Exchanged::Issued {
        registration_type: kind,
        user_id,
    })
}

/// A presented refresh token, its family, and what the next assertion
/// names: one lookup by the token's id decides every outcome (the writer
/// runs one job at a time, so nothing changes between it and the writes).
pub(super) const PRESENTED_REFRESH: &str =
    "SELECT t.token_hash, t.spent_at IS NOT NULL, t.expires_at, t.family_id,
            f.revoked_at IS NOT NULL, f.registration_id, r.status, u.email, u.email_verified,
            f.tokens, f.purge_after
     FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
     JOIN registrations r ON r.id = f.registration_id
     LEFT JOIN users u ON u.id = r.user_id WHERE t.id = ?1";

struct Presented {
    hash: Vec<u8>,
    spent: bool,
    expires_at: i64,
    family: String,
    revoked: bool,
    registration_id: String,
    status: String,
    email: Option<String>,
    verified: Option<bool>,
    /// How many tokens the family has issued.
    tokens: i64,
    purge_after: i64,
}

/// Spends a live token of a live family of a live registration and
/// appends its successor. A spent one presented again ends its family
/// (RFC 9700 §4.14.2; one of two holders, and which cannot be told);
/// anything else is invalid, and nothing is written.
pub(super) fn rotate_refresh(c: &Connection, r: &RefreshRotation) -> Result<Rotated, StoreError> {
    let now = r.now.as_millis();
    let presented = c
        .prepare_cached(PRESENTED_REFRESH)
        .and_then(|mut s| {
            s.query_row([&r.id], |x| {
                Ok(Presented {
                    hash: x.get(0)?,
                    spent: x.get(1)?,
                    expires_at: x.get(2)?,
                    family: x.get(3)?,
                    revoked: x.get(4)?,
                    registration_id: x.get(5)?,
                    status: x.get(6)?,
                    email: x.get(7)?,
                    verified: x.get(8)?,
                    tokens: x.get(9)?,
                    purge_after: x.get(10)?,
                })
            })
            .optional()
        })
        .map_err(db)?;
    let Some(p) = presented else {
        return Ok(Rotated::Invalid);
    };
    if SecretHash::from_slice(&p.hash) != Some(r.presented) || p.revoked {
        return Ok(Rotated::Invalid);
    }
    if p.spent {
        return reused(c, r, p.family, p.registration_id, p.tokens);
    }
    let status = parse_enum("registration status", &p.status, RegistrationStatus::parse)?;
    let live = matches!(
        status,
        RegistrationStatus::Claimed | RegistrationStatus::Active
    );
    if p.expires_at <= now || !live {
        return Ok(Rotated::Invalid);
    }
    c.prepare_cached("UPDATE refresh_tokens SET spent_at = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![r.id, now]))
        .map_err(db)?;
    let next = crate::store::NewRefreshToken {
        family_id: p.family.clone(),
        ..r.next.clone()
    };
    super::claims::insert_refresh(c, &next, r.now)?;
    let expires_at = next.expires_at.as_millis();
    // The purge's index entry moves only when this token outlives it
    // (migration 0014): the statement names `purge_after` only then.
    if p.purge_after >= expires_at {
        c.prepare_cached(
            "UPDATE refresh_families SET expires_at = ?2, tokens = tokens + 1 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![p.family, expires_at]))
    } else {
        c.prepare_cached(
            "UPDATE refresh_families SET expires_at = ?2, tokens = tokens + 1,
                 purge_after = ?3 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![p.family, expires_at, next.purge_after()]))
    }
    .map_err(db)?;
    for e in r.events(&p.registration_id, &p.family) {
        insert_event(c, &e)?;
    }
    Ok(Rotated::Rotated {
        registration_id: p.registration_id,
        status,
        email: p.email.filter(|_| p.verified == Some(true)),
        family_id: p.family,
    })
}

/// A spent token presented again: its family is revoked, and audited.
fn reused(
    c: &Connection,
    r: &RefreshRotation,
    family: String,
    registration_id: String,
    tokens: i64,
) -> Result<Rotated, StoreError> {
    c.prepare_cached("UPDATE refresh_families SET revoked_at = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![family, r.now.as_millis()]))
        .map_err(db)?;
    let e = r.reused_event(
        &registration_id,
        &family,
        u64::try_from(tokens).unwrap_or(0),
    );
    insert_event(c, &e)?;
    e.log();
    Ok(Rotated::Reused { registration_id })
}
