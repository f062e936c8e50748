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
