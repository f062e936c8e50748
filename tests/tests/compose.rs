//! `deploy/docker-compose.yaml` stays true to the binaries, checked without
//! a Docker engine (the stack runs for real in `compose_up.rs`): Debian's
//! `docker-compose config` validates it and the test overrides, every flag
//! and `KN_*` variable it passes to one of our binaries must exist in that
//! binary's `--help`, the example manifests it mounts must compile without
//! a problem, and each image built from host binaries for the tests
//! (`<target>-prebuilt`) is its user-facing target but for where the binary
//! comes from.

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

#[test]
fn docker_compose_accepts_the_test_overrides() {
    for extra in [
        &[][..],
        &["-f", "tests/compose/nats-cluster.yaml"],
        &["-f", "tests/compose/broker-network.yaml"],
    ] {
        let out = Command::new("docker-compose")
            .args(["-f", "deploy/docker-compose.yaml"])
            .args(["-f", "tests/compose/images.yaml"])
            .args(extra)
            .args(["config", "--quiet"])
            .current_dir(root())
            .output()
            .expect("docker-compose installed (apt-get install docker-compose)");
        assert!(
            out.status.success(),
            "docker-compose config rejects the overrides {extra:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Dockerfile's stages: name → instructions (comments and blank lines
/// left out, continuation lines joined).
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    let mut joined = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            joined.push_str(head);
            continue;
        }
        joined.push_str(line);
        let instruction = std::mem::take(&mut joined);
        if let Some(from) = instruction.strip_prefix("FROM ") {
            let name = from
                .split(" AS ")
                .nth(1)
                .unwrap_or_default()
                .trim()
                .to_owned();
            stages.push((name, vec![instruction]));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instruction);
        }
    }
    stages
}

#[test]
fn every_prebuilt_image_is_its_user_image_but_for_where_the_binary_comes_from() {
    let stages = dockerfile_stages();
    let stage = |name: &str| {
        stages
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("the Dockerfile has no stage {name}"))
    };
    let mut checked = 0;
    for (_, bin) in tests::compose::BINARIES {
        let user = stage(bin);
        let prebuilt = stage(&format!("{bin}-prebuilt"));
        assert_eq!(user[0], format!("FROM runtime AS {bin}"));
        assert_eq!(prebuilt[0], format!("FROM runtime AS {bin}-prebuilt"));
        assert_eq!(
            user[1..]
                .iter()
                .map(|i| i.replace("COPY --from=builder /out/", "COPY "))
                .collect::<Vec<_>>(),
            prebuilt[1..].to_vec(),
            "{bin}-prebuilt differs from {bin}"
        );
        assert!(prebuilt.contains(&format!("COPY {bin} /usr/local/bin/")));
        checked += 1;
    }
    assert_eq!(checked, 6);
    // Both run as the non-root user of the shared runtime stage.
    assert!(stage("runtime").contains(&"USER 65532:65532".to_owned()));
    // The legacy builder (Docker without buildx) builds every stage before
    // the target: no prebuilt target may come after the builder.
    let position = |name: &str| stages.iter().position(|(n, _)| n == name);
    for (_, bin) in tests::compose::BINARIES {
        assert!(position(&format!("{bin}-prebuilt")) < position("builder"));
    }
}

/// The binary (built here) and crate of a Dockerfile target.
fn binary_of(target: &str) -> Option<PathBuf> {
    let package = match target {
        "inmemory-dispatcher" => "channel-inmemory",
        "kafka-dispatcher" => "channel-kafka",
        "nats-dispatcher" => "channel-nats",
        "provisioner" => "provisioner",
        "event-display" => "event-display",
        "source-adapter" => "sources",
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
