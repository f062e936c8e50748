//! OIDC sender authentication and EventPolicy authorization at the real
//! `inmemory-dispatcher`'s ingress, with tokens minted here (RS256, keys
//! from `openssl genpkey`) and the issuer's keys in a JWKS file.

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tests::{Dispatcher, Sink};

const ISSUER: &str = "https://issuer.test";
const CHANNEL_AUD: &str = "messaging.knative.dev/inmemorychannel/shop/orders";
const BROKER_AUD: &str = "eventing.knative.dev/broker/shop/default";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn rsa_key() -> EncodingKey {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    EncodingKey::from_rsa_pem(&out.stdout).expect("RSA key")
}

/// The test issuer's RSA key and its JWKS file (key id `k1`), in a
/// directory that lives as long as the returned guard.
fn issuer_keys() -> (EncodingKey, tempfile::TempDir, std::path::PathBuf) {
    let key = rsa_key();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("jwk");
    jwk.common.key_id = Some("k1".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).expect("write");
    (key, dir, jwks)
}

/// The dispatcher flags trusting the test issuer.
fn issuer_flags(jwks: &std::path::Path) -> [String; 4] {
    [
        "--oidc-issuer".into(),
        ISSUER.into(),
        "--oidc-jwks".into(),
        jwks.display().to_string(),
    ]
}

fn token(key: &EncodingKey, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    encode(&header, &claims, key).expect("token")
}

fn claims(sub: &str, aud: &str) -> Value {
    json!({"iss": ISSUER, "aud": aud, "sub": sub, "exp": now() + 600, "iat": now()})
}

