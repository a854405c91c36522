-- authmd schema, SQLite. Times are Unix milliseconds; secrets are SHA-256
-- hashes. Ids are time-ordered (token.rs), so every index here grows at its
-- right-hand end; secrets are found through the id their selector names.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    email              TEXT,
    email_verified     INTEGER NOT NULL DEFAULT 0,
    phone_number       TEXT,
    phone_verified     INTEGER NOT NULL DEFAULT 0,
    name               TEXT,
    created_by_agent   INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL
);

CREATE TABLE registrations (
    id                        TEXT PRIMARY KEY,
    type                      TEXT NOT NULL,     -- anonymous | email-verification | agent-provider
    status                    TEXT NOT NULL,     -- unclaimed | pending_claim | claimed | active | expired | revoked
    created_at                INTEGER NOT NULL,
    updated_at                INTEGER NOT NULL,
    expires_at                INTEGER,           -- claim deadline while unclaimed or pending
    user_id                   TEXT REFERENCES users(id),
    created_by_agent          INTEGER NOT NULL DEFAULT 1,
    claim_token_hash          BLOB,              -- found through id (the token's selector)
    email                     TEXT,
    requested_credential_type TEXT
) WITHOUT ROWID;
-- No partial indexes in this schema: SQLite re-prepares a statement whose
-- bound parameters are compared with a partial index's predicate every time
-- a binding changes, which would put the SQL compiler on the hot path.
CREATE INDEX registrations_claim_deadline ON registrations(status, expires_at);
CREATE INDEX registrations_user ON registrations(user_id);

CREATE TABLE credentials (
    id              TEXT PRIMARY KEY,
    token_hash      BLOB NOT NULL,               -- found through id (the token's selector)
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    user_id         TEXT REFERENCES users(id),
    type            TEXT NOT NULL,               -- api_key | access_token
    source          TEXT NOT NULL,               -- anonymous | email | provider
    scopes          TEXT NOT NULL,               -- space-separated
    issued_at       INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    iss             TEXT,
    sub             TEXT,
    aud             TEXT
) WITHOUT ROWID;
CREATE INDEX credentials_registration ON credentials(registration_id);

CREATE TABLE audit_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              INTEGER NOT NULL,
    event           TEXT NOT NULL,
    registration_id TEXT,
    user_id         TEXT,
    ip              TEXT,
    user_agent      TEXT,
    data            TEXT NOT NULL                -- JSON object
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_event ON audit_events(event, id);
CREATE INDEX audit_events_registration ON audit_events(registration_id);

-- GCRA state: one theoretical arrival time per limited key.
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat INTEGER NOT NULL
) WITHOUT ROWID;

-- Credentials whose validity or scopes changed; every replica reads this
-- log to drop what it cached. AUTOINCREMENT: a seq is never reused.
CREATE TABLE invalidations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL,
    at         INTEGER NOT NULL
);
CREATE INDEX invalidations_at ON invalidations(at);
