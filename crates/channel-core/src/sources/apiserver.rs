//! Knative's `ApiServerSource`: which Kubernetes objects to watch and what
//! their changes become.
//!
//! Accepted as `sources.knative.dev/v1` (and `v1beta1`, `v1alpha2`, the same
//! shape) and as the seeds' `sources.eventing.knative.dev/v1alpha1`, read
//! into the `v1` shape:
//!
//! ```yaml
//! apiVersion: sources.eventing.knative.dev/v1alpha1
//! kind: ApiServerSource
//! metadata: {name: testevents, namespace: default}
//! spec:
//!   serviceAccountName: events-sa
//!   mode: Resource                # v1alpha1: Ref | Resource
//!   resources:
//!   - apiVersion: v1
//!     kind: Event
//!     controller: false           # v1alpha1: only objects with a controller
//!     controllerSelector: {apiVersion: apps/v1, kind: ReplicaSet}
//!     labelSelector: {matchLabels: {app: shop}}
//!   sink: {apiVersion: eventing.knative.dev/v1alpha1, kind: Broker, name: default}
//! ```
//!
//! A v1alpha1 `controllerSelector` (or `controller: true`) becomes the `v1`
//! `owner`; `labelSelector` the resource's `selector`; `Ref` the mode
//! `Reference`.

use crate::resources::{DeliverySpec, Destination, FieldError, KReference};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Whether `s` is a label key: an optional DNS prefix and `/`, then a name
/// of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// Whether `s` is a label value (possibly empty).
fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// The selector in the string form the API takes (`labelSelector=`),
    /// checked so that no key or value can change its meaning.
    pub fn to_query(&self, path: &str) -> Result<String, FieldError> {
        let mut parts = Vec::new();
        for (k, v) in &self.match_labels {
            if !is_label_key(k) {
                return Err(FieldError::new(
                    format!("{path}.matchLabels"),
                    format!("{k:?} is not a label key"),
                ));
            }
            if !is_label_value(v) {
                return Err(FieldError::new(
                    format!("{path}.matchLabels.{k}"),
                    format!("{v:?} is not a label value"),
                ));
            }
            parts.push(format!("{k}={v}"));
        }
        for (i, e) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            if !is_label_key(&e.key) {
                return Err(FieldError::new(
                    format!("{at}.key"),
                    format!("{:?} is not a label key", e.key),
                ));
            }
            if let Some(bad) = e.values.iter().find(|v| !is_label_value(v)) {
                return Err(FieldError::new(
                    format!("{at}.values"),
                    format!("{bad:?} is not a label value"),
                ));
            }
            let values = e.values.join(",");
            let part = match (e.operator.as_str(), e.values.is_empty()) {
                ("In", false) => format!("{} in ({values})", e.key),
                ("NotIn", false) => format!("{} notin ({values})", e.key),
                ("Exists", true) => e.key.clone(),
                ("DoesNotExist", true) => format!("!{}", e.key),
                ("In" | "NotIn", true) => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} needs values", e.operator),
                    ))
                }
                ("Exists" | "DoesNotExist", false) => {
                    return Err(FieldError::new(
                        format!("{at}.values"),
                        format!("operator {} takes no values", e.operator),
                    ))
                }
                (other, _) => {
                    return Err(FieldError::new(
                        format!("{at}.operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ))
                }
            };
            parts.push(part);
        }
        Ok(parts.join(","))
    }
}

/// One `spec.resources[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiServerResource {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `spec.owner`: an apiVersion and/or kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiVersionKind {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `sources.knative.dev/v1` `ApiServerSource` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSourceSpec {
    /// `Reference` (the default) or `Resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default)]
    pub resources: Vec<ApiServerResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ApiVersionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Namespaces to watch by label; absent: the source's own namespace;
    /// empty: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<super::CloudEventOverrides>,
    /// Beyond Knative: retries and a dead-letter sink for the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// What the events carry: Knative's `spec.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventMode {
    /// An `ObjectReference` to the object (Knative's default).
    #[default]
    Reference,
    /// The whole object.
    Resource,
}

/// One watched resource, as the adapter takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchedResource {
    pub api_version: String,
    pub kind: String,
    /// The label selector in the API's string form (`app=a,tier in (x)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}

/// Which namespaces are watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Namespaces {
    /// These namespaces (the source's own when it selects none).
    Only(Vec<String>),
    /// The namespaces whose labels match this selector (string form),
    /// followed as they are labelled and unlabelled.
    Selector(String),
    /// Every namespace (an empty `namespaceSelector`).
    All,
}

