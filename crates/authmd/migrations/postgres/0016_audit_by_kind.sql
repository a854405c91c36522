-- SQLite's migration 0016 replaces its index of audit events by kind with
-- a table its writer fills about once a second, as 0015 did for the index
-- by registration. PostgreSQL's WAL logs the index entry, not the page, so
-- `audit_events_event` stays; this migration only keeps the two lists of
-- migrations in step.
SELECT 1;
