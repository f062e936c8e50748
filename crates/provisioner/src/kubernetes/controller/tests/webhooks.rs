//! GitHubSource, GitLabSource and KafkaSource through the controller, and
//! the registration of their webhooks against a stand-in for GitHub's API.

use super::*;
use channel_core::sources::secret::SecretRef;
use channel_core::sources::{SourceSettings, SourcesContract};

const GITHUB_PATH: &str = "/apis/sources.knative.dev/v1alpha1/namespaces/shop/githubsources/repo";
const GITLAB_PATH: &str =
    "/apis/sources.knative.dev/v1alpha1/namespaces/shop/gitlabsources/project";
const KAFKA_PATH: &str = "/apis/sources.knative.dev/v1beta1/namespaces/shop/kafkasources/orders";
const SECRET_PATH: &str = "/api/v1/namespaces/shop/secrets/gh";
const SOURCES_MAP_PATH: &str =
    "/api/v1/namespaces/knative-channels/configmaps/source-adapter-contract";

fn source(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "generation": 1,
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": spec})
}

fn github_spec(api: &str, events: Value) -> Value {
    json!({"ownerAndRepository": "o/r", "eventTypes": events,
           "accessToken": {"secretKeyRef": {"name": "gh", "key": "accessToken"}},
           "secretToken": {"secretKeyRef": {"name": "gh", "key": "secretToken"}},
           "githubAPIURL": api,
           "sink": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "display"}}})
}

fn sources_contract(state: &Shared) -> SourcesContract {
    let map = object(state, SOURCES_MAP_PATH);
    SourcesContract::from_json(
        map["data"]["sources.json"]
            .as_str()
            .expect("the sources contract")
            .as_bytes(),
    )
    .expect("contract")
}

fn secret_ref(key: &str) -> SecretRef {
    SecretRef::Secret {
        namespace: "shop".into(),
        name: "gh".into(),
        key: key.into(),
    }
}

