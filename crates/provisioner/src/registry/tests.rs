//! The registry from manifests and from what dispatchers observed.

use super::*;
use crate::reconcile::{plan, Addressing};
use channel_core::manifests::load_str;
use dispatcher::eventtypes::Reference;

const MANIFESTS: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: audit, namespace: shop}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: order, namespace: shop}
spec:
  type: shop.order
  source: /shop
  schema: https://example.com/order.json
  reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: audit-entry, namespace: shop}
spec:
  type: audit.entry
  reference: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: audit}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: orphan, namespace: shop}
spec:
  type: lost.event
  reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: gone}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: free, namespace: shop}
spec: {type: any.where}
"#;

fn the_plan(yaml: &str) -> (Plan, Vec<EventType>) {
    let manifests = load_str("registry.yaml", yaml).expect("valid manifests");
    let p = plan(&manifests, &BTreeMap::new(), &Addressing::default());
    (p, manifests.event_types)
}

fn observed(broker: &str, ty: &str, source: &str) -> Observed {
    Observed {
        name: channel_core::features::auto_event_type_name("Broker", broker, ty, source),
        namespace: "shop".into(),
        type_: ty.into(),
        source: source.into(),
        reference: Reference {
            api_version: "eventing.knative.dev/v1".into(),
            kind: "Broker".into(),
            namespace: "shop".into(),
            name: broker.into(),
        },
    }
}

fn ready_of(objects: &[EventTypeObject], name: &str) -> (ConditionStatus, Option<String>) {
    let o = objects
        .iter()
        .find(|o| o.metadata.name == name)
        .unwrap_or_else(|| panic!("{name} listed"));
    let r = o.ready().expect("a Ready condition");
    (r.status, r.reason.clone())
}

#[test]
fn declared_event_types_are_ready_when_their_reference_exists() {
    let (p, declared) = the_plan(MANIFESTS);
    let objects = objects(&p, &declared, &AutoRegistry::default());
    assert_eq!(objects.len(), 4);
    assert_eq!(ready_of(&objects, "order").0, ConditionStatus::True);
    assert_eq!(ready_of(&objects, "audit-entry").0, ConditionStatus::True);
    assert_eq!(ready_of(&objects, "free").0, ConditionStatus::True);
    assert_eq!(
        ready_of(&objects, "orphan"),
        (ConditionStatus::False, Some("ReferenceNotFound".into()))
    );
    let orphan = objects
        .iter()
        .find(|o| o.metadata.name == "orphan")
        .expect("orphan");
    let row = orphan.row();
    assert_eq!(row.kind, "EventType");
    assert!(
        row.message
            .as_deref()
            .is_some_and(|m| m.contains("Broker shop/gone")),
        "{row:?}"
    );
    // Knative's object shape.
    let json = serde_json::to_value(&objects[1]).expect("json");
    assert_eq!(json["apiVersion"], "eventing.knative.dev/v1beta2");
    assert_eq!(json["kind"], "EventType");
    assert!(json["spec"]["type"].is_string());
}

#[test]
fn auto_created_entries_are_bounded_persisted_and_follow_their_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eventtypes.json");
    let (p, declared) = the_plan(MANIFESTS);
    let exists = |o: &Observed| {
        reference_exists(
            &p,
            &o.namespace,
            &KReference {
                api_version: None,
                kind: o.reference.kind.clone(),
                name: o.reference.name.clone(),
                namespace: None,
                group: None,
            },
        )
    };
    let mut auto = AutoRegistry::load(&path);
    let seen = vec![
        observed("default", "shop.order", "/shop"), // declared already
        observed("default", "shop.refund", "/shop"),
        observed("default", "random.1", "/x"),
        observed("default", "random.2", "/x"), // over the bound of 3
        observed("gone", "x", "/x"),           // no such broker
    ];
    assert!(auto.update(seen.clone(), Some(3), exists));
    assert_eq!(auto.entries().count(), 3);
    assert!(!auto.update(seen, Some(3), exists), "nothing new");
    let objects = objects(&p, &declared, &auto);
    let auto_created: Vec<&EventTypeObject> = objects
        .iter()
        .filter(|o| o.metadata.labels.contains_key(AUTO_CREATED_LABEL))
        .collect();
    assert_eq!(
        auto_created.len(),
        2,
        "the declared shop.order is not listed twice"
    );
    assert!(auto_created
        .iter()
        .all(|o| o.ready().is_some_and(|r| r.status == ConditionStatus::True)));

    // Persisted: a restart keeps the registry.
    let again = AutoRegistry::load(&path);
    assert_eq!(again.entries().count(), 3);

    // The broker removed: its auto-created EventTypes go with it.
    let (without, _) = the_plan(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: shop}\ndata: {}\n",
    );
    let mut again = again;
    assert!(again.update(Vec::new(), Some(3), |o| reference_exists(
        &without,
        &o.namespace,
        &KReference {
            api_version: None,
            kind: o.reference.kind.clone(),
            name: o.reference.name.clone(),
            namespace: None,
            group: None,
        }
    )));
    assert_eq!(again.entries().count(), 0);
    assert_eq!(AutoRegistry::load(&path).entries().count(), 0);
}

#[test]
fn an_unreadable_file_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("eventtypes.json");
    std::fs::write(&path, b"{not json").expect("write");
    assert_eq!(AutoRegistry::load(&path).entries().count(), 0);
}
