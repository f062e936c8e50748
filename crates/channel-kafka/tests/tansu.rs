//! The backend against a real Kafka-protocol broker (`tansu`), through the
//! channel-core traits: produce semantics, topic lifecycle, subscribe,
//! settle and commit.

use channel_core::backend::{Backend, DeliveryStream, Health, Outcome, PersistErrorKind};
use channel_core::contract::{BackendKind, ChannelContract, Ingress, SubscriptionContract};
use channel_core::Event;
use channel_kafka::config::Defaults;
use channel_kafka::KafkaBackend;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tests::kafka::Tansu;

fn channel(name: &str, params: serde_json::Value) -> ChannelContract {
    ChannelContract {
        broker: None,
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        name: name.into(),
        kind: "KafkaChannel".into(),
        backend: BackendKind::Kafka,
        class: "kafka".into(),
        ingress: Ingress::for_channel("default", name),
        parameters: serde_json::from_value::<BTreeMap<String, serde_json::Value>>(params)
            .expect("params"),
        subscriptions: Vec::new(),
    }
}

fn subscription(uid: &str) -> SubscriptionContract {
    serde_json::from_value(serde_json::json!({
        "uid": uid, "namespace": "default", "name": uid,
        "subscriber": "http://127.0.0.1:1/"
    }))
    .expect("subscription")
}

fn backend(t: &Tansu) -> KafkaBackend {
    KafkaBackend::new(Defaults {
        bootstrap_servers: Some(t.bootstrap()),
    })
}

fn event(i: usize) -> Event {
    Event::new(format!("e{i}"), "/test", "dev.test").with_data(
        "application/json",
        bytes::Bytes::from(format!("{{\"n\":{i}}}")),
    )
}

async fn next(stream: &mut Box<dyn DeliveryStream>) -> channel_core::backend::Delivery {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("a delivery within 30 s")
        .expect("stream open")
        .expect("no stream error")
}

