//! SQLite backend: one writer thread with group commit, a pool of readers.
//!
//! SQLite allows one writer at a time, and a durable commit costs an fsync.
//! So every write is a job sent to a single writer thread, which drains the
//! queue into one transaction (`BEGIN IMMEDIATE` … `COMMIT`), runs the jobs
//! (a failing job rolls the batch back and the others run again), commits
//! once, and only then answers every job. Under load, one fsync makes
//! hundreds of registrations durable; an answer never precedes its commit.
//! Reads run on separate WAL connections and never wait for the writer.

mod claims;
mod current;
mod governance;
mod jti;
mod keys;
mod outbox;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::current::{AssertionExchange, Created, Exchanged, NewIdentityRegistration};
use super::migrate::{Migration, SQLITE};
use super::{AgentMode, SelfRevocation, SelfRevoked};
use super::{
    AgentRegistered, Invalidation, NewAgentRegistration, NewAnonymousRegistration, RawCredential,
    STATS_QUERY, SigningKeyRow, Stats, Store, StoreError, SweepReport, credential_columns,
    join_scopes,
};
use super::{
    AttemptAction, AttemptProof, AttemptView, ClaimRequest, ClaimStarted, CompleteClaim, Completed,
    NewEmailRegistration, RefreshRotation, Rotated, SignInRequest, SignInStarted,
};
use super::{
    BlockChange, BlockRecord, CredentialSummary, DelegationFilter, DelegationRecord,
    OperatorRevocation, RegistrationFilter, RegistrationSummary, RevokeReport, SubjectRevocation,
    SubjectRevoked, TailCursor, UserFilter, UserRecord, listing,
};
use crate::audit::{AuditEvent, AuditRecord, EventFilter, EventKind, RequestMeta};
use crate::credential::{CredentialRecord, CredentialType};
use crate::rate_limit::{RateLimit, RateLimited};
use crate::time::Timestamp;
use crate::token::SecretHash;
use crate::users::LinkedBy;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 512;
/// Jobs waiting for the writer before senders wait too (backpressure).
const QUEUE: usize = 8192;

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: Option<Arc<Readers>>,
    seen: Arc<jti::SeenJti>,
    location: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish()
    }
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
    permits: Semaphore,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the database named by a `sqlite:` URL:
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db` or
    /// `sqlite::memory:`.
    pub fn open(url: &str, readers: usize) -> Result<SqliteStore, StoreError> {
        let rest = url
            .strip_prefix("sqlite:")
            .ok_or_else(|| StoreError::Url("expected sqlite:".into()))?;
        if rest.contains('?') {
            return Err(StoreError::Url(
                "sqlite URLs take no query parameters".into(),
            ));
        }
        if rest == ":memory:" || rest == "//:memory:" {
            let conn = Connection::open_in_memory().map_err(db)?;
            configure_writer(&conn, true)?;
            let seen = Arc::new(jti::SeenJti::default());
            return Ok(SqliteStore {
                writer: spawn_writer(conn, Arc::clone(&seen))?,
                readers: None,
                seen,
                location: ":memory:".into(),
            });
        }
        let path = PathBuf::from(rest.strip_prefix("//").unwrap_or(rest));
        if path.as_os_str().is_empty() {
            return Err(StoreError::Url("sqlite URL names no file".into()));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(&path).map_err(db)?;
        configure_writer(&conn, false)?;
        let readers = Arc::new(Readers {
            path: path.clone(),
            idle: Mutex::new(Vec::new()),
            max_idle: readers.max(1) * 2,
            permits: Semaphore::new(readers.max(1)),
        });
        let seen = Arc::new(jti::SeenJti::default());
        Ok(SqliteStore {
            writer: spawn_writer(conn, Arc::clone(&seen))?,
            readers: Some(readers),
            seen,
            location: path.display().to_string(),
        })
    }

    /// Runs `f` in the writer's current transaction; answers after the
    /// transaction commits. `f` may run more than once (see [`Job`]).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(Box::new(WriteJob {
                f,
                result: None,
                tx,
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a short point query on a reader connection, on the calling
    /// thread. An indexed lookup in a warm WAL database takes microseconds,
    /// less than handing it to another thread and back would; queries that
    /// can take long (listings, counts) use [`Self::read`] instead.
    async fn read_now<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(readers) = &self.readers else {
            return self.write(f).await;
        };
        let conn = match readers.idle.lock().ok().and_then(|mut v| v.pop()) {
            Some(c) => c,
            None => open_reader(&readers.path)?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = readers.idle.lock()
            && idle.len() < readers.max_idle
        {
            idle.push(conn);
        }
        result
    }

    /// Runs `f` on a reader connection (a consistent WAL snapshot) on the
    /// blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(readers) = &self.readers else {
            // An in-memory database has one connection: the writer's.
            return self.write(f).await;
        };
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(readers);
        tokio::task::spawn_blocking(move || {
            let conn = match readers.idle.lock().ok().and_then(|mut v| v.pop()) {
                Some(c) => c,
                None => open_reader(&readers.path)?,
            };
            let result = f(&conn);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < readers.max_idle
            {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
    }
}

fn configure_writer(conn: &Connection, memory: bool) -> Result<(), StoreError> {
    if !memory {
        // WAL: readers never block the writer. FULL: a commit is on disk
        // before it is acknowledged (group commit keeps this affordable).
        // SQLite syncs with fdatasync(2) in this workspace's builds
        // (`.cargo/config.toml`): data and size, not the mtime.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "cannot enable WAL journal (got {mode})"
            )));
        }
    }
    // An 8 MiB page cache for the writer: every index grows at its
    // right-hand end (time-ordered ids), so the pages a write touches are few
    // and stay cached; memory stays flat however large the database grows.
    // Temporary structures in memory. Checkpoint every 4000 pages (16 MiB of
    // WAL): fewer, larger checkpoints copy a hot page once instead of often.
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 4000;",
    )
    .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(conn)
}

/// Query plans that never depend on a bound value
/// (`SQLITE_DBCONFIG_ENABLE_QPSG`), on every connection of the store.
/// Without it SQLite propagates a bound parameter (through a join, or from
/// `col = ?1` into an `ORDER BY` over the same index) into the plan and
/// marks the statement for re-preparation whenever that value changes: the
/// SQL compiler would run again on every use of a cached statement (it was
/// 10% of the writer's time rotating refresh tokens, 6% registering new
/// users). authmd runs no `ANALYZE`, so there is no statistic a bound value
/// could have chosen a better plan with.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(db)?;
    Ok(())
}

fn open_reader(path: &PathBuf) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(32);
    stable_plans(&conn)?;
    Ok(conn)
}

// --- the writer -----------------------------------------------------------

/// A write waiting for the writer thread. It may run more than once: if
/// another job in its batch fails, the batch is rolled back and the others
/// run again in a fresh transaction (so a job must only write what its
/// captured data says, which every job here does). Its result is delivered
/// only after a commit.
trait Job: Send {
    /// Runs the job; `false` if it failed (its error is kept for delivery).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the kept result, or `commit`'s error if the commit failed.
    fn deliver(self: Box<Self>, commit: Result<(), StoreError>);
}

struct WriteJob<F, T> {
    f: F,
    result: Option<Result<T, StoreError>>,
    tx: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for WriteJob<F, T>
where
    T: Send + 'static,
    F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = catch_unwind(AssertUnwindSafe(|| (self.f)(conn)))
            .unwrap_or_else(|_| Err(StoreError::Database("a write panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn deliver(self: Box<Self>, commit: Result<(), StoreError>) {
        let result = self
            .result
            .unwrap_or_else(|| Err(StoreError::Database("write not run".into())));
        let _ = self.tx.send(commit.and(result));
    }
}

fn spawn_writer(
    conn: Connection,
    seen: Arc<jti::SeenJti>,
) -> Result<mpsc::Sender<Box<dyn Job>>, StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("authmd-sqlite-writer".into())
        .spawn(move || {
            yield_to_requests();
            writer_loop(&conn, &seen, rx)
        })
        .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
    Ok(tx)
}

/// The writer runs as `SCHED_BATCH` (same weight as any thread, but its
/// wakeups never preempt a running one). When the request threads have the
/// core to themselves, a queued write waits until they have nothing to run
/// (or their slice ends), and the commit then carries every write they
/// queued meanwhile; when a core is idle, as at one client or on a machine
/// with cores to spare, it runs at once, as before. Measured with the
/// server on one core: agent-verified registration (CPU-bound by its
/// signature check) made 1.2 to 1.4 times as many per second at 50 and 256
/// clients, each commit carrying more of them; nothing else moved beyond
/// the noise. If the system refuses, the writer runs as a normal thread.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        if let Err(e) = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Os(ThreadPriorityOsValue::default()),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        ) {
            tracing::debug!(error = ?e, "the SQLite writer keeps the normal scheduling policy");
        }
    }
}

/// Group commit without a timer: a commit starts as soon as the previous
/// one has finished, carrying every write that queued meanwhile (up to
/// `MAX_BATCH`). A lone write is committed at once, so its latency is one
/// transaction and one fsync; under load the writes that arrive during a
/// commit's fsync share the next one, so the batch grows with the load by
/// itself. A timer that held commits back to gather more writes (10 ms here
/// until issue 14) saved a little CPU at saturation but put a floor under
/// every write's latency and a ceiling of `clients / interval` on a
/// closed-loop population's throughput.
fn writer_loop(conn: &Connection, seen: &jti::SeenJti, mut rx: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut index_due = std::time::Instant::now() + AUDIT_INDEX_INTERVAL;
    let mut behind = None;
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch);
        commit_batch(conn, seen, &mut batch);
        if std::time::Instant::now() >= index_due {
            // A chunk at a time, one after each commit until caught up:
            // the writes queued meanwhile wait for one chunk, not a second's
            // worth of events.
            behind = index_audit_events(conn, AUDIT_INDEX_CHUNK, behind);
            index_due = std::time::Instant::now();
            if behind.is_none() {
                index_due += AUDIT_INDEX_INTERVAL;
            }
        }
    }
}

/// How often the writer adds the newest audit events to
/// `audit_events_by_registration` and `audit_events_by_kind` (migrations
/// 0015 and 0016).
const AUDIT_INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Least events one indexing transaction adds (a few milliseconds of the
/// writer's time): a second's worth at once at full speed, 20,000 events
/// and more, held the writes queued behind it for tens of milliseconds.
const AUDIT_INDEX_CHUNK: i64 = 1_000;

/// Adds events to `audit_events_by_registration` and to
/// `audit_events_by_kind`, each from its own mark in `audit_events_indexed`
/// (`through`, `kinds_through`: the same unless an authmd from before
/// migration 0016 wrote meanwhile), sorted, in a transaction of its own:
/// each registration and each kind active since the last time costs a
/// page write or a few, not one per event.
///
/// Each table takes the ids of `least` events after its mark, or, when
/// the run before was behind (`previous`: the newest id it saw), twice as
/// many as were written since, if more: back to back after each commit,
/// the runs gain on any rate, and each costs about what the commit before
/// it wrote. Returns the newest id if events remain past this run, `None`
/// once caught up (or on a failure, which is logged and tried again a
/// second later; until then listings find those events by id,
/// `EventIndex::Deferred`). No event commits with an id below one already
/// committed (one writer at a time, and the purge keeps the greatest id:
/// [`PURGED`]), so the ids after a mark
/// are the events after it, and `mark + n` bounds a run.
fn index_audit_events(conn: &Connection, least: i64, previous: Option<i64>) -> Option<i64> {
    let run = || -> rusqlite::Result<Option<i64>> {
        run_cached(conn, "BEGIN IMMEDIATE")?;
        let (mut through, mut kinds_through, newest): (i64, i64, i64) = conn
            .prepare_cached(
                "SELECT through, kinds_through, COALESCE((SELECT MAX(id) FROM audit_events), 0)
                 FROM audit_events_indexed",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if newest < through.max(kinds_through) {
            // The newest events were deleted, which only an authmd from
            // before migration 0017 (whose purge could do it) or a hand
            // does, and SQLite gives their ids again: their entries go, and
            // the marks come back to the newest event kept, so that the
            // events given those ids are indexed and listed.
            for sql in [
                "DELETE FROM audit_events_by_registration WHERE event_id > ?1",
                "DELETE FROM audit_events_by_kind WHERE event_id > ?1",
                "UPDATE audit_events_indexed
                 SET through = MIN(through, ?1), kinds_through = MIN(kinds_through, ?1)",
            ] {
                conn.prepare_cached(sql)?.execute([newest])?;
            }
            tracing::warn!(
                newest,
                through,
                kinds_through,
                "the newest audit events were deleted (by an authmd before migration 0017?); their ids will be given again, and are indexed from {newest}"
            );
            through = through.min(newest);
            kinds_through = kinds_through.min(newest);
        }
        let n = least.max(previous.map_or(0, |p| newest.saturating_sub(p).saturating_mul(2)));
        let upto = |mark: i64| newest.min(mark.saturating_add(n));
        conn.prepare_cached(
            "INSERT OR IGNORE INTO audit_events_by_registration (registration_id, event_id)
             SELECT registration_id, id FROM audit_events
             WHERE id > ?1 AND id <= ?2 AND registration_id IS NOT NULL
             ORDER BY registration_id, id",
        )?
        .execute(params![through, upto(through)])?;
        conn.prepare_cached(
            "INSERT OR IGNORE INTO audit_events_by_kind (kind, event_id)
             SELECT event, id FROM audit_events WHERE id > ?1 AND id <= ?2
             ORDER BY event, id",
        )?
        .execute(params![kinds_through, upto(kinds_through)])?;
        conn.prepare_cached(
            "UPDATE audit_events_indexed
             SET through = MAX(through, ?1), kinds_through = MAX(kinds_through, ?2)",
        )?
        .execute([upto(through), upto(kinds_through)])?;
        run_cached(conn, "COMMIT")?;
        Ok((newest > upto(through).min(upto(kinds_through))).then_some(newest))
    };
    run().unwrap_or_else(|e| {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        tracing::warn!(error = %e, "cannot index the newest audit events by registration and kind; trying again in a second");
        None
    })
}

/// Runs a statement without parameters through the statement cache:
/// `BEGIN IMMEDIATE` and `COMMIT` are parsed once per connection, not once
/// per transaction as `execute_batch` would (a few thousand instructions
/// per commit, one request's worth of them at one client).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn drain(rx: &mut mpsc::Receiver<Box<dyn Job>>, batch: &mut Vec<Box<dyn Job>>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Runs a batch in one transaction and delivers every result. A failed job
/// is answered with its error after a rollback, and the rest run again;
/// failures are rare (a rate-limit refusal or a replay is a successful job
/// with a refusal as its result), so the common case has no savepoints.
fn commit_batch(conn: &Connection, seen: &jti::SeenJti, batch: &mut Vec<Box<dyn Job>>) {
    while !batch.is_empty() {
        let began = std::time::Instant::now();
        let begun = run_cached(conn, "BEGIN IMMEDIATE").map_err(db);
        if let Err(e) = begun.and_then(|()| seen.begin(conn)) {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for job in batch.drain(..) {
                job.deliver(Err(e.clone()));
            }
            return;
        }
        let failed = batch.iter_mut().position(|job| !job.run(conn));
        if let Some(i) = failed {
            let _ = conn.execute_batch("ROLLBACK");
            seen.rollback(false);
            batch.remove(i).deliver(Ok(()));
            continue;
        }
        let commit = run_cached(conn, "COMMIT").map_err(db);
        crate::metrics::sqlite_commit(batch.len(), began.elapsed());
        match &commit {
            Ok(()) => seen.commit(),
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                // Whether a failed COMMIT left anything on disk is not
                // known here: the replay set is reloaded from the table.
                seen.rollback(true);
                tracing::error!(error = %e, jobs = batch.len(), "sqlite commit failed");
            }
        }
        for job in batch.drain(..) {
            job.deliver(commit.clone());
        }
    }
}

// --- shared statements ------------------------------------------------------

/// The events one call of `purge_audit` deletes: the oldest `?2` before
/// `?1`, but never the one with the greatest id. Event ids are the table's
/// rowids (migration 0017: no AUTOINCREMENT), each the greatest plus one,
/// so keeping the greatest keeps every id ever given from coming back: no
/// event commits below one already committed, which the deferred indexes'
/// marks and the listings' cursors rely on. Only in a trail quiet for the
/// whole retention is that one event kept past it.
const PURGED: &str = "SELECT id FROM audit_events
     WHERE at < ?1 AND id < (SELECT MAX(id) FROM audit_events)
     ORDER BY at, id LIMIT ?2";

fn insert_event(c: &Connection, e: &AuditEvent) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.at.as_millis(),
            e.kind.as_str(),
            e.registration_id,
            e.user_id,
            e.meta.ip_text(),
            e.meta.user_agent,
            e.data_json(),
            e.provider(),
        ])
    })
    .map_err(db)?;
    Ok(())
}

/// Checks every limit in order; writes the new state only if all admit.
fn admit(
    c: &Connection,
    limits: &[RateLimit],
    now: Timestamp,
) -> Result<Result<(), RateLimited>, StoreError> {
    let mut updates = Vec::with_capacity(limits.len());
    for limit in limits {
        let tat: Option<i64> = c
            .prepare_cached("SELECT tat FROM rate_limits WHERE key = ?1")
            .and_then(|mut s| s.query_row([&limit.key], |r| r.get(0)).optional())
            .map_err(db)?;
        match limit.decide(tat, now) {
            Ok(new_tat) => updates.push((limit.key.as_str(), new_tat)),
            Err(refused) => return Ok(Err(refused)),
        }
    }
    for (key, tat) in updates {
        c.prepare_cached(
            "INSERT INTO rate_limits (key, tat) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
        )
        .and_then(|mut s| s.execute(params![key, tat]))
        .map_err(db)?;
    }
    Ok(Ok(()))
}

/// Appends the changed credentials to the invalidation log (one entry that
/// flushes every cache when there are many, see `super::invalidation_entries`).
fn log_invalidations(
    c: &Connection,
    hashes: Vec<Vec<u8>>,
    now: Timestamp,
) -> Result<(), StoreError> {
    for hash in super::invalidation_entries(hashes) {
        c.prepare_cached("INSERT INTO invalidations (token_hash, at) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![hash, now.as_millis()]))
            .map_err(db)?;
    }
    Ok(())
}

/// Ends a registration: `status` (`expired` or `revoked`) and every
/// credential not yet revoked revoked at `now`. Returns their hashes.
fn retire(
    c: &Connection,
    id: &str,
    status: &str,
    now: Timestamp,
) -> Result<Vec<Vec<u8>>, StoreError> {
    c.prepare_cached("UPDATE registrations SET status = ?1, updated_at = ?2 WHERE id = ?3")
        .and_then(|mut s| s.execute(params![status, now.as_millis(), id]))
        .map_err(db)?;
    let mut s = c
        .prepare_cached(
            "UPDATE credentials SET revoked_at = ?1
             WHERE registration_id = ?2 AND revoked_at IS NULL
             RETURNING token_hash",
        )
        .map_err(db)?;
    let rows = s
        .query_map(params![now.as_millis(), id], |r| r.get(0))
        .map_err(db)?;
    rows.collect::<Result<_, _>>().map_err(db)
}

fn credential_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawCredential> {
    Ok(RawCredential {
        credential_id: r.get(0)?,
        credential_type: r.get(1)?,
        source: r.get(2)?,
        scopes: r.get(3)?,
        issued_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        iss: r.get(7)?,
        sub: r.get(8)?,
        registration_id: r.get(9)?,
        registration_type: r.get(10)?,
        registration_status: r.get(11)?,
        registration_expires_at: r.get(12)?,
        user_id: r.get(13)?,
        user_email: r.get(14)?,
        user_name: r.get(15)?,
        token_hash: r.get(16)?,
        user_email_verified: r.get(17)?,
    })
}

/// The oldest user with this verified (normalized) email: §6 step 2, for
/// agent-verified registration and for a completed claim. One row, its `id`
/// NULL when there is none: `min()` names the row SQLite takes a bare column
/// from, where `ORDER BY created_at LIMIT 1` would sort into a temporary
/// b-tree on every run.
const USER_BY_VERIFIED_EMAIL: &str = "SELECT id, min(created_at) FROM users
     WHERE email_normalized = ?1 AND email_verified = 1";
/// §6 step 3: the oldest user with this verified (normalized) phone.
const USER_BY_VERIFIED_PHONE: &str = "SELECT id, min(created_at) FROM users
     WHERE phone_normalized = ?1 AND phone_verified = 1";

/// The credential lookup of the validation hot path (see
/// [`CREDENTIAL_COLUMNS`]).
const CREDENTIAL_QUERY: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM credentials c JOIN registrations r ON r.id = c.registration_id
      LEFT JOIN users u ON u.id = c.user_id WHERE c.id = ?1"
);

const DELEGATION_QUERY: &str = "SELECT d.user_id, d.registration_id, r.status, d.revoked_before
     FROM delegations d
     JOIN registrations r ON r.id = d.registration_id
     WHERE d.iss = ?1 AND d.sub = ?2";

/// A delegation's live API keys past the newest `?2` (ids are time-ordered),
/// through the partial index of live provider keys (migration 0012). A
/// delegation's registration holds no other API keys.
const KEYS_PAST_CAP: &str = "SELECT id, token_hash FROM credentials
     WHERE registration_id = ?1 AND type = 'api_key' AND source = 'provider'
       AND revoked_at IS NULL
     ORDER BY id DESC LIMIT -1 OFFSET ?2";

/// §3.3/§6 in the writer's transaction. Every refusal is decided before the
/// first write (the writer commits what a successful job wrote).
fn register_agent_tx(
    c: &Connection,
    seen: &jti::SeenJti,
    reg: &NewAgentRegistration,
    limits: &[RateLimit],
    mode: &AgentMode,
) -> Result<AgentRegistered, StoreError> {
    let now = reg.now.as_millis();
    if seen.contains(&reg.jti_key) {
        return Ok(AgentRegistered::Replay);
    }
    // (1) The delegation, if any: its user, and its registration if live.
    let delegation: Option<(String, String, String, Option<i64>)> = c
        .prepare_cached(DELEGATION_QUERY)
        .and_then(|mut s| {
            s.query_row([&reg.iss, &reg.sub], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })
        .map_err(db)?;
    if delegation
        .as_ref()
        .is_some_and(|d| reg.issued_before_revocation(d.3))
    {
        return Ok(AgentRegistered::IssuedBeforeRevocation);
    }
    let find_user = |sql: &str, value: Option<String>| -> Result<Option<String>, StoreError> {
        match value {
            Some(v) => c
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row([v], |r| r.get(0)))
                .map_err(db),
            None => Ok(None),
        }
    };
    let (existing_user, linked_by) = match &delegation {
        Some((user, ..)) => (Some(user.clone()), None),
        // (2) a user with that verified email, (3) that verified phone,
        // as far as the provider's policy lets it link.
        None => match find_user(USER_BY_VERIFIED_EMAIL, reg.link_email())? {
            Some(u) => (Some(u), Some(LinkedBy::Email)),
            None => {
                let u = find_user(USER_BY_VERIFIED_PHONE, reg.link_phone())?;
                let how = u.as_ref().map(|_| LinkedBy::Phone);
                (u, how)
            }
        },
    };
    // An operator's block on the subject, the user or the address.
    if governance::is_blocked(c, &reg.block_keys(existing_user.as_deref()))? {
        return Ok(AgentRegistered::Blocked);
    }
    if mode.confirm_links
        && let (Some(user_id), Some(how)) = (&existing_user, linked_by)
    {
        return Ok(AgentRegistered::NeedsConfirmation {
            user_id: user_id.clone(),
            email: (how == LinkedBy::Email).then(|| reg.link_email()).flatten(),
        });
    }
    // (4) provision, or refuse.
    if existing_user.is_none() && !reg.jit_provisioning {
        return Ok(AgentRegistered::NotProvisioned);
    }
    if let Err(refused) = admit(c, limits, reg.now)? {
        return Ok(AgentRegistered::Limited(refused));
    }

    seen.record(c, reg.jti_key, reg.jti_until)?;
    let provisioned = existing_user.is_none();
    let user_id = match existing_user {
        Some(u) => u,
        None => {
            let id = &reg.identity;
            c.prepare_cached(
                "INSERT INTO users (id, email, email_normalized, email_verified, phone_number,
                                    phone_normalized, phone_verified, name, created_by_agent, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    reg.new_user_id,
                    id.email,
                    id.email.as_deref().and_then(crate::users::normalize_email),
                    id.email_verified,
                    id.phone_number,
                    id.phone_number.as_deref().and_then(crate::users::normalize_phone),
                    id.phone_number_verified,
                    id.name,
                    now,
                ])
            })
            .map_err(db)?;
            reg.new_user_id.clone()
        }
    };
    let registration_id = match &delegation {
        Some((_, registration, status, _)) if status == "active" => registration.clone(),
        _ => {
            c.prepare_cached(
                "INSERT INTO registrations (id, type, status, created_at, updated_at, user_id,
                                            created_by_agent, iss, sub, dialect)
                 VALUES (?1, 'agent-provider', 'active', ?2, ?2, ?3, 1, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    reg.new_registration_id,
                    now,
                    user_id,
                    reg.iss,
                    reg.sub,
                    mode.dialect.as_str(),
                ])
            })
            .map_err(db)?;
            c.prepare_cached(
                "INSERT INTO delegations (iss, sub, user_id, registration_id, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (iss, sub) DO UPDATE SET
                     registration_id = excluded.registration_id, updated_at = excluded.updated_at,
                     revoked_at = NULL",
            )
            .and_then(|mut s| s.execute(params![reg.iss, reg.sub, user_id, reg.new_registration_id, now]))
            .map_err(db)?;
            reg.new_registration_id.clone()
        }
    };
    if mode.issue {
        c.prepare_cached(
        "INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes,
                                  issued_at, expires_at, iss, sub, aud, assertion_iat)
         VALUES (?1, ?2, ?3, ?4, ?5, 'provider', ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            reg.credential_id,
            reg.credential.as_bytes(),
            registration_id,
            user_id,
            reg.credential_type.as_str(),
            join_scopes(&reg.scopes),
            now,
            reg.expires_at.map(Timestamp::as_millis),
            reg.iss,
            reg.sub,
            reg.aud,
            reg.issued_at.as_millis(),
        ])
    })
    .map_err(db)?;
    }
    for e in reg.events_as(&registration_id, &user_id, provisioned, mode) {
        insert_event(c, &e)?;
    }
    if let Some(how) = linked_by {
        insert_event(c, &reg.linked_event(&registration_id, &user_id, how))?;
    }
    if mode.issue && reg.credential_type == CredentialType::ApiKey {
        // Past the cap, the oldest live keys of the delegation end (ids
        // are time-ordered).
        // Found, then revoked one by one by primary key: an `UPDATE … WHERE
        // id IN (subquery) RETURNING` has SQLite build three temporary
        // b-trees per run (the subquery, the rows to change, the rows to
        // return), each with its own pager, on every such registration.
        let capped: Vec<(String, Vec<u8>)> = c
            .prepare_cached(KEYS_PAST_CAP)
            .and_then(|mut s| {
                s.query_map(params![registration_id, reg.max_api_keys], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(db)?;
        let mut hashes = Vec::with_capacity(capped.len());
        for (id, hash) in capped {
            c.prepare_cached("UPDATE credentials SET revoked_at = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![id, now]))
                .map_err(db)?;
            let e = reg.capped_event(&registration_id, &user_id, &id);
            insert_event(c, &e)?;
            e.log();
            hashes.push(hash);
        }
        log_invalidations(c, hashes, reg.now)?;
    }
    Ok(AgentRegistered::Issued {
        registration_id,
        user_id,
        user_provisioned: provisioned,
        linked_by,
    })
}

fn run_migrations(c: &Connection, migrations: &[Migration]) -> Result<(), StoreError> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS authmd_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(db)?;
    let current: i64 = c
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM authmd_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(StoreError::Migration(format!(
            "the database is at schema version {current}, newer than this authmd ({known}); upgrade authmd"
        )));
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        c.execute_batch(m.sql)
            .map_err(|e| StoreError::Migration(format!("{} {}: {e}", m.version, m.name)))?;
        c.execute(
            "INSERT INTO authmd_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, Timestamp::now().as_millis()],
        )
        .map_err(db)?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn take_mail(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<super::OutboxMail>, StoreError> {
        outbox::take(self, now, lease_until, limit).await
    }

    async fn mail_done(
        &self,
        id: &str,
        now: Timestamp,
        outcome: super::MailOutcome,
    ) -> Result<(), StoreError> {
        outbox::done(self, id.to_owned(), now, outcome).await
    }

    async fn purge_mail(&self, now: Timestamp, done_before: Timestamp) -> Result<u64, StoreError> {
        outbox::purge(self, now, done_before).await
    }

    async fn mail_status(&self) -> Result<super::MailStatus, StoreError> {
        outbox::status(self).await
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let seen = Arc::clone(&self.seen);
        self.write(move |c| {
            run_migrations(c, SQLITE)?;
            // The migrations may have reshaped jti_seen: load it afresh.
            seen.invalidate();
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read_now(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db))
            .await
    }

    async fn create_anonymous_registration(
        &self,
        reg: NewAnonymousRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.write(move |c| {
            if let Err(refused) = admit(c, &limits, reg.created_at)? {
                return Ok(Err(refused));
            }
            c.prepare_cached(
                "INSERT INTO registrations
                     (id, type, status, created_at, updated_at, expires_at, created_by_agent, claim_token_hash)
                 VALUES (?1, 'anonymous', 'unclaimed', ?2, ?2, ?3, 1, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    reg.registration_id,
                    reg.created_at.as_millis(),
                    reg.expires_at.as_millis(),
                    reg.claim_token.as_bytes(),
                ])
            })
            .map_err(db)?;
            c.prepare_cached(
                "INSERT INTO credentials (id, token_hash, registration_id, type, source, scopes, issued_at)
                 VALUES (?1, ?2, ?3, 'api_key', 'anonymous', ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    reg.credential_id,
                    reg.credential.as_bytes(),
                    reg.registration_id,
                    join_scopes(&reg.scopes),
                    reg.created_at.as_millis(),
                ])
            })
            .map_err(db)?;
            for e in &reg.events {
                insert_event(c, e)?;
            }
            Ok(Ok(()))
        })
        .await
    }

    async fn register_agent(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<AgentRegistered, StoreError> {
        self.register_agent_as(reg, limits, AgentMode::ORIGINAL)
            .await
    }

    async fn register_agent_as(
        &self,
        reg: NewAgentRegistration,
        limits: Vec<RateLimit>,
        mode: AgentMode,
    ) -> Result<AgentRegistered, StoreError> {
        let seen = Arc::clone(&self.seen);
        self.write(move |c| register_agent_tx(c, &seen, &reg, &limits, &mode))
            .await
    }

    async fn create_identity_registration(
        &self,
        reg: NewIdentityRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Created, StoreError> {
        self.write(move |c| current::create_identity_registration(c, &reg, &limits))
            .await
    }

    async fn exchange_assertion(&self, x: AssertionExchange) -> Result<Exchanged, StoreError> {
        self.write(move |c| current::exchange_assertion(c, &x))
            .await
    }

    async fn block(&self, b: BlockChange) -> Result<bool, StoreError> {
        self.write(move |c| governance::block(c, &b)).await
    }

    async fn unblock(&self, b: BlockChange) -> Result<bool, StoreError> {
        self.write(move |c| governance::unblock(c, &b)).await
    }

    async fn list_blocks(&self) -> Result<Vec<BlockRecord>, StoreError> {
        self.read(governance::blocks).await
    }

    async fn blocked(&self, keys: [Option<String>; 3]) -> Result<bool, StoreError> {
        self.read_now(move |c| governance::is_blocked(c, &keys))
            .await
    }

    async fn jti_used(&self, key: [u8; 16]) -> Result<bool, StoreError> {
        if let Some(used) = self.seen.get(&key) {
            return Ok(used);
        }
        // Not loaded yet: any write loads it first.
        let seen = Arc::clone(&self.seen);
        self.write(move |_| Ok(seen.contains(&key))).await
    }

    async fn record_event(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.write(move |c| insert_event(c, &event)).await
    }

    async fn count_request(
        &self,
        limits: Vec<RateLimit>,
        now: Timestamp,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.write(move |c| admit(c, &limits, now)).await
    }

    async fn record_events(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.write(move |c| events.iter().try_for_each(|e| insert_event(c, e)))
            .await
    }

    async fn purge_audit(&self, before: Timestamp, limit: u32) -> Result<u64, StoreError> {
        self.write(move |c| {
            // Their entries in the deferred indexes first (migrations 0015
            // and 0016).
            c.prepare_cached(&format!(
                "DELETE FROM audit_events_by_registration WHERE (registration_id, event_id) IN
                     (SELECT registration_id, id FROM audit_events
                      WHERE registration_id IS NOT NULL AND id IN ({PURGED}))"
            ))
            .and_then(|mut s| s.execute(params![before.as_millis(), limit]))
            .map_err(db)?;
            c.prepare_cached(&format!(
                "DELETE FROM audit_events_by_kind WHERE (kind, event_id) IN
                     (SELECT event, id FROM audit_events WHERE id IN ({PURGED}))"
            ))
            .and_then(|mut s| s.execute(params![before.as_millis(), limit]))
            .map_err(db)?;
            c.prepare_cached(&format!("DELETE FROM audit_events WHERE id IN ({PURGED})"))
                .and_then(|mut s| s.execute(params![before.as_millis(), limit]))
                .map(|n| n as u64)
                .map_err(db)
        })
        .await
    }

    async fn create_email_registration(
        &self,
        reg: NewEmailRegistration,
        limits: Vec<RateLimit>,
    ) -> Result<Result<(), RateLimited>, StoreError> {
        self.write(move |c| claims::create_email_registration(c, &reg, &limits))
            .await
    }

    async fn start_claim(
        &self,
        req: ClaimRequest,
        limits: Vec<RateLimit>,
    ) -> Result<ClaimStarted, StoreError> {
        self.write(move |c| claims::start_claim(c, &req, &limits))
            .await
    }

    async fn attempt(
        &self,
        attempt_id: &str,
        now: Timestamp,
    ) -> Result<Option<AttemptView>, StoreError> {
        let id = attempt_id.to_owned();
        self.read_now(move |c| claims::attempt(c, &id, now)).await
    }

    async fn mint_otp(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        otp: SecretHash,
        otp_expires_at: Timestamp,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        let id = attempt_id.to_owned();
        self.write(move |c| claims::mint_otp(c, &id, &proof, &otp, otp_expires_at, now, &meta))
            .await
    }

    async fn deny_attempt(
        &self,
        attempt_id: &str,
        proof: AttemptProof,
        now: Timestamp,
        meta: RequestMeta,
    ) -> Result<AttemptAction, StoreError> {
        let id = attempt_id.to_owned();
        self.write(move |c| claims::deny_attempt(c, &id, &proof, now, &meta))
            .await
    }

    async fn complete_claim(&self, req: CompleteClaim) -> Result<Completed, StoreError> {
        self.write(move |c| claims::complete_claim(c, &req)).await
    }

    async fn start_sign_in(
        &self,
        req: SignInRequest,
        limits: Vec<RateLimit>,
    ) -> Result<SignInStarted, StoreError> {
        self.write(move |c| claims::start_sign_in(c, &req, &limits))
            .await
    }

    async fn rotate_refresh(&self, r: RefreshRotation) -> Result<Rotated, StoreError> {
        self.write(move |c| current::rotate_refresh(c, &r)).await
    }

    async fn secret_key(&self) -> Result<Vec<u8>, StoreError> {
        self.write(claims::secret_key).await
    }

    async fn signing_keys(&self, now: Timestamp) -> Result<Vec<SigningKeyRow>, StoreError> {
        self.read_now(move |c| keys::published(c, now)).await
    }

    async fn add_first_signing_key(&self, key: SigningKeyRow) -> Result<bool, StoreError> {
        self.write(move |c| keys::add_first(c, &key)).await
    }

    async fn rotate_signing_key(
        &self,
        key: SigningKeyRow,
        retire_until: Timestamp,
        event: AuditEvent,
    ) -> Result<(), StoreError> {
        self.write(move |c| keys::rotate(c, &key, retire_until, &event))
            .await
    }

    async fn find_credential(&self, id: &str) -> Result<Option<CredentialRecord>, StoreError> {
        let id = id.to_owned();
        self.read_now(move |c| {
            let row = c
                .prepare_cached(CREDENTIAL_QUERY)
                .and_then(|mut s| s.query_row([&id], credential_from_row).optional())
                .map_err(db)?;
            row.map(RawCredential::into_record).transpose()
        })
        .await
    }

    async fn invalidations_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<Invalidation>, StoreError> {
        self.read_now(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT seq, token_hash FROM invalidations WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(db)?;
            let rows = s
                .query_map(params![seq, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, hash) = row.map_err(db)?;
                let credential = SecretHash::from_slice(&hash)
                    .ok_or_else(|| StoreError::Corrupt("invalidation hash length".into()))?;
                out.push(Invalidation { seq, credential });
            }
            Ok(out)
        })
        .await
    }

    async fn latest_invalidation(&self) -> Result<i64, StoreError> {
        self.read_now(|c| {
            c.query_row(
                "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM invalidations),
                            (SELECT through_seq FROM invalidations_purged))",
                [],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn purged_invalidations(&self) -> Result<i64, StoreError> {
        self.read_now(|c| {
            c.prepare_cached("SELECT through_seq FROM invalidations_purged")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(db)
        })
        .await
    }

    async fn expire_registrations(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<SweepReport, StoreError> {
        self.write(move |c| {
            let ids: Vec<String> = {
                let mut s = c
                    .prepare_cached(
                        "SELECT id FROM registrations
                         WHERE status IN ('unclaimed', 'pending_claim') AND expires_at <= ?1
                         ORDER BY expires_at LIMIT ?2",
                    )
                    .map_err(db)?;
                let rows = s
                    .query_map(params![now.as_millis(), limit], |r| r.get(0))
                    .map_err(db)?;
                rows.collect::<Result<_, _>>().map_err(db)?
            };
            let mut report = SweepReport::default();
            let mut all = Vec::new();
            for id in ids {
                // The single writer selected these in this transaction.
                let hashes = retire(c, &id, "expired", now)?;
                let event =
                    AuditEvent::new(EventKind::RegistrationExpired, now, &RequestMeta::default())
                        .registration(&id)
                        .with("credentials_revoked", hashes.len());
                insert_event(c, &event)?;
                event.log();
                report.revoked_credentials += hashes.len();
                report.expired_registrations.push(id);
                all.extend(hashes);
            }
            log_invalidations(c, all, now)?;
            Ok(report)
        })
        .await
    }

    async fn purge(
        &self,
        now: Timestamp,
        keep_invalidations_since: Timestamp,
    ) -> Result<u64, StoreError> {
        let seen = Arc::clone(&self.seen);
        self.write(move |c| {
            let a = c
                .execute("DELETE FROM rate_limits WHERE tat < ?1", [now.as_millis()])
                .map_err(db)?;
            // The marker first, then exactly the entries it covers.
            let through: i64 = c
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM invalidations WHERE at < ?1",
                    [keep_invalidations_since.as_millis()],
                    |r| r.get(0),
                )
                .map_err(db)?;
            c.execute(
                "UPDATE invalidations_purged SET through_seq = MAX(through_seq, ?1)",
                [through],
            )
            .map_err(db)?;
            let b = c
                .execute("DELETE FROM invalidations WHERE seq <= ?1", [through])
                .map_err(db)?;
            let j = seen.purge(c, now)?;
            let k = keys::purge(c, now)?;
            // Expired refresh tokens can no longer rotate, nor be detected
            // as reused: an expired one is refused as such.
            let r = c
                .execute(
                    "DELETE FROM refresh_tokens WHERE expires_at < ?1",
                    [now.as_millis()],
                )
                .map_err(db)?
                + c.execute(
                    "DELETE FROM refresh_families WHERE purge_after < ?1",
                    [now.as_millis()],
                )
                .map_err(db)?;
            Ok(u64::try_from(a + b + j + k + r).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        self.read(|c| {
            c.query_row(STATS_QUERY, [], |r| {
                let count = |i: usize| r.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
                Ok(Stats {
                    registrations: count(0)?,
                    credentials: count(1)?,
                    audit_events: count(2)?,
                })
            })
            .map_err(db)
        })
        .await
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let filter = filter.clone();
        self.read(move |c| governance::events(c, &filter)).await
    }

    async fn revoke_subject(&self, r: SubjectRevocation) -> Result<SubjectRevoked, StoreError> {
        let seen = Arc::clone(&self.seen);
        self.write(move |c| governance::revoke_subject(c, &seen, &r))
            .await
    }

    async fn revoke(&self, r: OperatorRevocation) -> Result<RevokeReport, StoreError> {
        self.write(move |c| governance::revoke(c, &r)).await
    }

    async fn revoke_credential(&self, r: SelfRevocation) -> Result<SelfRevoked, StoreError> {
        // A refresh token is checked on a reader first: anyone can make up
        // a well-formed one (its checksum is public), and each would
        // otherwise take a turn of the one writer. The writer checks again.
        if r.refresh {
            let probe = r.clone();
            if self
                .read_now(move |c| governance::live_refresh(c, &probe))
                .await?
                .is_none()
            {
                return Ok(SelfRevoked::Nothing);
            }
        }
        self.write(move |c| governance::revoke_credential(c, &r))
            .await
    }

    async fn list_registrations(
        &self,
        filter: &RegistrationFilter,
        now: Timestamp,
    ) -> Result<Vec<RegistrationSummary>, StoreError> {
        let q = listing::registrations(filter, now);
        self.read(move |c| governance::rows(c, &q, |r| listing::registration_summary(r)))
            .await
    }

    async fn registration_credentials(
        &self,
        registration_id: &str,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let q = listing::credentials_of(registration_id);
        self.read(move |c| governance::rows(c, &q, |r| listing::credential_summary(r)))
            .await
    }

    async fn list_users(&self, filter: &UserFilter) -> Result<Vec<UserRecord>, StoreError> {
        let q = listing::users(filter);
        self.read(move |c| governance::rows(c, &q, |r| listing::user_record(r)))
            .await
    }

    async fn list_delegations(
        &self,
        filter: &DelegationFilter,
    ) -> Result<Vec<DelegationRecord>, StoreError> {
        let q = listing::delegations(filter);
        self.read(move |c| governance::rows(c, &q, |r| listing::delegation_record(r)))
            .await
    }

    async fn tail_position(&self) -> Result<TailCursor, StoreError> {
        self.read_now(governance::tail_position).await
    }

    async fn tail_events(
        &self,
        after: TailCursor,
        filter: &EventFilter,
    ) -> Result<(Vec<(TailCursor, AuditRecord)>, TailCursor), StoreError> {
        let filter = filter.clone();
        self.read(move |c| governance::tail_events(c, after, &filter))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled SQLite was compiled with `HAVE_FDATASYNC`
    /// (`.cargo/config.toml`): this binary imports `fdatasync` (nothing else
    /// in authmd calls it: its own syncs are `sync_all`, fsync), so a commit
    /// no longer waits for the inode's mtime to be written as well.
    #[test]
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn sqlite_syncs_with_fdatasync() {
        assert!(
            dynamic_symbols().iter().any(|s| s == "fdatasync"),
            "SQLite was built without HAVE_FDATASYNC: is LIBSQLITE3_FLAGS overridden?"
        );
    }

    /// The names in this (ELF64) executable's dynamic string table: the
    /// symbols it imports and exports.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn dynamic_symbols() -> Vec<String> {
        let exe = std::fs::read("/proc/self/exe").unwrap_or_else(|e| panic!("{e}"));
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([exe[o], exe[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes(exe[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| {
            usize::try_from(u64::from_le_bytes(
                exe[o..o + 8].try_into().unwrap_or_default(),
            ))
            .unwrap_or(usize::MAX)
        };
        assert_eq!(&exe[..5], b"\x7fELF\x02", "not an ELF64 executable");
        let (table, size, count) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
        let section = |i: usize| table + i * size;
        let dynsym = (0..count)
            .map(section)
            .find(|&h| u32_at(h + 4) == 11) // SHT_DYNSYM
            .unwrap_or_else(|| panic!("no dynamic symbol table"));
        let strings = section(u32_at(dynsym + 0x28) as usize); // its sh_link
        let (offset, len) = (u64_at(strings + 0x18), u64_at(strings + 0x20));
        exe[offset..offset + len]
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    /// An in-memory database with every migration applied.
    fn migrated() -> Connection {
        let c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&c, SQLITE).unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// [`migrated`] without foreign keys: rows are written without their
    /// parents (keys without a registration row, say), for tests of the
    /// tables and indexes alone.
    fn schema_only() -> Connection {
        let c = migrated();
        c.execute_batch("PRAGMA foreign_keys = OFF")
            .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    /// One column of `how` (`EXPLAIN` or `EXPLAIN QUERY PLAN`) run on `sql`
    /// with `params` placeholder values.
    fn explain(c: &Connection, how: &str, sql: &str, params: usize, column: usize) -> Vec<String> {
        c.prepare(&format!("{how} {sql}"))
            .and_then(|mut s| {
                s.query_map(rusqlite::params_from_iter((0..params).map(|_| "x")), |r| {
                    r.get(column)
                })?
                .collect()
            })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A writer's or reader's connection plans each statement once
    /// ([`stable_plans`]): a cached statement run again with other values
    /// is not compiled again, and its plan still uses the index.
    #[test]
    fn hot_statements_are_never_reprepared() {
        let writer = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        configure_writer(&writer, true).unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&writer, SQLITE).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("authmd.db");
        let file = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&file, SQLITE).unwrap_or_else(|e| panic!("{e}"));
        let reader = open_reader(&path).unwrap_or_else(|e| panic!("{e}"));
        for (c, (sql, params, uses)) in [&writer, &reader].into_iter().flat_map(|c| {
            [
                (CREDENTIAL_QUERY, 1, "USING PRIMARY KEY"),
                (DELEGATION_QUERY, 2, "USING PRIMARY KEY"),
                (governance::BLOCKED, 3, "USING PRIMARY KEY"),
                (USER_BY_VERIFIED_EMAIL, 1, "USING INDEX users_email"),
                (USER_BY_VERIFIED_PHONE, 1, "USING INDEX users_phone"),
                (current::PRESENTED_REFRESH, 1, "USING PRIMARY KEY"),
                (KEYS_PAST_CAP, 2, "USING INDEX credentials_live_api_keys"),
            ]
            .map(|s| (c, s))
        }) {
            for i in 0..3 {
                let mut s = c.prepare_cached(sql).unwrap_or_else(|e| panic!("{e}"));
                let values: Vec<String> = (0..params).map(|k| format!("v{i}{k}")).collect();
                let mut rows = s
                    .query(rusqlite::params_from_iter(values.iter()))
                    .unwrap_or_else(|e| panic!("{e}"));
                while let Ok(Some(_)) = rows.next() {}
                drop(rows);
                assert_eq!(
                    s.get_status(rusqlite::StatementStatus::RePrepare),
                    0,
                    "{sql}"
                );
            }
            let plan = explain(c, "EXPLAIN QUERY PLAN", sql, params, 3);
            assert!(plan.iter().any(|p| p.contains(uses)), "{sql}: {plan:?}");
        }
    }

    /// No statement run on every registration or rotation has SQLite build
    /// a temporary b-tree (an `IN` list or subquery, a sort, `RETURNING`):
    /// each is a pager and a page cache of its own, made and torn down on
    /// every run, and truncated at every commit.
    #[test]
    fn hot_statements_build_no_temporary_btree() {
        let c = migrated();
        for (sql, params) in [
            (CREDENTIAL_QUERY, 1),
            (DELEGATION_QUERY, 2),
            (governance::BLOCKED, 3),
            (KEYS_PAST_CAP, 2),
            (USER_BY_VERIFIED_EMAIL, 1),
            (USER_BY_VERIFIED_PHONE, 1),
            (current::PRESENTED_REFRESH, 1),
        ] {
            let opcodes = explain(&c, "EXPLAIN", sql, params, 1);
            let temporary: Vec<&String> = opcodes
                .iter()
                .filter(|op| {
                    matches!(
                        op.as_str(),
                        "OpenEphemeral" | "OpenAutoindex" | "SorterOpen"
                    )
                })
                .collect();
            assert!(temporary.is_empty(), "{sql}: {temporary:?}");
        }
    }

    /// The ids of the events of `kind`, as a listing returns them.
    fn ids_of_kind(c: &Connection, kind: &str) -> Vec<i64> {
        let f = EventFilter {
            events: vec![kind.into()],
            limit: 100,
            ..Default::default()
        };
        let found = governance::events(c, &f).unwrap_or_else(|e| panic!("{e}"));
        found.iter().map(|e| e.id).collect()
    }

    /// The one row `sql` returns, read by `get`.
    fn one_row<T>(
        c: &Connection,
        sql: &str,
        get: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> T {
        c.query_row(sql, [], get)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Inserts an event of `kind` for `reg_1` at `at`; returns its id.
    fn add_event(c: &Connection, at: i64, kind: &str) -> i64 {
        c.execute(
            "INSERT INTO audit_events (at, event, registration_id, data) VALUES (?1, ?2, 'reg_1', '{}')",
            params![at, kind],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        c.last_insert_rowid()
    }

    /// What the purge of an authmd from before 0017 could do, and one from
    /// before 0016 did: the events above `id` deleted with their entries by
    /// registration, their entries by kind left behind.
    fn delete_newest_above(c: &Connection, id: i64) {
        c.execute_batch(&format!(
            "DELETE FROM audit_events_by_registration WHERE event_id > {id};
             DELETE FROM audit_events WHERE id > {id};"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Migration 0017 rebuilds `audit_events` without AUTOINCREMENT: the
    /// events keep their ids and contents, and where an old purge had
    /// deleted the newest events (so their ids will be given again), the
    /// indexing marks go back to the greatest id kept, so that an event
    /// given such an id is still indexed and listed.
    #[test]
    fn migration_0017_drops_autoincrement_and_keeps_ids_indexable() {
        let c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&c, &SQLITE[..16]).unwrap_or_else(|e| panic!("{e}"));
        for i in 1..=5 {
            c.execute(
                "INSERT INTO audit_events (at, event, registration_id, data, provider)
                 VALUES (?1, 'a.one', 'reg_1', '{\"n\":1}', 'https://idp')",
                [i],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(index_audit_events(&c, 100, None), None);
        // The purge of an authmd before 0017 could delete the newest; one
        // from before 0016 left their entries in the kind table.
        delete_newest_above(&c, 3);
        run_migrations(&c, SQLITE).unwrap_or_else(|e| panic!("{e}"));
        let orphans: i64 = one_row(
            &c,
            "SELECT COUNT(*) FROM audit_events_by_kind WHERE event_id > 3",
            |r| r.get(0),
        );
        assert_eq!(
            orphans, 0,
            "the kind entries above the greatest id kept are gone"
        );
        let schema: String = one_row(
            &c,
            "SELECT sql FROM sqlite_schema WHERE name = 'audit_events'",
            |r| r.get(0),
        );
        assert!(!schema.contains("AUTOINCREMENT"), "{schema}");
        let rows: Vec<(i64, i64, String, String, String)> = c
            .prepare("SELECT id, at, registration_id, data, provider FROM audit_events ORDER BY id")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let kept = |i: i64| {
            (
                i,
                i,
                "reg_1".to_owned(),
                "{\"n\":1}".to_owned(),
                "https://idp".to_owned(),
            )
        };
        assert_eq!(rows, [kept(1), kept(2), kept(3)]);
        let marks: (i64, i64) = one_row(
            &c,
            "SELECT through, kinds_through FROM audit_events_indexed",
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        assert_eq!(marks, (3, 3), "back to the greatest id kept");
        assert_eq!(add_event(&c, 9, "a.one"), 4, "the greatest plus one");
        assert_eq!(index_audit_events(&c, 100, None), None);
        let f = EventFilter {
            events: vec!["a.one".into()],
            registration_id: Some("reg_1".into()),
            limit: 100,
            ..Default::default()
        };
        let found = governance::events(&c, &f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let indexed: i64 = one_row(
            &c,
            "SELECT (SELECT COUNT(*) FROM audit_events_by_kind WHERE event_id = 4)
                      + (SELECT COUNT(*) FROM audit_events_by_registration WHERE event_id = 4)",
            |r| r.get(0),
        );
        assert_eq!(indexed, 2, "the new event 4 is in both deferred tables");
        // An older authmd, still running, purges the newest events (5 and
        // 6) and, being from before 0016, none of their kind entries.
        for at in [10, 11] {
            add_event(&c, at, "a.one");
        }
        assert_eq!(index_audit_events(&c, 100, None), None);
        delete_newest_above(&c, 4);
        assert_eq!(index_audit_events(&c, 100, None), None);
        let healed: (i64, i64, i64) = one_row(&c, "SELECT through, kinds_through, (SELECT COUNT(*) FROM audit_events_by_kind WHERE event_id > 4)
                 FROM audit_events_indexed", |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        assert_eq!(
            healed,
            (4, 4, 0),
            "marks back to the newest kept, orphans gone"
        );
        assert_eq!(add_event(&c, 12, "b.two"), 5, "id 5 given again");
        assert_eq!(ids_of_kind(&c, "b.two"), [5], "listed before indexing");
        assert_eq!(
            ids_of_kind(&c, "a.one"),
            [1, 2, 3, 4],
            "not under the old event's kind"
        );
        assert_eq!(index_audit_events(&c, 100, None), None);
        assert_eq!(ids_of_kind(&c, "b.two"), [5], "and after, once");
        assert_eq!(ids_of_kind(&c, "a.one"), [1, 2, 3, 4]);
    }

    /// Migration 0016 moves the index of events by kind into
    /// `audit_events_by_kind` for exactly the events the registration table
    /// covers (up to `audit_events_indexed.through`): the later ones are
    /// still found by id, and the writer adds them, a chunk at a time. An
    /// authmd from before 0016 still writing meanwhile moves only its own
    /// mark: a listing by kind still finds every event.
    #[test]
    fn migration_0016_indexes_the_kinds_up_to_the_indexing_point() {
        let c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&c, &SQLITE[..15]).unwrap_or_else(|e| panic!("{e}"));
        let record = |c: &Connection, i: i64, event: &str| {
            c.execute(
                "INSERT INTO audit_events (id, at, event, registration_id, data)
                 VALUES (?1, ?1, ?2, 'reg_1', '{}')",
                params![i, event],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        };
        for (i, event) in [
            (1, "a.one"),
            (2, "b.two"),
            (3, "a.one"),
            (4, "b.two"),
            (5, "a.one"),
        ] {
            record(&c, i, event);
        }
        c.execute("UPDATE audit_events_indexed SET through = 3", [])
            .unwrap_or_else(|e| panic!("{e}"));
        run_migrations(&c, SQLITE).unwrap_or_else(|e| panic!("{e}"));
        let entries = |c: &Connection| -> Vec<(String, i64)> {
            c.prepare("SELECT kind, event_id FROM audit_events_by_kind ORDER BY kind, event_id")
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let entry = |kind: &str, id: i64| (kind.to_owned(), id);
        assert_eq!(
            entries(&c),
            [entry("a.one", 1), entry("a.one", 3), entry("b.two", 2)]
        );
        let old_index: i64 = one_row(
            &c,
            "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'audit_events_event'",
            |r| r.get(0),
        );
        assert_eq!(old_index, 0, "the index written in every commit is gone");
        let marks = |c: &Connection| -> (i64, i64, i64) {
            one_row(
                c,
                "SELECT through, kinds_through,
                        (SELECT COUNT(*) FROM audit_events_by_registration)
                 FROM audit_events_indexed",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        };
        // (through, kinds_through, entries by registration)
        assert_eq!(marks(&c), (3, 3, 0), "0015's table was empty here");
        // One event at a time: the least, with no run before it.
        assert_eq!(index_audit_events(&c, 1, None), Some(5), "more remain");
        assert_eq!(marks(&c), (4, 4, 1), "event 4 in both tables");
        assert_eq!(entries(&c).len(), 4);
        // An older authmd's writer: two more events, and its indexer moves
        // `through` past them, filling the registration table only.
        record(&c, 6, "b.two");
        record(&c, 7, "a.one");
        c.execute_batch(
            "INSERT OR IGNORE INTO audit_events_by_registration (registration_id, event_id)
                 SELECT registration_id, id FROM audit_events WHERE id > 4;
             UPDATE audit_events_indexed SET through = 7;",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids_of_kind(&c, "a.one"), [1, 3, 5, 7]);
        assert_eq!(ids_of_kind(&c, "b.two"), [2, 4, 6]);
        // Each table from its own mark: the kinds catch up, the
        // registrations have nothing left.
        assert_eq!(
            index_audit_events(&c, 2, None),
            Some(7),
            "7 is still behind"
        );
        assert_eq!(marks(&c), (7, 6, 4));
        assert_eq!(index_audit_events(&c, 2, None), None);
        assert_eq!(marks(&c), (7, 7, 4));
        assert_eq!(
            entries(&c),
            [1, 3, 5, 7]
                .map(|i| entry("a.one", i))
                .into_iter()
                .chain([2, 4, 6].map(|i| entry("b.two", i)))
                .collect::<Vec<_>>(),
            "the writer adds the rest"
        );
        assert_eq!(ids_of_kind(&c, "a.one"), [1, 3, 5, 7]);
        // Behind, run after run: twice what was written since the run
        // before, whatever the least, so that it gains on any rate.
        for i in 8..=107 {
            record(&c, i, "a.one");
        }
        assert_eq!(index_audit_events(&c, 1, None), Some(107));
        assert_eq!(marks(&c), (8, 8, 5), "the least first");
        for i in 108..=117 {
            record(&c, i, "a.one");
        }
        assert_eq!(index_audit_events(&c, 1, Some(107)), Some(117));
        assert_eq!(marks(&c), (28, 28, 25), "8 + 2 × 10");
    }

    /// A page of events of several kinds (one named twice) merges the
    /// kinds' walks of `audit_events_by_kind` and the events after the
    /// mark by id, with or without a time window or another condition:
    /// SQLite sorts nothing, so the page costs what it returns, however
    /// many events match.
    #[test]
    fn a_page_of_several_kinds_sorts_nothing() {
        let c = migrated();
        let kinds = EventFilter {
            events: vec![
                "registration.created".into(),
                "credential.issued".into(),
                "registration.created".into(),
            ],
            limit: 100,
            ..Default::default()
        };
        let windowed = EventFilter {
            since: Some(Timestamp::from_secs(1_800_000_000)),
            until: Some(Timestamp::from_secs(1_800_086_400)),
            user_id: Some("usr_1".into()),
            after_id: Some(7),
            ..kinds.clone()
        };
        for f in [kinds, windowed] {
            let q = crate::store::listing::events(
                &f,
                "data",
                crate::store::listing::EventIndex::Deferred,
            );
            let plan: Vec<String> = c
                .prepare(&format!("EXPLAIN QUERY PLAN {}", q.sqlite()))
                .and_then(|mut s| {
                    s.query_map(rusqlite::params_from_iter(q.args.iter()), |r| r.get(3))?
                        .collect()
                })
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                !plan.iter().any(|p| p.contains("TEMP B-TREE")),
                "{f:?}: {plan:?}"
            );
            let walks = plan
                .iter()
                .filter(|p| p.contains("SEARCH x USING PRIMARY KEY (kind=?"))
                .count();
            assert_eq!(
                walks, 2,
                "one walk per kind, the repeated one once: {plan:?}"
            );
            let by_id = "SEARCH audit_events USING INTEGER PRIMARY KEY (rowid>?)";
            assert!(
                plan.iter().any(|p| p.contains(by_id)),
                "the events after the mark by id: {plan:?}"
            );
        }
    }

    /// The API-key cap reads a delegation's live keys only: its work does
    /// not grow with the revoked keys the delegation has piled up.
    #[test]
    fn the_key_cap_reads_live_keys_only() {
        let c = schema_only();
        let steps = |revoked: usize| {
            c.execute_batch("DELETE FROM credentials")
                .unwrap_or_else(|e| panic!("{e}"));
            for i in 0..revoked + 12 {
                c.execute(
                    "INSERT INTO credentials (id, token_hash, registration_id, type, source, scopes,
                                              issued_at, revoked_at)
                     VALUES (?1, x'00', 'reg_1', 'api_key', 'provider', '', 0, ?2)",
                    params![format!("key_{i:08}"), (i < revoked).then_some(1)],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
            let mut s = c.prepare(KEYS_PAST_CAP).unwrap_or_else(|e| panic!("{e}"));
            let past: Vec<String> = s
                .query_map(params!["reg_1", 10], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .unwrap_or_else(|e| panic!("{e}"));
            // 12 live keys, newest first: the two oldest are past 10.
            let oldest_live = [revoked + 1, revoked].map(|i| format!("key_{i:08}"));
            assert_eq!(past, oldest_live);
            s.get_status(rusqlite::StatementStatus::VmStep)
        };
        assert_eq!(steps(0), steps(2_000));
    }

    /// A registration without a user (anonymous, until claimed) or a
    /// provider writes no entry into the indexes by user and by provider,
    /// nor a user without an email address or phone number into theirs
    /// (migration 0013), and the lookups through them still use them.
    #[test]
    fn rows_without_a_value_stay_out_of_its_index() {
        let c = schema_only();
        for i in 0..101 {
            let (user, iss) = if i == 100 {
                (Some("usr_1"), Some("https://idp.example"))
            } else {
                (None, None)
            };
            c.execute(
                "INSERT INTO registrations (id, type, status, created_at, updated_at, user_id, iss)
                 VALUES (?1, 'anonymous', 'unclaimed', 0, 0, ?2, ?3)",
                params![format!("reg_{i:08}"), user, iss],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        for i in 0..101 {
            let email = (i == 100).then_some("a@example.com");
            c.execute(
                "INSERT INTO users (id, email, email_normalized, phone_number, phone_normalized, created_at)
                 VALUES (?1, ?2, ?2, ?2, ?2, 0)",
                params![format!("usr_{i:08}"), email],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        for (table, index, column) in [
            ("registrations", "registrations_user", "user_id"),
            ("registrations", "registrations_iss", "iss"),
            ("users", "users_email", "email_normalized"),
            ("users", "users_phone", "phone_normalized"),
        ] {
            let entries: i64 = c
                .query_row(
                    "SELECT sum(ncell) FROM dbstat WHERE name = ?1 AND pagetype = 'leaf'",
                    [index],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(entries, 1, "{index}");
            let plan = explain(
                &c,
                "EXPLAIN QUERY PLAN",
                &format!("SELECT id FROM {table} WHERE {column} = ?1"),
                1,
                3,
            );
            assert!(plan.iter().any(|p| p.contains(index)), "{plan:?}");
        }
    }

    /// The writer undoes a failed job's replay-set changes with its
    /// transaction: the job that failed remembers nothing, and the job
    /// that ran again beside it remembers its key once.
    #[test]
    fn a_failed_job_in_a_batch_leaves_no_jti_behind() {
        let c = migrated();
        let seen = Arc::new(jti::SeenJti::default());
        let until = Timestamp::from_millis(2_000_000_000_000);
        let job = |key: u8, fail: bool| {
            let seen = Arc::clone(&seen);
            let (tx, rx) = oneshot::channel();
            let job: Box<dyn Job> = Box::new(WriteJob {
                f: move |c: &Connection| {
                    seen.record(c, [key; 16], until)?;
                    if fail {
                        return Err(StoreError::Database("this job fails".into()));
                    }
                    Ok(())
                },
                result: None,
                tx,
            });
            (job, rx)
        };
        let (kept, mut kept_rx) = job(1, false);
        let (failed, mut failed_rx) = job(2, true);
        let mut batch = vec![kept, failed];
        commit_batch(&c, &seen, &mut batch);
        assert!(matches!(kept_rx.try_recv(), Ok(Ok(()))));
        assert!(matches!(failed_rx.try_recv(), Ok(Err(_))));
        assert!(seen.contains(&[1; 16]));
        assert!(!seen.contains(&[2; 16]));
        let keys: Vec<Vec<u8>> = c
            .prepare("SELECT key FROM jti_seen")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys, vec![vec![1u8; 16]]);
    }

    /// `jti_used` answers from the table before the writer has loaded the
    /// replay set (first thing after a restart).
    #[tokio::test]
    async fn jti_used_is_right_before_the_first_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.path().join("authmd.db").display());
        let open = || async {
            let store = SqliteStore::open(&url, 2).unwrap_or_else(|e| panic!("{e}"));
            store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
            store
        };
        let store = open().await;
        let seen = Arc::clone(&store.seen);
        let until = Timestamp::from_millis(2_000_000_000_000);
        store
            .write(move |c| seen.record(c, [5; 16], until))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let store = open().await;
        assert_eq!(store.seen.get(&[5; 16]), None);
        assert!(
            store
                .jti_used([5; 16])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
        assert!(
            !store
                .jti_used([6; 16])
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }
}
