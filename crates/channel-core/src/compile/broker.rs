//! Brokers and Triggers compile down to what the engine already runs.
//!
//! * A Broker of this project's class becomes one channel named
//!   `<broker>-kne-trigger` (Knative's name) whose template comes from the
//!   broker's config ConfigMap (`channel-template-spec`), its v1alpha1
//!   `channelTemplate`/`channelTemplateSpec`, or — with none — the default
//!   class. The broker's `spec.delivery` is that channel's delivery, so it
//!   is the default of every trigger, and its dead-letter sink the
//!   broker's `deadLetterSinkUri`. The channel entry of the contract carries
//!   the broker's own ingress.
//! * A Trigger becomes a subscription of its broker's channel: subscriber
//!   as written, reply to the broker (so replies are seen by every trigger),
//!   delivery its own or the broker's, annotations (ordering, in-flight
//!   window) as for subscriptions, and the filter in the contract.
//!
//! Brokers of another class are left alone and reported as such; so are
//! the triggers on them.

use super::{stable_uid, Problem};
use crate::broker::{trigger_channel_name, Broker, Trigger, BROKER_CLASS_ANNOTATION};
use crate::contract::{broker_ingress, BrokerContract, TriggerContract};
use crate::manifests::Manifests;
use crate::resources::{
    ChannelKind, ChannelResource, ChannelTemplate, Destination, KReference, ObjectMeta,
    Subscription, SubscriptionSpec, MESSAGING_V1,
};
use std::collections::BTreeMap;

/// Group and version of Broker references that resolve to a broker.
pub(super) const EVENTING_GROUP: &str = "eventing.knative.dev";

/// What brokers and triggers expand into.
#[derive(Debug, Default)]
pub(super) struct Expansion {
    /// The channels backing brokers.
    pub channels: Vec<ChannelResource>,
    /// The subscriptions of triggers, with what makes them triggers.
    pub subscriptions: Vec<(Subscription, TriggerContract)>,
    /// Broker of each backing channel, by (namespace, channel name).
    pub brokers: BTreeMap<(String, String), BrokerContract>,
    /// Brokers by (namespace, name): whether this project serves them.
    pub known: BTreeMap<(String, String), bool>,
    pub problems: Vec<Problem>,
}

impl Expansion {
    /// The broker backed by channel `namespace/name`, if any.
    pub fn broker_of_channel(&self, namespace: &str, name: &str) -> Option<&BrokerContract> {
        self.brokers.get(&(namespace.to_owned(), name.to_owned()))
    }
}

fn problem(kind: &str, meta: &ObjectMeta, reason: &str, message: String) -> Problem {
    Problem {
        kind: kind.to_owned(),
        namespace: meta.namespace().to_owned(),
        name: meta.name.clone(),
        reason: reason.to_owned(),
        message,
    }
}

/// The template of a broker's channel; `Ok(None)` means the default class.
fn template_of(
    b: &Broker,
    m: &Manifests,
) -> Result<Option<ChannelResourceParts>, (String, String)> {
    let ns = b.metadata.namespace();
    if let Some(config) = &b.spec.config {
        let cm_ns = config.namespace.as_deref().unwrap_or(ns);
        let cm = m
            .config_maps
            .iter()
            .find(|c| c.metadata.namespace() == cm_ns && c.metadata.name == config.name)
            .ok_or_else(|| {
                (
                    "ConfigNotFound".to_owned(),
                    format!(
                        "spec.config: ConfigMap {cm_ns}/{} does not exist",
                        config.name
                    ),
                )
            })?;
        let template = cm
            .channel_template()
            .map_err(|e| ("InvalidConfig".to_owned(), format!("spec.config: {e}")))?;
        return Ok(Some(ChannelResourceParts::Template(template)));
    }
    if let Some(template) = &b.spec.channel_template_spec {
        return Ok(Some(ChannelResourceParts::Template(template.clone())));
    }
    if let Some(legacy) = &b.spec.channel_template {
        if let Some(provisioner) = &legacy.provisioner {
            return Ok(Some(ChannelResourceParts::Provisioner(provisioner.clone())));
        }
        if let Some(kind) = &legacy.kind {
            return Ok(Some(ChannelResourceParts::Template(ChannelTemplate {
                api_version: legacy.api_version.clone(),
                kind: kind.clone(),
                spec: legacy.spec.clone(),
            })));
        }
    }
    Ok(None)
}

