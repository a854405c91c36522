-- The statements of one agent-verified registration of a returning user
-- (1000 users, each with its delegation and registration) on PostgreSQL,
-- as authmd runs them: the bound for scripts/load-matrix.sh's idjag cell.
-- Run by scripts/pgbench-bound.sh, which creates the users.
\set r random(1, 9000000000000000)
\set u random(0, 999)
BEGIN;
INSERT INTO jti_seen (key, expires_at) VALUES (sha256(('j' || :r)::bytea), 1800000600000) ON CONFLICT (key) DO NOTHING;
SELECT pg_advisory_xact_lock(hashtextextended('subject http://127.0.0.1:21797 user-' || :u, 0));
SELECT pg_advisory_xact_lock(hashtextextended('email user-' || :u || '@example.com', 0));
SELECT d.user_id, d.registration_id, r.status, d.revoked_before FROM delegations d
  JOIN registrations r ON r.id = d.registration_id
  WHERE d.iss = 'http://127.0.0.1:21797' AND d.sub = 'user-' || :u FOR SHARE OF r;
INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes, issued_at, expires_at, iss, sub, aud)
  VALUES ('crd_' || md5(:r::text), sha256(('k' || :r)::bytea), 'reg_u' || :u, 'usr_' || :u, 'access_token', 'provider',
          'api.read api.write', 1800000000000, 1800003600000, 'http://127.0.0.1:21797', 'user-' || :u, 'http://127.0.0.1:21080');
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  VALUES (1800000000000, 'registration.created', 'reg_u' || :u, 'usr_' || :u, '127.0.0.1', NULL,
          '{"registration_type":"agent-provider","user_provisioned":false,"iss":"http://127.0.0.1:21797","sub":"user-1"}'::text::jsonb, 'http://127.0.0.1:21797');
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  VALUES (1800000000000, 'credential.issued', 'reg_u' || :u, 'usr_' || :u, '127.0.0.1', NULL,
          '{"credential_id":"crd_x","credential_type":"access_token","source":"provider","scopes":["api.read","api.write"],"iss":"http://127.0.0.1:21797","sub":"user-1"}'::text::jsonb, 'http://127.0.0.1:21797');
COMMIT;
