//! The `authmd` binary as users run it: a real process on a real socket.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{authmd, free_port};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(dir: &Path, port: u16) -> Server {
        Server::start_with(dir, port, &[]).await
    }

    async fn start_with(dir: &Path, port: u16, env: &[(&str, String)]) -> Server {
        let child = authmd(dir)
            .arg("serve")
            .env("AUTHMD_LISTEN", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn authmd serve");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The README's first command: no configuration at all serves discovery,
/// registers an anonymous agent whose key works, and keeps it across a
/// crash (SIGKILL) and restart.
#[tokio::test]
async fn serve_on_defaults_registers_and_survives_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(dir.path(), port).await;
    let http = reqwest::Client::new();

    let asm: Value = http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            server.base
        ))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .expect("AS metadata")
        .json()
        .await
        .expect("JSON");
    assert_eq!(asm["issuer"], server.base.as_str());
    let register_uri = asm["agent_auth"]["register_uri"]
        .as_str()
        .expect("register_uri")
        .to_owned();

    let unauthorized = http
        .get(format!("{}/api/whoami", server.base))
        .send()
        .await
        .expect("whoami");
    assert_eq!(unauthorized.status(), 401);
    let challenge = unauthorized.headers()["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.contains("resource_metadata="));

    let reg: Value = http
        .post(&register_uri)
        .json(&serde_json::json!({"type": "anonymous", "requested_credential_type": "api_key"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    let key = reg["credential"].as_str().expect("credential").to_owned();
    let whoami = |base: String, key: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/api/whoami"))
                .bearer_auth(key)
                .send()
                .await
                .expect("whoami")
        }
    };
    assert_eq!(whoami(server.base.clone(), key.clone()).await.status(), 200);
    assert!(dir.path().join("data/authmd.db").exists());

    drop(server); // SIGKILL: no graceful shutdown.
    let server = Server::start(dir.path(), port).await;
    let after = whoami(server.base.clone(), key.clone()).await;
    assert_eq!(after.status(), 200);
    let body: Value = after.json().await.expect("JSON");
    assert_eq!(body["registration_id"], reg["registration_id"]);
    drop(server);

    let out = authmd(dir.path())
        .args(["audit", "list", "--event", "registration.created"])
        .output()
        .expect("audit list");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["event"], "registration.created");
    assert_eq!(lines[0]["registration_id"], reg["registration_id"]);
    assert_eq!(lines[0]["ip"], "127.0.0.1");
}

#[test]
fn configuration_errors_name_the_key_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("authmd.toml");
    std::fs::write(&file, "[resource]\nnmae = \"typo\"\n").expect("write");
    let out = authmd(dir.path())
        .args(["--config", file.to_str().unwrap_or_default(), "serve"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resource.nmae"));

    let out = authmd(dir.path())
        .arg("check-config")
        .env("AUTHMD_TTL_OTP", "ten minutes")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ttl.otp"));

    let out = authmd(dir.path())
        .arg("check-config")
        .env("AUTHMD_ISSUER", "https://auth.example.com")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("https://auth.example.com/.well-known/oauth-authorization-server")
    );
}

#[test]
fn audit_list_refuses_unknown_event_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = authmd(dir.path())
        .args(["audit", "list", "--event", "registration.create"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("registration.created"));
}

const ADMIN_TOKEN: &str = "cli-twin-test-token-0123456789abcdef";

/// Runs `authmd <args>` in `dir` and parses its stdout as JSON.
fn cli_json(dir: &Path, args: &[&str]) -> Value {
    let out = authmd(dir).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "authmd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("authmd {args:?} printed no JSON ({e})"))
}

