-- Audit event ids without AUTOINCREMENT (issue 14: every write scenario).
-- AUTOINCREMENT made every INSERT into audit_events read the table's row
-- of sqlite_sequence and write it back: two events per registration, a
-- third of the cost of inserting an event, and one more 4 KiB page in the
-- WAL per commit. A plain INTEGER PRIMARY KEY takes the greatest id plus
-- one, read from the end of the table's own b-tree.
--
-- What AUTOINCREMENT guaranteed is kept another way: an id is never
-- given twice, and no event commits with an id below one already
-- committed (the deferred indexes of 0015 and 0016 index by id from a
-- mark, and listing cursors are ids). Ids could only go back if the
-- event with the greatest id were deleted, and the audit purge, the only
-- statement that deletes events, never deletes it (store/sqlite/mod.rs,
-- `purge_audit`). An authmd from before this migration could delete the
-- newest events, so their ids will be given again: the marks go back to
-- the greatest id kept, and the entries of the deferred tables above it go
-- (an authmd from before 0016 purged none of the kind table's). The
-- writer's indexer
-- does the same whenever it finds the newest events gone, for an older
-- authmd still running after this migration (`index_audit_events`).
--
-- Stop older authmd processes before this migration runs: it holds the
-- write lock while it copies the table (their writes wait up to
-- `busy_timeout`, then fail), the WAL grows by about the table's size
-- until the next checkpoint, and the old table's pages stay free in the
-- file until a VACUUM.
--
-- The table is copied whole, once (SQLite cannot drop AUTOINCREMENT in
-- place). PostgreSQL's ids come from a sequence, which costs nothing of
-- the kind: its migration 0017 changes nothing.
CREATE TABLE audit_events_rowid (
    id              INTEGER PRIMARY KEY,
    at              INTEGER NOT NULL,
    event           TEXT NOT NULL,
    registration_id TEXT,
    user_id         TEXT,
    ip              TEXT,
    user_agent      TEXT,
    data            TEXT NOT NULL,               -- JSON object
    provider        TEXT
);
INSERT INTO audit_events_rowid (id, at, event, registration_id, user_id, ip, user_agent, data, provider)
    SELECT id, at, event, registration_id, user_id, ip, user_agent, data, provider
    FROM audit_events ORDER BY id;
DROP TABLE audit_events;
ALTER TABLE audit_events_rowid RENAME TO audit_events;
CREATE INDEX audit_events_at ON audit_events(at);
DELETE FROM audit_events_by_registration
    WHERE event_id > (SELECT COALESCE(MAX(id), 0) FROM audit_events);
DELETE FROM audit_events_by_kind
    WHERE event_id > (SELECT COALESCE(MAX(id), 0) FROM audit_events);
UPDATE audit_events_indexed
SET through = MIN(through, (SELECT COALESCE(MAX(id), 0) FROM audit_events)),
    kinds_through = MIN(kinds_through, (SELECT COALESCE(MAX(id), 0) FROM audit_events));
