//! Durability of the NATS channel through the real `nats-dispatcher`:
//! a SIGKILLed dispatcher, a restarted `nats-server`, two replicas.
//! Every event answered `202` must reach the subscriber at least once.

use http::StatusCode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::nats::{nats_channel_yaml, NatsDispatcher, NatsServer};
use tests::{assert_all_delivered, try_post, HttpClient, Sink};

// Short delivery timeout → 5 s ack wait: what a killed dispatcher had in
// flight comes back quickly.
const DELIVERY: &str = "{timeout: PT2S}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_sigkill_dispatcher_mid_stream_then_restart_loses_nothing() {
    let nats = NatsServer::start();
    let sink =
        Sink::start(|_, _| tests::Answer::status(202).with_delay(Duration::from_millis(2))).await;
    let manifests = nats_channel_yaml("k", "", &[("s", &sink.url(), DELIVERY)]);
    let mut d = NatsDispatcher::start(&manifests, &nats.url(), &[]).await;
    let url = d.url("/default/k");
    let client = HttpClient::new();
    let mut accepted = BTreeSet::new();
    for i in 0..600 {
        let id = format!("k-{i}");
        if try_post(&client, &url, &id).await == Some(StatusCode::ACCEPTED) {
            accepted.insert(id);
        }
        if i == 300 {
            d.kill();
        }
        if i == 400 {
            d.restart().await;
        }
    }
    assert!(accepted.len() >= 450, "only {} accepted", accepted.len());
    assert_all_delivered(&sink, &accepted, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_mid_stream_answers_503_and_loses_nothing() {
    let mut nats = NatsServer::start();
    let sink = tests::Sink::accepting().await;
    let manifests = nats_channel_yaml("r", "{storage: File}", &[("s", &sink.url(), DELIVERY)]);
    let d = NatsDispatcher::start(&manifests, &nats.url(), &[]).await;
    let url = d.url("/default/r");

    type Log = Arc<Mutex<Vec<(Instant, Instant, String, Option<StatusCode>)>>>;
    let log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (log, stop, url) = (log.clone(), stop.clone(), url.clone());
        tokio::spawn(async move {
            let client = HttpClient::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let id = format!("r-{i}");
                let start = Instant::now();
                let status = try_post(&client, &url, &id).await;
                log.lock()
                    .expect("lock")
                    .push((start, Instant::now(), id, status));
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    nats.stop();
    let down_at = Instant::now();
    // Longer than the publish-ack timeout (2 s): a publish caught by the
    // kill waits for it, the ones after it are refused at once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let up_at = Instant::now();
    nats.restart();
    // Readiness follows the connection.
    d.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sender.await.expect("sender");

    let log = log.lock().expect("lock").clone();
    let during: Vec<_> = log
        .iter()
        .filter(|(start, end, _, _)| *start >= down_at && *end <= up_at)
        .collect();
    assert!(!during.is_empty(), "requests were sent while NATS was down");
    assert!(
        during
            .iter()
            .all(|(_, _, _, s)| *s == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "while NATS was down ingress answered only 503: {:?}",
        during
            .iter()
            .map(|(_, _, _, s)| *s)
            .collect::<BTreeSet<_>>()
    );
    let accepted: BTreeSet<String> = log
        .iter()
        .filter(|(_, _, _, s)| *s == Some(StatusCode::ACCEPTED))
        .map(|(_, _, id, _)| id.clone())
        .collect();
    let after = log
        .iter()
        .filter(|(start, _, _, s)| *start > up_at && *s == Some(StatusCode::ACCEPTED))
        .count();
    assert!(
        after > 0,
        "ingress accepted events again after the restart; log:\n{}",
        d.log()
    );
    assert_all_delivered(&sink, &accepted, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_two_dispatcher_replicas_share_the_load_without_loss() {
    let nats = NatsServer::start();
    let sink =
        Sink::start(|_, _| tests::Answer::status(202).with_delay(Duration::from_millis(5))).await;
    let manifests = nats_channel_yaml("rep", "", &[("s", &sink.url(), DELIVERY)]);
    let a = NatsDispatcher::start(&manifests, &nats.url(), &[]).await;
    let b = NatsDispatcher::start(&manifests, &nats.url(), &[]).await;
    let client = HttpClient::new();
    let mut accepted = BTreeSet::new();
    for i in 0..1000 {
        let id = format!("rep-{i}");
        let url = if i % 2 == 0 {
            a.url("/default/rep")
        } else {
            b.url("/default/rep")
        };
        if try_post(&client, &url, &id).await == Some(StatusCode::ACCEPTED) {
            accepted.insert(id);
        }
    }
    assert_eq!(accepted.len(), 1000);
    assert_all_delivered(&sink, &accepted, Duration::from_secs(60)).await;
    let na = a.metric("kn_channel_deliveries_total").await;
    let nb = b.metric("kn_channel_deliveries_total").await;
    assert!(na > 0.0 && nb > 0.0, "both replicas delivered: {na} / {nb}");
    assert!(
        sink.count() <= 1000 + 20,
        "few duplicates ({} deliveries for 1000 events)",
        sink.count()
    );
    eprintln!("replicas delivered {na} and {nb} of 1000 events");
}
