//! The Knative resources as Kubernetes custom resources, generated from
//! these Rust types (`provisioner crds` prints them; the checked-in
//! `deploy/kubernetes/crds.yaml` is kept identical by a test).
//!
//! Specs reuse the channel-core vocabulary (`DeliverySpec`, `Destination`,
//! `KReference`, ...); statuses are the Knative control-plane shapes of
//! [`crate::status`]. Free-form backend parameters keep unknown fields
//! (`x-kubernetes-preserve-unknown-fields`), and CEL transition rules make a
//! channel's class, a subscription's channel and a trigger's broker
//! immutable, as Knative requires.
//!
//! `Broker` and `Trigger` are stored as `eventing.knative.dev/v1`; the
//! seeds' `v1alpha1` (and Knative's `v1beta1`) are served too, deprecated,
//! with the same schema (it holds the old fields: `spec.channelTemplate`,
//! `spec.filter.sourceAndType`), so the API server converts between them
//! by changing `apiVersion` only and no conversion webhook is needed.

use crate::status::{BrokerStatus, ChannelStatus, SubscriptionStatus, TriggerStatus};
use channel_core::broker::{LegacyChannelTemplate, TriggerFilterSpec};
use channel_core::resources::{
    ChannelTemplate, DeliverySpec, Destination, DispatcherRef, KReference, ProvisionerRef,
};
use channel_core::BackendKind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod flows;
mod policy;
mod sources;
pub use flows::{EventType, EventTypeSpec, Parallel, ParallelSpec, Sequence, SequenceSpec};
pub use policy::{EventPolicy, EventPolicySpec};
pub use sources::{
    ApiServerSource, ApiServerSourceSpec, ContainerSource, ContainerSourceSpec, CronJobSource,
    CronJobSourceSpec, GitHubSource, GitHubSourceSpec, GitLabSource, GitLabSourceSpec, KafkaSource,
    KafkaSourceSpec, LegacyApiServerSource, LegacyApiServerSourceSpec, PingSource, PingSourceSpec,
    SinkBinding, SinkBindingSpec,
};

/// A channel kind: namespaced, Knative's channel status, and the columns
/// `kubectl get` shows for Knative channels (READY, REASON, URL, AGE).
macro_rules! channel_kind {
    (
        $(#[$doc:meta])*
        version = $version:tt, kind = $kind:tt, shortname = $short:tt,
        pub struct $name:ident { $($body:tt)* }
    ) => {
        $(#[$doc])*
        #[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[kube(
            group = "messaging.knative.dev",
            version = $version,
            kind = $kind,
            namespaced,
            status = "ChannelStatus",
            shortname = $short,
            category = "all",
            category = "knative",
            category = "messaging",
            category = "channel",
            printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
            printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
            printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.address.url"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
        )]
        #[serde(rename_all = "camelCase")]
        pub struct $name { $($body)* }
    };
}

channel_kind! {
    /// `messaging.knative.dev/v1` `Channel`: a channel whose backend its class
    /// (`spec.provisioner`, the `spec.channelTemplate` kind, or the default
    /// class) chooses.
    version = "v1", kind = "Channel", shortname = "ch",
    pub struct ChannelSpec {
        /// The concrete channel kind (and its spec) backing this channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub channel_template: Option<ChannelTemplate>,
        /// The ClusterChannelProvisioner class serving this channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub provisioner: Option<ProvisionerRef>,
        /// Delivery defaults for subscriptions that set none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delivery: Option<DeliverySpec>,
        /// Written by Knative's own controllers; not used here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::any_value")]
        pub subscribers: Option<serde_json::Value>,
    }
}

/// `messaging.knative.dev/v1` `Subscription`: delivers a channel's events
/// to a subscriber, optionally forwarding replies.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "messaging.knative.dev",
    version = "v1",
    kind = "Subscription",
    namespaced,
    status = "SubscriptionStatus",
    shortname = "sub",
    category = "all",
    category = "knative",
    category = "messaging",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The channel (any channel kind, same namespace).
    pub channel: KReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

