//! Broker and Trigger status, from the status of the channel backing the
//! broker and of the trigger's subscription on it.
//!
//! Broker conditions (Knative's channel-based broker): `Addressable`,
//! `IngressReady` and `FilterReady` (the backend's dispatcher serves the
//! broker's ingress and runs its triggers' filters: both are the
//! dispatcher's `DispatcherReady`), `TriggerChannelReady` (the backing
//! channel is Ready), `DeadLetterSinkResolved`, `Ready`.
//!
//! Trigger conditions: `BrokerReady`, `SubscriberResolved`,
//! `SubscriptionReady` (the dispatcher runs it with its filter),
//! `DependencyReady` (no dependency annotation is supported: always
//! `True`), `Ready`.

use super::{summarize, Addressable, Condition, ConditionStatus, ResourceStatus};
use crate::reconcile::PlannedChannel;
use serde::{Deserialize, Serialize};

/// A Broker's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Addressable>,
    /// Every address, with `transport-encryption` on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Addressable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink_uri: Option<String>,
    /// The EventPolicies applied to the broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<super::policies::AppliedEventPolicyRef>,
}

/// A Trigger's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink_uri: Option<String>,
}

fn summary_row(
    kind: &str,
    namespace: &str,
    name: &str,
    channel: &PlannedChannel,
    conditions: &[Condition],
    url: Option<String>,
    status: serde_json::Value,
) -> ResourceStatus {
    let ready = &conditions[0];
    ResourceStatus {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        backend: Some(channel.contract.backend),
        ready: ready.status,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
        url,
        status,
    }
}

/// The status of the broker `channel` backs, given the channel's own
/// conditions (`DispatcherReady` and `Ready` among them).
pub(super) fn broker_status(
    channel: &PlannedChannel,
    channel_conditions: &[Condition],
    features: &channel_core::features::Features,
) -> Option<ResourceStatus> {
    let oidc = features.oidc.as_ref();
    let broker = channel.contract.broker.as_ref()?;
    let ns = &channel.contract.namespace;
    let (policies_ready, policies) =
        super::policies::for_resource(oidc, &broker.ingress.path, "Broker", ns, &broker.name);
    let find = |t: &str| channel_conditions.iter().find(|c| c.type_ == t).cloned();
    let dispatcher = find("DispatcherReady").unwrap_or_else(|| {
        Condition::new(
            "DispatcherReady",
            ConditionStatus::Unknown,
            "DispatcherUnknown",
            String::new(),
        )
    });
    let as_type = |c: &Condition, t: &str, ok: &str| {
        if c.status == ConditionStatus::True {
            Condition::ready(t, ok)
        } else {
            Condition {
                type_: t.into(),
                ..c.clone()
            }
        }
    };
    let channel_ready = find("Ready")
        .unwrap_or_else(|| Condition::new("Ready", ConditionStatus::Unknown, "", String::new()));
    let mut conditions = vec![
        Condition::ready("Addressable", "Addressable"),
        as_type(&dispatcher, "IngressReady", "IngressReady"),
        as_type(&dispatcher, "FilterReady", "FilterReady"),
        if channel_ready.status == ConditionStatus::True {
            Condition::ready("TriggerChannelReady", "ChannelReady")
        } else {
            Condition::new(
                "TriggerChannelReady",
                channel_ready.status,
                channel_ready.reason.as_deref().unwrap_or("ChannelNotReady"),
                format!(
                    "channel {}: {}",
                    channel.contract.name,
                    channel_ready.message.clone().unwrap_or_default()
                ),
            )
        },
        match &channel.dead_letter_sink {
            Some(_) => Condition::ready("DeadLetterSinkResolved", "DeadLetterSinkResolved"),
            None => Condition::ready("DeadLetterSinkResolved", "DeadLetterSinkNotConfigured"),
        },
        policies_ready,
    ];
    summarize(&mut conditions);
    let (address, addresses) = match &channel.broker_address {
        Some(http) => {
            let (a, all) = super::addressables(
                features,
                http,
                channel.broker_https_address.as_deref(),
                oidc.map(|_| channel_core::features::audience("Broker", ns, &broker.name)),
            );
            (Some(a), all)
        }
        None => (None, Vec::new()),
    };
    let url = address.as_ref().map(|a| a.url.clone());
    let status = BrokerStatus {
        observed_generation: None,
        address,
        addresses,
        dead_letter_sink_uri: channel.dead_letter_sink.as_ref().map(|u| u.to_string()),
        policies,
        conditions,
    };
    Some(summary_row(
        "Broker",
        &channel.contract.namespace,
        &broker.name,
        channel,
        &status.conditions,
        url,
        serde_json::to_value(&status).unwrap_or_default(),
    ))
}

/// The status of a trigger, given its subscription's conditions
/// (`ChannelReady`, `AddedToChannel`, ...).
pub(super) fn trigger_status(
    channel: &PlannedChannel,
    sub: &channel_core::SubscriptionContract,
    sub_conditions: &[Condition],
) -> ResourceStatus {
    let find = |t: &str| sub_conditions.iter().find(|c| c.type_ == t).cloned();
    let rename = |c: Option<Condition>, t: &str, ok: &str| match c {
        Some(c) if c.status == ConditionStatus::True => Condition::ready(t, ok),
        Some(c) => Condition {
            type_: t.into(),
            ..c
        },
        None => Condition::new(t, ConditionStatus::Unknown, "", String::new()),
    };
    let mut conditions = vec![
        rename(find("ChannelReady"), "BrokerReady", "BrokerReady"),
        Condition::ready("SubscriberResolved", "SubscriberResolved"),
        rename(
            find("AddedToChannel"),
            "SubscriptionReady",
            "SubscriptionReady",
        ),
        Condition::ready("DependencyReady", "DependencyReady"),
    ];
    summarize(&mut conditions);
    let status = TriggerStatus {
        observed_generation: Some(sub.generation),
        subscriber_uri: sub.subscriber.as_ref().map(|u| u.to_string()),
        dead_letter_sink_uri: sub.dead_letter.as_ref().map(|u| u.to_string()),
        conditions,
    };
    let mut row = summary_row(
        "Trigger",
        &sub.namespace,
        &sub.name,
        channel,
        &status.conditions,
        None,
        serde_json::to_value(&status).unwrap_or_default(),
    );
    row.url = status.subscriber_uri.clone();
    row
}

/// The status of a Broker or Trigger that could not be planned.
pub(super) fn problem_status(p: &channel_core::compile::Problem) -> Option<serde_json::Value> {
    let failed = |t: &str| Condition::new(t, ConditionStatus::False, &p.reason, p.message.clone());
    match p.kind.as_str() {
        "Broker" => {
            let type_ = if p.reason == "DeadLetterSinkResolveFailed" {
                "DeadLetterSinkResolved"
            } else {
                "TriggerChannelReady"
            };
            let mut conditions = vec![failed(type_)];
            summarize(&mut conditions);
            serde_json::to_value(BrokerStatus {
                conditions,
                ..BrokerStatus::default()
            })
            .ok()
        }
        "Trigger" => {
            let type_ = if p.reason == "DeadLetterSinkResolveFailed" {
                "DeadLetterSinkResolved"
            } else if p.reason.starts_with("Broker") {
                "BrokerReady"
            } else {
                "SubscriberResolved"
            };
            let mut conditions = vec![failed(type_)];
            summarize(&mut conditions);
            serde_json::to_value(TriggerStatus {
                conditions,
                ..TriggerStatus::default()
            })
            .ok()
        }
        _ => None,
    }
}
