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
-- `purge_audit`). The one other way is this migration meeting a table the
-- purge emptied: its next id is 1 again, so the marks go back to the
-- greatest id kept (0 then; the deferred tables are empty with it, since
-- the purge deletes their entries with the events).
--
-- The table is copied whole, once (SQLite cannot drop AUTOINCREMENT in
-- place): a few seconds per million events. PostgreSQL's ids come from a
-- sequence, which costs nothing of the kind: its migration 0017 changes
-- nothing.
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
UPDATE audit_events_indexed
SET through = MIN(through, (SELECT COALESCE(MAX(id), 0) FROM audit_events)),
    kinds_through = MIN(kinds_through, (SELECT COALESCE(MAX(id), 0) FROM audit_events));
