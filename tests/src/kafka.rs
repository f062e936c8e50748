//! Kafka pieces of the harness: a `tansu` broker (a Kafka-protocol broker)
//! owned by a test, and the real `kafka-dispatcher` binary.
//!
//! The broker listens on a free loopback port, with in-memory storage or a
//! SQLite file (which survives [`Tansu::restart`]), and is killed on drop.
//! A [`KafkaDispatcher`] serves manifests whose channels select the `kafka`
//! backend; it can be SIGKILLed and restarted on the same ports.

use crate::{free_port, HttpClient};
use http::StatusCode;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `tansu` binary: `$TANSU`, else `~/.cargo/bin/tansu`, else `PATH`.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

/// A running `tansu broker`.
#[derive(Debug)]
pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    storage: String,
}

impl Tansu {
    /// Start with in-memory storage on a free loopback port.
    pub fn start() -> Tansu {
        Self::with_storage(|_| "memory://tansu/".to_owned())
    }

    /// Start with SQLite storage in a temporary file (kept across restarts).
    pub fn start_sqlite() -> Tansu {
        // tansu resolves the path against its working directory (the temp dir).
        Self::with_storage(|_| "sqlite://tansu.db".to_owned())
    }

    fn with_storage(storage: impl FnOnce(&Path) -> String) -> Tansu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Tansu {
            child: None,
            port: free_port(),
            storage: storage(dir.path()),
            dir,
        };
        t.spawn();
        t
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("log file");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", &self.storage])
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu installed (cargo install tansu --version 0.6.0 --locked --features dynostore,libsql)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Kill the broker; SQLite storage stays for [`Tansu::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Build `kafka-dispatcher` (and `event-display`) once per test process; its path.
pub fn kafka_dispatcher_bin() -> &'static Path {
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
                "channel-kafka",
                "--bin",
                "kafka-dispatcher",
            ])
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building kafka-dispatcher failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        target.join("debug").join("kafka-dispatcher")
    })
}

/// A running `kafka-dispatcher`.
#[derive(Debug)]
pub struct KafkaDispatcher {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    bootstrap: String,
    extra: Vec<String>,
    client: HttpClient,
}

impl KafkaDispatcher {
    /// Start on `manifests` against Kafka at `bootstrap`, and wait until ready.
    pub async fn start(manifests: &str, bootstrap: &str, extra: &[&str]) -> KafkaDispatcher {
        let d = Self::spawn(manifests, bootstrap, extra);
        d.wait_ready().await;
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(manifests: &str, bootstrap: &str, extra: &[&str]) -> KafkaDispatcher {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/channels.yaml"), manifests)
            .expect("write manifests");
        let mut d = KafkaDispatcher {
            child: None,
            dir,
            ingress: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            admin: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            bootstrap: bootstrap.to_owned(),
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
        let child = Command::new(kafka_dispatcher_bin())
            .arg("--manifests")
            .arg(self.dir.path().join("manifests"))
            .args([
                "--listen",
                &self.ingress.to_string(),
                "--admin-listen",
                &self.admin.to_string(),
                "--bootstrap-servers",
                &self.bootstrap,
            ])
            .args(["--watch-interval", "100ms", "--drain-timeout", "5s"])
            .args(&self.extra)
            .env("RUST_LOG", "info,channel_kafka=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kafka-dispatcher starts");
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((status, _)) = self.client.get(&self.admin_url("/readyz")).await {
                if status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "kafka-dispatcher not ready in 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
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

impl Drop for KafkaDispatcher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Manifests for a `kafka` class (the dispatcher's `--bootstrap-servers`
/// applies; one record per producer batch, because tansu 0.6 cannot fetch
/// from inside a batch — see docs/kafka.md) and one channel `default/<channel>` (a
/// `KafkaChannel` template with `template_spec`, YAML flow mapping or ""),
/// with subscriptions `(name, subscriber uri, delivery yaml or "", ordered)`.
pub fn kafka_channel_yaml(
    channel: &str,
    template_spec: &str,
    subs: &[(&str, &str, &str, bool)],
) -> String {
    let spec = if template_spec.is_empty() {
        String::new()
    } else {
        format!(", spec: {template_spec}")
    };
    let mut out = format!(
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: ClusterChannelProvisioner\nmetadata: {{name: kafka}}\nspec: {{backend: kafka, parameters: {{config: {{batch.num.messages: 1}}}}}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: {channel}, namespace: default}}\nspec:\n  channelTemplate: {{apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel{spec}}}\n"
    );
    for (name, uri, delivery, ordered) in subs {
        let annotations = if *ordered {
            ", annotations: {kafka.eventing.knative.dev/delivery.order: ordered}"
        } else {
            ""
        };
        out.push_str(&format!(
            "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: {name}, namespace: default{annotations}}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: {channel}}}\n  subscriber: {{uri: \"{uri}\"}}\n"
        ));
        if !delivery.is_empty() {
            out.push_str(&format!("  delivery: {delivery}\n"));
        }
    }
    out
}
