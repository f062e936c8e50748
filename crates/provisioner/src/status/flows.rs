//! Sequence and Parallel status, from the status of the channels and
//! subscriptions they generated (Knative's shapes).
//!
//! A Sequence reports `address.url` (its first channel's),
//! `channelStatuses[]` and `subscriptionStatuses[]` (one per step, each a
//! reference and its `Ready` condition); a Parallel `address.url` (its
//! ingress channel's), `ingressChannelStatus` and `branchStatuses[]`
//! (filter subscription, branch channel, subscriber subscription).
//! Conditions: `ChannelsReady`, `SubscriptionsReady`, `Addressable`,
//! `Ready`. A generated channel or subscription that is not served at all
//! is `False` with the reason the compiler gave (a step naming nothing, a
//! class that does not exist), which is folded into the flow's status
//! instead of standing as a row of its own.

use super::{summarize, Addressable, Condition, ConditionStatus, ResourceStatus};
use channel_core::compile::{FlowKind, FlowPlan};
use serde::{Deserialize, Serialize};

/// A reference to a generated object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// A generated channel and whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelReadiness {
    pub channel: ObjectReference,
    pub ready: Condition,
}

/// A generated subscription and whether it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReadiness {
    pub subscription: ObjectReference,
    pub ready: Condition,
}

/// One branch of a Parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BranchStatus {
    pub filter_subscription_status: SubscriptionReadiness,
    pub filter_channel_status: ChannelReadiness,
    pub subscriber_subscription_status: SubscriptionReadiness,
}

/// A Sequence's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequenceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default)]
    pub channel_statuses: Vec<ChannelReadiness>,
    #[serde(default)]
    pub subscription_statuses: Vec<SubscriptionReadiness>,
}

/// A Parallel's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParallelStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_channel_status: Option<ChannelReadiness>,
    #[serde(default)]
    pub branch_statuses: Vec<BranchStatus>,
}

/// Looks generated objects up among the rows computed so far, and the
/// flow's own problem rows (taken out: they become conditions).
struct Rows<'a> {
    rows: &'a [ResourceStatus],
    problems: Vec<ResourceStatus>,
    namespace: &'a str,
}

impl Rows<'_> {
    fn find(&self, kind: &str, name: &str) -> Option<&ResourceStatus> {
        self.rows
            .iter()
            .find(|r| r.kind == kind && r.namespace == self.namespace && r.name == name)
    }

    /// The `Ready` condition of generated object `name`; when it is not
    /// served, the reason of the flow's problem naming it.
    fn ready(&self, kind: &str, name: &str) -> Condition {
        if let Some(row) = self.find(kind, name) {
            return Condition::new(
                "Ready",
                row.ready,
                row.reason.as_deref().unwrap_or(""),
                row.message.clone().unwrap_or_default(),
            );
        }
        let token = format!("({} {name})", kind.to_lowercase());
        match self
            .problems
            .iter()
            .find(|p| p.message.as_deref().is_some_and(|m| m.contains(&token)))
        {
            Some(p) => Condition::new(
                "Ready",
                ConditionStatus::False,
                p.reason.as_deref().unwrap_or("NotServed"),
                p.message.clone().unwrap_or_default(),
            ),
            None => Condition::new(
                "Ready",
                ConditionStatus::False,
                "NotServed",
                format!("{kind} {}/{name} is not served", self.namespace),
            ),
        }
    }

    fn channel(&self, name: &str) -> ChannelReadiness {
        ChannelReadiness {
            channel: reference("messaging.knative.dev/v1", "Channel", self.namespace, name),
            ready: self.ready("Channel", name),
        }
    }

    fn subscription(&self, name: &str) -> SubscriptionReadiness {
        SubscriptionReadiness {
            subscription: reference(
                "messaging.knative.dev/v1",
                "Subscription",
                self.namespace,
                name,
            ),
            ready: self.ready("Subscription", name),
        }
    }
}

fn reference(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: namespace.into(),
    }
}

/// `type` is `True` when every one of `all` is ready, else carries the
/// first one that is not (a `False` before an `Unknown`).
fn all_ready<'a>(
    type_: &str,
    reason: &str,
    all: impl Iterator<Item = (&'a ObjectReference, &'a Condition)> + Clone,
) -> Condition {
    let first = |status: ConditionStatus| all.clone().find(|(_, c)| c.status == status);
    match first(ConditionStatus::False).or_else(|| first(ConditionStatus::Unknown)) {
        None => Condition::ready(type_, reason),
        Some((r, c)) => Condition::new(
            type_,
            c.status,
            c.reason.as_deref().unwrap_or(""),
            format!(
                "{} {}: {}",
                r.kind,
                r.name,
                c.message.as_deref().or(c.reason.as_deref()).unwrap_or("")
            ),
        ),
    }
}

