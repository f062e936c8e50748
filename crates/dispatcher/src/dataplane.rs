//! The running data plane: the routing table ingress reads, and the set of
//! subscription workers, both changed only by applying a contract.
//!
//! Applying is by difference. A new channel is provisioned and routed; a
//! removed one is unrouted first (new events get 404), then its workers are
//! drained and its backing resources released. A new subscription opens its
//! stream and starts a worker; a removed one is stopped and drained; a changed
//! one receives its new settings through a watch channel, so it never pauses.

use crate::delivery::{Deliverer, LocalRoutes, SubscriptionConfig};
use crate::metrics::{ChannelMetrics, Metrics, SubscriptionMetrics};
use arc_swap::ArcSwap;
use channel_core::compile::Problem;
use channel_core::contract::KNATIVE_BROKER_INGRESS_HOST;
use channel_core::{Backend, ChannelContract, Contract, SubscriptionContract};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One routed channel, or a broker (stored in the channel backing it).
#[derive(Debug)]
pub struct Route {
    pub channel: Arc<ChannelContract>,
    pub metrics: ChannelMetrics,
    /// The route is the broker's ingress, not the channel's: events get the
    /// broker TTL.
    pub broker: bool,
    /// Where ingress records `(type, source)` pairs, when EventType
    /// auto-creation is on.
    pub event_types: Option<Arc<crate::eventtypes::Seen>>,
    /// What a sender must present, when OIDC authentication is on.
    pub auth: Option<Arc<crate::auth::authorize::RouteAuth>>,
}

/// Ingress lookup tables, swapped whole on every apply (readers never lock).
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<String, Arc<Route>>,
    by_host: HashMap<String, Arc<Route>>,
    /// Brokers by `/<namespace>/<name>`, for requests carrying Knative's
    /// broker ingress host.
    by_broker_path: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    /// The channel or broker for a request: Knative's broker ingress host
    /// with path `/<namespace>/<broker>`; else by `Host` (a channel's
    /// `-kn-channel` or a broker's `-kn-broker` host, port ignored); else by
    /// path, `/<namespace>/<channel>` or `/brokers/<namespace>/<broker>`.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let path = path.strip_suffix('/').unwrap_or(path);
        if let Some(host) = host {
            let host = strip_port(host);
            if host == KNATIVE_BROKER_INGRESS_HOST {
                return self.by_broker_path.get(path);
            }
            if let Some(route) = self.by_host.get(host) {
                return Some(route);
            }
        }
        self.by_path.get(path)
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Resolves the hosts of channels this dispatcher serves to its own ingress,
/// so replies and subscribers that are channels here need no cluster DNS.
#[derive(Debug)]
pub struct LocalChannelRoutes {
    routes: Arc<ArcSwap<RouteTable>>,
    ingress: SocketAddr,
    /// This dispatcher's TLS host ([`channel_core::contract::tls_host`])
    /// and its HTTPS listener, when it serves HTTPS.
    tls: Option<(String, SocketAddr)>,
}

impl LocalRoutes for LocalChannelRoutes {
    fn resolve(&self, host: &str) -> Option<SocketAddr> {
        if let Some((tls_host, addr)) = &self.tls {
            if host == tls_host {
                return Some(*addr);
            }
        }
        let table = self.routes.load();
        let local = table.by_host.contains_key(host)
            || (host == KNATIVE_BROKER_INGRESS_HOST && !table.by_broker_path.is_empty());
        local.then_some(self.ingress)
    }
}

struct Worker {
    config: SubscriptionConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
    metrics: Arc<SubscriptionMetrics>,
    ready: bool,
    message: Option<String>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// Status of one subscription as this dispatcher serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    pub uid: String,
    pub name: String,
    pub generation: i64,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

/// Status of one channel as this dispatcher serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub address: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The broker the channel backs, with the broker's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStatus>,
    pub subscriptions: Vec<SubscriptionStatus>,
}

/// The broker a channel backs, as this dispatcher serves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub uid: String,
    pub name: String,
    pub address: String,
}

/// A problem found while loading or compiling configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    pub message: String,
}

