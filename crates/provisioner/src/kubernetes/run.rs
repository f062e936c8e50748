//! `provisioner controller`: the control plane as a Kubernetes controller.
//!
//! Watches (reflectors) keep local caches of the classes, the four channel
//! kinds, Subscriptions, Brokers, Triggers, Sequences, Parallels,
//! EventTypes, the event sources (nine kinds), the namespaces labelled
//! `eventing.knative.dev/injection=enabled` and the contract ConfigMaps;
//! the ConfigMaps brokers name in `spec.config`, and Knative's
//! `knative-eventing/config-features`, are watched one by one (a
//! field selector on the name: a label selector cannot pick out a user's
//! ConfigMaps, and watching every ConfigMap of the cluster would cache them
//! all), started and stopped as brokers come and go. Any change wakes the
//! reconcile loop, which waits a short moment for related changes to arrive
//! together (a `kubectl apply` of several documents) and then runs one
//! global round of [`Controller::reconcile`] on a snapshot of the caches.
//! A round also runs every `--resync-interval`, so provisioning retries and
//! dispatcher status are picked up without changes. Only the replica
//! holding the Lease reconciles; the others keep their caches warm.

use super::controller::{
    broker_resource, channel_resources, config_references, event_policy_resource,
    event_type_resource, parallel_resource, sequence_resource, source_resources, trigger_resource,
    Controller, Settings, Snapshot, CONTRACT_LABEL,
};
use super::crd;
use super::lease::Elector;
use crate::cycle::{http_client, ProvisioningArgs};
use crate::status::ConditionStatus;
use anyhow::Context as _;
use bytes::Bytes;
use channel_core::broker::INJECTION_LABEL;
use channel_core::BackendKind;
use dispatcher::admin::respond;
use futures_util::StreamExt as _;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

/// `provisioner controller`: reconcile Knative channels on Kubernetes.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// The system namespace: dispatchers, their contract ConfigMaps and the
    /// leader-election Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "knative-channels")]
    pub namespace: String,

    /// Admin server: `/healthz`, `/readyz` (caches synced), `/metrics`.
    #[arg(long, env = "KN_PROVISIONER_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,

    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "KN_PROVISIONER_LEASE",
        default_value = "knative-channel-provisioner"
    )]
    pub lease_name: String,

    /// How long a Lease stays valid without renewal.
    #[arg(long, env = "KN_PROVISIONER_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// The host a backend's channels resolve to (their ExternalName
    /// target): `BACKEND=HOST`. Repeatable; default
    /// `<backend>-dispatcher.<namespace>.svc.cluster.local`.
    #[arg(long = "dispatcher-host", env = "KN_PROVISIONER_DISPATCHER_HOST", value_delimiter = ',', value_parser = parse_backend_host)]
    pub dispatcher_host: Vec<(BackendKind, String)>,

    /// A backend's dispatcher admin URL, polled for the contract it applied:
    /// `BACKEND=URL`. Repeatable; default `http://<host>:9090`; the class's
    /// `spec.dispatcher.adminUrl` wins over both.
    #[arg(long = "dispatcher-admin", env = "KN_PROVISIONER_DISPATCHER_ADMIN", value_delimiter = ',', value_parser = crate::standalone::parse_backend_url)]
    pub dispatcher_admin: Vec<(BackendKind, Url)>,

    /// The public URL of the source adapter's webhook listener (the
    /// Service `source-adapter-webhooks`, port 8088, behind an Ingress or
    /// a load balancer): the webhooks of GitHubSources and GitLabSources
    /// are registered as `<URL>/<namespace>/<name>`. Without it no webhook
    /// is registered (`WebhookRegistered=Unknown`).
    #[arg(long, env = "KN_PROVISIONER_WEBHOOK_BASE_URL", value_parser = parse_webhook_base_url)]
    pub webhook_base_url: Option<Url>,

    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
}

fn parse_webhook_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{s:?} is not an http or https URL"));
    }
    Ok(url)
}

