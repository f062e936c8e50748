//! A fake Kubernetes API server on loopback, speaking real Kubernetes JSON
//! over HTTP/1.1, for end-to-end tests of anything built on `kube` (a
//! `kube::Client` from a kubeconfig, `kube::runtime::watcher`,
//! `kube::discovery`).
//!
//! It serves discovery (`/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]`,
//! legacy and aggregated), list, get and watch of the kinds the test
//! registers; the test changes objects through the handle
//! ([`FakeApiServer::create`], [`FakeApiServer::update`],
//! [`FakeApiServer::delete`]), never over HTTP. Each change bumps one global
//! `resourceVersion` and is kept in a bounded history, so watches resume
//! from a `resourceVersion` as on a real cluster, and get
//! `410 Expired` once it is too old. Test controls inject what a real cluster
//! does at its own pace: bookmarks, expired watches, failing requests.
//!
//! Everything is bounded: the history ([`HISTORY_CAPACITY`]), every watch's
//! queue ([`WATCH_QUEUE_CAPACITY`]; a watcher that falls behind is closed, as
//! the real API server does, and resumes from its last `resourceVersion`),
//! the request log, and every stream ends on shutdown.

use crate::free_port;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How many changes the watch history keeps; a watch from a
/// `resourceVersion` older than the oldest kept change gets `410 Expired`.
pub const HISTORY_CAPACITY: usize = 10_000;

/// How many events may wait to be written to one watch; a watch that falls
/// further behind is closed (as the real API server closes slow watchers),
/// and its client resumes from the last `resourceVersion` it saw.
pub const WATCH_QUEUE_CAPACITY: usize = 1_024;

/// How many requests [`FakeApiServer::requests`] remembers (the oldest go).
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// The server-side watch timeout when the client sends no `timeoutSeconds`
/// (the real API server picks one between 30 and 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1_800);

/// A kind the server serves: `group` is `""` for the core (`v1`) group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    /// `v1` for the core group, `{group}/{version}` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn scope(&self) -> &'static str {
        if self.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }
    }
}

/// One request the server received, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, e.g. `/api/v1/namespaces/default/pods`.
    pub path: String,
    /// The raw query string (`""` when none), still percent-encoded.
    pub query: String,
    /// What the request was, as Kubernetes names verbs: `list`, `watch`,
    /// `get`, `discovery`, or `unknown` (a path the server does not serve, or
    /// a method other than `GET`).
    pub verb: &'static str,
}

impl RecordedRequest {
    /// The decoded value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    pub fn is_list(&self) -> bool {
        self.verb == "list"
    }

    pub fn is_watch(&self) -> bool {
        self.verb == "watch"
    }
}

/// Storage key of an object: group, plural, namespace (`""` when
/// cluster-scoped), name. Sorted like etcd keys, so lists come out ordered
/// by namespace, then name.
type ObjectKey = (String, String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug)]
struct Change {
    rv: u64,
    ty: ChangeType,
    group: String,
    plural: String,
    object: Value,
    /// The object before a modification (to turn a change that moves an
    /// object in or out of a watch's selector into ADDED / DELETED).
    previous: Option<Value>,
}

/// What a list or watch selects.
#[derive(Debug, Clone)]
struct Filter {
    resource: ResourceType,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str().unwrap_or_default() != ns {
                return false;
            }
        }
        let labels = meta["labels"].as_object();
        self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches(object))
    }

    fn same_resource(&self, group: &str, plural: &str) -> bool {
        self.resource.group == group && self.resource.plural == plural
    }

    /// The watch event `change` is for this filter, if any: a modification
    /// that moves an object into the selection is ADDED, out of it DELETED.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if !self.same_resource(&change.group, &change.plural) {
            return None;
        }
        let now = self.matches(&change.object);
        let ty = match change.ty {
            ChangeType::Modified => {
                let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => ChangeType::Modified,
                    (false, true) => ChangeType::Added,
                    (true, false) => ChangeType::Deleted,
                    (false, false) => return None,
                }
            }
            ty if now => ty,
            _ => return None,
        };
        Some(event_line(
            ty.as_str(),
            &with_type(&change.object, &self.resource),
        ))
    }
}

/// One open watch.
#[derive(Debug)]
struct Watcher {
    filter: Filter,
    bookmarks: bool,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Debug)]
struct State {
    resources: Vec<ResourceType>,
    objects: BTreeMap<ObjectKey, Value>,
    /// The global resourceVersion: that of the latest change.
    rv: u64,
    history: VecDeque<Change>,
    /// Changes up to and including this resourceVersion are forgotten: a
    /// watch from an older one gets 410.
    compacted: u64,
    watchers: Vec<Watcher>,
    requests: VecDeque<RecordedRequest>,
    fail: Option<(usize, StatusCode)>,
    uids: u64,
    closed: bool,
}

