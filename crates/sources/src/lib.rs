//! The source adapter: runs Knative event sources — PingSource (and the
//! seeds' CronJobSource), ApiServerSource, ContainerSource — and sends their
//! events to their sinks through the dispatcher's delivery engine.
//!
//! Like a dispatcher, it either compiles Knative YAML itself
//! (`--manifests`) or follows a contract the provisioner writes
//! (`--contract`), reloading either when it changes and applying the
//! difference ([`runner`]). Several adapters may share the sources
//! (`--replicas`, `--replica-index`): each source runs in exactly one.
//!
//! One module per source kind: [`ping`], [`apiserver`], [`container`],
//! [`webhook`] (GitHubSource and GitLabSource deliveries, on their own
//! listener) and [`kafka`]; [`hooks`] registers the webhooks with GitHub
//! and GitLab (the provisioner's job, and the adapter's own with
//! `--manifests --webhook-base-url`).

pub mod apiserver;
pub mod config;
pub mod container;
pub mod hooks;
pub mod kafka;
pub mod metrics;
pub mod ping;
pub mod queue;
pub mod runner;
pub mod secrets;
pub mod webhook;

use anyhow::Context as _;
use bytes::Bytes;
use channel_core::compile::compile;
use channel_core::manifests::load_paths;
use channel_core::sources::SourcesContract;
use config::{AdapterArgs, Origin};
use dispatcher::admin::respond;
use dispatcher::changes::{fingerprint, Fingerprint};
use dispatcher::delivery::{Deliverer, DeliveryOptions};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use runner::Runner;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What was loaded, and the problems found in it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub contract: SourcesContract,
    /// `Kind namespace/name: reason: message` of each source not run.
    pub problems: Vec<String>,
}

/// Load the sources of `origin`; with manifests, sinks naming a channel or
/// broker of a backend in `dispatchers` are routed to that dispatcher.
pub fn load(
    origin: &Origin,
    dispatchers: &std::collections::BTreeMap<channel_core::BackendKind, url::Url>,
) -> anyhow::Result<Loaded> {
    match origin {
        Origin::Manifests(paths) => {
            let manifests = load_paths(paths)?;
            let mut compiled = compile(&manifests);
            channel_core::sources::route_sinks(
                &mut compiled.sources,
                &compiled.contracts,
                dispatchers,
            );
            let kinds = [
                "PingSource",
                "ApiServerSource",
                "ContainerSource",
                "SinkBinding",
                "GitHubSource",
                "GitLabSource",
                "KafkaSource",
            ];
            let problems = compiled
                .problems
                .iter()
                .filter(|p| kinds.contains(&p.kind.as_str()))
                .map(|p| {
                    format!(
                        "{} {}/{}: {}: {}",
                        p.kind, p.namespace, p.name, p.reason, p.message
                    )
                })
                .collect();
            Ok(Loaded {
                contract: SourcesContract {
                    generation: 0,
                    sources: compiled.sources,
                },
                problems,
            })
        }
        Origin::Contract(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the sources contract {}", path.display()))?;
            let contract = SourcesContract::from_json(&bytes).with_context(|| {
                format!("{} is not a sources contract document", path.display())
            })?;
            Ok(Loaded {
                contract,
                problems: Vec::new(),
            })
        }
    }
}

fn watched(origin: &Origin) -> Vec<std::path::PathBuf> {
    match origin {
        Origin::Manifests(paths) => paths.clone(),
        Origin::Contract(path) => vec![path.clone()],
    }
}

/// What `/status` reports besides the sources.
#[derive(Debug, Default)]
struct Report {
    generation: u64,
    problems: Vec<String>,
    last_error: Option<String>,
    ready: bool,
    /// Webhook registrations (with --manifests --webhook-base-url).
    hooks: Vec<hooks::HookStatus>,
}

async fn admin(
    runner: Arc<tokio::sync::Mutex<Runner>>,
    report: Arc<Mutex<Report>>,
    metrics: Arc<metrics::Metrics>,
    replica: (u32, u32),
    token: Option<Arc<str>>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(refused) = dispatcher::admin::guard(&req, token.as_deref()) {
        return refused;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n",
        );
    }
    let ready = report.lock().map(|r| r.ready).unwrap_or(false);
    match req.uri().path() {
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if ready => respond(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no sources applied yet\n",
        ),
        "/metrics" => {
            runner.lock().await.sync_metrics();
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        }
        "/status" => {
            let sources = runner.lock().await.status();
            let body = {
                let r = report.lock().unwrap_or_else(|e| e.into_inner());
                json!({
                    "generation": r.generation,
                    "replica": {"index": replica.1, "of": replica.0},
                    "sources": sources,
                    "problems": r.problems,
                    "lastError": r.last_error,
                    "webhooks": r.hooks,
                })
            };
            respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&body).unwrap_or_default(),
            )
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /healthz /readyz /metrics /status\n",
        ),
    }
}

