//! Serving HTTP/1.1 (keep-alive) and h2c on a listener, with two-phase
//! graceful shutdown: stop accepting, then let open requests finish within a
//! deadline.
//!
//! Every listener bounds what a client can make it hold ([`ServerLimits`],
//! flags on the dispatchers):
//!
//! | limit | flag | default | past it |
//! |---|---|---|---|
//! | time to send a request's headers; also how long an idle keep-alive connection stays open | `--header-read-timeout` | 10 s | the connection is closed (a slowloris client holds nothing longer) |
//! | header count | `--max-headers` | 100 | 431 and the connection closed |
//! | header bytes (start line included) | `--max-header-bytes` | 64 KiB | 431 and the connection closed |
//! | open connections | `--max-connections` | 10,000 | new connections wait in the listen backlog until one closes |
//! | time to send a request's body (ingress) | `--body-read-timeout` | 30 s | 408 |
//!
//! HTTP/2 (h2c) connections get the same header bound
//! (`SETTINGS_MAX_HEADER_LIST_SIZE`), keep-alive pings every
//! `--header-read-timeout` and are closed when a ping goes unanswered for as
//! long.

use bytes::Bytes;
use clap::Args;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The smallest head bound hyper supports.
pub const MIN_HEADER_BYTES: usize = 8192;

/// What one client may make a listener hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct ServerLimits {
    /// Time a client has to send a request's headers; an idle keep-alive
    /// connection is closed after it too.
    #[arg(long, env = "KN_CHANNEL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Most headers in one request (431 beyond).
    #[arg(long, env = "KN_CHANNEL_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Largest request head (start line and headers) in bytes (431 beyond;
    /// at least 8 KiB).
    #[arg(long, env = "KN_CHANNEL_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Most connections open at once; more wait in the listen backlog.
    #[arg(long, env = "KN_CHANNEL_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// Time a client has to send a request's body, once its headers are in
    /// (408 beyond).
    #[arg(long, env = "KN_CHANNEL_BODY_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerLimits {
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The head must fit hyper's read buffer, which cannot be smaller
        // than 8 KiB.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_headers(self.max_headers)
            .max_buf_size(self.max_header_bytes.max(MIN_HEADER_BYTES));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(self.header_read_timeout)
            .keep_alive_timeout(self.header_read_timeout);
        builder
    }
}

/// Serve `handler` on `listener` until `shutdown` is cancelled, then wait up
/// to `grace` for open connections to finish their requests, with the
/// default [`ServerLimits`].
pub async fn serve<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_with(
        name,
        listener,
        handler,
        shutdown,
        grace,
        ServerLimits::default(),
    )
    .await
}

/// [`serve`] with `limits`.
pub async fn serve_with<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ServerLimits,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_inner(name, listener, handler, shutdown, grace, limits, None).await
}

/// [`serve_with`] over TLS: each connection's handshake must complete
/// within the header timeout.
pub async fn serve_tls<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ServerLimits,
    acceptor: tokio_rustls::TlsAcceptor,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    serve_inner(
        name,
        listener,
        handler,
        shutdown,
        grace,
        limits,
        Some(acceptor),
    )
    .await
}

async fn serve_inner<H, Fut>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    grace: Duration,
    limits: ServerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let builder = limits.builder();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(
        usize::try_from(limits.max_connections)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS),
    ));
    let mut full_logged = false;
    loop {
        // A free slot first: beyond the bound, connections wait in the
        // kernel's backlog instead of holding memory here.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        server = name,
                        max = limits.max_connections,
                        "connection limit reached; new connections wait (--max-connections)"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if slots.available_permits() > 0 {
            full_logged = false;
        }
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper waits for a client's first bytes (to tell HTTP/1 from
            // HTTP/2) with no timer of its own: a client that connects and
            // says nothing is dropped after the header timeout here, and a
            // TLS handshake must complete within it.
            let result = match tls {
                None => {
                    let mut probe = [0u8; 1];
                    match tokio::time::timeout(first_byte, stream.peek(&mut probe)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => {
                            tracing::debug!(server = name, %peer, "connection closed: nothing sent within the header timeout");
                            return;
                        }
                    }
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(first_byte, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(server = name, %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(server = name, %peer, "connection closed: no TLS handshake within the header timeout");
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(server = name, "connections still open after the grace period; closing them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: ServerLimits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(serve_with(
            "test",
            listener,
            |_req| async { crate::admin::respond(StatusCode::OK, "text/plain", "ok\n") },
            stop.clone(),
            Duration::from_millis(100),
            limits,
        ));
        (addr, stop)
    }

    /// Read until the server closes or `limit` passes; what was read.
    async fn read_all(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into(), true),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (String::from_utf8_lossy(&out).into(), false),
            }
        }
    }

    fn limits() -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        }
    }

    #[tokio::test]
    async fn a_slow_client_and_an_idle_connection_are_closed_after_the_header_timeout() {
        let (addr, _stop) = start(limits()).await;
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"POST /a/b HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        let started = Instant::now();
        let (_, closed) = read_all(&mut slow, Duration::from_secs(5)).await;
        assert!(closed, "a slowloris client is cut off");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );

        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let (answer, closed) = read_all(&mut idle, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(closed, "the idle keep-alive connection is closed");
    }

    #[tokio::test]
    async fn too_many_or_too_large_headers_get_431() {
        let (addr, _stop) = start(ServerLimits {
            max_headers: 20,
            max_header_bytes: 8192,
            ..limits()
        })
        .await;
        let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
        let large = format!("x-big: {}\r\n", "a".repeat(10_000));
        for extra in [many, large] {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            c.write_all(format!("GET / HTTP/1.1\r\nhost: x\r\n{extra}\r\n").as_bytes())
                .await
                .expect("write");
            let (answer, _) = read_all(&mut c, Duration::from_secs(5)).await;
            assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        }
        let mut ok = TcpStream::connect(addr).await.expect("connect");
        ok.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n\r\n")
            .await
            .expect("write");
        let (answer, _) = read_all(&mut ok, Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_bound_wait_for_a_free_slot() {
        let (addr, _stop) = start(ServerLimits {
            max_connections: 2,
            ..limits()
        })
        .await;
        // Two silent clients hold both slots until the header timeout.
        let _a = TcpStream::connect(addr).await.expect("connect");
        let _b = TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        let mut c = TcpStream::connect(addr).await.expect("connect (backlog)");
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let (answer, _) = read_all(&mut c, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "served only once a slot was free: {:?}",
            started.elapsed()
        );
    }
}
