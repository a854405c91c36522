//! authmd's signing keys on SQLite (see `service_keys.rs`). The single
//! writer serializes the first-key check and the rotation.

use rusqlite::{Connection, params};

use super::super::SigningKeyRow;
use super::{StoreError, db, insert_event};
use crate::audit::AuditEvent;
use crate::time::Timestamp;

pub(super) fn published(c: &Connection, now: Timestamp) -> Result<Vec<SigningKeyRow>, StoreError> {
    let mut s = c
        .prepare_cached(
            "SELECT kid, alg, public_jwk, private_key, created_at, signs_from, published_until
             FROM signing_keys WHERE published_until IS NULL OR published_until > ?1
             ORDER BY signs_from DESC, created_at DESC",
        )
        .map_err(db)?;
    let rows = s
        .query_map([now.as_millis()], |r| {
            Ok(SigningKeyRow {
                kid: r.get(0)?,
                alg: r.get(1)?,
                public_jwk: r.get(2)?,
                private_key: r.get(3)?,
                created_at: Timestamp::from_millis(r.get(4)?),
                signs_from: Timestamp::from_millis(r.get(5)?),
                published_until: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
            })
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

fn insert(c: &Connection, k: &SigningKeyRow) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, signs_from, published_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            k.kid,
            k.alg,
            k.public_jwk,
            k.private_key,
            k.created_at.as_millis(),
            k.signs_from.as_millis(),
            k.published_until.map(Timestamp::as_millis),
        ])
    })
    .map_err(db)?;
    Ok(())
}

pub(super) fn add_first(c: &Connection, k: &SigningKeyRow) -> Result<bool, StoreError> {
    let current: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM signing_keys WHERE published_until IS NULL",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if current > 0 {
        return Ok(false);
    }
    insert(c, k)?;
    Ok(true)
}

pub(super) fn rotate(
    c: &Connection,
    k: &SigningKeyRow,
    retire_until: Timestamp,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE signing_keys SET published_until = ?1 WHERE published_until IS NULL",
        [retire_until.as_millis()],
    )
    .map_err(db)?;
    insert(c, k)?;
    insert_event(c, event)
}

pub(super) fn purge(c: &Connection, now: Timestamp) -> Result<usize, StoreError> {
    c.execute(
        "DELETE FROM signing_keys WHERE published_until <= ?1",
        [now.as_millis()],
    )
    .map_err(db)
}
