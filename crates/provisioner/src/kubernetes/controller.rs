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
//!
//! Brokers and Triggers go through the same steps (see
//! `docs/kubernetes-brokers.md`): a Broker of this project's class
//! (`MTChannelBasedBroker`, the default) compiles to a channel named
//! `<broker>-kne-trigger` that exists only in the contract, each of its
//! Triggers to a filtered subscription of it. Both carry the finalizer
//! [`BROKER_FINALIZER`]; the broker gets a `<broker>-kn-broker` ExternalName
//! Service owned by it; the ConfigMap its `spec.config` names is read
//! (from the snapshot, else through the API). Brokers of another class, and
//! the triggers on them, are left alone. A namespace labelled
//! `eventing.knative.dev/injection: enabled` gets a Broker `default`,
//! created once and never deleted by the controller, as Knative does.
//!
//! Sequences and Parallels compile the same way into channels and
//! subscriptions that exist only in the contract (see [`flows`] and
//! `docs/kubernetes-flows.md`); EventTypes get their status, and are
//! auto-created when Knative's `eventtype-auto-create` is on (see
//! [`eventtypes`]). The event sources run in the source adapter, as
//! Deployments or bindings (see [`sources`] and
//! `docs/kubernetes-sources.md`); the webhooks of GitHubSources and
//! GitLabSources are registered with `--webhook-base-url` (see
//! [`webhooks`]).

use super::crd;
use crate::cycle::{as_base, dispatcher_released, poll_dispatchers, Cycle, HttpClient};
use crate::reconcile::{channel_key, plan, Addressing, ChannelKey, Plan};
use crate::status::{self, ConditionStatus, DispatcherObservation, ResourceStatus};
use channel_core::broker::{
    BROKER_CLASS_ANNOTATION, CHANNEL_BASED_BROKER_CLASS, DEFAULT_BROKER, INJECTION_LABEL,
};
use channel_core::compile::{compile, FlowKind, Problem};
use channel_core::features::CONFIG_FEATURES;
use channel_core::manifests::{load_str, ManifestError, Manifests};
use channel_core::resources::{ChannelKind, Destination, KReference};
use channel_core::{BackendKind, ChannelContract, Contract};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Instant, SystemTime};
use url::Url;

/// Held by every channel until its backing resource is deleted.
pub const FINALIZER: &str = "messaging.knative.dev/channel-provisioner";
/// Held by every Broker and Trigger this project serves until its
/// dispatcher stopped serving it (and, for a broker, its topic or stream is
/// deleted).
pub const BROKER_FINALIZER: &str = "eventing.knative.dev/channel-provisioner";
/// The label of the brokers created for namespaces with injection enabled.
pub const INJECTED_LABEL: &str = "eventing.knative.dev/namespaceInjected";
/// The API version Brokers and Triggers are read and written in.
const EVENTING_V1: &str = "eventing.knative.dev/v1";
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

/// The API resource of Brokers.
pub fn broker_resource() -> ApiResource {
    ApiResource::erase::<crd::Broker>(&())
}

/// The API resource of Triggers.
pub fn trigger_resource() -> ApiResource {
    ApiResource::erase::<crd::Trigger>(&())
}

fn resource_of(kind: &str) -> Option<ApiResource> {
    match kind {
        "Subscription" => return Some(ApiResource::erase::<crd::Subscription>(&())),
        "Broker" => return Some(broker_resource()),
        "Trigger" => return Some(trigger_resource()),
        "Sequence" => return Some(flows::sequence_resource()),
        "Parallel" => return Some(flows::parallel_resource()),
        "EventType" => return Some(eventtypes::event_type_resource()),
        "EventPolicy" => return Some(policies::event_policy_resource()),
        "PingSource" | "ApiServerSource" | "ContainerSource" | "SinkBinding" | "CronJobSource"
        | "GitHubSource" | "GitLabSource" | "KafkaSource" => {
            return sources::resource_of_source(kind, "")
        }
        _ => {}
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
    /// Admin URL of the source adapter (polled for the sources it runs).
    pub source_adapter_admin: Option<Url>,
    /// The public URL of the source adapter's webhook listener: GitHub and
    /// GitLab webhooks are registered as `<URL>/<namespace>/<name>`.
    /// `None`: nothing is registered (see [`webhooks`]).
    pub webhook_base_url: Option<Url>,
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
            source_adapter_admin: Url::parse(&format!(
                "http://source-adapter.{namespace}.svc.cluster.local:9091/"
            ))
            .ok(),
            webhook_base_url: None,
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
    /// Brokers of every class (those of another class are recognised, to
    /// be left alone).
    pub brokers: Vec<DynamicObject>,
    pub triggers: Vec<DynamicObject>,
    /// The ConfigMaps brokers name in `spec.config` ([`config_references`]);
    /// one missing here is read through the API.
    pub config_maps: Vec<ConfigMap>,
    /// Namespaces labelled `eventing.knative.dev/injection: enabled`.
    pub namespaces: Vec<Namespace>,
    pub sequences: Vec<DynamicObject>,
    pub parallels: Vec<DynamicObject>,
    pub event_types: Vec<DynamicObject>,
    /// EventPolicies (`eventing.knative.dev/v1alpha1`).
    pub event_policies: Vec<DynamicObject>,
    /// Objects of the nine source kinds.
    pub sources: Vec<DynamicObject>,
}

impl Snapshot {
    /// The broker `namespace/name`, live or deleting.
    pub fn broker(&self, namespace: &str, name: &str) -> Option<&DynamicObject> {
        self.brokers
            .iter()
            .find(|b| b.namespace().as_deref() == Some(namespace) && b.name_any() == name)
    }

    /// Whether this project serves a trigger: its broker is of this
    /// project's class, or does not exist (yet; the trigger reports it).
    pub fn serves_trigger(&self, trigger: &DynamicObject) -> bool {
        let ns = trigger.namespace().unwrap_or_default();
        self.broker(&ns, &trigger_broker(trigger))
            .is_none_or(is_our_broker)
    }
}

/// A broker's class (`eventing.knative.dev/broker.class`, this project's
/// `MTChannelBasedBroker` when unset), as channel-core decides it.
pub fn broker_class(broker: &DynamicObject) -> &str {
    broker
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(BROKER_CLASS_ANNOTATION))
        .map(String::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or(CHANNEL_BASED_BROKER_CLASS)
}

/// Whether this project serves the broker (its class is ours).
pub fn is_our_broker(broker: &DynamicObject) -> bool {
    broker_class(broker) == CHANNEL_BASED_BROKER_CLASS
}

/// The name of a trigger's broker (`default` when unset).
pub fn trigger_broker(trigger: &DynamicObject) -> String {
    trigger.data["spec"]["broker"]
        .as_str()
        .filter(|b| !b.is_empty())
        .unwrap_or(DEFAULT_BROKER)
        .to_owned()
}

fn is_live(o: &DynamicObject) -> bool {
    o.metadata.deletion_timestamp.is_none()
}

fn has_finalizer(o: &DynamicObject, finalizer: &str) -> bool {
    o.finalizers().iter().any(|f| f == finalizer)
}

/// (kind, namespace, name) of an object, borrowed.
type ObjectKey<'a> = (&'a str, &'a str, &'a str);

