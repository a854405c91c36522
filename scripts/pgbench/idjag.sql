-- The statements of one agent-verified registration of a returning user
-- (1000 users, each with its delegation and registration) on PostgreSQL,
-- as authmd sends them: BEGIN; the replay insert, the locks, the
-- delegation and the block check in one pipeline; the writes in another;
-- COMMIT. The bound for scripts/load-matrix.sh's idjag cell. Run by
-- scripts/pgbench-bound.sh, which creates the users. pgbench takes any
-- ':name' as a variable, even inside a string, so no literal here has a
-- colon before a letter (chr(58), or a space in the JSON).
\set r random(1, 9000000000000000)
\set u random(0, 999)
BEGIN;
\startpipeline
INSERT INTO jti_seen (key, expires_at) VALUES (sha256(('j' || :r)::bytea), 1800000600000) ON CONFLICT (key) DO NOTHING;
SELECT pg_advisory_xact_lock(hashtextextended('subject http://127.0.0.1:21797 user-' || :u, 0));
SELECT pg_advisory_xact_lock(hashtextextended('email user-' || :u || '@example.com', 0));
SELECT d.user_id, d.registration_id, r.status, d.revoked_before,
       EXISTS (SELECT 1 FROM blocks b WHERE b.key = 'user' || chr(58) || d.user_id)
  FROM delegations d JOIN registrations r ON r.id = d.registration_id
  WHERE d.iss = 'http://127.0.0.1:21797' AND d.sub = 'user-' || :u FOR SHARE OF r;
SELECT EXISTS (SELECT 1 FROM blocks WHERE key IN ('subject' || chr(58) || 'http://127.0.0.1:21797 user-' || :u, NULL, 'email' || chr(58) || 'user-' || :u || '@example.com'));
\endpipeline
\startpipeline
INSERT INTO credentials (id, token_hash, registration_id, user_id, type, source, scopes, issued_at, expires_at, iss, sub, aud, assertion_iat)
  VALUES ('crd_' || md5(:r::text), sha256(('k' || :r)::bytea), 'reg_u' || :u, 'usr_' || :u, 'access_token', 'provider',
          'api.read api.write', 1800000000000, 1800003600000, 'http://127.0.0.1:21797', 'user-' || :u, 'http://127.0.0.1:21080', 1800000000000);
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  SELECT a, e, r, u, i, ua, d::jsonb, p
  FROM UNNEST(ARRAY[1800000000000, 1800000000000]::bigint[],
              ARRAY['registration.created', 'credential.issued']::text[],
              ARRAY['reg_u' || :u, 'reg_u' || :u]::text[],
              ARRAY['usr_' || :u, 'usr_' || :u]::text[], ARRAY['127.0.0.1', '127.0.0.1']::text[], ARRAY[NULL, NULL]::text[],
              ARRAY['{"registration_type":"agent-provider","user_provisioned": false,"iss":"http://127.0.0.1:21797","sub":"user-1"}',
                    '{"credential_id":"crd_x","credential_type":"access_token","source":"provider","scopes":["api.read","api.write"],"iss":"http://127.0.0.1:21797","sub":"user-1"}']::text[],
              ARRAY['http://127.0.0.1:21797', 'http://127.0.0.1:21797']::text[]) AS t(a, e, r, u, i, ua, d, p);
\endpipeline
COMMIT;
