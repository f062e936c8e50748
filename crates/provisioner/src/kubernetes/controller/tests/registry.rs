//! EventTypes through the controller, against the fake API: status of
//! declared ones, auto-creation owned by the broker or channel and bounded.

use super::*;
use channel_core::features::auto_event_type_name;

const FEATURES_PATH: &str = "/api/v1/namespaces/knative-eventing/configmaps/config-features";
const EVENTTYPES: &str = "/apis/eventing.knative.dev/v1beta2/namespaces/shop/eventtypes";

fn event_type(api_version: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": "EventType",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "generation": 1},
           "spec": spec})
}

/// One pair the dispatcher observed on `kind` `name`, named as it names it.
fn observed(kind: &str, name: &str, ty: &str, source: &str) -> Value {
    let api_version = if kind == "Broker" {
        "eventing.knative.dev/v1"
    } else {
        "messaging.knative.dev/v1"
    };
    json!({"name": auto_event_type_name(kind, name, ty, source), "namespace": "shop",
           "type": ty, "source": source,
           "reference": {"apiVersion": api_version, "kind": kind, "namespace": "shop", "name": name}})
}

fn created(state: &Shared) -> Vec<Value> {
    requests(state, "POST", EVENTTYPES)
}

#[tokio::test]
async fn event_types_get_their_status_and_are_auto_created_owned_and_bounded() {
    let state = Shared::default();
    seed(&state);
    seed_broker(&state);
    put(
        &state,
        &format!("{EVENTTYPES}/order-created"),
        event_type(
            "eventing.knative.dev/v1beta2",
            "order-created",
            json!({"type": "shop.order.created", "source": "/shop", "schema": "https://schemas.example/order.json",
                   "reference": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}}),
        ),
    );
    // Knative's v1beta1 names the broker by name (the API server hands it
    // over as the stored v1beta2, field kept); this one does not exist.
    put(
        &state,
        &format!("{EVENTTYPES}/legacy"),
        event_type(
            "eventing.knative.dev/v1beta2",
            "legacy",
            json!({"type": "shop.legacy", "source": "/old", "broker": "gone"}),
        ),
    );
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin.clone()));

    // Off (no config-features): statuses, nothing created.
    put(
        &state,
        OBSERVED_PATH,
        json!({"items": [observed("Broker", "default", "shop.x", "/a")]}),
    );
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    assert!(created(&state).is_empty(), "auto-creation is opt-in");
    assert!(written_contract(&state).features.is_default());
    let declared = object(&state, &format!("{EVENTTYPES}/order-created"));
    assert_eq!(
        ready(&declared),
        ("True".into(), String::new()),
        "{:#}",
        declared["status"]
    );
    assert_eq!(condition(&declared, "ReferenceExists")["status"], "True");
    let legacy = object(&state, &format!("{EVENTTYPES}/legacy"));
    assert_eq!(
        ready(&legacy),
        ("False".into(), "ReferenceNotFound".into()),
        "{:#}",
        legacy["status"]
    );
    assert!(condition(&legacy, "Ready")["message"]
        .as_str()
        .is_some_and(|m| m.contains("spec.reference") && m.contains("gone")));

    // On, at most two per reference.
    put(
        &state,
        FEATURES_PATH,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "config-features", "namespace": "knative-eventing"},
               "data": {"eventtype-auto-create": "enabled", "eventtype-auto-create-max-per-reference": "2"}}),
    );
    put(
        &state,
        OBSERVED_PATH,
        json!({"items": [
            observed("Broker", "default", "shop.a", "/a"),
            observed("Broker", "default", "shop.b", "/b"),
            observed("Broker", "default", "shop.c", "/c"),
            // Declared already: not created again.
            observed("Broker", "default", "shop.order.created", "/shop"),
            observed("Channel", "orders", "shop.order.created", "/shop"),
            // Nothing this project serves.
            observed("Broker", "elsewhere", "x", "/x"),
        ]}),
    );
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let contract = written_contract(&state);
    assert_eq!(
        contract
            .features
            .eventtype_auto_create
            .map(|a| a.max_per_reference),
        Some(2),
        "the dispatchers are told"
    );
    let posts = created(&state);
    let mut by_owner: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &posts {
        assert_eq!(
            p["metadata"]["labels"]["eventing.knative.dev/auto-created"],
            "true"
        );
        assert_eq!(p["apiVersion"], "eventing.knative.dev/v1beta2");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(p["spec"]["reference"]["kind"], owner["kind"]);
        assert_eq!(p["spec"]["reference"]["name"], owner["name"]);
        by_owner
            .entry(owner["uid"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .push(p["spec"]["type"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        by_owner.get("default-broker-uid").map(Vec::len),
        Some(2),
        "bounded per reference: {by_owner:?}"
    );
    assert!(!by_owner["default-broker-uid"].contains(&"shop.order.created".to_owned()));
    assert_eq!(
        by_owner.get("orders-uid"),
        Some(&vec!["shop.order.created".to_owned()]),
        "a channel's pair is owned by the channel"
    );
    assert_eq!(by_owner.len(), 2, "{by_owner:?}");
    let channel_et = object(
        &state,
        &format!(
            "{EVENTTYPES}/{}",
            auto_event_type_name("Channel", "orders", "shop.order.created", "/shop")
        ),
    );
    assert_eq!(
        channel_et["metadata"]["ownerReferences"][0]["apiVersion"],
        "messaging.knative.dev/v1"
    );

    // Next rounds see them: they get a status and the bound holds, also
    // for a controller that starts afresh.
    for mut c in [c, controller(client(state.clone()), Some(admin))] {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    assert_eq!(created(&state).len(), posts.len(), "nothing more created");
    assert_eq!(
        ready(&channel_et_now(&state)),
        ("True".into(), String::new())
    );
}

fn channel_et_now(state: &Shared) -> Value {
    object(
        state,
        &format!(
            "{EVENTTYPES}/{}",
            auto_event_type_name("Channel", "orders", "shop.order.created", "/shop")
        ),
    )
}
