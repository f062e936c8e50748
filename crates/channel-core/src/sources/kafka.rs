//! Knative's `KafkaSource` (`sources.knative.dev/v1beta1`): the records of
//! existing Kafka topics as CloudEvents.
//!
//! The source adapter joins the consumer group `consumerGroup` on
//! `topics` with the Kafka backend's consumer (per-partition flow control,
//! commits of the finished prefix only, rebalancing) and sends each record
//! to the sink with the delivery engine; a record's offset is committed
//! only once the sink's final outcome is known (delivered, or dead-lettered
//! or dropped by the delivery rules), so an adapter killed mid-stream
//! resends what was not finished (at least once).
//!
//! A record that is a CloudEvent in the Kafka protocol binding (binary:
//! `ce_` headers; structured: `content-type: application/cloudevents+json`)
//! is sent as that event. Any other record becomes, as Knative's source
//! makes it: type `dev.knative.kafka.event`, source
//! `/apis/v1/namespaces/<ns>/kafkasources/<name>#<topic>`, subject
//! `partition:<p>#<offset>`, id `partition:<p>/offset:<offset>`, time the
//! record's timestamp, data the value, `datacontenttype` from a
//! `content-type` header, the key as extension `key` and every header as
//! extension `kafkaheader<name>` (when that is a valid attribute name).
//!
//! Ordering: the annotation `kafka.eventing.knative.dev/delivery.order`
//! (`ordered`, Knative's default for sources, or `unordered`).

use super::secret::{SecretRef, SecretValueFromSource};
use super::CloudEventOverrides;
use crate::contract::DeliveryOrder;
use crate::resources::{DeliverySpec, Destination, FieldError};
use serde::{Deserialize, Serialize};

/// The API versions KafkaSource is served at.
pub const KAFKA_SOURCE_VERSIONS: &[&str] = &[
    "sources.knative.dev/v1beta1",
    "sources.knative.dev/v1alpha1",
];
/// The type of a record that is not a CloudEvent.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";
/// The annotation choosing the delivery order.
pub const DELIVERY_ORDER_ANNOTATION: &str = "kafka.eventing.knative.dev/delivery.order";
/// Most consumers one source may run.
pub const MAX_CONSUMERS: u32 = 64;

/// The CloudEvents source of a KafkaSource's records of `topic`.
pub fn kafka_source_uri(namespace: &str, name: &str, topic: &str) -> String {
    format!("/apis/v1/namespaces/{namespace}/kafkasources/{name}#{topic}")
}

/// Where a new consumer group starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    Earliest,
    #[default]
    Latest,
}

/// `spec.net`: SASL and TLS, as Knative's `KafkaNetSpec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct KafkaNetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSaslSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTlsSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct KafkaSaslSpec {
    #[serde(default)]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<SecretValueFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretValueFromSource>,
    /// The mechanism: `PLAIN` (default), `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<SecretValueFromSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct KafkaTlsSpec {
    #[serde(default)]
    pub enable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretValueFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretValueFromSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretValueFromSource>,
}

/// `sources.knative.dev/v1beta1` `KafkaSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    pub bootstrap_servers: Vec<String>,
    pub topics: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_offset: Option<InitialOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<KafkaNetSpec>,
    /// Consumers (group members) the source runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<i32>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CloudEventOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// SASL credentials, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// `None`: PLAIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<SecretRef>,
    pub user: SecretRef,
    pub password: SecretRef,
}

/// TLS material, by reference (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
}

/// What the adapter needs of a KafkaSource (in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSourceSettings {
    pub bootstrap_servers: String,
    pub topics: Vec<String>,
    pub consumer_group: String,
    pub initial_offset: InitialOffset,
    pub consumers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

