//! The traits every channel backend implements.
//!
//! A backend stores events durably ([`Backend::persist`]), hands them out per
//! subscription as a resumable stream ([`Backend::subscribe`]) whose entries
//! are settled with an [`Acknowledgement`], creates and removes the backing
//! resources ([`Backend::provision`], [`Backend::deprovision`]) and reports its
//! connectivity ([`Backend::health`]).
//!
//! The shapes are chosen so that Kafka (partitions, offsets, consumer groups
//! committing the finished prefix), JetStream (per-message acks, redelivery)
//! and memory (a bounded log with per-subscription cursors) all fit:
//! [`Position`] names a partition and offset, and an acknowledgement may be
//! settled in any order; the backend decides what "committed" means.
//!
//! All traits are object safe; the dispatcher engine holds an
//! `Arc<dyn Backend>`.

use crate::contract::{BackendKind, ChannelContract, SubscriptionContract};
use crate::event::Event;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Why an event could not be persisted; the kind decides the ingress status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistErrorKind {
    /// The channel's buffer is full (slow subscribers); the producer should
    /// retry later. Ingress answers `429` with `Retry-After`.
    Full,
    /// The backend is unreachable or timed out. Ingress answers `503`.
    Unavailable,
    /// The channel is not known to the backend (not yet provisioned). `404`.
    UnknownChannel,
    /// The backend refused the event itself (e.g. larger than the broker's
    /// maximum message size). `400`/`413`.
    Rejected,
}

/// A failed [`Backend::persist`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PersistError {
    pub kind: PersistErrorKind,
    pub message: String,
    /// A hint for `Retry-After` when the kind is [`PersistErrorKind::Full`]
    /// or [`PersistErrorKind::Unavailable`].
    pub retry_after: Option<Duration>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl PersistError {
    pub fn new(kind: PersistErrorKind, message: impl Into<String>) -> Self {
        PersistError {
            kind,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Broad classes of backend failure outside the ingress path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Connectivity; retrying later may succeed.
    Unavailable,
    /// The request is wrong for this backend (bad parameters); retrying the
    /// same request will not help.
    Invalid,
    /// The channel or subscription does not exist in the backend.
    NotFound,
    /// Anything else.
    Other,
}

/// A failed provision, subscribe or stream operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub kind: BackendErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BackendError {
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Where a delivered event sits in its channel's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    /// Partition (Kafka), or 0 for unpartitioned storage.
    pub partition: i32,
    /// Offset (Kafka), stream sequence (JetStream) or log index (memory).
    pub offset: i64,
}

/// How a delivery ended. Every variant but [`Outcome::Abandoned`] is final:
/// the backend may commit past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The subscriber accepted it (and any reply was forwarded).
    Delivered,
    /// Delivery failed for good and the event reached the dead-letter sink.
    DeadLettered,
    /// Delivery failed for good and there was no dead-letter sink (or it
    /// failed too): Knative drops the event. Counted and logged by the engine.
    Dropped,
    /// Not processed to a final outcome (shutdown, subscription removed):
    /// the backend must make it available again (no commit, nak, rewind).
    Abandoned,
}

impl Outcome {
    /// Whether the backend may forget the event.
    pub fn is_final(self) -> bool {
        !matches!(self, Outcome::Abandoned)
    }
}

/// Settles one delivery with the backend.
///
/// Settling may be done in any order relative to other deliveries of the
/// same stream; backends that commit a prefix (Kafka, memory) track the gaps.
/// Dropping an acknowledgement without settling it counts as
/// [`Outcome::Abandoned`].
#[async_trait]
pub trait Acknowledgement: Send + Sync + std::fmt::Debug {
    /// Record the outcome. Returns once the backend has taken note (it need not
    /// have committed yet).
    async fn settle(self: Box<Self>, outcome: Outcome) -> Result<(), BackendError>;
}

/// One event handed to the dispatcher for one subscription.
#[derive(Debug)]
pub struct Delivery {
    pub event: Arc<Event>,
    pub position: Position,
    /// Ordering key for ordered subscriptions (Kafka record key / partition
    /// key extension); events with equal keys are delivered one at a time.
    pub ordering_key: Option<Arc<str>>,
    /// How many times the backend has handed this event out before (JetStream
    /// redelivery count, Kafka re-consumption after a crash is not known and
    /// reads 0).
    pub redeliveries: u32,
    pub ack: Box<dyn Acknowledgement>,
}

