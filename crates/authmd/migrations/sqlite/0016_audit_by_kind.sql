-- The audit events of a kind, found through a table the writer fills with
-- `audit_events_by_registration` (migration 0015), about once a second,
-- instead of the index `audit_events_event` written in every commit
-- (issue 14). That index was keyed by (event, id): every kind but the
-- greatest appends in the middle of it, so a commit of registrations
-- split and rebalanced a page there, writing three or four 4 KiB pages to
-- the WAL (about 7.7 of the 35.6 frames of a commit of anonymous
-- registrations at 50 clients). Filled about once a second, sorted, each
-- kind active since the last time costs a few pages.
--
-- This table covers the events up to `audit_events_indexed.kinds_through`,
-- a mark of its own: an authmd from before this migration, still running
-- while a newer one migrates the database, moves `through` on and fills
-- only the registration table; with one shared mark, the events it
-- indexed would be in neither half of a listing by kind. The events after
-- the mark are found by id (store/listing.rs, `EventIndex::Deferred`).
-- PostgreSQL keeps its index: its migration 0016 changes nothing.
CREATE TABLE audit_events_by_kind (
    kind     TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    PRIMARY KEY (kind, event_id)
) WITHOUT ROWID;
ALTER TABLE audit_events_indexed ADD COLUMN kinds_through INTEGER NOT NULL DEFAULT 0;
UPDATE audit_events_indexed SET kinds_through = through;
-- In key order (read through the old index, before it goes), the same
-- events as the registration table holds.
INSERT INTO audit_events_by_kind (kind, event_id)
    SELECT event, id FROM audit_events
    WHERE id <= (SELECT kinds_through FROM audit_events_indexed)
    ORDER BY event, id;
DROP INDEX audit_events_event;
