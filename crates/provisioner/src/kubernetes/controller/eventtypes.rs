//! The event registry on Kubernetes: EventType objects, declared by users
//! or auto-created from what brokers and channels accept.
//!
//! Every EventType (any served version, read as `v1beta2`) gets
//! `ReferenceExists` and `Ready`, `True` when its broker or channel exists
//! (or it names none), else `False` with reason `ReferenceNotFound` — the
//! same computation as in standalone mode ([`crate::registry`]).
//!
//! With Knative's `eventtype-auto-create` enabled in the ConfigMap
//! `knative-eventing/config-features`, each round reads `GET /eventtypes`
//! from every dispatcher and creates an EventType for each `(type, source)`
//! pair not registered yet: named as the dispatchers name it
//! (`et-<reference>-<hash>`, so equal pairs collapse), labelled
//! `eventing.knative.dev/auto-created: "true"` and owned by its Broker or
//! channel, so Kubernetes' garbage collector deletes it with them. At most
//! `eventtype-auto-create-max-per-reference` are created per broker or
//! channel, counted from the objects that exist, so neither a dispatcher
//! restart nor a controller restart resets the bound. A declared EventType
//! for the same reference, type and source stands instead. The channels a
//! Sequence or Parallel generates are not API objects, so they get none.

use super::{
    api_version_of, document, is_live, is_our_broker, kind_of, merge, note, problem, Controller,
    Snapshot,
};
use crate::cycle::get_json;
use crate::kubernetes::crd;
use crate::reconcile::Plan;
use crate::registry::{objects, AutoRegistry, AUTO_CREATED_LABEL};
use crate::status::ResourceStatus;
use channel_core::compile::Problem;
use channel_core::manifests::{load_str, Manifests};
use dispatcher::eventtypes::Observed;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// The API version EventTypes are read and written in.
const EVENTTYPE_V1BETA2: &str = "eventing.knative.dev/v1beta2";

/// The API resource of EventTypes.
pub fn event_type_resource() -> ApiResource {
    ApiResource::erase::<crd::EventType>(&())
}

/// The status rows of every EventType loaded into `manifests`.
pub(super) fn event_type_rows(plan: &Plan, manifests: &Manifests) -> Vec<ResourceStatus> {
    objects(plan, &manifests.event_types, &AutoRegistry::default())
        .iter()
        .map(|o| o.row())
        .collect()
}

/// The object an observed pair's EventType is owned by: its live Broker (of
/// this project's class) or channel object, as (apiVersion, kind, object).
fn owner_of<'a>(snap: &'a Snapshot, o: &Observed) -> Option<(String, String, &'a DynamicObject)> {
    let (ns, name) = (o.namespace.as_str(), o.reference.name.as_str());
    if o.reference.kind == "Broker" {
        return snap
            .broker(ns, name)
            .filter(|b| is_live(b) && is_our_broker(b))
            .map(|b| ("eventing.knative.dev/v1".to_owned(), "Broker".to_owned(), b));
    }
    snap.channels
        .iter()
        .find(|c| {
            is_live(c)
                && kind_of(c) == o.reference.kind
                && c.namespace().as_deref() == Some(ns)
                && c.name_any() == name
        })
        .map(|c| (api_version_of(c), kind_of(c), c))
}

/// Whether `e` is an auto-created EventType owned by the object `uid`.
fn auto_created_by(e: &DynamicObject, uid: &str) -> bool {
    e.labels().get(AUTO_CREATED_LABEL).map(String::as_str) == Some("true")
        && e.owner_references().iter().any(|r| r.uid == uid)
}

/// Whether a declared EventType of the snapshot registers the pair.
fn declared(snap: &Snapshot, o: &Observed) -> bool {
    snap.event_types.iter().any(|e| {
        let spec = &e.data["spec"];
        e.namespace().as_deref() == Some(o.namespace.as_str())
            && spec["type"] == o.type_.as_str()
            && spec["source"] == o.source.as_str()
            && spec["reference"]["kind"] == o.reference.kind.as_str()
            && spec["reference"]["name"] == o.reference.name.as_str()
    })
}

