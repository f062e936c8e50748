//! Creating, updating and deleting backing resources through the backend
//! crates: a Kafka topic per Kafka channel, a JetStream stream per NATS
//! channel. In-memory channels have nothing to provision (their buffer lives
//! in the dispatcher).
//!
//! The backend clients are built on first use, so a control plane that has
//! no NATS channel never connects to NATS. Every call is bounded by a
//! timeout; an unreachable broker is an answer (`BrokerUnavailable`), not a
//! hang. [`Tracker`] remembers, per channel, what was provisioned and when
//! to look again: failures are retried with exponential backoff, successes
//! re-verified periodically so a broker that lost the resource (or went
//! away) is noticed.

use crate::reconcile::ChannelKey;
use crate::status::Provisioning;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use channel_core::{Backend, BackendError, BackendErrorKind, BackendKind, ChannelContract};
use channel_kafka::config::Defaults as KafkaDefaults;
use channel_kafka::KafkaBackend;
use channel_nats::{NatsBackend, NatsOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Provisions channels on their backends.
#[derive(Debug)]
pub struct Provisioner {
    kafka_defaults: KafkaDefaults,
    nats_options: NatsOptions,
    kafka: OnceCell<Arc<KafkaBackend>>,
    nats: OnceCell<Arc<NatsBackend>>,
    timeout: Duration,
}

impl Provisioner {
    pub fn new(
        kafka_defaults: KafkaDefaults,
        nats_options: NatsOptions,
        timeout: Duration,
    ) -> Self {
        Provisioner {
            kafka_defaults,
            nats_options,
            kafka: OnceCell::new(),
            nats: OnceCell::new(),
            timeout,
        }
    }

    async fn backend(&self, kind: BackendKind) -> Result<Option<Arc<dyn Backend>>, BackendError> {
        Ok(match kind {
            BackendKind::InMemory => None,
            BackendKind::Kafka => Some(
                self.kafka
                    .get_or_init(|| async {
                        Arc::new(KafkaBackend::new(self.kafka_defaults.clone()))
                    })
                    .await
                    .clone(),
            ),
            BackendKind::Nats => Some(
                self.nats
                    .get_or_try_init(|| async {
                        NatsBackend::connect(self.nats_options.clone())
                            .await
                            .map(Arc::new)
                    })
                    .await?
                    .clone(),
            ),
        })
    }

    /// Create or update the channel's backing resource.
    pub async fn provision(&self, channel: &ChannelContract) -> Provisioning {
        let resource = resource_name(channel);
        let result = async {
            match self.backend(channel.backend).await? {
                None => Ok(()),
                Some(backend) => backend.provision(channel).await,
            }
        };
        match tokio::time::timeout(self.timeout, result).await {
            Ok(Ok(())) => Provisioning::Ready {
                reason: match channel.backend {
                    BackendKind::InMemory => "BufferReady",
                    BackendKind::Kafka => "TopicReady",
                    BackendKind::Nats => "StreamReady",
                }
                .into(),
                message: resource,
            },
            Ok(Err(e)) => failed(&e),
            Err(_) => Provisioning::Failed {
                reason: "BrokerUnavailable".into(),
                message: format!(
                    "provisioning {resource} did not finish within {:?}",
                    self.timeout
                ),
            },
        }
    }

    /// Delete the channel's backing resource (a resource already gone is
    /// not an error).
    pub async fn deprovision(&self, channel: &ChannelContract) -> Result<(), String> {
        let resource = resource_name(channel);
        let result = async {
            match self.backend(channel.backend).await? {
                None => Ok(()),
                Some(backend) => backend.deprovision(channel).await,
            }
        };
        match tokio::time::timeout(self.timeout, result).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("deleting {resource}: {}", e.message)),
            Err(_) => Err(format!(
                "deleting {resource} did not finish within {:?}",
                self.timeout
            )),
        }
    }
}

fn failed(e: &BackendError) -> Provisioning {
    Provisioning::Failed {
        reason: match e.kind {
            BackendErrorKind::Unavailable => "BrokerUnavailable",
            BackendErrorKind::Invalid => "InvalidParameters",
            BackendErrorKind::NotFound | BackendErrorKind::Other => "ProvisioningFailed",
        }
        .into(),
        message: e.message.clone(),
    }
}

/// What a channel is backed by, for messages.
pub fn resource_name(channel: &ChannelContract) -> String {
    match channel.backend {
        BackendKind::InMemory => format!("in-memory buffer of {}", channel.key()),
        BackendKind::Kafka => format!(
            "topic {}",
            channel_kafka::provision::topic_name(&channel.namespace, &channel.name)
        ),
        BackendKind::Nats => format!(
            "stream {}",
            channel_nats::provision::stream_name(&channel.namespace, &channel.name)
        ),
    }
}

