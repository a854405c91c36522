//! Several replicas on one database.

use std::time::{Duration, Instant};

use authmd::Timestamp;

use crate::both_backends;
use crate::support::{Backend, TestApp};

both_backends! {
    async fn a_key_issued_by_one_replica_works_on_another(backend: Backend) {
        let a = TestApp::new(backend, "").await;
        let b = a.replica("").await;
        let key = a.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        let who = b.get("/api/whoami", Some(&key)).await;
        assert_eq!(who.status, 200, "{}", who.text());
    }
}

both_backends! {
    /// A change made through one replica reaches another's cache within a
    /// second, through the invalidation log.
    async fn expiry_on_one_replica_reaches_the_others_cache(backend: Backend) {
        let a = TestApp::new(backend, "").await;
        let b = a.replica("").await;
        let key = a.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned();
        assert_eq!(b.get("/api/whoami", Some(&key)).await.status, 200);
        assert!(b.app.validator().cached() >= 1);

        a.app
            .sweep(Timestamp::now().plus(Duration::from_secs(86_400 + 5)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            if b.get("/api/whoami", Some(&key)).await.status == 401 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "replica B still accepts the key after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

both_backends! {
    /// Two servers on one database receive the same ID-JAG at once, many
    /// times over: exactly one registration succeeds.
    async fn concurrent_replays_across_replicas_succeed_once(backend: Backend) {
        use crate::provider::{JwksServer, body, claims, key, mint, trusting};
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let toml = trusting(&[server.issuer()], "[rate_limits]\nenabled = false");
        let a = std::sync::Arc::new(TestApp::new(backend, &toml).await);
        let b = std::sync::Arc::new(a.replica(&toml).await);
        for round in 0..5 {
            let assertion = mint(&k, &[], &claims(server.issuer(), "http://127.0.0.1:8080", &format!("u{round}")));
            let mut tasks = Vec::new();
            for i in 0..16 {
                let app = if i % 2 == 0 { std::sync::Arc::clone(&a) } else { std::sync::Arc::clone(&b) };
                let req = body(&assertion, "api_key");
                tasks.push(tokio::spawn(async move {
                    let r = app.post_json("/agent/auth", &req).await;
                    (r.status.as_u16(), if r.status == 200 { String::new() } else { r.code() })
                }));
            }
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap_or((0, String::new())) {
                    (200, _) => ok += 1,
                    (400, code) => assert_eq!(code, "replay_detected"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(ok, 1, "round {round}");
        }
        let s = a.stats().await;
        assert_eq!((s.registrations, s.credentials), (5, 5));
    }
}

/// Polls `app` until `credential` is refused; fails after one second.
async fn refused_within_a_second(app: &TestApp, credential: &str, what: &str) {
    let start = Instant::now();
    loop {
        if app.get("/api/whoami", Some(credential)).await.status == 401 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_backends! {
    /// A revocation made through one replica (a provider's logout token, an
    /// operator on the admin API, an operator's CLI on the database) is
    /// honoured by another replica, which had the key cached, within 1 s.
    async fn a_revocation_on_one_replica_is_honoured_by_another_within_a_second(backend: Backend) {
        use crate::provider::{JwksServer, body, claims, key, mint};
        use crate::revoke::{logout_claims, mint_logout, post_logout};
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let toml = crate::admin::admin_toml(&format!("[[providers]]\nissuer = \"{}\"\n", server.issuer()));
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let register = |sub: &'static str| {
            let (a, k, iss) = (&a, &k, server.issuer().to_owned());
            async move {
                let r = a.post_json("/agent/auth", &body(&mint(k, &[], &claims(&iss, "http://127.0.0.1:8080", sub)), "api_key")).await;
                r.json()["credential"].as_str().unwrap_or_default().to_owned()
            }
        };
        let (by_logout, by_api, by_cli) = (register("u1").await, register("u2").await, register("u3").await);
        for c in [&by_logout, &by_api, &by_cli] {
            assert_eq!(b.get("/api/whoami", Some(c)).await.status, 200);
        }
        assert!(b.app.validator().cached() >= 3);

        let r = post_logout(&a, &mint_logout(&k, &[], &logout_claims(server.issuer(), "u1"))).await;
        assert_eq!(r.status, 200, "{}", r.text());
        refused_within_a_second(&b, &by_logout, "logout token on replica A").await;

        let admin = authmd::http::admin_router(a.app.clone()).expect("admin");
        let reg = b.get("/api/whoami", Some(&by_api)).await.json()["registration_id"].as_str().unwrap_or_default().to_owned();
        let r = crate::admin::call(&admin, axum::http::Method::POST, &format!("/admin/registrations/{reg}/revoke"), Some(crate::admin::TOKEN), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        refused_within_a_second(&b, &by_api, "admin API on replica A").await;

        // The CLI's way: its own connection to the database, no server.
        let cli_store = a.db.store().await;
        let reg = b.get("/api/whoami", Some(&by_cli)).await.json()["registration_id"].as_str().unwrap_or_default().to_owned();
        authmd::admin::Admin::new(cli_store)
            .revoke(authmd::store::RevokeTarget::Registration(reg), "ops (cli)", None, &Default::default(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        refused_within_a_second(&b, &by_cli, "a revocation written by another process").await;
        refused_within_a_second(&a, &by_cli, "a revocation written by another process").await;
    }
}

both_backends! {
    /// Revoking more credentials than the log lists one by one writes one
    /// flush entry: every replica drops its whole cache.
    async fn revoke_all_flushes_every_replicas_cache(backend: Backend) {
        let toml = "[rate_limits]\nenabled = false";
        let a = TestApp::new(backend, toml).await;
        let b = a.replica(toml).await;
        let mut keys = Vec::new();
        for _ in 0..1005 {
            keys.push(a.register_anonymous().await["credential"].as_str().unwrap_or_default().to_owned());
        }
        for k in keys.iter().step_by(200) {
            assert_eq!(b.get("/api/whoami", Some(k)).await.status, 200);
        }
        let before = a.app.store().latest_invalidation().await.unwrap_or_else(|e| panic!("{e}"));
        let report = authmd::admin::Admin::new(std::sync::Arc::clone(a.app.store()))
            .revoke(authmd::store::RevokeTarget::All, "incident", Some("drill".into()), &Default::default(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.registrations, report.credentials), (1005, 1005));
        let after = a.app.store().latest_invalidation().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(after - before, 1, "one flush entry, not 1005");
        for k in keys.iter().step_by(200) {
            refused_within_a_second(&b, k, "revoke-all").await;
        }
        let query = authmd::admin::EventQuery { event: vec!["registration.revoked".into()], ..Default::default() };
        let exported = authmd::admin::Admin::new(std::sync::Arc::clone(a.app.store()))
            .export(&query)
            .unwrap_or_else(|e| panic!("{e}"));
        use futures_util::StreamExt;
        assert_eq!(exported.count().await, 1005, "one registration.revoked each");
    }
}

both_backends! {
    /// The admin API's event stream on one replica carries what another
    /// replica records.
    async fn the_event_stream_on_one_replica_shows_events_of_another(backend: Backend) {
        use axum::body::Body;
        use axum::extract::ConnectInfo;
        use tower::ServiceExt;
        let toml = crate::admin::admin_toml("");
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let admin = authmd::http::admin_router(a.app.clone()).expect("admin");
        let mut req = axum::http::Request::builder()
            .uri("/admin/events/stream?event=registration.created")
            .header("authorization", format!("Bearer {}", crate::admin::TOKEN))
            .body(Body::empty())
            .expect("request");
        req.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        let mut stream = admin.oneshot(req).await.expect("ok").into_body().into_data_stream();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(b.register_anonymous().await["registration_id"].as_str().unwrap_or_default().to_owned());
        }
        let text = crate::admin::read_sse(&mut stream, 3).await;
        for id in ids {
            assert!(text.contains(&id), "{id} missing from {text}");
        }
    }
}

both_backends! {
    /// One logout token sent to two replicas at once, many times over, is
    /// accepted exactly once.
    async fn concurrent_logout_replays_across_replicas_succeed_once(backend: Backend) {
        use crate::provider::{JwksServer, key};
        use crate::revoke::{logout_claims, mint_logout, post_logout};
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let toml = format!("[[providers]]\nissuer = \"{}\"\n", server.issuer());
        let a = std::sync::Arc::new(TestApp::new(backend, &toml).await);
        let b = std::sync::Arc::new(a.replica(&toml).await);
        for round in 0..5 {
            let token = mint_logout(&k, &[], &logout_claims(server.issuer(), &format!("u{round}")));
            let mut tasks = Vec::new();
            for i in 0..16 {
                let app = if i % 2 == 0 { std::sync::Arc::clone(&a) } else { std::sync::Arc::clone(&b) };
                let token = token.clone();
                tasks.push(tokio::spawn(async move {
                    let r = post_logout(&app, &token).await;
                    (r.status.as_u16(), if r.status == 200 { String::new() } else { r.code() })
                }));
            }
            let mut ok = 0;
            for t in tasks {
                match t.await.unwrap_or((0, String::new())) {
                    (200, _) => ok += 1,
                    (400, code) => assert_eq!(code, "replay_detected"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(ok, 1, "round {round}");
        }
    }
}