/// Run until SIGTERM or SIGINT.
pub async fn run(args: AdapterArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        dispatcher::wait_for_signal().await;
        signals.cancel();
    });
    run_until(args, shutdown).await
}

/// Run until `shutdown` is cancelled.
pub async fn run_until(args: AdapterArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let replica = (args.replicas, args.index()?);
    let origin = args.origin();
    let dispatchers = args.dispatcher_url.iter().cloned().collect();
    let initial = load(&origin, &dispatchers).context("cannot load the initial sources")?;
    let listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    let metrics = Arc::new(metrics::Metrics::new());
    let signer = Arc::new(dispatcher::auth::identity::Signer::from_args(
        &args.identity,
    )?);
    let deliverer = Deliverer::new(
        metrics.delivery.clone(),
        DeliveryOptions {
            drain_timeout: args.drain_timeout,
            max_reply_bytes: args.max_reply_bytes,
            local_routes: None,
            ca_certs: dispatcher::tls::read_ca_certs(args.delivery_ca_certs.as_deref())?,
            signer: Some(signer.clone()),
        },
    );
    let routes = webhook::Routes::default();
    let webhook_listener = TcpListener::bind(args.webhook_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (--webhook-listen)",
                args.webhook_listen
            )
        })?;
    let runner = Arc::new(tokio::sync::Mutex::new(Runner::new(
        deliverer,
        metrics.clone(),
        args.queue_capacity as usize,
        replica,
        args.kubeconfig.clone(),
        runner::Services {
            secrets_dir: args.secrets_dir.clone(),
            routes: routes.clone(),
            group_instance_id: args.group_instance_id.clone(),
        },
    )));
    let limits = webhook::Limits {
        max_body: args.max_webhook_bytes,
        response_timeout: args.webhook_response_timeout,
    };
    let webhooks = tokio::spawn(dispatcher::server::serve(
        "webhooks",
        webhook_listener,
        move |req| webhook::serve(routes.clone(), limits, req),
        shutdown.clone(),
        Duration::from_secs(2),
    ));
    // With --manifests and a public URL, this adapter registers the
    // webhooks itself (one replica does).
    let registrar = match (&origin, &args.webhook_base_url) {
        (Origin::Manifests(_), Some(base)) if replica.1 == 0 => Some(Arc::new(
            tokio::sync::Mutex::new(hooks::Registrar::new(base.clone(), Default::default())),
        )),
        _ => None,
    };
    let secrets_dir = args.secrets_dir.clone();
    let report = Arc::new(Mutex::new(Report::default()));
    let server = {
        let (runner, report, metrics) = (runner.clone(), report.clone(), metrics.clone());
        let token: Option<Arc<str>> = args.admin_token.as_deref().map(Arc::from);
        tokio::spawn(dispatcher::server::serve(
            "admin",
            listener,
            move |req| {
                let published = dispatcher::admin::identity_keys(&req, &signer);
                let answer = admin(
                    runner.clone(),
                    report.clone(),
                    metrics.clone(),
                    replica,
                    token.clone(),
                    req,
                );
                async move {
                    match published {
                        Some(keys) => keys,
                        None => answer.await,
                    }
                }
            },
            shutdown.clone(),
            Duration::from_secs(2),
        ))
    };
    tracing::info!(admin = %args.admin_listen, webhooks = %args.webhook_listen, replica = replica.1, replicas = replica.0, "source adapter started");

    let apply = |loaded: Loaded| {
        let (runner, report) = (runner.clone(), report.clone());
        let (registrar, secrets_dir) = (registrar.clone(), secrets_dir.clone());
        async move {
            for p in &loaded.problems {
                tracing::warn!("source not run: {p}");
            }
            runner.lock().await.apply(&loaded.contract).await;
            if let Some(registrar) = &registrar {
                let store = secrets::SecretStore::Dir(secrets_dir.clone());
                let statuses = registrar
                    .lock()
                    .await
                    .reconcile(&loaded.contract.sources, &store)
                    .await;
                if let Ok(mut r) = report.lock() {
                    r.hooks = statuses;
                }
            }
            if let Ok(mut r) = report.lock() {
                r.generation = loaded.contract.generation;
                r.problems = loaded.problems;
                r.last_error = None;
                r.ready = true;
            }
        }
    };
    let paths = watched(&origin);
    let mut seen: Fingerprint = fingerprint(&paths);
    apply(initial).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(args.watch_interval) => {}
        }
        let now = fingerprint(&paths);
        if now == seen {
            continue;
        }
        seen = now;
        match load(&origin, &dispatchers) {
            Ok(loaded) => apply(loaded).await,
            Err(e) => {
                // The sources running stay as they are.
                tracing::warn!(
                    error = format!("{e:#}"),
                    "the new sources cannot be loaded; keeping the previous ones"
                );
                if let Ok(mut r) = report.lock() {
                    r.last_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    runner.lock().await.stop_all();
    // Let delivery loops drain within the drain timeout.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = server.await;
    let _ = webhooks.await;
    tracing::info!("source adapter stopped");
    Ok(())
}
