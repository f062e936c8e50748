//! Standalone mode: the control plane without Kubernetes.
//!
//! Every `--watch-interval`, and at once when a file notification says a
//! manifest changed, the provisioner looks at the manifest files
//! (reloading them when they changed), plans the channels, provisions what
//! is due, writes one contract per backend to `--contracts-dir` when its
//! content changed, deletes the backing resources of removed channels,
//! polls each dispatcher's `/status`, and recomputes every resource's
//! Knative status, served on `--listen` as `GET /status`. The event
//! registry (declared EventTypes, and those auto-created from what the
//! dispatchers' ingress saw when `eventtype-auto-create` is on, persisted in
//! `eventtypes.json` beside the contracts) is served as `GET /eventtypes`.
//!
//! Contracts are written atomically (a temporary file in the same directory,
//! fsync, rename), so a dispatcher polling the file never reads half a
//! document. The contracts on disk are also the provisioner's memory: at
//! start it reads them back, so a restart keeps generations increasing, keeps
//! serving channels whose broker is momentarily down, remembers each
//! channel's backend (which cannot change) and deletes the resources of
//! channels removed while it was not running.
//!
//! A channel enters its backend's contract once its backing resource was
//! provisioned; once in, it stays while it exists, whatever the broker does
//! (a broker outage makes it not Ready, never unrouted).

use crate::cycle::{as_base, http_client, poll_dispatchers, Cycle, HttpClient, ProvisioningArgs};
use crate::reconcile::{channel_key, plan, Addressing, ChannelKey};
use crate::status::{self, DispatcherObservation, ResourceStatus};
use anyhow::Context as _;
use bytes::Bytes;
use channel_core::manifests::{load_paths, Manifests};
use channel_core::{BackendKind, ChannelContract, Contract};
use dispatcher::admin::respond;
use dispatcher::changes::{fingerprint, Fingerprint};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

/// How many times its own duration separates a round from the next one
/// that no change asked for.
const IDLE_ROUND_SPACING: u32 = 5;

/// `provisioner standalone`: watch manifests, provision, write contracts,
/// report status.
#[derive(Debug, Clone, clap::Args)]
pub struct StandaloneArgs {
    /// Knative YAML manifests: files or directories (walked recursively,
    /// hidden entries skipped), watched for changes. Repeatable.
    #[arg(
        long = "manifests",
        env = "KN_PROVISIONER_MANIFESTS",
        value_delimiter = ',',
        required = true
    )]
    pub manifests: Vec<PathBuf>,

    /// Directory receiving one contract per backend (`inmemory.json`,
    /// `kafka.json`, `nats.json`); each dispatcher follows its file with
    /// `--contract`. Created if missing.
    #[arg(long, env = "KN_PROVISIONER_CONTRACTS_DIR")]
    pub contracts_dir: PathBuf,

    /// Address of the status server (`GET /status`, `/healthz`, `/readyz`).
    #[arg(long, env = "KN_PROVISIONER_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,

    /// A backend's dispatcher admin URL, polled for the contract generation
    /// it applied: `BACKEND=URL`, e.g. `kafka=http://kafka-dispatcher:9091`.
    /// Repeatable; overrides the class's `spec.dispatcher.adminUrl`.
    #[arg(long = "dispatcher-admin", env = "KN_PROVISIONER_DISPATCHER_ADMIN", value_delimiter = ',', value_parser = parse_backend_url)]
    pub dispatcher_admin: Vec<(BackendKind, Url)>,

    /// A backend's dispatcher ingress URL, which makes channel addresses
    /// `URL/<namespace>/<name>`: `BACKEND=URL`. Repeatable; overrides the
    /// class's `spec.dispatcher.url`. Without one, addresses are the
    /// in-cluster `http://<name>-kn-channel.<namespace>.svc.cluster.local`.
    #[arg(long = "dispatcher-url", env = "KN_PROVISIONER_DISPATCHER_URL", value_delimiter = ',', value_parser = parse_backend_url)]
    pub dispatcher_url: Vec<(BackendKind, Url)>,

    /// A source adapter's admin URL (`source-adapter --contract
    /// <contracts-dir>/sources.json`), polled for the sources it runs.
    /// Repeatable (replicas share the sources).
    #[arg(
        long = "source-adapter-admin",
        env = "KN_PROVISIONER_SOURCE_ADAPTER_ADMIN",
        value_delimiter = ','
    )]
    pub source_adapter_admin: Vec<Url>,

    /// The public URL of the source adapter's webhook listener
    /// (`--webhook-listen`): GitHub and GitLab webhooks are registered as
    /// `<URL>/<namespace>/<name>`. Without it no webhook is registered.
    #[arg(long, env = "KN_PROVISIONER_WEBHOOK_BASE_URL")]
    pub webhook_base_url: Option<Url>,

    /// Where `secretKeyRef`s are read (access and secret tokens of
    /// GitHubSources and GitLabSources): `<dir>/<namespace>/<secret>/<key>`,
    /// the layout of mounted Secrets. The adapter's `--secrets-dir` should
    /// be the same directory.
    #[arg(long, env = "KN_PROVISIONER_SECRETS_DIR", default_value = "secrets")]
    pub secrets_dir: PathBuf,

    /// How often the manifests are checked for changes and the dispatchers
    /// polled.
    #[arg(long, env = "KN_PROVISIONER_WATCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,

    #[command(flatten)]
    pub provisioning: ProvisioningArgs,
}

