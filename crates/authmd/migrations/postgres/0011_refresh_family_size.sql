-- How many tokens a refresh family has issued, kept on its row (issue 18).
-- A reuse reports how many tokens died with the family; counting them
-- would scan every refresh token (no token index is keyed by family, see
-- 0010), in SQLite's single writer, on a request any agent holding a spent
-- token can make. A rotation already updates the family's row, so it
-- counts there.
ALTER TABLE refresh_families ADD COLUMN tokens BIGINT NOT NULL DEFAULT 1;
UPDATE refresh_families SET tokens =
    (SELECT COUNT(*) FROM refresh_tokens t WHERE t.family_id = refresh_families.id);