channel_kind! {
    /// `messaging.knative.dev/v1` `InMemoryChannel`.
    version = "v1", kind = "InMemoryChannel", shortname = "imc",
    pub struct InMemoryChannelSpec {
        /// Most events buffered per channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_events: Option<u64>,
        /// Most bytes buffered per channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delivery: Option<DeliverySpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::any_value")]
        pub subscribers: Option<serde_json::Value>,
    }
}

channel_kind! {
    /// `messaging.knative.dev/v1beta1` `KafkaChannel`.
    version = "v1beta1", kind = "KafkaChannel", shortname = "kc",
    pub struct KafkaChannelSpec {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub num_partitions: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub replication_factor: Option<i32>,
        /// ISO-8601 duration, e.g. `PT168H`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub retention_duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delivery: Option<DeliverySpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::any_value")]
        pub subscribers: Option<serde_json::Value>,
    }
}

channel_kind! {
    /// `messaging.knative.dev/v1alpha1` `NatsJetStreamChannel`.
    version = "v1alpha1", kind = "NatsJetStreamChannel", shortname = "njsc",
    pub struct NatsJetStreamChannelSpec {
        /// eventing-natss's stream settings (`overrideName`, `config`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::free_form")]
        pub stream: Option<serde_json::Value>,
        /// Stream limits as flat parameters (`maxAge`, `maxBytes`, ...).
        #[serde(flatten)]
        #[schemars(skip)]
        pub parameters: BTreeMap<String, serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub delivery: Option<DeliverySpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(schema_with = "channel_core::resources::any_value")]
        pub subscribers: Option<serde_json::Value>,
    }
}

/// `eventing.knative.dev/v1alpha1` `ClusterChannelProvisioner`: a channel
/// class, cluster-scoped, naming the backend and its parameters.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1alpha1",
    kind = "ClusterChannelProvisioner",
    shortname = "ccp",
    category = "knative",
    category = "eventing",
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".spec.backend"}"#,
    printcolumn = r#"{"name":"Default","type":"string","jsonPath":".metadata.annotations.eventing\\.knative\\.dev/is-default-provisioner"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterChannelProvisionerSpec {
    pub backend: BackendKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "channel_core::resources::free_form")]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatcher: Option<DispatcherRef>,
}

/// `eventing.knative.dev/v1` `Broker`: an event mesh backed by one channel
/// of the class its `spec.config` (or the default class) chooses. Brokers
/// of another class (`eventing.knative.dev/broker.class`) are left to their
/// own controller.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1",
    kind = "Broker",
    namespaced,
    status = "BrokerStatus",
    category = "all",
    category = "knative",
    category = "eventing",
    label("duck.knative.dev/addressable", "true"),
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.address.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerSpec {
    /// A `v1` `ConfigMap` whose `channel-template-spec` holds the template
    /// of the channel backing the broker (as Knative's
    /// `config-br-default-channel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    /// The default delivery of every trigger that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// v1alpha1: a ClusterChannelProvisioner reference or a channel
    /// template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<LegacyChannelTemplate>,
    /// v1alpha1 (eventing 0.8 and later): a channel template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template_spec: Option<ChannelTemplate>,
}

/// `eventing.knative.dev/v1` `Trigger`: the events of a broker that match
/// its filter, delivered to a subscriber.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventing.knative.dev",
    version = "v1",
    kind = "Trigger",
    namespaced,
    status = "TriggerStatus",
    category = "all",
    category = "knative",
    category = "eventing",
    printcolumn = r#"{"name":"Broker","type":"string","jsonPath":".spec.broker"}"#,
    printcolumn = r#"{"name":"Subscriber_URI","type":"string","jsonPath":".status.subscriberUri"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// The broker's name (`default` when empty). Immutable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub broker: String,
    /// Exact match on attributes (v1alpha1: `sourceAndType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<TriggerFilterSpec>,
    /// Knative's new filters (`exact`, `prefix`, `suffix`, `all`, `any`,
    /// `not`, `cesql`); when non-empty, `filter` is ignored. Checked (CESQL
    /// parsed) by the controller, which reports an invalid one in the
    /// trigger's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "filters_schema")]
    pub filters: Vec<serde_json::Value>,
    pub subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `spec.filter`: Knative's `attributes`, and the seeds' `sourceAndType`