fn key_of<'a>(kind: &'a str, o: &'a DynamicObject) -> ObjectKey<'a> {
    (
        kind,
        o.metadata.namespace.as_deref().unwrap_or_default(),
        o.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// The snapshot's objects by (kind, namespace, name), built once a round:
/// what a round looks up per channel, subscription or status row is found
/// here rather than by scanning the snapshot (10,000 channels made those
/// scans the bulk of a round).
struct Index<'a> {
    snap: &'a Snapshot,
    /// Live channels (by their own kind) and sources (by their kind and
    /// their status rows' kind), the first of a key; brokers, triggers,
    /// flows, EventTypes and EventPolicies, the first of a key, live or not
    /// (lookups filter).
    objects: HashMap<ObjectKey<'a>, &'a DynamicObject>,
    subscriptions: HashMap<(&'a str, &'a str), &'a crd::Subscription>,
}

impl<'a> Index<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        let mut objects: HashMap<ObjectKey<'a>, &'a DynamicObject> = HashMap::new();
        let mut add = |key: ObjectKey<'a>, o: &'a DynamicObject| {
            objects.entry(key).or_insert(o);
        };
        for o in snap.channels.iter().filter(|o| is_live(o)) {
            let kind = kind_str(o);
            let (_, ns, name) = key_of("", o);
            add((kind, ns, name), o);
        }
        for o in snap.sources.iter().filter(|o| is_live(o)) {
            let kind = kind_str(o);
            let (_, ns, name) = key_of("", o);
            add((kind, ns, name), o);
            if kind == "CronJobSource" {
                add(("PingSource", ns, name), o);
            }
        }
        for (kind, list) in [
            ("Broker", &snap.brokers),
            ("Trigger", &snap.triggers),
            ("Sequence", &snap.sequences),
            ("Parallel", &snap.parallels),
            ("EventType", &snap.event_types),
            ("EventPolicy", &snap.event_policies),
        ] {
            for o in list {
                add(key_of(kind, o), o);
            }
        }
        let mut subscriptions = HashMap::with_capacity(snap.subscriptions.len());
        for s in &snap.subscriptions {
            let key = (
                s.metadata.namespace.as_deref().unwrap_or_default(),
                s.metadata.name.as_deref().unwrap_or_default(),
            );
            subscriptions.entry(key).or_insert(s);
        }
        Index {
            snap,
            objects,
            subscriptions,
        }
    }

    fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&'a DynamicObject> {
        self.objects.get(&(kind, namespace, name)).copied()
    }

    /// As [`Snapshot::broker`].
    fn broker(&self, namespace: &str, name: &str) -> Option<&'a DynamicObject> {
        self.get("Broker", namespace, name)
    }

    /// As [`Snapshot::serves_trigger`].
    fn serves_trigger(&self, trigger: &DynamicObject) -> bool {
        let ns = trigger.metadata.namespace.as_deref().unwrap_or_default();
        self.broker(ns, &trigger_broker(trigger))
            .is_none_or(is_our_broker)
    }
}

/// A Subscription as the dynamic object status is patched on (what
/// patching reads: type, metadata and status).
fn subscription_object(s: &crd::Subscription) -> DynamicObject {
    let mut data = json!({});
    if let Some(status) = s.status.as_ref().and_then(|s| serde_json::to_value(s).ok()) {
        data["status"] = status;
    }
    DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: "messaging.knative.dev/v1".into(),
            kind: "Subscription".into(),
        }),
        metadata: s.metadata.clone(),
        data,
    }
}

/// The ConfigMap a broker's `spec.config` names, as (namespace, name).
fn config_reference(broker: &DynamicObject) -> Option<(String, String)> {
    let config: KReference = serde_json::from_value(broker.data["spec"]["config"].clone()).ok()?;
    let core = config
        .api_version
        .as_deref()
        .is_none_or(|v| v.is_empty() || v == "v1");
    (config.kind == "ConfigMap" && core && !config.name.is_empty()).then(|| {
        (
            config
                .namespace
                .filter(|n| !n.is_empty())
                .or_else(|| broker.namespace())
                .unwrap_or_default(),
            config.name,
        )
    })
}

/// The ConfigMaps the controller reads, as (namespace, name): those named
/// by the `spec.config` of the live brokers this project serves, and
/// Knative's feature flags (`knative-eventing/config-features`). The run
/// loop watches each of them.
pub fn config_references(snap: &Snapshot) -> BTreeSet<(String, String)> {
    let (ns, name) = CONFIG_FEATURES;
    snap.brokers
        .iter()
        .filter(|b| is_live(b) && is_our_broker(b))
        .filter_map(config_reference)
        .chain([(ns.to_owned(), name.to_owned())])
        .collect()
}

/// A ConfigMap as a manifest document.
fn config_map_document(map: &ConfigMap) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": map.metadata.name,
            "namespace": map.metadata.namespace,
            "labels": map.metadata.labels.clone().unwrap_or_default(),
        },
        "data": map.data.clone().unwrap_or_default(),
    })
    .to_string()
}

