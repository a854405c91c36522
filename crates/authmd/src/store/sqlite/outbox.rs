//! The mail outbox on SQLite (see migration 0009). The single writer makes
//! taking a batch atomic: no other process takes the same messages.

use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, db};
use crate::mail::Email;
use crate::store::{MailOutcome, MailStatus, OutboxMail, StoreError};
use crate::time::Timestamp;
use crate::token::new_id;

/// Inserts a message in the caller's transaction (with its claim attempt).
pub(super) fn insert(
    c: &Connection,
    email: &Email,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO mail_outbox (id, recipient, subject, body_text, body_html, status,
                                  next_attempt_at, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            new_id("mal_"),
            email.to,
            email.subject,
            email.text,
            email.html,
            now.as_millis(),
            expires_at.as_millis()
        ])
    })
    .map(|_| ())
    .map_err(db)
}

pub(super) async fn take(
    store: &SqliteStore,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<OutboxMail>, StoreError> {
    store
        .write(move |c| {
            let mut s = c
                .prepare_cached(
                    "UPDATE mail_outbox SET next_attempt_at = ?2, attempts = attempts + 1
                     WHERE id IN (SELECT id FROM mail_outbox
                                  WHERE status = 'pending' AND next_attempt_at <= ?1
                                  ORDER BY next_attempt_at LIMIT ?3)
                     RETURNING id, recipient, subject, body_text, body_html, attempts,
                               created_at, expires_at",
                )
                .map_err(db)?;
            let rows = s
                .query_map(
                    params![now.as_millis(), lease_until.as_millis(), limit],
                    |r| {
                        Ok(OutboxMail {
                            id: r.get(0)?,
                            email: Email {
                                to: r.get(1)?,
                                subject: r.get(2)?,
                                text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                                html: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                            },
                            attempts: r.get(5)?,
                            created_at: Timestamp::from_millis(r.get(6)?),
                            expires_at: Timestamp::from_millis(r.get(7)?),
                        })
                    },
                )
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
}

pub(super) async fn done(
    store: &SqliteStore,
    id: String,
    now: Timestamp,
    outcome: MailOutcome,
) -> Result<(), StoreError> {
    store
        .write(move |c| {
            let (sql, error, at) = match &outcome {
                MailOutcome::Sent => (
                    "UPDATE mail_outbox SET status = 'sent', body_text = NULL, body_html = NULL,
                            done_at = ?2, last_error = ?3
                     WHERE id = ?1 AND status = 'pending'",
                    None,
                    now,
                ),
                MailOutcome::Retry { at, error } => (
                    "UPDATE mail_outbox SET next_attempt_at = ?2, last_error = ?3
                     WHERE id = ?1 AND status = 'pending'",
                    Some(error.as_str()),
                    *at,
                ),
                MailOutcome::Failed { error } => (
                    "UPDATE mail_outbox SET status = 'failed', body_text = NULL, body_html = NULL,
                            done_at = ?2, last_error = ?3
                     WHERE id = ?1 AND status = 'pending'",
                    Some(error.as_str()),
                    now,
                ),
            };
            c.prepare_cached(sql)
                .and_then(|mut s| s.execute(params![id, at.as_millis(), error]))
                .map(|_| ())
                .map_err(db)
        })
        .await
}

pub(super) async fn purge(
    store: &SqliteStore,
    now: Timestamp,
    done_before: Timestamp,
) -> Result<u64, StoreError> {
    store
        .write(move |c| {
            let expired = c
                .prepare_cached(
                    "UPDATE mail_outbox SET status = 'failed', body_text = NULL, body_html = NULL,
                            done_at = ?1, last_error = 'the link expired before delivery'
                     WHERE status = 'pending' AND expires_at <= ?1",
                )
                .and_then(|mut s| s.execute(params![now.as_millis()]))
                .map_err(db)?;
            let deleted = c
                .prepare_cached(
                    "DELETE FROM mail_outbox WHERE status <> 'pending' AND done_at < ?1",
                )
                .and_then(|mut s| s.execute(params![done_before.as_millis()]))
                .map_err(db)?;
            Ok((expired + deleted) as u64)
        })
        .await
}

pub(super) async fn status(store: &SqliteStore) -> Result<MailStatus, StoreError> {
    store
        .read(|c| {
            let (pending, oldest): (i64, Option<i64>) = c
                .prepare_cached(
                    "SELECT count(*), min(created_at) FROM mail_outbox WHERE status = 'pending'",
                )
                .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
                .optional()
                .map_err(db)?
                .unwrap_or((0, None));
            Ok(MailStatus {
                pending: u64::try_from(pending).unwrap_or(0),
                oldest: oldest.map(Timestamp::from_millis),
            })
        })
        .await
}
