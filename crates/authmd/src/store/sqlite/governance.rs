//! Revocation (provider and operator), the operator listings and the audit
//! tail, on SQLite. Writes run in the writer's transaction; listings on a
//! reader snapshot.

use rusqlite::types::{ToSql, ToSqlOutput};
use rusqlite::{Connection, OptionalExtension, params};

use super::super::listing::{self, Arg, MAX_PAGE, Query, ReadRow};
use super::super::{
    BLOCKS_QUERY, BlockChange, BlockRecord, OperatorRevocation, RevokeReport, SelfRevocation,
    SelfRevoked, SubjectRevocation, SubjectRevoked, TailCursor,
};
use super::{StoreError, db, insert_event, log_invalidations, retire};
use crate::audit::{AuditRecord, EventFilter, EventKind};

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => s.to_sql(),
            Arg::Int(i) => i.to_sql(),
        }
    }
}

impl ReadRow for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        self.get(i).map_err(db)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.get(i).map_err(db)
    }
    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.get(i).map_err(db)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        self.get(i).map_err(db)
    }
    fn boolean(&self, i: usize) -> Result<bool, StoreError> {
        self.get(i).map_err(db)
    }
}

/// Runs a listing query and maps its rows.
pub(super) fn rows<T>(
    c: &Connection,
    q: &Query,
    map: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut s = c.prepare(&q.sqlite()).map_err(db)?;
    let mut rows = s
        .query(rusqlite::params_from_iter(q.args.iter()))
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// §5 in the writer's transaction. Every refusal is decided before the
/// first write.
pub(super) fn revoke_subject(
    c: &Connection,
    seen: &super::jti::SeenJti,
    r: &SubjectRevocation,
) -> Result<SubjectRevoked, StoreError> {
    let now = r.now.as_millis();
    if seen.contains(&r.jti_key) {
        return Ok(SubjectRevoked::Replay);
    }
    seen.record(c, r.jti_key, r.jti_until)?;
    let mut report = RevokeReport::default();
    let Some(sub) = &r.sub else {
        return Ok(SubjectRevoked::Done(report));
    };
    let delegation: Option<(String, String, String)> = c
        .prepare_cached(
            "SELECT d.registration_id, d.user_id, r.status FROM delegations d
             JOIN registrations r ON r.id = d.registration_id
             WHERE d.iss = ?1 AND d.sub = ?2",
        )
        .and_then(|mut s| {
            s.query_row([&r.iss, sub], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()
        })
        .map_err(db)?;
    let Some((registration_id, user_id, status)) = delegation else {
        return Ok(SubjectRevoked::Done(report));
    };
    c.prepare_cached(
        "UPDATE delegations SET revoked_before = MAX(COALESCE(revoked_before, 0), ?3),
                                updated_at = ?4
         WHERE iss = ?1 AND sub = ?2",
    )
    .and_then(|mut s| s.execute(params![r.iss, sub, r.assertions_before.as_millis(), now]))
    .map_err(db)?;
    if status != "active" {
        return Ok(SubjectRevoked::Done(report));
    }
    let hashes: Vec<Vec<u8>> = {
        let mut s = c
            .prepare_cached(
                "UPDATE credentials SET revoked_at = ?1
                 WHERE registration_id = ?2 AND revoked_at IS NULL
                   AND (assertion_iat IS NULL OR assertion_iat <= ?3)
                 RETURNING token_hash",
            )
            .map_err(db)?;
        let rows = s
            .query_map(
                params![now, registration_id, r.assertions_through.as_millis()],
                |row| row.get(0),
            )
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let left: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM credentials WHERE registration_id = ?1
                 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2))",
        )
        .and_then(|mut s| s.query_row(params![registration_id, now], |row| row.get(0)))
        .map_err(db)?;
    report.credentials = hashes.len() as u64;
    let kind = if left {
        EventKind::CredentialRevoked
    } else {
        c.prepare_cached(
            "UPDATE registrations SET status = 'revoked', updated_at = ?1 WHERE id = ?2",
        )
        .and_then(|mut s| s.execute(params![now, registration_id]))
        .map_err(db)?;
        c.prepare_cached("UPDATE delegations SET revoked_at = ?3 WHERE iss = ?1 AND sub = ?2")
            .and_then(|mut s| s.execute(params![r.iss, sub, now]))
            .map_err(db)?;
        report.registrations = 1;
        EventKind::RegistrationRevoked
    };
    if !left || !hashes.is_empty() {
        let event = r.event(kind, &registration_id, &user_id, sub, report.credentials);
        insert_event(c, &event)?;
        event.log();
    }
    log_invalidations(c, hashes, r.now)?;
    Ok(SubjectRevoked::Done(report))
}

/// Whether a registration has a credential that is neither revoked nor
/// expired at `now`.
/// A live credential or a live refresh token (current dialect).
const ANY_LIVE_CREDENTIAL: &str =
    "SELECT EXISTS (SELECT 1 FROM credentials WHERE registration_id = ?1
     AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2))
     OR EXISTS (SELECT 1 FROM refresh_families WHERE registration_id = ?1
     AND revoked_at IS NULL AND expires_at > ?2)";

