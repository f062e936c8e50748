//! Loading Knative YAML manifests from files and directories.
//!
//! A path is a file or a directory (read recursively, in name order; hidden
//! entries such as the `..data` directory of a mounted ConfigMap are
//! skipped, so each document is read once). Files ending in `.yaml`, `.yml`
//! or `.json` hold one or more documents (`---`), and `kind: List` items are
//! expanded. Kinds the channel layer does not serve (a Deployment in the
//! same file, say) are skipped with a warning.
//!
//! Errors name the file, the document (1-based) and the field, and say what
//! was expected:
//!
//! ```text
//! deploy/channel.yaml, document 3 (Subscription default/audit), field spec.delivery.backoffDelay:
//!   backoffDelay "5s" is not an ISO-8601 duration, try "PT5S"
//! ```

use crate::broker::{Broker, BrokerSpec, ConfigMapResource, Trigger, TriggerSpec};
use crate::eventtype::{EventType, EventTypeSpecAny, EVENTTYPE_VERSIONS};
use crate::flows::{Parallel, ParallelSpec, Sequence, SequenceSpec, FLOWS_VERSIONS};
use crate::resources::{
    ChannelKind, ChannelResource, ChannelSpec, ClusterChannelProvisioner, DeliverySpec, FieldError,
    ObjectMeta, ProvisionerSpec, Subscription, SubscriptionSpec,
};
use crate::sources::apiserver::{ApiServerSourceSpec, LegacyApiServerSourceSpec};
use crate::sources::container::{ContainerSourceSpec, SinkBindingSpec};
use crate::sources::github::{GitHubSourceSpec, GITHUB_VERSIONS};
use crate::sources::gitlab::{GitLabSourceSpec, GITLAB_VERSIONS};
use crate::sources::kafka::{KafkaSourceSpec, KAFKA_SOURCE_VERSIONS};
use crate::sources::ping::{CronJobSourceSpec, PingSourceSpec};
use crate::sources::{Source, LEGACY_SOURCES_VERSION, SOURCES_VERSIONS};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every resource read from a set of manifest files.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Manifests {
    pub channels: Vec<ChannelResource>,
    pub subscriptions: Vec<Subscription>,
    pub classes: Vec<ClusterChannelProvisioner>,
    pub brokers: Vec<Broker>,
    pub triggers: Vec<Trigger>,
    /// ConfigMaps (a broker's `spec.config` names one).
    pub config_maps: Vec<ConfigMapResource>,
    pub sequences: Vec<Sequence>,
    /// The event registry (`EventType`).
    pub event_types: Vec<EventType>,
    pub parallels: Vec<Parallel>,
    /// PingSources, and the seeds' CronJobSources read as PingSources.
    pub ping_sources: Vec<Source<PingSourceSpec>>,
    /// ApiServerSources (v1, and the seeds' v1alpha1 read as v1).
    pub api_server_sources: Vec<Source<ApiServerSourceSpec>>,
    pub container_sources: Vec<Source<ContainerSourceSpec>>,
    pub sink_bindings: Vec<Source<SinkBindingSpec>>,
    pub github_sources: Vec<Source<GitHubSourceSpec>>,
    pub gitlab_sources: Vec<Source<GitLabSourceSpec>>,
    pub kafka_sources: Vec<Source<KafkaSourceSpec>>,
    /// Who may send to which brokers and channels (with OIDC).
    pub event_policies: Vec<crate::policy::EventPolicy>,
    /// Documents that were skipped, and why.
    pub warnings: Vec<String>,
}

/// A manifest that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{source_name}, document {document}: not valid YAML: {message}")]
    Yaml {
        source_name: String,
        document: usize,
        message: String,
    },
    #[error("{source_name}, document {document} ({what}), field {field}: {message}")]
    Field {
        source_name: String,
        document: usize,
        what: String,
        field: String,
        message: String,
    },
    #[error("{source_name}, document {document}: {what} is defined twice (first in {first})")]
    Duplicate {
        source_name: String,
        document: usize,
        what: String,
        first: String,
    },
}

/// Largest manifest file (or text) loaded: 10,000 channels with their
/// subscriptions take about 4 MB.
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

