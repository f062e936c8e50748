//! One reconcile of the whole channel layer on Kubernetes.
//!
//! The controller is level-triggered and global: every round takes a
//! [`Snapshot`] of the classes, channels (all four kinds), subscriptions and
//! contract ConfigMaps, plans them with the same core as standalone mode, and
//! converges the cluster on the plan:
//!
//! 1. every live channel carries the finalizer [`FINALIZER`], so its topic
//!    or stream is deleted before the object goes;
//! 2. destinations that reference something other than a channel are
//!    resolved through the API: a `v1` `Service` to
//!    `http://<name>.<namespace>.svc.cluster.local`, any other Addressable to
//!    its `status.address.url` (read through the dynamic API), a relative
//!    `uri` resolved against either;
//! 3. backing resources are provisioned (retried with backoff, re-verified
//!    periodically) by the [`Cycle`] shared with standalone mode;
//! 4. each backend's contract is written into the ConfigMap its dispatcher
//!    mounts ([`contract_config_map`]), by server-side apply, when its
//!    content changed, with the next generation;
//! 5. each channel gets its `<name>-kn-channel` Service of type
//!    ExternalName, pointing at its backend's dispatcher Service and owned by
//!    the channel, so the address Knative gives a channel resolves;
//! 6. deleted channels leave the contract first, then their topic or stream
//!    is deleted and the finalizer removed;
//! 7. the dispatchers' `/status` is polled and the Knative status of every
//!    channel and subscription patched through the status subresource
//!    (optimistically, with the object's resourceVersion; a conflict is
//!    retried on the fresh object), with a Kubernetes Event when readiness
//!    changes.

use super::crd;
use crate::cycle::{as_base, dispatcher_released, poll_dispatchers, Cycle, HttpClient};
use crate::reconcile::{channel_key, plan, Addressing, ChannelKey, Plan};
use crate::status::{self, ConditionStatus, DispatcherObservation, ResourceStatus};
use channel_core::compile::{compile, Problem};
use channel_core::manifests::{load_str, Manifests};
use channel_core::resources::{ChannelKind, Destination};
use channel_core::{BackendKind, ChannelContract, Contract};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};
use url::Url;

/// Held by every channel until its backing resource is deleted.
pub const FINALIZER: &str = "messaging.knative.dev/channel-provisioner";
/// Field manager of everything the controller applies.
pub const MANAGER: &str = "knative-channel-provisioner";
/// Label on the ConfigMaps holding contracts.
pub const CONTRACT_LABEL: &str = "messaging.knative.dev/contract";

/// The ConfigMap holding `backend`'s contract (key `<backend>.json`).
pub fn contract_config_map(backend: BackendKind) -> String {
    format!("{}-dispatcher-contract", backend.as_str())
}

/// The data key of a contract in its ConfigMap.
pub fn contract_key(backend: BackendKind) -> String {
    format!("{}.json", backend.as_str())
}

/// Read the contracts held by ConfigMaps (ignoring unreadable ones).
pub fn contracts_of(maps: &[ConfigMap]) -> BTreeMap<BackendKind, Contract> {
    let mut out = BTreeMap::new();
    for backend in BackendKind::ALL {
        let Some(map) = maps
            .iter()
            .find(|m| m.metadata.name.as_deref() == Some(&contract_config_map(backend)))
        else {
            continue;
        };
        let Some(text) = map
            .data
            .as_ref()
            .and_then(|d| d.get(&contract_key(backend)))
        else {
            continue;
        };
        match Contract::from_json(text.as_bytes()) {
            Ok(c) => {
                out.insert(backend, c);
            }
            Err(e) => {
                tracing::warn!(backend = %backend, error = %e, "ignoring an unreadable contract ConfigMap")
            }
        }
    }
    out
}

