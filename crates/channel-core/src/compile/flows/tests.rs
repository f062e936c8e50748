//! Sequences and Parallels expand into Knative's shape.

use crate::compile::{compile, Compiled, FlowKind};
use crate::contract::{BackendKind, ChannelContract, SubscriptionContract};
use crate::manifests::load_str;

fn compiled(yaml: &str) -> Compiled {
    compile(&load_str("test.yaml", yaml).expect("manifests load"))
}

fn channel<'a>(c: &'a Compiled, backend: BackendKind, name: &str) -> &'a ChannelContract {
    c.contracts
        .get(&backend)
        .and_then(|k| k.channels.iter().find(|ch| ch.name == name))
        .unwrap_or_else(|| panic!("channel {name} on {backend}: {c:#?}"))
}

fn sub<'a>(c: &'a Compiled, name: &str) -> &'a SubscriptionContract {
    c.contracts
        .values()
        .flat_map(|k| &k.channels)
        .flat_map(|ch| &ch.subscriptions)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("subscription {name}: {c:#?}"))
}

fn url<U: std::borrow::Borrow<url::Url>>(u: &Option<U>) -> Option<&str> {
    u.as_ref().map(|u| u.borrow().as_str())
}

const SEQUENCE: &str = r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: enrich, namespace: shop}
spec:
  steps:
  - uri: http://one.shop/
  - ref: {apiVersion: v1, kind: Service, name: two}
    delivery: {retry: 7}
  - uri: http://three.shop/
  reply: {uri: http://done.shop/}
"#;

#[test]
fn a_sequence_chains_its_steps_through_one_channel_each() {
    let c = compiled(SEQUENCE);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    for i in 0..3 {
        let ch = channel(
            &c,
            BackendKind::InMemory,
            &format!("enrich-kn-sequence-{i}"),
        );
        assert_eq!(ch.class, "in-memory-channel");
        assert_eq!(ch.subscriptions.len(), 1);
        assert_eq!(ch.subscriptions[0].name, format!("enrich-kn-sequence-{i}"));
    }
    let s0 = sub(&c, "enrich-kn-sequence-0");
    assert_eq!(url(&s0.subscriber), Some("http://one.shop/"));
    assert_eq!(
        url(&s0.reply),
        Some("http://enrich-kn-sequence-1-kn-channel.shop.svc.cluster.local/")
    );
    let s1 = sub(&c, "enrich-kn-sequence-1");
    assert_eq!(
        url(&s1.subscriber),
        Some("http://two.shop.svc.cluster.local/")
    );
    assert_eq!(s1.delivery.retry, 7);
    assert_eq!(s0.delivery.retry, 0);
    assert_eq!(
        url(&sub(&c, "enrich-kn-sequence-2").reply),
        Some("http://done.shop/")
    );

    let plan = &c.flows[0];
    assert_eq!(plan.kind, FlowKind::Sequence);
    assert_eq!(plan.address_channel, "enrich-kn-sequence-0");
    assert_eq!(plan.steps.len(), 3);
}

#[test]
fn editing_one_step_changes_only_that_steps_subscription() {
    let before = compiled(SEQUENCE);
    let after = compiled(&SEQUENCE.replace("http://three.shop/", "http://three-v2.shop/"));
    for i in 0..2 {
        let name = format!("enrich-kn-sequence-{i}");
        assert_eq!(sub(&before, &name), sub(&after, &name));
    }
    let (b, a) = (
        sub(&before, "enrich-kn-sequence-2"),
        sub(&after, "enrich-kn-sequence-2"),
    );
    assert_eq!(b.uid, a.uid, "same subscription, updated in place");
    assert_eq!(url(&a.subscriber), Some("http://three-v2.shop/"));
    // A step added: the old last step now replies into the new channel.
    let longer = compiled(&SEQUENCE.replace("  reply:", "  - uri: http://four.shop/\n  reply:"));
    assert_eq!(
        url(&sub(&longer, "enrich-kn-sequence-2").reply),
        Some("http://enrich-kn-sequence-3-kn-channel.shop.svc.cluster.local/")
    );
    assert_eq!(
        url(&sub(&longer, "enrich-kn-sequence-3").reply),
        Some("http://done.shop/")
    );
}

#[test]
fn the_channel_template_picks_the_backend_and_its_settings() {
    let c = compiled(
        r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: kafka}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092"}}
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fan}
spec:
  channelTemplate: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, spec: {numPartitions: 4}}
  branches:
  - subscriber: {uri: http://a/}
"#,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    for name in ["fan-kn-parallel", "fan-kn-parallel-0"] {
        let ch = channel(&c, BackendKind::Kafka, name);
        assert_eq!(ch.parameters["numPartitions"], 4);
        assert_eq!(ch.parameters["bootstrapServers"], "k:9092");
    }
}

