//! The event registry: EventTypes from the manifests, and those created
//! from traffic when Knative's `eventtype-auto-create` is enabled.
//!
//! Declared EventTypes come from the manifests as written. Auto-created
//! ones are what the dispatchers' ingress recorded (`GET /eventtypes` on
//! their admin port): the provisioner keeps them, bounded per reference by
//! the same `eventtype-auto-create-max-per-reference` the dispatchers
//! enforce (a dispatcher restart does not reset the count), persists them
//! in `eventtypes.json` beside the contracts so a restart of either keeps
//! the registry, and forgets those whose broker or channel is removed (on
//! Kubernetes they are owned by it). A declared EventType for the same
//! reference, type and source wins over an auto-created one.
//!
//! Every EventType is `Ready` when its reference exists (a Broker of this
//! project's class or a channel the plan serves, even if not ready yet);
//! without a reference it is `Ready` too, as Knative allows.

use crate::reconcile::Plan;
use crate::status::{Condition, ConditionStatus, ResourceStatus};
use channel_core::eventtype::{EventType, EventTypeSpec};
use channel_core::resources::{KReference, ObjectMeta};
use dispatcher::eventtypes::Observed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The label marking an auto-created EventType.
pub const AUTO_CREATED_LABEL: &str = "eventing.knative.dev/auto-created";

/// An EventType as `GET /eventtypes` serves it: Knative's object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: EventTypeSpec,
    pub status: EventTypeStatus,
}

/// `status` of an EventType.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventTypeStatus {
    pub conditions: Vec<Condition>,
}

impl EventTypeObject {
    pub fn ready(&self) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.type_ == "Ready")
    }

    /// The row `provisioner status` and `/status` list.
    pub fn row(&self) -> ResourceStatus {
        let ready = self.ready();
        ResourceStatus {
            kind: "EventType".into(),
            namespace: self.metadata.namespace().to_owned(),
            name: self.metadata.name.clone(),
            backend: None,
            ready: ready.map_or(ConditionStatus::Unknown, |c| c.status),
            reason: ready.and_then(|c| c.reason.clone()),
            message: ready.and_then(|c| c.message.clone()),
            url: None,
            status: serde_json::to_value(&self.status).unwrap_or_default(),
        }
    }
}

/// The auto-created EventTypes the provisioner keeps.
#[derive(Debug, Default)]
pub struct AutoRegistry {
    /// By namespace and name (the name is derived from reference, type and
    /// source, so equal pairs collapse).
    entries: BTreeMap<(String, String), Observed>,
    path: Option<PathBuf>,
}

impl AutoRegistry {
    /// The registry persisted at `path` (empty when absent or unreadable,
    /// with a log line for the latter).
    pub fn load(path: &Path) -> AutoRegistry {
        let mut registry = AutoRegistry {
            entries: BTreeMap::new(),
            path: Some(path.to_owned()),
        };
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<Vec<Observed>>(&bytes) {
                Ok(list) => {
                    for o in list {
                        registry
                            .entries
                            .insert((o.namespace.clone(), o.name.clone()), o);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "auto-created EventTypes not readable; starting empty")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "auto-created EventTypes not readable; starting empty")
            }
        }
        registry
    }

    /// Take in what dispatchers observed, at most `max` per reference, and
    /// forget entries whose reference is gone. Returns whether anything
    /// changed (and was persisted).
    pub fn update(
        &mut self,
        observed: impl IntoIterator<Item = Observed>,
        max: Option<usize>,
        exists: impl Fn(&Observed) -> bool,
    ) -> bool {
        let before = self.entries.len();
        self.entries.retain(|_, o| exists(o));
        let mut changed = self.entries.len() != before;
        if let Some(max) = max {
            let mut per_reference: BTreeMap<_, usize> = BTreeMap::new();
            for o in self.entries.values() {
                *per_reference.entry(o.reference.clone()).or_default() += 1;
            }
            for o in observed {
                let key = (o.namespace.clone(), o.name.clone());
                if self.entries.contains_key(&key) || !exists(&o) {
                    continue;
                }
                let count = per_reference.entry(o.reference.clone()).or_default();
                if *count >= max {
                    continue;
                }
                *count += 1;
                tracing::info!(namespace = %o.namespace, name = %o.name, r#type = %o.type_, source = %o.source, reference = %format!("{} {}", o.reference.kind, o.reference.name), "EventType auto-created");
                self.entries.insert(key, o);
                changed = true;
            }
        }
        if changed {
            self.save();
        }
        changed
    }

    fn save(&self) {
        let Some(path) = &self.path else { return };
        let list: Vec<&Observed> = self.entries.values().collect();
        let tmp = path.with_extension("json.tmp");
        let result = std::fs::write(&tmp, serde_json::to_vec_pretty(&list).unwrap_or_default())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::error!(path = %path.display(), error = %e, "cannot persist the auto-created EventTypes");
        }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Observed> {
        self.entries.values()
    }
}

