use super::*;
use crate::reconcile::{plan, Addressing};
use channel_core::manifests::load_str;
use dispatcher::dataplane::{ChannelStatus as Served, SubscriptionStatus as ServedSubscription};

const YAML: &str = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata:
  name: kafka
  annotations: {eventing.knative.dev/is-default-provisioner: "true"}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092"}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders, namespace: shop, uid: orders-uid}
spec:
  delivery: {deadLetterSink: {uri: "http://dlq.shop/"}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: audit, namespace: shop, uid: audit-uid}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {uri: "http://audit.shop/"}
  delivery: {deadLetterSink: {uri: "http://audit-dlq.shop/"}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: lost, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}
  subscriber: {uri: "http://x/"}
"#;

fn the_plan() -> Plan {
    let manifests = load_str("test.yaml", YAML).expect("valid manifests");
    let addressing = Addressing {
        dispatcher_urls: [(
            BackendKind::Kafka,
            url::Url::parse("http://127.0.0.1:8081").expect("url"),
        )]
        .into(),
    };
    plan(&manifests, &BTreeMap::new(), &addressing)
}

fn key() -> ChannelKey {
    ("shop".into(), "orders".into(), "Channel".into())
}

fn serving(plan: &Plan, generation: u64, subscriber_ready: bool) -> DispatcherObservation {
    let c = &plan.channel(&key()).expect("planned").contract;
    DispatcherObservation::Report(Box::new(DispatcherStatus {
        generation: Some(generation),
        backend: "kafka".into(),
        channels: vec![Served {
            uid: c.uid.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            address: "http://127.0.0.1:8081/shop/orders".into(),
            ready: true,
            message: None,
            broker: None,
            subscriptions: c
                .subscriptions
                .iter()
                .map(|s| ServedSubscription {
                    uid: s.uid.clone(),
                    name: s.name.clone(),
                    generation: s.generation,
                    ready: subscriber_ready,
                    message: (!subscriber_ready).then(|| "subscriber unreachable".into()),
                    pending: None,
                })
                .collect(),
        }],
        problems: vec![],
        last_error: None,
    }))
}

