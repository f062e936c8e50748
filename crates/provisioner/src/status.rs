//! Knative status, computed from the plan and what was observed.
//!
//! The shapes follow the Knative control-plane spec: a Channel reports
//! `address.url`, `subscribers[]` (uid, observedGeneration, ready, message),
//! `deadLetterSinkUri` and conditions; a Subscription reports
//! `physicalSubscription` (the resolved subscriber, reply and dead-letter
//! URIs) and conditions. `Ready` is the conjunction of the other conditions,
//! and carries the reason and message of the first that is not `True`.
//!
//! Channel conditions:
//! * `Addressable`: the channel has an address.
//! * `BackendProvisioned`: its topic or stream exists with the class's
//!   parameters (reasons `TopicReady`, `StreamReady`, `BufferReady`, or the
//!   failure, e.g. `BrokerUnavailable`).
//! * `DispatcherReady`: the backend's dispatcher applied a contract at least
//!   as new as the one listing the channel, and serves it.
//!
//! Subscription conditions: `ChannelReady`, `Resolved` (every reference
//! resolved), `AddedToChannel` (the dispatcher runs it), `Ready`.

use crate::reconcile::{channel_key, ChannelKey, Plan, PlannedChannel};
use channel_core::compile::Problem;
use channel_core::BackendKind;
use dispatcher::dataplane::Status as DispatcherStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl Condition {
    pub(crate) fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: String,
    ) -> Condition {
        Condition {
            type_: type_.into(),
            status,
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
            message: (!message.is_empty()).then_some(message),
            last_transition_time: None,
        }
    }

    pub(crate) fn ready(type_: &str, reason: &str) -> Condition {
        Condition::new(type_, ConditionStatus::True, reason, String::new())
    }
}

/// `Ready` from the other conditions: `True` when all are, else the first
/// `False`, else the first `Unknown`.
pub(crate) fn summarize(conditions: &mut Vec<Condition>) {
    let worst = conditions
        .iter()
        .find(|c| c.status == ConditionStatus::False)
        .or_else(|| {
            conditions
                .iter()
                .find(|c| c.status == ConditionStatus::Unknown)
        })
        .cloned();
    let ready = match worst {
        Some(c) => Condition {
            type_: "Ready".into(),
            ..c
        },
        None => Condition::ready("Ready", ""),
    };
    conditions.insert(0, ready);
}

/// `status.address` (and each of `status.addresses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Addressable {
    /// `http` or `https`, when both are announced (`transport-encryption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    /// The CA certificates (PEM) an HTTPS address is verified with: the
    /// trust bundle.
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// The OIDC audience of the resource (OIDC on only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl Addressable {
    /// A plain address.
    pub fn plain(url: String) -> Addressable {
        Addressable {
            name: None,
            url,
            ca_certs: None,
            audience: None,
        }
    }
}

/// `status.address` and `status.addresses` of a channel or broker reached
/// at `http` and, with `transport-encryption` on, at `https`, as Knative
/// announces them: `disabled`, the HTTP address alone; `permissive`, both
/// (HTTPS first) with `status.address` the HTTP one; `strict`, HTTPS only.
pub fn addressables(
    features: &channel_core::features::Features,
    http: &str,
    https: Option<&str>,
    audience: Option<String>,
) -> (Addressable, Vec<Addressable>) {
    use channel_core::features::TransportEncryption as T;
    let named = |name: &str, url: &str, ca_certs: Option<String>| Addressable {
        name: Some(name.to_owned()),
        url: url.to_owned(),
        ca_certs,
        audience: audience.clone(),
    };
    let secure = |url: &str| named("https", url, features.trust_bundle.clone());
    match (features.transport_encryption, https) {
        (T::Disabled, _) | (_, None) => (
            Addressable {
                audience: audience.clone(),
                ..Addressable::plain(http.to_owned())
            },
            Vec::new(),
        ),
        (T::Permissive, Some(s)) if s != http => (
            named("http", http, None),
            vec![secure(s), named("http", http, None)],
        ),
        (_, Some(s)) => (secure(s), vec![secure(s)]),
    }
}