fn is_topic_name(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl KafkaSourceSpec {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.bootstrap_servers.iter().all(|s| s.trim().is_empty()) {
            return Err(FieldError::new(
                "spec.bootstrapServers",
                "name at least one broker (host:port)",
            ));
        }
        for (i, s) in self.bootstrap_servers.iter().enumerate() {
            for server in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let port = server.rsplit_once(':').map(|(_, p)| p);
                if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                    return Err(FieldError::new(
                        format!("spec.bootstrapServers[{i}]"),
                        format!("{server:?} is not host:port"),
                    ));
                }
            }
        }
        if self.topics.is_empty() {
            return Err(FieldError::new("spec.topics", "name at least one topic"));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if !is_topic_name(t) {
                return Err(FieldError::new(
                    format!("spec.topics[{i}]"),
                    format!("{t:?} is not a Kafka topic name (letters, digits, '.', '_', '-')"),
                ));
            }
        }
        if let Some(c) = self.consumers {
            if c < 1 || c as u32 > MAX_CONSUMERS {
                return Err(FieldError::new(
                    "spec.consumers",
                    format!("{c} is not between 1 and {MAX_CONSUMERS}"),
                ));
            }
        }
        if let Some(net) = &self.net {
            if let Some(sasl) = net.sasl.as_ref().filter(|s| s.enable) {
                for (field, v) in [("user", &sasl.user), ("password", &sasl.password)] {
                    match v {
                        None => {
                            return Err(FieldError::new(
                                format!("spec.net.sasl.{field}"),
                                "required when sasl.enable is true",
                            ))
                        }
                        Some(v) => v.validate(&format!("spec.net.sasl.{field}"))?,
                    }
                }
                if let Some(m) = &sasl.mechanism {
                    m.validate("spec.net.sasl.type")?;
                }
            }
            if let Some(tls) = net.tls.as_ref().filter(|t| t.enable) {
                for (field, v) in [
                    ("cert", &tls.cert),
                    ("key", &tls.key),
                    ("caCert", &tls.ca_cert),
                ] {
                    if let Some(v) = v {
                        v.validate(&format!("spec.net.tls.{field}"))?;
                    }
                }
                if tls.cert.is_some() != tls.key.is_some() {
                    return Err(FieldError::new(
                        "spec.net.tls",
                        "cert and key go together (client authentication)",
                    ));
                }
            }
        }
        if let Some(o) = &self.ce_overrides {
            o.validate("spec.ceOverrides")?;
        }
        if let Some(d) = &self.delivery {
            d.validate("spec.delivery")?;
        }
        self.sink.validate("spec.sink")
    }

    /// The adapter's settings, for a source `namespace/name` with `uid`.
    pub fn settings(&self, namespace: &str, uid: &str) -> KafkaSourceSettings {
        let servers: Vec<&str> = self
            .bootstrap_servers
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let net = self.net.clone().unwrap_or_default();
        let sasl = net.sasl.filter(|s| s.enable).and_then(|s| {
            Some(KafkaSasl {
                mechanism: s.mechanism.map(|m| m.reference(namespace)),
                user: s.user?.reference(namespace),
                password: s.password?.reference(namespace),
            })
        });
        let tls = net.tls.filter(|t| t.enable).map(|t| KafkaTls {
            ca_cert: t.ca_cert.map(|v| v.reference(namespace)),
            cert: t.cert.map(|v| v.reference(namespace)),
            key: t.key.map(|v| v.reference(namespace)),
        });
        KafkaSourceSettings {
            bootstrap_servers: servers.join(","),
            topics: self.topics.clone(),
            consumer_group: self
                .consumer_group
                .clone()
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| format!("knative-kafka-source-{uid}")),
            initial_offset: self.initial_offset.unwrap_or_default(),
            consumers: self
                .consumers
                .map_or(1, |c| c.clamp(1, MAX_CONSUMERS as i32) as u32),
            sasl,
            tls,
        }
    }
}

