//! Applying a sources contract by difference.
//!
//! Every source this adapter owns (see [`crate::config::owns`]) runs as two
//! tasks: the kind's producer (a schedule, watches, a local program) and,
//! for the kinds that send events themselves, the delivery engine's
//! subscription loop over the source's queue ([`crate::queue`]), with the
//! sink as subscriber and the source's delivery policy — so retries,
//! backoff, timeouts, `Retry-After` and dead-letter sinks behave exactly as
//! for subscriptions. A new contract changes only what changed: a new sink
//! or delivery reaches the running loop without a restart; a new schedule,
//! watch set, program or `ceOverrides` restarts that source; sources that
//! are gone stop (their queued events go with them).
//!
//! Webhook sources (GitHubSource, GitLabSource) and KafkaSources run in
//! every replica: a webhook delivery may reach any replica, and a Kafka
//! consumer group spreads the partitions over its members by itself.

use crate::config::owns;
use crate::metrics::{Metrics, SourceCounters};
use channel_core::contract::{Ingress, SubscriptionContract};
use channel_core::sources::{SourceContract, SourceSettings, SourcesContract};
use channel_core::{BackendKind, ChannelContract};
use dispatcher::delivery::{Deliverer, SubscriptionConfig};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What `/status` shows of one source.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// `starting`, `running`, `restarting` (a ContainerSource's program
    /// exited and starts again after a backoff) or `failed`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_tick: Option<String>,
    pub restarts: u64,
}

/// A running source's state, shared with its tasks.
#[derive(Debug)]
pub struct SourceState {
    pub counters: SourceCounters,
    phase: Mutex<Phase>,
}

impl SourceState {
    fn new(counters: SourceCounters) -> SourceState {
        SourceState {
            counters,
            phase: Mutex::new(Phase {
                state: "starting".into(),
                ..Phase::default()
            }),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Phase)) {
        if let Ok(mut p) = self.phase.lock() {
            f(&mut p)
        }
    }

    pub fn running(&self) {
        self.update(|p| {
            p.state = "running".into();
            p.message = None;
        })
    }

    pub fn failed(&self, message: String) {
        self.update(|p| {
            p.state = "failed".into();
            p.message = Some(message);
        })
    }

    /// A program that exited, to be started again.
    pub fn exited(&self, message: String) {
        self.update(|p| {
            p.state = "restarting".into();
            p.message = Some(message);
        })
    }

    pub fn ticked(&self, time: &str) {
        self.update(|p| p.last_tick = Some(time.to_owned()))
    }

    pub fn restarted(&self) {
        self.update(|p| p.restarts += 1)
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// One row of `/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub uid: String,
    pub generation: i64,
    pub sink: String,
    #[serde(flatten)]
    pub phase: Phase,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub dropped: u64,
}

struct Running {
    contract: SourceContract,
    stop: CancellationToken,
    config: Option<SubscriptionConfig>,
    state: Arc<SourceState>,
}

/// Whether two entries differ only in what the delivery loop takes live.
fn same_producer(a: &SourceContract, b: &SourceContract) -> bool {
    a.settings == b.settings
        && a.extensions == b.extensions
        && a.namespace == b.namespace
        && a.name == b.name
}

/// The engine's view of a source: a subscription to its queue.
fn subscription(c: &SourceContract) -> SubscriptionContract {
    SubscriptionContract {
        uid: c.uid.clone(),
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        generation: c.generation,
        subscriber: Some(c.sink.clone()),
        reply: None,
        dead_letter: c.dead_letter.clone().map(Box::new),
        delivery: c.delivery.clone(),
        trigger: None,
        auth: c.auth.clone(),
    }
}

/// The engine's channel name of a source (its metrics' `channel` label).
fn channel_name(c: &SourceContract) -> String {
    format!("{}/{}", c.kind().to_lowercase(), c.name)
}

fn channel(c: &SourceContract) -> ChannelContract {
    let name = channel_name(c);
    ChannelContract {
        uid: c.uid.clone(),
        namespace: c.namespace.clone(),
        ingress: Ingress::for_channel(&c.namespace, &c.name),
        name,
        kind: c.kind().to_owned(),
        backend: BackendKind::InMemory,
        class: "source-adapter".into(),
        parameters: BTreeMap::new(),
        subscriptions: Vec::new(),
        broker: None,
    }
}

/// Whether every replica runs the source (see the module's docs).
fn runs_everywhere(s: &SourceContract) -> bool {
    s.settings.is_webhook() || matches!(s.settings, SourceSettings::KafkaSource(_))
}

/// What the runner needs besides the engine.
#[derive(Debug, Clone)]
pub struct Services {
    /// Where `secretKeyRef`s are read outside Kubernetes.
    pub secrets_dir: PathBuf,
    /// The webhook listener's routes.
    pub routes: crate::webhook::Routes,
    /// Static membership of KafkaSource consumers (`--group-instance-id`).
    pub group_instance_id: Option<String>,
}

/// The Kubernetes API ApiServerSources watch, connected on first use.
enum Kube {
    NotYet(Option<PathBuf>),
    Ready(kube::Client, String),
    Failed(String),
}

/// Runs the sources of the contracts it is given.
pub struct Runner {
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
    queue_capacity: usize,
    replicas: u32,
    index: u32,
    kube: Kube,
    services: Services,
    running: BTreeMap<String, Running>,
}

impl Runner {
    pub fn new(
        deliverer: Deliverer,
        metrics: Arc<Metrics>,
        queue_capacity: usize,
        (replicas, index): (u32, u32),
        kubeconfig: Option<PathBuf>,
        services: Services,
    ) -> Runner {
        Runner {
            deliverer,
            metrics,
            queue_capacity,
            replicas,
            index,
            kube: Kube::NotYet(kubeconfig),
            services,
            running: BTreeMap::new(),
        }
    }

