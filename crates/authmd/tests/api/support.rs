//! Test harness: an in-process authmd on a fresh database of either backend.
//!
//! SQLite tests use a file in a temporary directory. PostgreSQL tests need
//! `TEST_POSTGRES_URL` (a server where the user may create databases, e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets its own
//! database, dropped afterwards. Without the variable the PostgreSQL half of
//! each `both_backends!` test is compiled as ignored (`build.rs` sets
//! `authmd_no_postgres`), so `cargo test` counts it as ignored with its
//! reason, never as passed; with it set, an unreachable server fails the
//! test. `REQUIRE_POSTGRES=1` (CI) turns a missing variable into failures.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use authmd::mail::MemoryMailer;
use authmd::store::Store;
use authmd::{AuthMd, Config};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident : Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            async fn run($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::Backend::Sqlite).await
            }

            // Ignored, with its reason in the test summary, when this
            // build has no PostgreSQL to test against (see build.rs).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                authmd_no_postgres,
                ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            )]
            async fn postgres() {
                run($crate::support::Backend::Postgres).await
            }
        }
    };
    // `unless CFG = "REASON";` first: both halves are ignored, with that
    // reason, when build.rs set CFG (a component this test needs is
    // missing here).
    (unless $cfg:ident = $reason:literal; $(#[$meta:meta])* async fn $name:ident($backend:ident : Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$meta])*
            async fn run($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr($cfg, ignore = $reason)]
            async fn sqlite() {
                run($crate::support::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(all($cfg, not(authmd_no_postgres)), ignore = $reason)]
            #[cfg_attr(
                authmd_no_postgres,
                ignore = "needs TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            )]
            async fn postgres() {
                run($crate::support::Backend::Postgres).await
            }
        }
    };
}

pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

/// A fresh, empty database; removed on drop.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        crate::log_capture::init();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("authmd.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let admin = postgres_url().expect(
                    "the PostgreSQL half needs TEST_POSTGRES_URL \
                     (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
                );
                let name = format!("authmd_test_{}", authmd::token::new_id("").to_lowercase());
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {e}")
                    });
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("TEST_POSTGRES_URL is a URL");
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    _dir: None,
                    pg: Some((admin, name)),
                }
            }
        }
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        let store = authmd::store::open(&self.url, 8).await.expect("open store");
        store.migrate().await.expect("migrate");
        store
    }

    /// How many rows `table` holds, read over a connection of its own:
    /// for what no store operation reports (whether the purge deleted
    /// something). `table` is the test's own constant.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match self.url.strip_prefix("sqlite://") {
            Some(path) => rusqlite::Connection::open(path)
                .and_then(|c| c.query_row(&sql, [], |r| r.get(0)))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            None => {
                let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                client
                    .query_one(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .get(0)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop may run inside a runtime; use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                        .ok()
                })
            })
            .join();
        }
    }
}