/// What the adapter needs of an ApiServerSource (in the contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSettings {
    pub resources: Vec<WatchedResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ApiVersionKind>,
    #[serde(default)]
    pub mode: EventMode,
    pub namespaces: Namespaces,
    /// `spec.serviceAccountName` (the identity it runs as on Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// The seeds' `v1alpha1` resource entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LegacyResource {
    api_version: String,
    kind: String,
    #[serde(default)]
    controller: bool,
    #[serde(default)]
    controller_selector: Option<ApiVersionKind>,
    #[serde(default)]
    label_selector: Option<LabelSelector>,
}

/// The seeds' `v1alpha1` spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyApiServerSourceSpec {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    resources: Vec<LegacyResource>,
    #[serde(default)]
    service_account_name: Option<String>,
    /// A Destination, or (as the seeds write it) a bare reference.
    sink: serde_json::Value,
    #[serde(default)]
    ce_overrides: Option<super::CloudEventOverrides>,
}

impl LegacyApiServerSourceSpec {
    /// The `v1` reading.
    pub fn into_spec(self) -> Result<ApiServerSourceSpec, FieldError> {
        let sink = legacy_sink(self.sink)?;
        // One owner for the whole source in v1: the first selector given.
        let owner = self.resources.iter().find_map(|r| {
            r.controller_selector
                .clone()
                .or_else(|| r.controller.then(ApiVersionKind::default))
        });
        let mode = self.mode.map(|m| match m.as_str() {
            "Ref" => "Reference".to_owned(),
            _ => m,
        });
        Ok(ApiServerSourceSpec {
            mode,
            resources: self
                .resources
                .into_iter()
                .map(|r| ApiServerResource {
                    api_version: r.api_version,
                    kind: r.kind,
                    selector: r.label_selector,
                })
                .collect(),
            owner,
            service_account_name: self.service_account_name,
            namespace_selector: None,
            sink,
            ce_overrides: self.ce_overrides,
            delivery: None,
        })
    }
}

/// A `v1alpha1` sink: a Destination, or a bare `{apiVersion, kind, name}`.
pub fn legacy_sink(value: serde_json::Value) -> Result<Destination, FieldError> {
    let is_reference = value.get("kind").is_some() && value.get("ref").is_none();
    if is_reference {
        let reference: KReference = serde_json::from_value(value)
            .map_err(|e| FieldError::new("spec.sink", e.to_string()))?;
        return Ok(Destination {
            reference: Some(reference),
            ..Destination::default()
        });
    }
    serde_json::from_value(value).map_err(|e| FieldError::new("spec.sink", e.to_string()))
}

/// The event mode of a spec (`Reference` when unset).
pub fn is_resource_mode(spec: &ApiServerSourceSpec, path: &str) -> Result<bool, FieldError> {
    match spec.mode.as_deref() {
        None | Some("") | Some("Reference") => Ok(false),
        Some("Resource") => Ok(true),
        Some(other) => Err(FieldError::new(
            format!("{path}.mode"),
            format!("{other:?} is not Reference or Resource"),
        )),
    }
}

impl ApiServerSourceSpec {
    /// Check what the schema cannot.
    pub fn validate(&self) -> Result<(), FieldError> {
        is_resource_mode(self, "spec")?;
        if self.resources.is_empty() {
            return Err(FieldError::new(
                "spec.resources",
                "an ApiServerSource needs at least one resource to watch",
            ));
        }
        for (i, r) in self.resources.iter().enumerate() {
            let at = format!("spec.resources[{i}]");
            if r.api_version.is_empty() {
                return Err(FieldError::new(
                    format!("{at}.apiVersion"),
                    "an apiVersion is required (v1 for core kinds)",
                ));
            }
            if r.kind.is_empty() {
                return Err(FieldError::new(format!("{at}.kind"), "a kind is required"));
            }
            if let Some(s) = &r.selector {
                s.to_query(&format!("{at}.selector"))?;
            }
        }
        if let Some(s) = &self.namespace_selector {
            s.to_query("spec.namespaceSelector")?;
        }
        if let Some(o) = &self.ce_overrides {
            o.validate("spec.ceOverrides")?;
        }
        if let Some(d) = &self.delivery {
            d.validate("spec.delivery")?;
        }
        self.sink.validate("spec.sink")?;
        Ok(())
    }