impl From<&Problem> for ProblemStatus {
    fn from(p: &Problem) -> Self {
        ProblemStatus {
            kind: p.kind.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            reason: p.reason.clone(),
            message: p.message.clone(),
        }
    }
}

/// The whole status document served at `/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Contract generation applied; `None` until the first one is.
    pub generation: Option<u64>,
    pub backend: String,
    pub channels: Vec<ChannelStatus>,
    pub problems: Vec<ProblemStatus>,
    /// The last configuration error (the previous configuration stays applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Applied {
    generation: Option<u64>,
    channels: BTreeMap<String, (Arc<ChannelContract>, Option<String>)>,
    workers: BTreeMap<(String, String), Worker>,
    problems: Vec<ProblemStatus>,
    last_error: Option<String>,
    /// The last contract applied, kept to retry what failed (provisioning,
    /// subscribing) without waiting for the configuration to change.
    last: Option<(Contract, Vec<ProblemStatus>)>,
    /// Something in `last` is not running yet.
    degraded: bool,
    /// Subscriptions refused because their contract entry cannot run (a
    /// trigger filter that does not compile), with the reason.
    refused: BTreeMap<(String, String), String>,
}

/// The data plane of one dispatcher process.
#[derive(Debug)]
pub struct Dataplane {
    backend: Arc<dyn Backend>,
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
    routes: Arc<ArcSwap<RouteTable>>,
    applied: tokio::sync::Mutex<Applied>,
    /// The status as it was when the apply in progress began, for readers
    /// that must not wait for it; `None` between applies, when the status is
    /// built from what is applied on demand (a standing copy would cost
    /// half a kilobyte per channel).
    status_during_apply: Mutex<Option<Status>>,
    /// Whether a contract has been applied (`/readyz`).
    has_contract: std::sync::atomic::AtomicBool,
    /// EventType auto-registration (`eventtype-auto-create`).
    event_types: Mutex<crate::eventtypes::Registry>,
    /// `authentication-oidc` and the EventPolicies, from the last contract.
    oidc: Mutex<Option<channel_core::features::Oidc>>,
}

impl Dataplane {
    /// A data plane over `backend` with nothing applied yet.
    pub fn new(
        backend: Arc<dyn Backend>,
        deliverer: Deliverer,
        metrics: Arc<Metrics>,
        routes: Arc<ArcSwap<RouteTable>>,
    ) -> Dataplane {
        Dataplane {
            backend,
            deliverer,
            metrics,
            routes,
            applied: tokio::sync::Mutex::new(Applied::default()),
            status_during_apply: Mutex::new(None),
            has_contract: std::sync::atomic::AtomicBool::new(false),
            event_types: Mutex::default(),
            oidc: Mutex::new(None),
        }
    }

    /// The `(type, source)` pairs ingress recorded (EventType
    /// auto-creation), `None` when the contract leaves it off.
    pub fn event_types(&self) -> Option<Vec<crate::eventtypes::Observed>> {
        let registry = self.event_types.lock().unwrap_or_else(|e| e.into_inner());
        registry.enabled().then(|| registry.observed())
    }

