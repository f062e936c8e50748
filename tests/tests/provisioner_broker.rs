//! Brokers and triggers in standalone mode: `provisioner standalone` plans
//! a broker per backend (the default class, a ConfigMap naming a
//! KafkaChannel template, a v1alpha1 `channelTemplate.provisioner`), writes
//! the contracts, the three real dispatchers follow them, and events flow
//! through each broker to the triggers whose filters pass them; status shows
//! Broker and Trigger rows as a user reads them.

use std::time::Duration;
use tests::kafka::{kafka_dispatcher_bin, Tansu};
use tests::nats::{nats_dispatcher_bin, NatsServer};
use tests::provisioner::{is_ready, Provisioner, Slot};
use tests::{bin_dir, Answer, Dispatcher, Sink};

const WAIT: Duration = Duration::from_secs(60);

/// Classes with no default: brokers without a config get the built-in
/// in-memory class, whose dispatcher is named by `--dispatcher-url`.
fn classes(kafka: &Slot, nats: &Slot, bootstrap: &str, nats_url: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1alpha1
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
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: kafka-channel, namespace: knative-eventing}}
data:
  channel-template-spec: |
    apiVersion: messaging.knative.dev/v1beta1
    kind: KafkaChannel
    spec: {{numPartitions: 2}}
"#,
        kafka.dispatcher_yaml(),
        nats.dispatcher_yaml()
    )
}

const BROKERS: &str = r#"---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: memory, namespace: shop}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: kafka, namespace: shop}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: kafka-channel, namespace: knative-eventing}}
"#;

const NATS_BROKER: &str = r#"---
apiVersion: eventing.knative.dev/v1alpha1
kind: Broker
metadata: {name: nats, namespace: shop}
spec:
  channelTemplate:
    provisioner: {apiVersion: eventing.knative.dev/v1alpha1, kind: ClusterChannelProvisioner, name: nats}
"#;

