//! Consuming existing topics for a KafkaSource, with the channel
//! subscriptions' consumer ([`crate::consumer`]): per-partition flow
//! control, commits of the finished prefix only (a record is committed
//! once the sink's final outcome is known), rebalancing, static
//! membership.
//!
//! A source may read several topics with several consumers
//! (`spec.consumers`): each (topic, consumer) is one member of the
//! source's consumer group with its own partition queues, and their
//! streams are merged into the one the delivery engine reads.
//!
//! Records become events by [`record_event`]: a CloudEvent in the Kafka
//! protocol binding as itself, anything else as Knative's KafkaSource
//! makes it.

use crate::consumer::{self, Decoder, SubscriptionContext};
use crate::{client_config, codec, provision};
use async_trait::async_trait;
use channel_core::backend::{BackendError, BackendErrorKind, Delivery, DeliveryStream};
use channel_core::event::{is_valid_attribute_name, Event, ExtensionValue};
use rdkafka::consumer::Consumer as _;
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The type of a record that is not a CloudEvent.
pub const RECORD_EVENT_TYPE: &str = "dev.knative.kafka.event";

/// What to consume.
#[derive(Clone)]
pub struct SourceConsumer {
    /// librdkafka client properties: `bootstrap.servers`, security. They
    /// hold secrets: never log them.
    pub props: BTreeMap<String, String>,
    pub topics: Vec<String>,
    pub group: String,
    /// A new group starts at the beginning of the topics (else at their
    /// end).
    pub earliest: bool,
    /// Members per topic.
    pub consumers: u32,
    /// Static membership: a stable id per adapter (each member adds its
    /// topic and index), so a restarted adapter gets its partitions back
    /// at once.
    pub group_instance_id: Option<String>,
    /// The CloudEvents source of converted records, before `#<topic>`.
    pub source_prefix: String,
    /// Records handed to the engine and not yet taken, per member.
    pub capacity: usize,
}

impl std::fmt::Debug for SourceConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConsumer")
            .field("servers", &self.props.get("bootstrap.servers"))
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("earliest", &self.earliest)
            .field("consumers", &self.consumers)
            .finish_non_exhaustive()
    }
}

fn header_extension(name: &str) -> Option<String> {
    let cleaned: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let ext = format!("kafkaheader{cleaned}");
    (!cleaned.is_empty() && is_valid_attribute_name(&ext)).then_some(ext)
}

/// The event of one record: the CloudEvent it carries (binary or
/// structured mode), or, for any other record, type
/// `dev.knative.kafka.event`, source `<prefix>#<topic>`, subject
/// `partition:<p>#<offset>`, id `partition:<p>/offset:<offset>`, time the
/// record's timestamp, data the value, `datacontenttype` from a
/// `content-type` header, extensions `key` (the key, UTF-8, lossy) and
/// `kafkaheader<name>` per header (names reduced to lower-case letters and
/// digits; headers whose name cannot be an attribute are left out).
pub fn record_event(prefix: &str, msg: &BorrowedMessage<'_>) -> Event {
    if let Ok(event) = codec::decode(msg.headers(), msg.payload()) {
        return event;
    }
    let (partition, offset) = (msg.partition(), msg.offset());
    let mut event = Event::new(
        format!("partition:{partition}/offset:{offset}"),
        format!("{prefix}#{}", msg.topic()),
        RECORD_EVENT_TYPE,
    );
    event.subject = Some(format!("partition:{partition}#{offset}"));
    event.time = msg
        .timestamp()
        .to_millis()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    event.data = msg.payload().map(bytes::Bytes::copy_from_slice);
    if let Some(key) = msg.key() {
        event.extensions.insert(
            "key".to_owned(),
            ExtensionValue::String(String::from_utf8_lossy(key).into_owned()),
        );
    }
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
            if h.key.eq_ignore_ascii_case("content-type") {
                event.datacontenttype = Some(value.clone());
            }
            if let Some(ext) = header_extension(h.key) {
                event.extensions.insert(ext, ExtensionValue::String(value));
            }
        }
    }
    event
}

