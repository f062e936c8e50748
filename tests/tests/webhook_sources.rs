//! GitHubSource and GitLabSource end to end: the standalone provisioner
//! registers the webhooks with a local fake GitHub or GitLab API (which
//! checks the request shapes they document), the fake delivers signed
//! webhooks the way GitHub and GitLab do to the real `source-adapter`, and
//! the events reach a real HTTP sink.

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use tests::forges::{self, FakeGitHub, FakeGitLab};
use tests::provisioner::{is_ready, Provisioner};
use tests::sources::Adapter;
use tests::{Answer, Sink};

const WAIT: Duration = Duration::from_secs(30);
const ACCESS: &str = "ghp_access";
const SECRET: &str = "s3cret-token";

/// A secrets directory with Secret `shop/<name>` holding both tokens.
fn secrets(dir: &Path, name: &str) {
    let secret = dir.join("shop").join(name);
    std::fs::create_dir_all(&secret).expect("mkdir");
    std::fs::write(secret.join("accessToken"), format!("{ACCESS}\n")).expect("write");
    std::fs::write(secret.join("secretToken"), SECRET).expect("write");
}

fn github_source(api: &str, events: &str, sink: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1alpha1\nkind: GitHubSource\nmetadata: {{name: repo-events, namespace: shop}}\nspec:\n  ownerAndRepository: knative/docs\n  eventTypes: {events}\n  accessToken: {{secretKeyRef: {{name: github, key: accessToken}}}}\n  secretToken: {{secretKeyRef: {{name: github, key: secretToken}}}}\n  githubAPIURL: {api}\n  sink: {{uri: '{sink}'}}\n  ceOverrides: {{extensions: {{team: docs}}}}\n"
    )
}

