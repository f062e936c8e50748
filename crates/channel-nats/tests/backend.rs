//! The NATS backend against a real `nats-server -js`, through the
//! channel-core traits only (no HTTP): storage, dedup, settle semantics,
//! provisioning, malformed messages, outages and shared consumers.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use channel_core::backend::{
    Backend, BackendErrorKind, Delivery, DeliveryStream, Health, Outcome, PersistErrorKind,
};
use channel_core::Event;
use channel_nats::provision;
use common::{backend, backend_acking, channel, subscription, wait_healthy, NatsServer};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn event(id: &str) -> Event {
    Event::new(id, "/test", "com.example.test").with_data("text/plain", format!("data of {id}"))
}

async fn next(stream: &mut Box<dyn DeliveryStream>) -> Delivery {
    let started = Instant::now();
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(d))) => return d,
            Ok(Some(Err(e))) => {
                assert!(started.elapsed() < WAIT, "stream kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(None) => panic!("stream closed"),
            Err(_) => panic!("no delivery within {WAIT:?}"),
        }
    }
}

/// Assert nothing is delivered within `within`.
async fn nothing(stream: &mut Box<dyn DeliveryStream>, within: Duration) {
    if let Ok(Some(Ok(d))) = tokio::time::timeout(within, stream.next()).await {
        panic!("unexpected delivery of {}", d.event.id);
    }
}

async fn stream_messages(b: &channel_nats::NatsBackend, name: &str) -> u64 {
    let js = b.default_jetstream().await.unwrap();
    let mut s = js.get_stream(name).await.unwrap();
    s.info().await.unwrap().state.messages
}

#[tokio::test]
async fn persist_waits_for_the_pub_ack_and_dedups_by_event_id() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("dedup", json!({"retention": "Limits"}));
    b.provision(&ch).await.unwrap();
    b.provision(&ch).await.expect("provision is idempotent");
    b.persist(&ch, event("a")).await.unwrap();
    b.persist(&ch, event("a")).await.unwrap();
    b.persist(&ch, event("b")).await.unwrap();
    assert_eq!(stream_messages(&b, "KN_TEST_NS__DEDUP").await, 2);

    // Stored in binary mode on the Knative subject, id as Nats-Msg-Id.
    let js = b.default_jetstream().await.unwrap();
    let stream = js.get_stream("KN_TEST_NS__DEDUP").await.unwrap();
    let raw = stream.get_raw_message(1).await.unwrap();
    assert_eq!(raw.subject.as_str(), "test-ns.dedup._knative");
    assert_eq!(raw.headers.get("ce-id").unwrap().as_str(), "a");
    assert_eq!(raw.headers.get("Nats-Msg-Id").unwrap().as_str(), "a");
    assert_eq!(&raw.payload[..], b"data of a");
}

#[tokio::test]
async fn settle_semantics_ack_nak_and_out_of_order() {
    settle_semantics(false).await;
}

#[tokio::test]
async fn settle_semantics_with_confirmed_acks() {
    settle_semantics(true).await;
}

