//! Provider keys over real HTTP on loopback: fetching, caching, rotation,
//! refetch limits, slow, oversized and redirecting servers, a provider that
//! goes down.

use std::time::{Duration, Instant};

use authmd_jose::Algorithm;
use serde_json::json;

use crate::provider::{JwksServer, Mode, body, claims, key, mint};
use crate::support::{Backend, TestApp};

const AUD: &str = "http://127.0.0.1:8080";

async fn app(server: &JwksServer, jwks: &str) -> TestApp {
    let toml = format!(
        "[jwks]\n{jwks}\n[[providers]]\nissuer = \"{}\"\n",
        server.issuer()
    );
    TestApp::new(Backend::Sqlite, &toml).await
}

async fn register(
    t: &TestApp,
    k: &authmd_jose::SigningKey,
    issuer: &str,
    sub: &str,
) -> (u16, String) {
    let r = t
        .post_json(
            "/agent/auth",
            &body(&mint(k, &[], &claims(issuer, AUD, sub)), "api_key"),
        )
        .await;
    (
        r.status.as_u16(),
        if r.status == 200 {
            String::new()
        } else {
            r.code()
        },
    )
}

fn stats(t: &TestApp) -> authmd::jwks::KeyStats {
    t.app
        .verifier()
        .providers()
        .next()
        .map(|p| p.keys.stats())
        .unwrap_or_default()
}

#[tokio::test]
async fn keys_are_fetched_once_and_cached() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    let t = app(&server, "").await;
    assert_eq!(server.hits(), 0, "no fetch before it is needed");
    for i in 0..5 {
        assert_eq!(
            register(&t, &k, server.issuer(), &format!("u{i}")).await,
            (200, String::new())
        );
    }
    assert_eq!(server.hits(), 1);
    assert_eq!(stats(&t).fetches, 1);
}

/// A new `kid` at the provider is accepted after exactly one refetch.
#[tokio::test]
async fn rotated_keys_are_accepted_after_one_refetch() {
    let server = JwksServer::start().await;
    let old = key(Algorithm::Es256, "2026-01");
    let new = key(Algorithm::Es256, "2026-02");
    server.set_keys(&[&old]);
    let t = app(&server, "").await;
    assert_eq!(register(&t, &old, server.issuer(), "a").await.0, 200);
    server.set_keys(&[&old, &new]);
    assert_eq!(register(&t, &new, server.issuer(), "b").await.0, 200);
    assert_eq!(server.hits(), 2);
    assert_eq!(stats(&t).unknown_kid_refetches, 1);
    // Both keep working from the cache.
    assert_eq!(register(&t, &old, server.issuer(), "c").await.0, 200);
    assert_eq!(register(&t, &new, server.issuer(), "d").await.0, 200);
    assert_eq!(server.hits(), 2);
}

/// A flood of unknown `kid`s costs at most one refetch per interval.
#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    let t = app(&server, "refetch_interval = \"1s\"").await;
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 200);
    for i in 0..20 {
        let stranger = key(Algorithm::Es256, &format!("unknown-{i}"));
        assert_eq!(
            register(&t, &stranger, server.issuer(), "a").await,
            (400, "invalid_signature".into())
        );
    }
    assert_eq!(server.hits(), 2, "first fetch + one refetch");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = key(Algorithm::Es256, "unknown-late");
    assert_eq!(register(&t, &stranger, server.issuer(), "a").await.0, 400);
    assert_eq!(server.hits(), 3, "one more after the interval");
}

#[tokio::test]
async fn a_slow_provider_times_out_and_the_service_keeps_answering() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    server.set_delay(Duration::from_secs(5));
    let t = app(&server, "timeout = \"500ms\"").await;
    let start = Instant::now();
    assert_eq!(
        register(&t, &k, server.issuer(), "a").await,
        (400, "invalid_signature".into())
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(stats(&t).failures, 1);
    assert_eq!(t.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn oversized_jwks_documents_are_refused() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    server.set_mode(Mode::Oversized);
    let t = app(&server, "").await;
    assert_eq!(
        register(&t, &k, server.issuer(), "a").await,
        (400, "invalid_signature".into())
    );
    assert_eq!(stats(&t).failures, 1);
}

/// Redirects are not followed: the target is never asked.
#[tokio::test]
async fn redirects_are_not_followed() {
    let server = JwksServer::start().await;
    let elsewhere = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    elsewhere.set_keys(&[&k]);
    server.set_mode(Mode::Redirect(format!(
        "{}/.well-known/jwks.json",
        elsewhere.issuer()
    )));
    let t = app(&server, "").await;
    assert_eq!(
        register(&t, &k, server.issuer(), "a").await,
        (400, "invalid_signature".into())
    );
    assert_eq!(elsewhere.hits(), 0);
}

/// Errors and garbage are not cached: once the provider is fixed (and the
/// refetch interval has passed), its keys work.
#[tokio::test]
async fn failures_are_retried_after_the_interval() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    server.set_mode(Mode::Status(500));
    let t = app(&server, "refetch_interval = \"300ms\"").await;
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 400);
    server.set_mode(Mode::Garbage);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(register(&t, &k, server.issuer(), "b").await.0, 400);
    server.set_mode(Mode::Normal);
    assert_eq!(
        register(&t, &k, server.issuer(), "c").await.0,
        400,
        "within the interval: no fetch"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(register(&t, &k, server.issuer(), "d").await.0, 200);
    assert_eq!(stats(&t).failures, 2);
}

