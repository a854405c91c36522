-- SQLite's migration 0017 drops AUTOINCREMENT from its audit event ids
-- (a read and a write of sqlite_sequence per event). PostgreSQL's ids
-- come from a sequence, which costs nothing of the kind; this migration
-- only keeps the two lists of migrations in step.
SELECT 1;
