//! Used assertion ids (`jti` keys) for the SQLite store.
//!
//! The key is a hash, so an index on it takes every insert at a random page:
//! with hundreds of thousands of keys remembered, that was one page read and
//! one WAL frame (plus its later checkpoint copy) per registration, about a
//! tenth of the server's CPU at saturation. Instead the table is clustered
//! by expiry, `(expires_at, key)`, where rows arrive in order at its end and
//! the sweep deletes from its start, and the question "seen before?" is
//! answered by a set in memory that mirrors the table:
//!
//! - loaded from the table on the first write, so a restart forgets nothing;
//! - changed only by the writer, inside its transaction, and every change is
//!   undone if that transaction rolls back ([`SeenJti::rollback`]);
//! - reloaded when `PRAGMA data_version` says another connection (another
//!   process, such as an operator command) committed to the database since
//!   this one last looked, so a key remembered elsewhere is never missed.
//!
//! Its size is bounded like the table's: keys are purged once their assertion
//! can no longer be accepted (`Verifier::remember_jti_until`), so it holds at
//! most the identity assertions accepted in `max_lifetime + 3 × clock_skew`
//! and one sweep interval (16 bytes each in a hash set: 20 to 40 bytes of
//! memory).

use std::collections::HashSet;
use std::sync::Mutex;

use rusqlite::{Connection, params};

use super::db;
use crate::store::StoreError;
use crate::time::Timestamp;

/// The replay set of one SQLite database, shared by its writer (which changes
/// it) and readers (which ask it).
#[derive(Debug, Default)]
pub(super) struct SeenJti(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    keys: HashSet<[u8; 16]>,
    /// What the open transaction changed, in order, to undo on rollback.
    undo: Vec<Change>,
    /// `PRAGMA data_version` when `keys` last matched the table; `None`
    /// before the first load and after a failed commit.
    version: Option<i64>,
}

#[derive(Debug)]
enum Change {
    Added([u8; 16]),
    Removed([u8; 16]),
}

