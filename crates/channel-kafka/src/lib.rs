//! The Apache Kafka channel backend: a topic per channel, a consumer group
//! per subscription.
//!
//! * **Persist**: an idempotent producer with `acks=all` writes the event in
//!   the CloudEvents Kafka binary mode ([`codec`]); `persist` returns only
//!   after the broker's delivery report, so ingress answers `202` for stored
//!   events only. A bounded `message.timeout.ms` (5 s unless the class's
//!   `config` says otherwise) turns a broker outage into a prompt `503`.
//! * **Subscribe**: one consumer group per subscription, named as Knative
//!   names it ([`provision::group_id`]); a new group's offsets start at the
//!   end of every partition. Records are handed out with their partition and
//!   offset, settled in any order, and only the contiguous finished prefix is
//!   committed ([`offsets`], [`consumer`]).
//! * **Provision**: topics created idempotently, grown, deleted with the
//!   channel ([`provision`]).
//! * **Parameters**: strict, with secrets redacted ([`config`]).
//!
//! This crate knows nothing of NATS, and nothing of HTTP delivery: the
//! dispatcher engine does retries, dead letters and ordering.

pub mod codec;
pub mod config;
pub mod consumer;
pub mod offsets;
pub mod provision;
pub mod source;

use async_trait::async_trait;
use channel_core::backend::{
    Backend, BackendError, BackendErrorKind, DeliveryStream, Health, PersistError, PersistErrorKind,
};
use channel_core::{BackendKind, ChannelContract, Event, SubscriptionContract};
use config::{Defaults, KafkaParams};
use consumer::{SubscriptionContext, TracingContext};
use rdkafka::admin::AdminClient;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Default upper bound on how long a produce may wait for the broker.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `persist` waits for room in the producer's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the health check waits for metadata.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Records queued between a subscription's consumer thread and its stream.
const STREAM_QUEUE: usize = 512;
/// librdkafka's prefetch for one subscription, in KiB, split over its
/// partitions.
const PREFETCH_KBYTES: u32 = 8 * 1024;
/// The least prefetch of one partition, in KiB.
const MIN_PARTITION_PREFETCH_KBYTES: u32 = 1024;
/// Retry hint when the broker is unavailable.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Clients for one set of connection properties (one Kafka cluster and
/// identity); shared by every channel using them.
struct Connection {
    /// Connection properties (including secrets: never logged).
    props: BTreeMap<String, String>,
    /// Replaced when it fails for good (a fatal idempotence error, or a
    /// broker that no longer knows its producer id after a restart).
    producer: RwLock<Arc<FutureProducer<TracingContext>>>,
    /// When the producer was last replaced (rate limit).
    replaced: Mutex<Option<std::time::Instant>>,
    /// Hard bound on one produce: `message.timeout.ms` plus the queue wait
    /// and a margin (librdkafka may report later than its own timeout).
    deadline: Duration,
    admin: Arc<AdminClient<TracingContext>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field(
                "bootstrap_servers",
                &self.props.get("bootstrap.servers").map(String::as_str),
            )
            .finish_non_exhaustive()
    }
}

fn new_producer(
    props: &BTreeMap<String, String>,
) -> Result<FutureProducer<TracingContext>, BackendError> {
    let timeout = DEFAULT_MESSAGE_TIMEOUT.as_millis().to_string();
    client_config(
        props,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", &timeout),
            ("linger.ms", "2"),
            ("socket.keepalive.enable", "true"),
        ],
    )
    .create_with_context(TracingContext)
    .map_err(|e| provision::backend_error("creating the Kafka producer", e))
}

impl Connection {
    fn producer(&self) -> Arc<FutureProducer<TracingContext>> {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replace a producer that cannot recover by itself; at most every 2 s.
    fn replace_producer(&self, failed: &Arc<FutureProducer<TracingContext>>, why: &KafkaError) {
        {
            let mut replaced = self.replaced.lock().unwrap_or_else(|e| e.into_inner());
            if replaced.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                return;
            }
            *replaced = Some(std::time::Instant::now());
        }
        let mut current = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        match new_producer(&self.props) {
            Ok(p) => {
                tracing::warn!(error = %why, "Kafka producer failed for good: replaced by a new one");
                *current = Arc::new(p);
            }
            Err(e) => tracing::error!(error = %e, "cannot replace the failed Kafka producer"),
        }
    }
}