/// Provisioner and adapter on one contracts and secrets directory; the
/// webhooks are registered under the adapter's listener.
async fn standalone(manifests: &str, secrets_dir: &Path) -> (Provisioner, Adapter) {
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", tests::free_port())
        .parse()
        .expect("addr");
    let webhook = format!("127.0.0.1:{}", tests::free_port());
    let p = Provisioner::start(
        manifests,
        &[
            format!("--source-adapter-admin=http://{admin}"),
            format!("--webhook-base-url=http://{webhook}"),
            format!("--secrets-dir={}", secrets_dir.display()),
        ],
    )
    .await;
    let contract = p.contract("inmemory").with_file_name("sources.json");
    assert!(
        tests::eventually(WAIT, || contract.exists()).await,
        "no sources contract:\n{}",
        p.log()
    );
    let secrets_flag = secrets_dir.display().to_string();
    let adapter = Adapter::start_on_contract_with(
        contract,
        admin,
        &[
            "--secrets-dir",
            &secrets_flag,
            "--webhook-listen",
            &webhook,
            "--max-webhook-bytes",
            "65536",
        ],
    )
    .await;
    (p, adapter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_source_registers_its_webhook_and_forwards_only_signed_deliveries() {
    let github = FakeGitHub::start(ACCESS).await;
    github.add_repo("knative/docs");
    let sink = Sink::accepting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    secrets(dir.path(), "github");
    let manifests = github_source(&github.url(), "[push, issues]", &sink.url());
    let (p, adapter) = standalone(&manifests, dir.path()).await;

    // Registered as GitHub wants it: JSON deliveries signed with the
    // secret token, to the adapter's URL for the source.
    let ready = p
        .wait_resource("GitHubSource", "repo-events", WAIT, "Ready", is_ready)
        .await
        .expect("listed");
    let hooks = github.hooks("knative/docs");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(hook.url, adapter.webhook_url("shop", "repo-events"));
    assert_eq!(hook.events, ["issues", "push"]);
    assert_eq!(hook.content_type, "json");
    assert_eq!(hook.secret.as_deref(), Some(SECRET));
    assert_eq!(
        ready["status"]["webhookIDKey"],
        hook.id.to_string(),
        "{ready:#}"
    );
    let creation = github
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("a POST");
    assert_eq!(creation.header("authorization"), Some("Bearer ghp_access"));

    // A push, as GitHub delivers it.
    let delivered = github
        .deliver(
            "knative/docs",
            hook.id,
            "push",
            &forges::github_push_payload("knative/docs"),
        )
        .await;
    assert_eq!(delivered.status, 200, "{}", delivered.body);
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().expect("a CloudEvent");
    assert_eq!(e.ty, "dev.knative.source.github.push");
    assert_eq!(e.source, "https://github.com/knative/docs");
    assert_eq!(e.id, delivered.delivery_id);
    assert!(
        e.subject.as_deref().is_some_and(|s| s.contains("...")),
        "{e:?}"
    );
    assert_eq!(e.extension("team").as_deref(), Some("docs"));
    let payload: serde_json::Value =
        serde_json::from_slice(e.data.as_deref().expect("data")).expect("JSON data");
    assert_eq!(payload["repository"]["full_name"], "knative/docs");

    // Refused before anything is sent on: unsigned, badly signed, signed
    // with another secret. A ping is answered; an event type the source
    // does not ask for is acknowledged and dropped; malformed JSON is 400.
    let push = forges::github_push_payload("knative/docs");
    let mut unsigned = github.delivery_request("knative/docs", hook.id, "push", &push);
    unsigned.remove_header("x-hub-signature-256");
    assert_eq!(unsigned.send().await.status, 401);
    let mut tampered = github.delivery_request("knative/docs", hook.id, "push", &push);
    tampered.body.extend_from_slice(b" ");
    assert_eq!(tampered.send().await.status, 401);
    let mut other = github.delivery_request("knative/docs", hook.id, "push", &push);
    other.set_header(
        "x-hub-signature-256",
        &forges::sign_github(b"other", &other.body),
    );
    assert_eq!(other.send().await.status, 401);
    let ping = github
        .delivery_request(
            "knative/docs",
            hook.id,
            "ping",
            &forges::github_ping_payload(hook.id),
        )
        .send()
        .await;
    assert_eq!((ping.status, ping.body.trim()), (200, "pong"));
    let release = github
        .delivery_request(
            "knative/docs",
            hook.id,
            "release",
            &json!({"action": "published"}),
        )
        .send()
        .await;
    assert_eq!(release.status, 202, "{}", release.body);
    let mut garbage = github.delivery_request("knative/docs", hook.id, "push", &push);
    garbage.body = b"{not json".to_vec();
    garbage.set_header(
        "x-hub-signature-256",
        &forges::sign_github(SECRET.as_bytes(), &garbage.body),
    );
    assert_eq!(garbage.send().await.status, 400);
    let mut big = github.delivery_request("knative/docs", hook.id, "push", &push);
    big.body = format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000)).into_bytes();
    big.set_header(
        "x-hub-signature-256",
        &forges::sign_github(SECRET.as_bytes(), &big.body),
    );
    assert_eq!(big.send().await.status, 413);
    let issue = github
        .deliver(
            "knative/docs",
            hook.id,
            "issues",
            &forges::github_issues_payload("knative/docs", 7),
        )
        .await;
    assert_eq!(issue.status, 200, "{}", issue.body);
    let got = sink.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_all = sink.received();
    assert_eq!(got_all.len(), 2, "only the push and the issue: {got:?}");
    let e = got_all[1].event.as_ref().expect("event");
    assert_eq!(
        (e.ty.as_str(), e.subject.as_deref()),
        ("dev.knative.source.github.issues", Some("7"))
    );
    let metrics = adapter.metrics().await;
    for line in [
        "kn_source_webhook_rejected_total{namespace=\"shop\",kind=\"GitHubSource\",name=\"repo-events\"} 5",
        "kn_source_events_ignored_total{namespace=\"shop\",kind=\"GitHubSource\",name=\"repo-events\"} 2",
        "kn_source_events_sent_total{namespace=\"shop\",kind=\"GitHubSource\",name=\"repo-events\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    assert!(
        !adapter.log().contains(SECRET) && !p.log().contains(SECRET) && !p.log().contains(ACCESS),
        "a token was logged"
    );

    // An edit updates the same hook; removing the source deletes it.
    p.rewrite(&github_source(
        &github.url(),
        "[push, issues, pull_request]",
        &sink.url(),
    ));
    assert!(
        tests::eventually(WAIT, || github
            .hooks("knative/docs")
            .first()
            .is_some_and(|h| h.events.len() == 3 && h.id == hook.id))
        .await,
        "{:?}\n{}",
        github.hooks("knative/docs"),
        p.log()
    );
    p.rewrite("");
    assert!(
        tests::eventually(WAIT, || github.hooks("knative/docs").is_empty()).await,
        "hook not deleted:\n{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_source_without_access_reports_why_and_registers_once_fixed() {
    let github = FakeGitHub::start("the-right-token").await;
    github.add_repo("knative/docs");
    let sink = Sink::accepting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    secrets(dir.path(), "github");
    let manifests = github_source(&github.url(), "[push]", &sink.url());
    let (p, _adapter) = standalone(&manifests, dir.path()).await;
    let failed = p
        .wait_resource(
            "GitHubSource",
            "repo-events",
            WAIT,
            "WebhookRegistered=False",
            |r| {
                r.and_then(|r| r["status"]["conditions"].as_array().cloned())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c["type"] == "WebhookRegistered"
                                && c["status"] == "False"
                                && c["reason"] == "Unauthorized"
                        })
                    })
            },
        )
        .await
        .expect("listed");
    assert_eq!(failed["ready"], "False", "{failed:#}");
    // The right token: registered at the next attempt (the token is part
    // of what a registration is computed from).
    std::fs::write(
        dir.path().join("shop/github/accessToken"),
        "the-right-token",
    )
    .expect("write");
    p.wait_resource("GitHubSource", "repo-events", WAIT, "Ready", is_ready)
        .await;
    assert_eq!(github.hooks("knative/docs").len(), 1);
}

