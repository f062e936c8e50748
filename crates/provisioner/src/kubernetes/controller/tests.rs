//! The controller against kube's mocked API (a tower-test service) answered
//! by a small in-memory API server speaking real Kubernetes JSON: objects
//! by path, JSON merge patches checked against `resourceVersion` (409 on a
//! stale one), server-side apply, 404 `Status` documents, and Events.

use super::*;
use crate::kubernetes::fake::{client, dispatcher_contract, dispatcher_status, Shared};
use crate::provision::{Provisioner, Schedule, Tracker};
use bytes::Bytes;
use channel_core::broker::{BROKER_CLASS_ANNOTATION, INJECTION_LABEL};
use http::{Request, Response};
use http_body_util::Full;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SYSTEM: &str = "knative-channels";
/// Where tests put the `(type, source)` pairs the fake dispatcher reports
/// on `GET /eventtypes` (not an API path).
const OBSERVED_PATH: &str = "/fake-dispatcher/eventtypes";

/// A dispatcher admin endpoint reporting the in-memory contract last
/// written to the fake API as applied and every channel ready.
async fn fake_dispatcher(state: Shared) -> Url {
    fake_dispatcher_held(state, Held::default()).await
}

/// While it holds a contract, a dispatcher reports that one (it has not
/// applied a newer one yet).
type Held = Arc<Mutex<Option<Contract>>>;

async fn fake_dispatcher_held(state: Shared, held: Held) -> Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (state, held) = (state.clone(), held.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (state, held) = (state.clone(), held.clone());
                        async move {
                            // What ingress observed, as tests put it.
                            if req.uri().path() == "/eventtypes" {
                                let list = state
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .objects
                                    .get(OBSERVED_PATH)
                                    .map(|o| o["items"].clone())
                                    .unwrap_or_else(|| json!([]));
                                return Ok::<_, std::convert::Infallible>(Response::new(
                                    Full::new(Bytes::from(list.to_string())),
                                ));
                            }
                            let held = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            let contract =
                                held.unwrap_or_else(|| dispatcher_contract(&state, SYSTEM));
                            let body = dispatcher_status(&contract);
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(body.to_string()),
                            )))
                        }
                    });
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
    settings.source_adapter_admin = None;
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
        } else if path.contains("/configmaps/")
            && !o["metadata"]["labels"][CONTRACT_LABEL].is_null()
        {
            snap.contract_maps
                .push(serde_json::from_value(o).expect("configmap"));
        } else if path.contains("/configmaps/") {
            // The run loop watches the ConfigMaps brokers name.
            snap.config_maps
                .push(serde_json::from_value(o).expect("configmap"));
        } else if path.contains("/brokers/") {
            snap.brokers
                .push(serde_json::from_value(o).expect("broker"));
        } else if path.contains("/triggers/") {
            snap.triggers
                .push(serde_json::from_value(o).expect("trigger"));
        } else if path.starts_with("/api/v1/namespaces/") && path.matches('/').count() == 4 {
            // Watched with a label selector.
            if o["metadata"]["labels"][INJECTION_LABEL] == "enabled" {
                snap.namespaces
                    .push(serde_json::from_value(o).expect("namespace"));
            }
        } else if path.contains("/channels/") {
            snap.channels
                .push(serde_json::from_value(o).expect("channel"));
        } else if path.contains("/sequences/") {
            snap.sequences
                .push(serde_json::from_value(o).expect("sequence"));
        } else if path.contains("/parallels/") {
            snap.parallels
                .push(serde_json::from_value(o).expect("parallel"));
        } else if path.contains("/eventtypes/") {
            snap.event_types
                .push(serde_json::from_value(o).expect("eventtype"));
        } else if path.contains("/eventpolicies/") {
            snap.event_policies
                .push(serde_json::from_value(o).expect("eventpolicy"));
        } else if path.starts_with("/apis/sources.knative.dev/")
            || path.starts_with("/apis/sources.eventing.knative.dev/")
        {
            snap.sources
                .push(serde_json::from_value(o).expect("source"));
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

mod flows;
mod policies;
mod registry;
mod scale;
mod sources;
mod webhooks;

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
                   "status": {"address": {"url": "http://web.shop.svc.cluster.local",
                                          "CACerts": "-----BEGIN CERTIFICATE-----\nweb\n-----END CERTIFICATE-----\n"}}}),
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
    // The CA certificates the Addressable announces come with it.
    let auth = contract.channels[0].subscriptions[0]
        .auth
        .as_ref()
        .and_then(|a| a.subscriber.as_ref())
        .and_then(|t| t.ca_certs.as_deref());
    assert!(auth.is_some_and(|pem| pem.contains("web")), "{auth:?}");
    let sub = object(&state, SUB_PATH);
    assert_eq!(
        sub["status"]["physicalSubscription"]["subscriberUri"],
        "http://web.shop.svc.cluster.local/in"
    );
}

