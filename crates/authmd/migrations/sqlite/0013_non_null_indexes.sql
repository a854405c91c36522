-- Indexes that are only ever searched with `=` hold the rows that have a
-- value. An anonymous registration has neither a user (until it is claimed)
-- nor a provider, and a user may have no phone number or email address:
-- each such row wrote a NULL entry that no query reads, since every lookup
-- through these indexes is `column = …`, which a NULL never matches and
-- which the planner knows to imply `IS NOT NULL` (no bound value is needed
-- to choose the index). Two index writes of every anonymous registration
-- are gone, and one or two of every new user without a phone or email.
DROP INDEX registrations_user;
CREATE INDEX registrations_user ON registrations(user_id) WHERE user_id IS NOT NULL;
DROP INDEX registrations_iss;
CREATE INDEX registrations_iss ON registrations(iss) WHERE iss IS NOT NULL;
DROP INDEX users_email;
CREATE INDEX users_email ON users(email_normalized) WHERE email_normalized IS NOT NULL;
DROP INDEX users_phone;
CREATE INDEX users_phone ON users(phone_normalized) WHERE phone_normalized IS NOT NULL;
