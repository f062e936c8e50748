//! A small in-memory Kubernetes API server behind kube's mocked service
//! (tower-test), speaking real Kubernetes JSON: objects by path, creation
//! (409 when present; uid, generation and creationTimestamp filled in),
//! replacement and JSON merge patches checked against
//! `resourceVersion` (409 on a stale one), server-side apply, and 404
//! `Status` documents. Tests seed objects and read what was written.

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct State {
    pub objects: BTreeMap<String, Value>,
    /// (method, path, body) of every request.
    pub log: Vec<(String, String, Value)>,
    /// Status patches to answer with 409 before accepting.
    pub status_conflicts: usize,
    version: u64,
}

pub type Shared = Arc<Mutex<State>>;

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn status_doc(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

impl State {
    fn bump(&mut self, object: &mut Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }

    pub fn put(&mut self, path: &str, mut object: Value) {
        self.bump(&mut object);
        self.objects.insert(path.to_owned(), object);
    }

    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.log
            .push((method.to_string(), path.to_owned(), body.clone()));
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(p) => (p.to_owned(), true),
            None => (path.to_owned(), false),
        };
        match *method {
            Method::GET => match self.objects.get(&object_path) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    status_doc(404, "NotFound", "not found"),
                ),
            },
            Method::POST if path.ends_with("/events") => (StatusCode::CREATED, body),
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let target = format!("{path}/{name}");
                if self.objects.contains_key(&target) {
                    return (
                        StatusCode::CONFLICT,
                        status_doc(409, "AlreadyExists", "already exists"),
                    );
                }
                // What the API server fills in on creation.
                let mut object = body;
                let uid = format!("uid-{}", self.version + 1);
                let meta = &mut object["metadata"];
                if meta["uid"].is_null() {
                    meta["uid"] = json!(uid);
                }
                if meta["generation"].is_null() {
                    meta["generation"] = json!(1);
                }
                if meta["creationTimestamp"].is_null() {
                    meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                }
                self.put(&target, object);
                (StatusCode::CREATED, self.objects[&target].clone())
            }
            Method::PUT => {
                let Some(current) = self.objects.get(&object_path) else {
                    return (
                        StatusCode::NOT_FOUND,
                        status_doc(404, "NotFound", "not found"),
                    );
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return (
                        StatusCode::CONFLICT,
                        status_doc(409, "Conflict", "the object has been modified"),
                    );
                }
                self.put(&object_path, body);
                (StatusCode::OK, self.objects[&object_path].clone())
            }
            Method::PATCH if content_type.starts_with("application/apply-patch") => {
                let mut object = body;
                if let Some(old) = self.objects.get(&object_path) {
                    object["metadata"]["uid"] = old["metadata"]["uid"].clone();
                }
                self.put(&object_path, object.clone());
                (StatusCode::OK, self.objects[&object_path].clone())
            }
            Method::PATCH => {
                let Some(mut object) = self.objects.get(&object_path).cloned() else {
                    return (
                        StatusCode::NOT_FOUND,
                        status_doc(404, "NotFound", "not found"),
                    );
                };
                if subresource && self.status_conflicts > 0 {
                    self.status_conflicts -= 1;
                    // Someone else wrote the object meanwhile.
                    self.bump(&mut object);
                    self.objects.insert(object_path, object);
                    return (
                        StatusCode::CONFLICT,
                        status_doc(409, "Conflict", "the object has been modified"),
                    );
                }
                let wanted_rv = body["metadata"]["resourceVersion"].clone();
                if !wanted_rv.is_null() && wanted_rv != object["metadata"]["resourceVersion"] {
                    return (
                        StatusCode::CONFLICT,
                        status_doc(409, "Conflict", "the object has been modified"),
                    );
                }
                let mut patch = body;
                if let Some(m) = patch.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    m.remove("resourceVersion");
                }
                if subresource {
                    patch = json!({"status": patch["status"].clone()});
                }
                merge_patch(&mut object, &patch);
                // Kubernetes deletes an object whose deletion was requested
                // once its last finalizer is gone.
                let finalizers_gone = object["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
                if !object["metadata"]["deletionTimestamp"].is_null() && finalizers_gone {
                    self.objects.remove(&object_path);
                    return (StatusCode::OK, object);
                }
                self.put(&object_path, object);
                (StatusCode::OK, self.objects[&object_path].clone())
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status_doc(405, "MethodNotAllowed", ""),
            ),
        }
    }
}

