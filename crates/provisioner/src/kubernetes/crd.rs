//! The Knative resources as Kubernetes custom resources, generated from
//! these Rust types (`provisioner crds` prints them; the checked-in
//! `deploy/kubernetes/crds.yaml` is kept identical by a test).
//!
//! Specs reuse the channel-core vocabulary (`DeliverySpec`, `Destination`,
//! `KReference`, ...); statuses are the Knative control-plane shapes of
//! [`crate::status`]. Free-form backend parameters keep unknown fields
//! (`x-kubernetes-preserve-unknown-fields`), and CEL transition rules make a
//! channel's class and a subscription's channel immutable, as Knative
//! requires.

use crate::status::{ChannelStatus, SubscriptionStatus};
use channel_core::resources::{
    ChannelTemplate, DeliverySpec, Destination, DispatcherRef, KReference, ProvisionerRef,
};
use channel_core::BackendKind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    vec![
        channel,
        subscription,
        InMemoryChannel::crd(),
        KafkaChannel::crd(),
        nats,
        ClusterChannelProvisioner::crd(),
    ]
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
        assert_eq!(all.len(), 6);
        for crd in &all {
            let version = &crd.spec.versions[0];
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            if crd.spec.names.kind == "ClusterChannelProvisioner" {
                assert_eq!(crd.spec.scope, "Cluster");
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
