//! Gateway mode (`[upstream]`): authmd in front of an API on a real
//! socket (`upstream.rs`).

use std::time::{Duration, Instant};

use authmd::Timestamp;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use crate::both_backends;
use crate::support::{Backend, CLIENT_IP, TestApp, request};
use crate::upstream::Upstream;

/// Anonymous keys may write, so that one key exercises every method.
pub const WRITES: &str = "[resource]\npre_claim_scopes = [\"api.read\", \"api.write\"]\n";

pub fn toml(upstream: &str, before: &str, upstream_extra: &str) -> String {
    format!("{before}\n[upstream]\nurl = \"{upstream}\"\n{upstream_extra}\n")
}

pub async fn anon(t: &TestApp) -> (String, String) {
    let r = t.register_anonymous().await;
    (
        r["credential"].as_str().unwrap_or_default().to_owned(),
        r["registration_id"].as_str().unwrap_or_default().to_owned(),
    )
}

both_backends! {
    /// Method, path, query and body pass unchanged; the identity headers
    /// are authmd's own (forged ones removed); the credential, hop-by-hop
    /// headers and the client's X-Forwarded-For stay behind; the answer
    /// comes back without the upstream's hop-by-hop headers.
    async fn a_valid_request_is_forwarded_with_identity_headers(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, WRITES, "")).await;
        let (key, reg) = anon(&t).await;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/things/1?x=1&y=%20z")
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "text/plain")
            .header("host", "api.example")
            .header("x-authmd-email", "forged@example.com")
            .header("X-Authmd-Registration", "reg_forged")
            .header("x-authmd-user", "usr_forged")
            .header("x-authmd-assertion", "forged")
            .header("x-authmd-anything", "forged")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-custom", "kept")
            .body(Body::from("hello body"))
            .unwrap_or_default();
        let r = t.send(req).await;
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.text(), r#"{"from":"upstream"}"#);
        assert_eq!(r.header("x-upstream"), Some("yes"));
        assert!(r.header("x-upstream-hop").is_none());
        assert!(r.header("connection").is_none());

        let seen = up.last();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.uri, "/api/things/1?x=1&y=%20z");
        assert_eq!(seen.body, b"hello body");
        assert_eq!(seen.header("content-type"), Some("text/plain"));
        assert_eq!(seen.header("x-custom"), Some("kept"));
        assert_eq!(seen.header("x-authmd-registration"), Some(reg.as_str()));
        assert_eq!(seen.header("x-authmd-registration-type"), Some("anonymous"));
        assert_eq!(seen.header("x-authmd-scopes"), Some("api.read api.write"));
        assert_eq!(seen.header("x-authmd-credential-type"), Some("api_key"));
        for absent in ["x-authmd-user", "x-authmd-email", "x-authmd-provider", "x-authmd-subject",
                       "x-authmd-anything", "authorization", "x-secret-hop", "keep-alive",
                       "proxy-authorization"] {
            assert!(seen.header(absent).is_none(), "{absent} reached the upstream");
        }
        assert_eq!(seen.headers.get_all("x-authmd-registration").iter().count(), 1);
        assert_ne!(seen.header("x-authmd-assertion"), Some("forged"));
        // The client is not a trusted proxy: its X-Forwarded-* are replaced.
        assert_eq!(seen.header("x-forwarded-for"), Some(CLIENT_IP));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-forwarded-host"), Some("api.example"));
        assert_eq!(seen.header("host"), Some(format!("127.0.0.1:{}", up.port).as_str()));
    }
}

