//! The claim ceremony (docs/protocol.md §3.2, §4): every status and code of the
//! §4 tables, the page, the budgets, concurrency.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_backends;
use crate::support::{Backend, TestApp, TestResponse, form_request, link_token, page_code};

fn claim(token: &str, email: &str) -> String {
    json!({"claim_token": token, "email": email}).to_string()
}

fn complete(token: &str, otp: &str) -> String {
    json!({"claim_token": token, "otp": otp}).to_string()
}

fn code(r: &TestResponse) -> (u16, String) {
    (
        r.status.as_u16(),
        if r.status == 200 {
            String::new()
        } else {
            r.code()
        },
    )
}

/// Opens the page and presses "show my code"; returns the code.
async fn show_code(t: &TestApp, link: &str) -> String {
    let page = t
        .send(form_request(
            "/agent/auth/claim/view",
            &format!("token={link}&action=show"),
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    page_code(&page.text()).unwrap_or_else(|| panic!("no code on {}", page.text()))
}

fn wrong(right: &str) -> String {
    let n: u32 = right.parse().unwrap_or(0);
    format!("{:06}", (n + 1) % 1_000_000)
}

both_backends! {
    async fn anonymous_claim_upgrades_the_same_key(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let (key, token) = (reg["credential"].as_str().unwrap_or_default(), reg["claim_token"].as_str().unwrap_or_default());

        let r = t.post_json("/agent/auth/claim", &claim(token, "Ada@Example.com")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let started = r.json();
        assert_eq!(started["registration_id"], reg["registration_id"]);
        assert_eq!(started["status"], "initiated");
        let attempt = started["claim_attempt_id"].as_str().unwrap_or_default();
        assert!(attempt.starts_with("cla_") && attempt != reg["registration_id"].as_str().unwrap_or_default(),
            "claim_attempt_id is the attempt's own id");
        assert!(started["expires_at"].is_string());

        let mails = t.mails(1).await;
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, "Ada@Example.com");
        assert!(mails[0].subject.contains("Example API"));
        assert!(mails[0].text.contains("Create and change your data") && mails[0].html.contains("Review the request"));
        let link = link_token(&mails[0].text);

        // Opening the link shows no code and mints none.
        let page = t.get(&format!("/agent/auth/claim/view?token={link}"), None).await;
        assert_eq!(page.status, 200);
        assert_eq!(page_code(&page.text()), None);
        assert!(page.text().contains("Ada@Example.com") && page.text().contains("Example API"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"), "{csp}");
        assert!(t.events("otp.generated").await.is_empty());
        let r = t.post_json("/agent/auth/claim/complete", &complete(token, "123456")).await;
        assert_eq!(code(&r), (400, "otp_not_generated".into()));

        let otp = show_code(&t, &link).await;
        // The email never held the code.
        assert!(!mails[0].text.contains(&otp) && !mails[0].html.contains(&otp));
        let r = t.post_json("/agent/auth/claim/complete", &complete(token, &wrong(&otp))).await;
        assert_eq!(code(&r), (401, "otp_invalid".into()));
        let r = t.post_json("/agent/auth/claim/complete", &complete(token, &otp)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"registration_id": reg["registration_id"], "status": "claimed"}));

        // Same key, upgraded in place, bound to the user, no deadline.
        let who = t.get("/api/whoami", Some(key)).await;
        assert_eq!(who.status, 200);
        let who = who.json();
        assert_eq!(who["scopes"], json!(["api.read", "api.write"]));
        assert_eq!(who["registration_status"], "claimed");
        assert_eq!(who["registration_expires"], Value::Null);
        assert_eq!(who["user"]["email"], "Ada@Example.com");

        let confirmed = t.events("claim.confirmed").await;
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].data["claimed_by_user_id"], who["user"]["id"]);
        let requested = t.events("claim.requested").await;
        assert_eq!(requested[0].data["email"], "Ada@Example.com");
        assert_eq!(requested[0].ip.as_deref(), Some("203.0.113.10"));
        assert_eq!(t.events("otp.failed").await.len(), 1);

        // Afterwards: the token is dead, the page says so, nothing changes.
        let r = t.post_json("/agent/auth/claim/complete", &complete(token, &otp)).await;
        assert_eq!(code(&r), (409, "previously_claimed".into()));
        let r = t.post_json("/agent/auth/claim", &claim(token, "eve@example.com")).await;
        assert_eq!(code(&r), (409, "claimed_or_in_flight".into()));
        let page = t.get(&format!("/agent/auth/claim/view?token={link}"), None).await;
        assert_eq!(page.status, 200);
        assert!(page.text().contains("Already connected"));
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": link}).to_string()).await;
        assert_eq!(code(&r), (409, "claim_completed".into()));
        assert_eq!(t.get("/api/whoami", Some(key)).await.status, 200, "a claimed key is never revoked by /claim");
        assert_eq!(t.mails(2).await.len(), 1, "no further email");
    }
}

