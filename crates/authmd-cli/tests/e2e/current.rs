//! The current dialect (docs/protocol.md §20) against authmd itself, as
//! real processes: `authmd serve` with `[dialects.current] enabled =
//! true`, mail through mailcrab, and the agent as the library, the
//! `authmd agent` CLI (a process per step) and the MCP server (a child
//! process driven by an rmcp client). The user's part, played over HTTP
//! as a browser would: open the agent's link, ask for the sign-in email,
//! open its link with the page's cookie, confirm, read the code.

use authmd_client::agent::{Agent, Authenticate, OutcomeStatus, Renewed};
use authmd_client::store::Store;
use authmd_client::{Client, Dialect};

use super::*;

/// Said explicitly: the default may change.
const CURRENT_ON: &str = "[dialects.current]\nenabled = true\n";
const VERIFY: &str = "/agent/identity/claim/verify";

impl World {
    /// authmd with the current dialect on, the agent detecting it.
    async fn start_current() -> World {
        World::start_with("current", CURRENT_ON).await
    }

    /// Plays the user with the `verification_uri` the agent handed over:
    /// the page, "send me a sign-in link" (which sets the browser's
    /// cookie), the sign-in email to `email`, its link opened with that
    /// cookie, "confirm"; returns the 6-digit code the page then shows.
    async fn user_confirms(&mut self, verification_uri: &str, email: &str) -> String {
        let verify = format!("{}{VERIFY}", self.base);
        assert!(
            verification_uri.starts_with(&format!("{verify}?token=cvt_")),
            "{verification_uri}"
        );
        let http = reqwest::Client::new();
        let page = http
            .get(verification_uri)
            .send()
            .await
            .expect("open the agent's link");
        assert_eq!(page.status(), 200);
        let page = page.text().await.expect("page");
        assert!(
            page.contains(email) && page.contains("value=\"sign_in\""),
            "{page}"
        );
        assert!(!page.contains("id=\"otp\""), "no code before sign-in");
        let link_token = token_in(verification_uri, "cvt_");
        let sent = http
            .post(&verify)
            .form(&[("token", link_token.as_str()), ("action", "sign_in")])
            .send()
            .await
            .expect("ask for the sign-in link");
        assert_eq!(sent.status(), 200);
        let cookie = sent
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.split(';').next()?.strip_prefix("authmd_claim="))
            .map(str::to_owned)
            .expect("the page's cookie");
        assert!(
            sent.text()
                .await
                .expect("page")
                .contains("Check your email")
        );

        let message = tokio::time::timeout(Duration::from_secs(15), self.mail.rx.recv())
            .await
            .expect("a sign-in email within 15 s")
            .expect("message");
        let message = serde_json::to_value(&message).expect("message as JSON");
        assert!(message["to"].to_string().contains(email), "{message}");
        let text = message["text"].as_str().unwrap_or_default();
        assert!(
            !text.contains(&link_token),
            "the sign-in email never carries the agent's link"
        );
        let link = text
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{verify}?token=sgn_")))
            .unwrap_or_else(|| panic!("no sign-in link in {text}"));
        let sign_in = token_in(link, "sgn_");
        let with_cookie = |r: reqwest::RequestBuilder| {
            r.header(reqwest::header::COOKIE, format!("authmd_claim={cookie}"))
        };

        let page = with_cookie(http.get(link))
            .send()
            .await
            .expect("open the sign-in link")
            .text()
            .await
            .expect("page");
        assert!(
            page.contains("Authorize this agent?") && page.contains("value=\"confirm\""),
            "{page}"
        );
        assert!(!page.contains("id=\"otp\""), "no code before confirming");
        let shown = with_cookie(http.post(&verify))
            .form(&[("token", sign_in.as_str()), ("action", "confirm")])
            .send()
            .await
            .expect("confirm")
            .text()
            .await
            .expect("page");
        let code = page_code(&shown).unwrap_or_else(|| panic!("a code on the page: {shown}"));
        assert!(!text.contains(&code), "the email never holds the code");
        code
    }
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

