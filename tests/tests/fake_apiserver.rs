//! The fake Kubernetes API server (`tests::apiserver`) against the real
//! `kube` client: a `kube::Client` from the kubeconfig it writes lists with
//! selectors, `kube::runtime::watcher` follows changes in order, relists
//! after `410 Expired`, swallows bookmarks, and `kube::discovery` resolves a
//! registered custom kind for a `DynamicObject` Api.
//!
//! Every wait is bounded by a tokio timeout.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;
use tests::apiserver::FakeApiServer;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A client built from the kubeconfig file the server writes, as a binary
/// would build it from `KUBECONFIG`.
async fn client(server: &FakeApiServer) -> (kube::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("kubeconfig written");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig accepted");
    assert_eq!(config.default_namespace, "default");
    (kube::Client::try_from(config).expect("client"), dir)
}

fn pod(namespace: &str, name: &str, labels: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
    })
}

/// A `watcher` driven by its own task (aborted on drop), its items
/// described as short strings: `Init`, `InitApply(a)`, `InitDone`,
/// `Apply(a)`, `Delete(a)`, `Error(410)`.
struct Watched<K> {
    rx: mpsc::Receiver<(String, Option<K>)>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Watched<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn describe<K: kube::Resource + Clone>(
    item: Result<Event<K>, watcher::Error>,
) -> (String, Option<K>) {
    match item {
        Ok(Event::Init) => ("Init".into(), None),
        Ok(Event::InitDone) => ("InitDone".into(), None),
        Ok(Event::InitApply(o)) => (format!("InitApply({})", o.name_any()), Some(o)),
        Ok(Event::Apply(o)) => (format!("Apply({})", o.name_any()), Some(o)),
        Ok(Event::Delete(o)) => (format!("Delete({})", o.name_any()), Some(o)),
        Err(watcher::Error::WatchError(status)) => (format!("Error({})", status.code), None),
        Err(e) => (format!("Failed({e})"), None),
    }
}

fn watch<K>(api: Api<K>, config: watcher::Config) -> Watched<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher::watcher(api, config));
        while let Some(item) = stream.next().await {
            if tx.send(describe(item)).await.is_err() {
                return;
            }
        }
    });
    Watched { rx, task }
}

impl<K> Watched<K> {
    /// The next `n` items, each within [`WAIT`].
    async fn next(&mut self, n: usize) -> Vec<(String, Option<K>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let seen: Vec<&String> = out.iter().map(|(d, _)| d).collect();
            let item = timeout(WAIT, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no watcher item after {seen:?}"))
                .expect("watcher task runs");
            out.push(item);
        }
        out
    }

    async fn next_names(&mut self, n: usize) -> Vec<String> {
        self.next(n).await.into_iter().map(|(d, _)| d).collect()
    }

    /// Nothing more arrives within `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some((item, _))) = timeout(quiet, self.rx.recv()).await {
            panic!("unexpected watcher item {item}");
        }
    }
}

