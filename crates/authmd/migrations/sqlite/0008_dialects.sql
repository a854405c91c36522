-- The wire dialect each registration was made in (issue 18): 'original'
-- (POST /agent/auth, docs/protocol.md §3) or 'current' (POST
-- /agent/identity, §20). Operators' listings show it; nothing else
-- depends on it. Every registration before this migration is original.
ALTER TABLE registrations ADD COLUMN dialect TEXT NOT NULL DEFAULT 'original';