/// The 6 digits of the element with id="otp".
fn page_code(html: &str) -> Option<String> {
    let rest = &html[html.find("id=\"otp\"")?..];
    let code: String = rest[rest.find('>')? + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (code.len() == 6).then_some(code)
}

fn other_than(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

async fn whoami(agent: &Agent, api: &str) -> (Value, Option<Renewed>) {
    let f = agent
        .fetch(api, reqwest::Method::GET, |r| r)
        .await
        .expect("fetch");
    assert_eq!(f.response.status(), 200);
    let renewed = f.renewed;
    (f.response.json().await.expect("JSON"), renewed)
}

/// Item 1a: the library (`authmd_client::agent::Agent`) against authmd in
/// the current dialect: anonymous, a call, the claim the agent starts and
/// completes with the code the user reads back, a call with the wider
/// scope, renewal through the rotating refresh token, self-revocation.
#[tokio::test]
async fn the_library_against_authmd_in_the_current_dialect() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);
    let store = w.agent_home().join("credentials.json");
    let agent = Agent::new(Client::new().expect("client"), Store::new(&store));

    let out = agent
        .authenticate(Authenticate {
            target: api.clone(),
            anonymous: true,
            ..Authenticate::default()
        })
        .await
        .expect("anonymous");
    assert_eq!(
        (out.status, out.dialect),
        (OutcomeStatus::Authenticated, Dialect::Current),
        "{out:?}"
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.post_claim_scopes, ["api.read", "api.write"]);
    let (me, renewed) = whoami(&agent, &api).await;
    assert_eq!(renewed, None, "the access token of the registration");
    assert_eq!(scopes(&me), ["api.read"]);
    assert!(me["user"].is_null(), "{me}");

    // The claim: the agent starts it and hands the link over.
    let started = agent
        .start_claim(Some(&api), "ines@example.com")
        .await
        .expect("claim start");
    let uri = started
        .claim
        .as_ref()
        .and_then(|c| c.verification_uri.clone())
        .unwrap_or_else(|| panic!("a verification_uri: {started:?}"));
    assert!(started.instructions.contains(&uri), "{started:?}");
    let early = agent
        .complete_claim(Some(&api), "123456")
        .await
        .expect_err("not confirmed yet");
    assert_eq!(early.code(), Some("claim_not_confirmed"), "{early}");
    assert_eq!(
        early.warning(),
        None,
        "authmd answers the protocol's envelope"
    );
    let code = w.user_confirms(&uri, "ines@example.com").await;
    let wrong = agent
        .complete_claim(Some(&api), other_than(&code))
        .await
        .expect_err("a wrong code");
    assert_eq!(wrong.code(), Some("invalid_user_code"), "{wrong}");
    let done = agent
        .complete_claim(Some(&api), &code)
        .await
        .expect("claimed");
    assert!(done.claimed, "{done:?}");
    assert_eq!(done.scopes, ["api.read", "api.write"]);

    // The wider scope, for the user.
    let (me, _) = whoami(&agent, &api).await;
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");
    let registration = me["registration_id"].clone();

    // The access token and the assertion are past their time: the refresh
    // token renews (and rotates), for the same user and scopes.
    let kept = |path: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(path).expect("store")).expect("JSON")
    };
    let mut all = kept(&store);
    let entry = &mut all["issuers"][&w.base];
    let first_refresh = entry["refresh_token"]["value"]
        .as_str()
        .expect("a refresh token kept since the claim")
        .to_owned();
    entry["access"]["expires_at"] = json!(0);
    entry["assertion"]["expires_at"] = json!(0);
    std::fs::write(&store, all.to_string()).expect("age the tokens");
    let (me, renewed) = whoami(&agent, &api).await;
    assert_eq!(renewed, Some(Renewed::Refreshed));
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");
    assert_eq!(me["registration_id"], registration, "the same registration");
    let after = kept(&store);
    let second_refresh = after["issuers"][&w.base]["refresh_token"]["value"]
        .as_str()
        .expect("the next refresh token")
        .to_owned();
    assert_ne!(second_refresh, first_refresh, "rotated");

    // Self-revocation: the service ends the token, the store forgets it.
    let secret = after["issuers"][&w.base]["access"]["value"]
        .as_str()
        .expect("access token")
        .to_owned();
    let revoked = agent.revoke(Some(&api)).await.expect("revoke");
    assert_eq!(json!(revoked), registration);
    let r = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&secret)
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), 401);
    assert!(kept(&store)["issuers"].get(&w.base).is_none(), "forgotten");
}

