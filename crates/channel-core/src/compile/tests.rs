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

#[test]
fn destinations_carry_their_ca_certs_and_with_oidc_on_their_audience() {
    let objects = "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: orders, namespace: shop}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: audit, namespace: shop}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: shop}\n---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: copy, namespace: shop}\nspec:\n  channel: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}\n  subscriber: {uri: 'https://billing.example/', CACerts: \"-----BEGIN CERTIFICATE-----\\nX\\n-----END CERTIFICATE-----\\n\", audience: billing}\n  reply: {ref: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: audit}}\n  delivery: {deadLetterSink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: all, namespace: shop}\nspec: {broker: default, subscriber: {uri: 'http://plain.example/'}}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: tick, namespace: shop}\nspec: {schedule: '@hourly', sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}\n";
    let sub = |c: &Compiled, name: &str| -> SubscriptionContract {
        c.contracts[&BackendKind::InMemory]
            .channels
            .iter()
            .flat_map(|ch| ch.subscriptions.iter())
            .find(|s| s.name == name)
            .map(|s| (**s).clone())
            .unwrap_or_else(|| panic!("{name}: {c:#?}"))
    };

    // OIDC off: CACerts still reach the contract, audiences do not.
    let off = compiled(objects);
    assert!(off.problems.is_empty(), "{:?}", off.problems);
    let auth = sub(&off, "copy").auth.expect("auth");
    assert!(auth.identity.is_none());
    let subscriber = auth.subscriber.expect("subscriber");
    assert!(subscriber
        .ca_certs
        .as_deref()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(subscriber.audience.is_none());
    assert!(auth.reply.is_none() && auth.dead_letter.is_none());
    assert!(sub(&off, "all").auth.is_none());
    assert!(off.sources[0].auth.is_none());

    // OIDC on: a uri destination's own audience; a referenced channel's
    // or broker's audience; the sender's Knative identity.
    let on = compiled(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{authentication-oidc: enabled}}\n---\n{objects}"
    ));
    let auth = sub(&on, "copy").auth.expect("auth");
    assert_eq!(
        auth.identity.as_deref(),
        Some("system:serviceaccount:shop:copy-oidc-messaging.knative.dev-subscription")
    );
    assert_eq!(
        auth.subscriber.unwrap().audience.as_deref(),
        Some("billing")
    );
    assert_eq!(
        auth.reply.unwrap().audience.as_deref(),
        Some("messaging.knative.dev/inmemorychannel/shop/audit")
    );
    assert_eq!(
        auth.dead_letter.unwrap().audience.as_deref(),
        Some("eventing.knative.dev/broker/shop/default")
    );
    // A trigger replies into its broker with its own identity.
    let trigger = sub(&on, "all").auth.expect("trigger auth");
    assert_eq!(
        trigger.identity.as_deref(),
        Some("system:serviceaccount:shop:all-oidc-eventing.knative.dev-trigger")
    );
    assert!(trigger.subscriber.is_none(), "a plain uri has no audience");
    assert_eq!(
        trigger.reply.unwrap().audience.as_deref(),
        Some("eventing.knative.dev/broker/shop/default")
    );
    // A source presents its own identity to its sink.
    let source = on.sources[0].auth.as_ref().expect("source auth");
    assert_eq!(
        source.identity.as_deref(),
        Some("system:serviceaccount:shop:tick-oidc-sources.knative.dev-pingsource")
    );
    assert_eq!(
        source.subscriber.as_ref().unwrap().audience.as_deref(),
        Some("eventing.knative.dev/broker/shop/default")
    );
}
