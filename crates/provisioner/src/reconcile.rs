//! The pure half of reconciling: from manifests (and what was applied
//! before) to the channels each backend should serve.
//!
//! Class selection, defaulting, validation, parameter overlay and
//! destination resolution are `channel_core::compile`'s, shared with the
//! dispatchers' embedded mode. This module adds what only a control plane
//! with memory can decide:
//!
//! * **Immutability.** A channel's backend is fixed at creation, as Knative
//!   requires of `spec.channelTemplate`: when the class or template of an
//!   existing channel would move it to another backend, the change is
//!   rejected. The channel keeps being served where it is (its stored events
//!   stay reachable) and reports `Ready=False` with reason
//!   `BackendImmutable` until the change is undone or the channel is deleted
//!   and created again.
//! * **Addressing.** In standalone mode channels are reached through their
//!   dispatcher's URL and the path `/<namespace>/<name>`; in Kubernetes
//!   through the per-channel Service host Knative names
//!   `<name>-kn-channel.<namespace>.svc.cluster.local`.

use channel_core::broker::trigger_channel_name;
use channel_core::compile::{compile, FlowPlan, Problem};
use channel_core::features::TransportEncryption;
use channel_core::manifests::Manifests;
use channel_core::resources::ChannelKind;
use channel_core::{BackendKind, ChannelContract};
use std::collections::BTreeMap;
use url::Url;

/// Identifies a channel across reconciles: namespace, name and kind (a
/// `Channel` and the concrete channel behind it share namespace and name).
pub type ChannelKey = (String, String, String);

/// The key of a channel in a contract.
pub fn channel_key(c: &ChannelContract) -> ChannelKey {
    (c.namespace.clone(), c.name.clone(), c.kind.clone())
}

/// How channel addresses are formed.
#[derive(Debug, Clone, Default)]
pub struct Addressing {
    /// Base URL of each backend's dispatcher ingress (standalone mode); a
    /// backend without one uses the Kubernetes host name.
    pub dispatcher_urls: BTreeMap<BackendKind, Url>,
}

impl Addressing {
    /// The URL producers post a channel's events to.
    pub fn address(&self, channel: &ChannelContract) -> String {
        match self.dispatcher_urls.get(&channel.backend) {
            Some(base) => {
                let base = base.as_str().trim_end_matches('/');
                format!("{base}{}", channel.ingress.path)
            }
            None => channel.address(),
        }
    }

    /// The URL producers post a broker's events to: the dispatcher URL
    /// and `/brokers/<namespace>/<name>` in standalone mode, else the
    /// broker's `-kn-broker` Service host.
    pub fn broker_address(&self, channel: &ChannelContract) -> Option<String> {
        let broker = channel.broker.as_ref()?;
        Some(match self.dispatcher_urls.get(&channel.backend) {
            Some(base) => {
                let base = base.as_str().trim_end_matches('/');
                format!("{base}{}", broker.ingress.path)
            }
            None => broker.address(),
        })
    }
}

impl Addressing {
    /// A channel's HTTPS address when `transport-encryption` is on: its
    /// dispatcher's TLS host and ingress path in Kubernetes; in standalone
    /// mode the dispatcher URL when it is `https` (else none).
    pub fn https_address(
        &self,
        channel: &ChannelContract,
        tls: TransportEncryption,
    ) -> Option<String> {
        if !tls.is_on() {
            return None;
        }
        match self.dispatcher_urls.get(&channel.backend) {
            Some(base) => (base.scheme() == "https").then(|| self.address(channel)),
            None => Some(channel.https_address()),
        }
    }

    /// A broker's HTTPS address, as [`Addressing::https_address`].
    pub fn broker_https_address(
        &self,
        channel: &ChannelContract,
        tls: TransportEncryption,
    ) -> Option<String> {
        let broker = channel.broker.as_ref()?;
        if !tls.is_on() {
            return None;
        }
        match self.dispatcher_urls.get(&channel.backend) {
            Some(base) => (base.scheme() == "https")
                .then(|| self.broker_address(channel))
                .flatten(),
            None => Some(broker.https_address(channel.backend)),
        }
    }