/// One entry of a channel's `status.subscribers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberStatus {
    pub uid: String,
    pub observed_generation: i64,
    pub ready: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A channel's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// Every address, with `transport-encryption` on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Addressable>,
    #[serde(default)]
    pub subscribers: Vec<SubscriberStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink_uri: Option<String>,
    /// The EventPolicies applied to the channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<policies::AppliedEventPolicyRef>,
}

/// A subscription's `status.physicalSubscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhysicalSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink_uri: Option<String>,
}

/// A subscription's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    pub physical_subscription: PhysicalSubscription,
}

/// The status of one resource, with the summary `provisioner status` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The backend serving a channel (or the channel of a subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendKind>,
    pub ready: ConditionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A channel's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub status: serde_json::Value,
}

/// Whether a channel's backing resource (topic, stream) is in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// Provisioned; the detail names the resource.
    Ready { reason: String, message: String },
    /// Not yet attempted.
    Pending,
    /// The last attempt failed.
    Failed { reason: String, message: String },
}

/// What the control plane observed of a backend's dispatcher.
#[derive(Debug, Clone)]
pub enum DispatcherObservation {
    /// No admin URL is configured for the backend.
    Unconfigured,
    /// Its admin endpoint did not answer.
    Unreachable(String),
    /// Its `/status`.
    Report(Box<DispatcherStatus>),
}

/// Everything status depends on besides the plan.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    pub provisioning: BTreeMap<ChannelKey, Provisioning>,
    /// Channels listed in the contract last written for their backend.
    pub in_contract: BTreeMap<ChannelKey, bool>,
    /// The generation of the contract last written, per backend.
    pub generations: BTreeMap<BackendKind, u64>,
    pub dispatchers: BTreeMap<BackendKind, DispatcherObservation>,
    /// The source adapters' `/status`.
    pub sources: sources::AdapterObservation,
    /// The webhooks registered for GitHub and GitLab sources.
    pub webhooks: sources::WebhookObservation,
}

/// Compute the status of every channel and subscription: planned ones and
/// the ones that could not be planned.
pub fn compute(plan: &Plan, obs: &Observations) -> Vec<ResourceStatus> {
    let mut out = Vec::new();
    let mut channel_ready: BTreeMap<(String, String), (ConditionStatus, String)> = BTreeMap::new();
    // What each channel's dispatcher serves, read once for the channel and
    // its subscriptions.
    let mut served = Vec::with_capacity(plan.channels.len());
    let reports = ServedIndex::new(obs);
    for channel in &plan.channels {
        let (dispatcher, serving) = dispatcher_condition(channel, obs, &reports);
        served.push(serving);
        let (resource, ready) = channel_status(channel, obs, dispatcher, serving, &plan.features);
        let conditions: Vec<Condition> =
            serde_json::from_value(resource.status["conditions"].clone()).unwrap_or_default();
        if let Some(b) = broker::broker_status(channel, &conditions, &plan.features) {
            out.push(b);
        }
        let c = &channel.contract;
        // A Channel and its concrete channel share a name: either not ready
        // makes subscriptions wait.
        channel_ready
            .entry((c.namespace.clone(), c.name.clone()))
            .and_modify(|r| {
                if ready.0 != ConditionStatus::True {
                    *r = ready.clone();
                }
            })
            .or_insert(ready);
        out.push(resource);
    }
    for (channel, serving) in plan.channels.iter().zip(served) {
        for sub in subscription_statuses(channel, serving, &channel_ready) {
            out.push(sub);
        }
    }
    for problem in &plan.problems {
        out.push(problem_status(problem));
    }
    flows::add_flow_statuses(&plan.flows, &mut out);
    policies::add_policy_statuses(plan, &mut out);
    sources::add_source_statuses(plan, &obs.sources, &obs.webhooks, &mut out);
    out.sort_by(|a, b| {
        (kind_order(&a.kind), &a.namespace, &a.name).cmp(&(
            kind_order(&b.kind),
            &b.namespace,
            &b.name,
        ))
    });
    out
}

fn kind_order(kind: &str) -> (u8, &str) {
    (u8::from(kind == "Subscription" || kind == "Trigger"), kind)
}

/// The channels each dispatcher reported, by backend, namespace, name and
/// uid: built once per round, so ten thousand channels cost ten thousand
/// lookups rather than a scan each.
struct ServedIndex<'a>(
    std::collections::HashMap<
        (BackendKind, &'a str, &'a str, &'a str),
        &'a dispatcher::dataplane::ChannelStatus,
    >,
);