/// Item 1b: `authmd agent` against authmd in the current dialect, every
/// step a process; the dialect detected from the metadata.
#[tokio::test]
async fn the_cli_against_authmd_in_the_current_dialect() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);

    let d = w.agent_ok(&["discover", &api]).await;
    assert!(d.contains("dialect:       current"), "{d}");
    let started = Instant::now();
    let out = w.agent_ok(&["register", &api, "--anonymous"]).await;
    let me = w.whoami().await;
    report("anonymous start, current dialect", started.elapsed());
    assert!(out.contains("registered with"), "{out}");
    assert_eq!(scopes(&me), ["api.read"]);

    // Secrets stay in the store.
    let kept = w.kept();
    let entry = &kept["issuers"][&w.base];
    for secret in ["access", "assertion"] {
        let value = entry[secret]["value"].as_str().expect("kept").to_owned();
        assert!(!out.contains(&value), "register printed the {secret}");
        assert!(!w.agent_ok(&["status", "--json"]).await.contains(&value));
    }

    let out = w.agent_ok(&["claim", "--email", "ines@example.com"]).await;
    let uri = out
        .split_whitespace()
        .find(|s| s.starts_with(&format!("{}{VERIFY}?token=cvt_", w.base)))
        .unwrap_or_else(|| panic!("a link in {out}"))
        .to_owned();
    let early = w.agent(&["complete", "--otp", "123456"]).await;
    assert!(
        !early.ok && early.stderr.contains("claim_not_confirmed"),
        "{}",
        early.stderr
    );
    let code = w.user_confirms(&uri, "ines@example.com").await;
    let wrong = w.agent(&["complete", "--otp", other_than(&code)]).await;
    assert!(
        !wrong.ok && wrong.stderr.contains("invalid_user_code"),
        "{}",
        wrong.stderr
    );
    let done = w.agent_ok(&["complete", "--otp", &code]).await;
    assert!(done.contains("api.read api.write"), "{done}");
    let me = w.whoami().await;
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");

    // In a new process, with the access token and the assertion past their
    // time: the refresh token kept since the claim renews.
    let path = w.agent_home().join("credentials.json");
    let mut all = w.kept();
    all["issuers"][&w.base]["access"]["expires_at"] = json!(0);
    all["issuers"][&w.base]["assertion"]["expires_at"] = json!(0);
    std::fs::write(&path, all.to_string()).expect("age the tokens");
    let r = w.agent(&["call", "-f", &api]).await;
    assert!(r.ok && r.stderr.contains("refresh token"), "{}", r.stderr);
    let me: Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(me["user"]["email"], "ines@example.com");

    let status = w.agent_ok(&["status", "--json"]).await;
    assert!(status.contains("\"dialect\": \"current\""), "{status}");
    assert!(!status.contains("amd_rt_"), "{status}");
    let out = w.agent_ok(&["revoke"]).await;
    assert!(out.contains("revoked"), "{out}");
    let r = w.agent(&["call", &api]).await;
    assert!(
        !r.ok && r.stderr.contains("no registration kept"),
        "{}",
        r.stderr
    );
}

