//! Changing a channel's parameters changes its topic where Kafka allows:
//! partitions grow, retention follows, settings made on the topic by hand
//! survive. Against a real Kafka-protocol broker (`tansu`).

use channel_core::backend::Backend;
use channel_core::contract::{BackendKind, ChannelContract, Ingress};
use channel_kafka::config::Defaults;
use channel_kafka::KafkaBackend;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use tests::kafka::Tansu;

fn channel(params: serde_json::Value) -> ChannelContract {
    ChannelContract {
        broker: None,
        uid: "uid-tuned".into(),
        namespace: "default".into(),
        name: "tuned".into(),
        kind: "KafkaChannel".into(),
        backend: BackendKind::Kafka,
        class: "kafka".into(),
        ingress: Ingress::for_channel("default", "tuned"),
        parameters: serde_json::from_value::<BTreeMap<String, serde_json::Value>>(params)
            .expect("params"),
        subscriptions: Vec::new(),
    }
}

const TOPIC: &str = "knative-messaging-kafka.default.tuned";

async fn config(admin: &AdminClient<DefaultClientContext>, name: &str) -> Option<String> {
    let mut described = admin
        .describe_configs([&ResourceSpecifier::Topic(TOPIC)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = described
        .pop()
        .expect("one resource")
        .expect("topic configs");
    resource.get(name).and_then(|e| e.value.clone())
}

fn partitions(bootstrap: &str) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("client");
    consumer
        .fetch_metadata(Some(TOPIC), Duration::from_secs(10))
        .expect("metadata")
        .topics()
        .iter()
        .find(|t| t.name() == TOPIC)
        .map_or(0, |t| t.partitions().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_changes_reach_the_topic() {
    let t = Tansu::start();
    let backend = KafkaBackend::new(Defaults {
        bootstrap_servers: Some(t.bootstrap()),
    });
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", t.bootstrap())
        .create()
        .expect("admin");

    backend
        .provision(&channel(
            serde_json::json!({"numPartitions": 1, "retentionDuration": "PT1H"}),
        ))
        .await
        .expect("created");
    assert_eq!(partitions(&t.bootstrap()), 1);
    assert_eq!(
        config(&admin, "retention.ms").await.as_deref(),
        Some("3600000")
    );

    // An operator's own setting on the topic. A broker without AlterConfigs
    // (tansu 0.6) cannot change retention at all: then the channel must
    // still be served, its retention left as it is.
    let hand = AlterConfig::new(ResourceSpecifier::Topic(TOPIC))
        .set("retention.ms", "3600000")
        .set("cleanup.policy", "delete");
    let alter_supported = match admin.alter_configs([&hand], &AdminOptions::new()).await {
        Ok(mut results) => {
            results.pop().expect("one result").expect("altered");
            true
        }
        Err(e) => {
            assert!(channel_kafka::provision::is_unsupported(&e), "{e}");
            false
        }
    };

    backend
        .provision(&channel(
            serde_json::json!({"numPartitions": 3, "retentionDuration": "PT2H"}),
        ))
        .await
        .expect("updated");
    if alter_supported {
        assert_eq!(partitions(&t.bootstrap()), 3, "partitions grow");
        assert_eq!(
            config(&admin, "retention.ms").await.as_deref(),
            Some("7200000")
        );
        assert_eq!(
            config(&admin, "cleanup.policy").await.as_deref(),
            Some("delete")
        );
    } else {
        assert_eq!(
            config(&admin, "retention.ms").await.as_deref(),
            Some("3600000")
        );
        // tansu 0.6 implements neither AlterConfigs nor CreatePartitions:
        // the channel is still served, its topic unchanged.
        assert_eq!(partitions(&t.bootstrap()), 1);
        eprintln!("the broker has no AlterConfigs: topic changes not verified here");
        return;
    }

    // Fewer partitions cannot be had in Kafka: the topic keeps its three.
    backend
        .provision(&channel(
            serde_json::json!({"numPartitions": 1, "retentionDuration": "PT2H"}),
        ))
        .await
        .expect("no shrink, no error");
    assert_eq!(partitions(&t.bootstrap()), 3);
}
