//! Tests of class selection, parameter overlay, resolution and delivery.

use super::*;
use crate::manifests::load_str;

fn compiled(yaml: &str) -> Compiled {
    compile(&load_str("test.yaml", yaml).expect("manifests load"))
}

fn channel<'a>(c: &'a Compiled, backend: BackendKind, name: &str) -> &'a ChannelContract {
    c.contracts[&backend]
        .channels
        .iter()
        .find(|ch| ch.name == name)
        .unwrap_or_else(|| panic!("channel {name} on {backend}: {c:#?}"))
}

const CLASSES: &str = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: kafka, annotations: {eventing.knative.dev/is-default-provisioner: "true"}}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092", numPartitions: 3}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: nats}
spec: {backend: nats, parameters: {url: "nats://n:4222"}}
"#;

#[test]
fn builtin_class_applies_without_classes() {
    let c = compiled("apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: a}\n");
    let ch = channel(&c, BackendKind::InMemory, "a");
    assert_eq!(ch.class, "in-memory-channel");
    assert_eq!(ch.ingress.path, "/default/a");
    assert_eq!(ch.ingress.host, "a-kn-channel.default.svc.cluster.local");
    assert!(c.problems.is_empty());
}

#[test]
fn classes_are_selected_like_storage_classes() {
    let c = compiled(&format!(
        "{CLASSES}---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: by-default}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: by-ref}}
spec: {{provisioner: {{name: nats}}}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {{name: by-template}}
spec: {{channelTemplate: {{apiVersion: messaging.knative.dev/v1alpha1, kind: NatsJetStreamChannel, spec: {{url: 'nats://other:4222', maxAge: PT1H}}}}}}
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {{name: concrete}}
---
apiVersion: messaging.knative.dev/v1beta1
kind: KafkaChannel
metadata: {{name: kc}}
spec: {{numPartitions: 6}}
"
    ));
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    assert_eq!(channel(&c, BackendKind::Kafka, "by-default").class, "kafka");
    assert_eq!(channel(&c, BackendKind::Nats, "by-ref").class, "nats");
    let t = channel(&c, BackendKind::Nats, "by-template");
    // Template fields override class parameters.
    assert_eq!(t.parameters["url"], "nats://other:4222");
    assert_eq!(t.parameters["maxAge"], "PT1H");
    // No class has backend inmemory: the built-in one serves it.
    assert_eq!(
        channel(&c, BackendKind::InMemory, "concrete").class,
        "in-memory-channel"
    );
    let kc = channel(&c, BackendKind::Kafka, "kc");
    assert_eq!(kc.parameters["numPartitions"], 6);
    assert_eq!(kc.parameters["bootstrapServers"], "k:9092");
    assert_eq!(kc.kind, "KafkaChannel");
}

#[test]
fn class_problems_are_reported() {
    let two_defaults = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: a, annotations: {eventing.knative.dev/is-default-provisioner: "true"}}
spec: {backend: kafka}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: b, annotations: {eventing.knative.dev/is-default-provisioner: "true"}}
spec: {backend: nats}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: x}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: y}
spec: {provisioner: {name: missing}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: z}
spec: {provisioner: {name: a}, channelTemplate: {kind: NatsJetStreamChannel}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: s}
spec: {channel: {kind: Channel, name: x}, subscriber: {uri: "http://a/"}}
"#;
    let c = compiled(two_defaults);
    let reasons: Vec<(&str, &str)> = c
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("x", "AmbiguousDefaultClass"),
            ("y", "ClassNotFound"),
            ("z", "BackendMismatch"),
            ("s", "ChannelNotReady"),
        ]
    );
    assert!(c.contracts.is_empty());
}

const SUBS: &str = r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders, namespace: shop}
spec:
  delivery: {retry: 4, backoffPolicy: linear, backoffDelay: PT0.25S, deadLetterSink: {uri: "http://dls/"}}
---
apiVersion: messaging.knative.dev/v1
kind: InMemoryChannel
metadata: {name: audited, namespace: shop}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: inherits, namespace: shop, uid: fixed-uid, generation: 3}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {ref: {apiVersion: v1, kind: Service, name: audit}, uri: /events?x=1}
  reply: {ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: audited}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata:
  name: own
  namespace: shop
  annotations: {kafka.eventing.knative.dev/delivery.order: ordered, dispatcher.knative.dev/max-in-flight: "8"}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}
  subscriber: {uri: "http://own/"}
  delivery: {retry: 1, timeout: PT2S, retryAfterMax: PT10S, format: json}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: lost, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nope}
  subscriber: {uri: "http://x/"}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: badref, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {ref: {apiVersion: apps/v1, kind: Deployment, name: d}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: badannotation, namespace: shop, annotations: {dispatcher.knative.dev/max-in-flight: "0"}}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {uri: "http://x/"}
"#;

#[test]
fn subscriptions_are_resolved_and_attached() {
    let c = compiled(SUBS);
    let orders = channel(&c, BackendKind::InMemory, "orders");
    let names: Vec<&str> = orders
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["inherits", "own"]);
    let inherits = &orders.subscriptions[0];
    assert_eq!(inherits.uid, "fixed-uid");
    assert_eq!(inherits.generation, 3);
    assert_eq!(
        inherits.subscriber.as_ref().unwrap().as_str(),
        "http://audit.shop.svc.cluster.local/events?x=1"
    );
    assert_eq!(
        inherits.reply.as_ref().unwrap().as_str(),
        "http://audited-kn-channel.shop.svc.cluster.local/"
    );
    // Channel-level delivery applies to a subscription that sets none.
    assert_eq!(inherits.delivery.retry, 4);
    assert_eq!(inherits.delivery.backoff_policy, BackoffPolicy::Linear);
    assert_eq!(
        inherits.delivery.backoff_delay,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        inherits.dead_letter.as_ref().unwrap().as_str(),
        "http://dls/"
    );
    let own = &orders.subscriptions[1];
    assert_eq!(own.delivery.retry, 1);
    assert_eq!(
        own.dead_letter, None,
        "its own delivery replaces the channel's as a whole"
    );
    assert_eq!(own.delivery.timeout, std::time::Duration::from_secs(2));
    assert_eq!(
        own.delivery.retry_after_max,
        Some(std::time::Duration::from_secs(10))
    );
    assert_eq!(own.delivery.format, DeliveryFormat::Json);
    assert_eq!(own.delivery.order, DeliveryOrder::Ordered);
    assert_eq!(own.delivery.max_in_flight, 8);
    let problems: Vec<(&str, &str)> = c
        .problems
        .iter()
        .map(|p| (p.name.as_str(), p.reason.as_str()))
        .collect();
    assert_eq!(
        problems,
        [
            ("badannotation", "InvalidAnnotation"),
            ("badref", "DestinationNotResolvable"),
            ("lost", "ChannelNotFound"),
        ]
    );
}

#[test]
fn output_is_deterministic_with_stable_uids() {
    let a = compiled(SUBS);
    let b = compiled(SUBS);
    assert_eq!(a.contracts, b.contracts);
    let uid = &channel(&a, BackendKind::InMemory, "orders").uid;
    assert_eq!(uid, &stable_uid("Channel", "shop", "orders"));
    assert_ne!(uid, &stable_uid("Channel", "shop", "orders2"));
    assert_eq!(uid.len(), 36);
}
