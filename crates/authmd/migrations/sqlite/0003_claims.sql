-- The claim ceremony: attempts, one-time codes, wrong-guess budgets.

ALTER TABLE registrations ADD COLUMN current_attempt_id TEXT;
ALTER TABLE registrations ADD COLUMN wrong_guesses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registrations ADD COLUMN locked_at INTEGER;

-- One per claim email sent. The link token and the code are stored only as
-- hashes (the code keyed, see claim.rs).
CREATE TABLE claim_attempts (
    id              TEXT PRIMARY KEY,             -- cla_…, the link token's selector
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    email           TEXT NOT NULL,
    link_hash       BLOB NOT NULL,
    link_expires_at INTEGER NOT NULL,
    status          TEXT NOT NULL,                -- open | superseded | denied | completed
    created_at      INTEGER NOT NULL,
    otp_hash        BLOB,
    otp_expires_at  INTEGER,
    otp_wrong       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Process-wide settings (the generated code key when none is configured).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
