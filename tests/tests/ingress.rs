//! Ingress of the real `inmemory-dispatcher`: every status path, both
//! content modes, host routing, h2c, and events arriving unchanged.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::time::Duration;
use tests::{channel_yaml, event, Dispatcher, HttpClient, Sink};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_structured_events_arrive_unchanged() {
    let sink = Sink::accepting().await;
    let d = Dispatcher::start(&channel_yaml("orders", &[("s", &sink.url(), "")]), &[]).await;
    let url = d.url("/default/orders");

    let binary = event("b-1")
        .with_data(
            "application/octet-stream",
            Bytes::from_static(&[0, 1, 2, 255, 254]),
        )
        .with_extension("comexample", "a \"quoted\" 100% value")
        .with_extension(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
    let (status, _, _) = d.client().post_binary(&url, &binary).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let mut structured = event("s-1");
    structured.subject = Some("ünïcode subject".into());
    structured.time = Some("2024-05-01T12:00:00Z".into());
    let (status, _, _) = d.client().post_structured(&url, &structured).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let got = sink.wait_for(2, WAIT).await;
    let first = got
        .iter()
        .find(|r| r.id() == "b-1")
        .expect("binary event delivered");
    assert_eq!(
        first.event.as_ref(),
        Some(&binary),
        "attributes and data unchanged"
    );
    assert_eq!(
        first.body.as_ref(),
        &[0, 1, 2, 255, 254],
        "data bytes unchanged"
    );
    assert_eq!(first.headers["prefer"], "reply");
    let second = got
        .iter()
        .find(|r| r.id() == "s-1")
        .expect("structured event delivered");
    // Delivered in binary mode (the default), same event.
    assert_eq!(second.event.as_ref(), Some(&structured));
    assert!(second.headers.contains_key("ce-id"));
    assert_eq!(second.body.as_ref(), br#"{"id":"s-1"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_path() {
    let sink = Sink::accepting().await;
    let d = Dispatcher::start(
        &channel_yaml("orders", &[("s", &sink.url(), "")]),
        &["--max-body-bytes", "1024"],
    )
    .await;
    let c = d.client();
    let url = d.url("/default/orders");
    let post = |headers: &[(&str, &str)], body: &'static [u8]| {
        let mut req = Request::post(url.as_str());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::new(Bytes::from_static(body)))
            .expect("request")
    };
    let ce = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];

    // 202 after storing.
    let (status, _, _) = c.send(post(&ce, b"x")).await.expect("answered");
    assert_eq!(status, StatusCode::ACCEPTED);

    // 400: not a CloudEvent, malformed JSON, missing id, bad specversion, bad attribute name.
    for (headers, body) in [
        (vec![("content-type", "application/json")], &b"{}"[..]),
        (
            vec![("content-type", "application/cloudevents+json")],
            &b"{not json"[..],
        ),
        (
            vec![("content-type", "application/cloudevents+json")],
            &br#"{"specversion":"1.0","source":"/s","type":"t"}"#[..],
        ),
        (
            vec![
                ("ce-specversion", "0.3"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ],
            &b""[..],
        ),
        (
            vec![
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
                ("ce-Bad_Name", "x"),
            ],
            &b""[..],
        ),
    ] {
        let (status, _, body) = c.send(post(&headers, body)).await.expect("answered");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert!(!body.is_empty(), "a 400 says why");
    }

    // 404: unknown channel.
    let req = Request::post(d.url("/default/nope"))
        .header("ce-specversion", "1.0")
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(
        c.send(req).await.expect("answered").0,
        StatusCode::NOT_FOUND
    );

    // 405 with Allow.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let req = Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let (status, headers, _) = c.send(req).await.expect("answered");
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(headers["allow"], "POST, OPTIONS");
    }

    // OPTIONS: the webhook validation handshake.
    let req = Request::options(url.as_str())
        .header("webhook-request-origin", "producer.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, _) = c.send(req).await.expect("answered");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["allow"], "POST, OPTIONS");
    assert_eq!(headers["webhook-allowed-origin"], "producer.example.com");
    assert_eq!(headers["webhook-allowed-rate"], "*");

    // 413 above the maximum body.
    let big: &'static [u8] = Box::leak(vec![b'x'; 2048].into_boxed_slice());
    let (status, _, _) = c.send(post(&ce, big)).await.expect("answered");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Only the one valid event was delivered.
    sink.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 1);
    assert_eq!(
        d.metric(r#"kn_channel_events_received_total{namespace="default",channel="orders",response_code_class="4xx"}"#)
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_knative_host_and_serves_h2c() {
    let sink = Sink::accepting().await;
    let d = Dispatcher::start(&channel_yaml("orders", &[("s", &sink.url(), "")]), &[]).await;
    let mut req = Request::post(d.url("/any/path"))
        .header("host", "orders-kn-channel.default.svc.cluster.local")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let body = channel_core::event::encode_binary(&event("by-host"), req.headers_mut());
    *req.body_mut() = Full::new(body);
    assert_eq!(
        d.client().send(req).await.expect("answered").0,
        StatusCode::ACCEPTED
    );

    let h2 = HttpClient::h2c();
    let (status, _, _) = h2
        .post_binary(&d.url("/default/orders"), &event("over-h2c"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    sink.wait_for(2, WAIT).await;
    let mut ids = sink.ids();
    ids.sort();
    assert_eq!(ids, ["by-host", "over-h2c"]);
}
