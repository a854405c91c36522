-- Hardening (issue 15): revocation by the assertion's issue time.

-- The `iat` of the ID-JAG a provider-issued credential came from (see the
-- SQLite migration 0006 for why NULL, the value of earlier rows, means
-- "revoked by any logout of its subject").
ALTER TABLE credentials ADD COLUMN assertion_iat BIGINT;
