//! Delivery: per-subscription loops that POST events to subscribers by the
//! Knative rules (retry, backoff, timeout, Retry-After, dead letter, reply).
//!
//! SKELETON — the interface below is fixed; the implementation is in progress.

use crate::metrics::Metrics;
use channel_core::{ChannelContract, DeliveryStream, SubscriptionContract};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Hosts the dispatcher serves itself (channel hosts in embedded mode), so a
/// reply or subscriber that is another channel of this dispatcher is reached
/// without cluster DNS.
pub trait LocalRoutes: Send + Sync + std::fmt::Debug {
    /// The socket address to connect to for `host`, when it is served locally.
    fn resolve(&self, host: &str) -> Option<SocketAddr>;
}

/// Settings shared by every subscription loop.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// How long in-flight deliveries may run after a stop before they are
    /// abandoned (left unsettled-final so the backend redelivers them).
    pub drain_timeout: Duration,
    /// Largest reply body read from a subscriber; larger replies are not routed.
    pub max_reply_bytes: usize,
    pub local_routes: Option<Arc<dyn LocalRoutes>>,
}

/// The delivery engine: an HTTP client pool plus metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliverer {
    _metrics: Arc<Metrics>,
    _opts: DeliveryOptions,
}

impl Deliverer {
    pub fn new(metrics: Arc<Metrics>, opts: DeliveryOptions) -> Self {
        Deliverer { _metrics: metrics, _opts: opts }
    }

    /// Run one subscription until `stop` is cancelled (then drain) or the
    /// stream ends. `config` carries the latest contract entry of the
    /// subscription; changes apply to the next delivery without a pause.
    pub async fn run_subscription(
        &self,
        _channel: Arc<ChannelContract>,
        _config: watch::Receiver<Arc<SubscriptionContract>>,
        _stream: Box<dyn DeliveryStream>,
        _stop: CancellationToken,
    ) {
        todo!()
    }
}