pub use channel_core::contract::parse_backend_url;

/// What a dispatcher reported, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatcherSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// The contract generation written for the backend.
    pub contract_generation: u64,
    /// The generation the dispatcher reports having applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A backing resource whose deletion has not succeeded yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDeletion {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The document `GET /status` serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Whether at least one reconcile completed.
    pub reconciled: bool,
    pub dispatchers: BTreeMap<BackendKind, DispatcherSummary>,
    pub resources: Vec<ResourceStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_deletions: Vec<PendingDeletion>,
    /// Manifest warnings (documents skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the latest manifests could not be loaded (the previous ones stay
    /// in effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The event registry, served as `GET /eventtypes`.
    #[serde(default, skip)]
    pub event_types: Vec<crate::registry::EventTypeObject>,
}

/// The file the source adapter follows, in the contracts directory.
pub const SOURCES_CONTRACT: &str = "sources.json";

/// The path of a backend's contract in `dir`.
pub fn contract_path(dir: &Path, backend: BackendKind) -> PathBuf {
    dir.join(format!("{}.json", backend.as_str()))
}

/// Write `contract` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, renamed over the target.
pub fn write_atomically(path: &Path, contract: &Contract) -> std::io::Result<()> {
    write_json_atomically(path, contract.to_json_pretty().as_bytes())
}

