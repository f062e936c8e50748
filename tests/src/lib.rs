//! Harness for the end-to-end tests: start the real binaries, real HTTP
//! subscribers on loopback, and a client to send events.
//!
//! Every wait is bounded; every process started is killed when its handle
//! is dropped.

use bytes::Bytes;
use channel_core::event::{decode_http, encode_binary, encode_structured, Event};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod apiserver;
pub mod compose;
pub mod forges;
pub mod kafka;
pub mod nats;
pub mod provisioner;
pub mod sources;

/// Build `bin` of `package` once per test process (cached per binary) and
/// return its path. Building from the test keeps `cargo test` self-contained.
pub fn build_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .status()
        .expect("cargo build runs");
    assert!(status.success(), "building {bin} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let path = target.join("debug").join(bin);
    built.insert(bin.to_owned(), path.clone());
    path
}

/// Build the in-memory dispatcher and event-display; the directory holding them.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_bin("event-display", "event-display");
        build_bin("channel-inmemory", "inmemory-dispatcher")
            .parent()
            .expect("target dir")
            .to_path_buf()
    })
}

/// A free loopback port (bound and released), taken below the kernel's
/// ephemeral range (32768–60999 by default): a port from `bind(0)` is an
/// ephemeral one, which the tests' own outgoing connections can take between
/// this check and the server's bind (seen as `Address already in use`).
/// Ports are handed out in turn from a per-process starting point, so two
/// calls in one test process never return the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(LOW + n).unwrap_or(0);
        if port != 0 && StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Wait until `check` is true, at most `timeout`.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The backend a [`Dispatcher`] runs on, owning its broker (if any) for the
/// test's lifetime. The same test bodies run against each (the conformance
/// suite): only the binary, its broker flag and a default class differ.
#[derive(Debug)]
pub enum Backend {
    InMemory,
    Nats(nats::NatsServer),
    Kafka(kafka::Tansu),
}

impl Backend {
    pub fn inmemory() -> Backend {
        Backend::InMemory
    }

    /// A fresh `nats-server -js` for this test.
    pub fn nats() -> Backend {
        Backend::Nats(nats::NatsServer::start())
    }

    /// A fresh tansu broker for this test.
    pub fn kafka() -> Backend {
        Backend::Kafka(kafka::Tansu::start())
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::InMemory => "inmemory",
            Backend::Nats(_) => "nats",
            Backend::Kafka(_) => "kafka",
        }
    }

    fn binary(&self) -> PathBuf {
        match self {
            Backend::InMemory => bin_dir().join("inmemory-dispatcher"),
            Backend::Nats(_) => nats::nats_dispatcher_bin(),
            Backend::Kafka(_) => kafka::kafka_dispatcher_bin(),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Backend::InMemory => Vec::new(),
            Backend::Nats(server) => nats::dispatcher_args(&server.url()),
            Backend::Kafka(broker) => kafka::dispatcher_args(&broker.bootstrap()),
        }
    }

    /// A default class of this backend, put in front of a test's manifests
    /// so that plain `Channel`s are served by it.
    pub fn class_yaml(&self) -> String {
        match self {
            Backend::InMemory => String::new(),
            Backend::Nats(_) | Backend::Kafka(_) => format!(
                "apiVersion: eventing.knative.dev/v1alpha1\nkind: ClusterChannelProvisioner\nmetadata: {{name: {0}, annotations: {{eventing.knative.dev/is-default-provisioner: \"true\"}}}}\nspec: {{backend: {0}}}\n---\n",
                self.name()
            ),
        }
    }
}

/// A running dispatcher (`inmemory-dispatcher` unless started on another [`Backend`]).
#[derive(Debug)]
pub struct Dispatcher {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    client: HttpClient,
    /// Put in front of manifests on every (re)write: the backend's class.
    prefix: String,
    binary: PathBuf,
    /// Every flag after the listen addresses (backend flags and extras).
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Follow this contract file instead of the manifests directory.
    contract: Option<PathBuf>,
}

