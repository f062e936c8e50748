//! Knative resources, field for field as users write them.
//!
//! ```yaml
//! apiVersion: eventing.knative.dev/v1alpha1
//! kind: ClusterChannelProvisioner
//! metadata:
//!   name: kafka
//!   annotations: {eventing.knative.dev/is-default-provisioner: "true"}
//! spec:
//!   backend: kafka
//!   parameters: {bootstrapServers: "kafka:9092", numPartitions: 3}
//! ---
//! apiVersion: messaging.knative.dev/v1
//! kind: Channel
//! metadata: {name: orders, namespace: default}
//! spec:
//!   channelTemplate: {apiVersion: messaging.knative.dev/v1beta1, kind: KafkaChannel, spec: {numPartitions: 6}}
//!   delivery: {retry: 3, backoffPolicy: exponential, backoffDelay: PT0.2S}
//! ---
//! apiVersion: messaging.knative.dev/v1
//! kind: Subscription
//! metadata: {name: audit, namespace: default}
//! spec:
//!   channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
//!   subscriber: {uri: "http://audit.default.svc.cluster.local/"}
//!   delivery: {deadLetterSink: {uri: "http://dlq.default.svc.cluster.local/"}}
//! ```
//!
//! Spec fields are strict (a misspelt `spec.delivery.retyr` is an error, as
//! Knative's API server rejects it); metadata and status are tolerated.

use crate::contract::BackendKind;
use crate::duration::parse_iso8601;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The annotation marking the default `ClusterChannelProvisioner`.
pub const DEFAULT_PROVISIONER_ANNOTATION: &str = "eventing.knative.dev/is-default-provisioner";
/// Subscription annotation choosing ordered or unordered delivery (Knative's Kafka channel name).
pub const DELIVERY_ORDER_ANNOTATION: &str = "kafka.eventing.knative.dev/delivery.order";
/// Subscription annotation setting the number of events in flight.
pub const MAX_IN_FLIGHT_ANNOTATION: &str = "dispatcher.knative.dev/max-in-flight";
/// Name of the class that applies when the manifests define none.
pub const BUILTIN_CLASS: &str = "in-memory-channel";

pub const MESSAGING_V1: &str = "messaging.knative.dev/v1";

/// The subset of Kubernetes `ObjectMeta` the channel layer uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// The namespace, `default` when unset.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// A reference to another object (Knative `KReference`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Knative allows `group` instead of `apiVersion` for some references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Where events go (Knative `duck/v1.Destination`): a reference, a URI, or
/// a reference plus a URI relative to the reference's address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// PEM CA certificates for TLS to this destination (accepted, passed on).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Knative `DeliverySpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    /// `linear` or `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<String>,
    /// ISO-8601 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// ISO-8601 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// ISO-8601 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<String>,
    /// `json` (structured mode) or `binary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A field that fails validation: its path inside the resource and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl DeliverySpec {
    /// Check values the schema cannot: ranges, enums, durations.
    pub fn validate(&self, path: &str) -> Result<(), FieldError> {
        if let Some(retry) = self.retry {
            if retry < 0 {
                return Err(FieldError::new(
                    format!("{path}.retry"),
                    format!("retry must be 0 or more, got {retry}"),
                ));
            }
        }
        if let Some(policy) = &self.backoff_policy {
            if policy != "linear" && policy != "exponential" {
                return Err(FieldError::new(
                    format!("{path}.backoffPolicy"),
                    format!("backoffPolicy {policy:?} is not supported: expected \"linear\" or \"exponential\""),
                ));
            }
        }
        for (field, value) in [
            ("backoffDelay", &self.backoff_delay),
            ("timeout", &self.timeout),
            ("retryAfterMax", &self.retry_after_max),
        ] {
            if let Some(value) = value {
                parse_iso8601(value).map_err(|e| {
                    FieldError::new(format!("{path}.{field}"), format!("{field} {e}"))
                })?;
            }
        }
        if let Some(format) = &self.format {
            if format != "json" && format != "binary" {
                return Err(FieldError::new(
                    format!("{path}.format"),
                    format!("format {format:?} is not supported: expected \"json\" or \"binary\""),
                ));
            }
        }
        if let Some(dls) = &self.dead_letter_sink {
            dls.validate(&format!("{path}.deadLetterSink"))?;
        }
        Ok(())
    }
}

