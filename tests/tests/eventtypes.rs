//! The EventType registry fed by traffic (Knative's `eventtype-auto-create`):
//! with the flag on in `config-features`, broker and channel ingress record
//! the `(type, source)` of every event stored, bounded per reference, and
//! serve them on the admin port's `GET /eventtypes`.

use http::StatusCode;
use std::time::Duration;
use tests::{event, Dispatcher};

const FEATURES: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata:\n  eventtype-auto-create: enabled\n  eventtype-auto-create-max-per-reference: \"3\"\n---\n";

const BROKER_AND_CHANNEL: &str = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default, namespace: shop}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: audit, namespace: shop}\n";

async fn observed(d: &Dispatcher) -> (StatusCode, serde_json::Value) {
    let (status, body) = d
        .client()
        .get(&d.admin_url("/eventtypes"))
        .await
        .expect("admin answers");
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

async fn post(d: &Dispatcher, path: &str, id: &str, ty: &str, source: &str) {
    let mut e = event(id);
    e.ty = ty.into();
    e.source = source.into();
    assert_eq!(
        d.client().post_binary(&d.url(path), &e).await.0,
        StatusCode::ACCEPTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_registers_each_type_and_source_once_and_stops_at_the_bound() {
    let d = Dispatcher::start(&format!("{FEATURES}{BROKER_AND_CHANNEL}"), &[]).await;
    for i in 0..3 {
        post(
            &d,
            "/brokers/shop/default",
            &format!("a{i}"),
            "shop.order",
            "/shop",
        )
        .await;
    }
    post(&d, "/brokers/shop/default", "b", "shop.refund", "/shop").await;
    post(&d, "/shop/audit", "c", "audit.entry", "/auditor").await;
    // A producer inventing types: only the bound is kept.
    for i in 0..20 {
        post(
            &d,
            "/brokers/shop/default",
            &format!("r{i}"),
            &format!("random.{i}"),
            "/noise",
        )
        .await;
    }
    // Refused by the channel: nothing is registered for it.
    let bad = http::Request::post(d.url("/brokers/shop/default"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "x")
        .header("ce-type", "never.stored")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(
        d.client().send(bad).await.expect("sent").0,
        StatusCode::BAD_REQUEST
    );

    let (status, list) = observed(&d).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().cloned().unwrap_or_default();
    let on = |kind: &str| -> Vec<(String, String)> {
        list.iter()
            .filter(|o| o["reference"]["kind"] == kind)
            .map(|o| {
                (
                    o["type"].as_str().unwrap_or_default().to_owned(),
                    o["source"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let broker = on("Broker");
    assert_eq!(broker.len(), 3, "the bound: {list:#?}");
    assert!(broker.contains(&("shop.order".into(), "/shop".into())));
    assert!(broker.contains(&("shop.refund".into(), "/shop".into())));
    assert_eq!(
        on("InMemoryChannel"),
        [("audit.entry".to_owned(), "/auditor".to_owned())]
    );
    let first = &list[0];
    assert_eq!(first["namespace"], "shop");
    assert_eq!(
        first["reference"]["apiVersion"]
            .as_str()
            .map(|v| v.is_empty()),
        Some(false)
    );
    assert!(
        first["name"].as_str().is_some_and(|n| n.starts_with("et-")),
        "{first}"
    );
    assert_eq!(
        d.metric(r#"kn_channel_eventtype_autocreate_refused_total{namespace="shop",kind="Broker",name="default"}"#)
            .await,
        19.0,
        "20 random types, one fitted under the bound"
    );
    let log = d.log();
    assert_eq!(
        log.matches("reached its maximum of (type, source) pairs")
            .count(),
        1,
        "logged once: {log}"
    );

    // Turned off: nothing is recorded or served.
    d.rewrite(BROKER_AND_CHANNEL).await;
    let mut off = false;
    for _ in 0..100 {
        if observed(&d).await.0 == StatusCode::NOT_FOUND {
            off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(off, "GET /eventtypes answers 404 once auto-creation is off");
}

/// Standalone: the provisioner lists declared EventTypes with their
/// readiness, creates EventTypes from broker traffic (bounded), persists
/// them beside its contracts, and prints the registry as a table and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_registry_from_manifests_and_traffic() {
    use tests::provisioner::{Provisioner, Slot};
    let slot = Slot::new();
    let manifests = format!(
        "{}{}---\napiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {{name: order, namespace: shop}}\nspec:\n  type: shop.order\n  source: /shop\n  schema: https://example.com/order.json\n  description: An order was placed\n  reference: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}\n---\napiVersion: eventing.knative.dev/v1beta1\nkind: EventType\nmetadata: {{name: nowhere, namespace: shop}}\nspec: {{type: lost.event, broker: gone}}\n",
        FEATURES.replace("\"3\"", "\"2\""),
        BROKER_AND_CHANNEL
    );
    let args = [
        format!("--dispatcher-url=inmemory=http://{}", slot.ingress),
        format!("--dispatcher-admin=inmemory=http://{}", slot.admin),
    ];
    let p = Provisioner::start(&manifests, &args).await;
    assert!(
        tests::eventually(Duration::from_secs(30), || p.contract("inmemory").exists()).await,
        "no contract; log:\n{}",
        p.log()
    );
    let d = slot.start(
        tests::bin_dir().join("inmemory-dispatcher"),
        Vec::new(),
        p.contract("inmemory"),
    );
    // Declared: the one whose broker exists is Ready, the other says why not.
    let ready = p
        .wait_resource(
            "EventType",
            "order",
            Duration::from_secs(30),
            "Ready",
            tests::provisioner::is_ready,
        )
        .await
        .expect("listed");
    assert_eq!(ready["kind"], "EventType");
    let lost = p
        .wait_resource(
            "EventType",
            "nowhere",
            Duration::from_secs(30),
            "listed",
            |r| r.is_some(),
        )
        .await
        .expect("listed");
    assert_eq!(lost["ready"], "False");
    assert_eq!(lost["reason"], "ReferenceNotFound");

    p.wait_resource(
        "Broker",
        "default",
        Duration::from_secs(30),
        "Ready",
        tests::provisioner::is_ready,
    )
    .await;
    // Traffic: the declared pair and three new ones. The bound (2 pairs
    // per reference, as ingress saw them) keeps shop.order and shop.refund;
    // shop.order is declared, so one EventType is auto-created.
    let broker = format!("http://{}/brokers/shop/default", slot.ingress);
    for (id, ty) in [
        ("1", "shop.order"),
        ("2", "shop.refund"),
        ("3", "shop.return"),
        ("4", "shop.gift"),
    ] {
        let mut e = event(id);
        e.ty = ty.into();
        e.source = "/shop".into();
        let mut accepted = false;
        for _ in 0..50 {
            if d.client().post_binary(&broker, &e).await.0 == StatusCode::ACCEPTED {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(accepted, "event {id} accepted");
    }
    let client = tests::HttpClient::new();
    let mut list = serde_json::Value::Null;
    for _ in 0..300 {
        if let Ok((_, body)) = client.get(&p.url("/eventtypes")).await {
            list = serde_json::from_slice(&body).unwrap_or_default();
            if list.as_array().is_some_and(|a| a.len() == 3) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("4 EventTypes: {list:#}\nlog:\n{}", p.log()));
    let auto: Vec<&serde_json::Value> = items
        .iter()
        .filter(|e| e["metadata"]["labels"]["eventing.knative.dev/auto-created"] == "true")
        .collect();
    assert_eq!(auto.len(), 1, "{list:#}");
    assert_eq!(auto[0]["spec"]["type"], "shop.refund", "{list:#}");
    for e in &auto {
        assert_eq!(e["spec"]["reference"]["kind"], "Broker");
        assert_eq!(e["spec"]["source"], "/shop");
        assert_eq!(e["status"]["conditions"][1]["status"], "True", "{e}");
    }

    let out = std::process::Command::new(tests::provisioner::provisioner_bin())
        .args(["eventtypes", "--url", &p.url("")])
        .output()
        .expect("provisioner eventtypes runs");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{table}");
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(table.contains("https://example.com/order.json"), "{table}");
    assert!(table.contains("ReferenceNotFound"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        !table.contains("shop.gift") && !table.contains("shop.return"),
        "{table}"
    );
    let out = std::process::Command::new(tests::provisioner::provisioner_bin())
        .args(["eventtypes", "--url", &p.url(""), "-o", "json"])
        .output()
        .expect("provisioner eventtypes runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(3));

    // Persisted beside the contracts.
    let saved =
        std::fs::read_to_string(p.dir.path().join("contracts/eventtypes.json")).expect("persisted");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&saved)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
