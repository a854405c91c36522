//! How a newcomer starts the binary: development mode, the ready file that
//! scripts wait for, and `check-config` on the shipped example.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{authmd, free_port};

/// Waits for `path` to appear while `child` runs; its contents.
fn wait_for_file(path: &Path, child: &mut std::process::Child) -> String {
    let started = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the server exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no ready file after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, as `kill PID` in a shell: a graceful shutdown.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `serve --dev`: no rate limit (the sixth anonymous registration from one
/// address in an hour is not refused), and the ready file holds the URL
/// once the server answers, and is gone after a graceful shutdown.
#[tokio::test]
async fn dev_mode_has_no_rate_limits_and_announces_readiness() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let ready = dir.path().join("server.ready");
    std::fs::write(&ready, "stale\n").expect("write a stale ready file");
    let mut child = authmd(dir.path())
        .args(["serve", "--dev", "--ready-file", "server.ready"])
        .env("AUTHMD_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // The stale file is removed before anything else; wait for the new one.
    let started = Instant::now();
    let url = loop {
        let text = wait_for_file(&ready, &mut child);
        if text != "stale\n" {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stale file kept"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(url, format!("http://127.0.0.1:{port}\n"));

    let http = reqwest::Client::new();
    for i in 0..8 {
        let r = http
            .post(format!("{}/agent/auth", url.trim()))
            .json(&serde_json::json!({"type": "anonymous", "requested_credential_type": "api_key"}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status(), 200, "registration {i} in dev mode");
    }
    terminate(&mut child);
    assert!(!ready.exists(), "the ready file outlived the server");
}

/// `--dev` with a listener other machines can reach is refused before
/// anything is opened, naming the key.
#[test]
fn dev_mode_refuses_a_reachable_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = authmd(dir.path())
        .args(["serve", "--dev"])
        .env("AUTHMD_LISTEN", format!("0.0.0.0:{}", free_port()))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`listen`") && err.contains("loopback"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing is created");
}

fn example_config() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../authmd.example.toml")
}

/// The example configuration as shipped is the defaults: valid, no
/// warnings, no admin API, no SMTP.
#[test]
fn the_example_configuration_is_safe_as_shipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = authmd(dir.path())
        .args(["check-config", "--config"])
        .arg(example_config())
        .output()
        .expect("run");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("configuration is valid\n"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// A placeholder secret is valid but warned about, naming the key.
#[test]
fn check_config_warns_about_placeholder_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = authmd(dir.path())
        .arg("check-config")
        .env("AUTHMD_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env(
            "AUTHMD_ADMIN_TOKEN",
            "replace-me-with-openssl-rand-hex-32-output-0000",
        )
        .env(
            "AUTHMD_SERVER_SECRET_KEY",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        )
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: admin.token looks like a placeholder"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: server.secret_key looks like a placeholder"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 warning(s)"));
}

/// `--config` belongs to the commands that read the server configuration:
/// before or after the command, and never on `agent`.
#[test]
fn config_is_read_by_server_commands_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("authmd.toml");
    std::fs::write(&file, "issuer = \"https://auth.example.com\"\n").expect("write");
    for args in [
        vec!["check-config", "--config", "authmd.toml"],
        vec!["--config", "authmd.toml", "check-config"],
    ] {
        let out = authmd(dir.path()).args(&args).output().expect("run");
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("https://auth.example.com/auth.md"));
    }
    let out = authmd(dir.path())
        .args(["check-config"])
        .env("AUTHMD_CONFIG", "authmd.toml")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("https://auth.example.com/auth.md"));
    let out = authmd(dir.path())
        .args(["agent", "status", "--config", "authmd.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "agent takes no --config");
}