// Brokers and triggers.

const BROKER_PATH: &str = "/apis/eventing.knative.dev/v1/namespaces/shop/brokers/default";
const ORDERS_TRIGGER_PATH: &str = "/apis/eventing.knative.dev/v1/namespaces/shop/triggers/orders";
const EARLY_TRIGGER_PATH: &str = "/apis/eventing.knative.dev/v1/namespaces/shop/triggers/early";
const BROKER_SERVICE_PATH: &str = "/api/v1/namespaces/shop/services/default-kn-broker";
const BROKER_HOST: &str = "default-kn-broker.shop.svc.cluster.local";

fn put(state: &Shared, path: &str, object: Value) {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .put(path, object);
}

/// A Broker `default` in `shop` as `kubectl apply` leaves it.
fn broker(name: &str, annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-broker-uid"), "generation": 1,
                        "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations},
           "spec": spec})
}

fn trigger(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-trigger-uid"), "generation": 1,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}

fn seed_broker(state: &Shared) {
    put(
        state,
        BROKER_PATH,
        broker(
            "default",
            json!({}),
            json!({"delivery": {"retry": 2, "deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "dlq"}}}}),
        ),
    );
    put(
        state,
        ORDERS_TRIGGER_PATH,
        trigger(
            "orders",
            json!({"broker": "default",
                   "filter": {"attributes": {"type": "shop.order.created", "source": ""}},
                   "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "orders"}, "uri": "/in"}}),
        ),
    );
}

fn seed_early_trigger(state: &Shared) {
    put(
        state,
        EARLY_TRIGGER_PATH,
        trigger(
            "early",
            json!({"filters": [{"cesql": "type LIKE 'shop.%'"}],
                   "subscriber": {"uri": "http://early.shop.svc.cluster.local/"}}),
        ),
    );
}

fn condition<'a>(o: &'a Value, type_: &str) -> &'a Value {
    o["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn broker_channel(contract: &Contract, broker: &str) -> ChannelContract {
    contract
        .channels
        .iter()
        .find(|c| c.broker.as_ref().is_some_and(|b| b.name == broker))
        .cloned()
        .unwrap_or_else(|| panic!("broker {broker} in {contract:#?}"))
}

fn writes_to(state: &Shared, path: &str) -> usize {
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .iter()
        .filter(|(m, p, _)| m != "GET" && p.starts_with(path))
        .count()
}

#[tokio::test]
async fn a_broker_and_its_triggers_are_served_owned_and_reported() {
    let state = Shared::default();
    seed(&state);
    // The audit subscription replies into the broker.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sub = s.objects[SUB_PATH].clone();
        sub["spec"]["reply"] = json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}});
        s.put(SUB_PATH, sub);
    }
    // A trigger created before its broker.
    seed_early_trigger(&state);
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    let first = c.reconcile(&snapshot(&state)).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let early = object(&state, EARLY_TRIGGER_PATH);
    assert_eq!(early["metadata"]["finalizers"], json!([BROKER_FINALIZER]));
    assert_eq!(
        ready(&early),
        ("False".into(), "BrokerDoesNotExist".into()),
        "{:#}",
        early["status"]
    );
    assert_eq!(condition(&early, "BrokerReady")["status"], "False");

    // The broker and a second trigger arrive.
    seed_broker(&state);
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }

    // The contract: the broker's channel with its ingress, the triggers
    // as filtered subscriptions replying into the broker.
    let contract = written_contract(&state);
    let channel = broker_channel(&contract, "default");
    assert_eq!(channel.name, "default-kne-trigger");
    assert_eq!(channel.namespace, "shop");
    let b = channel.broker.as_ref().expect("broker");
    assert_eq!(b.uid, "default-broker-uid");
    assert_eq!(b.ingress.host, BROKER_HOST);
    assert_eq!(b.ingress.path, "/brokers/shop/default");
    let names: Vec<&str> = channel
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["early", "orders"]);
    let early_sub = &channel.subscriptions[0];
    assert_eq!(early_sub.uid, "early-trigger-uid");
    let filter = early_sub.trigger.as_ref().expect("a trigger");
    assert_eq!(filter.broker, "default");
    assert_eq!(filter.filters.len(), 1);
    let orders_sub = &channel.subscriptions[1];
    let filter = orders_sub.trigger.as_ref().expect("a trigger");
    assert_eq!(filter.attributes["type"], "shop.order.created");
    assert_eq!(
        orders_sub.subscriber.as_ref().map(Url::as_str),
        Some("http://orders.shop.svc.cluster.local/in"),
        "a Service reference plus a relative uri, resolved by the controller"
    );
    assert_eq!(
        orders_sub.reply.as_deref().map(Url::as_str),
        Some(format!("http://{BROKER_HOST}/").as_str())
    );
    assert_eq!(
        orders_sub.dead_letter.as_deref().map(Url::as_str),
        Some("http://dlq.shop.svc.cluster.local/"),
        "the broker's delivery is the triggers' default"
    );
    // A reference to the broker resolves without asking the API.
    let audit = contract
        .channels
        .iter()
        .flat_map(|c| &c.subscriptions)
        .find(|s| s.name == "audit")
        .expect("audit");
    assert_eq!(
        audit.reply.as_deref().map(Url::as_str),
        Some(format!("http://{BROKER_HOST}/").as_str())
    );
    assert!(
        requests(&state, "GET", "/apis/eventing.knative.dev/v1").is_empty(),
        "no discovery for brokers"
    );

    // The Service that makes the broker's host resolve, owned by it.
    let service = object(&state, BROKER_SERVICE_PATH);
    assert_eq!(service["spec"]["type"], "ExternalName");
    assert_eq!(
        service["spec"]["externalName"],
        "inmemory-dispatcher.knative-channels.svc.cluster.local"
    );
    let owner = &service["metadata"]["ownerReferences"][0];
    assert_eq!(owner["apiVersion"], "eventing.knative.dev/v1");
    assert_eq!(owner["kind"], "Broker");
    assert_eq!(owner["name"], "default");
    assert_eq!(owner["uid"], "default-broker-uid");
    assert_eq!(owner["controller"], true);
    assert_eq!(
        service["metadata"]["labels"]["eventing.knative.dev/broker"],
        "default"
    );
    // No Service for the broker's channel: it exists only in the contract.
    assert!(object(
        &state,
        "/api/v1/namespaces/shop/services/default-kne-trigger-kn-channel"
    )
    .is_null());

    // Status through the status subresource.
    let broker = object(&state, BROKER_PATH);
    assert_eq!(broker["metadata"]["finalizers"], json!([BROKER_FINALIZER]));
    assert_eq!(
        ready(&broker),
        ("True".into(), String::new()),
        "{:#}",
        broker["status"]
    );
    assert_eq!(
        broker["status"]["address"]["url"],
        format!("http://{BROKER_HOST}")
    );
    assert_eq!(
        broker["status"]["deadLetterSinkUri"],
        "http://dlq.shop.svc.cluster.local/"
    );
    assert_eq!(broker["status"]["observedGeneration"], 1);
    for type_ in [
        "Addressable",
        "IngressReady",
        "FilterReady",
        "TriggerChannelReady",
        "DeadLetterSinkResolved",
    ] {
        assert_eq!(
            condition(&broker, type_)["status"],
            "True",
            "{type_}: {:#}",
            broker["status"]
        );
        assert!(!condition(&broker, type_)["lastTransitionTime"].is_null());
    }
    assert!(!requests(&state, "PATCH", &format!("{BROKER_PATH}/status")).is_empty());
    for (path, subscriber) in [
        (EARLY_TRIGGER_PATH, "http://early.shop.svc.cluster.local/"),
        (
            ORDERS_TRIGGER_PATH,
            "http://orders.shop.svc.cluster.local/in",
        ),
    ] {
        let t = object(&state, path);
        assert_eq!(
            ready(&t),
            ("True".into(), String::new()),
            "{path}: {:#}",
            t["status"]
        );
        assert_eq!(t["status"]["subscriberUri"], subscriber);
        assert_eq!(t["metadata"]["finalizers"], json!([BROKER_FINALIZER]));
        for type_ in [
            "BrokerReady",
            "SubscriberResolved",
            "SubscriptionReady",
            "DependencyReady",
        ] {
            assert_eq!(condition(&t, type_)["status"], "True", "{path} {type_}");
        }
    }
    // Readiness changes are Events.
    let events = requests(
        &state,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    );
    for name in ["default", "early", "orders"] {
        assert!(
            events
                .iter()
                .any(|e| e["reason"] == "Ready" && e["regarding"]["name"] == name),
            "{name}: {events:#?}"
        );
    }

    // An idle round writes nothing.
    let before = state.lock().unwrap_or_else(|e| e.into_inner()).log.len();
    let idle = c.reconcile(&snapshot(&state)).await;
    assert!(idle.errors.is_empty(), "{:?}", idle.errors);
    let log = &state.lock().unwrap_or_else(|e| e.into_inner()).log;
    let writes: Vec<_> = log[before..]
        .iter()
        .filter(|(m, _, _)| m != "GET")
        .collect();
    assert!(
        writes.is_empty(),
        "an idle round writes nothing: {writes:#?}"
    );
}