impl Dispatcher {
    /// Start on `backend` with `manifests` (a default class of the backend is
    /// added) and wait until ready.
    pub async fn start_on(backend: &Backend, manifests: &str, extra: &[&str]) -> Dispatcher {
        let d = Self::launch(backend, manifests, extra, &[]);
        d.wait_ready().await;
        d
    }

    /// Start on `manifests` (written to a file in a fresh directory) with
    /// extra flags, and wait until ready.
    pub async fn start(manifests: &str, extra: &[&str]) -> Dispatcher {
        let d = Self::spawn(manifests, extra);
        d.wait_ready().await;
        d
    }

    /// Start with extra environment variables, and wait until ready.
    pub async fn start_with_env(
        manifests: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Dispatcher {
        let d = Self::spawn_with_env(manifests, extra, env);
        d.wait_ready().await;
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(manifests: &str, extra: &[&str]) -> Dispatcher {
        Self::spawn_with_env(manifests, extra, &[])
    }

    /// Start without waiting for readiness, with extra environment variables.
    pub fn spawn_with_env(manifests: &str, extra: &[&str], env: &[(&str, &str)]) -> Dispatcher {
        Self::launch(&Backend::InMemory, manifests, extra, env)
    }

    fn launch(
        backend: &Backend,
        manifests: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Dispatcher {
        let mut args = backend.args();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Self::launch_binary(
            backend.binary(),
            args,
            &backend.class_yaml(),
            manifests,
            env,
        )
    }

    /// Spawn `binary` on `manifests` (after `prefix`) with `args`, on free
    /// loopback ports, without waiting for readiness.
    pub fn launch_binary(
        binary: PathBuf,
        args: Vec<String>,
        prefix: &str,
        manifests: &str,
        env: &[(&str, &str)],
    ) -> Dispatcher {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(
            dir.path().join("manifests/channels.yaml"),
            format!("{prefix}{manifests}"),
        )
        .expect("write manifests");
        let mut d = Dispatcher {
            child: None,
            dir,
            ingress: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            admin: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            client: HttpClient::new(),
            prefix: prefix.to_owned(),
            binary,
            args,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            contract: None,
        };
        d.spawn_process();
        d
    }

    /// Spawn `binary` following the contract file `contract` (written by a
    /// provisioner) with `args`, on the given addresses, without waiting
    /// for readiness.
    pub fn launch_on_contract(
        binary: PathBuf,
        args: Vec<String>,
        contract: PathBuf,
        ingress: SocketAddr,
        admin: SocketAddr,
    ) -> Dispatcher {
        let mut d = Dispatcher {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            ingress,
            admin,
            client: HttpClient::new(),
            prefix: String::new(),
            binary,
            args,
            env: Vec::new(),
            contract: Some(contract),
        };
        d.spawn_process();
        d
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dispatcher.log"))
            .expect("log file");
        let source = match &self.contract {
            Some(file) => ["--contract".into(), file.clone()],
            None => ["--manifests".into(), self.dir.path().join("manifests")],
        };
        let child = Command::new(&self.binary)
            .args(source)
            .args([
                "--listen",
                &self.ingress.to_string(),
                "--admin-listen",
                &self.admin.to_string(),
            ])
            .args(["--watch-interval", "100ms", "--drain-timeout", "5s"])
            .args(&self.args)
            .env(
                "RUST_LOG",
                "info,dispatcher=debug,channel_nats=debug,channel_kafka=debug",
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dispatcher starts");
        self.child = Some(child);
    }

    /// SIGKILL the process and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again with the same manifests and ports (after [`Self::kill`]),
    /// and wait until ready.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn_process();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        let ok = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok((status, _)) = self.client.get(&self.admin_url("/readyz")).await {
                    if status == StatusCode::OK {
                        break true;
                    }
                }
                if Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        };
        assert!(ok, "dispatcher not ready in 30 s; log:\n{}", self.log());
    }

    /// Ingress URL of a path, e.g. `/default/orders`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The dispatcher's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dispatcher.log")).unwrap_or_default()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (_, body) = self
            .client
            .get(&self.admin_url("/status"))
            .await
            .expect("status");
        serde_json::from_slice(&body).expect("status is JSON")
    }

