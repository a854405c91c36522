-- Indexes that are only ever searched with `=` hold the rows that have a
-- value. An anonymous registration has neither a user (until it is claimed)
-- nor a provider, and wrote a NULL entry into both indexes that no query
-- reads: every lookup through them is `column = …`, which a NULL never
-- matches and which the planner knows to imply `IS NOT NULL`. Two index
-- writes of every anonymous registration are gone. (The users' email and
-- phone indexes here are partial already, on the verified ones.)
DROP INDEX registrations_user;
CREATE INDEX registrations_user ON registrations(user_id) WHERE user_id IS NOT NULL;
DROP INDEX registrations_iss;
CREATE INDEX registrations_iss ON registrations(iss) WHERE iss IS NOT NULL;
