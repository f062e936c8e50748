//! Knative's event registry: `EventType` objects saying which events a
//! consumer can subscribe to from which Broker or Channel, so nobody needs
//! out-of-band knowledge to write a Trigger.
//!
//! Accepted as users write them:
//!
//! ```yaml
//! apiVersion: eventing.knative.dev/v1beta2
//! kind: EventType
//! metadata: {name: github-push, namespace: default}
//! spec:
//!   type: dev.knative.source.github.push
//!   source: https://github.com/knative/eventing
//!   schema: https://example.com/schemas/push.json
//!   description: A push to the repository
//!   reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
//! ```
//!
//! `v1beta1` names the broker with `spec.broker: <name>`, read here as a
//! reference to that Broker; `v1beta3` lists `spec.attributes[]`
//! (`{name, value, required}`), whose `type`, `source`, `dataschema` values
//! fill the same fields. The object is `Ready` when its reference exists
//! (or it has none, which Knative allows).

use crate::resources::{FieldError, KReference, ObjectMeta};
use serde::{Deserialize, Serialize};

/// The API versions an EventType is accepted in.
pub const EVENTTYPE_VERSIONS: &[&str] = &[
    "eventing.knative.dev/v1beta3",
    "eventing.knative.dev/v1beta2",
    "eventing.knative.dev/v1beta1",
];

/// `spec` of an EventType, in the `v1beta2` shape every version is read into.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventTypeSpec {
    /// The CloudEvents `type`.
    #[serde(default, rename = "type")]
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
    /// The Broker or Channel that carries these events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
}

/// An EventType's `spec` in any version; read into [`EventTypeSpec`].
/// (Spelled out rather than flattened, so a bad field is reported with its
/// full path.)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeSpecAny {
    #[serde(default, rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub schema_data: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub reference: Option<KReference>,
    /// `v1beta1`: the broker's name.
    #[serde(default)]
    pub broker: Option<String>,
    /// `v1beta3`: the CloudEvents attributes, by name.
    #[serde(default)]
    pub attributes: Vec<EventAttribute>,
}

/// One `v1beta3` attribute definition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventAttribute {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub required: bool,
}

impl EventTypeSpecAny {
    /// The `v1beta2` reading of any version.
    pub fn into_spec(self) -> EventTypeSpec {
        let mut spec = EventTypeSpec {
            type_: self.type_,
            source: self.source,
            schema: self.schema,
            schema_data: self.schema_data,
            description: self.description,
            reference: self.reference,
        };
        if spec.reference.is_none() {
            if let Some(broker) = self.broker.filter(|b| !b.is_empty()) {
                spec.reference = Some(KReference {
                    api_version: Some("eventing.knative.dev/v1".into()),
                    kind: "Broker".into(),
                    name: broker,
                    namespace: None,
                    group: None,
                });
            }
        }
        for a in self.attributes {
            let Some(value) = a.value.filter(|v| !v.is_empty()) else {
                continue;
            };
            match a.name.as_str() {
                "type" if spec.type_.is_empty() => spec.type_ = value,
                "source" if spec.source.is_none() => spec.source = Some(value),
                "dataschema" if spec.schema.is_none() => spec.schema = Some(value),
                _ => {}
            }
        }
        spec
    }
}

/// An EventType.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventType {
    pub metadata: ObjectMeta,
    pub spec: EventTypeSpec,
}

