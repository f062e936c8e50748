//! The fake GitHub and GitLab webhook APIs (`tests::forges`) over real
//! HTTP: authentication, validation and the answers of the hook endpoints,
//! injected failures, and deliveries to a loopback receiver with the
//! headers, signature and token the real services send.
//!
//! Every wait is bounded (the client times out after 15 s, deliveries
//! after 10 s).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::Duration;
use tests::forges::{
    github_issues_payload, github_push_payload, gitlab_issue_payload, gitlab_push_payload,
    sign_github, FakeGitHub, FakeGitLab, RecordedBody, MAX_BODY_BYTES,
};
use tests::{HttpClient, Sink};

const GH_TOKEN: &str = "ghp_test_token";
const GL_TOKEN: &str = "glpat-test-token";

/// One API call: status and JSON body (`Null` when empty).
async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map_or_else(Bytes::new, |b| {
        Bytes::from(serde_json::to_vec(b).expect("JSON serializes"))
    });
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(body)).expect("request builds");
    let (status, _, body) = HttpClient::new().send(req).await.expect("answered");
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("JSON answer")
    };
    (status.as_u16(), value)
}

fn gh_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("authorization", "Bearer ghp_test_token"),
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", "2022-11-28"),
    ]
}

fn gl_headers() -> Vec<(&'static str, &'static str)> {
    vec![("private-token", GL_TOKEN)]
}

