-- Agent-verified registration: user matching, delegations, replay protection.

ALTER TABLE users ADD COLUMN email_normalized TEXT;
ALTER TABLE users ADD COLUMN phone_normalized TEXT;
CREATE INDEX users_email ON users(email_normalized);
CREATE INDEX users_phone ON users(phone_normalized);

-- One per (provider, subject): who the provider's user is here, and the
-- registration its ID-JAGs land in (stable while it lives).
CREATE TABLE delegations (
    iss             TEXT NOT NULL,
    sub             TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id),
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    revoked_at      INTEGER,
    PRIMARY KEY (iss, sub)
) WITHOUT ROWID;
CREATE INDEX delegations_user ON delegations(user_id);

-- Used assertion ids: key = first 16 bytes of SHA-256(iss NUL jti), kept
-- until the assertion can no longer be accepted (id_jag.rs).
CREATE TABLE jti_seen (
    key        BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX jti_seen_expiry ON jti_seen(expires_at);