/// The API resource of every channel kind.
pub fn channel_resources() -> [(ChannelKind, ApiResource); 4] {
    [
        (
            ChannelKind::Channel,
            ApiResource::erase::<crd::Channel>(&()),
        ),
        (
            ChannelKind::InMemoryChannel,
            ApiResource::erase::<crd::InMemoryChannel>(&()),
        ),
        (
            ChannelKind::KafkaChannel,
            ApiResource::erase::<crd::KafkaChannel>(&()),
        ),
        (
            ChannelKind::NatsJetStreamChannel,
            ApiResource::erase::<crd::NatsJetStreamChannel>(&()),
        ),
    ]
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    if kind == "Subscription" {
        return Some(ApiResource::erase::<crd::Subscription>(&()));
    }
    channel_resources()
        .into_iter()
        .find(|(k, _)| k.as_str() == kind)
        .map(|(_, ar)| ar)
}

/// Where the controller finds the dispatchers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The namespace of the dispatchers and their contract ConfigMaps.
    pub namespace: String,
    /// Host name of each backend's dispatcher Service (the target of the
    /// channels' ExternalName Services).
    pub dispatcher_hosts: BTreeMap<BackendKind, String>,
    /// Admin URL of each backend's dispatcher (polled for `/status`).
    pub dispatcher_admin: BTreeMap<BackendKind, Url>,
}

impl Settings {
    /// The defaults of `deploy/kubernetes`: `<backend>-dispatcher` Services
    /// in `namespace`, admin port 9090.
    pub fn new(namespace: &str) -> Settings {
        let mut hosts = BTreeMap::new();
        let mut admin = BTreeMap::new();
        for backend in BackendKind::ALL {
            let host = format!(
                "{}-dispatcher.{namespace}.svc.cluster.local",
                backend.as_str()
            );
            if let Ok(url) = Url::parse(&format!("http://{host}:9090/")) {
                admin.insert(backend, url);
            }
            hosts.insert(backend, host);
        }
        Settings {
            namespace: namespace.to_owned(),
            dispatcher_hosts: hosts,
            dispatcher_admin: admin,
        }
    }
}

/// What one round reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub classes: Vec<crd::ClusterChannelProvisioner>,
    /// Objects of the four channel kinds.
    pub channels: Vec<DynamicObject>,
    pub subscriptions: Vec<crd::Subscription>,
    /// The contract ConfigMaps in the system namespace.
    pub contract_maps: Vec<ConfigMap>,
}

/// What one round did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub resources: Vec<ResourceStatus>,
    /// API calls that failed (retried next round).
    pub errors: Vec<String>,
    /// A deletion waits for a dispatcher: run again soon.
    pub waiting: bool,
}

