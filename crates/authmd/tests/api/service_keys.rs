//! authmd's own signing keys: created once, shared by replicas, sealed at
//! rest, published at `/.well-known/jwks.json`, rotated without breaking
//! what was signed.

use std::sync::Arc;
use std::time::Duration;

use authmd::audit::RequestMeta;
use authmd::service_keys::{MAX_LIFETIME, PUBLISH_AHEAD, RELOAD, RETIRE_MARGIN, SignError};
use authmd::{AuthMd, Timestamp};
use authmd_jose::jwk::KeySet;
use authmd_jose::{Algorithm, Compact};
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb};

fn claims(now: Timestamp, life: Duration) -> Map<String, Value> {
    json!({"iss": "http://127.0.0.1:8080", "sub": "reg_1", "iat": now.as_secs(),
           "exp": now.plus(life).as_secs()})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// The kids a JWKS document publishes.
fn kids(jwks: &[u8]) -> Vec<String> {
    let set = KeySet::parse(jwks).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.skipped.is_empty(), "unusable keys: {:?}", set.skipped);
    let mut kids: Vec<String> = set.keys.iter().map(|k| k.kid.clone()).collect();
    kids.sort();
    kids
}

/// Verifies `token` against a JWKS document as an upstream would: by
/// `kid`, with the key's own algorithm.
pub fn verifies(jwks: &[u8], token: &str) -> bool {
    let Ok(c) = Compact::parse(token, 16 * 1024) else {
        return false;
    };
    let Ok(set) = KeySet::parse(jwks) else {
        return false;
    };
    let (Some(kid), Some(alg)) = (
        c.header_str("kid"),
        c.header_str("alg").and_then(Algorithm::from_name),
    ) else {
        return false;
    };
    set.keys
        .iter()
        .find(|k| k.kid == kid)
        .is_some_and(|k| k.verify(alg, c.signing_input(), &c.signature))
}

async fn published(t: &TestApp) -> Vec<u8> {
    let r = t.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    r.body
}

both_backends! {
    /// Replicas starting together on an empty database create one key
    /// between them, and publish the same one.
    async fn replicas_starting_together_share_one_key(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let mut starts = Vec::new();
        for _ in 0..4 {
            let db = Arc::clone(&db);
            starts.push(tokio::spawn(async move { TestApp::on(db, "").await.app }));
        }
        let mut apps: Vec<AuthMd> = Vec::new();
        for s in starts {
            apps.push(s.await.unwrap_or_else(|e| panic!("{e}")));
        }
        let jwks: Vec<Vec<String>> = apps.iter().map(|a| kids(&a.service_keys().jwks())).collect();
        assert_eq!(jwks[0].len(), 1, "{jwks:?}");
        assert!(jwks.iter().all(|k| *k == jwks[0]), "{jwks:?}");
        // A restart keeps it.
        let again = TestApp::on(Arc::clone(&db), "").await;
        assert_eq!(kids(&again.app.service_keys().jwks()), jwks[0]);
    }
}

both_backends! {
    async fn signed_tokens_verify_against_the_published_jwks(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let now = Timestamp::now();
        let token = t.app.service_keys()
            .sign("authmd-identity+jwt", &claims(now, Duration::from_secs(60)), now)
            .unwrap_or_else(|e| panic!("{e}"));
        let c = Compact::parse(&token, 16 * 1024).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.header_str("alg"), Some("ES256"), "ES256 by default");
        assert_eq!(c.header_str("typ"), Some("authmd-identity+jwt"));
        assert_eq!(c.claim_str("sub"), Some("reg_1"));
        let jwks = published(&t).await;
        assert!(verifies(&jwks, &token));
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert!(!verifies(&jwks, &forged));
        // The public keys only: no private member anywhere.
        let doc: Value = serde_json::from_slice(&jwks).unwrap_or_default();
        for k in doc["keys"].as_array().cloned().unwrap_or_default() {
            assert!(k.get("d").is_none(), "{k}");
            assert_eq!(k["use"], "sig");
        }
        let asm = t.get("/.well-known/oauth-authorization-server", None).await.json();
        assert_eq!(asm["jwks_uri"], "http://127.0.0.1:8080/.well-known/jwks.json");
    }
}

#[tokio::test]
async fn lifetimes_beyond_the_limit_are_refused() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let keys = t.app.service_keys();
    let now = Timestamp::now();
    assert_eq!(
        keys.sign(
            "x",
            &claims(now, MAX_LIFETIME + Duration::from_secs(1)),
            now
        )
        .err(),
        Some(SignError::Lifetime)
    );
    let mut no_exp = claims(now, Duration::from_secs(60));
    no_exp.remove("exp");
    assert_eq!(
        keys.sign("x", &no_exp, now).err(),
        Some(SignError::Lifetime)
    );
    assert!(keys.sign("x", &claims(now, MAX_LIFETIME), now).is_ok());
}

#[tokio::test]
async fn the_configured_algorithm_is_used_for_new_keys() {
    let t = TestApp::new(Backend::Sqlite, "[signing]\nalgorithm = \"EdDSA\"").await;
    let now = Timestamp::now();
    let token = t
        .app
        .service_keys()
        .sign("x", &claims(now, Duration::from_secs(60)), now)
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Compact::parse(&token, 16 * 1024).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.header_str("alg"), Some("EdDSA"));
    assert!(verifies(&published(&t).await, &token));
    let bad = authmd::config::load_str("[signing]\nalgorithm = \"HS256\"", &Default::default());
    assert_eq!(
        bad.err().map(|e| e.key),
        Some("signing.algorithm".to_owned())
    );
}