#[tokio::test]
async fn deleted_triggers_and_brokers_leave_the_contract_then_lose_their_finalizers() {
    let state = Shared::default();
    seed(&state);
    seed_broker(&state);
    seed_early_trigger(&state);
    let held = Held::default();
    let admin = fake_dispatcher_held(state.clone(), held.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    assert_eq!(
        broker_channel(&written_contract(&state), "default")
            .subscriptions
            .len(),
        2
    );
    let deleting = |path: &str| {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = s.objects[path].clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(path, o);
    };

    // A trigger: out of the contract; the dispatcher applies that; gone.
    deleting(ORDERS_TRIGGER_PATH);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let channel = broker_channel(&written_contract(&state), "default");
    let names: Vec<&str> = channel
        .subscriptions
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["early"]);
    assert!(
        object(&state, ORDERS_TRIGGER_PATH).is_null(),
        "finalizer removed"
    );

    // A broker, while its dispatcher still serves the old contract: out
    // of the contract, the finalizer kept.
    let served = written_contract(&state);
    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(served.clone());
    deleting(BROKER_PATH);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(outcome.waiting, "the deletion waits for the dispatcher");
    let contract = written_contract(&state);
    assert!(
        contract.channels.iter().all(|c| c.broker.is_none()),
        "{contract:#?}"
    );
    assert_eq!(contract.generation, served.generation + 1);
    assert_eq!(
        object(&state, BROKER_PATH)["metadata"]["finalizers"],
        json!([BROKER_FINALIZER])
    );
    // The dispatcher applies it: the finalizer goes.
    *held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(!outcome.waiting);
    assert!(
        object(&state, BROKER_PATH).is_null(),
        "finalizer removed, object gone"
    );
    let log = state.lock().unwrap_or_else(|e| e.into_inner()).log.clone();
    let written = log
        .iter()
        .rposition(|(m, p, _)| m == "PATCH" && p == CONTRACT_PATH);
    let released = log
        .iter()
        .rposition(|(m, p, _)| m == "PATCH" && p == BROKER_PATH);
    assert!(written < released, "contract first, then the finalizer");
    // Its remaining trigger reports the missing broker.
    let early = object(&state, EARLY_TRIGGER_PATH);
    assert_eq!(ready(&early), ("False".into(), "BrokerDoesNotExist".into()));
}

