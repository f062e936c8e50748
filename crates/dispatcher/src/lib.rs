//! The backend-agnostic channel data plane.
//!
//! Every backend binary (`inmemory-dispatcher`, `kafka-dispatcher`,
//! `nats-dispatcher`) is a few lines: parse [`config::DispatcherArgs`] plus
//! its own flags, build its [`channel_core::Backend`], and call [`run`].
//!
//! The engine owns ingress ([`ingress`]), per-subscription delivery
//! ([`delivery`]), applying contracts by difference ([`dataplane`]), watching
//! the configuration source ([`source`]), the admin server ([`admin`]),
//! metrics ([`metrics`]) and graceful shutdown. It knows no backend and no
//! Kubernetes: it follows a contract.

pub mod admin;
pub mod auth;
pub mod changes;
pub mod config;
pub mod dataplane;
pub mod delivery;
pub mod eventtypes;
pub mod ingress;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod tls;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use channel_core::Backend;
use config::DispatcherArgs;
use dataplane::{Dataplane, RouteTable};
use delivery::{Deliverer, DeliveryOptions};
use metrics::Metrics;
use source::SourceWatcher;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often parts of the contract that failed to start are retried.
const RESYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Run a dispatcher until SIGTERM or SIGINT, then shut down gracefully:
/// stop accepting events, drain in-flight deliveries up to the drain
/// timeout, and return `Ok(())`.
pub async fn run(args: DispatcherArgs, backend: Arc<dyn Backend>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signals.cancel();
    });
    run_until(args, backend, shutdown).await
}

