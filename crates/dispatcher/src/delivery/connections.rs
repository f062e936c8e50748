//! Keep-alive HTTP/1.1 connections to destinations, one set per origin
//! (scheme, host, port): a send takes an idle connection of its origin, or
//! opens one (TCP, then TLS for `https`), and gives it back once the
//! response has been read to its end.
//!
//! hyper's connection API does the protocol; this is only the set. It does
//! per request what a delivery needs and no more: one lock to take a
//! connection and one to give it back, no boxed connect future raced
//! against the checkout, and no task spawned per request to wait for the
//! connection to become idle again (the next send waits for that, on the
//! rare occasion it has not happened yet).
//!
//! A connection found closed when taken is skipped; a request that a
//! connection refused before writing any of it (closed by the server in
//! between) is sent on another. Idle connections are kept at most
//! [`IDLE_TIMEOUT`], at most [`MAX_IDLE_PER_ORIGIN`] per origin.

use super::client::Resolver;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long a connection may stay idle before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per origin. Above the deliveries in flight to
/// one subscriber, so that connections are not closed and opened again
/// under load: ten subscriptions of one subscriber with the default window
/// (256) keep their 2,560 connections. (With hyper-util's pool, capped at
/// 1,024, the connections above the cap were closed on every return, and
/// their TIME_WAIT sockets could exhaust the ephemeral ports of a busy
/// node.) Idle connections close after [`IDLE_TIMEOUT`].
pub const MAX_IDLE_PER_ORIGIN: usize = 4096;
/// Longest time to open a TCP connection (all addresses of a host).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP keep-alive probes start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Where requests go: connections are shared only within one origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    https: bool,
    /// The host as written in the URL, IPv6 brackets removed.
    host: Box<str>,
    /// The port written in the URL, if any.
    port: Option<u16>,
}

impl Origin {
    fn of(uri: &Uri) -> Result<Origin, String> {
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("unsupported URL scheme {other:?}")),
            None => return Err("the URL has no scheme".to_owned()),
        };
        let host = uri.host().ok_or("the URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Origin {
            https,
            host: host.into(),
            port: uri.port_u16(),
        })
    }

    fn default_port(&self) -> u16 {
        if self.https {
            443
        } else {
            80
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Sets {
    idle: HashMap<Origin, Vec<Idle>>,
    last_sweep: Option<Instant>,
}

/// The connection sets of one trust configuration (the dispatcher's roots,
/// or those plus a destination's own CA certificates).
#[derive(Clone)]
pub struct Connections {
    resolver: Resolver,
    tls: tokio_rustls::TlsConnector,
    sets: Arc<Mutex<Sets>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// A connection lent to one request; given back by [`Connections::give_back`]
/// once the response body has been read to its end, dropped otherwise.
pub struct Lease {
    origin: Origin,
    sender: Sender,
}

impl Connections {
    pub fn new(resolver: Resolver, roots: rustls::RootCertStore) -> Self {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Connections {
            resolver,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            sets: Arc::default(),
        }
    }

    /// Send `request` (its URI absolute) and return the response head with
    /// the connection it came on. The `Host` header is set from the URI
    /// when the request has none.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), String> {
        let origin = Origin::of(request.uri())?;
        if !request.headers().contains_key(http::header::HOST) {
            let host = host_header(request.uri(), &origin)?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse::<Uri>()
            .map_err(|e| format!("the URL's path is not valid: {e}"))?;
        *request.uri_mut() = path;
        // Idle connections first: a request refused unsent by one (closed
        // meanwhile) goes to the next, then to a new connection.
        while let Some(mut sender) = self.take(&origin) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease { origin, sender })),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(chain(&e.into_error())),
                },
            }
        }
        // Boxed: a connection is opened rarely, and its future (a TLS
        // handshake's state) would otherwise make every send's larger.
        let mut sender = Box::pin(self.connect(&origin)).await?;
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        Ok((response, Lease { origin, sender }))
    }

    /// Keep `lease`'s connection for the next request to its origin.
    pub fn give_back(&self, lease: Lease) {
        if lease.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if sets
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= IDLE_TIMEOUT / 2)
        {
            sets.last_sweep = Some(now);
            sets.idle.retain(|_, idle| {
                idle.retain(|i| {
                    !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT
                });
                !idle.is_empty()
            });
        }
        let idle = sets.idle.entry(lease.origin).or_default();
        if idle.len() < MAX_IDLE_PER_ORIGIN {
            idle.push(Idle {
                sender: lease.sender,
                since: now,
            });
        }
    }

    /// The most recently used idle connection of `origin` that is neither
    /// closed nor too old.
    fn take(&self, origin: &Origin) -> Option<Sender> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        let idle = sets.idle.get_mut(origin)?;
        let now = Instant::now();
        while let Some(i) = idle.pop() {
            if !i.sender.is_closed() && now.duration_since(i.since) < IDLE_TIMEOUT {
                return Some(i.sender);
            }
        }
        None
    }

    /// Open a connection to `origin` and start driving it.
    async fn connect(&self, origin: &Origin) -> Result<Sender, String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, self.tcp(origin))
            .await
            .map_err(|_| {
                format!(
                    "connecting to {}: timed out after {CONNECT_TIMEOUT:?}",
                    origin.host
                )
            })??;
        if origin.https {
            let name = rustls::pki_types::ServerName::try_from(origin.host.to_string())
                .map_err(|e| format!("{:?} is not a valid TLS server name: {e}", origin.host))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {}", origin.host, io_chain(&e)))?;
            self.handshake(tls).await
        } else {
            self.handshake(tcp).await
        }
    }

    /// A TCP connection to the first address of `origin` that answers.
    async fn tcp(&self, origin: &Origin) -> Result<TcpStream, String> {
        let addrs = self
            .resolver
            .resolve(&origin.host)
            .await
            .map_err(|e| format!("resolving {}: {e}", origin.host))?;
        let mut last = format!("resolving {}: no addresses", origin.host);
        for mut addr in addrs {
            set_port(&mut addr, origin.port, origin.default_port());
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
                    return Ok(tcp);
                }
                Err(e) => last = format!("tcp connect error: {addr}: {e}"),
            }
        }
        Err(last)
    }

    /// The HTTP/1.1 handshake over `io`, its connection driven by a task
    /// of its own until it closes.
    async fn handshake<T>(&self, io: T) -> Result<Sender, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| chain(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %chain(&e), "delivery connection closed");
            }
        });
        Ok(sender)
    }
}

