-- The claim ceremony: attempts, one-time codes, wrong-guess budgets.

ALTER TABLE registrations ADD COLUMN current_attempt_id TEXT;
ALTER TABLE registrations ADD COLUMN wrong_guesses INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registrations ADD COLUMN locked_at BIGINT;

CREATE TABLE claim_attempts (
    id              TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    email           TEXT NOT NULL,
    link_hash       BYTEA NOT NULL,
    link_expires_at BIGINT NOT NULL,
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    otp_hash        BYTEA,
    otp_expires_at  BIGINT,
    otp_wrong       INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