impl State {
    fn new() -> State {
        let mut state = State {
            resources: Vec::new(),
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            compacted: 1,
            watchers: Vec::new(),
            requests: VecDeque::new(),
            fail: None,
            uids: 0,
            closed: false,
        };
        for (group, version, kind, plural, namespaced) in [
            ("", "v1", "Pod", "pods", true),
            ("", "v1", "Event", "events", true),
            ("", "v1", "ConfigMap", "configmaps", true),
            ("", "v1", "Namespace", "namespaces", false),
            ("", "v1", "Service", "services", true),
            ("apps", "v1", "Deployment", "deployments", true),
        ] {
            state.register(ResourceType {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: plural.into(),
                namespaced,
            });
        }
        state
    }

    fn register(&mut self, rt: ResourceType) {
        match self.resources.iter_mut().find(|r| {
            r.group == rt.group
                && r.version == rt.version
                && (r.plural == rt.plural || r.kind == rt.kind)
        }) {
            Some(existing) => *existing = rt,
            None => self.resources.push(rt),
        }
    }

    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn resource_of_kind(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    /// Record a change: history (bounded) and every matching watcher.
    fn publish(&mut self, change: Change) {
        // A watcher whose queue is full (too slow) or whose client went is
        // dropped: its stream ends and the client resumes from the last
        // resourceVersion it saw.
        self.watchers.retain(|w| match w.filter.event_for(&change) {
            Some(line) => w.tx.try_send(line).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        while self.history.len() > HISTORY_CAPACITY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.rv);
            }
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
}

/// The fake API server; stops when dropped (or on [`FakeApiServer::shutdown`]).
#[derive(Debug)]
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Bind 127.0.0.1 on a free port and serve, with the default kinds
    /// registered: `v1` Pod, Event, ConfigMap, Namespace, Service and
    /// `apps/v1` Deployment. No objects exist (not even the `default`
    /// namespace); the resourceVersion starts at 1.
    pub async fn start() -> FakeApiServer {
        let mut attempts = 0;
        let listener = loop {
            attempts += 1;
            match tokio::net::TcpListener::bind(("127.0.0.1", free_port())).await {
                Ok(listener) => break listener,
                Err(e) if attempts >= 20 => panic!("fake API server cannot bind: {e}"),
                Err(_) => continue,
            }
        };
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(Mutex::new(State::new()));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listener, addr, state.clone(), cancel.clone()));
        FakeApiServer {
            addr,
            state,
            cancel,
            task: Some(task),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server: one cluster `fake` at [`Self::url`], no
    /// authentication, current context `fake` with namespace `default`.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             preferences: {{}}\n\
             clusters:\n\
             - name: fake\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: fake\n  user: {{}}\n\
             contexts:\n\
             - name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            url = self.url()
        )
    }

    /// Write [`Self::kubeconfig`] to `path` (for `KUBECONFIG=` of a child
    /// process, or `kube::config::Kubeconfig::read_from`).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A `kube::Client` built from [`Self::kubeconfig`] (default namespace
    /// `default`).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).expect("kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kubeconfig accepted");
        kube::Client::try_from(config).expect("client")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Serve `kind` (`group` `""` is the core group); registering the same
    /// group, version and plural (or kind) again replaces it. Discovery shows
    /// it from the next request on.
    pub fn register(&self, group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) {
        self.lock().register(ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        });
    }

    /// The registered kinds.
    pub fn resources(&self) -> Vec<ResourceType> {
        self.lock().resources.clone()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.lock().rv.to_string()
    }

    /// Create `object` (`apiVersion`, `kind`, `metadata.name` or
    /// `metadata.generateName`; `metadata.namespace` defaults to `default`
    /// for a namespaced kind and is removed for a cluster-scoped one).
    /// Fills `uid`, `resourceVersion`, `creationTimestamp` and `generation`
    /// (1), notifies watchers with ADDED, and returns the stored object.
    ///
    /// # Panics
    /// On an unregistered kind, a missing name, or an existing object.
    pub fn create(&self, object: Value) -> Value {
        let mut state = self.lock();
        let (rt, mut object) = prepare(&state, object);
        if object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .map(str::to_owned);
            let Some(prefix) = prefix else {
                panic!("create: metadata.name or metadata.generateName is required: {object}");
            };
            let suffix = format!("{:05x}", (state.uids + 1) & 0xfffff);
            object["metadata"]["name"] = Value::String(format!("{prefix}{suffix}"));
        }
        let key = key_of(&rt, &object);
        assert!(
            !state.objects.contains_key(&key),
            "create: {} {:?} already exists",
            rt.kind,
            (&key.2, &key.3)
        );
        let rv = state.next_rv();
        state.uids += 1;
        let uid = format!("fa4e0000-0000-4000-8000-{:012x}", state.uids);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let meta = metadata_mut(&mut object);
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        meta.insert("creationTimestamp".into(), Value::String(now));
        meta.insert("generation".into(), json!(1));
        state.objects.insert(key.clone(), object.clone());
        state.publish(Change {
            rv,
            ty: ChangeType::Added,
            group: key.0,
            plural: key.1,
            object: object.clone(),
            previous: None,
        });
        object
    }

    /// Replace the stored object named by `object` with it, keeping `uid`
    /// and `creationTimestamp`; bumps `resourceVersion`, and `generation`
    /// when anything outside `metadata` and `status` changed. The
    /// `resourceVersion` in `object` is ignored (no optimistic concurrency).
    /// Notifies watchers with MODIFIED (or ADDED / DELETED for watches whose
    /// selector the object enters or leaves), and returns the stored object.
    ///
    /// # Panics
    /// On an unregistered kind or an object that does not exist.
    pub fn update(&self, object: Value) -> Value {
        let mut state = self.lock();
        let (rt, mut object) = prepare(&state, object);
        let key = key_of(&rt, &object);
        let Some(previous) = state.objects.get(&key).cloned() else {
            panic!("update: {} {:?} does not exist", rt.kind, (&key.2, &key.3));
        };
        let rv = state.next_rv();
        let spec_changed = {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            strip(&previous) != strip(&object)
        };
        let generation =
            previous["metadata"]["generation"].as_i64().unwrap_or(1) + i64::from(spec_changed);
        let meta = metadata_mut(&mut object);
        for field in ["uid", "creationTimestamp"] {
            if let Some(v) = previous["metadata"].get(field) {
                meta.insert(field.into(), v.clone());
            }
        }
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        meta.insert("generation".into(), json!(generation));
        state.objects.insert(key.clone(), object.clone());
        state.publish(Change {
            rv,
            ty: ChangeType::Modified,
            group: key.0,
            plural: key.1,
            object: object.clone(),
            previous: Some(previous),
        });
        object
    }

    /// [`Self::update`] if the object exists, [`Self::create`] otherwise.
    pub fn apply(&self, object: Value) -> Value {
        let exists = {
            let state = self.lock();
            let (rt, object) = prepare(&state, object.clone());
            !object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
                && state.objects.contains_key(&key_of(&rt, &object))
        };
        if exists {
            self.update(object)
        } else {
            self.create(object)
        }
    }

    /// Delete an object (`namespace` `None` for a cluster-scoped kind, or
    /// `default`): bumps `resourceVersion` and notifies watchers with DELETED
    /// carrying the last state with the new `resourceVersion`, which is
    /// returned. `None` when no such object exists (nothing changes).
    ///
    /// # Panics
    /// On an unregistered kind.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let mut state = self.lock();
        let Some(rt) = state.resource_of_kind(api_version, kind) else {
            panic!("delete: {api_version} {kind} is not registered");
        };
        let namespace = namespace_for(&rt, namespace);
        let key = (
            rt.group.clone(),
            rt.plural.clone(),
            namespace,
            name.to_owned(),
        );
        let mut object = state.objects.remove(&key)?;
        let rv = state.next_rv();
        metadata_mut(&mut object).insert("resourceVersion".into(), Value::String(rv.to_string()));
        state.publish(Change {
            rv,
            ty: ChangeType::Deleted,
            group: key.0,
            plural: key.1,
            object: object.clone(),
            previous: None,
        });
        Some(object)
    }

    /// The stored object, if any (`namespace` as for [`Self::delete`]).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.lock();
        let rt = state.resource_of_kind(api_version, kind)?;
        let namespace = namespace_for(&rt, namespace);
        state
            .objects
            .get(&(
                rt.group.clone(),
                rt.plural.clone(),
                namespace,
                name.to_owned(),
            ))
            .map(|o| with_type(o, &rt))
    }

    /// Send a BOOKMARK with the current resourceVersion to every open watch
    /// that asked for bookmarks (`allowWatchBookmarks=true`).
    pub fn bookmark(&self) {
        let state = self.lock();
        let rv = state.rv.to_string();
        for w in &state.watchers {
            if w.bookmarks {
                let _ = w.tx.try_send(bookmark_line(&w.filter.resource, &rv, false));
            }
        }
    }

    /// End every open watch with a single `ERROR` event (`Status` 410
    /// `Expired`) and forget the history up to now, so a watch from any
    /// older resourceVersion also gets 410: the client must relist.
    pub fn expire_watches(&self) {
        let mut state = self.lock();
        let current = state.rv;
        let oldest = current + 1;
        for w in std::mem::take(&mut state.watchers) {
            // The client's last seen resourceVersion is unknown here; the
            // message names the oldest one still servable.
            let _ = w.tx.try_send(expired_line(current, oldest));
        }
        state.history.clear();
        state.compacted = current;
    }

    /// Forget the history up to now without touching open watches (what etcd
    /// compaction does): the next watch from an older resourceVersion gets
    /// 410 `Expired`.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted = state.rv;
    }

    /// End every open watch cleanly (as a server-side timeout does): clients
    /// re-watch from the last resourceVersion they saw, without relisting.
    pub fn close_watches(&self) {
        self.lock().watchers.clear();
    }

    /// How many watches are open now.
    pub fn watchers(&self) -> usize {
        let mut state = self.lock();
        state.watchers.retain(|w| !w.tx.is_closed());
        state.watchers.len()
    }

    /// Wait until at least `n` watches are open, at most `timeout`.
    pub async fn wait_for_watchers(&self, n: usize, timeout: Duration) -> bool {
        crate::eventually(timeout, || self.watchers() >= n).await
    }

    /// Every request so far (at most [`REQUEST_LOG_CAPACITY`], the latest),
    /// in arrival order, including those [`Self::fail_next`] failed.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Answer the next `n` requests, whatever they are, with `status` and a
    /// matching `Status` body (`Retry-After: 1` on 429 and 503).
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code.
    pub fn fail_next(&self, n: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("an HTTP status code");
        self.lock().fail = (n > 0).then_some((n, status));
    }

    /// Stop: no new connections, every watch ends, then the connections
    /// close (aborted after 5 s).
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    fn stop(&self) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.watchers.clear();
        }
        self.cancel.cancel();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Check `object`'s kind and normalise its metadata (namespace).