impl Controller {
    /// The live EventTypes into `manifests`; one that cannot be read, as a
    /// problem.
    pub(super) fn event_type_manifests(
        &self,
        snap: &Snapshot,
        manifests: &mut Manifests,
        problems: &mut Vec<Problem>,
    ) {
        for e in snap.event_types.iter().filter(|e| is_live(e)) {
            let ns = e.namespace().unwrap_or_default();
            let spec = e.data.get("spec").cloned().unwrap_or(Value::Null);
            let api_version = match api_version_of(e) {
                v if v.is_empty() => EVENTTYPE_V1BETA2.to_owned(),
                v => v,
            };
            let doc = document(&api_version, "EventType", &e.metadata, &spec);
            match load_str(&format!("EventType {ns}/{}", e.name_any()), &doc) {
                Ok(m) => merge(manifests, m),
                Err(err) => problems.push(problem(
                    "EventType",
                    &e.metadata,
                    "InvalidSpec",
                    err.to_string(),
                )),
            }
        }
    }

    /// Create the EventTypes of the pairs the dispatchers observed, when
    /// `eventtype-auto-create` is on (bounded per broker or channel).
    pub(super) async fn auto_create_event_types(
        &self,
        snap: &Snapshot,
        plan: &Plan,
        admins: &BTreeMap<channel_core::BackendKind, Url>,
        errors: &mut Vec<String>,
    ) {
        let Some(settings) = plan.features.eventtype_auto_create else {
            return;
        };
        let max = settings.max_per_reference as usize;
        let mut observed = Vec::new();
        for admin in admins.values() {
            match get_json::<Vec<Observed>>(
                &self.http,
                admin,
                "eventtypes",
                "the EventTypes a dispatcher observed",
                Duration::from_secs(2),
            )
            .await
            {
                Ok(list) => observed.extend(list),
                Err(e) => {
                    tracing::debug!(dispatcher = %admin, error = %e, "no EventTypes from this dispatcher")
                }
            }
        }
        observed.sort();
        observed.dedup();
        let mut created: BTreeMap<String, usize> = BTreeMap::new();
        for o in observed {
            let Some((api_version, kind, owner)) = owner_of(snap, &o) else {
                continue;
            };
            if snap
                .event_types
                .iter()
                .any(|e| e.namespace().as_deref() == Some(&o.namespace) && e.name_any() == o.name)
                || declared(snap, &o)
            {
                continue;
            }
            let uid = owner.uid().unwrap_or_default();
            let existing = snap
                .event_types
                .iter()
                .filter(|e| auto_created_by(e, &uid))
                .count();
            let mine = created.entry(uid.clone()).or_default();
            if existing + *mine >= max {
                continue;
            }
            let object = json!({
                "apiVersion": EVENTTYPE_V1BETA2,
                "kind": "EventType",
                "metadata": {
                    "name": o.name,
                    "namespace": o.namespace,
                    "labels": {AUTO_CREATED_LABEL: "true"},
                    "ownerReferences": [{
                        "apiVersion": api_version,
                        "kind": kind,
                        "name": o.reference.name,
                        "uid": uid,
                    }],
                },
                "spec": {
                    "type": o.type_,
                    "source": o.source,
                    "reference": {"apiVersion": api_version, "kind": kind, "name": o.reference.name},
                },
            });
            let Ok(object) = serde_json::from_value::<DynamicObject>(object) else {
                continue;
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &o.namespace, &event_type_resource());
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    *mine += 1;
                    tracing::info!(namespace = %o.namespace, name = %o.name, r#type = %o.type_, source = %o.source, reference = %format!("{kind} {}", o.reference.name), "EventType auto-created");
                }
                // Created meanwhile (the cache lags).
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => note(
                    errors,
                    format!("creating EventType {}/{}", o.namespace, o.name),
                    e,
                ),
            }
        }
    }
}
