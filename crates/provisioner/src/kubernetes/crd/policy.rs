//! `eventing.knative.dev/v1alpha1` EventPolicy, as a custom resource: who
//! may send events to which Brokers and channels once OIDC authentication
//! is on (channel-core's `policy`).

use crate::status::policies::EventPolicyStatus;
use channel_core::policy::{PolicyFrom, PolicyTo};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `eventing.knative.dev/v1alpha1` `EventPolicy`: the senders (`from`, OIDC
/// subjects or ServiceAccounts) allowed to send to the Brokers and channels
/// of `to` (every one of the namespace when empty), the events passing
/// `filters`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1alpha1",
    kind = "EventPolicy",
    namespaced,
    status = "EventPolicyStatus",
    category = "all",
    category = "knative",
    category = "eventing",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicySpec {
    /// The Brokers and channels the policy applies to, by `ref` or
    /// `selector`; empty: every one of the policy's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PolicyTo>,
    /// The senders allowed: `sub` (exact, or a prefix ending in `*`) or a
    /// `ref` to a ServiceAccount.
    #[serde(default)]
    pub from: Vec<PolicyFrom>,
    /// Knative's filters (`exact`, `prefix`, `suffix`, `all`, `any`, `not`,
    /// `cesql`) the events must pass too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::filters_schema")]
    pub filters: Vec<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn event_policy_crd_has_status_columns_and_categories() {
        let crd = EventPolicy::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("eventpolicies.eventing.knative.dev")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories,
            Some(vec!["all".into(), "knative".into(), "eventing".into()])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Reason", "Age"]);
        // Knative's EventPolicy, as users write it.
        let policy: EventPolicy = serde_yaml_ng::from_str(
            r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: p, namespace: shop}
spec:
  to: [{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}]
  from: [{sub: "system:serviceaccount:billing:*"}]
  filters: [{prefix: {type: shop.}}]
"#,
        )
        .expect("EventPolicy");
        assert_eq!(policy.spec.to.len(), 1);
        assert_eq!(policy.spec.filters.len(), 1);
    }
}