enum ChannelResourceParts {
    Template(ChannelTemplate),
    Provisioner(crate::resources::ProvisionerRef),
}

/// The channel backing broker `b`.
fn channel_of(b: &Broker, parts: Option<ChannelResourceParts>) -> Result<ChannelResource, String> {
    let mut channel = ChannelResource {
        kind: ChannelKind::Channel,
        metadata: ObjectMeta {
            name: trigger_channel_name(&b.metadata.name),
            namespace: Some(b.metadata.namespace().to_owned()),
            ..ObjectMeta::default()
        },
        template: None,
        provisioner: None,
        delivery: b.spec.delivery.clone(),
        parameters: BTreeMap::new(),
    };
    match parts {
        None => {}
        Some(ChannelResourceParts::Provisioner(p)) => channel.provisioner = Some(p),
        Some(ChannelResourceParts::Template(t)) => apply_template(&mut channel, t)?,
    }
    Ok(channel)
}

/// A generic Channel takes its implementation kind and backend settings
/// from a channel template (a broker's config, a flow's `channelTemplate`).
pub(super) fn apply_template(
    channel: &mut ChannelResource,
    t: ChannelTemplate,
) -> Result<(), String> {
    let kind = ChannelKind::from_kind(&t.kind).filter(|k| *k != ChannelKind::Channel);
    if kind.is_none() {
        return Err(format!(
            "channel template kind {:?} is not a channel implementation: expected InMemoryChannel, KafkaChannel or NatsJetStreamChannel",
            t.kind
        ));
    }
    if let Some(spec) = &t.spec {
        for (k, v) in spec {
            if k != "delivery" && k != "subscribers" {
                channel.parameters.insert(k.clone(), v.clone());
            }
        }
    }
    channel.template = Some(t);
    Ok(())
}

/// Expand the brokers and triggers of `m`.
pub(super) fn expand(m: &Manifests) -> Expansion {
    let mut out = Expansion::default();
    let mut delivery_of = BTreeMap::new();
    for b in &m.brokers {
        let ns = b.metadata.namespace().to_owned();
        let key = (ns.clone(), b.metadata.name.clone());
        out.known.insert(key.clone(), b.is_ours());
        if !b.is_ours() {
            out.problems.push(problem(
                "Broker",
                &b.metadata,
                "BrokerClassNotServed",
                format!(
                    "{BROKER_CLASS_ANNOTATION} {:?} is not served here (this project implements MTChannelBasedBroker): left to its own controller",
                    b.class()
                ),
            ));
            continue;
        }
        let channel_name = trigger_channel_name(&b.metadata.name);
        if m.channels
            .iter()
            .any(|c| c.metadata.namespace() == ns && c.metadata.name == channel_name)
        {
            out.problems.push(problem(
                "Broker",
                &b.metadata,
                "ChannelNameTaken",
                format!("a channel {ns}/{channel_name} exists already; the broker's channel needs that name"),
            ));
            continue;
        }
        let channel = template_of(b, m)
            .and_then(|parts| channel_of(b, parts).map_err(|e| ("InvalidConfig".to_owned(), e)));
        match channel {
            Ok(channel) => {
                out.brokers.insert(
                    (ns.clone(), channel_name),
                    BrokerContract {
                        uid: b
                            .metadata
                            .uid
                            .clone()
                            .unwrap_or_else(|| stable_uid("Broker", &ns, &b.metadata.name)),
                        name: b.metadata.name.clone(),
                        ingress: broker_ingress(&ns, &b.metadata.name),
                    },
                );
                delivery_of.insert(key, b.spec.delivery.clone());
                out.channels.push(channel);
            }
            Err((reason, message)) => {
                out.problems
                    .push(problem("Broker", &b.metadata, &reason, message));
            }
        }
    }
    for t in &m.triggers {
        let ns = t.metadata.namespace().to_owned();
        let broker = t.broker().to_owned();
        match out.known.get(&(ns.clone(), broker.clone())) {
            None => {
                out.problems.push(problem(
                    "Trigger",
                    &t.metadata,
                    "BrokerDoesNotExist",
                    format!("Broker {ns}/{broker} does not exist"),
                ));
                continue;
            }
            Some(false) => {
                out.problems.push(problem(
                    "Trigger",
                    &t.metadata,
                    "BrokerClassNotServed",
                    format!("Broker {ns}/{broker} is of a class this project does not serve"),
                ));
                continue;
            }
            Some(true) => {}
        }
        if !delivery_of.contains_key(&(ns.clone(), broker.clone())) {
            out.problems.push(problem(
                "Trigger",
                &t.metadata,
                "BrokerNotReady",
                format!("Broker {ns}/{broker} is not served (see its own problem)"),
            ));
            continue;
        }
        out.subscriptions.push(subscription_of(t));
    }
    out
}

