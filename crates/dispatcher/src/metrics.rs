//! Prometheus metrics of the data plane.
//!
//! Hot-path code never looks labels up per event: ingress and every
//! subscription worker take a handle set ([`ChannelMetrics`],
//! [`SubscriptionMetrics`]) once, and the handles are cheap atomic counters.
//! A handle creates its series on first use, so idle channels and
//! subscriptions cost a few bytes each and export nothing until something
//! happens to them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
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

/// The metric families, shared by the registry and every handle.
#[derive(Debug, Default)]
struct Families {
    received: Family<ChannelStatusLabels, Counter>,
    broker_received: Family<BrokerStatusLabels, Counter>,
    filtered: Family<SubscriptionLabels, Counter>,
    filter_errors: Family<SubscriptionLabels, Counter>,
    ttl_exceeded: Family<SubscriptionLabels, Counter>,
    deliveries: Family<SubscriptionStatusLabels, Counter>,
    latency: LatencyFamily,
    retries: Family<SubscriptionLabels, Counter>,
    dead_lettered: Family<SubscriptionLabels, Counter>,
    dropped: Family<SubscriptionLabels, Counter>,
    replies: Family<SubscriptionLabels, Counter>,
    queue_depth: Family<SubscriptionLabels, Gauge>,
    eventtype_refused: Family<ReferenceLabels, Counter>,
}

#[derive(Debug, Clone)]
struct LatencyFamily(Family<SubscriptionLabels, Histogram, fn() -> Histogram>);

impl Default for LatencyFamily {
    fn default() -> Self {
        LatencyFamily(Family::new_with_constructor(latency_histogram))
    }
}

/// All metrics of one dispatcher process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    generation: Gauge,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReferenceLabels {
    namespace: String,
    kind: String,
    name: String,
}

/// Counters for one channel's (or broker's) ingress.
///
/// The series are created on the first event, not with the handle: a
/// dispatcher serving ten thousand idle channels holds ten thousand small
/// handles, not sixty thousand label sets.
#[derive(Debug, Clone)]
pub struct ChannelMetrics(Arc<LazyChannel>);

#[derive(Debug)]
struct LazyChannel {
    families: Arc<Families>,
    namespace: String,
    name: String,
    broker: bool,
    received: OnceLock<[Counter; 6]>,
}

impl ChannelMetrics {
    /// Count one ingress request answered with `status`.
    pub fn received(&self, status: u16) {
        let c = &self.0;
        let received = c.received.get_or_init(|| {
            StatusClass::ALL.map(|class| {
                if c.broker {
                    c.families
                        .broker_received
                        .get_or_create_owned(&BrokerStatusLabels {
                            namespace: c.namespace.clone(),
                            broker: c.name.clone(),
                            response_code_class: class,
                        })
                } else {
                    c.families
                        .received
                        .get_or_create_owned(&ChannelStatusLabels {
                            namespace: c.namespace.clone(),
                            channel: c.name.clone(),
                            response_code_class: class,
                        })
                }
            })
        });
        received[StatusClass::of(status).index()].inc();
    }
}

/// Counters for one subscription's deliveries, created with the first
/// thing there is to count (see [`ChannelMetrics`]).
#[derive(Debug)]
pub struct SubscriptionMetrics {
    families: Arc<Families>,
    /// Namespace, channel and subscription, NUL-separated (Kubernetes names
    /// hold no NUL): one allocation where the label set is three strings,
    /// made when a series is.
    names: Box<str>,
    /// Boxed: an idle subscription pays one pointer for it.
    series: OnceLock<Box<Series>>,
}

/// The series of one subscription.
#[derive(Debug)]
struct Series {
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
    fn labels(&self) -> SubscriptionLabels {
        let mut names = self.names.split('\0').map(str::to_owned);
        let mut next = || names.next().unwrap_or_default();
        SubscriptionLabels {
            namespace: next(),
            channel: next(),
            subscription: next(),
        }
    }