/// A kube Client whose requests the shared state answers.
pub fn client(state: Shared) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .or_else(|_| serde_yaml_ng::from_slice(&bytes))
                    .unwrap_or(Value::Null)
            };
            let (status, answer) = state.lock().unwrap_or_else(|e| e.into_inner()).handle(
                &method,
                &path,
                &content_type,
                body,
            );
            let response = Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Body::from(answer.to_string().into_bytes()))
                .expect("a response");
            send.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

/// Objects of the scale test and bench: InMemoryChannel `ch-<i>` and its
/// Subscription `sub-<i>` in namespace `ns-<i % SCALE_NAMESPACES>`.
pub const SCALE_NAMESPACES: usize = 100;

pub fn channel_path(ns: &str, name: &str) -> String {
    format!("/apis/messaging.knative.dev/v1/namespaces/{ns}/inmemorychannels/{name}")
}

pub fn subscription_path(ns: &str, name: &str) -> String {
    format!("/apis/messaging.knative.dev/v1/namespaces/{ns}/subscriptions/{name}")
}

/// Seed `channels` InMemoryChannels, each with one Subscription.
pub fn seed_channels(state: &Shared, channels: usize) {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..channels {
        let ns = format!("ns-{}", i % SCALE_NAMESPACES);
        let name = format!("ch-{i}");
        s.put(
            &channel_path(&ns, &name),
            json!({"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel",
                   "metadata": {"name": name, "namespace": ns, "uid": format!("ch-uid-{i}"),
                                "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "spec": {}}),
        );
        let sub = format!("sub-{i}");
        s.put(
            &subscription_path(&ns, &sub),
            json!({"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
                   "metadata": {"name": sub, "namespace": ns, "uid": format!("sub-uid-{i}"), "generation": 1},
                   "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel", "name": name},
                            "subscriber": {"uri": format!("http://sink.{ns}.svc.cluster.local/{i}")}}}),
        );
    }
}

/// The in-memory contract last written to `system`'s
/// `inmemory-dispatcher-contract` ConfigMap (empty when none is).
pub fn dispatcher_contract(state: &Shared, system: &str) -> channel_core::Contract {
    let path = format!("/api/v1/namespaces/{system}/configmaps/inmemory-dispatcher-contract");
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .objects
        .get(&path)
        .and_then(|m| m["data"]["inmemory.json"].as_str().map(str::to_owned))
        .and_then(|t| channel_core::Contract::from_json(t.as_bytes()).ok())
        .unwrap_or_default()
}

/// A dispatcher's `/status` document reporting `contract` applied and
/// every channel and subscription in it ready.
pub fn dispatcher_status(contract: &channel_core::Contract) -> Value {
    let channels: Vec<Value> = contract
        .channels
        .iter()
        .map(|c| {
            json!({
                "uid": c.uid, "namespace": c.namespace, "name": c.name,
                "address": c.address(), "ready": true,
                "subscriptions": c.subscriptions.iter().map(|s| json!({
                    "uid": s.uid, "name": s.name, "generation": s.generation, "ready": true
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"generation": contract.generation, "backend": "inmemory",
           "channels": channels, "problems": []})
}

/// The objects of the scale test and bench as the watch caches would hold
/// them, parsed into the caller's types: InMemoryChannels, Subscriptions,
/// and the ConfigMaps carrying `contract_label`.
pub fn scale_objects<C, S, M>(state: &Shared, contract_label: &str) -> (Vec<C>, Vec<S>, Vec<M>)
where
    C: serde::de::DeserializeOwned,
    S: serde::de::DeserializeOwned,
    M: serde::de::DeserializeOwned,
{
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut kinds: [Vec<Value>; 3] = Default::default();
    for (path, o) in &s.objects {
        let kind = if path.contains("/inmemorychannels/") {
            0
        } else if path.contains("/subscriptions/") {
            1
        } else if path.contains("/configmaps/")
            && !o["metadata"]["labels"][contract_label].is_null()
        {
            2
        } else {
            continue;
        };
        kinds[kind].push(o.clone());
    }
    fn parse<T: serde::de::DeserializeOwned>(objects: Vec<Value>) -> Vec<T> {
        objects
            .into_iter()
            .map(|o| serde_json::from_value(o).expect("a stored object of its kind"))
            .collect()
    }
    let [channels, subscriptions, maps] = kinds;
    (parse(channels), parse(subscriptions), parse(maps))
}
