//! Delivery through the real `kafka-dispatcher` and a real Kafka-protocol
//! broker (`tansu`): the engine's rules (retries, dead letter), fan-out
//! under load, and ordered delivery per partition key.

use http::StatusCode;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::kafka::{kafka_channel_yaml, KafkaDispatcher, Tansu};
use tests::{event, Answer, Sink};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_retries_and_dead_letters() {
    let kafka = Tansu::start();
    // Fails twice, then accepts.
    let flaky = Sink::start(|_, n| Answer::status(if n <= 2 { 503 } else { 202 })).await;
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let rejecting = Sink::start(|_, _| Answer::status(400)).await;
    let dls = Sink::accepting().await;
    let retry = "{retry: 2, backoffPolicy: linear, backoffDelay: PT0.05S}".to_string();
    let dead = format!(
        "{{retry: 2, backoffPolicy: linear, backoffDelay: PT0.05S, deadLetterSink: {{uri: \"{}\"}}}}",
        dls.url()
    );
    let manifests = kafka_channel_yaml(
        "c",
        "{numPartitions: 1}",
        &[
            ("flaky", &flaky.url(), &retry, false),
            ("failing", &failing.url(), &dead, false),
            ("rejecting", &rejecting.url(), &dead, false),
        ],
    );
    let d = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
    let (status, _, _) = d
        .client()
        .post_binary(&d.url("/default/c"), &event("e1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "log:\n{}", d.log());

    let got = flaky.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| r.id() == "e1"));
    let first = got[0].event.clone().expect("a CloudEvent");
    assert_eq!(
        first.extension("knativekafkapartition").as_deref(),
        Some("0")
    );
    assert!(first.extension("knativekafkaoffset").is_some());
    let dead = dls.wait_for(2, WAIT).await;
    assert_eq!(failing.count(), 3, "one attempt and 2 retries");
    assert_eq!(rejecting.count(), 1, "400 is not retried");
    for r in &dead {
        let e = r.event.clone().expect("a CloudEvent");
        assert_eq!(e.id, "e1");
        assert_eq!(e.data, event("e1").data, "data unchanged");
    }
    // Everything settled and committed: nothing comes again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(flaky.count(), 3);
    assert_eq!(dls.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_10000_events_reach_a_slow_and_a_fast_subscriber() {
    const N: usize = 10_000;
    let kafka = Tansu::start();
    let fast = Sink::accepting().await;
    let slow = Sink::start(|_, _| Answer::status(202).with_delay(Duration::from_millis(20))).await;
    let manifests = kafka_channel_yaml(
        "load",
        "{numPartitions: 3}",
        &[
            ("fast", &fast.url(), "", false),
            ("slow", &slow.url(), "", false),
        ],
    );
    let d = Arc::new(KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await);
    let started = Instant::now();
    let mut senders = Vec::new();
    for worker in 0..16 {
        let d = d.clone();
        senders.push(tokio::spawn(async move {
            let url = d.url("/default/load");
            for i in (worker..N).step_by(16) {
                let e = event(&format!("ev-{i}"));
                let mut tries = 0;
                loop {
                    let (status, _, _) = d.client().post_binary(&url, &e).await;
                    if status == StatusCode::ACCEPTED {
                        break;
                    }
                    tries += 1;
                    assert!(tries < 20, "event {i} refused with {status}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for s in senders {
        tokio::time::timeout(Duration::from_secs(300), s)
            .await
            .expect("sent in time")
            .expect("sender");
    }
    let sent_in = started.elapsed();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("ev-{i}")).collect();
    let mut partitions = BTreeSet::new();
    for (name, sink) in [("fast", &fast), ("slow", &slow)] {
        let ok = tests::eventually(Duration::from_secs(300), || {
            sink.ids().into_iter().collect::<BTreeSet<_>>() == expected
        })
        .await;
        let got: BTreeSet<String> = sink.ids().into_iter().collect();
        if !ok {
            if let Some(dir) = std::env::var_os("KN_TEST_KEEP_LOGS") {
                let _ = std::fs::write(std::path::Path::new(&dir).join("kafka-10000.log"), d.log());
                let _ = std::fs::write(
                    std::path::Path::new(&dir).join("kafka-10000-missing.txt"),
                    format!("{:?}", expected.difference(&got).collect::<Vec<_>>()),
                );
            }
        }
        assert!(
            ok,
            "{name} subscriber got {} of {N} distinct ids; missing e.g. {:?}",
            got.len(),
            expected.difference(&got).take(5).collect::<Vec<_>>()
        );
        for r in sink.received() {
            if let Some(p) = r
                .event
                .and_then(|e| e.extension("knativekafkapartition").map(|p| p.into_owned()))
            {
                partitions.insert(p);
            }
        }
    }
    assert_eq!(
        partitions.len(),
        3,
        "events spread over 3 partitions: {partitions:?}"
    );
    eprintln!(
        "kafka: {N} events accepted in {sent_in:?} ({:.0}/s); all delivered to both in {:?}; fast got {} requests, slow {}; dispatcher RSS {} KiB",
        N as f64 / sent_in.as_secs_f64(),
        started.elapsed(),
        fast.count(),
        slow.count(),
        d.rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_ordered_keeps_per_key_order_under_retries() {
    const N: usize = 200;
    const KEYS: usize = 6;
    let kafka = Tansu::start();
    // Every fifth event fails its first attempt.
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let f = failed_once.clone();
    let sink = Sink::start(move |r, _| {
        let id = r.id();
        let n: usize = id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if n % 5 == 0 && f.lock().expect("lock").insert(id) {
            Answer::status(503)
        } else {
            Answer::status(202)
        }
    })
    .await;
    let manifests = kafka_channel_yaml(
        "ord",
        "{numPartitions: 3}",
        &[(
            "s",
            &sink.url(),
            "{retry: 5, backoffPolicy: linear, backoffDelay: PT0.02S}",
            true,
        )],
    );
    let d = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
    let url = d.url("/default/ord");
    for i in 0..N {
        let key = format!("key{}", i % KEYS);
        let e = event(&format!("o-{i}")).with_extension("partitionkey", key.as_str());
        let (status, _, _) = d.client().post_binary(&url, &e).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let expected = N + N / 5;
    sink.wait_for(expected, Duration::from_secs(60)).await;
    // Per key: the ids arrive in publication order, a retried id repeating
    // itself before the next one.
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in sink.received() {
        let e = r.event.expect("a CloudEvent");
        let n: usize =
            e.id.rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("n");
        per_key
            .entry(e.extension("partitionkey").expect("key").into_owned())
            .or_default()
            .push(n);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, ns) in &per_key {
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "key {key} out of order: {ns:?}"
        );
        let distinct: BTreeSet<_> = ns.iter().collect();
        let k: usize = key.trim_start_matches("key").parse().expect("key number");
        let want = (0..N).filter(|i| i % KEYS == k).count();
        assert_eq!(distinct.len(), want, "key {key} got every event");
    }
}
