//! Delivery through the real `nats-dispatcher` and a real `nats-server`:
//! the engine's rules (retries, dead letter) and fan-out under load.

use http::StatusCode;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tests::nats::{nats_channel_yaml, NatsDispatcher, NatsServer};
use tests::{event, Answer, Sink};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_delivers_retries_and_dead_letters() {
    let nats = NatsServer::start();
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
    let manifests = nats_channel_yaml(
        "c",
        "{maxAge: PT1H}",
        &[
            ("flaky", &flaky.url(), &retry),
            ("failing", &failing.url(), &dead),
            ("rejecting", &rejecting.url(), &dead),
        ],
    );
    let d = NatsDispatcher::start(&manifests, &nats.url(), &[]).await;
    let (status, _, _) = d
        .client()
        .post_binary(&d.url("/default/c"), &event("e1"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "log:\n{}", d.log());

    let got = flaky.wait_for(3, WAIT).await;
    assert!(got.iter().all(|r| r.id() == "e1"));
    let dead = dls.wait_for(2, WAIT).await;
    assert_eq!(failing.count(), 3, "one attempt and 2 retries");
    assert_eq!(
        rejecting.count(),
        1,
        "400 is not retried: straight to the dead-letter sink"
    );
    for r in &dead {
        let e = r.event.clone().expect("a CloudEvent");
        assert_eq!(e.id, "e1");
        assert_eq!(e.data, event("e1").data, "data unchanged");
    }
    // Everything settled: nothing comes again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(flaky.count(), 3);
    assert_eq!(dls.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_10000_events_reach_a_slow_and_a_fast_subscriber() {
    const N: usize = 10_000;
    let nats = NatsServer::start();
    let fast = Sink::accepting().await;
    let slow = Sink::start(|_, _| Answer::status(202).with_delay(Duration::from_millis(20))).await;
    let manifests = nats_channel_yaml(
        "load",
        "",
        &[("fast", &fast.url(), ""), ("slow", &slow.url(), "")],
    );
    let d = Arc::new(NatsDispatcher::start(&manifests, &nats.url(), &[]).await);
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
        tokio::time::timeout(Duration::from_secs(180), s)
            .await
            .expect("sent in time")
            .expect("sender");
    }
    let sent_in = started.elapsed();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("ev-{i}")).collect();
    for (name, sink) in [("fast", &fast), ("slow", &slow)] {
        let ok = tests::eventually(Duration::from_secs(180), || {
            sink.ids().into_iter().collect::<BTreeSet<_>>() == expected
        })
        .await;
        let got: BTreeSet<String> = sink.ids().into_iter().collect();
        assert!(
            ok,
            "{name} subscriber got {} of {N} distinct ids; missing e.g. {:?}",
            got.len(),
            expected.difference(&got).take(5).collect::<Vec<_>>()
        );
    }
    eprintln!(
        "nats: {N} events accepted in {sent_in:?} ({:.0}/s); all delivered to both in {:?}; dispatcher RSS {} KiB",
        N as f64 / sent_in.as_secs_f64(),
        started.elapsed(),
        d.rss_kib()
    );
}