#[tokio::test]
async fn a_namespace_with_injection_enabled_gets_a_default_broker() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        "/api/v1/namespaces/team",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "team", "uid": "team-uid", "labels": {INJECTION_LABEL: "enabled"}}}),
    );
    put(
        &state,
        "/api/v1/namespaces/quiet",
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": "quiet", "uid": "quiet-uid", "labels": {INJECTION_LABEL: "disabled"}}}),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let path = "/apis/eventing.knative.dev/v1/namespaces/team/brokers/default";
    let created = requests(
        &state,
        "POST",
        "/apis/eventing.knative.dev/v1/namespaces/team/brokers",
    );
    assert_eq!(created.len(), 1, "{created:#?}");
    let broker = object(&state, path);
    assert_eq!(broker["kind"], "Broker");
    assert_eq!(broker["metadata"]["labels"][INJECTED_LABEL], "true");
    assert!(
        broker["metadata"]["annotations"][BROKER_CLASS_ANNOTATION].is_null(),
        "the default class: this project's"
    );
    assert!(object(
        &state,
        "/apis/eventing.knative.dev/v1/namespaces/quiet/brokers/default"
    )
    .is_null());
    let events = requests(
        &state,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
    );
    assert!(
        events.iter().any(|e| e["reason"] == "BrokerCreated"
            && e["regarding"]["kind"] == "Namespace"
            && e["regarding"]["name"] == "team"),
        "{events:#?}"
    );

    // It is served like any broker.
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(
        requests(
            &state,
            "POST",
            "/apis/eventing.knative.dev/v1/namespaces/team/brokers"
        )
        .len(),
        1,
        "created once"
    );
    let channel = broker_channel(&written_contract(&state), "default");
    assert_eq!(channel.namespace, "team");
    assert_eq!(channel.class, "in-memory-channel");
    assert_eq!(
        object(&state, path)["metadata"]["finalizers"],
        json!([BROKER_FINALIZER])
    );

    // Turning injection off leaves the broker alone.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut ns = s.objects["/api/v1/namespaces/team"].clone();
        ns["metadata"]["labels"] = json!({});
        s.put("/api/v1/namespaces/team", ns);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(!object(&state, path).is_null());
    assert!(requests(&state, "DELETE", path).is_empty());
}