/// Item 1c (the item 4 in the current dialect): the MCP server, a
/// child process driven by an rmcp client over stdio, against authmd.
#[tokio::test]
async fn the_mcp_server_against_authmd_in_the_current_dialect() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);
    let mcp = mcp_server(w.dir.path(), &w.agent_home(), &[]).await;
    let names: Vec<String> = mcp
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for name in [
        "authmd_authenticate",
        "authmd_complete_claim",
        "authmd_fetch",
    ] {
        assert!(names.iter().any(|n| n == name), "{names:?}");
    }

    let out = tool_ok(&mcp, "authmd_authenticate", json!({"issuer": w.base})).await;
    assert_eq!(
        (out["status"].clone(), out["dialect"].clone()),
        (json!("authenticated"), json!("current")),
        "{out}"
    );
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": w.base, "url": api})).await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(scopes(&fetched_body(&fetched)), ["api.read"]);

    let started = tool_ok(
        &mcp,
        "authmd_authenticate",
        json!({"issuer": w.base, "email": "ines@example.com"}),
    )
    .await;
    let uri = started["claim"]["verification_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("verification_uri in {started}"))
        .to_owned();
    assert!(
        started["instructions"]
            .as_str()
            .unwrap_or_default()
            .contains(&uri),
        "{started}"
    );
    let (ok, v) = tool(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": w.base, "user_code": "123456"}),
    )
    .await;
    assert!(!ok);
    assert_eq!(
        (v["error"].clone(), v["status"].clone()),
        (json!("claim_not_confirmed"), json!(409)),
        "{v}"
    );
    assert!(
        v["advice"].as_str().unwrap_or_default().contains("confirm"),
        "{v}"
    );
    let code = w.user_confirms(&uri, "ines@example.com").await;
    let done = tool_ok(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": w.base, "user_code": code}),
    )
    .await;
    assert_eq!(done["claimed"], true, "{done}");
    assert_eq!(done["scopes"], json!(["api.read", "api.write"]));
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": w.base, "url": api})).await;
    let me = fetched_body(&fetched);
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");

    let status = tool_ok(&mcp, "authmd_status", json!({"issuer": w.base}))
        .await
        .to_string();
    let kept = w.kept();
    for secret in ["access", "assertion", "refresh_token"] {
        let value = kept["issuers"][&w.base][secret]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{secret} kept"));
        assert!(!status.contains(value), "{secret} in {status}");
    }
    let revoked = tool_ok(&mcp, "authmd_revoke", json!({"issuer": w.base})).await;
    assert_eq!(revoked["revoked"], true, "{revoked}");
    mcp.cancel().await.expect("close");
}

/// `service_auth` (the current dialect's email flow) from the command
/// line: the service starts the claim at once; nothing until the user
/// confirms and the agent completes with the code.
#[tokio::test]
async fn email_required_gives_nothing_until_the_user_claims_in_the_current_dialect() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);
    let out = w
        .agent_ok(&["register", &api, "--email", "olu@example.com"])
        .await;
    let uri = out
        .split_whitespace()
        .find(|s| s.starts_with(&format!("{}{VERIFY}?token=cvt_", w.base)))
        .unwrap_or_else(|| panic!("a link in {out}"))
        .to_owned();
    assert_eq!(
        w.kept()["issuers"][&w.base]["registration_type"],
        "service_auth"
    );
    let r = w.agent(&["call", &api]).await;
    assert!(
        !r.ok && r.stderr.contains("complete the claim"),
        "{}",
        r.stderr
    );
    let code = w.user_confirms(&uri, "olu@example.com").await;
    let done = w.agent_ok(&["complete", "--otp", &code]).await;
    assert!(done.contains("api.read api.write"), "{done}");
    let me = w.whoami().await;
    assert_eq!(me["user"]["email"], "olu@example.com");
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
}

