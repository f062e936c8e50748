//! Unit tests of the bounded log, cursors and settlement.

use super::*;
use channel_core::contract::{DeliveryPolicy, Ingress};

fn channel(params: &[(&str, u64)]) -> ChannelContract {
    ChannelContract {
        broker: None,
        uid: "c1".into(),
        namespace: "default".into(),
        name: "orders".into(),
        kind: "Channel".into(),
        backend: BackendKind::InMemory,
        class: "in-memory-channel".into(),
        ingress: Ingress::for_channel("default", "orders"),
        parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect(),
        subscriptions: vec![],
    }
}

fn sub(uid: &str) -> SubscriptionContract {
    SubscriptionContract {
        trigger: None,
        auth: None,
        uid: uid.into(),
        namespace: "default".into(),
        name: uid.into(),
        generation: 1,
        subscriber: None,
        reply: None,
        dead_letter: None,
        delivery: DeliveryPolicy::default(),
    }
}

fn ev(i: usize) -> Event {
    Event::new(format!("e{i}"), "/test", "t").with_data("text/plain", format!("payload {i}"))
}

async fn next(stream: &mut Box<dyn DeliveryStream>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("a delivery within 2s")
        .expect("stream open")
        .expect("no error")
}

async fn nothing_pending(stream: &mut Box<dyn DeliveryStream>) -> bool {
    tokio::time::timeout(Duration::from_millis(50), stream.next())
        .await
        .is_err()
}

#[tokio::test]
async fn each_subscription_gets_every_event_in_order() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    let mut s1 = b.subscribe(&c, &sub("s1")).await.unwrap();
    let mut s2 = b.subscribe(&c, &sub("s2")).await.unwrap();
    for i in 0..5 {
        b.persist(&c, ev(i)).await.unwrap();
    }
    for stream in [&mut s1, &mut s2] {
        for i in 0..5 {
            let d = next(stream).await;
            assert_eq!(d.event.id, format!("e{i}"));
            assert_eq!(d.position.offset, i as i64);
            d.ack.settle(Outcome::Delivered).await.unwrap();
        }
        assert!(nothing_pending(stream).await);
    }
    assert_eq!(b.pending(&c, &sub("s1")), Some(0));
}

#[tokio::test]
async fn without_subscriptions_events_are_accepted_and_dropped() {
    let b = InMemoryBackend::new(Limits {
        max_events: 1,
        max_bytes: 1 << 20,
    });
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    for i in 0..10 {
        b.persist(&c, ev(i)).await.unwrap();
    }
    // A subscription added now starts at the end.
    let mut s = b.subscribe(&c, &sub("late")).await.unwrap();
    assert!(nothing_pending(&mut s).await);
    b.persist(&c, ev(10)).await.unwrap();
    assert_eq!(next(&mut s).await.event.id, "e10");
}

#[tokio::test]
async fn stalled_subscription_fills_the_bound_then_ingress_is_refused() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[("maxEvents", 3)]);
    b.provision(&c).await.unwrap();
    let _stalled = b.subscribe(&c, &sub("stalled")).await.unwrap();
    let mut fast = b.subscribe(&c, &sub("fast")).await.unwrap();
    for i in 0..3 {
        b.persist(&c, ev(i)).await.unwrap();
        // The fast subscriber is not held back by the stalled one.
        let d = next(&mut fast).await;
        assert_eq!(d.event.id, format!("e{i}"));
        d.ack.settle(Outcome::Delivered).await.unwrap();
    }
    let err = b.persist(&c, ev(3)).await.unwrap_err();
    assert_eq!(err.kind, PersistErrorKind::Full);
    assert_eq!(err.retry_after, Some(FULL_RETRY_AFTER));
    assert_eq!(b.pending(&c, &sub("stalled")), Some(3));
    assert_eq!(b.pending(&c, &sub("fast")), Some(0));
}