/// The delivery order the annotation asks for (`None`: not set).
pub fn delivery_order(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Option<DeliveryOrder>, FieldError> {
    match annotations.get(DELIVERY_ORDER_ANNOTATION).map(|s| s.trim()) {
        None => Ok(None),
        Some("ordered") => Ok(Some(DeliveryOrder::Ordered)),
        Some("unordered") => Ok(Some(DeliveryOrder::Unordered)),
        Some(other) => Err(FieldError::new(
            format!("metadata.annotations[{DELIVERY_ORDER_ANNOTATION}]"),
            format!("{other:?} is not ordered or unordered"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "bootstrapServers: ['kafka-0:9092,kafka-1:9092']\ntopics: [orders, payments]\nsink: {uri: 'http://sink/'}\n";

    fn spec(yaml: &str) -> KafkaSourceSpec {
        serde_yaml_ng::from_str(yaml).expect("yaml")
    }

    #[test]
    fn defaults_are_knatives() {
        let s = spec(BASE);
        s.validate().expect("valid");
        let settings = s.settings("shop", "1234");
        assert_eq!(settings.bootstrap_servers, "kafka-0:9092,kafka-1:9092");
        assert_eq!(settings.consumer_group, "knative-kafka-source-1234");
        assert_eq!(settings.initial_offset, InitialOffset::Latest);
        assert_eq!(settings.consumers, 1);
        assert_eq!((settings.sasl, settings.tls), (None, None));
        assert_eq!(
            kafka_source_uri("shop", "orders", "payments"),
            "/apis/v1/namespaces/shop/kafkasources/orders#payments"
        );
    }

    #[test]
    fn net_is_resolved_to_references() {
        let s = spec(&format!("{BASE}consumerGroup: g\ninitialOffset: earliest\nconsumers: 3\nnet:\n  sasl:\n    enable: true\n    user: {{secretKeyRef: {{name: k, key: user}}}}\n    password: {{secretKeyRef: {{name: k, key: password}}}}\n    type: {{secretKeyRef: {{name: k, key: saslType}}}}\n  tls:\n    enable: true\n    caCert: {{file: /etc/ca.crt}}\n"));
        s.validate().expect("valid");
        let settings = s.settings("shop", "u");
        assert_eq!(settings.consumer_group, "g");
        assert_eq!(settings.initial_offset, InitialOffset::Earliest);
        assert_eq!(settings.consumers, 3);
        let sasl = settings.sasl.expect("sasl");
        assert_eq!(
            sasl.password,
            SecretRef::Secret {
                namespace: "shop".into(),
                name: "k".into(),
                key: "password".into()
            }
        );
        assert!(sasl.mechanism.is_some());
        assert_eq!(
            settings.tls.expect("tls").ca_cert,
            Some(SecretRef::File {
                path: "/etc/ca.crt".into()
            })
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                BASE.replace("['kafka-0:9092,kafka-1:9092']", "[]"),
                "spec.bootstrapServers",
            ),
            (
                BASE.replace("kafka-1:9092", "kafka-1"),
                "spec.bootstrapServers[0]",
            ),
            (BASE.replace("[orders, payments]", "[]"), "spec.topics"),
            (BASE.replace("payments", "'pay ments'"), "spec.topics[1]"),
            (format!("{BASE}consumers: 0\n"), "spec.consumers"),
            (
                format!("{BASE}net: {{sasl: {{enable: true}}}}\n"),
                "spec.net.sasl.user",
            ),
        ];
        for (yaml, field) in cases {
            assert_eq!(
                spec(&yaml).validate().expect_err(&yaml).path,
                field,
                "{yaml}"
            );
        }
        assert!(serde_yaml_ng::from_str::<KafkaSourceSpec>(&format!(
            "{BASE}initialOffset: newest\n"
        ))
        .is_err());
    }

    #[test]
    fn the_order_annotation_is_checked() {
        let mut a = std::collections::BTreeMap::new();
        assert_eq!(delivery_order(&a).expect("ok"), None);
        a.insert(DELIVERY_ORDER_ANNOTATION.to_owned(), "unordered".to_owned());
        assert_eq!(
            delivery_order(&a).expect("ok"),
            Some(DeliveryOrder::Unordered)
        );
        a.insert(DELIVERY_ORDER_ANNOTATION.to_owned(), "random".to_owned());
        assert!(delivery_order(&a).is_err());
    }
}