    /// The planned channel serving `contract`.
    fn planned(
        &self,
        contract: ChannelContract,
        tls: TransportEncryption,
        dead_letter_sink: Option<Url>,
        rejected: Option<Problem>,
    ) -> PlannedChannel {
        PlannedChannel {
            address: self.address(&contract),
            broker_address: self.broker_address(&contract),
            https_address: self.https_address(&contract, tls),
            broker_https_address: self.broker_https_address(&contract, tls),
            contract,
            dead_letter_sink,
            rejected,
        }
    }
}

/// One channel the control plane wants served.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChannel {
    /// What the dispatcher of `contract.backend` is told.
    pub contract: ChannelContract,
    /// The address producers use.
    pub address: String,
    /// The address of the broker the channel backs.
    pub broker_address: Option<String>,
    /// With `transport-encryption` on, the channel's HTTPS address.
    pub https_address: Option<String>,
    /// With `transport-encryption` on, the broker's HTTPS address.
    pub broker_https_address: Option<String>,
    /// The channel's own dead-letter sink, resolved.
    pub dead_letter_sink: Option<Url>,
    /// Why the latest spec was not applied (the channel is served with the
    /// one before it).
    pub rejected: Option<Problem>,
}

/// The outcome of planning.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every channel to serve, sorted by namespace, name and kind.
    pub channels: Vec<PlannedChannel>,
    /// Resources that cannot be served, with the reason.
    pub problems: Vec<Problem>,
    /// What each Sequence and Parallel became (their status is computed
    /// from their generated channels and subscriptions).
    pub flows: Vec<FlowPlan>,
    /// Knative feature flags (`config-features`), written into every contract.
    pub features: channel_core::features::Features,
    /// What the source adapter runs, sinks addressed as the channels are.
    pub sources: Vec<channel_core::sources::SourceContract>,
    /// Every source's resolved sink (`status.sinkUri`), addressed the same way.
    pub source_sinks: channel_core::compile::SourceSinks,
    /// The EventPolicies of the manifests (their status rows).
    pub event_policies: Vec<channel_core::policy::EventPolicy>,
}

impl Plan {
    pub fn channel(&self, key: &ChannelKey) -> Option<&PlannedChannel> {
        self.channels
            .iter()
            .find(|c| &channel_key(&c.contract) == key)
    }
}