fn cli_lines(dir: &Path, args: &[&str]) -> Vec<Value> {
    let out = authmd(dir).args(args).output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Every operator command answers exactly what its admin API twin answers,
/// against one running server and its database.
#[tokio::test]
async fn each_operator_command_matches_its_admin_api_twin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, admin_port) = (free_port(), free_port());
    let server = Server::start_with(
        dir.path(),
        port,
        &[
            ("AUTHMD_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}")),
            ("AUTHMD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ],
    )
    .await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let http = reqwest::Client::new();
    let api = |path: &str| {
        let (http, url) = (http.clone(), format!("{admin}{path}"));
        async move {
            let r = http
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("admin API");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("JSON")
        }
    };
    let api_post = |path: &str, body: Value| {
        let (http, url) = (http.clone(), format!("{admin}{path}"));
        async move {
            http.post(url)
                .bearer_auth(ADMIN_TOKEN)
                .header("x-authmd-operator", "ops")
                .json(&body)
                .send()
                .await
                .expect("admin API")
        }
    };
    let mut regs = Vec::new();
    for _ in 0..4 {
        let r: Value = http
            .post(format!("{}/agent/auth", server.base))
            .json(&serde_json::json!({"type": "anonymous", "requested_credential_type": "api_key"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("JSON");
        regs.push(r);
    }
    let reg = |i: usize| {
        regs[i]["registration_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let d = dir.path();

    // Listings.
    assert_eq!(
        cli_json(d, &["registrations", "list", "--json"]),
        api("/admin/registrations").await
    );
    assert_eq!(
        cli_json(
            d,
            &[
                "registrations",
                "list",
                "--status",
                "unclaimed",
                "--limit",
                "2",
                "--json"
            ]
        ),
        api("/admin/registrations?status=unclaimed&limit=2").await
    );
    assert_eq!(
        cli_json(d, &["registrations", "show", &reg(0), "--json"]),
        api(&format!("/admin/registrations/{}", reg(0))).await
    );
    assert_eq!(
        cli_json(d, &["users", "list", "--json"]),
        api("/admin/users").await
    );
    assert_eq!(
        cli_json(d, &["delegations", "list", "--json"]),
        api("/admin/delegations").await
    );
    assert_eq!(
        serde_json::json!(cli_lines(
            d,
            &["audit", "list", "--event", "registration.created"]
        )),
        api("/admin/events?event=registration.created").await["items"]
    );
    let exported = http
        .get(format!("{admin}/admin/events/export"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("text");
    let exported: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(cli_lines(d, &["audit", "export"]), exported);

    // Revocations: the same report and the same audit record.
    let cli = cli_json(
        d,
        &[
            "registrations",
            "revoke",
            &reg(0),
            "--reason",
            "twin",
            "--operator",
            "ops",
            "--json",
        ],
    );
    let web: Value = api_post(
        &format!("/admin/registrations/{}/revoke", reg(1)),
        serde_json::json!({"reason": "twin"}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(cli, web);
    assert_eq!(
        cli,
        serde_json::json!({"registrations": 1, "credentials": 1})
    );
    let actions = api("/admin/events?event=operator.action").await;
    // The API's event also names its request (X-Request-Id); the CLI's has none.
    assert!(actions["items"].as_array().is_some_and(|items| {
        items
            .iter()
            .filter(|e| e["data"]["request_id"].is_string())
            .count()
            == 1
    }));
    let strip = |e: &Value| {
        let mut data = e["data"].clone();
        data.as_object_mut().map(|m| m.remove("registration_id"));
        data.as_object_mut().map(|m| m.remove("request_id"));
        data
    };
    assert_eq!(strip(&actions["items"][0]), strip(&actions["items"][1]));
    for (i, r) in [0, 1].into_iter().zip(&regs) {
        let status = http
            .get(format!("{}/api/whoami", server.base))
            .bearer_auth(r["credential"].as_str().unwrap_or_default())
            .send()
            .await
            .expect("whoami")
            .status();
        assert_eq!(status, 401, "registration {i} still works");
    }

    // Blocks: `authmd block` and `POST /admin/blocks` are twins; a blocked
    // address cannot register until `authmd unblock`.
    let cli = cli_json(
        d,
        &[
            "block",
            "email",
            "Blocked@Example.com",
            "--reason",
            "asked us to stop",
            "--json",
        ],
    );
    assert_eq!(cli, serde_json::json!({"kind": "email", "changed": true}));
    let web: Value = api_post(
        "/admin/blocks",
        serde_json::json!({"kind": "email", "email": "blocked+x@example.com"}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(web, serde_json::json!({"kind": "email", "changed": false}));
    let listed = cli_json(d, &["block", "list", "--json"]);
    assert_eq!(listed, api("/admin/blocks").await);
    assert_eq!(listed["items"][0]["email"], "blocked@example.com");
    let email_registration = |address: &str| {
        let (http, url) = (http.clone(), format!("{}/agent/auth", server.base));
        let body = serde_json::json!({
            "type": "identity_assertion", "assertion_type": "verified_email",
            "assertion": address, "requested_credential_type": "api_key",
        });
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .expect("register")
                .status()
        }
    };
    assert_eq!(email_registration("blocked@example.com").await, 403);
    let cli = cli_json(d, &["unblock", "email", "blocked@example.com", "--json"]);
    assert_eq!(cli, serde_json::json!({"kind": "email", "changed": true}));
    assert_eq!(email_registration("blocked@example.com").await, 200);
    assert_eq!(
        api("/admin/events?event=operator.action").await["items"]
            .as_array()
            .map(|a| a.iter().filter(|e| e["data"]["kind"] == "email").count()),
        Some(2),
        "block and unblock are audited"
    );

    // Revoke everything: the CLI refuses without a terminal or --yes.
    let out = authmd(d)
        .args(["revoke-all"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let refused = api_post("/admin/revoke-all", serde_json::json!({})).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(
        api("/admin/registrations?status=unclaimed").await["items"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "nothing was revoked"
    );
    let cli = cli_json(d, &["revoke-all", "--yes", "--reason", "drill", "--json"]);
    // Two anonymous ones and the email registration made after the unblock
    // (pending its claim: no credential yet).
    assert_eq!(
        cli,
        serde_json::json!({"registrations": 3, "credentials": 2})
    );
    let web: Value = api_post(
        "/admin/revoke-all",
        serde_json::json!({"confirm": "revoke-all", "reason": "drill"}),
    )
    .await
    .json()
    .await
    .expect("JSON");
    assert_eq!(
        web,
        serde_json::json!({"registrations": 0, "credentials": 0})
    );
    drop(server);
}

/// `authmd audit tail --follow` prints what the server records after it
/// started.
#[tokio::test]
async fn audit_tail_follows_the_server() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(dir.path(), port).await;
    let mut tail = authmd(dir.path())
        .args([
            "audit",
            "tail",
            "--follow",
            "--event",
            "registration.created",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let stdout = tail.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reg: Value = reqwest::Client::new()
        .post(format!("{}/agent/auth", server.base))
        .json(&serde_json::json!({"type": "anonymous", "requested_credential_type": "api_key"}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("JSON");
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tail printed the event");
    let event: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(event["event"], "registration.created");
    assert_eq!(event["registration_id"], reg["registration_id"]);
    let _ = tail.kill();
    let _ = tail.wait();
}

/// `authmd keys rotate` on the database of a running server: the server
/// publishes the new key (at its next reload, within 10 s) beside the old
/// one; `keys list` shows both, the old one replaced.
#[tokio::test]
async fn keys_rotate_reaches_the_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), free_port()).await;
    let jwks_kids = || async {
        let doc: Value = reqwest::get(format!("{}/.well-known/jwks.json", server.base))
            .await
            .expect("JWKS")
            .json()
            .await
            .expect("JSON");
        let mut kids: Vec<String> = doc["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect();
        kids.sort();
        kids
    };
    let before = jwks_kids().await;
    assert_eq!(before.len(), 1);
    let rotated = cli_json(dir.path(), &["keys", "rotate", "--json"]);
    let new = rotated["kid"].as_str().unwrap_or_default().to_owned();
    assert!(!new.is_empty() && new != before[0]);
    let mut expected = vec![before[0].clone(), new.clone()];
    expected.sort();
    let started = Instant::now();
    while jwks_kids().await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the server did not publish the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let list = cli_json(dir.path(), &["keys", "list", "--json"]);
    let list = list.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 2);
    let old = list.iter().find(|k| k["kid"] == before[0].as_str());
    assert!(old.is_some_and(|k| k["published_until"].is_string() && k["opens"] == true));
    let events = cli_lines(
        dir.path(),
        &["audit", "export", "--event", "operator.action"],
    );
    assert!(
        events.iter().any(
            |e| e["data"]["action"] == "rotate_signing_key" && e["data"]["kid"] == new.as_str()
        )
    );
}

/// The gateway as users run it: `authmd serve` with `[upstream]` in front
/// of a small API that echoes the identity assertion it receives. The
/// assertion verifies against the server's `/.well-known/jwks.json`
/// before and after `authmd keys rotate --now`; a credential registered
/// after the rotation gets an assertion from the new key.
#[tokio::test]
async fn gateway_assertions_verify_before_and_after_keys_rotate() {
    use authmd_jose::jwk::KeySet;
    use authmd_jose::{Algorithm, Compact};
    let api = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_port = api.local_addr().expect("addr").port();
    let echo = axum::Router::new().fallback(|h: axum::http::HeaderMap| async move {
        h.get("x-authmd-assertion")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned()
    });
    tokio::spawn(async move { axum::serve(api, echo).await });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        dir.path(),
        free_port(),
        &[(
            "AUTHMD_UPSTREAM_URL",
            format!("http://127.0.0.1:{api_port}"),
        )],
    )
    .await;
    let http = reqwest::Client::new();
    let register = || async {
        let r: Value = http
            .post(format!("{}/agent/auth", server.base))
            .json(&serde_json::json!({"type": "anonymous", "requested_credential_type": "api_key"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("JSON");
        r["credential"].as_str().unwrap_or_default().to_owned()
    };
    let assertion = |key: String| {
        let url = format!("{}/api/anything", server.base);
        let http = http.clone();
        async move {
            let r = http.get(url).bearer_auth(key).send().await.expect("call");
            assert_eq!(r.status(), 200);
            r.text().await.expect("body")
        }
    };
    let jwks = || async {
        reqwest::get(format!("{}/.well-known/jwks.json", server.base))
            .await
            .expect("JWKS")
            .bytes()
            .await
            .expect("bytes")
    };
    let check = |jwks: &[u8], token: &str| -> Option<String> {
        let c = Compact::parse(token, 16 * 1024).ok()?;
        let set = KeySet::parse(jwks).ok()?;
        let kid = c.header_str("kid")?;
        let alg = Algorithm::from_name(c.header_str("alg")?)?;
        let key = set.keys.iter().find(|k| k.kid == kid)?;
        key.verify(alg, c.signing_input(), &c.signature)
            .then(|| kid.to_owned())
    };
    let before = assertion(register().await).await;
    let old_kid = check(&jwks().await, &before).expect("verifies before the rotation");

    let rotated = cli_json(dir.path(), &["keys", "rotate", "--now", "--json"]);
    let new_kid = rotated["kid"].as_str().unwrap_or_default().to_owned();
    let started = Instant::now();
    loop {
        let doc = jwks().await;
        let set = KeySet::parse(&doc).expect("JWKS");
        if set.keys.iter().any(|k| k.kid == new_kid) {
            assert_eq!(
                check(&doc, &before).as_deref(),
                Some(old_kid.as_str()),
                "the old assertion verifies after the rotation"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the server did not publish the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = assertion(register().await).await;
    assert_eq!(
        check(&jwks().await, &after).as_deref(),
        Some(new_kid.as_str()),
        "a new credential's assertion comes from the new key and verifies"
    );
}
