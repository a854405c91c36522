//! `authmd serve`'s listeners as clients meet them, on real sockets against
//! the real binary: slow and idle clients, the connection cap, shutdown with
//! a stuck client (PROTOCOL-independent hardening); TLS on both listeners
//! and its reload on SIGHUP; the production guard.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(dead_code)] // not every helper is used here
mod common;
use common::{authmd, free_port};

/// A running `authmd serve`, its stderr in `log`.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// Starts on a free port with `env`; `ready` is the URL polled (plain
    /// `/readyz` unless TLS is on, when the caller waits itself).
    async fn start(dir: &Path, env: &[(&str, String)]) -> Server {
        let server = Server::spawn(dir, env);
        let base = format!("http://127.0.0.1:{}", server.port);
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
                && r.status() == 200
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server did not become ready: {}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn spawn(dir: &Path, env: &[(&str, String)]) -> Server {
        Server::spawn_on(dir, free_port(), env)
    }

    fn spawn_on(dir: &Path, port: u16, env: &[(&str, String)]) -> Server {
        let log = dir.join(format!("serve-{port}.log"));
        let child = authmd(dir)
            .arg("serve")
            .env("AUTHMD_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHMD_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn authmd serve");
        Server { child, port, log }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the server closes the connection; `None` if it is still
/// open after `limit`. A reset counts as closed.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

/// Reads one whole response head (and whatever body came with it) within
/// `limit`; `None` if it did not come.
async fn response_within(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    match read {
        Ok(()) if !got.is_empty() => Some(String::from_utf8_lossy(&got).into_owned()),
        _ => None,
    }
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// Half a request line, or nothing at all, is closed after
/// `server.header_read_timeout`; so is a head that stalls after an idle
/// keep-alive spell.
#[tokio::test]
async fn half_a_request_line_or_nothing_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_SERVER_HEADER_READ_TIMEOUT", "1s".into()),
            ("AUTHMD_SERVER_IDLE_TIMEOUT", "30s".into()),
        ],
    )
    .await;
    let mut nothing = connect(&server.addr()).await;
    let mut half = connect(&server.addr()).await;
    half.write_all(b"GET /hea").await.expect("write");
    let mut stalled = connect(&server.addr()).await;
    stalled.write_all(HEALTH).await.expect("write");
    assert!(
        response_within(&mut stalled, Duration::from_secs(5))
            .await
            .is_some()
    );
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nho")
        .await
        .expect("write");

    for (name, s) in [
        ("nothing", &mut nothing),
        ("half", &mut half),
        ("stalled", &mut stalled),
    ] {
        let got = closed_within(s, Duration::from_secs(8)).await;
        assert_eq!(
            got.as_deref(),
            Some(&b""[..]),
            "{name}: closed without an answer"
        );
    }
}

/// A keep-alive connection that stops sending requests is closed after
/// `server.idle_timeout`; one that keeps sending them is not.
#[tokio::test]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_are_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_SERVER_HEADER_READ_TIMEOUT", "30s".into()),
            ("AUTHMD_SERVER_IDLE_TIMEOUT", "1500ms".into()),
        ],
    )
    .await;
    let mut idle = connect(&server.addr()).await;
    idle.write_all(HEALTH).await.expect("write");
    let first = response_within(&mut idle, Duration::from_secs(5)).await;
    assert!(first.is_some_and(|r| r.starts_with("HTTP/1.1 200")));

    let mut busy = connect(&server.addr()).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        busy.write_all(HEALTH).await.expect("write");
        let r = response_within(&mut busy, Duration::from_secs(5)).await;
        assert!(
            r.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
            "busy connection kept"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Long since past its idle timeout.
    assert_eq!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(&b""[..])
    );
}

