//! authmd's signing keys on PostgreSQL (see `service_keys.rs`). The
//! first-key check and the rotation take one advisory lock, so replicas
//! starting or rotating together leave exactly one current key.

use deadpool_postgres::Transaction;

use super::super::SigningKeyRow;
use super::{StoreError, exec, insert_event, pg};
use crate::audit::AuditEvent;
use crate::time::Timestamp;

/// Advisory lock key (arbitrary, fixed) of the signing-key table.
const SIGNING_KEY_LOCK: i64 = 0x6175_7468_6d64_0003;

pub(super) async fn published(
    client: &deadpool_postgres::Object,
    now: Timestamp,
) -> Result<Vec<SigningKeyRow>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid, alg, public_jwk, private_key, created_at, signs_from, published_until
             FROM signing_keys WHERE published_until IS NULL OR published_until > $1
             ORDER BY signs_from DESC, created_at DESC",
        )
        .await
        .map_err(pg)?;
    let rows = client.query(&stmt, &[&now.as_millis()]).await.map_err(pg)?;
    rows.iter()
        .map(|r| {
            Ok(SigningKeyRow {
                kid: r.try_get(0).map_err(pg)?,
                alg: r.try_get(1).map_err(pg)?,
                public_jwk: r.try_get(2).map_err(pg)?,
                private_key: r.try_get(3).map_err(pg)?,
                created_at: Timestamp::from_millis(r.try_get(4).map_err(pg)?),
                signs_from: Timestamp::from_millis(r.try_get(5).map_err(pg)?),
                published_until: r
                    .try_get::<_, Option<i64>>(6)
                    .map_err(pg)?
                    .map(Timestamp::from_millis),
            })
        })
        .collect()
}

async fn lock(tx: &Transaction<'_>) -> Result<(), StoreError> {
    exec(tx, "SELECT pg_advisory_xact_lock($1)", &[&SIGNING_KEY_LOCK]).await?;
    Ok(())
}

async fn insert(tx: &Transaction<'_>, k: &SigningKeyRow) -> Result<(), StoreError> {
    exec(
        tx,
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, signs_from, published_until)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &k.kid,
            &k.alg,
            &k.public_jwk,
            &k.private_key,
            &k.created_at.as_millis(),
            &k.signs_from.as_millis(),
            &k.published_until.map(Timestamp::as_millis),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn add_first(tx: &Transaction<'_>, k: &SigningKeyRow) -> Result<bool, StoreError> {
    lock(tx).await?;
    let current: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM signing_keys WHERE published_until IS NULL",
            &[],
        )
        .await
        .map_err(pg)?
        .get(0);
    if current > 0 {
        return Ok(false);
    }
    insert(tx, k).await?;
    Ok(true)
}

pub(super) async fn rotate(
    tx: &Transaction<'_>,
    k: &SigningKeyRow,
    retire_until: Timestamp,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    lock(tx).await?;
    exec(
        tx,
        "UPDATE signing_keys SET published_until = $1 WHERE published_until IS NULL",
        &[&retire_until.as_millis()],
    )
    .await?;
    insert(tx, k).await?;
    insert_event(tx, event).await
}