both_backends! {
    async fn email_required_issues_a_credential_only_after_the_code(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let body = json!({"type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "grace@example.com", "requested_credential_type": "access_token"});
        let r = t.post_json("/agent/auth", &body.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let reg = r.json();
        assert_eq!(reg["registration_type"], "email-verification");
        assert_eq!(reg["claim_url"], "http://127.0.0.1:8080/agent/auth/claim");
        assert_eq!(reg["post_claim_scopes"], json!(["api.read", "api.write"]));
        assert!(reg.get("credential").is_none());
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        let mails = t.mails(1).await;
        assert_eq!(mails[0].to, "grace@example.com");
        let link = link_token(&mails[0].text);

        // The same address again while the link lives: echoed, no new email.
        let r = t.post_json("/agent/auth/claim", &claim(&token, "grace@EXAMPLE.com")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let first_attempt = r.json()["claim_attempt_id"].clone();
        let r = t.post_json("/agent/auth/claim", &claim(&token, "grace@example.com")).await;
        assert_eq!(r.json()["claim_attempt_id"], first_attempt);
        // Another address is refused.
        let r = t.post_json("/agent/auth/claim", &claim(&token, "mallory@example.com")).await;
        assert_eq!(code(&r), (400, "invalid_request".into()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(t.mailer.sent().len(), 1);

        // The page's challenge endpoint (JSON).
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": link}).to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let challenge = r.json();
        assert_eq!(challenge["type"], "otp");
        let otp = challenge["challenge"].as_str().unwrap_or_default().to_owned();
        assert_eq!(otp.len(), 6);

        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &otp)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let done = r.json();
        assert_eq!(done["status"], "claimed");
        assert_eq!(done["credential_type"], "access_token");
        assert_eq!(done["scopes"], json!(["api.read", "api.write"]));
        assert!(done["credential_expires"].is_string());
        let credential = done["credential"].as_str().unwrap_or_default();
        assert!(credential.starts_with("amd_at_"));
        let who = t.get("/api/whoami", Some(credential)).await.json();
        assert_eq!(who["registration_type"], "email-verification");
        assert_eq!(who["user"]["email"], "grace@example.com");
        assert_eq!(t.events("credential.issued").await.len(), 1);
    }
}

both_backends! {
    async fn malformed_and_unknown_claims(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default();
        for (path, body) in [
            ("/agent/auth/claim", "{".to_owned()),
            ("/agent/auth/claim", json!({"claim_token": token}).to_string()),
            ("/agent/auth/claim", claim(token, "not-an-address")),
            ("/agent/auth/claim", claim(token, "a@b.com\r\nBcc: victim@example.com")),
            ("/agent/auth/claim/complete", json!({"claim_token": token}).to_string()),
            ("/agent/auth/claim/complete", complete(token, "12345")),
            ("/agent/auth/claim/complete", complete(token, "abcdef")),
            ("/agent/auth/claim/attempt/challenge", "{}".to_owned()),
        ] {
            let r = t.post_json(path, &body).await;
            assert_eq!(code(&r), (400, "invalid_request".into()), "{path} {body}");
        }
        let stranger = authmd::token::PlainSecret::generate(authmd::token::SecretKind::ClaimToken, &authmd::token::new_id("reg_"));
        for (path, body) in [
            ("/agent/auth/claim", claim(stranger.expose(), "a@example.com")),
            ("/agent/auth/claim", claim("clm_garbage", "a@example.com")),
            ("/agent/auth/claim/complete", complete(stranger.expose(), "123456")),
        ] {
            let r = t.post_json(path, &body).await;
            assert_eq!(code(&r), (401, "invalid_claim_token".into()), "{path}");
        }
        // The right registration, a forged verifier.
        let reg_id = reg["registration_id"].as_str().unwrap_or_default();
        let forged = authmd::token::PlainSecret::generate(authmd::token::SecretKind::ClaimToken, reg_id);
        let r = t.post_json("/agent/auth/claim", &claim(forged.expose(), "a@example.com")).await;
        assert_eq!(code(&r), (401, "invalid_claim_token".into()));
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": "cvt_nope"}).to_string()).await;
        assert_eq!(code(&r), (410, "claim_superseded".into()));
        // Pages: unknown and incomplete links.
        assert_eq!(t.get("/agent/auth/claim/view?token=cvt_nope", None).await.status, 404);
        assert_eq!(t.get("/agent/auth/claim/view", None).await.status, 400);
        assert!(t.mailer.sent().is_empty());
        assert!(t.events("claim.requested").await.is_empty());
    }
}

both_backends! {
    async fn expired_registrations_links_and_codes(backend: Backend) {
        let t = TestApp::new(backend, "[ttl]\nregistration = \"2s\"\notp = \"1s\"\nclaim_link = \"1s\"").await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await.status, 200);
        let link = link_token(&t.mails(1).await[0].text);
        let otp = show_code(&t, &link).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The code and the link are past their TTL; the registration is not.
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &otp)).await;
        assert_eq!(code(&r), (410, "otp_expired".into()));
        assert_eq!(t.get(&format!("/agent/auth/claim/view?token={link}"), None).await.status, 410);
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": link}).to_string()).await;
        assert_eq!(code(&r), (410, "claim_expired".into()));
        // A new link for the same address (the old one expired): resent.
        let r = t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(t.mails(2).await.len(), 2);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // Now the registration itself is over.
        let r = t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await;
        assert_eq!(code(&r), (410, "claim_expired".into()));
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &otp)).await;
        assert_eq!(code(&r), (410, "claim_expired".into()));
        // The sweep expires pending claims too.
        assert_eq!(t.app.sweep(authmd::Timestamp::now()).await.unwrap_or(0), 1);
    }
}