/// A broker whose dead-letter sink cannot be resolved stays served: its
/// planned status, with `DeadLetterSinkResolved` (and so `Ready`) `False`.
fn dead_letter_sink_unresolved(row: &mut ResourceStatus, p: &Problem) {
    let failed = json!({"status": "False", "reason": p.reason, "message": p.message});
    let Some(conditions) = row
        .status
        .get_mut("conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in conditions.iter_mut() {
        let was_ready = c["status"] != "False";
        if c["type"] == "DeadLetterSinkResolved" || (c["type"] == "Ready" && was_ready) {
            if let (Some(c), Some(f)) = (c.as_object_mut(), failed.as_object()) {
                c.extend(f.clone());
            }
        }
    }
    if row.ready != ConditionStatus::False {
        row.ready = ConditionStatus::False;
        row.reason = Some(p.reason.clone());
        row.message = Some(p.message.clone());
    }
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
    /// ExternalName Services applied by this process: (namespace, Service
    /// name) → (target host, owner uid).
    services: BTreeMap<(String, String), (String, String)>,
    /// When each deleting channel, broker or trigger was first seen
    /// deleting (keyed by namespace, name and kind).
    deleting_since: BTreeMap<ChannelKey, Instant>,
    /// The broker ConfigMaps last read, by (namespace, name): used when the
    /// API cannot be read.
    configs: BTreeMap<(String, String), ConfigMap>,
    /// The sources contract ConfigMap last written.
    sources_map: Option<ConfigMap>,
    /// ContainerSource Deployments applied, by (namespace, source): the
    /// document applied.
    deployments: BTreeMap<(String, String), String>,
    /// The GitHub and GitLab webhooks registered (with
    /// `--webhook-base-url`; made on the first round).
    registrar: Option<::sources::hooks::Registrar>,
    /// The contract each contract ConfigMap holds, with the text it was
    /// parsed from: 10,000 channels make a contract of megabytes, read
    /// several times a round, parsed again only when it changed.
    parsed: BTreeMap<BackendKind, (String, Contract)>,
    /// channel-core's loader on the documents of a round's objects,
    /// remembered for the next round (most objects do not change).
    loaded: Loaded,
}

/// The loader's results by (source, document): those of the round under
/// way, and those of the previous one (dropped at the end of a round, so
/// only the documents of current objects are kept).
#[derive(Default)]
struct Loaded {
    previous: HashMap<(String, String), Result<Manifests, ManifestError>>,
    current: HashMap<(String, String), Result<Manifests, ManifestError>>,
}

impl Loaded {
    /// [`load_str`] of `doc`, or what it gave for the same document.
    fn load(&mut self, source: String, doc: String) -> Result<Manifests, ManifestError> {
        let key = (source, doc);
        if let Some(done) = self.current.get(&key) {
            return done.clone();
        }
        let done = match self.previous.remove(&key) {
            Some(done) => done,
            None => load_str(&key.0, &key.1),
        };
        self.current.insert(key, done.clone());
        done
    }

    fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The object's kind, borrowed.
fn kind_str(o: &DynamicObject) -> &str {
    o.types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_default()
}

fn kind_of(o: &DynamicObject) -> String {
    kind_str(o).to_owned()
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
    into.brokers.extend(from.brokers);
    into.triggers.extend(from.triggers);
    into.config_maps.extend(from.config_maps);
    into.sequences.extend(from.sequences);
    into.parallels.extend(from.parallels);
    into.event_types.extend(from.event_types);
    into.event_policies.extend(from.event_policies);
    into.ping_sources.extend(from.ping_sources);
    into.api_server_sources.extend(from.api_server_sources);
    into.container_sources.extend(from.container_sources);
    into.sink_bindings.extend(from.sink_bindings);
    into.github_sources.extend(from.github_sources);
    into.gitlab_sources.extend(from.gitlab_sources);
    into.kafka_sources.extend(from.kafka_sources);
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

fn is_channel_reference(r: &KReference) -> bool {
    ChannelKind::from_kind(&r.kind).is_some()
        && r.api_version
            .as_deref()
            .is_none_or(|v| v.starts_with("messaging.knative.dev/"))
}

fn is_broker_reference(r: &KReference) -> bool {
    r.kind == "Broker"
        && r.api_version
            .as_deref()
            .or(r.group.as_deref())
            .is_none_or(|v| v.starts_with("eventing.knative.dev"))
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
            configs: BTreeMap::new(),
            sources_map: None,
            deployments: BTreeMap::new(),
            registrar: None,
            parsed: BTreeMap::new(),
            loaded: Loaded::default(),
        }
    }

