//! The source adapter end to end: a real `source-adapter` on Knative YAML,
//! real HTTP sinks on loopback, a real `inmemory-dispatcher` for a broker.

use std::collections::BTreeSet;
use std::time::Duration;
use tests::sources::Adapter;
use tests::{Answer, Dispatcher, Received, Sink};

fn ping(name: &str, schedule: &str, sink: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  schedule: '{schedule}'\n  sink: {sink}\n{extra}"
    )
}

fn times(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .filter_map(|r| r.event.as_ref()?.time.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_source_sends_knatives_events_on_its_schedule() {
    let sink = Sink::accepting().await;
    let manifests = ping(
        "tick",
        "@every 1s",
        &format!("{{uri: '{}'}}", sink.url()),
        "  contentType: application/json\n  data: '{\"message\": \"hello\"}'\n  ceOverrides: {extensions: {team: shop}}\n",
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    let got = sink.wait_for(3, Duration::from_secs(15)).await;
    assert!(got.len() >= 3, "three ticks: {}", adapter.log());
    for r in &got[..3] {
        let e = r.event.as_ref().expect("a CloudEvent");
        assert_eq!(e.ty, "dev.knative.sources.ping");
        assert_eq!(e.source, "/apis/v1/namespaces/shop/pingsources/tick");
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(e.data.as_deref(), Some(&b"{\"message\": \"hello\"}"[..]));
        assert_eq!(e.extension("team").as_deref(), Some("shop"));
    }
    // One event per tick, ticks on whole seconds.
    let t = times(&got);
    let unique: BTreeSet<&String> = t.iter().collect();
    assert_eq!(unique.len(), t.len(), "no tick twice: {t:?}");
    assert!(
        t.iter().all(|t| t.ends_with('Z') && !t.contains('.')),
        "{t:?}"
    );

    let status = adapter.status().await;
    let source = &status["sources"][0];
    assert_eq!(source["kind"], "PingSource");
    assert_eq!(source["state"], "running");
    assert!(source["sent"].as_u64().unwrap_or(0) >= 3, "{status:#}");
    let metrics = adapter.metrics().await;
    assert!(
        metrics.contains(
            "kn_source_events_sent_total{namespace=\"shop\",kind=\"PingSource\",name=\"tick\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_reaches_a_trigger_through_a_broker() {
    let sink = Sink::accepting().await;
    let broker = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: pings, namespace: shop}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: dev.knative.sources.ping}}}}\n  subscriber: {{uri: '{}'}}\n",
        sink.url()
    );
    let dispatcher = Dispatcher::start(&broker, &[]).await;
    // The adapter reads the same broker, so the sink names it by reference
    // and is routed to the dispatcher that serves it.
    let manifests = format!(
        "{broker}{}",
        ping(
            "to-broker",
            "@every 1s",
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
            "  data: '{}'\n"
        )
    );
    let adapter = Adapter::start(
        &manifests,
        &[
            "--dispatcher-url",
            &format!("inmemory=http://{}", dispatcher.ingress),
        ],
    )
    .await;
    let got = sink.wait_for(2, Duration::from_secs(15)).await;
    assert!(got.len() >= 2, "{}\n{}", adapter.log(), dispatcher.log());
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.sources.ping");
    let status = adapter.status().await;
    assert_eq!(
        status["sources"][0]["sink"],
        format!("http://{}/brokers/shop/default", dispatcher.ingress)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_is_retried_then_the_event_arrives() {
    // Every first attempt fails with 503; the retry succeeds.
    let flaky = Sink::start(|_, n| {
        if n % 2 == 1 {
            Answer::status(503)
        } else {
            Answer::status(202)
        }
    })
    .await;
    let manifests = ping(
        "flaky",
        "@every 1s",
        &format!("{{uri: '{}'}}", flaky.url()),
        "  delivery: {retry: 3, backoffPolicy: linear, backoffDelay: PT0.1S}\n",
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    let got = flaky.wait_for(4, Duration::from_secs(15)).await;
    assert!(got.len() >= 4, "{}", adapter.log());
    // Attempts come in pairs: the same event twice (503, then 202).
    assert_eq!(got[0].id(), got[1].id(), "the retry is the same event");
    assert_eq!(got[2].id(), got[3].id());
    assert_ne!(got[0].id(), got[2].id());
    let metrics = adapter.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kn_source_delivery_retries_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let retried = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "kn_source_events_retried_total{namespace=\"shop\",kind=\"PingSource\",name=\"flaky\"}",
            )
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(retried >= 2, "retries per source: {metrics}");
    assert!(
        adapter.status().await["sources"][0]["retried"]
            .as_u64()
            .unwrap_or(0)
            >= 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_cron_job_source_runs_as_a_ping_source() {
    let sink = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: sources.eventing.knative.dev/v1alpha1\nkind: CronJobSource\nmetadata: {{name: test-cronjob-source, namespace: default}}\nspec:\n  schedule: '@every 1s'\n  data: '{{\"message\": \"Hello world!\"}}'\n  sink: {{uri: '{}'}}\n",
        sink.url()
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    assert!(!got.is_empty(), "{}", adapter.log());
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.sources.ping");
    assert_eq!(
        e.source,
        "/apis/v1/namespaces/default/pingsources/test-cronjob-source"
    );
    assert_eq!(
        e.data.as_deref(),
        Some(&b"{\"message\": \"Hello world!\"}"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adapters_send_each_tick_once() {
    let sink = Sink::accepting().await;
    let manifests: String = (0..6)
        .map(|i| {
            ping(
                &format!("p{i}"),
                "@every 1s",
                &format!("{{uri: '{}'}}", sink.url()),
                "",
            )
        })
        .collect();
    let a = Adapter::start(&manifests, &["--replicas", "2", "--replica-index", "0"]).await;
    let b = Adapter::start(&manifests, &["--replicas", "2", "--replica-index", "1"]).await;
    let (sa, sb) = (a.status().await, b.status().await);
    let count = |s: &serde_json::Value| s["sources"].as_array().map_or(0, Vec::len);
    assert_eq!(count(&sa) + count(&sb), 6, "{sa:#}\n{sb:#}");
    assert!(count(&sa) > 0 && count(&sb) > 0, "both take a share");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = sink.received();
    let mut seen = BTreeSet::new();
    for r in &got {
        let e = r.event.as_ref().expect("event");
        let key = (e.source.clone(), e.time.clone());
        assert!(seen.insert(key.clone()), "tick sent twice: {key:?}");
    }
    assert!(seen.len() >= 12, "every source ticks: {}", seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sink_is_taken_without_a_restart_and_a_removed_source_stops() {
    let first = Sink::accepting().await;
    let second = Sink::accepting().await;
    let at = |sink: &Sink| {
        ping(
            "moving",
            "@every 1s",
            &format!("{{uri: '{}'}}", sink.url()),
            "",
        )
    };
    let adapter = Adapter::start(&at(&first), &[]).await;
    assert!(!first.wait_for(1, Duration::from_secs(10)).await.is_empty());
    adapter.rewrite(&at(&second));
    assert!(
        !second.wait_for(2, Duration::from_secs(10)).await.is_empty(),
        "{}",
        adapter.log()
    );
    assert!(
        adapter.log().contains("source updated in place"),
        "{}",
        adapter.log()
    );
    adapter.rewrite("");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = second.count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(second.count(), before, "a removed source sends nothing");
    assert_eq!(adapter.status().await["sources"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_source_runs_its_command_with_the_sink_in_its_environment() {
    let sink = Sink::accepting().await;
    // A "heartbeats" program in POSIX sh: posts a binary-mode CloudEvent
    // to $K_SINK with the overrides it was given, then exits (and is run
    // again by the adapter).
    let script = r#"curl -s -o /dev/null -X POST "$K_SINK" -H "ce-specversion: 1.0" -H "ce-id: hb-$$" -H "ce-source: /heartbeats" -H "ce-type: dev.knative.eventing.samples.heartbeat" -H "content-type: application/json" -d "{\"overrides\": $K_CE_OVERRIDES, \"label\": \"$LABEL\"}""#;
    let manifests = format!(
        "apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {{name: heartbeats, namespace: shop}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: hb\n        image: example.com/heartbeats\n        command: [/bin/sh, -c]\n        args: ['{}']\n        env: [{{name: LABEL, value: beat}}]\n  ceOverrides: {{extensions: {{team: shop}}}}\n  sink: {{uri: '{}'}}\n",
        script.replace('\'', "''"),
        sink.url()
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    let got = sink.wait_for(2, Duration::from_secs(20)).await;
    assert!(
        got.len() >= 2,
        "restarted after it exits: {}",
        adapter.log()
    );
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.eventing.samples.heartbeat");
    let data: serde_json::Value =
        serde_json::from_slice(e.data.as_deref().unwrap_or_default()).expect("json");
    assert_eq!(data["overrides"]["extensions"]["team"], "shop");
    assert_eq!(data["label"], "beat");
    let status = adapter.status().await;
    assert!(
        status["sources"][0]["restarts"].as_u64().unwrap_or(0) >= 1,
        "{status:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_sources_are_reported_and_the_rest_runs() {
    let sink = Sink::accepting().await;
    let manifests = format!(
        "{}{}apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {{name: image-only, namespace: shop}}\nspec:\n  template: {{spec: {{containers: [{{image: gcr.io/x/heartbeats}}]}}}}\n  sink: {{uri: 'http://x/'}}\n",
        ping("fine", "@every 1s", &format!("{{uri: '{}'}}", sink.url()), ""),
        ping(
            "lost",
            "@every 1s",
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: missing}}",
            "---\n"
        ),
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    assert!(!sink.wait_for(1, Duration::from_secs(10)).await.is_empty());
    let status = adapter.status().await;
    let problems = status["problems"].to_string();
    assert!(
        problems.contains("PingSource shop/lost") && problems.contains("spec.sink"),
        "{problems}"
    );
    assert!(
        problems.contains("ContainerSource shop/image-only")
            && problems.contains("LocalRunUnavailable"),
        "{problems}"
    );
    assert_eq!(status["sources"].as_array().map(Vec::len), Some(1));

    // A bad edit keeps what runs, and says why.
    adapter.rewrite("apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: x}\nspec: {schedule: 'not cron', sink: {uri: 'http://x/'}}\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let status = adapter.status().await;
    assert!(
        status["lastError"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.schedule"),
        "{status:#}"
    );
    assert_eq!(
        status["sources"].as_array().map(Vec::len),
        Some(1),
        "still running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_provisioner_writes_the_sources_contract_and_reports_status() {
    use tests::provisioner::{is_ready, Provisioner, Slot};
    const WAIT: Duration = Duration::from_secs(30);
    let sink = Sink::accepting().await;
    let slot = Slot::new();
    let adapter_admin: std::net::SocketAddr = format!("127.0.0.1:{}", tests::free_port())
        .parse()
        .expect("addr");
    let manifests = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: pings, namespace: shop}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n{}{}",
        sink.url(),
        ping(
            "hello",
            "@every 1s",
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}",
            "  data: '{}'\n"
        ),
        ping(
            "lost",
            "@every 1s",
            "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: missing}}",
            ""
        ),
    );
    let p = Provisioner::start(
        &manifests,
        &[
            format!("--dispatcher-url=inmemory=http://{}", slot.ingress),
            format!("--dispatcher-admin=inmemory=http://{}", slot.admin),
            format!("--source-adapter-admin=http://{adapter_admin}"),
        ],
    )
    .await;
    let sources = p.contract("inmemory").with_file_name("sources.json");
    assert!(
        tests::eventually(WAIT, || sources.exists() && p.contract("inmemory").exists()).await,
        "no contracts; log:\n{}",
        p.log()
    );
    let _d = slot.start(
        tests::bin_dir().join("inmemory-dispatcher"),
        Vec::new(),
        p.contract("inmemory"),
    );
    let adapter = Adapter::start_on_contract(sources.clone(), adapter_admin).await;
    let contract: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sources).expect("read")).expect("json");
    assert_eq!(
        contract["sources"][0]["sink"],
        format!("http://{}/brokers/shop/default", slot.ingress),
        "the broker's address in standalone mode: {contract:#}"
    );
    assert!(
        !sink.wait_for(2, WAIT).await.is_empty(),
        "{}\n{}",
        adapter.log(),
        p.log()
    );
    let hello = p
        .wait_resource("PingSource", "hello", WAIT, "Ready", is_ready)
        .await
        .expect("listed");
    assert_eq!(
        hello["status"]["sinkUri"],
        format!("http://{}/brokers/shop/default", slot.ingress)
    );
    let conditions = hello["status"]["conditions"].to_string();
    assert!(
        conditions.contains("SinkProvided") && conditions.contains("Deployed"),
        "{conditions}"
    );
    let lost = p.resource("PingSource", "lost").await.expect("listed");
    let sink_provided = lost["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "SinkProvided"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(sink_provided["status"], "False", "{lost:#}");
    assert!(
        sink_provided["message"]
            .as_str()
            .unwrap_or_default()
            .contains("missing"),
        "{lost:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_binding_runs_a_local_program_through_provisioner_exec() {
    use tests::provisioner::{provisioner_bin, Provisioner};
    const WAIT: Duration = Duration::from_secs(30);
    let sink = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: sources.knative.dev/v1\nkind: SinkBinding\nmetadata: {{name: producer, namespace: shop}}\nspec:\n  subject: {{apiVersion: apps/v1, kind: Deployment, name: producer}}\n  sink: {{uri: '{}'}}\n  ceOverrides: {{extensions: {{team: shop}}}}\n",
        sink.url()
    );
    let p = Provisioner::start(&manifests, &[]).await;
    let dir = p
        .contract("inmemory")
        .parent()
        .expect("contracts dir")
        .to_path_buf();
    assert!(
        tests::eventually(WAIT, || dir.join("bindings.json").exists()).await,
        "{}",
        p.log()
    );
    let heartbeats = tests::build_bin("sources", "heartbeats");
    let exec_dir = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(provisioner_bin())
            .arg("exec")
            .arg("--contracts-dir")
            .arg(&exec_dir)
            .args(["--binding", "shop/producer", "--"])
            .arg(&heartbeats)
            .args(["--count", "2", "--period", "100ms", "--label", "local"])
            .output()
    })
    .await
    .expect("joined")
    .expect("provisioner exec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.eventing.samples.heartbeat");
    assert_eq!(e.extension("team").as_deref(), Some("shop"));
    let data: serde_json::Value =
        serde_json::from_slice(e.data.as_deref().unwrap_or_default()).expect("json");
    assert_eq!(data["label"], "local");
    // An unknown binding is named.
    let out = std::process::Command::new(provisioner_bin())
        .arg("exec")
        .arg("--contracts-dir")
        .arg(&dir)
        .args(["--binding", "shop/nope", "--", "true"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("shop/nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_sends_the_pings_to_the_dead_letter_sink_and_counts_them() {
    let dead = Sink::accepting().await;
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}/", tests::free_port());
    let manifests = ping(
        "to-nowhere",
        "@every 1s",
        &format!("{{uri: '{down}'}}"),
        &format!(
            "  delivery: {{retry: 1, backoffPolicy: linear, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
            dead.url()
        ),
    );
    let adapter = Adapter::start(&manifests, &[]).await;
    let got = dead.wait_for(2, Duration::from_secs(15)).await;
    assert!(got.len() >= 2, "{}", adapter.log());
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.sources.ping");
    // Knative's dead-letter extensions say why.
    assert!(e.extension("knativeerrordest").is_some(), "{e:?}");
    let status = adapter.status().await;
    assert!(
        status["sources"][0]["failed"].as_u64().unwrap_or(0) >= 2,
        "dead-lettered events count as failed: {status:#}"
    );
    assert_eq!(status["sources"][0]["sent"], 0);
}
