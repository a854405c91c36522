//! A whole agent life in the current dialect (docs/protocol.md §20),
//! end to end: authmd on a real socket, the agent over real HTTP, the
//! sign-in email through a real SMTP server on loopback (mailcrab), and the
//! user in a real headless Chromium. One life starts anonymous; the other
//! with an ID-JAG that needs the user's confirmation.
//!
//! `UPDATE_SCREENSHOTS=1` writes the pages the user sees to `docs/`.

use std::sync::Arc;
use std::time::Duration;

use authmd_jose::Algorithm;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::both_backends;
use crate::claim_browser::{browser, screenshot_path};
use crate::provider::{JwksServer, claims, key, mint, now_secs, trusting};
use crate::support::{Backend, TestApp, TestDb, free_port, serve};

const PAGE_WAIT: Duration = Duration::from_secs(10);

/// authmd on a socket of its own, mailing through `smtp_port`.
async fn live(backend: Backend, smtp_port: u16, extra: &str) -> (TestApp, String) {
    let port = free_port();
    let toml = format!(
        "issuer = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[dialects.current]\nenabled = true\n\
         [resource]\nname = \"Acme Notes\"\n[resource.scopes]\n\"api.read\" = \"Read your notes\"\n\"api.write\" = \"Create and change your notes\"\n"
    );
    let smtp = authmd::mail::SmtpMailer::new(
        &format!("smtp://127.0.0.1:{smtp_port}"),
        None,
        "authmd@example.com",
    )
    .expect("smtp mailer");
    let db = Arc::new(TestDb::new(backend).await);
    let t = TestApp::with_mailer(db, &toml, Arc::new(smtp), Default::default()).await;
    let base = serve(authmd::http::router(t.app.clone()), port).await;
    (t, base)
}

/// The agent's side: plain HTTP with JSON bodies.
struct Agent {
    http: reqwest::Client,
    base: String,
}

impl Agent {
    async fn post(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn exchange(&self, assertion: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
            ))
            .send()
            .await
            .expect("token request");
        let status = r.status().as_u16();
        (status, json_of(r).await)
    }

    async fn whoami(&self, token: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/api/whoami", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("whoami");
        let status = r.status().as_u16();
        (status, json_of(r).await)
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null)
}

/// The next message at the SMTP server.
async fn next_message(rx: &mut tokio::sync::broadcast::Receiver<mailcrab::MailMessage>) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a message within 10 s")
        .expect("message");
    serde_json::to_value(&m).expect("message as JSON")
}

fn sign_in_link(text: &str) -> String {
    let start = text
        .find("http")
        .unwrap_or_else(|| panic!("no link in {text}"));
    text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect()
}