both_backends! {
    /// A new attempt supersedes the old link and its code; "this wasn't
    /// me" cancels the attempt.
    async fn superseded_and_denied_links(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, "first@example.com")).await.status, 200);
        let old = link_token(&t.mails(1).await[0].text);
        let old_code = show_code(&t, &old).await;
        // A different address: a new attempt and link.
        assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, "second@example.com")).await.status, 200);
        let mails = t.mails(2).await;
        let new = link_token(&mails[1].text);
        assert_ne!(old, new);
        let page = t.get(&format!("/agent/auth/claim/view?token={old}"), None).await;
        assert_eq!(page.status, 410);
        assert!(page.text().contains("replaced"));
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": old}).to_string()).await;
        assert_eq!(code(&r), (410, "claim_superseded".into()));
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &old_code)).await;
        assert_eq!(code(&r), (400, "otp_not_generated".into()), "the old code died with its link");

        // "This wasn't me".
        let r = t.send(form_request("/agent/auth/claim/view", &format!("token={new}&action=deny"))).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains("cancelled"));
        assert_eq!(page_code(&r.text()), None);
        let denied = t.events("claim.denied").await;
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0].data["email"], "second@example.com");
        assert_eq!(t.get(&format!("/agent/auth/claim/view?token={new}"), None).await.status, 410);
        let r = t.send(form_request("/agent/auth/claim/view", &format!("token={new}&action=show"))).await;
        assert_eq!(r.status, 410);
        assert_eq!(page_code(&r.text()), None);
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, "000000")).await;
        assert_eq!(code(&r), (400, "otp_not_generated".into()));
        // A bad form is an incomplete link, not an error.
        assert_eq!(t.send(form_request("/agent/auth/claim/view", "action=show")).await.status, 400);
    }
}

