//! Many channels through the controller, against the fake API: a round
//! after one object changed writes only what changed, an unchanged round
//! writes nothing. (`benches/kubernetes_scale.rs` times the same at
//! 10,000 channels in a release build.)

use super::*;
use crate::kubernetes::fake::{channel_path, scale_objects, seed_channels, subscription_path};
use std::collections::BTreeSet;

/// InMemoryChannels, each with one Subscription (the bench runs 10,000).
const CHANNELS: usize = 2_000;

/// What the watch caches would hand the controller (the shared
/// `snapshot` knows `channels`, not `inmemorychannels`).
fn snapshot_many(state: &Shared) -> Snapshot {
    let (channels, subscriptions, contract_maps) = scale_objects(state, CONTRACT_LABEL);
    Snapshot {
        channels,
        subscriptions,
        contract_maps,
        ..Snapshot::default()
    }
}

/// Run a round; the (method, path) of every write it made, Events apart.
async fn round(c: &mut Controller, state: &Shared) -> (Vec<(String, String)>, usize) {
    let before = state.lock().unwrap_or_else(|e| e.into_inner()).log.len();
    let outcome = c.reconcile(&snapshot_many(state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    let writes: Vec<_> = s.log[before..]
        .iter()
        .filter(|(m, _, _)| m != "GET")
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let events = writes
        .iter()
        .filter(|(_, p)| p.ends_with("/events"))
        .count();
    (
        writes
            .into_iter()
            .filter(|(_, p)| !p.ends_with("/events"))
            .collect(),
        events,
    )
}

#[tokio::test]
async fn at_scale_a_round_writes_only_what_changed() {
    let state = Shared::default();
    seed_channels(&state, CHANNELS);
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));

    // Until steady: finalizers, contract, Services and statuses, then
    // Ready once the dispatcher reports the contract applied.
    let mut steady = false;
    for _ in 0..4 {
        let (writes, _) = round(&mut c, &state).await;
        if writes.is_empty() {
            steady = true;
            break;
        }
    }
    assert!(steady, "no steady state within four rounds");
    {
        let s = state.lock().unwrap_or_else(|e| e.into_inner());
        let not_ready: Vec<&String> = s
            .objects
            .iter()
            .filter(|(p, _)| p.contains("/inmemorychannels/") || p.contains("/subscriptions/"))
            .filter(|(_, o)| ready(o).0 != "True")
            .map(|(p, _)| p)
            .take(3)
            .collect();
        assert!(not_ready.is_empty(), "not Ready: {not_ready:?}");
    }
    assert_eq!(written_contract(&state).channels.len(), CHANNELS);

    // An unchanged round writes nothing (no status of an unchanged object).
    let (writes, events) = round(&mut c, &state).await;
    assert!(writes.is_empty(), "an unchanged round wrote {writes:?}");
    assert_eq!(events, 0);

    // Edit one Subscription: a new subscriber, a new generation.
    let edited = subscription_path("ns-7", "sub-7");
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sub = s.objects[&edited].clone();
        sub["metadata"]["generation"] = json!(2);
        sub["spec"]["subscriber"]["uri"] = json!("http://elsewhere.ns-7.svc.cluster.local/");
        s.put(&edited, sub);
    }
    let (writes, events) = round(&mut c, &state).await;
    let written: BTreeSet<(String, String)> = writes.iter().cloned().collect();
    assert_eq!(
        writes.len(),
        written.len(),
        "each object written once: {writes:?}"
    );
    // The contract (by server-side apply), the subscription's status, and
    // its channel's (`status.subscribers` carries the generation).
    let expected: BTreeSet<(String, String)> = [
        ("PATCH".to_owned(), CONTRACT_PATH.to_owned()),
        ("PATCH".to_owned(), format!("{edited}/status")),
        (
            "PATCH".to_owned(),
            format!("{}/status", channel_path("ns-7", "ch-7")),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(written, expected, "a round after one edit");
    assert_eq!(events, 0, "readiness did not change");
    let contract = written_contract(&state);
    let served = contract
        .channels
        .iter()
        .find(|c| c.name == "ch-7")
        .expect("ch-7 served");
    assert_eq!(
        served.subscriptions[0].subscriber.as_ref().map(Url::as_str),
        Some("http://elsewhere.ns-7.svc.cluster.local/")
    );
    let sub = object(&state, &edited);
    assert_eq!(sub["status"]["observedGeneration"], 2);
    assert_eq!(ready(&sub).0, "True", "{:#}", sub["status"]);

    // And the next unchanged round writes nothing again.
    let (writes, events) = round(&mut c, &state).await;
    assert!(writes.is_empty(), "an unchanged round wrote {writes:?}");
    assert_eq!(events, 0);
}
