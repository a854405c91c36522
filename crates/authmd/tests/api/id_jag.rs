//! Agent-verified registration (docs/protocol.md §3.3, §6): happy paths, user
//! matching, delegations, replay, issuance.

use std::time::Duration;

use authmd::Timestamp;
use authmd::validation::Validation;
use authmd_jose::Algorithm;
use serde_json::{Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint, trusting};
use crate::support::{Backend, TestApp};

const AUD: &str = "http://127.0.0.1:8080";

async fn setup(
    backend: Backend,
    alg: Algorithm,
    extra: &str,
) -> (TestApp, JwksServer, authmd_jose::SigningKey) {
    let server = JwksServer::start().await;
    let k = key(alg, "k1");
    server.set_keys(&[&k]);
    let t = TestApp::new(backend, &trusting(&[server.issuer()], extra)).await;
    (t, server, k)
}

both_backends! {
    async fn es256_rs256_ps256_eddsa_assertions_register(backend: Backend) {
        for alg in Algorithm::ALL {
            let (t, server, k) = setup(backend, alg, "").await;
            let assertion = mint(&k, &[], &claims(server.issuer(), AUD, "alice"));
            let r = t.post_json("/agent/auth", &body(&assertion, "access_token")).await;
            assert_eq!(r.status, 200, "{alg}: {}", r.text());
            assert_eq!(r.header("cache-control"), Some("no-store"));
            let b = r.json();
            assert_eq!(b["registration_type"], "agent-provider", "{alg}");
            assert_eq!(b["credential_type"], "access_token");
            assert_eq!(b["scopes"], json!(["api.read", "api.write"]));
            assert!(b.get("refresh_token").is_none(), "no refresh token, anywhere");
            assert!(!r.text().contains("refresh"));
            let token = b["credential"].as_str().unwrap_or_default();
            assert!(token.starts_with("amd_at_"));
            let expires = Timestamp::parse_rfc3339(b["credential_expires"].as_str().unwrap_or_default());
            let in_an_hour = Timestamp::now().plus(Duration::from_secs(3600));
            assert!(expires.is_some_and(|e| (e.as_millis() - in_an_hour.as_millis()).abs() < 60_000));

            let who = t.get("/api/whoami", Some(token)).await;
            assert_eq!(who.status, 200, "{}", who.text());
            let who = who.json();
            assert_eq!(who["registration_status"], "active");
            assert_eq!(who["user"]["email"], "alice@example.com");
            assert_eq!(who["scopes"], json!(["api.read", "api.write"]));
            // Writes are allowed: post-claim scopes.
            let w = t.send(crate::support::request(axum::http::Method::POST, "/api/things", Some(token), None)).await;
            assert_eq!(w.status, 404, "write passes the scope rule");

            let created = t.events("registration.created").await;
            assert_eq!(created.len(), 1);
            let data = &created[0].data;
            assert_eq!(data["iss"], server.issuer());
            assert_eq!(data["sub"], "alice");
            assert_eq!(data["agent_platform"], "test-platform");
            assert_eq!(data["agent_context_id"], "ctx-1");
            assert_eq!(data["registration_type"], "agent-provider");
            let issued = t.events("credential.issued").await;
            assert_eq!(issued[0].data["iss"], server.issuer());
            assert_eq!(issued[0].data["credential_type"], "access_token");
        }
    }
}

both_backends! {
    async fn api_keys_do_not_expire_and_access_tokens_do(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::Es256, "").await;
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, "bob")), "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let b = r.json();
        assert!(b["credential"].as_str().unwrap_or_default().starts_with("amd_sk_"));
        assert_eq!(b["credential_expires"], Value::Null);

        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, "bob")), "access_token")).await;
        let token = r.json()["credential"].as_str().unwrap_or_default().to_owned();
        let later = Timestamp::now().plus(Duration::from_secs(3601));
        let v = t.app.validate(Some(&token), later).await;
        assert!(matches!(v, Ok(Validation::Invalid(_))), "access token must expire: {v:?}");
    }
}

