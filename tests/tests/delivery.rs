//! The delivery conformance suite: Knative's delivery rules — retries and
//! backoff, Retry-After, timeout, dead letter, replies, fan-out — checked
//! against the real dispatcher of every backend (in-memory, NATS JetStream
//! on a real nats-server, Kafka on a real tansu broker). Each test body runs
//! once per backend.

use channel_core::event::Event;
use http::StatusCode;
use std::time::{Duration, Instant};
use tests::{channel_yaml, event, Answer, Backend, Dispatcher, Sink};

const WAIT: Duration = Duration::from_secs(15);

fn gaps(sink: &Sink) -> Vec<Duration> {
    let at: Vec<Instant> = sink.received().iter().map(|r| r.at).collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_near(actual: Duration, expected: Duration) {
    let lo = expected.mul_f64(0.8);
    let hi = expected.mul_f64(1.6) + Duration::from_millis(60);
    assert!(
        actual >= lo && actual <= hi,
        "gap {actual:?} not within [{lo:?}, {hi:?}] of {expected:?}"
    );
}

async fn linear_backoff_then_dead_letter_with_error_extensions(b: Backend) {
    let failing = Sink::start(|_, _| Answer::status(503).with_body("backend exploded")).await;
    let dls = Sink::accepting().await;
    let delivery = format!(
        "{{retry: 3, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: \"{}\"}}}}",
        dls.url()
    );
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml("c", &[("s", &failing.url(), &delivery)]),
        &[],
    )
    .await;
    let sent = event("e1");
    assert_eq!(
        d.client().post_binary(&d.url("/default/c"), &sent).await.0,
        StatusCode::ACCEPTED
    );

    let dead = dls.wait_for(1, WAIT).await;
    assert_eq!(failing.count(), 4, "one attempt and 3 retries");
    // Linear: 100, 200, 300 ms.
    for (gap, expected) in gaps(&failing).into_iter().zip([100, 200, 300]) {
        assert_near(gap, Duration::from_millis(expected));
    }
    let e = dead[0].event.clone().expect("a CloudEvent");
    assert_eq!(e.id, "e1");
    assert_eq!(e.data, sent.data, "data unchanged");
    assert_eq!(
        e.extension("knativeerrordest").as_deref(),
        Some(failing.url().as_str())
    );
    assert_eq!(e.extension("knativeerrorcode").as_deref(), Some("503"));
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(
            e.extension("knativeerrordata")
                .expect("error data")
                .as_bytes(),
        )
        .expect("base64");
    assert_eq!(data, b"backend exploded");
    // The engine counts the outcome once the dead-letter sink has answered:
    // the sink may see the event a moment before the counter moves.
    let deadline = std::time::Instant::now() + WAIT;
    while d.metric("kn_channel_dead_lettered_total").await < 1.0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.metric("kn_channel_dead_lettered_total").await, 1.0);
    assert_eq!(d.metric("kn_channel_retries_total").await, 3.0);
}

async fn exponential_backoff_timing(b: Backend) {
    let failing = Sink::start(|_, n| Answer::status(if n <= 3 { 500 } else { 202 })).await;
    let delivery = "{retry: 3, backoffPolicy: exponential, backoffDelay: PT0.05S}";
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml("c", &[("s", &failing.url(), delivery)]),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    failing.wait_for(4, WAIT).await;
    // Exponential: 100, 200, 400 ms (backoffDelay × 2^n).
    for (gap, expected) in gaps(&failing).into_iter().zip([100, 200, 400]) {
        assert_near(gap, Duration::from_millis(expected));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        failing.count(),
        4,
        "succeeded on the last retry: no more attempts"
    );
    assert_eq!(d.metric("kn_channel_dead_lettered_total").await, 0.0);
}

async fn non_retryable_status_goes_straight_to_dead_letter_and_retryable_ones_retry(b: Backend) {
    for (status, attempts) in [
        (400u16, 1usize),
        (403, 1),
        (302, 1),
        (404, 3),
        (408, 3),
        (409, 3),
        (429, 3),
        (500, 3),
    ] {
        let failing = Sink::start(move |_, _| Answer::status(status)).await;
        let dls = Sink::accepting().await;
        let delivery = format!(
            "{{retry: 2, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}",
            dls.url()
        );
        let d = Dispatcher::start_on(
            &b,
            // A channel per status: on a durable backend the broker outlives
            // each dispatcher, so names must not be reused.
            &channel_yaml(&format!("c{status}"), &[("s", &failing.url(), &delivery)]),
            &[],
        )
        .await;
        d.client()
            .post_binary(&d.url(&format!("/default/c{status}")), &event("e"))
            .await;
        let dead = dls.wait_for(1, WAIT).await;
        assert_eq!(failing.count(), attempts, "status {status}");
        assert_eq!(
            dead[0]
                .event
                .as_ref()
                .and_then(|e| e.extension("knativeerrorcode"))
                .as_deref(),
            Some(status.to_string().as_str())
        );
    }
}

