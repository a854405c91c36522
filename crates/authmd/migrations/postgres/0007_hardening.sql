-- Hardening (issue 15): revocation by the assertion's issue time.

-- The `iat` of the ID-JAG a provider-issued credential came from (see the
-- SQLite migration 0006 for why NULL, the value of earlier rows, means
-- "revoked by any logout of its subject").
ALTER TABLE credentials ADD COLUMN assertion_iat BIGINT;

-- The newest invalidation `seq` the sweep has purged (one row; see the
-- SQLite migration 0006).
CREATE TABLE invalidations_purged (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq BIGINT NOT NULL
);
INSERT INTO invalidations_purged (id, through_seq) VALUES (1, 0);

-- Operator blocks (see the SQLite migration 0006).
CREATE TABLE blocks (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    iss        TEXT,
    sub        TEXT,
    user_id    TEXT,
    email      TEXT,
    created_at BIGINT NOT NULL,
    operator   TEXT NOT NULL,
    reason     TEXT
);