#[tokio::test]
async fn a_broker_of_another_class_and_its_triggers_are_left_alone() {
    let state = Shared::default();
    seed(&state);
    let path = "/apis/eventing.knative.dev/v1/namespaces/shop/brokers/theirs";
    let trigger_path = "/apis/eventing.knative.dev/v1/namespaces/shop/triggers/on-theirs";
    put(
        &state,
        path,
        broker(
            "theirs",
            json!({BROKER_CLASS_ANNOTATION: "Kafka"}),
            json!({}),
        ),
    );
    put(
        &state,
        trigger_path,
        trigger(
            "on-theirs",
            json!({"broker": "theirs", "subscriber": {"uri": "http://x.shop.svc.cluster.local/"}}),
        ),
    );
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        assert!(
            outcome
                .resources
                .iter()
                .all(|r| r.kind != "Broker" && r.kind != "Trigger"),
            "{:#?}",
            outcome.resources
        );
    }
    assert_eq!(writes_to(&state, path), 0, "no finalizer, no status");
    assert_eq!(writes_to(&state, trigger_path), 0);
    assert!(object(&state, "/api/v1/namespaces/shop/services/theirs-kn-broker").is_null());
    assert!(written_contract(&state)
        .channels
        .iter()
        .all(|c| c.broker.is_none()));
}

