//! `event-display` as a subscriber of the real dispatcher: it prints what
//! it receives, replies when asked, and fails its first requests when asked.

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tests::{bin_dir, channel_yaml, event, free_port, Dispatcher, HttpClient, Sink};

const WAIT: Duration = Duration::from_secs(15);

struct Display {
    child: Child,
    port: u16,
    out: tempfile::NamedTempFile,
}

impl Display {
    async fn start(args: &[&str]) -> Display {
        let port = free_port();
        let out = tempfile::NamedTempFile::new().expect("tempfile");
        let child = Command::new(bin_dir().join("event-display"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(out.reopen().expect("reopen"))
            .stderr(Stdio::null())
            .spawn()
            .expect("event-display starts");
        let d = Display { child, port, out };
        let client = HttpClient::new();
        let url = format!("http://127.0.0.1:{port}/healthz");
        let mut up = false;
        for _ in 0..200 {
            if client.get(&url).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(up, "event-display did not start");
        d
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_events_and_its_replies_are_routed() {
    let display = Display::start(&["--reply", "--reply-type", "dev.example.replied"]).await;
    let replies = Sink::accepting().await;
    let mut yaml = channel_yaml("c", &[("s", &display.url(), "")]);
    yaml.push_str(&format!("  reply: {{uri: \"{}\"}}\n", replies.url()));
    let d = Dispatcher::start(&yaml, &[]).await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("hello-1"))
        .await;
    let got = replies.wait_for(1, WAIT).await;
    let reply = got[0].event.clone().expect("a CloudEvent");
    assert_eq!(reply.ty, "dev.example.replied");
    assert_eq!(reply.id, "hello-1-reply");
    assert_eq!(reply.data.as_deref(), Some(&br#"{"id":"hello-1"}"#[..]));
    let printed = display.printed();
    assert!(printed.contains("☁️  cloudevents.Event"), "{printed}");
    assert!(printed.contains("  id: hello-1"), "{printed}");
    assert!(printed.contains("\"id\": \"hello-1\""), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_first_makes_the_dispatcher_retry() {
    let display = Display::start(&["--fail-first", "2", "--json"]).await;
    let d = Dispatcher::start(
        &channel_yaml(
            "c",
            &[("s", &display.url(), "{retry: 3, backoffDelay: PT0.05S}")],
        ),
        &[],
    )
    .await;
    d.client()
        .post_binary(&d.url("/default/c"), &event("e"))
        .await;
    assert!(
        tests::eventually(WAIT, || display.printed().lines().count() >= 3).await,
        "three attempts printed: {}",
        display.printed()
    );
    let mut delivered = 0.0;
    for _ in 0..100 {
        delivered = d
            .metric(r#"kn_channel_deliveries_total{namespace="default",channel="c",subscription="s",response_code_class="2xx"}"#)
            .await;
        if delivered >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, 1.0);
    assert_eq!(d.metric("kn_channel_retries_total").await, 2.0);
    // --json prints one structured event per line.
    let first = display
        .printed()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let v: serde_json::Value = serde_json::from_str(&first).expect("a JSON line");
    assert_eq!(v["id"], "e");
}

/// The README's flows walk-through with real event-display processes: three
/// `--reply-append` steps of a Sequence build up the `message` field, and a
/// `--filter-type` process passes one type into a Parallel branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_display_serves_as_sequence_steps_and_parallel_filters() {
    let steps = [
        Display::start(&["--reply", "--reply-append", " - step 1"]).await,
        Display::start(&["--reply", "--reply-append", " - step 2"]).await,
        Display::start(&["--reply", "--reply-append", " - step 3"]).await,
    ];
    let filter = Display::start(&["--filter-type", "dev.example.wanted", "--quiet"]).await;
    let done = Sink::accepting().await;
    let branch = Sink::accepting().await;
    let yaml = format!(
        r#"apiVersion: flows.knative.dev/v1
kind: Sequence
metadata: {{name: appender, namespace: default}}
spec:
  steps: [{{uri: "{}"}}, {{uri: "{}"}}, {{uri: "{}"}}]
  reply: {{uri: "{}"}}
---
apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {{name: picky, namespace: default}}
spec:
  branches:
  - filter: {{uri: "{}"}}
    subscriber: {{uri: "{}"}}
"#,
        steps[0].url(),
        steps[1].url(),
        steps[2].url(),
        done.url(),
        filter.url(),
        branch.url()
    );
    let d = Dispatcher::start(&yaml, &[]).await;
    let hello = channel_core::event::Event::new("m1", "/walkthrough", "dev.example.hello")
        .with_data(
            "application/json",
            &br#"{"id":1,"message":"Hello world!"}"#[..],
        );
    d.client()
        .post_binary(&d.url("/default/appender-kn-sequence-0"), &hello)
        .await;
    let got = done.wait_for(1, WAIT).await;
    let e = got[0].event.clone().expect("a CloudEvent");
    let data: serde_json::Value =
        serde_json::from_slice(e.data.as_deref().unwrap_or_default()).expect("JSON data");
    assert_eq!(data["message"], "Hello world! - step 1 - step 2 - step 3");
    assert_eq!(e.id, "m1-reply-reply-reply");

    for (id, ty) in [("w", "dev.example.wanted"), ("u", "dev.example.unwanted")] {
        let mut e = event(id);
        e.ty = ty.into();
        d.client()
            .post_binary(&d.url("/default/picky-kn-parallel"), &e)
            .await;
    }
    let got = branch.wait_for(1, WAIT).await;
    assert_eq!(got[0].id(), "w");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(branch.count(), 1, "the filter dropped the unwanted type");
}