fn prepare(state: &State, mut object: Value) -> (ResourceType, Value) {
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let Some(rt) = state.resource_of_kind(&api_version, &kind) else {
        panic!("{api_version:?} {kind:?} is not registered (object: {object})");
    };
    let namespace = namespace_for(&rt, object["metadata"]["namespace"].as_str());
    let meta = metadata_mut(&mut object);
    if rt.namespaced {
        meta.insert("namespace".into(), Value::String(namespace));
    } else {
        meta.remove("namespace");
    }
    (rt, object)
}

fn namespace_for(rt: &ResourceType, namespace: Option<&str>) -> String {
    if rt.namespaced {
        namespace
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    }
}

fn key_of(rt: &ResourceType, object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    (
        rt.group.clone(),
        rt.plural.clone(),
        meta["namespace"].as_str().unwrap_or_default().to_owned(),
        meta["name"].as_str().unwrap_or_default().to_owned(),
    )
}

/// `object["metadata"]` as a map, created if missing.
///
/// # Panics
/// If `object` is not a JSON object.
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let Some(map) = object.as_object_mut() else {
        panic!("a Kubernetes object must be a JSON object");
    };
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("metadata is an object")
}

/// `object` with `apiVersion` and `kind` of `rt` (the version asked for).
fn with_type(object: &Value, rt: &ResourceType) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(rt.api_version()));
        map.insert("kind".into(), Value::String(rt.kind.clone()));
    }
    object
}

