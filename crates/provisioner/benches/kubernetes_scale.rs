//! The Kubernetes controller at 10,000 InMemoryChannels × 1 Subscription
//! (100 namespaces), against the in-memory fake API server the unit tests
//! use (`src/kubernetes/fake.rs`, included here by path: it needs only the
//! crate's dependencies and the dev-dependency `tower-test`, so the library
//! exposes nothing for the bench). A fake dispatcher admin endpoint reports
//! every contract the controller writes as applied and every channel ready.
//!
//! Prints, per round: its duration and the API writes it made (PUT, PATCH,
//! POST; Events counted apart). Rounds: the first (cold), the second (the
//! dispatcher reports the contract: everything turns Ready), an unchanged
//! one, one after a single Subscription was edited, and an unchanged one
//! again.
//!
//! `cargo bench -p provisioner --bench kubernetes_scale [-- CHANNELS [IDLE_ROUNDS]]`
//! (IDLE_ROUNDS more unchanged rounds at the end, for a profiler).

#[path = "../src/kubernetes/fake.rs"]
#[allow(dead_code)]
mod fake;

use bytes::Bytes;
use channel_core::BackendKind;
use fake::{
    dispatcher_contract, dispatcher_status, scale_objects, seed_channels, subscription_path,
    Shared, SCALE_NAMESPACES,
};
use http::{Request, Response};
use http_body_util::Full;
use provisioner::cycle::{http_client, Cycle};
use provisioner::kubernetes::controller::{Controller, Settings, Snapshot, CONTRACT_LABEL};
use provisioner::provision::{Provisioner, Schedule, Tracker};
use serde_json::json;
use std::time::{Duration, Instant};
use url::Url;

const SYSTEM: &str = "knative-channels";

/// What the run loop's watch caches would hand the controller.
fn snapshot(state: &Shared) -> Snapshot {
    let (channels, subscriptions, contract_maps) = scale_objects(state, CONTRACT_LABEL);
    Snapshot {
        channels,
        subscriptions,
        contract_maps,
        ..Snapshot::default()
    }
}

/// A dispatcher admin endpoint reporting the in-memory contract last
/// written to the fake API as applied, every channel and subscription ready.
async fn fake_dispatcher(state: Shared) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let body = dispatcher_status(&dispatcher_contract(&state, SYSTEM));
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body.to_string()),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Url::parse(&format!("http://{addr}/")).expect("url")
}

fn controller(client: kube::Client, admin: Url) -> Controller {
    let mut settings = Settings::new(SYSTEM);
    settings.dispatcher_admin.clear();
    settings.source_adapter_admin = None;
    settings
        .dispatcher_admin
        .insert(BackendKind::InMemory, admin);
    let cycle = Cycle::new(
        Provisioner::new(
            channel_kafka::config::Defaults::default(),
            channel_nats::NatsOptions::default(),
            Duration::from_secs(2),
        ),
        Tracker::new(Schedule {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            resync: Duration::from_secs(3600),
        }),
    );
    Controller::new(client, settings, cycle, http_client())
}

/// Run one round; print its duration and writes.
async fn round(label: &str, c: &mut Controller, state: &Shared) {
    let before = state.lock().unwrap_or_else(|e| e.into_inner()).log.len();
    let snap_started = Instant::now();
    let snap = snapshot(state);
    let snap_took = snap_started.elapsed();
    let started = Instant::now();
    let outcome = c.reconcile(&snap).await;
    let took = started.elapsed();
    assert!(outcome.errors.is_empty(), "{:?}", &outcome.errors[..1]);
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    let (mut writes, mut events, mut status) = (0, 0, 0);
    for (method, path, _) in &s.log[before..] {
        if method == "GET" {
            continue;
        }
        if path.ends_with("/events") {
            events += 1;
        } else {
            writes += 1;
            if path.ends_with("/status") {
                status += 1;
            }
        }
    }
    println!(
        "{label:<28} {:>9.1} ms   API writes {writes:>6} (status {status:>6})   events {events:>6}   (snapshot {:.1} ms)",
        took.as_secs_f64() * 1e3,
        snap_took.as_secs_f64() * 1e3,
    );
}

fn main() {
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse().ok());
    let channels: usize = numbers.next().unwrap_or(10_000);
    let idle: usize = numbers.next().unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let state = Shared::default();
        seed_channels(&state, channels);
        let admin = fake_dispatcher(state.clone()).await;
        let mut c = controller(fake::client(state.clone()), admin);
        println!("{channels} InMemoryChannels × 1 Subscription, {SCALE_NAMESPACES} namespaces");
        round("first round (cold)", &mut c, &state).await;
        round("second round (all Ready)", &mut c, &state).await;
        round("unchanged round", &mut c, &state).await;
        {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let path = subscription_path("ns-7", "sub-7");
            let mut sub = s.objects[&path].clone();
            sub["metadata"]["generation"] = json!(2);
            sub["spec"]["subscriber"]["uri"] = json!("http://elsewhere.ns-7.svc.cluster.local/");
            s.put(&path, sub);
        }
        round("after editing 1 Subscription", &mut c, &state).await;
        round("unchanged round", &mut c, &state).await;
        // More unchanged rounds, to profile them (`perf record`).
        for _ in 0..idle {
            round("unchanged round", &mut c, &state).await;
        }
    });
    // Not waiting for 20,000 objects and their request log to be freed.
    std::process::exit(0);
}
