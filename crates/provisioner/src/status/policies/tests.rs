use super::*;
use crate::reconcile::{plan, Addressing};
use crate::status::{compute, Observations};
use channel_core::manifests::load_str;
use std::collections::BTreeMap;

const RESOURCES: &str = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: kafka}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-broker, namespace: shop}
data:
  channel-template-spec: "apiVersion: messaging.knative.dev/v1beta1\nkind: KafkaChannel"
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: kafka-broker}}
---
apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {name: orders, namespace: shop}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: billing, namespace: shop, generation: 3}
spec:
  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}]
  from:
  - {sub: 'system:serviceaccount:billing:*'}
  - {ref: {apiVersion: v1, kind: ServiceAccount, name: shipper}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: dangling, namespace: shop}
spec:
  to:
  - {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
  - {ref: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, name: nowhere}}
  from: [{sub: alice}]
"#;

const OIDC_ON: &str = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {authentication-oidc: enabled}\n";

fn rows(yaml: &str) -> Vec<ResourceStatus> {
    let manifests = load_str("p.yaml", yaml).expect("manifests");
    let plan = plan(&manifests, &BTreeMap::new(), &Addressing::default());
    compute(&plan, &Observations::default())
}

fn find<'a>(rows: &'a [ResourceStatus], kind: &str, name: &str) -> &'a ResourceStatus {
    rows.iter()
        .find(|r| r.kind == kind && r.name == name)
        .unwrap_or_else(|| panic!("{kind} {name} in {rows:#?}"))
}

fn condition<'a>(r: &'a ResourceStatus, type_: &str) -> &'a serde_json::Value {
    r.status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("{type_} in {:#}", r.status))
}

#[test]
fn oidc_off_policies_are_not_listed() {
    let rows = rows(RESOURCES);
    for (kind, name) in [("Broker", "default"), ("KafkaChannel", "orders")] {
        let r = find(&rows, kind, name);
        let c = condition(r, "EventPoliciesReady");
        assert_eq!(c["status"], "True", "{kind}");
        assert_eq!(c["reason"], "OIDCDisabled", "{kind}");
        assert!(r.status.get("policies").is_none(), "{:#}", r.status);
        assert!(r.status["address"].get("audience").is_none());
    }
    // The policies still get a status.
    let p = find(&rows, "EventPolicy", "billing");
    assert_eq!(p.ready, ConditionStatus::True);
}

#[test]
fn oidc_on_lists_applied_policies_and_audience() {
    let rows = rows(&format!("{RESOURCES}{OIDC_ON}"));
    let broker = find(&rows, "Broker", "default");
    assert_eq!(
        broker.status["policies"],
        serde_json::json!([
            {"apiVersion": "eventing.knative.dev/v1alpha1", "name": "billing"},
            {"apiVersion": "eventing.knative.dev/v1alpha1", "name": "dangling"},
        ])
    );
    assert_eq!(
        broker.status["address"]["audience"],
        "eventing.knative.dev/broker/shop/default"
    );
    let c = condition(broker, "EventPoliciesReady");
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&"True".into(), &"Ready".into())
    );
    assert!(c["message"].as_str().unwrap_or_default().contains('2'));

    let channel = find(&rows, "KafkaChannel", "orders");
    assert!(channel.status.get("policies").is_none());
    assert_eq!(
        channel.status["address"]["audience"],
        "messaging.knative.dev/kafkachannel/shop/orders"
    );
    assert_eq!(condition(channel, "EventPoliciesReady")["status"], "True");
}

#[test]
fn policy_rows() {
    let rows = rows(&format!("{RESOURCES}{OIDC_ON}"));
    let ok = find(&rows, "EventPolicy", "billing");
    assert_eq!(ok.ready, ConditionStatus::True);
    assert_eq!(ok.namespace, "shop");
    assert_eq!(condition(ok, "SubjectsResolved")["status"], "True");
    assert_eq!(
        ok.status["from"],
        serde_json::json!([
            "system:serviceaccount:billing:*",
            "system:serviceaccount:shop:shipper"
        ])
    );
    assert_eq!(ok.status["observedGeneration"], 3);

    let bad = find(&rows, "EventPolicy", "dangling");
    assert_eq!(bad.ready, ConditionStatus::False);
    assert_eq!(bad.reason.as_deref(), Some("TargetNotFound"));
    assert!(
        bad.message
            .as_deref()
            .unwrap_or_default()
            .contains("spec.to[1]"),
        "{:?}",
        bad.message
    );
    assert_eq!(bad.status["from"], serde_json::json!(["alice"]));
}