/// When to look at a channel again.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// First retry after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// How often a provisioned resource is verified again.
    pub resync: Duration,
}

impl Schedule {
    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// What is known of one channel's backing resource.
#[derive(Debug)]
pub struct Tracked {
    /// The contract it was last provisioned (or attempted) with.
    pub contract: ChannelContract,
    pub state: Provisioning,
    /// Whether the resource may exist (a provisioning attempt was made), so
    /// deleting the channel must delete it.
    pub attempted: bool,
    next_check: Instant,
    backoff: ExponentialBackoff,
}

/// A deletion that has not succeeded yet.
#[derive(Debug)]
struct Deleting {
    contract: ChannelContract,
    next_try: Instant,
    backoff: ExponentialBackoff,
    last_error: Option<String>,
}

/// Per-channel provisioning state and schedule.
#[derive(Debug)]
pub struct Tracker {
    schedule: Schedule,
    channels: BTreeMap<ChannelKey, Tracked>,
    deleting: BTreeMap<ChannelKey, Deleting>,
}

impl Tracker {
    pub fn new(schedule: Schedule) -> Self {
        Tracker {
            schedule,
            channels: BTreeMap::new(),
            deleting: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &ChannelKey) -> Option<&Tracked> {
        self.channels.get(key)
    }

    /// The channels `wanted` that need a provisioning call now: new ones,
    /// changed ones, failures whose backoff elapsed, and successes due for
    /// verification.
    pub fn due<'a>(
        &self,
        wanted: impl IntoIterator<Item = (ChannelKey, &'a ChannelContract)>,
        now: Instant,
    ) -> Vec<(ChannelKey, ChannelContract)> {
        wanted
            .into_iter()
            .filter(|(key, contract)| match self.channels.get(key) {
                None => true,
                Some(t) => {
                    t.contract.backend != contract.backend
                        || t.contract.parameters != contract.parameters
                        || t.contract.uid != contract.uid
                        || t.next_check <= now
                }
            })
            .map(|(k, c)| (k, c.clone()))
            .collect()
    }

    /// Record the outcome of provisioning `contract`.
    pub fn record(
        &mut self,
        key: ChannelKey,
        contract: ChannelContract,
        state: Provisioning,
        now: Instant,
    ) {
        self.deleting.remove(&key);
        let schedule = self.schedule;
        let entry = self.channels.entry(key).or_insert_with(|| Tracked {
            contract: contract.clone(),
            state: Provisioning::Pending,
            attempted: true,
            next_check: now,
            backoff: schedule.backoff(),
        });
        match &state {
            Provisioning::Failed { .. } => {
                let delay = entry.backoff.next().unwrap_or(schedule.max_backoff);
                entry.next_check = now + delay;
            }
            _ => {
                entry.backoff = schedule.backoff();
                entry.next_check = now + schedule.resync;
            }
        }
        entry.contract = contract;
        entry.state = state;
        entry.attempted = true;
    }

    /// Stop tracking channels that are no longer wanted; their resources
    /// are queued for deletion.
    pub fn forget_except(&mut self, wanted: &BTreeSet<ChannelKey>, now: Instant) {
        let gone: Vec<ChannelKey> = self
            .channels
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(t) = self.channels.remove(&key) {
                if t.attempted {
                    self.deleting.insert(
                        key,
                        Deleting {
                            contract: t.contract,
                            next_try: now,
                            backoff: self.schedule.backoff(),
                            last_error: None,
                        },
                    );
                }
            }
        }
    }

    /// Queue the deletion of a resource known only from an earlier run (a
    /// contract written before a restart).
    pub fn delete_later(&mut self, key: ChannelKey, contract: ChannelContract, now: Instant) {
        if self.channels.contains_key(&key) {
            return;
        }
        self.deleting.entry(key).or_insert_with(|| Deleting {
            contract,
            next_try: now,
            backoff: self.schedule.backoff(),
            last_error: None,
        });
    }

    /// Deletions due now.
    pub fn deletions_due(&self, now: Instant) -> Vec<(ChannelKey, ChannelContract)> {
        self.deleting
            .iter()
            .filter(|(_, d)| d.next_try <= now)
            .map(|(k, d)| (k.clone(), d.contract.clone()))
            .collect()
    }

    /// Record the outcome of a deletion.
    pub fn deleted(&mut self, key: &ChannelKey, result: Result<(), String>, now: Instant) {
        match result {
            Ok(()) => {
                self.deleting.remove(key);
            }
            Err(e) => {
                if let Some(d) = self.deleting.get_mut(key) {
                    let delay = d.backoff.next().unwrap_or(self.schedule.max_backoff);
                    d.next_try = now + delay;
                    d.last_error = Some(e);
                }
            }
        }
    }

