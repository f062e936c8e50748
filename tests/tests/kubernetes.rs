//! `deploy/kubernetes` stays loadable and true: every document parses into
//! its Kubernetes type and survives a round trip unchanged (so a misspelled
//! field cannot hide), the flags the Deployments pass exist in the binaries,
//! the dispatchers get no Kubernetes access, the provisioner may do what the
//! broker controller does, the broker examples are valid custom resources,
//! and the controller refuses to start without a cluster with a clear
//! message.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn dir() -> PathBuf {
    deploy("kubernetes")
}

fn deploy(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("deploy")
        .join(sub)
}

/// Every document of every YAML file of `deploy/kubernetes`, with the file
/// it came from.
fn documents() -> Vec<(String, Value)> {
    documents_in(&dir())
}

fn documents_in(dir: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_yaml_ng::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{name}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(&value).expect("JSON-compatible");
            out.push((name.clone(), json));
        }
    }
    out
}

use serde::Deserialize as _;

fn round_trip<T: DeserializeOwned + Serialize>(file: &str, doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{file}: {} does not parse: {e}", doc["kind"]));
    let back = serde_json::to_value(&typed).expect("serializes");
    assert_eq!(
        &back, doc,
        "{file}: {} {} changes in a round trip (a misspelled or misplaced field?)",
        doc["kind"], doc["metadata"]["name"]
    );
    typed
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let docs = documents();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (file, doc) in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Namespace" => drop(round_trip::<Namespace>(file, doc)),
            "ServiceAccount" => drop(round_trip::<ServiceAccount>(file, doc)),
            "ClusterRole" => drop(round_trip::<ClusterRole>(file, doc)),
            "ClusterRoleBinding" => drop(round_trip::<ClusterRoleBinding>(file, doc)),
            "Role" => drop(round_trip::<Role>(file, doc)),
            "RoleBinding" => drop(round_trip::<RoleBinding>(file, doc)),
            "Deployment" => drop(round_trip::<Deployment>(file, doc)),
            "Service" => drop(round_trip::<Service>(file, doc)),
            "CustomResourceDefinition" => drop(round_trip::<CustomResourceDefinition>(file, doc)),
            "ClusterChannelProvisioner" => drop(round_trip::<
                provisioner::kubernetes::crd::ClusterChannelProvisioner,
            >(file, doc)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        kinds.get("CustomResourceDefinition"),
        Some(&21),
        "four channel kinds, Subscription, ClusterChannelProvisioner, Broker, Trigger, Sequence, Parallel, EventType, EventPolicy, nine source kinds: {kinds:?}"
    );
    assert_eq!(
        kinds.get("Deployment"),
        Some(&5),
        "provisioner, three dispatchers and the source adapter"
    );
    assert_eq!(kinds.get("ClusterChannelProvisioner"), Some(&3));
}

#[test]
fn the_crds_serve_brokers_and_triggers_as_knative_does() {
    let crds: Vec<CustomResourceDefinition> = documents()
        .into_iter()
        .filter(|(_, d)| d["kind"] == "CustomResourceDefinition")
        .map(|(file, d)| round_trip(&file, &d))
        .collect();
    for (name, columns) in [
        (
            "brokers.eventing.knative.dev",
            vec!["URL", "Age", "Ready", "Reason"],
        ),
        (
            "triggers.eventing.knative.dev",
            vec!["Broker", "Subscriber_URI", "Age", "Ready", "Reason"],
        ),
    ] {
        let crd = crds
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no CRD {name}"));
        let versions: Vec<(&str, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.storage))
            .collect();
        assert_eq!(
            versions,
            [("v1", true), ("v1beta1", false), ("v1alpha1", false)],
            "{name}"
        );
        for v in &crd.spec.versions {
            let got: Vec<&str> = v
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(got, columns, "{name} {}", v.name);
            assert!(v
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some());
        }
    }
}