both_backends! {
    /// A rotation publishes the new key at once, signs with it only after
    /// PUBLISH_AHEAD, keeps the old key published until what it signed has
    /// expired, and reaches another replica (on an unknown kid at once, or
    /// at its next reload).
    async fn rotation_publishes_ahead_and_retires_late(backend: Backend) {
        let a = TestApp::new(backend, "").await;
        let b = a.replica("").await;
        let now = Timestamp::now();
        let old = a.app.service_keys().current_kid(now).unwrap_or_default();
        let before = a.app.service_keys()
            .sign("x", &claims(now, MAX_LIFETIME), now)
            .unwrap_or_else(|e| panic!("{e}"));

        let rotated = a.app.service_keys()
            .rotate(now, false, "test", &RequestMeta::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(rotated.kid, old);
        assert_eq!(rotated.signs_from, now.plus(PUBLISH_AHEAD));
        let both = {
            let mut k = vec![old.clone(), rotated.kid.clone()];
            k.sort();
            k
        };
        assert_eq!(kids(&published(&a).await), both);
        // Not yet signing with it; then only with it.
        assert_eq!(a.app.service_keys().current_kid(now).as_deref(), Some(old.as_str()));
        let later = now.plus(PUBLISH_AHEAD);
        assert_eq!(a.app.service_keys().current_kid(later), Some(rotated.kid.clone()));
        let after = a.app.service_keys()
            .sign("x", &claims(later, Duration::from_secs(60)), later)
            .unwrap_or_else(|e| panic!("{e}"));

        // Replica B learns the new kid when asked for it.
        assert_eq!(kids(&b.app.service_keys().jwks()), vec![old.clone()]);
        assert!(b.app.service_keys().verifying_key(&rotated.kid, now).await.is_some());
        let jwks_b = published(&b).await;
        assert!(verifies(&jwks_b, &before), "the old key's token still verifies");
        assert!(verifies(&jwks_b, &after), "the new key's token verifies");

        // The old key is published exactly until its last token is past.
        let retire = later.plus(RELOAD).plus(MAX_LIFETIME).plus(RETIRE_MARGIN);
        assert_eq!(rotated.replaced_until, retire);
        a.app.service_keys().reload(retire.minus(Duration::from_secs(1))).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kids(&a.app.service_keys().jwks()), both);
        a.app.service_keys().reload(retire).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kids(&a.app.service_keys().jwks()), vec![rotated.kid.clone()]);
        // ... and the sweep deletes it then.
        a.app.store().purge(retire, retire).await.unwrap_or_else(|e| panic!("{e}"));
        let rows = a.app.store().signing_keys(now).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.iter().map(|r| r.kid.clone()).collect::<Vec<_>>(), vec![rotated.kid.clone()]);

        let events = a.events("operator.action").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data["action"], "rotate_signing_key");
        assert_eq!(events[0].data["kid"], rotated.kid.as_str());
    }
}

both_backends! {
    /// An old key never signs a token that outlives its publication.
    async fn a_replaced_key_signs_nothing_that_outlives_it(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let keys = t.app.service_keys();
        let now = Timestamp::now();
        let rotated = keys.rotate(now, false, "test", &RequestMeta::default()).await
            .unwrap_or_else(|e| panic!("{e}"));
        // Just before the new key signs, the old one still may: its tokens
        // expire before it is unpublished.
        let just_before = rotated.signs_from.minus(Duration::from_secs(1));
        let token = keys.sign("x", &claims(just_before, MAX_LIFETIME), just_before)
            .unwrap_or_else(|e| panic!("{e}"));
        let exp = Compact::parse(&token, 16 * 1024).ok()
            .and_then(|c| c.claims.get("exp").and_then(Value::as_i64)).unwrap_or(i64::MAX);
        assert!(exp < rotated.replaced_until.as_secs());
    }
}

both_backends! {
    /// Private keys are stored sealed under server.secret_key; a server
    /// started with another secret cannot use them, so it rotates at once
    /// (the old key stays published for what it signed).
    async fn keys_are_sealed_and_a_new_secret_rotates(backend: Backend) {
        let first = "[server]\nsecret_key = \"0101010101010101010101010101010101010101010101010101010101010101\"";
        let second = "[server]\nsecret_key = \"0202020202020202020202020202020202020202020202020202020202020202\"";
        let a = TestApp::new(backend, first).await;
        let now = Timestamp::now();
        let old = a.app.service_keys().current_kid(now).unwrap_or_default();
        let rows = a.app.store().signing_keys(now).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rows.len(), 1);
        // The stored private key is not a PKCS#8 document (which starts
        // with a DER SEQUENCE), and does not load as one.
        assert_ne!(rows[0].private_key.first(), Some(&0x30));
        assert!(authmd_jose::SigningKey::from_pkcs8(Algorithm::Es256, &rows[0].private_key).is_err());

        let b = a.replica(second).await;
        let now = Timestamp::now();
        let new = b.app.service_keys().current_kid(now).unwrap_or_default();
        assert_ne!(new, old, "a key sealed under another secret is replaced");
        let mut both = vec![old.clone(), new.clone()];
        both.sort();
        assert_eq!(kids(&b.app.service_keys().jwks()), both);
        let token = b.app.service_keys().sign("x", &claims(now, Duration::from_secs(60)), now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(verifies(&published(&b).await, &token));
        assert_eq!(b.events("operator.action").await.len(), 1);
        // A, with the first secret, publishes the new key after its next
        // reload and keeps signing with the old one while that is
        // published (it cannot open the new one).
        a.app.service_keys().reload(now).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(verifies(&published(&a).await, &token));
        assert_eq!(a.app.service_keys().current_kid(now), Some(old));
    }
}
