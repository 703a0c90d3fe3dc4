//! The HTTP/1.1 server loop: connection cap, header/idle/body timeouts, accept-error backoff.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use evmesh_broker::ingress::BodyTimeout;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// Limits that keep slow or idle clients from holding connections (and file descriptors).
///
/// ```
/// let limits = evmesh::ServerLimits {
///     max_connections: Some(512),
///     ..evmesh::ServerLimits::default()
/// };
/// assert_eq!(limits.header_read_timeout, std::time::Duration::from_secs(10));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has, from the first byte of a request (or from connecting), to send the
    /// complete request head; the connection is closed after it.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit between requests before it is closed.
    pub idle_timeout: Duration,
    /// Time a client has, from the end of the request head, to send the whole body
    /// (`408 Request Timeout` after it).
    pub body_read_timeout: Duration,
    /// Connections served at once; further connections wait in the listen backlog until one
    /// closes. `None`: half the process's open-file limit, at most 10,000 (1,024 when the limit
    /// cannot be read).
    pub max_connections: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

impl ServerLimits {
    /// The connection cap in force: [`max_connections`](Self::max_connections), or the default
    /// derived from the open-file limit (half the soft limit, at most 10,000; 1,024 when the
    /// limit cannot be read). Never 0.
    ///
    /// ```
    /// let limits = evmesh::ServerLimits { max_connections: Some(512), ..Default::default() };
    /// assert_eq!(limits.connection_cap(), 512);
    /// let derived = evmesh::ServerLimits::default().connection_cap();
    /// assert!((1..=10_000).contains(&derived));
    /// ```
    pub fn connection_cap(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| match open_file_limit() {
                Some(n) => usize::try_from(n / 2).unwrap_or(usize::MAX).min(10_000),
                None => 1024,
            })
            .max(1)
    }
}

/// The soft limit on open files of this process (Linux: `/proc/self/limits`).
fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// Serves `app` on `listener` until `stop` turns true, then stops accepting, lets each
/// connection finish its request in progress and returns once all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let cap = limits.connection_cap();
    let permits = Arc::new(Semaphore::new(cap));
    let limits = Arc::new(limits);
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut backoff = Duration::ZERO;
    tracing::debug!(max_connections = cap, "serving HTTP");
    loop {
        // Above the cap, wait for a connection to close before accepting the next one; the
        // kernel keeps new ones in the listen backlog meanwhile.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning, so the
                // connections being served can finish and give their descriptors back.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::error!(
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "accepting a connection failed"
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let closing = closing_rx.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, &limits, closing).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Wait for every connection task: each holds a permit until it ends.
    let _ = permits
        .acquire_many(u32::try_from(cap).unwrap_or(u32::MAX))
        .await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What a connection's timers look at.
#[derive(Debug)]
struct ConnState {
    started: Instant,
    /// Requests whose response is not produced yet.
    active: AtomicUsize,
    /// Milliseconds since `started` when the connection last became idle (accepted, or a
    /// response produced).
    idle_since: AtomicU64,
    /// Milliseconds since `started` of the first byte read after `idle_since` (0: none yet).
    first_byte: AtomicU64,
}

impl ConnState {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection must be closed if nothing changes, `None` while a request is in
    /// progress (its body has its own deadline).
    fn deadline(&self, limits: &ServerLimits) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.idle_since.load(Ordering::Acquire);
        let first_byte = self.first_byte.load(Ordering::Acquire);
        let ms = |m: u64| self.started + Duration::from_millis(m);
        Some(if first_byte > 0 {
            // Part of a request head arrived: it must be complete in time.
            ms(first_byte) + limits.header_read_timeout
        } else if idle_since == 0 {
            // A fresh connection that sent nothing yet.
            ms(0) + limits.header_read_timeout
        } else {
            ms(idle_since) + limits.idle_timeout
        })
    }
}

/// Marks a request in progress until dropped (the response was produced, or the request was
/// abandoned).
struct Active(Arc<ConnState>);

impl Active {
    fn new(state: Arc<ConnState>) -> Self {
        state.active.fetch_add(1, Ordering::AcqRel);
        Active(state)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let s = &self.0;
        s.first_byte.store(0, Ordering::Release);
        s.idle_since.store(s.now_ms().max(1), Ordering::Release);
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &Arc<ServerLimits>,
    mut closing: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState {
        started: Instant::now(),
        active: AtomicUsize::new(0),
        idle_since: AtomicU64::new(0),
        first_byte: AtomicU64::new(0),
    });
    let io = TokioIo::new(Watched {
        inner: stream,
        state: state.clone(),
    });
    let body_timeout = limits.body_read_timeout;
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let active = Active::new(svc_state.clone());
        let app = app.clone();
        async move {
            let req = req.map(|b| Body::new(DeadlineBody::new(b, body_timeout)));
            let resp = app.oneshot(req).await;
            // The request counts as in progress until its response body is sent (a watch
            // streams for long): idle and header timeouts start after it.
            resp.map(|r| {
                r.map(|body| {
                    Body::new(Guarded {
                        inner: body,
                        _active: active,
                    })
                })
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    loop {
        let deadline = state.deadline(limits);
        let check = Instant::now() + limits.header_read_timeout.min(limits.idle_timeout);
        let wake = deadline.map_or(check, |d| d.min(check));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {
                if state.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection: header or idle timeout");
                    return;
                }
            }
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket, noting when the first byte of a request head arrives.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let s = &self.state;
            if s.active.load(Ordering::Acquire) == 0 && s.first_byte.load(Ordering::Acquire) == 0 {
                s.first_byte.store(s.now_ms().max(1), Ordering::Release);
            }
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body holding its connection's [`Active`] mark until it is sent or dropped.
struct Guarded {
    inner: Body,
    _active: Active,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`BodyTimeout`] once its deadline passes. The deadline is
/// set by the first read that finds the body incomplete (the handler reads right after the
/// head): a body that came with its head needs no timer at all.
struct DeadlineBody {
    inner: Incoming,
    sleep: Option<Pin<Box<Sleep>>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            sleep: None,
            limit,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let limit = self.limit;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