/// (written here rather than derived, so the API does not move with the
/// filter crate's types).
fn filter_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "attributes": {
                "description": "Exact match on context attributes and extensions; an empty value matches any value.",
                "type": "object",
                "additionalProperties": {"type": "string"}
            },
            "sourceAndType": {
                "description": "v1alpha1: exact type and source (\"\" or \"Any\" match any value).",
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "source": {"type": "string"}
                }
            }
        }
    })
}

/// `spec.filters`: the dialects of one filter, with the nested filters of
/// `all`, `any` and `not` kept as written (a structural schema cannot
/// recurse).
pub(crate) fn filters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let attributes = serde_json::json!({
        "type": "object",
        "additionalProperties": {"type": "string"}
    });
    let nested = serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    });
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "exact": attributes,
                "prefix": attributes,
                "suffix": attributes,
                "all": {"type": "array", "items": nested},
                "any": {"type": "array", "items": nested},
                "not": nested,
                "cesql": {"type": "string"}
            }
        }
    })
}

/// Every CRD the channel layer serves, with the CEL rules and free-form
/// fields the derive cannot express.
pub fn crds() -> Vec<CustomResourceDefinition> {
    use kube::CustomResourceExt as _;
    let mut channel = Channel::crd();
    validate_spec(
        &mut channel,
        &[
            (
                "has(self.channelTemplate) == has(oldSelf.channelTemplate) && (!has(self.channelTemplate) || self.channelTemplate == oldSelf.channelTemplate)",
                "spec.channelTemplate is immutable",
            ),
            (
                "has(self.provisioner) == has(oldSelf.provisioner) && (!has(self.provisioner) || self.provisioner == oldSelf.provisioner)",
                "spec.provisioner is immutable",
            ),
        ],
    );
    let mut subscription = Subscription::crd();
    validate_spec(
        &mut subscription,
        &[(
            "self.channel == oldSelf.channel",
            "spec.channel is immutable",
        )],
    );
    let mut nats = NatsJetStreamChannel::crd();
    for version in &mut nats.spec.versions {
        if let Some(spec) = spec_schema(version) {
            spec.x_kubernetes_preserve_unknown_fields = Some(true);
        }
    }
    let mut broker = Broker::crd();
    // `kind: Broker` with no spec at all is the commonest broker (the
    // default class, no config).
    for version in &mut broker.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut());
        if let Some(root) = root {
            if let Some(required) = root.required.as_mut() {
                required.retain(|r| r != "spec");
            }
            if root.required.as_ref().is_some_and(Vec::is_empty) {
                root.required = None;
            }
        }
    }
    serve_older_versions(&mut broker, &OLDER_EVENTING_VERSIONS);
    let mut trigger = Trigger::crd();
    validate_spec(
        &mut trigger,
        &[(
            // An absent or empty broker is `default`, so setting the
            // default explicitly is no change.
            "(has(self.broker) && self.broker != '' ? self.broker : 'default') == (has(oldSelf.broker) && oldSelf.broker != '' ? oldSelf.broker : 'default')",
            "spec.broker is immutable",
        )],
    );
    serve_older_versions(&mut trigger, &OLDER_EVENTING_VERSIONS);
    let mut sequence = Sequence::crd();
    serve_older_versions(&mut sequence, &OLDER_FLOWS_VERSIONS);
    let mut parallel = Parallel::crd();
    serve_older_versions(&mut parallel, &OLDER_FLOWS_VERSIONS);
    let mut event_type = EventType::crd();
    serve_older_versions(&mut event_type, &OTHER_EVENTTYPE_VERSIONS);
    let mut ping = PingSource::crd();
    serve_older_versions(&mut ping, &["v1beta2"]);
    let mut kafka_source = KafkaSource::crd();
    serve_older_versions(&mut kafka_source, &["v1alpha1"]);
    vec![
        channel,
        subscription,
        InMemoryChannel::crd(),
        KafkaChannel::crd(),
        nats,
        ClusterChannelProvisioner::crd(),
        broker,
        trigger,
        sequence,
        parallel,
        event_type,
        ping,
        ApiServerSource::crd(),
        ContainerSource::crd(),
        SinkBinding::crd(),
        CronJobSource::crd(),
        LegacyApiServerSource::crd(),
        GitHubSource::crd(),
        GitLabSource::crd(),
        kafka_source,
        EventPolicy::crd(),
    ]
}