/// Whether a produce error means the producer itself cannot go on.
fn producer_broken(producer: &FutureProducer<TracingContext>, e: &KafkaError) -> bool {
    producer.client().fatal_error().is_some()
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::Unknown
                    | RDKafkaErrorCode::UnknownProducerId
                    | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::InvalidProducerIdMapping
                    // Not retriable either. tansu 0.6 answers every produce
                    // of an idempotent producer that bumped its epoch (after
                    // requests timed out in a network cut) with it, forever;
                    // a new producer (a new producer id) is accepted at once.
                    | RDKafkaErrorCode::ProducerFenced
            )
        )
}

/// A channel's resolved settings.
#[derive(Debug)]
struct ChannelEntry {
    /// The parameters these settings were computed from.
    parameters: BTreeMap<String, serde_json::Value>,
    params: KafkaParams,
    topic: String,
    connection: Arc<Connection>,
}

/// The Kafka backend.
#[derive(Debug)]
pub struct KafkaBackend {
    defaults: Defaults,
    channels: RwLock<HashMap<String, Arc<ChannelEntry>>>,
    connections: Mutex<Vec<Arc<Connection>>>,
    /// Running consumers by subscription uid.
    subscriptions: Mutex<HashMap<String, Arc<consumer::Shared>>>,
    /// This dispatcher's stable identity in every consumer group (Kafka
    /// static membership), if configured.
    group_instance_id: Option<String>,
}

fn client_config(props: &BTreeMap<String, String>, base: &[(&str, &str)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in base {
        cfg.set(*k, *v);
    }
    // The class's properties (and its `config` tuning map) win.
    for (k, v) in props {
        cfg.set(k, v);
    }
    cfg
}

impl KafkaBackend {
    /// A backend whose classes default to `defaults`.
    pub fn new(defaults: Defaults) -> Self {
        KafkaBackend {
            defaults,
            channels: RwLock::new(HashMap::new()),
            connections: Mutex::new(Vec::new()),
            subscriptions: Mutex::new(HashMap::new()),
            group_instance_id: None,
        }
    }

    /// Join every subscription's consumer group as the static member `id`
    /// (`group.instance.id`, Kafka 2.3+): a dispatcher restarted under the
    /// same id gets its partitions back at once, instead of after the broker
    /// expired the dead member (`session.timeout.ms`). The id must be stable
    /// across restarts and unique among the replicas (a pod name, a compose
    /// service); a second live member with the same id is fenced. A static
    /// member does not leave its groups on shutdown either: its partitions
    /// wait for it (up to the session timeout) instead of moving.
    pub fn with_group_instance_id(mut self, id: Option<String>) -> Self {
        self.group_instance_id = id.map(|i| i.trim().to_owned()).filter(|i| !i.is_empty());
        self
    }

    fn connection(&self, props: BTreeMap<String, String>) -> Result<Arc<Connection>, BackendError> {
        let mut connections = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connections.iter().find(|c| c.props == props) {
            return Ok(c.clone());
        }
        let producer = new_producer(&props)?;
        let admin: AdminClient<TracingContext> = client_config(&props, &[])
            .create_with_context(TracingContext)
            .map_err(|e| provision::backend_error("creating the Kafka admin client", e))?;
        let message_timeout = props
            .get("message.timeout.ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_MESSAGE_TIMEOUT, Duration::from_millis);
        let c = Arc::new(Connection {
            deadline: message_timeout + QUEUE_TIMEOUT + Duration::from_millis(500),
            props,
            producer: RwLock::new(Arc::new(producer)),
            replaced: Mutex::new(None),
            admin: Arc::new(admin),
        });
        connections.push(c.clone());
        Ok(c)
    }

    /// The resolved settings of a channel, computed when first seen or when
    /// its parameters change.
    fn entry(&self, channel: &ChannelContract) -> Result<Arc<ChannelEntry>, BackendError> {
        if let Some(e) = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&channel.uid)
        {
            if e.parameters == channel.parameters {
                return Ok(e.clone());
            }
        }
        let params = KafkaParams::parse(&channel.parameters)?;
        let props = params.client_properties(&self.defaults)?;
        let entry = Arc::new(ChannelEntry {
            parameters: channel.parameters.clone(),
            params,
            topic: provision::channel_topic(channel),
            connection: self.connection(props)?,
        });
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.uid.clone(), entry.clone());
        Ok(entry)
    }

    fn consumer(
        &self,
        entry: &ChannelEntry,
        shared: Arc<consumer::Shared>,
        group: &str,
    ) -> Result<consumer::SubscriptionConsumer, BackendError> {
        let prefetch = prefetch_kbytes(entry.params.num_partitions).to_string();
        let mut cfg = client_config(
            &entry.connection.props,
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "latest"),
                ("enable.partition.eof", "false"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "3000"),
                // Bounded prefetch, per partition (each has its own queue):
                // the consumer's fetch buffer is part of the dispatcher's
                // memory bound, and it is where records wait while the
                // engine's window is full.
                ("queued.max.messages.kbytes", &prefetch),
                ("queued.min.messages", "1000"),
                // Refill a drained prefetch promptly (librdkafka waits 1 s by
                // default once its thresholds were reached).
                ("fetch.queue.backoff.ms", "10"),
                // High watermarks for the consumer lag.
                ("statistics.interval.ms", consumer::STATISTICS_INTERVAL_MS),
            ],
        );
        if let Some(id) = &self.group_instance_id {
            if !entry.connection.props.contains_key("group.instance.id") {
                cfg.set("group.instance.id", id);
            }
        }
        cfg.create_with_context(SubscriptionContext { shared })
            .map_err(|e| provision::backend_error("creating the Kafka consumer", e))
    }
}

