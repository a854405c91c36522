//! Revocation (provider and operator), the operator listings and the audit
//! tail, on PostgreSQL. Bulk revocations are set-based, in chunks, in one
//! transaction.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::types::ToSql;

use super::super::listing::{self, Arg, MAX_PAGE, Query, ReadRow};
use super::super::{
    BLOCKS_QUERY, BlockChange, BlockRecord, OperatorRevocation, RevokeReport, SelfRevocation,
    SelfRevoked, SubjectRevocation, SubjectRevoked, TailCursor,
};
use super::{StoreError, exec, insert_event, lock, log_invalidations, pg};
use crate::audit::{AuditEvent, AuditRecord, EventFilter, EventKind};

/// Registrations revoked per statement.
const CHUNK: usize = 5000;

impl ReadRow for tokio_postgres::Row {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.try_get(i).map_err(pg)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.try_get(i).map_err(pg)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.try_get(i).map_err(pg)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.try_get(i).map_err(pg)
    }
    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        self.try_get(i).map_err(pg)
    }
}

/// Runs a listing query (`sql` rendered from `q`) and maps its rows.
pub(super) async fn rows<T>(
    client: &impl GenericClient,
    sql: &str,
    q: &Query,
    map: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let args: Vec<Box<dyn ToSql + Sync + Send>> = q
        .args
        .iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Arg::Text(s) => Box::new(s.clone()),
                Arg::Int(i) => Box::new(*i),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let found = client.query(sql, &refs).await.map_err(pg)?;
    found.iter().map(map).collect()
}

/// §5 in one transaction. The `jti` is inserted first (a concurrent
/// replay waits on it and then finds the conflict); then the subject's
/// lock, the one registration uses too.
pub(super) async fn revoke_subject(
    tx: &Transaction<'_>,
    r: &SubjectRevocation,
) -> Result<SubjectRevoked, StoreError> {
    let now = r.now.as_millis();
    let inserted = exec(
        tx,
        "INSERT INTO jti_seen (key, expires_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        &[&&r.jti_key[..], &r.jti_until.as_millis()],
    )
    .await?;
    if inserted == 0 {
        return Ok(SubjectRevoked::Replay);
    }
    let mut report = RevokeReport::default();
    let Some(sub) = &r.sub else {
        return Ok(SubjectRevoked::Done(report));
    };
    lock(tx, &format!("subject {} {sub}", r.iss)).await?;
    let stmt = tx
        .prepare_cached(
            "SELECT d.registration_id, d.user_id, r.status FROM delegations d
             JOIN registrations r ON r.id = d.registration_id
             WHERE d.iss = $1 AND d.sub = $2 FOR UPDATE OF r",
        )
        .await
        .map_err(pg)?;
    let Some(row) = tx.query_opt(&stmt, &[&r.iss, sub]).await.map_err(pg)? else {
        return Ok(SubjectRevoked::Done(report));
    };
    let (registration_id, user_id, status): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    exec(
        tx,
        "UPDATE delegations SET revoked_before = GREATEST(COALESCE(revoked_before, 0), $3),
                                updated_at = $4
         WHERE iss = $1 AND sub = $2",
        &[&r.iss, sub, &r.assertions_before.as_millis(), &now],
    )
    .await?;
    if status != "active" {
        return Ok(SubjectRevoked::Done(report));
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE credentials SET revoked_at = $1
             WHERE registration_id = $2 AND revoked_at IS NULL
               AND (assertion_iat IS NULL OR assertion_iat <= $3)
             RETURNING token_hash",
        )
        .await
        .map_err(pg)?;
    let hashes: Vec<Vec<u8>> = tx
        .query(
            &stmt,
            &[&now, &registration_id, &r.assertions_through.as_millis()],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let stmt = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM credentials WHERE registration_id = $1
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2))",
        )
        .await
        .map_err(pg)?;
    let left: bool = tx
        .query_one(&stmt, &[&registration_id, &now])
        .await
        .map_err(pg)?
        .get(0);
    report.credentials = hashes.len() as u64;
    let kind = if left {
        EventKind::CredentialRevoked
    } else {
        exec(
            tx,
            "UPDATE registrations SET status = 'revoked', updated_at = $1 WHERE id = $2",
            &[&now, &registration_id],
        )
        .await?;
        exec(
            tx,
            "UPDATE delegations SET revoked_at = $3 WHERE iss = $1 AND sub = $2",
            &[&r.iss, sub, &now],
        )
        .await?;
        report.registrations = 1;
        EventKind::RegistrationRevoked
    };
    if !left || !hashes.is_empty() {
        let event = r.event(kind, &registration_id, &user_id, sub, report.credentials);
        insert_event(tx, &event).await?;
        event.log();
    }
    log_invalidations(tx, hashes, r.now).await?;
    Ok(SubjectRevoked::Done(report))
}