async fn heading(client: &Client, want: &str) -> String {
    let deadline = std::time::Instant::now() + PAGE_WAIT;
    loop {
        let h = match client.find(Locator::Css("h1")).await {
            Ok(h1) => h1.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if h == want || std::time::Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn shot(client: &Client, name: &str) {
    if let Some(path) = screenshot_path(name) {
        std::fs::write(path, client.screenshot().await.expect("screenshot"))
            .expect("write screenshot");
    }
}

/// The user's part in the browser: open the agent's link, ask for the
/// sign-in link, open it from the delivered email, authorize, read the code.
async fn user_in_browser(
    client: &Client,
    rx: &mut tokio::sync::broadcast::Receiver<mailcrab::MailMessage>,
    verification_uri: &str,
    email: &str,
    shots: bool,
) -> String {
    client
        .goto(verification_uri)
        .await
        .expect("open the agent's link");
    let text = client
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("Acme Notes") && text.contains(email),
        "{text}"
    );
    assert!(text.contains("Create and change your notes"), "{text}");
    if shots {
        shot(client, "current-claim-start.png").await;
    }
    client
        .find(Locator::Css("button[value=sign_in]"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("click");
    assert_eq!(
        heading(client, "Check your email").await,
        "Check your email"
    );

    let message = next_message(rx).await;
    assert!(message["to"].to_string().contains(email), "{message}");
    let mail_text = message["text"].as_str().unwrap_or_default();
    let link = sign_in_link(mail_text);
    assert!(link.contains("token=sgn_"), "{link}");
    assert!(
        !mail_text.contains("cvt_"),
        "the email never carries the agent's link"
    );

    // The same browser opens the emailed link: signed in.
    client.goto(&link).await.expect("open the sign-in link");
    assert_eq!(
        heading(client, "Authorize this agent?").await,
        "Authorize this agent?"
    );
    assert!(
        client.find(Locator::Id("otp")).await.is_err(),
        "no code before confirming"
    );
    if shots {
        shot(client, "current-claim-authorize.png").await;
    }
    client
        .find(Locator::Css("button[value=confirm]"))
        .await
        .expect("authorize button")
        .click()
        .await
        .expect("click");
    let code = client
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Id("otp"))
        .await
        .expect("the code")
        .text()
        .await
        .expect("text");
    assert_eq!(code.len(), 6, "{code}");
    if shots {
        shot(client, "current-claim-code.png").await;
    }
    code
}

both_backends! {
    unless authmd_no_browser = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)";
    /// Anonymous registration, exchange, claim with the sign-in link,
    /// confirmation in the browser, the code read back, completion,
    /// refresh, refresh reuse detected, re-registration.
    async fn an_anonymous_agent_lives_in_the_current_dialect(backend: Backend) {
        let smtp_port = free_port();
        let mut smtp = mailcrab::development_mail_server([127, 0, 0, 1], smtp_port).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (t, base) = live(backend, smtp_port, "").await;
        let (client, _driver) = browser().await;
        let agent = Agent { http: reqwest::Client::new(), base: base.clone() };

        // Discovery names every endpoint the agent needs.
        let asm = json_of(agent.http.get(format!("{base}/.well-known/oauth-authorization-server"))
            .send().await.expect("metadata")).await;
        assert_eq!(asm["agent_auth"]["identity_endpoint"], format!("{base}/agent/identity"));
        assert_eq!(asm["agent_auth"]["claim_endpoint"], format!("{base}/agent/identity/claim"));
        assert_eq!(asm["token_endpoint"], format!("{base}/oauth2/token"));

        let (status, reg, _) = agent.post("/agent/identity", json!({"type": "anonymous"})).await;
        assert_eq!(status, 200, "{reg}");
        let claim_token = reg["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let (status, tok) = agent.exchange(reg["identity"]["assertion"].as_str().unwrap_or_default()).await;
        assert_eq!((status, tok["scope"].clone()), (200, json!("api.read")));
        let pre = tok["access_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(agent.whoami(&pre).await.0, 200);

        // The claim: the agent starts an attempt and hands the link over.
        let (status, attempt, _) = agent.post("/agent/identity/claim",
            json!({"type": "service_auth", "claim_token": claim_token, "login_hint": "lena@example.com"})).await;
        assert_eq!(status, 200, "{attempt}");
        let uri = attempt["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();
        assert!(uri.starts_with(&format!("{base}/agent/identity/claim/verify?token=cvt_")), "{uri}");
        let (status, early, _) = agent.post("/agent/identity/claim/complete",
            json!({"claim_token": claim_token, "user_code": "123456"})).await;
        assert_eq!((status, early["error"].clone()), (409, json!("claim_not_confirmed")));

        let code = user_in_browser(&client, &mut smtp.rx, &uri, "lena@example.com", backend == Backend::Sqlite).await;

        let (status, done, _) = agent.post("/agent/identity/claim/complete",
            json!({"claim_token": claim_token, "user_code": code})).await;
        assert_eq!(status, 200, "{done}");
        assert_eq!(done["status"], "claimed");
        assert_eq!(agent.whoami(&pre).await.0, 401, "the pre-claim token ended at the claim");
        let (status, tok) = agent.exchange(done["identity"]["assertion"].as_str().unwrap_or_default()).await;
        assert_eq!((status, tok["scope"].clone()), (200, json!("api.read api.write")));
        let access = tok["access_token"].as_str().unwrap_or_default().to_owned();
        let (status, who) = agent.whoami(&access).await;
        assert_eq!((status, who["user"]["email"].clone()), (200, json!("lena@example.com")));
        // The page after the claim.
        client.goto(&uri).await.expect("the link again");
        assert_eq!(heading(&client, "Already connected").await, "Already connected");

        // Refresh, then the spent token again: the family ends.
        let first = done["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let (status, r1, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": first})).await;
        assert_eq!(status, 200, "{r1}");
        let second = r1["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let (status, tok) = agent.exchange(r1["identity"]["assertion"].as_str().unwrap_or_default()).await;
        assert_eq!((status, tok["scope"].clone()), (200, json!("api.read api.write")));
        let (status, reuse, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": first})).await;
        assert_eq!((status, reuse["error"].clone()), (400, json!("invalid_refresh_token")));
        let (_, gone, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": second})).await;
        assert_eq!(gone["error"], "invalid_refresh_token", "the successor died with the family");
        assert_eq!(t.events("refresh.reused").await.len(), 1);

        // Re-registration: a new life.
        let (status, again, _) = agent.post("/agent/identity", json!({"type": "anonymous"})).await;
        assert_eq!(status, 200, "{again}");
        assert_ne!(again["id"], reg["id"]);
        client.close().await.expect("close");
        smtp.token.cancel();
    }
}

both_backends! {
    unless authmd_no_browser = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)";
    /// An ID-JAG whose verified email matches an existing account:
    /// `interaction_required`, the user confirms in the browser, the agent
    /// completes, exchanges and refreshes; the provider's security event
    /// ends it all; a fresh ID-JAG registers again as a clean match.
    async fn an_agent_verified_step_up_lives_in_the_current_dialect(backend: Backend) {
        let smtp_port = free_port();
        let mut smtp = mailcrab::development_mail_server([127, 0, 0, 1], smtp_port).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let provider_a = JwksServer::start().await;
        let provider_b = JwksServer::start().await;
        let ka = key(Algorithm::Es256, "ka");
        let kb = key(Algorithm::Es256, "kb");
        provider_a.set_keys(&[&ka]);
        provider_b.set_keys(&[&kb]);
        let (t, base) = live(backend, smtp_port, &trusting(&[provider_a.issuer(), provider_b.issuer()], "")).await;
        let (client, _driver) = browser().await;
        let agent = Agent { http: reqwest::Client::new(), base: base.clone() };
        let id_jag = |k: &authmd_jose::SigningKey, issuer: &str| {
            let mut c = claims(issuer, &base, "max");
            c.insert("auth_time".into(), json!(now_secs() - 30));
            json!({"type": "identity_assertion", "assertion_type": "urn:ietf:params:oauth:token-type:id-jag",
                   "assertion": mint(k, &[], &c)})
        };

        // max@example.com exists, through provider a.
        let (status, _, _) = agent.post("/agent/identity", id_jag(&ka, provider_a.issuer())).await;
        assert_eq!(status, 200);
        // Provider b asserts the same verified address: the user must confirm.
        let (status, step, headers) = agent.post("/agent/identity", id_jag(&kb, provider_b.issuer())).await;
        assert_eq!(status, 401, "{step}");
        assert_eq!(step["error"], "interaction_required");
        let challenge = headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(challenge.starts_with("AgentAuth error=\"interaction_required\""), "{challenge}");
        let claim_token = step["claim"]["token"].as_str().unwrap_or_default().to_owned();
        let uri = step["claim"]["attempt"]["verification_uri"].as_str().unwrap_or_default().to_owned();

        let code = user_in_browser(&client, &mut smtp.rx, &uri, "max@example.com", false).await;
        let (status, done, _) = agent.post("/agent/identity/claim/complete",
            json!({"claim_token": claim_token, "user_code": code})).await;
        assert_eq!(status, 200, "{done}");
        let (status, tok) = agent.exchange(done["identity"]["assertion"].as_str().unwrap_or_default()).await;
        assert_eq!(status, 200, "{tok}");
        let access = tok["access_token"].as_str().unwrap_or_default().to_owned();
        assert_eq!(agent.whoami(&access).await.1["user"]["email"], "max@example.com");
        let refresh = done["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let (status, r1, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": refresh})).await;
        assert_eq!(status, 200, "{r1}");
        let refresh = r1["identity"]["refresh_token"]["value"].as_str().unwrap_or_default().to_owned();
        let (status, r2, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": refresh.clone()})).await;
        assert_eq!(status, 200, "{r2}");
        let (_, reuse, _) = agent.post("/agent/identity", json!({"type": "refresh", "refresh_token": refresh})).await;
        assert_eq!(reuse["error"], "invalid_refresh_token", "reuse detected");

        // Provider b's security event for the subject ends its grants.
        let assertion = r1["identity"]["assertion"].as_str().unwrap_or_default().to_owned();
        let set_claims = json!({"iss": provider_b.issuer(), "sub": "max", "aud": base,
            "jti": authmd::token::new_id("jti_"), "iat": now_secs(),
            "events": {"https://schemas.workos.com/events/agent/auth/identity/assertion/revoked": {}}});
        let mut header = serde_json::Map::new();
        header.insert("typ".into(), json!("secevent+jwt"));
        let set = authmd_jose::jws::sign(&kb, &header, set_claims.as_object().expect("object")).expect("sign");
        let r = agent.http.post(format!("{base}/agent/event/notify"))
            .header("content-type", "application/secevent+jwt").body(set).send().await.expect("notify");
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap_or_default());
        assert_eq!(agent.whoami(&access).await.0, 401, "the access token ended");
        let (status, x) = agent.exchange(&assertion).await;
        assert_eq!((status, x["error"].clone()), (400, json!("invalid_grant")), "assertions stop exchanging");

        // A fresh ID-JAG (minted after the event) registers again, linked.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, again, _) = agent.post("/agent/identity", id_jag(&kb, provider_b.issuer())).await;
        assert_eq!(status, 200, "{again}");
        let (_, tok) = agent.exchange(again["identity"]["assertion"].as_str().unwrap_or_default()).await;
        assert_eq!(agent.whoami(tok["access_token"].as_str().unwrap_or_default()).await.1["user"]["email"], "max@example.com");
        assert_eq!(t.events("step_up.required").await.len(), 1, "no second confirmation");
        client.close().await.expect("close");
        smtp.token.cancel();
    }
}
