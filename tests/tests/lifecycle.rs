//! Backpressure, memory bounds, graceful shutdown, start-up errors and
//! trace export of the real `inmemory-dispatcher`.

use bytes::Bytes;
use http::StatusCode;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tests::{channel_yaml, event, Answer, Dispatcher, Sink};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_bounded_does_not_hold_back_others_then_429() {
    let stalled = Sink::accepting().await;
    stalled.stalled.store(true, Ordering::SeqCst);
    let fast = Sink::accepting().await;
    let d = Dispatcher::start(
        &channel_yaml(
            "c",
            &[("stalled", &stalled.url(), ""), ("fast", &fast.url(), "")],
        ),
        &["--buffer-events", "100000", "--buffer-bytes", "8388608"],
    )
    .await;
    let rss_idle = d.rss_kib();
    let payload = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for i in 0..1_000 {
        let e = event(&format!("e{i}")).with_data("application/octet-stream", payload.clone());
        let (status, headers, _) = d.client().post_binary(&d.url("/default/c"), &e).await;
        match status {
            StatusCode::ACCEPTED => accepted.push(e.id),
            other => {
                refusal = Some((other, headers));
                break;
            }
        }
    }
    let (status, headers) = refusal.expect("the channel refused once its 8 MiB bound was reached");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["retry-after"], "1");
    // 8 MiB of 64 KiB events: about 127 stored.
    assert!(
        (100..=130).contains(&accepted.len()),
        "{} accepted",
        accepted.len()
    );
    // The fast subscriber was not held back.
    fast.wait_for(accepted.len(), WAIT).await;
    let rss = d.rss_kib();
    assert!(
        rss < rss_idle + 48 * 1024,
        "memory bounded by the buffer: idle {rss_idle} KiB, full {rss} KiB"
    );
    assert!(
        d.metric(
            "kn_channel_queue_depth{namespace=\"default\",channel=\"c\",subscription=\"stalled\"}"
        )
        .await
            >= 100.0
    );

    // Release: everything reaches the stalled one, and ingress accepts again.
    stalled.stalled.store(false, Ordering::SeqCst);
    stalled.wait_for(accepted.len(), WAIT).await;
    let mut ids = stalled.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), accepted.len());
    let mut ok = false;
    for _ in 0..100 {
        if d.client()
            .post_binary(&d.url("/default/c"), &event("after"))
            .await
            .0
            == StatusCode::ACCEPTED
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "ingress accepts again once the subscriber caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_deliveries_and_exits_zero() {
    let slow =
        Sink::start(|_, _| Answer::status(202).with_delay(Duration::from_millis(1500))).await;
    let mut d = Dispatcher::start(&channel_yaml("c", &[("s", &slow.url(), "")]), &[]).await;
    for i in 0..3 {
        d.client()
            .post_binary(&d.url("/default/c"), &event(&format!("e{i}")))
            .await;
    }
    slow.wait_for(3, WAIT).await;
    d.sigterm();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited within 10 s");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("dispatcher stopped"), "{log}");
    assert!(
        !log.contains("abandoning"),
        "in-flight deliveries finished: {log}"
    );
    // The deliveries completed: the sink answered before the process ended.
    assert_eq!(slow.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_at_startup_exit_non_zero_with_a_clear_message() {
    let yaml = channel_yaml("c", &[("s", "http://127.0.0.1:1/", "{backoffDelay: 5s}")]);
    let mut d = Dispatcher::spawn(&yaml, &[]);
    let status = d.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(!status.success());
    let log = d.log();
    assert!(log.contains("channels.yaml"), "{log}");
    assert!(log.contains("document 2"), "{log}");
    assert!(log.contains("spec.delivery.backoffDelay"), "{log}");
    assert!(log.contains(r#"try "PT5S""#), "{log}");

    let mut d = Dispatcher::spawn(
        "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: [oops\n",
        &[],
    );
    let status = d.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(!status.success());
    assert!(d.log().contains("not valid YAML"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_reported_on_status_and_the_rest_is_served() {
    let sink = Sink::accepting().await;
    let mut yaml = channel_yaml("c", &[("s", &sink.url(), "")]);
    yaml.push_str(
        "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: orphan, namespace: default}\nspec:\n  channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: missing}\n  subscriber: {uri: \"http://127.0.0.1:1/\"}\n",
    );
    let d = Dispatcher::start(&yaml, &[]).await;
    let status = d.status().await;
    let problems = status["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["name"], "orphan");
    assert_eq!(problems[0]["reason"], "ChannelNotFound");
    assert_eq!(status["channels"][0]["subscriptions"][0]["ready"], true);
    assert_eq!(
        status["channels"][0]["address"],
        "http://c-kn-channel.default.svc.cluster.local"
    );
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    sink.wait_for(1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_are_exported_over_otlp_continuing_the_producer_trace() {
    let collector = Sink::start(|_, _| Answer::status(200)).await;
    let sink = Sink::accepting().await;
    let endpoint = format!("http://{}", collector.addr);
    let mut d = Dispatcher::start_with_env(
        &channel_yaml("c", &[("s", &sink.url(), "")]),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "e2e-dispatcher"),
        ],
    )
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let e =
        event("traced").with_extension("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"));
    d.client().post_binary(&d.url("/default/c"), &e).await;
    let got = sink.wait_for(1, WAIT).await;
    // The event carries the ingress span onwards, in the producer's trace.
    let tp = got[0]
        .event
        .as_ref()
        .and_then(|e| e.extension("traceparent"))
        .expect("traceparent")
        .into_owned();
    assert!(tp.starts_with(&format!("00-{trace_id}-")), "{tp}");
    assert!(!tp.contains("b7ad6b7169203331"), "a new span id: {tp}");
    assert_eq!(got[0].headers["traceparent"], tp.as_str());
    d.sigterm();
    d.wait_exit(Duration::from_secs(10)).await.expect("exits");
    let exported = collector.wait_for(1, WAIT).await;
    assert_eq!(exported[0].path, "/v1/traces");
    let raw_trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    assert!(
        exported
            .iter()
            .any(|r| r.body.windows(16).any(|w| w == raw_trace_id.as_slice())),
        "the exported spans belong to the producer's trace"
    );
}
