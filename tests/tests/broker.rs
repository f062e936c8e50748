//! Broker and Trigger conformance: Knative's broker rules checked against
//! the real dispatcher of every backend (in-memory, NATS JetStream on a
//! real nats-server, Kafka on a real tansu broker), in embedded
//! (`--manifests`) mode. Each test body runs once per backend.
//!
//! A broker is its backing channel plus an ingress; a trigger is a
//! subscription of that channel whose filter runs in the dispatcher, so a
//! non-matching event never reaches its subscriber as an HTTP request.

use channel_core::event::{Event, ExtensionValue};
use http::StatusCode;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tests::{event, Answer, Backend, Dispatcher, Sink};

const WAIT: Duration = Duration::from_secs(20);

fn broker_yaml(name: &str, delivery: &str) -> String {
    let mut out = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: {name}, namespace: default}}\n"
    );
    if !delivery.is_empty() {
        out.push_str(&format!("spec:\n  delivery: {delivery}\n"));
    }
    out
}

/// A trigger on broker `default`; `filter` is YAML under `spec` (e.g.
/// `filter: {attributes: {type: a}}`), `extra` more YAML under `spec`.
fn trigger_yaml(name: &str, subscriber: &str, filter: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  broker: default\n  subscriber: {{uri: \"{subscriber}\"}}\n{}{}",
        if filter.is_empty() { String::new() } else { format!("  {filter}\n") },
        if extra.is_empty() { String::new() } else { format!("  {extra}\n") },
    )
}

fn typed(id: &str, ty: &str, source: &str) -> Event {
    let mut e = event(id);
    e.ty = ty.to_owned();
    e.source = source.to_owned();
    e
}

async fn post(d: &Dispatcher, path: &str, e: &Event) -> StatusCode {
    d.client().post_binary(&d.url(path), e).await.0
}

/// Wait until the sink holds exactly `want` (by id), then a little more to
/// see nothing else arrives.
async fn expect_ids(sink: &Sink, name: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    tests::eventually(WAIT, || {
        let got: BTreeSet<String> = sink.ids().into_iter().collect();
        want.is_subset(&got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: BTreeSet<String> = sink.ids().into_iter().collect();
    assert_eq!(got, want, "trigger {name} received the wrong events");
    assert_eq!(sink.count(), want.len(), "trigger {name}: duplicates");
}

async fn each_filter_dialect_passes_what_it_matches_and_nothing_else(b: Backend) {
    let sinks = [
        Sink::accepting().await, // 0 attributes
        Sink::accepting().await, // 1 exact
        Sink::accepting().await, // 2 prefix
        Sink::accepting().await, // 3 suffix
        Sink::accepting().await, // 4 all/any/not
        Sink::accepting().await, // 5 cesql
        Sink::accepting().await, // 6 no filter
        Sink::accepting().await, // 7 empty value = any value of a present attribute
    ];
    let mut yaml = broker_yaml("default", "");
    yaml += &trigger_yaml(
        "attrs",
        &sinks[0].url(),
        "filter: {attributes: {type: shop.order, source: /shop}}",
        "",
    );
    yaml += &trigger_yaml(
        "exact",
        &sinks[1].url(),
        "filters: [{exact: {type: shop.order}}]",
        "",
    );
    yaml += &trigger_yaml(
        "prefix",
        &sinks[2].url(),
        "filters: [{prefix: {type: shop.}}]",
        "",
    );
    yaml += &trigger_yaml(
        "suffix",
        &sinks[3].url(),
        "filters: [{suffix: {source: /eu}}]",
        "",
    );
    yaml += &trigger_yaml(
        "nested",
        &sinks[4].url(),
        "filters: [{all: [{any: [{exact: {type: shop.refund}}, {exact: {type: shop.order}}]}, {not: {exact: {source: /shop}}}]}]",
        "",
    );
    yaml += &trigger_yaml(
        "sql",
        &sinks[5].url(),
        "filters: [{cesql: \"type LIKE 'shop.%' AND EXISTS region AND region IN ('eu', 'us')\"}]",
        "",
    );
    yaml += &trigger_yaml("all", &sinks[6].url(), "", "");
    yaml += &trigger_yaml(
        "any-region",
        &sinks[7].url(),
        "filter: {attributes: {region: \"\"}}",
        "",
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;

    let mut e1 = typed("e1", "shop.order", "/shop");
    e1.extensions
        .insert("region".into(), ExtensionValue::String("eu".into()));
    let e2 = typed("e2", "shop.order", "/shop/eu");
    let mut e3 = typed("e3", "shop.refund", "/pay/eu");
    e3.extensions
        .insert("region".into(), ExtensionValue::String("mars".into()));
    let e4 = typed("e4", "other.thing", "/x");
    for e in [&e1, &e2, &e3, &e4] {
        assert_eq!(
            post(&d, "/brokers/default/default", e).await,
            StatusCode::ACCEPTED
        );
    }
    expect_ids(&sinks[0], "attrs", &["e1"]).await;
    expect_ids(&sinks[1], "exact", &["e1", "e2"]).await;
    expect_ids(&sinks[2], "prefix", &["e1", "e2", "e3"]).await;
    expect_ids(&sinks[3], "suffix", &["e2", "e3"]).await;
    expect_ids(&sinks[4], "nested", &["e2", "e3"]).await;
    expect_ids(&sinks[5], "sql", &["e1"]).await;
    expect_ids(&sinks[6], "all", &["e1", "e2", "e3", "e4"]).await;
    expect_ids(&sinks[7], "any-region", &["e1", "e3"]).await;
    // Seven filtering triggers saw 4 events each and passed 13: the other
    // 15 were settled without a request.
    assert_eq!(d.metric("kn_channel_events_filtered_total").await, 15.0);
    assert_eq!(
        d.metric("kn_channel_broker_events_received_total{namespace=\"default\",broker=\"default\",response_code_class=\"2xx\"}").await,
        4.0
    );
    // The event reaches the subscriber with the broker TTL stamped at ingress.
    let got = sinks[6].received()[0].event.clone().expect("event");
    assert_eq!(got.extension("knativebrokerttl").as_deref(), Some("255"));
}

async fn seeds_v1alpha1_forms_work_unchanged(b: Backend) {
    let sink = Sink::accepting().await;
    let yaml = format!(
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: Broker\nmetadata: {{name: default, namespace: default}}\nspec: {{}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: old, namespace: default}}\nspec:\n  filter: {{sourceAndType: {{type: dev.knative.foo, source: Any}}}}\n  subscriber: {{uri: \"{}\"}}\n",
        sink.url()
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    for (id, ty) in [("a", "dev.knative.foo"), ("b", "dev.knative.bar")] {
        assert_eq!(
            post(&d, "/brokers/default/default", &typed(id, ty, "/anything")).await,
            StatusCode::ACCEPTED
        );
    }
    expect_ids(&sink, "old", &["a"]).await;
}

async fn replies_reenter_the_broker_and_reach_other_triggers(b: Backend) {
    let responder = Sink::start(|r, _| {
        let mut reply = typed(&format!("reply-{}", r.id()), "shop.response", "/responder");
        reply.data = Some(bytes::Bytes::from_static(b"{\"ok\":true}"));
        Answer::reply(&reply)
    })
    .await;
    let audit = Sink::accepting().await;
    let mut yaml = broker_yaml("default", "");
    yaml += &trigger_yaml(
        "responder",
        &responder.url(),
        "filter: {attributes: {type: shop.request}}",
        "",
    );
    yaml += &trigger_yaml(
        "audit",
        &audit.url(),
        "filter: {attributes: {type: shop.response}}",
        "",
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    let mut request = typed("q1", "shop.request", "/client");
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    request
        .extensions
        .insert("traceparent".into(), ExtensionValue::String(trace.into()));
    assert_eq!(
        post(&d, "/brokers/default/default", &request).await,
        StatusCode::ACCEPTED
    );
    expect_ids(&audit, "audit", &["reply-q1"]).await;
    let reply = audit.received()[0].event.clone().expect("event");
    assert_eq!(
        reply.extension("traceparent").as_deref(),
        Some(trace),
        "the reply continues the producer's trace"
    );
    assert_eq!(
        reply.extension("knativebrokerttl").as_deref(),
        Some("254"),
        "one hop spent"
    );
    assert_eq!(responder.count(), 1);
}

async fn a_reply_the_broker_refuses_redelivers_the_original_then_dead_letters(b: Backend) {
    // Broker ingress takes at most 512 bytes; the reply is larger (413).
    let responder = Sink::start(|_, _| {
        let big = typed("big-reply", "shop.response", "/responder")
            .with_data("text/plain", vec![b'x'; 2048]);
        Answer::reply(&big)
    })
    .await;
    let dls = Sink::accepting().await;
    let mut yaml = broker_yaml(
        "default",
        &format!(
            "{{retry: 2, backoffDelay: PT0.05S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    );
    yaml += &trigger_yaml(
        "responder",
        &responder.url(),
        "filter: {attributes: {type: shop.request}}",
        "",
    );
    let d = Dispatcher::start_on(&b, &yaml, &["--max-body-bytes", "512"]).await;
    assert_eq!(
        post(
            &d,
            "/brokers/default/default",
            &typed("q1", "shop.request", "/c")
        )
        .await,
        StatusCode::ACCEPTED
    );
    let dead = dls.wait_for(1, WAIT).await;
    assert_eq!(
        responder.count(),
        3,
        "the original is redelivered by the retry policy"
    );
    assert!(responder.ids().iter().all(|id| id == "q1"));
    let e = dead[0].event.clone().expect("event");
    assert_eq!(e.id, "q1", "the original is dead-lettered, not the reply");
    assert_eq!(e.extension("knativeerrorcode").as_deref(), Some("413"));
    assert!(
        e.extension("knativeerrordest")
            .is_some_and(|d| d.contains("default-kn-broker")),
        "{e:?}"
    );
}

async fn failing_subscriber_dead_letters_with_error_extensions(b: Backend) {
    let failing = Sink::start(|_, _| Answer::status(500).with_body("no")).await;
    let dls = Sink::accepting().await;
    let mut yaml = broker_yaml(
        "default",
        &format!(
            "{{retry: 1, backoffDelay: PT0.05S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        ),
    );
    yaml += &trigger_yaml("t", &failing.url(), "", "");
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    assert_eq!(
        post(&d, "/brokers/default/default", &event("x")).await,
        StatusCode::ACCEPTED
    );
    let dead = dls.wait_for(1, WAIT).await;
    let e = dead[0].event.clone().expect("event");
    assert_eq!(e.extension("knativeerrorcode").as_deref(), Some("500"));
    assert_eq!(
        e.extension("knativeerrordest").as_deref(),
        Some(failing.url().as_str())
    );
    assert_eq!(failing.count(), 2);
    assert_eq!(d.metric("kn_channel_dead_lettered_total").await, 1.0);
}

async fn an_event_loop_stops_at_the_broker_ttl(b: Backend) {
    // Replies with an event of the same type: a loop, cut by the TTL.
    let echo = Sink::start(|r, n| {
        let mut again = r.event.clone().unwrap_or_else(|| event("?"));
        again.id = format!("hop-{n}");
        again.extensions.remove("knativebrokerttl");
        Answer::reply(&again)
    })
    .await;
    let mut yaml = broker_yaml("default", "");
    yaml += &trigger_yaml(
        "echo",
        &echo.url(),
        "filter: {attributes: {type: loop}}",
        "",
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    let mut first = typed("hop-0", "loop", "/loop");
    first.extensions.insert(
        "knativebrokerttl".into(),
        ExtensionValue::String("5".into()),
    );
    assert_eq!(
        post(&d, "/brokers/default/default", &first).await,
        StatusCode::ACCEPTED
    );
    assert!(
        tests::eventually(WAIT, || echo.count() >= 5).await,
        "the loop ran {} hops",
        echo.count()
    );
    let ttl_dropped = async {
        for _ in 0..200 {
            if d.metric("kn_channel_broker_ttl_exceeded_total").await >= 1.0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(ttl_dropped.await, "the last reply is dropped and counted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        echo.count(),
        5,
        "TTL 5: five deliveries, then the reply is dropped"
    );
    let ttls: Vec<String> = echo
        .received()
        .iter()
        .filter_map(|r| {
            r.event
                .as_ref()?
                .extension("knativebrokerttl")
                .map(|v| v.into_owned())
        })
        .collect();
    assert_eq!(ttls, ["5", "4", "3", "2", "1"]);
}

async fn triggers_change_under_load_without_loss_for_unchanged_ones(b: Backend) {
    let stable = Sink::accepting().await;
    let coming = Sink::accepting().await;
    let base = broker_yaml("default", "")
        + &trigger_yaml(
            "stable",
            &stable.url(),
            "filters: [{prefix: {type: dev.}}]",
            "",
        );
    let d = Dispatcher::start_on(&b, &base, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let url = d.url("/brokers/default/default");
    let producer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = tests::HttpClient::new();
            let mut accepted = BTreeSet::new();
            for i in 0..20_000 {
                // Stop when told, once enough load was applied: on a busy
                // machine the edits can be applied before 100 events were.
                if stop.load(Ordering::Relaxed) && accepted.len() > 150 {
                    break;
                }
                if tests::try_post(&client, &url, &format!("ev-{i}")).await
                    == Some(StatusCode::ACCEPTED)
                {
                    accepted.insert(format!("ev-{i}"));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let with_new = base.clone() + &trigger_yaml("coming", &coming.url(), "", "");
    d.rewrite(&with_new).await;
    // The added trigger starts receiving while the load goes on (a Kafka
    // consumer group needs a fetch round first).
    assert!(
        tests::eventually(WAIT, || coming.count() > 0).await,
        "the added trigger received nothing"
    );
    d.rewrite(&base).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = producer.await.expect("producer");
    assert!(accepted.len() > 100, "load was applied: {}", accepted.len());
    tests::assert_all_delivered(&stable, &accepted, WAIT).await;
}

async fn addresses_route_to_the_broker_and_never_to_a_same_named_channel(b: Backend) {
    let via_broker = Sink::accepting().await;
    let via_channel = Sink::accepting().await;
    let mut yaml = broker_yaml("orders", "");
    yaml += &format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t, namespace: default}}\nspec: {{broker: orders, subscriber: {{uri: \"{}\"}}}}\n",
        via_broker.url()
    );
    yaml += &format!(
        "---\n{}",
        tests::channel_yaml("orders", &[("s", &via_channel.url(), "")])
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    // Three broker forms, one channel form.
    assert_eq!(
        post(&d, "/brokers/default/orders", &event("b1")).await,
        StatusCode::ACCEPTED
    );
    let knative = http::Request::post(d.url("/default/orders"))
        .header("host", "broker-ingress.knative-eventing.svc.cluster.local")
        .header("ce-specversion", "1.0")
        .header("ce-id", "b2")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(
        d.client().send(knative).await.expect("sent").0,
        StatusCode::ACCEPTED
    );
    let by_host = http::Request::post(d.url("/"))
        .header("host", "orders-kn-broker.default.svc.cluster.local")
        .header("ce-specversion", "1.0")
        .header("ce-id", "b3")
        .header("ce-source", "/s")
        .header("ce-type", "t")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(
        d.client().send(by_host).await.expect("sent").0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(&d, "/default/orders", &event("c1")).await,
        StatusCode::ACCEPTED
    );
    expect_ids(&via_broker, "t", &["b1", "b2", "b3"]).await;
    expect_ids(&via_channel, "s", &["c1"]).await;
    // Status shows the broker with its address.
    let status = d.status().await;
    let broker = status["channels"]
        .as_array()
        .and_then(|c| c.iter().find_map(|c| c.get("broker")))
        .cloned()
        .expect("a broker in /status");
    assert_eq!(
        broker["address"],
        "http://orders-kn-broker.default.svc.cluster.local"
    );

    // Broker ingress answers as channel ingress does.
    let get = http::Request::get(d.url("/brokers/default/orders"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let (status, headers, _) = d.client().send(get).await.expect("sent");
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "POST, OPTIONS");
    let options = http::Request::options(d.url("/brokers/default/orders"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    assert_eq!(
        d.client().send(options).await.expect("sent").0,
        StatusCode::OK
    );
    let garbage = http::Request::post(d.url("/brokers/default/orders"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"hello",
        )))
        .expect("request");
    assert_eq!(
        d.client().send(garbage).await.expect("sent").0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&d, "/brokers/default/nope", &event("x")).await,
        StatusCode::NOT_FOUND
    );

    // A broker removed answers 404; its channel twin keeps serving.
    d.rewrite(&tests::channel_yaml(
        "orders",
        &[("s", &via_channel.url(), "")],
    ))
    .await;
    assert_eq!(
        post(&d, "/brokers/default/orders", &event("b4")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(&d, "/default/orders", &event("c2")).await,
        StatusCode::ACCEPTED
    );
}

async fn a_bad_filter_is_refused_naming_trigger_and_position(b: Backend) {
    let sink = Sink::accepting().await;
    let good = broker_yaml("default", "") + &trigger_yaml("t", &sink.url(), "", "");
    let d = Dispatcher::start_on(&b, &good, &[]).await;
    let bad = broker_yaml("default", "")
        + &trigger_yaml(
            "t",
            &sink.url(),
            "filters: [{cesql: \"type = 'a' AND (source = 'b'\"}]",
            "",
        );
    let before = d.generation().await;
    let tmp = d.dir.path().join("bad.yaml.tmp");
    std::fs::write(&tmp, format!("{}{bad}", b.class_yaml())).expect("write");
    std::fs::rename(&tmp, d.dir.path().join("manifests/channels.yaml")).expect("rename");
    let mut error = String::new();
    for _ in 0..100 {
        let status = d.status().await;
        if let Some(e) = status["lastError"].as_str() {
            error = e.to_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(error.contains("Trigger default/t"), "{error}");
    assert!(error.contains("spec.filters[0].cesql"), "{error}");
    assert!(error.contains("position"), "{error}");
    // The previous configuration stays in force.
    assert_eq!(d.generation().await, before);
    assert_eq!(
        post(&d, "/brokers/default/default", &event("still")).await,
        StatusCode::ACCEPTED
    );
    expect_ids(&sink, "t", &["still"]).await;
}

tests::conformance!(
    each_filter_dialect_passes_what_it_matches_and_nothing_else,
    seeds_v1alpha1_forms_work_unchanged,
    replies_reenter_the_broker_and_reach_other_triggers,
    a_reply_the_broker_refuses_redelivers_the_original_then_dead_letters,
    failing_subscriber_dead_letters_with_error_extensions,
    an_event_loop_stops_at_the_broker_ttl,
    triggers_change_under_load_without_loss_for_unchanged_ones,
    addresses_route_to_the_broker_and_never_to_a_same_named_channel,
    a_bad_filter_is_refused_naming_trigger_and_position,
);