/// Subscribe and wait until the consumer owns its partitions (the group has
/// been joined), by probing with one event that is then settled.
async fn ready_stream(
    b: &KafkaBackend,
    ch: &ChannelContract,
    sub: &SubscriptionContract,
) -> Box<dyn DeliveryStream> {
    b.subscribe(ch, sub).await.expect("subscribe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle_is_idempotent() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("lifecycle", serde_json::json!({"numPartitions": 3}));
    b.provision(&ch).await.expect("create");
    b.provision(&ch).await.expect("create again is fine");
    assert_eq!(b.health().await, Health::Healthy);
    b.persist(&ch, event(1)).await.expect("persist");
    b.deprovision(&ch).await.expect("delete");
    b.deprovision(&ch).await.expect("delete again is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_with_position_extensions_and_only_new_events() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("deliver", serde_json::json!({"numPartitions": 1}));
    b.provision(&ch).await.expect("provision");
    // History before the subscription exists is not replayed.
    for i in 0..5 {
        b.persist(&ch, event(i)).await.expect("persist");
    }
    let mut s = ready_stream(&b, &ch, &subscription("s1")).await;
    for i in 5..15 {
        b.persist(&ch, event(i)).await.expect("persist");
    }
    let mut prev = -1;
    for i in 5..15 {
        let d = next(&mut s).await;
        assert_eq!(d.event.id, format!("e{i}"));
        assert_eq!(d.position.partition, 0);
        assert!(d.position.offset > prev);
        prev = d.position.offset;
        assert_eq!(
            d.event.extension("knativekafkaoffset").as_deref(),
            Some(d.position.offset.to_string().as_str())
        );
        assert_eq!(
            d.event.extension("knativekafkapartition").as_deref(),
            Some("0")
        );
        assert_eq!(
            d.event.data.as_deref(),
            Some(format!("{{\"n\":{i}}}").as_bytes())
        );
        d.ack.settle(Outcome::Delivered).await.expect("settle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_settlement_commits_only_the_prefix_and_restart_resumes() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("prefix", serde_json::json!({"numPartitions": 1}));
    b.provision(&ch).await.expect("provision");
    let sub = subscription("s-prefix");
    let mut s = ready_stream(&b, &ch, &sub).await;
    for i in 0..10 {
        b.persist(&ch, event(i)).await.expect("persist");
    }
    let mut held = Vec::new();
    for i in 0..10 {
        let d = next(&mut s).await;
        assert_eq!(d.event.id, format!("e{i}"));
        if i == 3 || i == 4 {
            held.push(d);
        } else {
            d.ack.settle(Outcome::Delivered).await.expect("settle");
        }
    }
    // Let the periodic commit run: it may only commit up to e3.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Settle e4 but not e3, then stop the consumer; e3 stays unfinished.
    let e4 = held.pop().expect("e4");
    e4.ack.settle(Outcome::Delivered).await.expect("settle");
    let e3 = held.pop().expect("e3");
    drop(s);
    std::mem::forget(e3.ack); // never settled (a crash would not settle it)
    let mut s = b.subscribe(&ch, &sub).await.expect("resubscribe");
    let d = next(&mut s).await;
    assert_eq!(d.event.id, "e3", "resumes at the first unfinished record");
    d.ack.settle(Outcome::Delivered).await.expect("settle");
    // What follows e3 is delivered again (at least once).
    let d = next(&mut s).await;
    assert_eq!(d.event.id, "e4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_record_is_handed_out_again() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("abandon", serde_json::json!({}));
    b.provision(&ch).await.expect("provision");
    let mut s = ready_stream(&b, &ch, &subscription("s-ab")).await;
    for i in 0..3 {
        b.persist(&ch, event(i)).await.expect("persist");
    }
    let d0 = next(&mut s).await;
    assert_eq!(d0.event.id, "e0");
    d0.ack.settle(Outcome::Delivered).await.expect("settle");
    let d1 = next(&mut s).await;
    assert_eq!(d1.event.id, "e1");
    d1.ack.settle(Outcome::Abandoned).await.expect("settle");
    // e1 comes back (e2 may or may not have been handed out before the rewind).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut again = false;
    while Instant::now() < deadline {
        let d = next(&mut s).await;
        let id = d.event.id.clone();
        d.ack.settle(Outcome::Delivered).await.expect("settle");
        if id == "e1" {
            again = true;
            break;
        }
    }
    assert!(again, "the abandoned record was not redelivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_key_keeps_one_partition() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("keys", serde_json::json!({"numPartitions": 3}));
    b.provision(&ch).await.expect("provision");
    let mut s = ready_stream(&b, &ch, &subscription("s-keys")).await;
    for i in 0..12 {
        let e = event(i).with_extension("partitionkey", format!("k{}", i % 2).as_str());
        b.persist(&ch, e).await.expect("persist");
    }
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut last: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..12 {
        let d = next(&mut s).await;
        let key = d.ordering_key.as_deref().expect("key").to_owned();
        assert_eq!(
            d.event.extension("partitionkey").as_deref(),
            Some(key.as_str())
        );
        let p = *partition_of
            .entry(key.clone())
            .or_insert(d.position.partition);
        assert_eq!(p, d.position.partition, "one key, one partition");
        let n: usize = d.event.id[1..].parse().expect("n");
        if let Some(prev) = last.insert(key, n) {
            assert!(n > prev, "per-key order");
        }
        d.ack.settle(Outcome::Delivered).await.expect("settle");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_is_rejected() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel(
        "large",
        serde_json::json!({"config": {"message.max.bytes": 2000}}),
    );
    b.provision(&ch).await.expect("provision");
    let big = Event::new("big", "/t", "t").with_data(
        "application/octet-stream",
        bytes::Bytes::from(vec![b'x'; 10_000]),
    );
    let e = b.persist(&ch, big).await.expect_err("too large");
    assert_eq!(e.kind, PersistErrorKind::Rejected, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_makes_persist_unavailable_quickly() {
    let mut t = Tansu::start();
    let b = backend(&t);
    let ch = channel("down", serde_json::json!({}));
    b.provision(&ch).await.expect("provision");
    b.persist(&ch, event(0)).await.expect("persist while up");
    t.stop();
    let started = Instant::now();
    let e = b.persist(&ch, event(1)).await.expect_err("broker down");
    let took = started.elapsed();
    assert_eq!(e.kind, PersistErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("unavailable"), "{}", e.message);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    eprintln!("persist failed after {took:?} with the broker down");
    assert!(matches!(b.health().await, Health::Unhealthy(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameter_is_invalid() {
    let t = Tansu::start();
    let b = backend(&t);
    let ch = channel("bad", serde_json::json!({"partitions": 3}));
    let e = b.provision(&ch).await.expect_err("invalid");
    assert_eq!(e.kind, channel_core::backend::BackendErrorKind::Invalid);
    assert!(e.message.contains("partitions"));
}

/// Many concurrent producers, a fast and a slow stream: every id reaches
/// both, and the offsets each stream sees per partition have no holes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_reaches_a_fast_and_a_slow_stream() {
    const N: usize = 3000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let t = Tansu::start();
    let b = std::sync::Arc::new(backend(&t));
    // One record per batch: tansu 0.6 cannot fetch from inside a batch,
    // which pausing and resuming partitions does (docs/kafka.md).
    let ch = channel(
        "load",
        serde_json::json!({"numPartitions": 3, "config": {"batch.num.messages": 1}}),
    );
    b.provision(&ch).await.expect("provision");
    let mut fast = b.subscribe(&ch, &subscription("fast")).await.expect("fast");
    let mut slow = b.subscribe(&ch, &subscription("slow")).await.expect("slow");
    let mut producers = Vec::new();
    for w in 0..16 {
        let (b, ch) = (b.clone(), ch.clone());
        producers.push(tokio::spawn(async move {
            for i in (w..N).step_by(16) {
                b.persist(&ch, event(i)).await.expect("persist");
            }
        }));
    }
    let (f, s) = tokio::join!(
        consume(&mut fast, Duration::ZERO, N),
        consume(&mut slow, Duration::from_micros(300), N)
    );
    for p in producers {
        p.await.expect("producer");
    }
    for (name, (ids, offsets)) in [("fast", &f), ("slow", &s)] {
        let holes: Vec<_> = offsets
            .iter()
            .flat_map(|(p, os)| {
                os.windows(2)
                    .filter(|w| w[1] != w[0] + 1)
                    .map(move |w| (*p, w[0], w[1]))
            })
            .collect();
        eprintln!("{name}: {} ids, holes {holes:?}", ids.len());
    }
    for (name, (ids, offsets)) in [("fast", f), ("slow", s)] {
        for (p, os) in &offsets {
            let holes: Vec<_> = os.windows(2).filter(|w| w[1] != w[0] + 1).collect();
            assert!(
                holes.is_empty(),
                "{name}: partition {p} offsets jump: {holes:?}"
            );
        }
        assert_eq!(ids.len(), N, "{name} got {} of {N}", ids.len());
    }
}

/// Produce events `0..n` from 16 concurrent producers.
fn produce(
    b: &std::sync::Arc<KafkaBackend>,
    ch: &ChannelContract,
    n: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..16)
        .map(|w| {
            let (b, ch) = (b.clone(), ch.clone());
            tokio::spawn(async move {
                for i in (w..n).step_by(16) {
                    b.persist(&ch, event(i)).await.expect("persist");
                }
            })
        })
        .collect()
}

/// Every partition's offsets, in the order seen, are consecutive.
fn assert_no_holes(name: &str, offsets: &BTreeMap<i32, Vec<i64>>) {
    for (p, os) in offsets {
        let holes: Vec<_> = os.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert!(
            holes.is_empty(),
            "{name}: partition {p} offsets jump: {holes:?}"
        );
    }
}

/// Flow control does not stall a subscription: thousands of events pass a
/// hand-off queue of 16 records (the smallest) promptly, in order per
/// partition, none lost. A correctness bound, not a benchmark: pausing the
/// partitions whenever the queue filled made each refill wait for
/// librdkafka's fetch backoff and took 50-80 s for this (about 2 s now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_through_a_small_hand_off_queue_are_not_stalled() {
    const N: usize = 5000;
    let t = Tansu::start();
    let b = std::sync::Arc::new(backend(&t));
    let ch = channel(
        "smallq",
        serde_json::json!({"numPartitions": 3, "config": {"batch.num.messages": 1}}),
    );
    b.provision(&ch).await.expect("provision");
    let mut sub = subscription("s-smallq");
    sub.delivery.max_in_flight = 1;
    let mut s = b.subscribe(&ch, &sub).await.expect("subscribe");
    let started = Instant::now();
    let producers = produce(&b, &ch, N);
    let (ids, offsets) = consume(&mut s, Duration::ZERO, N).await;
    for p in producers {
        p.await.expect("producer");
    }
    let took = started.elapsed();
    eprintln!("{} of {N} delivered in {took:?}", ids.len());
    assert_no_holes("small queue", &offsets);
    assert_eq!(ids.len(), N, "got {} of {N} in {took:?}", ids.len());
    assert!(
        took < Duration::from_secs(30),
        "{N} events took {took:?} through a 16-record hand-off queue"
    );
}

/// Subscriptions of a channel are independent: one whose subscriber stops
/// taking events (its hand-off queue and prefetch full) does not hold back
/// another's deliveries, and catches up, losing nothing, once it resumes.
/// Its consumer lag (from librdkafka's statistics) shows the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_block_a_fast_one() {
    const N: usize = 2000;
    let t = Tansu::start();
    let b = std::sync::Arc::new(backend(&t));
    let ch = channel(
        "stall",
        serde_json::json!({"numPartitions": 2, "config": {"batch.num.messages": 1}}),
    );
    b.provision(&ch).await.expect("provision");
    let (fast_sub, slow_sub) = (subscription("s-fast"), subscription("s-stalled"));
    let mut fast = b.subscribe(&ch, &fast_sub).await.expect("fast");
    let mut slow = b.subscribe(&ch, &slow_sub).await.expect("slow");
    let producers = produce(&b, &ch, N);
    // The stalled subscriber takes a few deliveries, holds them unsettled,
    // then stops asking for more.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(next(&mut slow).await);
    }
    let (ids, offsets) = consume(&mut fast, Duration::ZERO, N).await;
    for p in producers {
        p.await.expect("producer");
    }
    assert_no_holes("fast", &offsets);
    assert_eq!(ids.len(), N, "the fast subscriber got {} of {N}", ids.len());
    // The stalled one's backlog shows as lag once statistics report.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lag = 0;
    while Instant::now() < deadline {
        lag = b.pending(&ch, &slow_sub).unwrap_or(0);
        if lag > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lag > 0, "a stalled subscription reports its lag");
    // Resumed, it gets everything.
    let mut seen: std::collections::BTreeSet<String> =
        held.iter().map(|d| d.event.id.clone()).collect();
    for d in held {
        d.ack.settle(Outcome::Delivered).await.expect("settle");
    }
    let (rest, _) = consume(&mut slow, Duration::ZERO, N - seen.len()).await;
    seen.extend(rest);
    assert_eq!(
        seen.len(),
        N,
        "the resumed subscriber got {} of {N}",
        seen.len()
    );
}

type Seen = (std::collections::BTreeSet<String>, BTreeMap<i32, Vec<i64>>);

/// Take up to `n` deliveries (bounded in time), settling each after `delay`.
async fn consume(stream: &mut Box<dyn DeliveryStream>, delay: Duration, n: usize) -> Seen {
    let mut ids = std::collections::BTreeSet::new();
    let mut offsets: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids.len() < n && Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await
        else {
            break;
        };
        ids.insert(d.event.id.clone());
        offsets
            .entry(d.position.partition)
            .or_default()
            .push(d.position.offset);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        d.ack.settle(Outcome::Delivered).await.expect("settle");
    }
    (ids, offsets)
}

/// Resuming from a committed offset in the middle of a producer batch: a
/// restarted subscription starts exactly at the first unfinished record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6 skips the rest of a record batch when a fetch starts inside it (docs/kafka.md); holds against Apache Kafka"]
async fn resume_in_the_middle_of_a_batch() {
    let t = Tansu::start();
    let b = std::sync::Arc::new(backend(&t));
    let ch = channel(
        "midbatch",
        serde_json::json!({"numPartitions": 1, "config": {"linger.ms": 50}}),
    );
    b.provision(&ch).await.expect("provision");
    let sub = subscription("s-mid");
    let mut s = b.subscribe(&ch, &sub).await.expect("subscribe");
    // Ten concurrent produces: one batch.
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let (b, ch) = (b.clone(), ch.clone());
            tokio::spawn(async move { b.persist(&ch, event(i)).await.expect("persist") })
        })
        .collect();
    for h in sends {
        h.await.expect("send");
    }
    let mut first = Vec::new();
    for _ in 0..10 {
        first.push(next(&mut s).await);
    }
    first.sort_by_key(|d| d.position.offset);
    let unfinished = first.remove(3);
    for d in first.drain(..3) {
        d.ack.settle(Outcome::Delivered).await.expect("settle");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(s);
    std::mem::forget(unfinished.ack);
    let mut s = b.subscribe(&ch, &sub).await.expect("resubscribe");
    let d = next(&mut s).await;
    assert_eq!(
        d.position.offset, unfinished.position.offset,
        "resumed at the first unfinished record"
    );
}