/// Join the group on every topic and merge the members' streams.
pub async fn subscribe(config: SourceConsumer) -> Result<Box<dyn DeliveryStream>, BackendError> {
    let mut streams: Vec<consumer::Stream> = Vec::new();
    for topic in &config.topics {
        for index in 0..config.consumers.max(1) {
            let shared = consumer::shared(
                topic.clone(),
                config.group.clone(),
                Decoder::Source {
                    prefix: Arc::from(config.source_prefix.as_str()),
                },
            );
            let instance = config
                .group_instance_id
                .as_ref()
                .map(|id| format!("{id}-{topic}-{index}"));
            let reset = if config.earliest {
                "earliest"
            } else {
                "latest"
            };
            let mut base: Vec<(&str, &str)> = vec![
                ("group.id", config.group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", reset),
                ("enable.partition.eof", "false"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "3000"),
                ("queued.max.messages.kbytes", "4096"),
                ("queued.min.messages", "1000"),
                ("fetch.queue.backoff.ms", "10"),
                ("statistics.interval.ms", consumer::STATISTICS_INTERVAL_MS),
            ];
            if let Some(id) = &instance {
                base.push(("group.instance.id", id.as_str()));
            }
            let consumer: consumer::SubscriptionConsumer = client_config(&config.props, &base)
                .create_with_context(SubscriptionContext { shared })
                .map_err(|e| provision::backend_error("creating the Kafka consumer", e))?;
            let (topic, earliest, capacity) = (topic.clone(), config.earliest, config.capacity);
            let servers = config
                .props
                .get("bootstrap.servers")
                .cloned()
                .unwrap_or_default();
            let stream = tokio::task::spawn_blocking(move || {
                check_topic(&consumer, &topic, &servers)?;
                if !earliest {
                    consumer::initialise_offsets(&consumer)?;
                }
                consumer
                    .subscribe(&[&topic])
                    .map_err(|e| provision::backend_error("subscribing", e))?;
                consumer::start(consumer, capacity)
            })
            .await
            .map_err(|e| {
                BackendError::new(BackendErrorKind::Other, format!("subscribe task: {e}"))
            })??;
            streams.push(stream);
        }
    }
    tracing::info!(group = %config.group, topics = ?config.topics, members = streams.len(), "KafkaSource consuming");
    if streams.len() == 1 {
        if let Some(stream) = streams.pop() {
            return Ok(Box::new(stream));
        }
    }
    Ok(Box::new(Merged::new(streams, config.capacity)))
}

/// How long the broker has to answer the first metadata request.
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Fail clearly when the brokers cannot be reached or the topic does not
/// exist, rather than join a group that can never be assigned anything.
fn check_topic(
    consumer: &consumer::SubscriptionConsumer,
    topic: &str,
    servers: &str,
) -> Result<(), BackendError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(|e| {
            BackendError::new(
                BackendErrorKind::Unavailable,
                format!("Kafka at {servers} is unreachable: {e}"),
            )
        })?;
    let exists = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if exists {
        Ok(())
    } else {
        Err(BackendError::new(
            BackendErrorKind::NotFound,
            format!("topic {topic} does not exist at {servers}"),
        ))
    }
}

/// Several members' streams as one.
#[derive(Debug)]
struct Merged {
    rx: mpsc::Receiver<Result<Delivery, BackendError>>,
}

impl Merged {
    fn new(streams: Vec<consumer::Stream>, capacity: usize) -> Merged {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        for mut stream in streams {
            let tx = tx.clone();
            tokio::spawn(async move {
                loop {
                    // The member's stream is cancel safe; it closes (and
                    // its consumer leaves the group) when this task ends.
                    let next = tokio::select! {
                        _ = tx.closed() => break,
                        next = stream.next() => next,
                    };
                    let Some(d) = next else { break };
                    if tx.send(d).await.is_err() {
                        break;
                    }
                }
            });
        }
        Merged { rx }
    }
}

#[async_trait]
impl DeliveryStream for Merged {
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>> {
        self.rx.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_become_attribute_names_or_nothing() {
        assert_eq!(
            header_extension("content-type").as_deref(),
            Some("kafkaheadercontenttype")
        );
        assert_eq!(
            header_extension("X_Trace").as_deref(),
            Some("kafkaheaderxtrace")
        );
        assert_eq!(header_extension("--").as_deref(), None);
    }
}
