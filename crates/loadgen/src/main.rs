//! `loadgen`: the benchmark's load generator and latency sink.
//!
//! * `loadgen send` POSTs binary-mode CloudEvents over pooled keep-alive
//!   connections, either as fast as `--concurrency` workers can, or at a
//!   fixed open-loop `--rate` (requests are scheduled by the clock, not by
//!   responses, so a slow server cannot hide latency). Each event carries
//!   the extension `benchsent`: Unix time in nanoseconds at send.
//! * `loadgen sink` answers events and records ingress-to-subscriber latency
//!   (now − `benchsent`).
//!
//! Both print one JSON object with their results. Every loop is bounded by
//! `--duration` (and the sink by `--max-duration`).

mod raw;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "CloudEvents load generator and latency sink for the benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// POST events to a URL and report throughput and client latency.
    Send {
        #[arg(long)]
        url: String,
        /// Events per second (open loop); 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Concurrent workers (connections).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Data size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Give each event the extension `benchkey` = its number modulo N
        /// (0 = no such extension), so N triggers can each match 1/N of the
        /// events.
        #[arg(long, default_value_t = 0)]
        keys: u64,
        /// Trust this PEM CA for an `https://` URL (beside the system's).
        #[arg(long)]
        ca: Option<std::path::PathBuf>,
        /// Send `Authorization: Bearer <TOKEN>` (a JWT for OIDC ingress).
        #[arg(long)]
        bearer: Option<String>,
    },
    /// Raw JetStream baseline: publish with PubAck + pull consume + ack.
    RawNats {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Raw Kafka baseline: idempotent acks=all produce + consumer-group consume + commit.
    RawKafka {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Consumer groups, one consumer each, every group reading the
        /// whole topic and committing (like one channel subscription each).
        #[arg(long, default_value_t = 1)]
        groups: usize,
        /// How long to wait after producing for every group to catch up.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_limit: Duration,
        /// Extra producer properties, `key=value` (repeatable).
        #[arg(long = "producer-config")]
        producer_config: Vec<String>,
    },
    /// Receive events, answer `--status`, and report ingress-to-subscriber latency.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 202)]
        status: u16,
        /// Stop after this long (always bounded).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        max_duration: Duration,
        /// Stop once this many events arrived (0 = no count limit).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |v: u64| v as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

#[allow(clippy::too_many_arguments)] // one per `send` flag
async fn send(
    url: String,
    rate: u64,
    duration: Duration,
    concurrency: usize,
    size: usize,
    keys: u64,
    ca: Option<std::path::PathBuf>,
    bearer: Option<String>,
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = &ca {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca)? {
            roots.add(cert?)?;
        }
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency.max(1))
        .build(connector);
    let bearer: Option<Arc<str>> = bearer.map(|b| Arc::from(format!("Bearer {b}").as_str()));
    let data = Bytes::from(vec![b'x'; size]);
    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()));
    let start = Instant::now();
    let deadline = start + duration;
    let interval =
        (rate > 0).then(|| Duration::from_secs_f64(concurrency.max(1) as f64 / rate as f64));
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let (client, url, data, bearer) =
            (client.clone(), url.clone(), data.clone(), bearer.clone());
        let (sent, accepted, rejected, errors, latency) = (
            sent.clone(),
            accepted.clone(),
            rejected.clone(),
            errors.clone(),
            latency.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = histogram();
            // Stagger open-loop workers evenly over one interval.
            let mut next =
                interval.map(|i| start + i.mul_f64(w as f64 / concurrency.max(1) as f64));
            loop {
                if let Some(at) = next {
                    if at >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    next = Some(at + interval.unwrap_or_default());
                } else if Instant::now() >= deadline {
                    break;
                }
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let mut req = Request::post(url.as_str());
                if keys > 0 {
                    req = req.header("ce-benchkey", (n % keys).to_string());
                }
                if let Some(b) = &bearer {
                    req = req.header("authorization", &**b);
                }
                let req = req
                    .header("ce-specversion", "1.0")
                    .header("ce-id", format!("{w}-{n}"))
                    .header("ce-source", "/loadgen")
                    .header("ce-type", "dev.knative.bench")
                    .header("ce-benchsent", now_nanos().to_string())
                    .header("content-type", "application/octet-stream")
                    .body(Full::new(data.clone()));
                let Ok(req) = req else { continue };
                let t = Instant::now();
                match client.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        let _ = local.record(t.elapsed().as_micros() as u64);
                        if status.is_success() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        } else if let Ok(mut r) = rejected.lock() {
                            *r.entry(status.as_u16()).or_default() += 1;
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut h) = latency.lock() {
                let _ = h.add(&local);
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let accepted = accepted.load(Ordering::Relaxed);
    let h = latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    let out = serde_json::json!({
        "sent": sent.load(Ordering::Relaxed),
        "accepted": accepted,
        "rejected": rejected.lock().map(|r| r.clone()).unwrap_or_default(),
        "errors": errors.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "accepted_per_s": accepted as f64 / elapsed,
        "client_latency": summary(&h),
    });
    println!("{out}");
    Ok(())
}

#[derive(Debug)]
struct SinkState {
    status: StatusCode,
    received: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

impl SinkState {
    fn report(&self) -> serde_json::Value {
        let received = self.received.load(Ordering::Relaxed);
        let span = match (
            self.first.lock().ok().and_then(|f| *f),
            self.last.lock().ok().and_then(|l| *l),
        ) {
            (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
            _ => 0.0,
        };
        let h = self
            .latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| histogram());
        serde_json::json!({
            "received": received,
            "received_per_s": if span > 0.0 { received as f64 / span } else { 0.0 },
            "latency": summary(&h),
        })
    }
}

async fn handle(state: Arc<SinkState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/stats" {
        return Response::new(Full::new(Bytes::from(state.report().to_string())));
    }
    let sent = req
        .headers()
        .get("ce-benchsent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let _ = req.into_body().collect().await;
    let now = Instant::now();
    if let Some(sent) = sent {
        let micros = now_nanos().saturating_sub(sent) / 1000;
        if let Ok(mut h) = state.latency.lock() {
            let _ = h.record(micros.max(1));
        }
    }
    state.received.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut f) = state.first.lock() {
        f.get_or_insert(now);
    }
    if let Ok(mut l) = state.last.lock() {
        *l = Some(now);
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = state.status;
    r
}

async fn sink(
    listen: SocketAddr,
    status: u16,
    max_duration: Duration,
    count: u64,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let state = Arc::new(SinkState {
        status: StatusCode::from_u16(status)?,
        received: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
        first: Mutex::new(None),
        last: Mutex::new(None),
    });
    let deadline = tokio::time::sleep(max_duration);
    tokio::pin!(deadline);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if count > 0 && state.received.load(Ordering::Relaxed) >= count {
                    break;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    println!("{}", state.report());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Send {
            url,
            rate,
            duration,
            concurrency,
            size,
            keys,
            ca,
            bearer,
        } => send(url, rate, duration, concurrency, size, keys, ca, bearer).await,
        Command::RawNats {
            url,
            duration,
            concurrency,
            size,
        } => raw::nats(&url, size, duration, concurrency).await,
        Command::RawKafka {
            bootstrap,
            duration,
            concurrency,
            size,
            partitions,
            groups,
            drain_limit,
            producer_config,
        } => {
            let config: Vec<(String, String)> = producer_config
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            raw::kafka(raw::KafkaRun {
                bootstrap: &bootstrap,
                size,
                duration,
                concurrency,
                partitions,
                groups,
                drain_limit,
                producer_config: &config,
            })
            .await
        }
        Command::Sink {
            listen,
            status,
            max_duration,
            count,
        } => sink(listen, status, max_duration, count).await,
    }
}