/// The subscription a trigger becomes.
fn subscription_of(t: &Trigger) -> (Subscription, TriggerContract) {
    let ns = t.metadata.namespace().to_owned();
    let broker = t.broker().to_owned();
    let metadata = ObjectMeta {
        uid: Some(
            t.metadata
                .uid
                .clone()
                .unwrap_or_else(|| stable_uid("Trigger", &ns, &t.metadata.name)),
        ),
        generation: t.metadata.generation,
        ..t.metadata.clone()
    };
    let sub = Subscription {
        metadata,
        spec: SubscriptionSpec {
            channel: KReference {
                api_version: Some(MESSAGING_V1.to_owned()),
                kind: "Channel".to_owned(),
                name: trigger_channel_name(&broker),
                namespace: Some(ns),
                group: None,
            },
            subscriber: Some(t.spec.subscriber.clone()),
            reply: Some(Destination {
                reference: Some(KReference {
                    api_version: Some(format!("{EVENTING_GROUP}/v1")),
                    kind: "Broker".to_owned(),
                    name: broker.clone(),
                    namespace: None,
                    group: None,
                }),
                ..Destination::default()
            }),
            // None: the broker's delivery (its channel's) applies.
            delivery: t.spec.delivery.clone(),
        },
    };
    let contract = TriggerContract {
        broker,
        attributes: if t.spec.filters.is_empty() {
            t.filter_attributes()
        } else {
            BTreeMap::new()
        },
        filters: t.spec.filters.clone(),
    };
    (sub, contract)
}

#[cfg(test)]
mod tests {
    use crate::compile::{compile, Compiled};
    use crate::contract::{BackendKind, ChannelContract};
    use crate::manifests::load_str;

    fn compiled(yaml: &str) -> Compiled {
        compile(&load_str("test.yaml", yaml).expect("manifests load"))
    }

    fn broker_channel<'a>(
        c: &'a Compiled,
        backend: BackendKind,
        broker: &str,
    ) -> &'a ChannelContract {
        c.contracts[&backend]
            .channels
            .iter()
            .find(|ch| ch.broker.as_ref().is_some_and(|b| b.name == broker))
            .unwrap_or_else(|| panic!("broker {broker} on {backend}: {c:#?}"))
    }

    const MESH: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop}
spec:
  delivery: {retry: 2, deadLetterSink: {uri: "http://dlq/"}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders, namespace: shop, annotations: {kafka.eventing.knative.dev/delivery.order: ordered}}
spec:
  filter: {attributes: {type: shop.order, source: ""}}
  subscriber: {uri: "http://orders/"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: sql, namespace: shop}
spec:
  broker: default
  filter: {attributes: {type: ignored}}
  filters: [{cesql: "type LIKE 'shop.%'"}]
  subscriber: {ref: {apiVersion: v1, kind: Service, name: sql}}
  delivery: {retry: 5}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: early, namespace: shop}
