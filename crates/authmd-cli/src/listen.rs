//! One listener: the accept loop, with the limits that keep slow or idle
//! clients from holding the server (and its shutdown) hostage.
//!
//! - At most `max_connections` are open; beyond that, a new connection
//!   waits (the ones behind it in the kernel's backlog) while idle
//!   keep-alive connections are closed to make room.
//! - A connection must deliver a request head within `header_read_timeout`
//!   of opening (or of its first byte after an idle spell): half a request
//!   line, or nothing at all, is closed then.
//! - Between requests, a keep-alive connection may wait `idle_timeout`.
//! - A request's body and processing are bounded by the application
//!   (`server.request_timeout` on the agent endpoints).
//! - At shutdown, idle connections close at once, requests in flight get
//!   `shutdown_timeout`, then every connection still open is closed.
//!
//! hyper's own header timer measures idle time and head time as one, so
//! the clock here is ours: a wrapper around the socket notes a request
//! head's first byte, the service notes when requests start and end, and
//! each connection's task sleeps until its next deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::ConnectInfo;
use axum::http;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::tls::Tls;

/// The limits of one listener (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_timeout: Duration,
}

impl Limits {
    pub fn from_config(c: &authmd::config::ServerConfig) -> Limits {
        Limits {
            header_read_timeout: c.header_read_timeout.get(),
            idle_timeout: c.idle_timeout.get(),
            max_connections: c.max_connections,
            shutdown_timeout: c.shutdown_timeout.get(),
        }
    }
}

/// What the accept loop shares with its connections.
struct Shared {
    limits: Limits,
    router: Router,
    tls: Option<Arc<Tls>>,
    builder: auto::Builder<TokioExecutor>,
    /// Every open connection's clock, for telling them to stop or to make
    /// room. Touched when a connection opens or closes, never per request:
    /// a connection waits on its own `Clock::signal` only.
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    next: u64,
    clocks: HashMap<u64, Arc<Clock>>,
    stopping: bool,
}

impl Shared {
    /// Tells every connection to finish (and any opened later).
    fn stop_all(&self) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.stopping = true;
        for clock in live.clocks.values() {
            clock.signal(&clock.stop);
        }
    }

    /// Asks the connections that hold no request to close.
    fn make_room(&self) {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for clock in live.clocks.values() {
            if clock.reclaimable() {
                clock.signal(&clock.reclaim);
            }
        }
    }
}

