//! The adapter's metrics: per source (`kn_source_events_*{namespace, kind,
//! name}`: sent, failed, retried, dropped, ignored, and
//! `kn_source_webhook_rejected_total` for webhook deliveries refused), and the delivery engine's own
//! under `kn_source_delivery_*` (labels `channel` = `<kind>/<name>`,
//! `subscription` = the name). `retried` mirrors the engine's retry counter
//! of the source, brought up to date whenever `/metrics` or `/status` is
//! read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabels {
    namespace: String,
    kind: String,
    name: String,
}

/// Every metric of the adapter.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sent: Family<SourceLabels, Counter>,
    failed: Family<SourceLabels, Counter>,
    retried: Family<SourceLabels, Counter>,
    dropped: Family<SourceLabels, Counter>,
    ignored: Family<SourceLabels, Counter>,
    rejected: Family<SourceLabels, Counter>,
    /// The delivery engine's.
    pub delivery: Arc<dispatcher::metrics::Metrics>,
}

/// One source's counters.
#[derive(Debug, Clone, Default)]
pub struct SourceCounters {
    /// Accepted by the sink.
    pub sent: Counter,
    /// Failed for good (dead-lettered or dropped after the retries).
    pub failed: Counter,
    /// Re-attempts (mirrored from the engine, see [`Metrics::sync_retries`]).
    pub retried: Counter,
    /// Never queued: the queue was full (PingSource ticks).
    pub dropped: Counter,
    /// Received and acknowledged but not sent on: a webhook event type the
    /// source does not ask for, a GitHub `ping`.
    pub ignored: Counter,
    /// Webhook deliveries refused: bad or missing signature or token,
    /// malformed or oversized payload.
    pub rejected: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kn_source");
        let sent = Family::<SourceLabels, Counter>::default();
        let failed = Family::<SourceLabels, Counter>::default();
        let dropped = Family::<SourceLabels, Counter>::default();
        let retried = Family::<SourceLabels, Counter>::default();
        let ignored = Family::<SourceLabels, Counter>::default();
        let rejected = Family::<SourceLabels, Counter>::default();
        registry.register("events_sent", "Events the sink accepted", sent.clone());
        registry.register(
            "events_retried",
            "Re-attempts of deliveries to the sink",
            retried.clone(),
        );
        registry.register(
            "events_failed",
            "Events that failed for good (dead-lettered, or dropped after the retries)",
            failed.clone(),
        );
        registry.register(
            "events_dropped",
            "Events not queued because the source's queue was full",
            dropped.clone(),
        );
        registry.register(
            "events_ignored",
            "Webhook deliveries acknowledged and not sent on (event types not asked for, pings)",
            ignored.clone(),
        );
        registry.register(
            "webhook_rejected",
            "Webhook deliveries refused (bad signature or token, malformed or oversized payload)",
            rejected.clone(),
        );
        Metrics {
            registry,
            sent,
            failed,
            retried,
            dropped,
            ignored,
            rejected,
            delivery: Arc::new(dispatcher::metrics::Metrics::with_prefix(
                "kn_source_delivery",
            )),
        }
    }

    pub fn source(&self, namespace: &str, kind: &str, name: &str) -> SourceCounters {
        let labels = SourceLabels {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        SourceCounters {
            sent: self.sent.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
            retried: self.retried.get_or_create(&labels).clone(),
            dropped: self.dropped.get_or_create(&labels).clone(),
            ignored: self.ignored.get_or_create(&labels).clone(),
            rejected: self.rejected.get_or_create(&labels).clone(),
        }
    }

    /// Bring a source's `retried` up to the engine's retry count of its
    /// subscription (`channel` as the runner names it).
    pub fn sync_retries(
        &self,
        counters: &SourceCounters,
        namespace: &str,
        channel: &str,
        name: &str,
    ) {
        let engine = self
            .delivery
            .subscription(namespace, channel, name)
            .retries();
        let ours = counters.retried.get();
        if engine > ours {
            counters.retried.inc_by(engine - ours);
        }
    }

    /// Stop exporting a removed source's series.
    pub fn forget(&self, namespace: &str, kind: &str, name: &str) {
        let labels = SourceLabels {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        };
        self.sent.remove(&labels);
        self.failed.remove(&labels);
        self.retried.remove(&labels);
        self.dropped.remove(&labels);
        self.ignored.remove(&labels);
        self.rejected.remove(&labels);
    }

    /// OpenMetrics text of both registries.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out.push_str(&self.delivery.encode());
        out
    }
}