/// The controller's state across rounds.
pub struct Controller {
    client: kube::Client,
    settings: Settings,
    cycle: Cycle,
    http: HttpClient,
    recorder: Recorder,
    /// Contracts written by this process (the ConfigMap cache may lag).
    written: BTreeMap<BackendKind, Contract>,
    /// ExternalName Services applied by this process: (namespace, name) →
    /// (target host, owner uid).
    services: BTreeMap<(String, String), (String, String)>,
    /// When each deleting channel was first seen deleting.
    deleting_since: BTreeMap<ChannelKey, Instant>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn kind_of(o: &DynamicObject) -> String {
    o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default()
}

fn api_version_of(o: &DynamicObject) -> String {
    o.types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default()
}

/// A resource as one manifest document for channel-core's loader: only
/// what Knative users write (status and server fields left out).
fn document(api_version: &str, kind: &str, meta: &kube::api::ObjectMeta, spec: &Value) -> String {
    let mut metadata = json!({"name": meta.name, "namespace": meta.namespace});
    if let Some(uid) = &meta.uid {
        metadata["uid"] = json!(uid);
    }
    if let Some(generation) = meta.generation {
        metadata["generation"] = json!(generation);
    }
    if let Some(labels) = &meta.labels {
        metadata["labels"] = json!(labels);
    }
    if let Some(annotations) = &meta.annotations {
        let kept: BTreeMap<&String, &String> = annotations
            .iter()
            .filter(|(k, _)| k.as_str() != "kubectl.kubernetes.io/last-applied-configuration")
            .collect();
        metadata["annotations"] = json!(kept);
    }
    let mut doc = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
    if !spec.is_null() {
        doc["spec"] = spec.clone();
    }
    doc.to_string()
}

/// The classes of a snapshot as manifests (unusable ones as warnings).
fn class_manifests(snap: &Snapshot) -> Manifests {
    let mut manifests = Manifests::default();
    for class in &snap.classes {
        let doc = document(
            "eventing.knative.dev/v1alpha1",
            "ClusterChannelProvisioner",
            &class.metadata,
            &serde_json::to_value(&class.spec).unwrap_or_default(),
        );
        let source = format!("ClusterChannelProvisioner {}", class.name_any());
        match load_str(&source, &doc) {
            Ok(m) => merge(&mut manifests, m),
            Err(e) => manifests.warnings.push(e.to_string()),
        }
    }
    manifests
}

fn merge(into: &mut Manifests, from: Manifests) {
    into.channels.extend(from.channels);
    into.subscriptions.extend(from.subscriptions);
    into.classes.extend(from.classes);
    into.warnings.extend(from.warnings);
}

fn problem(kind: &str, meta: &kube::api::ObjectMeta, reason: &str, message: String) -> Problem {
    Problem {
        kind: kind.to_owned(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        reason: reason.to_owned(),
        message,
    }
}

fn is_channel_reference(r: &channel_core::resources::KReference) -> bool {
    ChannelKind::from_kind(&r.kind).is_some()
        && r.api_version
            .as_deref()
            .is_none_or(|v| v.starts_with("messaging.knative.dev/"))
}

/// Log a failed API call; it is retried next round.
fn note(errors: &mut Vec<String>, what: String, e: kube::Error) {
    tracing::warn!(error = %e, "{what}");
    errors.push(format!("{what}: {e}"));
}

/// Whether an API error is a conflict (stale resourceVersion).
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Controller {
    pub fn new(client: kube::Client, settings: Settings, cycle: Cycle, http: HttpClient) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Controller {
            client,
            settings,
            cycle,
            http,
            recorder,
            written: BTreeMap::new(),
            services: BTreeMap::new(),
            deleting_since: BTreeMap::new(),
        }
    }

    /// Resolve a destination that references something other than a
    /// channel into a URI; `Err` says why it cannot be.
    async fn resolve(&self, namespace: &str, dest: &mut Destination) -> Result<(), String> {
        let Some(r) = dest.reference.clone() else {
            return Ok(());
        };
        if is_channel_reference(&r) {
            return Ok(());
        }
        let ns = r.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        let api_version = r
            .api_version
            .clone()
            .or_else(|| r.group.as_ref().map(|g| format!("{g}/v1")))
            .unwrap_or_else(|| "v1".into());
        let base = if r.kind == "Service" && api_version == "v1" {
            format!("http://{}.{ns}.svc.cluster.local/", r.name)
        } else {
            let (group, version) = api_version
                .split_once('/')
                .unwrap_or(("", api_version.as_str()));
            let gvk = GroupVersionKind::gvk(group, version, &r.kind);
            let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(|e| {
                    format!("{api_version} {} is not served by the cluster: {e}", r.kind)
                })?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
            let object = api
                .get_opt(&r.name)
                .await
                .map_err(|e| format!("reading {} {ns}/{}: {e}", r.kind, r.name))?
                .ok_or_else(|| format!("{} {ns}/{} does not exist", r.kind, r.name))?;
            object.data["status"]["address"]["url"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    format!(
                        "{} {ns}/{} is not addressable yet (no status.address.url)",
                        r.kind, r.name
                    )
                })?
        };
        let mut url = Url::parse(&base).map_err(|e| format!("address {base:?}: {e}"))?;
        if let Some(relative) = dest.uri.as_deref() {
            url = url
                .join(relative)
                .map_err(|e| format!("uri {relative:?} relative to {base}: {e}"))?;
        }
        dest.reference = None;
        dest.uri = Some(url.to_string());
        Ok(())
    }