both_backends! {
    /// An agent-verified registration carries its user, verified email,
    /// provider and subject.
    async fn an_agent_verified_caller_is_named_with_its_user(backend: Backend) {
        use crate::provider::{JwksServer, body, claims, key as provider_key, mint, trusting};
        let up = Upstream::start().await;
        let server = JwksServer::start().await;
        let k = provider_key(authmd_jose::Algorithm::Es256, "k1");
        server.set_keys(&[&k]);
        let t = TestApp::new(backend, &toml(&up.url, &trusting(&[server.issuer()], ""), "")).await;
        let r = t.post_json("/agent/auth", &body(&mint(&k, &[], &claims(server.issuer(), "http://127.0.0.1:8080", "ada")), "api_key")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let credential = r.json()["credential"].as_str().unwrap_or_default().to_owned();
        let r = t.get("/api/profile", Some(&credential)).await;
        assert_eq!(r.status, 201, "{}", r.text());
        let seen = up.last();
        assert!(seen.header("x-authmd-user").is_some_and(|u| u.starts_with("usr_")));
        assert_eq!(seen.header("x-authmd-email"), Some("ada@example.com"));
        assert_eq!(seen.header("x-authmd-provider"), Some(server.issuer()));
        assert_eq!(seen.header("x-authmd-subject"), Some("ada"));
        assert_eq!(seen.header("x-authmd-registration-type"), Some("agent-provider"));
    }
}

both_backends! {
    /// No request that fails validation, the path check or a scope rule
    /// reaches the upstream.
    async fn refused_requests_never_reach_the_upstream(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, "", "")).await;
        let (key, _) = anon(&t).await;
        let cases: [(Method, &str, Option<&str>, u16); 11] = [
            (Method::GET, "/api/x", None, 401),
            (Method::POST, "/api/x", None, 401),
            (Method::GET, "/api/x", Some("amd_sk_not_a_key"), 401),
            (Method::POST, "/api/x", Some(&key), 403),
            (Method::DELETE, "/api/", Some(&key), 403),
            (Method::GET, "/api/public/../admin", Some(&key), 400),
            // Spellings the upstream may read as another path than the
            // one the scope rules judged.
            (Method::GET, "/api/%61dmin", Some(&key), 400),
            (Method::GET, "/api//admin", Some(&key), 400),
            (Method::GET, "/api/x%2F..%2Fadmin", Some(&key), 400),
            (Method::GET, "/api/x;y/admin", Some(&key), 400),
            (Method::GET, "/api/x%00", Some(&key), 400),
        ];
        for (method, path, bearer, status) in cases {
            let r = t.send(request(method.clone(), path, bearer, Some(("text/plain", b"x".to_vec())))).await;
            assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        }
        assert_eq!(up.hits(), 0, "a refused request reached the upstream");
        assert_eq!(t.get("/api/x", Some(&key)).await.status, 201);
        assert_eq!(up.hits(), 1);
    }
}

both_backends! {
    async fn the_credential_is_forwarded_only_when_configured(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(
            backend,
            &toml(&up.url, "", "forward_authorization = true"),
        )
        .await;
        let (key, _) = anon(&t).await;
        assert_eq!(t.get("/api/x", Some(&key)).await.status, 201);
        assert_eq!(
            up.last().header("authorization"),
            Some(format!("Bearer {key}").as_str())
        );
    }
}

#[tokio::test]
async fn strip_prefix_and_a_base_path_shape_the_upstream_path() {
    let up = Upstream::start().await;
    let base = format!("{}/base/", up.url);
    let t = TestApp::new(
        Backend::Sqlite,
        &toml(&base, "", "strip_prefix = true\npreserve_host = true"),
    )
    .await;
    let (key, _) = anon(&t).await;
    for (path, expected) in [
        ("/api/v1/x?q=1", "/base/v1/x?q=1"),
        ("/api/", "/base/"),
        ("/api/whoami", "/base/whoami"),
    ] {
        let mut req = request(Method::GET, path, Some(&key), None);
        req.headers_mut()
            .insert("host", axum::http::HeaderValue::from_static("api.example"));
        assert_eq!(t.send(req).await.status, 201, "{path}");
        let seen = up.last();
        assert_eq!(seen.uri, expected);
        assert_eq!(seen.header("host"), Some("api.example"), "preserve_host");
    }
    // An HTTP/2 client names the host in the URI's authority, with no Host
    // header: the upstream still gets it (HTTP/1.1 requires one).
    let mut req = request(
        Method::GET,
        "http://api.example/api/v1/h2",
        Some(&key),
        None,
    );
    req.headers_mut().remove("host");
    *req.version_mut() = axum::http::Version::HTTP_2;
    assert_eq!(t.send(req).await.status, 201);
    assert_eq!(
        up.last().header("host"),
        Some("api.example"),
        "preserve_host over HTTP/2"
    );
}