    /// The local-route resolver for the delivery client.
    /// Channel and broker hosts served here resolve to `ingress`; with
    /// `tls` (this dispatcher's TLS host and HTTPS listener), that host
    /// resolves to the listener.
    pub fn local_routes(
        routes: Arc<ArcSwap<RouteTable>>,
        ingress: SocketAddr,
        tls: Option<(String, SocketAddr)>,
    ) -> Arc<dyn LocalRoutes> {
        let loopback = |addr: SocketAddr| {
            if addr.ip().is_unspecified() {
                SocketAddr::new(
                    if addr.is_ipv4() {
                        std::net::Ipv4Addr::LOCALHOST.into()
                    } else {
                        std::net::Ipv6Addr::LOCALHOST.into()
                    },
                    addr.port(),
                )
            } else {
                addr
            }
        };
        Arc::new(LocalChannelRoutes {
            routes,
            ingress: loopback(ingress),
            tls: tls.map(|(host, addr)| (host, loopback(addr))),
        })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The routing table ingress reads.
    pub fn routes(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.routes
    }

    /// Current status snapshot.
    pub fn status(&self) -> Status {
        let mut status = match self.applied.try_lock() {
            Ok(applied) => self.build_status(&applied),
            Err(_) => self
                .status_during_apply
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_else(|| self.empty_status()),
        };
        // Refresh queue depths (cheap for backends that know them).
        let routes = self.routes.load();
        for ch in &mut status.channels {
            if let Some(route) = routes
                .by_path
                .get(&format!("/{}/{}", ch.namespace, ch.name))
            {
                for sub in &mut ch.subscriptions {
                    if let Some(contract) = route
                        .channel
                        .subscriptions
                        .iter()
                        .find(|s| s.uid == sub.uid)
                    {
                        sub.pending = self.backend.pending(&route.channel, contract);
                    }
                }
            }
        }
        status
    }

    /// Update queue-depth gauges (called before a metrics scrape).
    pub async fn refresh_gauges(&self) {
        // An apply in progress may be draining subscriptions for up to the
        // drain timeout: never make a scrape wait for it (the gauges keep
        // their last values).
        let Ok(applied) = self.applied.try_lock() else {
            return;
        };
        for ((channel_uid, sub_uid), worker) in &applied.workers {
            if let Some((channel, _)) = applied.channels.get(channel_uid) {
                if let Some(sub) = channel.subscriptions.iter().find(|s| &s.uid == sub_uid) {
                    if let Some(depth) = self.backend.pending(channel, sub) {
                        worker.metrics.set_queue_depth(depth);
                    }
                }
            }
        }
    }

    /// Whether a contract has been applied.
    pub fn has_contract(&self) -> bool {
        self.has_contract.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Record a configuration error without changing what is applied.
    pub async fn record_error(&self, error: String) {
        let mut applied = self.applied.lock().await;
        applied.last_error = Some(error);
    }

    /// Apply a contract by difference. Channels of other backends are ignored
    /// (with a problem entry), so one manifest set can feed every dispatcher.
    pub async fn apply(&self, contract: Contract, problems: Vec<ProblemStatus>) {
        let mut applied = self.applied.lock().await;
        *self
            .status_during_apply
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(self.build_status(&applied));
        applied.last = Some((contract.clone(), problems.clone()));
        *self.oidc.lock().unwrap_or_else(|e| e.into_inner()) = contract.features.oidc.clone();
        let kind = self.backend.kind();
        let mut problems = problems;
        let mut desired: BTreeMap<String, Arc<ChannelContract>> = BTreeMap::new();
        for channel in contract.channels {
            if channel.backend != kind {
                problems.push(ProblemStatus {
                    kind: channel.kind.clone(),
                    namespace: channel.namespace.clone(),
                    name: channel.name.clone(),
                    reason: "OtherBackend".into(),
                    message: format!(
                        "channel uses backend {} and is served by that backend's dispatcher, not this {} dispatcher",
                        channel.backend, kind
                    ),
                });
                continue;
            }
            // An unchanged channel keeps the entry already applied; a new or
            // changed one is copied. Both keep the long-lived state of the
            // data plane out of the pages the configuration was parsed
            // into, which the allocator can then give back whole (see
            // `crate::memory`): without this, every reload scatters ten
            // thousand live entries over the parser's freed pages and the
            // resident set ratchets up.
            let entry = match applied.channels.get(&channel.uid) {
                Some((old, _)) if **old == channel => old.clone(),
                _ => Arc::new(channel.clone()),
            };
            desired.insert(channel.uid.clone(), entry);
        }

        // 0. When this contract only removes channels (a Sequence step
        //    deleted), subscriptions that stay take their new settings
        //    before anything is unrouted, so none replies into a channel
        //    that stops being served. When it also adds channels, they are
        //    updated after the new ones are routed (5.).
        let adds_channels = desired
            .keys()
            .any(|uid| !applied.channels.contains_key(uid));
        if !adds_channels {
            for channel in desired.values() {
                for sub in &channel.subscriptions {
                    let key = (channel.uid.clone(), sub.uid.clone());
                    if let Some(worker) = applied.workers.get(&key) {
                        if **worker.config.borrow() != **sub
                            && crate::delivery::trigger::check(sub).is_ok()
                        {
                            tracing::info!(subscription = %sub.key(), "subscription updated");
                            worker.config.set(sub.clone());
                        }
                    }
                }
            }
        }

        // 1. Removed channels: unroute, stop their workers, release resources.
        let removed: std::collections::BTreeSet<String> = applied
            .channels
            .keys()
            .filter(|uid| !desired.contains_key(*uid))
            .cloned()
            .collect();
        if !removed.is_empty() {
            let keep: Vec<Arc<ChannelContract>> = applied
                .channels
                .iter()
                .filter(|(uid, _)| !removed.contains(*uid))
                .map(|(_, (c, _))| c.clone())
                .collect();
            self.publish_routes(&keep);
        }
        for uid in &removed {
            // The channel's workers are one range of the map (keys sort
            // by channel uid first): no scan of every worker per channel.
            let keys: Vec<(String, String)> = applied
                .workers
                .range((uid.clone(), String::new())..)
                .map(|(key, _)| key)
                .take_while(|(c, _)| c == uid)
                .cloned()
                .collect();
            let mut stopping = Vec::new();
            for key in keys {
                if let Some(worker) = applied.workers.remove(&key) {
                    stopping.push(worker);
                }
            }
            let Some((channel, _)) = applied.channels.remove(uid) else {
                continue;
            };
            // Stop them all at once: the drains overlap.
            for worker in &stopping {
                worker.stop.cancel();
            }
            for worker in stopping {
                let sub = worker.config.borrow().clone();
                self.stop_worker(&channel, worker).await;
                if let Err(e) = self.backend.unsubscribe(&channel, &sub).await {
                    tracing::warn!(channel = %channel.key(), subscription = %sub.key(), error = %e, "unsubscribe failed");
                }
            }
            if let Err(e) = self.backend.deprovision(&channel).await {
                tracing::warn!(channel = %channel.key(), error = %e, "deprovision failed");
            }
            tracing::info!(channel = %channel.key(), "channel removed");
        }

        // 2. New or changed channels: provision (idempotent, updates parameters).
        for (uid, channel) in &desired {
            let changed = match applied.channels.get(uid) {
                Some((old, failed)) => {
                    failed.is_some()
                        || old.parameters != channel.parameters
                        || old.ingress != channel.ingress
                }
                None => true,
            };
            let message = if changed {
                match self.backend.provision(channel).await {
                    Ok(()) => {
                        tracing::info!(channel = %channel.key(), backend = %kind, "channel provisioned");
                        None
                    }
                    Err(e) => {
                        tracing::error!(channel = %channel.key(), error = %e, "provisioning failed");
                        Some(format!("provisioning failed: {e}"))
                    }
                }
            } else {
                applied.channels.get(uid).and_then(|(_, m)| m.clone())
            };
            applied
                .channels
                .insert(uid.clone(), (channel.clone(), message));
        }

        // 3. Subscriptions: stop removed, update changed, start new.
        let desired_subs: BTreeMap<
            (String, String),
            (Arc<ChannelContract>, Arc<SubscriptionContract>),
        > = desired
            .values()
            .flat_map(|c| {
                c.subscriptions
                    .iter()
                    .map(move |s| ((c.uid.clone(), s.uid.clone()), (c.clone(), s.clone())))
            })
            .collect();
        let gone: Vec<(String, String)> = applied
            .workers
            .keys()
            .filter(|k| !desired_subs.contains_key(*k))
            .cloned()
            .collect();
        for key in &gone {
            if let Some(worker) = applied.workers.get(key) {
                worker.stop.cancel();
            }
        }
        for key in gone {
            if let Some(worker) = applied.workers.remove(&key) {
                let sub = worker.config.borrow().clone();
                if let Some((channel, _)) = applied.channels.get(&key.0) {
                    let channel = channel.clone();
                    self.stop_worker(&channel, worker).await;
                    if let Err(e) = self.backend.unsubscribe(&channel, &sub).await {
                        tracing::warn!(subscription = %sub.key(), error = %e, "unsubscribe failed");
                    }
                    self.metrics
                        .forget_subscription(&sub.namespace, &channel.name, &sub.name);
                }
                tracing::info!(subscription = %sub.key(), "subscription removed");
            }
        }
        applied.refused.clear();
        // Changed subscriptions, updated once new channels are routed (5.):
        // a reply moved to a channel added by this contract must find it.
        let mut updated = Vec::new();
        for (key, (channel, sub)) in desired_subs {
            if let Err(e) = crate::delivery::trigger::check(&sub) {
                tracing::error!(subscription = %sub.key(), error = %e, "trigger filter refused: the subscription does not run");
                if let Some(worker) = applied.workers.remove(&key) {
                    let old = worker.config.borrow().clone();
                    self.stop_worker(&channel, worker).await;
                    self.metrics
                        .forget_subscription(&old.namespace, &channel.name, &old.name);
                }
                applied.refused.insert(key, e);
                continue;
            }
            if let Some(worker) = applied.workers.get(&key) {
                if **worker.config.borrow() != *sub {
                    updated.push((key, sub));
                }
                continue;
            }
            let ready_channel = applied
                .channels
                .get(&channel.uid)
                .is_some_and(|(_, m)| m.is_none());
            let worker = if ready_channel {
                self.start_worker(&channel, sub).await
            } else {
                None
            };
            if let Some(worker) = worker {
                applied.workers.insert(key, worker);
            }
        }

        // 4. Route new channels only once their subscriptions are running, so
        //    the first event accepted is seen by every subscription.
        let routed: Vec<Arc<ChannelContract>> = applied
            .channels
            .values()
            .filter(|(_, m)| m.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        {
            let live = routed
                .iter()
                .flat_map(|c| references(c).into_iter().flatten())
                .collect();
            self.event_types
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .configure(contract.features.eventtype_auto_create, &live);
        }
        self.publish_routes(&routed);

        // 5. Changed subscriptions take their new settings without pausing.
        for (key, sub) in updated {
            if let Some(worker) = applied.workers.get(&key) {
                tracing::info!(subscription = %sub.key(), "subscription updated");
                worker.config.set(sub);
            }
        }

        applied.degraded = applied.channels.values().any(|(_, m)| m.is_some())
            || desired
                .values()
                .flat_map(|c| {
                    c.subscriptions
                        .iter()
                        .map(move |s| (c.uid.clone(), s.uid.clone()))
                })
                // A refused subscription waits for a new contract, not a retry.
                .any(|key| {
                    !applied.workers.contains_key(&key) && !applied.refused.contains_key(&key)
                });
        if !applied.degraded {
            // Nothing to retry: do not keep a second copy of the contract.
            applied.last = None;
        }
        applied.generation = Some(contract.generation);
        applied.problems = problems;
        applied.last_error = None;
        self.metrics.set_generation(contract.generation);
        self.has_contract
            .store(true, std::sync::atomic::Ordering::Release);
        *self
            .status_during_apply
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        tracing::info!(
            generation = contract.generation,
            channels = applied.channels.len(),
            subscriptions = applied.workers.len(),
            "contract applied"
        );
    }

    /// Re-apply the last contract if part of it failed (a backend that was
    /// unreachable, a subscription that could not be opened). Cheap when
    /// everything runs.
    pub async fn resync(&self) {
        let last = {
            let applied = self.applied.lock().await;
            if !applied.degraded {
                return;
            }
            applied.last.clone()
        };
        if let Some((contract, problems)) = last {
            tracing::info!(
                generation = contract.generation,
                "retrying what failed to start"
            );
            self.apply(contract, problems).await;
        }
    }

    async fn start_worker(
        &self,
        channel: &Arc<ChannelContract>,
        sub: Arc<SubscriptionContract>,
    ) -> Option<Worker> {
        let stream = match self.backend.subscribe(channel, &sub).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!(subscription = %sub.key(), error = %e, "subscribe failed");
                return None;
            }
        };
        let metrics = self.deliverer.subscription_metrics(channel, &sub);
        let stop = CancellationToken::new();
        let config = SubscriptionConfig::new(sub.clone());
        let deliverer = self.deliverer.clone();
        let (task_config, task_metrics, task_stop) =
            (config.clone(), metrics.clone(), stop.clone());
        let task =
            tokio::spawn(deliverer.run_subscription(task_config, task_metrics, stream, task_stop));
        tracing::info!(subscription = %sub.key(), channel = %channel.key(), "subscription started");
        Some(Worker {
            config,
            stop,
            task,
            metrics,
            ready: true,
            message: None,
        })
    }

    async fn stop_worker(&self, channel: &ChannelContract, worker: Worker) {
        worker.stop.cancel();
        if let Err(e) = worker.task.await {
            tracing::error!(channel = %channel.key(), error = %e, "subscription worker failed");
        }
    }

    fn publish_routes(&self, channels: &[Arc<ChannelContract>]) {
        let mut table = RouteTable::default();
        let current = self.routes.load();
        let oidc = self.oidc.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let auth = |path: &str, kind: &str, ns: &str, name: &str| {
            oidc.as_ref().map(|o| {
                Arc::new(crate::auth::authorize::RouteAuth::new(
                    o, path, kind, ns, name,
                ))
            })
        };
        let mut event_types = self.event_types.lock().unwrap_or_else(|e| e.into_inner());
        for channel in channels {
            // Keep metric handles of channels that stay.
            let metrics = current
                .by_path
                .get(&channel.ingress.path)
                .map(|r| r.metrics.clone())
                .unwrap_or_else(|| self.metrics.channel(&channel.namespace, &channel.name));
            let [own, of_broker] = references(channel);
            let route = Arc::new(Route {
                channel: channel.clone(),
                metrics,
                broker: false,
                event_types: own.and_then(|r| event_types.route(r, &self.metrics)),
                auth: auth(
                    &channel.ingress.path,
                    &channel.kind,
                    &channel.namespace,
                    &channel.name,
                ),
            });
            table
                .by_path
                .insert(channel.ingress.path.clone(), route.clone());
            table.by_host.insert(channel.ingress.host.clone(), route);
            if let Some(broker) = &channel.broker {
                let metrics = current
                    .by_path
                    .get(&broker.ingress.path)
                    .map(|r| r.metrics.clone())
                    .unwrap_or_else(|| self.metrics.broker(&channel.namespace, &broker.name));
                let route = Arc::new(Route {
                    channel: channel.clone(),
                    metrics,
                    broker: true,
                    event_types: of_broker
                        .clone()
                        .and_then(|r| event_types.route(r, &self.metrics)),
                    auth: auth(
                        &broker.ingress.path,
                        "Broker",
                        &channel.namespace,
                        &broker.name,
                    ),
                });
                table
                    .by_path
                    .insert(broker.ingress.path.clone(), route.clone());
                table
                    .by_host
                    .insert(broker.ingress.host.clone(), route.clone());
                table
                    .by_broker_path
                    .insert(format!("/{}/{}", channel.namespace, broker.name), route);
            }
        }
        self.routes.store(Arc::new(table));
    }

    fn empty_status(&self) -> Status {
        Status {
            generation: None,
            backend: self.backend.kind().to_string(),
            channels: Vec::new(),
            problems: Vec::new(),
            last_error: None,
        }
    }

    fn build_status(&self, applied: &Applied) -> Status {
        let channels = applied
            .channels
            .values()
            .map(|(channel, message)| {
                let subscriptions = channel
                    .subscriptions
                    .iter()
                    .map(|s| {
                        let worker = applied.workers.get(&(channel.uid.clone(), s.uid.clone()));
                        SubscriptionStatus {
                            uid: s.uid.clone(),
                            name: s.name.clone(),
                            generation: s.generation,
                            ready: worker.is_some_and(|w| w.ready),
                            message: match worker {
                                Some(w) => w.message.clone(),
                                None => Some(
                                    applied
                                        .refused
                                        .get(&(channel.uid.clone(), s.uid.clone()))
                                        .cloned()
                                        .unwrap_or_else(|| {
                                            "no delivery stream (see the dispatcher log)".into()
                                        }),
                                ),
                            },
                            pending: None,
                        }
                    })
                    .collect();
                ChannelStatus {
                    uid: channel.uid.clone(),
                    namespace: channel.namespace.clone(),
                    name: channel.name.clone(),
                    address: channel.address(),
                    ready: message.is_none(),
                    message: message.clone(),
                    broker: channel.broker.as_ref().map(|b| BrokerStatus {
                        uid: b.uid.clone(),
                        name: b.name.clone(),
                        address: b.address(),
                    }),
                    subscriptions,
                }
            })
            .collect();
        Status {
            generation: applied.generation,
            backend: self.backend.kind().to_string(),
            channels,
            problems: applied.problems.clone(),
            last_error: applied.last_error.clone(),
        }
    }

    /// Stop every subscription worker (draining in-flight deliveries) and
    /// wait for them. Ingress must already be closed.
    pub async fn shutdown(&self) {
        let mut applied = self.applied.lock().await;
        let workers = std::mem::take(&mut applied.workers);
        for worker in workers.values() {
            worker.stop.cancel();
        }
        for (_, worker) in workers {
            if let Err(e) = worker.task.await {
                tracing::error!(error = %e, "subscription worker failed during shutdown");
            }
        }
    }
}

/// The EventType references of a channel's routes: the channel itself (a
/// broker's backing channel is not one: its events are the broker's) and
/// the broker it backs.
fn references(channel: &ChannelContract) -> [Option<crate::eventtypes::Reference>; 2] {
    use crate::eventtypes::Reference;
    let kind = channel_core::resources::ChannelKind::from_kind(&channel.kind);
    let own = channel.broker.is_none().then(|| Reference {
        api_version: kind
            .and_then(|k| k.api_versions().first().copied())
            .unwrap_or("messaging.knative.dev/v1")
            .to_owned(),
        kind: channel.kind.clone(),
        namespace: channel.namespace.clone(),
        name: channel.name.clone(),
    });
    let broker = channel.broker.as_ref().map(|b| Reference {
        api_version: "eventing.knative.dev/v1".to_owned(),
        kind: "Broker".to_owned(),
        namespace: channel.namespace.clone(),
        name: b.name.clone(),
    });
    [own, broker]
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::contract::Ingress;

    fn channel(ns: &str, name: &str) -> Arc<ChannelContract> {
        Arc::new(ChannelContract {
            uid: format!("{ns}-{name}"),
            namespace: ns.into(),
            name: name.into(),
            kind: "Channel".into(),
            backend: channel_core::BackendKind::InMemory,
            class: "in-memory-channel".into(),
            ingress: Ingress::for_channel(ns, name),
            parameters: Default::default(),
            subscriptions: vec![],
            broker: None,
        })
    }

    #[test]
    fn routes_by_host_then_path() {
        let metrics = Metrics::new();
        let mut table = RouteTable::default();
        for c in [channel("default", "a"), channel("prod", "b")] {
            let route = Arc::new(Route {
                metrics: metrics.channel(&c.namespace, &c.name),
                channel: c.clone(),
                broker: false,
                event_types: None,
                auth: None,
            });
            table.by_path.insert(c.ingress.path.clone(), route.clone());
            table.by_host.insert(c.ingress.host.clone(), route);
        }
        let hit = |host: Option<&str>, path: &str| {
            table.lookup(host, path).map(|r| r.channel.name.clone())
        };
        assert_eq!(hit(None, "/default/a"), Some("a".into()));
        assert_eq!(hit(None, "/default/a/"), Some("a".into()));
        assert_eq!(
            hit(Some("b-kn-channel.prod.svc.cluster.local"), "/"),
            Some("b".into())
        );
        assert_eq!(
            hit(Some("b-kn-channel.prod.svc.cluster.local:80"), "/x"),
            Some("b".into())
        );
        assert_eq!(hit(Some("localhost:8080"), "/prod/b"), Some("b".into()));
        assert_eq!(hit(Some("localhost:8080"), "/prod/c"), None);
        assert_eq!(hit(None, "/"), None);
    }
}