/// The API versions of Broker and Trigger served besides the stored `v1`:
/// the seeds' and Knative's older ones, deprecated.
pub const OLDER_EVENTING_VERSIONS: [&str; 2] = ["v1beta1", "v1alpha1"];

/// The API versions of Sequence and Parallel served besides `v1`.
pub const OLDER_FLOWS_VERSIONS: [&str; 1] = ["v1beta1"];

/// The API versions of EventType served besides the stored `v1beta2`:
/// Knative's older `v1beta1` and newer `v1beta3` (one schema holds the
/// fields of all three).
pub const OTHER_EVENTTYPE_VERSIONS: [&str; 2] = ["v1beta1", "v1beta3"];

/// Serve `versions` with the stored version's schema, deprecated (kubectl
/// warns) when older than it, never stored.
fn serve_older_versions(crd: &mut CustomResourceDefinition, versions: &[&str]) {
    let Some(stored) = crd.spec.versions.first().cloned() else {
        return;
    };
    let group = crd.spec.group.clone();
    for name in versions {
        let mut version = stored.clone();
        version.name = (*name).to_owned();
        version.storage = false;
        // Kubernetes orders versions so: v1 > v1beta3 > v1beta2 > v1beta1.
        if *name < stored.name.as_str() || stored.name == "v1" {
            version.deprecated = Some(true);
            version.deprecation_warning = Some(format!(
                "{group}/{name} {} is deprecated; use {group}/{}",
                crd.spec.names.kind, stored.name
            ));
        }
        crd.spec.versions.push(version);
    }
}

/// The CRDs as one YAML stream, as `provisioner crds` prints them.
pub fn crds_yaml() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# Generated by `provisioner crds` from crates/provisioner/src/kubernetes/crd.rs; do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

type Version = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
type Props = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;

fn spec_schema(version: &mut Version) -> Option<&mut Props> {
    version
        .schema
        .as_mut()?
        .open_api_v3_schema
        .as_mut()?
        .properties
        .as_mut()?
        .get_mut("spec")
}

