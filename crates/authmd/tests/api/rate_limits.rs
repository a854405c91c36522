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
        let rejected = t.rejected().await;
        assert_eq!(rejected.len(), 2, "one per network");
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

fn email_registration(address: &str) -> String {
    serde_json::json!({
        "type": "identity_assertion",
        "assertion_type": "verified_email",
        "assertion": address,
        "requested_credential_type": "api_key",
    })
    .to_string()
}

both_backends! {
    /// Issue 15, item 3: email-required registrations are not charged to the
    /// agent-verified (ID-JAG) budget: a few addresses from one network must
    /// not lock provider-verified agents out.
    async fn email_registrations_do_not_use_the_id_jag_budget(backend: Backend) {
        use crate::provider::{JwksServer, body, claims, key, mint};
        let server = JwksServer::start().await;
        let k = key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let toml = format!(
            "[rate_limits]\nidentity_assertion_per_ip_per_hour = 2\nidentity_assertion_per_hour = 2\n\
             [[providers]]\nissuer = \"{}\"\n",
            server.issuer()
        );
        let t = TestApp::new(backend, &toml).await;
        for i in 0..3 {
            let r = t.post_json("/agent/auth", &email_registration(&format!("user{i}@example.com"))).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        for sub in ["a", "b"] {
            let r = t
                .post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), "http://127.0.0.1:8080", sub)), "api_key"))
                .await;
            assert_eq!(r.status, 200, "an ID-JAG registration was refused after email registrations: {}", r.text());
        }
    }
}

both_backends! {
    /// Item 3: claim emails are limited per recipient mailbox across
    /// registrations and flows: spellings that reach the same mailbox
    /// (case, `+tag`) count together, from any network.
    async fn claim_emails_are_limited_per_recipient_across_registrations(backend: Backend) {
        let t = TestApp::new(backend, "[rate_limits]\nclaim_emails_per_address_per_hour = 3\nanonymous_per_ip_per_hour = 50").await;
        let spellings = ["victim@example.com", "Victim@Example.com", "victim+agent@example.com"];
        for (i, address) in spellings.iter().enumerate() {
            let from = ip(&format!("198.51.100.{}", 10 + i));
            let r = t.send_from(from, json_request("/agent/auth", &email_registration(address))).await;
            assert_eq!(r.status, 200, "{address}: {}", r.text());
        }
        // A fourth message to that mailbox, through another registration type.
        let anonymous = t.register_anonymous().await;
        let r = t
            .send_from(ip("198.51.100.99"), json_request("/agent/auth/claim", &serde_json::json!({
                "claim_token": anonymous["claim_token"], "email": "VICTIM+x@example.COM",
            }).to_string()))
            .await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()), "{}", r.text());
        let r = t.send_from(ip("198.51.100.98"), json_request("/agent/auth", &email_registration("victim@example.com"))).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()), "{}", r.text());
        assert_eq!(t.mails(3).await.len(), 3);
        // Another mailbox is not affected.
        let r = t.post_json("/agent/auth", &email_registration("someone.else@example.com")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

both_backends! {
    /// Item 3: email-required registrations have buckets of their own (per
    /// network, then service-wide), and a mailbox gets at most
    /// `claim_emails_per_address_per_day` claim emails a day even when the
    /// hourly budget refills.
    async fn email_registrations_have_their_own_buckets_and_a_daily_cap_per_mailbox(backend: Backend) {
        use authmd::audit::RequestMeta;
        use authmd::register::RegisterRequest;
        let t = TestApp::new(
            backend,
            "[rate_limits]\nverified_email_per_ip_per_hour = 2\nverified_email_per_hour = 3\n\
             claim_emails_per_address_per_hour = 2\nclaim_emails_per_address_per_day = 3",
        )
        .await;
        let register = |address: &str, from: &str, now: authmd::Timestamp| {
            let req = RegisterRequest {
                kind: Some("identity_assertion".into()),
                requested_credential_type: Some("api_key".into()),
                assertion_type: Some("verified_email".into()),
                assertion: Some(address.into()),
            };
            let meta = RequestMeta::new(Some(ip(from)), None);
            let t = &t;
            async move { t.app.register(Ok(req), &meta, now).await.map(|_| ()).map_err(|e| e.to_string()) }
        };
        let now = authmd::Timestamp::now();
        assert!(register("a@example.com", "198.51.100.1", now).await.is_ok());
        assert!(register("b@example.com", "198.51.100.1", now).await.is_ok());
        let third = register("c@example.com", "198.51.100.1", now).await;
        assert!(third.as_ref().is_err_and(|e| e.contains("too many")), "per network: {third:?}");
        assert!(register("c@example.com", "198.51.100.2", now).await.is_ok());
        let fourth = register("d@example.com", "198.51.100.3", now).await;
        assert!(fourth.as_ref().is_err_and(|e| e.contains("too many")), "service-wide: {fourth:?}");

        // The mailbox: 2 an hour, 3 a day (buckets refilled by time).
        let hour = std::time::Duration::from_secs(3600);
        let later = now.plus(hour * 2);
        assert!(register("m@example.com", "198.51.100.4", later).await.is_ok());
        assert!(register("M@example.com", "198.51.100.5", later).await.is_ok());
        let over = register("m+x@example.com", "198.51.100.6", later).await;
        assert!(over.as_ref().is_err_and(|e| e.contains("too many")), "hourly: {over:?}");
        let next = later.plus(hour);
        assert!(register("m@example.com", "198.51.100.7", next).await.is_ok(), "hourly refilled");
        let daily = register("m@example.com", "198.51.100.8", next.plus(hour)).await;
        assert!(daily.as_ref().is_err_and(|e| e.contains("too many")), "daily: {daily:?}");
    }
}