#[tokio::test]
async fn github_hooks_api() {
    let gh = FakeGitHub::start(GH_TOKEN).await;
    gh.add_repo("o/r");
    gh.add_org("acme");
    let base = gh.url();
    assert!(base.ends_with('/'), "{base}");
    let hooks = format!("{base}repos/o/r/hooks");
    let create = json!({
        "name": "web",
        "active": true,
        "events": ["push", "pull_request"],
        "config": { "url": "http://example.com/hook", "content_type": "json", "secret": "s3cret", "insecure_ssl": "0" },
    });

    // Authentication.
    let (status, body) = call(
        "POST",
        &hooks,
        &[
            ("authorization", "Bearer wrong"),
            ("accept", "application/json"),
        ],
        Some(&create),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Bad credentials");
    let (status, _) = call("GET", &hooks, &[("accept", "application/json")], None).await;
    assert_eq!(status, 401);
    // Accept header.
    let (status, _) = call(
        "GET",
        &hooks,
        &[
            ("authorization", "token ghp_test_token"),
            ("accept", "text/html"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 415);

    // Create.
    let (status, hook) = call("POST", &hooks, &gh_headers(), Some(&create)).await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["id"], 1);
    assert_eq!(hook["type"], "Repository");
    assert_eq!(hook["name"], "web");
    assert_eq!(hook["active"], true);
    assert_eq!(hook["events"], json!(["push", "pull_request"]));
    assert_eq!(hook["config"]["secret"], "********");
    assert_eq!(hook["config"]["url"], "http://example.com/hook");
    assert_eq!(hook["config"]["content_type"], "json");
    assert_eq!(hook["url"], format!("{hooks}/1"));
    assert_eq!(hook["ping_url"], format!("{hooks}/1/pings"));
    assert!(hook["created_at"].is_string() && hook["test_url"].is_string());
    let stored = gh.hooks("o/r");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].secret.as_deref(), Some("s3cret"));
    assert_eq!(stored[0].insecure_ssl, "0");

    // Defaults: form, ["push"], active; the token scheme works too.
    let (status, defaults) = call(
        "POST",
        &hooks,
        &[
            ("authorization", "token ghp_test_token"),
            ("accept", "application/json"),
        ],
        Some(&json!({ "config": { "url": "https://example.com/other", "insecure_ssl": 1 } })),
    )
    .await;
    assert_eq!(status, 201, "{defaults}");
    assert_eq!(defaults["id"], 2);
    assert_eq!(defaults["events"], json!(["push"]));
    assert_eq!(defaults["config"]["content_type"], "form");
    assert_eq!(defaults["config"]["insecure_ssl"], "1");
    assert!(defaults["config"].get("secret").is_none());

    // Validation.
    for invalid in [
        json!({ "events": ["push", "bogus"], "config": { "url": "http://example.com/a" } }),
        json!({ "events": "push", "config": { "url": "http://example.com/a" } }),
        json!({ "name": "travis", "config": { "url": "http://example.com/a" } }),
        json!({ "config": {} }),
        json!({ "events": ["push"] }),
        json!({ "config": { "url": "/relative" } }),
        json!({ "config": { "url": "ftp://example.com/a" } }),
        json!({ "config": { "url": "http://example.com/a", "content_type": "xml" } }),
        json!({ "config": { "url": "http://example.com/a", "insecure_ssl": "2" } }),
        json!({ "config": { "url": "http://example.com/a", "secret": 42 } }),
        json!({ "config": { "url": "http://example.com/a" }, "active": "yes" }),
    ] {
        let (status, body) = call("POST", &hooks, &gh_headers(), Some(&invalid)).await;
        assert_eq!(status, 422, "{invalid} -> {body}");
        assert_eq!(body["message"], "Validation Failed");
        assert_eq!(body["errors"][0]["resource"], "Hook");
        assert_eq!(body["errors"][0]["code"], "custom");
    }
    let (status, body) = call("POST", &hooks, &gh_headers(), Some(&json!("not an object"))).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("Problems parsing JSON"))
    );

    // Unknown repository, organization, path.
    let (status, body) = call(
        "POST",
        &format!("{base}repos/o/missing/hooks"),
        &gh_headers(),
        Some(&create),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], "Not Found");
    assert!(body["documentation_url"].is_string());
    let (status, _) = call(
        "GET",
        &format!("{base}orgs/nobody/hooks"),
        &gh_headers(),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        "GET",
        &format!("{base}/repos/o/r/hooks"),
        &gh_headers(),
        None,
    )
    .await;
    assert_eq!(status, 404, "a double slash is not the hooks path");

    // Duplicate URL.
    let (status, body) = call("POST", &hooks, &gh_headers(), Some(&create)).await;
    assert_eq!(status, 422);
    assert_eq!(
        body["errors"][0]["message"],
        "Hook already exists on this repository"
    );

    // List and get.
    let (status, list) = call("GET", &hooks, &gh_headers(), None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (status, one) = call("GET", &format!("{hooks}/1"), &gh_headers(), None).await;
    assert_eq!((status, one["id"].clone()), (200, json!(1)));

    // PATCH events and active; the config (and its secret) stays.
    let (status, patched) = call(
        "PATCH",
        &format!("{hooks}/1"),
        &gh_headers(),
        Some(&json!({ "events": ["issues", "issue_comment"], "active": false })),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["events"], json!(["issues", "issue_comment"]));
    let stored = gh.hooks("o/r");
    assert_eq!(stored[0].events, vec!["issues", "issue_comment"]);
    assert!(!stored[0].active);
    assert_eq!(stored[0].secret.as_deref(), Some("s3cret"));
    let (status, _) = call(
        "PATCH",
        &format!("{hooks}/1"),
        &gh_headers(),
        Some(&json!({ "events": ["nope"] })),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        "PATCH",
        &format!("{hooks}/2"),
        &gh_headers(),
        Some(&json!({ "config": { "url": "http://example.com/hook" } })),
    )
    .await;
    assert_eq!(status, 422, "moving onto another hook's URL");
    let (status, _) = call(
        "PATCH",
        &format!("{hooks}/99"),
        &gh_headers(),
        Some(&json!({ "active": true })),
    )
    .await;
    assert_eq!(status, 404);

    // PATCH .../config merges into the config (the URL stays).
    let (status, config) = call(
        "PATCH",
        &format!("{hooks}/2/config"),
        &gh_headers(),
        Some(&json!({ "content_type": "json", "secret": "new" })),
    )
    .await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["url"], "https://example.com/other");
    assert_eq!(config["secret"], "********");
    let stored = gh.hooks("o/r");
    assert_eq!(stored[1].content_type, "json");
    assert_eq!(stored[1].secret.as_deref(), Some("new"));

    // DELETE, then it is gone.
    let (status, body) = call("DELETE", &format!("{hooks}/1"), &gh_headers(), None).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, _) = call("GET", &format!("{hooks}/1"), &gh_headers(), None).await;
    assert_eq!(status, 404);
    let (status, _) = call("DELETE", &format!("{hooks}/1"), &gh_headers(), None).await;
    assert_eq!(status, 404);
    assert_eq!(gh.hooks("o/r").len(), 1);

    // Organization hooks.
    let (status, org_hook) = call(
        "POST",
        &format!("{base}orgs/acme/hooks"),
        &gh_headers(),
        Some(&create),
    )
    .await;
    assert_eq!(status, 201, "{org_hook}");
    assert_eq!(org_hook["type"], "Organization");
    assert_eq!(org_hook["id"], 3, "ids are global and increasing");
    assert_eq!(gh.hooks("acme").len(), 1);

    // Injected failure, then normal again.
    gh.fail_next(500, 1);
    let (status, body) = call("GET", &hooks, &gh_headers(), None).await;
    assert_eq!(status, 500);
    assert!(body["message"].is_string());
    let (status, _) = call("GET", &hooks, &gh_headers(), None).await;
    assert_eq!(status, 200);

    // Bodies over 1 MiB are refused.
    let big =
        json!({ "config": { "url": "http://example.com/big", "pad": "x".repeat(MAX_BODY_BYTES) } });
    let (status, _) = call("POST", &hooks, &gh_headers(), Some(&big)).await;
    assert_eq!(status, 413);

    // The request log.
    let requests = gh.requests();
    let first = &requests[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/repos/o/r/hooks")
    );
    assert_eq!(first.header("Authorization"), Some("Bearer wrong"));
    assert!(matches!(&first.body, RecordedBody::Json(v) if v["config"]["secret"] == "s3cret"));
}