/// The token verifier of `--oidc-issuer`, its keys loaded (an error names
/// the file or URL) and refreshed until `shutdown`.
async fn oidc_verifier(
    args: &DispatcherArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<auth::oidc::Verifier>> {
    use auth::oidc::{JwksSource, OidcConfig, Verifier};
    let Some(issuer) = &args.oidc_issuer else {
        return Ok(None);
    };
    let jwks = match args.oidc_jwks.as_deref() {
        Some(j) if j.starts_with("http://") || j.starts_with("https://") => {
            JwksSource::Url(url::Url::parse(j).with_context(|| format!("--oidc-jwks {j}"))?)
        }
        Some(j) => JwksSource::File(j.into()),
        None => JwksSource::Discovery(
            url::Url::parse(issuer)
                .with_context(|| format!("--oidc-issuer {issuer} is not a URL"))?,
        ),
    };
    let verifier = Verifier::new(OidcConfig::new(issuer.clone(), jwks))
        .await
        .context("cannot load the OIDC keys")?;
    verifier.spawn_refresh(shutdown.clone());
    Ok(Some(verifier))
}

/// The verifiers of the ingress: `--oidc-issuer`'s, and `signer`'s (the
/// identity tokens this dispatcher, and every component sharing its key,
/// present).
async fn oidc_verifiers(
    args: &DispatcherArgs,
    signer: &auth::identity::Signer,
    shutdown: &CancellationToken,
) -> anyhow::Result<auth::oidc::Verifiers> {
    use auth::oidc::{JwksSource, OidcConfig, Verifier, Verifiers};
    let own = Verifier::new(OidcConfig::new(
        signer.issuer(),
        JwksSource::Own(signer.jwks()),
    ))
    .await
    .context("cannot trust this dispatcher's own signing key")?;
    Ok(Verifiers::new(
        oidc_verifier(args, shutdown).await?,
        Some(own),
    ))
}

/// Wait for SIGTERM or SIGINT (logging which arrived).
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// [`run`], stopping when `shutdown` is cancelled instead of on a signal.
pub async fn run_until(
    args: DispatcherArgs,
    backend: Arc<dyn Backend>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));

    // Loaded on a blocking thread, like every reload: the parser's garbage
    // stays in that thread's allocator arena, apart from the data plane.
    let mut watcher = SourceWatcher::new(args.source(), backend.kind());
    let (watcher, initial) = tokio::task::spawn_blocking(move || {
        let loaded = watcher.load();
        (watcher, loaded)
    })
    .await
    .context("loading the initial configuration panicked")?;
    let initial = initial.context("cannot load the initial configuration")?;

    // HTTPS first: a certificate that does not load stops the start.
    let tls = match args.tls.files()? {
        Some((cert, key)) => {
            let reloading = tls::ReloadingCert::new(cert, key)?;
            let listener = TcpListener::bind(args.tls.tls_listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {} (--tls-listen)", args.tls.tls_listen)
                })?;
            Some((reloading, listener))
        }
        None => None,
    };
    let ingress_listener = if args.tls.serves_http() {
        Some(
            TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?,
        )
    } else {
        None
    };
    let admin_listener = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    let ingress_addr = match (&ingress_listener, &tls) {
        (Some(l), _) => l.local_addr()?,
        (None, Some((_, l))) => l.local_addr()?,
        (None, None) => anyhow::bail!("no ingress: HTTP and HTTPS are both off"),
    };

    let signer = Arc::new(auth::identity::Signer::from_args(&args.identity)?);
    tracing::info!(
        issuer = signer.issuer(),
        key = signer.origin(),
        "identity tokens for destinations with an OIDC audience"
    );
    let deliverer = Deliverer::new(
        metrics.clone(),
        DeliveryOptions {
            drain_timeout: args.drain_timeout,
            max_reply_bytes: args.max_reply_bytes,
            local_routes: Some(Dataplane::local_routes(
                routes.clone(),
                ingress_addr,
                match &tls {
                    Some((_, listener)) => Some((
                        channel_core::contract::tls_host(backend.kind()),
                        listener.local_addr()?,
                    )),
                    None => None,
                },
            )),
            ca_certs: tls::read_ca_certs(args.tls.delivery_ca_certs.as_deref())?,
            signer: Some(signer.clone()),
        },
    );
    let dataplane = Arc::new(Dataplane::new(
        backend.clone(),
        deliverer,
        metrics,
        routes.clone(),
    ));

    // The admin server comes up first so probes can see "not ready yet".
    let admin_stop = CancellationToken::new();
    let admin_dp = dataplane.clone();
    let admin_token: Option<Arc<str>> = args.admin_token.as_deref().map(Arc::from);
    let admin_signer = signer.clone();
    let admin = tokio::spawn(server::serve(
        "admin",
        admin_listener,
        move |req| {
            let (dataplane, token) = (admin_dp.clone(), admin_token.clone());
            let signer = admin_signer.clone();
            async move {
                if let Some(published) = admin::identity_keys(&req, &signer) {
                    return published;
                }
                match admin::guard(&req, token.as_deref()) {
                    Some(refused) => refused,
                    None => admin::handle(dataplane, req).await,
                }
            }
        },
        admin_stop.clone(),
        Duration::from_secs(1),
    ));

    dataplane.apply(initial.contract, initial.problems).await;
    memory::release_free_memory();

    let ingress_stop = CancellationToken::new();
    let verifiers = oidc_verifiers(&args, &signer, &shutdown).await?;
    let handler = ingress::Ingress::new(routes, backend, args.max_body_bytes)
        .with_body_read_timeout(args.limits.body_read_timeout)
        .with_oidc(verifiers);
    let serve = move |req| {
        let handler = handler.clone();
        async move { handler.handle(req).await }
    };
    let mut ingresses = Vec::new();
    if let Some(listener) = ingress_listener {
        ingresses.push(tokio::spawn(server::serve_with(
            "ingress",
            listener,
            serve.clone(),
            ingress_stop.clone(),
            args.drain_timeout,
            args.limits,
        )));
    }
    if let Some((reloading, listener)) = tls {
        tracing::info!(tls = %listener.local_addr()?, mode = ?args.tls.transport_encryption, "HTTPS ingress");
        tokio::spawn(reloading.clone().watch(
            args.watch_interval.max(Duration::from_millis(100)),
            shutdown.clone(),
        ));
        ingresses.push(tokio::spawn(server::serve_tls(
            "ingress-tls",
            listener,
            serve,
            ingress_stop.clone(),
            args.drain_timeout,
            args.limits,
            reloading.acceptor(),
        )));
    }
    tracing::info!(ingress = %ingress_addr, admin = %args.admin_listen, backend = %dataplane.backend().kind(), "dispatcher started");

    // Watch the configuration until shutdown.
    let interval = args.watch_interval.max(Duration::from_millis(10));
    let watch_dp = dataplane.clone();
    let watch_stop = shutdown.clone();
    let changes = changes::ChangeNotifier::new(&args.source().paths());
    let watcher = Arc::new(std::sync::Mutex::new(watcher));
    let watch = tokio::spawn(async move {
        let mut last_resync = tokio::time::Instant::now();
        loop {
            if last_resync.elapsed() >= RESYNC_INTERVAL {
                last_resync = tokio::time::Instant::now();
                watch_dp.resync().await;
            }
            // A file notification applies an edit at once; the interval
            // catches what notifications miss.
            tokio::select! {
                _ = watch_stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                _ = changes.changed() => {}
            }
            let w = watcher.clone();
            let polled = tokio::task::spawn_blocking(move || match w.lock() {
                Ok(mut w) => w.poll(),
                Err(poisoned) => poisoned.into_inner().poll(),
            })
            .await
            .ok()
            .flatten();
            match polled {
                None => {}
                Some(Ok(loaded)) => {
                    watch_dp.apply(loaded.contract, loaded.problems).await;
                    memory::release_free_memory();
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "configuration not reloaded; the previous one stays applied");
                    watch_dp.record_error(e.to_string()).await;
                }
            }
        }
    });

    shutdown.cancelled().await;
    // Phase 1: stop accepting events (requests in progress still finish).
    ingress_stop.cancel();
    for ingress in ingresses {
        let _ = ingress.await;
    }
    let _ = watch.await;
    // Phase 2: drain deliveries within the drain timeout.
    dataplane.shutdown().await;
    admin_stop.cancel();
    let _ = admin.await;
    tracing::info!("dispatcher stopped");
    telemetry::shutdown();
    Ok(())
}
