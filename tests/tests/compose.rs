//! `deploy/docker-compose.yaml` stays true to the binaries: Docker cannot
//! run here, so the file is checked the way it can be — Debian's
//! `docker-compose config` validates it, every flag and `KN_*` variable it
//! passes to one of our binaries must exist in that binary's `--help`, and
//! the example manifests it mounts must compile without a problem.

use channel_core::compile::compile;
use channel_core::manifests::load_paths;
use channel_core::BackendKind;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn compose() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(root().join("deploy/docker-compose.yaml"))
        .expect("deploy/docker-compose.yaml");
    serde_yaml_ng::from_str(&text).expect("compose file is YAML")
}

#[test]
fn docker_compose_accepts_the_file() {
    let out = Command::new("docker-compose")
        .args(["-f", "deploy/docker-compose.yaml", "config", "--quiet"])
        .current_dir(root())
        .output()
        .expect("docker-compose installed (apt-get install docker-compose)");
    assert!(
        out.status.success(),
        "docker-compose config rejects the file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The binary (built here) and crate of a Dockerfile target.
fn binary_of(target: &str) -> Option<PathBuf> {
    let package = match target {
        "inmemory-dispatcher" => "channel-inmemory",
        "kafka-dispatcher" => "channel-kafka",
        "nats-dispatcher" => "channel-nats",
        "provisioner" => "provisioner",
        "event-display" => "event-display",
        _ => return None,
    };
    Some(tests::build_bin(package, target))
}

#[test]
fn every_flag_and_variable_the_compose_file_passes_exists() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap_or_default();
        // Our images are built from the Dockerfile; their target names the binary.
        let Some(target) = service["build"]["target"].as_str() else {
            continue;
        };
        assert!(
            dockerfile.contains(&format!(" AS {target}\n")),
            "service {name}: the Dockerfile has no target {target}"
        );
        let binary = binary_of(target)
            .unwrap_or_else(|| panic!("service {name}: unknown build target {target}"));
        let command: Vec<String> = service["command"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        // A leading word is a subcommand (`provisioner standalone`).
        let subcommand: Vec<&str> = command
            .iter()
            .take_while(|a| !a.starts_with('-'))
            .map(String::as_str)
            .collect();
        let help = Command::new(&binary)
            .args(&subcommand)
            .arg("--help")
            .output()
            .expect("--help runs");
        assert!(help.status.success(), "{} --help failed", binary.display());
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        for arg in command.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}=")),
                "service {name}: {target} has no flag {flag}:\n{help}"
            );
            checked += 1;
        }
        if let Some(env) = service["environment"].as_mapping() {
            for key in env.keys().filter_map(|k| k.as_str()) {
                assert!(
                    help.contains(&format!("[env: {key}=")),
                    "service {name}: {target} reads no variable {key}:\n{help}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} flags checked: is the compose file parsed?"
    );
}

#[test]
fn the_example_manifests_compile_to_one_channel_per_backend() {
    let compose = compose();
    let mount = compose["services"]["provisioner"]["volumes"]
        .as_sequence()
        .and_then(|v| {
            v.iter()
                .filter_map(|m| m.as_str())
                .find(|m| m.contains("/etc/knative/manifests"))
        })
        .expect("the provisioner mounts the example manifests");
    let host = mount.split(':').next().unwrap_or_default();
    let dir = root().join("deploy").join(host);
    let manifests = load_paths(std::slice::from_ref(&dir)).expect("example manifests load");
    assert!(manifests.warnings.is_empty(), "{:?}", manifests.warnings);
    let compiled = compile(&manifests);
    assert!(compiled.problems.is_empty(), "{:#?}", compiled.problems);
    let served = |backend: BackendKind| -> Vec<String> {
        compiled
            .contracts
            .get(&backend)
            .map(|c| c.channels.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(served(BackendKind::InMemory), ["orders"]);
    // The Kafka broker's channel beside the Kafka channel.
    assert_eq!(
        served(BackendKind::Kafka),
        ["default-kne-trigger", "payments"]
    );
    assert_eq!(served(BackendKind::Nats), ["audit"]);
    for contract in compiled.contracts.values() {
        for channel in &contract.channels {
            let expected = if channel.broker.is_some() { 2 } else { 1 };
            assert_eq!(channel.subscriptions.len(), expected, "{}", channel.name);
        }
    }
    // The backends accept their parameters.
    for contract in compiled.contracts.values() {
        for channel in &contract.channels {
            match channel.backend {
                BackendKind::Kafka => {
                    channel_kafka::config::KafkaParams::parse(&channel.parameters)
                        .expect("kafka parameters");
                }
                BackendKind::Nats => {
                    channel_nats::config::NatsParameters::from_channel(channel)
                        .expect("nats parameters");
                }
                BackendKind::InMemory => {
                    channel_inmemory::Limits::default()
                        .for_channel(channel)
                        .expect("in-memory parameters");
                }
            }
        }
    }
}