/// Add CEL transition rules to `spec` (evaluated on update only).
fn validate_spec(crd: &mut CustomResourceDefinition, rules: &[(&str, &str)]) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
    for version in &mut crd.spec.versions {
        if let Some(spec) = spec_schema(version) {
            spec.x_kubernetes_validations = Some(
                rules
                    .iter()
                    .map(|(rule, message)| ValidationRule {
                        rule: (*rule).to_owned(),
                        message: Some((*message).to_owned()),
                        ..ValidationRule::default()
                    })
                    .collect(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_crds_are_the_generated_ones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kubernetes/crds.yaml"
        );
        let on_disk = std::fs::read_to_string(path).expect("deploy/kubernetes/crds.yaml");
        let generated = crds_yaml().expect("yaml");
        assert!(
            on_disk == generated,
            "deploy/kubernetes/crds.yaml is stale: run `cargo run -p provisioner -- crds > deploy/kubernetes/crds.yaml`"
        );
    }

    #[test]
    fn channels_have_status_printer_columns_and_immutable_classes() {
        let all = crds();
        assert_eq!(all.len(), 21);
        for crd in &all {
            let version = &crd.spec.versions[0];
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            if crd.spec.names.kind == "ClusterChannelProvisioner" {
                assert_eq!(crd.spec.scope, "Cluster");
                continue;
            }
            if crd.spec.group != "messaging.knative.dev" {
                // Brokers, triggers, flows, event types: see below.
                continue;
            }
            assert_eq!(crd.spec.scope, "Namespaced", "{name}");
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{name} has a status subresource"
            );
            let columns: Vec<&str> = version
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert!(
                columns.starts_with(&["Ready", "Reason"]),
                "{name}: {columns:?}"
            );
        }
        let channel = &all[0];
        let rules = channel.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("spec"))
            .and_then(|s| s.x_kubernetes_validations.as_ref())
            .expect("rules on Channel.spec");
        assert!(rules
            .iter()
            .any(|r| r.rule.contains("oldSelf.channelTemplate")));
    }

    fn columns(version: &Version) -> Vec<(&str, &str)> {
        version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect()
    }

    fn spec_rules(version: &Version) -> Vec<String> {
        let mut version = version.clone();
        spec_schema(&mut version)
            .and_then(|s| s.x_kubernetes_validations.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.rule)
            .collect()
    }

    #[test]
    fn brokers_and_triggers_are_knatives() {
        let all = crds();
        let find = |kind: &str| {
            all.iter()
                .find(|c| c.spec.names.kind == kind)
                .unwrap_or_else(|| panic!("{kind} CRD"))
        };
        let ready = r#".status.conditions[?(@.type=="Ready")].status"#;
        let reason = r#".status.conditions[?(@.type=="Ready")].reason"#;
        for (kind, expected) in [
            (
                "Broker",
                vec![
                    ("URL", ".status.address.url"),
                    ("Age", ".metadata.creationTimestamp"),
                    ("Ready", ready),
                    ("Reason", reason),
                ],
            ),
            (
                "Trigger",
                vec![
                    ("Broker", ".spec.broker"),
                    ("Subscriber_URI", ".status.subscriberUri"),
                    ("Age", ".metadata.creationTimestamp"),
                    ("Ready", ready),
                    ("Reason", reason),
                ],
            ),
        ] {
            let crd = find(kind);
            assert_eq!(crd.spec.group, "eventing.knative.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(
                    &[
                        "all".to_owned(),
                        "knative".to_owned(),
                        "eventing".to_owned()
                    ][..]
                ),
                "{kind}"
            );
            // v1 stored; the older versions served with the same schema.
            let names: Vec<(&str, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.served, v.storage))
                .collect();
            assert_eq!(
                names,
                [
                    ("v1", true, true),
                    ("v1beta1", true, false),
                    ("v1alpha1", true, false)
                ],
                "{kind}"
            );
            let v1 = &crd.spec.versions[0];
            for version in &crd.spec.versions {
                assert_eq!(version.schema, v1.schema, "{kind} {}", version.name);
                assert_eq!(columns(version), expected, "{kind} {}", version.name);
                assert!(
                    version
                        .subresources
                        .as_ref()
                        .and_then(|s| s.status.as_ref())
                        .is_some(),
                    "{kind} {} has a status subresource",
                    version.name
                );
            }
        }
        let broker = find("Broker");
        assert_eq!(
            broker
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("duck.knative.dev/addressable"))
                .map(String::as_str),
            Some("true"),
            "brokers are Addressable (the resolver ClusterRole aggregates on it)"
        );
        let root = broker.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        assert!(
            root.required.iter().flatten().all(|r| r != "spec"),
            "a Broker needs no spec"
        );
        let rules = spec_rules(&find("Trigger").spec.versions[0]);
        assert!(
            rules.iter().any(|r| r.contains("oldSelf.broker")),
            "{rules:?}"
        );
        // The nested filters are kept as written: a structural schema
        // cannot recurse.
        let mut v1 = find("Trigger").spec.versions[0].clone();
        let filters = spec_schema(&mut v1)
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("filters"))
            .cloned()
            .expect("spec.filters");
        let yaml = serde_yaml_ng::to_string(&filters).expect("yaml");
        assert!(!yaml.contains("$ref"), "{yaml}");
        assert!(yaml.contains("cesql"), "{yaml}");
    }

    #[test]
    fn flows_and_event_types_are_knatives() {
        let all = crds();
        let find = |kind: &str| {
            all.iter()
                .find(|c| c.spec.names.kind == kind)
                .unwrap_or_else(|| panic!("{kind} CRD"))
        };
        for kind in ["Sequence", "Parallel"] {
            let crd = find(kind);
            assert_eq!(crd.spec.group, "flows.knative.dev");
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["all".to_owned(), "knative".into(), "flows".into()][..])
            );
            let versions: Vec<(&str, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.storage, v.deprecated == Some(true)))
                .collect();
            assert_eq!(versions, [("v1", true, false), ("v1beta1", false, true)]);
            let names: Vec<&str> = columns(&crd.spec.versions[0])
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(names, ["URL", "Ready", "Reason", "Age"], "{kind}");
            assert!(crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some());
            assert_eq!(
                crd.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("duck.knative.dev/addressable"))
                    .map(String::as_str),
                Some("true"),
                "{kind} is Addressable"
            );
        }
        let et = find("EventType");
        assert_eq!(et.spec.group, "eventing.knative.dev");
        let versions: Vec<(&str, bool, bool)> = et
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage, v.deprecated == Some(true)))
            .collect();
        assert_eq!(
            versions,
            [
                ("v1beta2", true, false),
                ("v1beta1", false, true),
                ("v1beta3", false, false)
            ]
        );
        assert_eq!(
            columns(&et.spec.versions[0]),
            [
                ("Type", ".spec.type"),
                ("Source", ".spec.source"),
                ("Schema", ".spec.schema"),
                ("Reference", ".spec.reference.name"),
                ("Ready", r#".status.conditions[?(@.type=="Ready")].status"#),
                ("Reason", r#".status.conditions[?(@.type=="Ready")].reason"#),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
        // One schema holds every version's fields.
        let mut v = et.spec.versions[0].clone();
        let props = spec_schema(&mut v)
            .and_then(|s| s.properties.clone())
            .expect("spec properties");
        for field in [
            "type",
            "source",
            "schema",
            "schemaData",
            "reference",
            "broker",
            "attributes",
        ] {
            assert!(props.contains_key(field), "EventType spec.{field}");
        }
    }

    #[test]
    fn knative_flow_and_event_type_yaml_parses_into_the_types() {
        let sequence: Sequence = serde_yaml_ng::from_str(
            r#"
apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {name: pipeline, namespace: shop}
spec:
  channelTemplate: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel}
  steps:
  - ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: first}
  - uri: http://second.shop.svc.cluster.local/
    delivery: {retry: 2}
  reply: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
"#,
        )
        .expect("Sequence");
        assert_eq!(sequence.spec.steps.len(), 2);
        let parallel: Parallel = serde_yaml_ng::from_str(
            r#"
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {name: fanout}
spec:
  branches:
  - filter: {uri: http://even/}
    subscriber: {ref: {apiVersion: v1, kind: Service, name: even}}
  - subscriber: {uri: http://all/}
    reply: {uri: http://log/}
"#,
        )
        .expect("Parallel");
        assert!(parallel.spec.branches[1].filter.is_none());
        let v1beta1: EventType = serde_yaml_ng::from_str(
            "apiVersion: eventing.knative.dev/v1beta1\nkind: EventType\nmetadata: {name: a}\nspec: {type: t, source: /s, broker: default}\n",
        )
        .expect("v1beta1 EventType");
        assert_eq!(v1beta1.spec.broker.as_deref(), Some("default"));
        let v1beta3: EventType = serde_yaml_ng::from_str(
            "apiVersion: eventing.knative.dev/v1beta3\nkind: EventType\nmetadata: {name: a}\nspec:\n  attributes: [{name: type, value: t, required: true}]\n",
        )
        .expect("v1beta3 EventType");
        assert_eq!(v1beta3.spec.attributes[0].value.as_deref(), Some("t"));
    }

    #[test]
    fn sources_are_listed_by_kubectl_get_sources() {
        let all = crds();
        let sources: Vec<(&str, &str)> = all
            .iter()
            .filter(|c| {
                c.spec
                    .names
                    .categories
                    .iter()
                    .flatten()
                    .any(|c| c == "sources")
            })
            .map(|c| (c.spec.group.as_str(), c.spec.names.kind.as_str()))
            .collect();
        assert_eq!(
            sources,
            [
                ("sources.knative.dev", "PingSource"),
                ("sources.knative.dev", "ApiServerSource"),
                ("sources.knative.dev", "ContainerSource"),
                ("sources.knative.dev", "SinkBinding"),
                ("sources.eventing.knative.dev", "CronJobSource"),
                ("sources.eventing.knative.dev", "ApiServerSource"),
                ("sources.knative.dev", "GitHubSource"),
                ("sources.knative.dev", "GitLabSource"),
                ("sources.knative.dev", "KafkaSource"),
            ]
        );
        // KafkaSource: v1beta1 stored, Knative's v1alpha1 served too.
        let kafka = all
            .iter()
            .find(|c| c.spec.names.kind == "KafkaSource")
            .expect("KafkaSource");
        let versions: Vec<(&str, bool, bool)> = kafka
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(
            versions,
            [("v1beta1", true, true), ("v1alpha1", true, false)]
        );
        let names: Vec<&str> = columns(&kafka.spec.versions[0])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "Topics",
                "BootstrapServers",
                "Sink",
                "Age",
                "Ready",
                "Reason"
            ]
        );
        for kind in ["GitHubSource", "GitLabSource"] {
            let crd = all.iter().find(|c| c.spec.names.kind == kind).expect(kind);
            let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(versions, ["v1alpha1"], "{kind}");
            assert!(
                crd.spec.versions[0]
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some()),
                "{kind} has a status subresource"
            );
        }
        // Knative's YAML parses into the types.
        let github: GitHubSource = serde_yaml_ng::from_str(
            "apiVersion: sources.knative.dev/v1alpha1\nkind: GitHubSource\nmetadata: {name: g}\nspec:\n  ownerAndRepository: o/r\n  eventTypes: [push]\n  accessToken: {secretKeyRef: {name: gh, key: accessToken}}\n  secretToken: {secretKeyRef: {name: gh, key: secretToken}}\n  githubAPIURL: https://ghe.example.com/api/v3/\n  sink: {ref: {apiVersion: v1, kind: Service, name: display}}\n",
        )
        .expect("GitHubSource");
        assert_eq!(github.spec.spec.event_types, ["push"]);
        assert_eq!(
            github.spec.spec.github_api_url.as_deref(),
            Some("https://ghe.example.com/api/v3/")
        );
        let kafka: KafkaSource = serde_yaml_ng::from_str(
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {name: k}\nspec:\n  consumerGroup: g\n  bootstrapServers: [my-cluster-kafka-bootstrap.kafka:9092]\n  topics: [knative-demo-topic]\n  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: event-display}}\n",
        )
        .expect("KafkaSource");
        assert_eq!(kafka.spec.spec.topics, ["knative-demo-topic"]);
        let ping = all
            .iter()
            .find(|c| c.spec.names.kind == "PingSource")
            .expect("PingSource");
        let versions: Vec<&str> = ping.spec.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(versions, ["v1", "v1beta2"]);
        let names: Vec<&str> = columns(&ping.spec.versions[0])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["Schedule", "Sink", "Age", "Ready", "Reason"]);
        // The seeds' YAML parses into the v1alpha1 types.
        let cron: CronJobSource = serde_yaml_ng::from_str(
            "apiVersion: sources.eventing.knative.dev/v1alpha1\nkind: CronJobSource\nmetadata: {name: c}\nspec:\n  schedule: '*/2 * * * *'\n  data: '{}'\n  sink: {apiVersion: serving.knative.dev/v1alpha1, kind: Service, name: event-display}\n",
        )
        .expect("CronJobSource");
        assert_eq!(cron.spec.schedule, "*/2 * * * *");
        let api: LegacyApiServerSource = serde_yaml_ng::from_str(
            "apiVersion: sources.eventing.knative.dev/v1alpha1\nkind: ApiServerSource\nmetadata: {name: a}\nspec:\n  serviceAccountName: events-sa\n  mode: Resource\n  resources: [{apiVersion: v1, kind: Event}]\n  sink: {apiVersion: eventing.knative.dev/v1alpha1, kind: Broker, name: default}\n",
        )
        .expect("v1alpha1 ApiServerSource");
        assert_eq!(api.spec.resources[0].kind, "Event");
    }

    #[test]
    fn knative_broker_yaml_parses_into_the_types() {
        let broker: Broker = serde_yaml_ng::from_str(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: shop, annotations: {eventing.knative.dev/broker.class: MTChannelBasedBroker}}
spec:
  config: {apiVersion: v1, kind: ConfigMap, name: kafka-channel, namespace: knative-eventing}
  delivery: {retry: 3, deadLetterSink: {ref: {apiVersion: v1, kind: Service, name: dlq}}}
"#,
        )
        .expect("Broker");
        assert_eq!(
            broker.spec.config.as_ref().map(|c| c.name.as_str()),
            Some("kafka-channel")
        );
        let seeds: Broker = serde_yaml_ng::from_str(
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: Broker\nmetadata: {name: default}\nspec:\n  channelTemplate:\n    provisioner: {apiVersion: eventing.knative.dev/v1alpha1, kind: ClusterChannelProvisioner, name: kafka}\n",
        )
        .expect("v1alpha1 Broker");
        assert!(seeds.spec.channel_template.is_some());
        let trigger: Trigger = serde_yaml_ng::from_str(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: orders, namespace: shop}