impl Destination {
    /// A destination needs a ref or a URI.
    pub fn validate(&self, path: &str) -> Result<(), FieldError> {
        if self.reference.is_none() && self.uri.as_deref().is_none_or(str::is_empty) {
            return Err(FieldError::new(path, "a destination needs a ref or a uri"));
        }
        if let (None, Some(uri)) = (&self.reference, &self.uri) {
            match url::Url::parse(uri) {
                Err(_) => {
                    return Err(FieldError::new(
                        format!("{path}.uri"),
                        format!("uri {uri:?} is not an absolute URL (a relative uri needs a ref)"),
                    ))
                }
                // Events are delivered over HTTP: no file:, gopher: or
                // other scheme a dispatcher could be made to reach.
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    return Err(FieldError::new(
                        format!("{path}.uri"),
                        format!("uri {uri:?}: the scheme must be http or https"),
                    ))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// `spec.channelTemplate` of a Channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::free_form")
    )]
    pub spec: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reference to a `ClusterChannelProvisioner` (`spec.provisioner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
}

/// `messaging.knative.dev/v1` `Channel` spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_template: Option<ChannelTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<ProvisionerRef>,
    /// Written by Knative's controllers from Subscriptions; ignored here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::any_value")
    )]
    pub subscribers: Option<serde_json::Value>,
}

/// Knative's concrete channel kinds, which users may create directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    /// `messaging.knative.dev/v1` `Channel` (backend chosen by class).
    Channel,
    InMemoryChannel,
    KafkaChannel,
    NatsJetStreamChannel,
}

impl ChannelKind {
    pub fn from_kind(kind: &str) -> Option<ChannelKind> {
        match kind {
            "Channel" => Some(ChannelKind::Channel),
            "InMemoryChannel" => Some(ChannelKind::InMemoryChannel),
            "KafkaChannel" => Some(ChannelKind::KafkaChannel),
            "NatsJetStreamChannel" => Some(ChannelKind::NatsJetStreamChannel),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Channel => "Channel",
            ChannelKind::InMemoryChannel => "InMemoryChannel",
            ChannelKind::KafkaChannel => "KafkaChannel",
            ChannelKind::NatsJetStreamChannel => "NatsJetStreamChannel",
        }
    }

    /// The backend a concrete kind implies (`None` for the generic Channel).
    pub fn backend(self) -> Option<BackendKind> {
        match self {
            ChannelKind::Channel => None,
            ChannelKind::InMemoryChannel => Some(BackendKind::InMemory),
            ChannelKind::KafkaChannel => Some(BackendKind::Kafka),
            ChannelKind::NatsJetStreamChannel => Some(BackendKind::Nats),
        }
    }

    /// The apiVersions Knative serves the kind under.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            ChannelKind::Channel | ChannelKind::InMemoryChannel => &[MESSAGING_V1],
            ChannelKind::KafkaChannel => &[
                "messaging.knative.dev/v1beta1",
                "messaging.knative.dev/v1alpha1",
            ],
            ChannelKind::NatsJetStreamChannel => &["messaging.knative.dev/v1alpha1"],
        }
    }
}

/// A channel of any kind, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelResource {
    pub kind: ChannelKind,
    pub metadata: ObjectMeta,
    /// `spec.channelTemplate` (generic Channel only).
    pub template: Option<ChannelTemplate>,
    pub provisioner: Option<ProvisionerRef>,
    pub delivery: Option<DeliverySpec>,
    /// Backend settings from the concrete kind's spec or the template's spec.
    pub parameters: BTreeMap<String, serde_json::Value>,
}

/// `messaging.knative.dev/v1` `Subscription` spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionSpec {
    pub channel: KReference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscriber: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// A Subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub metadata: ObjectMeta,
    pub spec: SubscriptionSpec,
}

impl Subscription {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.spec.channel.name.is_empty() {
            return Err(FieldError::new(
                "spec.channel.name",
                "the channel name is required",
            ));
        }
        if ChannelKind::from_kind(&self.spec.channel.kind).is_none() {
            return Err(FieldError::new(
                "spec.channel.kind",
                format!(
                    "kind {:?} is not a channel: expected Channel, InMemoryChannel, KafkaChannel or NatsJetStreamChannel",
                    self.spec.channel.kind
                ),
            ));
        }
        if self.spec.subscriber.is_none() && self.spec.reply.is_none() {
            return Err(FieldError::new(
                "spec",
                "a subscription needs a subscriber or a reply",
            ));
        }
        if let Some(d) = &self.spec.subscriber {
            d.validate("spec.subscriber")?;
        }
        if let Some(d) = &self.spec.reply {
            d.validate("spec.reply")?;
        }
        if let Some(d) = &self.spec.delivery {
            d.validate("spec.delivery")?;
        }
        Ok(())
    }
}

/// Where a class's dispatcher is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DispatcherRef {
    /// Base URL of the dispatcher's admin endpoint (for status probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Base URL of the dispatcher's ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `eventing.knative.dev/v1alpha1` `ClusterChannelProvisioner` spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisionerSpec {
    pub backend: BackendKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::resources::free_form")
    )]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatcher: Option<DispatcherRef>,
}

/// A channel class: which backend provisions a Channel, and with what settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterChannelProvisioner {
    pub metadata: ObjectMeta,
    pub spec: ProvisionerSpec,
}

impl ClusterChannelProvisioner {
    /// Whether the class is annotated as the default.
    pub fn is_default(&self) -> bool {
        self.metadata
            .annotations
            .get(DEFAULT_PROVISIONER_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The built-in default class used when the manifests define none.
    pub fn builtin() -> ClusterChannelProvisioner {
        let mut metadata = ObjectMeta {
            name: BUILTIN_CLASS.to_owned(),
            ..ObjectMeta::default()
        };
        metadata
            .annotations
            .insert(DEFAULT_PROVISIONER_ANNOTATION.to_owned(), "true".to_owned());
        ClusterChannelProvisioner {
            metadata,
            spec: ProvisionerSpec {
                backend: BackendKind::InMemory,
                parameters: BTreeMap::new(),
                dispatcher: None,
            },
        }
    }
}

/// The schema of a free-form object: any fields, kept as they are
/// (`x-kubernetes-preserve-unknown-fields`), as Kubernetes' structural
/// schemas require of maps without a fixed shape.
#[cfg(feature = "schema")]
pub fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The schema of a value of any shape, kept as it is.
#[cfg(feature = "schema")]
pub fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_validation_names_the_field() {
        let d = DeliverySpec {
            backoff_delay: Some("5s".into()),
            ..DeliverySpec::default()
        };
        let e = d.validate("spec.delivery").unwrap_err();
        assert_eq!(e.path, "spec.delivery.backoffDelay");
        assert_eq!(
            e.message,
            r#"backoffDelay "5s" is not an ISO-8601 duration, try "PT5S""#
        );
        let d = DeliverySpec {
            retry: Some(-1),
            ..DeliverySpec::default()
        };
        assert_eq!(d.validate("x").unwrap_err().path, "x.retry");
        let d = DeliverySpec {
            backoff_policy: Some("fibonacci".into()),
            ..DeliverySpec::default()
        };
        assert!(d.validate("x").unwrap_err().message.contains("linear"));
        let d = DeliverySpec {
            dead_letter_sink: Some(Destination::default()),
            ..DeliverySpec::default()
        };
        assert_eq!(d.validate("x").unwrap_err().path, "x.deadLetterSink");
    }

    #[test]
    fn destinations_need_a_ref_or_absolute_uri() {
        let d = Destination {
            uri: Some("/relative".into()),
            ..Destination::default()
        };
        assert!(d.validate("spec.subscriber").is_err());
        let d = Destination {
            uri: Some("http://x/".into()),
            ..Destination::default()
        };
        assert!(d.validate("spec.subscriber").is_ok());
    }
}
