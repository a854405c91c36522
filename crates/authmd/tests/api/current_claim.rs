//! The current dialect's claim ceremony and refresh tokens
//! (docs/protocol.md §20.5, §20.8): `service_auth`, `POST
//! /agent/identity/claim`, the verification page with its emailed sign-in
//! link bound to the browser, `…/claim/complete`, `{"type": "refresh"}`,
//! and the hostile paths of each.

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};

use crate::both_backends;
use crate::provider::{JwksServer, claims, key, mint, now_secs, trusting};
use crate::support::{Backend, TestApp, TestResponse, form_request};
use authmd_jose::Algorithm;

const ISSUER: &str = "http://127.0.0.1:8080";
const ON: &str = "[dialects.current]\nenabled = true\n";
const VERIFY: &str = "/agent/identity/claim/verify";

fn decode(segment: &str) -> Value {
    let bytes = authmd_jose::b64::decode(segment).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The claims of a compact JWS.
fn claims_of(token: &str) -> Value {
    decode(token.split('.').nth(1).unwrap_or_default())
}

async fn identity(t: &TestApp, body: Value) -> TestResponse {
    t.post_json("/agent/identity", &body.to_string()).await
}

async fn start(t: &TestApp, claim_token: &str, hint: &str) -> TestResponse {
    let body = json!({"type": "service_auth", "claim_token": claim_token, "login_hint": hint});
    t.post_json("/agent/identity/claim", &body.to_string())
        .await
}

async fn complete(t: &TestApp, claim_token: &str, code: &str) -> TestResponse {
    let body = json!({"claim_token": claim_token, "user_code": code});
    t.post_json("/agent/identity/claim/complete", &body.to_string())
        .await
}

async fn exchange(t: &TestApp, assertion: &str) -> TestResponse {
    let form = format!(
        "grant_type={}&assertion={assertion}",
        url::form_urlencoded::byte_serialize(b"urn:ietf:params:oauth:grant-type:jwt-bearer")
            .collect::<String>()
    );
    t.send(form_request("/oauth2/token", &form)).await
}

/// A request from a browser holding `cookie`.
fn browser_request(
    method: Method,
    path: &str,
    form: Option<&str>,
    cookie: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(c) = cookie {
        b = b.header("cookie", format!("authmd_claim={c}"));
    }
    match form {
        Some(f) => b
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(f.to_owned())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

/// The token in a link (`cvt_…` or `sgn_…`).
fn token_in(text: &str, prefix: &str) -> String {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {text}"));
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The cookie a response sets.
fn set_cookie(r: &TestResponse) -> String {
    let h = r
        .header("set-cookie")
        .unwrap_or_else(|| panic!("no cookie: {}", r.text()));
    assert!(h.contains("HttpOnly") && h.contains("SameSite=Lax"), "{h}");
    assert!(h.contains(&format!("Path={VERIFY}")), "{h}");
    h.split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("authmd_claim="))
        .unwrap_or_default()
        .to_owned()
}

/// A `service_auth` registration for `email`, claimed through the whole
/// ceremony: its registration body and the first refresh token.
async fn claimed_with_refresh(t: &TestApp, email: &str) -> (Value, String) {
    let (b, first, _) = claimed_with_refresh_and_assertion(t, email).await;
    (b, first)
}

/// The same, and the assertion the completion gave.
async fn claimed_with_refresh_and_assertion(t: &TestApp, email: &str) -> (Value, String, String) {
    let b = identity(t, json!({"type": "service_auth", "login_hint": email}))
        .await
        .json();
    let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
    let uri = b["claim"]["attempt"]["verification_uri"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let code = user_confirms(t, &uri, email, 0).await;
    let d = complete(t, &token, &code).await.json();
    let first = d["identity"]["refresh_token"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let assertion = d["identity"]["assertion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (b, first, assertion)
}

/// What a user does with the agent's link: open it, ask for a sign-in
/// link, open the email's link in the same browser, confirm, read the
/// code. Returns the code. `mails` is how many messages were sent before.
async fn user_confirms(t: &TestApp, verification_uri: &str, email: &str, mails: usize) -> String {
    let link = token_in(verification_uri, "cvt_");
    let page = t
        .send(browser_request(
            Method::GET,
            &format!("{VERIFY}?token={link}"),
            None,
            None,
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(
        html.contains(email) && html.contains("value=\"sign_in\""),
        "{html}"
    );
    assert!(!html.contains("id=\"otp\""), "no code before sign-in");
    let sent = t
        .send(browser_request(
            Method::POST,
            VERIFY,
            Some(&format!("token={link}&action=sign_in")),
            None,
        ))
        .await;
    assert_eq!(sent.status, 200, "{}", sent.text());
    assert!(sent.text().contains("Check your email"));
    let cookie = set_cookie(&sent);
    let mail = t.mails(mails + 1).await;
    let mail = mail.last().expect("the sign-in mail").clone();
    assert_eq!(mail.to, email);
    assert!(
        !mail.text.contains(&link),
        "the sign-in mail never carries the agent's link"
    );
    let sign_in = token_in(&mail.text, "sgn_");

    // Signed in (the mail's link, the browser's cookie): the question.
    let page = t
        .send(browser_request(
            Method::GET,
            &format!("{VERIFY}?token={sign_in}"),
            None,
            Some(&cookie),
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    assert!(
        html.contains("Authorize this agent?") && html.contains("value=\"confirm\""),
        "{html}"
    );
    assert!(!html.contains("id=\"otp\""));
    let shown = t
        .send(browser_request(
            Method::POST,
            VERIFY,
            Some(&format!("token={sign_in}&action=confirm")),
            Some(&cookie),
        ))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    crate::support::page_code(&shown.text()).expect("the code on the page")
}

both_backends! {
    /// `service_auth`: the envelope, then the whole ceremony, then the
    /// one-time completion with a post-claim assertion and a refresh token.
    async fn service_auth_is_claimed_through_sign_in(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let r = identity(&t, json!({"type": "service_auth", "login_hint": " nora@example.com "})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let b = r.json();
        let id = b["id"].as_str().unwrap_or_default().to_owned();
        assert_eq!(b["type"], "service_auth");
        assert!(b.get("identity").is_none(), "no identity before the claim");
        assert_eq!(b["scopes"], json!({"post_claim": ["api.read", "api.write"]}));
        assert_eq!(b["claim"]["url"], format!("{ISSUER}/agent/identity/claim"));
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = b["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        assert!(uri.starts_with(&format!("{ISSUER}{VERIFY}?token=cvt_")), "{uri}");
        assert!(b["claim"]["attempt"]["expires_at"].is_string());
        assert!(t.mails(0).await.is_empty(), "nothing is mailed until the user asks");

        // Before the user confirms: 409, wait and retry.
        let early = complete(&t, &token, "123456").await;
        assert_eq!((early.status.as_u16(), early.code()), (409, "claim_not_confirmed".to_owned()));

        let code = user_confirms(&t, &uri, "nora@example.com", 0).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let bad = complete(&t, &token, wrong).await;
        assert_eq!((bad.status.as_u16(), bad.code()), (401, "invalid_user_code".to_owned()));

        let done = complete(&t, &token, &code).await;
        assert_eq!(done.status, 200, "{}", done.text());
        assert_eq!(done.header("cache-control"), Some("no-store"));
        let d = done.json();
        assert_eq!(d["id"], id.as_str());
        assert_eq!(d["status"], "claimed");
        let assertion = d["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let c = claims_of(&assertion);
        assert_eq!((c["email"].clone(), c["email_verified"].clone()), (json!("nora@example.com"), json!(true)));
        assert_eq!(c["registration_status"], "claimed");
        let refresh = d["identity"]["refresh_token"]["value"].as_str().unwrap_or_default();
        assert!(refresh.starts_with("amd_rt_"), "{d}");
        assert!(d["identity"]["refresh_token"]["expires_at"].is_string());
        assert!(d.get("credential").is_none(), "no credential here: the agent exchanges");

        // Exchanged for the post-claim scopes, bound to the user.
        let x = exchange(&t, &assertion).await;
        assert_eq!(x.status, 200, "{}", x.text());
        assert_eq!(x.json()["scope"], "api.read api.write");
        let who = t.get("/api/whoami", x.json()["access_token"].as_str()).await;
        assert_eq!(who.json()["user"]["email"], "nora@example.com");

        // Once only.
        let again = complete(&t, &token, &code).await;
        assert_eq!((again.status.as_u16(), again.code()), (409, "already_claimed".to_owned()));
        assert_eq!(t.events("claim.confirmed").await.len(), 1);
        assert_eq!(t.events("claim.sign_in_requested").await.len(), 1);
        assert_eq!(t.events("otp.generated").await.len(), 1);
    }
}

both_backends! {
    /// An anonymous registration claimed in the current dialect: the agent
    /// starts the attempt; after the claim, the pre-claim access tokens and
    /// assertions are dead and the new assertion carries the post-claim
    /// scopes.
    async fn anonymous_claim_ends_the_pre_claim_grants(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let b = identity(&t, json!({"type": "anonymous"})).await.json();
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let pre = b["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let x = exchange(&t, &pre).await.json();
        let pre_token = x["access_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.get("/api/whoami", Some(&pre_token)).await.status, 200);

        // Completion before any attempt: not confirmed.
        assert_eq!(complete(&t, &token, "123456").await.code(), "claim_not_confirmed");
        let s = start(&t, &token, "omar@example.com").await;
        assert_eq!(s.status, 200, "{}", s.text());
        // While the claim is pending, the agent still renews its pre-claim
        // access with the assertion it has (it can get no other).
        let x = exchange(&t, &pre).await;
        assert_eq!(x.status, 200, "pending claim: {}", x.text());
        assert_eq!(x.json()["scope"], "api.read");
        let pending_token = x.json()["access_token"].as_str().unwrap_or_default().to_owned();
        let sb = s.json();
        assert_eq!(sb["id"], b["id"]);
        assert_eq!(sb["type"], "service_auth");
        let uri = sb["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        assert!(sb["attempt"]["expires_at"].is_string());
        let code = user_confirms(&t, &uri, "omar@example.com", 0).await;
        let done = complete(&t, &token, &code).await;
        assert_eq!(done.status, 200, "{}", done.text());

        assert_eq!(t.get("/api/whoami", Some(&pre_token)).await.status, 401, "pre-claim tokens end at the claim");
        assert_eq!(t.get("/api/whoami", Some(&pending_token)).await.status, 401, "also those of the pending claim");
        assert_eq!(exchange(&t, &pre).await.code(), "invalid_grant", "so do pre-claim assertions");
        let post = done.json()["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let x = exchange(&t, &post).await.json();
        assert_eq!(x["scope"], "api.read api.write");
        let revoked = t.events("credential.revoked").await;
        assert_eq!(revoked.len(), 2);
        assert!(revoked.iter().all(|e| e.data["reason"] == "pre-claim scopes, ended at claim"));
    }
}

both_backends! {
    /// Refresh tokens rotate on every use; presenting a spent one revokes
    /// the whole family (the successor too) and is audited (RFC 9700
    /// §4.14.2; the reference implementation only refuses the spent one).
    async fn refresh_rotates_and_reuse_ends_the_family(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let (b, first, claim_assertion) =
            claimed_with_refresh_and_assertion(&t, "pia@example.com").await;
        assert_eq!(exchange(&t, &claim_assertion).await.status, 200);

        let r = identity(&t, json!({"type": "refresh", "refresh_token": first})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let rb = r.json();
        assert_eq!(rb["id"], b["id"]);
        assert_eq!(rb["type"], "refresh");
        let second = rb["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        assert_ne!(second, first);
        let assertion = rb["identity"]["assertion"].as_str().unwrap_or_default();
        assert_eq!(claims_of(assertion)["email"], "pia@example.com");
        assert_eq!(exchange(&t, assertion).await.json()["scope"], "api.read api.write");
        assert_eq!(exchange(&t, assertion).await.status, 200, "an assertion exchanges again");
        let rotated = t.events("refresh.rotated").await;
        assert_eq!(rotated.len(), 1);
        assert_eq!(rotated[0].registration_id.as_deref(), b["id"].as_str());
        let family = rotated[0].data["family_id"].as_str().unwrap_or_default().to_owned();
        assert!(family.starts_with("rft_"), "{:?}", rotated[0].data);
        assert!(rotated[0].data["next_refresh_token_id"].as_str().is_some_and(|id| id.starts_with("rft_")));
        let issued = t.events("assertion.issued").await;
        assert_eq!(issued.len(), 1, "the refresh's assertion is audited");
        assert_eq!(issued[0].registration_id.as_deref(), b["id"].as_str());
        assert!(issued[0].data["jti"].is_string() && issued[0].data.get("family_id").is_none());

        // The spent one again: refused, and its successor dies with it.
        let reuse = identity(&t, json!({"type": "refresh", "refresh_token": first})).await;
        assert_eq!((reuse.status.as_u16(), reuse.code()), (400, "invalid_refresh_token".to_owned()));
        let after = identity(&t, json!({"type": "refresh", "refresh_token": second})).await;
        assert_eq!(after.code(), "invalid_refresh_token", "the family is revoked");
        let reused = t.events("refresh.reused").await;
        assert_eq!(reused.len(), 1);
        assert_eq!(reused[0].data["refresh_tokens_revoked"], 2);
        assert_eq!(reused[0].data["family_id"], family.as_str());
        // Whoever rotated first cannot go on minting access tokens with
        // the assertion that rotation gave: it is bound to the family, and
        // so is the one the claim's completion gave.
        assert_eq!(claims_of(assertion)["refresh_family"], family.as_str());
        let x = exchange(&t, assertion).await;
        assert_eq!((x.status.as_u16(), x.code()), (400, "invalid_grant".to_owned()), "{}", x.text());
        assert_eq!(claims_of(&claim_assertion)["refresh_family"], family.as_str());
        assert_eq!(exchange(&t, &claim_assertion).await.code(), "invalid_grant");

        // Unknown, malformed or missing.
        for bad in [json!({"type": "refresh", "refresh_token": "amd_rt_nope"}),
                    json!({"type": "refresh", "refresh_token": "art_abc"})] {
            assert_eq!(identity(&t, bad).await.code(), "invalid_refresh_token");
        }
        assert_eq!(identity(&t, json!({"type": "refresh"})).await.code(), "invalid_request");
    }
}

both_backends! {
    /// A refresh token's id with another secret is refused and writes
    /// nothing (it is not a reuse of the spent token it names), and a token
    /// past its expiry is refused.
    async fn forged_or_expired_refresh_tokens_change_nothing(backend: Backend) {
        let t = TestApp::new(backend, &format!("{ON}[ttl]\nrefresh_token = \"2s\"\n")).await;
        let (_, first) = claimed_with_refresh(&t, "pia@example.com").await;
        let r = identity(&t, json!({"type": "refresh", "refresh_token": first})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let second = r.json()["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();

        let forge = |real: &str| {
            let id = authmd::token::recognize(real, &[authmd::token::SecretKind::RefreshToken])
                .map(|p| p.id())
                .unwrap_or_default();
            authmd::token::PlainSecret::generate(authmd::token::SecretKind::RefreshToken, &id)
                .expose()
                .to_owned()
        };
        for real in [&first, &second] {
            let forged = forge(real);
            assert_ne!(&forged, real);
            let r = identity(&t, json!({"type": "refresh", "refresh_token": forged})).await;
            assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_refresh_token".to_owned()));
        }
        assert!(t.events("refresh.reused").await.is_empty(), "a forged secret is not a reuse");
        assert_eq!(t.events("refresh.rotated").await.len(), 1);

        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let r = identity(&t, json!({"type": "refresh", "refresh_token": second})).await;
        assert_eq!(r.code(), "invalid_refresh_token", "expired");
        assert!(t.events("refresh.reused").await.is_empty());
        assert_eq!(t.events("refresh.rotated").await.len(), 1);
    }
}

both_backends! {
    /// One token presented by eight requests at once rotates once: the
    /// others find it spent, which is a reuse, so the family ends and the
    /// one successor dies with it.
    async fn concurrent_rotations_of_one_token_rotate_once(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let (_, first) = claimed_with_refresh(&t, "pia@example.com").await;

        let answers = futures_util::future::join_all(
            (0..8).map(|_| identity(&t, json!({"type": "refresh", "refresh_token": first}))),
        )
        .await;
        let rotated: Vec<&TestResponse> = answers.iter().filter(|r| r.status == 200).collect();
        assert_eq!(rotated.len(), 1, "exactly one rotation");
        for r in answers.iter().filter(|r| r.status != 200) {
            assert_eq!((r.status.as_u16(), r.code()), (400, "invalid_refresh_token".to_owned()));
        }
        assert_eq!(t.events("refresh.rotated").await.len(), 1);
        assert_eq!(t.events("refresh.reused").await.len(), 1, "the family ends once");
        let successor = rotated[0].json()["identity"]["refresh_token"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let r = identity(&t, json!({"type": "refresh", "refresh_token": successor})).await;
        assert_eq!(r.code(), "invalid_refresh_token", "the successor died with its family");
    }
}

both_backends! {
    /// A revoked registration's refresh tokens stop rotating at once
    /// (the reference implementation keeps rotating them).
    async fn refresh_dies_with_its_registration(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let b = identity(&t, json!({"type": "service_auth", "login_hint": "quin@example.com"})).await.json();
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = b["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        let code = user_confirms(&t, &uri, "quin@example.com", 0).await;
        let d = complete(&t, &token, &code).await.json();
        let refresh = d["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let id = b["id"].as_str().unwrap_or_default();
        t.app
            .store()
            .revoke(authmd::store::OperatorRevocation {
                target: authmd::store::RevokeTarget::Registration(id.to_owned()),
                operator: "test".into(),
                reason: None,
                now: authmd::Timestamp::now(),
                meta: Default::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = identity(&t, json!({"type": "refresh", "refresh_token": refresh})).await;
        assert_eq!(r.code(), "invalid_refresh_token");
    }
}

both_backends! {
    /// The agent's link is not a sign-in: it cannot mint a code, on this
    /// page or the original dialect's; the sign-in link works only with
    /// the cookie of the browser that asked for it; a re-mint kills the
    /// old link, sign-in and code.
    async fn only_the_signed_in_browser_sees_a_code(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let b = identity(&t, json!({"type": "service_auth", "login_hint": "rita@example.com"})).await.json();
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = b["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        let link = token_in(&uri, "cvt_");

        // The link alone: no code, here or on the original page.
        let here = t.send(browser_request(Method::POST, VERIFY, Some(&format!("token={link}&action=confirm")), None)).await;
        assert!(crate::support::page_code(&here.text()).is_none());
        let there = t.send(form_request("/agent/auth/claim/view", &format!("token={link}&action=show"))).await;
        assert!(crate::support::page_code(&there.text()).is_none(), "{}", there.text());
        assert!(t.events("otp.generated").await.is_empty());

        let sent = t.send(browser_request(Method::POST, VERIFY, Some(&format!("token={link}&action=sign_in")), None)).await;
        let cookie = set_cookie(&sent);
        let sign_in = token_in(&t.mails(1).await[0].text, "sgn_");
        // Another browser (no cookie, or another one) opening the mail's link.
        for other in [None, Some("someone-elses-cookie")] {
            let page = t.send(browser_request(Method::GET, &format!("{VERIFY}?token={sign_in}"), None, other)).await;
            assert_eq!(page.status, 403, "{}", page.text());
            let post = t.send(browser_request(Method::POST, VERIFY, Some(&format!("token={sign_in}&action=confirm")), other)).await;
            assert!(crate::support::page_code(&post.text()).is_none());
        }
        // The sign-in token is not the agent's link either.
        let swapped = t.send(browser_request(Method::POST, VERIFY, Some(&format!("token={sign_in}&action=sign_in")), Some(&cookie))).await;
        assert_eq!(swapped.status, 404);

        // Confirmed: a code. Confirming again replaces it (never stored in
        // plain text, so it cannot be shown twice).
        let confirm = |c: &str| browser_request(Method::POST, VERIFY, Some(&format!("token={sign_in}&action=confirm")), Some(c));
        let first = crate::support::page_code(&t.send(confirm(&cookie)).await.text()).expect("code");
        let second = crate::support::page_code(&t.send(confirm(&cookie)).await.text()).expect("code");
        if first != second {
            assert_eq!(complete(&t, &token, &first).await.code(), "invalid_user_code", "the old code died");
        }

        // A re-mint: the old link, sign-in and code stop working.
        let s = start(&t, &token, "rita@example.com").await;
        assert_eq!(s.status, 200, "{}", s.text());
        let old = t.send(browser_request(Method::GET, &format!("{VERIFY}?token={link}"), None, None)).await;
        assert_eq!(old.status, 410, "{}", old.text());
        let old_sign_in = t.send(confirm(&cookie)).await;
        assert!(crate::support::page_code(&old_sign_in.text()).is_none());
        assert_eq!(complete(&t, &token, &second).await.code(), "claim_not_confirmed");
        // An email registration is claimed with its own address only.
        let other = start(&t, &token, "mallory@example.com").await;
        assert_eq!((other.status.as_u16(), other.code()), (400, "invalid_login_hint".to_owned()));
    }
}

both_backends! {
    /// The code budgets of the original dialect (5 per code, 20 per
    /// registration) and rate-limited re-mints (the reference
    /// implementation has neither).
    async fn guesses_and_re_mints_are_budgeted(backend: Backend) {
        let t = TestApp::new(backend, "[dialects.current]\nenabled = true\n[rate_limits]\nclaim_emails_per_registration_per_hour = 3\n").await;
        let b = identity(&t, json!({"type": "anonymous"})).await.json();
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let s = start(&t, &token, "sam@example.com").await.json();
        let uri = s["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        let code = user_confirms(&t, &uri, "sam@example.com", 0).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            assert_eq!(complete(&t, &token, wrong).await.code(), "invalid_user_code");
        }
        let r = complete(&t, &token, &code).await;
        assert_eq!((r.status.as_u16(), r.code()), (429, "too_many_attempts".to_owned()), "the code is dead after 5");
        assert_eq!(t.events("otp.failed").await.len(), 5);
        // Re-mints: 3 an hour for this registration (one used above).
        assert_eq!(start(&t, &token, "sam@example.com").await.status, 200);
        assert_eq!(start(&t, &token, "sam@example.com").await.status, 200);
        let limited = start(&t, &token, "sam@example.com").await;
        assert_eq!((limited.status.as_u16(), limited.code()), (429, "rate_limit_exceeded".to_owned()));
        assert!(limited.header("retry-after").is_some());
    }
}

#[tokio::test]
async fn claim_requests_are_checked() {
    let t = TestApp::new(Backend::Sqlite, ON).await;
    let b = identity(&t, json!({"type": "anonymous"})).await.json();
    let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
    let cases = [
        (
            json!({"claim_token": token, "login_hint": "a@example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "login_hint", "claim_token": token, "login_hint": "a@example.com"}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "service_auth", "claim_token": token}),
            400,
            "invalid_request",
        ),
        (
            json!({"type": "service_auth", "claim_token": token, "login_hint": "not an address"}),
            400,
            "invalid_login_hint",
        ),
        (
            json!({"type": "service_auth", "claim_token": token, "login_hint": "a@example.com\r\nBcc: x@y.z"}),
            400,
            "invalid_login_hint",
        ),
        (
            json!({"type": "service_auth", "claim_token": "clm_nope", "login_hint": "a@example.com"}),
            401,
            "invalid_claim_token",
        ),
    ];
    for (body, status, code) in cases {
        let r = t
            .post_json("/agent/identity/claim", &body.to_string())
            .await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (status, code.to_owned()),
            "{body}"
        );
    }
    for raw in ["{", "[]", "null", "{\"type\": 5}"] {
        let r = t.post_json("/agent/identity/claim", raw).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_request".to_owned()),
            "{raw}"
        );
        let r = t.post_json("/agent/identity/claim/complete", raw).await;
        assert_eq!(
            (r.status.as_u16(), r.code()),
            (400, "invalid_request".to_owned()),
            "{raw}"
        );
    }
    for code in ["12345", "1234567", "12a456", "", "١٢٣٤٥٦"] {
        let r = complete(&t, &token, code).await;
        assert_eq!(r.code(), "invalid_request", "{code:?}");
    }
    let r = complete(&t, "clm_nope", "123456").await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_claim".to_owned())
    );
    let r = identity(&t, json!({"type": "service_auth", "login_hint": "nope"})).await;
    assert_eq!(
        (r.status.as_u16(), r.code()),
        (400, "invalid_login_hint".to_owned())
    );
    let r = identity(&t, json!({"type": "service_auth"})).await;
    assert_eq!(r.code(), "invalid_request");
    // The pages: missing, malformed and unknown tokens, unknown actions.
    assert_eq!(t.get(VERIFY, None).await.status, 400);
    assert_eq!(
        t.get(&format!("{VERIFY}?token=cvt_nope"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        t.get(&format!("{VERIFY}?token=%3Cscript%3E"), None)
            .await
            .status,
        404
    );
    let link = "cvt_0000000000000000000000000000000000000000000000000000000000";
    let r = t
        .send(form_request(
            VERIFY,
            &format!("token={link}&action=explode"),
        ))
        .await;
    assert_eq!(r.status, 400);
    let page = t.get(VERIFY, None).await;
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
}

both_backends! {
    /// A registration is claimed through the dialect it was made in: each
    /// dialect's claim endpoints do not know the other's claim tokens.
    async fn claim_tokens_stay_in_their_dialect(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let current = identity(&t, json!({"type": "anonymous"})).await.json();
        let current_token = current["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let original = t.register_anonymous().await;
        let original_token = original["claim_token"].as_str().unwrap_or_default().to_owned();
        let r = t
            .post_json("/agent/auth/claim", &json!({"claim_token": current_token, "email": "x@example.com"}).to_string())
            .await;
        assert_eq!(r.code(), "invalid_claim_token");
        assert_eq!(start(&t, &original_token, "x@example.com").await.code(), "invalid_claim_token");
        assert_eq!(complete(&t, &original_token, "123456").await.code(), "invalid_claim");
        let r = t
            .post_json("/agent/auth/claim/complete", &json!({"claim_token": current_token, "otp": "123456"}).to_string())
            .await;
        assert_eq!(r.code(), "invalid_claim_token");
        assert!(t.mails(0).await.is_empty());
    }
}

both_backends! {
    /// An ID-JAG step-up (`interaction_required`) completed by the user:
    /// the subject joins the existing account, and its next ID-JAG is a
    /// clean match.
    async fn a_confirmed_step_up_links_the_subject(backend: Backend) {
        let a = JwksServer::start().await;
        let b = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "k1");
        let kb = key(Algorithm::Es256, "k2");
        a.set_keys(&[&ka]);
        b.set_keys(&[&kb]);
        let t = TestApp::new(backend, &trusting(&[a.issuer(), b.issuer()], ON)).await;
        let fresh = |issuer: &str, sub: &str| {
            let mut c = claims(issuer, ISSUER, sub);
            c.insert("auth_time".into(), json!(now_secs() - 60));
            c
        };
        let body = |assertion: String| json!({"type": "identity_assertion",
            "assertion_type": "urn:ietf:params:oauth:token-type:id-jag", "assertion": assertion});
        let first = identity(&t, body(mint(&ka, &[], &fresh(a.issuer(), "uma")))).await;
        assert_eq!(first.status, 200);
        let first_user = {
            let x = exchange(&t, first.json()["identity"]["assertion"].as_str().unwrap_or_default()).await;
            t.get("/api/whoami", x.json()["access_token"].as_str()).await.json()["user"]["id"].clone()
        };
        let r = identity(&t, body(mint(&kb, &[], &fresh(b.issuer(), "uma")))).await;
        assert_eq!(r.status, 401);
        let s = r.json();
        let token = s["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = s["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        let code = user_confirms(&t, &uri, "uma@example.com", 0).await;
        let done = complete(&t, &token, &code).await;
        assert_eq!(done.status, 200, "{}", done.text());
        let assertion = done.json()["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        assert_eq!(claims_of(&assertion)["registration_status"], "active");
        let x = exchange(&t, &assertion).await;
        assert_eq!(x.status, 200, "{}", x.text());
        let who = t.get("/api/whoami", x.json()["access_token"].as_str()).await.json();
        assert_eq!(who["user"]["id"], first_user, "linked to the existing account");
        let linked = t.events("delegation.linked").await;
        assert_eq!(linked.last().map(|e| e.data["confirmed"].clone()), Some(json!(true)));
        // The next ID-JAG for that subject is a clean match.
        let again = identity(&t, body(mint(&kb, &[], &fresh(b.issuer(), "uma")))).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.json()["id"], done.json()["id"], "it lands in the confirmed registration");
        assert_eq!(t.events("step_up.required").await.len(), 1);
    }
}

both_backends! {
    /// RFC 7009: a refresh token presented at `/oauth2/revoke` ends its
    /// family and the grant (the registration's access tokens, then the
    /// registration: nothing of it is left). Revoking only the access
    /// token leaves the registration to its live refresh token.
    async fn refresh_tokens_are_revoked_at_the_revocation_endpoint(backend: Backend) {
        let t = TestApp::new(backend, ON).await;
        let b = identity(&t, json!({"type": "service_auth", "login_hint": "vera@example.com"})).await.json();
        let token = b["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = b["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        let code = user_confirms(&t, &uri, "vera@example.com", 0).await;
        let d = complete(&t, &token, &code).await.json();
        let refresh = d["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let assertion = d["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let access = exchange(&t, &assertion).await.json()["access_token"].as_str().unwrap_or_default().to_owned();
        let revoke = |tok: &str| form_request("/oauth2/revoke", &format!("token={tok}"));

        // The access token alone: the refresh token still renews.
        assert_eq!(t.send(revoke(&access)).await.status, 200);
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 401);
        let r = identity(&t, json!({"type": "refresh", "refresh_token": refresh})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let refresh = r.json()["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let assertion = r.json()["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let access = exchange(&t, &assertion).await.json()["access_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 200);

        // The refresh token: everything ends.
        let r = t.send(revoke(&refresh)).await;
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(t.get("/api/whoami", Some(&access)).await.status, 401, "the grant's access tokens end");
        assert_eq!(identity(&t, json!({"type": "refresh", "refresh_token": refresh})).await.code(), "invalid_refresh_token");
        assert_eq!(exchange(&t, &assertion).await.code(), "invalid_grant", "the registration ended");
        let revoked = t.events("registration.revoked").await;
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].data["by"], "self");
        // Again, or a made-up one: the same answer, nothing written.
        assert_eq!(t.send(revoke(&refresh)).await.status, 200);
        assert_eq!(t.send(revoke("amd_rt_madeup")).await.status, 200);
        assert_eq!(t.events("credential.revoked").await.len(), 2);
    }
}

/// SQLite has one writer. A refresh token at `/oauth2/revoke` is looked up
/// on a reader first, so a made-up one (well formed: its checksum is
/// public) or a spent one is answered without a turn of the writer, even
/// while another connection holds the write lock; a live one waits for the
/// writer and is revoked once it is free.
#[tokio::test]
async fn refresh_tokens_that_revoke_nothing_do_not_wait_for_the_writer() {
    use authmd::token::{PlainSecret, SecretKind, new_id};
    use std::time::Duration;
    let t = TestApp::new(Backend::Sqlite, ON).await;
    let (_, spent) = claimed_with_refresh(&t, "wren@example.com").await;
    let r = identity(&t, json!({"type": "refresh", "refresh_token": spent})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let live = r.json()["identity"]["refresh_token"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let made_up = PlainSecret::generate(SecretKind::RefreshToken, &new_id("rft_"))
        .expose()
        .to_owned();
    let revoke = |tok: &str| form_request("/oauth2/revoke", &format!("token={tok}"));

    let path = t.db.url.strip_prefix("sqlite://").unwrap_or_default();
    let lock = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    lock.execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));
    // The writer would wait for the lock (busy_timeout, 5 s) and then fail.
    for token in [&made_up, &spent] {
        let r = tokio::time::timeout(Duration::from_secs(3), t.send(revoke(token)))
            .await
            .expect("answered without the writer");
        assert_eq!(r.status, 200);
    }
    let pending = t.send(revoke(&live));
    tokio::pin!(pending);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err(),
        "a live token is revoked by the writer, which is held"
    );
    lock.execute_batch("ROLLBACK")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pending.await.status, 200);
    let again = identity(&t, json!({"type": "refresh", "refresh_token": live})).await;
    assert_eq!(
        again.code(),
        "invalid_refresh_token",
        "the live family was revoked"
    );
    assert_eq!(t.events("registration.revoked").await.len(), 1);
}

/// Rotates `token` through the store at `now`, as the identity endpoint
/// would then: the successor's text, or `None` when it was refused.
async fn rotate_at(t: &TestApp, token: &str, now: authmd::Timestamp) -> Option<String> {
    use authmd::token::{PlainSecret, SecretKind, new_id, recognize};
    let presented = recognize(token, &[SecretKind::RefreshToken])?;
    let id = new_id("rft_");
    let next = PlainSecret::generate(SecretKind::RefreshToken, &id);
    let rotation = authmd::store::RefreshRotation {
        id: presented.id(),
        presented: presented.hash,
        next: authmd::store::NewRefreshToken {
            id: id.clone(),
            hash: next.hash(),
            family_id: id,
            expires_at: now.plus(std::time::Duration::from_secs(2 * DAY)),
        },
        now,
        meta: Default::default(),
        assertion: (new_id("jti_"), now.plus(std::time::Duration::from_secs(60))),
    };
    match t
        .app
        .store()
        .rotate_refresh(rotation)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    {
        authmd::store::Rotated::Rotated { .. } => Some(next.expose().to_owned()),
        _ => None,
    }
}

const DAY: u64 = 24 * 60 * 60;

both_backends! {
    /// The purge never deletes a family whose newest token is live, even
    /// when the rotations carried it past the point the purge first had
    /// for it, and deletes an expired family within a day of its expiry
    /// (migration 0014: the purge's index is not moved at every rotation).
    async fn the_purge_keeps_live_refresh_families_and_ends_expired_ones(backend: Backend) {
        let t = TestApp::new(backend, &format!("{ON}[ttl]\nrefresh_token = \"2d\"\n")).await;
        let (_, first) = claimed_with_refresh(&t, "pia@example.com").await;
        let t0 = authmd::Timestamp::now();
        let at = |secs: u64| t0.plus(std::time::Duration::from_secs(secs));
        let store = std::sync::Arc::clone(t.app.store());
        let purge = |now: authmd::Timestamp| {
            let store = std::sync::Arc::clone(&store);
            async move {
                store.purge(now, now).await.unwrap_or_else(|e| panic!("{e}"));
            }
        };
        assert_eq!(t.db.rows("refresh_families").await, 1);

        // Two rotations a day and a half apart, each outliving the
        // previous token by that much; a purge before each.
        let second = rotate_at(&t, &first, at(DAY + DAY / 2)).await.expect("rotates");
        purge(at(3 * DAY + DAY / 4)).await;
        assert_eq!(t.db.rows("refresh_families").await, 1, "live until 3.5 days");
        rotate_at(&t, &second, at(3 * DAY + DAY / 4)).await.expect("rotates after the purge");
        purge(at(5 * DAY)).await;
        assert_eq!(t.db.rows("refresh_families").await, 1, "live until 5.25 days");
        assert_eq!(t.db.rows("refresh_tokens").await, 1, "the spent ones expired and went");

        // Once its newest token has expired, the family goes within a day.
        purge(at(6 * DAY + DAY / 4 + 60)).await;
        assert_eq!(t.db.rows("refresh_tokens").await, 0);
        assert_eq!(t.db.rows("refresh_families").await, 0);
    }
}
