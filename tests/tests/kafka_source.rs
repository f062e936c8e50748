//! KafkaSource end to end on two Kafka-protocol brokers (tansu, and
//! noida-db when installed): records produced before and after the adapter
//! starts, CloudEvent and plain records, an adapter SIGKILLed mid-stream
//! (nothing lost), a sink that is down (held until it is back).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tests::kafka::{Noida, Tansu};
use tests::sources::Adapter;
use tests::{Answer, Sink};

const WAIT: Duration = Duration::from_secs(60);

async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in results {
        if let Err((topic, e)) = r {
            assert!(
                e == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "cannot create {topic}: {e}"
            );
        }
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .set("enable.idempotence", "false")
        .create()
        .expect("producer")
}

async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    value: &[u8],
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(k) = key {
        record = record.key(k);
    }
    p.send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

fn kafka_source(name: &str, bootstrap: &str, topics: &str, sink: &str, extra: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  bootstrapServers: ['{bootstrap}']\n  topics: {topics}\n  sink: {{uri: '{sink}'}}\n{extra}"
    )
}

fn ids(sink: &Sink) -> Vec<String> {
    sink.received()
        .iter()
        .filter_map(|r| Some(r.event.as_ref()?.id.clone()))
        .collect()
}

/// Plain and CloudEvent records, before and after the adapter starts.
async fn records_become_events(bootstrap: &str) {
    create_topics(bootstrap, &[("orders", 2), ("payments", 1)]).await;
    let p = producer(bootstrap);
    produce(
        &p,
        "orders",
        Some("customer-1"),
        &[("content-type", "application/json"), ("trace-id", "abc")],
        br#"{"n":1}"#,
    )
    .await;
    produce(
        &p,
        "payments",
        None,
        &[
            ("ce_specversion", "1.0"),
            ("ce_id", "pay-1"),
            ("ce_type", "com.example.paid"),
            ("ce_source", "/payments"),
            ("content-type", "text/plain"),
        ],
        b"paid",
    )
    .await;
    produce(
        &p,
        "payments",
        None,
        &[("content-type", "application/cloudevents+json")],
        br#"{"specversion":"1.0","id":"pay-2","type":"com.example.refunded","source":"/payments","data":{"amount":3}}"#,
    )
    .await;
    let sink = Sink::accepting().await;
    let adapter = Adapter::start(
        &kafka_source(
            "orders",
            bootstrap,
            "[orders, payments]",
            &sink.url(),
            "  initialOffset: earliest\n  consumerGroup: orders-to-sink\n  ceOverrides: {extensions: {team: shop}}\n",
        ),
        &[],
    )
    .await;
    let got = sink.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3, "{}", adapter.log());
    let find = |id: &str| {
        got.iter()
            .filter_map(|r| r.event.clone())
            .find(|e| e.id == id)
            .unwrap_or_else(|| panic!("{id} not received: {got:?}"))
    };
    let plain = got
        .iter()
        .filter_map(|r| r.event.clone())
        .find(|e| e.ty == "dev.knative.kafka.event")
        .expect("the plain record");
    assert!(
        plain.id.starts_with("partition:") && plain.id.contains("/offset:0"),
        "{plain:?}"
    );
    assert_eq!(
        plain.source,
        "/apis/v1/namespaces/shop/kafkasources/orders#orders"
    );
    assert!(plain
        .subject
        .as_deref()
        .is_some_and(|s| s.starts_with("partition:") && s.ends_with("#0")));
    assert_eq!(plain.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(plain.data.as_deref(), Some(&br#"{"n":1}"#[..]));
    assert_eq!(plain.extension("key").as_deref(), Some("customer-1"));
    assert_eq!(
        plain.extension("kafkaheadertraceid").as_deref(),
        Some("abc")
    );
    assert_eq!(plain.extension("team").as_deref(), Some("shop"));
    assert!(plain.time.is_some());
    let binary = find("pay-1");
    assert_eq!(
        (binary.ty.as_str(), binary.source.as_str()),
        ("com.example.paid", "/payments")
    );
    assert_eq!(binary.data.as_deref(), Some(&b"paid"[..]));
    let structured = find("pay-2");
    assert_eq!(structured.ty, "com.example.refunded");

    // After the start, on both topics.
    produce(&p, "orders", Some("customer-2"), &[], b"second").await;
    produce(&p, "payments", None, &[], b"third").await;
    let got = sink.wait_for(5, WAIT).await;
    assert_eq!(got.len(), 5, "{}", adapter.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = adapter.status().await;
    assert_eq!(status["sources"][0]["state"], "running", "{status:#}");
    assert_eq!(status["sources"][0]["sent"], 5, "{status:#}");
}

/// SIGKILL mid-stream: what was not finished is sent again by the
/// restarted adapter; nothing is lost.
async fn a_killed_adapter_loses_nothing(bootstrap: &str) {
    const RECORDS: usize = 300;
    create_topics(bootstrap, &[("clicks", 2)]).await;
    let p = producer(bootstrap);
    for i in 0..RECORDS {
        produce(
            &p,
            "clicks",
            Some(&format!("user-{}", i % 7)),
            &[],
            format!("click {i}").as_bytes(),
        )
        .await;
    }
    let sink = Sink::start(|_, _| Answer::status(202).with_delay(Duration::from_millis(15))).await;
    let mut adapter = Adapter::start(
        &kafka_source(
            "clicks",
            bootstrap,
            "[clicks]",
            &sink.url(),
            "  initialOffset: earliest\n  consumerGroup: clicks\n",
        ),
        &["--group-instance-id", "adapter-0"],
    )
    .await;
    assert!(
        tests::eventually(WAIT, || sink.received().len() >= RECORDS / 4).await,
        "{}",
        adapter.log()
    );
    adapter.sigkill();
    let before = ids(&sink).len();
    adapter.restart().await;
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let distinct: BTreeSet<String> = ids(&sink).into_iter().collect();
        if distinct.len() == RECORDS {
            let all = ids(&sink).len();
            eprintln!(
                "LEDGER KafkaSource SIGKILL ({bootstrap}): {RECORDS} produced, {before} delivered before the kill, {all} deliveries, {} duplicates, 0 lost",
                all - RECORDS
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {RECORDS} records delivered after the restart\n{}",
            distinct.len(),
            adapter.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A sink that is down holds the records (retried, in order per
/// partition); a new group starts at the end of the topic (`latest`).
async fn a_down_sink_holds_the_records(bootstrap: &str) {
    create_topics(bootstrap, &[("audit", 1)]).await;
    let p = producer(bootstrap);
    produce(&p, "audit", None, &[], b"before the source").await;
    let sink = Sink::start(|_, n| {
        if n <= 6 {
            Answer::status(503)
        } else {
            Answer::status(202)
        }
    })
    .await;
    let adapter = Adapter::start(
        &kafka_source(
            "audit",
            bootstrap,
            "[audit]",
            &sink.url(),
            "  delivery: {retry: 20, backoffPolicy: linear, backoffDelay: PT0.1S}\n",
        ),
        &[],
    )
    .await;
    // Joined: the consumer has its partition (records produced from now
    // on are the source's).
    assert!(
        tests::eventually(WAIT, || adapter.log().contains("partitions assigned")).await,
        "{}",
        adapter.log()
    );
    for i in 0..3 {
        produce(&p, "audit", None, &[], format!("after {i}").as_bytes()).await;
    }
    let got = sink.wait_for(9, WAIT).await;
    let accepted: Vec<String> = got
        .iter()
        .skip(6)
        .filter_map(|r| r.event.as_ref())
        .map(|e| String::from_utf8_lossy(e.data.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!(
        accepted,
        ["after 0", "after 1", "after 2"],
        "{}",
        adapter.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 9, "nothing from before the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_records_become_events() {
    let broker = Tansu::start();
    records_become_events(&broker.bootstrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_a_killed_adapter_loses_nothing() {
    let broker = Tansu::start();
    a_killed_adapter_loses_nothing(&broker.bootstrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_a_down_sink_holds_the_records() {
    let broker = Tansu::start();
    a_down_sink_holds_the_records(&broker.bootstrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noida_records_become_events() {
    let Some(broker) = Noida::start() else { return };
    records_become_events(&broker.bootstrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noida_a_killed_adapter_loses_nothing() {
    let Some(broker) = Noida::start() else { return };
    a_killed_adapter_loses_nothing(&broker.bootstrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noida_a_down_sink_holds_the_records() {
    let Some(broker) = Noida::start() else { return };
    a_down_sink_holds_the_records(&broker.bootstrap()).await;
}

/// The source's `/status` entry.
async fn source_state(adapter: &Adapter) -> (String, String) {
    let status = adapter.status().await;
    let s = &status["sources"][0];
    (
        s["state"].as_str().unwrap_or_default().to_owned(),
        s["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_and_a_missing_topic_are_reported_then_recovered() {
    let sink = Sink::accepting().await;
    let nowhere = format!("127.0.0.1:{}", tests::free_port());
    let adapter = Adapter::start(
        &kafka_source("nowhere", &nowhere, "[orders]", &sink.url(), ""),
        &[],
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (state, message) = source_state(&adapter).await;
        if state == "failed" {
            assert!(
                message.contains("unreachable") && message.contains(&nowhere),
                "{message}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{state} {message}\n{}",
            adapter.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(adapter);

    let broker = Tansu::start();
    let adapter = Adapter::start(
        &kafka_source(
            "later",
            &broker.bootstrap(),
            "[created-later]",
            &sink.url(),
            "  initialOffset: earliest\n",
        ),
        &[],
    )
    .await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (state, message) = source_state(&adapter).await;
        if state == "failed" && message.contains("does not exist") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{state} {message}\n{}",
            adapter.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create_topics(&broker.bootstrap(), &[("created-later", 1)]).await;
    produce(
        &producer(&broker.bootstrap()),
        "created-later",
        None,
        &[],
        b"finally",
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "{}", adapter.log());
    assert_eq!(source_state(&adapter).await.0, "running");
}