#[tokio::test]
async fn github_delivery_is_signed() {
    let gh = FakeGitHub::start(GH_TOKEN).await;
    gh.add_repo("o/r");
    let receiver = Sink::accepting().await;
    let (status, hook) = call(
        "POST",
        &format!("{}repos/o/r/hooks", gh.url()),
        &gh_headers(),
        Some(&json!({
            "events": ["push"],
            "config": { "url": receiver.url(), "content_type": "json", "secret": "s3cret" },
        })),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_u64().expect("hook id");

    let payload = github_push_payload("o/r");
    let delivered = gh.deliver("o/r", id, "push", &payload).await;
    assert_eq!(delivered.status, 202, "{delivered:?}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let request = &got[0];
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("x-github-event"), "push");
    assert_eq!(header("content-type"), "application/json");
    assert!(header("user-agent").starts_with("GitHub-Hookshot/"));
    let delivery = header("x-github-delivery");
    assert_eq!(delivery, delivered.delivery_id);
    let parsed = uuid_like(&delivery);
    assert!(parsed, "X-GitHub-Delivery is a UUID: {delivery:?}");
    assert_eq!(header("x-github-hook-id"), id.to_string());
    assert_eq!(
        header("x-github-hook-installation-target-type"),
        "repository"
    );
    assert_eq!(
        header("x-github-hook-installation-target-id"),
        payload["repository"]["id"].to_string()
    );
    assert_eq!(
        header("x-hub-signature-256"),
        sign_github(b"s3cret", &request.body)
    );
    let body: Value = serde_json::from_slice(&request.body).expect("JSON payload");
    assert_eq!(body, payload);
    assert!(body["compare"]
        .as_str()
        .is_some_and(|c| c.starts_with("https://github.com/o/r/compare/")));

    // Not subscribed: not delivered.
    let skipped = gh
        .deliver("o/r", id, "issues", &github_issues_payload("o/r", 1))
        .await;
    assert_eq!(skipped.status, 0);
    assert_eq!(receiver.count(), 1);

    // A tampered delivery goes out as changed.
    let mut tampered = gh.delivery_request("o/r", id, "push", &payload);
    tampered.set_header("X-Hub-Signature-256", "sha256=00");
    assert_eq!(tampered.send().await.status, 202);
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1]
            .headers
            .get("x-hub-signature-256")
            .map(|v| v.as_bytes()),
        Some(&b"sha256=00"[..])
    );
    assert_eq!(gh.deliveries().len(), 1);

    // A ping on creation, when enabled, without blocking the 201.
    gh.set_ping_on_create(true);
    let pings = Sink::accepting().await;
    let (status, _) = call(
        "POST",
        &format!("{}repos/o/r/hooks", gh.url()),
        &gh_headers(),
        Some(&json!({ "config": { "url": pings.url(), "content_type": "form" } })),
    )
    .await;
    assert_eq!(status, 201);
    let got = pings.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].headers.get("x-github-event").map(|v| v.as_bytes()),
        Some(&b"ping"[..])
    );
    assert!(got[0].headers.get("x-hub-signature-256").is_none());
    let form = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(form.starts_with("payload="), "{form}");
}

