-- The statements of one anonymous registration on PostgreSQL (rate limits
-- off), as authmd sends them: BEGIN, the writes in one pipeline (one round
-- trip), COMMIT. The bound for scripts/load-matrix.sh's anon cell. Run by
-- scripts/pgbench-bound.sh.
\set r random(1, 9000000000000000)
BEGIN;
\startpipeline
INSERT INTO registrations (id, type, status, created_at, updated_at, expires_at, created_by_agent, claim_token_hash)
  VALUES ('reg_' || md5(:r::text), 'anonymous', 'unclaimed', 1800000000000, 1800000000000, 1800086400000, TRUE, sha256(('c' || :r)::bytea));
INSERT INTO credentials (id, token_hash, registration_id, type, source, scopes, issued_at)
  VALUES ('crd_' || md5(:r::text), sha256(('k' || :r)::bytea), 'reg_' || md5(:r::text), 'api_key', 'anonymous', 'api.read', 1800000000000);
INSERT INTO audit_events (at, event, registration_id, user_id, ip, user_agent, data, provider)
  SELECT a, e, r, u, i, ua, d::jsonb, p
  FROM UNNEST(ARRAY[1800000000000, 1800000000000]::bigint[],
              ARRAY['registration.created', 'credential.issued']::text[],
              ARRAY['reg_' || md5(:r::text), 'reg_' || md5(:r::text)]::text[],
              ARRAY[NULL, NULL]::text[], ARRAY['127.0.0.1', '127.0.0.1']::text[], ARRAY[NULL, NULL]::text[],
              ARRAY['{"registration_type":"anonymous","scopes":["api.read"]}',
                    '{"credential_id":"crd_x","credential_type":"api_key","source":"anonymous","scopes":["api.read"]}']::text[],
              ARRAY[NULL, NULL]::text[]) AS t(a, e, r, u, i, ua, d, p);
\endpipeline
COMMIT;
