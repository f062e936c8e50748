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

/// Kafka: an idempotent `acks=all` producer with `concurrency` sends in
/// flight, while a consumer group consumes the topic and commits what it
/// consumed (stored offsets, committed every second, like the channel).
pub async fn kafka(
    bootstrap: &str,
    size: usize,
    duration: Duration,
    concurrency: usize,
    partitions: i32,
    producer_config: &[(String, String)],
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
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
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-group"))
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let c = counters();
    let start = Instant::now();
    let consume = {
        let c = c.clone();
        tokio::spawn(async move {
            while !c.stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
                    Ok(Ok(m)) => {
                        if consumer.store_offset_from_message(&m).is_ok() {
                            c.consumed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(_)) => {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    };
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
    let consumed_elapsed = drain(&c, start, Duration::from_secs(30)).await;
    c.stop.store(true, Ordering::Relaxed);
    let _ = consume.await;
    println!("{}", report(&c, elapsed, consumed_elapsed));
    let _ = admin.delete_topics(&[&topic], &AdminOptions::new()).await;
    Ok(())
}