impl<'a> ServedIndex<'a> {
    fn new(obs: &'a Observations) -> Self {
        let mut index = std::collections::HashMap::new();
        for (backend, observation) in &obs.dispatchers {
            if let DispatcherObservation::Report(report) = observation {
                for s in &report.channels {
                    index
                        .entry((
                            *backend,
                            s.namespace.as_str(),
                            s.name.as_str(),
                            s.uid.as_str(),
                        ))
                        .or_insert(s);
                }
            }
        }
        ServedIndex(index)
    }
}

fn dispatcher_condition<'a>(
    channel: &PlannedChannel,
    obs: &'a Observations,
    reports: &ServedIndex<'a>,
) -> (Condition, Option<&'a dispatcher::dataplane::ChannelStatus>) {
    let c = &channel.contract;
    let key = channel_key(c);
    if !obs.in_contract.get(&key).copied().unwrap_or(false) {
        return (
            Condition::new(
                "DispatcherReady",
                ConditionStatus::Unknown,
                "NotInContract",
                format!(
                    "the {} dispatcher is told about the channel once its backing resource is provisioned",
                    c.backend
                ),
            ),
            None,
        );
    }
    let wanted = obs.generations.get(&c.backend).copied().unwrap_or(0);
    match obs.dispatchers.get(&c.backend) {
        None | Some(DispatcherObservation::Unconfigured) => (
            Condition::new(
                "DispatcherReady",
                ConditionStatus::Unknown,
                "DispatcherUnknown",
                format!(
                    "no admin URL is configured for the {} dispatcher (class spec.dispatcher.adminUrl or --dispatcher-admin)",
                    c.backend
                ),
            ),
            None,
        ),
        Some(DispatcherObservation::Unreachable(e)) => (
            Condition::new(
                "DispatcherReady",
                ConditionStatus::False,
                "DispatcherUnreachable",
                format!("the {} dispatcher does not answer: {e}", c.backend),
            ),
            None,
        ),
        Some(DispatcherObservation::Report(report)) => {
            let applied = report.generation.unwrap_or(0);
            if applied < wanted {
                return (
                    Condition::new(
                        "DispatcherReady",
                        ConditionStatus::Unknown,
                        "ContractNotApplied",
                        format!(
                            "the {} dispatcher applied contract generation {applied}, waiting for {wanted}",
                            c.backend
                        ),
                    ),
                    None,
                );
            }
            let served = reports
                .0
                .get(&(
                    c.backend,
                    c.namespace.as_str(),
                    c.name.as_str(),
                    c.uid.as_str(),
                ))
                .copied();
            match served {
                None => (
                    Condition::new(
                        "DispatcherReady",
                        ConditionStatus::False,
                        "ChannelNotServed",
                        format!(
                            "the {} dispatcher applied generation {applied} but does not serve the channel{}",
                            c.backend,
                            report
                                .last_error
                                .as_ref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ),
                    ),
                    None,
                ),
                Some(s) if !s.ready => (
                    Condition::new(
                        "DispatcherReady",
                        ConditionStatus::False,
                        "DispatcherNotReady",
                        s.message.clone().unwrap_or_else(|| "not ready".into()),
                    ),
                    Some(s),
                ),
                Some(s) => (Condition::ready("DispatcherReady", "DispatcherReady"), Some(s)),
            }
        }
    }
}

