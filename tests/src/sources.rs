//! A running `source-adapter` on a manifests directory of its own.

use crate::{build_bin, free_port, HttpClient};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The adapter binary, built once.
pub fn adapter_bin() -> PathBuf {
    build_bin("sources", "source-adapter")
}

#[derive(Debug)]
pub struct Adapter {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub admin: SocketAddr,
    /// The webhook listener (GitHub and GitLab sources).
    pub webhook: SocketAddr,
    args: Vec<String>,
    client: HttpClient,
}

impl Adapter {
    /// Start on `manifests` with `extra` flags and wait until ready.
    pub async fn start(manifests: &str, extra: &[&str]) -> Adapter {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        std::fs::write(dir.path().join("manifests/sources.yaml"), manifests).expect("write");
        let source = dir.path().join("manifests");
        let admin = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::launch(dir, "--manifests", source, admin, extra).await
    }

    /// Start following the sources contract `contract` (written by a
    /// provisioner) with its admin server on `admin`, and wait until ready.
    pub async fn start_on_contract(contract: PathBuf, admin: SocketAddr) -> Adapter {
        Self::start_on_contract_with(contract, admin, &[]).await
    }

    /// [`Adapter::start_on_contract`] with `extra` flags.
    pub async fn start_on_contract_with(
        contract: PathBuf,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Adapter {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, "--contract", contract, admin, extra).await
    }

    /// The webhook URL of source `namespace/name`.
    pub fn webhook_url(&self, namespace: &str, name: &str) -> String {
        format!("http://{}/{namespace}/{name}", self.webhook)
    }

    async fn launch(
        dir: tempfile::TempDir,
        flag: &str,
        source: PathBuf,
        admin: SocketAddr,
        extra: &[&str],
    ) -> Adapter {
        // The webhook listener: `extra`'s, else a free port.
        let webhook: SocketAddr = extra
            .iter()
            .position(|a| *a == "--webhook-listen")
            .and_then(|i| extra.get(i + 1))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().expect("addr"));
        let mut args: Vec<String> = vec![
            flag.to_owned(),
            source.display().to_string(),
            "--admin-listen".to_owned(),
            admin.to_string(),
            "--watch-interval".to_owned(),
            "100ms".to_owned(),
        ];
        if !extra.contains(&"--webhook-listen") {
            args.extend(["--webhook-listen".to_owned(), webhook.to_string()]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut a = Adapter {
            child: None,
            dir,
            admin,
            webhook,
            args,
            client: HttpClient::new(),
        };
        a.spawn();
        a.wait_ready().await;
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("adapter.log"))
            .expect("log");
        let child = Command::new(adapter_bin())
            .args(&self.args)
            .env("RUST_LOG", "info,sources=debug,dispatcher=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("source-adapter starts");
        self.child = Some(child);
    }

    /// Start again with the same flags (after [`Adapter::sigkill`]) and
    /// wait until ready.
    pub async fn restart(&mut self) {
        self.sigkill();
        self.spawn();
        self.wait_ready().await;
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("source-adapter exited ({exit}):\n{}", self.log());
            }
            if let Ok((status, _)) = self.client.get(&self.url("/readyz")).await {
                if status.is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("source-adapter not ready:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("adapter.log")).unwrap_or_default()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        let (_, body) = self
            .client
            .get(&self.url("/status"))
            .await
            .expect("admin answers");
        serde_json::from_slice(&body).expect("status JSON")
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (_, body) = self
            .client
            .get(&self.url("/metrics"))
            .await
            .expect("admin answers");
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Replace the manifests (the adapter applies the difference).
    pub fn rewrite(&self, manifests: &str) {
        let path = self.dir.path().join("manifests/sources.yaml");
        let tmp = self.dir.path().join("sources.yaml.tmp");
        std::fs::write(&tmp, manifests).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
    }

    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.sigkill();
    }
}