fn too_large(path: &str, len: u64) -> ManifestError {
    ManifestError::Io {
        path: path.to_owned(),
        message: format!(
            "{len} bytes: larger than the {} MiB a manifest may have",
            MAX_MANIFEST_BYTES / (1024 * 1024)
        ),
    }
}

/// Load every manifest file under the given paths.
pub fn load_paths(paths: &[PathBuf]) -> Result<Manifests, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files, true)?;
    }
    let mut loader = Loader::default();
    for file in files {
        let io = |e: std::io::Error| ManifestError::Io {
            path: file.display().to_string(),
            message: e.to_string(),
        };
        let len = std::fs::metadata(&file).map_err(io)?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(too_large(&file.display().to_string(), len));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError::Io {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        loader.load(&file.display().to_string(), &text)?;
    }
    Ok(loader.manifests)
}

/// Load manifests from text; `source` names it in errors.
pub fn load_str(source: &str, text: &str) -> Result<Manifests, ManifestError> {
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large(source, text.len() as u64));
    }
    let mut loader = Loader::default();
    loader.load(source, text)?;
    Ok(loader.manifests)
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>, explicit: bool) -> Result<(), ManifestError> {
    let io = |e: std::io::Error| ManifestError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        entries.sort();
        for entry in entries {
            collect_files(&entry, out, false)?;
        }
    } else if explicit || is_manifest(path) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Loader {
    manifests: Manifests,
    seen: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Envelope<S> {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: S,
}

#[derive(Deserialize)]
struct EnvelopeOpt<S> {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<S>,
}

struct Doc<'a> {
    source: &'a str,
    index: usize,
}

impl Doc<'_> {
    fn field(&self, what: &str, e: FieldError) -> ManifestError {
        ManifestError::Field {
            source_name: self.source.to_owned(),
            document: self.index,
            what: what.to_owned(),
            field: e.path,
            message: e.message,
        }
    }

    /// Deserialize with the path of a failing field.
    fn parse<T: DeserializeOwned>(
        &self,
        what: &str,
        value: serde_json::Value,
    ) -> Result<T, ManifestError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let mut path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde names the struct missing a field; the user wants the field.
            if let Some(missing) = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                path = if path == "." {
                    missing.to_owned()
                } else {
                    format!("{path}.{missing}")
                };
            }
            self.field(
                what,
                FieldError {
                    path: if path == "." {
                        "(document)".into()
                    } else {
                        path
                    },
                    message,
                },
            )
        })
    }
}

fn describe(kind: &str, value: &serde_json::Value) -> String {
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None if kind == "ClusterChannelProvisioner" => format!("{kind} {name}"),
        None => format!("{kind} default/{name}"),
    }
}

