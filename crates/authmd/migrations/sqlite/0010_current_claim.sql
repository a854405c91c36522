-- The current dialect's claim ceremony and refresh tokens (issue 18,
-- docs/protocol.md §20.5, §20.8).

-- A current-dialect attempt's link is handed to the agent, so holding it
-- proves nothing: a code is minted only after the user signed in by an
-- emailed one-time link (sign_in_hash), opened in the browser that asked
-- for it (sign_in_browser, the hash of a cookie). Both stored as hashes.
ALTER TABLE claim_attempts ADD COLUMN needs_sign_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE claim_attempts ADD COLUMN sign_in_hash BLOB;
ALTER TABLE claim_attempts ADD COLUMN sign_in_browser BLOB;
ALTER TABLE claim_attempts ADD COLUMN sign_in_expires_at INTEGER;

-- Rotating refresh tokens (RFC 9700 §4.14.2): each use spends the token
-- and issues the next of its family; presenting a spent one revokes the
-- family. What is per family (its registration, its revocation, the
-- expiry of its newest token) lives in a row of its own, so a rotation
-- appends a token and touches one small family row, and no index of the
-- tokens is keyed by family or registration (each such index would put
-- every rotation on a page of its own).
CREATE TABLE refresh_families (
    id              TEXT PRIMARY KEY,             -- the first token's id
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,             -- its newest token's expiry
    revoked_at      INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_families_registration ON refresh_families(registration_id);
CREATE INDEX refresh_families_expiry ON refresh_families(expires_at);
CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY,                  -- rft_…, the token's selector
    token_hash BLOB NOT NULL,
    family_id  TEXT NOT NULL REFERENCES refresh_families(id),
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at);
