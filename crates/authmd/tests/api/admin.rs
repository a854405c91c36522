//! The admin API: authentication, absence when not configured, every
//! listing and revocation, the export and the live stream.

use std::net::SocketAddr;
use std::time::Duration;

use authmd_jose::{Algorithm, SigningKey};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint};
use crate::revoke::{logout_claims, mint_logout, post_logout};
use crate::support::{Backend, TestApp, TestResponse};

pub const TOKEN: &str = "0123456789abcdef0123456789abcdef-admin";
const AUD: &str = "http://127.0.0.1:8080";

pub fn admin_toml(extra: &str) -> String {
    format!("{extra}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")
}

/// One admin request, from 10.9.8.7, with `token` (if any).
pub async fn call(
    router: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> TestResponse {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("x-authmd-operator", "alice-oncall");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let mut req = match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 9, 8, 7], 5000))));
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    TestResponse {
        status,
        headers,
        body,
    }
}

async fn get(router: &Router, path: &str) -> Value {
    let r = call(router, Method::GET, path, Some(TOKEN), None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn post(router: &Router, path: &str, body: Value) -> TestResponse {
    call(router, Method::POST, path, Some(TOKEN), Some(body)).await
}

async fn works(t: &TestApp, credential: &str) -> bool {
    t.get("/api/whoami", Some(credential)).await.status == 200
}

async fn register(t: &TestApp, k: &SigningKey, iss: &str, sub: &str) -> Value {
    let r = t
        .post_json(
            "/agent/auth",
            &body(&mint(k, &[], &claims(iss, AUD, sub)), "api_key"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_admin_api_is_absent_unless_configured() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    assert!(authmd::http::admin_router(t.app.clone()).is_none());
    // And the public listener never serves it.
    let r = t.get("/admin/registrations", Some(TOKEN)).await;
    assert_eq!(r.status, 404);

    for (toml, key) in [
        ("[admin]\nlisten = \"127.0.0.1:8081\"\n", "admin.token"),
        (
            "[admin]\ntoken = \"0123456789abcdef0123456789abcdef\"\n",
            "admin.listen",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:8081\"\ntoken = \"short\"\n",
            "admin.token",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:8080\"\ntoken = \"0123456789abcdef0123456789abcdef\"\n",
            "admin.listen",
        ),
    ] {
        let e = authmd::config::load_str(toml, &Default::default()).expect_err(toml);
        assert_eq!(e.key, key, "{toml}: {e}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_everywhere() {
    let t = TestApp::new(Backend::Sqlite, &admin_toml("")).await;
    let router = authmd::http::admin_router(t.app.clone()).expect("configured");
    t.register_anonymous().await;
    for path in [
        "/admin/registrations",
        "/admin/users",
        "/admin/delegations",
        "/admin/events",
        "/admin/events/export",
        "/admin/events/stream",
        "/admin/nothing-here",
    ] {
        for token in [
            None,
            Some("wrong"),
            Some(&TOKEN[..TOKEN.len() - 1]),
            Some(""),
        ] {
            let r = call(&router, Method::GET, path, token, None).await;
            assert_eq!(r.status, 401, "{path} {token:?}");
            assert_eq!(r.code(), "invalid_token");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"authmd-admin\"")
            );
        }
    }
    // Basic auth carrying the token is not a bearer token.
    let mut req = Request::builder()
        .uri("/admin/registrations")
        .header("authorization", format!("Basic {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    assert_eq!(router.clone().oneshot(req).await.expect("ok").status(), 401);
    // Revocations without the token change nothing.
    let r = call(
        &router,
        Method::POST,
        "/admin/revoke-all",
        None,
        Some(json!({"confirm": "revoke-all"})),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(t.events("operator.action").await.is_empty());
    assert_eq!(
        get(&router, "/admin/registrations?status=unclaimed").await["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

both_backends! {
    async fn operators_find_and_revoke_registrations(backend: Backend) {
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "ka");
        let kb = key(Algorithm::Es256, "kb");
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        let t = TestApp::new(backend, &admin_toml(&format!(
            "[[providers]]\nissuer = \"{}\"\n[[providers]]\nissuer = \"{}\"\n", a.issuer(), b.issuer()
        ))).await;
        let router = authmd::http::admin_router(t.app.clone()).expect("configured");

        let anon = t.register_anonymous().await;
        let alice_a = register(&t, &ka, a.issuer(), "alice").await;
        let bob_a = register(&t, &ka, a.issuer(), "bob").await;
        let carol_b = register(&t, &kb, b.issuer(), "carol").await;
        let key_of = |v: &Value| v["credential"].as_str().unwrap_or_default().to_owned();

        // Listing and filtering.
        let all = get(&router, "/admin/registrations").await;
        assert_eq!(all["items"].as_array().map(Vec::len), Some(4));
        assert_eq!(all["next"], Value::Null);
        let by_a = get(&router, &format!("/admin/registrations?provider={}", a.issuer())).await;
        assert_eq!(ids(&by_a), vec![alice_a["registration_id"].as_str().unwrap_or_default(), bob_a["registration_id"].as_str().unwrap_or_default()]);
        assert_eq!(by_a["items"][0]["iss"], a.issuer());
        assert_eq!(by_a["items"][0]["sub"], "alice");
        assert_eq!(by_a["items"][0]["live_credentials"], 1);
        let unclaimed = get(&router, "/admin/registrations?status=unclaimed,pending_claim&type=anonymous").await;
        assert_eq!(ids(&unclaimed), vec![anon["registration_id"].as_str().unwrap_or_default()]);
        let by_email = get(&router, "/admin/registrations?email=CAROL@EXAMPLE.COM").await;
        assert_eq!(ids(&by_email).len(), 0, "the local part compares exactly");
        let by_email = get(&router, "/admin/registrations?email=carol@EXAMPLE.com").await;
        assert_eq!(ids(&by_email), vec![carol_b["registration_id"].as_str().unwrap_or_default()]);
        let future = get(&router, "/admin/registrations?created_after=2999-01-01T00:00:00Z").await;
        assert_eq!(ids(&future).len(), 0);
        let window = get(&router, "/admin/registrations?created_after=2020-01-01T00:00:00Z&created_before=2999-01-01T00:00:00Z").await;
        assert_eq!(ids(&window).len(), 4);
        let deadline = get(&router, "/admin/registrations?expires_after=2020-01-01T00:00:00Z").await;
        assert_eq!(ids(&deadline), vec![anon["registration_id"].as_str().unwrap_or_default()], "only the unclaimed one has a deadline");
        // Paging.
        let p1 = get(&router, "/admin/registrations?limit=3").await;
        assert_eq!(ids(&p1).len(), 3);
        let next = p1["next"].as_str().expect("a next cursor").to_owned();
        let p2 = get(&router, &format!("/admin/registrations?limit=3&after={next}")).await;
        assert_eq!(ids(&p2).len(), 1);
        assert_eq!(p2["next"], Value::Null);
        // Bad filters are 400, not 500.
        for bad in ["status=gone", "type=robot", "limit=-1", "created_after=yesterday", "colour=red"] {
            let r = call(&router, Method::GET, &format!("/admin/registrations?{bad}"), Some(TOKEN), None).await;
            assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "invalid_request"), "{bad}: {}", r.text());
        }

        // One registration, with credentials and events.
        let id = alice_a["registration_id"].as_str().unwrap_or_default();
        let detail = get(&router, &format!("/admin/registrations/{id}")).await;
        assert_eq!(detail["registration"]["id"], id);
        assert_eq!(detail["credentials"].as_array().map(Vec::len), Some(1));
        assert!(detail["credentials"][0].get("token_hash").is_none(), "no hash leaves the store");
        assert!(!detail.to_string().contains(&key_of(&alice_a)), "no secret either");
        let events: Vec<&str> = detail["events"].as_array().map(|e| e.iter().filter_map(|e| e["event"].as_str()).collect()).unwrap_or_default();
        assert_eq!(events, vec!["registration.created", "credential.issued"]);
        let r = call(&router, Method::GET, "/admin/registrations/reg_nope", Some(TOKEN), None).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (404, "not_found"));

        // Users and delegations.
        let users = get(&router, "/admin/users").await;
        assert_eq!(users["items"].as_array().map(Vec::len), Some(3));
        let alice_user = get(&router, "/admin/users?email=alice@example.com").await;
        let alice_id = alice_user["items"][0]["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(alice_user["items"][0]["live_registrations"], 1);
        let delegations = get(&router, &format!("/admin/delegations?provider={}", a.issuer())).await;
        assert_eq!(delegations["items"].as_array().map(Vec::len), Some(2));
        assert_eq!(delegations["items"][0]["state"], "active");
        let d1 = get(&router, &format!("/admin/delegations?provider={}&limit=1", a.issuer())).await;
        let d2 = get(&router, &format!("/admin/delegations?provider={}&limit=1&after={}", a.issuer(), d1["next"].as_str().unwrap_or_default())).await;
        assert_eq!(d2["items"][0]["sub"], "bob");
        let r = call(&router, Method::GET, "/admin/delegations?state=maybe", Some(TOKEN), None).await;
        assert_eq!(r.status, 400);

        // Revoke one registration.
        let r = post(&router, &format!("/admin/registrations/{id}/revoke"), json!({"reason": "laptop stolen"})).await;
        assert_eq!((r.status.as_u16(), r.json()), (200, json!({"registrations": 1, "credentials": 1})), "{}", r.text());
        assert!(!works(&t, &key_of(&alice_a)).await);
        assert!(works(&t, &key_of(&bob_a)).await);
        let op = t.events("operator.action").await;
        assert_eq!(op.len(), 1);
        assert_eq!(op[0].data["action"], "revoke_registration");
        assert_eq!(op[0].data["operator"], "alice-oncall");
        assert_eq!(op[0].data["reason"], "laptop stolen");
        assert_eq!(op[0].ip.as_deref(), Some("10.9.8.7"));
        let revoked = t.events("registration.revoked").await;
        assert_eq!(revoked[0].data["by"], "operator");
        assert_eq!(revoked[0].data["iss"], a.issuer());
        assert_eq!(revoked[0].data["sub"], "alice");
        let d = get(&router, "/admin/delegations?sub=alice").await;
        assert_eq!(d["items"][0]["state"], "revoked");
        let r = post(&router, &format!("/admin/registrations/{id}/revoke"), json!({})).await;
        assert_eq!(r.json(), json!({"registrations": 0, "credentials": 0}), "already revoked");
        let r = post(&router, "/admin/registrations/reg_nope/revoke", json!({})).await;
        assert_eq!(r.status, 404);
        let r = post(&router, &format!("/admin/registrations/{id}/revoke"), json!({"reason": "a\nb"})).await;
        assert_eq!(r.status, 400);
        let r = call(&router, Method::POST, &format!("/admin/registrations/{id}/revoke"), Some(TOKEN), None).await;
        assert_eq!(r.status, 200, "an empty body is allowed: {}", r.text());
        // An ID-JAG minted before the revocation no longer registers; a
        // fresh one does (the provider vouches again).
        let early = mint(&ka, &[], &crate::revoke::with(claims(a.issuer(), AUD, "alice"), "iat", (crate::provider::now_secs() - 60).into()));
        let r = t.post_json("/agent/auth", &body(&early, "api_key")).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (400, "expired"), "{}", r.text());
        let alice_again = register(&t, &ka, a.issuer(), "alice").await;
        assert!(works(&t, &key_of(&alice_again)).await);

        // All of a user's, then all of a provider's.
        let r = post(&router, &format!("/admin/users/{alice_id}/revoke"), json!({})).await;
        assert_eq!(r.json(), json!({"registrations": 1, "credentials": 1}));
        assert!(!works(&t, &key_of(&alice_again)).await);
        let bob_id = get(&router, "/admin/users?email=bob@example.com").await["items"][0]["id"].as_str().unwrap_or_default().to_owned();
        let r = post(&router, &format!("/admin/users/{bob_id}/revoke"), json!({"reason": "left the company"})).await;
        assert_eq!(r.json(), json!({"registrations": 1, "credentials": 1}));
        assert!(!works(&t, &key_of(&bob_a)).await);
        assert_eq!(post(&router, "/admin/users/usr_nope/revoke", json!({})).await.status, 404);
        let r = post(&router, "/admin/providers/revoke", json!({})).await;
        assert_eq!(r.status, 400, "iss is required");
        let r = post(&router, "/admin/providers/revoke", json!({"iss": b.issuer()})).await;
        assert_eq!(r.json(), json!({"registrations": 1, "credentials": 1}));
        assert!(!works(&t, &key_of(&carol_b)).await);
        assert!(works(&t, &key_of(&anon)).await, "the anonymous one is untouched");

        // Everything at once: only with the confirmation.
        let r = post(&router, "/admin/revoke-all", json!({})).await;
        assert_eq!(r.status, 400);
        assert!(works(&t, &key_of(&anon)).await);
        let r = post(&router, "/admin/revoke-all", json!({"confirm": "revoke-all", "reason": "incident 42"})).await;
        assert_eq!(r.json(), json!({"registrations": 1, "credentials": 1}));
        assert!(!works(&t, &key_of(&anon)).await);
        let actions: Vec<String> = t.events("operator.action").await.iter().map(|e| e.data["action"].as_str().unwrap_or_default().to_owned()).collect();
        assert_eq!(actions, ["revoke_registration", "revoke_registration", "revoke_registration", "revoke_user", "revoke_user", "revoke_provider", "revoke_all"]);
        let live = get(&router, "/admin/registrations?status=unclaimed,pending_claim,claimed,active").await;
        assert_eq!(ids(&live).len(), 0);
    }
}

both_backends! {
    async fn the_audit_trail_filters_exports_and_streams(backend: Backend) {
        let a = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "ka");
        a.set_keys(&[&ka]);
        let t = TestApp::new(backend, &admin_toml(&format!("[[providers]]\nissuer = \"{}\"\n", a.issuer()))).await;
        let router = authmd::http::admin_router(t.app.clone()).expect("configured");
        let anon = t.register_anonymous().await;
        let alice = register(&t, &ka, a.issuer(), "alice").await;

        let all = get(&router, "/admin/events").await;
        assert_eq!(all["items"].as_array().map(Vec::len), Some(4));
        let by_provider = get(&router, &format!("/admin/events?provider={}", a.issuer())).await;
        assert_eq!(by_provider["items"].as_array().map(Vec::len), Some(2));
        let reg = anon["registration_id"].as_str().unwrap_or_default();
        let by_reg = get(&router, &format!("/admin/events?registration={reg}&event=registration.created")).await;
        assert_eq!(by_reg["items"].as_array().map(Vec::len), Some(1));
        let user = t.get("/api/whoami", alice["credential"].as_str()).await.json()["user"]["id"].as_str().unwrap_or_default().to_owned();
        let by_user = get(&router, &format!("/admin/events?user={user}")).await;
        assert_eq!(by_user["items"].as_array().map(Vec::len), Some(2));
        let by_ip = get(&router, &format!("/admin/events?ip={}", crate::support::CLIENT_IP)).await;
        assert_eq!(by_ip["items"].as_array().map(Vec::len), Some(4));
        let none = get(&router, "/admin/events?ip=192.0.2.1").await;
        assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
        let page = get(&router, "/admin/events?limit=3").await;
        let after = page["next"].as_str().expect("next").to_owned();
        let rest = get(&router, &format!("/admin/events?after={after}")).await;
        assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
        for bad in ["event=nope", "ip=banana", "since=tomorrow", "after=x"] {
            let r = call(&router, Method::GET, &format!("/admin/events?{bad}"), Some(TOKEN), None).await;
            assert_eq!(r.status, 400, "{bad}");
        }

        // Export: JSON lines, every page.
        let r = call(&router, Method::GET, "/admin/events/export?limit=1", Some(TOKEN), None).await;
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let lines: Vec<Value> = r.text().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(lines.len(), 4, "export is not limited to a page");
        assert_eq!(lines[0], all["items"][0]);

        // The live stream shows what happens after it starts.
        let mut req = Request::builder()
            .uri("/admin/events/stream?event=registration.revoked,operator.action")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        let res = router.clone().oneshot(req).await.expect("ok");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut body = res.into_body().into_data_stream();
        t.register_anonymous().await; // filtered out
        let r = post_logout(&t, &mint_logout(&ka, &[], &logout_claims(a.issuer(), "alice"))).await;
        assert_eq!(r.status, 200);
        let text = read_sse(&mut body, 1).await;
        assert!(text.contains("event: registration.revoked"), "{text}");
        assert!(text.contains("\"sub\":\"alice\""), "{text}");
        assert!(!text.contains("registration.created"), "{text}");
        // Resuming with Last-Event-ID replays nothing already seen.
        let id = text.lines().find_map(|l| l.strip_prefix("id: ")).expect("an id").to_owned();
        let mut req = Request::builder()
            .uri("/admin/events/stream")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("last-event-id", &id)
            .body(Body::empty())
            .expect("request");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        let mut resumed = router.clone().oneshot(req).await.expect("ok").into_body().into_data_stream();
        let again = t.register_anonymous().await;
        let text = read_sse(&mut resumed, 2).await;
        assert!(!text.contains("registration.revoked"), "{text}");
        assert!(text.contains(again["registration_id"].as_str().unwrap_or_default()), "{text}");
        let bad = call(&router, Method::GET, "/admin/events/stream?from=x.y", Some(TOKEN), None).await;
        assert_eq!(bad.status, 400);
    }
}

/// Reads SSE frames until `n` events arrived (10 s at most).
pub async fn read_sse(body: &mut axum::body::BodyDataStream, n: usize) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.matches("\nevent: ").count() + usize::from(text.starts_with("event: ")) < n {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 10 s; got {text:?}"));
        match chunk {
            Some(Ok(bytes)) => text.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("stream ended: {other:?}"),
        }
    }
    text
}