/// A provider that goes down does not take the service down: the keys it
/// published last keep working (up to `jwks.cache_max` after they were
/// fetched), and failures are counted.
#[tokio::test]
async fn known_keys_keep_working_when_the_provider_is_down() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    server.set_cache_control(Some("max-age=0"));
    let t = app(
        &server,
        "cache_min = \"200ms\"\ncache_max = \"10s\"\nrefetch_interval = \"100ms\"",
    )
    .await;
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 200);
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stale now; the refresh fails; the known key stays in use.
    assert_eq!(register(&t, &k, server.issuer(), "b").await.0, 200);
    assert!(stats(&t).failures >= 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(register(&t, &k, server.issuer(), "c").await.0, 200);
}

/// Issue 15, item 5: a key set that could not be refreshed is used only up
/// to `jwks.cache_max` after it was fetched. Past that, a key the provider
/// may have rotated out (compromised) while an attacker keeps its endpoint
/// unreachable stops verifying: `invalid_signature`, for ID-JAGs and logout
/// tokens alike. Once the provider answers again, its keys work again.
#[tokio::test]
async fn stale_keys_are_refused_once_older_than_cache_max() {
    let (logs, _capture) = crate::support::Logs::capture();
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    server.set_cache_control(Some("max-age=0"));
    let t = app(
        &server,
        "cache_min = \"200ms\"\ncache_max = \"1s\"\nrefetch_interval = \"100ms\"",
    )
    .await;
    let fetched = Instant::now();
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 200);
    server.set_mode(Mode::Status(503));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        register(&t, &k, server.issuer(), "b").await.0,
        200,
        "stale but younger than cache_max"
    );
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(fetched.elapsed())).await;
    let r = t
        .post_json(
            "/agent/auth",
            &body(
                &mint(&k, &[], &claims(server.issuer(), AUD, "c")),
                "api_key",
            ),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_signature"),
        "{}",
        r.text()
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("jwks.cache_max"),
        "{}",
        r.text()
    );
    let logout =
        crate::revoke::mint_logout(&k, &[], &crate::revoke::logout_claims(server.issuer(), "a"));
    let r = crate::revoke::post_logout(&t, &logout).await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (400, "invalid_signature"),
        "{}",
        r.text()
    );
    // The operator is told, once (not per refused request), at ERROR, with
    // the provider named.
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains(
                "authmd::jwks: provider keys could not be refreshed for longer than jwks.cache_max",
            )
        })
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("ERROR") && lines[0].contains(server.issuer()),
        "{}",
        lines[0]
    );

    // The provider is back: a refresh brings the keys back.
    server.set_mode(Mode::Normal);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(register(&t, &k, server.issuer(), "d").await.0, 200);
}

/// When the provider is up and has dropped a key, the key stops working
/// once the cache is stale.
#[tokio::test]
async fn removed_keys_stop_working_after_a_refresh() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    let k2 = key(Algorithm::Es256, "k2");
    server.set_keys(&[&k]);
    let t = app(
        &server,
        "cache_min = \"200ms\"\ncache_max = \"200ms\"\nrefetch_interval = \"100ms\"",
    )
    .await;
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 200);
    server.set_keys(&[&k2]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        register(&t, &k, server.issuer(), "b").await,
        (400, "invalid_signature".into())
    );
}

/// Keys that fail vetting are skipped, the rest of the set is used.
#[tokio::test]
async fn unusable_keys_in_a_set_are_skipped() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::EdDsa, "good");
    let mut wrong_curve = key(Algorithm::Es256, "mislabelled").public_jwk();
    wrong_curve["crv"] = "P-384".into();
    server.set_raw_keys(vec![
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!({"kty": "XYZ", "kid": "weird"}),
        wrong_curve,
        k.public_jwk(),
    ]);
    let t = app(&server, "").await;
    assert_eq!(register(&t, &k, server.issuer(), "a").await.0, 200);
    assert_eq!(stats(&t).keys, 1);
}

/// The keys come from the configured `jwks_uri`, not the issuer's host.
#[tokio::test]
async fn a_configured_jwks_uri_is_used() {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    let issuer = "https://provider.example";
    let toml = format!(
        "[[providers]]\nissuer = \"{issuer}\"\njwks_uri = \"{}/keys\"\n",
        server.issuer()
    );
    let t = TestApp::new(Backend::Sqlite, &toml).await;
    assert_eq!(register(&t, &k, issuer, "a").await.0, 200);
    assert_eq!(server.hits(), 1);
}