fn channel_status(
    channel: &PlannedChannel,
    obs: &Observations,
    dispatcher: Condition,
    served: Option<&dispatcher::dataplane::ChannelStatus>,
    features: &channel_core::features::Features,
) -> (ResourceStatus, (ConditionStatus, String)) {
    let oidc = features.oidc.as_ref();
    let c = &channel.contract;
    let key = channel_key(c);
    let (policies_ready, policies) =
        policies::for_resource(oidc, &c.ingress.path, &c.kind, &c.namespace, &c.name);
    let mut conditions = vec![Condition::ready("Addressable", "Addressable")];
    conditions.push(match obs.provisioning.get(&key) {
        Some(Provisioning::Ready { reason, message }) => Condition::new(
            "BackendProvisioned",
            ConditionStatus::True,
            reason,
            message.clone(),
        ),
        None | Some(Provisioning::Pending) => Condition::new(
            "BackendProvisioned",
            ConditionStatus::Unknown,
            "Provisioning",
            format!("provisioning on {}", c.backend),
        ),
        Some(Provisioning::Failed { reason, message }) => Condition::new(
            "BackendProvisioned",
            ConditionStatus::False,
            reason,
            message.clone(),
        ),
    });
    conditions.push(dispatcher);
    conditions.push(policies_ready);
    if let Some(rejected) = &channel.rejected {
        conditions.push(Condition::new(
            "SpecAccepted",
            ConditionStatus::False,
            &rejected.reason,
            rejected.message.clone(),
        ));
    }
    summarize(&mut conditions);
    let subscribers = c
        .subscriptions
        .iter()
        .map(|s| {
            let seen = served.and_then(|ch| ch.subscriptions.iter().find(|x| x.uid == s.uid));
            match seen {
                Some(x) => SubscriberStatus {
                    uid: s.uid.clone(),
                    observed_generation: x.generation,
                    ready: if x.ready {
                        ConditionStatus::True
                    } else {
                        ConditionStatus::False
                    },
                    message: x.message.clone(),
                },
                None => SubscriberStatus {
                    uid: s.uid.clone(),
                    observed_generation: 0,
                    ready: ConditionStatus::Unknown,
                    message: Some("not yet running in the dispatcher".into()),
                },
            }
        })
        .collect();
    let (address, addresses) = addressables(
        features,
        &channel.address,
        channel.https_address.as_deref(),
        oidc.map(|_| channel_core::features::audience(&c.kind, &c.namespace, &c.name)),
    );
    let url = address.url.clone();
    let status = ChannelStatus {
        observed_generation: None,
        address: Some(address),
        addresses,
        subscribers,
        dead_letter_sink_uri: channel.dead_letter_sink.as_ref().map(|u| u.to_string()),
        policies,
        conditions,
    };
    let ready = &status.conditions[0];
    let summary = (
        ready.status,
        ready
            .message
            .clone()
            .or_else(|| ready.reason.clone())
            .unwrap_or_default(),
    );
    let resource = ResourceStatus {
        kind: c.kind.clone(),
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        backend: Some(c.backend),
        ready: ready.status,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
        url: Some(url),
        status: serde_json::to_value(&status).unwrap_or_default(),
    };
    (resource, summary)
}