/// A body that trickles in is answered `408` at `server.request_timeout`,
/// and the connection is closed.
#[tokio::test]
async fn a_slow_body_is_cut_at_the_request_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_SERVER_REQUEST_TIMEOUT", "1s".into()),
            ("AUTHMD_SERVER_HEADER_READ_TIMEOUT", "30s".into()),
        ],
    )
    .await;
    let mut s = connect(&server.addr()).await;
    s.write_all(
        b"POST /agent/auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
    )
    .await
    .expect("write");
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let (_, ()) = tokio::join!(async {}, trickle);
    let got = closed_within(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// At the cap, new connections wait; silent and idle ones are closed to
/// make room, connections in the middle of a request are not.
#[tokio::test]
async fn the_connection_cap_holds_new_connections_and_reclaims_idle_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_SERVER_MAX_CONNECTIONS", "2".into()),
            ("AUTHMD_SERVER_HEADER_READ_TIMEOUT", "30s".into()),
            ("AUTHMD_SERVER_IDLE_TIMEOUT", "30s".into()),
        ],
    )
    .await;
    // Two connections in the middle of a request head hold both slots.
    let mut a = connect(&server.addr()).await;
    let mut b = connect(&server.addr()).await;
    a.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    b.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = connect(&server.addr()).await;
    c.write_all(HEALTH).await.expect("write");
    assert!(
        response_within(&mut c, Duration::from_millis(1500))
            .await
            .is_none(),
        "a third connection waits while two requests are in progress"
    );
    // One finishes its request: the waiting one is served.
    a.write_all(b"host: x\r\n\r\n").await.expect("write");
    assert!(
        response_within(&mut a, Duration::from_secs(5))
            .await
            .is_some()
    );
    drop(a);
    let r = response_within(&mut c, Duration::from_secs(5)).await;
    assert!(
        r.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "served once a slot freed"
    );

    // b (mid-request) and c (idle after its response) hold the slots; a
    // newcomer takes c's: an idle keep-alive connection is reclaimed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = connect(&server.addr()).await;
    d.write_all(HEALTH).await.expect("write");
    let r = response_within(&mut d, Duration::from_secs(5)).await;
    assert!(r.is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    assert_eq!(
        closed_within(&mut c, Duration::from_secs(2))
            .await
            .as_deref(),
        Some(&b""[..]),
        "the idle connection made room"
    );
    // b was never disturbed: it can still finish.
    b.write_all(b"host: x\r\n\r\n").await.expect("write");
    assert!(
        response_within(&mut b, Duration::from_secs(5))
            .await
            .is_some()
    );
}

/// SIGINT: idle connections close at once, a request in flight that
/// completes in time is answered, and a client stuck mid-request (half a
/// head, a trickling body) holds the process only until
/// `server.shutdown_timeout`.
#[tokio::test]
async fn sigint_with_stuck_clients_stops_within_the_shutdown_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(
        dir.path(),
        &[
            ("AUTHMD_SERVER_SHUTDOWN_TIMEOUT", "2s".into()),
            // Only the shutdown deadline may end the stuck clients here.
            ("AUTHMD_SERVER_HEADER_READ_TIMEOUT", "120s".into()),
            ("AUTHMD_SERVER_IDLE_TIMEOUT", "120s".into()),
            ("AUTHMD_SERVER_REQUEST_TIMEOUT", "120s".into()),
        ],
    )
    .await;
    let mut idle = connect(&server.addr()).await;
    idle.write_all(HEALTH).await.expect("write");
    assert!(
        response_within(&mut idle, Duration::from_secs(5))
            .await
            .is_some()
    );
    let mut half = connect(&server.addr()).await;
    half.write_all(b"GET /heal").await.expect("write");
    let mut slow = connect(&server.addr()).await;
    slow.write_all(
        b"POST /agent/auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
    )
    .await
    .expect("write");
    let body = br#"{"type":"anonymous","requested_credential_type":"api_key"}"#;
    let mut finishing = connect(&server.addr()).await;
    finishing
        .write_all(
            format!(
                "POST /agent/auth HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.signal("INT");
    assert_eq!(
        closed_within(&mut idle, Duration::from_secs(1))
            .await
            .as_deref(),
        Some(&b""[..]),
        "an idle connection closes at once"
    );
    // The request in flight completes and is answered.
    finishing.write_all(body).await.expect("write");
    let r = response_within(&mut finishing, Duration::from_secs(2)).await;
    assert!(
        r.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "in-flight request answered"
    );

    let status = server.exited_within(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exited cleanly: {status:?}\n{}",
        server.log_text()
    );
    assert!(
        took < Duration::from_secs(6),
        "stopped {took:?} after SIGINT"
    );
    assert!(
        server.log_text().contains("shutdown deadline reached"),
        "the deadline ended the stuck clients:\n{}",
        server.log_text()
    );
    for (name, s) in [("half", &mut half), ("slow", &mut slow)] {
        assert!(
            closed_within(s, Duration::from_secs(1)).await.is_some(),
            "{name} closed"
        );
    }
}

/// A self-signed certificate for 127.0.0.1, written to `cert.pem` and
/// `key.pem` in `dir` (replacing what is there); returns its DER.
fn write_certificate(dir: &Path) -> Vec<u8> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).expect("write key");
    generated.cert.der().to_vec()
}