#[tokio::test]
async fn byte_bound_is_enforced_and_oversized_events_rejected() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[("maxBytes", 2000)]);
    b.provision(&c).await.unwrap();
    let _s = b.subscribe(&c, &sub("s")).await.unwrap();
    let big = Event::new("big", "/s", "t").with_data("application/octet-stream", vec![0u8; 4000]);
    assert_eq!(
        b.persist(&c, big).await.unwrap_err().kind,
        PersistErrorKind::Rejected
    );
    let mid = || Event::new("m", "/s", "t").with_data("application/octet-stream", vec![0u8; 700]);
    b.persist(&c, mid()).await.unwrap();
    b.persist(&c, mid()).await.unwrap();
    assert_eq!(
        b.persist(&c, mid()).await.unwrap_err().kind,
        PersistErrorKind::Full
    );
}

#[tokio::test]
async fn out_of_order_settlement_commits_the_contiguous_prefix_and_frees_memory() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[("maxEvents", 3)]);
    b.provision(&c).await.unwrap();
    let mut s = b.subscribe(&c, &sub("s")).await.unwrap();
    for i in 0..3 {
        b.persist(&c, ev(i)).await.unwrap();
    }
    let d0 = next(&mut s).await;
    let d1 = next(&mut s).await;
    let d2 = next(&mut s).await;
    d2.ack.settle(Outcome::Delivered).await.unwrap();
    d1.ack.settle(Outcome::DeadLettered).await.unwrap();
    // Offset 0 still unsettled: the log is still full.
    assert_eq!(
        b.persist(&c, ev(3)).await.unwrap_err().kind,
        PersistErrorKind::Full
    );
    d0.ack.settle(Outcome::Dropped).await.unwrap();
    assert_eq!(b.pending(&c, &sub("s")), Some(0));
    b.persist(&c, ev(3)).await.unwrap();
    assert_eq!(next(&mut s).await.event.id, "e3");
}

#[tokio::test]
async fn abandoned_and_dropped_acks_are_redelivered_first() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    let mut s = b.subscribe(&c, &sub("s")).await.unwrap();
    for i in 0..3 {
        b.persist(&c, ev(i)).await.unwrap();
    }
    let d0 = next(&mut s).await;
    let d1 = next(&mut s).await;
    d0.ack.settle(Outcome::Abandoned).await.unwrap();
    drop(d1); // dropped without settling = abandoned
    let again = next(&mut s).await;
    assert_eq!((again.event.id.as_str(), again.redeliveries), ("e0", 1));
    again.ack.settle(Outcome::Delivered).await.unwrap();
    assert_eq!(next(&mut s).await.event.id, "e1");
}

#[tokio::test]
async fn resubscribing_resumes_without_loss_or_repeats() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    let mut s = b.subscribe(&c, &sub("s")).await.unwrap();
    for i in 0..4 {
        b.persist(&c, ev(i)).await.unwrap();
    }
    let d0 = next(&mut s).await;
    let d1 = next(&mut s).await;
    d1.ack.settle(Outcome::Delivered).await.unwrap();
    d0.ack.settle(Outcome::Abandoned).await.unwrap();
    drop(s);
    let mut s = b.subscribe(&c, &sub("s")).await.unwrap();
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..3 {
            let d = next(&mut s).await;
            ids.push(d.event.id.clone());
            d.ack.settle(Outcome::Delivered).await.unwrap();
        }
        ids
    };
    assert_eq!(ids, ["e0", "e2", "e3"]);
    assert!(nothing_pending(&mut s).await);
}

#[tokio::test]
async fn streams_end_when_the_channel_or_subscription_goes() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    let mut s1 = b.subscribe(&c, &sub("s1")).await.unwrap();
    let mut s2 = b.subscribe(&c, &sub("s2")).await.unwrap();
    let waiting = tokio::spawn(async move { s1.next().await.is_none() });
    tokio::task::yield_now().await;
    b.unsubscribe(&c, &sub("s1")).await.unwrap();
    assert!(waiting.await.unwrap());
    b.deprovision(&c).await.unwrap();
    assert!(s2.next().await.is_none());
    assert_eq!(
        b.persist(&c, ev(0)).await.unwrap_err().kind,
        PersistErrorKind::UnknownChannel
    );
}

