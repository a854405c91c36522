-- Used assertion ids, clustered by expiry: a key is a hash, so a table
-- ordered by it took every insert at a random page. Ordered by
-- (expires_at, key), rows arrive at the end (expiry grows with time,
-- id_jag.rs) and the sweep deletes from the start; "seen before?" is
-- answered by the store's in-memory set, loaded from this table
-- (store/sqlite/jti.rs).
CREATE TABLE jti_seen_by_expiry (
    expires_at INTEGER NOT NULL,
    key        BLOB NOT NULL,
    PRIMARY KEY (expires_at, key)
) WITHOUT ROWID;
INSERT INTO jti_seen_by_expiry (expires_at, key) SELECT expires_at, key FROM jti_seen;
DROP TABLE jti_seen;
ALTER TABLE jti_seen_by_expiry RENAME TO jti_seen;