async fn retry_after_is_capped_by_retry_after_max_and_ignored_without_it(b: Backend) {
    let honoured = Sink::start(|_, n| {
        if n == 1 {
            Answer::status(429).with_header("retry-after", "10")
        } else {
            Answer::status(202)
        }
    })
    .await;
    let ignored = Sink::start(|_, n| {
        if n == 1 {
            Answer::status(503).with_header("retry-after", "10")
        } else {
            Answer::status(202)
        }
    })
    .await;
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml(
            "c",
            &[
                (
                    "honoured",
                    &honoured.url(),
                    "{retry: 1, backoffDelay: PT0.01S, retryAfterMax: PT0.6S}",
                ),
                (
                    "ignored",
                    &ignored.url(),
                    "{retry: 1, backoffDelay: PT0.01S}",
                ),
            ],
        ),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    honoured.wait_for(2, WAIT).await;
    ignored.wait_for(2, WAIT).await;
    assert_near(gaps(&honoured)[0], Duration::from_millis(600));
    assert!(
        gaps(&ignored)[0] < Duration::from_millis(200),
        "Retry-After ignored without retryAfterMax"
    );
}

async fn each_attempt_is_bounded_by_the_timeout(b: Backend) {
    let slow = Sink::start(|_, n| {
        if n == 1 {
            Answer::status(202).with_delay(Duration::from_secs(3))
        } else {
            Answer::status(202)
        }
    })
    .await;
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml(
            "c",
            &[(
                "s",
                &slow.url(),
                "{retry: 1, backoffDelay: PT0.01S, timeout: PT0.3S}",
            )],
        ),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    slow.wait_for(2, WAIT).await;
    assert_near(gaps(&slow)[0], Duration::from_millis(310));
    assert!(d.metric("kn_channel_deliveries_total{namespace=\"default\",channel=\"c\",subscription=\"s\",response_code_class=\"error\"}").await >= 1.0);
}

fn reply_channel_yaml(subscriber: &str, reply: Option<&str>, delivery: &str) -> String {
    let mut y = String::from(
        "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: c, namespace: default}\n---\n\
         apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {name: replies, namespace: default}\n---\n\
         apiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {name: s, namespace: default}\nspec:\n  \
         channel: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: c}\n",
    );
    y.push_str(&format!("  subscriber: {{uri: \"{subscriber}\"}}\n"));
    if let Some(reply) = reply {
        y.push_str(&format!("  reply: {reply}\n"));
    }
    if !delivery.is_empty() {
        y.push_str(&format!("  delivery: {delivery}\n"));
    }
    y
}

async fn replies_are_routed_to_the_reply_destination_even_a_channel(b: Backend) {
    let replier = Sink::start(|r, _| {
        let reply = Event::new(format!("{}-reply", r.id()), "/replier", "dev.reply");
        Answer::reply(&reply)
    })
    .await;
    let reply_sink = Sink::accepting().await;
    // The reply goes to another channel of this dispatcher, resolved by ref,
    // whose subscription forwards it to reply_sink.
    let mut yaml = reply_channel_yaml(
        &replier.url(),
        Some("{ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: replies}}"),
        "",
    );
    yaml.push_str(&format!(
        "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: r, namespace: default}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: replies}}\n  subscriber: {{uri: \"{}\"}}\n",
        reply_sink.url()
    ));
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("orig"))
        .await;
    let got = reply_sink.wait_for(1, WAIT).await;
    assert_eq!(got[0].id(), "orig-reply");
    assert_eq!(d.metric("kn_channel_replies_total").await, 1.0);
}

async fn replies_without_destination_are_dropped_and_202_bodies_never_routed(b: Backend) {
    let reply_sink = Sink::accepting().await;
    // Answers 202 with an event in the body: must not be routed.
    let accepted_with_body = Sink::start(|r, _| {
        let mut a = Answer::reply(&Event::new(format!("{}-x", r.id()), "/s", "t"));
        a.status = 202;
        a
    })
    .await;
    let d = Dispatcher::start_on(
        &b,
        &reply_channel_yaml(
            &accepted_with_body.url(),
            Some(&format!("{{uri: \"{}\"}}", reply_sink.url())),
            "",
        ),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    accepted_with_body.wait_for(1, WAIT).await;

    // A 200 reply with no reply destination is dropped.
    let replier =
        Sink::start(|r, _| Answer::reply(&Event::new(format!("{}-r", r.id()), "/s", "t"))).await;
    let d2 = Dispatcher::start_on(
        &b,
        &reply_channel_yaml(&replier.url(), None, "")
            .replace("name: c}", "name: c2}")
            .replace("{name: c, ", "{name: c2, "),
        &[],
    )
    .await;
    d2.client()
        .post_binary(&d2.url("/default/c2"), &event("e2"))
        .await;
    replier.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reply_sink.count(), 0, "neither reply was routed");
    assert_eq!(d.metric("kn_channel_replies_total").await, 0.0);
    assert_eq!(
        d2.metric("kn_channel_dropped_total").await,
        0.0,
        "the event itself was delivered"
    );
}