spec:
  broker: default
  filter: {attributes: {type: shop.order}}
  filters:
  - any: [{exact: {type: a}}, {not: {prefix: {source: /x}}}]
  - cesql: "type LIKE 'shop.%'"
  subscriber: {ref: {apiVersion: v1, kind: Service, name: orders}, uri: /in}
  delivery: {retry: 2}
"#,
        )
        .expect("Trigger");
        assert_eq!(trigger.spec.filters.len(), 2);
        let back = serde_json::to_value(&trigger.spec).expect("json");
        assert_eq!(
            back["filters"][0]["any"][1]["not"]["prefix"]["source"],
            "/x"
        );
    }

    #[test]
    fn knative_yaml_parses_into_the_types() {
        let channel: Channel = serde_yaml_ng::from_str(
            r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders, namespace: shop}
spec:
  channelTemplate: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, spec: {numPartitions: 3}}
  delivery: {retry: 2, deadLetterSink: {ref: {apiVersion: v1, kind: Service, name: dlq}}}
"#,
        )
        .expect("Channel");
        assert_eq!(
            channel
                .spec
                .channel_template
                .as_ref()
                .map(|t| t.kind.as_str()),
            Some("KafkaChannel")
        );
        let nats: NatsJetStreamChannel = serde_yaml_ng::from_str(
            "apiVersion: messaging.knative.dev/v1alpha1\nkind: NatsJetStreamChannel\nmetadata: {name: a}\nspec: {maxAge: PT1H, stream: {overrideName: A}}\n",
        )
        .expect("NatsJetStreamChannel");
        assert_eq!(
            nats.spec.parameters.get("maxAge"),
            Some(&serde_json::json!("PT1H"))
        );
    }
}