#[tokio::test]
async fn a_broker_config_map_is_read_from_the_snapshot_or_the_api() {
    let state = Shared::default();
    seed(&state);
    // As Knative's config-br-default-channel: the channel template.
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "imc-channel", "namespace": "knative-eventing", "uid": "cm-uid"},
        "data": {"channel-template-spec": "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nspec:\n  maxEvents: 42\n"}});
    let config_path = "/api/v1/namespaces/knative-eventing/configmaps/imc-channel";
    put(&state, config_path, config);
    let spec = json!({"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "imc-channel", "namespace": "knative-eventing"}});
    put(
        &state,
        BROKER_PATH,
        broker("default", json!({}), spec.clone()),
    );
    let mut c = controller(client(state.clone()), None);

    // Watched: in the snapshot.
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let channel = broker_channel(&written_contract(&state), "default");
    assert_eq!(channel.parameters["maxEvents"], 42, "{channel:#?}");
    assert!(requests(&state, "GET", config_path).is_empty());
    assert_eq!(
        config_references(&snapshot(&state)),
        BTreeSet::from([
            ("knative-eventing".to_owned(), "config-features".to_owned()),
            ("knative-eventing".to_owned(), "imc-channel".to_owned())
        ]),
        "the brokers' configs and Knative's feature flags"
    );

    // Not watched yet: read through the API.
    let other_path = "/apis/eventing.knative.dev/v1/namespaces/shop/brokers/other";
    put(&state, other_path, broker("other", json!({}), spec));
    let mut snap = snapshot(&state);
    snap.config_maps.clear();
    let outcome = c.reconcile(&snap).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(requests(&state, "GET", config_path).len(), 1);
    let contract = written_contract(&state);
    assert_eq!(
        broker_channel(&contract, "other").parameters["maxEvents"],
        42
    );

    // Missing: the broker says so.
    let missing_path = "/apis/eventing.knative.dev/v1/namespaces/shop/brokers/missing";
    put(
        &state,
        missing_path,
        broker(
            "missing",
            json!({}),
            json!({"config": {"apiVersion": "v1", "kind": "ConfigMap", "name": "nope"}}),
        ),
    );
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(!requests(&state, "GET", "/api/v1/namespaces/shop/configmaps/nope").is_empty());
    let missing = object(&state, missing_path);
    assert_eq!(
        ready(&missing),
        ("False".into(), "ConfigNotFound".into()),
        "{:#}",
        missing["status"]
    );
}

#[tokio::test]
async fn a_broker_whose_dead_letter_sink_cannot_be_resolved_stays_served() {
    let state = Shared::default();
    seed(&state);
    seed_broker(&state);
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = s.objects[BROKER_PATH].clone();
        b["spec"]["delivery"]["deadLetterSink"] =
            json!({"ref": {"apiVersion": "example.dev/v1", "kind": "Sink", "name": "ghost"}});
        s.put(BROKER_PATH, b);
    }
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        c.reconcile(&snapshot(&state)).await;
    }
    let channel = broker_channel(&written_contract(&state), "default");
    assert!(
        channel.subscriptions.is_empty(),
        "a trigger inheriting the sink waits for it: {channel:#?}"
    );
    let broker = object(&state, BROKER_PATH);
    assert_eq!(
        ready(&broker),
        ("False".into(), "DeadLetterSinkResolveFailed".into()),
        "{:#}",
        broker["status"]
    );
    assert_eq!(
        condition(&broker, "DeadLetterSinkResolved")["status"],
        "False"
    );
    assert_eq!(condition(&broker, "TriggerChannelReady")["status"], "True");
    assert_eq!(
        broker["status"]["address"]["url"],
        format!("http://{BROKER_HOST}")
    );
    let orders = object(&state, ORDERS_TRIGGER_PATH);
    assert_eq!(ready(&orders).0, "False", "{:#}", orders["status"]);
}

#[tokio::test]
async fn without_a_default_class_brokers_and_channels_get_the_built_in_in_memory_one() {
    let state = Shared::default();
    seed(&state);
    {
        // The cluster's only class is Kafka's, not annotated default.
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.objects.remove(CLASS_PATH);
        s.put(
            "/apis/eventing.knative.dev/v1alpha1/clusterchannelprovisioners/kafka",
            json!({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "ClusterChannelProvisioner",
                   "metadata": {"name": "kafka", "uid": "kafka-class-uid"},
                   "spec": {"backend": "kafka", "parameters": {"bootstrapServers": "kafka:9092"}}}),
        );
    }
    put(&state, BROKER_PATH, broker("default", json!({}), json!({})));
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let contract = written_contract(&state);
    let channel = broker_channel(&contract, "default");
    assert_eq!(channel.class, "in-memory-channel");
    assert_eq!(channel.backend, BackendKind::InMemory);
    assert!(
        contract
            .channels
            .iter()
            .any(|c| c.name == "orders" && c.class == "in-memory-channel"),
        "a classless Channel too: {contract:#?}"
    );
    assert!(
        outcome
            .resources
            .iter()
            .all(|r| r.reason.as_deref() != Some("NoDefaultClass")),
        "{:#?}",
        outcome.resources
    );
    assert!(!object(&state, BROKER_SERVICE_PATH).is_null());
}

#[test]
fn trust_bundle_config_maps_keep_their_label_as_manifests() {
    let map: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "eventing-ca", "namespace": "knative-eventing",
                     "labels": {"networking.knative.dev/trust-bundle": "true"}},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"}}))
    .expect("a ConfigMap");
    let manifests = load_str("config", &config_map_document(&map)).expect("loads");
    let features = channel_core::features::from_manifests(&manifests, &mut Vec::new());
    assert!(features
        .trust_bundle
        .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")));
}
