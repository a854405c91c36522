//! Registration expiry (issue: an unclaimed registration past its TTL is
//! refused at once, and the sweep marks it expired and revokes its key).

use std::time::Duration;

use authmd::Timestamp;
use authmd::credential::Refusal;
use authmd::validation::Validation;

use crate::both_backends;
use crate::support::{Backend, TestApp};

const DAY: Duration = Duration::from_secs(86_400);

both_backends! {
    async fn unclaimed_key_is_refused_the_moment_it_expires(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let key = t.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        let now = Timestamp::now();
        let v = t.app.validate(Some(&key), now.plus(DAY - Duration::from_secs(60))).await;
        assert!(matches!(v, Ok(Validation::Valid(_))), "{v:?}");
        // Cached or not, the deadline decides, before any sweep ran.
        let v = t.app.validate(Some(&key), now.plus(DAY + Duration::from_secs(1))).await;
        assert!(matches!(v, Ok(Validation::Invalid(Refusal::UnclaimedExpired))), "{v:?}");
    }
}

both_backends! {
    async fn sweep_expires_revokes_and_records(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let body = t.register_anonymous().await;
        let keep = t.register_anonymous().await;
        let key = body["credential"].as_str().unwrap_or_default().to_owned();
        let id = body["registration_id"].as_str().unwrap_or_default().to_owned();
        // Cache it.
        assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);

        let later = Timestamp::now().plus(DAY + Duration::from_secs(5));
        let expired = t.app.sweep(later).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(expired, 2);
        // Nothing left to do the second time.
        assert_eq!(t.app.sweep(later).await.unwrap_or(99), 0);

        // Revoked now, even at the real clock, and even though it was cached.
        assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 401);
        let v = t.app.validate(Some(&key), Timestamp::now()).await;
        assert!(matches!(v, Ok(Validation::Invalid(_))), "{v:?}");

        let events = t.events("registration.expired").await;
        assert_eq!(events.len(), 2);
        let mine = events.iter().find(|e| e.registration_id.as_deref() == Some(&id));
        assert_eq!(mine.map(|e| e.data["credentials_revoked"].clone()), Some(1.into()));
        drop(keep);
    }
}

both_backends! {
    async fn sweep_leaves_live_registrations_alone(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let key = t.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.app.sweep(Timestamp::now().plus(Duration::from_secs(3600))).await.unwrap_or(99), 0);
        assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);
        assert!(t.events("registration.expired").await.is_empty());
    }
}