    /// Resolve a destination that references something other than a
    /// channel or a broker this project serves into a URI (those compile
    /// resolves); `Err` says why it cannot be.
    async fn resolve(
        &self,
        snap: &Snapshot,
        namespace: &str,
        dest: &mut Destination,
    ) -> Result<(), String> {
        let Some(r) = dest.reference.clone() else {
            return Ok(());
        };
        if is_channel_reference(&r) {
            return Ok(());
        }
        let ns = r.namespace.clone().unwrap_or_else(|| namespace.to_owned());
        // A broker of this project (or none: compile reports it missing);
        // one of another class is an Addressable like any other.
        if is_broker_reference(&r) && snap.broker(&ns, &r.name).is_none_or(is_our_broker) {
            return Ok(());
        }
        // Sequences and Parallels: compile gives their address.
        if FlowKind::of_reference(&r.kind, r.api_version.as_deref().unwrap_or_default()).is_some() {
            return Ok(());
        }
        let api_version = r
            .api_version
            .clone()
            .or_else(|| r.group.as_ref().map(|g| format!("{g}/v1")))
            .unwrap_or_else(|| "v1".into());
        // An Addressable's `status.address` may carry the CA certificates
        // its HTTPS URL is verified with and its OIDC audience: the
        // destination takes them unless it sets its own.
        let mut announced: (Option<String>, Option<String>) = (None, None);
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
            let address = &object.data["status"]["address"];
            let text = |v: &Value| v.as_str().map(str::to_owned);
            announced = (text(&address["CACerts"]), text(&address["audience"]));
            address["url"].as_str().map(str::to_owned).ok_or_else(|| {
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
        let (ca_certs, audience) = announced;
        if dest.ca_certs.is_none() {
            dest.ca_certs = ca_certs;
        }
        if dest.audience.is_none() {
            dest.audience = audience;
        }
        Ok(())
    }

    /// Manifests from the snapshot's live objects, with references to
    /// non-channels resolved; the objects that cannot be used, as problems,
    /// and (third) the flows' destinations that cannot be resolved.
    async fn manifests(
        &mut self,
        snap: &Snapshot,
        errors: &mut Vec<String>,
    ) -> (Manifests, Vec<Problem>, Vec<flows::Unresolved>) {
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
            // another Addressable. Unresolvable, it is reported and the
            // channel stays served (dropping it would delete its topic or
            // stream); subscriptions inheriting the sink wait for it.
            if let Some(dls) = spec.pointer("/delivery/deadLetterSink").cloned() {
                if let Ok(mut dest) = serde_json::from_value::<Destination>(dls) {
                    match self.resolve(snap, &ns, &mut dest).await {
                        Ok(()) => {
                            spec["delivery"]["deadLetterSink"] =
                                serde_json::to_value(&dest).unwrap_or_default();
                        }
                        Err(message) => problems.push(problem(
                            &kind,
                            &channel.metadata,
                            "DeadLetterSinkResolveFailed",
                            message,
                        )),
                    }
                }
            }
            let doc = document(&api_version_of(channel), &kind, &channel.metadata, &spec);
            let source = format!("{kind} {ns}/{}", channel.name_any());
            match self.loaded.load(source, doc) {
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
                if let Err(message) = self.resolve(snap, &ns, dest).await {
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
            match self
                .loaded
                .load(format!("Subscription {ns}/{}", sub.name_any()), doc)
            {
                Ok(m) => merge(&mut manifests, m),
                Err(e) => problems.push(problem(
                    "Subscription",
                    &sub.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
        self.broker_manifests(snap, &mut manifests, &mut problems, errors)
            .await;
        let unresolved = self
            .flow_manifests(snap, &mut manifests, &mut problems)
            .await;
        self.event_type_manifests(snap, &mut manifests, &mut problems);
        self.event_policy_manifests(snap, &mut manifests, &mut problems);
        self.source_manifests(snap, &mut manifests, &mut problems)
            .await;
        self.loaded.end_round();
        (manifests, problems, unresolved)
    }

    /// The brokers this project serves, their config ConfigMaps and their
    /// triggers, into `manifests`; references resolved as for channels and
    /// subscriptions.
    async fn broker_manifests(
        &mut self,
        snap: &Snapshot,
        manifests: &mut Manifests,
        problems: &mut Vec<Problem>,
        errors: &mut Vec<String>,
    ) {
        for key in config_references(snap) {
            let (ns, name) = &key;
            let found = snap
                .config_maps
                .iter()
                .find(|m| {
                    m.metadata.namespace.as_deref() == Some(ns.as_str())
                        && m.metadata.name.as_deref() == Some(name.as_str())
                })
                .cloned();
            let map = match found {
                Some(map) => Some(map),
                // Not watched yet: read it.
                None => match Api::<ConfigMap>::namespaced(self.client.clone(), ns)
                    .get_opt(name)
                    .await
                {
                    Ok(map) => map,
                    Err(e) => {
                        note(errors, format!("reading ConfigMap {ns}/{name}"), e);
                        self.configs.get(&key).cloned()
                    }
                },
            };
            let Some(map) = map else {
                // compile reports ConfigNotFound on the broker.
                self.configs.remove(&key);
                continue;
            };
            match load_str(
                &format!("ConfigMap {ns}/{name}"),
                &config_map_document(&map),
            ) {
                Ok(m) => merge(manifests, m),
                Err(e) => manifests.warnings.push(e.to_string()),
            }
            self.configs.insert(key, map);
        }
        for broker in snap
            .brokers
            .iter()
            .filter(|b| is_live(b) && is_our_broker(b))
        {
            let ns = broker.namespace().unwrap_or_default();
            let mut spec = broker.data.get("spec").cloned().unwrap_or(Value::Null);
            // Unresolvable, it is reported and the broker stays served (its
            // channel and the events in it stay); triggers inheriting the
            // sink wait for it.
            if let Some(dls) = spec.pointer("/delivery/deadLetterSink").cloned() {
                if let Ok(mut dest) = serde_json::from_value::<Destination>(dls) {
                    match self.resolve(snap, &ns, &mut dest).await {
                        Ok(()) => {
                            spec["delivery"]["deadLetterSink"] =
                                serde_json::to_value(&dest).unwrap_or_default();
                        }
                        Err(message) => problems.push(problem(
                            "Broker",
                            &broker.metadata,
                            "DeadLetterSinkResolveFailed",
                            message,
                        )),
                    }
                }
            }
            let doc = document(EVENTING_V1, "Broker", &broker.metadata, &spec);
            match self
                .loaded
                .load(format!("Broker {ns}/{}", broker.name_any()), doc)
            {
                Ok(m) => merge(manifests, m),
                Err(e) => problems.push(problem(
                    "Broker",
                    &broker.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
        'triggers: for trigger in snap
            .triggers
            .iter()
            .filter(|t| is_live(t) && snap.serves_trigger(t))
        {
            let ns = trigger.namespace().unwrap_or_default();
            let mut spec = trigger.data.get("spec").cloned().unwrap_or(Value::Null);
            for (pointer, reason) in [
                ("/subscriber", "SubscriberResolveFailed"),
                ("/delivery/deadLetterSink", "DeadLetterSinkResolveFailed"),
            ] {
                let Some(value) = spec.pointer(pointer).cloned() else {
                    continue;
                };
                // A malformed destination is the loader's to report.
                let Ok(mut dest) = serde_json::from_value::<Destination>(value) else {
                    continue;
                };
                if let Err(message) = self.resolve(snap, &ns, &mut dest).await {
                    problems.push(problem("Trigger", &trigger.metadata, reason, message));
                    continue 'triggers;
                }
                if let Some(slot) = spec.pointer_mut(pointer) {
                    *slot = serde_json::to_value(&dest).unwrap_or_default();
                }
            }
            let doc = document(EVENTING_V1, "Trigger", &trigger.metadata, &spec);
            match self
                .loaded
                .load(format!("Trigger {ns}/{}", trigger.name_any()), doc)
            {
                Ok(m) => merge(manifests, m),
                Err(e) => problems.push(problem(
                    "Trigger",
                    &trigger.metadata,
                    "InvalidSpec",
                    e.to_string(),
                )),
            }
        }
    }

    /// The contracts in force: what this process wrote, or what the
    /// ConfigMaps hold when newer.
    fn current_contracts(&mut self, snap: &Snapshot) -> BTreeMap<BackendKind, Contract> {
        let mut out = self.contracts_in_maps(&snap.contract_maps);
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

    /// As [`contracts_of`], parsing a ConfigMap's contract only when its
    /// text changed.
    fn contracts_in_maps(&mut self, maps: &[ConfigMap]) -> BTreeMap<BackendKind, Contract> {
        let mut out = BTreeMap::new();
        for backend in BackendKind::ALL {
            let text = maps
                .iter()
                .find(|m| m.metadata.name.as_deref() == Some(&contract_config_map(backend)))
                .and_then(|m| m.data.as_ref())
                .and_then(|d| d.get(&contract_key(backend)));
            let Some(text) = text else {
                self.parsed.remove(&backend);
                continue;
            };
            if let Some((parsed_from, contract)) = self.parsed.get(&backend) {
                if parsed_from == text {
                    out.insert(backend, contract.clone());
                    continue;
                }
            }
            match Contract::from_json(text.as_bytes()) {
                Ok(c) => {
                    self.parsed.insert(backend, (text.clone(), c.clone()));
                    out.insert(backend, c);
                }
                Err(e) => {
                    self.parsed.remove(&backend);
                    tracing::warn!(backend = %backend, error = %e, "ignoring an unreadable contract ConfigMap")
                }
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

    /// Apply the ExternalName Service `name` (a channel's
    /// `<name>-kn-channel`, a broker's `<name>-kn-broker`) pointing at
    /// `host`, owned by `owner` of `kind` and labelled `label: <owner>`.
    async fn apply_service(
        &self,
        owner: &DynamicObject,
        kind: &str,
        name: &str,
        label: &str,
        host: &str,
    ) -> Result<(), kube::Error> {
        let ns = owner.namespace().unwrap_or_default();
        let api_version = match api_version_of(owner) {
            v if v.is_empty() => resource_of(kind)
                .map(|ar| ar.api_version)
                .unwrap_or_default(),
            v => v,
        };
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {
                    label: owner.name_any(),
                    "app.kubernetes.io/managed-by": MANAGER,
                },
                "ownerReferences": [{
                    "apiVersion": api_version,
                    "kind": kind,
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
            name,
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
        self.set_finalizers_of(&kind_of(channel), channel, finalizers)
            .await
    }

    /// Set the finalizers of `object` of `kind` (optimistically, with its
    /// resourceVersion).
    async fn set_finalizers_of(
        &self,
        kind: &str,
        object: &DynamicObject,
        finalizers: Vec<String>,
    ) -> Result<(), kube::Error> {
        self.patch_finalizers(kind, object, finalizers).await?;
        Ok(())
    }

    /// [`Self::set_finalizers_of`]; the object's new resourceVersion.
    async fn patch_finalizers(
        &self,
        kind: &str,
        object: &DynamicObject,
        finalizers: Vec<String>,
    ) -> Result<Option<String>, kube::Error> {
        let Some(ar) = resource_of(kind) else {
            return Ok(None);
        };
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &object.namespace().unwrap_or_default(),
            &ar,
        );
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }});
        let patched = api
            .patch(
                &object.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
        Ok(patched.resource_version())
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
        // A source kind exists in two groups (the seeds' v1alpha1): the
        // object's own.
        let Some(ar) = sources::resource_of_source(&kind_of(object), &api_version_of(object))
            .or_else(|| resource_of(&resource.kind))
        else {
            return Ok(None);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &resource.namespace, &ar);
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut current = Cow::Borrowed(object);
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
                    current = Cow::Owned(api.get(&resource.name).await?);
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

    /// The contract of the channel backing a deleting broker, had it been
    /// served: compiled from its spec (and config, when known).
    fn contract_of_deleting_broker(
        &self,
        broker: &DynamicObject,
        snap: &Snapshot,
    ) -> Option<ChannelContract> {
        let ns = broker.namespace().unwrap_or_default();
        let name = broker.name_any();
        let mut manifests = class_manifests(snap);
        let spec = broker.data.get("spec").cloned().unwrap_or(Value::Null);
        let doc = document(EVENTING_V1, "Broker", &broker.metadata, &spec);
        merge(&mut manifests, load_str("broker", &doc).ok()?);
        if let Some(key) = config_reference(broker) {
            let map = snap
                .config_maps
                .iter()
                .find(|m| {
                    m.metadata.namespace.as_deref() == Some(key.0.as_str())
                        && m.metadata.name.as_deref() == Some(key.1.as_str())
                })
                .or_else(|| self.configs.get(&key));
            if let Some(m) = map.and_then(|m| load_str("config", &config_map_document(m)).ok()) {
                merge(&mut manifests, m);
            }
        }
        compile(&manifests)
            .contracts
            .into_values()
            .flat_map(|c| c.channels)
            .find(|c| c.namespace == ns && backs(c, &name))
    }

    /// Whether the dispatcher of `backend` stopped serving what `listed`
    /// finds: the contract in force no longer lists it, and the dispatcher
    /// applied that contract (see [`dispatcher_released`]).
    fn released(
        &self,
        in_force: &BTreeMap<BackendKind, Contract>,
        dispatchers: &BTreeMap<BackendKind, DispatcherObservation>,
        backend: BackendKind,
        since: Instant,
        listed: impl Fn(&ChannelContract) -> bool,
    ) -> bool {
        let contract = in_force.get(&backend);
        if contract.is_some_and(|c| c.channels.iter().any(&listed)) {
            return false;
        }
        dispatcher_released(
            dispatchers.get(&backend),
            self.written.get(&backend).map(|c| c.generation),
            since,
        )
    }

    /// Create the Broker `default` of a namespace with injection enabled,
    /// as Knative's namespace controller does.
    async fn inject_broker(&self, namespace: &Namespace) -> Result<(), kube::Error> {
        let ns = namespace.name_any();
        let ar = broker_resource();
        let mut broker = DynamicObject::new(DEFAULT_BROKER, &ar).within(&ns);
        broker.metadata.labels = Some(BTreeMap::from([(
            INJECTED_LABEL.to_owned(),
            "true".to_owned(),
        )]));
        broker.data = json!({"spec": {}});
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
        api.create(&PostParams::default(), &broker).await?;
        tracing::info!(namespace = %ns, broker = DEFAULT_BROKER, "broker injected");
        let event = Event {
            type_: EventType::Normal,
            reason: "BrokerCreated".into(),
            note: Some(format!(
                "Broker {ns}/{DEFAULT_BROKER} created ({INJECTION_LABEL}: enabled)"
            )),
            action: "InjectBroker".into(),
            secondary: None,
        };
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
            name: Some(ns),
            uid: namespace.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "event not recorded");
        }
        Ok(())
    }

    /// Step 1: the finalizer on every live channel and on the live brokers
    /// and triggers this project serves; off those it no longer serves (a
    /// broker whose class changed, a trigger whose broker turned out to be
    /// of another class). The channels' new resourceVersions (by kind,
    /// namespace and name): their status is patched on those, not on the
    /// snapshot's (stale now: a conflict, a read and a retry each).
    async fn hold_finalizers(
        &self,
        snap: &Snapshot,
        errors: &mut Vec<String>,
    ) -> HashMap<(String, String, String), String> {
        let mut fresh = HashMap::new();
        for channel in &snap.channels {
            if is_live(channel) && !has_finalizer(channel, FINALIZER) {
                let mut finalizers = channel.finalizers().to_vec();
                finalizers.push(FINALIZER.into());
                let kind = kind_of(channel);
                match self.patch_finalizers(&kind, channel, finalizers).await {
                    Ok(Some(version)) => {
                        let (_, ns, name) = key_of("", channel);
                        fresh.insert((kind, ns.to_owned(), name.to_owned()), version);
                    }
                    Ok(None) => {}
                    Err(e) => note(
                        errors,
                        format!(
                            "adding the finalizer to {} {}",
                            kind_of(channel),
                            channel.name_any()
                        ),
                        e,
                    ),
                }
            }
        }
        let brokers = snap.brokers.iter().map(|b| ("Broker", b, is_our_broker(b)));
        let triggers = snap
            .triggers
            .iter()
            .map(|t| ("Trigger", t, snap.serves_trigger(t)));
        for (kind, object, ours) in brokers.chain(triggers) {
            if !is_live(object) || ours == has_finalizer(object, BROKER_FINALIZER) {
                continue;
            }
            let mut finalizers: Vec<String> = object
                .finalizers()
                .iter()
                .filter(|f| *f != BROKER_FINALIZER)
                .cloned()
                .collect();
            if ours {
                finalizers.push(BROKER_FINALIZER.into());
            }
            if let Err(e) = self.set_finalizers_of(kind, object, finalizers).await {
                note(
                    errors,
                    format!(
                        "setting the finalizers of {kind} {}/{}",
                        object.namespace().unwrap_or_default(),
                        object.name_any()
                    ),
                    e,
                );
            }
        }
        fresh
    }

    /// Namespaces with injection enabled and no Broker `default` get one.
    /// It is never deleted by the controller (Knative does not either).
    async fn inject_brokers(&self, snap: &Snapshot, errors: &mut Vec<String>) {
        for namespace in &snap.namespaces {
            let ns = namespace.name_any();
            let enabled = namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECTION_LABEL))
                .is_some_and(|v| v == "enabled");
            if !enabled
                || namespace.metadata.deletion_timestamp.is_some()
                || snap.broker(&ns, DEFAULT_BROKER).is_some()
            {
                continue;
            }
            match self.inject_broker(namespace).await {
                Ok(()) => {}
                // Created meanwhile (the broker cache lags).
                Err(e) if is_conflict(&e) => {}
                Err(e) => note(errors, format!("creating Broker {ns}/{DEFAULT_BROKER}"), e),
            }
        }
    }

    /// Step 5: the ExternalName Service of every planned channel
    /// (`<name>-kn-channel`, owned by the channel) and broker
    /// (`<name>-kn-broker`, owned by the broker).
    async fn apply_services(&mut self, index: &Index<'_>, plan: &Plan, errors: &mut Vec<String>) {
        let snap = index.snap;
        for planned in &plan.channels {
            let c = &planned.contract;
            let Some(host) = self.settings.dispatcher_hosts.get(&c.backend).cloned() else {
                continue;
            };
            let owner = match &c.broker {
                Some(b) => index
                    .broker(&c.namespace, &b.name)
                    .filter(|o| is_live(o))
                    .map(|o| {
                        (
                            o,
                            "Broker",
                            format!("{}-kn-broker", b.name),
                            "eventing.knative.dev/broker",
                        )
                    }),
                None => index
                    .get(&c.kind, &c.namespace, &c.name)
                    .map(|o| {
                        (
                            o,
                            c.kind.as_str(),
                            format!("{}-kn-channel", c.name),
                            "messaging.knative.dev/channel",
                        )
                    })
                    // A channel a Sequence or Parallel generated: the flow
                    // owns its Service.
                    .or_else(|| {
                        let (kind, flow) = flows::flow_of_channel(plan, &c.namespace, &c.name)?;
                        let owner = flows::find_flow(snap, kind, &c.namespace, flow)?;
                        Some((
                            owner,
                            kind.as_str(),
                            format!("{}-kn-channel", c.name),
                            flows::service_label(kind),
                        ))
                    }),
            };
            let Some((object, kind, name, label)) = owner else {
                continue;
            };
            let key = (c.namespace.clone(), name.clone());
            let wanted = (host.clone(), object.uid().unwrap_or_default());
            if self.services.get(&key) == Some(&wanted) {
                continue;
            }
            match self.apply_service(object, kind, &name, label, &host).await {
                Ok(()) => {
                    self.services.insert(key, wanted);
                }
                Err(e) => note(
                    errors,
                    format!(
                        "applying the Service of {kind} {}/{}",
                        c.namespace,
                        object.name_any()
                    ),
                    e,
                ),
            }
        }
    }

    /// Step 7 for channels: out of the contract (done), then, once their
    /// dispatcher applied that, their backing resource; then the finalizer.
    /// Whether one waits for its dispatcher.
    async fn release_channels(
        &mut self,
        snap: &Snapshot,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
        dispatchers: &BTreeMap<BackendKind, DispatcherObservation>,
        errors: &mut Vec<String>,
    ) -> bool {
        let mut waiting = false;
        for channel in &snap.channels {
            if is_live(channel) || !has_finalizer(channel, FINALIZER) {
                continue;
            }
            if let Some(contract) = self.contract_of_deleting(channel, snap, previous) {
                let key = channel_key(&contract);
                let since = *self
                    .deleting_since
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                let served = previous.contains_key(&key);
                let generation = self.written.get(&contract.backend).map(|c| c.generation);
                if served
                    && !dispatcher_released(dispatchers.get(&contract.backend), generation, since)
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
                    let ns = channel.namespace().unwrap_or_default();
                    self.services
                        .remove(&(ns.clone(), format!("{}-kn-channel", channel.name_any())));
                    self.deleting_since
                        .remove(&(ns, channel.name_any(), kind_of(channel)));
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => note(
                    errors,
                    format!(
                        "removing the finalizer of {} {}",
                        kind_of(channel),
                        channel.name_any()
                    ),
                    e,
                ),
            }
        }
        waiting
    }

    /// Step 7 for brokers and triggers: once the dispatcher applied a
    /// contract without them, a broker's backing topic or stream is
    /// deleted, and the finalizer removed. Whether one waits.
    async fn release_brokers_and_triggers(
        &mut self,
        snap: &Snapshot,
        previous: &BTreeMap<ChannelKey, ChannelContract>,
        dispatchers: &BTreeMap<BackendKind, DispatcherObservation>,
        errors: &mut Vec<String>,
    ) -> bool {
        let in_force = self.current_contracts(snap);
        let mut waiting = false;
        for broker in &snap.brokers {
            if is_live(broker) || !has_finalizer(broker, BROKER_FINALIZER) {
                continue;
            }
            let ns = broker.namespace().unwrap_or_default();
            let name = broker.name_any();
            let key: ChannelKey = (ns.clone(), name.clone(), "Broker".into());
            let served = previous
                .values()
                .find(|c| c.namespace == ns && backs(c, &name))
                .cloned();
            if let Some(contract) = served
                .clone()
                .or_else(|| self.contract_of_deleting_broker(broker, snap))
            {
                let since = *self
                    .deleting_since
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                let listed = |c: &ChannelContract| c.namespace == ns && backs(c, &name);
                if served.is_some()
                    && !self.released(&in_force, dispatchers, contract.backend, since, listed)
                {
                    tracing::debug!(broker = %format!("{ns}/{name}"), "deletion waits for the dispatcher to stop serving the broker");
                    waiting = true;
                    continue;
                }
                if let Err(e) = self.cycle.provisioner.deprovision(&contract).await {
                    tracing::warn!(broker = %format!("{ns}/{name}"), error = %e, "deleting the backing resource failed; the finalizer stays");
                    errors.push(format!("deleting the channel of Broker {ns}/{name}: {e}"));
                    continue;
                }
                tracing::info!(broker = %format!("{ns}/{name}"), channel = %contract.key(), backend = %contract.backend, "backing resource deleted");
            }
            if self.release(broker, "Broker", errors).await {
                self.services
                    .remove(&(ns.clone(), format!("{name}-kn-broker")));
                self.deleting_since.remove(&key);
            }
        }
        for trigger in &snap.triggers {
            if is_live(trigger) || !has_finalizer(trigger, BROKER_FINALIZER) {
                continue;
            }
            let ns = trigger.namespace().unwrap_or_default();
            let name = trigger.name_any();
            let broker = trigger_broker(trigger);
            let key: ChannelKey = (ns.clone(), name.clone(), "Trigger".into());
            let listed = |c: &ChannelContract| {
                c.namespace == ns
                    && backs(c, &broker)
                    && c.subscriptions
                        .iter()
                        .any(|s| s.trigger.is_some() && s.name == name)
            };
            if let Some(served) = previous.values().find(|c| listed(c)) {
                let since = *self
                    .deleting_since
                    .entry(key.clone())
                    .or_insert_with(Instant::now);
                if !self.released(&in_force, dispatchers, served.backend, since, listed) {
                    tracing::debug!(trigger = %format!("{ns}/{name}"), "deletion waits for the dispatcher to stop serving the trigger");
                    waiting = true;
                    continue;
                }
            }
            if self.release(trigger, "Trigger", errors).await {
                self.deleting_since.remove(&key);
            }
        }
        waiting
    }

    /// Remove [`BROKER_FINALIZER`] from a deleting broker or trigger.
    async fn release(&self, object: &DynamicObject, kind: &str, errors: &mut Vec<String>) -> bool {
        self.release_finalizer(object, kind, BROKER_FINALIZER, errors)
            .await
    }

    /// Remove `finalizer` from a deleting `object` of `kind`; whether it
    /// is gone.
    async fn release_finalizer(
        &self,
        object: &DynamicObject,
        kind: &str,
        finalizer: &str,
        errors: &mut Vec<String>,
    ) -> bool {
        let finalizers: Vec<String> = object
            .finalizers()
            .iter()
            .filter(|f| *f != finalizer)
            .cloned()
            .collect();
        match self.set_finalizers_of(kind, object, finalizers).await {
            Ok(()) => true,
            Err(e) if is_not_found(&e) => true,
            Err(e) => {
                note(
                    errors,
                    format!(
                        "removing the finalizer of {kind} {}/{}",
                        object.namespace().unwrap_or_default(),
                        object.name_any()
                    ),
                    e,
                );
                false
            }
        }
    }

    /// The object a status row belongs to, when this project serves it.
    fn status_object<'a>(
        index: &Index<'a>,
        resource: &ResourceStatus,
    ) -> Option<Cow<'a, DynamicObject>> {
        let (ns, name) = (resource.namespace.as_str(), resource.name.as_str());
        let live = |o: &&DynamicObject| is_live(o);
        let found = match resource.kind.as_str() {
            "Subscription" => {
                return index
                    .subscriptions
                    .get(&(ns, name))
                    .map(|s| Cow::Owned(subscription_object(s)))
            }
            // Brokers of another class, and their triggers, are left alone.
            "Broker" => index
                .broker(ns, name)
                .filter(|b| is_live(b) && is_our_broker(b)),
            "Trigger" => index
                .get("Trigger", ns, name)
                .filter(|t| is_live(t) && index.serves_trigger(t)),
            "Sequence" | "Parallel" | "EventType" | "EventPolicy" => {
                index.get(&resource.kind, ns, name).filter(live)
            }
            // Channels and sources: live ones only are indexed.
            kind => index.get(kind, ns, name),
        };
        found.map(Cow::Borrowed)
    }

    /// One round: converge the cluster on `snap`.
    pub async fn reconcile(&mut self, snap: &Snapshot) -> Outcome {
        let mut errors = Vec::new();
        let index = Index::new(snap);

        // 1. Finalizers; brokers for namespaces with injection enabled.
        let fresh = self.hold_finalizers(snap, &mut errors).await;
        self.hold_flow_finalizers(snap, &mut errors).await;
        self.inject_brokers(snap, &mut errors).await;

        // 2. Plan.
        let (manifests, mut problems, unresolved) = self.manifests(snap, &mut errors).await;
        let contracts = self.current_contracts(snap);
        let previous: BTreeMap<ChannelKey, ChannelContract> = contracts
            .values()
            .flat_map(|c| c.channels.iter())
            .map(|c| (channel_key(c), c.clone()))
            .collect();
        let mut plan: Plan = plan(&manifests, &previous, &Addressing::default());
        // A flow's unresolvable destination: its subscription is not
        // served, and the flow says why ahead of anything the compiler said.
        for u in &unresolved {
            u.unplan(&mut plan);
        }
        sources::drop_local_only_problems(&mut plan);
        plan.problems
            .splice(0..0, unresolved.into_iter().map(|u| u.problem));
        plan.problems.append(&mut problems);

        // 3. Provision.
        self.cycle.provision(&plan, &previous).await;

        // 4. Contracts.
        let mut in_contract = BTreeMap::new();
        // The backends whose ConfigMap holds a readable contract.
        let present: BTreeSet<BackendKind> = self.parsed.keys().copied().collect();
        for (backend, channels) in self.cycle.contracts(&plan, &previous) {
            for c in &channels {
                in_contract.insert(channel_key(c), true);
            }
            let old = contracts.get(&backend);
            let mut next = Contract {
                generation: old.map(|c| c.generation).unwrap_or(0),
                backend: Some(backend),
                channels,
                features: plan.features.clone(),
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

        // 5. ExternalName Services for the planned channels and brokers;
        //    the sources: the adapter's contract, ContainerSources'
        //    Deployments, SinkBindings' subjects.
        self.apply_services(&index, &plan, &mut errors).await;
        self.apply_sources_contract(snap, &plan, &mut errors).await;
        let deployments = self.apply_container_sources(snap, &plan, &mut errors).await;
        let bindings = self.apply_sink_bindings(snap, &plan, &mut errors).await;
        let hooks = self.apply_webhooks(snap, &plan, &mut errors).await;

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
        let admins: BTreeMap<BackendKind, Url> =
            admins.into_iter().map(|(b, u)| (b, as_base(u))).collect();
        let mut obs = self.cycle.observations(&plan, in_contract, &self.written);
        for (backend, contract) in &contracts {
            obs.generations
                .entry(*backend)
                .or_insert(contract.generation);
        }
        obs.sources = self.poll_source_adapter().await;
        obs.webhooks = hooks;
        for (backend, _, observation) in poll_dispatchers(&self.http, &admins).await {
            if let DispatcherObservation::Unreachable(e) = &observation {
                tracing::debug!(backend = %backend, error = %e, "dispatcher status not available");
            }
            obs.dispatchers.insert(backend, observation);
        }

        // 7. Deleted channels, brokers and triggers: out of the contract
        //    (above); once their dispatcher applied that, their backing
        //    resource; then the finalizer.
        let mut waiting = self
            .release_channels(snap, &previous, &obs.dispatchers, &mut errors)
            .await;
        waiting |= self
            .release_brokers_and_triggers(snap, &previous, &obs.dispatchers, &mut errors)
            .await;
        waiting |= self
            .release_flows(snap, &previous, &obs.dispatchers, &mut errors)
            .await;
        self.cycle.delete_due(&obs.dispatchers).await;

        // 8. The registry: EventTypes from traffic.
        self.auto_create_event_types(snap, &plan, &admins, &mut errors)
            .await;

        // 9. Status.
        let mut resources = statuses(&plan, &obs);
        resources.extend(eventtypes::event_type_rows(&plan, &manifests));
        sources::amend_source_rows(snap, &mut resources, &deployments, &bindings);
        for resource in &resources {
            let Some(mut object) = Self::status_object(&index, resource) else {
                continue;
            };
            if !fresh.is_empty() {
                let key = (
                    resource.kind.clone(),
                    resource.namespace.clone(),
                    resource.name.clone(),
                );
                if let Some(version) = fresh.get(&key) {
                    object.to_mut().metadata.resource_version = Some(version.clone());
                }
            }
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

/// Whether channel `c` backs the broker `name` (of its namespace).
fn backs(c: &ChannelContract, name: &str) -> bool {
    c.broker.as_ref().is_some_and(|b| b.name == name)
}

/// One status per object: [`status::compute`]'s, where an object both
/// planned and a problem (e.g. an unresolvable dead-letter sink) reports
/// the problem, except a broker whose dead-letter sink cannot be resolved:
/// it is served, so its planned status is kept with that condition failed.
fn statuses(plan: &Plan, obs: &status::Observations) -> Vec<ResourceStatus> {
    type Key = (String, String, String);
    let key = |kind: &str, ns: &str, name: &str| -> Key { (kind.into(), ns.into(), name.into()) };
    let mut resources = status::compute(plan, obs);
    // Rows of problems have no backend; planned rows have one.
    let is_problem = |r: &ResourceStatus| r.backend.is_none();
    let mut amended: BTreeSet<Key> = BTreeSet::new();
    for p in &plan.problems {
        if p.kind != "Broker" || p.reason != "DeadLetterSinkResolveFailed" {
            continue;
        }
        if let Some(row) = resources.iter_mut().find(|r| {
            !is_problem(r) && r.kind == p.kind && r.namespace == p.namespace && r.name == p.name
        }) {
            dead_letter_sink_unresolved(row, p);
            amended.insert(key(&p.kind, &p.namespace, &p.name));
        }
    }
    let problem_keys: BTreeSet<Key> = plan
        .problems
        .iter()
        .map(|p| key(&p.kind, &p.namespace, &p.name))
        .filter(|k| !amended.contains(k))
        .collect();
    let mut seen: BTreeSet<Key> = BTreeSet::new();
    resources.retain(|r| {
        let k = key(&r.kind, &r.namespace, &r.name);
        let wanted = if amended.contains(&k) {
            !is_problem(r)
        } else {
            is_problem(r) || !problem_keys.contains(&k)
        };
        // Two problems of one object: the first.
        wanted && seen.insert(k)
    });
    resources
}

mod eventtypes;
mod flows;
mod policies;
mod sources;
#[cfg(test)]
mod tests;
mod webhooks;

pub use eventtypes::event_type_resource;
pub use flows::{parallel_resource, sequence_resource, FLOW_FINALIZER};
pub use policies::event_policy_resource;
pub use sources::{
    source_resources, SINK_BINDING_FINALIZER, SOURCES_CONTRACT_KEY, SOURCES_CONTRACT_MAP,
};
pub use webhooks::WEBHOOK_FINALIZER;