#[tokio::test]
async fn github_gitlab_and_kafka_sources_go_to_the_adapter() {
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        GITHUB_PATH,
        source(
            "sources.knative.dev/v1alpha1",
            "GitHubSource",
            "repo",
            github_spec("https://api.github.com/", json!(["push", "pull_request"])),
        ),
    );
    put(
        &state,
        GITLAB_PATH,
        source(
            "sources.knative.dev/v1alpha1",
            "GitLabSource",
            "project",
            json!({"projectUrl": "https://gitlab.com/group/project", "eventTypes": ["push_events", "issues_events"],
                   "accessToken": {"secretKeyRef": {"name": "gl", "key": "accessToken"}},
                   "secretToken": {"secretKeyRef": {"name": "gl", "key": "secretToken"}},
                   "sink": {"uri": "http://display.shop.svc.cluster.local/gitlab"}}),
        ),
    );
    put(
        &state,
        KAFKA_PATH,
        source(
            "sources.knative.dev/v1beta1",
            "KafkaSource",
            "orders",
            json!({"consumerGroup": "orders-group", "bootstrapServers": ["my-cluster-kafka-bootstrap.kafka:9092"],
                   "topics": ["orders"],
                   "net": {"sasl": {"enable": true,
                                    "user": {"secretKeyRef": {"name": "kafka", "key": "user"}},
                                    "password": {"secretKeyRef": {"name": "kafka", "key": "password"}}}},
                   "sink": {"ref": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "orders"}}}),
        ),
    );
    // Two bad specs: no events, an event GitHub does not have.
    put(
        &state,
        "/apis/sources.knative.dev/v1alpha1/namespaces/shop/githubsources/silent",
        source(
            "sources.knative.dev/v1alpha1",
            "GitHubSource",
            "silent",
            github_spec("https://api.github.com/", json!([])),
        ),
    );
    put(
        &state,
        "/apis/sources.knative.dev/v1alpha1/namespaces/shop/githubsources/odd",
        source(
            "sources.knative.dev/v1alpha1",
            "GitHubSource",
            "odd",
            github_spec("https://api.github.com/", json!(["push", "pushed"])),
        ),
    );
    let mut c = controller(client(state.clone()), None);
    for _ in 0..2 {
        let outcome = c.reconcile(&snapshot(&state)).await;
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    }

    // The adapter's contract: the three good ones, sinks resolved, secrets
    // by reference.
    let contract = sources_contract(&state);
    let listed: Vec<(&str, &str, &str)> = contract
        .sources
        .iter()
        .map(|s| (s.kind(), s.name.as_str(), s.sink.as_str()))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for expected in [
        (
            "GitHubSource",
            "repo",
            "http://display.shop.svc.cluster.local/",
        ),
        (
            "GitLabSource",
            "project",
            "http://display.shop.svc.cluster.local/gitlab",
        ),
        (
            "KafkaSource",
            "orders",
            "http://orders-kn-channel.shop.svc.cluster.local/",
        ),
    ] {
        assert!(listed.contains(&expected), "{expected:?} in {listed:?}");
    }
    for s in &contract.sources {
        match &s.settings {
            SourceSettings::GitHubSource(g) => {
                assert_eq!(g.owner_and_repository, "o/r");
                assert_eq!(g.event_types, ["pull_request", "push"]);
                assert_eq!(g.access_token, secret_ref("accessToken"));
                assert_eq!(s.uid, "repo-uid");
            }
            SourceSettings::GitLabSource(g) => {
                assert_eq!(g.project_path(), "group/project");
            }
            SourceSettings::KafkaSource(k) => {
                assert_eq!(k.topics, ["orders"]);
                assert_eq!(k.consumer_group, "orders-group");
                let sasl = k.sasl.as_ref().expect("sasl");
                assert_eq!(
                    sasl.user,
                    SecretRef::Secret {
                        namespace: "shop".into(),
                        name: "kafka".into(),
                        key: "user".into()
                    }
                );
            }
            other => panic!("unexpected source {other:?}"),
        }
    }

    // Status: sink provided, run by the adapter (unknown here: no adapter
    // in this test), webhook unknown without a public URL.
    for path in [GITHUB_PATH, GITLAB_PATH, KAFKA_PATH] {
        let o = object(&state, path);
        assert_eq!(
            condition(&o, "SinkProvided")["status"],
            "True",
            "{path}: {:#}",
            o["status"]
        );
        assert_eq!(condition(&o, "Deployed")["reason"], "AdapterUnknown");
        assert_eq!(o["status"]["observedGeneration"], 1);
        assert!(o["status"]["webhookIDKey"].is_null());
        assert!(
            o["metadata"]["finalizers"].is_null(),
            "{path}: no finalizer without --webhook-base-url"
        );
    }
    for path in [GITHUB_PATH, GITLAB_PATH] {
        let o = object(&state, path);
        let hook = condition(&o, "WebhookRegistered");
        assert_eq!(
            (hook["status"].as_str(), hook["reason"].as_str()),
            (Some("Unknown"), Some("WebhookUrlUnknown"))
        );
    }
    let kafka = object(&state, KAFKA_PATH);
    assert_eq!(
        kafka["status"]["sinkUri"],
        "http://orders-kn-channel.shop.svc.cluster.local/"
    );
    assert!(kafka["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().all(|c| c["type"] != "WebhookRegistered")));

    // The bad specs: not ready, naming the field.
    for (name, field) in [("silent", "spec.eventTypes"), ("odd", "spec.eventTypes[1]")] {
        let o = object(
            &state,
            &format!("/apis/sources.knative.dev/v1alpha1/namespaces/shop/githubsources/{name}"),
        );
        assert_eq!(
            ready(&o),
            ("False".into(), "InvalidSpec".into()),
            "{name}: {:#}",
            o["status"]
        );
        let message = o["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(field), "{name}: {message}");
    }

    // Unchanged sources: no new contract.
    let writes = writes_to(&state, SOURCES_MAP_PATH);
    c.reconcile(&snapshot(&state)).await;
    assert_eq!(writes_to(&state, SOURCES_MAP_PATH), writes);
}

/// One request the stand-in GitHub API received.
#[derive(Debug, Clone)]
struct ApiRequest {
    method: String,
    path: String,
    authorization: String,
    body: Value,
}

type ApiLog = Arc<Mutex<Vec<ApiRequest>>>;

/// A stand-in for GitHub's hooks API of repository `o/r`: the list is
/// empty, a created hook gets id 7, updates and deletions succeed.
async fn fake_github() -> (Url, ApiLog) {
    let log = ApiLog::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let recorded = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            use http_body_util::BodyExt as _;
                            let method = req.method().to_string();
                            let path = req.uri().path().to_owned();
                            let authorization = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            log.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(ApiRequest {
                                    method: method.clone(),
                                    path: path.clone(),
                                    authorization,
                                    body: body.clone(),
                                });
                            let (status, answer) = match (method.as_str(), path.as_str()) {
                                ("GET", "/repos/o/r/hooks") => (200, json!([])),
                                ("POST", "/repos/o/r/hooks") => (
                                    201,
                                    json!({"id": 7, "name": "web", "active": true,
                                           "events": body["events"], "config": {"url": body["config"]["url"]}}),
                                ),
                                ("PATCH", "/repos/o/r/hooks/7") => (200, json!({"id": 7})),
                                ("DELETE", "/repos/o/r/hooks/7") => (204, Value::Null),
                                _ => (404, json!({"message": "Not Found"})),
                            };
                            let text = if answer.is_null() {
                                String::new()
                            } else {
                                answer.to_string()
                            };
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (Url::parse(&format!("http://{addr}/")).expect("url"), log)
}

fn api_requests(log: &ApiLog, method: &str) -> Vec<ApiRequest> {
    log.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|r| r.method == method)
        .cloned()
        .collect()
}

fn webhook_controller(state: &Shared) -> Controller {
    let mut c = controller(client(state.clone()), None);
    c.settings.webhook_base_url = Some(Url::parse("http://hooks.example.com/").expect("url"));
    c
}

#[tokio::test]
async fn a_github_hook_is_registered_kept_recovered_and_deleted_with_its_source() {
    let (api, log) = fake_github().await;
    let state = Shared::default();
    seed(&state);
    put(
        &state,
        SECRET_PATH,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "gh", "namespace": "shop"},
               // base64 of "ghp_token" and "s3cret"
               "data": {"accessToken": "Z2hwX3Rva2Vu", "secretToken": "czNjcmV0"}}),
    );
    put(
        &state,
        GITHUB_PATH,
        source(
            "sources.knative.dev/v1alpha1",
            "GitHubSource",
            "repo",
            github_spec(api.as_str(), json!(["push"])),
        ),
    );
    let mut c = webhook_controller(&state);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);

    // Created: listed first (nothing to adopt), then made, with the token
    // and the adapter's public URL of the source.
    let posts = api_requests(&log, "POST");
    assert_eq!(posts.len(), 1, "{:?}", log.lock().map(|l| l.clone()));
    assert_eq!(posts[0].path, "/repos/o/r/hooks");
    assert_eq!(posts[0].authorization, "Bearer ghp_token");
    assert_eq!(
        posts[0].body["config"]["url"],
        "http://hooks.example.com/shop/repo"
    );
    assert_eq!(posts[0].body["config"]["secret"], "s3cret");
    assert_eq!(posts[0].body["events"], json!(["push"]));
    assert_eq!(api_requests(&log, "GET").len(), 1);

    let repo = object(&state, GITHUB_PATH);
    assert_eq!(
        repo["metadata"]["finalizers"],
        json!([WEBHOOK_FINALIZER]),
        "added before registering"
    );
    assert_eq!(repo["status"]["webhookIDKey"], "7", "{:#}", repo["status"]);
    let hook = condition(&repo, "WebhookRegistered");
    assert_eq!(hook["status"], "True", "{:#}", repo["status"]);
    // The token's value is nowhere in what was written to the API.
    let written = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .iter()
        .filter(|(m, _, _)| m != "GET")
        .map(|(_, _, b)| b.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!written.contains("ghp_token") && !written.contains("s3cret"));

    // Unchanged: no request to GitHub.
    let before = log.lock().map(|l| l.len()).unwrap_or_default();
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(log.lock().map(|l| l.len()).unwrap_or_default(), before);

    // A restarted controller knows the hook from the source's status: it
    // updates hook 7 rather than making a second one.
    let mut c = webhook_controller(&state);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let patches = api_requests(&log, "PATCH");
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].path, "/repos/o/r/hooks/7");
    assert_eq!(api_requests(&log, "POST").len(), 1, "no second hook");
    assert_eq!(object(&state, GITHUB_PATH)["status"]["webhookIDKey"], "7");

    // Deleted: the hook goes, then the finalizer (and so the object).
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = s.objects[GITHUB_PATH].clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(GITHUB_PATH, o);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let deletes = api_requests(&log, "DELETE");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, "/repos/o/r/hooks/7");
    assert_eq!(deletes[0].authorization, "Bearer ghp_token");
    assert!(object(&state, GITHUB_PATH).is_null(), "finalizer removed");
}

