//! Sequences and Parallels through the controller, against the fake API.

use super::*;

const SEQUENCE_PATH: &str = "/apis/flows.knative.dev/v1/namespaces/shop/sequences/pipeline";
const PARALLEL_PATH: &str = "/apis/flows.knative.dev/v1/namespaces/shop/parallels/fanout";

/// `flows.knative.dev/v1` `kind` `name` in `shop`, as `kubectl apply`
/// leaves it.
fn flow(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "flows.knative.dev/v1", "kind": kind,
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "generation": 3,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}

/// A two-step Sequence: a Service, then a URI with its own delivery; the
/// reply goes to the channel `orders`.
fn seed_sequence(state: &Shared) {
    put(
        state,
        SEQUENCE_PATH,
        flow(
            "Sequence",
            "pipeline",
            json!({
                "steps": [
                    {"ref": {"apiVersion": "v1", "kind": "Service", "name": "first"}},
                    {"uri": "http://second.shop.svc.cluster.local/", "delivery": {"retry": 2}},
                ],
                "reply": {"ref": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "orders"}},
            }),
        ),
    );
}

fn channel<'a>(contract: &'a Contract, name: &str) -> &'a ChannelContract {
    contract
        .channels
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("channel {name} in {contract:#?}"))
}

fn host(channel: &str) -> String {
    format!("{channel}-kn-channel.shop.svc.cluster.local")
}

#[tokio::test]
async fn a_sequence_is_served_owned_and_reported() {
    let state = Shared::default();
    seed(&state);
    seed_sequence(&state);
    // A subscription replies into the Sequence.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut sub = s.objects[SUB_PATH].clone();
        sub["spec"]["reply"] = json!({"ref": {"apiVersion": "flows.knative.dev/v1", "kind": "Sequence", "name": "pipeline"}});
        s.put(SUB_PATH, sub);
    }
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }

    // One channel and one subscription per step, chained by replies.
    let contract = written_contract(&state);
    let step0 = channel(&contract, "pipeline-kn-sequence-0");
    let step1 = channel(&contract, "pipeline-kn-sequence-1");
    assert_eq!(step0.subscriptions.len(), 1);
    let first = &step0.subscriptions[0];
    assert_eq!(first.name, "pipeline-kn-sequence-0");
    assert_eq!(
        first.subscriber.as_ref().map(Url::as_str),
        Some("http://first.shop.svc.cluster.local/"),
        "a Service step, resolved by the controller"
    );
    assert_eq!(
        first.reply.as_deref().map(Url::host_str),
        Some(Some(host("pipeline-kn-sequence-1").as_str())),
        "step 0 replies into step 1's channel"
    );
    let second = &step1.subscriptions[0];
    assert_eq!(
        second.subscriber.as_ref().map(Url::as_str),
        Some("http://second.shop.svc.cluster.local/")
    );
    assert_eq!(second.delivery.retry, 2, "the step's own delivery");
    assert_eq!(
        second.reply.as_deref().map(Url::host_str),
        Some(Some(host("orders").as_str())),
        "the last step replies to spec.reply"
    );
    // A reference to the Sequence resolves to its first channel, without
    // asking the API.
    let audit = channel(&contract, "orders")
        .subscriptions
        .iter()
        .find(|s| s.name == "audit")
        .expect("audit");
    assert_eq!(
        audit.reply.as_deref().map(Url::host_str),
        Some(Some(host("pipeline-kn-sequence-0").as_str()))
    );
    assert!(
        requests(&state, "GET", "/apis/flows.knative.dev/v1").is_empty(),
        "no discovery for flows"
    );

    // The finalizer, and a Service per generated channel owned by the
    // Sequence.
    let sequence = object(&state, SEQUENCE_PATH);
    assert_eq!(sequence["metadata"]["finalizers"], json!([FLOW_FINALIZER]));
    for step in ["pipeline-kn-sequence-0", "pipeline-kn-sequence-1"] {
        let service = object(
            &state,
            &format!("/api/v1/namespaces/shop/services/{step}-kn-channel"),
        );
        assert_eq!(service["spec"]["type"], "ExternalName", "{step}");
        let owner = &service["metadata"]["ownerReferences"][0];
        assert_eq!(owner["apiVersion"], "flows.knative.dev/v1");
        assert_eq!(owner["kind"], "Sequence");
        assert_eq!(owner["uid"], "pipeline-uid");
        assert_eq!(
            service["metadata"]["labels"]["flows.knative.dev/sequence"],
            "pipeline"
        );
    }

    // Knative's status, through the status subresource.
    assert_eq!(
        ready(&sequence),
        ("True".into(), String::new()),
        "{:#}",
        sequence["status"]
    );
    let status = &sequence["status"];
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(
        status["address"]["url"],
        format!("http://{}", host("pipeline-kn-sequence-0"))
    );
    for type_ in ["ChannelsReady", "SubscriptionsReady", "Addressable"] {
        assert_eq!(condition(&sequence, type_)["status"], "True", "{type_}");
    }
    let channels: Vec<&str> = status["channelStatuses"]
        .as_array()
        .expect("channelStatuses")
        .iter()
        .map(|c| c["channel"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        channels,
        ["pipeline-kn-sequence-0", "pipeline-kn-sequence-1"]
    );
    assert_eq!(status["subscriptionStatuses"][1]["ready"]["status"], "True");
    assert!(!requests(&state, "PATCH", &format!("{SEQUENCE_PATH}/status")).is_empty());

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
async fn a_parallel_branch_that_cannot_be_resolved_is_reported_while_its_channels_stay() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        PARALLEL_PATH,
        flow(
            "Parallel",
            "fanout",
            json!({
                "branches": [
                    {"filter": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "even"}},
                     "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "evens"}}},
                    {"subscriber": {"uri": "http://all.shop.svc.cluster.local/"},
                     "reply": {"uri": "http://log.shop.svc.cluster.local/"}},
                ],
            }),
        ),
    );
    let admin = fake_dispatcher(state.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    let contract = written_contract(&state);
    let ingress = channel(&contract, "fanout-kn-parallel");
    let filters: Vec<(&str, Option<&str>, Option<&str>)> = ingress
        .subscriptions
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.subscriber.as_ref().map(Url::as_str),
                s.reply.as_deref().and_then(Url::host_str),
            )
        })
        .collect();
    let branch0 = host("fanout-kn-parallel-0");
    let branch1 = host("fanout-kn-parallel-1");
    assert_eq!(
        filters,
        [
            (
                "fanout-kn-parallel-filter-0",
                Some("http://even.shop.svc.cluster.local/"),
                Some(branch0.as_str())
            ),
            ("fanout-kn-parallel-filter-1", None, Some(branch1.as_str())),
        ],
        "a filter subscription per branch; none without a filter forwards every event"
    );
    let all = &channel(&contract, "fanout-kn-parallel-1").subscriptions[0];
    assert_eq!(
        all.reply.as_deref().map(Url::as_str),
        Some("http://log.shop.svc.cluster.local/")
    );

    // The Service `evens` is no Addressable the fake API knows... it is a
    // `v1` Service, so it resolves by name; make branch 0's subscriber an
    // Addressable that does not exist instead.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = s.objects[PARALLEL_PATH].clone();
        p["spec"]["branches"][0]["subscriber"] = json!({"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "evens"}});
        p["metadata"]["generation"] = json!(4);
        s.put(PARALLEL_PATH, p);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let contract = written_contract(&state);
    for name in [
        "fanout-kn-parallel",
        "fanout-kn-parallel-0",
        "fanout-kn-parallel-1",
    ] {
        channel(&contract, name);
    }
    assert!(
        channel(&contract, "fanout-kn-parallel-0")
            .subscriptions
            .is_empty(),
        "the unresolvable subscriber's subscription is not served"
    );
    let parallel = object(&state, PARALLEL_PATH);
    let subs = condition(&parallel, "SubscriptionsReady");
    assert_eq!(subs["status"], "False", "{:#}", parallel["status"]);
    assert_eq!(subs["reason"], "DestinationResolveFailed");
    let message = subs["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.branches[0].subscriber")
            && message.contains("serving.knative.dev/v1 Service"),
        "{message}"
    );
    assert_eq!(ready(&parallel).0, "False");
    let branch = &parallel["status"]["branchStatuses"][0];
    assert_eq!(
        branch["subscriberSubscriptionStatus"]["ready"]["status"],
        "False"
    );
    assert_eq!(
        branch["filterSubscriptionStatus"]["ready"]["status"],
        "True"
    );
    assert_eq!(
        parallel["status"]["address"]["url"],
        format!("http://{}", host("fanout-kn-parallel")),
        "still addressable"
    );
    assert_eq!(parallel["status"]["observedGeneration"], 4);
}