/// Plan the channels of `manifests`, given the channels served before
/// (`previous`, from the contracts last written).
pub fn plan(
    manifests: &Manifests,
    previous: &BTreeMap<ChannelKey, ChannelContract>,
    addressing: &Addressing,
) -> Plan {
    let compiled = compile(manifests);
    let tls = compiled.features.transport_encryption;
    let mut problems = compiled.problems;
    let mut channels = Vec::new();
    for contract in compiled.contracts.into_values().flat_map(|c| c.channels) {
        let key = channel_key(&contract);
        let dead_letter_sink = compiled.channel_dead_letters.get(&contract.uid).cloned();
        let planned = match previous.get(&key) {
            Some(before) if before.backend != contract.backend => {
                let problem = Problem {
                    kind: contract.kind.clone(),
                    namespace: contract.namespace.clone(),
                    name: contract.name.clone(),
                    reason: "BackendImmutable".into(),
                    message: format!(
                        "class {:?} selects the {} backend, but the channel was created on {} (class {:?}); \
                         a channel's backend cannot change: delete the channel and create it again. \
                         It is still served by {}",
                        contract.class,
                        contract.backend,
                        before.backend,
                        before.class,
                        before.backend
                    ),
                };
                let mut kept = before.clone();
                kept.subscriptions = contract.subscriptions;
                addressing.planned(kept, tls, dead_letter_sink, Some(problem))
            }
            _ => addressing.planned(contract, tls, dead_letter_sink, None),
        };
        channels.push(planned);
    }
    keep_what_stopped_compiling(&mut channels, &mut problems, previous, addressing, tls);
    channels.sort_by_key(|c| channel_key(&c.contract));
    // Subscriptions reach other channels through their addresses: rewrite
    // destinations that name a channel's cluster host to its planned
    // address (they differ in standalone mode).
    let mut hosts: BTreeMap<String, String> = channels
        .iter()
        .map(|c| (c.contract.ingress.host.clone(), c.address.clone()))
        .collect();
    // With transport-encryption on, addresses name the dispatchers' TLS
    // hosts (standalone: their URLs).
    for (backend, base) in &addressing.dispatcher_urls {
        hosts.insert(channel_core::contract::tls_host(*backend), base.to_string());
    }
    // Brokers too: a trigger's reply is its broker.
    for c in &channels {
        if let (Some(b), Some(address)) = (&c.contract.broker, &c.broker_address) {
            hosts.insert(b.ingress.host.clone(), address.clone());
        }
    }
    for channel in &mut channels {
        for sub in &mut channel.contract.subscriptions {
            let sub = std::sync::Arc::make_mut(sub);
            let boxed = [&mut sub.reply, &mut sub.dead_letter]
                .into_iter()
                .flatten()
                .map(|url| &mut **url);
            for url in sub.subscriber.iter_mut().chain(boxed) {
                rewrite_channel_url(url, &hosts);
            }
        }
        if let Some(url) = &mut channel.dead_letter_sink {
            rewrite_channel_url(url, &hosts);
        }
    }
    // Sources reach their sinks the same way.
    let mut sources = compiled.sources;
    for source in &mut sources {
        rewrite_channel_url(&mut source.sink, &hosts);
        if let Some(url) = &mut source.dead_letter {
            rewrite_channel_url(url, &hosts);
        }
    }
    let mut source_sinks = compiled.source_sinks;
    for url in source_sinks.values_mut() {
        rewrite_channel_url(url, &hosts);
    }
    problems
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    Plan {
        channels,
        problems,
        flows: compiled.flows,
        features: compiled.features,
        sources,
        source_sinks,
        event_policies: manifests.event_policies.clone(),
    }
}

/// A channel or broker that was served but no longer compiles (its class,
/// its config ConfigMap or its template went away or went wrong) stays
/// served exactly as before — topic or stream, ingress, subscriptions — and
/// reports the problem, instead of having its stored events deleted with
/// its backing resource. Deleting the resource itself is what removes it.
fn keep_what_stopped_compiling(
    channels: &mut Vec<PlannedChannel>,
    problems: &mut Vec<Problem>,
    previous: &BTreeMap<ChannelKey, ChannelContract>,
    addressing: &Addressing,
    tls: TransportEncryption,
) {
    let mut kept_problems = Vec::new();
    problems.retain(|p| {
        let key = if p.kind == "Broker" {
            if p.reason == "BrokerClassNotServed" {
                return true;
            }
            (
                p.namespace.clone(),
                trigger_channel_name(&p.name),
                "Channel".to_owned(),
            )
        } else if ChannelKind::from_kind(&p.kind).is_some() {
            (p.namespace.clone(), p.name.clone(), p.kind.clone())
        } else {
            return true;
        };
        let Some(before) = previous.get(&key) else {
            return true;
        };
        if p.kind == "Broker" && before.broker.as_ref().is_none_or(|b| b.name != p.name) {
            return true;
        }
        if channels.iter().any(|c| channel_key(&c.contract) == key) {
            return true;
        }
        channels.push(addressing.planned(before.clone(), tls, None, Some(p.clone())));
        kept_problems.push(before.clone());
        false
    });
    // Its subscriptions are served with it: not problems of their own.
    problems.retain(|p| {
        !kept_problems.iter().any(|c| {
            c.subscriptions.iter().any(|s| {
                s.namespace == p.namespace
                    && s.name == p.name
                    && (p.kind == "Subscription" || p.kind == "Trigger")
            })
        })
    });
}

fn rewrite_channel_url(url: &mut Url, hosts: &BTreeMap<String, String>) {
    let Some(address) = url.host_str().and_then(|h| hosts.get(h)) else {
        return;
    };
    if address.starts_with(&format!("http://{}", url.host_str().unwrap_or_default())) {
        return;
    }
    let Ok(mut base) = Url::parse(address) else {
        return;
    };
    // Keep a relative path the destination added after the channel's own.
    let extra = url.path().trim_start_matches('/');
    if !extra.is_empty() {
        let joined = format!("{}/{extra}", base.path().trim_end_matches('/'));
        base.set_path(&joined);
    }
    base.set_query(url.query());
    *url = base;
}