/// Write the JSON document `json` to `path` atomically, as
/// [`write_atomically`] does.
pub fn write_json_atomically(path: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read the contracts an earlier run wrote; unreadable ones are reported
/// and treated as absent.
fn read_contracts(dir: &Path) -> BTreeMap<BackendKind, Contract> {
    let mut out = BTreeMap::new();
    for backend in BackendKind::ALL {
        let path = contract_path(dir, backend);
        match std::fs::read(&path) {
            Ok(bytes) => match Contract::from_json(&bytes) {
                Ok(c) => {
                    out.insert(backend, c);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable contract")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read contract")
            }
        }
    }
    out
}

/// The reconcile loop's state.
struct Reconciler {
    args: StandaloneArgs,
    cycle: Cycle,
    client: HttpClient,
    fingerprint: Option<Fingerprint>,
    manifests: Option<Manifests>,
    last_error: Option<String>,
    /// The contracts on disk, by backend.
    written: BTreeMap<BackendKind, Contract>,
    /// The sources contract on disk.
    sources_written: Option<channel_core::sources::SourcesContract>,
    /// The SinkBindings' environments on disk.
    bindings_written: Option<Vec<crate::bindings::BindingEnvironment>>,
    report: Arc<Mutex<StatusReport>>,
    /// Auto-created EventTypes.
    auto_event_types: crate::registry::AutoRegistry,
    /// GitHub and GitLab webhook registrations.
    webhooks: crate::webhooks::Webhooks,
}

impl Reconciler {
    /// Dispatcher URLs: flags first, then the classes' `spec.dispatcher`.
    fn dispatcher_urls(&self, admin: bool) -> BTreeMap<BackendKind, Url> {
        let mut out = BTreeMap::new();
        if let Some(m) = &self.manifests {
            for class in &m.classes {
                let Some(d) = &class.spec.dispatcher else {
                    continue;
                };
                let url = if admin { &d.admin_url } else { &d.url };
                if let Some(url) = url.as_deref().and_then(|u| Url::parse(u).ok()) {
                    out.entry(class.spec.backend).or_insert(url);
                }
            }
        }
        let flags = if admin {
            &self.args.dispatcher_admin
        } else {
            &self.args.dispatcher_url
        };
        for (backend, url) in flags {
            out.insert(*backend, url.clone());
        }
        out.into_iter().map(|(b, u)| (b, as_base(u))).collect()
    }

    /// The registry: declared EventTypes, and auto-created ones taken from
    /// the dispatchers when `eventtype-auto-create` is on.
    async fn registry(
        &mut self,
        plan: &crate::reconcile::Plan,
        manifests: &Manifests,
    ) -> Vec<crate::registry::EventTypeObject> {
        let settings = plan.features.eventtype_auto_create;
        let mut observed = Vec::new();
        if settings.is_some() {
            for admin in self.dispatcher_urls(true).values() {
                match crate::cycle::get_json::<Vec<dispatcher::eventtypes::Observed>>(
                    &self.client,
                    admin,
                    "eventtypes",
                    "the EventTypes a dispatcher observed",
                    std::time::Duration::from_secs(2),
                )
                .await
                {
                    Ok(list) => observed.extend(list),
                    Err(e) => {
                        tracing::debug!(dispatcher = %admin, error = %e, "no EventTypes from this dispatcher")
                    }
                }
            }
        }
        let exists = |o: &dispatcher::eventtypes::Observed| {
            crate::registry::reference_exists(
                plan,
                &o.namespace,
                &channel_core::resources::KReference {
                    api_version: None,
                    kind: o.reference.kind.clone(),
                    name: o.reference.name.clone(),
                    namespace: None,
                    group: None,
                },
            )
        };
        self.auto_event_types.update(
            observed,
            settings.map(|s| s.max_per_reference as usize),
            exists,
        );
        crate::registry::objects(plan, &manifests.event_types, &self.auto_event_types)
    }

    /// Write `<contracts-dir>/sources.json` when its content changed.
    fn write_sources(&mut self, plan: &crate::reconcile::Plan) {
        let path = self.args.contracts_dir.join(SOURCES_CONTRACT);
        let mut next = channel_core::sources::SourcesContract {
            generation: self.sources_written.as_ref().map_or(0, |c| c.generation),
            sources: plan.sources.clone(),
        };
        let same = self
            .sources_written
            .as_ref()
            .is_some_and(|c| c.same_content(&next));
        if same && path.exists() {
            return;
        }
        if !same {
            next.generation += 1;
        }
        match write_json_atomically(&path, next.to_json_pretty().as_bytes()) {
            Ok(()) => {
                tracing::info!(generation = next.generation, sources = next.sources.len(), path = %path.display(), "sources contract written");
                self.sources_written = Some(next);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the sources contract");
                self.last_error = Some(format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// Write `<contracts-dir>/bindings.json` when it changed.
    fn write_bindings(&mut self, manifests: &Manifests, plan: &crate::reconcile::Plan) {
        let envs = crate::bindings::environments(manifests, plan);
        let path = self.args.contracts_dir.join(crate::bindings::BINDINGS_FILE);
        if self.bindings_written.as_ref() == Some(&envs) && path.exists() {
            return;
        }
        let json = serde_json::to_vec_pretty(&envs).unwrap_or_default();
        match write_json_atomically(&path, &json) {
            Ok(()) => self.bindings_written = Some(envs),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the SinkBindings' environments");
                self.last_error = Some(format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    /// What the source adapters run.
    async fn poll_source_adapters(&self) -> crate::status::sources::AdapterObservation {
        use crate::status::sources::{AdapterObservation, AdapterReport};
        if self.args.source_adapter_admin.is_empty() {
            return AdapterObservation::Unconfigured;
        }
        let mut all = BTreeMap::new();
        for admin in &self.args.source_adapter_admin {
            match crate::cycle::get_json::<AdapterReport>(
                &self.client,
                &as_base(admin.clone()),
                "status",
                "a source adapter's status",
                Duration::from_secs(2),
            )
            .await
            {
                Ok(report) => {
                    all.extend(report.sources.into_iter().map(|s| (s.uid.clone(), s)));
                }
                Err(e) => return AdapterObservation::Unreachable(e),
            }
        }
        AdapterObservation::Report(all)
    }

    fn reload_if_changed(&mut self) {
        let fp = fingerprint(&self.args.manifests);
        if self.fingerprint.as_ref() == Some(&fp) {
            return;
        }
        self.fingerprint = Some(fp);
        match load_paths(&self.args.manifests) {
            Ok(m) => {
                for w in &m.warnings {
                    tracing::warn!(warning = %w, "manifest warning");
                }
                tracing::info!(
                    channels = m.channels.len(),
                    subscriptions = m.subscriptions.len(),
                    classes = m.classes.len(),
                    "manifests loaded"
                );
                self.manifests = Some(m);
                self.last_error = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "manifests not loaded; the previous ones stay in effect");
                self.last_error = Some(e.to_string());
            }
        }
    }

    async fn reconcile(&mut self) {
        self.reload_if_changed();
        let Some(manifests) = self.manifests.clone() else {
            let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
            report.last_error = self.last_error.clone();
            return;
        };
        let previous: BTreeMap<ChannelKey, ChannelContract> = self
            .written
            .values()
            .flat_map(|c| c.channels.iter())
            .map(|c| (channel_key(c), c.clone()))
            .collect();
        let addressing = Addressing {
            dispatcher_urls: self
                .dispatcher_urls(false)
                .into_iter()
                .map(|(b, mut u)| {
                    let path = u.path().trim_end_matches('/').to_owned();
                    u.set_path(&path);
                    (b, u)
                })
                .collect(),
        };
        let plan = plan(&manifests, &previous, &addressing);

        // 1. Provision what is due.
        self.cycle.provision(&plan, &previous).await;

        // 2. Contracts: provisioned channels, and those already served.
        let per_backend = self.cycle.contracts(&plan, &previous);
        let mut in_contract = BTreeMap::new();
        for (backend, channels) in per_backend {
            for c in &channels {
                in_contract.insert(channel_key(c), true);
            }
            let old = self.written.get(&backend);
            let mut next = Contract {
                generation: old.map(|c| c.generation).unwrap_or(0),
                backend: Some(backend),
                channels,
                features: plan.features.clone(),
            };
            let path = contract_path(&self.args.contracts_dir, backend);
            let unchanged = old.is_some_and(|o| o.same_content(&next)) && path.exists();
            if unchanged {
                continue;
            }
            if !old.is_some_and(|o| o.same_content(&next)) {
                next.generation += 1;
            }
            match write_atomically(&path, &next) {
                Ok(()) => {
                    tracing::info!(backend = %backend, generation = next.generation, channels = next.channels.len(), path = %path.display(), "contract written");
                    self.cycle.contract_written(backend, next.generation);
                    self.written.insert(backend, next);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot write contract");
                    self.last_error = Some(format!("cannot write {}: {e}", path.display()));
                }
            }
        }

        // 2b. The source adapter's contract; the SinkBindings' environments
        //     for `provisioner exec`.
        self.write_sources(&plan);
        self.write_bindings(&manifests, &plan);

        // 3. What the dispatchers applied.
        let polled = poll_dispatchers(&self.client, &self.dispatcher_urls(true)).await;

        // 4. Delete the resources of removed channels, once their
        //    dispatcher stopped serving them.
        let observed: BTreeMap<BackendKind, DispatcherObservation> =
            polled.iter().map(|(b, _, o)| (*b, o.clone())).collect();
        self.cycle.delete_due(&observed).await;

        // 5. Status.
        let mut obs = self.cycle.observations(&plan, in_contract, &self.written);
        let mut dispatchers = BTreeMap::new();
        for (backend, admin, observation) in polled {
            let (applied, error) = match &observation {
                DispatcherObservation::Report(r) => (r.generation, r.last_error.clone()),
                DispatcherObservation::Unreachable(e) => (None, Some(e.clone())),
                DispatcherObservation::Unconfigured => (None, None),
            };
            dispatchers.insert(
                backend,
                DispatcherSummary {
                    admin_url: admin.map(|u| u.to_string()),
                    contract_generation: obs.generations.get(&backend).copied().unwrap_or(0),
                    applied_generation: applied,
                    error,
                },
            );
            obs.dispatchers.insert(backend, observation);
        }
        obs.sources = self.poll_source_adapters().await;
        obs.webhooks = self.webhooks.reconcile(&plan.sources).await;
        let mut resources = status::compute(&plan, &obs);
        let event_types = self.registry(&plan, &manifests).await;
        resources.extend(event_types.iter().map(|e| e.row()));
        let now_text = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        status::stamp_transitions(&report.resources, &mut resources, &now_text);
        log_transitions(&report.resources, &resources);
        *report = StatusReport {
            reconciled: true,
            dispatchers,
            resources,
            pending_deletions: self
                .cycle
                .tracker
                .pending_deletions()
                .into_iter()
                .map(|((namespace, name, kind), error)| PendingDeletion {
                    kind,
                    namespace,
                    name,
                    error,
                })
                .collect(),
            warnings: manifests.warnings.clone(),
            last_error: self.last_error.clone(),
            event_types,
        };
    }
}

/// Log every resource whose readiness changed.
fn log_transitions(old: &[ResourceStatus], new: &[ResourceStatus]) {
    let index: BTreeSet<(&str, &str, &str, &str)> = old
        .iter()
        .map(|r| {
            (
                r.kind.as_str(),
                r.namespace.as_str(),
                r.name.as_str(),
                r.ready.as_str(),
            )
        })
        .collect();
    for r in new {
        if !index.contains(&(
            r.kind.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
            r.ready.as_str(),
        )) {
            tracing::info!(
                kind = %r.kind,
                resource = %format!("{}/{}", r.namespace, r.name),
                ready = r.ready.as_str(),
                reason = r.reason.as_deref().unwrap_or(""),
                message = r.message.as_deref().unwrap_or(""),
                "readiness changed"
            );
        }
    }
}

/// Answer one request to the status server (only method and path matter).
async fn handle<B>(report: Arc<Mutex<StatusReport>>, req: Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n",
        );
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    match req.uri().path() {
        "/status" => {
            let body = {
                let report = report.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::to_vec_pretty(&*report).unwrap_or_default()
            };
            respond(StatusCode::OK, "application/json", body)
        }
        "/eventtypes" => {
            let body = {
                let report = report.lock().unwrap_or_else(|e| e.into_inner());
                serde_json::to_vec_pretty(&report.event_types).unwrap_or_default()
            };
            respond(StatusCode::OK, "application/json", body)
        }
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            let ready = report.lock().unwrap_or_else(|e| e.into_inner()).reconciled;
            if ready {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not reconciled yet\n",
                )
            }
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /status, /eventtypes, /healthz or /readyz\n",
        ),
    }
}

/// Run the standalone provisioner until `shutdown` is cancelled.
pub async fn run(args: StandaloneArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.contracts_dir).with_context(|| {
        format!(
            "cannot create the contracts directory {}",
            args.contracts_dir.display()
        )
    })?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, contracts = %args.contracts_dir.display(), "provisioner started (standalone)");
    let report = Arc::new(Mutex::new(StatusReport::default()));
    let server = {
        let report = report.clone();
        tokio::spawn(dispatcher::server::serve(
            "status",
            listener,
            move |req| handle(report.clone(), req),
            shutdown.clone(),
            Duration::from_secs(2),
        ))
    };
    let mut reconciler = Reconciler {
        cycle: args.provisioning.cycle(),
        client: http_client(),
        fingerprint: None,
        manifests: None,
        last_error: None,
        written: read_contracts(&args.contracts_dir),
        sources_written: std::fs::read(args.contracts_dir.join(SOURCES_CONTRACT))
            .ok()
            .and_then(|b| channel_core::sources::SourcesContract::from_json(&b).ok()),
        bindings_written: None,
        report,
        auto_event_types: crate::registry::AutoRegistry::load(
            &args.contracts_dir.join("eventtypes.json"),
        ),
        webhooks: crate::webhooks::Webhooks::load(
            args.webhook_base_url.clone(),
            &args.contracts_dir,
            args.secrets_dir.clone(),
        ),
        args,
    };
    let mut tick = tokio::time::interval(reconciler.args.watch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // An edited manifest starts a round at once rather than at the next tick.
    let changes = dispatcher::changes::ChangeNotifier::new(&reconciler.args.manifests);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = changes.changed() => {}
        }
        let started = tokio::time::Instant::now();
        reconciler.reconcile().await;
        dispatcher::memory::release_free_memory();
        // Rounds that find nothing new (dispatcher status, retries) keep to
        // a fifth of a core: at ten thousand channels a round takes about
        // half a second, so they come every few seconds instead of every
        // interval. An edit of the manifests still starts one at once.
        tick.reset_after(
            reconciler
                .args
                .watch_interval
                .max(started.elapsed() * IDLE_ROUND_SPACING),
        );
    }
    let _ = server.await;
    tracing::info!("provisioner stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls_parse_with_clear_errors() {
        let (b, u) = parse_backend_url("kafka=http://k:9091").unwrap();
        assert_eq!(b, BackendKind::Kafka);
        assert_eq!(u.as_str(), "http://k:9091/");
        assert!(parse_backend_url("http://k:9091")
            .unwrap_err()
            .contains("BACKEND=URL"));
        assert!(parse_backend_url("redis=http://k/")
            .unwrap_err()
            .contains("unknown backend"));
        assert!(parse_backend_url("nats=ftp://k/")
            .unwrap_err()
            .contains("http"));
    }

    #[test]
    fn contracts_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = contract_path(dir.path(), BackendKind::Nats);
        let mut c = Contract {
            generation: 1,
            backend: Some(BackendKind::Nats),
            channels: Vec::new(),
            ..Default::default()
        };
        write_atomically(&path, &c).unwrap();
        c.generation = 2;
        write_atomically(&path, &c).unwrap();
        let back = read_contracts(dir.path());
        assert_eq!(back[&BackendKind::Nats].generation, 2);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["nats.json".to_owned()],
            "no temporary left behind"
        );
    }

    async fn get(report: &Arc<Mutex<StatusReport>>, path: &str) -> (StatusCode, String) {
        use http_body_util::BodyExt as _;
        let req = Request::get(path).body(()).expect("request");
        let response = handle(report.clone(), req).await;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn eventtypes_are_served_as_knatives_objects() {
        let manifests = channel_core::manifests::load_str(
            "registry.yaml",
            r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: default}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: github-push, namespace: default}
spec:
  type: dev.knative.source.github.push
  source: https://github.com/knative/eventing
  reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: lost, namespace: default}
