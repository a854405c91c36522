-- The statements of one anonymous registration on PostgreSQL (rate limits
-- off), as authmd runs them: the bound for scripts/load-matrix.sh's anon
-- cell. Run by scripts/pgbench-bound.sh.
\set r random(1, 9000000000000000)
BEGIN;
INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent, claim_token_hash)
  VALUES ('reg_' || md5(:r::text), 'anonymous', 'unclaimed', 1800000000000, 1800000000000, 1800086400000, TRUE, sha256(('c' || :r)::bytea));
INSERT INTO credentials (id, token_hash, registration_id, type, source, scopes, issued_at)
  VALUES ('crd_' || md5(:r::text), sha256(('k' || :r)::bytea), 'reg_' || md5(:r::text), 'api_key', 'anonymous', 'api.read', 1800000000000);
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  VALUES (1800000000000, 'registration.created', 'reg_' || md5(:r::text), NULL, '127.0.0.1', NULL, '{"registration_type":"anonymous","scopes":["api.read"]}'::text::jsonb, NULL);
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  VALUES (1800000000000, 'credential.issued', 'reg_' || md5(:r::text), NULL, '127.0.0.1', NULL, '{"credential_id":"crd_x","credential_type":"api_key","source":"anonymous","scopes":["api.read"]}'::text::jsonb, NULL);
COMMIT;
