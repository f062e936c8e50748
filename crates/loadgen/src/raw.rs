//! Raw broker baselines for the backend benchmarks: what the broker client
//! alone achieves on the same machine, message size and durability
//! settings — publish with acknowledgement, consume, acknowledge/commit —
//! so the channel's numbers can be read as a ratio of it.

use bytes::Bytes;
use futures_util::StreamExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counters {
    published: AtomicU64,
    consumed: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
}

fn report(c: &Counters, elapsed: Duration, consumed_elapsed: Duration) -> serde_json::Value {
    let published = c.published.load(Ordering::Relaxed);
    let consumed = c.consumed.load(Ordering::Relaxed);
    serde_json::json!({
        "published": published,
        "consumed": consumed,
        "errors": c.errors.load(Ordering::Relaxed),
        "published_per_s": published as f64 / elapsed.as_secs_f64(),
        "consumed_per_s": consumed as f64 / consumed_elapsed.as_secs_f64(),
    })
}

fn counters() -> Arc<Counters> {
    Arc::new(Counters {
        published: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    })
}

/// Wait (bounded) until consumption caught up with publication.
async fn drain(c: &Counters, start: Instant, limit: Duration) -> Duration {
    let deadline = Instant::now() + limit;
    while c.consumed.load(Ordering::Relaxed) < c.published.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

/// JetStream: publish and await the PubAck from `concurrency` tasks, while a
/// durable pull consumer with explicit acks consumes the same stream.
pub async fn nats(
    url: &str,
    size: usize,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<()> {
    use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream};
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("RAW_BENCH").await;
    js.create_stream(stream::Config {
        name: "RAW_BENCH".into(),
        subjects: vec!["rawbench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let consumer = js
        .get_stream("RAW_BENCH")
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: AckPolicy::Explicit,
            max_ack_pending: 256,
            ..Default::default()
        })
        .await?;
    let c = counters();
    let data = Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let consume = {
        let c = c.clone();
        tokio::spawn(async move {
            let Ok(mut messages) = consumer.messages().await else {
                return;
            };
            while !c.stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
                    Ok(Some(Ok(m))) => {
                        if m.ack().await.is_ok() {
                            c.consumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Some(Err(_))) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
        })
    };
    let mut publishers = Vec::new();
    for w in 0..concurrency.max(1) {
        let (js, c, data) = (js.clone(), c.clone(), data.clone());
        publishers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                n += 1;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{w}-{n}").as_str());
                match js
                    .publish_with_headers(format!("rawbench.{w}"), headers, data.clone())
                    .await
                {
                    Ok(ack) => match ack.await {
                        Ok(_) => {
                            c.published.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            c.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    let elapsed = start.elapsed();
    let consumed_elapsed = drain(&c, start, Duration::from_secs(30)).await;
    c.stop.store(true, Ordering::Relaxed);
    let _ = consume.await;
    println!("{}", report(&c, elapsed, consumed_elapsed));
    let _ = js.delete_stream("RAW_BENCH").await;
    Ok(())
}

/// One raw Kafka baseline run (see [`kafka`]).
#[derive(Debug)]
pub struct KafkaRun<'a> {
    pub bootstrap: &'a str,
    /// Record value size in bytes.
    pub size: usize,
    /// How long the producer sends.
    pub duration: Duration,
    /// Sends in flight.
    pub concurrency: usize,
    /// Partitions of the fresh topic.
    pub partitions: i32,
    /// Consumer groups, each reading the whole topic.
    pub groups: usize,
    /// Bound on the wait for every group to catch up after producing.
    pub drain_limit: Duration,
    /// Extra librdkafka producer properties.
    pub producer_config: &'a [(String, String)],
}

/// Kafka: an idempotent `acks=all` producer with `concurrency` sends in
/// flight, while `groups` consumer groups (one consumer each, like one
/// channel subscription each) consume the whole topic and commit what they
/// consumed (stored offsets, committed every second, like the channel).
///
/// Reported: `consumed_per_s` is the events/s every group consumed (the
/// slowest group's count over the time until all groups caught up, bounded
/// by `drain_limit`), `deliveries_per_s` the records/s consumed summed over
/// the groups; with one group they are the same.
pub async fn kafka(run: KafkaRun<'_>) -> anyhow::Result<()> {
    let KafkaRun {
        bootstrap,
        size,
        duration,
        concurrency,
        partitions,
        groups,
        drain_limit,
        producer_config,
    } = run;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let groups = groups.max(1);
    let topic = format!("raw-bench-{}", std::process::id());
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let _ = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?;
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "10000");
    for (k, v) in producer_config {
        pc.set(k, v);
    }
    let producer: FutureProducer = pc.create()?;
    // Every group counts what it consumed; the shared counters hold the
    // producer's side and the sum.
    let c = counters();
    let per_group: Arc<Vec<AtomicU64>> = Arc::new((0..groups).map(|_| AtomicU64::new(0)).collect());
    let mut consumers = Vec::with_capacity(groups);
    for g in 0..groups {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{topic}-group-{g}"))
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[&topic])?;
        consumers.push(consumer);
    }
    let start = Instant::now();
    let mut consume = Vec::with_capacity(groups);
    for (g, consumer) in consumers.into_iter().enumerate() {
        let (c, per_group) = (c.clone(), per_group.clone());
        consume.push(tokio::spawn(async move {
            while !c.stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        if consumer.store_offset_from_message(&m).is_ok() {
                            per_group[g].fetch_add(1, Ordering::Relaxed);
                            c.consumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(_)) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    let data = vec![b'x'; size];
    let mut publishers = Vec::new();
    for w in 0..concurrency.max(1) {
        let (producer, c, data, topic) = (producer.clone(), c.clone(), data.clone(), topic.clone());
        publishers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < duration {
                n += 1;
                let key = format!("{w}-{n}");
                let record = FutureRecord::to(&topic).payload(&data).key(&key);
                match producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => c.published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for p in publishers {
        let _ = p.await;
    }
    let elapsed = start.elapsed();
    // Until every group consumed everything published (bounded).
    let deadline = Instant::now() + drain_limit;
    let slowest = |pg: &[AtomicU64]| {
        pg.iter()
            .map(|n| n.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    while slowest(&per_group) < c.published.load(Ordering::Relaxed) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumed_elapsed = start.elapsed();
    c.stop.store(true, Ordering::Relaxed);
    for t in consume {
        let _ = t.await;
    }
    let published = c.published.load(Ordering::Relaxed);
    let all = slowest(&per_group);
    let deliveries = c.consumed.load(Ordering::Relaxed);
    let secs = consumed_elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "groups": groups,
            "published": published,
            "consumed": all,
            "consumed_per_group": per_group.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<_>>(),
            "complete": all >= published,
            "deliveries": deliveries,
            "errors": c.errors.load(Ordering::Relaxed),
            "elapsed_s": elapsed.as_secs_f64(),
            "consumed_elapsed_s": secs,
            "published_per_s": published as f64 / elapsed.as_secs_f64(),
            "consumed_per_s": all as f64 / secs,
            "deliveries_per_s": deliveries as f64 / secs,
        })
    );
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    Ok(())
}