spec:
  type: lost.event
  reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: gone}
"#,
        )
        .expect("manifests");
        let p = plan(&manifests, &BTreeMap::new(), &Addressing::default());
        let event_types = crate::registry::objects(
            &p,
            &manifests.event_types,
            &crate::registry::AutoRegistry::default(),
        );
        let report = Arc::new(Mutex::new(StatusReport {
            event_types,
            ..StatusReport::default()
        }));

        let (status, body) = get(&report, "/eventtypes").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json[0],
            serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1beta2",
                "kind": "EventType",
                "metadata": {"name": "github-push", "namespace": "default"},
                "spec": {
                    "type": "dev.knative.source.github.push",
                    "source": "https://github.com/knative/eventing",
                    "reference": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}
                },
                "status": {"conditions": [
                    {"type": "ReferenceExists", "status": "True"},
                    {"type": "Ready", "status": "True"}
                ]}
            }),
            "{body}"
        );
        assert_eq!(json[1]["metadata"]["name"], "lost");
        assert_eq!(
            json[1]["status"]["conditions"][1]["reason"],
            "ReferenceNotFound"
        );
        assert_eq!(
            json[1]["status"]["conditions"][1]["message"],
            "spec.reference: Broker default/gone does not exist"
        );
        // The registry is not repeated in /status.
        let (_, status_body) = get(&report, "/status").await;
        assert!(!status_body.contains("eventTypes"), "{status_body}");

        let (status, body) = get(&report, "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("/eventtypes"), "{body}");
    }
}
