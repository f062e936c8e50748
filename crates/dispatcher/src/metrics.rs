//! Prometheus metrics of the data plane.
//!
//! Hot-path code never looks labels up per event: ingress and every
//! subscription worker take a handle set ([`ChannelMetrics`],
//! [`SubscriptionMetrics`]) once, and the handles are cheap atomic counters.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Response classes, used as a label on ingress and delivery counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    C1xx,
    C2xx,
    C3xx,
    C4xx,
    C5xx,
    /// No HTTP response: connection error or timeout.
    Error,
}

impl StatusClass {
    /// The class of an HTTP status code.
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::C1xx,
            200..=299 => StatusClass::C2xx,
            300..=399 => StatusClass::C3xx,
            400..=499 => StatusClass::C4xx,
            _ => StatusClass::C5xx,
        }
    }

    const ALL: [StatusClass; 6] = [
        StatusClass::C1xx,
        StatusClass::C2xx,
        StatusClass::C3xx,
        StatusClass::C4xx,
        StatusClass::C5xx,
        StatusClass::Error,
    ];

    /// The label value: `1xx` .. `5xx`, or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::C1xx => "1xx",
            StatusClass::C2xx => "2xx",
            StatusClass::C3xx => "3xx",
            StatusClass::C4xx => "4xx",
            StatusClass::C5xx => "5xx",
            StatusClass::Error => "error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl EncodeLabelValue for StatusClass {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ChannelStatusLabels {
    namespace: String,
    channel: String,
    response_code_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BrokerStatusLabels {
    namespace: String,
    broker: String,
    response_code_class: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriptionLabels {
    namespace: String,
    channel: String,
    subscription: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriptionStatusLabels {
    namespace: String,
    channel: String,
    subscription: String,
    response_code_class: StatusClass,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~33 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 17,
    ))
}

/// All metrics of one dispatcher process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Family<ChannelStatusLabels, Counter>,
    broker_received: Family<BrokerStatusLabels, Counter>,
    filtered: Family<SubscriptionLabels, Counter>,
    filter_errors: Family<SubscriptionLabels, Counter>,
    ttl_exceeded: Family<SubscriptionLabels, Counter>,
    deliveries: Family<SubscriptionStatusLabels, Counter>,
    latency: Family<SubscriptionLabels, Histogram, fn() -> Histogram>,
    retries: Family<SubscriptionLabels, Counter>,
    dead_lettered: Family<SubscriptionLabels, Counter>,
    dropped: Family<SubscriptionLabels, Counter>,
    replies: Family<SubscriptionLabels, Counter>,
    queue_depth: Family<SubscriptionLabels, Gauge>,
    generation: Gauge,
    eventtype_refused: Family<ReferenceLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReferenceLabels {
    namespace: String,
    kind: String,
    name: String,
}

/// Counters for one channel's ingress.
#[derive(Debug, Clone)]
pub struct ChannelMetrics {
    received: [Counter; 6],
}

impl ChannelMetrics {
    /// Count one ingress request answered with `status`.
    pub fn received(&self, status: u16) {
        self.received[StatusClass::of(status).index()].inc();
    }
}

/// Counters for one subscription's deliveries.
#[derive(Debug, Clone)]
pub struct SubscriptionMetrics {
    deliveries: [Counter; 6],
    latency: Histogram,
    retries: Counter,
    dead_lettered: Counter,
    dropped: Counter,
    replies: Counter,
    queue_depth: Gauge,
    filtered: Counter,
    filter_errors: Counter,
    ttl_exceeded: Counter,
}

