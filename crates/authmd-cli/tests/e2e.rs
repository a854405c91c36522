//! The three roles as three real processes on loopback: `authmd serve`
//! (mail through a real SMTP server, mailcrab), `authmd provider serve`,
//! and the `authmd agent` CLI. A person's part (reading the email, pressing
//! "Show my code" on the claim page) is played over HTTP.
//!
//! Each flow prints the time from a cold `authmd agent register` to the
//! first successful API call (`cargo test -p authmd-cli --test e2e --
//! --nocapture`); the times include starting the agent process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

mod common;
use common::free_port;

#[path = "../../authmd-client/tests/standin/mod.rs"]
mod standin;

/// The same three roles in the current dialect (docs/protocol.md §20).
#[path = "e2e/current.rs"]
mod current;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};

/// The binary with a clean environment, killed when dropped.
fn authmd(dir: &Path) -> Command {
    let mut c = Command::from(common::authmd(dir));
    c.kill_on_drop(true);
    c
}

async fn wait_for(url: &str) {
    let started = Instant::now();
    loop {
        if let Ok(r) = reqwest::get(url).await
            && r.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct World {
    dir: tempfile::TempDir,
    base: String,
    provider: String,
    mail: mailcrab::TestMailServerHandle,
    /// The dialect the agent commands speak (`AUTHMD_AGENT_DIALECT`).
    dialect: &'static str,
    _server: Child,
    _provider: Child,
}

/// What an agent command printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl World {
    /// authmd in the original dialect (whatever else it publishes, the
    /// agent speaks the original one).
    async fn start() -> World {
        World::start_with("original", "").await
    }

    /// authmd with `config` (TOML, through `AUTHMD_CONFIG`), the agent
    /// speaking `dialect`.
    async fn start_with(dialect: &'static str, config: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_file = dir.path().join("authmd.toml");
        std::fs::write(&config_file, config).expect("write authmd.toml");
        let (smtp, port, provider_port) = (free_port(), free_port(), free_port());
        let mail = mailcrab::development_mail_server([127, 0, 0, 1], smtp).await;
        let provider = format!("http://127.0.0.1:{provider_port}");
        let base = format!("http://127.0.0.1:{port}");

        let keys = authmd(dir.path())
            .args(["provider", "keys", "generate"])
            .env("AUTHMD_PROVIDER_DIR", dir.path().join("provider"))
            .output()
            .await
            .expect("keys generate");
        assert!(keys.status.success(), "{keys:?}");
        let provider_child = authmd(dir.path())
            .args(["provider", "serve"])
            .env("AUTHMD_PROVIDER_DIR", dir.path().join("provider"))
            .env("AUTHMD_PROVIDER_ISSUER", &provider)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn provider");
        let server = authmd(dir.path())
            .arg("serve")
            .env("AUTHMD_CONFIG", &config_file)
            .env("AUTHMD_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHMD_PROVIDERS", format!("[{{issuer = \"{provider}\"}}]"))
            .env("AUTHMD_MAIL_SMTP_URL", format!("smtp://127.0.0.1:{smtp}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        wait_for(&format!("{provider}/.well-known/jwks.json")).await;
        wait_for(&format!("{base}/readyz")).await;
        World {
            dir,
            base,
            provider,
            mail,
            dialect,
            _server: server,
            _provider: provider_child,
        }
    }

    fn agent_home(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// `authmd agent ARGS`.
    async fn agent(&self, args: &[&str]) -> Ran {
        let out = authmd(self.dir.path())
            .arg("agent")
            .args(args)
            .env("AUTHMD_AGENT_HOME", self.agent_home())
            // Said, not detected: the original dialect's flows (the claim
            // by email) hold whatever else authmd's metadata publishes.
            .env("AUTHMD_AGENT_DIALECT", self.dialect)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run agent");
        Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `authmd agent ARGS`, which must succeed.
    async fn agent_ok(&self, args: &[&str]) -> String {
        let r = self.agent(args).await;
        assert!(
            r.ok,
            "authmd agent {args:?} failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// `authmd agent call <base>/api/whoami`, parsed.
    async fn whoami(&self) -> Value {
        let out = self
            .agent_ok(&["call", "-f", &format!("{}/api/whoami", self.base)])
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// The provider command that mints a fresh ID-JAG for `sub`.
    fn minter(&self, sub: &str, email: &str) -> String {
        format!(
            "AUTHMD_PROVIDER_DIR='{}' AUTHMD_PROVIDER_ISSUER='{}' '{}' provider mint --sub {sub} --email {email} --aud {} --platform e2e --context run-1",
            self.dir.path().join("provider").display(),
            self.provider,
            env!("CARGO_BIN_EXE_authmd"),
            self.base
        )
    }

    /// `authmd provider ARGS`, which must succeed.
    async fn provider(&self, args: &[&str]) -> String {
        let out = authmd(self.dir.path())
            .arg("provider")
            .args(args)
            .env("AUTHMD_PROVIDER_DIR", self.dir.path().join("provider"))
            .env("AUTHMD_PROVIDER_ISSUER", &self.provider)
            .output()
            .await
            .expect("run provider");
        assert!(out.status.success(), "provider {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Plays the user: waits for the email to `to`, opens the link, presses
    /// "Show my code" and reads the code off the page.
    async fn user_reads_code(&mut self, to: &str) -> String {
        let message = tokio::time::timeout(Duration::from_secs(15), self.mail.rx.recv())
            .await
            .expect("a claim email within 15 s")
            .expect("message");
        let message = serde_json::to_value(&message).expect("message as JSON");
        assert!(message["to"].to_string().contains(to), "{message}");
        let text = message["text"].as_str().unwrap_or_default();
        let link = text
            .split_whitespace()
            .find(|w| w.starts_with(&format!("{}/agent/auth/claim/view?token=", self.base)))
            .unwrap_or_else(|| panic!("no link in {text}"));
        let http = reqwest::Client::new();
        let page = http
            .get(link)
            .send()
            .await
            .expect("open link")
            .text()
            .await
            .expect("page");
        assert!(page.contains("Show my code"), "{page}");
        // The form as the page has it.
        let token = between(&page, "name=\"token\" value=\"", "\"").expect("token field");
        let shown = http
            .post(format!("{}/agent/auth/claim/view", self.base))
            .form(&[("token", token.as_str()), ("action", "show")])
            .send()
            .await
            .expect("press show")
            .text()
            .await
            .expect("page");
        let code = between(&shown, "id=\"otp\"", "</")
            .and_then(|e| e.split('>').nth(1).map(str::to_owned))
            .unwrap_or_else(|| panic!("a code on the page: {shown}"));
        assert_eq!(code.len(), 6, "{code}");
        assert!(!text.contains(&code), "the email never holds the code");
        code
    }

    fn kept(&self) -> Value {
        let path = self.agent_home().join("credentials.json");
        serde_json::from_slice(&std::fs::read(path).expect("credentials.json")).expect("JSON")
    }
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(s[from..from + len].to_owned())
}

fn report(flow: &str, d: Duration) {
    eprintln!(
        "e2e timing: {flow}: cold `authmd agent register` to first successful API call: {} ms",
        d.as_millis()
    );
}

fn scopes(whoami: &Value) -> Vec<&str> {
    whoami["scopes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn anonymous_start_then_the_user_claims_through_smtp() {
    let mut w = World::start().await;
    let api = format!("{}/api/whoami", w.base);

    let started = Instant::now();
    let out = w.agent_ok(&["register", &api, "--anonymous"]).await;
    let me = w.whoami().await;
    report("anonymous start", started.elapsed());
    assert!(out.contains("registered with"), "{out}");
    assert_eq!(me["registration_type"], "anonymous");
    assert_eq!(scopes(&me), ["api.read"]);
    assert!(me["user"].is_null());

    // The secret stays out of what the agent prints, and in a private file.
    let kept = w.kept();
    let entry = &kept["issuers"][&w.base];
    let secret = entry["access"]["value"].as_str().expect("kept secret");
    assert!(!out.contains(secret), "register printed the secret");
    let status = w.agent_ok(&["status"]).await;
    assert!(!status.contains(secret), "{status}");
    assert!(!w.agent_ok(&["status", "--json"]).await.contains(secret));
    assert!(
        w.agent_ok(&["status", "--show-secrets"])
            .await
            .contains(secret)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.agent_home().join("credentials.json"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The credential goes only to the service it is for.
    let elsewhere = w
        .agent(&["call", &format!("{}/agent-auth.json", w.provider)])
        .await;
    assert!(!elsewhere.ok);
    assert!(
        elsewhere.stderr.contains("no registration kept for"),
        "{}",
        elsewhere.stderr
    );

    // The claim: the user gets an email, reads the code off the page, the
    // agent completes; the same key now carries the post-claim scopes.
    let out = w.agent_ok(&["claim", "--email", "ines@example.com"]).await;
    assert!(out.contains("ines@example.com"), "{out}");
    let code = w.user_reads_code("ines@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = w.agent(&["complete", "--otp", wrong]).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("otp_invalid"), "{}", refused.stderr);
    let out = w.agent_ok(&["complete", "--otp", &code]).await;
    assert!(out.contains("claimed"), "{out}");
    let me = w.whoami().await;
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");
    assert_eq!(
        me["registration_id"], entry["registration_id"],
        "the same registration"
    );

    // Revoked by the operator: a claimed registration is not silently
    // replaced by a new, unclaimed one.
    let reg = me["registration_id"].as_str().expect("id").to_owned();
    let revoked = authmd(w.dir.path())
        .args(["registrations", "revoke", &reg])
        .output()
        .await
        .expect("revoke");
    assert!(revoked.status.success(), "{revoked:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = w.agent(&["call", &api]).await;
    assert!(!r.ok);
    assert!(r.stderr.contains("had claimed"), "{}", r.stderr);

    // Forget drops it; a call then has nothing to send.
    w.agent_ok(&["forget"]).await;
    let r = w.agent(&["call", &api]).await;
    assert!(
        !r.ok && r.stderr.contains("no registration kept"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn email_required_gives_nothing_until_the_user_claims() {
    let mut w = World::start().await;
    let api = format!("{}/api/whoami", w.base);

    let started = Instant::now();
    let out = w
        .agent_ok(&["register", &api, "--email", "olu@example.com"])
        .await;
    assert!(out.contains("no credential yet"), "{out}");
    let r = w.agent(&["call", &api]).await;
    assert!(!r.ok, "no credential before the claim");
    assert!(r.stderr.contains("complete the claim"), "{}", r.stderr);

    let code = w.user_reads_code("olu@example.com").await;
    w.agent_ok(&["complete", "--otp", &code]).await;
    let me = w.whoami().await;
    report(
        "email required (includes the user's part over HTTP)",
        started.elapsed(),
    );
    assert_eq!(me["user"]["email"], "olu@example.com");
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
}

#[tokio::test]
async fn agent_verified_with_an_id_jag_from_the_provider() {
    let w = World::start().await;
    let api = format!("{}/api/whoami", w.base);

    // From a minting command.
    let started = Instant::now();
    w.agent_ok(&[
        "register",
        &api,
        "--id-jag-command",
        &w.minter("u-ada", "ada@example.com"),
    ])
    .await;
    let me = w.whoami().await;
    report("agent verified (ID-JAG)", started.elapsed());
    assert_eq!(me["registration_type"], "agent-provider");
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(scopes(&me), ["api.read", "api.write"]);

    // From a file; an access token this time. The delegation is the same,
    // so is the registration.
    let assertion = w
        .provider(&[
            "mint",
            "--sub",
            "u-ada",
            "--email",
            "ada@example.com",
            "--aud",
            &w.base,
        ])
        .await;
    let file = w.dir.path().join("id-jag.jwt");
    std::fs::write(&file, assertion.trim()).expect("write assertion");
    let path = file.display().to_string();
    w.agent_ok(&[
        "register",
        &api,
        "--id-jag",
        &path,
        "--credential-type",
        "access_token",
    ])
    .await;
    let again = w.whoami().await;
    assert_eq!(again["registration_id"], me["registration_id"]);
    assert_eq!(again["credential_type"], "access_token");

    // The same assertion twice: a replay, refused with the protocol's code.
    let replay = w.agent(&["register", &api, "--id-jag", &path]).await;
    assert!(!replay.ok);
    assert!(
        replay.stderr.contains("replay_detected"),
        "{}",
        replay.stderr
    );
}

#[tokio::test]
async fn provider_revocation_then_the_agent_registers_again() {
    let w = World::start().await;
    let api = format!("{}/api/whoami", w.base);
    w.agent_ok(&[
        "register",
        &api,
        "--id-jag-command",
        &w.minter("u-bo", "bo@example.com"),
    ])
    .await;
    let before = w.whoami().await;
    let old_secret = w.kept()["issuers"][&w.base]["access"]["value"]
        .as_str()
        .expect("secret")
        .to_owned();

    // The provider finds revocation_uri in the service's metadata.
    let out = w
        .provider(&["revoke", "--sub", "u-bo", "--service", &api])
        .await;
    assert!(out.contains("revoked 1"), "{out}");
    let refused = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&old_secret)
        .send()
        .await
        .expect("call");
    assert_eq!(refused.status(), 401, "the old credential is dead");

    // The agent's next call meets the 401, rediscovers, mints a fresh
    // ID-JAG and registers again, then gets its answer.
    let started = Instant::now();
    let r = w.agent(&["call", "-f", &api]).await;
    let elapsed = started.elapsed();
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("registering again"), "{}", r.stderr);
    let after: Value = serde_json::from_str(&r.stdout).expect("whoami");
    assert_ne!(after["registration_id"], before["registration_id"]);
    assert_eq!(after["user"]["id"], before["user"]["id"], "the same user");
    eprintln!(
        "e2e timing: revoked call to renewed answer (401, rediscovery, mint, register, retry): {} ms",
        elapsed.as_millis()
    );

    // An anonymous registration renews itself too; an email-required one
    // cannot without its user, and says so.
    let anon = World::start().await;
    anon.agent_ok(&[
        "register",
        &format!("{}/api/whoami", anon.base),
        "--anonymous",
    ])
    .await;
    let first = anon.whoami().await;
    let reg = first["registration_id"].as_str().expect("id").to_owned();
    let revoked = authmd(anon.dir.path())
        .args(["registrations", "revoke", &reg, "--reason", "e2e"])
        .output()
        .await
        .expect("revoke");
    assert!(revoked.status.success(), "{revoked:?}");
    // Another process revoked it: the server learns within its poll
    // interval (250 ms by default).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let renewed = anon.whoami().await;
    assert_ne!(renewed["registration_id"], first["registration_id"]);
}

/// RFC 7009 from the command line: `authmd agent revoke` ends the kept
/// credential at the service (found through its metadata's
/// `revocation_endpoint`) and forgets the registration; the key is refused
/// afterwards, and the service recorded it.
#[tokio::test]
async fn an_agent_revokes_its_own_credential() {
    let w = World::start().await;
    let api = format!("{}/api/whoami", w.base);
    w.agent_ok(&["register", &api, "--anonymous"]).await;
    let me = w.whoami().await;
    let secret = w.kept()["issuers"][&w.base]["access"]["value"]
        .as_str()
        .expect("kept secret")
        .to_owned();

    let out = w.agent_ok(&["revoke"]).await;
    assert!(out.contains("revoked"), "{out}");
    assert!(!out.contains(&secret), "{out}");
    assert!(w.kept()["issuers"].get(&w.base).is_none(), "forgotten");
    let r = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&secret)
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), 401);
    let events = authmd(w.dir.path())
        .args(["audit", "list", "--event", "credential.revoked"])
        .output()
        .await
        .expect("audit list");
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains(me["registration_id"].as_str().expect("id")) && events.contains("\"self\""),
        "{events}"
    );
    // Nothing kept: nothing to revoke.
    let r = w.agent(&["revoke"]).await;
    assert!(
        !r.ok && r.stderr.contains("no registration kept"),
        "{}",
        r.stderr
    );
}

/// `authmd agent mcp` as a child process, with a real MCP client (rmcp)
/// on its stdin and stdout.
async fn mcp_server(dir: &Path, home: &Path, dialect: &[&str]) -> RunningService<RoleClient, ()> {
    let mut cmd = Command::from(common::authmd(dir));
    cmd.args(["agent", "mcp"])
        .args(dialect)
        .env("AUTHMD_AGENT_HOME", home)
        .kill_on_drop(true);
    let transport = TokioChildProcess::new(cmd).expect("spawn authmd agent mcp");
    ().serve(transport).await.expect("MCP initialize")
}

/// Calls a tool: (succeeded, its JSON result).
async fn tool(mcp: &RunningService<RoleClient, ()>, name: &str, args: Value) -> (bool, Value) {
    let r = mcp
        .call_tool(
            CallToolRequestParams::new(name.to_owned())
                .with_arguments(args.as_object().cloned().unwrap_or_default()),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let text = r
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (r.is_error != Some(true), v)
}

async fn tool_ok(mcp: &RunningService<RoleClient, ()>, name: &str, args: Value) -> Value {
    let (ok, v) = tool(mcp, name, args).await;
    assert!(ok, "{name} failed: {v}");
    v
}

/// The fetched body of an `authmd_fetch` result, parsed.
fn fetched_body(v: &Value) -> Value {
    serde_json::from_str(v["body"].as_str().unwrap_or_default()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_mcp_server_lists_workos_compatible_tools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mcp = mcp_server(dir.path(), &dir.path().join("agent"), &[]).await;
    let tools = mcp.list_all_tools().await.expect("tools/list");
    let args = |name: &str| -> Vec<String> {
        let t = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"));
        let mut v: Vec<String> = t.input_schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    // The argument names of WorkOS's agent client (dialect-latest.md §6).
    assert_eq!(
        args("authmd_authenticate"),
        ["email", "force_reregister", "id_jag", "issuer", "resource"]
    );
    assert_eq!(
        args("authmd_complete_claim"),
        ["issuer", "resource", "user_code"]
    );
    assert_eq!(
        args("authmd_fetch"),
        ["body", "headers", "issuer", "method", "resource", "url"]
    );
    assert_eq!(args("authmd_status"), ["issuer"]);
    assert_eq!(args("authmd_revoke"), ["issuer"]);
    // A failure carries a code and a sentence to act on.
    let (ok, v) = tool(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": "http://127.0.0.1:9"}),
    )
    .await;
    assert!(!ok);
    assert_eq!(v["error"], "invalid_request");
    assert!(
        v["advice"].as_str().unwrap_or_default().contains("6-digit"),
        "{v}"
    );
    mcp.cancel().await.expect("close");
}

/// Item 4 of the issue, original dialect: the MCP server against a running
/// authmd; the user's part through real SMTP and the claim page.
#[tokio::test]
async fn the_mcp_server_against_authmd_anonymous_then_claimed() {
    let mut w = World::start().await;
    let api = format!("{}/api/whoami", w.base);
    let mcp = mcp_server(w.dir.path(), &w.agent_home(), &["--dialect", "original"]).await;
    assert!(mcp.list_all_tools().await.expect("tools").len() >= 5);

    let out = tool_ok(&mcp, "authmd_authenticate", json!({"issuer": w.base})).await;
    assert_eq!(out["status"], "authenticated", "{out}");
    assert_eq!(out["dialect"], "original");
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": w.base, "url": api})).await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(scopes(&fetched_body(&fetched)), ["api.read"]);
    // Never to another origin.
    let (ok, v) = tool(
        &mcp,
        "authmd_fetch",
        json!({"issuer": w.base, "url": format!("{}/agent-auth.json", w.provider)}),
    )
    .await;
    assert!(!ok);
    assert_eq!(v["error"], "credential_origin_mismatch", "{v}");

    // The claim: the email goes out, the user reads the code off the page.
    let started = tool_ok(
        &mcp,
        "authmd_authenticate",
        json!({"issuer": w.base, "email": "ines@example.com"}),
    )
    .await;
    assert!(
        started["instructions"]
            .as_str()
            .unwrap_or_default()
            .contains("ines@example.com"),
        "{started}"
    );
    let code = w.user_reads_code("ines@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (ok, v) = tool(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": w.base, "user_code": wrong}),
    )
    .await;
    assert!(!ok);
    assert_eq!(v["error"], "otp_invalid", "{v}");
    assert!(
        v["advice"].as_str().unwrap_or_default().contains("6-digit"),
        "{v}"
    );
    let done = tool_ok(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": w.base, "user_code": code}),
    )
    .await;
    assert_eq!(done["claimed"], true, "{done}");
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": w.base, "url": api})).await;
    let me = fetched_body(&fetched);
    assert_eq!(scopes(&me), ["api.read", "api.write"]);
    assert_eq!(me["user"]["email"], "ines@example.com");

    // Status holds no secret; the CLI sees what the MCP server kept.
    let status = tool_ok(&mcp, "authmd_status", json!({})).await;
    let secret = w.kept()["issuers"][&w.base]["access"]["value"]
        .as_str()
        .expect("kept")
        .to_owned();
    assert!(!status.to_string().contains(&secret), "{status}");
    assert!(w.agent_ok(&["status"]).await.contains(&w.base));
    let revoked = tool_ok(&mcp, "authmd_revoke", json!({"issuer": w.base})).await;
    assert_eq!(revoked["revoked"], true);
    let r = reqwest::Client::new()
        .get(&api)
        .bearer_auth(&secret)
        .send()
        .await
        .expect("call");
    assert_eq!(r.status(), 401);
    mcp.cancel().await.expect("close");
}

/// Item 4 and 5, current dialect: the MCP server against the stand-in
/// service (dialect-latest.md §2–§3 shapes).
#[tokio::test]
async fn the_mcp_server_against_a_current_dialect_service() {
    let s = standin::StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mcp = mcp_server(dir.path(), &dir.path().join("agent"), &[]).await;
    let api = s.api();

    let out = tool_ok(&mcp, "authmd_authenticate", json!({"issuer": s.base})).await;
    assert_eq!(
        (out["status"].clone(), out["dialect"].clone()),
        (json!("authenticated"), json!("current"))
    );
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": s.base, "url": api})).await;
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched_body(&fetched)["scopes"], json!(["api.read"]));

    let started = tool_ok(
        &mcp,
        "authmd_authenticate",
        json!({"issuer": s.base, "email": "ines@example.com"}),
    )
    .await;
    let uri = started["claim"]["verification_uri"]
        .as_str()
        .expect("verification_uri")
        .to_owned();
    let (ok, v) = tool(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": s.base, "user_code": "123456"}),
    )
    .await;
    assert!(!ok);
    assert_eq!(v["error"], "claim_not_confirmed", "{v}");
    assert_eq!(v["status"], 409);
    let code = s.user_confirms(&uri, "ines@example.com").await;
    let done = tool_ok(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": s.base, "user_code": code}),
    )
    .await;
    assert_eq!(done["scopes"], json!(["api.read", "api.write"]));
    let fetched = tool_ok(&mcp, "authmd_fetch", json!({"issuer": s.base, "url": api})).await;
    let body = fetched_body(&fetched);
    assert_eq!(body["scopes"], json!(["api.read", "api.write"]));
    assert_eq!(body["email"], "ines@example.com");

    let status = tool_ok(&mcp, "authmd_status", json!({"issuer": s.base}))
        .await
        .to_string();
    for secret in ["art_", "at_0", "clm_", "eyJ"] {
        assert!(!status.contains(secret), "{secret} in {status}");
    }
    tool_ok(&mcp, "authmd_revoke", json!({"issuer": s.base})).await;
    mcp.cancel().await.expect("close");
}

/// Item 5: `authmd agent` against the stand-in service of the current
/// dialect, every step a process.
#[tokio::test]
async fn the_cli_against_a_current_dialect_service() {
    let s = standin::StandIn::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agent");
    let agent = |args: Vec<String>| {
        let mut c = authmd(dir.path());
        c.arg("agent")
            .args(args)
            .env("AUTHMD_AGENT_HOME", &home)
            .stdin(Stdio::null());
        async move {
            let out = c.output().await.expect("run agent");
            Ran {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };
    let ok = |r: Ran| {
        assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
        r
    };
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let api = s.api();

    let d = ok(agent(v(&["discover", &api])).await);
    assert!(d.stdout.contains("dialect:       current"), "{}", d.stdout);
    let forced = agent(v(&["discover", &api, "--dialect", "original"])).await;
    assert!(
        !forced.ok && forced.stderr.contains("original dialect"),
        "{}",
        forced.stderr
    );

    ok(agent(v(&["register", &api, "--anonymous"])).await);
    let me: Value =
        serde_json::from_str(&ok(agent(v(&["call", "-f", &api])).await).stdout).expect("json");
    assert_eq!(me["scopes"], json!(["api.read"]));

    let started = ok(agent(v(&["claim", "--email", "ines@example.com"])).await);
    let uri = started
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{}/login?", s.base)))
        .unwrap_or_else(|| panic!("a link in {}", started.stdout))
        .to_owned();
    let code = s.user_confirms(&uri, "ines@example.com").await;
    let done = ok(agent(v(&["complete", "--otp", &code])).await);
    assert!(
        done.stdout.contains("api.read api.write"),
        "{}",
        done.stdout
    );
    let me: Value =
        serde_json::from_str(&ok(agent(v(&["call", "-f", &api])).await).stdout).expect("json");
    assert_eq!(me["scopes"], json!(["api.read", "api.write"]));

    // The access token and the assertion stop working: the refresh token
    // (kept in the store since the claim) renews, in a new process.
    s.with(|w| {
        w.drop_access_tokens();
        w.drop_assertions();
    });
    let r = ok(agent(v(&["call", "-f", &api])).await);
    assert!(r.stderr.contains("refresh token"), "{}", r.stderr);

    let status = ok(agent(v(&["status", "--json"])).await).stdout;
    assert!(
        !status.contains("art_") && !status.contains("at_0"),
        "{status}"
    );
    assert!(status.contains("\"dialect\": \"current\""), "{status}");
    ok(agent(v(&["revoke"])).await);
    let r = agent(v(&["call", &api])).await;
    assert!(
        !r.ok && r.stderr.contains("no registration kept"),
        "{}",
        r.stderr
    );
}

/// A service that answers its refusals as `{code, message}` (hosted
/// AuthKit, dialect-latest.md §6, §8.4): the code is acted on, and the
/// defect is a warning, on stderr and in the MCP result.
#[tokio::test]
async fn a_code_message_refusal_is_read_with_a_warning() {
    let s = standin::StandIn::start_with(standin::Defects {
        code_envelope: true,
        ..standin::Defects::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agent");
    let agent = |args: &[&str]| {
        let mut c = authmd(dir.path());
        c.arg("agent")
            .args(args)
            .env("AUTHMD_AGENT_HOME", &home)
            .stdin(Stdio::null());
        async move { c.output().await.expect("run agent") }
    };
    let api = s.api();
    let r = agent(&["register", &api, "--anonymous"]).await;
    assert!(r.status.success(), "{r:?}");
    let r = agent(&["claim", "--email", "ines@example.com"]).await;
    assert!(r.status.success(), "{r:?}");
    let r = agent(&["complete", "--otp", "123456"]).await;
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.contains("claim_not_confirmed")
            && stderr.contains("authmd: warning:")
            && stderr.contains("{code, message}"),
        "{stderr}"
    );

    let mcp = mcp_server(dir.path(), &home, &[]).await;
    let (ok, v) = tool(
        &mcp,
        "authmd_complete_claim",
        json!({"issuer": s.base, "user_code": "123456"}),
    )
    .await;
    assert!(!ok);
    assert_eq!(v["error"], "claim_not_confirmed", "{v}");
    assert!(
        v["advice"].as_str().unwrap_or_default().contains("confirm"),
        "{v}"
    );
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap_or_default()
            .contains("{code, message}"),
        "{v}"
    );
    mcp.cancel().await.expect("close");
}

/// Two `authmd agent` processes registering at the same moment, each with
/// its own service, into one store: both registrations are kept.
#[tokio::test]
async fn two_agent_processes_at_once_keep_both_registrations() {
    let (a, b) = (
        standin::StandIn::start().await,
        standin::StandIn::start().await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("agent");
    let register = |api: String| {
        let mut c = authmd(dir.path());
        c.args(["agent", "register", &api, "--anonymous"])
            .env("AUTHMD_AGENT_HOME", &home)
            .stdin(Stdio::null());
        async move { c.output().await.expect("run agent") }
    };
    let (ra, rb) = tokio::join!(register(a.api()), register(b.api()));
    assert!(ra.status.success() && rb.status.success(), "{ra:?}\n{rb:?}");
    let status = authmd(dir.path())
        .args(["agent", "status", "--json"])
        .env("AUTHMD_AGENT_HOME", &home)
        .output()
        .await
        .expect("status");
    let entries: Value = serde_json::from_slice(&status.stdout).expect("json");
    let issuers: Vec<&str> = entries
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["issuer"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        issuers.contains(&a.base.as_str()) && issuers.contains(&b.base.as_str()),
        "{entries}"
    );
}
