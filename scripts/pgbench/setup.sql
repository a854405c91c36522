-- The 1000 returning users idjag.sql registers for.
INSERT INTO users (id, email, email_normalized, email_verified, created_by_agent, created_at)
  SELECT 'usr_' || u, 'user-' || u || '@example.com', 'user-' || u || '@example.com', TRUE, TRUE, 1800000000000
  FROM generate_series(0, 999) u;
INSERT INTO registrations (id, type, status, created_at, updated_at, user_id, created_by_agent, iss, sub)
  SELECT 'reg_u' || u, 'agent-provider', 'active', 1800000000000, 1800000000000, 'usr_' || u, TRUE,
         'http://127.0.0.1:21797', 'user-' || u
  FROM generate_series(0, 999) u;
INSERT INTO delegations (iss, sub, user_id, registration_id, created_at, updated_at)
  SELECT 'http://127.0.0.1:21797', 'user-' || u, 'usr_' || u, 'reg_u' || u, 1800000000000, 1800000000000
  FROM generate_series(0, 999) u;
