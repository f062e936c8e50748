//! Flow status from what their generated channels and subscriptions report.

use super::super::{compute, Condition, ConditionStatus, DispatcherObservation, Observations};
use super::super::{Provisioning, ResourceStatus};
use crate::reconcile::{channel_key, plan, Addressing, Plan};
use channel_core::manifests::load_str;
use channel_core::BackendKind;
use dispatcher::dataplane::{
    ChannelStatus as Served, Status as DispatcherStatus, SubscriptionStatus as ServedSubscription,
};
use std::collections::BTreeMap;

const FLOWS: &str = r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: enrich, namespace: shop, generation: 4}
spec:
  steps: [{uri: "http://one/"}, {uri: "http://two/"}]
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fan, namespace: shop}
spec:
  branches:
  - {filter: {uri: "http://f/"}, subscriber: {uri: "http://a/"}}
  - {subscriber: {uri: "http://b/"}}
---
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: broken, namespace: shop}
spec:
  steps:
  - uri: "http://one/"
  - ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}
"#;

fn the_plan() -> Plan {
    let manifests = load_str("flows.yaml", FLOWS).expect("valid manifests");
    let addressing = Addressing {
        dispatcher_urls: [(
            BackendKind::InMemory,
            url::Url::parse("http://127.0.0.1:8080").expect("url"),
        )]
        .into(),
    };
    plan(&manifests, &BTreeMap::new(), &addressing)
}

/// Every planned channel provisioned and served; subscriptions ready
/// unless named in `failing`.
fn observed(plan: &Plan, failing: &[&str]) -> Observations {
    let keys: Vec<_> = plan
        .channels
        .iter()
        .map(|c| channel_key(&c.contract))
        .collect();
    let served = plan
        .channels
        .iter()
        .map(|c| Served {
            uid: c.contract.uid.clone(),
            namespace: c.contract.namespace.clone(),
            name: c.contract.name.clone(),
            address: c.address.clone(),
            ready: true,
            message: None,
            broker: None,
            subscriptions: c
                .contract
                .subscriptions
                .iter()
                .map(|s| {
                    let ok = !failing.contains(&s.name.as_str());
                    ServedSubscription {
                        uid: s.uid.clone(),
                        name: s.name.clone(),
                        generation: s.generation,
                        ready: ok,
                        message: (!ok).then(|| "subscriber unreachable".into()),
                        pending: None,
                    }
                })
                .collect(),
        })
        .collect();
    Observations {
        provisioning: keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    Provisioning::Ready {
                        reason: "BufferReady".into(),
                        message: String::new(),
                    },
                )
            })
            .collect(),
        in_contract: keys.iter().map(|k| (k.clone(), true)).collect(),
        generations: [(BackendKind::InMemory, 1)].into(),
        dispatchers: [(
            BackendKind::InMemory,
            DispatcherObservation::Report(Box::new(DispatcherStatus {
                generation: Some(1),
                backend: "inmemory".into(),
                channels: served,
                problems: vec![],
                last_error: None,
            })),
        )]
        .into(),
        ..Observations::default()
    }
}

fn find<'a>(all: &'a [ResourceStatus], kind: &str, name: &str) -> &'a ResourceStatus {
    all.iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {all:#?}"))
}

fn condition(r: &ResourceStatus, type_: &str) -> Condition {
    let conditions: Vec<Condition> =
        serde_json::from_value(r.status["conditions"].clone()).expect("conditions");
    conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {r:#?}"))
}

#[test]
fn a_served_sequence_is_ready_at_its_first_channels_address() {
    let plan = the_plan();
    let all = compute(&plan, &observed(&plan, &[]));
    let seq = find(&all, "Sequence", "enrich");
    assert_eq!(seq.ready, ConditionStatus::True, "{seq:#?}");
    assert_eq!(
        seq.url.as_deref(),
        Some("http://127.0.0.1:8080/shop/enrich-kn-sequence-0")
    );
    assert_eq!(seq.status["observedGeneration"], 4);
    assert_eq!(seq.status["address"]["url"], seq.url.clone().unwrap());
    let subs = seq.status["subscriptionStatuses"]
        .as_array()
        .expect("array");
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1]["subscription"]["name"], "enrich-kn-sequence-1");
    assert_eq!(subs[1]["ready"]["status"], "True");
    assert_eq!(
        seq.status["channelStatuses"][0]["channel"]["kind"],
        "Channel"
    );
    for t in ["ChannelsReady", "SubscriptionsReady", "Addressable"] {
        assert_eq!(condition(seq, t).status, ConditionStatus::True, "{t}");
    }
}

#[test]
fn a_parallel_reports_its_ingress_and_every_branch() {
    let plan = the_plan();
    let all = compute(&plan, &observed(&plan, &["fan-kn-parallel-1"]));
    let par = find(&all, "Parallel", "fan");
    assert_eq!(
        par.status["ingressChannelStatus"]["channel"]["name"],
        "fan-kn-parallel"
    );
    let branches = par.status["branchStatuses"].as_array().expect("array");
    assert_eq!(branches.len(), 2);
    assert_eq!(
        branches[0]["filterSubscriptionStatus"]["subscription"]["name"],
        "fan-kn-parallel-filter-0"
    );
    assert_eq!(
        branches[1]["subscriberSubscriptionStatus"]["ready"]["status"],
        "False"
    );
    // One branch's subscriber is down: the Parallel says which.
    assert_eq!(par.ready, ConditionStatus::False);
    let subs = condition(par, "SubscriptionsReady");
    assert_eq!(subs.status, ConditionStatus::False);
    let message = subs.message.unwrap_or_default();
    assert!(message.contains("fan-kn-parallel-1"), "{message}");
    assert_eq!(
        condition(par, "ChannelsReady").status,
        ConditionStatus::True
    );
}

#[test]
fn a_step_naming_nothing_makes_the_sequence_not_ready_with_the_reason() {
    let plan = the_plan();
    let all = compute(&plan, &observed(&plan, &[]));
    let rows: Vec<_> = all
        .iter()
        .filter(|r| r.kind == "Sequence" && r.name == "broken")
        .collect();
    assert_eq!(rows.len(), 1, "the problem is folded into the flow's row");
    let seq = rows[0];
    assert_eq!(seq.ready, ConditionStatus::False);
    let subs = condition(seq, "SubscriptionsReady");
    assert_eq!(subs.reason.as_deref(), Some("DestinationNotFound"));
    let message = subs.message.unwrap_or_default();
    assert!(message.contains("spec.steps[1]"), "{message}");
    assert!(message.contains("Channel shop/nowhere"), "{message}");
    // Its first step still runs, and the Sequence is still addressable.
    assert_eq!(condition(seq, "Addressable").status, ConditionStatus::True);
}