fn event_line(ty: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": ty, "object": object }))
        .expect("JSON values serialize");
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark_line(rt: &ResourceType, rv: &str, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv, "creationTimestamp": null });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata }),
    )
}

fn expired_line(requested: u64, oldest: u64) -> Bytes {
    event_line(
        "ERROR",
        &status_object(
            StatusCode::GONE,
            format!("too old resource version: {requested} ({oldest})"),
            None,
        ),
    )
}

/// A `Status` object (kind `Status`, `status: Failure`).
fn status_object(code: StatusCode, message: String, details: Option<Value>) -> Value {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    };
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

// ---------------------------------------------------------------------------
// Selectors

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        match self {
            LabelRequirement::Equals(k, v) => get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelRequirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

fn valid_label_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parse a label selector (Kubernetes' grammar: `a=b`, `a==b`, `a!=b`, `a`,
/// `!a`, `a in (x,y)`, `a notin (x)`, `a>1`, `a<1`; comma is AND).
fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {selector:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {selector:?}"));
    }
    parts.push(&selector[start..]);
    parts
        .into_iter()
        .map(|p| parse_label_requirement(p.trim()))
        .collect()
}

fn parse_label_requirement(part: &str) -> Result<LabelRequirement, String> {
    let invalid = || format!("unable to parse requirement: {part:?}");
    let key = |k: &str| {
        let k = k.trim();
        if valid_label_key(k) {
            Ok(k.to_owned())
        } else {
            Err(invalid())
        }
    };
    let value = |v: &str| {
        let v = v.trim();
        if valid_label_value(v) {
            Ok(v.to_owned())
        } else {
            Err(invalid())
        }
    };
    if part.is_empty() {
        return Err("empty requirement in label selector".into());
    }
    if let Some(open) = part.find('(') {
        let Some(inner) = part[open + 1..].strip_suffix(')') else {
            return Err(invalid());
        };
        let head: Vec<&str> = part[..open].split_whitespace().collect();
        let values = inner.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        if values.iter().all(String::is_empty) {
            return Err(format!(
                "{part:?}: for 'in', 'notin' operators, values set can't be empty"
            ));
        }
        return match head.as_slice() {
            [k, "in"] => Ok(LabelRequirement::In(key(k)?, values)),
            [k, "notin"] => Ok(LabelRequirement::NotIn(key(k)?, values)),
            _ => Err(invalid()),
        };
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(LabelRequirement::Equals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(LabelRequirement::Equals(key(k)?, value(v)?));
    }
    for (op, greater) in [('>', true), ('<', false)] {
        if let Some((k, v)) = part.split_once(op) {
            let n = v.trim().parse::<i64>().map_err(|_| invalid())?;
            let k = key(k)?;
            return Ok(if greater {
                LabelRequirement::GreaterThan(k, n)
            } else {
                LabelRequirement::LessThan(k, n)
            });
        }
    }
    Ok(LabelRequirement::Exists(key(part)?))
}

/// One requirement of a field selector: `metadata.name` or
/// `metadata.namespace`, `=`/`==` or `!=`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: &'static str,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, object: &Value) -> bool {
        let actual = object["metadata"][self.field].as_str().unwrap_or_default();
        (actual == self.value) == self.equal
    }
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let selector = selector.trim();
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    selector
        .split(',')
        .map(|part| {
            let part = part.trim();
            let (k, v, equal) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!(
                    "invalid selector: {part:?}; can't understand {part:?}"
                ));
            };
            let field = match k.trim() {
                "metadata.name" => "name",
                "metadata.namespace" => "namespace",
                other => return Err(format!("field label not supported: {other}")),
            };
            Ok(FieldRequirement {
                field,
                value: v.trim().to_owned(),
                equal,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// HTTP

/// A response body: a whole JSON document, or a watch stream.
#[derive(Debug)]
enum ApiBody {
    Full(Option<Bytes>),
    Watch(WatchBody),
}

/// A watch: the events known when it started, then those published to it,
/// until its sender goes (expired, closed, shutdown) or its deadline.
#[derive(Debug)]
struct WatchBody {
    queued: VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ApiBody::Watch(w) => {
                if let Some(line) = w.queued.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(line))));
                }
                if w.deadline.as_mut().poll(cx).is_ready() {
                    w.rx = None;
                    return Poll::Ready(None);
                }
                let Some(rx) = w.rx.as_mut() else {
                    return Poll::Ready(None);
                };
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(line)) => Poll::Ready(Some(Ok(Frame::data(line)))),
                    Poll::Ready(None) => {
                        w.rx = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Full(data) => data.is_none(),
            ApiBody::Watch(w) => w.queued.is_empty() && w.rx.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ApiBody::Watch(_) => SizeHint::default(),
        }
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (state, cancel) = (state.clone(), cancel.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, addr, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !connections.is_empty() && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(100), connections.join_next()).await;
    }
    connections.abort_all();
}