fn parse_backend_host(s: &str) -> Result<(BackendKind, String), String> {
    let (backend, host) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not BACKEND=HOST (e.g. kafka=kafka-dispatcher.knative-channels.svc.cluster.local)"))?;
    let host = host.trim();
    if host.is_empty() || host.contains('/') || host.contains(':') {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok((backend.trim().parse()?, host.to_owned()))
}

/// The controller's metrics (prefix `kn_provisioner`).
#[derive(Debug)]
struct Metrics {
    registry: Registry,
    rounds: Counter,
    failed_calls: Counter,
    duration: Histogram,
    leader: Gauge,
    resources: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kn_provisioner");
        let rounds = Counter::default();
        let failed_calls = Counter::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        let leader = Gauge::default();
        let resources = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("reconcile_rounds", "Reconcile rounds run", rounds.clone());
        registry.register(
            "failed_api_calls",
            "Kubernetes API calls that failed (retried next round)",
            failed_calls.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile round",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the Lease",
            leader.clone(),
        );
        registry.register(
            "resources",
            "Channels, subscriptions, brokers and triggers by kind and readiness",
            resources.clone(),
        );
        Metrics {
            registry,
            rounds,
            failed_calls,
            duration,
            leader,
            resources,
        }
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The caches, filled by watchers.
struct Caches {
    classes: Store<crd::ClusterChannelProvisioner>,
    channels: Vec<Store<DynamicObject>>,
    subscriptions: Store<crd::Subscription>,
    contract_maps: Store<ConfigMap>,
    brokers: Store<DynamicObject>,
    triggers: Store<DynamicObject>,
    namespaces: Store<Namespace>,
    sequences: Store<DynamicObject>,
    parallels: Store<DynamicObject>,
    event_types: Store<DynamicObject>,
    event_policies: Store<DynamicObject>,
    /// One per source kind.
    sources: Vec<Store<DynamicObject>>,
}

impl Caches {
    fn snapshot(&self) -> Snapshot {
        fn own<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
            v.into_iter().map(|o| (*o).clone()).collect()
        }
        Snapshot {
            classes: own(self.classes.state()),
            channels: self
                .channels
                .iter()
                .flat_map(|s| s.state())
                .map(|o| (*o).clone())
                .collect(),
            subscriptions: own(self.subscriptions.state()),
            contract_maps: own(self.contract_maps.state()),
            brokers: own(self.brokers.state()),
            triggers: own(self.triggers.state()),
            namespaces: own(self.namespaces.state()),
            sequences: own(self.sequences.state()),
            parallels: own(self.parallels.state()),
            event_types: own(self.event_types.state()),
            event_policies: own(self.event_policies.state()),
            sources: self
                .sources
                .iter()
                .flat_map(|s| s.state())
                .map(|o| (*o).clone())
                .collect(),
            // Filled from the per-ConfigMap watches.
            config_maps: Vec::new(),
        }
    }

    async fn wait_until_ready(&self) -> bool {
        let mut ok = self.classes.wait_until_ready().await.is_ok()
            && self.subscriptions.wait_until_ready().await.is_ok()
            && self.contract_maps.wait_until_ready().await.is_ok()
            && self.brokers.wait_until_ready().await.is_ok()
            && self.triggers.wait_until_ready().await.is_ok()
            && self.namespaces.wait_until_ready().await.is_ok()
            && self.sequences.wait_until_ready().await.is_ok()
            && self.parallels.wait_until_ready().await.is_ok()
            && self.event_types.wait_until_ready().await.is_ok()
            && self.event_policies.wait_until_ready().await.is_ok();
        for s in self.channels.iter().chain(&self.sources) {
            ok &= s.wait_until_ready().await.is_ok();
        }
        ok
    }
}

/// One watch per ConfigMap named by a broker's `spec.config` (and the
/// feature flags), and one of Knative's trust bundles (ConfigMaps of
/// `knative-eventing` labelled `networking.knative.dev/trust-bundle`).
struct ConfigWatches {
    client: kube::Client,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    watches: BTreeMap<(String, String), (Store<ConfigMap>, CancellationToken)>,
    trust_bundles: Store<ConfigMap>,
}

impl ConfigWatches {
    fn new(client: kube::Client, wake: Arc<Notify>, shutdown: CancellationToken) -> Self {
        let writer = Writer::default();
        let trust_bundles = writer.as_reader();
        reflect(
            Api::<ConfigMap>::namespaced(client.clone(), channel_core::features::CONFIG_FEATURES.0),
            writer,
            watcher::Config::default().labels(&format!(
                "{}=true",
                channel_core::features::TRUST_BUNDLE_LABEL
            )),
            wake.clone(),
            shutdown.clone(),
        );
        ConfigWatches {
            client,
            wake,
            shutdown,
            watches: BTreeMap::new(),
            trust_bundles,
        }
    }

    /// Watch exactly the ConfigMaps `wanted`: start the new ones, stop
    /// those no broker names any more.
    fn sync(&mut self, wanted: &BTreeSet<(String, String)>) {
        self.watches.retain(|key, (_, stop)| {
            let keep = wanted.contains(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for key in wanted {
            if self.watches.contains_key(key) {
                continue;
            }
            let (ns, name) = key;
            let writer = Writer::default();
            let store = writer.as_reader();
            let stop = self.shutdown.child_token();
            reflect(
                Api::<ConfigMap>::namespaced(self.client.clone(), ns),
                writer,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                self.wake.clone(),
                stop.clone(),
            );
            tracing::debug!(namespace = %ns, name = %name, "watching a broker ConfigMap");
            self.watches.insert(key.clone(), (store, stop));
        }
    }

    /// Wait (at most `timeout`) for the watches started last to list their
    /// ConfigMap; the controller reads one that is not there yet itself.
    async fn wait_until_ready(&self, timeout: Duration) {
        let all = futures_util::future::join_all(
            self.watches
                .values()
                .map(|(store, _)| store.wait_until_ready()),
        );
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::debug!("a broker ConfigMap watch has not listed yet");
        }
    }

    fn maps(&self) -> Vec<ConfigMap> {
        self.watches
            .values()
            .flat_map(|(store, _)| store.state())
            .chain(self.trust_bundles.state())
            .map(|m| (*m).clone())
            .collect()
    }
}

/// Run a reflector for `api` into `writer`, waking `wake` on every event.
fn reflect<K>(
    api: Api<K>,
    writer: Writer<K>,
    config: watcher::Config,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = stream.next() => match event {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(e)) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
                    None => return,
                },
            }
        }
    });
}

