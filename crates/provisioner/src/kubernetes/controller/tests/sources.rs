//! Event sources through the controller, against the fake API.

use super::*;

const PING_PATH: &str = "/apis/sources.knative.dev/v1/namespaces/shop/pingsources/tick";
const CRON_PATH: &str =
    "/apis/sources.eventing.knative.dev/v1alpha1/namespaces/shop/cronjobsources/legacy";
const CONTAINER_PATH: &str =
    "/apis/sources.knative.dev/v1/namespaces/shop/containersources/heartbeats";
const DEPLOYMENT_PATH: &str = "/apis/apps/v1/namespaces/shop/deployments/heartbeats-deployment";
const BINDING_PATH: &str = "/apis/sources.knative.dev/v1/namespaces/shop/sinkbindings/bind";
const WEB_PATH: &str = "/apis/apps/v1/namespaces/shop/deployments/web";
const SOURCES_MAP_PATH: &str =
    "/api/v1/namespaces/knative-channels/configmaps/source-adapter-contract";

fn source(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "generation": 1},
           "spec": spec})
}

fn sources_contract(state: &Shared) -> channel_core::sources::SourcesContract {
    let map = object(state, SOURCES_MAP_PATH);
    channel_core::sources::SourcesContract::from_json(
        map["data"]["sources.json"]
            .as_str()
            .expect("the sources contract")
            .as_bytes(),
    )
    .expect("contract")
}

fn seed_apps_discovery(state: &Shared) {
    put(
        state,
        "/apis/apps/v1",
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
               "resources": [{"name": "deployments", "singularName": "deployment", "namespaced": true,
                              "kind": "Deployment", "verbs": ["get", "list", "watch", "patch"]}]}),
    );
}

#[tokio::test]
async fn ping_sources_go_to_the_adapter_with_their_sinks_resolved() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        PING_PATH,
        source(
            "sources.knative.dev/v1",
            "PingSource",
            "tick",
            json!({"schedule": "*/5 * * * *", "data": "{}",
                   "sink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "display"}}}),
        ),
    );
    // The seeds' form, into a channel.
    put(
        &state,
        CRON_PATH,
        source(
            "sources.eventing.knative.dev/v1alpha1",
            "CronJobSource",
            "legacy",
            json!({"schedule": "@hourly", "data": "{}",
                   "sink": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "orders"}}),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    let contract = sources_contract(&state);
    let sinks: Vec<(&str, &str)> = contract
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.sink.as_str()))
        .collect();
    assert_eq!(
        sinks,
        [
            ("legacy", "http://orders-kn-channel.shop.svc.cluster.local/"),
            ("tick", "http://display.shop.svc.cluster.local/"),
        ]
    );
    assert_eq!(contract.generation, 1);
    let tick = object(&state, PING_PATH);
    assert_eq!(
        tick["status"]["sinkUri"], "http://display.shop.svc.cluster.local/",
        "{:#}",
        tick["status"]
    );
    assert_eq!(condition(&tick, "SinkProvided")["status"], "True");
    assert_eq!(
        condition(&tick, "Deployed")["reason"],
        "AdapterUnknown",
        "no adapter configured in this test"
    );
    // The seeds' CronJobSource gets its status on its own group's path.
    let legacy = object(&state, CRON_PATH);
    assert_eq!(
        legacy["status"]["sinkUri"],
        "http://orders-kn-channel.shop.svc.cluster.local/"
    );
    // Unchanged sources: no new contract.
    let writes = writes_to(&state, SOURCES_MAP_PATH);
    c.reconcile(&snapshot(&state)).await;
    assert_eq!(writes_to(&state, SOURCES_MAP_PATH), writes);
}

