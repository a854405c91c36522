-- When an expired refresh family's row may be deleted, kept apart from its
-- expiry (issue 18). Every rotation moves the family's `expires_at` to its
-- newest token's; with that column indexed, each rotation also moved the
-- family's index entry, from a page of its own in a busy database (the
-- old expiry is anywhere in the index). Only the purge searched that
-- index, and the purge need not be exact to the second: it may delete a
-- family a day late. So the purge searches `purge_after`, which is at
-- least `expires_at` and moves only when a rotation passes it, then a day
-- beyond (`FAMILY_PURGE_SLACK` in src/store/mod.rs): a family that rotates
-- every hour moves its index entry once a day instead of every hour.
-- `expires_at` stays exact, on the row, for the answers that must be
-- (whether a registration has anything live left).
ALTER TABLE refresh_families ADD COLUMN purge_after BIGINT NOT NULL DEFAULT 0;
UPDATE refresh_families SET purge_after = expires_at;
DROP INDEX refresh_families_expiry;
CREATE INDEX refresh_families_purge ON refresh_families(purge_after);
