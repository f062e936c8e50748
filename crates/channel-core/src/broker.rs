//! Knative's Broker and Trigger, field for field as users write them.
//!
//! ```yaml
//! apiVersion: eventing.knative.dev/v1
//! kind: Broker
//! metadata: {name: default, namespace: shop}
//! spec:
//!   config: {apiVersion: v1, kind: ConfigMap, name: kafka-channel, namespace: shop}
//!   delivery: {retry: 3, deadLetterSink: {uri: "http://dlq.shop.svc.cluster.local/"}}
//! ---
//! apiVersion: eventing.knative.dev/v1
//! kind: Trigger
//! metadata: {name: orders, namespace: shop}
//! spec:
//!   broker: default
//!   filters:
//!   - cesql: "type LIKE 'shop.order.%' AND EXISTS region"
//!   subscriber: {ref: {apiVersion: v1, kind: Service, name: orders}}
//! ```
//!
//! A broker of this project's class (`MTChannelBasedBroker`, the default
//! when the class annotation is absent) is backed by one channel named
//! `<broker>-kne-trigger`, as Knative names it; each trigger is a
//! subscription of that channel with a filter. The seeds' forms are
//! accepted too: `eventing.knative.dev/v1alpha1` Broker with
//! `spec.channelTemplate.provisioner` (a `ClusterChannelProvisioner`) or a
//! channel template, and Trigger `spec.filter.sourceAndType`.

use crate::resources::{
    ChannelTemplate, DeliverySpec, Destination, FieldError, KReference, ObjectMeta, ProvisionerRef,
};
use event_filter::spec::{SourceAndType, SubscriptionsApiFilter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The annotation naming a broker's class.
pub const BROKER_CLASS_ANNOTATION: &str = "eventing.knative.dev/broker.class";
/// The broker class this project implements (Knative's channel-based broker).
pub const CHANNEL_BASED_BROKER_CLASS: &str = "MTChannelBasedBroker";
/// The data key of a broker config ConfigMap holding the channel template.
pub const CHANNEL_TEMPLATE_KEY: &str = "channel-template-spec";
/// The namespace label that asks for a `default` broker (Kubernetes).
pub const INJECTION_LABEL: &str = "eventing.knative.dev/injection";
/// The name of the broker a trigger without `spec.broker` belongs to.
pub const DEFAULT_BROKER: &str = "default";

/// The name of the channel backing broker `broker`, as Knative names it.
pub fn trigger_channel_name(broker: &str) -> String {
    format!("{broker}-kne-trigger")
}

/// The seeds' `spec.channelTemplate` of a v1alpha1 Broker: a provisioner
/// reference, or a channel template (`apiVersion`/`kind`/`spec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyChannelTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<ProvisionerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::free_form")
    )]
    pub spec: Option<serde_json::Map<String, serde_json::Value>>,
    /// Ignored (Knative's v1alpha1 ChannelSpec carried it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::any_value")
    )]
    pub arguments: Option<serde_json::Value>,
}

/// `eventing.knative.dev/v1` (and v1alpha1) `Broker` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerSpec {
    /// A `v1` `ConfigMap` whose `channel-template-spec` holds the backing
    /// channel's template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<KReference>,
    /// The default delivery of every trigger that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// v1alpha1: a provisioner reference or a channel template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<LegacyChannelTemplate>,
    /// v1alpha1 (eventing 0.8+): a channel template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template_spec: Option<ChannelTemplate>,
}

/// A Broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Broker {
    pub metadata: ObjectMeta,
    pub spec: BrokerSpec,
}

impl Broker {
    /// The broker's class (`MTChannelBasedBroker` when unannotated).
    pub fn class(&self) -> &str {
        self.metadata
            .annotations
            .get(BROKER_CLASS_ANNOTATION)
            .map(String::as_str)
            .filter(|c| !c.is_empty())
            .unwrap_or(CHANNEL_BASED_BROKER_CLASS)
    }

    /// Whether this project serves the broker.
    pub fn is_ours(&self) -> bool {
        self.class() == CHANNEL_BASED_BROKER_CLASS
    }

    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(config) = &self.spec.config {
            if config.kind != "ConfigMap" {
                return Err(FieldError::new(
                    "spec.config.kind",
                    format!(
                        "kind {:?} is not supported: the broker config is a v1 ConfigMap",
                        config.kind
                    ),
                ));
            }
            if config.name.is_empty() {
                return Err(FieldError::new(
                    "spec.config.name",
                    "the ConfigMap name is required",
                ));
            }
        }
        if let Some(template) = &self.spec.channel_template {
            if template.provisioner.is_none() && template.kind.is_none() {
                return Err(FieldError::new(
                    "spec.channelTemplate",
                    "a channel template needs a provisioner or a kind",
                ));
            }
        }
        if let Some(d) = &self.spec.delivery {
            d.validate("spec.delivery")?;
        }
        Ok(())
    }
}

/// `spec.filter` of a Trigger: v1 `attributes`, or the seeds'
/// `sourceAndType`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// v1alpha1: exact type and source ("" or "Any" match any value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::free_form")
    )]
    pub source_and_type: Option<SourceAndType>,
}