/// Plain and confirmed acks settle alike: an acked message never comes
/// back, a nak'ed or dropped one comes back at once, counted.
async fn settle_semantics(confirm_acks: bool) {
    let server = NatsServer::start();
    let b = backend_acking(&server, confirm_acks).await;
    let ch = channel("settle", json!({}));
    let sub = subscription("s1");
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    for id in ["1", "2", "3"] {
        b.persist(&ch, event(id)).await.unwrap();
    }
    let d1 = next(&mut s).await;
    let d2 = next(&mut s).await;
    let d3 = next(&mut s).await;
    assert_eq!(
        [&d1, &d2, &d3].map(|d| d.event.id.clone()),
        ["1", "2", "3"].map(String::from)
    );
    assert_eq!(*d1.event, event("1"), "event round-trips unchanged");
    assert!(d1.position.offset < d2.position.offset);
    assert_eq!(d1.redeliveries, 0);
    assert_eq!(b.pending(&ch, &sub), Some(3));

    // Settle out of order; abandon 1: it comes back at once, counted.
    d3.ack.settle(Outcome::Delivered).await.unwrap();
    d1.ack.settle(Outcome::Abandoned).await.unwrap();
    let again = next(&mut s).await;
    assert_eq!(again.event.id, "1");
    assert_eq!(again.redeliveries, 1);
    d2.ack.settle(Outcome::DeadLettered).await.unwrap();
    // Dropping an acknowledgement unsettled abandons it too.
    drop(again);
    let third = next(&mut s).await;
    assert_eq!(third.event.id, "1");
    assert_eq!(third.redeliveries, 2);
    third.ack.settle(Outcome::Dropped).await.unwrap();
    nothing(&mut s, Duration::from_millis(700)).await;
    assert_eq!(b.pending(&ch, &sub), Some(0));

    // A reopened stream (restarted worker) resumes: nothing is repeated.
    drop(s);
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    b.persist(&ch, event("4")).await.unwrap();
    let d4 = next(&mut s).await;
    assert_eq!(d4.event.id, "4");
    d4.ack.settle(Outcome::Delivered).await.unwrap();
}

#[tokio::test]
async fn a_new_subscription_gets_events_stored_after_it_was_created() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("late", json!({"retention": "Limits"}));
    b.provision(&ch).await.unwrap();
    b.persist(&ch, event("before")).await.unwrap();
    let mut s = b.subscribe(&ch, &subscription("late-sub")).await.unwrap();
    b.persist(&ch, event("after")).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.event.id, "after");
    d.ack.settle(Outcome::Delivered).await.unwrap();
}

#[tokio::test]
async fn changed_stream_config_is_applied_and_deprovision_deletes() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let mut ch = channel("cfg", json!({"maxAge": "PT1H"}));
    b.provision(&ch).await.unwrap();
    let js = b.default_jetstream().await.unwrap();
    let info = js
        .get_stream("KN_TEST_NS__CFG")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(
        info.config.subjects,
        vec!["test-ns.cfg._knative".to_string()]
    );
    b.persist(&ch, event("kept")).await.unwrap();

    ch = channel(
        "cfg",
        json!({"stream": {"config": {"maxAge": "2h", "maxMsgs": 1000, "maxBytes": 1048576, "duplicateWindow": "PT30S"}}}),
    );
    b.provision(&ch).await.unwrap();
    let info = js
        .get_stream("KN_TEST_NS__CFG")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.config.max_age, Duration::from_secs(7200));
    assert_eq!(info.config.max_messages, 1000);
    assert_eq!(info.config.max_bytes, 1_048_576);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(30));

    // An invalid parameter is refused, naming it, and changes nothing.
    let bad = channel("cfg", json!({"maxAgee": "PT1H"}));
    let e = b.provision(&bad).await.unwrap_err();
    assert_eq!(e.kind, BackendErrorKind::Invalid);
    assert!(e.message.contains("maxAgee"), "{e}");

    b.deprovision(&ch).await.unwrap();
    assert!(js.get_stream("KN_TEST_NS__CFG").await.is_err());
    b.deprovision(&ch).await.expect("deprovision is idempotent");
}

#[tokio::test]
async fn full_stream_answers_full_and_oversized_is_rejected() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel(
        "full",
        json!({"retention": "Limits", "maxMsgs": 2, "maxMsgSize": 1024}),
    );
    b.provision(&ch).await.unwrap();
    b.persist(&ch, event("1")).await.unwrap();
    b.persist(&ch, event("2")).await.unwrap();
    let e = b.persist(&ch, event("3")).await.unwrap_err();
    assert_eq!(e.kind, PersistErrorKind::Full, "{e}");
    let big = Event::new("big", "/s", "t").with_data("text/plain", vec![b'x'; 4096]);
    let e = b.persist(&ch, big).await.unwrap_err();
    assert_eq!(e.kind, PersistErrorKind::Rejected, "{e}");
}