    fn series(&self) -> &Series {
        self.series.get_or_init(|| {
            let f = &self.families;
            let labels = &self.labels();
            Box::new(Series {
                deliveries: StatusClass::ALL.map(|class| {
                    f.deliveries.get_or_create_owned(&SubscriptionStatusLabels {
                        namespace: labels.namespace.clone(),
                        channel: labels.channel.clone(),
                        subscription: labels.subscription.clone(),
                        response_code_class: class,
                    })
                }),
                latency: f.latency.0.get_or_create_owned(labels),
                retries: f.retries.get_or_create_owned(labels),
                dead_lettered: f.dead_lettered.get_or_create_owned(labels),
                dropped: f.dropped.get_or_create_owned(labels),
                replies: f.replies.get_or_create_owned(labels),
                queue_depth: f.queue_depth.get_or_create_owned(labels),
                filtered: f.filtered.get_or_create_owned(labels),
                filter_errors: f.filter_errors.get_or_create_owned(labels),
                ttl_exceeded: f.ttl_exceeded.get_or_create_owned(labels),
            })
        })
    }

    /// A trigger's filter did not pass an event (settled without delivery).
    pub fn filtered(&self) {
        self.series().filtered.inc();
    }
    /// Evaluating a trigger's filter failed (a CESQL error): the event was
    /// treated as not matching.
    pub fn filter_error(&self) {
        self.series().filter_errors.inc();
    }
    /// A reply was dropped because the broker TTL (hop count) ran out.
    pub fn ttl_exceeded(&self) {
        self.series().ttl_exceeded.inc();
    }
    /// One delivery attempt to the subscriber ended with `class` after `elapsed`.
    pub fn attempt(&self, class: StatusClass, elapsed: Duration) {
        let series = self.series();
        series.deliveries[class.index()].inc();
        series.latency.observe(elapsed.as_secs_f64());
    }
    /// A re-attempt was scheduled.
    pub fn retry(&self) {
        self.series().retries.inc();
    }
    /// Re-attempts scheduled so far (by any handle of this subscription).
    pub fn retries(&self) -> u64 {
        match self.series.get() {
            Some(series) => series.retries.get(),
            None => self
                .families
                .retries
                .get(&self.labels())
                .map_or(0, |c| c.get()),
        }
    }
    /// The event reached the dead-letter sink.
    pub fn dead_lettered(&self) {
        self.series().dead_lettered.inc();
    }
    /// The event was dropped after its last attempt (no dead-letter sink).
    pub fn dropped(&self) {
        self.series().dropped.inc();
    }
    /// A reply event was forwarded to the reply destination.
    pub fn reply(&self) {
        self.series().replies.inc();
    }
    /// Events stored but not yet settled for this subscription. An idle
    /// subscription that never had a backlog exports no series.
    pub fn set_queue_depth(&self, depth: u64) {
        if depth == 0 && self.series.get().is_none() {
            return;
        }
        self.series()
            .queue_depth
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
        self.families
            .eventtype_refused
            .get_or_create_owned(&ReferenceLabels {
                namespace: namespace.to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
            })
    }

    pub fn new() -> Metrics {
        Metrics::with_prefix("kn_channel")
    }

    /// The same metrics under another prefix (the source adapter's
    /// deliveries are `kn_source_*`).
    pub fn with_prefix(prefix: &str) -> Metrics {
        let mut registry = Registry::with_prefix(prefix);
        let f = Families::default();
        registry.register(
            "events_received",
            "Events posted to a channel, by response code class",
            f.received.clone(),
        );
        registry.register(
            "broker_events_received",
            "Events posted to a broker, by response code class",
            f.broker_received.clone(),
        );
        registry.register(
            "events_filtered",
            "Events a trigger's filter did not pass, settled without delivery",
            f.filtered.clone(),
        );
        registry.register(
            "filter_errors",
            "Filter evaluations that failed (CESQL errors), counted as not matching",
            f.filter_errors.clone(),
        );
        registry.register(
            "broker_ttl_exceeded",
            "Replies dropped because the broker TTL (knativebrokerttl) ran out: an event loop",
            f.ttl_exceeded.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts to subscribers, by response code class",
            f.deliveries.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Duration of delivery attempts to subscribers",
            f.latency.0.clone(),
        );
        registry.register(
            "retries",
            "Delivery re-attempts scheduled",
            f.retries.clone(),
        );
        registry.register(
            "dead_lettered",
            "Events delivered to the dead-letter sink",
            f.dead_lettered.clone(),
        );
        registry.register(
            "dropped",
            "Events dropped after the last attempt with no dead-letter sink",
            f.dropped.clone(),
        );
        registry.register(
            "replies",
            "Reply events forwarded to the reply destination",
            f.replies.clone(),
        );
        registry.register(
            "queue_depth",
            "Events stored for a subscription and not yet settled",
            f.queue_depth.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "contract_generation",
            "Generation of the data-plane contract applied",
            generation.clone(),
        );
        registry.register(
            "eventtype_autocreate_refused",
            "New (type, source) pairs not registered because their broker or channel holds the maximum (eventtype-auto-create-max-per-reference)",
            f.eventtype_refused.clone(),
        );
        Metrics {
            registry,
            families: Arc::new(f),
            generation,
        }
    }

