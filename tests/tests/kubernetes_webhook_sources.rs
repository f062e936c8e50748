//! GitHubSource, GitLabSource and KafkaSource in `deploy/kubernetes`: their
//! CRDs are installed, the provisioner may run them (status, the webhook
//! finalizer, the Secrets holding the tokens), the source adapter may read
//! those Secrets and exposes its webhook listener as the Service
//! `source-adapter-webhooks`, and `provisioner controller` has the flag
//! that turns webhook registration on.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize as _;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Every document of `deploy/kubernetes/<file>`.
fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("deploy/kubernetes")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("JSON-compatible"))
        .collect()
}

fn find<T: serde::de::DeserializeOwned>(file: &str, kind: &str, name: &str) -> T {
    let doc = documents(file)
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file}: no {kind} {name}"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{file}: {kind} {name}: {e}"))
}

fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|r| {
        r.api_groups
            .iter()
            .flatten()
            .any(|g| g == group || g == "*")
            && r.resources
                .iter()
                .flatten()
                .any(|x| x == resource || x == "*")
            && r.verbs.iter().any(|v| v == verb || v == "*")
    })
}

#[test]
fn the_crds_of_the_three_kinds_are_installed() {
    let crds: Vec<CustomResourceDefinition> = documents("crds.yaml")
        .into_iter()
        .map(|d| serde_json::from_value(d).expect("CRD"))
        .collect();
    for (kind, versions) in [
        ("GitHubSource", &["v1alpha1"][..]),
        ("GitLabSource", &["v1alpha1"][..]),
        ("KafkaSource", &["v1beta1", "v1alpha1"][..]),
    ] {
        let crd = crds
            .iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap_or_else(|| panic!("no CRD of {kind}"));
        assert_eq!(crd.spec.group, "sources.knative.dev");
        let served: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(served, versions, "{kind}");
        assert!(
            crd.spec
                .names
                .categories
                .iter()
                .flatten()
                .any(|c| c == "sources"),
            "kubectl get sources lists {kind}"
        );
        assert!(crd
            .spec
            .versions
            .iter()
            .all(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some())));
    }
}

#[test]
fn the_provisioner_may_run_the_three_kinds_and_read_their_tokens() {
    let role: ClusterRole = find("rbac.yaml", "ClusterRole", "knative-channels-provisioner");
    let sources = "sources.knative.dev";
    for resource in ["githubsources", "gitlabsources", "kafkasources"] {
        for verb in ["get", "list", "watch", "patch"] {
            assert!(allows(&role, sources, resource, verb), "{verb} {resource}");
        }
        assert!(
            allows(&role, sources, &format!("{resource}/status"), "patch"),
            "{resource}/status"
        );
    }
    for resource in ["githubsources/finalizers", "gitlabsources/finalizers"] {
        assert!(allows(&role, sources, resource, "update"), "{resource}");
    }
    assert!(allows(&role, "", "secrets", "get"), "the tokens");
}

#[test]
fn the_adapter_reads_secrets_and_serves_webhooks_on_its_service() {
    let role: ClusterRole = find("sources.yaml", "ClusterRole", "knative-source-adapter");
    assert!(allows(&role, "", "secrets", "get"));

    let deployment: Deployment = find("sources.yaml", "Deployment", "source-adapter");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod spec");
    let adapter = &pod.containers[0];
    assert!(adapter
        .args
        .iter()
        .flatten()
        .any(|a| a == "--webhook-listen=0.0.0.0:8088"));
    assert!(adapter
        .ports
        .iter()
        .flatten()
        .any(|p| p.name.as_deref() == Some("webhooks") && p.container_port == 8088));

    let service: Service = find("sources.yaml", "Service", "source-adapter-webhooks");
    let spec = service.spec.expect("spec");
    assert_eq!(
        spec.selector
            .as_ref()
            .and_then(|s| s.get("app.kubernetes.io/name"))
            .map(String::as_str),
        Some("source-adapter")
    );
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.port, 8088);
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("webhooks".into()))
    );
}

#[test]
fn the_controller_has_the_webhook_base_url_flag() {
    let out = Command::new(tests::build_bin("provisioner", "provisioner"))
        .args(["controller", "--help"])
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--webhook-base-url "), "{help}");
    assert!(
        help.contains("[env: KN_PROVISIONER_WEBHOOK_BASE_URL=]"),
        "{help}"
    );
    // A URL it cannot use is refused at start.
    let out = Command::new(tests::build_bin("provisioner", "provisioner"))
        .args(["controller", "--webhook-base-url", "not a url"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--webhook-base-url"), "{stderr}");
}
