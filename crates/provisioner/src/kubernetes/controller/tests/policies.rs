//! EventPolicies through the controller, against the fake API: read into
//! the contract's OIDC policies, their status, and the broker's.

use super::*;

const FEATURES_PATH: &str = "/api/v1/namespaces/knative-eventing/configmaps/config-features";
const POLICIES: &str = "/apis/eventing.knative.dev/v1alpha1/namespaces/shop/eventpolicies";

fn event_policy(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "EventPolicy",
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "generation": 2,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}

#[tokio::test]
async fn event_policies_reach_the_contract_and_get_their_status() {
    let state = Shared::default();
    seed(&state);
    seed_broker(&state);
    put(
        &state,
        FEATURES_PATH,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "config-features", "namespace": "knative-eventing"},
               "data": {"authentication-oidc": "enabled"}}),
    );
    put(
        &state,
        &format!("{POLICIES}/billing"),
        event_policy(
            "billing",
            json!({"to": [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}}],
                   "from": [{"sub": "system:serviceaccount:billing:*"},
                            {"ref": {"apiVersion": "v1", "kind": "ServiceAccount", "name": "shipper"}}],
                   "filters": [{"prefix": {"type": "shop."}}]}),
        ),
    );
    put(
        &state,
        &format!("{POLICIES}/dangling"),
        event_policy(
            "dangling",
            json!({"to": [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "gone"}}],
                   "from": [{"sub": "alice"}]}),
        ),
    );
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }

    // The contract: OIDC on, the policy applied to the broker's ingress.
    let contract = written_contract(&state);
    let oidc = contract.features.oidc.as_ref().expect("OIDC enabled");
    let applied = &oidc.policies["/brokers/shop/default"];
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(applied[0].name, "shop/billing");
    assert_eq!(
        applied[0].subjects,
        [
            "system:serviceaccount:billing:*",
            "system:serviceaccount:shop:shipper"
        ]
    );
    assert_eq!(applied[0].filters.len(), 1);

    // The policies' status.
    let billing = object(&state, &format!("{POLICIES}/billing"));
    assert_eq!(
        ready(&billing),
        ("True".into(), String::new()),
        "{:#}",
        billing["status"]
    );
    assert_eq!(condition(&billing, "SubjectsResolved")["status"], "True");
    assert_eq!(
        billing["status"]["from"],
        json!([
            "system:serviceaccount:billing:*",
            "system:serviceaccount:shop:shipper"
        ])
    );
    let dangling = object(&state, &format!("{POLICIES}/dangling"));
    assert_eq!(
        ready(&dangling),
        ("False".into(), "TargetNotFound".into()),
        "{:#}",
        dangling["status"]
    );
    assert!(condition(&dangling, "Ready")["message"]
        .as_str()
        .is_some_and(|m| m.contains("spec.to[0]")));

    // The broker lists the policy applied to it, with its audience.
    let broker = object(&state, BROKER_PATH);
    assert_eq!(
        broker["status"]["policies"],
        json!([{"apiVersion": "eventing.knative.dev/v1alpha1", "name": "billing"}]),
        "{:#}",
        broker["status"]
    );
    assert_eq!(
        broker["status"]["address"]["audience"],
        "eventing.knative.dev/broker/shop/default"
    );
    assert_eq!(condition(&broker, "EventPoliciesReady")["reason"], "Ready");
}