    /// Where secrets are read: the Kubernetes API when the adapter runs in
    /// a cluster (or was given a kubeconfig), the secrets directory
    /// otherwise.
    async fn secrets(&mut self) -> crate::secrets::SecretStore {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let configured = matches!(&self.kube, Kube::NotYet(Some(_)) | Kube::Ready(..));
        if in_cluster || configured {
            if let Ok((client, _)) = self.kube().await {
                return crate::secrets::SecretStore::Kube(client);
            }
        }
        crate::secrets::SecretStore::Dir(self.services.secrets_dir.clone())
    }

    async fn kube(&mut self) -> Result<(kube::Client, String), String> {
        if let Kube::NotYet(path) = &self.kube {
            self.kube = match connect(path.clone()).await {
                Ok((client, url)) => {
                    tracing::info!(api_server = %url, "Kubernetes API configured for ApiServerSources");
                    Kube::Ready(client, url)
                }
                Err(e) => Kube::Failed(e),
            };
        }
        match &self.kube {
            Kube::Ready(client, url) => Ok((client.clone(), url.clone())),
            Kube::Failed(e) => Err(e.clone()),
            Kube::NotYet(_) => Err("not connected".into()),
        }
    }

    /// Apply `contract`: start, update and stop sources by difference.
    pub async fn apply(&mut self, contract: &SourcesContract) {
        let wanted: BTreeMap<&str, &SourceContract> = contract
            .sources
            .iter()
            .filter(|s| runs_everywhere(s) || owns(&s.uid, self.replicas, self.index))
            .map(|s| (s.uid.as_str(), s))
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|uid| !wanted.contains_key(uid.as_str()))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(r) = self.running.remove(&uid) {
                self.stop(r, "removed");
            }
        }
        for (uid, source) in wanted {
            match self.running.get_mut(uid) {
                Some(r) if &r.contract == source => {}
                Some(r) if same_producer(&r.contract, source) => {
                    if let Some(config) = &r.config {
                        config.set(Arc::new(subscription(source)));
                    }
                    tracing::info!(source = %source.key(), kind = source.kind(), sink = %source.sink, "source updated in place");
                    r.contract = source.clone();
                }
                Some(_) => {
                    if let Some(r) = self.running.remove(uid) {
                        self.stop(r, "changed");
                    }
                    self.start(source).await;
                }
                None => self.start(source).await,
            }
        }
    }

    fn stop(&self, r: Running, why: &str) {
        r.stop.cancel();
        let c = &r.contract;
        if c.settings.is_webhook() {
            self.services
                .routes
                .remove(&crate::webhook::path(&c.namespace, &c.name));
        }
        self.metrics.forget(&c.namespace, c.kind(), &c.name);
        tracing::info!(source = %c.key(), kind = c.kind(), "source stopped ({why})");
    }

    async fn start(&mut self, source: &SourceContract) {
        let counters = self
            .metrics
            .source(&source.namespace, source.kind(), &source.name);
        let state = Arc::new(SourceState::new(counters.clone()));
        let stop = CancellationToken::new();
        let mut config = None;
        match &source.settings {
            SourceSettings::ContainerSource(program) => {
                tokio::spawn(crate::container::run(
                    source.clone(),
                    program.clone(),
                    state.clone(),
                    stop.clone(),
                ));
            }
            SourceSettings::KafkaSource(kafka) => {
                let config_rx = SubscriptionConfig::new(Arc::new(subscription(source)));
                config = Some(config_rx.clone());
                let secrets = self.secrets().await;
                let deliverer = self.deliverer.clone();
                let metrics = deliverer.subscription_metrics(&channel(source), &config_rx.borrow());
                let (source, kafka, state, stop) =
                    (source.clone(), kafka.clone(), state.clone(), stop.clone());
                let instance = self.services.group_instance_id.clone();
                let extensions = source.extensions.clone();
                tokio::spawn(async move {
                    let stream = crate::kafka::subscribe(
                        &source,
                        &kafka,
                        &secrets,
                        instance.as_deref(),
                        &state,
                        &stop,
                    )
                    .await;
                    if let Some(stream) = stream {
                        let counted = crate::queue::Counted::new(stream, counters, extensions);
                        deliverer
                            .run_subscription(config_rx, metrics, Box::new(counted), stop)
                            .await
                    }
                });
            }
            settings => {
                let (tx, stream) = crate::queue::queue(self.queue_capacity, counters);
                let config_rx = SubscriptionConfig::new(Arc::new(subscription(source)));
                config = Some(config_rx.clone());
                let deliverer = self.deliverer.clone();
                let metrics = deliverer.subscription_metrics(&channel(source), &config_rx.borrow());
                let loop_stop = stop.clone();
                tokio::spawn(async move {
                    deliverer
                        .run_subscription(config_rx, metrics, Box::new(stream), loop_stop)
                        .await
                });
                match settings {
                    SourceSettings::PingSource(ping) => {
                        tokio::spawn(crate::ping::run(
                            source.clone(),
                            ping.clone(),
                            tx,
                            state.clone(),
                            stop.clone(),
                        ));
                    }
                    SourceSettings::ApiServerSource(api) => match self.kube().await {
                        Err(e) => state.failed(format!("no Kubernetes API: {e}")),
                        Ok((client, url)) => {
                            let (api, state, stop) = (api.clone(), state.clone(), stop.clone());
                            let extensions = source.extensions.clone();
                            let key = source.key();
                            tokio::spawn(async move {
                                state.running();
                                let run =
                                    crate::apiserver::run(client, url, api, extensions, tx, stop);
                                if let Err(e) = run.await {
                                    tracing::warn!(source = %key, error = %e, "ApiServerSource cannot watch");
                                    state.failed(e);
                                }
                            });
                        }
                    },
                    SourceSettings::GitHubSource(_) | SourceSettings::GitLabSource(_) => {
                        if let Some(receiver) = crate::webhook::Receiver::of(settings) {
                            let secrets = self.secrets().await;
                            tokio::spawn(crate::webhook::route(
                                source.clone(),
                                receiver,
                                secrets,
                                self.services.routes.clone(),
                                tx,
                                state.clone(),
                                stop.clone(),
                            ));
                        }
                    }
                    SourceSettings::ContainerSource(_) | SourceSettings::KafkaSource(_) => {}
                }
            }
        }
        tracing::info!(source = %source.key(), kind = source.kind(), sink = %source.sink, "source started");
        self.running.insert(
            source.uid.clone(),
            Running {
                contract: source.clone(),
                stop,
                config,
                state,
            },
        );
    }

    /// Mirror the engine's retry counts into the sources' own.
    pub fn sync_metrics(&self) {
        for r in self.running.values() {
            let c = &r.contract;
            if r.config.is_some() {
                self.metrics.sync_retries(
                    &r.state.counters,
                    &c.namespace,
                    &channel_name(c),
                    &c.name,
                );
            }
        }
    }

    /// Every running source's status.
    pub fn status(&self) -> Vec<SourceStatus> {
        self.sync_metrics();
        self.running
            .values()
            .map(|r| {
                let c = &r.contract;
                SourceStatus {
                    namespace: c.namespace.clone(),
                    name: c.name.clone(),
                    kind: c.kind().to_owned(),
                    uid: c.uid.clone(),
                    generation: c.generation,
                    sink: c.sink.to_string(),
                    phase: r.state.phase(),
                    sent: r.state.counters.sent.get(),
                    failed: r.state.counters.failed.get(),
                    retried: r.state.counters.retried.get(),
                    dropped: r.state.counters.dropped.get(),
                }
            })
            .collect()
    }

    /// Stop everything.
    pub fn stop_all(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            self.stop(r, "shutdown");
        }
    }
}

/// A client for the kubeconfig at `path` (else the usual inference), and
/// the API server's URL (the `source` of ApiServerSource events).
async fn connect(path: Option<PathBuf>) -> Result<(kube::Client, String), String> {
    let config = match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and not in a cluster: {e}")
        })?,
    };
    let url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_owned();
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    Ok((client, url))
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("sources", &self.running.len())
            .field("replicas", &self.replicas)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}
