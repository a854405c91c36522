-- Agent-verified registration: user matching, delegations, replay protection.

ALTER TABLE users ADD COLUMN email_normalized TEXT;
ALTER TABLE users ADD COLUMN phone_normalized TEXT;
CREATE INDEX users_verified_email ON users(email_normalized) WHERE email_verified;
CREATE INDEX users_verified_phone ON users(phone_normalized) WHERE phone_verified;

CREATE TABLE delegations (
    iss             TEXT NOT NULL,
    sub             TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id),
    registration_id TEXT NOT NULL REFERENCES registrations(id),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    PRIMARY KEY (iss, sub)
);
CREATE INDEX delegations_user ON delegations(user_id);

-- Used assertion ids; the primary key makes check-and-record atomic across
-- replicas (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE jti_seen (
    key        BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX jti_seen_expiry ON jti_seen(expires_at);