impl SubscriptionMetrics {
    /// A trigger's filter did not pass an event (settled without delivery).
    pub fn filtered(&self) {
        self.filtered.inc();
    }
    /// Evaluating a trigger's filter failed (a CESQL error): the event was
    /// treated as not matching.
    pub fn filter_error(&self) {
        self.filter_errors.inc();
    }
    /// A reply was dropped because the broker TTL (hop count) ran out.
    pub fn ttl_exceeded(&self) {
        self.ttl_exceeded.inc();
    }
    /// One delivery attempt to the subscriber ended with `class` after `elapsed`.
    pub fn attempt(&self, class: StatusClass, elapsed: Duration) {
        self.deliveries[class.index()].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }
    /// A re-attempt was scheduled.
    pub fn retry(&self) {
        self.retries.inc();
    }
    /// Re-attempts scheduled so far.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }
    /// The event reached the dead-letter sink.
    pub fn dead_lettered(&self) {
        self.dead_lettered.inc();
    }
    /// The event was dropped after its last attempt (no dead-letter sink).
    pub fn dropped(&self) {
        self.dropped.inc();
    }
    /// A reply event was forwarded to the reply destination.
    pub fn reply(&self) {
        self.replies.inc();
    }
    /// Events stored but not yet settled for this subscription.
    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The refused-pairs counter of one broker or channel (EventType
    /// auto-creation).
    pub fn eventtype_refused(&self, namespace: &str, kind: &str, name: &str) -> Counter {
        self.eventtype_refused
            .get_or_create(&ReferenceLabels {
                namespace: namespace.to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
            })
            .clone()
    }

    pub fn new() -> Metrics {
        Metrics::with_prefix("kn_channel")
    }

    /// The same metrics under another prefix (the source adapter's
    /// deliveries are `kn_source_*`).
    pub fn with_prefix(prefix: &str) -> Metrics {
        let mut registry = Registry::with_prefix(prefix);
        let received = Family::<ChannelStatusLabels, Counter>::default();
        registry.register(
            "events_received",
            "Events posted to a channel, by response code class",
            received.clone(),
        );
        let broker_received = Family::<BrokerStatusLabels, Counter>::default();
        registry.register(
            "broker_events_received",
            "Events posted to a broker, by response code class",
            broker_received.clone(),
        );
        let filtered = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "events_filtered",
            "Events a trigger's filter did not pass, settled without delivery",
            filtered.clone(),
        );
        let filter_errors = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "filter_errors",
            "Filter evaluations that failed (CESQL errors), counted as not matching",
            filter_errors.clone(),
        );
        let ttl_exceeded = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "broker_ttl_exceeded",
            "Replies dropped because the broker TTL (knativebrokerttl) ran out: an event loop",
            ttl_exceeded.clone(),
        );
        let deliveries = Family::<SubscriptionStatusLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts to subscribers, by response code class",
            deliveries.clone(),
        );
        let latency =
            Family::<SubscriptionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "delivery_latency_seconds",
            "Duration of delivery attempts to subscribers",
            latency.clone(),
        );
        let retries = Family::<SubscriptionLabels, Counter>::default();
        registry.register("retries", "Delivery re-attempts scheduled", retries.clone());
        let dead_lettered = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "dead_lettered",
            "Events delivered to the dead-letter sink",
            dead_lettered.clone(),
        );
        let dropped = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "dropped",
            "Events dropped after the last attempt with no dead-letter sink",
            dropped.clone(),
        );
        let replies = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "replies",
            "Reply events forwarded to the reply destination",
            replies.clone(),
        );
        let queue_depth = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Events stored for a subscription and not yet settled",
            queue_depth.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "contract_generation",
            "Generation of the data-plane contract applied",
            generation.clone(),
        );
        let eventtype_refused = Family::<ReferenceLabels, Counter>::default();
        registry.register(
            "eventtype_autocreate_refused",
            "New (type, source) pairs not registered because their broker or channel holds the maximum (eventtype-auto-create-max-per-reference)",
            eventtype_refused.clone(),
        );
        Metrics {
            eventtype_refused,
            registry,
            received,
            broker_received,
            filtered,
            filter_errors,
            ttl_exceeded,
            deliveries,
            latency,
            retries,
            dead_lettered,
            dropped,
            replies,
            queue_depth,
            generation,
        }
    }

    /// Handles for one channel's ingress counters.
    pub fn channel(&self, namespace: &str, channel: &str) -> ChannelMetrics {
        let received = StatusClass::ALL.map(|class| {
            self.received
                .get_or_create(&ChannelStatusLabels {
                    namespace: namespace.to_owned(),
                    channel: channel.to_owned(),
                    response_code_class: class,
                })
                .clone()
        });
        ChannelMetrics { received }
    }

    /// Handles for one broker's ingress counters.
    pub fn broker(&self, namespace: &str, broker: &str) -> ChannelMetrics {
        let received = StatusClass::ALL.map(|class| {
            self.broker_received
                .get_or_create(&BrokerStatusLabels {
                    namespace: namespace.to_owned(),
                    broker: broker.to_owned(),
                    response_code_class: class,
                })
                .clone()
        });
        ChannelMetrics { received }
    }

    /// Handles for one subscription's counters.
    pub fn subscription(
        &self,
        namespace: &str,
        channel: &str,
        subscription: &str,
    ) -> Arc<SubscriptionMetrics> {
        let labels = SubscriptionLabels {
            namespace: namespace.to_owned(),
            channel: channel.to_owned(),
            subscription: subscription.to_owned(),
        };
        let deliveries = StatusClass::ALL.map(|class| {
            self.deliveries
                .get_or_create(&SubscriptionStatusLabels {
                    namespace: namespace.to_owned(),
                    channel: channel.to_owned(),
                    subscription: subscription.to_owned(),
                    response_code_class: class,
                })
                .clone()
        });
        Arc::new(SubscriptionMetrics {
            deliveries,
            latency: self.latency.get_or_create(&labels).clone(),
            retries: self.retries.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            dropped: self.dropped.get_or_create(&labels).clone(),
            replies: self.replies.get_or_create(&labels).clone(),
            queue_depth: self.queue_depth.get_or_create(&labels).clone(),
            filtered: self.filtered.get_or_create(&labels).clone(),
            filter_errors: self.filter_errors.get_or_create(&labels).clone(),
            ttl_exceeded: self.ttl_exceeded.get_or_create(&labels).clone(),
        })
    }

    /// Stop exporting a removed subscription's series.
    pub fn forget_subscription(&self, namespace: &str, channel: &str, subscription: &str) {
        let labels = SubscriptionLabels {
            namespace: namespace.to_owned(),
            channel: channel.to_owned(),
            subscription: subscription.to_owned(),
        };
        for class in StatusClass::ALL {
            self.deliveries.remove(&SubscriptionStatusLabels {
                namespace: namespace.to_owned(),
                channel: channel.to_owned(),
                subscription: subscription.to_owned(),
                response_code_class: class,
            });
        }
        self.latency.remove(&labels);
        self.retries.remove(&labels);
        self.dead_lettered.remove(&labels);
        self.dropped.remove(&labels);
        self.replies.remove(&labels);
        self.queue_depth.remove(&labels);
        self.filtered.remove(&labels);
        self.filter_errors.remove(&labels);
        self.ttl_exceeded.remove(&labels);
    }

    /// Record the applied contract generation.
    pub fn set_generation(&self, generation: u64) {
        self.generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_labelled_series() {
        let m = Metrics::new();
        m.channel("default", "orders").received(202);
        let s = m.subscription("default", "orders", "audit");
        s.attempt(StatusClass::of(503), Duration::from_millis(3));
        s.retry();
        s.dead_lettered();
        m.set_generation(7);
        let text = m.encode();
        assert!(text.contains(
            r#"kn_channel_events_received_total{namespace="default",channel="orders",response_code_class="2xx"} 1"#
        ), "{text}");
        assert!(text.contains(r#"response_code_class="5xx"} 1"#));
        assert!(text.contains("kn_channel_retries_total{"));
        assert!(text.contains("kn_channel_contract_generation 7"));
        m.forget_subscription("default", "orders", "audit");
        assert!(!m.encode().contains("subscription=\"audit\""));
    }
}