both_backends! {
    /// 5 wrong guesses kill a code (a fresh one works); 20 lock the claim
    /// until the registration expires.
    async fn otp_brute_force_budgets_hold(backend: Backend) {
        let t = TestApp::new(backend, "[rate_limits]\nenabled = false").await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await.status, 200);
        let link = link_token(&t.mails(1).await[0].text);

        let otp = show_code(&t, &link).await;
        for _ in 0..5 {
            let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &wrong(&otp))).await;
            assert_eq!(code(&r), (401, "otp_invalid".into()));
        }
        // The code is dead, even the right one.
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &otp)).await;
        assert_eq!(code(&r), (429, "too_many_attempts".into()));
        // 15 more wrong guesses over three fresh codes: locked at 20.
        for round in 0..3 {
            let otp = show_code(&t, &link).await;
            for i in 0..5 {
                let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &wrong(&otp))).await;
                assert_eq!(code(&r), (401, "otp_invalid".into()), "round {round} guess {i}");
            }
        }
        assert_eq!(t.events("claim.locked").await.len(), 1);
        assert_eq!(t.events("otp.failed").await.len(), 20);
        // Locked: no code helps, no page mints, no new email.
        let r = t.post_json("/agent/auth/claim/attempt/challenge", &json!({"claim_attempt_token": link}).to_string()).await;
        assert_eq!(code(&r), (429, "too_many_attempts".into()));
        assert_eq!(t.get(&format!("/agent/auth/claim/view?token={link}"), None).await.status, 429);
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, "123456")).await;
        assert_eq!(code(&r), (429, "too_many_attempts".into()));
        let r = t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await;
        assert_eq!(code(&r), (429, "too_many_attempts".into()));
        // The anonymous key itself still works (pre-claim) until the registration expires.
        assert_eq!(t.get("/api/whoami", reg["credential"].as_str()).await.status, 200);
    }
}

