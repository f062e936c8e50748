//! The controller against kube's mocked API (a tower-test service) answered
//! by a small in-memory API server speaking real Kubernetes JSON: objects
//! by path, JSON merge patches checked against `resourceVersion` (409 on a
//! stale one), server-side apply, 404 `Status` documents, and Events.

use super::*;
use crate::kubernetes::fake::{client, Shared};
use crate::provision::{Provisioner, Schedule, Tracker};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use std::time::Duration;

const SYSTEM: &str = "knative-channels";

/// A dispatcher admin endpoint reporting the in-memory contract last
/// written to the fake API as applied and every channel ready.
async fn fake_dispatcher(state: Shared) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let path = format!("/api/v1/namespaces/{SYSTEM}/configmaps/inmemory-dispatcher-contract");
                            let contract = state
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .objects
                                .get(&path)
                                .and_then(|m| {
                                    m["data"]["inmemory.json"].as_str().map(str::to_owned)
                                })
                                .and_then(|t| Contract::from_json(t.as_bytes()).ok())
                                .unwrap_or_default();
                            let channels: Vec<Value> = contract
                            .channels
                            .iter()
                            .map(|c| json!({
                                "uid": c.uid, "namespace": c.namespace, "name": c.name,
                                "address": c.address(), "ready": true,
                                "subscriptions": c.subscriptions.iter().map(|s| json!({
                                    "uid": s.uid, "name": s.name, "generation": s.generation, "ready": true
                                })).collect::<Vec<_>>(),
                            }))
                            .collect();
                            let body = json!({"generation": contract.generation, "backend": "inmemory",
                                          "channels": channels, "problems": []});
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body.to_string()),
                            )))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Url::parse(&format!("http://{addr}/")).expect("url")
}

fn controller(client: kube::Client, admin: Option<Url>) -> Controller {
    let mut settings = Settings::new(SYSTEM);
    settings.dispatcher_admin.clear();
    if let Some(url) = admin {
        settings.dispatcher_admin.insert(BackendKind::InMemory, url);
    }
    let cycle = Cycle::new(
        Provisioner::new(
            channel_kafka::config::Defaults::default(),
            channel_nats::NatsOptions::default(),
            Duration::from_secs(2),
        ),
        Tracker::new(Schedule {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            resync: Duration::from_secs(60),
        }),
    );
    Controller::new(client, settings, cycle, crate::cycle::http_client())
}

const CLASS_PATH: &str =
    "/apis/eventing.knative.dev/v1alpha1/clusterchannelprovisioners/in-memory-channel";
const CHANNEL_PATH: &str = "/apis/messaging.knative.dev/v1/namespaces/shop/channels/orders";
const SUB_PATH: &str = "/apis/messaging.knative.dev/v1/namespaces/shop/subscriptions/audit";
const LOST_PATH: &str = "/apis/messaging.knative.dev/v1/namespaces/shop/subscriptions/lost";
const CONTRACT_PATH: &str =
    "/api/v1/namespaces/knative-channels/configmaps/inmemory-dispatcher-contract";
const SERVICE_PATH: &str = "/api/v1/namespaces/shop/services/orders-kn-channel";