fn json_response(status: StatusCode, value: &Value) -> Response<ApiBody> {
    let body = serde_json::to_vec(value).expect("JSON values serialize");
    let mut response = Response::new(ApiBody::Full(Some(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status_response(code: StatusCode, message: String, details: Option<Value>) -> Response<ApiBody> {
    json_response(code, &status_object(code, message, details))
}

fn not_found() -> Response<ApiBody> {
    status_response(
        StatusCode::NOT_FOUND,
        "the server could not find the requested resource".into(),
        Some(json!({})),
    )
}

/// What a request addresses.
#[derive(Debug)]
enum Route {
    Version,
    Health,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList(String, String),
    Collection(ResourceType, Option<String>),
    Object(ResourceType, Option<String>, String),
    Unknown,
}

fn route(state: &State, path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Version,
        ["healthz" | "livez" | "readyz"] => return Route::Health,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::GroupList,
        ["apis", g] => {
            return if state.resources.iter().any(|r| r.group == *g) {
                Route::Group((*g).to_owned())
            } else {
                Route::Unknown
            }
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    if !state
        .resources
        .iter()
        .any(|r| r.group == group && r.version == version)
    {
        return Route::Unknown;
    }
    let find = |plural: &str| state.resource(group, version, plural);
    match rest {
        [] => Route::ResourceList(group.to_owned(), version.to_owned()),
        [plural] => find(plural).map_or(Route::Unknown, |rt| Route::Collection(rt, None)),
        [plural, name] => match find(plural) {
            Some(rt) if !rt.namespaced => Route::Object(rt, None, (*name).to_owned()),
            _ => Route::Unknown,
        },
        ["namespaces", ns, plural] => match find(plural) {
            Some(rt) if rt.namespaced => Route::Collection(rt, Some((*ns).to_owned())),
            _ => Route::Unknown,
        },
        ["namespaces", ns, plural, name] => match find(plural) {
            Some(rt) if rt.namespaced => {
                Route::Object(rt, Some((*ns).to_owned()), (*name).to_owned())
            }
            _ => Route::Unknown,
        },
        _ => Route::Unknown,
    }
}

/// Go's `strconv.ParseBool` truths, as the API server reads `watch=`.
fn truthy(value: Option<&String>) -> bool {
    matches!(
        value.map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn handle(state: &Mutex<State>, addr: SocketAddr, req: &Request<Incoming>) -> Response<ApiBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let mut state = lock(state);
    let route = route(&state, &path);
    let is_get = req.method() == Method::GET;
    let verb = match &route {
        _ if !is_get => "unknown",
        Route::Version | Route::Health | Route::CoreVersions | Route::GroupList => "discovery",
        Route::Group(_) | Route::ResourceList(..) => "discovery",
        Route::Collection(..) if truthy(params.get("watch")) => "watch",
        Route::Collection(..) => "list",
        Route::Object(..) => "get",
        Route::Unknown => "unknown",
    };
    state.requests.push_back(RecordedRequest {
        method: req.method().to_string(),
        path,
        query,
        verb,
    });
    while state.requests.len() > REQUEST_LOG_CAPACITY {
        state.requests.pop_front();
    }
    if state.closed {
        return status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
            None,
        );
    }
    if let Some((n, code)) = state.fail {
        state.fail = (n > 1).then_some((n - 1, code));
        let mut response = status_response(code, format!("injected failure ({code})"), None);
        if matches!(code.as_u16(), 429 | 503) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        return response;
    }
    if !is_get {
        return status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "the fake API server only serves GET (got {}); change objects through its handle",
                req.method()
            ),
            None,
        );
    }
    let aggregated = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=APIGroupDiscoveryList"));
    match route {
        Route::Version => json_response(
            StatusCode::OK,
            &json!({
                "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        Route::Health => {
            let mut response = Response::new(ApiBody::Full(Some(Bytes::from_static(b"ok"))));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Route::CoreVersions if aggregated => aggregated_discovery(&state, true),
        Route::GroupList if aggregated => aggregated_discovery(&state, false),
        Route::CoreVersions => json_response(
            StatusCode::OK,
            &json!({
                "kind": "APIVersions",
                "versions": versions_of(&state, ""),
                "serverAddressByClientCIDRs": [
                    { "clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string() }
                ],
            }),
        ),
        Route::GroupList => {
            let groups: Vec<Value> = groups_of(&state)
                .iter()
                .map(|g| api_group(&state, g))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups }),
            )
        }
        Route::Group(g) => {
            let mut group = api_group(&state, &g);
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            json_response(StatusCode::OK, &group)
        }
        Route::ResourceList(group, version) => {
            let resources: Vec<Value> = state
                .resources
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(|r| {
                    json!({
                        "name": r.plural,
                        "singularName": r.kind.to_lowercase(),
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "list", "watch"],
                    })
                })
                .collect();
            let group_version = if group.is_empty() {
                version
            } else {
                format!("{group}/{version}")
            };
            json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": resources,
                }),
            )
        }
        Route::Object(rt, ns, name) => {
            let key = (
                rt.group.clone(),
                rt.plural.clone(),
                ns.unwrap_or_default(),
                name.clone(),
            );
            match state.objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, &with_type(object, &rt)),
                None => status_response(
                    StatusCode::NOT_FOUND,
                    format!("{}{} {name:?} not found", rt.plural, group_suffix(&rt)),
                    Some(json!({ "name": name, "group": rt.group, "kind": rt.plural })),
                ),
            }
        }
        Route::Collection(rt, ns) => {
            let filter = match filter_from(rt, ns, &params) {
                Ok(filter) => filter,
                Err(message) => return status_response(StatusCode::BAD_REQUEST, message, None),
            };
            if verb == "watch" {
                watch(&mut state, filter, &params)
            } else {
                list(&state, &filter, &params)
            }
        }
        Route::Unknown => not_found(),
    }
}