/// On each broker: `wanted` passes type `shop.wanted` to `sink`;
/// `replier` answers `shop.question` with a `shop.answer` reply, which
/// `answers` passes to `sink` too.
fn triggers(broker: &str, sink: &str, replier: &str) -> String {
    format!(
        r#"---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-wanted, namespace: shop}}
spec:
  broker: {broker}
  filters: [{{cesql: "type = 'shop.wanted'"}}]
  subscriber: {{uri: "{sink}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-replier, namespace: shop}}
spec:
  broker: {broker}
  filter: {{attributes: {{type: shop.question}}}}
  subscriber: {{uri: "{replier}"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: {broker}-answers, namespace: shop}}
spec:
  broker: {broker}
  filters: [{{exact: {{type: shop.answer}}}}]
  subscriber: {{uri: "{sink}"}}
"#
    )
}

async fn post(d: &Dispatcher, url: &str, id: &str, ty: &str) -> http::StatusCode {
    let mut e = tests::event(id);
    e.ty = ty.to_owned();
    for _ in 0..50 {
        let (status, _, _) = d.client().post_binary(url, &e).await;
        if status == http::StatusCode::ACCEPTED {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    http::StatusCode::SERVICE_UNAVAILABLE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_on_every_backend_in_standalone_mode() {
    let tansu = Tansu::start();
    let nats = NatsServer::start();
    let sink = Sink::accepting().await;
    let replier = Sink::start(|r, _| {
        let mut answer = tests::event(&format!("answer-{}", r.id()));
        answer.ty = "shop.answer".into();
        Answer::reply(&answer)
    })
    .await;
    let (memory, kafka, nats_slot) = (Slot::new(), Slot::new(), Slot::new());
    let mut manifests = classes(&kafka, &nats_slot, &tansu.bootstrap(), &nats.url()) + BROKERS;
    for b in ["memory", "kafka", "nats"] {
        manifests += &triggers(b, &sink.url(), &replier.url());
    }
    // The nats broker comes later: its triggers wait for it.
    let provisioner = Provisioner::start(
        &manifests,
        &[
            format!("--dispatcher-url=inmemory=http://{}", memory.ingress),
            format!("--dispatcher-admin=inmemory=http://{}", memory.admin),
        ],
    )
    .await;
    let early = provisioner
        .wait_resource("Trigger", "nats-wanted", WAIT, "listed", |r| r.is_some())
        .await
        .expect("listed");
    assert_eq!(early["ready"], "False");
    assert_eq!(early["reason"], "BrokerDoesNotExist");

    assert!(
        tests::eventually(WAIT, || ["inmemory", "kafka"]
            .iter()
            .all(|b| provisioner.contract(b).exists()))
        .await,
        "contracts not written; log:\n{}",
        provisioner.log()
    );
    let memory_d = memory.start(
        bin_dir().join("inmemory-dispatcher"),
        Vec::new(),
        provisioner.contract("inmemory"),
    );
    let kafka_d = kafka.start(
        kafka_dispatcher_bin(),
        Vec::new(),
        provisioner.contract("kafka"),
    );
    provisioner.rewrite(&(manifests.clone() + NATS_BROKER));
    assert!(
        tests::eventually(WAIT, || provisioner.contract("nats").exists()).await,
        "nats contract not written; log:\n{}",
        provisioner.log()
    );
    let nats_d = nats_slot.start(
        nats_dispatcher_bin(),
        tests::nats::dispatcher_args(&nats.url()),
        provisioner.contract("nats"),
    );

    for (broker, slot, backend, d) in [
        ("memory", &memory, "inmemory", &memory_d),
        ("kafka", &kafka, "kafka", &kafka_d),
        ("nats", &nats_slot, "nats", &nats_d),
    ] {
        let r = provisioner
            .wait_resource("Broker", broker, WAIT, "Ready", is_ready)
            .await
            .unwrap_or_else(|| panic!("broker {broker} listed; log:\n{}", provisioner.log()));
        let url = format!("http://{}/brokers/shop/{broker}", slot.ingress);
        assert_eq!(r["backend"], backend);
        assert_eq!(r["url"], url);
        assert_eq!(r["status"]["address"]["url"], url);
        let types: Vec<&str> = r["status"]["conditions"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["type"].as_str()).collect())
            .unwrap_or_default();
        for t in [
            "Ready",
            "Addressable",
            "IngressReady",
            "FilterReady",
            "TriggerChannelReady",
            "DeadLetterSinkResolved",
        ] {
            assert!(types.contains(&t), "{t} missing in {types:?}");
        }
        for t in ["wanted", "replier", "answers"] {
            let tr = provisioner
                .wait_resource("Trigger", &format!("{broker}-{t}"), WAIT, "Ready", is_ready)
                .await
                .expect("trigger listed");
            assert!(tr["status"]["subscriberUri"].is_string(), "{tr}");
        }
        assert_eq!(
            post(d, &url, &format!("{broker}-w"), "shop.wanted").await,
            http::StatusCode::ACCEPTED
        );
        assert_eq!(
            post(d, &url, &format!("{broker}-x"), "shop.unwanted").await,
            http::StatusCode::ACCEPTED
        );
        assert_eq!(
            post(d, &url, &format!("{broker}-q"), "shop.question").await,
            http::StatusCode::ACCEPTED
        );
    }
    let expected: std::collections::BTreeSet<String> = ["memory", "kafka", "nats"]
        .iter()
        .flat_map(|b| [format!("{b}-w"), format!("answer-{b}-q")])
        .collect();
    tests::assert_all_delivered(&sink, &expected, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: std::collections::BTreeSet<String> = sink.ids().into_iter().collect();
    assert_eq!(got, expected, "only what the filters pass");

    // The table a user reads lists brokers and triggers.
    let out = provisioner.status_command(&[]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("provisioner status:\n{table}");
    assert!(
        table.contains("Broker") && table.contains("Trigger"),
        "{table}"
    );
}