/// librdkafka's prefetch bound per partition, in KiB: about
/// [`PREFETCH_KBYTES`] for the whole subscription, at least
/// [`MIN_PARTITION_PREFETCH_KBYTES`] per partition.
fn prefetch_kbytes(partitions: i32) -> u32 {
    let partitions = u32::try_from(partitions.max(1)).unwrap_or(1);
    (PREFETCH_KBYTES / partitions).max(MIN_PARTITION_PREFETCH_KBYTES)
}

/// Map a failed produce to the ingress answer.
fn persist_error(channel: &ChannelContract, e: KafkaError) -> PersistError {
    let code = e.rdkafka_error_code();
    let (kind, message) = match code {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessage,
        ) => (
            PersistErrorKind::Rejected,
            format!("Kafka refused the event for channel {}: {e}", channel.key()),
        ),
        Some(RDKafkaErrorCode::QueueFull) => (
            PersistErrorKind::Full,
            format!(
                "the Kafka producer queue is full for channel {}; retry later",
                channel.key()
            ),
        ),
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition,
        ) => (
            PersistErrorKind::UnknownChannel,
            format!(
                "the topic of channel {} does not exist (not provisioned yet)",
                channel.key()
            ),
        ),
        _ => (
            PersistErrorKind::Unavailable,
            format!(
                "Kafka is unavailable: the event for channel {} was not stored ({e}); retry later",
                channel.key()
            ),
        ),
    };
    let err = PersistError::new(kind, message);
    let err = match kind {
        PersistErrorKind::Full | PersistErrorKind::Unavailable => {
            err.with_retry_after(UNAVAILABLE_RETRY_AFTER)
        }
        _ => err,
    };
    err.with_source(e)
}