both_backends! {
    /// A fresh code works after a dead one.
    async fn a_fresh_code_works_after_a_dead_one(backend: Backend) {
        let t = TestApp::new(backend, "").await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, "u@example.com")).await.status, 200);
        let link = link_token(&t.mails(1).await[0].text);
        let first = show_code(&t, &link).await;
        for _ in 0..5 {
            t.post_json("/agent/auth/claim/complete", &complete(&token, &wrong(&first))).await;
        }
        let second = show_code(&t, &link).await;
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &first)).await;
        assert!(matches!(code(&r), (401, _)), "the first code died when the second was minted");
        let r = t.post_json("/agent/auth/claim/complete", &complete(&token, &second)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

both_backends! {
    /// Ten completions with the right code at once: exactly one wins.
    async fn concurrent_completions_succeed_once(backend: Backend) {
        let t = std::sync::Arc::new(TestApp::new(backend, "").await);
        let replica = std::sync::Arc::new(t.replica("").await);
        let body = json!({"type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "race@example.com", "requested_credential_type": "api_key"});
        let reg = t.post_json("/agent/auth", &body.to_string()).await.json();
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        let link = link_token(&t.mails(1).await[0].text);
        let otp = show_code(&t, &link).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let app = if i % 2 == 0 { std::sync::Arc::clone(&t) } else { std::sync::Arc::clone(&replica) };
            let req = complete(&token, &otp);
            tasks.push(tokio::spawn(async move { code(&app.post_json("/agent/auth/claim/complete", &req).await) }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap_or((0, String::new())) {
                (200, _) => wins += 1,
                (409, c) => assert_eq!(c, "previously_claimed"),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(wins, 1);
        assert_eq!(t.events("credential.issued").await.len(), 1);
        assert_eq!(t.events("claim.confirmed").await.len(), 1);
    }
}

both_backends! {
    async fn claim_emails_are_rate_limited(backend: Backend) {
        let toml = "[rate_limits]\nanonymous_per_ip_per_hour = 100\nclaim_emails_per_registration_per_hour = 2\nclaim_emails_per_address_per_hour = 3\n";
        let t = TestApp::new(backend, toml).await;
        let reg = t.register_anonymous().await;
        let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
        for addr in ["a@example.com", "b@example.com"] {
            assert_eq!(t.post_json("/agent/auth/claim", &claim(&token, addr)).await.status, 200);
        }
        let r = t.post_json("/agent/auth/claim", &claim(&token, "c@example.com")).await;
        assert_eq!(code(&r), (429, "rate_limited".into()));
        assert!(r.header("retry-after").is_some());
        // Per address, across registrations.
        for _ in 0..2 {
            let other = t.register_anonymous().await;
            let tok = other["claim_token"].as_str().unwrap_or_default().to_owned();
            assert_eq!(t.post_json("/agent/auth/claim", &claim(&tok, "victim@example.com")).await.status, 200);
        }
        let body = json!({"type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": "victim@example.com", "requested_credential_type": "api_key"});
        let r = t.post_json("/agent/auth", &body.to_string()).await;
        assert_eq!(r.status, 200);
        let fourth = t.register_anonymous().await;
        let tok = fourth["claim_token"].as_str().unwrap_or_default().to_owned();
        let r = t.post_json("/agent/auth/claim", &claim(&tok, "victim@EXAMPLE.com")).await;
        assert_eq!(code(&r), (429, "rate_limited".into()));
        assert_eq!(t.mails(5).await.len(), 5);
    }
}

both_backends! {
    async fn keys_rotate_at_claim_when_configured(backend: Backend) {
        let t = TestApp::new(backend, "[registration]\nrotate_key_on_claim = true").await;
        let reg = t.register_anonymous().await;
        let (old, token) = (reg["credential"].as_str().unwrap_or_default(), reg["claim_token"].as_str().unwrap_or_default());
        assert_eq!(t.post_json("/agent/auth/claim", &claim(token, "u@example.com")).await.status, 200);
        let otp = show_code(&t, &link_token(&t.mails(1).await[0].text)).await;
        let done = t.post_json("/agent/auth/claim/complete", &complete(token, &otp)).await.json();
        assert_eq!(done["credential_type"], "api_key");
        let new = done["credential"].as_str().unwrap_or_default();
        assert_ne!(new, old);
        assert_eq!(t.get("/api/whoami", Some(old)).await.status, 401);
        assert_eq!(t.get("/api/whoami", Some(new)).await.json()["scopes"], json!(["api.read", "api.write"]));
        assert_eq!(t.events("credential.revoked").await.len(), 1);
    }
}

/// Claims `email` for a fresh anonymous registration of `t`.
async fn run_claim(t: &TestApp, email: &str) -> (TestResponse, Value) {
    let reg = t.register_anonymous().await;
    let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
    let before = t.mailer.sent().len();
    assert_eq!(
        t.post_json("/agent/auth/claim", &claim(&token, email))
            .await
            .status,
        200
    );
    let link = link_token(&t.mails(before + 1).await[before].text);
    let otp = show_code(t, &link).await;
    (
        t.post_json("/agent/auth/claim/complete", &complete(&token, &otp))
            .await,
        reg,
    )
}

both_backends! {
    async fn claims_match_existing_users_or_refuse_without_provisioning(backend: Backend) {
        let db = std::sync::Arc::new(crate::support::TestDb::new(backend).await);
        let open = TestApp::on(std::sync::Arc::clone(&db), "").await;
        let closed = TestApp::on(db, "[registration]\njit_provisioning = false").await;
        let (r, _) = run_claim(&closed, "nobody@example.com").await;
        assert_eq!(code(&r), (403, "user_not_provisioned".into()));
        let (r, first) = run_claim(&open, "known@example.com").await;
        assert_eq!(r.status, 200);
        let (r, second) = run_claim(&closed, "known@example.com").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let u1 = open.get("/api/whoami", first["credential"].as_str()).await.json()["user"]["id"].clone();
        let u2 = open.get("/api/whoami", second["credential"].as_str()).await.json()["user"]["id"].clone();
        assert_eq!(u1, u2, "the same verified email is the same user");
    }
}
