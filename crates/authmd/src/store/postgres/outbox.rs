//! The mail outbox on PostgreSQL (see migration 0009). Replicas take due
//! messages with `FOR UPDATE SKIP LOCKED` and move them forward by a lease
//! in the same statement: two replicas never take the same message, and a
//! replica that dies mid-delivery leaves it to be taken again when the
//! lease ends.

use deadpool_postgres::Transaction;

use super::{PostgresStore, exec, pg};
use crate::mail::Email;
use crate::store::{MailOutcome, MailStatus, OutboxMail, StoreError};
use crate::time::Timestamp;
use crate::token::new_id;

/// Inserts a message in the caller's transaction (with its claim attempt).
pub(super) async fn insert(
    tx: &Transaction<'_>,
    email: &Email,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, status,
                                  next_attempt_at, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $6)",
        &[
            &new_id("mal_"),
            &email.to,
            &email.subject,
            &email.text,
            &email.html,
            &now.as_millis(),
            &expires_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn take(
    store: &PostgresStore,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<OutboxMail>, StoreError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "UPDATE mail_outbox SET next_attempt_at = $2, attempts = attempts + 1
             WHERE id IN (SELECT id FROM mail_outbox
                          WHERE status = 'pending' AND next_attempt_at <= $1
                          ORDER BY next_attempt_at LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING id, recipient, subject, body_text, body_html, attempts,
                       created_at, expires_at",
            &[
                &now.as_millis(),
                &lease_until.as_millis(),
                &i64::from(limit),
            ],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|r| {
            Ok(OutboxMail {
                id: r.try_get(0).map_err(pg)?,
                email: Email {
                    to: r.try_get(1).map_err(pg)?,
                    subject: r.try_get(2).map_err(pg)?,
                    text: r
                        .try_get::<_, Option<String>>(3)
                        .map_err(pg)?
                        .unwrap_or_default(),
                    html: r
                        .try_get::<_, Option<String>>(4)
                        .map_err(pg)?
                        .unwrap_or_default(),
                },
                attempts: u32::try_from(r.try_get::<_, i64>(5).map_err(pg)?).unwrap_or(u32::MAX),
                created_at: Timestamp::from_millis(r.try_get(6).map_err(pg)?),
                expires_at: Timestamp::from_millis(r.try_get(7).map_err(pg)?),
            })
        })
        .collect()
}

pub(super) async fn done(
    store: &PostgresStore,
    id: &str,
    now: Timestamp,
    outcome: MailOutcome,
) -> Result<(), StoreError> {
    let (sql, error, at) = match &outcome {
        MailOutcome::Sent => (
            "UPDATE mail_outbox SET status = 'sent', body_text = NULL, body_html = NULL,
                    done_at = $2, last_error = $3
             WHERE id = $1 AND status = 'pending'",
            None,
            now,
        ),
        MailOutcome::Retry { at, error } => (
            "UPDATE mail_outbox SET next_attempt_at = $2, last_error = $3
             WHERE id = $1 AND status = 'pending'",
            Some(error.as_str()),
            *at,
        ),
        MailOutcome::Failed { error } => (
            "UPDATE mail_outbox SET status = 'failed', body_text = NULL, body_html = NULL,
                    done_at = $2, last_error = $3
             WHERE id = $1 AND status = 'pending'",
            Some(error.as_str()),
            now,
        ),
    };
    store
        .client()
        .await?
        .execute(sql, &[&id, &at.as_millis(), &error])
        .await
        .map_err(pg)?;
    Ok(())
}

pub(super) async fn purge(
    store: &PostgresStore,
    now: Timestamp,
    done_before: Timestamp,
) -> Result<u64, StoreError> {
    let client = store.client().await?;
    let expired = client
        .execute(
            "UPDATE mail_outbox SET status = 'failed', body_text = NULL, body_html = NULL,
                    done_at = $1, last_error = 'the link expired before delivery'
             WHERE status = 'pending' AND expires_at <= $1",
            &[&now.as_millis()],
        )
        .await
        .map_err(pg)?;
    let deleted = client
        .execute(
            "DELETE FROM mail_outbox WHERE status <> 'pending' AND done_at < $1",
            &[&done_before.as_millis()],
        )
        .await
        .map_err(pg)?;
    Ok(expired + deleted)
}

pub(super) async fn status(store: &PostgresStore) -> Result<MailStatus, StoreError> {
    let row = store
        .client()
        .await?
        .query_one(
            "SELECT count(*), min(created_at) FROM mail_outbox WHERE status = 'pending'",
            &[],
        )
        .await
        .map_err(pg)?;
    let pending: i64 = row.try_get(0).map_err(pg)?;
    let oldest: Option<i64> = row.try_get(1).map_err(pg)?;
    Ok(MailStatus {
        pending: u64::try_from(pending).unwrap_or(0),
        oldest: oldest.map(Timestamp::from_millis),
    })
}
