//! The whole system in standalone mode: `provisioner standalone` reads
//! Knative manifests, provisions a Kafka topic (tansu) and a JetStream
//! stream (nats-server), writes one contract per backend, and the three real
//! dispatchers follow their contract files. Events flow through a channel
//! of each backend; status, deletion and broker outages show as a user
//! sees them.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::time::Duration;
use tests::kafka::{kafka_dispatcher_bin, Tansu};
use tests::nats::{nats_dispatcher_bin, NatsServer};
use tests::provisioner::{is_ready, Provisioner, Slot};
use tests::{bin_dir, event, Answer, Dispatcher, HttpClient, Sink};

const WAIT: Duration = Duration::from_secs(60);

fn classes(memory: &Slot, kafka: &Slot, nats: &Slot, bootstrap: &str, nats_url: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata:
  name: in-memory-channel
  annotations: {{eventing.knative.dev/is-default-provisioner: "true"}}
spec: {{backend: inmemory, {}}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {{name: kafka}}
spec:
  backend: kafka
  parameters: {{bootstrapServers: "{bootstrap}", numPartitions: 1, config: {{batch.num.messages: 1}}}}
  {}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {{name: nats}}
spec:
  backend: nats
  parameters: {{url: "{nats_url}"}}
  {}
"#,
        memory.dispatcher_yaml(),
        kafka.dispatcher_yaml(),
        nats.dispatcher_yaml()
    )
}

/// A channel with `spec` (YAML lines under `spec:`), a subscription to
/// `sink` and one whose subscriber always fails, dead-lettered to `dls`.
fn channel(name: &str, spec: &str, sink: &str, failing: &str, dls: &str) -> String {
    format!(
        r#"---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: {name}, namespace: shop}}
spec:
{spec}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: {name}-audit, namespace: shop}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: {name}}}
  subscriber: {{uri: "{sink}"}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {{name: {name}-failing, namespace: shop}}
spec:
  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: {name}}}
  subscriber: {{uri: "{failing}"}}
  delivery: {{retry: 0, deadLetterSink: {{uri: "{dls}"}}}}
"#
    )
}

const LOST: &str = r#"---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: lost, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}
  subscriber: {uri: "http://127.0.0.1:1/"}
"#;

fn topics(bootstrap: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("kafka client");
    consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map(|m| m.topics().iter().map(|t| t.name().to_owned()).collect())
        .unwrap_or_default()
}

async fn stream_exists(nats_url: &str, name: &str) -> bool {
    let client = async_nats::connect(nats_url).await.expect("nats connects");
    async_nats::jetstream::new(client)
        .get_stream(name)
        .await
        .is_ok()
}