    /// Deletions still pending, with their last error.
    pub fn pending_deletions(&self) -> Vec<(ChannelKey, Option<String>)> {
        self.deleting
            .iter()
            .map(|(k, d)| (k.clone(), d.last_error.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::contract::Ingress;

    fn contract(backend: BackendKind, partitions: i64) -> ChannelContract {
        ChannelContract {
            broker: None,
            uid: "u1".into(),
            namespace: "ns".into(),
            name: "c".into(),
            kind: "Channel".into(),
            backend,
            class: "k".into(),
            ingress: Ingress::for_channel("ns", "c"),
            parameters: [("numPartitions".to_owned(), serde_json::json!(partitions))].into(),
            subscriptions: Vec::new(),
        }
    }

    fn key() -> ChannelKey {
        ("ns".into(), "c".into(), "Channel".into())
    }

    fn schedule() -> Schedule {
        Schedule {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            resync: Duration::from_secs(30),
        }
    }

    #[test]
    fn failures_back_off_and_successes_are_verified_later() {
        let mut t = Tracker::new(schedule());
        let now = Instant::now();
        let c = contract(BackendKind::Kafka, 3);
        assert_eq!(t.due([(key(), &c)], now).len(), 1, "new channels are due");
        let failed = Provisioning::Failed {
            reason: "BrokerUnavailable".into(),
            message: "down".into(),
        };
        t.record(key(), c.clone(), failed.clone(), now);
        assert!(t.due([(key(), &c)], now).is_empty(), "not retried at once");
        assert_eq!(t.due([(key(), &c)], now + Duration::from_secs(3)).len(), 1);
        // Backoff grows: after a second failure the wait is longer.
        let later = now + Duration::from_secs(3);
        t.record(key(), c.clone(), failed, later);
        assert!(t
            .due([(key(), &c)], later + Duration::from_millis(900))
            .is_empty());
        let ok = Provisioning::Ready {
            reason: "TopicReady".into(),
            message: "topic".into(),
        };
        t.record(key(), c.clone(), ok, later);
        assert!(t
            .due([(key(), &c)], later + Duration::from_secs(29))
            .is_empty());
        assert_eq!(
            t.due([(key(), &c)], later + Duration::from_secs(30)).len(),
            1
        );
        // A parameter change is due at once.
        let grown = contract(BackendKind::Kafka, 6);
        assert_eq!(t.due([(key(), &grown)], later).len(), 1);
    }

    #[test]
    fn forgotten_channels_are_deleted_until_it_succeeds() {
        let mut t = Tracker::new(schedule());
        let now = Instant::now();
        let c = contract(BackendKind::Nats, 1);
        t.record(
            key(),
            c,
            Provisioning::Ready {
                reason: "StreamReady".into(),
                message: String::new(),
            },
            now,
        );
        t.forget_except(&BTreeSet::new(), now);
        assert!(t.get(&key()).is_none());
        assert_eq!(t.deletions_due(now).len(), 1);
        t.deleted(&key(), Err("nats down".into()), now);
        assert!(t.deletions_due(now).is_empty());
        assert_eq!(t.pending_deletions()[0].1.as_deref(), Some("nats down"));
        let later = now + Duration::from_secs(2);
        assert_eq!(t.deletions_due(later).len(), 1);
        t.deleted(&key(), Ok(()), later);
        assert!(t.pending_deletions().is_empty());
    }

    #[tokio::test]
    async fn in_memory_channels_need_no_broker() {
        let p = Provisioner::new(
            KafkaDefaults::default(),
            NatsOptions::default(),
            Duration::from_secs(1),
        );
        let state = p.provision(&contract(BackendKind::InMemory, 1)).await;
        assert!(matches!(state, Provisioning::Ready { ref reason, .. } if reason == "BufferReady"));
        assert!(p
            .deprovision(&contract(BackendKind::InMemory, 1))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_broker_is_reported_within_the_timeout() {
        let p = Provisioner::new(
            KafkaDefaults {
                bootstrap_servers: Some("127.0.0.1:1".into()),
            },
            NatsOptions::default(),
            Duration::from_secs(2),
        );
        let started = Instant::now();
        let state = p.provision(&contract(BackendKind::Kafka, 1)).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        match state {
            Provisioning::Failed { reason, message } => {
                assert_eq!(reason, "BrokerUnavailable", "{message}");
                assert!(
                    message.contains("knative-messaging-kafka.ns.c"),
                    "{message}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