async fn failed_reply_dead_letters_the_original_naming_the_reply_destination(b: Backend) {
    let replier =
        Sink::start(|r, _| Answer::reply(&Event::new(format!("{}-r", r.id()), "/s", "t"))).await;
    let broken_reply = Sink::start(|_, _| Answer::status(500)).await;
    let dls = Sink::accepting().await;
    let d = Dispatcher::start_on(
        &b,
        &reply_channel_yaml(
            &replier.url(),
            Some(&format!("{{uri: \"{}\"}}", broken_reply.url())),
            &format!(
                "{{retry: 1, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}",
                dls.url()
            ),
        ),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("orig"))
        .await;
    let dead = dls.wait_for(1, WAIT).await;
    let e = dead[0].event.clone().expect("event");
    assert_eq!(e.id, "orig", "the original event is dead-lettered");
    assert_eq!(
        e.extension("knativeerrordest").as_deref(),
        Some(broken_reply.url().as_str())
    );
    assert_eq!(e.extension("knativeerrorcode").as_deref(), Some("500"));
    assert_eq!(broken_reply.count(), 2);
}

async fn two_subscriptions_to_one_subscriber_get_two_deliveries(b: Backend) {
    let sink = Sink::accepting().await;
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml("c", &[("a", &sink.url(), ""), ("b", &sink.url(), "")]),
        &[],
    )
    .await;
    for i in 0..5 {
        d.client()
            .post_binary(&d.url("/default/c"), &event(&format!("e{i}")))
            .await;
    }
    sink.wait_for(10, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = sink.ids();
    ids.sort();
    let mut expected: Vec<String> = (0..5)
        .flat_map(|i| [format!("e{i}"), format!("e{i}")])
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
}

async fn channel_delivery_applies_to_subscriptions_without_their_own(b: Backend) {
    let failing = Sink::start(|_, _| Answer::status(500)).await;
    let dls = Sink::accepting().await;
    let yaml = format!(
        "apiVersion: messaging.knative.dev/v1\nkind: Channel\nmetadata: {{name: c, namespace: default}}\nspec:\n  delivery: {{retry: 2, backoffDelay: PT0.01S, deadLetterSink: {{uri: \"{}\"}}}}\n---\n{}",
        dls.url(),
        channel_yaml("ignored", &[("s", &failing.url(), "")])
            .split("---\n")
            .nth(1)
            .expect("subscription")
            .replace("name: ignored", "name: c")
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    dls.wait_for(1, WAIT).await;
    assert_eq!(failing.count(), 3, "the channel's retry: 2 applied");
}

async fn structured_delivery_when_asked(b: Backend) {
    let sink = Sink::accepting().await;
    let d = Dispatcher::start_on(
        &b,
        &channel_yaml("c", &[("s", &sink.url(), "{format: json}")]),
        &[],
    )
    .await;
    let sent = event("e");
    d.client().post_binary(&d.url("/default/c"), &sent).await;
    let got = sink.wait_for(1, WAIT).await;
    assert!(got[0].headers["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("application/cloudevents+json"));
    let got = got[0].event.as_ref().map(tests::without_backend_extensions);
    assert_eq!(got.as_ref(), Some(&sent));
}

async fn without_dead_letter_sink_failed_events_are_dropped_and_counted(b: Backend) {
    let failing = Sink::start(|_, _| Answer::status(400)).await;
    let d = Dispatcher::start_on(&b, &channel_yaml("c", &[("s", &failing.url(), "")]), &[]).await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    failing.wait_for(1, WAIT).await;
    let mut dropped = 0.0;
    for _ in 0..250 {
        dropped = d.metric("kn_channel_dropped_total").await;
        if dropped >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped, 1.0);
    assert_eq!(failing.count(), 1, "400 is not retried");
}

tests::conformance!(
    linear_backoff_then_dead_letter_with_error_extensions,
    exponential_backoff_timing,
    non_retryable_status_goes_straight_to_dead_letter_and_retryable_ones_retry,
    retry_after_is_capped_by_retry_after_max_and_ignored_without_it,
    each_attempt_is_bounded_by_the_timeout,
    replies_are_routed_to_the_reply_destination_even_a_channel,
    replies_without_destination_are_dropped_and_202_bodies_never_routed,
    failed_reply_dead_letters_the_original_naming_the_reply_destination,
    two_subscriptions_to_one_subscriber_get_two_deliveries,
    channel_delivery_applies_to_subscriptions_without_their_own,
    structured_delivery_when_asked,
    without_dead_letter_sink_failed_events_are_dropped_and_counted,
);
