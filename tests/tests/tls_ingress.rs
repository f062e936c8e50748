//! HTTPS on the real `inmemory-dispatcher`'s ingress: permissive and strict
//! transport encryption, certificate rotation without a restart, and
//! certificates that do not load. Certificates come from the `openssl`
//! command; requests are made with `curl --cacert`, as a producer would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::{Dispatcher, Sink};

const WAIT: Duration = Duration::from_secs(20);

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`
/// (`<name>-ca.pem`, `<name>-cert.pem`, `<name>-key.pem`).
fn certificates(dir: &Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca-key.pem"));
    let (cert, key, csr) = (
        format!("{name}-cert.pem"),
        format!("{name}-key.pem"),
        format!("{name}.csr"),
    );
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        &format!("/CN={name} test CA"),
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:inmemory-dispatcher.knative-channels.svc.cluster.local\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// event-display serving HTTPS on a free port with the certificate of CA
/// "one" in `dir`, printing what it receives to `dir/display.out`.
fn https_display(dir: &Path) -> (std::process::Child, u16) {
    let port = tests::free_port();
    let out = std::fs::File::create(dir.join("display.out")).expect("out");
    let display = Command::new(tests::build_bin("event-display", "event-display"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--json"])
        .arg("--tls-cert")
        .arg(dir.join("one-cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("one-key.pem"))
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("event-display starts");
    (display, port)
}

/// A dispatcher on `manifests` serving HTTPS only (strict) on a free port
/// with the certificate of CA "one" in `dir`, and that address.
async fn strict_dispatcher(dir: &Path, manifests: &str) -> (Dispatcher, String) {
    let tls = format!("127.0.0.1:{}", tests::free_port());
    let cert = dir.join("one-cert.pem").display().to_string();
    let key = dir.join("one-key.pem").display().to_string();
    let d = Dispatcher::start(
        manifests,
        &[
            "--transport-encryption",
            "strict",
            "--tls-listen",
            &tls,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    )
    .await;
    (d, tls)
}

/// POST an event with curl, trusting `ca`: the HTTP status, or curl's
/// failure.
fn curl_post(url: &str, ca: Option<&Path>, id: &str) -> Result<u16, String> {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "5",
        "-X",
        "POST",
        url,
    ])
    .args([
        "-H",
        "ce-specversion: 1.0",
        "-H",
        &format!("ce-id: {id}"),
        "-H",
        "ce-type: t",
        "-H",
        "ce-source: /s",
    ])
    .args(["-H", "content-type: application/json", "-d", "{}"]);
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    let out = c.output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl exit {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

fn manifests(sink: &str) -> String {
    format!("apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders, namespace: shop}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s, namespace: shop}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}\n  subscriber: {{uri: '{sink}'}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_both_and_a_rotated_certificate_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path(), "one");
    certificates(dir.path(), "two");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(dir.path().join("one-cert.pem"), &cert).expect("copy");
    std::fs::copy(dir.path().join("one-key.pem"), &key).expect("copy");
    let sink = Sink::accepting().await;
    let tls = format!("127.0.0.1:{}", tests::free_port());
    let d = Dispatcher::start(
        &manifests(&sink.url()),
        &[
            "--transport-encryption",
            "permissive",
            "--tls-listen",
            &tls,
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    )
    .await;
    let https = format!("https://{tls}/shop/orders");
    let one = dir.path().join("one-ca.pem");
    let two = dir.path().join("two-ca.pem");
    assert_eq!(
        curl_post(&https, Some(&one), "over-tls"),
        Ok(202),
        "{}",
        d.log()
    );
    assert_eq!(
        curl_post(&format!("http://{}/shop/orders", d.ingress), None, "plain"),
        Ok(202)
    );
    assert!(
        curl_post(&https, Some(&two), "wrong-ca").is_err(),
        "not yet the second certificate"
    );
    let got = sink.wait_for(2, WAIT).await;
    assert_eq!(got.len(), 2);

    // Rotation as a mounted Secret does it: new files, no restart.
    std::fs::copy(
        dir.path().join("two-key.pem"),
        dir.path().join("tls.key.new"),
    )
    .expect("copy");
    std::fs::copy(
        dir.path().join("two-cert.pem"),
        dir.path().join("tls.crt.new"),
    )
    .expect("copy");
    std::fs::rename(dir.path().join("tls.key.new"), &key).expect("rename");
    std::fs::rename(dir.path().join("tls.crt.new"), &cert).expect("rename");
    assert!(
        tests::eventually(WAIT, || curl_post(&https, Some(&two), "rotated") == Ok(202)).await,
        "the new certificate is served: {}",
        d.log()
    );
    assert!(
        curl_post(&https, Some(&one), "old-ca").is_err(),
        "the old one is gone"
    );
    // A broken rotation keeps the current pair.
    std::fs::write(&cert, "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        curl_post(&https, Some(&two), "after-a-bad-rotation"),
        Ok(202),
        "{}",
        d.log()
    );
    assert!(d.log().contains("keeping the previous one"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_serves_https_only_and_bad_certificates_stop_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path(), "one");
    certificates(dir.path(), "two");
    let sink = Sink::accepting().await;
    let (d, tls) = strict_dispatcher(dir.path(), &manifests(&sink.url())).await;
    let ca = dir.path().join("one-ca.pem");
    assert_eq!(
        curl_post(&format!("https://{tls}/shop/orders"), Some(&ca), "strict"),
        Ok(202),
        "{}",
        d.log()
    );
    assert!(
        std::net::TcpStream::connect(d.ingress).is_err(),
        "no plain HTTP listener in strict mode"
    );
    sink.wait_for(1, WAIT).await;

    // Misconfigurations: no certificate, a key that is not the
    // certificate's. The dispatcher exits naming what is wrong.
    let cert = dir.path().join("one-cert.pem").display().to_string();
    let other_key = dir.path().join("two-key.pem").display().to_string();
    for (flags, expected) in [
        (
            vec!["--transport-encryption", "strict"],
            "needs --tls-cert and --tls-key",
        ),
        (
            vec![
                "--transport-encryption",
                "permissive",
                "--tls-cert",
                &cert,
                "--tls-key",
                &other_key,
            ],
            "does not match",
        ),
    ] {
        let mut d = Dispatcher::spawn(&manifests(&sink.url()), &flags);
        let status = d.wait_exit(WAIT).await;
        assert!(
            status.is_some_and(|s| !s.success()),
            "{flags:?} exits with an error"
        );
        assert!(d.log().contains(expected), "{flags:?}: {}", d.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_to_an_https_subscriber_verifies_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path(), "one");
    // event-display serving HTTPS with a certificate of CA "one".
    let (mut display, port) = https_display(dir.path());
    let dead_letters = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: orders, namespace: shop}}\n---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: s, namespace: shop}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: orders}}\n  subscriber: {{uri: 'https://127.0.0.1:{port}/'}}\n  delivery: {{retry: 1, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n",
        dead_letters.url()
    );
    // Trusting CA "one": delivered.
    let ca = dir.path().join("one-ca.pem").display().to_string();
    let trusting = Dispatcher::start(&manifests, &["--delivery-ca-certs", &ca]).await;
    let url = format!("http://{}/shop/orders", trusting.ingress);
    assert_eq!(curl_post(&url, None, "trusted"), Ok(202));
    assert!(
        tests::eventually(WAIT, || std::fs::read_to_string(
            dir.path().join("display.out")
        )
        .unwrap_or_default()
        .contains("trusted"))
        .await,
        "{}",
        trusting.log()
    );
    // Not trusting it: a delivery failure, retried, then dead-lettered,
    // the reason naming the certificate.
    let wary = Dispatcher::start(&manifests, &[]).await;
    let url = format!("http://{}/shop/orders", wary.ingress);
    assert_eq!(curl_post(&url, None, "untrusted"), Ok(202));
    let dead = dead_letters.wait_for(1, WAIT).await;
    let e = dead[0].event.as_ref().expect("the original event");
    assert_eq!(e.id, "untrusted");
    let log = wary.log();
    assert!(
        log.to_lowercase().contains("certificate"),
        "the failure names the certificate: {log}"
    );
    let _ = display.kill();
    let _ = display.wait();
}

/// `pem` as a YAML block scalar indented by `indent` spaces.
fn yaml_block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    pem.lines().map(|l| format!("{pad}{l}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destinations_own_ca_certs_are_trusted_for_it_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path(), "one");
    certificates(dir.path(), "two");
    let (mut display, port) = https_display(dir.path());
    let dead_letters = Sink::accepting().await;
    let ca = |name: &str| {
        std::fs::read_to_string(dir.path().join(format!("{name}-ca.pem"))).expect("ca")
    };
    // Three subscriptions to the same HTTPS subscriber: with its CA in
    // Destination.CACerts, with another CA's, and with text that is not PEM.
    let subscription = |name: &str, ca_certs: &str| {
        format!(
            "---\napiVersion: messaging.knative.dev/v1\nkind: Subscription\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  channel: {{apiVersion: messaging.knative.dev/v1, kind: InMemoryChannel, name: {name}}}\n  subscriber:\n    uri: 'https://127.0.0.1:{port}/'\n    CACerts: |\n{}  delivery: {{retry: 1, backoffDelay: PT0.1S, deadLetterSink: {{uri: '{}'}}}}\n---\napiVersion: messaging.knative.dev/v1\nkind: InMemoryChannel\nmetadata: {{name: {name}, namespace: shop}}\n",
            yaml_block(ca_certs, 6),
            dead_letters.url()
        )
    };
    let manifests = [
        subscription("trusted", &ca("one")),
        subscription("other", &ca("two")),
        subscription("junk", "not a certificate"),
    ]
    .concat();
    // No --delivery-ca-certs: the system roots and each destination's own.
    let d = Dispatcher::start(&manifests, &[]).await;
    for name in ["trusted", "other", "junk"] {
        let url = format!("http://{}/shop/{name}", d.ingress);
        assert_eq!(curl_post(&url, None, name), Ok(202), "{}", d.log());
    }
    assert!(
        tests::eventually(WAIT, || std::fs::read_to_string(
            dir.path().join("display.out")
        )
        .unwrap_or_default()
        .contains("trusted"))
        .await,
        "{}",
        d.log()
    );
    let dead = dead_letters.wait_for(2, WAIT).await;
    let mut ids: Vec<String> = dead.iter().map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(ids, ["junk", "other"], "{}", d.log());
    let shown = std::fs::read_to_string(dir.path().join("display.out")).unwrap_or_default();
    assert!(
        !shown.contains("\"other\"") && !shown.contains("\"junk\""),
        "{shown}"
    );
    let log = d.log();
    assert!(log.contains("CACerts"), "the junk bundle is named: {log}");
    assert!(
        log.to_lowercase().contains("certificate"),
        "the failure names the certificate: {log}"
    );
    let _ = display.kill();
    let _ = display.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_transport_encryption_keeps_replies_on_https_inside_the_dispatcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path(), "one");
    let ca_pem = std::fs::read_to_string(dir.path().join("one-ca.pem")).expect("ca");
    // A subscriber answering every `t` event with an audit event, and the
    // audit service behind a second trigger.
    let replier = Sink::start(|r, _| match &r.event {
        Some(e) if e.ty == "t" => tests::Answer::reply(&channel_core::event::Event::new(
            format!("audit-{}", e.id),
            "/audit",
            "audited",
        )),
        _ => tests::Answer::status(202),
    })
    .await;
    let audit = Sink::accepting().await;
    let manifests = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-features, namespace: knative-eventing}}\ndata: {{transport-encryption: strict}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: eventing-ca\n  namespace: knative-eventing\n  labels: {{networking.knative.dev/trust-bundle: \"true\"}}\ndata:\n  ca.crt: |\n{}---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: default, namespace: shop}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: orders, namespace: shop}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: t}}}}\n  subscriber: {{uri: '{}'}}\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: audited, namespace: shop}}\nspec:\n  broker: default\n  filter: {{attributes: {{type: audited}}}}\n  subscriber: {{uri: '{}'}}\n",
        yaml_block(&ca_pem, 4),
        replier.url(),
        audit.url()
    );
    let (d, tls) = strict_dispatcher(dir.path(), &manifests).await;
    let ca = dir.path().join("one-ca.pem");
    assert_eq!(
        curl_post(
            &format!("https://{tls}/brokers/shop/default"),
            Some(&ca),
            "e1"
        ),
        Ok(202),
        "{}",
        d.log()
    );
    // The reply went back into the broker over HTTPS (the dispatcher's TLS
    // host, verified with the trust bundle) and on to the audit service.
    let got = audit.wait_for(1, WAIT).await;
    assert_eq!(
        got.first().map(|r| r.id()).as_deref(),
        Some("audit-e1"),
        "{}",
        d.log()
    );
}