/// POST an event with an optional bearer token: the status and the body.
async fn post(url: &str, bearer: Option<&str>, ty: &str) -> (u16, String) {
    let client = tests::HttpClient::new();
    let mut req = http::Request::post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", format!("{ty}-{}", now()))
        .header("ce-type", ty)
        .header("ce-source", "/test");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let (status, _, body) = client
        .send(
            req.body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
                .expect("request"),
        )
        .await
        .expect("answers");
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_verified_and_policies_decide_who_may_send_what() {
    let (key, _dir, jwks) = issuer_keys();

    let sink = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{authentication-oidc: enabled, default-authorization-mode: allow-same-namespace}}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all, namespace: shop}}\nspec:\n  broker: default\n  subscriber: {{uri: '{}'}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: billing-may-send, namespace: shop}}\nspec:\n  to: [{{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}]\n  from: [{{sub: 'system:serviceaccount:billing:*'}}]\n  filters: [{{cesql: \"type LIKE 'com.example.invoice.%'\"}}]\n",
        sink.url()
    );
    let d = Dispatcher::start(
        &manifests,
        &issuer_flags(&jwks).each_ref().map(String::as_str),
    )
    .await;
    let channel = format!("http://{}/shop/orders", d.ingress);
    let broker = format!("http://{}/brokers/shop/default", d.ingress);
    let shop = "system:serviceaccount:shop:producer";
    let billing = "system:serviceaccount:billing:invoicer";

    // Authentication: 401 before anything is stored.
    let (status, body) = post(&channel, None, "t").await;
    assert_eq!(status, 401, "{body}");
    for bad in [
        token(&key, claims(shop, BROKER_AUD)),
        token(
            &key,
            json!({"iss": ISSUER, "aud": CHANNEL_AUD, "sub": shop, "exp": now() - 3600}),
        ),
        token(
            &key,
            json!({"iss": "https://elsewhere", "aud": CHANNEL_AUD, "sub": shop, "exp": now() + 600}),
        ),
        token(&rsa_key(), claims(shop, CHANNEL_AUD)),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
        "garbage".to_owned(),
    ] {
        let (status, body) = post(&channel, Some(&bad), "t").await;
        assert_eq!(status, 401, "{bad}: {body}");
    }

    // The channel: no policy applies, the default mode allows its own
    // namespace only.
    let (status, body) = post(&channel, Some(&token(&key, claims(shop, CHANNEL_AUD))), "t").await;
    assert_eq!(status, 202, "{body}\n{}", d.log());
    let (status, body) = post(
        &channel,
        Some(&token(&key, claims(billing, CHANNEL_AUD))),
        "t",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("default authorization mode"), "{body}");

    // The broker: its policy allows billing's invoices only.
    let invoice = "com.example.invoice.paid";
    let (status, body) = post(
        &broker,
        Some(&token(&key, claims(billing, BROKER_AUD))),
        invoice,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(
        &broker,
        Some(&token(&key, claims(billing, BROKER_AUD))),
        "com.example.refund",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post(
        &broker,
        Some(&token(&key, claims(shop, BROKER_AUD))),
        invoice,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("billing-may-send"), "{body}");
    let got = sink.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let types: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| Some(r.event.as_ref()?.ty.clone()))
        .collect();
    assert_eq!(
        types,
        [invoice],
        "only the allowed event was stored: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_on_without_an_issuer_refuses_every_sender() {
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {authentication-oidc: enabled}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {name: orders, namespace: shop}\n";
    let d = Dispatcher::start(manifests, &[]).await;
    let (status, body) = post(
        &format!("http://{}/shop/orders", d.ingress),
        Some("x.y.z"),
        "t",
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("--oidc-issuer"), "{body}");
}

/// The JWKS a component publishes on its admin server, as a decoding key.
async fn published_key(admin_url: &str) -> jsonwebtoken::DecodingKey {
    let (status, body) = tests::HttpClient::new()
        .get(admin_url)
        .await
        .expect("admin answers");
    assert_eq!(status, 200);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&body).expect("a JWKS");
    assert_eq!(set.keys.len(), 1, "one key");
    jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).expect("usable")
}

fn bearer_claims(r: &tests::Received, key: &jsonwebtoken::DecodingKey, aud: &str) -> Value {
    let header = r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("the dispatcher presents a token");
    let token = header.strip_prefix("Bearer ").expect("a bearer token");
    let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&["knative-eventing-senders"]);
    jsonwebtoken::decode::<Value>(token, key, &v)
        .expect("the token verifies with the published key")
        .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_present_their_identity_and_replies_reach_the_broker() {
    let (key, _dir, jwks) = issuer_keys();

    // A subscriber that answers each order with an audit event, and an
    // audit service that declares an audience.
    let replier = Sink::start(|r, _| match &r.event {
        Some(e) if e.ty == "order.created" => tests::Answer::reply(
            &channel_core::event::Event::new(format!("audit-{}", e.id), "/audit", "order.audited"),
        ),
        _ => tests::Answer::status(202),
    })
    .await;
    let audit = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{authentication-oidc: enabled}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: orders, namespace: shop}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: order.created}}}}\n  subscriber: {{uri: '{}'}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: audited, namespace: shop}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: order.audited}}}}\n  subscriber: {{uri: '{}', audience: audit-service}}\n",
        replier.url(),
        audit.url()
    );
    let d = Dispatcher::start(
        &manifests,
        &issuer_flags(&jwks).each_ref().map(String::as_str),
    )
    .await;
    let broker = format!("http://{}/brokers/shop/default", d.ingress);
    let producer = token(
        &key,
        claims("system:serviceaccount:shop:producer", BROKER_AUD),
    );
    let (status, body) = post(&broker, Some(&producer), "order.created").await;
    assert_eq!(status, 202, "{body}");

    // The reply went back into the broker with the trigger's own token
    // (accepted: same namespace), and on to the audit service.
    let got = audit.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 1, "{}", d.log());
    let published = published_key(&d.admin_url("/openid/v1/jwks")).await;
    let c = bearer_claims(&got[0], &published, "audit-service");
    assert_eq!(
        c["sub"],
        "system:serviceaccount:shop:audited-oidc-eventing.knative.dev-trigger"
    );
    // A subscriber declaring no audience gets no token.
    let asked = replier.received();
    assert!(asked[0].headers.get("authorization").is_none());
    // Discovery points at the same keys.
    let (status, doc) = tests::HttpClient::new()
        .get(&d.admin_url("/.well-known/openid-configuration"))
        .await
        .expect("discovery");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&doc).expect("json");
    assert_eq!(doc["issuer"], "knative-eventing-senders");
    assert!(doc["jwks_uri"]
        .as_str()
        .is_some_and(|u| u.ends_with("/openid/v1/jwks")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_present_their_identity_with_a_shared_signing_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl runs");
    assert!(out.status.success());
    let signing_key = dir.path().join("signing.pem");
    std::fs::write(&signing_key, &out.stdout).expect("write");
    let signing_key = signing_key.display().to_string();

    let sink = Sink::accepting().await;
    let features = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-features, namespace: knative-eventing}\ndata: {authentication-oidc: enabled}\n";
    let broker = format!(
        "{features}---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: all, namespace: shop}}\nspec: {{broker: default, subscriber: {{uri: '{}'}}}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: EventPolicy\nmetadata: {{name: ticks-only, namespace: shop}}\nspec:\n  to: [{{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}]\n  from: [{{ref: {{apiVersion: sources.knative.dev/v1, kind: PingSource, name: shared}}}}]\n",
        sink.url()
    );
    let ping = |name: &str| {
        format!("---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{schedule: '@every 1s', sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}}}\n")
    };
    let d = Dispatcher::start(&broker, &["--oidc-signing-key", &signing_key]).await;
    let to_dispatcher = format!("--dispatcher-url=inmemory=http://{}", d.ingress);

    // Sharing the dispatcher's key: the ticks are accepted (the policy
    // names the source, whose identity the token carries) and delivered.
    let shared = tests::sources::Adapter::start(
        &format!("{features}{}", ping("shared")),
        &[&to_dispatcher, "--oidc-signing-key", &signing_key],
    )
    .await;
    let got = sink.wait_for(1, Duration::from_secs(15)).await;
    assert!(!got.is_empty(), "{}\n{}", shared.log(), d.log());
    let e = got[0].event.as_ref().expect("an event");
    assert_eq!(e.source, "/apis/v1/namespaces/shop/pingsources/shared");
    drop(shared);

    // An adapter with a key of its own: its tokens are refused (401), and
    // nothing of it is delivered.
    let before = sink.count();
    let alone =
        tests::sources::Adapter::start(&format!("{features}{}", ping("alone")), &[&to_dispatcher])
            .await;
    assert!(
        tests::eventually(Duration::from_secs(15), || alone.log().contains("401")).await,
        "{}",
        alone.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let from_alone = sink.received()[before..]
        .iter()
        .filter(|r| {
            r.id().contains("alone")
                || r.event
                    .as_ref()
                    .is_some_and(|e| e.source.ends_with("/alone"))
        })
        .count();
    assert_eq!(from_alone, 0);
}
