-- SQLite's jti_seen is now clustered by expiry and looked up in memory
-- (migrations/sqlite/0005). PostgreSQL keeps its table as it is: replicas
-- share it, and each insert is the cross-replica replay check (ON CONFLICT
-- on the key).
SELECT 1;
