//! What operators watch (issue 17): request ids, the access log, metrics.

use axum::body::Body;
use axum::http::{Method, Request};

use crate::log_capture;
use crate::support::{Backend, TestApp, request};

fn with_request_id(mut req: Request<Body>, id: &str) -> Request<Body> {
    if let Ok(v) = id.parse() {
        req.headers_mut().insert("x-request-id", v);
    }
    req
}

/// A client's `X-Request-Id` is kept (sanitised, bounded) and returned;
/// without one, one is generated; it reaches the audit events.
#[tokio::test]
async fn request_ids_are_kept_or_generated_returned_and_audited() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let r = t
        .send(with_request_id(
            crate::support::json_request(
                "/agent/auth",
                r#"{"type":"anonymous","requested_credential_type":"api_key"}"#,
            ),
            "trace-abc.123",
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-request-id"), Some("trace-abc.123"));
    let reg = r.json()["registration_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let created = t.events("registration.created").await;
    let event = created
        .iter()
        .find(|e| e.registration_id.as_deref() == Some(reg.as_str()))
        .unwrap_or_else(|| panic!("no registration.created for {reg}"));
    assert_eq!(event.data["request_id"], "trace-abc.123");

    // Hostile ids are cut down to what is safe in a log line.
    let long = format!("evil\"{}", "x".repeat(500));
    let r = t
        .send(with_request_id(
            request(Method::GET, "/healthz", None, None),
            &long,
        ))
        .await;
    let kept = r.header("x-request-id").unwrap_or_default();
    assert_eq!(kept.len(), authmd::http::observe::MAX_REQUEST_ID);
    assert!(kept.starts_with("evilxxx"), "{kept}");

    // None: generated, and different per request.
    let a = t.get("/healthz", None).await;
    let b = t.get("/healthz", None).await;
    let (a, b) = (a.header("x-request-id"), b.header("x-request-id"));
    assert!(a.is_some_and(|a| a.len() > 10), "{a:?}");
    assert_ne!(a, b);
}

/// One access-log line per request: method, the route template (never the
/// raw path, which may carry a token), status, latency, request id, and the
/// registration once known.
#[tokio::test]
async fn each_request_logs_one_access_line_with_the_route_template() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let reg = t.get("/api/whoami", Some(&key)).await.json()["registration_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let id = format!("access-{}", authmd::token::new_id(""));
    let raw = format!("/api/things/{key}/secret-looking-path");
    let r = t
        .send(with_request_id(
            request(Method::GET, &raw, Some(&key), None),
            &id,
        ))
        .await;
    assert_eq!(r.status, 404);
    let lines = log_capture::lines_with(&id);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    for part in [
        "authmd::access",
        "method=\"GET\"",
        "route=\"/api/{*rest}\"",
        "status=404",
        "latency_ms=",
        &format!("registration_id=\"{reg}\""),
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(!line.contains("secret-looking-path"), "{line}");

    // An unmatched path is logged as such, not as itself.
    let id = format!("unmatched-{}", authmd::token::new_id(""));
    t.send(with_request_id(
        request(Method::GET, "/nothing/here/amd_sk_x", None, None),
        &id,
    ))
    .await;
    let lines = log_capture::lines_with(&id);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("route=\"(unmatched)\""), "{}", lines[0]);
    assert!(!lines[0].contains("/nothing/here"), "{}", lines[0]);
}

/// Prometheus text at `/metrics` on the admin router (behind its token) and
/// on the metrics router: the listed series, with route templates as labels.
#[tokio::test]
async fn metrics_are_exposed_with_route_templates() {
    authmd::metrics::install().expect("the recorder installs");
    let token = "metrics-test-token-0123456789abcdef0123456789";
    let t = TestApp::new(
        Backend::Sqlite,
        &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{token}\""),
    )
    .await;
    let key = t.register_anonymous().await["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for _ in 0..3 {
        assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);
    }
    let r = t.get(&format!("/api/x/{key}"), None).await;
    assert_eq!(r.status, 401);
    let r = t
        .post_json(
            "/agent/auth",
            r#"{"type":"anonymous","requested_credential_type":"bogus"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    // A made-up method is one series, OTHER, not one per method sent.
    for m in ["BREW", "PROPFIND"] {
        let req = request(
            Method::from_bytes(m.as_bytes()).expect("method"),
            "/api/whoami",
            None,
            None,
        );
        t.send(req).await;
    }

    let admin = authmd::http::admin_router(t.app.clone()).expect("admin API configured");
    let send = |router: axum::Router, bearer: Option<&str>| {
        let req = request(Method::GET, "/metrics", bearer, None);
        async move {
            use http_body_util::BodyExt;
            use tower::ServiceExt;
            let res = router.oneshot(req).await.expect("infallible");
            let status = res.status();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, _) = send(admin.clone(), None).await;
    assert_eq!(status, 401, "the admin API's /metrics needs its token");
    let (status, text) = send(admin, Some(token)).await;
    assert_eq!(status, 200);
    let (status, plain) = send(authmd::http::metrics_router(t.app.clone()), None).await;
    assert_eq!(status, 200);
    for text in [&text, &plain] {
        for series in [
            "authmd_http_requests_total{route=\"/api/{*rest}\",method=\"GET\",status=\"200\"}",
            "authmd_http_requests_total{route=\"/api/{*rest}\",method=\"GET\",status=\"401\"}",
            "authmd_http_requests_total{route=\"/api/{*rest}\",method=\"OTHER\",status=\"401\"}",
            "authmd_http_request_duration_seconds_bucket{route=\"/agent/auth\",method=\"POST\"",
            "authmd_registrations_total{flow=\"anonymous\",outcome=\"created\"}",
            "authmd_registrations_total{flow=\"anonymous\",outcome=\"unsupported_credential_type\"}",
            "authmd_refusals_total{code=\"invalid_token\"}",
            "authmd_credential_cache_hits_total",
            "authmd_credential_cache_misses_total",
            "authmd_credential_cache_entries{kind=\"record\"}",
            "authmd_invalidation_log_lag_seconds",
            "authmd_mail_queue_depth",
            "authmd_mail_queue_age_seconds",
            "authmd_sqlite_commit_seconds_bucket",
            "authmd_sqlite_batch_jobs_bucket",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(!text.contains("amd_sk_"), "a raw path reached a label");
        assert!(
            !text.contains("BREW") && !text.contains("PROPFIND"),
            "a made-up method reached a label"
        );
    }
}

/// On PostgreSQL the pool's use is exported.
#[tokio::test]
#[cfg_attr(authmd_no_postgres, ignore = "needs PostgreSQL (TEST_POSTGRES_URL)")]
async fn metrics_report_the_postgres_pool() {
    authmd::metrics::install().expect("the recorder installs");
    let t = TestApp::new(Backend::Postgres, "").await;
    t.register_anonymous().await;
    let text = t.app.render_metrics().await.expect("installed");
    for series in [
        "authmd_db_pool_connections{state=\"in_use\"}",
        "authmd_db_pool_connections{state=\"idle\"}",
        "authmd_db_pool_connections{state=\"max\"}",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}
