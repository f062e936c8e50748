//! Sequence and Parallel conformance: Knative's flows checked against the
//! real dispatcher of every backend (in-memory, NATS JetStream on a real
//! nats-server, Kafka on a real tansu broker), in embedded (`--manifests`)
//! mode. Each test body runs once per backend.
//!
//! A Sequence is one channel per step, each step's reply going into the
//! next channel; a Parallel is an ingress channel fanned out to branch
//! filters, each passing events into its branch channel whose subscriber
//! replies to the branch's (or the Parallel's) reply. The subscribers here
//! are real HTTP servers on loopback that transform what they receive.

use channel_core::event::Event;
use http::StatusCode;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tests::{event, Answer, Backend, Dispatcher, Received, Sink};

const WAIT: Duration = Duration::from_secs(30);

/// The path of a flow's first (Sequence) or ingress (Parallel) channel on
/// the dispatcher: the flow's address.
fn sequence_path(name: &str) -> String {
    format!("/default/{name}-kn-sequence-0")
}

fn parallel_path(name: &str) -> String {
    format!("/default/{name}-kn-parallel")
}

fn sequence_yaml(name: &str, steps: &[String], reply: &str) -> String {
    let mut out = format!(
        "---\napiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  steps:\n"
    );
    for step in steps {
        out.push_str(&format!("  - {{uri: \"{step}\"}}\n"));
    }
    if !reply.is_empty() {
        out.push_str(&format!("  reply: {reply}\n"));
    }
    out
}

/// A step that appends `-<tag>` to the event's data and sets its type to
/// `step.<tag>`, keeping the id (Knative's sequence example does the same
/// with a message field).
async fn transformer(tag: &'static str) -> Sink {
    Sink::start(move |r: &Received, _| {
        let mut e = r.event.clone().unwrap_or_else(|| event("?"));
        let data = e
            .data
            .as_ref()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        e.ty = format!("step.{tag}");
        e = e.with_data("text/plain", format!("{data}-{tag}").into_bytes());
        Answer::reply(&tests::without_backend_extensions(&e))
    })
    .await
}

fn text(e: &Event) -> String {
    e.data
        .as_ref()
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default()
}

async fn post(d: &Dispatcher, path: &str, e: &Event) -> StatusCode {
    d.client().post_binary(&d.url(path), e).await.0
}

fn input(id: &str, data: &str) -> Event {
    let mut e = event(id).with_data("text/plain", data.as_bytes().to_vec());
    e.ty = "input".into();
    e
}

