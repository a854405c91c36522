//! The claim page in a real headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`). Without them these tests
//! are compiled as ignored (`build.rs` sets `authmd_no_browser`), so the
//! summary counts them as ignored with the reason; `.ci/run` installs them
//! and sets `REQUIRE_BROWSER=1`, which makes a missing browser a failure.
//!
//! `UPDATE_SCREENSHOTS=1` writes the pages a user sees to `docs/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::{TestApp, free_port, link_token, serve};

/// How long a form submission may take to show the next page.
const PAGE_WAIT: Duration = Duration::from_secs(10);

const DRIVER: &str = "/usr/bin/chromedriver";
const BROWSER: &str = "/usr/bin/chromium";

pub struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A browser session. The tests that call this are ignored when no browser
/// is installed (see the module doc), so a missing one here is a failure.
pub async fn browser() -> (Client, Driver) {
    assert!(
        Path::new(DRIVER).exists() && Path::new(BROWSER).exists(),
        "the claim-page browser tests need {BROWSER} and {DRIVER} \
         (apt-get install chromium chromium-driver)"
    );
    let port = free_port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": BROWSER,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--disable-quic", "--window-size=412,900"],
        }),
    );
    let started = Instant::now();
    loop {
        match ClientBuilder::rustls()
            .expect("tls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return (client, driver),
            Err(e) if started.elapsed() > Duration::from_secs(20) => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn screenshot_path(name: &str) -> Option<PathBuf> {
    (std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1")).then(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name)
    })
}

/// A server on a real socket whose issuer is its own address.
async fn live_app() -> (TestApp, String) {
    let port = free_port();
    let toml = format!(
        "issuer = \"http://127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n[resource]\nname = \"Acme Notes\"\n[resource.scopes]\n\"api.read\" = \"Read your notes\"\n\"api.write\" = \"Create and change your notes\"\n"
    );
    let t = TestApp::new(crate::support::Backend::Sqlite, &toml).await;
    let base = serve(authmd::http::router(t.app.clone()), port).await;
    (t, base)
}

async fn claim_link(t: &TestApp) -> (String, String) {
    let reg = t.register_anonymous().await;
    let token = reg["claim_token"].as_str().unwrap_or_default().to_owned();
    let r = t
        .post_json(
            "/agent/auth/claim",
            &json!({"claim_token": token, "email": "maya@example.com"}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200);
    let link = link_token(&t.mails(1).await[0].text);
    (token, link)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    authmd_no_browser,
    ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_user_shows_the_code_and_the_agent_completes() {
    let (client, _driver) = browser().await;
    let (t, base) = live_app().await;
    let (token, link) = claim_link(&t).await;

    client
        .goto(&format!("{base}/agent/auth/claim/view?token={link}"))
        .await
        .expect("open the link");
    let text = client
        .find(Locator::Css("main"))
        .await
        .expect("main")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("Acme Notes") && text.contains("maya@example.com"),
        "{text}"
    );
    assert!(
        text.contains("Create and change your notes"),
        "the page names what the agent gains"
    );
    // Nothing is shown or minted by opening the link.
    assert!(
        client.find(Locator::Id("otp")).await.is_err(),
        "no code before the action"
    );
    assert!(t.events("otp.generated").await.is_empty());
    if let Some(path) = screenshot_path("claim-page.png") {
        std::fs::write(path, client.screenshot().await.expect("screenshot"))
            .expect("write screenshot");
    }

    client
        .find(Locator::Css("button[value=show]"))
        .await
        .expect("show button")
        .click()
        .await
        .expect("click");
    // The click submits a form: wait for the next page, not the old one.
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
    if let Some(path) = screenshot_path("claim-code.png") {
        std::fs::write(path, client.screenshot().await.expect("screenshot"))
            .expect("write screenshot");
    }
    // Reloading the link does not reveal or replace the code.
    client
        .goto(&format!("{base}/agent/auth/claim/view?token={link}"))
        .await
        .expect("reload");
    assert!(client.find(Locator::Id("otp")).await.is_err());

    // The agent completes with what the user read.
    let r = t
        .post_json(
            "/agent/auth/claim/complete",
            &json!({"claim_token": token, "otp": code}).to_string(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "claimed");
    client
        .goto(&format!("{base}/agent/auth/claim/view?token={link}"))
        .await
        .expect("again");
    let after = client
        .find(Locator::Css("h1"))
        .await
        .expect("h1")
        .text()
        .await
        .expect("text");
    assert_eq!(after, "Already connected");
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    authmd_no_browser,
    ignore = "needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)"
)]
async fn a_user_says_this_was_not_me() {
    let (client, _driver) = browser().await;
    let (t, base) = live_app().await;
    let (token, link) = claim_link(&t).await;
    client
        .goto(&format!("{base}/agent/auth/claim/view?token={link}"))
        .await
        .expect("open the link");
    client
        .find(Locator::Css("button[value=deny]"))
        .await
        .expect("deny button")
        .click()
        .await
        .expect("click");
    // The page before the click has an h1 too: wait for the next one.
    let deadline = Instant::now() + PAGE_WAIT;
    let heading = loop {
        let heading = match client.find(Locator::Css("h1")).await {
            Ok(h1) => h1.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if heading == "Request cancelled" || Instant::now() > deadline {
            break heading;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(heading, "Request cancelled");
    assert!(client.find(Locator::Id("otp")).await.is_err());
    assert_eq!(t.events("claim.denied").await.len(), 1);
    let r = t
        .post_json(
            "/agent/auth/claim/complete",
            &json!({"claim_token": token, "otp": "123456"}).to_string(),
        )
        .await;
    assert_eq!(r.code(), "otp_not_generated");
    client.close().await.expect("close");
}