spec: {broker: later, subscriber: {uri: "http://x/"}}
"#;

    #[test]
    fn a_broker_is_a_channel_and_triggers_are_its_filtered_subscriptions() {
        let c = compiled(MESH);
        let ch = broker_channel(&c, BackendKind::InMemory, "default");
        assert_eq!(ch.name, "default-kne-trigger");
        assert_eq!(ch.class, "in-memory-channel");
        let b = ch.broker.as_ref().unwrap();
        assert_eq!(b.ingress.path, "/brokers/shop/default");
        assert_eq!(b.ingress.host, "default-kn-broker.shop.svc.cluster.local");
        assert_eq!(ch.subscriptions.len(), 2);
        let orders = &ch.subscriptions[0];
        assert_eq!(orders.name, "orders");
        assert_eq!(
            orders.reply.as_ref().unwrap().as_str(),
            "http://default-kn-broker.shop.svc.cluster.local/"
        );
        // The broker's delivery is the default of a trigger that sets none.
        assert_eq!(orders.delivery.retry, 2);
        assert_eq!(orders.dead_letter.as_ref().unwrap().as_str(), "http://dlq/");
        assert_eq!(
            orders.delivery.order,
            crate::contract::DeliveryOrder::Ordered
        );
        let t = orders.trigger.as_ref().unwrap();
        assert_eq!(t.broker, "default");
        assert_eq!(t.attributes["type"], "shop.order");
        let sql = &ch.subscriptions[1];
        assert_eq!(sql.delivery.retry, 5);
        assert!(
            sql.dead_letter.is_none(),
            "a trigger's own delivery wins as a whole"
        );
        assert_eq!(
            sql.subscriber.as_ref().unwrap().as_str(),
            "http://sql.shop.svc.cluster.local/"
        );
        // `filters` win over `filter`.
        assert!(sql.trigger.as_ref().unwrap().attributes.is_empty());
        assert_eq!(sql.trigger.as_ref().unwrap().filters.len(), 1);
        // The broker's dead-letter sink is reported for its status.
        assert_eq!(c.channel_dead_letters[&ch.uid].as_str(), "http://dlq/");
        let early: Vec<_> = c
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.name.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(early, [("Trigger", "early", "BrokerDoesNotExist")]);
    }

    #[test]
    fn broker_config_picks_the_backend() {
        let c = compiled(
            r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: kafka}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092", numPartitions: 3}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: nats}
spec: {backend: nats, parameters: {url: "nats://n:4222"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-channel, namespace: knative-eventing}
data:
  channel-template-spec: |
    apiVersion: messaging.knative.dev/v1beta1
    kind: KafkaChannel
    spec:
      numPartitions: 6
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: k}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: kafka-channel, namespace: knative-eventing}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: Broker
metadata: {name: n}
spec: {channelTemplate: {provisioner: {apiVersion: eventing.knative.dev/v1alpha1, kind: ClusterChannelProvisioner, name: nats}}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: plain}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: missing}
spec: {config: {apiVersion: v1, kind: ConfigMap, name: nope}}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: theirs, annotations: {eventing.knative.dev/broker.class: Kafka}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: Trigger
metadata: {name: old}
spec:
  broker: n
  filter: {sourceAndType: {type: dev.knative.foo, source: Any}}
  subscriber: {dnsName: display.default.svc.cluster.local}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: on-theirs}
spec: {broker: theirs, subscriber: {uri: "http://x/"}}
"#,
        );
        let k = broker_channel(&c, BackendKind::Kafka, "k");
        assert_eq!(k.parameters["numPartitions"], 6);
        assert_eq!(k.parameters["bootstrapServers"], "k:9092");
        let n = broker_channel(&c, BackendKind::Nats, "n");
        assert_eq!(n.class, "nats");
        let old = &n.subscriptions[0];
        assert_eq!(
            old.subscriber.as_ref().unwrap().as_str(),
            "http://display.default.svc.cluster.local/"
        );
        let attrs = &old.trigger.as_ref().unwrap().attributes;
        assert_eq!(attrs["type"], "dev.knative.foo");
        // Classes are declared but none is the default: the built-in
        // in-memory class is, as in Knative.
        assert_eq!(
            broker_channel(&c, BackendKind::InMemory, "plain").class,
            "in-memory-channel"
        );
        let mut problems: Vec<_> = c
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.name.as_str(), p.reason.as_str()))
            .collect();
        problems.sort();
        assert_eq!(
            problems,
            [
                ("Broker", "missing", "ConfigNotFound"),
                ("Broker", "theirs", "BrokerClassNotServed"),
                ("Trigger", "on-theirs", "BrokerClassNotServed"),
            ]
        );
    }

    #[test]
    fn a_bad_filter_is_refused_at_load_naming_trigger_and_position() {
        let e = load_str(
            "bad.yaml",
            "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  filters: [{cesql: \"type = 'a' AND AND\"}]\n  subscriber: {uri: 'http://x/'}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Trigger default/t") && e.contains("spec.filters[0].cesql"),
            "{e}"
        );
        assert!(e.contains("position"), "{e}");
    }
}