fn rv_of<K: kube::Resource>(object: &K) -> u64 {
    object
        .resource_version()
        .and_then(|rv| rv.parse().ok())
        .expect("decimal resourceVersion")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_selectors_returns_just_the_matching_pods() {
    let server = FakeApiServer::start().await;
    server.create(pod("default", "a", json!({ "app": "web" })));
    server.create(pod("default", "b", json!({ "app": "db" })));
    server.create(pod(
        "default",
        "c",
        json!({ "app": "web", "tier": "front" }),
    ));
    server.create(pod("other", "d", json!({ "app": "web" })));
    let (client, _dir) = client(&server).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());

    let names = |list: kube::api::ObjectList<Pod>| -> Vec<String> {
        list.items.iter().map(ResourceExt::name_any).collect()
    };
    let list = timeout(WAIT, pods.list(&ListParams::default().labels("app=web")))
        .await
        .expect("in time")
        .expect("list");
    assert_eq!(names(list.clone()), ["a", "c"]);
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(server.resource_version().as_str())
    );
    let list = pods
        .list(&ListParams::default().labels("app in (web,db),!tier"))
        .await
        .expect("list");
    assert_eq!(names(list), ["a", "b"]);
    let list = pods
        .list(&ListParams::default().labels("tier notin (back),app!=db"))
        .await
        .expect("list");
    assert_eq!(names(list), ["a", "c"]);
    let all: Api<Pod> = Api::all(client.clone());
    let list = all
        .list(&ListParams::default().labels("app==web"))
        .await
        .expect("list");
    assert_eq!(names(list), ["a", "c", "d"]);
    let list = all
        .list(&ListParams::default().fields("metadata.namespace=other"))
        .await
        .expect("list");
    assert_eq!(names(list), ["d"]);
    let list = pods
        .list(&ListParams::default().fields("metadata.name!=a"))
        .await
        .expect("list");
    assert_eq!(names(list), ["b", "c"]);

    // Pages follow the continue token.
    let first = pods
        .list(&ListParams::default().limit(2))
        .await
        .expect("list");
    assert_eq!(names(first.clone()), ["a", "b"]);
    let token = first.metadata.continue_.clone().expect("a continue token");
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("list");
    assert_eq!(names(rest.clone()), ["c"]);
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));

    // Get by name; a missing one is a 404 Status.
    let a = pods.get("a").await.expect("get a");
    assert_eq!(a.labels().get("app").map(String::as_str), Some("web"));
    assert!(a.uid().is_some() && a.creation_timestamp().is_some());
    assert_eq!(a.metadata.generation, Some(1));
    match pods.get("nope").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
        }
        other => panic!("expected a 404 Status, got {other:?}"),
    }
    // A bad selector is a 400 Status.
    match pods
        .list(&ListParams::default().labels("app in (web"))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 400),
        other => panic!("expected a 400 Status, got {other:?}"),
    }

    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_list())
        .collect();
    assert_eq!(lists[0].path, "/api/v1/namespaces/default/pods");
    assert_eq!(lists[0].param("labelSelector").as_deref(), Some("app=web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_create_update_delete_in_order() {
    let server = FakeApiServer::start().await;
    let (client, _dir) = client(&server).await;
    let mut w = watch(
        Api::<Pod>::default_namespaced(client),
        watcher::Config::default(),
    );
    assert_eq!(w.next_names(2).await, ["Init", "InitDone"]);
    assert!(server.wait_for_watchers(1, WAIT).await, "the watch opens");

    let created = server.create(pod("default", "p", json!({ "app": "web" })));
    // A pod in another namespace is not seen.
    server.create(pod("other", "q", json!({})));
    let mut updated = created.clone();
    updated["metadata"]["labels"]["app"] = json!("db");
    server.update(updated);
    server
        .delete("v1", "Pod", Some("default"), "p")
        .expect("p existed");

    let items = w.next(3).await;
    let names: Vec<&str> = items.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(names, ["Apply(p)", "Apply(p)", "Delete(p)"]);
    let objects: Vec<&Pod> = items.iter().filter_map(|(_, o)| o.as_ref()).collect();
    assert_eq!(objects[0].labels()["app"], "web");
    assert_eq!(objects[1].labels()["app"], "db");
    assert!(rv_of(objects[0]) < rv_of(objects[1]) && rv_of(objects[1]) < rv_of(objects[2]));
    assert_eq!(objects[0].uid(), objects[2].uid());
    assert_eq!(
        objects[2].resource_version(),
        Some(server.resource_version()),
        "DELETED carries the new resourceVersion"
    );
    w.assert_quiet(Duration::from_millis(300)).await;

    // The watch sent timeoutSeconds and asked for bookmarks, as kube does.
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert_eq!(watches.len(), 1);
    assert_eq!(
        watches[0].param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(watches[0].param("timeoutSeconds").as_deref(), Some("290"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_makes_the_watcher_relist_once() {
    let server = FakeApiServer::start().await;
    server.create(pod("default", "a", json!({})));
    let (client, _dir) = client(&server).await;
    let pods = "/api/v1/namespaces/default/pods";
    let mut w = watch(
        Api::<Pod>::default_namespaced(client.clone()),
        watcher::Config::default(),
    );
    assert_eq!(w.next_names(3).await, ["Init", "InitApply(a)", "InitDone"]);
    assert!(server.wait_for_watchers(1, WAIT).await, "the watch opens");
    server.create(pod("default", "b", json!({})));
    assert_eq!(w.next_names(1).await, ["Apply(b)"]);
    let old_rv = server.resource_version();

    server.expire_watches();
    // kube's watcher: the 410 surfaces as an error, then a full relist
    // re-delivers every object as InitApply (not Apply), between Init and
    // InitDone; nothing else for the unchanged objects.
    assert_eq!(
        w.next_names(5).await,
        [
            "Error(410)",
            "Init",
            "InitApply(a)",
            "InitApply(b)",
            "InitDone"
        ]
    );
    server.create(pod("default", "c", json!({})));
    assert_eq!(w.next_names(1).await, ["Apply(c)"]);
    w.assert_quiet(Duration::from_millis(300)).await;

    let requests = server.requests();
    let lists: Vec<_> = requests
        .iter()
        .filter(|r| r.is_list() && r.path == pods)
        .collect();
    let watches: Vec<_> = requests
        .iter()
        .filter(|r| r.is_watch() && r.path == pods)
        .collect();
    assert_eq!(lists.len(), 2, "relisted once: {requests:#?}");
    assert_eq!(watches.len(), 2, "watched twice: {requests:#?}");
    assert_eq!(
        watches[1].param("resourceVersion").as_deref(),
        Some(old_rv.as_str())
    );

    // A plain watch from the old resourceVersion now gets a single 410
    // ERROR event, and the stream ends.
    let api: Api<Pod> = Api::default_namespaced(client);
    let stream = api
        .watch(&WatchParams::default(), "2")
        .await
        .expect("watch starts");
    let events: Vec<_> = timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    match events.as_slice() {
        [Ok(WatchEvent::Error(status))] => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.starts_with("too old resource version"));
        }
        other => panic!("expected one 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_do_not_surface_but_move_the_resume_point() {
    let server = FakeApiServer::start().await;
    let (client, _dir) = client(&server).await;
    let api: Api<Pod> = Api::default_namespaced(client.clone());
    let mut w = watch(api.clone(), watcher::Config::default());
    assert_eq!(w.next_names(2).await, ["Init", "InitDone"]);
    assert!(server.wait_for_watchers(1, WAIT).await, "the watch opens");

    // Changes the watch does not select, then a bookmark: nothing surfaces,
    // but a restarted watch resumes from the bookmark's resourceVersion.
    server.create(pod("other", "x", json!({})));
    server.create(pod("other", "y", json!({})));
    server.bookmark();
    let bookmarked = server.resource_version();
    w.assert_quiet(Duration::from_millis(300)).await;
    server.close_watches();
    assert!(
        tests::eventually(WAIT, || server
            .requests()
            .iter()
            .filter(|r| r.is_watch())
            .count()
            == 2)
        .await,
        "the watcher re-watches"
    );
    let watches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_watch())
        .collect();
    assert_eq!(
        watches[1].param("resourceVersion").as_deref(),
        Some(bookmarked.as_str())
    );
    assert!(server.wait_for_watchers(1, WAIT).await, "the watch reopens");
    server.create(pod("default", "p", json!({})));
    assert_eq!(w.next_names(1).await, ["Apply(p)"]);
    w.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(
        server.requests().iter().filter(|r| r.is_list()).count(),
        1,
        "a closed watch resumes without a relist"
    );

    // On the wire: a BOOKMARK event, only for a watch that allowed them.
    let rv = server.resource_version();
    let with = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch");
    let without = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .expect("watch");
    let mut with = std::pin::pin!(with);
    let mut without = std::pin::pin!(without);
    assert!(server.wait_for_watchers(3, WAIT).await);
    server.bookmark();
    server.create(pod("default", "z", json!({})));
    match timeout(WAIT, with.next()).await.expect("in time") {
        Some(Ok(WatchEvent::Bookmark(b))) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    match timeout(WAIT, without.next()).await.expect("in time") {
        Some(Ok(WatchEvent::Added(p))) => assert_eq!(p.name_any(), "z"),
        other => panic!("expected ADDED z, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_resolves_a_registered_custom_kind_for_dynamic_objects() {
    let server = FakeApiServer::start().await;
    server.register("example.dev", "v1alpha1", "Widget", "widgets", true);
    server.register("example.dev", "v1alpha1", "Gadget", "gadgets", false);
    server.create(json!({
        "apiVersion": "example.dev/v1alpha1", "kind": "Widget",
        "metadata": { "name": "w1", "labels": { "size": "big" } },
        "spec": { "colour": "red" },
    }));
    server.create(json!({
        "apiVersion": "example.dev/v1alpha1", "kind": "Gadget",
        "metadata": { "name": "g1" },
    }));
    let (client, _dir) = client(&server).await;
    let gvk = GroupVersionKind::gvk("example.dev", "v1alpha1", "Widget");

    let discovery = timeout(WAIT, Discovery::new(client.clone()).run())
        .await
        .expect("in time")
        .expect("discovery runs");
    let (ar, caps) = discovery.resolve_gvk(&gvk).expect("Widget resolves");
    assert_eq!(
        (ar.plural.as_str(), caps.scope.clone()),
        ("widgets", Scope::Namespaced)
    );
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .is_some());
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Pod"))
        .is_some());
    let aggregated = Discovery::new(client.clone())
        .run_aggregated()
        .await
        .expect("aggregated discovery runs");
    let (_, gadget) = aggregated
        .resolve_gvk(&GroupVersionKind::gvk("example.dev", "v1alpha1", "Gadget"))
        .expect("Gadget resolves");
    assert_eq!(gadget.scope, Scope::Cluster);
    let (pinned, _) = kube::discovery::pinned_kind(&client, &gvk)
        .await
        .expect("pinned kind");
    assert_eq!(pinned, ar);

    let widgets: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
    let list = widgets
        .list(&ListParams::default().labels("size=big"))
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);
    let w1 = widgets.get("w1").await.expect("get");
    assert_eq!(w1.data["spec"]["colour"], "red");
    assert_eq!(w1.types.as_ref().map(|t| t.kind.as_str()), Some("Widget"));

    let mut w = watch(widgets, watcher::Config::default().labels("size"));
    assert_eq!(w.next_names(3).await, ["Init", "InitApply(w1)", "InitDone"]);
    assert!(server.wait_for_watchers(1, WAIT).await);
    server.create(json!({
        "apiVersion": "example.dev/v1alpha1", "kind": "Widget",
        "metadata": { "name": "w2", "labels": { "size": "small" } },
    }));
    assert_eq!(w.next_names(1).await, ["Apply(w2)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_failures_timeouts_and_shutdown() {
    let server = FakeApiServer::start().await;
    let (client, _dir) = client(&server).await;
    let api: Api<Pod> = Api::default_namespaced(client);

    server.fail_next(1, 500);
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (500, "InternalError")
            );
        }
        other => panic!("expected a 500 Status, got {other:?}"),
    }
    api.list(&ListParams::default())
        .await
        .expect("the next list succeeds");

    // timeoutSeconds ends a watch cleanly.
    let started = std::time::Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .expect("watch");
    let events: Vec<_> = timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends by itself");
    assert!(events.is_empty(), "{events:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Shutdown ends every open watch.
    let stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch");
    assert!(server.wait_for_watchers(1, WAIT).await);
    timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
    let _ = timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_gets_initial_events_then_changes() {
    let server = FakeApiServer::start().await;
    server.create(pod("default", "a", json!({})));
    let (client, _dir) = client(&server).await;
    let mut w = watch(
        Api::<Pod>::default_namespaced(client),
        watcher::Config::default().streaming_lists(),
    );
    // The initial objects come as ADDED on the watch itself, closed by a
    // BOOKMARK annotated `k8s.io/initial-events-end`: no list request.
    assert_eq!(w.next_names(3).await, ["Init", "InitApply(a)", "InitDone"]);
    server.create(pod("default", "b", json!({})));
    assert_eq!(w.next_names(1).await, ["Apply(b)"]);
    let requests = server.requests();
    assert!(!requests.iter().any(|r| r.is_list()), "{requests:#?}");
    assert_eq!(
        requests[0].param("sendInitialEvents").as_deref(),
        Some("true")
    );
}
