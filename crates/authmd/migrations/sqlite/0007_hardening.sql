-- Hardening (issue 15): revocation by the assertion's issue time.

-- The `iat` of the ID-JAG a provider-issued credential came from (the
-- provider's clock, milliseconds). A logout token ends every credential
-- whose assertion was issued up to the token's `iat` (plus the skew),
-- however late the assertion was redeemed. NULL for credentials that came
-- from no assertion, and for provider credentials issued before this
-- migration: their assertion's `iat` was not kept, and a logout treats an
-- unknown issue time as "before" (revokes): the user withdrew consent, and
-- an agent that still has it registers again with a fresh ID-JAG.
ALTER TABLE credentials ADD COLUMN assertion_iat INTEGER;

-- The newest invalidation `seq` the sweep has purged (one row). A replica
-- whose last read `seq` is below it missed entries (it could not read the
-- log for longer than the log is kept) and drops its whole cache.
CREATE TABLE invalidations_purged (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL
);
INSERT INTO invalidations_purged (id, through_seq) VALUES (1, 0);

-- Operator blocks: who may not register again. One key per target:
-- `subject:<iss>\n<sub>`, `user:<id>`, `email:<mailbox>` (lower-cased,
-- `+tag` dropped). Checked inside every registering transaction.
CREATE TABLE blocks (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,     -- subject | user | email
    iss        TEXT,
    sub        TEXT,
    user_id    TEXT,
    email      TEXT,
    created_at INTEGER NOT NULL,
    operator   TEXT NOT NULL,
    reason     TEXT
) WITHOUT ROWID;