/// The contracts to write, one per backend in `backends`: the planned
/// channels accepted by `include`, numbered `generation`.
pub fn contracts_for(
    plan: &Plan,
    backends: &[BackendKind],
    mut include: impl FnMut(&PlannedChannel) -> bool,
) -> BTreeMap<BackendKind, Vec<ChannelContract>> {
    let mut out: BTreeMap<BackendKind, Vec<ChannelContract>> =
        backends.iter().map(|b| (*b, Vec::new())).collect();
    for channel in &plan.channels {
        if include(channel) {
            out.entry(channel.contract.backend)
                .or_default()
                .push(channel.contract.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel_core::manifests::load_str;

    const CLASSES: &str = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata:
  name: memory
  annotations: {eventing.knative.dev/is-default-provisioner: "true"}
spec: {backend: inmemory}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: ClusterChannelProvisioner
metadata: {name: kafka}
spec: {backend: kafka, parameters: {bootstrapServers: "k:9092", numPartitions: 3}}
"#;

    fn manifests(extra: &str) -> Manifests {
        load_str("test.yaml", &format!("{CLASSES}\n---\n{extra}")).unwrap()
    }

    fn by_key(plan: &Plan) -> BTreeMap<ChannelKey, ChannelContract> {
        plan.channels
            .iter()
            .map(|c| (channel_key(&c.contract), c.contract.clone()))
            .collect()
    }

    const ORDERS_DEFAULT: &str = r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders, namespace: shop}
spec:
  delivery: {deadLetterSink: {uri: "http://dlq.shop/"}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: audit, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {uri: "http://audit.shop/"}
"#;

    #[test]
    fn a_new_channel_takes_the_backend_its_class_selects() {
        let plan = plan(
            &manifests(ORDERS_DEFAULT),
            &BTreeMap::new(),
            &Addressing::default(),
        );
        assert_eq!(plan.channels.len(), 1);
        let c = &plan.channels[0];
        assert_eq!(c.contract.backend, BackendKind::InMemory);
        assert_eq!(c.contract.class, "memory");
        assert_eq!(c.address, "http://orders-kn-channel.shop.svc.cluster.local");
        assert_eq!(
            c.dead_letter_sink.as_ref().unwrap().as_str(),
            "http://dlq.shop/"
        );
        assert!(c.rejected.is_none());
        assert_eq!(c.contract.subscriptions.len(), 1);
    }

    #[test]
    fn changing_a_channels_backend_is_rejected_and_the_old_one_kept() {
        let before = plan(
            &manifests(ORDERS_DEFAULT),
            &BTreeMap::new(),
            &Addressing::default(),
        );
        let moved = ORDERS_DEFAULT.replace(
            "spec:\n  delivery",
            "spec:\n  provisioner: {name: kafka}\n  delivery",
        );
        let after = plan(&manifests(&moved), &by_key(&before), &Addressing::default());
        let c = &after.channels[0];
        assert_eq!(
            c.contract.backend,
            BackendKind::InMemory,
            "still served where it was"
        );
        let rejected = c.rejected.as_ref().expect("the change is rejected");
        assert_eq!(rejected.reason, "BackendImmutable");
        assert!(rejected.message.contains("kafka"), "{}", rejected.message);
        assert_eq!(
            c.contract.subscriptions.len(),
            1,
            "subscriptions still follow"
        );

        // A parameter change on the same backend is not a backend change.
        let tuned = ORDERS_DEFAULT.replace(
            "spec:\n  delivery",
            "spec:\n  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, spec: {maxEvents: 10}}\n  delivery",
        );
        let after = plan(&manifests(&tuned), &by_key(&before), &Addressing::default());
        assert!(after.channels[0].rejected.is_none());
        assert_eq!(
            after.channels[0].contract.parameters.get("maxEvents"),
            Some(&serde_json::json!(10))
        );
    }

    #[test]
    fn a_served_broker_or_channel_that_stops_compiling_keeps_being_served() {
        let good = r#"
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
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: t, namespace: shop}
spec: {subscriber: {uri: "http://t.shop/"}}
---
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders, namespace: shop}
spec: {provisioner: {name: kafka}}
"#;
        let first = plan(&manifests(good), &BTreeMap::new(), &Addressing::default());
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        let previous = by_key(&first);
        // The ConfigMap and the class go away.
        let broken = good
            .replace(
                "name: kafka-broker, namespace: shop}",
                "name: other, namespace: shop}",
            )
            .replace(
                "{provisioner: {name: kafka}}",
                "{provisioner: {name: gone}}",
            );
        let second = plan(&manifests(&broken), &previous, &Addressing::default());
        assert_eq!(by_key(&second), previous, "both are served as before");
        assert!(second.problems.is_empty(), "{:?}", second.problems);
        let reasons: Vec<&str> = second
            .channels
            .iter()
            .filter_map(|c| c.rejected.as_ref().map(|p| p.reason.as_str()))
            .collect();
        assert_eq!(reasons, ["ConfigNotFound", "ClassNotFound"]);
        // Without a previous contract they are problems, not channels.
        let fresh = plan(
            &manifests(&broken),
            &BTreeMap::new(),
            &Addressing::default(),
        );
        assert!(fresh.channels.is_empty());
        assert_eq!(fresh.problems.len(), 3, "{:?}", fresh.problems);
    }

    #[test]
    fn standalone_addresses_use_the_dispatcher_url_everywhere() {
        let yaml = format!(
            "{ORDERS_DEFAULT}\n---\n{}",
            r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: archive, namespace: shop}
spec: {provisioner: {name: kafka}}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: to-archive, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: archive}}
  reply: {ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: archive}, uri: "replies"}