fn seed(state: &Shared) {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.put(
        CLASS_PATH,
        json!({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "ClusterChannelProvisioner",
               "metadata": {"name": "in-memory-channel", "uid": "class-uid",
                            "annotations": {"eventing.knative.dev/is-default-provisioner": "true"}},
               "spec": {"backend": "inmemory"}}),
    );
    s.put(
        CHANNEL_PATH,
        json!({"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
               "metadata": {"name": "orders", "namespace": "shop", "uid": "orders-uid", "generation": 1,
                            "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"delivery": {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "dlq"}}}}}),
    );
    s.put(
        SUB_PATH,
        json!({"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
               "metadata": {"name": "audit", "namespace": "shop", "uid": "audit-uid", "generation": 2},
               "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "orders"},
                        "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "auditor"}, "uri": "/events"}}}),
    );
    s.put(
        LOST_PATH,
        json!({"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
               "metadata": {"name": "lost", "namespace": "shop", "uid": "lost-uid", "generation": 1},
               "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "nowhere"},
                        "subscriber": {"uri": "http://x.shop.svc.cluster.local/"}}}),
    );
}

/// What the run loop's watchers would hand the controller.
fn snapshot(state: &Shared) -> Snapshot {
    let s = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut snap = Snapshot::default();
    for (path, object) in &s.objects {
        let o = object.clone();
        if path.contains("/clusterchannelprovisioners/") {
            snap.classes.push(serde_json::from_value(o).expect("class"));
        } else if path.contains("/subscriptions/") {
            snap.subscriptions
                .push(serde_json::from_value(o).expect("subscription"));
        } else if path.contains("/configmaps/") {
            snap.contract_maps
                .push(serde_json::from_value(o).expect("configmap"));
        } else if path.contains("/channels/") {
            snap.channels
                .push(serde_json::from_value(o).expect("channel"));
        }
    }
    snap
}

fn object(state: &Shared, path: &str) -> Value {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .objects
        .get(path)
        .cloned()
        .unwrap_or(Value::Null)
}

/// The in-memory contract the controller wrote into its ConfigMap.
fn written_contract(state: &Shared) -> Contract {
    let map = object(state, CONTRACT_PATH);
    Contract::from_json(
        map["data"]["inmemory.json"]
            .as_str()
            .expect("data")
            .as_bytes(),
    )
    .expect("contract")
}

fn ready(o: &Value) -> (String, String) {
    let c = o["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn requests(state: &Shared, method: &str, path: &str) -> Vec<Value> {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .iter()
        .filter(|(m, p, _)| m == method && p == path)
        .map(|(_, _, b)| b.clone())
        .collect()
}

#[tokio::test]
async fn a_new_channel_gets_a_finalizer_contract_service_and_ready_status() {
    let state = Shared::default();
    seed(&state);
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));

    let first = c.reconcile(&snapshot(&state)).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let channel = object(&state, CHANNEL_PATH);
    assert_eq!(channel["metadata"]["finalizers"], json!([FINALIZER]));

    // The contract ConfigMap, applied in the system namespace.
    let map = object(&state, CONTRACT_PATH);
    assert_eq!(map["metadata"]["labels"][CONTRACT_LABEL], "inmemory");
    let contract = Contract::from_json(
        map["data"]["inmemory.json"]
            .as_str()
            .expect("data")
            .as_bytes(),
    )
    .expect("a contract");
    assert_eq!(contract.generation, 1);
    assert_eq!(contract.channels.len(), 1);
    let served = &contract.channels[0];
    assert_eq!(served.name, "orders");
    assert_eq!(
        served.subscriptions.len(),
        1,
        "the lost subscription is not served"
    );
    assert_eq!(
        served.subscriptions[0].subscriber.as_ref().map(Url::as_str),
        Some("http://auditor.shop.svc.cluster.local/events"),
        "a Service reference plus a relative uri"
    );
    // Every backend has its ConfigMap, so every dispatcher can start.
    for backend in ["kafka", "nats"] {
        let path = format!("/api/v1/namespaces/{SYSTEM}/configmaps/{backend}-dispatcher-contract");
        assert!(!object(&state, &path).is_null(), "{backend} ConfigMap");
    }

    // The ExternalName Service that makes the channel's host resolve.
    let service = object(&state, SERVICE_PATH);
    assert_eq!(service["spec"]["type"], "ExternalName");
    assert_eq!(
        service["spec"]["externalName"],
        "inmemory-dispatcher.knative-channels.svc.cluster.local"
    );
    assert_eq!(
        service["metadata"]["ownerReferences"][0]["uid"],
        "orders-uid"
    );

    // The dispatcher reports the contract applied: the next round is Ready.
    let second = c.reconcile(&snapshot(&state)).await;
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    let channel = object(&state, CHANNEL_PATH);
    assert_eq!(
        ready(&channel),
        ("True".into(), String::new()),
        "{:#}",
        channel["status"]
    );
    assert_eq!(
        channel["status"]["address"]["url"],
        "http://orders-kn-channel.shop.svc.cluster.local"
    );
    assert_eq!(channel["status"]["observedGeneration"], 1);
    assert_eq!(
        channel["status"]["deadLetterSinkUri"],
        "http://dlq.shop.svc.cluster.local/"
    );
    assert_eq!(channel["status"]["subscribers"][0]["uid"], "audit-uid");
    assert_eq!(channel["status"]["subscribers"][0]["ready"], "True");
    let sub = object(&state, SUB_PATH);
    assert_eq!(ready(&sub).0, "True", "{:#}", sub["status"]);
    assert_eq!(
        sub["status"]["physicalSubscription"]["subscriberUri"],
        "http://auditor.shop.svc.cluster.local/events"
    );
    assert_eq!(sub["status"]["observedGeneration"], 2);
    // Readiness changes are Kubernetes Events.
    let events = requests(
        &state,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    );
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Ready" && e["regarding"]["name"] == "orders"),
        "{events:#?}"
    );

    // A third round with nothing new writes nothing.
    let writes_before = state.lock().unwrap_or_else(|e| e.into_inner()).log.len();
    c.reconcile(&snapshot(&state)).await;
    let log = &state.lock().unwrap_or_else(|e| e.into_inner()).log;
    let writes: Vec<_> = log[writes_before..]
        .iter()
        .filter(|(m, _, _)| m != "GET")
        .collect();
    assert!(
        writes.is_empty(),
        "an idle round writes nothing: {writes:#?}"
    );
}

#[tokio::test]
async fn a_subscription_to_a_missing_channel_is_not_ready_with_the_reason() {
    let state = Shared::default();
    seed(&state);
    let mut c = controller(client(state.clone()), None);
    c.reconcile(&snapshot(&state)).await;
    let lost = object(&state, LOST_PATH);
    assert_eq!(ready(&lost), ("False".into(), "ChannelNotFound".into()));
    let message = lost["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("nowhere"), "{message}");
    // Without a dispatcher to ask, the channel cannot be Ready yet.
    let channel = object(&state, CHANNEL_PATH);
    assert_eq!(ready(&channel).0, "Unknown", "{:#}", channel["status"]);
}

#[tokio::test]
async fn a_reference_to_a_missing_addressable_is_reported() {
    let state = Shared::default();
    seed(&state);
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sub = s.objects[SUB_PATH].clone();
        sub["spec"]["reply"] = json!({"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "ghost"}});
        s.put(SUB_PATH, sub);
    }
    let mut c = controller(client(state.clone()), None);
    c.reconcile(&snapshot(&state)).await;
    let sub = object(&state, SUB_PATH);
    assert_eq!(
        ready(&sub),
        ("False".into(), "ReplyResolveFailed".into()),
        "{:#}",
        sub["status"]
    );
}

#[tokio::test]
async fn deleting_a_channel_removes_it_from_the_contract_then_the_finalizer() {
    let state = Shared::default();
    seed(&state);
    let mut c = controller(client(state.clone()), None);
    c.reconcile(&snapshot(&state)).await;
    assert_eq!(
        object(&state, CHANNEL_PATH)["metadata"]["finalizers"],
        json!([FINALIZER])
    );

    // kubectl delete: the API server sets deletionTimestamp and waits for
    // the finalizers.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut channel = s.objects[CHANNEL_PATH].clone();
        channel["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(CHANNEL_PATH, channel);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let contract = written_contract(&state);
    assert!(
        contract.channels.is_empty(),
        "the channel left the contract"
    );
    assert_eq!(contract.generation, 2);
    assert!(
        object(&state, CHANNEL_PATH).is_null(),
        "finalizer removed, object gone"
    );
    // The contract was written before the finalizer went.
    let log = state.lock().unwrap_or_else(|e| e.into_inner()).log.clone();
    let written = log
        .iter()
        .rposition(|(m, p, _)| m == "PATCH" && p == CONTRACT_PATH);
    let released = log
        .iter()
        .rposition(|(m, p, _)| m == "PATCH" && p == CHANNEL_PATH);
    assert!(written < released, "contract first, then the finalizer");
    // Its subscription now reports the missing channel.
    let sub = object(&state, SUB_PATH);
    assert_eq!(ready(&sub), ("False".into(), "ChannelNotFound".into()));
}

#[tokio::test]
async fn a_status_patch_conflict_is_retried_on_the_fresh_object() {
    let state = Shared::default();
    seed(&state);
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status_conflicts = 1;
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let patches = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.ends_with("/status"))
        .count();
    assert!(
        patches >= 4,
        "one conflict and a retry, plus the others: {patches}"
    );
    // Every status landed.
    for path in [CHANNEL_PATH, SUB_PATH, LOST_PATH] {
        assert!(
            !object(&state, path)["status"]["conditions"].is_null(),
            "{path}"
        );
    }
    assert_eq!(
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status_conflicts,
        0
    );
}

#[tokio::test]
async fn a_reference_to_any_addressable_resolves_to_its_address() {
    let state = Shared::default();
    seed(&state);
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        // Discovery for serving.knative.dev/v1, as the API server lists it.
        s.put(
            "/apis/serving.knative.dev/v1",
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "serving.knative.dev/v1",
                   "resources": [
                       {"name": "services", "singularName": "service", "namespaced": true, "kind": "Service",
                        "verbs": ["get", "list", "watch"], "shortNames": ["ksvc"]},
                       {"name": "services/status", "singularName": "", "namespaced": true, "kind": "Service",
                        "verbs": ["get", "patch"]}]}),
        );
        s.put(
            "/apis/serving.knative.dev/v1/namespaces/shop/services/web",
            json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                   "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid"},
                   "status": {"address": {"url": "http://web.shop.svc.cluster.local"}}}),
        );
        let mut sub = s.objects[SUB_PATH].clone();
        sub["spec"]["subscriber"] = json!({"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "web"}, "uri": "/in"});
        s.put(SUB_PATH, sub);
    }
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let contract = written_contract(&state);
    assert_eq!(
        contract.channels[0].subscriptions[0]
            .subscriber
            .as_ref()
            .map(Url::as_str),
        Some("http://web.shop.svc.cluster.local/in")
    );
    let sub = object(&state, SUB_PATH);
    assert_eq!(
        sub["status"]["physicalSubscription"]["subscriberUri"],
        "http://web.shop.svc.cluster.local/in"
    );
}