/// POST an event to `url` until it is accepted (the dispatcher may still be
/// applying its contract); the last status, or why nothing answered.
async fn post(client: &HttpClient, url: &str, id: &str) -> Result<http::StatusCode, String> {
    let mut last = Err("not sent".to_owned());
    for _ in 0..50 {
        last = client
            .send({
                let mut req = http::Request::post(url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                let body = channel_core::event::encode_binary(&event(id), req.headers_mut());
                *req.body_mut() = http_body_util::Full::new(body);
                req
            })
            .await
            .map(|(status, _, _)| status);
        if last == Ok(http::StatusCode::ACCEPTED) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// The logs of every process, for a failure message.
fn logs(provisioner: &Provisioner, dispatchers: &[&Dispatcher]) -> String {
    let mut out = format!("provisioner log:\n{}", provisioner.log());
    for d in dispatchers {
        out.push_str(&format!(
            "\n---- dispatcher {} log:\n{}",
            d.ingress,
            d.log()
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_provisioner_runs_all_three_backends() {
    let tansu = Tansu::start();
    let mut nats = NatsServer::start();
    let sink = Sink::accepting().await;
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let dls = Sink::accepting().await;
    let (memory, kafka, nats_slot) = (Slot::new(), Slot::new(), Slot::new());

    let class_yaml = classes(&memory, &kafka, &nats_slot, &tansu.bootstrap(), &nats.url());
    let channels = [
        ("orders", "  delivery: {retry: 0}"),
        ("payments", "  provisioner: {name: kafka}"),
        (
            "audit",
            "  channelTemplate: {apiVersion: messaging.knative.dev/v1alpha1, kind: NatsJetStreamChannel}",
        ),
    ];
    let manifests_of = |names: &[&str]| {
        let mut out = class_yaml.clone();
        for (name, spec) in channels.iter().filter(|(n, _)| names.contains(n)) {
            out.push_str(&channel(
                name,
                spec,
                &sink.url(),
                &failing.url(),
                &dls.url(),
            ));
        }
        out.push_str(LOST);
        out
    };

    let provisioner = Provisioner::start(
        &manifests_of(&["orders", "payments", "audit"]),
        &[
            "--resync-interval".into(),
            "1s".into(),
            "--provision-timeout".into(),
            "3s".into(),
            "--max-backoff".into(),
            "1s".into(),
        ],
    )
    .await;
    // The contracts exist before the dispatchers start: they follow them.
    assert!(
        tests::eventually(WAIT, || ["inmemory", "kafka", "nats"]
            .iter()
            .all(|b| provisioner.contract(b).exists()))
        .await,
        "contracts not written; log:\n{}",
        provisioner.log()
    );
    bin_dir();
    let memory_dispatcher = memory.start(
        bin_dir().join("inmemory-dispatcher"),
        Vec::new(),
        provisioner.contract("inmemory"),
    );
    let kafka_dispatcher = kafka.start(
        kafka_dispatcher_bin(),
        Vec::new(),
        provisioner.contract("kafka"),
    );
    let nats_dispatcher = nats_slot.start(
        nats_dispatcher_bin(),
        tests::nats::dispatcher_args(&nats.url()),
        provisioner.contract("nats"),
    );

    let all_logs = || {
        logs(
            &provisioner,
            &[&memory_dispatcher, &kafka_dispatcher, &nats_dispatcher],
        )
    };

    // Every channel and subscription becomes Ready, channels with the
    // address of their backend's dispatcher.
    for (name, slot, backend) in [
        ("orders", &memory, "inmemory"),
        ("payments", &kafka, "kafka"),
        ("audit", &nats_slot, "nats"),
    ] {
        let r = provisioner
            .wait_resource("Channel", name, WAIT, "Ready", is_ready)
            .await
            .expect("listed");
        assert_eq!(r["backend"], backend);
        assert_eq!(r["url"], format!("http://{}/shop/{name}", slot.ingress));
        assert_eq!(
            r["status"]["address"]["url"],
            format!("http://{}/shop/{name}", slot.ingress)
        );
        assert_eq!(r["status"]["subscribers"].as_array().map(Vec::len), Some(2));
        for sub in ["audit", "failing"] {
            provisioner
                .wait_resource(
                    "Subscription",
                    &format!("{name}-{sub}"),
                    WAIT,
                    "Ready",
                    is_ready,
                )
                .await;
        }
    }
    let lost = provisioner
        .resource("Subscription", "lost")
        .await
        .expect("lost listed");
    assert_eq!(lost["ready"], "False");
    assert_eq!(lost["reason"], "ChannelNotFound");

    // The table a user reads.
    let out = provisioner.status_command(&[]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("provisioner status:\n{table}");
    let header = table.lines().next().unwrap_or_default();
    for column in ["KIND", "NAMESPACE", "NAME", "READY", "REASON", "URL"] {
        assert!(header.contains(column), "{table}");
    }
    for (name, slot) in [
        ("orders", &memory),
        ("payments", &kafka),
        ("audit", &nats_slot),
    ] {
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("Channel ") && l.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[3], "True", "{table}");
        assert_eq!(
            row.last().copied(),
            Some(format!("http://{}/shop/{name}", slot.ingress).as_str())
        );
    }
    let lost_row = table
        .lines()
        .find(|l| l.starts_with("Subscription") && l.contains(" lost "))
        .unwrap_or_else(|| panic!("no row for lost:\n{table}"));
    assert!(
        lost_row.contains("False") && lost_row.contains("ChannelNotFound"),
        "{table}"
    );

    // The backing resources exist.
    assert!(
        topics(&tansu.bootstrap()).contains(&"knative-messaging-kafka.shop.payments".to_owned())
    );
    assert!(stream_exists(&nats.url(), "KN_SHOP__AUDIT").await);

    // Events flow through each backend, and failures reach the dead-letter sink.
    let client = HttpClient::new();
    for (name, slot) in [
        ("orders", &memory),
        ("payments", &kafka),
        ("audit", &nats_slot),
    ] {
        let url = format!("http://{}/shop/{name}", slot.ingress);
        assert_eq!(
            post(&client, &url, &format!("{name}-1")).await,
            Ok(http::StatusCode::ACCEPTED),
            "{}",
            all_logs()
        );
    }
    sink.wait_for(3, WAIT).await;
    dls.wait_for(3, WAIT).await;
    let all: BTreeSet<String> = ["audit-1", "orders-1", "payments-1"]
        .map(str::to_owned)
        .into();
    assert_eq!(sink.ids().into_iter().collect::<BTreeSet<_>>(), all);
    assert_eq!(dls.ids().into_iter().collect::<BTreeSet<_>>(), all);

    // A broker outage: the NATS channel goes not Ready with the reason, the
    // others stay Ready; it recovers when the broker is back.
    nats.stop();
    let down = provisioner
        .wait_resource("Channel", "audit", WAIT, "not Ready", |r| {
            r.is_some_and(|r| r["ready"] == "False")
        })
        .await
        .expect("listed");
    let reason = down["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        [
            "BrokerUnavailable",
            "DispatcherNotReady",
            "ChannelNotServed"
        ]
        .contains(&reason.as_str()),
        "{down:#}"
    );
    assert!(is_ready(
        provisioner.resource("Channel", "orders").await.as_ref()
    ));
    assert_eq!(
        provisioner
            .resource("Subscription", "audit-audit")
            .await
            .expect("listed")["ready"],
        "False",
        "a subscription follows its channel"
    );
    nats.restart();
    provisioner
        .wait_resource("Channel", "audit", WAIT, "Ready again", is_ready)
        .await;
    let url = format!("http://{}/shop/audit", nats_slot.ingress);
    assert_eq!(
        post(&client, &url, "audit-2").await,
        Ok(http::StatusCode::ACCEPTED),
        "{}",
        all_logs()
    );
    assert!(tests::eventually(WAIT, || sink.ids().contains(&"audit-2".to_owned())).await);

    // Deleting the Kafka and NATS channels' manifests deletes their topic
    // and stream, and their addresses stop accepting events.
    provisioner.rewrite(&manifests_of(&["orders"]));
    for name in ["payments", "audit"] {
        provisioner
            .wait_resource("Channel", name, WAIT, "gone", |r| r.is_none())
            .await;
    }
    assert!(
        tests::eventually(WAIT, || !topics(&tansu.bootstrap())
            .contains(&"knative-messaging-kafka.shop.payments".to_owned()))
        .await,
        "topic not deleted; log:\n{}",
        provisioner.log()
    );
    let deadline = std::time::Instant::now() + WAIT;
    while stream_exists(&nats.url(), "KN_SHOP__AUDIT").await {
        assert!(std::time::Instant::now() < deadline, "stream not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = sink.count();
    for (name, slot) in [("payments", &kafka), ("audit", &nats_slot)] {
        let url = format!("http://{}/shop/{name}", slot.ingress);
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let status = post(&client, &url, &format!("{name}-late")).await;
            if status == Ok(http::StatusCode::NOT_FOUND) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} still answers {status:?}; {}",
                all_logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sink.ids()[before..].iter().any(|id| id.ends_with("-late")),
        "no delivery from a deleted channel"
    );
    // The remaining channel still works.
    let url = format!("http://{}/shop/orders", memory.ingress);
    assert_eq!(
        post(&client, &url, "orders-2").await,
        Ok(http::StatusCode::ACCEPTED),
        "{}",
        all_logs()
    );
    assert!(tests::eventually(WAIT, || sink.ids().contains(&"orders-2".to_owned())).await);
}