async fn expect_ids(sink: &Sink, what: &str, want: &[String]) {
    let want: BTreeSet<String> = want.iter().cloned().collect();
    tests::eventually(WAIT, || {
        let got: BTreeSet<String> = sink.ids().into_iter().collect();
        want.is_subset(&got)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got: BTreeSet<String> = sink.ids().into_iter().collect();
    assert_eq!(got, want, "{what} received the wrong events");
    assert_eq!(sink.count(), want.len(), "{what}: duplicates");
}

async fn a_three_step_sequence_transforms_the_event_into_its_reply(b: Backend) {
    let steps = [
        transformer("a").await,
        transformer("b").await,
        transformer("c").await,
    ];
    let reply = Sink::accepting().await;
    let yaml = sequence_yaml(
        "pipeline",
        &steps.iter().map(Sink::url).collect::<Vec<_>>(),
        &format!("{{uri: \"{}\"}}", reply.url()),
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    for i in 0..3 {
        assert_eq!(
            post(
                &d,
                &sequence_path("pipeline"),
                &input(&format!("e{i}"), "x")
            )
            .await,
            StatusCode::ACCEPTED
        );
    }
    let got = reply.wait_for(3, WAIT).await;
    for r in &got {
        let e = r.event.as_ref().expect("an event");
        assert_eq!(text(e), "x-a-b-c", "each step saw the previous reply");
        assert_eq!(e.ty, "step.c");
    }
    expect_ids(
        &reply,
        "the reply",
        &["e0".into(), "e1".into(), "e2".into()],
    )
    .await;
    for (step, sink) in steps.iter().enumerate() {
        assert_eq!(sink.count(), 3, "step {step} ran once per event");
    }
    // The Sequence is listed with its address: its first channel.
    let status = d.status().await;
    let names: Vec<&str> = status["channels"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    for i in 0..3 {
        assert!(
            names.contains(&format!("pipeline-kn-sequence-{i}").as_str()),
            "{names:?}"
        );
    }
}

async fn editing_a_sequence_under_load_loses_nothing(b: Backend) {
    let first = transformer("a").await;
    let second = transformer("b").await;
    let replacement = transformer("b").await;
    let added = transformer("c").await;
    let reply = Sink::accepting().await;
    let reply_yaml = format!("{{uri: \"{}\"}}", reply.url());
    let yaml = sequence_yaml("edited", &[first.url(), second.url()], &reply_yaml);
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let url = d.url(&sequence_path("edited"));
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
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Step 1 changes its subscriber: the same subscription, new settings.
    d.rewrite(&sequence_yaml(
        "edited",
        &[first.url(), replacement.url()],
        &reply_yaml,
    ))
    .await;
    assert!(
        tests::eventually(WAIT, || replacement.count() > 0).await,
        "the changed step received nothing"
    );
    // A third step is appended: step 1 now replies into the new channel.
    d.rewrite(&sequence_yaml(
        "edited",
        &[first.url(), replacement.url(), added.url()],
        &reply_yaml,
    ))
    .await;
    assert!(
        tests::eventually(WAIT, || added.count() > 0).await,
        "the added step received nothing"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = producer.await.expect("producer");
    assert!(accepted.len() > 100, "load was applied: {}", accepted.len());
    tests::assert_all_delivered(&reply, &accepted, WAIT).await;
    tests::assert_all_delivered(&first, &accepted, WAIT).await;
    let shapes: BTreeSet<String> = reply
        .received()
        .iter()
        .filter_map(|r| r.event.as_ref().map(text))
        .collect();
    assert!(
        shapes.iter().any(|s| s.ends_with("-a-b-c")),
        "events after the edit went through the added step: {shapes:?}"
    );
    assert!(
        shapes
            .iter()
            .all(|s| s.ends_with("-a-b") || s.ends_with("-a-b-c")),
        "every event went through both original steps: {shapes:?}"
    );
}

/// A branch filter: answers 200 with the event (it passes) when its type is
/// `ty`, 200 with no body (it does not) otherwise.
async fn type_filter(ty: &'static str) -> Sink {
    Sink::start(move |r: &Received, _| match &r.event {
        Some(e) if e.ty == ty => Answer::reply(&tests::without_backend_extensions(e)),
        _ => Answer::status(200),
    })
    .await
}

/// A branch subscriber: replies with the event, its id suffixed by `tag`.
async fn tagger(tag: &'static str) -> Sink {
    Sink::start(move |r: &Received, _| {
        let mut e = r.event.clone().unwrap_or_else(|| event("?"));
        e.id = format!("{}-{tag}", e.id);
        Answer::reply(&tests::without_backend_extensions(&e))
    })
    .await
}

async fn a_parallel_routes_by_branch_filter_and_every_reply_arrives(b: Backend) {
    let (filter_a, filter_b) = (type_filter("a").await, type_filter("b").await);
    let (sub_a, sub_b, sub_all) = (tagger("A").await, tagger("B").await, tagger("ALL").await);
    let replies = Sink::accepting().await;
    let b_replies = Sink::accepting().await;
    let yaml = format!(
        r#"apiVersion: flows.knative.dev/v1
kind: Parallel
metadata: {{name: fan, namespace: default}}
spec:
  branches:
  - filter: {{uri: "{}"}}
    subscriber: {{uri: "{}"}}
  - filter: {{uri: "{}"}}
    subscriber: {{uri: "{}"}}
    reply: {{uri: "{}"}}
  - subscriber: {{uri: "{}"}}
  reply: {{uri: "{}"}}
"#,
        filter_a.url(),
        sub_a.url(),
        filter_b.url(),
        sub_b.url(),
        b_replies.url(),
        sub_all.url(),
        replies.url()
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    for (id, ty) in [("e1", "a"), ("e2", "b"), ("e3", "c")] {
        let mut e = event(id);
        e.ty = ty.into();
        assert_eq!(
            post(&d, &parallel_path("fan"), &e).await,
            StatusCode::ACCEPTED
        );
    }
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    expect_ids(&sub_a, "branch 0 (type a)", &s(&["e1"])).await;
    expect_ids(&sub_b, "branch 1 (type b)", &s(&["e2"])).await;
    expect_ids(&sub_all, "branch 2 (no filter)", &s(&["e1", "e2", "e3"])).await;
    expect_ids(
        &replies,
        "the Parallel's reply",
        &s(&["e1-A", "e1-ALL", "e2-ALL", "e3-ALL"]),
    )
    .await;
    expect_ids(&b_replies, "branch 1's own reply", &s(&["e2-B"])).await;
    for f in [&filter_a, &filter_b] {
        assert_eq!(f.count(), 3, "each filter sees every event");
    }
}

async fn a_trigger_delivers_to_a_sequence_that_replies_to_the_broker(b: Backend) {
    // The step's reply is a new event (a new id): on NATS, an event whose id
    // the broker's stream already holds is stored once (duplicateWindow).
    let step = Sink::start(|r: &Received, _| {
        let e = r.event.clone().unwrap_or_else(|| event("?"));
        let mut reply = Event::new(format!("{}-enriched", e.id), "/enricher", "step.enriched");
        reply = reply.with_data("text/plain", format!("{}-enriched", text(&e)).into_bytes());
        Answer::reply(&reply)
    })
    .await;
    let audit = Sink::accepting().await;
    let yaml = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: to-sequence, namespace: default}}
spec:
  broker: default
  filter: {{attributes: {{type: input}}}}
  subscriber: {{ref: {{apiVersion: flows.knative.dev/v1, kind: Sequence, name: enrich}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: audit, namespace: default}}
spec:
  broker: default
  filter: {{attributes: {{type: step.enriched}}}}
  subscriber: {{uri: "{}"}}
{}"#,
        audit.url(),
        sequence_yaml(
            "enrich",
            &[step.url()],
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}"
        )
    );
    let d = Dispatcher::start_on(&b, &yaml, &[]).await;
    assert_eq!(
        post(&d, "/brokers/default/default", &input("q1", "order")).await,
        StatusCode::ACCEPTED
    );
    assert!(
        tests::eventually(WAIT, || audit.count() >= 1).await,
        "nothing reached the audit trigger (the sequence's step ran {} times); log:\n{}",
        step.count(),
        d.log()
    );
    let got = audit.received();
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.id, "q1-enriched");
    assert_eq!(text(e), "order-enriched");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(audit.count(), 1);
    assert_eq!(
        step.count(),
        1,
        "the sequence's reply type is not re-sent to it"
    );
}

tests::conformance!(
    a_three_step_sequence_transforms_the_event_into_its_reply,
    editing_a_sequence_under_load_loses_nothing,
    a_parallel_routes_by_branch_filter_and_every_reply_arrives,
    a_trigger_delivers_to_a_sequence_that_replies_to_the_broker,
);

/// Write manifests the dispatcher must refuse, and return its `lastError`
/// (the previous configuration stays applied).
async fn refused(d: &Dispatcher, yaml: &str) -> String {
    let before = d.generation().await;
    let previous = d.status().await["lastError"].as_str().map(str::to_owned);
    let tmp = d.dir.path().join("bad.yaml.tmp");
    std::fs::write(&tmp, yaml).expect("write");
    std::fs::rename(&tmp, d.dir.path().join("manifests/channels.yaml")).expect("rename");
    for _ in 0..100 {
        let status = d.status().await;
        if let Some(e) = status["lastError"]
            .as_str()
            .filter(|e| Some(*e) != previous.as_deref())
        {
            assert_eq!(d.generation().await, before, "nothing was applied");
            return e.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the dispatcher accepted {yaml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_flows_are_refused_naming_resource_and_field() {
    let sink = Sink::accepting().await;
    let good = sequence_yaml("s", &[sink.url()], "");
    let d = Dispatcher::start(&good, &[]).await;

    let error = refused(&d, "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s, namespace: default}\nspec: {steps: []}\n").await;
    assert!(error.contains("Sequence default/s"), "{error}");
    assert!(error.contains("spec.steps"), "{error}");

    let error = refused(&d, "apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {name: p, namespace: default}\nspec:\n  branches:\n  - filter: {uri: \"http://127.0.0.1:1/\"}\n").await;
    assert!(error.contains("Parallel default/p"), "{error}");
    assert!(error.contains("spec.branches[0].subscriber"), "{error}");

    let error = refused(&d, "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s, namespace: default}\nspec:\n  steps: [{uri: \"http://127.0.0.1:1/\"}]\n  channelTemplate: {apiVersion: v1, kind: ConfigMap}\n").await;
    assert!(error.contains("spec.channelTemplate"), "{error}");

    // Still serving the good sequence.
    assert_eq!(
        post(&d, &sequence_path("s"), &event("still")).await,
        StatusCode::ACCEPTED
    );
    sink.wait_for(1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_referencing_nothing_is_a_problem_naming_the_step() {
    let sink = Sink::accepting().await;
    let yaml = format!(
        "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {{name: s, namespace: default}}\nspec:\n  steps:\n  - {{uri: \"{}\"}}\n  - {{ref: {{apiVersion: messaging.knative.dev/v1, kind: Channel, name: missing}}}}\n",
        sink.url()
    );
    let d = Dispatcher::start(&yaml, &[]).await;
    let status = d.status().await;
    let problems = status["problems"].as_array().cloned().unwrap_or_default();
    let p = problems
        .iter()
        .find(|p| p["kind"] == "Sequence" && p["name"] == "s")
        .unwrap_or_else(|| panic!("no problem for Sequence default/s: {status}"));
    let message = p["message"].as_str().unwrap_or_default();
    assert!(message.contains("spec.steps[1]"), "{p}");
    assert!(message.contains("missing"), "{p}");
    assert!(p["reason"].as_str().is_some_and(|r| !r.is_empty()), "{p}");
    // The step that resolves still runs; what reaches the broken one waits.
    assert_eq!(
        post(&d, &sequence_path("s"), &event("x")).await,
        StatusCode::ACCEPTED
    );
    sink.wait_for(1, WAIT).await;
}

/// `provisioner standalone` plans a Sequence and a Parallel onto the
/// in-memory dispatcher, which follows its contract; status shows each
/// flow's address and generated objects, and a broken step is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_mode_reports_flow_status_and_delivers_through_it() {
    use tests::provisioner::{is_ready, Provisioner, Slot};
    let steps = [transformer("a").await, transformer("b").await];
    let reply = Sink::accepting().await;
    let branch = tagger("X").await;
    let slot = Slot::new();
    let manifests = sequence_yaml("seq", &[steps[0].url(), steps[1].url()], &format!("{{uri: \"{}\"}}", reply.url()))
        + &format!(
            "---\napiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {{name: par, namespace: default}}\nspec:\n  branches: [{{subscriber: {{uri: \"{}\"}}}}]\n  reply: {{uri: \"{}\"}}\n",
            branch.url(),
            reply.url()
        )
        + "---\napiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: broken, namespace: default}\nspec:\n  steps: [{ref: {apiVersion: messaging.knative.dev/v1, kind: Channel, name: nowhere}}]\n";
    let p = Provisioner::start(
        &manifests,
        &[
            format!("--dispatcher-url=inmemory=http://{}", slot.ingress),
            format!("--dispatcher-admin=inmemory=http://{}", slot.admin),
        ],
    )
    .await;
    assert!(
        tests::eventually(WAIT, || p.contract("inmemory").exists()).await,
        "no contract; log:\n{}",
        p.log()
    );
    let d = slot.start(
        tests::bin_dir().join("inmemory-dispatcher"),
        Vec::new(),
        p.contract("inmemory"),
    );
    let seq = p
        .wait_resource("Sequence", "seq", WAIT, "Ready", is_ready)
        .await
        .expect("listed");
    let url = seq["status"]["address"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("an address: {seq:#}"))
        .to_owned();
    assert!(url.ends_with("/default/seq-kn-sequence-0"), "{url}");
    assert_eq!(
        seq["status"]["channelStatuses"].as_array().map(Vec::len),
        Some(2),
        "{seq:#}"
    );
    assert_eq!(
        seq["status"]["subscriptionStatuses"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{seq:#}"
    );
    for c in [
        "ChannelsReady",
        "SubscriptionsReady",
        "Addressable",
        "Ready",
    ] {
        let found = seq["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|x| x["type"] == c && x["status"] == "True"));
        assert!(found, "{c} True in {seq:#}");
    }
    let par = p
        .wait_resource("Parallel", "par", WAIT, "Ready", is_ready)
        .await
        .expect("listed");
    assert!(par["status"]["ingressChannelStatus"].is_object(), "{par:#}");
    assert_eq!(
        par["status"]["branchStatuses"].as_array().map(Vec::len),
        Some(1),
        "{par:#}"
    );

    let broken = p
        .wait_resource("Sequence", "broken", WAIT, "listed", |r| r.is_some())
        .await
        .expect("listed");
    assert_eq!(broken["ready"], "False", "{broken:#}");
    let subs = broken["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "SubscriptionsReady")
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(subs["status"], "False", "{broken:#}");
    assert!(
        subs["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.steps[0]") && m.contains("nowhere")),
        "{broken:#}"
    );

    let mut e = input("s1", "x");
    e.ty = "input".into();
    for _ in 0..50 {
        if d.client().post_binary(&url, &e).await.0 == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let par_url = par["status"]["address"]["url"]
        .as_str()
        .expect("address")
        .to_owned();
    for _ in 0..50 {
        if d.client().post_binary(&par_url, &event("p1")).await.0 == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_ids(&reply, "the flows' reply", &["s1".into(), "p1-X".into()]).await;
    let out = p.status_command(&[]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("Sequence") && table.contains("Parallel"),
        "{table}"
    );
}