impl SeenJti {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent set (every
        // change is one insert or remove), so poisoning is ignored.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by the writer after `BEGIN IMMEDIATE`: (re)loads the set if
    /// it has not been loaded or another connection committed since.
    pub fn begin(&self, c: &Connection) -> Result<(), StoreError> {
        let version: i64 = c
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(db)?;
        let mut state = self.state();
        state.undo.clear();
        if state.version != Some(version) {
            state.keys = load(c)?;
            state.version = Some(version);
        }
        Ok(())
    }

    /// The transaction committed: its changes stand.
    pub fn commit(&self) {
        self.state().undo.clear();
    }

    /// The transaction rolled back: undo its changes. After a failed
    /// `COMMIT` whose outcome is unknown, `reload` too.
    pub fn rollback(&self, reload: bool) {
        let mut state = self.state();
        while let Some(change) = state.undo.pop() {
            match change {
                Change::Added(key) => state.keys.remove(&key),
                Change::Removed(key) => state.keys.insert(key),
            };
        }
        if reload {
            state.version = None;
        }
    }

    /// Forgets the set; the next transaction loads it again (after the
    /// migrations, which may have reshaped the table).
    pub fn invalidate(&self) {
        self.state().version = None;
    }

    /// Whether `key` was used, by a committed write or by the open
    /// transaction. For the writer's jobs (the set is loaded by then).
    pub fn contains(&self, key: &[u8; 16]) -> bool {
        self.state().keys.contains(key)
    }

    /// [`Self::contains`] for readers: `None` until the writer has loaded
    /// the set.
    pub fn get(&self, key: &[u8; 16]) -> Option<bool> {
        let state = self.state();
        state.version.map(|_| state.keys.contains(key))
    }

    /// Records `key` as used until `until`, in the writer's transaction.
    /// The job checked [`Self::contains`] first, in the same transaction.
    pub fn record(
        &self,
        c: &Connection,
        key: [u8; 16],
        until: Timestamp,
    ) -> Result<(), StoreError> {
        c.prepare_cached("INSERT INTO jti_seen (expires_at, key) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![until.as_millis(), &key[..]]))
            .map_err(db)?;
        let mut state = self.state();
        if state.keys.insert(key) {
            state.undo.push(Change::Added(key));
        }
        Ok(())
    }

    /// Deletes the keys that expired before `now`, in the writer's
    /// transaction; returns how many.
    pub fn purge(&self, c: &Connection, now: Timestamp) -> Result<usize, StoreError> {
        let mut s = c
            .prepare_cached("DELETE FROM jti_seen WHERE expires_at < ?1 RETURNING key")
            .map_err(db)?;
        let purged = s
            .query_map([now.as_millis()], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        let mut state = self.state();
        for key in &purged {
            if let Ok(key) = <[u8; 16]>::try_from(key.as_slice())
                && state.keys.remove(&key)
            {
                state.undo.push(Change::Removed(key));
            }
        }
        Ok(purged.len())
    }
}

/// Every key in the table (the `key` column has this name in every shape
/// the table has had; before the first migration there is no table).
fn load(c: &Connection) -> Result<HashSet<[u8; 16]>, StoreError> {
    let exists: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'jti_seen')",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !exists {
        return Ok(HashSet::new());
    }
    let mut s = c.prepare("SELECT key FROM jti_seen").map_err(db)?;
    let rows = s.query_map([], |r| r.get::<_, Vec<u8>>(0)).map_err(db)?;
    let mut keys = HashSet::new();
    for key in rows {
        // A key of another length cannot come from `jti_key`; skip it.
        if let Ok(key) = <[u8; 16]>::try_from(key.map_err(db)?.as_slice()) {
            keys.insert(key);
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::SQLITE;
    use crate::store::sqlite::run_migrations;

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn rows(c: &Connection) -> i64 {
        ok(c.query_row("SELECT count(*) FROM jti_seen", [], |r| r.get(0)))
    }

    const LATER: Timestamp = Timestamp::from_millis(2_000_000_000_000);

    /// A key recorded by a transaction that rolls back is not remembered,
    /// in memory or on disk, so the agent's retry is not called a replay;
    /// a purge that rolls back forgets nothing.
    #[test]
    fn a_rolled_back_transaction_changes_nothing() {
        let c = ok(Connection::open_in_memory());
        ok(run_migrations(&c, SQLITE));
        let seen = SeenJti::default();
        let (a, b) = ([1u8; 16], [2u8; 16]);

        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        ok(seen.record(&c, a, LATER));
        assert!(seen.contains(&a));
        ok(c.execute_batch("ROLLBACK"));
        seen.rollback(false);
        assert!(!seen.contains(&a));
        assert_eq!(rows(&c), 0);

        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        ok(seen.record(&c, a, Timestamp::from_millis(1_000)));
        ok(seen.record(&c, b, LATER));
        ok(c.execute_batch("COMMIT"));
        seen.commit();
        assert!(seen.contains(&a) && seen.contains(&b));

        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        assert_eq!(ok(seen.purge(&c, Timestamp::from_millis(2_000))), 1);
        assert!(!seen.contains(&a) && seen.contains(&b));
        ok(c.execute_batch("ROLLBACK"));
        seen.rollback(false);
        assert!(seen.contains(&a) && seen.contains(&b));
        assert_eq!(rows(&c), 2);

        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        assert_eq!(ok(seen.purge(&c, Timestamp::from_millis(2_000))), 1);
        ok(c.execute_batch("COMMIT"));
        seen.commit();
        assert!(!seen.contains(&a) && seen.contains(&b));
        assert_eq!(rows(&c), 1);
    }

    /// Another process that records a key (or any other commit by another
    /// connection) makes the writer's next transaction reload the set.
    #[test]
    fn a_key_recorded_by_another_connection_is_seen() {
        let dir = ok(tempfile::tempdir());
        let path = dir.path().join("authmd.db");
        let writer = ok(Connection::open(&path));
        ok(run_migrations(&writer, SQLITE));
        let seen = SeenJti::default();
        assert_eq!(
            seen.get(&[7; 16]),
            None,
            "not loaded before the first write"
        );
        ok(writer.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&writer));
        ok(writer.execute_batch("COMMIT"));
        assert_eq!(seen.get(&[7; 16]), Some(false));

        let other = ok(Connection::open(&path));
        ok(other.execute(
            "INSERT INTO jti_seen (expires_at, key) VALUES (?1, ?2)",
            params![LATER.as_millis(), &[7u8; 16][..]],
        ));

        ok(writer.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&writer));
        assert!(seen.contains(&[7; 16]));
        ok(writer.execute_batch("COMMIT"));
    }

    /// Upgrading a database keeps the keys it remembered, in the new shape
    /// (clustered by expiry, no index on the key).
    #[test]
    fn the_migration_keeps_remembered_keys() {
        let c = ok(Connection::open_in_memory());
        ok(run_migrations(&c, &SQLITE[..4]));
        ok(c.execute(
            "INSERT INTO jti_seen (key, expires_at) VALUES (?1, ?2)",
            params![&[9u8; 16][..], LATER.as_millis()],
        ));
        let seen = SeenJti::default();
        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        assert!(seen.contains(&[9; 16]));
        ok(run_migrations(&c, SQLITE));
        seen.invalidate();
        ok(c.execute_batch("COMMIT"));
        assert_eq!(seen.get(&[9; 16]), None);

        ok(c.execute_batch("BEGIN IMMEDIATE"));
        ok(seen.begin(&c));
        assert!(seen.contains(&[9; 16]));
        ok(c.execute_batch("COMMIT"));
        let plan: String = ok(c.query_row(
            "EXPLAIN QUERY PLAN DELETE FROM jti_seen WHERE expires_at < 5",
            [],
            |r| r.get(3),
        ));
        assert!(plan.contains("USING PRIMARY KEY"), "{plan}");
        let indexes: i64 = ok(c.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jti_seen'
               AND sql IS NOT NULL",
            [],
            |r| r.get(0),
        ));
        assert_eq!(indexes, 0);
    }
}
