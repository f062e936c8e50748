//! `flows.knative.dev` Sequence and Parallel, and the event registry's
//! `eventing.knative.dev` EventType, as custom resources.
//!
//! Flows are stored as `v1`; Knative's `v1beta1` is served too, deprecated,
//! with the same schema. (The seeds' `messaging.knative.dev/v1alpha1` flows
//! belong to another API group, which one CRD cannot serve; that form is
//! accepted by `--manifests` and standalone mode.) An EventType is stored as
//! `v1beta2`, the version Knative's registry speaks; `v1beta1`
//! (`spec.broker`) and `v1beta3` (`spec.attributes`) are served with one
//! schema holding the fields of all three, so the API server converts by
//! changing `apiVersion` only and the controller reads any of them into
//! `v1beta2` (channel-core's loader).

use crate::registry::EventTypeStatus;
use crate::status::{ParallelStatus, SequenceStatus};
use channel_core::eventtype::EventAttribute;
use channel_core::flows::{ParallelBranch, SequenceStep};
use channel_core::resources::{ChannelTemplate, Destination, KReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `flows.knative.dev/v1` `Sequence`: steps, each one's reply feeding the
/// next. Compiles into one channel and one subscription per step, named as
/// Knative names them (`<name>-kn-sequence-<i>`).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flows.knative.dev",
    version = "v1",
    kind = "Sequence",
    namespaced,
    status = "SequenceStatus",
    category = "all",
    category = "knative",
    category = "flows",
    label("duck.knative.dev/addressable", "true"),
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.address.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SequenceSpec {
    /// The steps, in order (at least one).
    pub steps: Vec<SequenceStep>,
    /// The kind (and spec) of the generated channels; the default class
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Where the last step's reply goes; nowhere when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// `flows.knative.dev/v1` `Parallel`: branches, each a filter and a
/// subscriber. Compiles into an ingress channel `<name>-kn-parallel` and,
/// per branch, a channel and two subscriptions (Knative's names).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flows.knative.dev",
    version = "v1",
    kind = "Parallel",
    namespaced,
    status = "ParallelStatus",
    category = "all",
    category = "knative",
    category = "flows",
    label("duck.knative.dev/addressable", "true"),
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.address.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ParallelSpec {
    /// The branches (at least one).
    pub branches: Vec<ParallelBranch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    /// Where a branch's reply goes when the branch sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// `eventing.knative.dev/v1beta2` `EventType`: which events a Broker or
/// Channel carries. Declared by users, or auto-created (label
/// `eventing.knative.dev/auto-created: "true"`, owned by the broker or
/// channel) when `eventtype-auto-create` is enabled.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1beta2",
    kind = "EventType",
    namespaced,
    status = "EventTypeStatus",
    category = "all",
    category = "knative",
    category = "eventing",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.source"}"#,
    printcolumn = r#"{"name":"Schema","type":"string","jsonPath":".spec.schema"}"#,
    printcolumn = r#"{"name":"Reference","type":"string","jsonPath":".spec.reference.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeSpec {
    /// The CloudEvents `type`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// The CloudEvents `source` (a URI reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the data's schema is published (`dataschema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The schema itself, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The Broker or Channel carrying these events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// v1beta1: the broker's name (read as a reference to that Broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// v1beta3: the CloudEvents attributes, by name (`type`, `source`,
    /// `dataschema` fill the fields above).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<EventAttribute>,
}