impl Loader {
    fn load(&mut self, source: &str, text: &str) -> Result<(), ManifestError> {
        for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let index = i + 1;
            let value =
                serde_yaml_ng::Value::deserialize(document).map_err(|e| ManifestError::Yaml {
                    source_name: source.to_owned(),
                    document: index,
                    message: e.to_string(),
                })?;
            if value.is_null() {
                continue;
            }
            // YAML → JSON values: Kubernetes manifests are JSON-compatible.
            let value: serde_json::Value =
                serde_json::to_value(&value).map_err(|e| ManifestError::Yaml {
                    source_name: source.to_owned(),
                    document: index,
                    message: format!("not representable as JSON: {e}"),
                })?;
            self.document(&Doc { source, index }, value)?;
        }
        Ok(())
    }

    fn document(&mut self, doc: &Doc<'_>, value: serde_json::Value) -> Result<(), ManifestError> {
        if !value.is_object() {
            return Err(ManifestError::Yaml {
                source_name: doc.source.to_owned(),
                document: doc.index,
                message: "a manifest document must be a mapping with apiVersion and kind".into(),
            });
        }
        let head = Head::deserialize(&value).map_err(|e| ManifestError::Yaml {
            source_name: doc.source.to_owned(),
            document: doc.index,
            message: e.to_string(),
        })?;
        let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
            return Err(ManifestError::Field {
                source_name: doc.source.to_owned(),
                document: doc.index,
                what: "document".into(),
                field: "apiVersion/kind".into(),
                message: "every manifest needs apiVersion and kind".into(),
            });
        };
        let what = describe(&kind, &value);
        if kind == "List" {
            if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
                for item in items.clone() {
                    self.document(doc, item)?;
                }
            }
            return Ok(());
        }
        let key = format!("{kind} {what}");
        let note = |this: &mut Self| -> Result<(), ManifestError> {
            if let Some(first) = this.seen.get(&key) {
                return Err(ManifestError::Duplicate {
                    source_name: doc.source.to_owned(),
                    document: doc.index,
                    what: what.clone(),
                    first: first.clone(),
                });
            }
            this.seen.insert(
                key.clone(),
                format!("{}, document {}", doc.source, doc.index),
            );
            Ok(())
        };
        let group_ok = |expected: &[&str]| expected.contains(&api_version.as_str());
        if let Some(channel_kind) =
            ChannelKind::from_kind(&kind).filter(|k| group_ok(k.api_versions()))
        {
            note(self)?;
            let channel = self.channel(doc, &what, channel_kind, value)?;
            self.manifests.channels.push(channel);
        } else if kind == "Subscription" && group_ok(&[crate::resources::MESSAGING_V1]) {
            note(self)?;
            let env: Envelope<SubscriptionSpec> = doc.parse(&what, value)?;
            let sub = Subscription {
                metadata: env.metadata,
                spec: env.spec,
            };
            require_name(doc, &what, &sub.metadata)?;
            sub.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.subscriptions.push(sub);
        } else if kind == "Broker" && group_ok(EVENTING_VERSIONS) {
            note(self)?;
            let env: EnvelopeOpt<BrokerSpec> = doc.parse(&what, value)?;
            let broker = Broker {
                metadata: env.metadata,
                spec: env.spec.unwrap_or_default(),
            };
            require_name(doc, &what, &broker.metadata)?;
            broker.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.brokers.push(broker);
        } else if kind == "Trigger" && group_ok(EVENTING_VERSIONS) {
            note(self)?;
            let env: Envelope<TriggerSpec> = doc.parse(&what, legacy_subscriber(value))?;
            let trigger = Trigger {
                metadata: env.metadata,
                spec: env.spec,
            };
            require_name(doc, &what, &trigger.metadata)?;
            trigger.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.triggers.push(trigger);
        } else if kind == "Sequence" && group_ok(FLOWS_VERSIONS) {
            note(self)?;
            let env: EnvelopeOpt<SequenceSpec> = doc.parse(&what, value)?;
            let sequence = Sequence {
                metadata: env.metadata,
                spec: env.spec.unwrap_or_default(),
            };
            require_name(doc, &what, &sequence.metadata)?;
            sequence.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.sequences.push(sequence);
        } else if kind == "Parallel" && group_ok(FLOWS_VERSIONS) {
            note(self)?;
            let env: EnvelopeOpt<ParallelSpec> = doc.parse(&what, value)?;
            let parallel = Parallel {
                metadata: env.metadata,
                spec: env.spec.unwrap_or_default(),
            };
            require_name(doc, &what, &parallel.metadata)?;
            parallel.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.parallels.push(parallel);
        } else if kind == "EventType" && group_ok(EVENTTYPE_VERSIONS) {
            note(self)?;
            let env: EnvelopeOpt<EventTypeSpecAny> = doc.parse(&what, value)?;
            let event_type = EventType {
                metadata: env.metadata,
                spec: env.spec.unwrap_or_default().into_spec(),
            };
            require_name(doc, &what, &event_type.metadata)?;
            event_type.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests.event_types.push(event_type);
        } else if kind == "PingSource" && group_ok(SOURCES_VERSIONS) {
            note(self)?;
            let env: Envelope<PingSourceSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.ping_sources.push(source);
        } else if kind == "CronJobSource" && group_ok(&[LEGACY_SOURCES_VERSION]) {
            note(self)?;
            let env: Envelope<CronJobSourceSpec> = doc.parse(&what, value)?;
            let spec = env.spec.into_spec().map_err(|e| doc.field(&what, e))?;
            let source = self.source(doc, &what, env.metadata, spec, |s| s.validate())?;
            self.manifests.ping_sources.push(source);
        } else if kind == "ApiServerSource" && group_ok(SOURCES_VERSIONS) {
            note(self)?;
            let env: Envelope<ApiServerSourceSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.api_server_sources.push(source);
        } else if kind == "ApiServerSource" && group_ok(&[LEGACY_SOURCES_VERSION]) {
            note(self)?;
            let env: Envelope<LegacyApiServerSourceSpec> = doc.parse(&what, value)?;
            let spec = env.spec.into_spec().map_err(|e| doc.field(&what, e))?;
            let source = self.source(doc, &what, env.metadata, spec, |s| s.validate())?;
            self.manifests.api_server_sources.push(source);
        } else if kind == "ContainerSource" && group_ok(SOURCES_VERSIONS) {
            note(self)?;
            let env: Envelope<ContainerSourceSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.container_sources.push(source);
        } else if kind == "SinkBinding" && group_ok(SOURCES_VERSIONS) {
            note(self)?;
            let env: Envelope<SinkBindingSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.sink_bindings.push(source);
        } else if kind == "GitHubSource" && group_ok(GITHUB_VERSIONS) {
            note(self)?;
            let env: Envelope<GitHubSourceSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.github_sources.push(source);
        } else if kind == "GitLabSource" && group_ok(GITLAB_VERSIONS) {
            note(self)?;
            let env: Envelope<GitLabSourceSpec> = doc.parse(&what, value)?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.gitlab_sources.push(source);
        } else if kind == "KafkaSource" && group_ok(KAFKA_SOURCE_VERSIONS) {
            note(self)?;
            let env: Envelope<KafkaSourceSpec> = doc.parse(&what, value)?;
            crate::sources::kafka::delivery_order(&env.metadata.annotations)
                .map_err(|e| doc.field(&what, e))?;
            let source = self.source(doc, &what, env.metadata, env.spec, |s| s.validate())?;
            self.manifests.kafka_sources.push(source);
        } else if kind == "EventPolicy" && group_ok(crate::policy::EVENT_POLICY_VERSIONS) {
            note(self)?;
            let env: Envelope<crate::policy::EventPolicySpec> = doc.parse(&what, value)?;
            require_name(doc, &what, &env.metadata)?;
            env.spec.validate().map_err(|e| doc.field(&what, e))?;
            self.manifests
                .event_policies
                .push(crate::policy::EventPolicy {
                    metadata: env.metadata,
                    spec: env.spec,
                });
        } else if kind == "ConfigMap" && api_version == "v1" {
            note(self)?;
            let cm: ConfigMapDoc = doc.parse(&what, value)?;
            self.manifests.config_maps.push(ConfigMapResource {
                metadata: cm.metadata,
                data: cm.data,
            });
        } else if kind == "ClusterChannelProvisioner"
            && group_ok(&["eventing.knative.dev/v1alpha1"])
        {
            note(self)?;
            let env: Envelope<ProvisionerSpec> = doc.parse(&what, value)?;
            require_name(doc, &what, &env.metadata)?;
            self.manifests.classes.push(ClusterChannelProvisioner {
                metadata: env.metadata,
                spec: env.spec,
            });
        } else {
            self.manifests.warnings.push(format!(
                "{}, document {}: skipped {what} ({api_version}): not a kind the channel layer serves",
                doc.source, doc.index
            ));
        }
        Ok(())
    }

    /// A source of any kind, named and validated.
    fn source<S>(
        &self,
        doc: &Doc<'_>,
        what: &str,
        metadata: ObjectMeta,
        spec: S,
        validate: impl Fn(&S) -> Result<(), FieldError>,
    ) -> Result<Source<S>, ManifestError> {
        require_name(doc, what, &metadata)?;
        validate(&spec).map_err(|e| doc.field(what, e))?;
        Ok(Source { metadata, spec })
    }

    fn channel(
        &mut self,
        doc: &Doc<'_>,
        what: &str,
        kind: ChannelKind,
        value: serde_json::Value,
    ) -> Result<ChannelResource, ManifestError> {
        let channel = if kind == ChannelKind::Channel {
            let env: EnvelopeOpt<ChannelSpec> = doc.parse(what, value)?;
            let spec = env.spec.unwrap_or_default();
            let mut parameters = BTreeMap::new();
            if let Some(template) = &spec.channel_template {
                let template_kind =
                    ChannelKind::from_kind(&template.kind).filter(|k| *k != ChannelKind::Channel);
                if template_kind.is_none() {
                    return Err(doc.field(
                        what,
                        FieldError {
                            path: "spec.channelTemplate.kind".into(),
                            message: format!(
                                "kind {:?} is not a channel implementation: expected InMemoryChannel, KafkaChannel or NatsJetStreamChannel",
                                template.kind
                            ),
                        },
                    ));
                }
                if let Some(tspec) = &template.spec {
                    for (k, v) in tspec {
                        if k != "delivery" && k != "subscribers" {
                            parameters.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            ChannelResource {
                kind,
                metadata: env.metadata,
                template: spec.channel_template,
                provisioner: spec.provisioner,
                delivery: spec.delivery,
                parameters,
            }
        } else {
            let env: EnvelopeOpt<serde_json::Map<String, serde_json::Value>> =
                doc.parse(what, value)?;
            let mut spec = env.spec.unwrap_or_default();
            let delivery = match spec.remove("delivery") {
                Some(d) => Some(doc.parse::<DeliverySpec>(what, d).map_err(|e| match e {
                    ManifestError::Field {
                        field,
                        source_name,
                        document,
                        what,
                        message,
                    } => ManifestError::Field {
                        field: format!(
                            "spec.delivery{}",
                            if field == "(document)" {
                                String::new()
                            } else {
                                format!(".{field}")
                            }
                        ),
                        source_name,
                        document,
                        what,
                        message,
                    },
                    other => other,
                })?),
                None => None,
            };
            spec.remove("subscribers");
            ChannelResource {
                kind,
                metadata: env.metadata,
                template: None,
                provisioner: None,
                delivery,
                parameters: spec.into_iter().collect(),
            }
        };
        require_name(doc, what, &channel.metadata)?;
        if let Some(d) = &channel.delivery {
            d.validate("spec.delivery")
                .map_err(|e| doc.field(what, e))?;
        }
        Ok(channel)
    }
}

/// The API versions Broker and Trigger are accepted under.
const EVENTING_VERSIONS: &[&str] = &[
    "eventing.knative.dev/v1",
    "eventing.knative.dev/v1beta1",
    "eventing.knative.dev/v1alpha1",
];

#[derive(Deserialize)]
struct ConfigMapDoc {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The seeds' Trigger subscriber could name a host (`dnsName`) instead of
/// a URI; it becomes `uri: http://<dnsName>/`.
fn legacy_subscriber(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(subscriber) = value
        .get_mut("spec")
        .and_then(|s| s.get_mut("subscriber"))
        .and_then(|s| s.as_object_mut())
    {
        if let Some(serde_json::Value::String(host)) = subscriber.remove("dnsName") {
            subscriber
                .entry("uri")
                .or_insert_with(|| serde_json::Value::String(format!("http://{host}/")));
        }
    }
    value
}

fn require_name(doc: &Doc<'_>, what: &str, meta: &ObjectMeta) -> Result<(), ManifestError> {
    if meta.name.is_empty() {
        return Err(doc.field(
            what,
            FieldError {
                path: "metadata.name".into(),
                message: "a name is required".into(),
            },
        ));
    }
    Ok(())
}

/// Names of the files `load_paths` would read, for tools that watch them.
pub fn manifest_files(paths: &[PathBuf]) -> Result<BTreeSet<PathBuf>, ManifestError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files, true)?;
    }
    Ok(files.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: messaging.knative.dev/v1
kind: Channel
metadata: {name: orders}
spec:
  channelTemplate:
    apiVersion: messaging.knative.dev/v1
    kind: InMemoryChannel
    spec: {maxEvents: 50, delivery: {retry: 1}}
  delivery: {retry: 2}
---
apiVersion: messaging.knative.dev/v1
kind: Subscription
metadata: {name: audit, namespace: default}
spec:
  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: orders}
  subscriber: {uri: "http://127.0.0.1:1/"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: something}
---
"#;

    #[test]
    fn loads_channels_subscriptions_and_skips_other_kinds() {
        let m = load_str("good.yaml", GOOD).unwrap();
        assert_eq!(m.channels.len(), 1);
        assert_eq!(m.channels[0].metadata.namespace(), "default");
        assert_eq!(m.channels[0].parameters["maxEvents"], 50);
        assert!(!m.channels[0].parameters.contains_key("delivery"));
        assert_eq!(m.subscriptions.len(), 1);
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("document 3"), "{}", m.warnings[0]);
    }

    fn error(text: &str) -> String {
        load_str("bad.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let e = error(
            "apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  channel: {kind: Channel, name: c}\n  subscriber: {uri: 'http://x/'}\n  delivery: {backoffDelay: 5s}\n",
        );
        assert_eq!(
            e,
            r#"bad.yaml, document 1 (Subscription default/s), field spec.delivery.backoffDelay: backoffDelay "5s" is not an ISO-8601 duration, try "PT5S""#
        );
        let e = error("---\napiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: c}\nspec: {delivry: {}}\n");
        assert!(e.contains("document 1") && e.contains("delivry"), "{e}");
        let e = error("apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  channel: {kind: Channel, name: c}\n  subscriber: {uri: 'http://x/'}\n  delivery: {retry: many}\n");
        assert!(e.contains("field spec.delivery.retry"), "{e}");
        let e = error("a: [unclosed\n");
        assert!(e.contains("bad.yaml, document 1: not valid YAML"), "{e}");
        let e = error("kind: Channel\n");
        assert!(e.contains("apiVersion"), "{e}");
        let e = error("apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: c}\nspec: {delivery: {retry: -3}}\n");
        assert!(e.contains("spec.delivery.retry"), "{e}");
    }

    #[test]
    fn duplicates_are_refused() {
        let doc =
            "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: c}\n";
        let e = error(&format!("{doc}---\n{doc}"));
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn lists_are_expanded() {
        let m = load_str(
            "l.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, metadata: {name: a}}\n- {apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, metadata: {name: b}}\n",
        )
        .unwrap();
        assert_eq!(m.channels.len(), 2);
    }

    #[test]
    fn directories_with_configmap_layout_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2024_01_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("channels.yaml"), GOOD).unwrap();
        std::os::unix::fs::symlink("..2024_01_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/channels.yaml", dir.path().join("channels.yaml"))
            .unwrap();
        std::fs::write(dir.path().join("README.txt"), "not yaml").unwrap();
        let m = load_paths(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(m.channels.len(), 1);
        assert_eq!(m.subscriptions.len(), 1);
        let missing = load_paths(&[dir.path().join("nope.yaml")])
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("cannot read") && missing.contains("nope.yaml"),
            "{missing}"
        );
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    #[test]
    fn an_alias_bomb_is_refused_quickly_with_a_clear_error() {
        // "Billion laughs": nine levels of ten aliases each.
        let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let p = i - 1;
            yaml.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let err = load_str("bomb.yaml", &yaml).expect_err("refused");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(
            matches!(&err, ManifestError::Yaml { source_name, .. } if source_name == "bomb.yaml"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_manifest_is_refused_naming_it() {
        let text = " ".repeat(MAX_MANIFEST_BYTES as usize + 1);
        let err = load_str("huge.yaml", &text).expect_err("refused");
        assert!(
            err.to_string().contains("huge.yaml") && err.to_string().contains("MiB"),
            "{err}"
        );
    }

    #[test]
    fn subscriber_uris_must_be_http_or_https() {
        for uri in ["file:///etc/passwd", "gopher://x/", "ftp://x/"] {
            let yaml = format!("apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s, namespace: n}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: c}}\n  subscriber: {{uri: '{uri}'}}\n");
            let err = load_str("s.yaml", &yaml).expect_err(uri);
            assert!(err.to_string().contains("spec.subscriber.uri"), "{err}");
        }
    }
}
