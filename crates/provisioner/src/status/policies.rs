//! EventPolicy status, and what brokers and channels report of the
//! policies applied to them.
//!
//! A Broker or channel lists the EventPolicies applied to it in
//! `status.policies` (`apiVersion`, `name`), gives its OIDC audience in
//! `status.address.audience` when OIDC is on, and has the condition
//! `EventPoliciesReady`: `True` with reason `OIDCDisabled` when OIDC
//! authentication is off, `True` with reason `Ready` (and the count of
//! policies) when it is on.
//!
//! EventPolicy conditions: `SubjectsResolved` (its `from` resolved into
//! OIDC subjects, listed in `status.from`), `TargetsResolved` (every
//! `spec.to` reference names a Broker or channel that exists; reason
//! `TargetNotFound` otherwise), `Ready`.

use super::{summarize, Condition, ConditionStatus, ResourceStatus};
use crate::reconcile::Plan;
use channel_core::features::Oidc;
use channel_core::policy::EventPolicy;
use serde::{Deserialize, Serialize};

/// The API version of EventPolicy, as `status.policies` names it.
pub const EVENT_POLICY_API_VERSION: &str = "eventing.knative.dev/v1alpha1";

/// One entry of a Broker's or channel's `status.policies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedEventPolicyRef {
    pub api_version: String,
    pub name: String,
}

/// An EventPolicy's `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub conditions: Vec<Condition>,
    /// The resolved OIDC subjects of `spec.from`.
    #[serde(default)]
    pub from: Vec<String>,
}

/// The `EventPoliciesReady` condition and `status.policies` of the Broker
/// or channel `kind` `namespace/name` served at ingress `path`.
pub(super) fn for_resource(
    oidc: Option<&Oidc>,
    path: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> (Condition, Vec<AppliedEventPolicyRef>) {
    let Some(oidc) = oidc else {
        return (
            Condition::ready("EventPoliciesReady", "OIDCDisabled"),
            Vec::new(),
        );
    };
    let refs: Vec<AppliedEventPolicyRef> = oidc
        .policies
        .get(path)
        .into_iter()
        .flatten()
        .map(|p| AppliedEventPolicyRef {
            api_version: EVENT_POLICY_API_VERSION.into(),
            // `namespace/name`: the policy is in the resource's namespace.
            name: p
                .name
                .split_once('/')
                .map_or(p.name.as_str(), |(_, n)| n)
                .to_owned(),
        })
        .collect();
    let message = match refs.len() {
        0 => format!(
            "no EventPolicy applies to {kind} {namespace}/{name}: default authorization mode {}",
            serde_json::to_value(oidc.default_authorization_mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ),
        1 => "1 EventPolicy applies".to_owned(),
        n => format!("{n} EventPolicies apply"),
    };
    (
        Condition::new(
            "EventPoliciesReady",
            ConditionStatus::True,
            "Ready",
            message,
        ),
        refs,
    )
}

/// Whether the Broker or channel `kind` `namespace/name` exists: served, or
/// known but not servable (a status row for it is written either way).
fn target_exists(plan: &Plan, kind: &str, namespace: &str, name: &str) -> bool {
    let served = plan.channels.iter().any(|c| {
        let c = &c.contract;
        c.namespace == namespace
            && if kind == "Broker" {
                c.broker.as_ref().is_some_and(|b| b.name == name)
            } else {
                c.kind == kind && c.name == name
            }
    });
    served
        || plan
            .problems
            .iter()
            .any(|p| p.kind == kind && p.namespace == namespace && p.name == name)
}

/// The status of one EventPolicy.
pub(super) fn policy_status(plan: &Plan, policy: &EventPolicy) -> ResourceStatus {
    let namespace = policy.metadata.namespace().to_owned();
    let applied = policy.applied();
    let mut conditions = vec![Condition::new(
        "SubjectsResolved",
        ConditionStatus::True,
        "SubjectsResolved",
        String::new(),
    )];
    let missing = policy.spec.to.iter().enumerate().find_map(|(i, to)| {
        let r = to.reference.as_ref()?;
        (!target_exists(plan, &r.kind, &namespace, &r.name)).then_some((i, r))
    });
    conditions.push(match missing {
        None => Condition::ready("TargetsResolved", "TargetsResolved"),
        Some((i, r)) => Condition::new(
            "TargetsResolved",
            ConditionStatus::False,
            "TargetNotFound",
            format!(
                "spec.to[{i}]: {} {namespace}/{} does not exist",
                r.kind, r.name
            ),
        ),
    });
    summarize(&mut conditions);
    let status = EventPolicyStatus {
        observed_generation: policy.metadata.generation,
        conditions,
        from: applied.subjects,
    };
    let ready = &status.conditions[0];
    ResourceStatus {
        kind: "EventPolicy".into(),
        namespace,
        name: policy.metadata.name.clone(),
        backend: None,
        ready: ready.status,
        reason: ready.reason.clone(),
        message: ready.message.clone(),
        url: None,
        status: serde_json::to_value(&status).unwrap_or_default(),
    }
}

/// A status row for every EventPolicy of the plan.
pub(super) fn add_policy_statuses(plan: &Plan, out: &mut Vec<ResourceStatus>) {
    for policy in &plan.event_policies {
        out.push(policy_status(plan, policy));
    }
}

#[cfg(test)]
mod tests;
