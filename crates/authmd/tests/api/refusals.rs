//! Refused registrations and the audit trail's size (issue 15, item 2):
//! refusals are counted in memory per client network, code and flow, and
//! written periodically as one event per group, so a flood of garbage or of
//! `429`s costs a bounded number of rows; and the trail is kept for
//! `[audit] retention`, enforced by the sweep.

use std::net::IpAddr;

use authmd::Timestamp;
use authmd::audit::{AuditEvent, EventKind, RequestMeta};
use axum::http::Method;

use crate::both_backends;
use crate::support::{Backend, TestApp, json_request, request};

const ANON: &str = r#"{"type":"anonymous","requested_credential_type":"api_key"}"#;

both_backends! {
    /// 300 malformed bodies and 300 `429`s from two networks write nothing
    /// while they arrive (no row per refusal through the single writer);
    /// the flush writes one row per network, code and flow, with counts.
    async fn a_flood_of_refusals_writes_a_bounded_number_of_rows(backend: Backend) {
        let t = TestApp::new(backend, "[rate_limits]\nanonymous_per_ip_per_hour = 1").await;
        let a: IpAddr = [198, 51, 100, 1].into();
        let b: IpAddr = "2001:db8:7:7::1".parse().unwrap_or(a);
        let before = t.stats().await.audit_events;
        for i in 0..300 {
            let from = if i % 2 == 0 { a } else { b };
            let r = t.send_from(from, request(Method::POST, "/agent/auth", None, Some(("application/json", b"{".to_vec())))).await;
            assert_eq!(r.status, 400);
            let r = t.send_from(from, json_request("/agent/auth", ANON)).await;
            assert!(r.status == 429 || (i < 2 && r.status == 200), "{}", r.text());
        }
        let during = t.stats().await.audit_events - before;
        // The two successful registrations wrote their own two events each.
        assert_eq!(during, 4, "refusals were written one row each");

        let written = t.app.flush_refusals().await.expect("flush");
        let rejected = t.events("registration.rejected").await;
        assert_eq!(written, rejected.len());
        assert_eq!(rejected.len(), 4, "{rejected:#?}");
        let count = |network: &str, code: &str| {
            rejected
                .iter()
                .filter(|e| e.data["network"] == network && e.data["code"] == code)
                .map(|e| e.data["count"].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        assert_eq!(count("198.51.100.1", "invalid_request"), 150);
        assert_eq!(count("198.51.100.1", "rate_limited"), 149);
        assert_eq!(count("2001:db8:7:7::/64", "invalid_request"), 150);
        assert_eq!(count("2001:db8:7:7::/64", "rate_limited"), 149);
        let limited = rejected.iter().find(|e| e.data["code"] == "rate_limited").map(|e| e.data.clone()).unwrap_or_default();
        assert_eq!(limited["flow"], "anonymous");
        assert!(limited["first_at"].as_str().is_some() && limited["last_at"].as_str().is_some(), "{limited}");
        // Nothing is written twice.
        assert_eq!(t.app.flush_refusals().await.expect("flush"), 0);
    }
}

both_backends! {
    /// Each interval holds at most a bounded number of groups: refusals from
    /// more networks than that are counted under `network: "other"`.
    async fn refusals_from_many_networks_share_one_overflow_group(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        for i in 0..600u32 {
            let from: IpAddr = [10, (i >> 8) as u8, (i & 0xff) as u8, 1].into();
            t.send_from(from, request(Method::POST, "/agent/auth", None, Some(("application/json", b"{".to_vec())))).await;
        }
        t.app.flush_refusals().await.expect("flush");
        let rejected = t.events("registration.rejected").await;
        assert!(rejected.len() <= authmd::refusals::MAX_GROUPS + 1, "{} rows", rejected.len());
        let total: u64 = rejected.iter().map(|e| e.data["count"].as_u64().unwrap_or(0)).sum();
        assert_eq!(total, 600);
        assert!(rejected.iter().any(|e| e.data["network"] == "other"));
    }
}

both_backends! {
    /// `[audit] retention`: the sweep deletes events older than it, in
    /// batches, and keeps the rest.
    async fn the_sweep_enforces_audit_retention(backend: Backend) {
        let t = TestApp::new(backend, "[audit]\nretention = \"30d\"").await;
        let now = Timestamp::now();
        let day = std::time::Duration::from_secs(86_400);
        let meta = RequestMeta::default();
        for i in 0..7u64 {
            let old = AuditEvent::new(EventKind::OperatorAction, now.minus(day * 31).plus(std::time::Duration::from_secs(i)), &meta).with("n", i);
            t.app.store().record_event(old).await.expect("record");
        }
        t.app.store().record_event(AuditEvent::new(EventKind::OperatorAction, now.minus(day * 29), &meta).with("n", "kept")).await.expect("record");
        t.app.sweep(now).await.expect("sweep");
        let left = t.events("operator.action").await;
        assert_eq!(left.len(), 1, "{left:#?}");
        assert_eq!(left[0].data["n"], "kept");
    }
}