impl EventType {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.spec.type_.trim().is_empty() {
            return Err(FieldError::new(
                "spec.type",
                "an EventType needs the CloudEvents type it registers",
            ));
        }
        if let Some(r) = &self.spec.reference {
            if r.kind.is_empty() || r.name.is_empty() {
                return Err(FieldError::new(
                    "spec.reference",
                    "a reference needs kind and name (a Broker or a Channel)",
                ));
            }
        }
        Ok(())
    }

    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    /// The reference as `Kind namespace/name`, for tables and messages.
    pub fn reference_text(&self) -> String {
        self.spec
            .reference
            .as_ref()
            .map(|r| {
                format!(
                    "{} {}/{}",
                    r.kind,
                    r.namespace.as_deref().unwrap_or(self.namespace()),
                    r.name
                )
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::manifests::load_str;
    use proptest::prelude::*;

    #[test]
    fn knatives_yaml_in_every_version() {
        let m = load_str(
            "et.yaml",
            r#"apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: github-push, namespace: default}
spec:
  type: dev.knative.source.github.push
  source: https://github.com/knative/eventing
  schema: https://example.com/schemas/push.json
  schemaData: '{"type": "object"}'
  description: A push to the repository
  reference: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}
---
apiVersion: eventing.knative.dev/v1beta1
kind: EventType
metadata: {name: old, namespace: default}
spec: {type: dev.knative.foo, source: /foo, broker: default}
---
apiVersion: eventing.knative.dev/v1beta3
kind: EventType
metadata: {name: newest, namespace: default}
spec:
  reference: {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: audit}
  attributes:
  - {name: type, value: audit.entry, required: true}
  - {name: source, value: /auditor, required: true}
  - {name: specversion, value: "1.0", required: true}
"#,
        )
        .expect("loads");
        let e = &m.event_types;
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].spec.type_, "dev.knative.source.github.push");
        assert_eq!(
            e[0].spec.schema_data.as_deref(),
            Some(r#"{"type": "object"}"#)
        );
        assert_eq!(e[0].reference_text(), "Broker default/default");
        assert_eq!(e[1].reference_text(), "Broker default/default");
        assert_eq!(e[1].spec.source.as_deref(), Some("/foo"));
        assert_eq!(e[2].spec.type_, "audit.entry");
        assert_eq!(e[2].spec.source.as_deref(), Some("/auditor"));
        assert_eq!(e[2].reference_text(), "InMemoryChannel default/audit");
    }

    #[test]
    fn errors_name_the_field() {
        let e = load_str(
            "et.yaml",
            "apiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {name: t, namespace: default}\nspec: {source: /x}\n",
        )
        .expect_err("no type")
        .to_string();
        assert!(
            e.contains("EventType default/t") && e.contains("spec.type"),
            "{e}"
        );
        let e = load_str(
            "et.yaml",
            "apiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {name: t, namespace: default}\nspec: {type: a, reference: {kind: Broker}}\n",
        )
        .expect_err("reference without name")
        .to_string();
        assert!(e.contains("spec.reference"), "{e}");
        let e = load_str(
            "et.yaml",
            "apiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {name: t, namespace: default}\nspec: {type: a, schema: [1]}\n",
        )
        .expect_err("schema is a string")
        .to_string();
        assert!(
            e.contains("et.yaml") && e.contains("EventType default/t") && e.contains("spec.schema"),
            "{e}"
        );
    }

    #[test]
    fn validate_names_the_field() {
        use super::{EventType, EventTypeSpec};
        use crate::resources::KReference;
        let mut e = EventType {
            metadata: crate::resources::ObjectMeta {
                name: "t".into(),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: EventTypeSpec {
                type_: " ".into(),
                ..EventTypeSpec::default()
            },
        };
        assert_eq!(e.validate().expect_err("blank type").path, "spec.type");
        e.spec.type_ = "dev.knative.source.github.push".into();
        assert!(e.validate().is_ok(), "no reference is allowed");
        e.spec.reference = Some(KReference {
            api_version: None,
            kind: String::new(),
            name: "default".into(),
            namespace: None,
            group: None,
        });
        assert_eq!(e.validate().expect_err("no kind").path, "spec.reference");
    }

    proptest! {
        /// Whatever values a spec holds, loading answers (an EventType or
        /// an error), never panics.
        #[test]
        fn the_loader_never_panics(
            ty in proptest::option::of("[ -~]{0,12}"),
            source in proptest::option::of("[ -~]{0,12}"),
            broker in proptest::option::of("[a-z]{0,5}"),
            kind in proptest::option::of("[A-Za-z]{0,8}"),
            number in any::<i64>(),
        ) {
            let mut spec = serde_json::Map::new();
            if let Some(t) = ty { spec.insert("type".into(), t.into()); }
            if let Some(s) = source { spec.insert("source".into(), s.into()); }
            if let Some(b) = broker { spec.insert("broker".into(), b.into()); }
            if let Some(k) = kind { spec.insert("reference".into(), serde_json::json!({"kind": k, "name": "n"})); }
            spec.insert("schema".into(), number.into());
            let doc = serde_json::json!({
                "apiVersion": "eventing.knative.dev/v1beta2",
                "kind": "EventType",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": spec,
            });
            let _ = load_str("p.yaml", &doc.to_string());
        }
    }
}