fn addressable(rows: &Rows<'_>, channel: &str) -> (Condition, Option<Addressable>) {
    match rows.find("Channel", channel).and_then(|r| r.url.clone()) {
        Some(url) => (
            Condition::ready("Addressable", "Addressable"),
            Some(Addressable::plain(url)),
        ),
        None => (
            Condition::new(
                "Addressable",
                ConditionStatus::False,
                "ChannelNotServed",
                format!("its channel {channel} is not served"),
            ),
            None,
        ),
    }
}

/// Add a row for every planned flow to `out`, folding the flows' problem
/// rows into their conditions.
pub(super) fn add_flow_statuses(flows: &[FlowPlan], out: &mut Vec<ResourceStatus>) {
    let mut rows = Vec::new();
    for flow in flows {
        let kind = flow.kind.as_str();
        let (problems, rest): (Vec<_>, Vec<_>) = std::mem::take(out)
            .into_iter()
            .partition(|r| r.kind == kind && r.namespace == flow.namespace && r.name == flow.name);
        *out = rest;
        let view = Rows {
            rows: out,
            problems,
            namespace: &flow.namespace,
        };
        rows.push(match flow.kind {
            FlowKind::Sequence => sequence(flow, &view),
            FlowKind::Parallel => parallel(flow, &view),
        });
    }
    out.extend(rows);
}

fn row(
    flow: &FlowPlan,
    conditions: &[Condition],
    url: Option<String>,
    status: serde_json::Value,
) -> ResourceStatus {
    let ready = &conditions[0];
    ResourceStatus {
        kind: flow.kind.as_str().into(),
        namespace: flow.namespace.clone(),
        name: flow.name.clone(),
        backend: None,
        ready: ready.status,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
        url,
        status,
    }
}

fn sequence(flow: &FlowPlan, rows: &Rows<'_>) -> ResourceStatus {
    let channel_statuses: Vec<_> = flow.steps.iter().map(|(c, _)| rows.channel(c)).collect();
    let subscription_statuses: Vec<_> = flow
        .steps
        .iter()
        .map(|(_, s)| rows.subscription(s))
        .collect();
    let (address_condition, address) = addressable(rows, &flow.address_channel);
    let mut conditions = vec![
        all_ready(
            "ChannelsReady",
            "ChannelsReady",
            channel_statuses.iter().map(|c| (&c.channel, &c.ready)),
        ),
        all_ready(
            "SubscriptionsReady",
            "SubscriptionsReady",
            subscription_statuses
                .iter()
                .map(|s| (&s.subscription, &s.ready)),
        ),
        address_condition,
    ];
    summarize(&mut conditions);
    let url = address.as_ref().map(|a| a.url.clone());
    let status = SequenceStatus {
        observed_generation: Some(flow.generation),
        conditions: conditions.clone(),
        address,
        channel_statuses,
        subscription_statuses,
    };
    row(
        flow,
        &conditions,
        url,
        serde_json::to_value(status).unwrap_or_default(),
    )
}

fn parallel(flow: &FlowPlan, rows: &Rows<'_>) -> ResourceStatus {
    let ingress = rows.channel(&flow.address_channel);
    let branch_statuses: Vec<BranchStatus> = flow
        .branches
        .iter()
        .map(|b| BranchStatus {
            filter_subscription_status: rows.subscription(&b.filter_subscription),
            filter_channel_status: rows.channel(&b.channel),
            subscriber_subscription_status: rows.subscription(&b.subscription),
        })
        .collect();
    let (address_condition, address) = addressable(rows, &flow.address_channel);
    let channels = std::iter::once((&ingress.channel, &ingress.ready)).chain(
        branch_statuses.iter().map(|b| {
            (
                &b.filter_channel_status.channel,
                &b.filter_channel_status.ready,
            )
        }),
    );
    let subscriptions = branch_statuses.iter().flat_map(|b| {
        [
            (
                &b.filter_subscription_status.subscription,
                &b.filter_subscription_status.ready,
            ),
            (
                &b.subscriber_subscription_status.subscription,
                &b.subscriber_subscription_status.ready,
            ),
        ]
    });
    let mut conditions = vec![
        all_ready("ChannelsReady", "ChannelsReady", channels),
        all_ready("SubscriptionsReady", "SubscriptionsReady", subscriptions),
        address_condition,
    ];
    summarize(&mut conditions);
    let url = address.as_ref().map(|a| a.url.clone());
    let status = ParallelStatus {
        observed_generation: Some(flow.generation),
        conditions: conditions.clone(),
        address,
        ingress_channel_status: Some(ingress),
        branch_statuses,
    };
    row(
        flow,
        &conditions,
        url,
        serde_json::to_value(status).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests;