/// The `Host` header of a request to `uri`: its host, and its port unless
/// that is the scheme's default (no user information).
fn host_header(uri: &Uri, origin: &Origin) -> Result<http::HeaderValue, String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let value = match origin.port {
        Some(port) if port != origin.default_port() => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    http::HeaderValue::from_str(&value)
        .map_err(|e| format!("the URL's host is not a valid Host header: {e}"))
}

/// The port to connect to: the URL's when it names one; else a local
/// route's own port, or the scheme's default.
fn set_port(addr: &mut SocketAddr, written: Option<u16>, default: u16) {
    match written {
        Some(port) => addr.set_port(port),
        None if addr.port() == 0 => addr.set_port(default),
        None => {}
    }
}

/// An error with its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut reason = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    reason
}

/// An I/O error and what it wraps (a TLS error is the inner error of an
/// `io::Error`).
fn io_chain(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => chain(inner),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_tell_scheme_host_and_written_port_apart() {
        let o = |s: &str| Origin::of(&s.parse().unwrap());
        assert_eq!(
            o("http://[::1]:8080/x").unwrap(),
            Origin {
                https: false,
                host: "::1".into(),
                port: Some(8080)
            }
        );
        assert_ne!(o("http://a/").unwrap(), o("https://a/").unwrap());
        assert_ne!(o("http://a/").unwrap(), o("http://a:80/").unwrap());
        assert!(o("ftp://a/").unwrap_err().contains("ftp"));
    }

    #[test]
    fn the_host_header_names_host_and_non_default_port() {
        let h = |s: &str| {
            let uri: Uri = s.parse().unwrap();
            host_header(&uri, &Origin::of(&uri).unwrap()).unwrap()
        };
        assert_eq!(h("http://a.example/x"), "a.example");
        assert_eq!(h("http://a.example:80/x"), "a.example");
        assert_eq!(h("https://a.example:443/"), "a.example");
        assert_eq!(h("http://user:pw@a.example:8080/"), "a.example:8080");
        assert_eq!(h("http://[::1]:8080/"), "[::1]:8080");
    }

    #[test]
    fn the_written_port_wins_over_a_local_route_s() {
        let mut local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        set_port(&mut local, None, 80);
        assert_eq!(local.port(), 8080, "a local route keeps its port");
        set_port(&mut local, Some(9000), 80);
        assert_eq!(local.port(), 9000);
        let mut resolved: SocketAddr = "10.0.0.1:0".parse().unwrap();
        set_port(&mut resolved, None, 443);
        assert_eq!(resolved.port(), 443);
    }

    /// A loopback HTTP/1.1 server answering 202, keeping connections
    /// alive or not; counts the connections it accepted.
    async fn server(keep_alive: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(202)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    async fn post(c: &Connections, url: &str) -> u16 {
        use http_body_util::BodyExt as _;
        let request = Request::post(url)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let (response, lease) = c.send(request).await.expect("a response");
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("the body");
        c.give_back(lease);
        status
    }

    fn connections() -> Connections {
        Connections::new(Resolver { local: None }, rustls::RootCertStore::empty())
    }

    /// Five POSTs to a server keeping connections alive or not, each
    /// answered 202: how many connections the server accepted.
    async fn connections_for_five_posts(keep_alive: bool) -> usize {
        let (addr, accepted) = server(keep_alive).await;
        let c = connections();
        for _ in 0..5 {
            assert_eq!(post(&c, &format!("http://{addr}/")).await, 202);
        }
        accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn requests_to_one_origin_reuse_its_connection() {
        assert_eq!(connections_for_five_posts(true).await, 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_a_failed_request() {
        assert_eq!(connections_for_five_posts(false).await, 5);
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = unused.local_addr().unwrap();
        drop(unused);
        let c = connections();
        let request = Request::post(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let e = c.send(request).await.err().expect("refused");
        assert!(e.contains(&addr.to_string()), "{e}");
    }
}
