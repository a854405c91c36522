-- A delegation's live API keys, for the cap on them (issue 14). Every
-- agent-verified registration that issues a key asks for its delegation's
-- live keys past the newest N. Through credentials_registration that walked
-- every key the delegation was ever issued (revoked keys are kept), with a
-- table lookup each: a cost that grew with the delegation's age, paid in
-- the registering transaction (on SQLite, in its single writer). This index holds the live ones only, and only
-- those a provider's assertion issued (the cap's keys): an anonymous or
-- claimed registration's key is never looked up this way, and adding it
-- here would cost every anonymous registration an index write.
CREATE INDEX credentials_live_api_keys ON credentials(registration_id, id)
    WHERE type = 'api_key' AND source = 'provider' AND revoked_at IS NULL;