async fn admin(
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n",
        );
    }
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if synced.load(Ordering::Relaxed) => {
            respond(StatusCode::OK, "text/plain", "ready\n")
        }
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced yet\n",
        ),
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /healthz /readyz /metrics\n",
        ),
    }
}

/// Run the controller until `shutdown` is cancelled.
pub async fn run(args: ControllerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration found (in-cluster service account or KUBECONFIG)")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("provisioner-{}", std::process::id()))
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics = Arc::new(Metrics::new());
    let synced = Arc::new(AtomicBool::new(false));
    let server = {
        let (metrics, synced) = (metrics.clone(), synced.clone());
        tokio::spawn(dispatcher::server::serve(
            "admin",
            listener,
            move |req| admin(metrics.clone(), synced.clone(), req),
            shutdown.clone(),
            Duration::from_secs(2),
        ))
    };
    tracing::info!(namespace = %args.namespace, identity = %identity, listen = %args.listen, "provisioner controller started");

    // Caches.
    let wake = Arc::new(Notify::new());
    let classes_writer = Writer::default();
    let subscriptions_writer = Writer::default();
    let maps_writer = Writer::default();
    let brokers_writer = Writer::new(broker_resource());
    let triggers_writer = Writer::new(trigger_resource());
    let namespaces_writer = Writer::default();
    let sequences_writer = Writer::new(sequence_resource());
    let parallels_writer = Writer::new(parallel_resource());
    let event_types_writer = Writer::new(event_type_resource());
    let event_policies_writer = Writer::new(event_policy_resource());
    let mut caches = Caches {
        sequences: sequences_writer.as_reader(),
        parallels: parallels_writer.as_reader(),
        event_types: event_types_writer.as_reader(),
        event_policies: event_policies_writer.as_reader(),
        sources: Vec::new(),
        classes: classes_writer.as_reader(),
        subscriptions: subscriptions_writer.as_reader(),
        contract_maps: maps_writer.as_reader(),
        channels: Vec::new(),
        brokers: brokers_writer.as_reader(),
        triggers: triggers_writer.as_reader(),
        namespaces: namespaces_writer.as_reader(),
    };
    reflect(
        Api::<DynamicObject>::all_with(client.clone(), &broker_resource()),
        brokers_writer,
        watcher::Config::default(),
        wake.clone(),
        shutdown.clone(),
    );
    reflect(
        Api::<DynamicObject>::all_with(client.clone(), &trigger_resource()),
        triggers_writer,
        watcher::Config::default(),
        wake.clone(),
        shutdown.clone(),
    );
    reflect(
        Api::<Namespace>::all(client.clone()),
        namespaces_writer,
        watcher::Config::default().labels(&format!("{INJECTION_LABEL}=enabled")),
        wake.clone(),
        shutdown.clone(),
    );
    let mut configs = ConfigWatches::new(client.clone(), wake.clone(), shutdown.clone());
    reflect(
        Api::<crd::ClusterChannelProvisioner>::all(client.clone()),
        classes_writer,
        watcher::Config::default(),
        wake.clone(),
        shutdown.clone(),
    );
    reflect(
        Api::<crd::Subscription>::all(client.clone()),
        subscriptions_writer,
        watcher::Config::default(),
        wake.clone(),
        shutdown.clone(),
    );
    reflect(
        Api::<ConfigMap>::namespaced(client.clone(), &args.namespace),
        maps_writer,
        watcher::Config::default().labels(CONTRACT_LABEL),
        wake.clone(),
        shutdown.clone(),
    );
    for (ar, writer) in [
        (sequence_resource(), sequences_writer),
        (parallel_resource(), parallels_writer),
        (event_type_resource(), event_types_writer),
        (event_policy_resource(), event_policies_writer),
    ] {
        reflect(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            writer,
            watcher::Config::default(),
            wake.clone(),
            shutdown.clone(),
        );
    }
    for ar in source_resources() {
        let writer = Writer::new(ar.clone());
        caches.sources.push(writer.as_reader());
        reflect(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            writer,
            watcher::Config::default(),
            wake.clone(),
            shutdown.clone(),
        );
    }
    for (_, ar) in channel_resources() {
        let writer = Writer::new(ar.clone());
        caches.channels.push(writer.as_reader());
        reflect(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            writer,
            watcher::Config::default(),
            wake.clone(),
            shutdown.clone(),
        );
    }

    // Leadership.
    let elector = Elector::new(
        Api::namespaced(client.clone(), &args.namespace),
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    let leading = Arc::new(AtomicBool::new(false));
    let lease_task = {
        let (elector, leading, metrics, shutdown, wake) = (
            elector.clone(),
            leading.clone(),
            metrics.clone(),
            shutdown.clone(),
            wake.clone(),
        );
        tokio::spawn(async move {
            loop {
                let now_leading = match elector.try_acquire_or_renew().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "lease not renewed");
                        false
                    }
                };
                if now_leading != leading.swap(now_leading, Ordering::Relaxed) {
                    if now_leading {
                        wake.notify_one();
                    } else {
                        tracing::warn!("lost the lease; reconciling stops until it is regained");
                    }
                }
                metrics.leader.set(i64::from(now_leading));
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(elector.renew_interval()) => {}
                }
            }
            if leading.load(Ordering::Relaxed) {
                elector.release().await;
            }
        })
    };

    // The controller proper.
    let mut settings = Settings::new(&args.namespace);
    for (backend, host) in &args.dispatcher_host {
        settings.dispatcher_hosts.insert(*backend, host.clone());
        if let Ok(url) = Url::parse(&format!("http://{host}:9090/")) {
            settings.dispatcher_admin.insert(*backend, url);
        }
    }
    for (backend, url) in &args.dispatcher_admin {
        settings.dispatcher_admin.insert(*backend, url.clone());
    }
    settings.webhook_base_url = args.webhook_base_url.clone();
    match &settings.webhook_base_url {
        Some(url) => {
            tracing::info!(webhook_base_url = %url, "GitHub and GitLab webhooks are registered")
        }
        None => {
            tracing::info!("no --webhook-base-url: GitHub and GitLab webhooks are not registered")
        }
    }
    let cycle = args.provisioning.cycle();
    let mut controller = Controller::new(client, settings, cycle, http_client());

    tokio::select! {
        _ = shutdown.cancelled() => {}
        ready = caches.wait_until_ready() => {
            if !ready {
                anyhow::bail!("the watches stopped before the caches were filled");
            }
        }
    }
    synced.store(true, Ordering::Relaxed);
    tracing::info!("caches synced");
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {
                // Let related changes arrive together.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep(args.provisioning.resync_interval) => {}
        }
        if !leading.load(Ordering::Relaxed) {
            continue;
        }
        let started = Instant::now();
        let mut snapshot = caches.snapshot();
        configs.sync(&config_references(&snapshot));
        configs.wait_until_ready(Duration::from_secs(5)).await;
        snapshot.config_maps = configs.maps();
        let outcome = controller.reconcile(&snapshot).await;
        metrics.rounds.inc();
        metrics.duration.observe(started.elapsed().as_secs_f64());
        metrics.failed_calls.inc_by(outcome.errors.len() as u64);
        metrics.resources.clear();
        for r in &outcome.resources {
            let ready = if r.ready == ConditionStatus::True {
                "true"
            } else {
                "false"
            };
            metrics
                .resources
                .get_or_create(&vec![
                    ("kind".into(), r.kind.clone()),
                    ("ready".into(), ready.into()),
                ])
                .inc();
        }
        if !outcome.errors.is_empty() || outcome.waiting {
            // Retry soon rather than at the next resync.
            let wake = wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                wake.notify_one();
            });
        }
    }
    let _ = lease_task.await;
    let _ = server.await;
    tracing::info!("provisioner controller stopped");
    Ok(())
}
