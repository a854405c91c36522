//! A restart loses nothing.

use std::sync::Arc;

use crate::both_backends;
use crate::support::{Backend, TestApp, TestDb};

both_backends! {
    async fn issued_keys_survive_a_restart(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let (key, id) = {
            let first = TestApp::on(Arc::clone(&db), "").await;
            let body = first.register_anonymous().await;
            (
                body["credential"].as_str().unwrap_or_default().to_owned(),
                body["registration_id"].as_str().unwrap_or_default().to_owned(),
            )
            // `first` (its store, pool and writer thread) is dropped here.
        };
        let second = TestApp::on(db, "").await;
        let who = second.get("/api/whoami", Some(&key)).await;
        assert_eq!(who.status, 200, "{}", who.text());
        assert_eq!(who.json()["registration_id"], id.as_str());
        assert_eq!(second.events("registration.created").await.len(), 1);
    }
}

both_backends! {
    /// Replay protection is in the store: it survives a restart.
    async fn a_used_id_jag_is_refused_after_a_restart(backend: Backend) {
        use crate::provider::{JwksServer, body, claims, key, mint, trusting};
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let toml = trusting(&[server.issuer()], "");
        let db = Arc::new(TestDb::new(backend).await);
        let assertion = mint(&k, &[], &claims(server.issuer(), "http://127.0.0.1:8080", "u"));
        {
            let first = TestApp::on(Arc::clone(&db), &toml).await;
            assert_eq!(first.post_json("/agent/auth", &body(&assertion, "api_key")).await.status, 200);
        }
        let second = TestApp::on(db, &toml).await;
        // Step 12 before 13: first thing after the restart, before any
        // registration, a replay with a bad credential type is a replay.
        let r = second.post_json("/agent/auth", &body(&assertion, "pgp_key")).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "replay_detected".into()));
        let r = second.post_json("/agent/auth", &body(&assertion, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "replay_detected".into()));
    }
}

/// A second start on a migrated PostgreSQL database says nothing: no
/// server NOTICE (`CREATE TABLE IF NOT EXISTS` of the migrations table sent
/// "relation already exists, skipping" to the log at every start). The
/// notices reach the log through tokio-postgres, which the capture sees.
#[tokio::test]
#[cfg_attr(
    authmd_no_postgres,
    ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
)]
async fn a_second_migration_on_postgres_sends_no_notice() {
    let db = TestDb::new(Backend::Postgres).await;
    drop(db.store().await);
    let (logs, _capture) = crate::support::Logs::capture();
    let store = authmd::store::open(&db.url, 2).await.expect("open store");
    store.migrate().await.expect("migrate again");
    // A NOTICE is delivered with the next message on its connection: one
    // more statement on the pool makes sure it was read.
    store.migrate().await.expect("migrate a third time");
    drop(store);
    let text = logs.text();
    assert!(!text.contains("NOTICE"), "{text}");
}