#[test]
fn a_parallel_filters_into_branch_channels_and_replies() {
    let c = compiled(
        r#"
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fan, namespace: shop}
spec:
  branches:
  - filter: {uri: http://is-big/}
    subscriber: {uri: http://big/}
    reply: {uri: http://big-replies/}
    delivery: {retry: 2}
  - subscriber: {uri: http://all/}
  reply: {uri: http://replies/}
"#,
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let ingress = channel(&c, BackendKind::InMemory, "fan-kn-parallel");
    let mut on_ingress: Vec<_> = ingress.subscriptions.iter().map(|s| &s.name).collect();
    on_ingress.sort();
    assert_eq!(
        on_ingress,
        ["fan-kn-parallel-filter-0", "fan-kn-parallel-filter-1"]
    );
    let f0 = sub(&c, "fan-kn-parallel-filter-0");
    assert_eq!(url(&f0.subscriber), Some("http://is-big/"));
    assert_eq!(
        url(&f0.reply),
        Some("http://fan-kn-parallel-0-kn-channel.shop.svc.cluster.local/")
    );
    assert_eq!(f0.delivery.retry, 2);
    // No filter: a reply-only subscription that forwards every event.
    let f1 = sub(&c, "fan-kn-parallel-filter-1");
    assert_eq!(f1.subscriber, None);
    assert_eq!(
        url(&f1.reply),
        Some("http://fan-kn-parallel-1-kn-channel.shop.svc.cluster.local/")
    );
    let b0 = sub(&c, "fan-kn-parallel-0");
    assert_eq!(
        b0.subscriber.as_ref().map(url::Url::as_str),
        Some("http://big/")
    );
    assert_eq!(url(&b0.reply), Some("http://big-replies/"));
    let b1 = sub(&c, "fan-kn-parallel-1");
    assert_eq!(url(&b1.reply), Some("http://replies/"));
    assert_eq!(
        channel(&c, BackendKind::InMemory, "fan-kn-parallel-1").subscriptions[0].name,
        "fan-kn-parallel-1"
    );
    let plan = &c.flows[0];
    assert_eq!(plan.kind, FlowKind::Parallel);
    assert_eq!(plan.address_channel, "fan-kn-parallel");
    assert_eq!(
        plan.branches[1].filter_subscription,
        "fan-kn-parallel-filter-1"
    );
    assert_eq!(plan.branches[1].channel, "fan-kn-parallel-1");
}

#[test]
fn triggers_and_subscriptions_reach_flows_by_reference() {
    let c = compiled(&format!(
        r#"{SEQUENCE}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: to-sequence, namespace: shop}}
spec:
  subscriber: {{ref: {{apiVersion: flows.knative.dev/v1, kind: Sequence, name: enrich}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: to-nowhere, namespace: shop}}
spec:
  subscriber: {{ref: {{apiVersion: flows.knative.dev/v1, kind: Parallel, name: missing}}}}
"#
    ));
    assert_eq!(
        url(&sub(&c, "to-sequence").subscriber),
        Some("http://enrich-kn-sequence-0-kn-channel.shop.svc.cluster.local/")
    );
    let p = c
        .problems
        .iter()
        .find(|p| p.name == "to-nowhere")
        .expect("problem");
    assert_eq!(
        (p.kind.as_str(), p.reason.as_str()),
        ("Trigger", "DestinationNotFound")
    );
    assert!(p.message.contains("Parallel shop/missing"), "{}", p.message);
}

#[test]
fn what_a_flow_generates_reports_its_problems_on_the_flow() {
    let c = compiled(
        r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: s}
spec:
  steps:
  - uri: http://one/
  - ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: p-kn-parallel}
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: p}
spec:
  branches: [{subscriber: {uri: http://a/}}]
"#,
    );
    let seq = c
        .problems
        .iter()
        .find(|p| p.kind == "Sequence")
        .expect("sequence problem");
    assert_eq!(
        (seq.name.as_str(), seq.reason.as_str()),
        ("s", "DestinationNotFound")
    );
    assert!(seq.message.starts_with("spec.steps[1]"), "{}", seq.message);
    // Step 0 still runs: one bad step does not stop the others.
    assert_eq!(
        url(&sub(&c, "s-kn-sequence-0").subscriber),
        Some("http://one/")
    );
    let par = c
        .problems
        .iter()
        .find(|p| p.kind == "Parallel")
        .expect("parallel problem");
    assert_eq!(par.reason, "ChannelNameTaken");
    assert!(c.flows.iter().all(|f| f.name != "p"));
}

#[test]
fn flows_load_under_every_api_version_knative_used() {
    for api in [
        "flows.knative.dev/v1",
        "flows.knative.dev/v1beta1",
        "flows.knative.dev/v1alpha1",
        "messaging.knative.dev/v1alpha1",
    ] {
        let c = compiled(&format!(
            "apiVersion: {api}\nkind: Sequence\nmetadata: {{name: s}}\nspec: {{steps: [{{uri: 'http://a/'}}]}}\n"
        ));
        assert_eq!(c.flows.len(), 1, "{api}");
    }
}
