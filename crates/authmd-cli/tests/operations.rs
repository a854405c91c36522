//! Operating authmd (issue 17), against the real binary: the log in JSON
//! with one access line per request, metrics on a listener of their own, a
//! backup taken under registration load and restored into a fresh server,
//! and `kill -9` under registration load on SQLite and PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)] // not every helper is used here
mod common;
use common::{authmd, free_port};

/// A running `authmd serve`, its stderr in `log`.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(dir: &Path, env: &[(&str, String)]) -> Server {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let child = authmd(dir)
            .arg("serve")
            .env("AUTHMD_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHMD_RATE_LIMITS_ENABLED", "false")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn authmd serve");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", server.base)).await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "server did not become ready: {}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers anonymously: `(registration id, key)`.
async fn register(http: &reqwest::Client, base: &str) -> Option<(String, String)> {
    let r = http
        .post(format!("{base}/agent/auth"))
        .header("content-type", "application/json")
        .body(r#"{"type":"anonymous","requested_credential_type":"api_key"}"#)
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some((
        v["registration_id"].as_str()?.to_owned(),
        v["credential"].as_str()?.to_owned(),
    ))
}

async fn whoami(http: &reqwest::Client, base: &str, key: &str) -> (u16, Value) {
    let r = http
        .get(format!("{base}/api/whoami"))
        .bearer_auth(key)
        .send()
        .await
        .expect("whoami");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `[log] format = "json"`: every line is a JSON object, never a colour
/// code (stderr is a file); each request has one access line with its
/// route template and request id; no issued key appears. `[metrics]
/// listen` serves Prometheus text without a token.
#[tokio::test]
async fn json_logs_with_access_lines_and_a_metrics_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_port = free_port();
    let mut server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_LOG_FORMAT", "json".to_owned()),
            ("AUTHMD_LOG_LEVEL", "info".to_owned()),
            ("AUTHMD_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}")),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/agent/auth", server.base))
        .header("content-type", "application/json")
        .header("x-request-id", "ops-register-1")
        .body(r#"{"type":"anonymous","requested_credential_type":"api_key"}"#)
        .send()
        .await
        .expect("register");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("ops-register-1")
    );
    let v: Value = r.json().await.expect("json");
    let key = v["credential"].as_str().unwrap_or_default().to_owned();
    let reg = v["registration_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(whoami(&http, &server.base, &key).await.0, 200);

    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    for series in [
        "authmd_http_requests_total{route=\"/api/{*rest}\",method=\"GET\",status=\"200\"} 1",
        "authmd_http_requests_total{route=\"/agent/auth\",method=\"POST\",status=\"200\"} 1",
        "authmd_registrations_total{flow=\"anonymous\",outcome=\"created\"} 1",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }

    server.stop();
    let log = server.log_text();
    assert!(!log.contains('\u{1b}'), "no colour codes in a file:\n{log}");
    assert!(!log.contains(&key), "the key was logged:\n{log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "authmd::access")
        .collect();
    let registered = access
        .iter()
        .find(|l| l["fields"]["request_id"] == "ops-register-1")
        .unwrap_or_else(|| panic!("no access line for the registration: {access:#?}"));
    assert_eq!(registered["fields"]["route"], "/agent/auth");
    assert_eq!(registered["fields"]["method"], "POST");
    assert_eq!(registered["fields"]["status"], 200);
    assert_eq!(registered["fields"]["registration_id"], reg.as_str());
    assert!(registered["fields"]["latency_ms"].is_number());
    let whoami_line = access
        .iter()
        .find(|l| l["fields"]["route"] == "/api/{*rest}")
        .unwrap_or_else(|| panic!("no access line for whoami: {access:#?}"));
    assert_eq!(whoami_line["fields"]["registration_id"], reg.as_str());
}

/// `authmd backup --to FILE` while registrations pour in: a fresh server on
/// the copy knows every registration acknowledged before the backup began,
/// and their keys work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data").join("authmd.db");
    let env = [("AUTHMD_DATABASE_URL", format!("sqlite://{}", db.display()))];
    let server = Server::start(dir.path(), &env).await;
    let http = reqwest::Client::new();

    let acknowledged: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (http, base, acked, stop) = (
            http.clone(),
            server.base.clone(),
            Arc::clone(&acknowledged),
            Arc::clone(&stop),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((reg, key)) = register(&http, &base).await {
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push((
                        Instant::now(),
                        reg,
                        key,
                    ));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let began = Instant::now();
    let backup = dir.path().join("backup.db");
    let out = {
        let (dir, backup, env) = (dir.path().to_owned(), backup.clone(), env.clone());
        tokio::task::spawn_blocking(move || {
            authmd(&dir)
                .args(["backup", "--to"])
                .arg(&backup)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .output()
                .expect("run backup")
        })
        .await
        .expect("join")
    };
    assert!(
        out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    drop(server);

    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let before: Vec<_> = acknowledged.iter().filter(|(at, ..)| *at < began).collect();
    let after = acknowledged.len() - before.len();
    assert!(
        before.len() >= 10 && after > 0,
        "load before and during the backup: {} before, {after} after",
        before.len()
    );

    // A backup never overwrites.
    let again = authmd(dir.path())
        .args(["backup", "--to"])
        .arg(&backup)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run backup");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    // Restore: a fresh server in another directory, on the copy.
    let restored_dir = tempfile::tempdir().expect("tempdir");
    let restored = restored_dir.path().join("restored.db");
    std::fs::copy(&backup, &restored).expect("copy backup");
    let server = Server::start(
        restored_dir.path(),
        &[(
            "AUTHMD_DATABASE_URL",
            format!("sqlite://{}", restored.display()),
        )],
    )
    .await;
    for (_, reg, key) in &before {
        let (status, body) = whoami(&http, &server.base, key).await;
        assert_eq!(status, 200, "{reg} lost: {body}");
        assert_eq!(body["registration_id"], reg.as_str());
    }
}

/// PostgreSQL is backed up with pg_dump: the command says so.
#[test]
fn backup_of_postgres_points_to_pg_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = authmd(dir.path())
        .args(["backup", "--to", "x.db"])
        .env(
            "AUTHMD_DATABASE_URL",
            "postgres://authmd@127.0.0.1:1/authmd",
        )
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg_dump"), "{err}");
}

/// Registrations answered 200: when, the id, the key.
type Acknowledged = Arc<Mutex<Vec<(Instant, String, String)>>>;

/// Registers from 4 tasks until `stop`; every 200 is recorded.
fn registration_load(
    http: &reqwest::Client,
    base: &str,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> (Acknowledged, Vec<tokio::task::JoinHandle<()>>) {
    let acknowledged: Acknowledged = Arc::default();
    let tasks = (0..4)
        .map(|_| {
            let (http, base, acked, stop) = (
                http.clone(),
                base.to_owned(),
                Arc::clone(&acknowledged),
                Arc::clone(stop),
            );
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some((reg, key)) = register(&http, &base).await {
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push((
                            Instant::now(),
                            reg,
                            key,
                        ));
                    }
                }
            })
        })
        .collect();
    (acknowledged, tasks)
}

/// `kill -9` in the middle of a registration load; after a restart on
/// the same database, every registration that was answered 200 exists and
/// its key works.
async fn killed_under_load_keeps_every_acknowledged_registration(
    dir: &Path,
    env: &[(&str, String)],
) {
    let mut server = Server::start(dir, env).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acknowledged, load) = registration_load(&http, &server.base, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = server.child.kill(); // SIGKILL
    let _ = server.child.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in load {
        let _ = t.await;
    }
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        acknowledged.len() >= 10,
        "only {} registrations before the kill",
        acknowledged.len()
    );
    drop(server);

    let server = Server::start(dir, env).await;
    for (_, reg, key) in &acknowledged {
        let (status, body) = whoami(&http, &server.base, key).await;
        assert_eq!(
            status, 200,
            "{reg}, answered 200 before the kill, is lost: {body}"
        );
        assert_eq!(body["registration_id"], reg.as_str());
    }
    eprintln!(
        "{} acknowledged registrations survived kill -9",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_registration_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("authmd.db");
    killed_under_load_keeps_every_acknowledged_registration(
        dir.path(),
        &[("AUTHMD_DATABASE_URL", format!("sqlite://{}", db.display()))],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    authmd_no_postgres,
    ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
)]
async fn kill_9_under_load_loses_no_acknowledged_registration_on_postgres() {
    let admin = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
    let name = format!("authmd_kill_{}", std::process::id());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at TEST_POSTGRES_URL");
    tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client.batch_execute(&sql).await.expect("create database");
    }
    let mut url = url::Url::parse(&admin).expect("URL");
    url.set_path(&format!("/{name}"));
    let dir = tempfile::tempdir().expect("tempdir");
    killed_under_load_keeps_every_acknowledged_registration(
        dir.path(),
        &[("AUTHMD_DATABASE_URL", url.to_string())],
    )
    .await;
    let _ = client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}