both_backends! {
    /// The registration id is stable for a delegation (iss, sub); each fresh
    /// ID-JAG gets a new credential, and both keep working.
    async fn registration_id_is_stable_per_delegation(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::EdDsa, "").await;
        let first = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, "carol")), "api_key")).await.json();
        let second = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, "carol")), "api_key")).await.json();
        assert_eq!(first["registration_id"], second["registration_id"]);
        assert_ne!(first["credential"], second["credential"]);
        for b in [&first, &second] {
            assert_eq!(t.get("/api/whoami", b["credential"].as_str()).await.status, 200);
        }
        let other = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, "dave")), "api_key")).await.json();
        assert_ne!(other["registration_id"], first["registration_id"]);
        let stats = t.stats().await;
        assert_eq!((stats.registrations, stats.credentials), (2, 3));
    }
}

both_backends! {
    /// A used ID-JAG is refused (step 12) and creates nothing.
    async fn replayed_jti_is_rejected(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::Es256, "").await;
        let assertion = mint(&k, &[], &claims(server.issuer(), AUD, "erin"));
        assert_eq!(t.post_json("/agent/auth", &body(&assertion, "access_token")).await.status, 200);
        let before = t.stats().await;
        let r = t.post_json("/agent/auth", &body(&assertion, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "replay_detected".into()));
        let after = t.stats().await;
        assert_eq!((before.registrations, before.credentials), (after.registrations, after.credentials));
        let rejected = t.rejected().await;
        assert!(
            rejected.iter().any(|e| e.data["code"] == "replay_detected"
                && e.data["flow"] == "urn:ietf:params:oauth:token-type:id-jag"
                && e.data["count"] == 1),
            "{rejected:?}"
        );
    }
}

both_backends! {
    /// Step 13 comes after 12, and a refused credential type does not spend
    /// the jti.
    async fn unsupported_credential_type_keeps_the_assertion_usable(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::Es256, "").await;
        let assertion = mint(&k, &[], &claims(server.issuer(), AUD, "frank"));
        let r = t.post_json("/agent/auth", &body(&assertion, "password")).await;
        assert_eq!((r.status.as_u16(), r.code()), (400, "unsupported_credential_type".into()));
        assert_eq!(t.stats().await.credentials, 0);
        assert_eq!(t.post_json("/agent/auth", &body(&assertion, "api_key")).await.status, 200);
        // Now used: a replay wins over the credential type.
        let r = t.post_json("/agent/auth", &body(&assertion, "password")).await;
        assert_eq!(r.code(), "replay_detected");
    }
}

both_backends! {
    /// §6 matching: a verified email links providers' delegations to one
    /// user; a provider that does not allow linking gets its own user.
    async fn users_are_matched_by_verified_email_per_provider_policy(backend: Backend) {
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let c = JwksServer::start().await;
        let (ka, kb, kc) = (key(Algorithm::Es256, "a"), key(Algorithm::Es256, "b"), key(Algorithm::Es256, "c"));
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        c.set_keys(&[&kc]);
        let toml = format!(
            "[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\nlink_by_verified_email = false\n",
            a.issuer(), b.issuer(), c.issuer()
        );
        let t = TestApp::new(backend, &toml).await;
        let user_of = |r: crate::support::TestResponse| {
            let who = r.json();
            who["credential"].as_str().unwrap_or_default().to_owned()
        };
        let mut ca = claims(a.issuer(), AUD, "a-123");
        ca.insert("email".into(), "Grace@Example.com".into());
        let mut cb = claims(b.issuer(), AUD, "b-999");
        cb.insert("email".into(), "Grace@EXAMPLE.COM".into());
        let mut cc = claims(c.issuer(), AUD, "c-777");
        cc.insert("email".into(), "Grace@example.com".into());
        let ta = user_of(t.post_json("/agent/auth", &body(&mint(&ka, &[], &ca), "api_key")).await);
        let tb = user_of(t.post_json("/agent/auth", &body(&mint(&kb, &[], &cb), "api_key")).await);
        let tc = user_of(t.post_json("/agent/auth", &body(&mint(&kc, &[], &cc), "api_key")).await);
        let uid = |tok: String| {
            let t = &t;
            async move { t.get("/api/whoami", Some(&tok)).await.json()["user"]["id"].clone() }
        };
        let (ua, ub, uc) = (uid(ta).await, uid(tb).await, uid(tc).await);
        assert!(ua.is_string());
        assert_eq!(ua, ub, "same verified email (domain case aside) is one user");
        assert_ne!(ua, uc, "a provider without linking gets its own user");
        // A different local-part case is a different address.
        let mut cd = claims(a.issuer(), AUD, "a-456");
        cd.insert("email".into(), "grace@example.com".into());
        let td = user_of(t.post_json("/agent/auth", &body(&mint(&ka, &[], &cd), "api_key")).await);
        assert_ne!(uid(td).await, ua);
        let created = t.events("registration.created").await;
        assert_eq!(created.iter().filter(|e| e.data["user_provisioned"] == true).count(), 3);
    }
}