#[tokio::test]
async fn invalid_parameters_are_reported() {
    let b = InMemoryBackend::new(Limits::default());
    let mut c = channel(&[]);
    c.parameters
        .insert("maxEvents".into(), serde_json::json!("lots"));
    let err = b.provision(&c).await.unwrap_err();
    assert_eq!(err.kind, BackendErrorKind::Invalid);
    assert!(err.message.contains("maxEvents"), "{}", err.message);
}

#[tokio::test]
async fn ordering_key_comes_from_partitionkey() {
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.unwrap();
    let mut s = b.subscribe(&c, &sub("s")).await.unwrap();
    b.persist(&c, ev(0).with_extension("partitionkey", "k1"))
        .await
        .unwrap();
    assert_eq!(next(&mut s).await.ordering_key.as_deref(), Some("k1"));
}

/// A reload keeps the entries of unchanged channels (no copy of ten
/// thousand channels per edit) and serves the changed ones' new settings.
#[tokio::test]
async fn a_reload_keeps_unchanged_channels_and_replaces_changed_ones() {
    use dispatcher::dataplane::{Dataplane, RouteTable};
    use dispatcher::delivery::{Deliverer, DeliveryOptions};
    use dispatcher::metrics::Metrics;

    let named = |name: &str, max_events: u64| ChannelContract {
        uid: format!("uid-{name}"),
        name: name.into(),
        ingress: Ingress::for_channel("default", name),
        ..channel(&[("maxEvents", max_events)])
    };
    let contract = |generation: u64, channels: Vec<ChannelContract>| channel_core::Contract {
        generation,
        backend: Some(BackendKind::InMemory),
        channels,
        ..Default::default()
    };
    let metrics = Arc::new(Metrics::new());
    let routes = Arc::new(arc_swap::ArcSwap::from_pointee(RouteTable::default()));
    let dataplane = Dataplane::new(
        Arc::new(InMemoryBackend::new(Limits::default())),
        Deliverer::new(
            metrics.clone(),
            DeliveryOptions::basic(Duration::from_secs(1), 1024),
        ),
        metrics,
        routes.clone(),
    );
    let served = |path: &str| {
        routes
            .load()
            .lookup(None, path)
            .map(|r| r.channel.clone())
            .expect("routed")
    };

    dataplane
        .apply(
            contract(1, vec![named("a", 10), named("b", 10)]),
            Vec::new(),
        )
        .await;
    let (a, b) = (served("/default/a"), served("/default/b"));

    dataplane
        .apply(
            contract(2, vec![named("a", 10), named("b", 20), named("c", 10)]),
            Vec::new(),
        )
        .await;
    assert!(Arc::ptr_eq(&a, &served("/default/a")), "unchanged: kept");
    let b2 = served("/default/b");
    assert!(!Arc::ptr_eq(&b, &b2), "changed: replaced");
    assert_eq!(b2.parameters["maxEvents"], 20);
    assert_eq!(served("/default/c").name, "c");
    assert_eq!(dataplane.status().generation, Some(2));
}

#[tokio::test]
async fn an_idle_subscription_is_a_small_waiting_task() {
    use dispatcher::delivery::{Deliverer, DeliveryOptions, SubscriptionConfig};
    use dispatcher::metrics::Metrics;
    let b = InMemoryBackend::new(Limits::default());
    let c = channel(&[]);
    b.provision(&c).await.expect("provision");
    let s = sub("s1");
    let stream = b.subscribe(&c, &s).await.expect("subscribe");
    let metrics = Arc::new(Metrics::new());
    let deliverer = Deliverer::new(
        metrics.clone(),
        DeliveryOptions::basic(Duration::from_secs(1), 1024),
    );
    let metrics = deliverer.subscription_metrics(&c, &s);
    let worker = deliverer.run_subscription(
        SubscriptionConfig::new(Arc::new(s.clone())),
        metrics,
        stream,
        tokio_util::sync::CancellationToken::new(),
    );
    // Ten thousand subscriptions are ten thousand of these: what the worker
    // keeps between events and what only deliveries in flight need live on
    // the heap. The bound keeps the task in tokio's 256-byte cell (the
    // future plus ~104 bytes of task header and trailer, rounded up to 128
    // on x86_64).
    let size = std::mem::size_of_val(&worker);
    assert!(size <= 152, "the worker's state is {size} bytes");
}
