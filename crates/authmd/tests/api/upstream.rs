//! A small API on a real socket to stand behind authmd (gateway and
//! forward-auth tests): it records what reached it, and has endpoints that
//! stream, stall, and switch protocols.
//!
//! - `…/upload`: counts the body as it streams, telling the test when the
//!   first bytes arrived; answers `{"bytes": n}`.
//! - `…/sse`: `text/event-stream`, one event at once, the next only when
//!   the test calls [`Upstream::next_event`].
//! - `…/slow`: answers after 3 s.
//! - `…/echo-upgrade`: `101` to protocol `echo`, then echoes bytes.
//! - anything else: records the request, answers `201` with a header the
//!   test checks and a hop-by-hop header that must not reach the client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    first_bytes: Arc<Notify>,
    next_event: Arc<Notify>,
}

pub struct Upstream {
    pub url: String,
    pub port: u16,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let shared = Shared::default();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            url: format!("http://127.0.0.1:{port}"),
            port,
            shared,
            task,
        }
    }

    /// Requests that reached the upstream (every one, streamed or not).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// The recorded requests (not the streaming endpoints).
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the upstream")
    }

    /// Waits until an upload's first bytes arrived.
    pub async fn first_bytes(&self) {
        self.shared.first_bytes.notified().await;
    }

    /// Lets the SSE endpoint send its next event.
    pub fn next_event(&self) {
        self.shared.next_event.notify_one();
    }
}

async fn handle(State(s): State<Shared>, mut req: Request) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    if path.ends_with("/upload") {
        let mut body = req.into_body();
        let mut bytes = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            if let Some(data) = frame.data_ref() {
                if bytes == 0 && !data.is_empty() {
                    s.first_bytes.notify_one();
                }
                bytes += data.len();
            }
        }
        return axum::Json(serde_json::json!({ "bytes": bytes })).into_response();
    }
    if path.ends_with("/sse") {
        let next = Arc::clone(&s.next_event);
        let events = futures_util::stream::unfold(0u8, move |n| {
            let next = Arc::clone(&next);
            async move {
                match n {
                    0 => Some((Ok::<_, std::io::Error>(Bytes::from("data: one\n\n")), 1)),
                    1 => {
                        next.notified().await;
                        Some((Ok(Bytes::from("data: two\n\n")), 2))
                    }
                    _ => None,
                }
            }
        });
        return (
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            Body::from_stream(events),
        )
            .into_response();
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        return "late".into_response();
    }
    if path.ends_with("/echo-upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Body::empty())
            .unwrap_or_default();
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    if let Ok(mut seen) = s.seen.lock() {
        seen.push(Seen {
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        });
    }
    (
        StatusCode::CREATED,
        [
            ("x-upstream", "yes"),
            ("connection", "x-upstream-hop"),
            ("x-upstream-hop", "must not reach the client"),
            ("content-type", "application/json"),
        ],
        r#"{"from":"upstream"}"#,
    )
        .into_response()
}