/// Whether a rule of `role` grants `verb` on `resource` of `group`.
fn allows(role: &ClusterRole, group: &str, resource: &str, verb: &str) -> bool {
    role.rules.iter().flatten().any(|r| {
        r.api_groups.iter().flatten().any(|g| g == group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn the_provisioner_may_run_brokers_and_triggers() {
    let role: ClusterRole = documents()
        .into_iter()
        .find(|(_, d)| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "knative-channels-provisioner"
        })
        .map(|(file, d)| round_trip(&file, &d))
        .expect("the provisioner's ClusterRole");
    let eventing = "eventing.knative.dev";
    for (group, resource, verbs) in [
        (
            eventing,
            "brokers",
            &["get", "list", "watch", "patch", "create"][..],
        ),
        (eventing, "triggers", &["get", "list", "watch", "patch"][..]),
        (eventing, "brokers/status", &["patch"][..]),
        (eventing, "triggers/status", &["patch"][..]),
        // blockOwnerDeletion on the broker's Service needs it too.
        (eventing, "brokers/finalizers", &["update"][..]),
        (eventing, "triggers/finalizers", &["update"][..]),
        ("", "configmaps", &["get", "list", "watch"][..]),
        ("", "namespaces", &["get", "list", "watch"][..]),
        ("", "services", &["get", "create", "patch"][..]),
    ] {
        for verb in verbs {
            assert!(
                allows(&role, group, resource, verb),
                "{verb} {resource}.{group}"
            );
        }
    }
}

#[test]
fn the_provisioner_may_run_flows_and_the_registry() {
    let role: ClusterRole = documents()
        .into_iter()
        .find(|(_, d)| {
            d["kind"] == "ClusterRole" && d["metadata"]["name"] == "knative-channels-provisioner"
        })
        .map(|(file, d)| round_trip(&file, &d))
        .expect("the provisioner's ClusterRole");
    let (flows, eventing) = ("flows.knative.dev", "eventing.knative.dev");
    for (group, resource, verbs) in [
        (flows, "sequences", &["get", "list", "watch", "patch"][..]),
        (flows, "parallels", &["get", "list", "watch", "patch"][..]),
        (flows, "sequences/status", &["patch"][..]),
        (flows, "parallels/status", &["patch"][..]),
        // blockOwnerDeletion on the flows' Services needs it too.
        (flows, "sequences/finalizers", &["update"][..]),
        (flows, "parallels/finalizers", &["update"][..]),
        (
            eventing,
            "eventtypes",
            &["get", "list", "watch", "create"][..],
        ),
        (eventing, "eventtypes/status", &["patch"][..]),
    ] {
        for verb in verbs {
            assert!(
                allows(&role, group, resource, verb),
                "{verb} {resource}.{group}"
            );
        }
    }
}

#[test]
fn the_flow_examples_are_valid_custom_resources() {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (file, doc) in documents_in(&deploy("examples/flows")) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Sequence" => drop(round_trip::<provisioner::kubernetes::crd::Sequence>(
                &file, &doc,
            )),
            "Parallel" => drop(round_trip::<provisioner::kubernetes::crd::Parallel>(
                &file, &doc,
            )),
            other => panic!("{file}: unexpected kind {other}"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

#[test]
fn the_broker_examples_are_valid_custom_resources() {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for (file, doc) in documents_in(&deploy("examples/broker")) {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Broker" => drop(round_trip::<provisioner::kubernetes::crd::Broker>(
                &file, &doc,
            )),
            "Trigger" => drop(round_trip::<provisioner::kubernetes::crd::Trigger>(
                &file, &doc,
            )),
            "ConfigMap" => drop(round_trip::<ConfigMap>(&file, &doc)),
            other => panic!("{file}: unexpected kind {other}"),
        }
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(kinds.get("Broker").is_some_and(|n| *n >= 1), "{kinds:?}");
    assert!(kinds.get("Trigger").is_some_and(|n| *n >= 3), "{kinds:?}");
}

#[test]
fn dispatchers_have_no_kubernetes_access_and_everything_runs_locked_down() {
    let docs = documents();
    for (file, doc) in &docs {
        for subject in doc["subjects"].as_array().into_iter().flatten() {
            assert_ne!(
                subject["name"], "dispatcher",
                "{file}: the dispatcher is bound to a role"
            );
        }
        if doc["kind"] == "Deployment" {
            let deployment: Deployment = serde_json::from_value(doc.clone()).expect("Deployment");
            let pod = deployment
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod spec");
            let name = deployment.metadata.name.unwrap_or_default();
            if name.ends_with("-dispatcher") {
                assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
            }
            assert_eq!(
                pod.security_context.and_then(|s| s.run_as_non_root),
                Some(true),
                "{name}"
            );
            for c in &pod.containers {
                let sc = c
                    .security_context
                    .clone()
                    .expect("container security context");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
                assert!(
                    c.liveness_probe.is_some() && c.readiness_probe.is_some(),
                    "{name}"
                );
                let resources = c.resources.clone().expect("resources");
                assert!(
                    resources.requests.is_some() && resources.limits.is_some(),
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn the_deployments_pass_flags_their_binaries_have() {
    for (file, doc) in documents() {
        if doc["kind"] != "Deployment" {
            continue;
        }
        let deployment: Deployment = serde_json::from_value(doc).expect("Deployment");
        let name = deployment.metadata.name.clone().unwrap_or_default();
        let (package, binary) = match name.as_str() {
            "provisioner" => ("provisioner", "provisioner"),
            "inmemory-dispatcher" => ("channel-inmemory", "inmemory-dispatcher"),
            "kafka-dispatcher" => ("channel-kafka", "kafka-dispatcher"),
            "nats-dispatcher" => ("channel-nats", "nats-dispatcher"),
            "source-adapter" => ("sources", "source-adapter"),
            other => panic!("{file}: unknown Deployment {other}"),
        };
        let path = tests::build_bin(package, binary);
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        for c in pod.containers {
            let args = c.args.unwrap_or_default();
            let subcommand: Vec<&str> = args
                .iter()
                .take_while(|a| !a.starts_with('-'))
                .map(String::as_str)
                .collect();
            let help = Command::new(&path)
                .args(&subcommand)
                .arg("--help")
                .output()
                .expect("--help");
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            for arg in args.iter().filter(|a| a.starts_with("--")) {
                let flag = arg.split('=').next().unwrap_or(arg);
                assert!(
                    help.contains(&format!("{flag} ")),
                    "{name}: no flag {flag}:\n{help}"
                );
            }
            for env in c.env.unwrap_or_default() {
                assert!(
                    help.contains(&format!("[env: {}=", env.name)),
                    "{name}: reads no variable {}:\n{help}",
                    env.name
                );
            }
        }
    }
}

#[test]
fn the_controller_without_a_cluster_says_so() {
    let out = Command::new(tests::build_bin("provisioner", "provisioner"))
        .args(["controller", "--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Kubernetes configuration"), "{stderr}");
}