fn group_suffix(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        String::new()
    } else {
        format!(".{}", rt.group)
    }
}

fn filter_from(
    resource: ResourceType,
    namespace: Option<String>,
    params: &HashMap<String, String>,
) -> Result<Filter, String> {
    let labels = params
        .get("labelSelector")
        .map(|s| parse_label_selector(s))
        .transpose()?
        .unwrap_or_default();
    let fields = params
        .get("fieldSelector")
        .map(|s| parse_field_selector(s))
        .transpose()?
        .unwrap_or_default();
    Ok(Filter {
        resource,
        namespace,
        labels,
        fields,
    })
}

/// Groups other than core, in registration order.
fn groups_of(state: &State) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for r in &state.resources {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
    }
    groups
}

/// Versions of `group`, in registration order (the first is preferred).
fn versions_of(state: &State, group: &str) -> Vec<String> {
    let mut versions: Vec<String> = Vec::new();
    for r in state.resources.iter().filter(|r| r.group == group) {
        if !versions.contains(&r.version) {
            versions.push(r.version.clone());
        }
    }
    versions
}

fn api_group(state: &State, group: &str) -> Value {
    let versions: Vec<Value> = versions_of(state, group)
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/api` or `/apis` as aggregated discovery (`apidiscovery.k8s.io/v2`).
fn aggregated_discovery(state: &State, core: bool) -> Response<ApiBody> {
    let groups = if core {
        vec![String::new()]
    } else {
        groups_of(state)
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = versions_of(state, group)
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = state
                        .resources
                        .iter()
                        .filter(|r| &r.group == group && &r.version == version)
                        .map(|r| {
                            json!({
                                "resource": r.plural,
                                "responseKind": { "group": r.group, "version": r.version, "kind": r.kind },
                                "scope": r.scope(),
                                "singularResource": r.kind.to_lowercase(),
                                "verbs": ["get", "list", "watch"],
                            })
                        })
                        .collect();
                    json!({ "version": version, "resources": resources, "freshness": "Current" })
                })
                .collect();
            json!({ "metadata": { "name": group }, "versions": versions })
        })
        .collect();
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": "apidiscovery.k8s.io/v2",
            "kind": "APIGroupDiscoveryList",
            "metadata": {},
            "items": items,
        }),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    response
}

/// The objects `filter` selects, in key order, from `after` (exclusive).
fn selected<'a>(
    state: &'a State,
    filter: &'a Filter,
    after: Option<&'a ObjectKey>,
) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
    state
        .objects
        .iter()
        .filter(move |(k, _)| after.is_none_or(|a| *k > a))
        .filter(move |(k, v)| filter.same_resource(&k.0, &k.1) && filter.matches(v))
}

fn list(state: &State, filter: &Filter, params: &HashMap<String, String>) -> Response<ApiBody> {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return status_response(StatusCode::BAD_REQUEST, "invalid limit".into(), None)
        }
    };
    let (rv, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        None => (state.rv, None),
        Some(token) => match decode_continue(token) {
            None => {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    "continue key is not valid".into(),
                    None,
                )
            }
            Some((rv, _)) if rv < state.compacted => return status_response(
                StatusCode::GONE,
                "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter."
                    .into(),
                None,
            ),
            Some((rv, after)) => (rv, Some(after)),
        },
    };
    let mut items = Vec::new();
    let mut last = None;
    let mut remaining = 0usize;
    for (key, object) in selected(state, filter, after.as_ref()) {
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
            continue;
        }
        items.push(with_type(object, &filter.resource));
        last = Some(key);
    }
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if remaining > 0 {
        if let Some(last) = last {
            metadata["continue"] = json!(encode_continue(rv, last));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": filter.resource.api_version(),
            "kind": format!("{}List", filter.resource.kind),
            "metadata": metadata,
            "items": items,
        }),
    )
}

fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let raw = json!({ "rv": rv, "key": [key.0, key.1, key.2, key.3] }).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Option<(u64, ObjectKey)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let value: Value = serde_json::from_slice(&raw).ok()?;
    let key = value["key"].as_array()?;
    let part = |i: usize| key.get(i).and_then(Value::as_str).map(str::to_owned);
    Some((
        value["rv"].as_u64()?,
        (part(0)?, part(1)?, part(2)?, part(3)?),
    ))
}

fn watch(state: &mut State, filter: Filter, params: &HashMap<String, String>) -> Response<ApiBody> {
    let timeout = match params.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
        None | Some(Ok(0)) => DEFAULT_WATCH_TIMEOUT,
        Some(Ok(n)) => Duration::from_secs(n),
        Some(Err(_)) => {
            return status_response(
                StatusCode::BAD_REQUEST,
                "invalid timeoutSeconds".into(),
                None,
            )
        }
    };
    let bookmarks = truthy(params.get("allowWatchBookmarks"));
    let send_initial = params.get("sendInitialEvents").map(|v| v == "true");
    let rv = params
        .get("resourceVersion")
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    let mut queued = VecDeque::new();
    let initial_listing = match (rv, send_initial) {
        (_, Some(true)) => {
            if !bookmarks {
                return status_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "sendInitialEvents requires allowWatchBookmarks=true".into(),
                    None,
                );
            }
            true
        }
        (None | Some("0"), Some(false)) => false,
        (None | Some("0"), None) => true,
        (Some(rv), _) => {
            let Ok(from) = rv.parse::<u64>() else {
                return status_response(
                    StatusCode::BAD_REQUEST,
                    format!("invalid resource version: {rv:?}"),
                    None,
                );
            };
            if from < state.compacted {
                // As the API server does: 200, one ERROR event, end.
                let mut body = VecDeque::new();
                body.push_back(expired_line(from, state.compacted + 1));
                return watch_response(body, None, timeout);
            }
            queued.extend(
                state
                    .history
                    .iter()
                    .filter(|c| c.rv > from)
                    .filter_map(|c| filter.event_for(c)),
            );
            false
        }
    };
    if initial_listing {
        queued.extend(
            selected(state, &filter, None)
                .map(|(_, o)| event_line("ADDED", &with_type(o, &filter.resource))),
        );
        if send_initial == Some(true) {
            queued.push_back(bookmark_line(&filter.resource, &state.rv.to_string(), true));
        }
    }
    let (tx, rx) = mpsc::channel(WATCH_QUEUE_CAPACITY);
    state.watchers.push(Watcher {
        filter,
        bookmarks,
        tx,
    });
    watch_response(queued, Some(rx), timeout)
}

fn watch_response(
    queued: VecDeque<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
    timeout: Duration,
) -> Response<ApiBody> {
    let mut response = Response::new(ApiBody::Watch(WatchBody {
        queued,
        rx,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
            .collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        let reqs = parse_label_selector(selector).expect("selector parses");
        let l = labels(pairs);
        reqs.iter().all(|r| r.matches(Some(&l)))
    }

    #[test]
    fn label_selectors_follow_kubernetes_grammar() {
        assert!(matches("", &[]));
        assert!(matches("app=web", &[("app", "web")]));
        assert!(matches("app==web", &[("app", "web")]));
        assert!(!matches("app=web", &[("app", "db")]));
        assert!(matches("app!=web", &[]), "!= matches a missing label");
        assert!(matches("app", &[("app", "")]));
        assert!(!matches("app", &[]));
        assert!(matches("!app", &[]));
        assert!(matches("env in (prod, staging)", &[("env", "staging")]));
        assert!(!matches("env in (prod)", &[]));
        assert!(
            matches("env notin (prod)", &[]),
            "notin matches a missing label"
        );
        assert!(!matches("env notin (prod,dev)", &[("env", "dev")]));
        assert!(matches(
            "app=web,env in (a,b),!legacy",
            &[("app", "web"), ("env", "b")]
        ));
        assert!(!matches("app=web,tier=front", &[("app", "web")]));
        assert!(matches("n>3,n<5", &[("n", "4")]));
        assert!(matches(
            "example.com/part-of=x",
            &[("example.com/part-of", "x")]
        ));
        for bad in [
            "app=web,",
            "env in (a",
            "env in ()",
            "a b",
            "env within (a)",
            "=x",
        ] {
            assert!(parse_label_selector(bad).is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn field_selectors_know_name_and_namespace_only() {
        let reqs = parse_field_selector("metadata.name=a,metadata.namespace!=kube-system")
            .expect("parses");
        let object = json!({ "metadata": { "name": "a", "namespace": "default" } });
        assert!(reqs.iter().all(|r| r.matches(&object)));
        assert!(parse_field_selector("status.phase=Running").is_err());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = (
            "".to_owned(),
            "pods".to_owned(),
            "ns".to_owned(),
            "p".to_owned(),
        );
        assert_eq!(decode_continue(&encode_continue(7, &key)), Some((7, key)));
        assert_eq!(decode_continue("not a token"), None);
    }

    #[test]
    fn changes_moving_across_a_selector_become_added_and_deleted() {
        let state = State::new();
        let rt = state
            .resource_of_kind("v1", "Pod")
            .expect("pods registered");
        let filter = Filter {
            resource: rt,
            namespace: None,
            labels: parse_label_selector("app=web").expect("parses"),
            fields: Vec::new(),
        };
        let pod = |app: &str| json!({ "metadata": { "name": "p", "labels": { "app": app } } });
        let change = |previous: Value, object: Value| Change {
            rv: 2,
            ty: ChangeType::Modified,
            group: String::new(),
            plural: "pods".into(),
            object,
            previous: Some(previous),
        };
        let ty = |line: Option<Bytes>| {
            line.map(|l| {
                let v: Value = serde_json::from_slice(&l).expect("JSON line");
                v["type"].as_str().unwrap_or_default().to_owned()
            })
        };
        assert_eq!(
            ty(filter.event_for(&change(pod("db"), pod("web")))).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            ty(filter.event_for(&change(pod("web"), pod("db")))).as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            ty(filter.event_for(&change(pod("web"), pod("web")))).as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(ty(filter.event_for(&change(pod("db"), pod("db")))), None);
    }
}