"#
        );
        let addressing = Addressing {
            dispatcher_urls: [
                (
                    BackendKind::InMemory,
                    Url::parse("http://memory:8080").unwrap(),
                ),
                (
                    BackendKind::Kafka,
                    Url::parse("http://kafka-dispatcher:8080/").unwrap(),
                ),
            ]
            .into(),
        };
        let plan = plan(&manifests(&yaml), &BTreeMap::new(), &addressing);
        let orders = plan
            .channel(&("shop".into(), "orders".into(), "Channel".into()))
            .unwrap();
        assert_eq!(orders.address, "http://memory:8080/shop/orders");
        let sub = orders
            .contract
            .subscriptions
            .iter()
            .find(|s| s.name == "to-archive")
            .unwrap();
        assert_eq!(
            sub.subscriber.as_ref().unwrap().as_str(),
            "http://kafka-dispatcher:8080/shop/archive"
        );
        assert_eq!(
            sub.reply.as_ref().unwrap().as_str(),
            "http://kafka-dispatcher:8080/shop/archive/replies"
        );
    }

    #[test]
    fn unservable_resources_are_problems_with_reasons() {
        let yaml = r#"
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: lost, namespace: shop}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}
  subscriber: {uri: "http://x/"}
"#;
        let plan = plan(&manifests(yaml), &BTreeMap::new(), &Addressing::default());
        assert!(plan.channels.is_empty());
        assert_eq!(plan.problems.len(), 1);
        assert_eq!(plan.problems[0].reason, "ChannelNotFound");
    }

    #[test]
    fn contracts_list_every_backend_even_when_empty() {
        let plan = plan(
            &manifests(ORDERS_DEFAULT),
            &BTreeMap::new(),
            &Addressing::default(),
        );
        let all = [BackendKind::InMemory, BackendKind::Kafka, BackendKind::Nats];
        let contracts = contracts_for(&plan, &all, |_| true);
        assert_eq!(contracts.len(), 3);
        assert_eq!(contracts[&BackendKind::InMemory].len(), 1);
        assert!(contracts[&BackendKind::Kafka].is_empty());
        let none = contracts_for(&plan, &all, |_| false);
        assert!(none[&BackendKind::InMemory].is_empty());
    }
}
