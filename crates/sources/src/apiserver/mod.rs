//! ApiServerSource: changes of Kubernetes objects as CloudEvents.
//!
//! One watch (kube-runtime's watcher: list, then watch from the list's
//! `resourceVersion`, relisting after a `410 Gone`) runs per watched
//! resource and namespace (or one cluster-wide watch when the source
//! selects namespaces by label or watches all of them). Each watch feeds a
//! [`tracker::Tracker`], so a relist announces exactly what changed in the
//! gap and nothing twice. Objects whose controller is not the source's
//! `owner` are skipped, as Knative's adapter does. Events are made as
//! Knative makes them ([`events`]) and handed to the source's bounded
//! queue; when it is full the watch waits (the API server holds the
//! changes, and a watch that expires meanwhile relists), so nothing is
//! dropped and memory stays bounded.
//!
//! Outside a cluster the adapter reaches any API server through a
//! kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else in-cluster).

pub mod events;
pub mod tracker;

pub use channel_core::sources::apiserver::{
    ApiServerSettings, ApiVersionKind as OwnerFilter, EventMode, Namespaces, WatchedResource,
};
use events::make_event;
use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::ResourceExt as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracker::Tracker;

/// Whether `object` passes the owner filter: its controller matches.
pub fn owned_as_wanted(owner: Option<&OwnerFilter>, object: &DynamicObject) -> bool {
    let Some(owner) = owner else { return true };
    let Some(controller) = object
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
    else {
        return false;
    };
    owner
        .api_version
        .as_deref()
        .is_none_or(|v| v.is_empty() || v == controller.api_version)
        && owner
            .kind
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == controller.kind)
}

/// The API resource of `api_version` `kind`, from the server's discovery.
async fn discover(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> Result<(ApiResource, bool), String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("{api_version} {kind} is not served by the API server: {e}"))?;
    Ok((ar, caps.scope == kube::discovery::Scope::Namespaced))
}

/// Follow the namespaces matching `selector` into `selected`.
fn follow_namespaces(
    client: kube::Client,
    selector: String,
    selected: Arc<RwLock<BTreeSet<String>>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
        let stream = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listing = BTreeSet::new();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = stream.next() => event,
            };
            let set = |f: &dyn Fn(&mut BTreeSet<String>)| {
                if let Ok(mut s) = selected.write() {
                    f(&mut s)
                }
            };
            match event {
                None => return,
                Some(Err(e)) => tracing::warn!(error = %e, "namespace watch failed; retrying"),
                Some(Ok(watcher::Event::Init)) => listing.clear(),
                Some(Ok(watcher::Event::InitApply(ns))) => {
                    listing.insert(ns.name_any());
                }
                Some(Ok(watcher::Event::InitDone)) => set(&|s| *s = listing.clone()),
                Some(Ok(watcher::Event::Apply(ns))) => set(&|s| {
                    s.insert(ns.name_any());
                }),
                Some(Ok(watcher::Event::Delete(ns))) => set(&|s| {
                    s.remove(&ns.name_any());
                }),
            }
        }
    });
}

/// Run the watches of one source until `stop`, sending its events into
/// `events`. `source` is the API server's URL (the events' `source`).
/// Returns an error only when a watched kind is not served at all.
pub async fn run(
    client: kube::Client,
    source: String,
    settings: ApiServerSettings,
    extensions: BTreeMap<String, String>,
    events: mpsc::Sender<crate::queue::Queued>,
    stop: CancellationToken,
) -> Result<(), String> {
    let selected = Arc::new(RwLock::new(BTreeSet::new()));
    if let Namespaces::Selector(selector) = &settings.namespaces {
        follow_namespaces(
            client.clone(),
            selector.clone(),
            selected.clone(),
            stop.clone(),
        );
    }
    let mut watches = Vec::new();
    for resource in &settings.resources {
        let (ar, namespaced) = discover(&client, &resource.api_version, &resource.kind).await?;
        let apis: Vec<Api<DynamicObject>> = match (&settings.namespaces, namespaced) {
            (Namespaces::Only(list), true) => list
                .iter()
                .map(|ns| Api::namespaced_with(client.clone(), ns, &ar))
                .collect(),
            _ => vec![Api::all_with(client.clone(), &ar)],
        };
        for api in apis {
            let mut config = watcher::Config::default();
            if let Some(selector) = resource.label_selector.as_deref().filter(|s| !s.is_empty()) {
                config = config.labels(selector);
            }
            let by_selector = matches!(settings.namespaces, Namespaces::Selector(_)) && namespaced;
            watches.push(watch_one(
                api,
                config,
                WatchContext {
                    source: source.clone(),
                    mode: settings.mode,
                    owner: settings.owner.clone(),
                    selected: by_selector.then(|| selected.clone()),
                    extensions: extensions.clone(),
                    events: events.clone(),
                    stop: stop.clone(),
                    what: format!("{} {}", resource.api_version, resource.kind),
                },
            ));
        }
    }
    futures_util::future::join_all(watches).await;
    Ok(())
}