/// A subscription's stream of deliveries.
///
/// `next` is cancel safe: dropping its future loses no event. The stream
/// resumes after the last contiguous final outcome when re-opened with the
/// same subscription uid (durable backends), or from where the in-memory
/// cursor stands (memory).
#[async_trait]
pub trait DeliveryStream: Send + std::fmt::Debug {
    /// The next event; `None` once the stream is closed for good (the
    /// channel or subscription was removed from the backend).
    async fn next(&mut self) -> Option<Result<Delivery, BackendError>>;

    /// The next event `wanted` accepts. Every event it refuses is settled
    /// [`Outcome::Delivered`] without being handed out: this is how a
    /// trigger's filter runs before delivery.
    ///
    /// `wanted` is called once per event, in stream order, and must be
    /// cheap: a backend may call it while holding its own locks. The
    /// default takes events one by one from [`DeliveryStream::next`]; a
    /// backend that can skip refused events in place (the in-memory log
    /// advances its cursor under one lock) overrides it. Cancel safe as
    /// `next` is: a refused event is settled before the next is looked at.
    async fn next_wanted(
        &mut self,
        wanted: &mut (dyn for<'e> FnMut(&'e Event) -> bool + Send),
    ) -> Option<Result<Delivery, BackendError>> {
        loop {
            match self.next().await? {
                Ok(delivery) if !wanted(&delivery.event) => {
                    let id = delivery.event.id.clone();
                    if let Err(e) = delivery.ack.settle(Outcome::Delivered).await {
                        tracing::error!(event_id = %id, error = %e, "settling a filtered-out event failed");
                    }
                }
                other => return Some(other),
            }
        }
    }
}

/// Backend connectivity, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy(String),
}

/// A channel storage backend.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// Which driver this is.
    fn kind(&self) -> BackendKind;

    /// Create or update the backing resources of a channel (topic, stream,
    /// buffer) from its parameters. Idempotent; safe to call on every reload.
    async fn provision(&self, channel: &ChannelContract) -> Result<(), BackendError>;

    /// Delete the backing resources of a channel. Idempotent: a channel that
    /// does not exist is not an error.
    async fn deprovision(&self, channel: &ChannelContract) -> Result<(), BackendError>;

    /// Store `event` durably for `channel`. Returns only once the event is
    /// durable by the backend's definition (Kafka: acks=all; JetStream:
    /// PubAck; memory: appended). Cancelling the future may or may not have
    /// stored the event; it never stores it twice.
    async fn persist(&self, channel: &ChannelContract, event: Event) -> Result<(), PersistError>;

    /// Open the delivery stream of one subscription. Unordered subscriptions
    /// may be handed events faster than they settle; the dispatcher bounds
    /// what it keeps in flight with `delivery.maxInFlight`.
    async fn subscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<Box<dyn DeliveryStream>, BackendError>;

    /// Forget a subscription's position and resources (consumer group,
    /// durable consumer, cursor) after it was removed from the contract.
    async fn unsubscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<(), BackendError>;

    /// Connectivity for `/readyz`.
    async fn health(&self) -> Health;

    /// Events stored but not yet settled for a subscription, where the backend
    /// knows it cheaply (queue depth / consumer lag metric).
    fn pending(
        &self,
        _channel: &ChannelContract,
        _subscription: &SubscriptionContract,
    ) -> Option<u64> {
        None
    }
}

#[async_trait]
impl<T: Backend + ?Sized> Backend for Arc<T> {
    fn kind(&self) -> BackendKind {
        (**self).kind()
    }
    async fn provision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        (**self).provision(channel).await
    }
    async fn deprovision(&self, channel: &ChannelContract) -> Result<(), BackendError> {
        (**self).deprovision(channel).await
    }
    async fn persist(&self, channel: &ChannelContract, event: Event) -> Result<(), PersistError> {
        (**self).persist(channel, event).await
    }
    async fn subscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<Box<dyn DeliveryStream>, BackendError> {
        (**self).subscribe(channel, subscription).await
    }
    async fn unsubscribe(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Result<(), BackendError> {
        (**self).unsubscribe(channel, subscription).await
    }
    async fn health(&self) -> Health {
        (**self).health().await
    }
    fn pending(
        &self,
        channel: &ChannelContract,
        subscription: &SubscriptionContract,
    ) -> Option<u64> {
        (**self).pending(channel, subscription)
    }
}

/// Compile-time check that the traits stay object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Backend, _: &dyn DeliveryStream, _: &dyn Acknowledgement) {}
