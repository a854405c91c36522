//! The current dialect's operations on PostgreSQL (`store/current.rs`).

use deadpool_postgres::Transaction;

use super::claims::insert_attempt;
use super::{admit, exec, insert_event, pg};
use crate::audit::AuditEvent;
use crate::credential::CredentialSource;
use crate::rate_limit::RateLimit;
use crate::store::current::{AssertionExchange, Created, Exchanged, NewIdentityRegistration};
use crate::store::{RefreshRotation, Rotated, StoreError, join_scopes, parse_enum};
use crate::token::SecretHash;
use crate::vocab::{RegistrationStatus, RegistrationType};

pub(super) async fn create_identity_registration(
    tx: &Transaction<'_>,
    reg: &NewIdentityRegistration,
    limits: &[RateLimit],
) -> Result<Created, StoreError> {
    if let Err(refused) = admit(tx, limits, reg.created_at).await? {
        return Ok(Err(refused));
    }
    let (iss, sub) = reg.subject.clone().unzip();
    exec(
        tx,
        "INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent,
                                    claim_token_hash, email, current_attempt_id, iss, sub, dialect)
         VALUES ($1, $2, $3, $4, $4, $5, TRUE, $6, $7, $8, $9, $10, 'current')",
        &[
            &reg.registration_id,
            &reg.registration_type.as_str(),
            &reg.status.as_str(),
            &reg.created_at.as_millis(),
            &reg.expires_at.as_millis(),
            &reg.claim_token.as_bytes(),
            &reg.email,
            &reg.attempt.as_ref().map(|a| a.id.as_str()),
            &iss,
            &sub,
        ],
    )
    .await?;
    if let (Some(attempt), Some(email)) = (&reg.attempt, &reg.email) {
        insert_attempt(tx, &reg.registration_id, email, attempt, reg.created_at).await?;
    }
    for e in &reg.events {
        insert_event(tx, e).await?;
    }
    Ok(Ok(()))
}

pub(super) async fn exchange_assertion(
    tx: &Transaction<'_>,
    x: &AssertionExchange,
) -> Result<Exchanged, StoreError> {
    let now = x.now.as_millis();
    // FOR SHARE: a revocation or a claim (FOR UPDATE) and this issuance
    // take turns; whoever is second sees the other.
    let stmt = tx
        .prepare_cached(
            "SELECT type, status, expires_at, user_id, iss, sub FROM registrations
             WHERE id = $1 FOR SHARE",
        )
        .await
        .map_err(pg)?;
    let Some(row) = tx
        .query_opt(&stmt, &[&x.registration_id])
        .await
        .map_err(pg)?
    else {
        return Ok(Exchanged::NotLive);
    };
    let kind: String = row.get(0);
    let status: String = row.get(1);
    let expires_at: Option<i64> = row.get(2);
    let user_id: Option<String> = row.get(3);
    let iss: Option<String> = row.get(4);
    let sub: Option<String> = row.get(5);
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
        // FOR SHARE: a reuse ending the family (FOR UPDATE) and this
        // issuance take turns.
        let stmt = tx
            .prepare_cached(
                "SELECT revoked_at IS NULL FROM refresh_families
                 WHERE id = $1 AND registration_id = $2 FOR SHARE",
            )
            .await
            .map_err(pg)?;
        let live: Option<bool> = tx
            .query_opt(&stmt, &[family, &x.registration_id])
            .await
            .map_err(pg)?
            .map(|r| r.get(0));
        if live != Some(true) {
            return Ok(Exchanged::NotLive);
        }
    }
    if let Err(refused) = admit(tx, &x.limits, x.now).await? {
        return Ok(Exchanged::Limited(refused));
    }
    exec(
        tx,
        "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes,
                                  issued_at, expires_at, iss, sub)
         VALUES ($1, $2, $3, $4, 'access_token', $5, $6, $7, $8, $9, $10)",
        &[
            &x.credential_id,
            &x.credential.as_bytes(),
            &x.registration_id,
            &user_id,
            &CredentialSource::of(kind).as_str(),
            &join_scopes(&x.scopes),
            &now,
            &x.expires_at.as_millis(),
            &iss,
            &sub,
        ],
    )
    .await?;
    insert_event(tx, &x.event(user_id.as_deref())).await?;
    Ok(Exchanged::Issued {
        registration_type: kind,
        user_id,
    })
}