/// RFC 7009 self-revocation in one transaction. The registration is
/// locked first (`FOR UPDATE OF r`), as operator revocations and the sweep
/// do, so "is anything else live?" cannot race an issuance into it.
pub(super) async fn revoke_credential(
    tx: &Transaction<'_>,
    r: &SelfRevocation,
) -> Result<SelfRevoked, StoreError> {
    let now = r.now.as_millis();
    if r.refresh {
        return revoke_refresh(tx, r).await;
    }
    let stmt = tx
        .prepare_cached(
            "SELECT r.id, r.status, c.user_id, c.type FROM credentials c
             JOIN registrations r ON r.id = c.registration_id
             WHERE c.id = $1 AND c.token_hash = $2 AND c.revoked_at IS NULL
             FOR UPDATE OF r",
        )
        .await
        .map_err(pg)?;
    let Some(row) = tx
        .query_opt(&stmt, &[&r.credential_id, &r.credential.as_bytes()])
        .await
        .map_err(pg)?
    else {
        return Ok(SelfRevoked::Nothing);
    };
    let (registration_id, status, user_id, credential_type): (
        String,
        String,
        Option<String>,
        String,
    ) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let revoked = exec(
        tx,
        "UPDATE credentials SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        &[&now, &r.credential_id],
    )
    .await?;
    if revoked == 0 {
        // Revoked by a transaction that committed while we waited.
        return Ok(SelfRevoked::Nothing);
    }
    let ended = end_if_nothing_live(tx, &registration_id, &status, now).await?;
    let mut events = vec![r.event(
        EventKind::CredentialRevoked,
        &registration_id,
        user_id.as_deref(),
        &credential_type,
    )];
    if ended {
        events.push(r.event(
            EventKind::RegistrationRevoked,
            &registration_id,
            user_id.as_deref(),
            &credential_type,
        ));
    }
    for e in &events {
        insert_event(tx, e).await?;
        e.log();
    }
    log_invalidations(tx, vec![r.credential.as_bytes().to_vec()], r.now).await?;
    Ok(SelfRevoked::Revoked {
        registration_ended: ended,
    })
}

/// A self-revocation's last step: a live registration (its `status`,
/// read under its row lock) with nothing live left is `revoked`. Whether
/// it ended.
async fn end_if_nothing_live(
    tx: &Transaction<'_>,
    registration_id: &str,
    status: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let stmt = tx.prepare_cached(ANY_LIVE_CREDENTIAL).await.map_err(pg)?;
    let left: bool = tx
        .query_one(&stmt, &[&registration_id, &now])
        .await
        .map_err(pg)?
        .get(0);
    let ended = !left && matches!(status, "unclaimed" | "pending_claim" | "claimed" | "active");
    if ended {
        exec(
            tx,
            "UPDATE registrations SET status = 'revoked', updated_at = $1 WHERE id = $2",
            &[&now, &registration_id],
        )
        .await?;
    }
    Ok(ended)
}

/// A live credential or a live refresh token (current dialect).
const ANY_LIVE_CREDENTIAL: &str =
    "SELECT EXISTS (SELECT 1 FROM credentials WHERE registration_id = $1
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2))
     OR EXISTS (SELECT 1 FROM refresh_families WHERE registration_id = $1
         AND revoked_at IS NULL AND expires_at > $2)";

