//! Hostile clients against the real `inmemory-dispatcher`: slow headers
//! (slowloris), silent connections, a stalled body, oversized heads and a
//! flood of connections. Each is cut off by its limit while a well-behaved
//! producer keeps being served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tests::{Dispatcher, Sink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHANNEL: &str = "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: orders, namespace: shop}\n";

/// Read until the server closes or `limit` passes: what was read and
/// whether the server closed.
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

/// A well-formed binary-mode event, with `connection: close`.
fn event(id: &str) -> String {
    format!(
        "POST /shop/orders HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-id: {id}\r\nce-type: t\r\nce-source: /s\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
}

async fn send(addr: SocketAddr, request: &str) -> String {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(request.as_bytes()).await.expect("write");
    read_all(&mut c, Duration::from_secs(10)).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_client_is_cut_off_by_its_limit_and_producers_are_still_served() {
    let sink = Sink::accepting().await;
    let manifests = format!(
        "{CHANNEL}---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s, namespace: shop}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}\n  subscriber: {{uri: '{}'}}\n",
        sink.url()
    );
    let d = Dispatcher::start(
        &manifests,
        &[
            "--header-read-timeout",
            "1s",
            "--body-read-timeout",
            "1s",
            "--max-headers",
            "50",
            "--max-header-bytes",
            "16384",
            "--max-connections",
            "64",
        ],
    )
    .await;
    let addr = d.ingress;

    // Slowloris: headers a byte at a time, never finished.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let dripping = async {
        for b in b"POST /shop/orders HTTP/1.1\r\nhost: x\r\nx-a: " {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    dripping.await;
    let (_, closed) = read_all(&mut slow, Duration::from_secs(5)).await;
    assert!(closed, "the slow client is disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );

    // A stalled body: 408.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    stalled
        .write_all(b"POST /shop/orders HTTP/1.1\r\nhost: x\r\nce-specversion: 1.0\r\nce-id: s\r\nce-type: t\r\nce-source: /s\r\ncontent-length: 100\r\n\r\n{\"half\":")
        .await
        .expect("write");
    let (answer, _) = read_all(&mut stalled, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // Too many headers, too large a head: 431.
    let many: String = (0..80).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer = send(
        addr,
        &format!("POST /shop/orders HTTP/1.1\r\nhost: x\r\n{many}\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let big = format!("x-big: {}\r\n", "a".repeat(20_000));
    let answer = send(
        addr,
        &format!("POST /shop/orders HTTP/1.1\r\nhost: x\r\n{big}\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A flood of silent connections (twice the bound): they are dropped
    // after the header timeout, and a producer behind them is served.
    let mut flood = Vec::new();
    for _ in 0..128 {
        flood.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let started = Instant::now();
    let answer = send(addr, &event("after-the-flood")).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(flood);

    // Nothing the hostile clients sent was stored; the producers' events were.
    let answer = send(addr, &event("plain")).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let got = sink.wait_for(2, Duration::from_secs(10)).await;
    let ids: Vec<String> = got
        .iter()
        .filter_map(|r| Some(r.event.as_ref()?.id.clone()))
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"after-the-flood".to_owned()) && ids.contains(&"plain".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_protects_metrics_and_status_but_not_the_probes() {
    use tests::provisioner::{is_ready, Provisioner, Slot};
    let slot = Slot::new();
    let p = Provisioner::start(
        CHANNEL,
        &[
            format!("--dispatcher-url=inmemory=http://{}", slot.ingress),
            format!("--dispatcher-admin=inmemory=http://{}", slot.admin),
            "--admin-token=sesame".to_owned(),
        ],
    )
    .await;
    assert!(
        tests::eventually(Duration::from_secs(30), || p.contract("inmemory").exists()).await,
        "{}",
        p.log()
    );
    let _d = slot.start(
        tests::bin_dir().join("inmemory-dispatcher"),
        vec!["--admin-token".to_owned(), "sesame".to_owned()],
        p.contract("inmemory"),
    );
    let client = tests::HttpClient::new();
    let admin = format!("http://{}", slot.admin);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(&format!("{admin}/readyz"))
        .await
        .map(|r| r.0.as_u16())
        != Ok(200)
    {
        assert!(Instant::now() < deadline, "the probe stays open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/metrics", "/status"] {
        let (status, body) = client
            .get(&format!("{admin}{path}"))
            .await
            .expect("answers");
        assert_eq!(
            status.as_u16(),
            401,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The provisioner polls with the token: the channel becomes Ready.
    p.wait_resource(
        "InMemoryChannel",
        "orders",
        Duration::from_secs(30),
        "Ready",
        is_ready,
    )
    .await;
}