    /// The applied contract generation.
    pub async fn generation(&self) -> u64 {
        self.status().await["generation"].as_u64().unwrap_or(0)
    }

    /// Sum of the metric samples whose line starts with `prefix` (name and
    /// optionally the first labels).
    pub async fn metric(&self, prefix: &str) -> f64 {
        let Ok((_, body)) = self.client.get(&self.admin_url("/metrics")).await else {
            return 0.0;
        };
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Replace the manifests atomically (write and rename) and wait until the
    /// new generation is applied.
    pub async fn rewrite(&self, manifests: &str) {
        let before = self.generation().await;
        let tmp = self.dir.path().join("channels.yaml.tmp");
        std::fs::write(&tmp, format!("{}{manifests}", self.prefix)).expect("write");
        std::fs::rename(&tmp, self.dir.path().join("manifests/channels.yaml")).expect("rename");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.generation().await <= before {
            assert!(
                Instant::now() < deadline,
                "reload not applied in 5 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Send SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Send SIGKILL.
    pub fn sigkill(&self) {
        self.signal("KILL");
    }

    fn signal(&self, name: &str) {
        if self.pid() > 0 {
            let _ = Command::new("kill")
                .args([format!("-{name}"), self.pid().to_string()])
                .status();
        }
    }

    /// Wait for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request a [`Sink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub event: Option<Event>,
}

impl Received {
    pub fn id(&self) -> String {
        self.event
            .as_ref()
            .map(|e| e.id.clone())
            .unwrap_or_default()
    }
}

/// How a sink answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn with_body(mut self, body: &str) -> Answer {
        self.body = Bytes::copy_from_slice(body.as_bytes());
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }

    /// A `200` carrying `event` in binary mode.
    pub fn reply(event: &Event) -> Answer {
        let mut headers = HeaderMap::new();
        let body = encode_binary(event, &mut headers);
        Answer {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect(),
            body,
            delay: Duration::ZERO,
        }
    }
}

type Behaviour = Arc<dyn Fn(&Received, usize) -> Answer + Send + Sync>;

/// A real HTTP subscriber on loopback that records what it receives.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// While set, requests wait (bounded by 60 s) before being answered.
    pub stalled: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Sink {
    /// A sink answering `202` to everything.
    pub async fn accepting() -> Sink {
        Sink::start(|_, _| Answer::status(202)).await
    }

    /// A sink answering by `behaviour(request, n)`, `n` counting from 1.
    pub async fn start<F>(behaviour: F) -> Sink
    where
        F: Fn(&Received, usize) -> Answer + Send + Sync + 'static,
    {
        let behaviour: Behaviour = Arc::new(behaviour);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, stall) = (received.clone(), stalled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (rec, stall, behaviour) = (rec.clone(), stall.clone(), behaviour.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (rec, stall, behaviour) =
                            (rec.clone(), stall.clone(), behaviour.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let event = decode_http(&parts.headers, body.clone()).ok();
                            let r = Received {
                                at: Instant::now(),
                                path: parts.uri.path().to_owned(),
                                headers: parts.headers,
                                body,
                                event,
                            };
                            let n = {
                                let mut all = rec.lock().expect("lock");
                                all.push(r.clone());
                                all.len()
                            };
                            let deadline = Instant::now() + Duration::from_secs(60);
                            while stall.load(std::sync::atomic::Ordering::SeqCst)
                                && Instant::now() < deadline
                            {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            let answer = behaviour(&r, n);
                            if !answer.delay.is_zero() {
                                tokio::time::sleep(answer.delay).await;
                            }
                            let mut response = Response::new(Full::new(answer.body));
                            *response.status_mut() =
                                StatusCode::from_u16(answer.status).expect("status");
                            for (k, v) in answer.headers {
                                response.headers_mut().insert(
                                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                                    http::HeaderValue::from_str(&v).expect("value"),
                                );
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink {
            addr,
            received,
            stalled,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    /// Wait until at least `n` requests arrived (at most `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let ok = eventually(timeout, || self.count() >= n).await;
        let got = self.received();
        assert!(
            ok,
            "expected {n} requests at {}, got {}",
            self.url(),
            got.len()
        );
        got
    }

    /// Ids of the events received, in arrival order.
    pub fn ids(&self) -> Vec<String> {
        self.received().iter().map(Received::id).collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small HTTP client (HTTP/1.1 keep-alive, or h2c prior knowledge).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// An HTTP/2 cleartext (prior knowledge) client.
    pub fn h2c() -> Self {
        HttpClient {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }

    pub async fn get(&self, url: &str) -> Result<(StatusCode, Bytes), String> {
        let req = Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, _, body) = self.send(req).await?;
        Ok((status, body))
    }

    /// Send any request; the answer's status, headers and body.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let response = tokio::time::timeout(Duration::from_secs(15), self.client.request(req))
            .await
            .map_err(|_| "request timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    /// POST an event in binary mode.
    pub async fn post_binary(&self, url: &str, event: &Event) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::post(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let body = encode_binary(event, req.headers_mut());
        *req.body_mut() = Full::new(body);
        self.send(req).await.expect("POST answered")
    }

    /// POST an event in structured mode.
    pub async fn post_structured(
        &self,
        url: &str,
        event: &Event,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::post(url)
            .body(Full::new(Bytes::new()))
            .expect("request");
        let body = encode_structured(event, req.headers_mut());
        *req.body_mut() = Full::new(body);
        self.send(req).await.expect("POST answered")
    }
}

/// POST an event in binary mode without panicking on a dead dispatcher:
/// the status, if any.
pub async fn try_post(client: &HttpClient, url: &str, id: &str) -> Option<StatusCode> {
    let mut req = Request::post(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let body = encode_binary(&event(id), req.headers_mut());
    *req.body_mut() = Full::new(body);
    client.send(req).await.ok().map(|(status, _, _)| status)
}

/// Wait until `sink` has received every id in `accepted` (at least once),
/// and fail naming the missing ones.
pub async fn assert_all_delivered(
    sink: &Sink,
    accepted: &std::collections::BTreeSet<String>,
    timeout: Duration,
) {
    let ok = eventually(timeout, || {
        let got: std::collections::BTreeSet<String> = sink.ids().into_iter().collect();
        accepted.is_subset(&got)
    })
    .await;
    let got: std::collections::BTreeSet<String> = sink.ids().into_iter().collect();
    assert!(
        ok,
        "{} of {} accepted events never delivered, e.g. {:?}",
        accepted.difference(&got).count(),
        accepted.len(),
        accepted.difference(&got).take(5).collect::<Vec<_>>()
    );
}

/// The event without the extensions a backend adds on delivery (Kafka's
/// `knativekafkapartition` and `knativekafkaoffset`, as Knative's Kafka
/// channel adds them), for comparing what was sent with what arrived.
pub fn without_backend_extensions(event: &Event) -> Event {
    let mut e = event.clone();
    e.extensions.remove("knativekafkapartition");
    e.extensions.remove("knativekafkaoffset");
    e
}

/// An event with a JSON payload, for tests.
pub fn event(id: &str) -> Event {
    Event::new(id, "/e2e", "dev.test.event").with_data(
        "application/json",
        Bytes::from(format!("{{\"id\":\"{id}\"}}")),
    )
}

/// Manifests for one channel `default/<channel>` and subscriptions given as
/// `(name, subscriber uri, delivery yaml or "")`.
pub fn channel_yaml(channel: &str, subs: &[(&str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: {channel}, namespace: default}}\n"
    );
    for (name, uri, delivery) in subs {
        out.push_str(&format!(
            "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: {channel}}}\n  subscriber: {{uri: \"{uri}\"}}\n"
        ));
        if !delivery.is_empty() {
            out.push_str(&format!("  delivery: {delivery}\n"));
        }
    }
    out
}

/// Run each test body (an `async fn(Backend)` beside the call) against
/// every backend: one test module per backend, named after the body.
#[macro_export]
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod inmemory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Backend::inmemory()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Backend::nats()).await
                }
            )*
        }
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(tests::Backend::kafka()).await
                }
            )*
        }
    };
}