/// A refresh token presented at `/oauth2/revoke`: its family, the
/// registration's access tokens, then the registration if nothing is left.
async fn revoke_refresh(
    tx: &Transaction<'_>,
    r: &SelfRevocation,
) -> Result<SelfRevoked, StoreError> {
    let now = r.now.as_millis();
    let stmt = tx
        .prepare_cached(
            "SELECT f.registration_id, t.family_id, g.status FROM refresh_tokens t
             JOIN refresh_families f ON f.id = t.family_id
             JOIN registrations g ON g.id = f.registration_id
             WHERE t.id = $1 AND t.token_hash = $2 AND f.revoked_at IS NULL AND t.spent_at IS NULL
               AND t.expires_at > $3
             FOR UPDATE OF g",
        )
        .await
        .map_err(pg)?;
    let Some(row) = tx
        .query_opt(&stmt, &[&r.credential_id, &r.credential.as_bytes(), &now])
        .await
        .map_err(pg)?
    else {
        return Ok(SelfRevoked::Nothing);
    };
    let (registration_id, family, status): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let n = exec(
        tx,
        "UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        &[&now, &family],
    )
    .await?;
    if n == 0 {
        return Ok(SelfRevoked::Nothing);
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE credentials SET revoked_at = $1 WHERE registration_id = $2 AND revoked_at IS NULL
             RETURNING token_hash",
        )
        .await
        .map_err(pg)?;
    let hashes: Vec<Vec<u8>> = tx
        .query(&stmt, &[&now, &registration_id])
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let ended = end_if_nothing_live(tx, &registration_id, &status, now).await?;
    for e in crate::store::refresh_revoked_events(r, &registration_id, hashes.len(), ended) {
        insert_event(tx, &e).await?;
        e.log();
    }
    log_invalidations(tx, hashes, r.now).await?;
    Ok(SelfRevoked::Revoked {
        registration_ended: ended,
    })
}

type Target = (String, Option<String>, Option<String>, Option<String>);

/// An operator's revocation: the target's live registrations are locked
/// (a concurrent issuance into one of them waits, then sees it revoked),
/// then revoked chunk by chunk.
pub(super) async fn revoke(
    tx: &Transaction<'_>,
    r: &OperatorRevocation,
) -> Result<RevokeReport, StoreError> {
    let q = listing::revoke_targets(&r.target);
    let sql = format!("{} FOR UPDATE", q.postgres());
    let regs: Vec<Target> = rows(tx, &sql, &q, |row| {
        Ok((
            row.text(0)?,
            row.opt_text(1)?,
            row.opt_text(2)?,
            row.opt_text(3)?,
        ))
    })
    .await?;
    let now = r.now.as_millis();
    let mut report = RevokeReport::default();
    let mut all = Vec::new();
    for chunk in regs.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|t| t.0.as_str()).collect();
        exec(
            tx,
            "UPDATE registrations SET status = 'revoked', updated_at = $2 WHERE id = ANY($1)",
            &[&ids, &now],
        )
        .await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE credentials SET revoked_at = $2
                 WHERE registration_id = ANY($1) AND revoked_at IS NULL
                 RETURNING registration_id, token_hash",
            )
            .await
            .map_err(pg)?;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for row in tx.query(&stmt, &[&ids, &now]).await.map_err(pg)? {
            *counts.entry(row.get(0)).or_default() += 1;
            all.push(row.get::<_, Vec<u8>>(1));
        }
        let (mut iss, mut sub, mut reg) = (Vec::new(), Vec::new(), Vec::new());
        for (id, _, i, s) in chunk {
            if let (Some(i), Some(s)) = (i, s) {
                iss.push(i.as_str());
                sub.push(s.as_str());
                reg.push(id.as_str());
            }
        }
        if !reg.is_empty() {
            // Assertions minted before this second no longer register.
            exec(
                tx,
                "UPDATE delegations d SET revoked_at = $4, updated_at = $4,
                     revoked_before = GREATEST(COALESCE(d.revoked_before, 0), $5)
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(iss, sub, reg)
                 WHERE d.iss = t.iss AND d.sub = t.sub AND d.registration_id = t.reg",
                &[&iss, &sub, &reg, &now, &r.assertions_before()],
            )
            .await?;
        }
        let events: Vec<AuditEvent> = chunk
            .iter()
            .map(|(id, user, i, s)| {
                let n = counts.get(id).copied().unwrap_or(0);
                r.registration_event(id, user.as_deref(), i.clone(), s.clone(), n)
            })
            .collect();
        insert_events(tx, &events).await?;
        for e in &events {
            e.log();
        }
        report.registrations += chunk.len() as u64;
        report.credentials += counts.values().sum::<usize>() as u64;
    }
    let event = r.event(&report);
    insert_event(tx, &event).await?;
    event.log();
    log_invalidations(tx, all, r.now).await?;
    Ok(report)
}

/// Many events in one statement.
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    events: &[AuditEvent],
) -> Result<(), StoreError> {
    super::pipeline::Pipeline::default()
        .events(events)
        .run(tx)
        .await
        .map(drop)
}

/// Whether any of `keys` is blocked.
pub(super) async fn is_blocked(
    client: &impl GenericClient,
    keys: &[Option<String>; 3],
) -> Result<bool, StoreError> {
    let stmt = client
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM blocks WHERE key IN ($1, $2, $3))")
        .await
        .map_err(pg)?;
    Ok(client
        .query_one(&stmt, &[&keys[0], &keys[1], &keys[2]])
        .await
        .map_err(pg)?
        .get(0))
}