fn uuid_like(s: &str) -> bool {
    let groups: Vec<usize> = s.split('-').map(str::len).collect();
    groups == [8, 4, 4, 4, 12] && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[test]
fn github_signature_matches_the_documented_example() {
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    assert_eq!(
        sign_github(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[tokio::test]
async fn gitlab_hooks_api() {
    let gl = FakeGitLab::start(GL_TOKEN).await;
    let project_id = gl.add_project("group/project");
    assert_eq!(gl.add_project("group/project"), project_id);
    let api = format!("{}/api/v4/projects", gl.url());
    let by_id = format!("{api}/{project_id}/hooks");
    let by_path = format!("{api}/group%2Fproject/hooks");
    let create = json!({
        "url": "http://example.com/gl",
        "token": "t0ken",
        "push_events": true,
        "issues_events": "true",
        "merge_requests_events": true,
        "enable_ssl_verification": false,
    });

    // Authentication.
    let (status, body) = call("POST", &by_id, &[("private-token", "nope")], Some(&create)).await;
    assert_eq!(
        (status, body),
        (401, json!({ "message": "401 Unauthorized" }))
    );
    let (status, _) = call("GET", &by_id, &[], None).await;
    assert_eq!(status, 401);

    // Create by numeric id; the token is not returned.
    let (status, hook) = call("POST", &by_id, &gl_headers(), Some(&create)).await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["id"], 1);
    assert_eq!(hook["url"], "http://example.com/gl");
    assert_eq!(hook["project_id"], project_id);
    assert_eq!(hook["push_events"], true);
    assert_eq!(hook["issues_events"], true);
    assert_eq!(hook["merge_requests_events"], true);
    assert_eq!(hook["tag_push_events"], false);
    assert_eq!(hook["releases_events"], false);
    assert_eq!(hook["enable_ssl_verification"], false);
    assert!(hook["created_at"].is_string());
    assert!(hook.get("token").is_none(), "{hook}");

    // Create by URL-encoded path, with OAuth; defaults.
    let (status, defaults) = call(
        "POST",
        &by_path,
        &[("authorization", "Bearer glpat-test-token")],
        Some(&json!({ "url": "https://example.com/second" })),
    )
    .await;
    assert_eq!(status, 201, "{defaults}");
    assert_eq!(defaults["id"], 2);
    assert_eq!(defaults["push_events"], true);
    assert_eq!(defaults["issues_events"], false);
    assert_eq!(defaults["enable_ssl_verification"], true);
    let stored = gl.hooks("group/project");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].token.as_deref(), Some("t0ken"));
    assert!(stored[0].issues_events && !stored[0].enable_ssl_verification);
    assert_eq!(gl.hooks(&project_id.to_string()), stored);

    // Validation.
    let (status, body) = call(
        "POST",
        &by_id,
        &gl_headers(),
        Some(&json!({ "push_events": true })),
    )
    .await;
    assert_eq!((status, body), (400, json!({ "error": "url is missing" })));
    let (status, body) = call(
        "POST",
        &by_id,
        &gl_headers(),
        Some(&json!({ "url": "http://example.com/x", "push_events": "maybe" })),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({ "error": "push_events is invalid" }))
    );
    let (status, body) = call(
        "POST",
        &by_id,
        &gl_headers(),
        Some(&json!({ "url": "ftp://example.com/x" })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"]["url"][0].is_string());

    // Unknown project (by path, by id, unencoded path).
    for url in [
        format!("{api}/group%2Fmissing/hooks"),
        format!("{api}/999999999/hooks"),
    ] {
        let (status, body) = call("GET", &url, &gl_headers(), None).await;
        assert_eq!(
            (status, body),
            (404, json!({ "message": "404 Project Not Found" }))
        );
    }
    let (status, _) = call(
        "GET",
        &format!("{api}/group/project/hooks"),
        &gl_headers(),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Get, list.
    let (status, one) = call("GET", &format!("{by_path}/1"), &gl_headers(), None).await;
    assert_eq!(
        (status, one["url"].clone()),
        (200, json!("http://example.com/gl"))
    );
    let (status, list) = call("GET", &by_id, &gl_headers(), None).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(2)));

    // PUT: url required; other fields partial; same URL keeps the token.
    let (status, body) = call(
        "PUT",
        &format!("{by_id}/1"),
        &gl_headers(),
        Some(&json!({ "note_events": true })),
    )
    .await;
    assert_eq!((status, body), (400, json!({ "error": "url is missing" })));
    let (status, updated) = call(
        "PUT",
        &format!("{by_id}/1"),
        &gl_headers(),
        Some(&json!({ "url": "http://example.com/gl", "note_events": true, "push_events": false })),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["note_events"], true);
    assert_eq!(updated["push_events"], false);
    assert_eq!(updated["issues_events"], true);
    let stored = gl.hooks("group/project");
    assert!(stored[0].note_events && !stored[0].push_events);
    assert_eq!(stored[0].token.as_deref(), Some("t0ken"));
    let (status, _) = call(
        "PUT",
        &format!("{by_id}/42"),
        &gl_headers(),
        Some(&json!({ "url": "http://example.com/gl" })),
    )
    .await;
    assert_eq!(status, 404);

    // DELETE, then it is gone.
    let (status, _) = call("DELETE", &format!("{by_id}/2"), &gl_headers(), None).await;
    assert_eq!(status, 204);
    let (status, body) = call("GET", &format!("{by_id}/2"), &gl_headers(), None).await;
    assert_eq!((status, body), (404, json!({ "message": "404 Not found" })));
    assert_eq!(gl.hooks("group/project").len(), 1);

    // Injected failures, then normal again.
    gl.fail_next(503, 2);
    assert_eq!(call("GET", &by_id, &gl_headers(), None).await.0, 503);
    assert_eq!(call("GET", &by_id, &gl_headers(), None).await.0, 503);
    assert_eq!(call("GET", &by_id, &gl_headers(), None).await.0, 200);

    let logged = gl.requests();
    assert!(logged
        .iter()
        .any(|r| r.path == "/api/v4/projects/group%2Fproject/hooks" && r.method == "POST"));
}

#[tokio::test]
async fn gitlab_delivery_carries_the_token() {
    let gl = FakeGitLab::start(GL_TOKEN).await;
    gl.add_project("group/project");
    let receiver = Sink::accepting().await;
    let (status, hook) = call(
        "POST",
        &format!("{}/api/v4/projects/group%2Fproject/hooks", gl.url()),
        &gl_headers(),
        Some(&json!({ "url": receiver.url(), "token": "t0ken", "issues_events": true })),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let id = hook["id"].as_u64().expect("hook id");
    let project_url = gl.project_url("group/project");

    let payload = gitlab_push_payload(&project_url);
    assert_eq!(payload["project"]["path_with_namespace"], "group/project");
    assert_eq!(
        payload["project"]["id"],
        json!(gl.add_project("group/project")),
        "the payload's project id is the fake's"
    );
    let delivered = gl.deliver("group/project", id, "Push Hook", &payload).await;
    assert_eq!(delivered.status, 202, "{delivered:?}");
    let delivered = gl
        .deliver(
            "group/project",
            id,
            "Issue Hook",
            &gitlab_issue_payload(&project_url, 7),
        )
        .await;
    assert_eq!(delivered.status, 202, "{delivered:?}");
    let skipped = gl
        .deliver(
            "group/project",
            id,
            "Note Hook",
            &json!({ "object_kind": "note" }),
        )
        .await;
    assert_eq!(skipped.status, 0, "note_events is off");

    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    let header = |i: usize, name: &str| {
        got[i]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(0, "x-gitlab-event"), "Push Hook");
    assert_eq!(header(1, "x-gitlab-event"), "Issue Hook");
    assert_eq!(header(0, "x-gitlab-token"), "t0ken");
    assert_eq!(header(0, "content-type"), "application/json");
    assert_eq!(header(0, "user-agent"), "GitLab/17.0.0");
    assert_eq!(header(0, "x-gitlab-instance"), gl.url());
    assert!(uuid_like(&header(0, "x-gitlab-event-uuid")));
    assert!(uuid_like(&header(0, "x-gitlab-webhook-uuid")));
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON payload");
    assert_eq!(body["object_kind"], "push");
    let body: Value = serde_json::from_slice(&got[1].body).expect("JSON payload");
    assert_eq!(body["object_attributes"]["iid"], 7);
    assert_eq!(receiver.count(), 2);
    assert_eq!(gl.deliveries().len(), 2);

    // Changing the URL without a token drops the token, as GitLab does.
    let (status, _) = call(
        "PUT",
        &format!("{}/api/v4/projects/group%2Fproject/hooks/{id}", gl.url()),
        &gl_headers(),
        Some(&json!({ "url": format!("{}other", receiver.url()) })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(gl.hooks("group/project")[0].token, None);
    let delivered = gl.deliver("group/project", id, "Push Hook", &payload).await;
    assert_eq!(delivered.status, 202);
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert!(got[2].headers.get("x-gitlab-token").is_none());
    assert_eq!(got[2].path, "/other");
}

#[tokio::test]
async fn servers_stop_when_dropped() {
    let gh = FakeGitHub::start(GH_TOKEN).await;
    let gh_addr = gh.addr();
    let gl = FakeGitLab::start(GL_TOKEN).await;
    let gl_addr = gl.addr();
    drop((gh, gl));
    for addr in [gh_addr, gl_addr] {
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "{addr} still accepts connections");
    }
}