both_backends! {
    async fn upstream_down_is_502_and_silence_is_504_without_naming_it(backend: Backend) {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let t = TestApp::new(
            backend,
            &toml(&format!("http://127.0.0.1:{closed}"), "", ""),
        )
        .await;
        let (key, _) = anon(&t).await;
        let r = t.get("/api/x", Some(&key)).await;
        assert_eq!(r.status, 502);
        assert_eq!(r.code(), "upstream_unavailable");
        let everything = format!("{:?} {}", r.headers, r.text());
        assert!(
            !everything.contains(&closed.to_string()) && !everything.contains("127.0.0.1"),
            "{everything}"
        );

        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, "", "timeout = \"300ms\"")).await;
        let (key, _) = anon(&t).await;
        let started = Instant::now();
        let r = t.get("/api/slow", Some(&key)).await;
        assert_eq!(r.status, 504);
        assert_eq!(r.code(), "upstream_timeout");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(!r.text().contains(&up.port.to_string()));
    }
}

both_backends! {
    /// The request body streams: the upstream has the first bytes while the
    /// client still holds the rest, and every byte arrives.
    async fn an_upload_streams_to_the_upstream(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, WRITES, "")).await;
        let (key, _) = anon(&t).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        let mut req = request(Method::PUT, "/api/files/upload", Some(&key), None);
        *req.body_mut() = Body::from_stream(stream);
        let sending = tokio::spawn({
            let router = t.router.clone();
            async move {
                req.extensions_mut()
                    .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
                let r = router.oneshot(req).await.expect("infallible");
                let status = r.status();
                let body = r
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                (status, body)
            }
        });
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        tx.send(Ok(chunk.clone())).await.expect("send");
        tokio::time::timeout(Duration::from_secs(5), up.first_bytes())
            .await
            .expect("the upstream had no bytes while the client held the rest: the body was buffered");
        for _ in 1..64 {
            tx.send(Ok(chunk.clone())).await.expect("send");
        }
        drop(tx);
        let (status, body) = sending.await.expect("join");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["bytes"], 64 << 20);
    }
}

both_backends! {
    /// A server-sent-events response streams: the client reads the first event
    /// before the upstream has produced the second.
    async fn server_sent_events_stream_to_the_client(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, "", "")).await;
        let (key, _) = anon(&t).await;
        let mut req = request(Method::GET, "/api/events/sse", Some(&key), None);
        req.extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 1))));
        let r = tokio::time::timeout(Duration::from_secs(5), t.router.clone().oneshot(req))
            .await
            .expect("no response head before the stream ended: buffered")
            .expect("infallible");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let mut body = r.into_body();
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the first event did not arrive before the second was sent: buffered");
        let first = first
            .and_then(Result::ok)
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default();
        assert_eq!(&first[..], b"data: one\n\n");
        up.next_event();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
            .await
            .expect("the stream ended")
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        assert_eq!(&rest[..], b"data: two\n\n");
    }
}

both_backends! {
    /// An HTTP/1.1 Upgrade (WebSocket's mechanism) is passed through: the
    /// upstream's 101 reaches the client and the connection carries bytes both
    /// ways. A stranger's upgrade is refused like any request.
    async fn an_upgrade_is_passed_through(backend: Backend) {
        let up = Upstream::start().await;
        let t = TestApp::new(backend, &toml(&up.url, "", "")).await;
        let (key, _) = anon(&t).await;
        let base = crate::support::serve(t.router.clone(), crate::support::free_port()).await;
        let addr = base.trim_start_matches("http://").to_owned();
        let ask = |bearer: Option<&str>| {
            let auth = bearer.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
            format!(
                "GET /api/chat/echo-upgrade HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n{auth}\r\n"
            )
        };
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(ask(None).as_bytes()).await.expect("write");
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert_eq!(up.hits(), 0);

        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(ask(Some(&key)).as_bytes())
            .await
            .expect("write");
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("upgrade: echo"),
            "{head}"
        );
        for message in ["ping", "a second message"] {
            s.write_all(message.as_bytes()).await.expect("write");
            let mut buf = vec![0u8; message.len()];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
                .await
                .expect("echo in time")
                .expect("read");
            assert_eq!(buf, message.as_bytes());
        }
    }
}

/// Reads a response head (up to the blank line) from a raw connection.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