    /// Manifests from the snapshot's live objects, with references to
    /// non-channels resolved; the objects that cannot be used, as problems.
    async fn manifests(&self, snap: &Snapshot) -> (Manifests, Vec<Problem>) {
        let mut manifests = class_manifests(snap);
        let mut problems = Vec::new();
        for channel in &snap.channels {
            if channel.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let kind = kind_of(channel);
            let ns = channel.namespace().unwrap_or_default();
            let mut spec = channel.data.get("spec").cloned().unwrap_or(Value::Null);
            // The channel's own dead-letter sink may reference a Service or
            // another Addressable.
            if let Some(dls) = spec.pointer("/delivery/deadLetterSink").cloned() {
                if let Ok(mut dest) = serde_json::from_value::<Destination>(dls) {
                    if let Err(message) = self.resolve(&ns, &mut dest).await {
                        problems.push(problem(
                            &kind,
                            &channel.metadata,
                            "DeadLetterSinkResolveFailed",
                            message,
                        ));
                        continue;
                    }
                    spec["delivery"]["deadLetterSink"] =
                        serde_json::to_value(&dest).unwrap_or_default();
                }
            }
            let doc = document(&api_version_of(channel), &kind, &channel.metadata, &spec);
            match load_str(&format!("{kind} {ns}/{}", channel.name_any()), &doc) {
                Ok(m) => merge(&mut manifests, m),
                Err(e) => problems.push(problem(
                    &kind,
                    &channel.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
        'subscriptions: for sub in &snap.subscriptions {
            let ns = sub.namespace().unwrap_or_default();
            let mut spec = sub.spec.clone();
            let delivery_dls = spec
                .delivery
                .as_mut()
                .and_then(|d| d.dead_letter_sink.as_mut());
            for (dest, reason) in [
                (spec.subscriber.as_mut(), "SubscriberResolveFailed"),
                (spec.reply.as_mut(), "ReplyResolveFailed"),
                (delivery_dls, "DeadLetterSinkResolveFailed"),
            ] {
                let Some(dest) = dest else { continue };
                if let Err(message) = self.resolve(&ns, dest).await {
                    problems.push(problem("Subscription", &sub.metadata, reason, message));
                    continue 'subscriptions;
                }
            }
            let doc = document(
                "messaging.knative.dev/v1",
                "Subscription",
                &sub.metadata,
                &serde_json::to_value(&spec).unwrap_or_default(),
            );
            match load_str(&format!("Subscription {ns}/{}", sub.name_any()), &doc) {
                Ok(m) => merge(&mut manifests, m),
                Err(e) => problems.push(problem(
                    "Subscription",
                    &sub.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
        (manifests, problems)
    }

    /// The contracts in force: what this process wrote, or what the
    /// ConfigMaps hold when newer.
    fn current_contracts(&self, snap: &Snapshot) -> BTreeMap<BackendKind, Contract> {
        let mut out = contracts_of(&snap.contract_maps);
        for (backend, mine) in &self.written {
            let newer = out
                .get(backend)
                .is_none_or(|theirs| theirs.generation <= mine.generation);
            if newer {
                out.insert(*backend, mine.clone());
            }
        }
        out
    }

    async fn apply_contract(
        &self,
        contract: &Contract,
        backend: BackendKind,
    ) -> Result<(), kube::Error> {
        let name = contract_config_map(backend);
        let map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": self.settings.namespace,
                "labels": {CONTRACT_LABEL: backend.as_str(), "app.kubernetes.io/managed-by": MANAGER},
            },
            "data": {contract_key(backend): contract.to_json_pretty()},
        });
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(map),
        )
        .await?;
        Ok(())
    }

    async fn apply_service(&self, owner: &DynamicObject, host: &str) -> Result<(), kube::Error> {
        let ns = owner.namespace().unwrap_or_default();
        let name = format!("{}-kn-channel", owner.name_any());
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    "messaging.knative.dev/channel": owner.name_any(),
                    "app.kubernetes.io/managed-by": MANAGER,
                },
                "ownerReferences": [{
                    "apiVersion": api_version_of(owner),
                    "kind": kind_of(owner),
                    "name": owner.name_any(),
                    "uid": owner.uid().unwrap_or_default(),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": {"type": "ExternalName", "externalName": host},
        });
        let api: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(service),
        )
        .await?;
        Ok(())
    }

    /// Set the finalizers of a channel to `finalizers` (optimistically).
    async fn set_finalizers(
        &self,
        channel: &DynamicObject,
        finalizers: Vec<String>,
    ) -> Result<(), kube::Error> {
        let Some(ar) = resource_of(&kind_of(channel)) else {
            return Ok(());
        };
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &channel.namespace().unwrap_or_default(),
            &ar,
        );
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": channel.resource_version(),
        }});
        api.patch(
            &channel.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
        Ok(())
    }

    /// The contract a deleting channel was (or would have been) served
    /// with: from the contracts in force, else compiled from its spec.
    fn contract_of_deleting(
        &self,
        channel: &DynamicObject,
        snap: &Snapshot,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
    ) -> Option<ChannelContract> {
        let kind = kind_of(channel);
        let key = (
            channel.namespace().unwrap_or_default(),
            channel.name_any(),
            kind.clone(),
        );
        if let Some(c) = previous.get(&key) {
            return Some(c.clone());
        }
        let mut manifests = class_manifests(snap);
        let spec = channel.data.get("spec").cloned().unwrap_or(Value::Null);
        let doc = document(&api_version_of(channel), &kind, &channel.metadata, &spec);
        merge(&mut manifests, load_str("channel", &doc).ok()?);
        compile(&manifests)
            .contracts
            .into_values()
            .flat_map(|c| c.channels)
            .find(|c| channel_key(c) == key)
    }

    /// Patch a resource's status to `resource.status` (with
    /// observedGeneration and carried-over transition times) when it
    /// differs; retried on a conflict with the fresh object. Returns the
    /// previous Ready status when it changed.
    async fn patch_status(
        &self,
        resource: &ResourceStatus,
        object: &DynamicObject,
    ) -> Result<Option<String>, kube::Error> {
        let Some(ar) = resource_of(&resource.kind) else {
            return Ok(None);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &resource.namespace, &ar);
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut current = object.clone();
        for attempt in 0..3 {
            let old_status = current.data.get("status").cloned().unwrap_or(Value::Null);
            let old = ResourceStatus {
                status: old_status.clone(),
                ..resource.clone()
            };
            let mut new = [resource.clone()];
            status::stamp_transitions(std::slice::from_ref(&old), &mut new, &now);
            let mut wanted = new[0].status.clone();
            if let (Some(obj), Some(generation)) =
                (wanted.as_object_mut(), current.metadata.generation)
            {
                obj.insert("observedGeneration".into(), json!(generation));
            }
            if wanted == old_status {
                return Ok(None);
            }
            // A merge patch keeps keys it does not name: clear the ones gone.
            let mut patch_status = wanted.clone();
            if let (Some(p), Some(o)) = (patch_status.as_object_mut(), old_status.as_object()) {
                for key in o.keys() {
                    if !p.contains_key(key) {
                        p.insert(key.clone(), Value::Null);
                    }
                }
            }
            let patch = json!({
                "metadata": {"resourceVersion": current.resource_version()},
                "status": patch_status,
            });
            match api
                .patch_status(
                    &resource.name,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => {
                    let ready = |s: &Value| -> String {
                        s["conditions"]
                            .as_array()
                            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                            .and_then(|c| c["status"].as_str())
                            .unwrap_or("Unknown")
                            .to_owned()
                    };
                    let before = ready(&old_status);
                    return Ok((before != ready(&wanted)).then_some(before));
                }
                Err(e) if is_conflict(&e) && attempt < 2 => {
                    tracing::debug!(kind = %resource.kind, name = %resource.name, "status conflict; retrying on the fresh object");
                    current = api.get(&resource.name).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn event(&self, resource: &ResourceStatus, object: &DynamicObject) {
        let ready = resource.ready == ConditionStatus::True;
        let event = Event {
            type_: if ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: if ready {
                "Ready".into()
            } else {
                resource.reason.clone().unwrap_or_else(|| "NotReady".into())
            },
            note: Some(match (&resource.message, ready) {
                (_, true) => format!(
                    "{} {}/{} is ready",
                    resource.kind, resource.namespace, resource.name
                ),
                (Some(m), false) => m.chars().take(1000).collect(),
                (None, false) => format!(
                    "{} {}/{} is not ready",
                    resource.kind, resource.namespace, resource.name
                ),
            }),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some(api_version_of(object)),
            kind: Some(resource.kind.clone()),
            name: Some(resource.name.clone()),
            namespace: Some(resource.namespace.clone()),
            uid: object.uid(),
            ..ObjectReference::default()
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "event not recorded");
        }
    }

    /// One round: converge the cluster on `snap`.
    pub async fn reconcile(&mut self, snap: &Snapshot) -> Outcome {
        let mut errors = Vec::new();

        // 1. Finalizers on live channels.
        for channel in &snap.channels {
            if channel.metadata.deletion_timestamp.is_none()
                && !channel.finalizers().iter().any(|f| f == FINALIZER)
            {
                let mut finalizers = channel.finalizers().to_vec();
                finalizers.push(FINALIZER.into());
                if let Err(e) = self.set_finalizers(channel, finalizers).await {
                    note(
                        &mut errors,
                        format!(
                            "adding the finalizer to {} {}",
                            kind_of(channel),
                            channel.name_any()
                        ),
                        e,
                    );
                }
            }
        }

        // 2. Plan.
        let (manifests, mut problems) = self.manifests(snap).await;
        let contracts = self.current_contracts(snap);
        let previous: BTreeMap<ChannelKey, ChannelContract> = contracts
            .values()
            .flat_map(|c| c.channels.iter())
            .map(|c| (channel_key(c), c.clone()))
            .collect();
        let mut plan: Plan = plan(&manifests, &previous, &Addressing::default());
        plan.problems.append(&mut problems);

        // 3. Provision.
        self.cycle.provision(&plan, &previous).await;

        // 4. Contracts.
        let mut in_contract = BTreeMap::new();
        let present: BTreeSet<BackendKind> =
            contracts_of(&snap.contract_maps).into_keys().collect();
        for (backend, channels) in self.cycle.contracts(&plan, &previous) {
            for c in &channels {
                in_contract.insert(channel_key(c), true);
            }
            let old = contracts.get(&backend);
            let mut next = Contract {
                generation: old.map(|c| c.generation).unwrap_or(0),
                backend: Some(backend),
                channels,
            };
            let same = old.is_some_and(|o| o.same_content(&next));
            if same && present.contains(&backend) {
                continue;
            }
            if !same {
                next.generation += 1;
            }
            match self.apply_contract(&next, backend).await {
                Ok(()) => {
                    tracing::info!(backend = %backend, generation = next.generation, channels = next.channels.len(), "contract written");
                    self.cycle.contract_written(backend, next.generation);
                    self.written.insert(backend, next);
                }
                Err(e) => note(&mut errors, format!("writing the {backend} contract"), e),
            }
        }

        // 5. ExternalName Services for the planned channels.
        let live = |kind: &str, ns: &str, name: &str| {
            snap.channels.iter().find(|c| {
                kind_of(c) == kind
                    && c.namespace().as_deref() == Some(ns)
                    && c.name_any() == name
                    && c.metadata.deletion_timestamp.is_none()
            })
        };
        for planned in &plan.channels {
            let c = &planned.contract;
            let (Some(object), Some(host)) = (
                live(&c.kind, &c.namespace, &c.name),
                self.settings.dispatcher_hosts.get(&c.backend),
            ) else {
                continue;
            };
            let key = (c.namespace.clone(), c.name.clone());
            let wanted = (host.clone(), object.uid().unwrap_or_default());
            if self.services.get(&key) == Some(&wanted) {
                continue;
            }
            match self.apply_service(object, host).await {
                Ok(()) => {
                    self.services.insert(key, wanted);
                }
                Err(e) => note(
                    &mut errors,
                    format!(
                        "applying the Service of {} {}/{}",
                        c.kind, c.namespace, c.name
                    ),
                    e,
                ),
            }
        }

        // 6. What the dispatchers applied.
        let mut admins = self.settings.dispatcher_admin.clone();
        for class in &snap.classes {
            if let Some(url) = class
                .spec
                .dispatcher
                .as_ref()
                .and_then(|d| d.admin_url.as_deref())
                .and_then(|u| Url::parse(u).ok())
            {
                admins.insert(class.spec.backend, url);
            }
        }
        let admins = admins.into_iter().map(|(b, u)| (b, as_base(u))).collect();
        let mut obs = self.cycle.observations(&plan, in_contract, &self.written);
        for (backend, contract) in &contracts {
            obs.generations
                .entry(*backend)
                .or_insert(contract.generation);
        }
        for (backend, _, observation) in poll_dispatchers(&self.http, &admins).await {
            if let DispatcherObservation::Unreachable(e) = &observation {
                tracing::debug!(backend = %backend, error = %e, "dispatcher status not available");
            }
            obs.dispatchers.insert(backend, observation);
        }
        let mut waiting = false;
        // 7. Deleted channels: out of the contract (above); once their
        //    dispatcher applied that, their backing resource; then the
        //    finalizer.
        for channel in &snap.channels {
            if channel.metadata.deletion_timestamp.is_none()
                || !channel.finalizers().iter().any(|f| f == FINALIZER)
            {
                continue;
            }
            if let Some(contract) = self.contract_of_deleting(channel, snap, &previous) {
                let key = channel_key(&contract);
                let since = *self
                    .deleting_since
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                let served = previous.contains_key(&key);
                let generation = self.written.get(&contract.backend).map(|c| c.generation);
                if served
                    && !dispatcher_released(
                        obs.dispatchers.get(&contract.backend),
                        generation,
                        since,
                    )
                {
                    tracing::debug!(channel = %contract.key(), "deletion waits for the dispatcher to stop serving the channel");
                    waiting = true;
                    continue;
                }
                if let Err(e) = self.cycle.provisioner.deprovision(&contract).await {
                    tracing::warn!(channel = %contract.key(), error = %e, "deleting the backing resource failed; the finalizer stays");
                    errors.push(format!("deleting {}: {e}", contract.key()));
                    continue;
                }
                tracing::info!(channel = %contract.key(), backend = %contract.backend, "backing resource deleted");
            }
            let finalizers: Vec<String> = channel
                .finalizers()
                .iter()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            match self.set_finalizers(channel, finalizers).await {
                Ok(()) => {
                    self.services
                        .remove(&(channel.namespace().unwrap_or_default(), channel.name_any()));
                    self.deleting_since.remove(&(
                        channel.namespace().unwrap_or_default(),
                        channel.name_any(),
                        kind_of(channel),
                    ));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => note(
                    &mut errors,
                    format!(
                        "removing the finalizer of {} {}",
                        kind_of(channel),
                        channel.name_any()
                    ),
                    e,
                ),
            }
        }
        self.cycle.delete_due(&obs.dispatchers).await;

        let mut resources = status::compute(&plan, &obs);
        // An object both planned and a problem (e.g. an unresolvable
        // dead-letter sink) reports the problem.
        let problem_keys: BTreeSet<(String, String, String)> = plan
            .problems
            .iter()
            .map(|p| (p.kind.clone(), p.namespace.clone(), p.name.clone()))
            .collect();
        resources.retain(|r| {
            r.ready == ConditionStatus::False
                || !problem_keys.contains(&(r.kind.clone(), r.namespace.clone(), r.name.clone()))
        });
        for resource in &resources {
            let object = if resource.kind == "Subscription" {
                snap.subscriptions
                    .iter()
                    .find(|s| {
                        s.namespace().as_deref() == Some(&resource.namespace)
                            && s.name_any() == resource.name
                    })
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|v| serde_json::from_value::<DynamicObject>(v).ok())
            } else {
                live(&resource.kind, &resource.namespace, &resource.name).cloned()
            };
            let Some(object) = object else { continue };
            match self.patch_status(resource, &object).await {
                Ok(Some(_before)) => self.event(resource, &object).await,
                Ok(None) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => note(
                    &mut errors,
                    format!(
                        "patching the status of {} {}/{}",
                        resource.kind, resource.namespace, resource.name
                    ),
                    e,
                ),
            }
        }
        Outcome {
            resources,
            errors,
            waiting,
        }
    }
}

#[cfg(test)]
mod tests;