struct WatchContext {
    source: String,
    mode: EventMode,
    owner: Option<OwnerFilter>,
    /// The selected namespaces, when they are selected by label.
    selected: Option<Arc<RwLock<BTreeSet<String>>>>,
    /// `ceOverrides.extensions`.
    extensions: BTreeMap<String, String>,
    events: mpsc::Sender<crate::queue::Queued>,
    stop: CancellationToken,
    what: String,
}

impl WatchContext {
    fn wanted(&self, object: &DynamicObject) -> bool {
        owned_as_wanted(self.owner.as_ref(), object)
            && self.selected.as_ref().is_none_or(|s| {
                s.read()
                    .map(|s| s.contains(object.namespace().as_deref().unwrap_or_default()))
                    .unwrap_or(false)
            })
    }
}

/// One watch: its events through the tracker into the queue.
async fn watch_one(api: Api<DynamicObject>, config: watcher::Config, cx: WatchContext) {
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut tracker = Tracker::new(cx.mode);
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            _ = cx.stop.cancelled() => return,
            event = stream.next() => event,
        };
        let event = match event {
            None => return,
            Some(Err(e)) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(resource = %cx.what, error = %e, failures, "watch failed; retrying with backoff");
                }
                continue;
            }
            Some(Ok(event)) => {
                failures = 0;
                event
            }
        };
        // Objects the source does not want are not tracked at all.
        let as_value = |o: DynamicObject| -> Option<serde_json::Value> {
            cx.wanted(&o)
                .then(|| serde_json::to_value(&o).ok())
                .flatten()
        };
        let event = match event {
            watcher::Event::Init => Some(watcher::Event::Init),
            watcher::Event::InitDone => Some(watcher::Event::InitDone),
            watcher::Event::InitApply(o) => as_value(o).map(watcher::Event::InitApply),
            watcher::Event::Apply(o) => as_value(o).map(watcher::Event::Apply),
            watcher::Event::Delete(o) => as_value(o).map(watcher::Event::Delete),
        };
        let Some(event) = event else { continue };
        for (change, object) in tracker.apply(event) {
            let mut event = make_event(change, cx.mode, &cx.source, &object);
            for (name, value) in &cx.extensions {
                event = event.with_extension(name, value.as_str());
            }
            tokio::select! {
                _ = cx.stop.cancelled() => return,
                sent = cx.events.send(event.into()) => if sent.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(owner: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "ownerReferences": owner}}))
        .expect("object")
    }

    #[test]
    fn the_owner_filter_wants_the_controller_named() {
        let rs = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]);
        let filter = |api_version: Option<&str>, kind: Option<&str>| OwnerFilter {
            api_version: api_version.map(str::to_owned),
            kind: kind.map(str::to_owned),
        };
        assert!(owned_as_wanted(None, &object(json!([]))));
        assert!(owned_as_wanted(
            Some(&filter(Some("apps/v1"), Some("ReplicaSet"))),
            &object(rs.clone())
        ));
        assert!(owned_as_wanted(
            Some(&filter(None, Some("ReplicaSet"))),
            &object(rs.clone())
        ));
        assert!(!owned_as_wanted(
            Some(&filter(None, Some("Job"))),
            &object(rs.clone())
        ));
        // Owned, but not as controller: filtered out, as Knative does.
        let plain =
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u"}]);
        assert!(!owned_as_wanted(
            Some(&filter(None, Some("ReplicaSet"))),
            &object(plain)
        ));
        assert!(!owned_as_wanted(
            Some(&filter(None, None)),
            &object(json!([]))
        ));
    }
}