both_backends! {
    /// A credential revoked on one replica is refused by another replica's
    /// gateway within a second, and the upstream never sees it again.
    async fn a_revoked_credential_is_refused_by_the_gateway_within_a_second(backend: Backend) {
        let up = Upstream::start().await;
        let toml = toml(&up.url, "", "");
        let a = TestApp::new(backend, &toml).await;
        let b = a.replica(&toml).await;
        let (key, reg) = anon(&a).await;
        assert_eq!(b.get("/api/x", Some(&key)).await.status, 201);
        authmd::admin::Admin::new(std::sync::Arc::clone(a.app.store()))
            .revoke(authmd::store::RevokeTarget::Registration(reg), "ops", None, &Default::default(), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        loop {
            let hits = up.hits();
            let r = b.get("/api/x", Some(&key)).await;
            if r.status == 401 {
                assert_eq!(up.hits(), hits, "the refused request reached the upstream");
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "still forwarded after 1 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Without `[upstream]`, the built-in resource: whoami, 404 elsewhere.
#[tokio::test]
async fn without_an_upstream_authmd_serves_its_own_resource() {
    let t = TestApp::new(Backend::Sqlite, "").await;
    let (key, _) = anon(&t).await;
    assert_eq!(t.get("/api/whoami", Some(&key)).await.status, 200);
    assert_eq!(t.get("/api/x", Some(&key)).await.status, 404);
}

/// A bare HTTP/1.1 upstream that counts the connections it accepts. Each
/// connection answers `GET /big` with 1 MiB and anything else with `ok`,
/// and is closed without notice after `per_connection` answers (as an
/// upstream closes idle keep-alive connections).
struct CountingUpstream {
    url: String,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingUpstream {
    async fn start(per_connection: usize) -> CountingUpstream {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for _ in 0..per_connection {
                        let head = read_head(&mut s).await;
                        if head.is_empty() {
                            return;
                        }
                        if head.starts_with("POST /api/upload ") {
                            // Refused at once, the body left unread.
                            let refused =
                                "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
                            if s.write_all(refused.as_bytes()).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        let body = if head.starts_with("GET /api/big ") {
                            vec![b'x'; 1 << 20]
                        } else {
                            b"ok".to_vec()
                        };
                        let answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        if s.write_all(answer.as_bytes()).await.is_err()
                            || s.write_all(&body).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        CountingUpstream { url, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The gateway's pool (`gateway/pool.rs`): a connection is reused for the
/// next request once its response has ended; one the upstream closed while
/// idle, or idle past `idle_timeout`, is replaced without failing a
/// request; one whose response body the client dropped half read is not
/// reused.
#[tokio::test]
async fn upstream_connections_are_reused_and_replaced_when_they_cannot_be() {
    let up = CountingUpstream::start(3).await;
    let t = TestApp::new(
        Backend::Sqlite,
        &toml(
            &up.url,
            WRITES,
            "idle_timeout = \"300ms\"\ntimeout = \"3s\"",
        ),
    )
    .await;
    let (key, _) = anon(&t).await;
    for _ in 0..3 {
        let r = t.get("/api/small", Some(&key)).await;
        assert_eq!((r.status.as_u16(), r.text()), (200, "ok".to_owned()));
    }
    assert_eq!(up.connections(), 1, "three requests, one connection");
    // The upstream closed it after its third answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = t.get("/api/small", Some(&key)).await;
    assert_eq!(
        r.status,
        200,
        "a closed connection is replaced: {}",
        r.text()
    );
    assert_eq!(up.connections(), 2);
    // Idle past idle_timeout: not used again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(t.get("/api/small", Some(&key)).await.status, 200);
    assert_eq!(up.connections(), 3);

    // A body dropped after its first frame: that connection is not reused.
    let res = t
        .router
        .clone()
        .oneshot(request(Method::GET, "/api/big", Some(&key), None))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    drop(body);
    let r = t.get("/api/small", Some(&key)).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".to_owned()));
    assert_eq!(
        up.connections(),
        4,
        "the half-read connection was not given back"
    );
    // A body read to the end: its connection serves the next request.
    let r = t.get("/api/small", Some(&key)).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.connections(), 4);

    // The upstream refuses an upload before its body is all sent, while
    // the client is still sending: the next request does not wait behind
    // it (its connection is not ready for another request until the upload
    // ends), it gets a connection of its own.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let _ = tx.send(Ok(Bytes::from_static(b"the first part"))).await;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut upload = request(Method::POST, "/api/upload", Some(&key), None);
    *upload.body_mut() = Body::from_stream(stream);
    let refused = t.router.clone().oneshot(upload).await.expect("infallible");
    assert_eq!(refused.status(), 413);
    drop(refused);
    // (Waiting for that connection would end in 504 after `timeout`.)
    let r = t.get("/api/small", Some(&key)).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok".to_owned()));
    assert_eq!(up.connections(), 5);
    drop(tx);
}
