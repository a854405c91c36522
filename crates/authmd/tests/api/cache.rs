//! The per-replica credential cache under pressure (issue 15, items 6 and
//! 8): made-up tokens must not push live credentials out, and a replica
//! that missed part of the invalidation log must not trust what it cached.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use authmd::Timestamp;
use authmd::store::{OperatorRevocation, RevokeTarget};
use authmd::token::{PlainSecret, SecretKind, new_id};

use crate::both_backends;
use crate::followups::flaky_on;
use crate::support::{Backend, TestApp, TestDb};

both_backends! {
    /// Item 8: replica A caches a key and then cannot read the invalidation
    /// log; meanwhile the key is revoked elsewhere and the log entry is
    /// purged (it is kept an hour). When A reads the log again it finds the
    /// gap and drops its whole cache instead of trusting it again.
    async fn a_replica_that_missed_purged_invalidations_drops_its_cache(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let (a, log) = flaky_on(Arc::clone(&db), "").await;
        let b = TestApp::on(Arc::clone(&db), "").await;
        let reg = a.register_anonymous().await;
        let key = reg["credential"].as_str().unwrap_or_default().to_owned();
        assert_eq!(a.get("/api/whoami", Some(&key)).await.status, 200, "cached on A");

        log.fail.store(true, Ordering::SeqCst);
        let now = Timestamp::now();
        b.app
            .store()
            .revoke(OperatorRevocation {
                target: RevokeTarget::Registration(reg["registration_id"].as_str().unwrap_or_default().to_owned()),
                operator: "test".into(),
                reason: None,
                now,
                meta: Default::default(),
            })
            .await
            .expect("revoke");
        // The entry is purged as if an hour had passed.
        b.app
            .store()
            .purge(now, now.plus(std::time::Duration::from_secs(60)))
            .await
            .expect("purge");

        log.fail.store(false, Ordering::SeqCst);
        a.app.validator().poll_invalidations().await.expect("poll");
        let r = a.get("/api/whoami", Some(&key)).await;
        assert_eq!(r.status, 401, "a revoked key was served from a cache that missed the log: {}", r.text());
    }
}

/// A well-formed API key that was never issued (the checksum is public).
fn made_up() -> String {
    PlainSecret::generate(SecretKind::ApiKey, &new_id("crd_"))
        .expose()
        .to_owned()
}

both_backends! {
    /// Item 6: while a flood of made-up tokens runs (each a cache miss and
    /// a store read), agents that arrive keep their credentials cached:
    /// after more of the flood, validating them again asks the store
    /// nothing. (In a shared cache, the flood fills it and new credentials
    /// enter its probationary part, which the flood keeps evicting.)
    async fn made_up_tokens_do_not_evict_live_credentials(backend: Backend) {
        let db = Arc::new(TestDb::new(backend).await);
        let (t, log) = flaky_on(db, "[server]\ncredential_cache_capacity = 2000\n[rate_limits]\nenabled = false\n").await;
        let flood = |n: usize| {
            let t = &t;
            async move {
                for _ in 0..n {
                    assert_eq!(t.get("/api/whoami", Some(&made_up())).await.status, 401);
                }
            }
        };
        flood(2500).await;
        let mut keys = Vec::new();
        for _ in 0..50 {
            let key = t.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
            assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);
            keys.push(key);
        }
        flood(3000).await;
        let before = log.finds.load(Ordering::SeqCst);
        for k in &keys {
            assert_eq!(t.get("/api/whoami", Some(k)).await.status, 200);
        }
        let reloaded = log.finds.load(Ordering::SeqCst) - before;
        assert_eq!(reloaded, 0, "{reloaded} of 50 live credentials were evicted by made-up tokens");
    }
}
