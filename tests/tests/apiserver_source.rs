//! The seeds' walk-through end to end: an ApiServerSource watching Events
//! (on the loopback fake API server, real watch JSON) → the Broker
//! `default` → a Trigger filtering `dev.knative.apiserver.resource.add` →
//! a sink; watches that expire (410) relist without duplicates.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tests::apiserver::FakeApiServer;
use tests::sources::Adapter;
use tests::{Backend, Dispatcher, Received, Sink};

const WAIT: Duration = Duration::from_secs(20);

fn k8s_event(name: &str, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
           "metadata": {"name": name, "namespace": "default"},
           "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default"},
           "reason": reason, "message": format!("{reason} web-1"), "type": "Normal"})
}

/// Event types received, by subject.
fn by_subject(received: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in received {
        let e = r.event.as_ref().expect("a CloudEvent");
        out.entry(e.subject.clone().unwrap_or_default())
            .or_default()
            .push(e.ty.clone());
    }
    out
}

tests::conformance!(the_seeds_api_server_source_walkthrough);

async fn the_seeds_api_server_source_walkthrough(backend: Backend) {
    let api = FakeApiServer::start().await;
    let adds = Sink::accepting().await;
    let all = Sink::accepting().await;
    // Before the source starts: not announced (the baseline).
    api.create(k8s_event("before", "Scheduled"));

    let broker = format!(
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: Broker\nmetadata: {{name: default, namespace: default}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: adds, namespace: default}}\nspec:\n  filter:\n    sourceAndType: {{type: dev.knative.apiserver.resource.add}}\n  subscriber: {{uri: '{}'}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: everything, namespace: default}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n",
        adds.url(),
        all.url()
    );
    let dispatcher = Dispatcher::start_on(&backend, &broker, &[]).await;
    // The seeds' ApiServerSource, unchanged.
    let source = "---\napiVersion: sources.eventing.knative.dev/v1alpha1\nkind: ApiServerSource\nmetadata:\n  name: testevents\n  namespace: default\nspec:\n  serviceAccountName: events-sa\n  mode: Resource\n  resources:\n  - apiVersion: v1\n    kind: Event\n  sink:\n    apiVersion: eventing.knative.dev/v1alpha1\n    kind: Broker\n    name: default\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    // The adapter reads the same class, broker and triggers, so it knows
    // which dispatcher serves the broker.
    let adapter = Adapter::start(
        &format!("{}{broker}{source}", backend.class_yaml()),
        &[
            "--kubeconfig",
            kubeconfig.to_str().expect("path"),
            "--dispatcher-url",
            &format!("{}=http://{}", backend.name(), dispatcher.ingress),
        ],
    )
    .await;
    assert!(
        api.wait_for_watchers(1, WAIT).await,
        "the adapter watches: {}",
        adapter.log()
    );

    // Added, modified, deleted.
    api.create(k8s_event("pulled", "Pulled"));
    let mut updated = k8s_event("pulled", "Pulled");
    updated["message"] = json!("Pulled web-1 again");
    api.update(updated);
    api.delete("v1", "Event", Some("default"), "pulled");
    let got = all.wait_for(3, WAIT).await;
    assert_eq!(got.len(), 3, "{}", adapter.log());
    // (The source sends in order; the trigger delivers concurrently.)
    let mut types: Vec<&str> = got
        .iter()
        .map(|r| r.event.as_ref().map_or("", |e| e.ty.as_str()))
        .collect();
    types.sort_unstable();
    assert_eq!(
        types,
        [
            "dev.knative.apiserver.resource.add",
            "dev.knative.apiserver.resource.delete",
            "dev.knative.apiserver.resource.update"
        ]
    );
    let first = got
        .iter()
        .filter_map(|r| r.event.as_ref())
        .find(|e| e.ty == "dev.knative.apiserver.resource.add")
        .expect("the add");
    assert_eq!(first.source, api.url().trim_end_matches('/'));
    assert_eq!(
        first.subject.as_deref(),
        Some("/apis/v1/namespaces/default/events/pulled")
    );
    assert_eq!(first.extension("kind").as_deref(), Some("Event"));
    assert_eq!(first.extension("name").as_deref(), Some("pulled"));
    let data: Value =
        serde_json::from_slice(first.data.as_deref().unwrap_or_default()).expect("JSON data");
    assert_eq!(data["reason"], "Pulled", "Resource mode: the object");
    // The trigger's filter: only the add.
    let only_adds = adds.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(adds.count(), 1, "{:?}", by_subject(&adds.received()));
    assert_eq!(
        only_adds[0].event.as_ref().map(|e| e.ty.as_str()),
        Some("dev.knative.apiserver.resource.add")
    );

    // A bookmark is no event; an expired watch relists and announces only
    // what changed meanwhile, once.
    api.bookmark();
    api.create(k8s_event("started", "Started"));
    assert_eq!(all.wait_for(4, WAIT).await.len(), 4);
    let lists_before = api.requests().iter().filter(|r| r.is_list()).count();
    api.expire_watches();
    api.create(k8s_event("killed", "Killing"));
    let mut changed = k8s_event("started", "Started");
    changed["message"] = json!("Started web-1 (restarted)");
    api.update(changed);
    assert!(
        tests::eventually(WAIT, || api
            .requests()
            .iter()
            .filter(|r| r.is_list())
            .count()
            > lists_before)
        .await,
        "the adapter relists after 410"
    );
    assert_eq!(all.wait_for(6, WAIT).await.len(), 6, "{}", adapter.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = by_subject(&all.received());
    for types in seen.values_mut() {
        types.sort_unstable();
    }
    let subject = |name: &str| format!("/apis/v1/namespaces/default/events/{name}");
    assert_eq!(
        seen.get(&subject("started")),
        Some(&vec![
            "dev.knative.apiserver.resource.add".to_owned(),
            "dev.knative.apiserver.resource.update".to_owned()
        ]),
        "{seen:#?}"
    );
    assert_eq!(
        seen.get(&subject("killed")),
        Some(&vec!["dev.knative.apiserver.resource.add".to_owned()]),
        "{seen:#?}"
    );
    assert!(
        !seen.contains_key(&subject("before")),
        "baseline: {seen:#?}"
    );
    assert_eq!(all.count(), 6, "nothing twice: {seen:#?}");
    let status = adapter.status().await;
    assert_eq!(status["sources"][0]["state"], "running", "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_mode_owner_filter_and_an_unserved_kind() {
    let api = FakeApiServer::start().await;
    let sink = Sink::accepting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let manifests = format!(
        "apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata: {{name: pods, namespace: default}}\nspec:\n  mode: Reference\n  resources: [{{apiVersion: v1, kind: Pod, selector: {{matchLabels: {{app: web}}}}}}]\n  owner: {{apiVersion: apps/v1, kind: ReplicaSet}}\n  ceOverrides: {{extensions: {{team: shop}}}}\n  sink: {{uri: '{}'}}\n---\napiVersion: sources.knative.dev/v1\nkind: ApiServerSource\nmetadata: {{name: widgets, namespace: default}}\nspec:\n  resources: [{{apiVersion: example.com/v1, kind: Widget}}]\n  sink: {{uri: '{}'}}\n",
        sink.url(),
        sink.url()
    );
    let adapter = Adapter::start(
        &manifests,
        &["--kubeconfig", kubeconfig.to_str().expect("path")],
    )
    .await;
    assert!(api.wait_for_watchers(1, WAIT).await, "{}", adapter.log());
    let owned = |name: &str, app: &str, owner: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": "o", "uid": "o-uid", "controller": true}]},
               "spec": {"containers": [{"name": "c", "image": "x"}]}})
    };
    api.create(owned("other-app", "db", "ReplicaSet"));
    api.create(owned("by-a-job", "web", "Job"));
    api.create(owned("web-1", "web", "ReplicaSet"));
    let got = sink.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sink.count(), 1, "only the selected, owned pod");
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.apiserver.ref.add");
    assert_eq!(e.extension("team").as_deref(), Some("shop"));
    let data: Value = serde_json::from_slice(e.data.as_deref().unwrap_or_default()).expect("JSON");
    assert_eq!(
        data,
        json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "default"})
    );
    // A kind the API does not serve: the source fails with the reason, the
    // other keeps running.
    assert!(
        tests::eventually(WAIT, || adapter.log().contains("example.com/v1 Widget")).await,
        "{}",
        adapter.log()
    );
    let status = adapter.status().await;
    let widgets = status["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "widgets"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(widgets["state"], "failed", "{status:#}");
    assert!(
        widgets["message"]
            .as_str()
            .is_some_and(|m| m.contains("not served")),
        "{status:#}"
    );
}