/// `eventing.knative.dev/v1` (and v1alpha1) `Trigger` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    /// The broker's name; `default` when empty. Immutable.
    #[serde(default)]
    pub broker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<TriggerFilterSpec>,
    /// Knative's new filters; when non-empty, `filter` is ignored. Their
    /// schema is recursive, which a CRD's structural schema cannot say: the
    /// entries are kept as written and validated by the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(schema_with = "filter_list"))]
    pub filters: Vec<SubscriptionsApiFilter>,
    pub subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// The schema of `spec.filters`: a list of objects kept as they are.
#[cfg(feature = "schema")]
pub(crate) fn filter_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// A Trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub metadata: ObjectMeta,
    pub spec: TriggerSpec,
}

impl Trigger {
    /// The broker's name, `default` when unset.
    pub fn broker(&self) -> &str {
        if self.spec.broker.is_empty() {
            DEFAULT_BROKER
        } else {
            &self.spec.broker
        }
    }

    /// The exact-match attributes of `spec.filter`, with `sourceAndType`
    /// turned into attributes.
    pub fn filter_attributes(&self) -> BTreeMap<String, String> {
        match &self.spec.filter {
            None => BTreeMap::new(),
            Some(f) => {
                let mut out = f.attributes.clone().unwrap_or_default();
                if let Some(st) = &f.source_and_type {
                    out.extend(event_filter::spec::source_and_type_attributes(st));
                }
                out
            }
        }
    }

    /// Check what the schema cannot: the subscriber, the delivery and every
    /// filter (a CESQL expression must parse; the error names its position).
    pub fn validate(&self) -> Result<(), FieldError> {
        self.spec.subscriber.validate("spec.subscriber")?;
        if let Some(d) = &self.spec.delivery {
            d.validate("spec.delivery")?;
        }
        for name in self.filter_attributes().keys() {
            if !crate::event::is_valid_attribute_name(name) {
                return Err(FieldError::new(
                    format!("spec.filter.attributes.{name}"),
                    format!("{name:?} is not a CloudEvents attribute name (lower-case letters and digits)"),
                ));
            }
        }
        event_filter::spec::validate_filters(&self.spec.filters)
            .map_err(|e| FieldError::new(format!("spec.{}", e.path), e.message))?;
        Ok(())
    }
}

/// A `v1` `ConfigMap`, for broker configs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigMapResource {
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
}

impl ConfigMapResource {
    /// The channel template a broker config holds (`channel-template-spec`,
    /// YAML with `apiVersion`, `kind` and `spec`).
    pub fn channel_template(&self) -> Result<ChannelTemplate, String> {
        let text = self.data.get(CHANNEL_TEMPLATE_KEY).ok_or_else(|| {
            format!(
                "ConfigMap {}/{} has no data key {CHANNEL_TEMPLATE_KEY:?}",
                self.metadata.namespace(),
                self.metadata.name
            )
        })?;
        serde_yaml_ng::from_str::<ChannelTemplate>(text).map_err(|e| {
            format!(
                "ConfigMap {}/{}, {CHANNEL_TEMPLATE_KEY}: {e}",
                self.metadata.namespace(),
                self.metadata.name
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(spec: serde_json::Value) -> Trigger {
        Trigger {
            metadata: ObjectMeta {
                name: "t".into(),
                ..ObjectMeta::default()
            },
            spec: serde_json::from_value(spec).expect("trigger spec"),
        }
    }

    #[test]
    fn broker_defaults_to_default_and_class_to_channel_based() {
        let t = trigger(serde_json::json!({"subscriber": {"uri": "http://x/"}}));
        assert_eq!(t.broker(), "default");
        let b = Broker {
            metadata: ObjectMeta::default(),
            spec: BrokerSpec::default(),
        };
        assert!(b.is_ours());
        let mut other = b.clone();
        other
            .metadata
            .annotations
            .insert(BROKER_CLASS_ANNOTATION.into(), "Kafka".into());
        assert!(!other.is_ours());
    }

    #[test]
    fn source_and_type_becomes_attributes() {
        let t = trigger(serde_json::json!({
            "broker": "default",
            "filter": {"sourceAndType": {"type": "dev.knative.foo", "source": "Any"}},
            "subscriber": {"uri": "http://x/"}
        }));
        let attrs = t.filter_attributes();
        assert_eq!(
            attrs.get("type").map(String::as_str),
            Some("dev.knative.foo")
        );
        assert!(attrs.get("source").is_none_or(|v| v.is_empty()));
    }

    #[test]
    fn bad_cesql_names_field_and_position() {
        let t = trigger(serde_json::json!({
            "filters": [{"exact": {"type": "a"}}, {"cesql": "type = 'a' AND ("}],
            "subscriber": {"uri": "http://x/"}
        }));
        let e = t.validate().unwrap_err();
        assert!(e.path.starts_with("spec.filters[1].cesql"), "{e:?}");
        assert!(e.message.contains("position"), "{e:?}");
    }

    #[test]
    fn config_map_holds_a_channel_template() {
        let cm = ConfigMapResource {
            metadata: ObjectMeta::default(),
            data: BTreeMap::from([(
                CHANNEL_TEMPLATE_KEY.to_owned(),
                "apiVersion: messaging.knative.dev/v1beta1\nkind: KafkaChannel\nspec:\n  numPartitions: 3\n".to_owned(),
            )]),
        };
        let t = cm.channel_template().unwrap();
        assert_eq!(t.kind, "KafkaChannel");
        assert_eq!(t.spec.unwrap()["numPartitions"], 3);
        let empty = ConfigMapResource::default();
        assert!(empty
            .channel_template()
            .unwrap_err()
            .contains("channel-template-spec"));
    }
}
