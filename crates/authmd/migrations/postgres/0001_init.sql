-- authmd schema, PostgreSQL. Times are Unix milliseconds; secrets are SHA-256 hashes.

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    email              TEXT,
    email_verified     BOOLEAN NOT NULL DEFAULT FALSE,
    phone_number       TEXT,
    phone_verified     BOOLEAN NOT NULL DEFAULT FALSE,
    name               TEXT,
    created_by_agent   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         BIGINT NOT NULL
);

CREATE TABLE registrations (
    id                        TEXT PRIMARY KEY,
    type                      TEXT NOT NULL,
    status                    TEXT NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    expires_at                BIGINT,
    user_id                   TEXT REFERENCES users(id),
    created_by_agent          BOOLEAN NOT NULL DEFAULT TRUE,
    claim_token_hash          BYTEA,
    email                     TEXT,
    requested_credential_type TEXT
);
CREATE INDEX registrations_claim_deadline ON registrations(expires_at)
    WHERE status IN ('unclaimed', 'pending_claim');
CREATE INDEX registrations_user ON registrations(user_id);

CREATE TABLE credentials (
    id              TEXT PRIMARY KEY,
    token_hash      BYTEA NOT NULL,
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    user_id         TEXT REFERENCES users(id),
    type            TEXT NOT NULL,
    source          TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    iss             TEXT,
    sub             TEXT,
    aud             TEXT
);
CREATE INDEX credentials_registration ON credentials(registration_id);

CREATE TABLE audit_events (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              BIGINT NOT NULL,
    event           TEXT NOT NULL,
    registration_id TEXT,
    user_id         TEXT,
    ip              TEXT,
    user_agent      TEXT,
    data            JSONB NOT NULL
);
CREATE INDEX audit_events_at ON audit_events(at);
CREATE INDEX audit_events_event ON audit_events(event, id);
CREATE INDEX audit_events_registration ON audit_events(registration_id);

CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);

-- Writers take an advisory transaction lock before appending, so seq order
-- is commit order and a reader remembering the last seq never misses one.
CREATE TABLE invalidations (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash BYTEA NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX invalidations_at ON invalidations(at);
