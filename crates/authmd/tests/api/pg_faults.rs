//! PostgreSQL stopped under load (issue 17 item 6), on a cluster the test
//! started itself: requests are answered `503 temporarily_unavailable` with
//! `Retry-After` within a bounded time, never hang, never 200 for a
//! credential that can no longer be checked (past the cache's one-second
//! staleness bound); `/readyz` turns unready; when PostgreSQL is back,
//! authmd serves again without a restart.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authmd::AuthMd;
use authmd::mail::MemoryMailer;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Method;
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::pg_cluster::Cluster;
use crate::support::{config, json_request, request};

/// Status, body, `Retry-After` and how long the answer took.
async fn send(
    router: &Router,
    mut req: axum::http::Request<axum::body::Body>,
) -> (u16, String, Option<String>, Duration) {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 10], 40_000))));
    let started = Instant::now();
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        retry,
        started.elapsed(),
    )
}

/// When, which request, status, body, `Retry-After`, how long it took.
type Answer = (Instant, &'static str, u16, String, Option<String>, Duration);

const REGISTER: &str = r#"{"type":"anonymous","requested_credential_type":"api_key"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    authmd_no_postgres,
    ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) and PostgreSQL's server binaries"
)]
async fn postgres_stopped_under_load_answers_503_and_recovers_without_a_restart() {
    crate::log_capture::init();
    let cluster = Cluster::start(None);
    let url = cluster.url("127.0.0.1", "?sslmode=disable");
    let store = authmd::store::open(&url, 4).await.expect("open");
    store.migrate().await.expect("migrate");
    let app = AuthMd::new(
        config("[rate_limits]\nenabled = false"),
        store,
        Arc::new(MemoryMailer::new()),
    )
    .await
    .expect("app");
    let router = authmd::http::router(app);
    let (status, body, ..) = send(&router, json_request("/agent/auth", REGISTER)).await;
    assert_eq!(status, 200, "{body}");
    let key = serde_json::from_str::<serde_json::Value>(&body).expect("json")["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // Load: the key at the resource and new registrations, all the time.
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for i in 0..4 {
        let (router, key, answers, stop) = (
            router.clone(),
            key.clone(),
            Arc::clone(&answers),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (what, req) = if i % 2 == 0 {
                    (
                        "whoami",
                        request(Method::GET, "/api/whoami", Some(&key), None),
                    )
                } else {
                    ("register", json_request("/agent/auth", REGISTER))
                };
                let (status, body, retry, took) = send(&router, req).await;
                answers.lock().unwrap_or_else(|e| e.into_inner()).push((
                    Instant::now(),
                    what,
                    status,
                    body,
                    retry,
                    took,
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    cluster.stop();
    // The cache may answer for the staleness bound (1 s) after the last
    // successful read of the invalidation log; after that, nothing is 200.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ready, ..) = send(&router, request(Method::GET, "/readyz", None, None)).await;
    assert_eq!(ready, 503, "/readyz is unready while the database is down");

    let restarted = Instant::now();
    cluster.restart();
    // Serving again, without a restart of authmd.
    let recovered = loop {
        let (w, ..) = send(
            &router,
            request(Method::GET, "/api/whoami", Some(&key), None),
        )
        .await;
        let (r, ..) = send(&router, json_request("/agent/auth", REGISTER)).await;
        let (ready, ..) = send(&router, request(Method::GET, "/readyz", None, None)).await;
        if (w, r, ready) == (200, 200, 200) {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "not serving 20 s after PostgreSQL came back: whoami {w}, register {r}, readyz {ready}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }

    let answers = answers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let down: Vec<_> = answers
        .iter()
        .filter(|(at, ..)| *at > stopped + Duration::from_millis(1500) && *at < restarted)
        .collect();
    assert!(down.len() >= 20, "load while down: {} answers", down.len());
    for (_, what, status, body, retry, took) in &down {
        assert_eq!(
            *status, 503,
            "{what} while the database is down: {status} {body}"
        );
        assert!(body.contains("\"temporarily_unavailable\""), "{body}");
        assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
        assert!(*took < Duration::from_secs(6), "{what} took {took:?}");
    }
    // Not one answer hung, before, during or after.
    let slowest = answers.iter().map(|a| a.5).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(6),
        "slowest answer {slowest:?}"
    );
    assert!(
        !answers.iter().any(|a| a.2 == 500),
        "a 500 while the database was down"
    );
    eprintln!(
        "{} answers, {} while down (all 503), serving again {recovered:?} after PostgreSQL restarted, slowest {slowest:?}",
        answers.len(),
        down.len()
    );
}
