//! Rate limits on anonymous registration (docs/protocol.md §9).

use std::net::IpAddr;

use crate::both_backends;
use crate::support::{Backend, TestApp, json_request};

const ANON: &str = r#"{"type":"anonymous","requested_credential_type":"api_key"}"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

both_backends! {
    async fn per_ip_limit_then_service_wide(backend: Backend) {
        let toml = "[rate_limits]\nanonymous_per_ip_per_hour = 2\nanonymous_per_hour = 3";
        let t = TestApp::new(backend, toml).await;
        let a = ip("198.51.100.1");
        for _ in 0..2 {
            assert_eq!(t.send_from(a, json_request("/agent/auth", ANON)).await.status, 200);
        }
        let r = t.send_from(a, json_request("/agent/auth", ANON)).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()));
        // Two per hour: the next slot opens in half an hour.
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((1790..=1800).contains(&retry), "Retry-After {retry}");

        // Another address still has its own budget, until the service-wide one runs out.
        assert_eq!(t.send_from(ip("198.51.100.2"), json_request("/agent/auth", ANON)).await.status, 200);
        let r = t.send_from(ip("198.51.100.3"), json_request("/agent/auth", ANON)).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()));
        assert!(r.header("retry-after").is_some());

        assert_eq!(t.stats().await.registrations, 3);
        let rejected = t.events("registration.rejected").await;
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|e| e.data["code"] == "rate_limited"));
    }
}

both_backends! {
    /// Limits live in the store, so replicas share them.
    async fn replicas_share_limits(backend: Backend) {
        let toml = "[rate_limits]\nanonymous_per_ip_per_hour = 2";
        let a = TestApp::new(backend, toml).await;
        let b = a.replica(toml).await;
        assert_eq!(a.post_json("/agent/auth", ANON).await.status, 200);
        assert_eq!(b.post_json("/agent/auth", ANON).await.status, 200);
        assert_eq!(a.post_json("/agent/auth", ANON).await.status, 429);
        assert_eq!(b.post_json("/agent/auth", ANON).await.status, 429);
    }
}

#[tokio::test]
async fn limits_can_be_turned_off() {
    let t = TestApp::new(
        Backend::Sqlite,
        "[rate_limits]\nenabled = false\nanonymous_per_hour = 0",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(t.post_json("/agent/auth", ANON).await.status, 200);
    }
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let t = TestApp::new(
        Backend::Sqlite,
        "[rate_limits]\nanonymous_per_ip_per_hour = 1",
    )
    .await;
    assert_eq!(
        t.send_from(ip("2001:db8:1:2::1"), json_request("/agent/auth", ANON))
            .await
            .status,
        200
    );
    assert_eq!(
        t.send_from(ip("2001:db8:1:2::ffff"), json_request("/agent/auth", ANON))
            .await
            .status,
        429
    );
    assert_eq!(
        t.send_from(ip("2001:db8:1:3::1"), json_request("/agent/auth", ANON))
            .await
            .status,
        200
    );
}

/// Behind a configured proxy the client is the nearest untrusted
/// `X-Forwarded-For` hop; an untrusted peer cannot choose its address.
#[tokio::test]
async fn client_ip_comes_from_trusted_proxies_only() {
    let toml = "[rate_limits]\nanonymous_per_ip_per_hour = 1\n[server]\ntrusted_proxies = [\"10.0.0.0/8\"]";
    let t = TestApp::new(Backend::Sqlite, toml).await;
    let via_proxy = |client: &str| {
        let mut req = json_request("/agent/auth", ANON);
        req.headers_mut().insert(
            "x-forwarded-for",
            client.parse().unwrap_or_else(|_| unreachable!()),
        );
        req
    };
    assert_eq!(
        t.send_from(ip("10.0.0.5"), via_proxy("198.51.100.7"))
            .await
            .status,
        200
    );
    assert_eq!(
        t.send_from(ip("10.0.0.5"), via_proxy("198.51.100.7"))
            .await
            .status,
        429
    );
    assert_eq!(
        t.send_from(ip("10.0.0.5"), via_proxy("198.51.100.8"))
            .await
            .status,
        200
    );
    // An untrusted peer's header is ignored: it is limited as itself.
    assert_eq!(
        t.send_from(ip("192.0.2.1"), via_proxy("198.51.100.9"))
            .await
            .status,
        200
    );
    assert_eq!(
        t.send_from(ip("192.0.2.1"), via_proxy("198.51.100.10"))
            .await
            .status,
        429
    );
    let created = t.events("registration.created").await;
    let ips: Vec<_> = created.iter().filter_map(|e| e.ip.clone()).collect();
    assert_eq!(ips, ["198.51.100.7", "198.51.100.8", "192.0.2.1"]);
}
