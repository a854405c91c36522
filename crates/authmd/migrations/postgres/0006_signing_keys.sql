-- authmd's own signing keys: the identity assertions it gives upstream
-- APIs (and any later token it signs) verify against the public halves,
-- published at /.well-known/jwks.json (service_keys.rs).
--
-- private_key is the PKCS#8 key sealed with AES-256-GCM under a key derived
-- from server.secret_key, with the kid as associated data
-- (service_keys/seal.rs). A key signs from `signs_from` until a newer key's
-- `signs_from`; it is published until `published_until`, which a rotation
-- sets far enough ahead that everything it signed has expired (NULL: the
-- newest key, published until the next rotation).
CREATE TABLE signing_keys (
    kid             TEXT PRIMARY KEY,
    alg             TEXT NOT NULL,
    public_jwk      TEXT NOT NULL,
    private_key     BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    signs_from      BIGINT NOT NULL,
    published_until BIGINT
);
