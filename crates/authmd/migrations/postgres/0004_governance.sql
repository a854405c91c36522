-- Revocation and governance: provider logout tokens, operator controls,
-- the audit trail's provider filter and its live tail.

-- Assertions issued before this time (the provider's clock: the `iat` of
-- the logout token, or the operator's revocation time) no longer register
-- for this (iss, sub): a logout also retires ID-JAGs minted before it.
ALTER TABLE delegations ADD COLUMN revoked_before BIGINT;

-- The provider and subject of an agent-provider registration, so that
-- operators can find and revoke everything one provider issued.
ALTER TABLE registrations ADD COLUMN iss TEXT;
ALTER TABLE registrations ADD COLUMN sub TEXT;
CREATE INDEX registrations_iss ON registrations(iss);
UPDATE registrations r SET iss = c.iss, sub = c.sub
  FROM (SELECT DISTINCT ON (registration_id) registration_id, iss, sub
          FROM credentials WHERE iss IS NOT NULL) c
 WHERE c.registration_id = r.id;

-- The provider (`iss`) an event concerns, for filtering the trail.
ALTER TABLE audit_events ADD COLUMN provider TEXT;
UPDATE audit_events SET provider = data->>'iss';

-- The writing transaction's id. Identity values are handed out at insert
-- and transactions commit in any order, so a reader following `id` alone
-- could pass an event that commits later with a smaller id. A tail reads in
-- (tx, id) order and only rows of transactions older than every running
-- one (`pg_snapshot_xmin`): those are final, and anything committed later
-- sorts after them.
ALTER TABLE audit_events ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_events_tx ON audit_events(tx, id);