fn gitlab_source(project_url: &str, events: &str, sink: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1alpha1\nkind: GitLabSource\nmetadata: {{name: project-events, namespace: shop}}\nspec:\n  projectUrl: {project_url}\n  eventTypes: {events}\n  accessToken: {{secretKeyRef: {{name: gitlab, key: accessToken}}}}\n  secretToken: {{secretKeyRef: {{name: gitlab, key: secretToken}}}}\n  sslverify: false\n  sink: {{uri: '{sink}'}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_source_registers_its_project_hook_and_checks_the_token() {
    let gitlab = FakeGitLab::start(ACCESS).await;
    let project = gitlab.add_project("group/project");
    let project_url = gitlab.project_url("group/project");
    let sink = Sink::accepting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    secrets(dir.path(), "gitlab");
    let manifests = gitlab_source(
        &project_url,
        "[push_events, merge_requests_events]",
        &sink.url(),
    );
    let (p, adapter) = standalone(&manifests, dir.path()).await;
    let ready = p
        .wait_resource("GitLabSource", "project-events", WAIT, "Ready", is_ready)
        .await
        .expect("listed");
    let hooks = gitlab.hooks("group/project");
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(hook.project_id, project);
    assert_eq!(hook.url, adapter.webhook_url("shop", "project-events"));
    assert_eq!(hook.token.as_deref(), Some(SECRET));
    assert!(hook.push_events && hook.merge_requests_events && !hook.issues_events);
    assert!(!hook.enable_ssl_verification);
    assert_eq!(ready["status"]["webhookIDKey"], hook.id.to_string());

    let push = gitlab
        .deliver(
            "group/project",
            hook.id,
            "Push Hook",
            &forges::gitlab_push_payload(&project_url),
        )
        .await;
    assert_eq!(push.status, 200, "{}", push.body);
    let got = sink.wait_for(1, WAIT).await;
    let e = got[0].event.as_ref().expect("event");
    assert_eq!(e.ty, "dev.knative.sources.gitlab.push");
    assert_eq!(e.source, project_url);
    assert_eq!(e.id, push.delivery_id);
    assert!(
        e.subject.as_deref().is_some_and(|s| s.starts_with("refs/")),
        "{e:?}"
    );

    // A wrong token is refused; a kind the hook was not asked for is
    // acknowledged and dropped.
    let mut wrong = gitlab.delivery_request(
        "group/project",
        hook.id,
        "Push Hook",
        &forges::gitlab_push_payload(&project_url),
    );
    wrong.set_header("x-gitlab-token", "guess");
    assert_eq!(wrong.send().await.status, 401);
    let issue = gitlab
        .delivery_request(
            "group/project",
            hook.id,
            "Issue Hook",
            &forges::gitlab_issue_payload(&project_url, 3),
        )
        .send()
        .await;
    assert_eq!(issue.status, 202, "{}", issue.body);
    let mr = gitlab
        .deliver(
            "group/project",
            hook.id,
            "Merge Request Hook",
            &forges::gitlab_merge_request_payload(&project_url, 12),
        )
        .await;
    assert_eq!(mr.status, 200);
    sink.wait_for(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let types: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| Some(r.event.as_ref()?.ty.clone()))
        .collect();
    assert_eq!(
        types,
        [
            "dev.knative.sources.gitlab.push",
            "dev.knative.sources.gitlab.merge_request"
        ]
    );

    p.rewrite("");
    assert!(
        tests::eventually(WAIT, || gitlab.hooks("group/project").is_empty()).await,
        "hook not deleted:\n{}",
        p.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_manifests_the_adapter_registers_itself_and_answers_with_the_sinks_outcome() {
    let github = FakeGitHub::start(ACCESS).await;
    github.add_repo("knative/docs");
    let down = Sink::start(|_, _| Answer::status(503)).await;
    let dead_letters = Sink::accepting().await;
    let dir = tempfile::tempdir().expect("tempdir");
    secrets(dir.path(), "github");
    let webhook = format!("127.0.0.1:{}", tests::free_port());
    let base = format!("http://{webhook}");
    let secrets_flag = dir.path().display().to_string();
    let manifests = format!(
        "{}  delivery: {{retry: 1, backoffDelay: PT0.05S}}\n---\n{}  delivery: {{retry: 1, backoffDelay: PT0.05S, deadLetterSink: {{uri: '{}'}}}}\n",
        github_source(&github.url(), "[push]", &down.url()),
        github_source(&github.url(), "[push]", &down.url())
            .replace("name: repo-events", "name: with-dls"),
        dead_letters.url()
    );
    let adapter = Adapter::start(
        &manifests,
        &[
            "--secrets-dir",
            &secrets_flag,
            "--webhook-listen",
            &webhook,
            "--webhook-base-url",
            &base,
        ],
    )
    .await;
    assert!(
        tests::eventually(WAIT, || github.hooks("knative/docs").len() == 2).await,
        "{}",
        adapter.log()
    );
    let hooks = github.hooks("knative/docs");
    let id_of = |name: &str| {
        hooks
            .iter()
            .find(|h| h.url.ends_with(name))
            .map(|h| h.id)
            .expect(name)
    };
    // The sink never accepts: without a dead-letter sink GitHub is told
    // 502 (it may redeliver); with one, 202 (kept there).
    let push = forges::github_push_payload("knative/docs");
    let lost = github
        .deliver("knative/docs", id_of("repo-events"), "push", &push)
        .await;
    assert_eq!(lost.status, 502, "{}", lost.body);
    let kept = github
        .deliver("knative/docs", id_of("with-dls"), "push", &push)
        .await;
    assert_eq!(kept.status, 202, "{}", kept.body);
    let dead = dead_letters.wait_for(1, WAIT).await;
    assert_eq!(
        dead[0].event.as_ref().map(|e| e.id.clone()),
        Some(kept.delivery_id.clone())
    );
    let status = adapter.status().await;
    assert_eq!(
        status["webhooks"].as_array().map(Vec::len),
        Some(2),
        "{status:#}"
    );
    // Unknown paths and other methods are answered, never forwarded.
    let client = tests::HttpClient::new();
    let (code, _) = client
        .get(&format!("{base}/shop/repo-events"))
        .await
        .expect("answers");
    assert_eq!(code.as_u16(), 405);
    let (code, _) = client
        .get(&format!("{base}/shop/nothing"))
        .await
        .expect("answers");
    assert_eq!(code.as_u16(), 404);
}
