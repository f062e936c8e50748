//! Kafka pieces of the harness: a `tansu` broker (a Kafka-protocol broker)
//! owned by a test, and the real `kafka-dispatcher` binary.
//!
//! The broker listens on a free loopback port, with in-memory storage or a
//! SQLite file (which survives [`Tansu::restart`]), and is killed on drop.
//! A [`KafkaDispatcher`] serves manifests whose channels select the `kafka`
//! backend; it can be SIGKILLed and restarted on the same ports.

use crate::{free_port, Dispatcher};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// Build `kafka-dispatcher` once per test process; its path.
pub fn kafka_dispatcher_bin() -> PathBuf {
    crate::build_bin("channel-kafka", "kafka-dispatcher")
}

/// The `kafka-dispatcher` flags for the broker at `bootstrap`.
pub fn dispatcher_args(bootstrap: &str) -> Vec<String> {
    vec!["--bootstrap-servers".to_owned(), bootstrap.to_owned()]
}

/// Starts the real `kafka-dispatcher` as a [`Dispatcher`] (which can be
/// SIGKILLed and restarted on the same ports).
#[derive(Debug)]
pub struct KafkaDispatcher;

impl KafkaDispatcher {
    /// Start on `manifests` against Kafka at `bootstrap`, and wait until ready.
    pub async fn start(manifests: &str, bootstrap: &str, extra: &[&str]) -> Dispatcher {
        let d = Self::spawn(manifests, bootstrap, extra);
        d.wait_ready().await;
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(manifests: &str, bootstrap: &str, extra: &[&str]) -> Dispatcher {
        let mut args = dispatcher_args(bootstrap);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Dispatcher::launch_binary(kafka_dispatcher_bin(), args, "", manifests, &[])
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

/// The `noida-db` binary (PyPI `noida-db`): `$NOIDA_DB`, else the one in
/// the Python package (not its launcher script, which runs it as a child
/// that would outlive a kill), else `PATH`.
pub fn noida_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NOIDA_DB") {
        return PathBuf::from(p);
    }
    let packaged = Command::new("python3")
        .args([
            "-c",
            "import noida_db, os; print(os.path.join(os.path.dirname(noida_db.__file__), 'noida-db'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.exists());
    packaged.unwrap_or_else(|| PathBuf::from("noida-db"))
}

/// A running `noida-db` Kafka-protocol broker (a second implementation
/// beside tansu), on a free loopback port with its data in a temporary
/// directory; killed on drop. Known difference from Apache Kafka: it never
/// expels a consumer-group member that died without leaving, so tests that
/// kill a consumer restart it as the same static member
/// (`group.instance.id`).
#[derive(Debug)]
pub struct Noida {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Noida {
    /// Start, or `None` (with the reason printed) when `noida-db` is not
    /// installed (`pip install noida-db==0.2.3`; `.ci/run` installs it).
    pub fn start() -> Option<Noida> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("noida.log")).expect("log");
        let child = match Command::new(noida_bin())
            .args([
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                &port.to_string(),
            ])
            .args(["--host", "127.0.0.1", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIPPED on noida-db: cannot start {} ({e}); pip install noida-db==0.2.3",
                    noida_bin().display()
                );
                return None;
            }
        };
        let n = Noida {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "noida-db did not start; log:\n{}",
                n.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(n)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("noida.log")).unwrap_or_default()
    }
}

impl Drop for Noida {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
