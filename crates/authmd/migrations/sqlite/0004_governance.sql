-- Revocation and governance: provider logout tokens, operator controls,
-- the audit trail's provider filter.

-- Assertions issued before this time (the provider's clock: the `iat` of
-- the logout token, or the operator's revocation time) no longer register
-- for this (iss, sub): a logout also retires ID-JAGs minted before it.
ALTER TABLE delegations ADD COLUMN revoked_before INTEGER;

-- The provider and subject of an agent-provider registration, so that
-- operators can find and revoke everything one provider issued.
ALTER TABLE registrations ADD COLUMN iss TEXT;
ALTER TABLE registrations ADD COLUMN sub TEXT;
CREATE INDEX registrations_iss ON registrations(iss);
UPDATE registrations
   SET iss = (SELECT c.iss FROM credentials c WHERE c.registration_id = registrations.id
              AND c.iss IS NOT NULL LIMIT 1),
       sub = (SELECT c.sub FROM credentials c WHERE c.registration_id = registrations.id
              AND c.iss IS NOT NULL LIMIT 1)
 WHERE type = 'agent-provider';

-- The provider (`iss`) an event concerns, for filtering the trail.
ALTER TABLE audit_events ADD COLUMN provider TEXT;
UPDATE audit_events SET provider = json_extract(data, '$.iss');