fn healthy(plan: &Plan) -> Observations {
    Observations {
        provisioning: [(
            key(),
            Provisioning::Ready {
                reason: "TopicReady".into(),
                message: "topic knative-messaging-kafka.shop.orders".into(),
            },
        )]
        .into(),
        in_contract: [(key(), true)].into(),
        generations: [(BackendKind::Kafka, 3)].into(),
        dispatchers: [(BackendKind::Kafka, serving(plan, 3, true))].into(),
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
fn a_provisioned_served_channel_and_its_subscription_are_ready() {
    let plan = the_plan();
    let all = compute(&plan, &healthy(&plan));

    let channel = find(&all, "Channel", "orders");
    assert_eq!(channel.ready, ConditionStatus::True, "{channel:#?}");
    assert_eq!(channel.backend, Some(BackendKind::Kafka));
    assert_eq!(
        channel.url.as_deref(),
        Some("http://127.0.0.1:8081/shop/orders")
    );
    let status: ChannelStatus = serde_json::from_value(channel.status.clone()).expect("status");
    assert_eq!(
        status.address.expect("address").url,
        "http://127.0.0.1:8081/shop/orders"
    );
    assert_eq!(
        status.dead_letter_sink_uri.as_deref(),
        Some("http://dlq.shop/")
    );
    assert_eq!(status.subscribers.len(), 1);
    assert_eq!(status.subscribers[0].ready, ConditionStatus::True);
    assert_eq!(status.subscribers[0].observed_generation, 1);
    assert_eq!(
        condition(channel, "BackendProvisioned").reason.as_deref(),
        Some("TopicReady")
    );

    let sub = find(&all, "Subscription", "audit");
    assert_eq!(sub.ready, ConditionStatus::True, "{sub:#?}");
    let status: SubscriptionStatus = serde_json::from_value(sub.status.clone()).expect("status");
    assert_eq!(
        status.physical_subscription.subscriber_uri.as_deref(),
        Some("http://audit.shop/")
    );
    assert_eq!(
        status.physical_subscription.dead_letter_sink_uri.as_deref(),
        Some("http://audit-dlq.shop/")
    );
    // Channels sort before subscriptions, as `provisioner status` prints them.
    assert_eq!(all[0].kind, "Channel");
}

#[test]
fn an_unreachable_broker_makes_the_channel_and_its_subscriptions_not_ready() {
    let plan = the_plan();
    let mut obs = healthy(&plan);
    obs.provisioning.insert(
        key(),
        Provisioning::Failed {
            reason: "BrokerUnavailable".into(),
            message: "k:9092: connection refused".into(),
        },
    );
    let all = compute(&plan, &obs);
    let channel = find(&all, "Channel", "orders");
    assert_eq!(channel.ready, ConditionStatus::False);
    assert_eq!(channel.reason.as_deref(), Some("BrokerUnavailable"));
    assert!(channel.message.as_deref().unwrap_or("").contains("refused"));
    // The address stays: producers keep their configuration.
    assert!(channel.url.is_some());

    let sub = find(&all, "Subscription", "audit");
    assert_eq!(sub.ready, ConditionStatus::False);
    assert_eq!(sub.reason.as_deref(), Some("ChannelNotReady"));
    assert!(
        sub.message.as_deref().unwrap_or("").contains("refused"),
        "the subscription says why its channel is not ready: {sub:#?}"
    );
}

#[test]
fn a_dispatcher_behind_the_contract_or_down_is_reported() {
    let plan = the_plan();
    let mut obs = healthy(&plan);
    obs.dispatchers
        .insert(BackendKind::Kafka, serving(&plan, 2, true));
    let channel = find(&compute(&plan, &obs), "Channel", "orders").clone();
    assert_eq!(channel.ready, ConditionStatus::Unknown);
    assert_eq!(channel.reason.as_deref(), Some("ContractNotApplied"));

    obs.dispatchers.insert(
        BackendKind::Kafka,
        DispatcherObservation::Unreachable("connection refused".into()),
    );
    let channel = find(&compute(&plan, &obs), "Channel", "orders").clone();
    assert_eq!(channel.ready, ConditionStatus::False);
    assert_eq!(channel.reason.as_deref(), Some("DispatcherUnreachable"));

    obs.dispatchers
        .insert(BackendKind::Kafka, serving(&plan, 3, false));
    let all = compute(&plan, &obs);
    assert_eq!(find(&all, "Channel", "orders").ready, ConditionStatus::True);
    let sub = find(&all, "Subscription", "audit");
    assert_eq!(sub.ready, ConditionStatus::False);
    assert_eq!(sub.reason.as_deref(), Some("SubscriberNotReady"));
    assert_eq!(sub.message.as_deref(), Some("subscriber unreachable"));
}

#[test]
fn a_channel_not_yet_in_a_contract_waits_for_provisioning() {
    let plan = the_plan();
    let obs = Observations::default();
    let all = compute(&plan, &obs);
    let channel = find(&all, "Channel", "orders");
    assert_eq!(channel.ready, ConditionStatus::Unknown);
    assert_eq!(channel.reason.as_deref(), Some("Provisioning"));
    assert_eq!(
        condition(channel, "DispatcherReady").reason.as_deref(),
        Some("NotInContract")
    );
}

#[test]
fn a_subscription_to_a_missing_channel_is_not_ready_with_the_reason() {
    let plan = the_plan();
    let all = compute(&plan, &healthy(&plan));
    let lost = find(&all, "Subscription", "lost");
    assert_eq!(lost.ready, ConditionStatus::False);
    assert_eq!(lost.reason.as_deref(), Some("ChannelNotFound"));
    assert!(
        lost.message.as_deref().unwrap_or("").contains("nowhere"),
        "{lost:#?}"
    );
    assert_eq!(condition(lost, "Resolved").status, ConditionStatus::False);
}

#[test]
fn a_rejected_backend_change_shows_on_the_channel() {
    let mut plan = the_plan();
    plan.channels[0].rejected = Some(Problem {
        kind: "Channel".into(),
        namespace: "shop".into(),
        name: "orders".into(),
        reason: "BackendImmutable".into(),
        message: "a channel's backend cannot change".into(),
    });
    let all = compute(&plan, &healthy(&plan));
    let channel = find(&all, "Channel", "orders");
    assert_eq!(channel.ready, ConditionStatus::False);
    assert_eq!(channel.reason.as_deref(), Some("BackendImmutable"));
    // Still served: the dispatcher condition is unaffected.
    assert_eq!(
        condition(channel, "DispatcherReady").status,
        ConditionStatus::True
    );
}

#[test]
fn transition_times_move_only_when_a_condition_changes() {
    let plan = the_plan();
    let mut obs = healthy(&plan);
    let mut first = compute(&plan, &obs);
    stamp_transitions(&[], &mut first, "2026-01-01T00:00:00Z");

    let mut same = compute(&plan, &obs);
    stamp_transitions(&first, &mut same, "2026-01-01T00:01:00Z");
    let channel = find(&same, "Channel", "orders");
    assert_eq!(
        condition(channel, "Ready").last_transition_time.as_deref(),
        Some("2026-01-01T00:00:00Z")
    );

    obs.dispatchers.insert(
        BackendKind::Kafka,
        DispatcherObservation::Unreachable("gone".into()),
    );
    let mut changed = compute(&plan, &obs);
    stamp_transitions(&same, &mut changed, "2026-01-01T00:02:00Z");
    let channel = find(&changed, "Channel", "orders");
    assert_eq!(
        condition(channel, "Ready").last_transition_time.as_deref(),
        Some("2026-01-01T00:02:00Z")
    );
    assert_eq!(
        condition(channel, "BackendProvisioned")
            .last_transition_time
            .as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
}

#[test]
fn transport_encryption_announces_https_addresses_with_the_trust_bundle() {
    let with = |mode: &str| {
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{transport-encryption: {mode}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eventing-ca\n  namespace: knative-eventing\n  labels: {{networking.knative.dev/trust-bundle: \"true\"}}\ndata:\n  ca.crt: |\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: copy, namespace: shop}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}\n  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}\n"
        );
        let manifests = load_str("test.yaml", &yaml).expect("valid manifests");
        // Kubernetes addressing: no dispatcher URLs.
        let plan = plan(&manifests, &BTreeMap::new(), &Addressing::default());
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        let all = compute(&plan, &Observations::default());
        let channel: ChannelStatus =
            serde_json::from_value(find(&all, "InMemoryChannel", "orders").status.clone())
                .expect("status");
        let broker: broker::BrokerStatus =
            serde_json::from_value(find(&all, "Broker", "default").status.clone()).expect("status");
        let copy = plan
            .channels
            .iter()
            .flat_map(|c| &c.contract.subscriptions)
            .find(|s| s.name == "copy")
            .map(|s| (**s).clone())
            .expect("copy");
        (channel, broker, copy)
    };
    let https = "https://inmemory-dispatcher.knative-channels.svc.cluster.local/shop/orders";
    let broker_https =
        "https://inmemory-dispatcher.knative-channels.svc.cluster.local/brokers/shop/default";

    let (channel, broker, copy) = with("strict");
    let address = channel.address.expect("address");
    assert_eq!(address.url, https);
    assert!(address.ca_certs.as_deref().unwrap().contains("MIIB"));
    assert_eq!(channel.addresses, vec![address]);
    assert_eq!(broker.address.expect("address").url, broker_https);
    // Senders inside the system use the HTTPS address and trust the bundle.
    assert_eq!(
        copy.subscriber.as_ref().map(|u| u.as_str()),
        Some(broker_https)
    );
    let auth = copy.auth.expect("auth");
    assert!(auth.subscriber.unwrap().ca_certs.unwrap().contains("MIIB"));

    let (channel, _, _) = with("permissive");
    let address = channel.address.expect("address");
    assert_eq!(
        address.url,
        "http://orders-kn-channel.shop.svc.cluster.local"
    );
    let urls: Vec<&str> = channel.addresses.iter().map(|a| a.url.as_str()).collect();
    assert_eq!(
        urls,
        [https, "http://orders-kn-channel.shop.svc.cluster.local"]
    );
    assert!(channel.addresses[0].ca_certs.is_some() && channel.addresses[1].ca_certs.is_none());

    let (channel, _, copy) = with("disabled");
    assert!(channel.addresses.is_empty());
    assert!(channel.address.unwrap().url.starts_with("http://"));
    assert!(copy.auth.is_none());
}