/// A free port on 127.0.0.1 (bound and released), below the kernel's
/// ephemeral range (32768 and up here): a port the kernel handed out could
/// be handed out again, to an outgoing connection of another test, before
/// the caller binds it (seen: `AddrInUse` in the browser CORS test).
pub fn free_port() -> u16 {
    use rand::RngExt;
    let mut rng = rand::rng();
    for _ in 0..100 {
        let port = rng.random_range(10_000..20_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Serves `router` on a real socket; returns its base URL.
pub async fn serve(router: Router, port: u16) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    format!("http://127.0.0.1:{port}")
}

/// Default peer address of test requests.
pub const CLIENT: [u8; 4] = [203, 0, 113, 10];
pub const CLIENT_IP: &str = "203.0.113.10";

pub fn config(toml: &str) -> Config {
    authmd::config::load_str(toml, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

pub struct TestApp {
    pub app: AuthMd,
    pub router: Router,
    pub mailer: MemoryMailer,
    pub db: Arc<TestDb>,
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

impl TestApp {
    pub async fn new(backend: Backend, toml: &str) -> TestApp {
        let db = Arc::new(TestDb::new(backend).await);
        TestApp::on(db, toml).await
    }

    /// Another replica on the same database.
    pub async fn on(db: Arc<TestDb>, toml: &str) -> TestApp {
        let mailer = MemoryMailer::new();
        TestApp::with_mailer(db, toml, Arc::new(mailer.clone()), mailer).await
    }

    /// With a mailer of the test's choosing (`memory` stays empty unless it is it).
    pub async fn with_mailer(
        db: Arc<TestDb>,
        toml: &str,
        real: Arc<dyn authmd::mail::Mailer>,
        memory: MemoryMailer,
    ) -> TestApp {
        let store = db.store().await;
        let mailer = memory;
        let app = AuthMd::new(config(toml), store, real)
            .await
            .expect("build app");
        let router = authmd::http::router(app.clone());
        TestApp {
            app,
            router,
            mailer,
            db,
        }
    }

    pub async fn replica(&self, toml: &str) -> TestApp {
        TestApp::on(Arc::clone(&self.db), toml).await
    }

    pub async fn send(&self, req: Request<Body>) -> TestResponse {
        self.send_from(IpAddr::from(CLIENT), req).await
    }

    pub async fn send_from(&self, ip: IpAddr, mut req: Request<Body>) -> TestResponse {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        crate::log_capture::issued(&String::from_utf8_lossy(&body));
        for v in headers.values() {
            crate::log_capture::issued(&String::from_utf8_lossy(v.as_bytes()));
        }
        crate::log_capture::assert_no_leak();
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> TestResponse {
        self.send(request(Method::GET, path, bearer, None)).await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> TestResponse {
        self.send(json_request(path, body)).await
    }

    /// Registers anonymously and returns the response body.
    pub async fn register_anonymous(&self) -> Value {
        let r = self
            .post_json(
                "/agent/auth",
                r#"{"type":"anonymous","requested_credential_type":"api_key"}"#,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Waits (up to 5 s) until at least `n` messages were sent.
    pub async fn mails(&self, n: usize) -> Vec<authmd::mail::Email> {
        let start = std::time::Instant::now();
        loop {
            let sent = self.mailer.sent();
            if sent.len() >= n || start.elapsed() > std::time::Duration::from_secs(5) {
                for m in &sent {
                    crate::log_capture::issued(&m.text);
                    crate::log_capture::issued(&m.html);
                }
                crate::log_capture::assert_no_leak();
                return sent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub async fn stats(&self) -> authmd::store::Stats {
        self.app.store().stats().await.expect("stats")
    }

    /// The counted refusals of `POST /agent/auth`, written now (see
    /// `refusals.rs`): one `registration.rejected` per network, code and flow.
    pub async fn rejected(&self) -> Vec<authmd::audit::AuditRecord> {
        self.app.flush_refusals().await.expect("flush refusals");
        self.events("registration.rejected").await
    }

    /// How many refusals the written `registration.rejected` events count.
    pub async fn rejected_count(&self) -> u64 {
        self.rejected()
            .await
            .iter()
            .map(|e| e.data["count"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Events with this name, oldest first.
    pub async fn events(&self, name: &str) -> Vec<authmd::audit::AuditRecord> {
        self.app
            .store()
            .list_events(&authmd::audit::EventFilter {
                events: vec![name.to_owned()],
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list events")
    }
}

pub fn request(
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some((ct, bytes)) => b.header("content-type", ct).body(Body::from(bytes)),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

/// The claim link token in a message's text.
pub fn link_token(text: &str) -> String {
    let start = text
        .find("cvt_")
        .unwrap_or_else(|| panic!("no link in {text}"));
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The 6-digit code on a claim page.
pub fn page_code(html: &str) -> Option<String> {
    let start = html.find("id=\"otp\"")?;
    let rest = &html[start..];
    let open = rest.find('>')? + 1;
    let code: String = rest[open..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (code.len() == 6).then_some(code)
}

pub fn form_request(path: &str, body: &str) -> Request<Body> {
    request(
        Method::POST,
        path,
        None,
        Some((
            "application/x-www-form-urlencoded",
            body.as_bytes().to_vec(),
        )),
    )
}

pub fn json_request(path: &str, body: &str) -> Request<Body> {
    request(
        Method::POST,
        path,
        None,
        Some(("application/json", body.as_bytes().to_vec())),
    )
}

/// What authmd logs on this thread while the guard lives, as text (the
/// log crate's records too: tokio-postgres logs its server notices there).
/// Thread-local: use it from a current-thread runtime (`#[tokio::test]`),
/// where spawned tasks run on the test's thread as well.
#[derive(Clone, Default)]
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        // Forwards log records to the current tracing dispatcher; set once
        // per binary (a second call fails and changes nothing).
        let _ = tracing_log::LogTracer::init();
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