/// The certificate a fresh TLS connection to `url` is shown (trusting
/// exactly `trusted`), with the response status.
async fn presented(url: &str, trusted: &[Vec<u8>], bearer: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let roots = trusted
        .iter()
        .filter_map(|der| reqwest::Certificate::from_der(der).ok());
    let client = reqwest::Client::builder()
        .tls_certs_only(roots)
        .tls_info(true)
        .build()
        .expect("client");
    let mut req = client.get(url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    let r = req.send().await.ok()?;
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)?;
    Some((r.status().as_u16(), der))
}

const ADMIN_TOKEN: &str = "listener-test-admin-token-0123456789";

/// Both listeners speak TLS with the configured files; SIGHUP makes new
/// connections see a renewed certificate, and a broken renewal keeps the
/// one in use.
#[tokio::test]
async fn tls_on_both_listeners_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_certificate(dir.path());
    let (port, admin_port) = (free_port(), free_port());
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let server = Server::spawn_on(
        dir.path(),
        port,
        &[
            ("AUTHMD_ISSUER", format!("https://127.0.0.1:{port}")),
            ("AUTHMD_SERVER_TLS_CERT_FILE", cert.clone()),
            ("AUTHMD_SERVER_TLS_KEY_FILE", key.clone()),
            ("AUTHMD_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}")),
            ("AUTHMD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("AUTHMD_ADMIN_TLS_CERT_FILE", cert),
            ("AUTHMD_ADMIN_TLS_KEY_FILE", key),
        ],
    );
    let public = format!("https://127.0.0.1:{port}/readyz");
    let admin = format!("https://127.0.0.1:{admin_port}/admin/registrations");
    let started = Instant::now();
    while presented(&public, std::slice::from_ref(&first), None)
        .await
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presented(&public, std::slice::from_ref(&first), None).await,
        Some((200, first.clone()))
    );
    assert_eq!(
        presented(&admin, std::slice::from_ref(&first), Some(ADMIN_TOKEN)).await,
        Some((200, first.clone()))
    );
    // Plain HTTP is not answered on a TLS listener.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));

    let second = write_certificate(dir.path());
    assert_ne!(first, second);
    server.signal("HUP");
    let both = [first.clone(), second.clone()];
    let started = Instant::now();
    loop {
        let p = presented(&public, &both, None).await.map(|(_, der)| der);
        let a = presented(&admin, &both, Some(ADMIN_TOKEN))
            .await
            .map(|(_, der)| der);
        if p.as_ref() == Some(&second) && a.as_ref() == Some(&second) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not reloaded: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.log_text().contains("TLS certificate reloaded"));

    // A broken renewal: logged, and the certificate in use stays.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("write");
    server.signal("HUP");
    let started = Instant::now();
    while !server.log_text().contains("TLS certificate not reloaded") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        presented(&public, &both, None).await,
        Some((200, second.clone()))
    );
    assert_eq!(
        presented(&admin, &both, Some(ADMIN_TOKEN)).await,
        Some((200, second))
    );
}

fn check_config(dir: &Path, args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    authmd(dir)
        .arg("check-config")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run check-config")
}