/// A block and its event in one transaction.
pub(super) async fn block(tx: &Transaction<'_>, b: &BlockChange) -> Result<bool, StoreError> {
    let row = b.columns();
    let inserted = exec(
        tx,
        "INSERT INTO blocks (key, kind, iss, sub, user_id, email, created_at, operator, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO NOTHING",
        &[
            &row.key,
            &row.kind,
            &row.iss,
            &row.sub,
            &row.user,
            &row.email,
            &b.now.as_millis(),
            &b.operator,
            &b.reason,
        ],
    )
    .await?;
    if inserted == 0 {
        return Ok(false);
    }
    let event = b.event("block");
    insert_event(tx, &event).await?;
    event.log();
    Ok(true)
}

pub(super) async fn unblock(tx: &Transaction<'_>, b: &BlockChange) -> Result<bool, StoreError> {
    let deleted = exec(tx, "DELETE FROM blocks WHERE key = $1", &[&b.target.key()]).await?;
    if deleted == 0 {
        return Ok(false);
    }
    let event = b.event("unblock");
    insert_event(tx, &event).await?;
    event.log();
    Ok(true)
}

pub(super) async fn blocks(client: &impl GenericClient) -> Result<Vec<BlockRecord>, StoreError> {
    let rows = client.query(BLOCKS_QUERY, &[]).await.map_err(pg)?;
    rows.iter()
        .map(|r| {
            Ok(BlockRecord {
                kind: r.try_get(0).map_err(pg)?,
                iss: r.try_get(1).map_err(pg)?,
                sub: r.try_get(2).map_err(pg)?,
                user_id: r.try_get(3).map_err(pg)?,
                email: r.try_get(4).map_err(pg)?,
                created_at: crate::time::Timestamp::from_millis(r.try_get(5).map_err(pg)?),
                operator: r.try_get(6).map_err(pg)?,
                reason: r.try_get(7).map_err(pg)?,
            })
        })
        .collect()
}

pub(super) async fn events(
    client: &impl GenericClient,
    f: &EventFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let q = listing::events(f, "data::text", listing::EventIndex::Column);
    rows(client, &q.postgres(), &q, listing::event_record).await
}

/// The oldest transaction still running (or the next to start): every
/// event of an older transaction is committed or gone for good.
async fn horizon(client: &impl GenericClient) -> Result<i64, StoreError> {
    let row = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

pub(super) async fn tail_position(client: &impl GenericClient) -> Result<TailCursor, StoreError> {
    Ok(TailCursor {
        tx: horizon(client).await?,
        id: 0,
    })
}

/// Reads in `(tx, id)` order, only below the horizon (see migration 0004).
pub(super) async fn tail_events(
    client: &impl GenericClient,
    mut after: TailCursor,
    f: &EventFilter,
) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError> {
    if after.tx == 0 {
        // A bare event id (from a listing): continue from that event.
        let row = client
            .query_opt(
                "SELECT tx::text::bigint FROM audit_events WHERE id = $1",
                &[&after.id],
            )
            .await
            .map_err(pg)?;
        after = match row {
            Some(r) => TailCursor {
                tx: r.get(0),
                id: after.id,
            },
            None => tail_position(client).await?,
        };
    }
    let end = horizon(client).await?;
    let mut q = Query::new(&format!(
        "SELECT {}, tx::text::bigint FROM audit_events
         WHERE (tx, id) > ((#::bigint)::text::xid8, #) AND tx < (#::bigint)::text::xid8",
        listing::EVENT_COLUMNS.replace("data", "data::text")
    ));
    q.args
        .extend([Arg::Int(after.tx), Arg::Int(after.id), Arg::Int(end)]);
    listing::event_conditions(&mut q, f);
    q.push(" ORDER BY tx, id LIMIT #", [Arg::Int(i64::from(MAX_PAGE))]);
    let found = rows(client, &q.postgres(), &q, |r| {
        let cursor = TailCursor {
            tx: r.int(8)?,
            id: r.int(0)?,
        };
        Ok((cursor, listing::event_record(r)?))
    })
    .await?;
    let next = match found.last() {
        Some((cursor, _)) if found.len() == MAX_PAGE as usize => *cursor,
        _ => after.max(TailCursor { tx: end, id: 0 }),
    };
    Ok((found, next))
}