#[tokio::test]
async fn a_deleted_sequence_leaves_the_contract_then_loses_its_finalizer() {
    let state = Shared::default();
    seed(&state);
    seed_sequence(&state);
    let held = Held::default();
    let admin = fake_dispatcher_held(state.clone(), held.clone()).await;
    let mut c = controller(client(state.clone()), Some(admin));
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }
    let served = written_contract(&state);
    channel(&served, "pipeline-kn-sequence-0");

    // Deleted while the dispatcher still serves the old contract: out of
    // the contract, the finalizer kept.
    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(served.clone());
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = s.objects[SEQUENCE_PATH].clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(SEQUENCE_PATH, o);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(outcome.waiting, "the deletion waits for the dispatcher");
    let contract = written_contract(&state);
    assert!(
        contract
            .channels
            .iter()
            .all(|c| !c.name.starts_with("pipeline-kn-sequence-")),
        "{contract:#?}"
    );
    assert_eq!(
        object(&state, SEQUENCE_PATH)["metadata"]["finalizers"],
        json!([FLOW_FINALIZER])
    );

    // The dispatcher applies it: the finalizer goes.
    *held.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(!outcome.waiting);
    assert!(
        object(&state, SEQUENCE_PATH).is_null(),
        "finalizer removed, object gone"
    );
}

#[tokio::test]
async fn a_malformed_flow_is_reported_naming_the_field() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        SEQUENCE_PATH,
        flow("Sequence", "pipeline", json!({"steps": []})),
    );
    let mut c = controller(client(state.clone()), None);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let sequence = object(&state, SEQUENCE_PATH);
    assert_eq!(
        ready(&sequence),
        ("False".into(), "InvalidSpec".into()),
        "{:#}",
        sequence["status"]
    );
    let message = condition(&sequence, "Ready")["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("spec.steps"), "{message}");
}