/// A self-revocation's last step: a live registration with nothing live
/// left is `revoked`. Whether it ended.
fn end_if_nothing_live(
    c: &Connection,
    registration_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let left: bool = c
        .prepare_cached(ANY_LIVE_CREDENTIAL)
        .and_then(|mut s| s.query_row(params![registration_id, now], |row| row.get(0)))
        .map_err(db)?;
    Ok(!left
        && c.prepare_cached(
            "UPDATE registrations SET status = 'revoked', updated_at = ?1
             WHERE id = ?2 AND status IN ('unclaimed', 'pending_claim', 'claimed', 'active')",
        )
        .and_then(|mut s| s.execute(params![now, registration_id]))
        .map_err(db)?
            > 0)
}

/// RFC 7009 self-revocation in the writer's transaction.
pub(super) fn revoke_credential(
    c: &Connection,
    r: &SelfRevocation,
) -> Result<SelfRevoked, StoreError> {
    let now = r.now.as_millis();
    if r.refresh {
        return revoke_refresh(c, r);
    }
    let revoked: Option<(String, Option<String>, String)> = c
        .prepare_cached(
            "UPDATE credentials SET revoked_at = ?1
             WHERE id = ?2 AND token_hash = ?3 AND revoked_at IS NULL
             RETURNING registration_id, user_id, type",
        )
        .and_then(|mut s| {
            s.query_row(
                params![now, r.credential_id, r.credential.as_bytes()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
        })
        .map_err(db)?;
    let Some((registration_id, user_id, credential_type)) = revoked else {
        return Ok(SelfRevoked::Nothing);
    };
    let ended = end_if_nothing_live(c, &registration_id, now)?;
    let mut kinds = vec![EventKind::CredentialRevoked];
    if ended {
        kinds.push(EventKind::RegistrationRevoked);
    }
    for kind in kinds {
        let event = r.event(kind, &registration_id, user_id.as_deref(), &credential_type);
        insert_event(c, &event)?;
        event.log();
    }
    log_invalidations(c, vec![r.credential.as_bytes().to_vec()], r.now)?;
    Ok(SelfRevoked::Revoked {
        registration_ended: ended,
    })
}

/// The registration and family of a live refresh token presented at
/// `/oauth2/revoke` (its hash matching), if it is one.
pub(super) fn live_refresh(
    c: &Connection,
    r: &SelfRevocation,
) -> Result<Option<(String, String)>, StoreError> {
    let now = r.now.as_millis();
    c.prepare_cached(
        "SELECT f.registration_id, t.family_id FROM refresh_tokens t
             JOIN refresh_families f ON f.id = t.family_id
             WHERE t.id = ?1 AND t.token_hash = ?2 AND f.revoked_at IS NULL AND t.spent_at IS NULL
               AND t.expires_at > ?3",
    )
    .and_then(|mut s| {
        s.query_row(
            params![r.credential_id, r.credential.as_bytes(), now],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
    })
    .map_err(db)
}

/// A refresh token presented at `/oauth2/revoke`: its family, the
/// registration's access tokens, then the registration if nothing is left.
fn revoke_refresh(c: &Connection, r: &SelfRevocation) -> Result<SelfRevoked, StoreError> {
    let now = r.now.as_millis();
    let Some((registration_id, family)) = live_refresh(c, r)? else {
        return Ok(SelfRevoked::Nothing);
    };
    c.prepare_cached(
        "UPDATE refresh_families SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
    )
    .and_then(|mut s| s.execute(params![now, family]))
    .map_err(db)?;
    let hashes: Vec<Vec<u8>> = {
        let mut s = c
            .prepare_cached(
                "UPDATE credentials SET revoked_at = ?1 WHERE registration_id = ?2 AND revoked_at IS NULL
                 RETURNING token_hash",
            )
            .map_err(db)?;
        let rows = s
            .query_map(params![now, registration_id], |row| row.get(0))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    let ended = end_if_nothing_live(c, &registration_id, now)?;
    for e in crate::store::refresh_revoked_events(r, &registration_id, hashes.len(), ended) {
        insert_event(c, &e)?;
        e.log();
    }
    log_invalidations(c, hashes, r.now)?;
    Ok(SelfRevoked::Revoked {
        registration_ended: ended,
    })
}

type Target = (String, Option<String>, Option<String>, Option<String>);

/// An operator's revocation in the writer's transaction.
pub(super) fn revoke(c: &Connection, r: &OperatorRevocation) -> Result<RevokeReport, StoreError> {
    let regs: Vec<Target> = rows(c, &listing::revoke_targets(&r.target), |row| {
        Ok((
            row.text(0)?,
            row.opt_text(1)?,
            row.opt_text(2)?,
            row.opt_text(3)?,
        ))
    })?;
    let mut report = RevokeReport::default();
    let mut all = Vec::new();
    for (id, user, iss, sub) in regs {
        let hashes = retire(c, &id, "revoked", r.now)?;
        if let (Some(iss), Some(sub)) = (&iss, &sub) {
            // Assertions minted before this second no longer register.
            c.prepare_cached(
                "UPDATE delegations SET revoked_at = ?4, updated_at = ?4,
                     revoked_before = MAX(COALESCE(revoked_before, 0), ?5)
                 WHERE iss = ?1 AND sub = ?2 AND registration_id = ?3",
            )
            .and_then(|mut s| {
                s.execute(params![
                    iss,
                    sub,
                    id,
                    r.now.as_millis(),
                    r.assertions_before()
                ])
            })
            .map_err(db)?;
        }
        let event = r.registration_event(&id, user.as_deref(), iss, sub, hashes.len());
        insert_event(c, &event)?;
        event.log();
        report.registrations += 1;
        report.credentials += hashes.len() as u64;
        all.extend(hashes);
    }
    let event = r.event(&report);
    insert_event(c, &event)?;
    event.log();
    log_invalidations(c, all, r.now)?;
    Ok(report)
}

/// Whether any of `keys` is blocked. Always three parameters (NULL for an
/// absent one) so that one statement serves every registration.
pub(super) fn is_blocked(c: &Connection, keys: &[Option<String>; 3]) -> Result<bool, StoreError> {
    c.prepare_cached(BLOCKED)
        .and_then(|mut s| s.query_row(params![keys[0], keys[1], keys[2]], |r| r.get(0)))
        .map_err(db)
}

/// Three lookups by primary key rather than `key IN (?1, ?2, ?3)`: SQLite
/// answers an `IN` list on an index by building a temporary b-tree of the
/// values (its own pager and page cache, made and freed on every run), on
/// every agent-verified registration.
pub(super) const BLOCKED: &str = "SELECT EXISTS (SELECT 1 FROM blocks WHERE key = ?1)
                                     OR EXISTS (SELECT 1 FROM blocks WHERE key = ?2)
                                     OR EXISTS (SELECT 1 FROM blocks WHERE key = ?3)";

/// A block and its event in the writer's transaction.
pub(super) fn block(c: &Connection, b: &BlockChange) -> Result<bool, StoreError> {
    let row = b.columns();
    let inserted = c
        .prepare_cached(
            "INSERT INTO blocks (key, kind, iss, sub, user_id, email, created_at, operator, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key) DO NOTHING",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.key,
                row.kind,
                row.iss,
                row.sub,
                row.user,
                row.email,
                b.now.as_millis(),
                b.operator,
                b.reason
            ])
        })
        .map_err(db)?;
    if inserted == 0 {
        return Ok(false);
    }
    let event = b.event("block");
    insert_event(c, &event)?;
    event.log();
    Ok(true)
}

pub(super) fn unblock(c: &Connection, b: &BlockChange) -> Result<bool, StoreError> {
    let deleted = c
        .prepare_cached("DELETE FROM blocks WHERE key = ?1")
        .and_then(|mut s| s.execute([b.target.key()]))
        .map_err(db)?;
    if deleted == 0 {
        return Ok(false);
    }
    let event = b.event("unblock");
    insert_event(c, &event)?;
    event.log();
    Ok(true)
}

pub(super) fn blocks(c: &Connection) -> Result<Vec<BlockRecord>, StoreError> {
    let mut s = c.prepare_cached(BLOCKS_QUERY).map_err(db)?;
    let rows = s
        .query_map([], |r| {
            Ok(BlockRecord {
                kind: r.get(0)?,
                iss: r.get(1)?,
                sub: r.get(2)?,
                user_id: r.get(3)?,
                email: r.get(4)?,
                created_at: crate::time::Timestamp::from_millis(r.get(5)?),
                operator: r.get(6)?,
                reason: r.get(7)?,
            })
        })
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

pub(super) fn events(c: &Connection, f: &EventFilter) -> Result<Vec<AuditRecord>, StoreError> {
    rows(
        c,
        &listing::events(f, "data", listing::EventIndex::Deferred),
        |r| listing::event_record(r),
    )
}

pub(super) fn tail_position(c: &Connection) -> Result<TailCursor, StoreError> {
    let id: i64 = c
        .query_row("SELECT COALESCE(MAX(id), 0) FROM audit_events", [], |r| {
            r.get(0)
        })
        .map_err(db)?;
    Ok(TailCursor { tx: 0, id })
}

/// One writer commits events in id order, so everything up to the largest
/// id visible now is final: the tail reads up to it and moves past it.
pub(super) fn tail_events(
    c: &Connection,
    after: TailCursor,
    f: &EventFilter,
) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError> {
    let end = tail_position(c)?;
    let q = listing::events_between(
        f,
        after.id,
        Some(end.id),
        i64::from(MAX_PAGE),
        "data",
        listing::EventIndex::Deferred,
    );
    let found = rows(c, &q, |r| listing::event_record(r))?;
    let next = match found.last() {
        Some(last) if found.len() == MAX_PAGE as usize => TailCursor { tx: 0, id: last.id },
        _ => end.max(after),
    };
    let found = found
        .into_iter()
        .map(|e| (TailCursor { tx: 0, id: e.id }, e))
        .collect();
    Ok((found, next))
}