#[tokio::test]
async fn a_source_whose_token_cannot_be_read_says_so_and_is_let_go_when_deleted() {
    let (api, log) = fake_github().await;
    let state = Shared::default();
    seed(&state);
    // No Secret `gh`.
    put(
        &state,
        GITHUB_PATH,
        source(
            "sources.knative.dev/v1alpha1",
            "GitHubSource",
            "repo",
            github_spec(api.as_str(), json!(["push"])),
        ),
    );
    let mut c = webhook_controller(&state);
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(log.lock().map(|l| l.is_empty()).unwrap_or_default());
    let repo = object(&state, GITHUB_PATH);
    let hook = condition(&repo, "WebhookRegistered");
    assert_eq!(hook["status"], "False", "{:#}", repo["status"]);
    assert_eq!(hook["reason"], "SecretNotFound");
    assert_eq!(ready(&repo).0, "False");
    assert_eq!(repo["metadata"]["finalizers"], json!([WEBHOOK_FINALIZER]));
    // Deleted with nothing registered: the finalizer goes at once.
    {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let mut o = s.objects[GITHUB_PATH].clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:05:00Z");
        s.put(GITHUB_PATH, o);
    }
    let outcome = c.reconcile(&snapshot(&state)).await;
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(object(&state, GITHUB_PATH).is_null(), "finalizer removed");
}
