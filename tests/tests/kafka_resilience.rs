//! Durability of the Kafka channel through the real `kafka-dispatcher`:
//! a SIGKILLed dispatcher, a restarted broker, two replicas in one group.
//! Every event answered `202` must reach the subscriber at least once.

use http::StatusCode;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::kafka::{kafka_channel_yaml, KafkaDispatcher, Tansu};
use tests::{assert_all_delivered, try_post, HttpClient, Sink};

const DELIVERY: &str = "{timeout: PT2S}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sigkill_dispatcher_mid_stream_then_restart_loses_nothing() {
    let kafka = Tansu::start();
    let sink =
        Sink::start(|_, _| tests::Answer::status(202).with_delay(Duration::from_millis(2))).await;
    let manifests = kafka_channel_yaml(
        "k",
        "{numPartitions: 3}",
        &[("s", &sink.url(), DELIVERY, false)],
    );
    let mut d = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
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
            // Restart once the killed member's session (10 s) has expired:
            // tansu 0.6, when a member rejoins while a dead one still holds
            // the partitions, can leave the group with no assignment after
            // the dead one expires (seen under CPU load; docs/kafka.md).
            // Apache Kafka rebalances to the live member either way.
            tokio::time::sleep(Duration::from_secs(11)).await;
            d.restart().await;
        }
    }
    assert!(accepted.len() >= 450, "only {} accepted", accepted.len());
    let delivered = tests::eventually(Duration::from_secs(90), || {
        let got: BTreeSet<String> = sink.ids().into_iter().collect();
        accepted.is_subset(&got)
    })
    .await;
    if !delivered {
        eprintln!("dispatcher log:\n{}", d.log());
    }
    assert_all_delivered(&sink, &accepted, Duration::from_secs(1)).await;
    eprintln!(
        "kafka sigkill: {} accepted, {} deliveries (duplicates after the kill: {})",
        accepted.len(),
        sink.count(),
        sink.count().saturating_sub(accepted.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "tansu 0.6 sqlite storage panics (lite.rs query_one) when the surviving idempotent producer resumes with a bumped epoch, then serves nothing; see docs/kafka.md"]
async fn kafka_broker_restart_mid_stream_answers_503_and_loses_nothing() {
    let mut kafka = Tansu::start_sqlite();
    let sink = tests::Sink::accepting().await;
    // A 2 s produce timeout: ingress answers 503 promptly while the broker is down.
    let manifests = kafka_channel_yaml(
        "r",
        "{numPartitions: 2, config: {message.timeout.ms: 2000, batch.num.messages: 1}}",
        &[("s", &sink.url(), DELIVERY, false)],
    );
    let d = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
    let url = d.url("/default/r");

    type Log = Arc<Mutex<Vec<(Instant, Instant, String, Option<StatusCode>)>>>;
    let log: Log = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (log, stop, url) = (log.clone(), stop.clone(), url.clone());
        tokio::spawn(async move {
            let client = HttpClient::new();
            let deadline = Instant::now() + Duration::from_secs(90);
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let id = format!("r-{i}");
                let start = Instant::now();
                let status = try_post(&client, &url, &id).await;
                log.lock()
                    .expect("lock")
                    .push((start, Instant::now(), id, status));
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    kafka.stop();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let up_at = Instant::now();
    kafka.restart();
    d.wait_ready().await;
    // Until the producer has reconnected and events flow again.
    let recovered = tests::eventually(Duration::from_secs(45), || {
        log.lock()
            .expect("lock")
            .iter()
            .any(|(start, _, _, s)| *start > up_at && *s == Some(StatusCode::ACCEPTED))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sender.await.expect("sender");
    assert!(
        recovered,
        "ingress accepted events again after the restart; log:\n{}",
        d.log()
    );

    let log = log.lock().expect("lock").clone();
    let during: Vec<_> = log
        .iter()
        .filter(|(start, end, _, _)| *start >= down_at && *end <= up_at)
        .collect();
    assert!(
        !during.is_empty(),
        "requests completed while the broker was down"
    );
    assert!(
        during
            .iter()
            .all(|(_, _, _, s)| *s == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "while the broker was down ingress answered only 503: {:?}",
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
    assert_all_delivered(&sink, &accepted, Duration::from_secs(90)).await;
    eprintln!(
        "kafka broker restart: {} accepted, {} answered 503 while down, {} deliveries",
        accepted.len(),
        during.len(),
        sink.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_two_dispatcher_replicas_share_the_group_without_loss() {
    let kafka = Tansu::start();
    let sink =
        Sink::start(|_, _| tests::Answer::status(202).with_delay(Duration::from_millis(5))).await;
    let manifests = kafka_channel_yaml(
        "rep",
        "{numPartitions: 4}",
        &[("s", &sink.url(), DELIVERY, false)],
    );
    let a = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
    let b = KafkaDispatcher::start(&manifests, &kafka.bootstrap(), &[]).await;
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
    assert_all_delivered(&sink, &accepted, Duration::from_secs(90)).await;
    let na = a.metric("kn_channel_deliveries_total").await;
    let nb = b.metric("kn_channel_deliveries_total").await;
    eprintln!(
        "kafka replicas delivered {na} and {nb}; {} deliveries for 1000 events",
        sink.count()
    );
}