/// The live path of a rotation, as one statement (atomic on its own, so
/// it needs no transaction around it: one round trip): checks and spends
/// the token, appends its successor, extends the family, and records the
/// two events. `None` when the token did not rotate (see [`refused`]).
/// Two rotations of one token serialize on its row; the second finds it
/// spent.
pub(super) async fn rotate_refresh(
    client: &deadpool_postgres::Client,
    r: &RefreshRotation,
) -> Result<Option<Rotated>, StoreError> {
    let next = &r.next;
    // The family and registration are known only to the statement: the
    // events are made without them, and it fills them in.
    let events = r.events("", "");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let data: Vec<String> = events.iter().map(AuditEvent::data_json).collect();
    let stmt = client.prepare_cached(ROTATE).await.map_err(pg)?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &r.id,
                &r.presented.as_bytes(),
                &r.now.as_millis(),
                &next.id,
                &next.hash.as_bytes(),
                &next.expires_at.as_millis(),
                &kinds,
                &data,
                &r.meta.ip_text(),
                &r.meta.user_agent,
                &next.purge_after(),
            ],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let (registration_id, status, email, verified, family_id): (
        String,
        String,
        Option<String>,
        Option<bool>,
        String,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let status = parse_enum("registration status", &status, RegistrationStatus::parse)?;
    Ok(Some(Rotated::Rotated {
        registration_id,
        status,
        email: email.filter(|_| verified == Some(true)),
        family_id,
    }))
}

/// Spends a live token of a live family of a live registration, appends
/// its successor ($4, $5, expiring at $6), extends the family to it, and
/// records the events ($7 kinds, $8 data, $9 ip, $10 user agent; an
/// event's `family_id`, where it has one, is the family's; the family's
/// `purge_after` moves to $11 only when the new token outlives it,
/// migration 0014, so the update is otherwise one PostgreSQL can make
/// without touching an index); returns what the new assertion names.
const ROTATE: &str = "WITH spent AS (
       UPDATE refresh_tokens t SET spent_at = $3
       FROM refresh_families f JOIN registrations r ON r.id = f.registration_id
            LEFT JOIN users u ON u.id = r.user_id
       WHERE t.id = $1 AND t.token_hash = $2 AND t.spent_at IS NULL AND t.expires_at > $3
         AND f.id = t.family_id AND f.revoked_at IS NULL AND r.status IN ('claimed', 'active')
       RETURNING t.family_id, f.registration_id, r.status, u.email, u.email_verified),
     extended AS (
       UPDATE refresh_families f SET expires_at = $6, tokens = f.tokens + 1,
              purge_after = CASE WHEN f.purge_after < $6 THEN $11 ELSE f.purge_after END
       FROM spent WHERE f.id = spent.family_id),
     appended AS (
       INSERT INTO refresh_tokens (id, token_hash, family_id, issued_at, expires_at)
       SELECT $4, $5, family_id, $3, $6 FROM spent),
     audited AS (
       INSERT INTO audit_events (at, event, registration_id, ip, user_agent, data)
       SELECT $3, e.kind, s.registration_id, $9, $10,
              CASE WHEN e.data::jsonb ? 'family_id'
                   THEN e.data::jsonb || jsonb_build_object('family_id', s.family_id)
                   ELSE e.data::jsonb END
       FROM spent s, UNNEST($7::text[], $8::text[]) WITH ORDINALITY AS e(kind, data, n)
       ORDER BY e.n)
     SELECT registration_id, status, email, email_verified, family_id FROM spent";

/// Why a token did not rotate: a spent one presented again ends its
/// family (RFC 9700 §4.14.2; one of two holders, and which cannot be
/// told); anything else is invalid, and nothing is written.
pub(super) async fn refused(
    tx: &Transaction<'_>,
    r: &RefreshRotation,
) -> Result<Rotated, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT t.token_hash, t.family_id, f.registration_id, t.spent_at IS NOT NULL,
                    f.revoked_at IS NOT NULL, f.tokens
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
             WHERE t.id = $1 FOR UPDATE OF f",
        )
        .await
        .map_err(pg)?;
    let Some(row) = tx.query_opt(&stmt, &[&r.id]).await.map_err(pg)? else {
        return Ok(Rotated::Invalid);
    };
    let (hash, family, registration_id, spent, revoked, tokens): (
        Vec<u8>,
        String,
        String,
        bool,
        bool,
        i64,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
    );
    if SecretHash::from_slice(&hash) != Some(r.presented) || revoked || !spent {
        return Ok(Rotated::Invalid);
    }
    exec(
        tx,
        "UPDATE refresh_families SET revoked_at = $2 WHERE id = $1",
        &[&family, &r.now.as_millis()],
    )
    .await?;
    let e = r.reused_event(
        &registration_id,
        &family,
        u64::try_from(tokens).unwrap_or(0),
    );
    insert_event(tx, &e).await?;
    Ok(Rotated::Reused { registration_id })
}