/// A connection's place in `Shared::live`, left when dropped (also when
/// its task is aborted).
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl<'a> Registered<'a> {
    fn new(shared: &'a Shared, clock: &Arc<Clock>) -> Registered<'a> {
        let mut live = shared
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.next += 1;
        let id = live.next;
        if live.stopping {
            clock.signal(&clock.stop);
        }
        live.clocks.insert(id, Arc::clone(clock));
        Registered { shared, id }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut live = self
            .shared
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.clocks.remove(&self.id);
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then drains
/// (see the module documentation) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    tls: Option<Arc<Tls>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Our own clock bounds the head (see above); hyper's is not armed.
    builder.http1().keep_alive(true);
    let shared = Arc::new(Shared {
        limits,
        router,
        tls,
        builder,
        live: Mutex::new(Live::default()),
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut warned: Option<Instant> = None;
    let mut accept_failed: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
            // Reap finished connections so the set stays small.
            Some(_) = connections.join_next() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a moment rather than spin.
                if accept_failed.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accept failed");
                    accept_failed = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Full: this client waits (and the ones behind it in the backlog)
        // while idle connections are asked to make room, again every
        // quarter second as others fall idle.
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait (server.max_connections)"
                    );
                    warned = Some(Instant::now());
                }
                let waited = loop {
                    shared.make_room();
                    tokio::select! {
                        p = Arc::clone(&slots).acquire_owned() => break p.ok(),
                        _ = shutdown.changed() => break None,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        Some(_) = connections.join_next() => {}
                    }
                };
                match waited {
                    Some(p) => p,
                    None => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            connection(tcp, peer, &shared).await;
            drop(permit);
        });
    }
    drop(listener);
    shared.stop_all();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown deadline reached (server.shutdown_timeout): closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
    let clock = Arc::new(Clock::new());
    let _registered = Registered::new(shared, &clock);
    match &shared.tls {
        None => drive(Tracked::new(tcp, &clock), peer, shared, clock).await,
        Some(tls) => {
            // The handshake is part of the head: the same deadline.
            let hs = tokio::time::timeout(
                shared.limits.header_read_timeout,
                tls.acceptor().accept(tcp),
            );
            match hs.await {
                Ok(Ok(stream)) => drive(Tracked::new(stream, &clock), peer, shared, clock).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Serves one connection until it ends, times out, or is told to close.
async fn drive<S>(io: Tracked<S>, peer: SocketAddr, shared: &Shared, clock: Arc<Clock>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = ConnService {
        router: shared.router.clone(),
        peer,
        clock: Arc::clone(&clock),
    };
    let conn = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let limits = shared.limits;
    let sleep = tokio::time::sleep_until(clock.next_look(&limits));
    tokio::pin!(sleep);
    let signal = clock.signal.notified();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut conn => return,
            () = &mut sleep => match clock.expired(&limits) {
                Some(Expired::Head) => {
                    tracing::debug!(%peer, "request head not received in time (server.header_read_timeout)");
                    return;
                }
                Some(Expired::Idle) => break,
                None => sleep.as_mut().reset(clock.next_look(&limits)),
            },
            () = &mut signal => {
                if clock.stop.load(Ordering::Acquire) {
                    break;
                }
                if clock.reclaim.swap(false, Ordering::AcqRel) && clock.reclaimable() {
                    break;
                }
                signal.set(clock.signal.notified());
            }
        }
    }
    // Idle connections close at once (HTTP/2 after a GOAWAY); at shutdown
    // a request in flight finishes, within the listener's deadline.
    conn.as_mut().graceful_shutdown();
    if clock.stop.load(Ordering::Acquire) {
        // At shutdown the accept loop's one deadline ends what is left
        // (server.shutdown_timeout); a timer of the same length here raced
        // it, and the winner decided whether the deadline was logged.
        let _ = (&mut conn).await;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut conn).await;
    }
}

/// Why a connection's clock ran out.
enum Expired {
    /// A request head began (or the connection opened) and did not finish.
    Head,
    /// No request since the last response.
    Idle,
}

/// Milliseconds since the connection opened, with `NONE` for "not set".
const NONE: u64 = u64::MAX;

/// A connection's state for its deadlines, shared by the socket wrapper
/// (first byte of a head), the service (requests starting and ending) and
/// the accept loop (stop, make room).
struct Clock {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the current head's first byte arrived, while no request is in
    /// flight.
    head_started: AtomicU64,
    /// When the last request ended.
    idle_since: AtomicU64,
    served: AtomicBool,
    /// Set with `signal` by the accept loop: shut down; make room.
    stop: AtomicBool,
    reclaim: AtomicBool,
    signal: Notify,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(0),
            served: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            reclaim: AtomicBool::new(false),
            signal: Notify::new(),
        }
    }

    fn signal(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::Release);
        self.signal.notify_one();
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Bytes arrived: the first ones after an idle spell start a head.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now(), Ordering::Relaxed);
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Relaxed);
    }

    fn request_ended(&self) {
        self.idle_since.store(self.now(), Ordering::Relaxed);
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection's current deadline falls (`None` while a
    /// request is in flight: the application bounds it).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(match self.head_started.load(Ordering::Relaxed) {
            NONE if self.served.load(Ordering::Relaxed) => {
                self.at(self.idle_since.load(Ordering::Relaxed)) + limits.idle_timeout
            }
            NONE => self.opened + limits.header_read_timeout,
            t => self.at(t) + limits.header_read_timeout,
        })
    }

    /// When to look at the connection next: its deadline, but never later
    /// than the shorter timeout from now. Requests starting and ending
    /// then need not wake the connection: a deadline they set is never
    /// nearer than that.
    fn next_look(&self, limits: &Limits) -> Instant {
        let step = Instant::now() + limits.idle_timeout.min(limits.header_read_timeout);
        self.deadline(limits).map_or(step, |d| d.min(step))
    }

    fn expired(&self, limits: &Limits) -> Option<Expired> {
        if self.deadline(limits)? > Instant::now() {
            return None;
        }
        let idle = self.head_started.load(Ordering::Relaxed) == NONE
            && self.served.load(Ordering::Relaxed);
        Some(if idle { Expired::Idle } else { Expired::Head })
    }

    /// Holds no request and no part of one: may be closed to make room.
    /// (A connection opened a moment ago gets a second to speak.)
    fn reclaimable(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
            && (self.served.load(Ordering::Relaxed) || self.now() > 1000)
    }
}

/// The socket (or TLS stream), telling the clock when bytes arrive.
struct Tracked<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Tracked<S> {
    fn new(inner: S, clock: &Arc<Clock>) -> Tracked<S> {
        Tracked {
            inner,
            clock: Arc::clone(clock),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The router for one connection: adds the peer address (what axum's
/// `ConnectInfo` extractor reads) and tells the clock about each request.
#[derive(Clone)]
struct ConnService {
    router: Router,
    peer: SocketAddr,
    clock: Arc<Clock>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Counted>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for ConnService {
    type Response = http::Response<Counted>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut req: http::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let guard = InFlight::new(&self.clock);
        let response = self.router.clone().oneshot(req.map(Body::new));
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Counted {
                body,
                _in_flight: guard,
            }))
        })
    }
}

/// A request in flight, until its response body is sent (or dropped).
struct InFlight(Arc<Clock>);

impl InFlight {
    fn new(clock: &Arc<Clock>) -> InFlight {
        clock.request_started();
        InFlight(Arc::clone(clock))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request counted as in flight.
struct Counted {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