/// `identity_assertion`: an ID-JAG from the provider binds at once; with
/// everything kept past its time, the agent mints a fresh one and
/// registers again as the same user. An ID-JAG for an account that exists
/// already (the same verified email, another subject) steps up through
/// the claim (`401 interaction_required`).
#[tokio::test]
async fn an_id_jag_binds_at_once_or_steps_up_in_the_current_dialect() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);
    // The current dialect wants `auth_time` (at most an hour old).
    let minter = |sub: &str, email: &str| format!("{} --auth-age 30s", w.minter(sub, email));

    w.agent_ok(&[
        "register",
        &api,
        "--id-jag-command",
        &minter("u-ada", "ada@example.com"),
    ])
    .await;
    let me = w.whoami().await;
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(scopes(&me), ["api.read", "api.write"]);

    let path = w.agent_home().join("credentials.json");
    let mut all = w.kept();
    for secret in ["access", "assertion", "refresh_token"] {
        if all["issuers"][&w.base][secret].is_object() {
            all["issuers"][&w.base][secret]["expires_at"] = json!(0);
        }
    }
    std::fs::write(&path, all.to_string()).expect("age the tokens");
    let r = w.agent(&["call", "-f", &api]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("registering again"), "{}", r.stderr);
    let again: Value = serde_json::from_str(&r.stdout).expect("whoami");
    assert_eq!(again["user"]["id"], me["user"]["id"], "the same user");

    // Another subject asserting ada's verified email: the user confirms.
    let out = w
        .agent_ok(&[
            "register",
            &api,
            "--id-jag-command",
            &minter("u-ada-elsewhere", "ada@example.com"),
        ])
        .await;
    let uri = out
        .split_whitespace()
        .find(|s| s.starts_with(&format!("{}{VERIFY}?token=cvt_", w.base)))
        .unwrap_or_else(|| panic!("a link in {out}"))
        .to_owned();
    let code = w.user_confirms(&uri, "ada@example.com").await;
    w.agent_ok(&["complete", "--otp", &code]).await;
    let stepped = w.whoami().await;
    assert_eq!(stepped["user"]["id"], me["user"]["id"], "the same user");
}

/// Two agent processes renewing at the same moment with one rotating
/// refresh token: the store's lock makes the second use the token the
/// first received, so authmd's reuse detection (which ends the whole
/// family) is never tripped.
#[tokio::test]
async fn two_processes_renewing_at_once_do_not_trip_refresh_reuse_detection() {
    let mut w = World::start_current().await;
    let api = format!("{}/api/whoami", w.base);
    w.agent_ok(&["register", &api, "--anonymous"]).await;
    let out = w.agent_ok(&["claim", "--email", "ines@example.com"]).await;
    let uri = out
        .split_whitespace()
        .find(|s| s.starts_with(&format!("{}{VERIFY}?token=cvt_", w.base)))
        .unwrap_or_else(|| panic!("a link in {out}"))
        .to_owned();
    let code = w.user_confirms(&uri, "ines@example.com").await;
    w.agent_ok(&["complete", "--otp", &code]).await;

    let path = w.agent_home().join("credentials.json");
    let mut all = w.kept();
    all["issuers"][&w.base]["access"]["expires_at"] = json!(0);
    all["issuers"][&w.base]["assertion"]["expires_at"] = json!(0);
    std::fs::write(&path, all.to_string()).expect("age the tokens");
    let call = ["call", "-f", api.as_str()];
    let (a, b) = tokio::join!(w.agent(&call), w.agent(&call));
    assert!(a.ok && b.ok, "{}\n{}", a.stderr, b.stderr);
    let refreshed = [&a, &b]
        .iter()
        .filter(|r| r.stderr.contains("refresh token"))
        .count();
    assert_eq!(refreshed, 1, "one renews, the other uses what it got");
    let me = w.whoami().await;
    assert_eq!(me["user"]["email"], "ines@example.com");
    let events = |name: &'static str| {
        let mut c = authmd(w.dir.path());
        c.env("AUTHMD_CONFIG", w.dir.path().join("authmd.toml"))
            .args(["audit", "list", "--event", name]);
        async move {
            let out = c.output().await.expect("audit list");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    // The audit trail is the server's (the positive control), and holds
    // no reuse.
    let confirmed = events("claim.confirmed").await;
    assert!(confirmed.contains("claim.confirmed"), "{confirmed}");
    let reused = events("refresh.reused").await;
    assert!(!reused.contains("refresh.reused"), "{reused}");
}
