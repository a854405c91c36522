-- SQLite's migration 0015 replaces its index of audit events by
-- registration with a table its writer fills about once a second: on
-- SQLite each event of an earlier registration wrote a whole index page to
-- the WAL. PostgreSQL's WAL logs the index entry, not the page, so
-- `audit_events_registration` stays; this migration only keeps the two
-- lists of migrations in step.
SELECT 1;