#[tokio::test]
async fn a_source_whose_sink_cannot_be_resolved_says_so() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        PING_PATH,
        source(
            "sources.knative.dev/v1",
            "PingSource",
            "tick",
            json!({"schedule": "@hourly",
                   "sink": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "gone"}}}),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let tick = object(&state, PING_PATH);
    let sink = condition(&tick, "SinkProvided");
    assert_eq!(sink["status"], "False", "{:#}", tick["status"]);
    assert!(sink["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("spec.sink")));
    assert!(sources_contract(&state).sources.is_empty());
}

#[tokio::test]
async fn a_container_source_becomes_an_owned_deployment_with_its_sink() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        CONTAINER_PATH,
        source(
            "sources.knative.dev/v1",
            "ContainerSource",
            "heartbeats",
            json!({"template": {"spec": {"containers": [{"name": "hb", "image": "gcr.io/knative-releases/heartbeats",
                                                           "env": [{"name": "PERIOD", "value": "1"}]}]}},
                   "ceOverrides": {"extensions": {"team": "shop"}},
                   "sink": {"uri": "http://display.shop.svc.cluster.local/"}}),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let d = object(&state, DEPLOYMENT_PATH);
    assert_eq!(
        d["metadata"]["ownerReferences"][0]["kind"],
        "ContainerSource"
    );
    assert_eq!(d["metadata"]["ownerReferences"][0]["uid"], "heartbeats-uid");
    assert_eq!(
        d["spec"]["selector"]["matchLabels"]["sources.knative.dev/containerSource"],
        "heartbeats"
    );
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert_eq!(
        env,
        json!([{"name": "PERIOD", "value": "1"},
               {"name": "K_CE_OVERRIDES", "value": "{\"extensions\":{\"team\":\"shop\"}}"},
               {"name": "K_SINK", "value": "http://display.shop.svc.cluster.local/"}])
    );
    assert!(
        sources_contract(&state).sources.is_empty(),
        "a Deployment here, not the adapter's"
    );
    let hb = object(&state, CONTAINER_PATH);
    assert_eq!(
        condition(&hb, "Deployed")["status"],
        "Unknown",
        "{:#}",
        hb["status"]
    );
    assert_eq!(ready(&hb).0, "Unknown");
    // The Deployment becomes available.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut d = s.objects[DEPLOYMENT_PATH].clone();
        d["status"] = json!({"availableReplicas": 1});
        s.put(DEPLOYMENT_PATH, d);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let hb = object(&state, CONTAINER_PATH);
    assert_eq!(
        ready(&hb),
        ("True".into(), String::new()),
        "{:#}",
        hb["status"]
    );
    assert_eq!(
        hb["status"]["sinkUri"],
        "http://display.shop.svc.cluster.local/"
    );
    // Applied once: an unchanged source writes no Deployment again.
    assert_eq!(requests(&state, "PATCH", DEPLOYMENT_PATH).len(), 1);
}

#[tokio::test]
async fn a_sink_binding_sets_the_environment_of_its_subject_and_takes_it_back() {
    let state = Shared::default();
    seed(&state);
    seed_apps_discovery(&state);
    put(
        &state,
        WEB_PATH,
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop", "uid": "web-uid"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}}}),
    );
    put(
        &state,
        BINDING_PATH,
        source(
            "sources.knative.dev/v1",
            "SinkBinding",
            "bind",
            json!({"subject": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                   "sink": {"uri": "http://display.shop.svc.cluster.local/"}}),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let patches = requests(&state, "PATCH", WEB_PATH);
    assert_eq!(patches.len(), 1, "one apply of the binding's fields");
    assert_eq!(
        patches[0]["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "env": [{"name": "K_SINK", "value": "http://display.shop.svc.cluster.local/"}]}]),
        "only the containers' env, nothing else of the subject"
    );
    let binding = object(&state, BINDING_PATH);
    assert_eq!(
        binding["metadata"]["finalizers"],
        json!([SINK_BINDING_FINALIZER])
    );
    assert_eq!(
        condition(&binding, "SinkBindingAvailable")["status"],
        "True",
        "{:#}",
        binding["status"]
    );
    assert_eq!(ready(&binding).0, "True");

    // Deleted: the environment comes out, then the finalizer.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut b = s.objects[BINDING_PATH].clone();
        b["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(BINDING_PATH, b);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let patches = requests(&state, "PATCH", WEB_PATH);
    assert_eq!(
        patches
            .last()
            .map(|p| p["spec"]["template"]["spec"]["containers"].clone()),
        Some(json!([{"name": "app", "env": []}])),
        "the binding's manager applies no env: its fields are removed"
    );
    assert!(object(&state, BINDING_PATH).is_null(), "finalizer removed");
}

#[tokio::test]
async fn an_api_server_source_naming_a_missing_service_account_is_not_run() {
    let state = Shared::default();
    seed(&state);
    let path = "/apis/sources.knative.dev/v1/namespaces/shop/apiserversources/events";
    put(
        &state,
        path,
        source(
            "sources.knative.dev/v1",
            "ApiServerSource",
            "events",
            json!({"serviceAccountName": "events-sa", "mode": "Resource",
                   "resources": [{"apiVersion": "v1", "kind": "Event"}],
                   "sink": {"uri": "http://display.shop.svc.cluster.local/"}}),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let events = object(&state, path);
    let deployed = condition(&events, "Deployed");
    assert_eq!(deployed["status"], "False", "{:#}", events["status"]);
    assert_eq!(deployed["reason"], "ServiceAccountNotFound");
    assert!(sources_contract(&state).sources.is_empty());
    // The account appears: the source runs.
    put(
        &state,
        "/api/v1/namespaces/shop/serviceaccounts/events-sa",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "events-sa", "namespace": "shop"}}),
    );
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(sources_contract(&state).sources.len(), 1);
}