fn subscription_statuses(
    channel: &PlannedChannel,
    served: Option<&dispatcher::dataplane::ChannelStatus>,
    channel_ready: &BTreeMap<(String, String), (ConditionStatus, String)>,
) -> Vec<ResourceStatus> {
    let c = &channel.contract;
    let (ch_status, ch_message) = channel_ready
        .get(&(c.namespace.clone(), c.name.clone()))
        .cloned()
        .unwrap_or((ConditionStatus::Unknown, String::new()));
    c.subscriptions
        .iter()
        .map(|s| {
            let mut conditions = vec![if ch_status == ConditionStatus::True {
                Condition::ready("ChannelReady", "ChannelReady")
            } else {
                Condition::new(
                    "ChannelReady",
                    ch_status,
                    "ChannelNotReady",
                    format!("{} {}/{}: {ch_message}", c.kind, c.namespace, c.name),
                )
            }];
            conditions.push(Condition::ready("Resolved", "Resolved"));
            let seen = served.and_then(|ch| ch.subscriptions.iter().find(|x| x.uid == s.uid));
            conditions.push(match seen {
                Some(x) if x.ready && x.generation >= s.generation => {
                    Condition::ready("AddedToChannel", "SubscriberReady")
                }
                Some(x) if !x.ready => Condition::new(
                    "AddedToChannel",
                    ConditionStatus::False,
                    "SubscriberNotReady",
                    x.message.clone().unwrap_or_default(),
                ),
                _ => Condition::new(
                    "AddedToChannel",
                    ConditionStatus::Unknown,
                    "SubscriberNotRunning",
                    format!(
                        "waiting for the {} dispatcher to run generation {}",
                        c.backend, s.generation
                    ),
                ),
            });
            summarize(&mut conditions);
            if s.trigger.is_some() {
                return broker::trigger_status(channel, s, &conditions);
            }
            let status = SubscriptionStatus {
                observed_generation: Some(s.generation),
                physical_subscription: PhysicalSubscription {
                    subscriber_uri: s.subscriber.as_ref().map(|u| u.to_string()),
                    reply_uri: s.reply.as_ref().map(|u| u.to_string()),
                    dead_letter_sink_uri: s.dead_letter.as_ref().map(|u| u.to_string()),
                },
                conditions,
            };
            let ready = &status.conditions[0];
            ResourceStatus {
                kind: "Subscription".into(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                backend: Some(c.backend),
                ready: ready.status,
                reason: ready.reason.clone(),
                message: ready.message.clone(),
                url: None,
                status: serde_json::to_value(&status).unwrap_or_default(),
            }
        })
        .collect()
}

fn problem_status(p: &Problem) -> ResourceStatus {
    let condition = Condition::new(
        "Ready",
        ConditionStatus::False,
        &p.reason,
        p.message.clone(),
    );
    let status = if let Some(status) = broker::problem_status(p) {
        Ok(status)
    } else if let Some(status) = sources::problem_status(p) {
        Ok(status)
    } else if p.kind == "EventPolicy" {
        serde_json::to_value(policies::EventPolicyStatus {
            conditions: vec![condition.clone()],
            ..policies::EventPolicyStatus::default()
        })
    } else if p.kind == "Subscription" {
        let mut conditions = vec![Condition::new(
            "Resolved",
            ConditionStatus::False,
            &p.reason,
            p.message.clone(),
        )];
        summarize(&mut conditions);
        serde_json::to_value(SubscriptionStatus {
            conditions,
            ..SubscriptionStatus::default()
        })
    } else {
        serde_json::to_value(ChannelStatus {
            conditions: vec![condition.clone()],
            ..ChannelStatus::default()
        })
    };
    ResourceStatus {
        kind: p.kind.clone(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        backend: None,
        ready: ConditionStatus::False,
        reason: condition.reason,
        message: condition.message,
        url: None,
        status: status.unwrap_or_default(),
    }
}

/// Carry `lastTransitionTime` over from `old` where a condition kept its
/// status, and stamp `now` where it changed.
pub fn stamp_transitions(old: &[ResourceStatus], new: &mut [ResourceStatus], now: &str) {
    // Indexed: a round over ten thousand resources must not compare every
    // new status with every old one.
    let mut by_key: std::collections::HashMap<(&str, &str, &str), &ResourceStatus> =
        std::collections::HashMap::with_capacity(old.len());
    for o in old {
        by_key
            .entry((o.kind.as_str(), o.namespace.as_str(), o.name.as_str()))
            .or_insert(o);
    }
    for resource in new.iter_mut() {
        let before = by_key.get(&(
            resource.kind.as_str(),
            resource.namespace.as_str(),
            resource.name.as_str(),
        ));
        // Read in place: copying and parsing every old condition was a
        // seventh of a standalone round at ten thousand subscriptions.
        let old_conditions: &[serde_json::Value] = before
            .and_then(|b| b.status.get("conditions"))
            .and_then(|c| c.as_array())
            .map_or(&[], Vec::as_slice);
        fn text<'v>(condition: &'v serde_json::Value, name: &str) -> Option<&'v str> {
            condition.get(name).and_then(|v| v.as_str())
        }
        let Some(conditions) = resource
            .status
            .get_mut("conditions")
            .and_then(|c| c.as_array_mut())
        else {
            continue;
        };
        for condition in conditions.iter_mut() {
            let type_ = condition.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let status = condition
                .get("status")
                .and_then(|t| t.as_str())
                .unwrap_or("");
            let kept = old_conditions
                .iter()
                .find(|o| text(o, "type") == Some(type_) && text(o, "status") == Some(status))
                .and_then(|o| text(o, "lastTransitionTime"))
                .map(str::to_owned);
            if let Some(obj) = condition.as_object_mut() {
                obj.insert(
                    "lastTransitionTime".into(),
                    serde_json::Value::String(kept.unwrap_or_else(|| now.to_owned())),
                );
            }
        }
    }
}

mod broker;
mod flows;
pub mod policies;
pub mod sources;
#[cfg(test)]
mod tests;

pub use broker::{BrokerStatus, TriggerStatus};
pub use flows::{ParallelStatus, SequenceStatus};
pub use sources::SourceStatus;
