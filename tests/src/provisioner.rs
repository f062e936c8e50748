//! The standalone provisioner as a test process: it watches a manifests
//! directory, writes one contract per backend into a contracts directory,
//! and serves its status on a free loopback port.

use crate::{build_bin, free_port, HttpClient};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Build `provisioner` once per test process; its path.
pub fn provisioner_bin() -> PathBuf {
    build_bin("provisioner", "provisioner")
}

/// A running `provisioner standalone`.
#[derive(Debug)]
pub struct Provisioner {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    client: HttpClient,
}

impl Provisioner {
    /// Start on `manifests` (one file, `manifests/channels.yaml`) with extra
    /// flags; returns once the status server answers.
    pub async fn start(manifests: &str, extra: &[String]) -> Provisioner {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/channels.yaml"), manifests).expect("write");
        let log = std::fs::File::create(dir.path().join("provisioner.log")).expect("log file");
        let port = free_port();
        let child = Command::new(provisioner_bin())
            .arg("standalone")
            .arg("--manifests")
            .arg(dir.path().join("manifests"))
            .arg("--contracts-dir")
            .arg(dir.path().join("contracts"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--watch-interval", "200ms"])
            .args(extra)
            .env("RUST_LOG", "info,provisioner=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("provisioner starts");
        let p = Provisioner {
            child: Some(child),
            dir,
            port,
            client: HttpClient::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.client.get(&p.url("/healthz")).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "provisioner not up in 30 s; log:\n{}",
                p.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        p
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The contract file of `backend` (`inmemory`, `kafka`, `nats`).
    pub fn contract(&self, backend: &str) -> PathBuf {
        self.dir.path().join(format!("contracts/{backend}.json"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provisioner.log")).unwrap_or_default()
    }

    /// `GET /status`.
    pub async fn status(&self) -> serde_json::Value {
        match self.client.get(&self.url("/status")).await {
            Ok((_, body)) => serde_json::from_slice(&body).unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// The status entry of one resource, if listed.
    pub async fn resource(&self, kind: &str, name: &str) -> Option<serde_json::Value> {
        self.status().await["resources"]
            .as_array()?
            .iter()
            .find(|r| r["kind"] == kind && r["name"] == name)
            .cloned()
    }

    /// Wait until `check` holds for the resource's status entry (`None` when
    /// it is not listed); fail with the status document and the log.
    pub async fn wait_resource(
        &self,
        kind: &str,
        name: &str,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(Option<&serde_json::Value>) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.resource(kind, name).await;
            if check(r.as_ref()) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} {name}: {what} not reached in {timeout:?}; status:\n{:#}\nprovisioner log:\n{}",
                self.status().await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Replace the manifests atomically (write and rename).
    pub fn rewrite(&self, manifests: &str) {
        let tmp = self.dir.path().join("channels.yaml.tmp");
        std::fs::write(&tmp, manifests).expect("write");
        std::fs::rename(&tmp, self.dir.path().join("manifests/channels.yaml")).expect("rename");
    }

    /// Run `provisioner status --url ...` with extra flags.
    pub fn status_command(&self, extra: &[&str]) -> Output {
        Command::new(provisioner_bin())
            .args(["status", "--url", &self.url("")])
            .args(extra)
            .output()
            .expect("provisioner status runs")
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether a status entry is `Ready=True`.
pub fn is_ready(r: Option<&serde_json::Value>) -> bool {
    r.is_some_and(|r| r["ready"] == "True")
}

/// Where one backend's dispatcher listens, known before it starts (the
/// classes of a standalone test name it).
#[derive(Debug)]
pub struct Slot {
    pub ingress: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

impl Slot {
    /// Two free loopback addresses.
    pub fn new() -> Slot {
        let addr = || format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Slot {
            ingress: addr(),
            admin: addr(),
        }
    }

    /// The class's `spec.dispatcher` naming this slot.
    pub fn dispatcher_yaml(&self) -> String {
        format!(
            "dispatcher: {{url: \"http://{}\", adminUrl: \"http://{}\"}}",
            self.ingress, self.admin
        )
    }

    /// Start `binary` on this slot, following `contract`.
    pub fn start(
        &self,
        binary: PathBuf,
        args: Vec<String>,
        contract: PathBuf,
    ) -> crate::Dispatcher {
        crate::Dispatcher::launch_on_contract(binary, args, contract, self.ingress, self.admin)
    }
}
