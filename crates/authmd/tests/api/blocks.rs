//! Revocation that lasts (issue 15, item 12): operators block a provider
//! subject, a user or an email address from registering again (admin API
//! and CLI, audited, undoable), and live API keys per delegation are
//! capped.

use authmd_jose::{Algorithm, SigningKey};
use axum::http::Method;
use serde_json::{Value, json};

use crate::admin::{TOKEN, admin_toml, call};
use crate::both_backends;
use crate::provider::{JwksServer, body, claims, key, mint};
use crate::support::{Backend, TestApp, TestResponse, form_request, link_token, page_code};

const AUD: &str = "http://127.0.0.1:8080";

async fn setup(backend: Backend, extra: &str) -> (TestApp, axum::Router, JwksServer, SigningKey) {
    let server = JwksServer::start().await;
    let k = key(Algorithm::Es256, "k1");
    server.set_keys(&[&k]);
    let t = TestApp::new(
        backend,
        &admin_toml(&format!(
            "{extra}\n[[providers]]\nissuer = \"{}\"\n",
            server.issuer()
        )),
    )
    .await;
    let router = authmd::http::admin_router(t.app.clone()).expect("admin API");
    (t, router, server, k)
}

async fn id_jag(
    t: &TestApp,
    k: &SigningKey,
    iss: &str,
    sub: &str,
    email: &str,
    kind: &str,
) -> TestResponse {
    let mut c = claims(iss, AUD, sub);
    c.insert("email".into(), email.into());
    t.post_json("/agent/auth", &body(&mint(k, &[], &c), kind))
        .await
}

async fn admin(router: &axum::Router, path: &str, body: Value) -> TestResponse {
    call(router, Method::POST, path, Some(TOKEN), Some(body)).await
}

async fn works(t: &TestApp, credential: &str) -> bool {
    t.get("/api/whoami", Some(credential)).await.status == 200
}