    /// The adapter's settings for a source in `namespace` (validated).
    pub fn settings(&self, namespace: &str) -> Result<ApiServerSettings, FieldError> {
        let mode = if is_resource_mode(self, "spec")? {
            EventMode::Resource
        } else {
            EventMode::Reference
        };
        let mut resources = Vec::new();
        for (i, r) in self.resources.iter().enumerate() {
            let selector = match &r.selector {
                Some(s) => Some(s.to_query(&format!("spec.resources[{i}].selector"))?),
                None => None,
            };
            resources.push(WatchedResource {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                label_selector: selector.filter(|s| !s.is_empty()),
            });
        }
        let namespaces = match &self.namespace_selector {
            None => Namespaces::Only(vec![namespace.to_owned()]),
            Some(s) if s.is_empty() => Namespaces::All,
            Some(s) => Namespaces::Selector(s.to_query("spec.namespaceSelector")?),
        };
        Ok(ApiServerSettings {
            resources,
            owner: self.owner.clone(),
            mode,
            namespaces,
            service_account_name: self.service_account_name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml_ng::from_str(yaml).expect("selector")
    }

    #[test]
    fn selectors_become_the_api_string_form() {
        let s = selector(
            "matchLabels: {app: shop, tier: web}\nmatchExpressions:\n- {key: env, operator: In, values: [prod, staging]}\n- {key: canary, operator: DoesNotExist}\n- {key: example.com/team, operator: Exists}\n- {key: zone, operator: NotIn, values: [a]}\n",
        );
        assert_eq!(
            s.to_query("s").as_deref(),
            Ok("app=shop,tier=web,env in (prod,staging),!canary,example.com/team,zone notin (a)")
        );
        assert_eq!(LabelSelector::default().to_query("s").as_deref(), Ok(""));
    }

    #[test]
    fn a_selector_cannot_smuggle_another_requirement() {
        for (yaml, path) in [
            ("matchLabels: {app: 'a,b=c'}", "s.matchLabels.app"),
            ("matchLabels: {'a b': x}", "s.matchLabels"),
            (
                "matchExpressions: [{key: env, operator: In, values: ['x)', y]}]",
                "s.matchExpressions[0].values",
            ),
            (
                "matchExpressions: [{key: env, operator: Like, values: [x]}]",
                "s.matchExpressions[0].operator",
            ),
            (
                "matchExpressions: [{key: env, operator: In}]",
                "s.matchExpressions[0].values",
            ),
            (
                "matchExpressions: [{key: env, operator: Exists, values: [x]}]",
                "s.matchExpressions[0].values",
            ),
        ] {
            let e = selector(yaml).to_query("s").expect_err(yaml);
            assert_eq!(e.path, path, "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn the_seeds_v1alpha1_source_reads_as_v1() {
        let legacy: LegacyApiServerSourceSpec = serde_yaml_ng::from_str(
            "serviceAccountName: events-sa\nmode: Ref\nresources:\n- apiVersion: v1\n  kind: Event\n  controllerSelector: {apiVersion: apps/v1, kind: ReplicaSet}\n  labelSelector: {matchLabels: {app: shop}}\nsink: {apiVersion: eventing.knative.dev/v1alpha1, kind: Broker, name: default}\n",
        )
        .expect("v1alpha1");
        let spec = legacy.into_spec().expect("v1");
        assert_eq!(spec.mode.as_deref(), Some("Reference"));
        assert_eq!(
            spec.owner,
            Some(ApiVersionKind {
                api_version: Some("apps/v1".into()),
                kind: Some("ReplicaSet".into())
            })
        );
        assert_eq!(spec.resources[0].kind, "Event");
        assert!(spec.resources[0].selector.is_some());
        let sink = spec.sink.reference.as_ref().expect("a ref");
        assert_eq!(
            (sink.kind.as_str(), sink.name.as_str()),
            ("Broker", "default")
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("events-sa"));
        spec.validate().expect("valid");
    }

    #[test]
    fn invalid_sources_name_the_field() {
        let mut spec = ApiServerSourceSpec {
            resources: vec![ApiServerResource {
                api_version: "v1".into(),
                kind: "Event".into(),
                selector: None,
            }],
            sink: Destination {
                uri: Some("http://x/".into()),
                ..Destination::default()
            },
            ..ApiServerSourceSpec::default()
        };
        spec.validate().expect("valid");
        spec.mode = Some("Everything".into());
        assert_eq!(spec.validate().unwrap_err().path, "spec.mode");
        spec.mode = Some("Resource".into());
        spec.resources[0].kind.clear();
        assert_eq!(spec.validate().unwrap_err().path, "spec.resources[0].kind");
        spec.resources.clear();
        assert_eq!(spec.validate().unwrap_err().path, "spec.resources");
    }
}
