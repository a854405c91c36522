//! The gateway's connections to its upstream: HTTP/1.1, kept for reuse.
//!
//! hyper-util's pooled client did this for any number of hosts, at a cost
//! the gateway paid on every request: a hash-map lookup to take a
//! connection and another to give it back, a task spawned for each
//! response to wait until its connection was free again, and a dozen moves
//! of large futures (about a tenth of a proxied request's instructions
//! under callgrind). The gateway has one upstream, so its pool is a list.
//!
//! - A connection is given back when the response body it carried has
//!   ended (or was empty), and enters the list once hyper can take another
//!   request on it: at once, usually; when the upstream answered before the
//!   request's body was all sent (a 413 to a slow upload), only after it is
//!   (a task waits for that), so no request ever waits behind another's
//!   upload. One whose body was dropped half read is closed by hyper and
//!   never reused; one that switched protocols belongs to the upgraded
//!   exchange.
//! - Connections are taken most recently used first; one that is not ready
//!   (closing), or idle longer than `idle_timeout`, is dropped instead. At
//!   most `max_idle` wait in the list.
//! - A request that a reused connection could not send at all (the
//!   upstream closed it while it was idle) is sent again on a new one, as
//!   hyper-util's client did. A request that was sent is never sent twice.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, Uri};
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use tower::ServiceExt;

use super::Connector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(super) struct Pool {
    connector: Connector,
    /// `<scheme>://<authority>/`: what the connector connects to.
    target: Uri,
    idle: Mutex<Vec<(SendRequest<Body>, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// A connection carrying a response, given back when the response ends.
pub(super) struct Lease {
    sender: SendRequest<Body>,
    pool: Arc<Pool>,
}

impl Pool {
    pub(super) fn new(
        connector: Connector,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// Sends `req` (its URI in origin form, its `Host` set) and returns the
    /// response head and the connection that carries its body.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<(Response<Incoming>, Lease), BoxError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Lease {
                        sender,
                        pool: Arc::clone(self),
                    };
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The most recently used live connection, ready for a request.
    async fn checkout(&self) -> Option<SendRequest<Body>> {
        loop {
            let (sender, since) = self.idle.lock().ok()?.pop()?;
            // Only ready ones enter the list; one that is not any more is
            // closing.
            if sender.is_ready() && since.elapsed() <= self.idle_timeout {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Body>, BoxError> {
        let io = self.connector.clone().oneshot(self.target.clone()).await?;
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// A connection whose response has ended: into the list once hyper
    /// can take another request on it.
    fn put(self: &Arc<Self>, mut sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        if sender.is_ready() {
            self.push(sender);
            return;
        }
        // Still sending the request's body (the upstream answered early).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::clone(self);
        runtime.spawn(async move {
            if sender.ready().await.is_ok() {
                pool.push(sender);
            }
        });
    }

    fn push(&self, sender: SendRequest<Body>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push((sender, Instant::now()));
        }
    }
}

impl Lease {
    fn give_back(self) {
        Pool::put(&self.pool, self.sender);
    }
}

/// The upstream's response body, which gives its connection back when it
/// ends: after its last frame, or when it is dropped having nothing left
/// (an empty body that the server never reads).
pub(super) struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    pub(super) fn new(inner: Incoming, lease: Lease) -> PooledBody {
        PooledBody {
            inner,
            lease: Some(lease),
        }
    }

    fn give_back(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.give_back();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.give_back(),
            // A broken body: its connection is not reused.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped half read, the connection is closed by hyper: dropped too.
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}
