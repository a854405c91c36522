-- A registration's audit events, found through a table the writer fills
-- about once a second instead of an index written in every commit (issues
-- 14 and 18). `audit_events_registration` was keyed by registration, and
-- the events of a registration made earlier (a refresh rotation, a known
-- agent registering again) land on that registration's own index page:
-- in a busy database every such event wrote a 4 KiB page of its own to
-- the WAL (40 of the 69 frames of a commit of refresh rotations at 50
-- clients). Written once a second, sorted, the pages of the registrations
-- active in that second are written once each.
--
-- `audit_events_indexed.through` is the largest event id the table covers;
-- the events after it (about the last second's) are found by id, which
-- is the table's own key (store/listing.rs, `EventIndex::Deferred`).
-- Event ids are AUTOINCREMENT, never reused, and given in commit order by
-- the one writer, so "after `through`" is exactly what is not yet in the
-- table. PostgreSQL keeps its index (its WAL logs the index entry, not the
-- page): its migration 0015 changes nothing.
CREATE TABLE audit_events_by_registration (
    registration_id TEXT NOT NULL,
    event_id        INTEGER NOT NULL,
    PRIMARY KEY (registration_id, event_id)
) WITHOUT ROWID;
-- In key order (read through the old index, before it goes).
INSERT INTO audit_events_by_registration (registration_id, event_id)
    SELECT registration_id, id FROM audit_events WHERE registration_id IS NOT NULL
    ORDER BY registration_id, id;
DROP INDEX audit_events_registration;
CREATE TABLE audit_events_indexed (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    through INTEGER NOT NULL
);
INSERT INTO audit_events_indexed (one, through)
    SELECT 1, COALESCE(MAX(id), 0) FROM audit_events;