both_backends! {
    async fn phone_verified_users_register_and_match(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::Es256, "").await;
        let mut c1 = claims(server.issuer(), AUD, "p-1");
        c1.remove("email");
        c1.insert("email_verified".into(), false.into());
        c1.insert("phone_number".into(), "+1 (555) 010-0000".into());
        c1.insert("phone_number_verified".into(), true.into());
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &c1), "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let first = t.get("/api/whoami", r.json()["credential"].as_str()).await.json();
        let mut c2 = c1.clone();
        c2.insert("sub".into(), "p-2".into());
        c2.insert("jti".into(), "another".into());
        c2.insert("phone_number".into(), "+15550100000".into());
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &c2), "api_key")).await;
        let second = t.get("/api/whoami", r.json()["credential"].as_str()).await.json();
        assert_eq!(first["user"]["id"], second["user"]["id"]);
    }
}

both_backends! {
    /// With provisioning off, unknown users are refused with 403 and nothing
    /// is written (not even the jti); known users still register.
    async fn jit_off_refuses_unknown_users(backend: Backend) {
        let server = JwksServer::start().await;
        let k = key(Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let db = std::sync::Arc::new(crate::support::TestDb::new(backend).await);
        let open = TestApp::on(std::sync::Arc::clone(&db), &trusting(&[server.issuer()], "")).await;
        let closed = TestApp::on(db, &trusting(&[server.issuer()], "[registration]\njit_provisioning = false")).await;

        let assertion = mint(&k, &[], &claims(server.issuer(), AUD, "heidi"));
        let r = closed.post_json("/agent/auth", &body(&assertion, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code()), (403, "user_not_provisioned".into()));
        let s = closed.stats().await;
        assert_eq!((s.registrations, s.credentials), (0, 0));
        // The same assertion is not spent: it registers where provisioning is on.
        assert_eq!(open.post_json("/agent/auth", &body(&assertion, "api_key")).await.status, 200);
        // Now heidi exists: a second platform account with her verified
        // email is matched even with provisioning off.
        let r = closed
            .post_json("/agent/auth", &body(&mint(&k, &[], &{
                let mut c = claims(server.issuer(), AUD, "heidi-2");
                c.insert("email".into(), "heidi@example.com".into());
                c
            }), "api_key"))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

both_backends! {
    async fn identity_assertion_rate_limits(backend: Backend) {
        let extra = "[rate_limits]\nidentity_assertion_per_ip_per_hour = 2\n";
        let (t, server, k) = setup(backend, Algorithm::Es256, extra).await;
        for i in 0..2 {
            let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), AUD, &format!("u{i}"))), "api_key")).await;
            assert_eq!(r.status, 200);
        }
        let limited = mint(&k, &[], &claims(server.issuer(), AUD, "u3"));
        let r = t.post_json("/agent/auth", &body(&limited, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "rate_limited".into()));
        assert!(r.header("retry-after").is_some());
        assert_eq!(t.stats().await.credentials, 2);
    }
}

/// Disabled, the flow is not advertised and is refused with its code.
#[tokio::test]
async fn disabled_flow_answers_identity_assertion_not_enabled() {
    let (t, server, k) = setup(
        Backend::Sqlite,
        Algorithm::Es256,
        "[registration]\nidentity_assertion = false",
    )
    .await;
    let r = t
        .post_json(
            "/agent/auth",
            &body(
                &mint(&k, &[], &claims(server.issuer(), AUD, "x")),
                "api_key",
            ),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "identity_assertion_not_enabled".into())
    );
    let asm = t
        .get("/.well-known/oauth-authorization-server", None)
        .await
        .json();
    assert_eq!(
        asm["agent_auth"]["identity_assertion"]["assertion_types_supported"],
        json!(["verified_email"])
    );
    assert_eq!(server.hits(), 0);
}