#[async_trait]
impl Backend for KafkaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kafka
    }

    async fn provision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let entry = self.entry(channel)?;
        provision::ensure_topic(&entry.connection.admin, &entry.topic, &entry.params).await
    }

    async fn deprovision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        let entry = self.entry(channel)?;
        let result = provision::delete_topic(&entry.connection.admin, &entry.topic).await;
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel.uid);
        result
    }

    async fn persist(&self, channel: &ChannelContract, event: Event) -> Result<(), PersistError> {
        let entry = self.entry(channel).map_err(|e| {
            let kind = match e.kind {
                BackendErrorKind::Unavailable => PersistErrorKind::Unavailable,
                _ => PersistErrorKind::UnknownChannel,
            };
            PersistError::new(kind, e.message.clone()).with_source(e)
        })?;
        let record = codec::encode_binary(&event);
        let mut fr = FutureRecord::<[u8], [u8]>::to(&entry.topic).headers(record.headers);
        if let Some(key) = &record.key {
            fr = fr.key(key.as_bytes());
        }
        if let Some(value) = &record.value {
            fr = fr.payload(value.as_ref());
        }
        let producer = entry.connection.producer();
        let sent =
            tokio::time::timeout(entry.connection.deadline, producer.send(fr, QUEUE_TIMEOUT)).await;
        match sent {
            Ok(Ok(_)) => Ok(()),
            Err(_) => Err(persist_error(
                channel,
                KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            )),
            Ok(Err((e, _))) => {
                if producer_broken(&producer, &e) {
                    entry.connection.replace_producer(&producer, &e);
                }
                tracing::debug!(channel = %channel.key(), event_id = %event.id, error = %e, "produce failed");
                Err(persist_error(channel, e))
            }
        }
    }

    async fn subscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<Box<dyn DeliveryStream>, BackendError> {
        let entry = self.entry(channel)?;
        let group = provision::group_id(&channel.namespace, &channel.name, &subscription.uid);
        // A previous consumer of this subscription leaves the group first,
        // so the new one starts from its final commit.
        let previous = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&subscription.uid);
        if let Some(previous) = previous {
            previous.close();
            previous.wait_done(Duration::from_secs(15)).await;
        }
        let shared = consumer::shared(
            entry.topic.clone(),
            group.clone(),
            consumer::Decoder::Channel,
        );
        let consumer = self.consumer(&entry, shared.clone(), &group)?;
        let topic = entry.topic.clone();
        let capacity = (subscription.delivery.max_in_flight as usize).clamp(16, STREAM_QUEUE);
        let stream = tokio::task::spawn_blocking(move || {
            consumer::initialise_offsets(&consumer)?;
            consumer
                .subscribe(&[&topic])
                .map_err(|e| provision::backend_error("subscribing", e))?;
            consumer::start(consumer, capacity)
        })
        .await
        .map_err(|e| {
            BackendError::new(BackendErrorKind::Other, format!("subscribe task: {e}"))
        })??;
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subscription.uid.clone(), shared);
        tracing::info!(subscription = %subscription.key(), group = %group, topic = %entry.topic, "subscribed");
        Ok(Box::new(stream))
    }

    async fn unsubscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<(), BackendError> {
        let running = self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&subscription.uid);
        if let Some(shared) = running {
            shared.close();
            shared.wait_done(Duration::from_secs(15)).await;
        }
        let entry = self.entry(channel)?;
        let group = provision::group_id(&channel.namespace, &channel.name, &subscription.uid);
        provision::delete_group(&entry.connection.admin, &group).await;
        Ok(())
    }

    async fn health(&self) -> Health {
        let mut connections: Vec<Arc<Connection>> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if connections.is_empty() {
            if self.defaults.bootstrap_servers.is_none() {
                return Health::Healthy;
            }
            match KafkaParams::default()
                .client_properties(&self.defaults)
                .and_then(|props| self.connection(props))
            {
                Ok(c) => connections.push(c),
                Err(e) => return Health::Unhealthy(e.message),
            }
        }
        for c in connections {
            let servers = c
                .props
                .get("bootstrap.servers")
                .cloned()
                .unwrap_or_default();
            let checked = tokio::task::spawn_blocking(move || {
                c.producer()
                    .client()
                    .fetch_metadata(None, HEALTH_TIMEOUT)
                    .map(|_| ())
            })
            .await;
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Health::Unhealthy(format!("Kafka at {servers} is unreachable: {e}"))
                }
                Err(e) => return Health::Unhealthy(format!("health check failed: {e}")),
            }
        }
        Health::Healthy
    }

    fn pending(
        &self,
        _channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Option<u64> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&subscription.uid)
            .map(|s| s.lag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_is_split_over_partitions_with_a_floor() {
        assert_eq!(prefetch_kbytes(1), 8192);
        assert_eq!(prefetch_kbytes(4), 2048);
        assert_eq!(prefetch_kbytes(8), 1024);
        assert_eq!(prefetch_kbytes(100), 1024);
        assert_eq!(prefetch_kbytes(0), 8192);
    }
}
