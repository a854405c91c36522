//! Credential validation in-process: the API's hot path.
//!
//! `cargo bench -p authmd --bench validation`
//!
//! - `recognize`: prefix, length, alphabet and checksum of a presented key;
//! - `validate/cached`: a valid key whose record is in the replica cache
//!   (the steady state of an API under load);
//! - `validate/unknown_format`: a string authmd cannot have issued;
//! - `validate/miss_sqlite`: a well-formed key that is not in the store,
//!   forcing a lookup each time (negative answers are cached too, so this
//!   clears the cache before each call);
//! - `layer/whoami`: the whole tower stack (layer, routing, handler, JSON)
//!   without a socket.

use std::sync::Arc;

use authmd::mail::MemoryMailer;
use authmd::token::{PlainSecret, SecretKind, recognize};
use authmd::validation::BEARER_KINDS;
use authmd::{AuthMd, Timestamp};
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use tower::ServiceExt;

fn setup(rt: &tokio::runtime::Runtime) -> (AuthMd, String, tempfile::TempDir) {
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let config = authmd::config::load_str(
            &format!("[database]\nurl = {url:?}\n[rate_limits]\nenabled = false"),
            &Default::default(),
        )
        .expect("config");
        let store = authmd::store::open(&url, 4).await.expect("store");
        store.migrate().await.expect("migrate");
        let app = AuthMd::new(config, store, Arc::new(MemoryMailer::new()))
            .await
            .expect("app");
        let registered = app
            .register(
                Ok(authmd::register::RegisterRequest {
                    kind: Some("anonymous".into()),
                    requested_credential_type: Some("api_key".into()),
                    ..Default::default()
                }),
                &Default::default(),
                Timestamp::now(),
            )
            .await
            .expect("register");
        let key = serde_json::to_value(&registered).expect("json")["credential"]
            .as_str()
            .expect("credential")
            .to_owned();
        (app, key, dir)
    })
}

fn bench(c: &mut Criterion) {
    // A worker thread runs the background tasks (the invalidation poller)
    // while the benchmark drives requests from the main thread, as in a
    // server where connection tasks and the poller share the runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, key, _dir) = setup(&rt);
    let now = Timestamp::now();

    c.bench_function("recognize", |b| {
        b.iter(|| recognize(std::hint::black_box(&key), &BEARER_KINDS))
    });

    let mut g = c.benchmark_group("validate");
    g.bench_function("cached", |b| {
        b.to_async(&rt)
            .iter(|| async { app.validate(Some(&key), now).await.expect("validate") })
    });
    g.bench_function("unknown_format", |b| {
        b.to_async(&rt).iter(|| async {
            app.validate(Some("sk_live_not_ours"), now)
                .await
                .expect("validate")
        })
    });
    let stranger = PlainSecret::generate(SecretKind::ApiKey, &authmd::token::new_id("crd_"));
    g.bench_function("miss_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            app.validator().forget(&stranger.hash());
            app.validate(Some(stranger.expose()), now)
                .await
                .expect("validate")
        })
    });
    g.finish();

    let router = authmd::http::router(app.clone());
    let auth = format!("Bearer {key}");
    c.bench_function("layer/whoami", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::builder()
                .uri("/api/whoami")
                .header("authorization", &auth)
                .body(Body::empty())
                .expect("request");
            let res = router.clone().oneshot(req).await.expect("infallible");
            assert_eq!(res.status(), 200);
        })
    });
}

fn bench_refusals(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, _key, _dir) = setup(&rt);
    let router = authmd::http::router(app);
    for (name, header) in [
        ("layer/missing", None),
        ("layer/garbage", Some("Bearer garbage")),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let mut req = Request::builder().uri("/api/whoami");
                if let Some(h) = header {
                    req = req.header("authorization", h);
                }
                let res = router
                    .clone()
                    .oneshot(req.body(Body::empty()).expect("request"))
                    .await
                    .expect("infallible");
                assert_eq!(res.status(), 401);
            })
        });
    }
}

criterion_group!(benches, bench, bench_refusals);
criterion_main!(benches);