/// A named variation: extra header members, and a change to the claims.
type Case = (
    &'static str,
    Vec<(&'static str, Value)>,
    Box<dyn Fn(&mut serde_json::Map<String, Value>)>,
);

/// The edge cases that must not be rejected (standards checklist §2.3).
#[tokio::test]
async fn acceptable_variants_are_accepted() {
    let (t, server, k) = setup(Backend::Sqlite, Algorithm::Es256, "").await;
    let issuer = server.issuer().to_owned();
    let cases: Vec<Case> = vec![
        (
            "OK1 typ with application/",
            vec![("typ", "application/oauth-id-jag+jwt".into())],
            Box::new(|_| {}),
        ),
        (
            "OK2 typ in other case",
            vec![("typ", "OAuth-ID-JAG+JWT".into())],
            Box::new(|_| {}),
        ),
        (
            "OK3 aud as one-element array",
            vec![],
            Box::new(|c| {
                c.insert("aud".into(), json!([AUD]));
            }),
        ),
        (
            "OK4 exp just past, within skew",
            vec![],
            Box::new(|c| {
                let now = crate::provider::now_secs();
                c.insert("iat".into(), (now - 200).into());
                c.insert("exp".into(), (now - 30).into());
            }),
        ),
        (
            "OK5 unknown claims",
            vec![],
            Box::new(|c| {
                c.insert("x-custom".into(), json!({"a": [1, 2]}));
                c.insert("act".into(), json!({"sub": "admin"}));
            }),
        ),
        (
            "fractional times",
            vec![],
            Box::new(|c| {
                let n = crate::provider::now_secs() as f64;
                c.insert("iat".into(), (n + 0.5).into());
                c.insert("exp".into(), (n + 299.5).into());
            }),
        ),
        (
            "nbf in the past",
            vec![],
            Box::new(|c| {
                c.insert("nbf".into(), (crate::provider::now_secs() - 10).into());
            }),
        ),
        ("client_id equal to iss", vec![], {
            let i = issuer.clone();
            Box::new(move |c| {
                c.insert("client_id".into(), i.clone().into());
            })
        }),
        (
            "jku ignored when kid matches",
            vec![("jku", "http://127.0.0.1:9/never".into())],
            Box::new(|_| {}),
        ),
    ];
    for (i, (name, header, tweak)) in cases.into_iter().enumerate() {
        let mut c = claims(&issuer, AUD, &format!("ok-{i}"));
        tweak(&mut c);
        let r = t
            .post_json("/agent/auth", &body(&mint(&k, &header, &c), "api_key"))
            .await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
    }
}

both_backends! {
    /// A remembered jti outlives every moment its assertion could be
    /// accepted (exp + 2 skews), and is purged once the longest an
    /// assertion accepted then could live has passed (max_lifetime + 3
    /// skews after it was accepted: 10 min + 3 min here).
    async fn used_jtis_are_purged_after_they_expire(backend: Backend) {
        let (t, server, k) = setup(backend, Algorithm::Es256, "").await;
        let c = claims(server.issuer(), AUD, "ivan");
        let exp = c["exp"].as_i64().unwrap_or_default();
        let key = authmd::users::jti_key(server.issuer(), c["jti"].as_str().unwrap_or_default());
        let before = Timestamp::now();
        assert_eq!(t.post_json("/agent/auth", &body(&mint(&k, &[], &c), "api_key")).await.status, 200);
        let after = Timestamp::now();
        let app = &t.app;
        let sweep = |at: Timestamp| async move {
            app.sweep(at).await.unwrap_or_else(|e| panic!("{e}"));
            app.store().jti_used(key).await.unwrap_or_else(|e| panic!("{e}"))
        };
        // exp + 2 skews (a replica with a slower clock could still accept it).
        assert!(sweep(Timestamp::from_secs(exp + 120)).await);
        assert!(sweep(before.plus(Duration::from_secs(779))).await);
        assert!(!sweep(after.plus(Duration::from_secs(781))).await);
    }
}