fn credential(r: &TestResponse) -> String {
    r.json()["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

both_backends! {
    /// A provider subject the operator revoked and blocked does not come
    /// back with a fresh ID-JAG; unblocked, it does. Both are audited.
    async fn a_blocked_subject_cannot_register_again_until_unblocked(backend: Backend) {
        let (t, router, server, k) = setup(backend, "").await;
        let iss = server.issuer().to_owned();
        let r = id_jag(&t, &k, &iss, "mallory", "mallory@example.com", "api_key").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let registration = r.json()["registration_id"].as_str().unwrap_or_default().to_owned();
        let revoked = admin(&router, &format!("/admin/registrations/{registration}/revoke"), json!({"reason": "abuse"})).await;
        assert_eq!(revoked.status, 200, "{}", revoked.text());

        let blocked = admin(&router, "/admin/blocks", json!({"kind": "subject", "iss": iss, "sub": "mallory", "reason": "abuse"})).await;
        assert_eq!(blocked.status, 200, "{}", blocked.text());
        assert_eq!(blocked.json()["changed"], true);
        let r = id_jag(&t, &k, &iss, "mallory", "mallory@example.com", "api_key").await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{}", r.text());
        // Another subject of the same provider is not affected.
        assert_eq!(id_jag(&t, &k, &iss, "someone", "someone@example.com", "api_key").await.status, 200);

        let list = call(&router, Method::GET, "/admin/blocks", Some(TOKEN), None).await;
        assert_eq!(list.status, 200, "{}", list.text());
        let items = list.json()["items"].clone();
        assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
        assert_eq!(items[0]["kind"], "subject");
        assert_eq!(items[0]["iss"], iss.as_str());
        assert_eq!(items[0]["sub"], "mallory");
        assert_eq!(items[0]["operator"], "alice-oncall");
        assert_eq!(items[0]["reason"], "abuse");
        // Blocking again changes nothing.
        let again = admin(&router, "/admin/blocks", json!({"kind": "subject", "iss": iss, "sub": "mallory"})).await;
        assert_eq!(again.json()["changed"], false);

        let unblocked = admin(&router, "/admin/blocks/remove", json!({"kind": "subject", "iss": iss, "sub": "mallory"})).await;
        assert_eq!((unblocked.status.as_u16(), unblocked.json()["changed"].clone()), (200, json!(true)), "{}", unblocked.text());
        let r = id_jag(&t, &k, &iss, "mallory", "mallory@example.com", "api_key").await;
        assert_eq!(r.status, 200, "{}", r.text());

        let actions: Vec<String> = t.events("operator.action").await.iter().map(|e| e.data["action"].as_str().unwrap_or_default().to_owned()).collect();
        assert_eq!(actions, ["revoke_registration", "block", "unblock"]);
        let bad = admin(&router, "/admin/blocks", json!({"kind": "subject", "iss": iss})).await;
        assert_eq!((bad.status.as_u16(), bad.code().as_str()), (400, "invalid_request"), "{}", bad.text());
    }
}

both_backends! {
    /// A blocked user gets no new registration by any road: its own
    /// delegation, another subject linked by verified email, or a claim
    /// that would bind to it. A blocked address gets no mail and no
    /// registration, however it is spelled.
    async fn blocked_users_and_addresses_cannot_register(backend: Backend) {
        let (t, router, server, k) = setup(backend, "").await;
        let iss = server.issuer().to_owned();
        let r = id_jag(&t, &k, &iss, "carol", "carol@example.com", "api_key").await;
        let user = t.get("/api/whoami", Some(&credential(&r))).await.json()["user"]["id"].as_str().unwrap_or_default().to_owned();
        let blocked = admin(&router, "/admin/blocks", json!({"kind": "user", "user": user})).await;
        assert_eq!(blocked.status, 200, "{}", blocked.text());
        for (sub, email) in [("carol", "carol@example.com"), ("carol-2", "carol@example.com")] {
            let r = id_jag(&t, &k, &iss, sub, email, "api_key").await;
            assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{sub}: {}", r.text());
        }
        let unknown = admin(&router, "/admin/blocks", json!({"kind": "user", "user": "usr_nobody"})).await;
        assert_eq!(unknown.status, 404, "{}", unknown.text());

        // A claim that would bind an anonymous registration to that user.
        let anonymous = t.register_anonymous().await;
        let token = anonymous["claim_token"].as_str().unwrap_or_default().to_owned();
        let r = t.post_json("/agent/auth/claim", &json!({"claim_token": token, "email": "carol@example.com"}).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let link = link_token(&t.mails(1).await[0].text);
        let page = t.send(form_request("/agent/auth/claim/view", &format!("token={link}&action=show"))).await;
        let code = page_code(&page.text()).unwrap_or_default();
        let r = t.post_json("/agent/auth/claim/complete", &json!({"claim_token": token, "otp": code}).to_string()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{}", r.text());

        // An address.
        let blocked = admin(&router, "/admin/blocks", json!({"kind": "email", "email": "Victim@Example.com", "reason": "asked us to stop"})).await;
        assert_eq!(blocked.status, 200, "{}", blocked.text());
        let sent = t.mailer.sent().len();
        let r = t.post_json("/agent/auth", &json!({
            "type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "victim+agent@example.com", "requested_credential_type": "api_key",
        }).to_string()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{}", r.text());
        let other = t.register_anonymous().await;
        let r = t.post_json("/agent/auth/claim", &json!({"claim_token": other["claim_token"], "email": "victim@example.com"}).to_string()).await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{}", r.text());
        let r = id_jag(&t, &k, &iss, "victim", "victim@example.com", "api_key").await;
        assert_eq!((r.status.as_u16(), r.code().as_str()), (403, "user_not_provisioned"), "{}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(t.mailer.sent().len(), sent, "a blocked address was mailed");
        let bad = admin(&router, "/admin/blocks", json!({"kind": "email", "email": "not an address"})).await;
        assert_eq!(bad.status, 400, "{}", bad.text());
    }
}

both_backends! {
    /// Each ID-JAG presented for an `api_key` adds a key that never
    /// expires: at most `registration.max_api_keys_per_delegation` stay
    /// live, the oldest are revoked first, and the response says so.
    async fn live_api_keys_per_delegation_are_capped(backend: Backend) {
        let (t, _router, server, k) = setup(backend, "[registration]\nmax_api_keys_per_delegation = 3").await;
        let iss = server.issuer().to_owned();
        let mut keys = Vec::new();
        for _ in 0..4 {
            let r = id_jag(&t, &k, &iss, "dave", "dave@example.com", "api_key").await;
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["max_live_api_keys"], 3, "{}", r.text());
            keys.push(credential(&r));
        }
        assert!(!works(&t, &keys[0]).await, "the oldest key must be revoked");
        for key in &keys[1..] {
            assert!(works(&t, key).await);
        }
        // Access tokens expire and are not counted; their response has no cap.
        let r = id_jag(&t, &k, &iss, "dave", "dave@example.com", "access_token").await;
        assert!(r.json().get("max_live_api_keys").is_none(), "{}", r.text());
        assert!(works(&t, &keys[1]).await);
        let revoked = t.events("credential.revoked").await;
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert_eq!(revoked[0].data["reason"], "max_api_keys_per_delegation");
    }
}