#[tokio::test]
async fn malformed_stored_message_is_terminated_and_skipped() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("malformed", json!({"retention": "Limits"}));
    let sub = subscription("m1");
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    // Written there by hand: not a CloudEvent.
    let js = b.default_jetstream().await.unwrap();
    js.publish(
        "test-ns.malformed._knative",
        Bytes::from_static(b"\x00garbage"),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    js.publish(
        "test-ns.malformed._knative",
        Bytes::from_static(br#"{"specversion":"1.0","id":""}"#),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    b.persist(&ch, event("good")).await.unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.event.id, "good");
    d.ack.settle(Outcome::Delivered).await.unwrap();
    nothing(&mut s, Duration::from_millis(700)).await;
    let consumer = js
        .get_stream("KN_TEST_NS__MALFORMED")
        .await
        .unwrap()
        .consumer_info(provision::consumer_name("m1"))
        .await
        .unwrap();
    assert_eq!(consumer.num_ack_pending, 0);
    assert_eq!(consumer.num_pending, 0);
}

#[tokio::test]
async fn structured_mode_messages_are_delivered() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("structured", json!({}));
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &subscription("st")).await.unwrap();
    let js = b.default_jetstream().await.unwrap();
    js.publish(
        "test-ns.structured._knative",
        Bytes::from_static(
            br#"{"specversion":"1.0","id":"x1","source":"/ext","type":"t","datacontenttype":"application/json","data":{"k":1}}"#,
        ),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let d = next(&mut s).await;
    assert_eq!(d.event.id, "x1");
    assert_eq!(d.event.data.as_deref(), Some(&br#"{"k":1}"#[..]));
    d.ack.settle(Outcome::Delivered).await.unwrap();
}

#[tokio::test]
async fn server_down_means_unavailable_and_unhealthy_then_recovers_without_loss() {
    let mut server = NatsServer::start();
    let b = backend(&server).await;
    wait_healthy(&b).await;
    let ch = channel("outage", json!({}));
    let sub = subscription("o1");
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    b.persist(&ch, event("stored-before")).await.unwrap();

    server.stop();
    let started = Instant::now();
    loop {
        if matches!(b.health().await, Health::Unhealthy(_)) {
            break;
        }
        assert!(started.elapsed() < WAIT, "health never turned unhealthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    let e = b.persist(&ch, event("during")).await.unwrap_err();
    assert_eq!(e.kind, PersistErrorKind::Unavailable, "{e}");
    assert!(e.retry_after.is_some());
    assert!(t.elapsed() < Duration::from_secs(3), "503 comes quickly");

    server.restart();
    wait_healthy(&b).await;
    // Ingress works again (JetStream may need a moment after a restart).
    let started = Instant::now();
    while let Err(e) = b.persist(&ch, event("after")).await {
        assert!(started.elapsed() < WAIT, "persist never recovered: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        let d = next(&mut s).await;
        seen.insert(d.event.id.clone());
        d.ack.settle(Outcome::Delivered).await.unwrap();
    }
    assert_eq!(
        seen,
        BTreeSet::from(["stored-before".to_string(), "after".to_string()])
    );
}

#[tokio::test]
async fn two_replicas_of_a_subscription_split_messages_without_loss() {
    let server = NatsServer::start();
    let b1 = backend(&server).await;
    let b2 = backend(&server).await;
    let ch = channel("replicas", json!({}));
    let sub = subscription("shared");
    b1.provision(&ch).await.unwrap();
    b2.provision(&ch).await.unwrap();
    let s1 = b1.subscribe(&ch, &sub).await.unwrap();
    let s2 = b2.subscribe(&ch, &sub).await.unwrap();
    const N: usize = 400;
    for i in 0..N {
        b1.persist(&ch, event(&format!("e{i}"))).await.unwrap();
    }
    let drain = |mut s: Box<dyn DeliveryStream>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            // Ends after a quiet second (bounded by the overall timeout).
            while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(1), s.next()).await
            {
                if let Ok(d) = item {
                    got.push(d.event.id.clone());
                    // A little work, so both replicas get a share.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    d.ack.settle(Outcome::Delivered).await.unwrap();
                }
            }
            got
        })
    };
    let (g1, g2) = tokio::time::timeout(Duration::from_secs(60), async {
        let h1 = drain(s1);
        let h2 = drain(s2);
        (h1.await.unwrap(), h2.await.unwrap())
    })
    .await
    .expect("replicas drained in time");
    let all: BTreeSet<String> = g1.iter().chain(g2.iter()).cloned().collect();
    assert_eq!(all.len(), N, "every event delivered");
    assert_eq!(g1.len() + g2.len(), N, "each delivered once");
    assert!(
        !g1.is_empty() && !g2.is_empty(),
        "both replicas got a share: {} / {}",
        g1.len(),
        g2.len()
    );
}

#[tokio::test]
async fn long_delivery_is_kept_alive_past_the_ack_wait() {
    let server = NatsServer::start();
    let b1 = backend(&server).await;
    let b2 = backend(&server).await;
    let ch = channel("alive", json!({}));
    let sub = subscription("slow"); // timeout 1s → ack wait 5s
    b1.provision(&ch).await.unwrap();
    let mut s1 = b1.subscribe(&ch, &sub).await.unwrap();
    let mut s2 = b2.subscribe(&ch, &sub).await.unwrap();
    b1.persist(&ch, event("long")).await.unwrap();
    let d = tokio::select! {
        d = next(&mut s1) => d,
        d = next(&mut s2) => d,
    };
    // Held for longer than the ack wait: the other replica must not get it.
    let (other, window) = (&mut s2, Duration::from_secs(8));
    tokio::select! {
        _ = nothing(other, window) => {},
        _ = nothing(&mut s1, window) => {},
    }
    assert_eq!(d.redeliveries, 0);
    d.ack.settle(Outcome::Delivered).await.unwrap();
}

#[tokio::test]
async fn unsubscribe_deletes_the_consumer_and_ends_the_stream() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("unsub", json!({}));
    let sub = subscription("gone");
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    b.unsubscribe(&ch, &sub).await.unwrap();
    b.unsubscribe(&ch, &sub).await.expect("idempotent");
    let end = tokio::time::timeout(WAIT, s.next()).await.expect("ends");
    assert!(end.is_none(), "stream closed after unsubscribe");
    let js = b.default_jetstream().await.unwrap();
    let stream = js.get_stream("KN_TEST_NS__UNSUB").await.unwrap();
    assert!(stream
        .consumer_info(provision::consumer_name("gone"))
        .await
        .is_err());
}

#[tokio::test]
async fn ordered_subscription_gets_one_event_at_a_time_in_stream_order() {
    let server = NatsServer::start();
    let b = backend(&server).await;
    let ch = channel("ordered", json!({}));
    let mut sub = subscription("ord");
    sub.delivery.order = channel_core::contract::DeliveryOrder::Ordered;
    b.provision(&ch).await.unwrap();
    let mut s = b.subscribe(&ch, &sub).await.unwrap();
    for i in 0..5 {
        b.persist(&ch, event(&format!("o{i}"))).await.unwrap();
    }
    for i in 0..5 {
        let d = next(&mut s).await;
        assert_eq!(d.event.id, format!("o{i}"));
        if i == 2 {
            // Abandoned: it comes back before anything after it.
            d.ack.settle(Outcome::Abandoned).await.unwrap();
            let again = next(&mut s).await;
            assert_eq!(again.event.id, "o2");
            nothing_while_held(&mut s).await;
            again.ack.settle(Outcome::Delivered).await.unwrap();
            continue;
        }
        // The next one is held back until this one is settled.
        nothing_while_held(&mut s).await;
        d.ack.settle(Outcome::Delivered).await.unwrap();
    }
}

async fn nothing_while_held(s: &mut Box<dyn DeliveryStream>) {
    nothing(s, Duration::from_millis(300)).await;
}