/// Whether the plan serves the broker or channel `reference` in `namespace`
/// (or knows it, with a problem).
pub fn reference_exists(plan: &Plan, namespace: &str, reference: &KReference) -> bool {
    let ns = reference.namespace.as_deref().unwrap_or(namespace);
    let served = plan.channels.iter().any(|c| {
        let c = &c.contract;
        c.namespace == ns
            && if reference.kind == "Broker" {
                c.broker.as_ref().is_some_and(|b| b.name == reference.name)
            } else {
                c.broker.is_none()
                    && c.name == reference.name
                    && (c.kind == reference.kind
                        || reference.kind == "Channel"
                        || c.kind == "Channel")
            }
    });
    served
        || plan
            .problems
            .iter()
            .any(|p| p.kind == reference.kind && p.namespace == ns && p.name == reference.name)
}

fn conditions(plan: &Plan, namespace: &str, reference: Option<&KReference>) -> Vec<Condition> {
    let exists = match reference {
        None => Condition {
            type_: "ReferenceExists".into(),
            status: ConditionStatus::True,
            reason: Some("NoReference".into()),
            message: None,
            last_transition_time: None,
        },
        Some(r) if reference_exists(plan, namespace, r) => Condition {
            type_: "ReferenceExists".into(),
            status: ConditionStatus::True,
            reason: None,
            message: None,
            last_transition_time: None,
        },
        Some(r) => Condition {
            type_: "ReferenceExists".into(),
            status: ConditionStatus::False,
            reason: Some("ReferenceNotFound".into()),
            message: Some(format!(
                "spec.reference: {} {}/{} does not exist",
                r.kind,
                r.namespace.as_deref().unwrap_or(namespace),
                r.name
            )),
            last_transition_time: None,
        },
    };
    let ready = Condition {
        type_: "Ready".into(),
        ..exists.clone()
    };
    vec![exists, ready]
}

/// Every EventType, declared then auto-created, with its status, sorted by
/// namespace and name.
pub fn objects(plan: &Plan, declared: &[EventType], auto: &AutoRegistry) -> Vec<EventTypeObject> {
    let mut out: Vec<EventTypeObject> = declared
        .iter()
        .map(|e| EventTypeObject {
            api_version: "eventing.knative.dev/v1beta2".into(),
            kind: "EventType".into(),
            metadata: ObjectMeta {
                namespace: Some(e.namespace().to_owned()),
                ..e.metadata.clone()
            },
            spec: e.spec.clone(),
            status: EventTypeStatus {
                conditions: conditions(plan, e.namespace(), e.spec.reference.as_ref()),
            },
        })
        .collect();
    let declared_key = |ns: &str, r: &KReference, ty: &str, source: &str| {
        declared.iter().any(|d| {
            d.namespace() == ns
                && d.spec.type_ == ty
                && d.spec.source.as_deref() == Some(source)
                && d.spec
                    .reference
                    .as_ref()
                    .is_some_and(|dr| dr.kind == r.kind && dr.name == r.name)
        })
    };
    for o in auto.entries() {
        let reference = KReference {
            api_version: Some(o.reference.api_version.clone()),
            kind: o.reference.kind.clone(),
            name: o.reference.name.clone(),
            namespace: None,
            group: None,
        };
        if declared_key(&o.namespace, &reference, &o.type_, &o.source) {
            continue;
        }
        let mut metadata = ObjectMeta {
            name: o.name.clone(),
            namespace: Some(o.namespace.clone()),
            ..ObjectMeta::default()
        };
        metadata
            .labels
            .insert(AUTO_CREATED_LABEL.into(), "true".into());
        out.push(EventTypeObject {
            api_version: "eventing.knative.dev/v1beta2".into(),
            kind: "EventType".into(),
            status: EventTypeStatus {
                conditions: conditions(plan, &o.namespace, Some(&reference)),
            },
            metadata,
            spec: EventTypeSpec {
                type_: o.type_.clone(),
                source: Some(o.source.clone()),
                reference: Some(reference),
                ..EventTypeSpec::default()
            },
        });
    }
    out.sort_by(|a, b| {
        (a.metadata.namespace(), &a.metadata.name).cmp(&(b.metadata.namespace(), &b.metadata.name))
    });
    out
}

#[cfg(test)]
mod tests;