/// The admin API off loopback needs TLS or an explicit opt-in; unusable
/// certificate files stop the server before it serves.
#[tokio::test]
async fn a_remote_admin_bind_needs_tls_or_an_explicit_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_certificate(dir.path());
    let remote = [
        ("AUTHMD_ADMIN_LISTEN", "0.0.0.0:18081".to_owned()),
        ("AUTHMD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ];
    let out = check_config(dir.path(), &[], &remote);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.listen") && err.contains("allow_insecure_remote"),
        "{err}"
    );
    let out = authmd(dir.path())
        .arg("serve")
        .envs(remote.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2), "serve refuses it too");

    let mut opted = remote.to_vec();
    opted.push(("AUTHMD_ADMIN_ALLOW_INSECURE_REMOTE", "true".into()));
    assert!(check_config(dir.path(), &[], &opted).status.success());

    let mut with_tls = remote.to_vec();
    with_tls.push((
        "AUTHMD_ADMIN_TLS_CERT_FILE",
        dir.path().join("cert.pem").display().to_string(),
    ));
    with_tls.push((
        "AUTHMD_ADMIN_TLS_KEY_FILE",
        dir.path().join("key.pem").display().to_string(),
    ));
    let out = check_config(dir.path(), &[], &with_tls);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Files that do not make a certificate: named, and nothing is served.
    let broken = [
        (
            "AUTHMD_SERVER_TLS_CERT_FILE",
            dir.path().join("key.pem").display().to_string(),
        ),
        (
            "AUTHMD_SERVER_TLS_KEY_FILE",
            dir.path().join("key.pem").display().to_string(),
        ),
    ];
    let out = check_config(dir.path(), &[], &broken);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_cert_file"));
    let mut server = Server::spawn(dir.path(), &broken);
    let status = server.exited_within(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    assert!(
        server.log_text().contains("server.tls_cert_file"),
        "{}",
        server.log_text()
    );
}

/// On a public issuer, `serve` warns about each setting that is wrong for
/// production and `check-config --production` fails on them; a loopback
/// issuer (development) is left alone.
#[tokio::test]
async fn the_production_guard_warns_at_start_and_fails_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let public = [
        ("AUTHMD_ISSUER", "https://auth.example.com".to_owned()),
        ("AUTHMD_RATE_LIMITS_ENABLED", "false".to_owned()),
    ];
    let server = Server::start(dir.path(), &public).await;
    let log = server.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not ready for production"))
        .collect();
    assert_eq!(warnings.len(), 3, "{log}");
    for key in [
        "server.tls_cert_file",
        "mail.smtp_url",
        "rate_limits.enabled",
    ] {
        assert!(warnings.iter().any(|w| w.contains(key)), "{key}: {log}");
    }
    drop(server);
    let dev = Server::start(
        dir.path(),
        &[("AUTHMD_RATE_LIMITS_ENABLED", "false".to_owned())],
    )
    .await;
    assert!(
        !dev.log_text().contains("not ready for production"),
        "{}",
        dev.log_text()
    );
    // A reload signal without TLS to reload does not stop the server.
    dev.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!("http://{}/readyz", dev.addr())).await;
    assert!(
        r.is_ok_and(|r| r.status() == 200),
        "still serving after SIGHUP"
    );
    drop(dev);

    assert!(check_config(dir.path(), &[], &public).status.success());
    let out = check_config(dir.path(), &["--production"], &public);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.tls_cert_file",
        "mail.smtp_url",
        "rate_limits.enabled",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    let out = check_config(dir.path(), &["--production"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "a loopback issuer fails too"
    );

    let ready = [
        ("AUTHMD_ISSUER", "https://auth.example.com".to_owned()),
        ("AUTHMD_SERVER_TRUSTED_PROXIES", "10.0.0.1".to_owned()),
        (
            "AUTHMD_MAIL_SMTP_URL",
            "smtps://smtp.example.com:465".to_owned(),
        ),
    ];
    let out = check_config(dir.path(), &["--production"], &ready);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