    /// Handles for one channel's ingress counters.
    pub fn channel(&self, namespace: &str, channel: &str) -> ChannelMetrics {
        self.ingress(namespace, channel, false)
    }

    /// Handles for one broker's ingress counters.
    pub fn broker(&self, namespace: &str, broker: &str) -> ChannelMetrics {
        self.ingress(namespace, broker, true)
    }

    fn ingress(&self, namespace: &str, name: &str, broker: bool) -> ChannelMetrics {
        ChannelMetrics(Arc::new(LazyChannel {
            families: self.families.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            broker,
            received: OnceLock::new(),
        }))
    }

    /// Handles for one subscription's counters.
    pub fn subscription(
        &self,
        namespace: &str,
        channel: &str,
        subscription: &str,
    ) -> Arc<SubscriptionMetrics> {
        Arc::new(SubscriptionMetrics {
            families: self.families.clone(),
            names: [namespace, channel, subscription].join("\0").into(),
            series: OnceLock::new(),
        })
    }

    /// Stop exporting a removed subscription's series.
    pub fn forget_subscription(&self, namespace: &str, channel: &str, subscription: &str) {
        let f = &self.families;
        let labels = SubscriptionLabels {
            namespace: namespace.to_owned(),
            channel: channel.to_owned(),
            subscription: subscription.to_owned(),
        };
        for class in StatusClass::ALL {
            f.deliveries.remove(&SubscriptionStatusLabels {
                namespace: namespace.to_owned(),
                channel: channel.to_owned(),
                subscription: subscription.to_owned(),
                response_code_class: class,
            });
        }
        f.latency.0.remove(&labels);
        f.retries.remove(&labels);
        f.dead_lettered.remove(&labels);
        f.dropped.remove(&labels);
        f.replies.remove(&labels);
        f.queue_depth.remove(&labels);
        f.filtered.remove(&labels);
        f.filter_errors.remove(&labels);
        f.ttl_exceeded.remove(&labels);
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

    #[test]
    fn idle_channels_and_subscriptions_export_nothing_until_used() {
        let m = Metrics::new();
        let channel = m.channel("default", "idle");
        let sub = m.subscription("default", "idle", "quiet");
        sub.set_queue_depth(0);
        assert_eq!(sub.retries(), 0);
        let text = m.encode();
        assert!(!text.contains("idle"), "{text}");

        // A backlog, or the first event, creates the series.
        sub.set_queue_depth(3);
        channel.received(202);
        let text = m.encode();
        assert!(text.contains(
            r#"kn_channel_queue_depth{namespace="default",channel="idle",subscription="quiet"} 3"#
        ), "{text}");
        assert!(text.contains(
            r#"kn_channel_events_received_total{namespace="default",channel="idle",response_code_class="2xx"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"kn_channel_deliveries_total{namespace="default",channel="idle",subscription="quiet",response_code_class="2xx"} 0"#
        ), "every class is exported once the subscription has series: {text}");
    }

    #[test]
    fn a_second_handle_reads_the_retries_of_the_first() {
        let m = Metrics::new();
        let worker = m.subscription("default", "c", "s");
        worker.retry();
        worker.retry();
        assert_eq!(m.subscription("default", "c", "s").retries(), 2);
    }
}
