//! Docker compose pieces of the harness: the whole system in containers.
//!
//! [`Setup::up`] starts `deploy/docker-compose.yaml` — the file users run —
//! under a project name of its own, with `tests/compose/images.yaml` (the
//! images [`images`] builds from this workspace's binaries, without a
//! registry) and an override written for the test: free host ports, a
//! private copy of the example manifests (so a test can edit them), and
//! event-display printing one JSON line per event. Dropping the [`Stack`]
//! runs `docker-compose down -v`, also when the test failed (after printing
//! every service's last log lines).
//!
//! Every command runs with a timeout; every wait and every load is bounded in
//! time and count. [`Load`] sends events and records each answer; a
//! [`Ledger`] compares what was acknowledged (`202`) with what event-display
//! printed: nothing acknowledged may be missing, duplicates are counted.

use crate::{build_bin, HttpClient};
use http::StatusCode;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binaries in the images: (package, binary).
pub const BINARIES: [(&str, &str); 6] = [
    ("channel-inmemory", "inmemory-dispatcher"),
    ("channel-kafka", "kafka-dispatcher"),
    ("channel-nats", "nats-dispatcher"),
    ("provisioner", "provisioner"),
    ("sources", "source-adapter"),
    ("event-display", "event-display"),
];

/// The services of the compose file running our images.
pub const OUR_SERVICES: [&str; 8] = [
    "provisioner",
    "inmemory-dispatcher",
    "kafka-dispatcher",
    "nats-dispatcher",
    "source-adapter",
    "heartbeats",
    "event-display",
    "dead-letters",
];

/// Bound on one `docker-compose` or `docker` command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Write a line to the test process's stderr directly, so that it shows even
/// when the test harness captures output (as it does for passing tests).
pub fn announce(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

/// Why the compose tests cannot run here, if they cannot: no `docker`
/// command, no engine answering `docker info`, or `KN_SKIP_COMPOSE_TESTS`
/// set. Checked once per process.
pub fn skip_reason() -> Option<String> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            if let Ok(v) = std::env::var("KN_SKIP_COMPOSE_TESTS") {
                if !v.is_empty() && v != "0" {
                    return Some(format!("KN_SKIP_COMPOSE_TESTS={v}"));
                }
            }
            let mut info = Command::new("docker");
            info.args(["info", "--format", "{{.ServerVersion}}"]);
            match run_blocking(&mut info, Duration::from_secs(30)) {
                Err(e) => Some(format!("no `docker` command ({e})")),
                Ok(out) if !out.status.success() => Some(format!(
                    "no Docker engine answers `docker info`: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("(no message)")
                )),
                Ok(_) => None,
            }
        })
        .clone()
}

/// True (after saying so on stderr) when the compose test `test` must be
/// skipped; see [`skip_reason`].
pub fn skip(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            announce(&format!("SKIPPED {test}: {why}"));
            true
        }
        None => false,
    }
}

/// Run a command to its end, at most `timeout` (then it is killed and the
/// output says so), with its output captured.
pub fn run_blocking(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            timed_out = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let mut stderr = stderr.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[killed after {timeout:?}]\n").as_bytes());
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// [`run_blocking`] off the async runtime's worker threads.
pub async fn run(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    tokio::task::spawn_blocking(move || run_blocking(&mut cmd, timeout))
        .await
        .expect("command task")
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"))
}

/// The image tags the compose tests run.
#[derive(Debug, Clone)]
pub struct Images {
    /// Tag of the six project images (`knative-rs-test/<binary>:<tag>`).
    pub tag: String,
    /// Tag of `knative-rs-test/nats`.
    pub nats: String,
    /// Tag of `knative-rs-test/tansu`.
    pub tansu: String,
}

/// Build the binaries (or take them from `$KN_TEST_BIN_DIR`, e.g. a release
/// build) and then the images (`tests/compose/build-images.sh`) once per
/// test process. The project images are tagged after this checkout
/// (`dev-<folder>`), so that two worktrees testing at once do not run each
/// other's images (a target directory shared between checkouts still holds
/// whichever built a binary last: give each checkout its own).
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let started = Instant::now();
        let bin_dir = match std::env::var_os("KN_TEST_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let mut dir = PathBuf::new();
                for (package, bin) in BINARIES {
                    dir = build_bin(package, bin)
                        .parent()
                        .expect("target dir")
                        .to_path_buf();
                }
                // Carried by the source-adapter image.
                build_bin("sources", "heartbeats");
                dir
            }
        };
        let root = root();
        let folder: String = root
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let tag = format!("dev-{folder}");
        let mut script = Command::new(root.join("tests/compose/build-images.sh"));
        script
            .arg("--bin-dir")
            .arg(&bin_dir)
            .env("KN_TEST_IMAGE_TAG", &tag);
        let out = run_blocking(&mut script, Duration::from_secs(20 * 60))
            .expect("tests/compose/build-images.sh runs");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "tests/compose/build-images.sh failed:\n{log}"
        );
        for line in log.lines() {
            announce(line);
        }
        let last = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            last.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("build-images.sh printed no {name}: {last}"))
                .to_owned()
        };
        let images = Images {
            tag,
            nats: field("NATS_TAG="),
            tansu: field("TANSU_TAG="),
        };
        announce(&format!(
            "compose images ready in {:.1} s: {images:?}",
            started.elapsed().as_secs_f64()
        ));
        images
    })
}

/// Host ports of a stack.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub inmemory: u16,
    pub kafka: u16,
    pub nats: u16,
    pub status: u16,
}

/// How to start a [`Stack`].
#[derive(Debug, Clone)]
pub struct Setup {
    name: String,
    edits: Vec<(String, String, String)>,
    overrides: Vec<String>,
}

impl Setup {
    /// A stack named after the test. Its copy of the example manifests has
    /// one change, for tansu: the Kafka class produces one record per batch
    /// (`batch.num.messages: 1`), because tansu 0.6 skips the rest of a
    /// batch when a fetch starts inside it (docs/kafka.md), which a consumer
    /// resuming after a kill does.
    pub fn new(name: &str) -> Setup {
        Setup {
            name: name.to_owned(),
            edits: Vec::new(),
            overrides: Vec::new(),
        }
        .edit_manifest(
            "classes.yaml",
            "    retentionDuration: PT24H\n",
            "    retentionDuration: PT24H\n    config: {batch.num.messages: 1}\n",
        )
    }

    /// Replace `from` by `to` in the copied manifest `file` before starting.
    pub fn edit_manifest(mut self, file: &str, from: &str, to: &str) -> Setup {
        self.edits.push((file.into(), from.into(), to.into()));
        self
    }

    /// One more compose override file (relative to the workspace root),
    /// after the others.
    pub fn with_override(mut self, file: &str) -> Setup {
        self.overrides.push(file.to_owned());
        self
    }

    /// Start the stack (`up -d --no-build`) and wait until every channel
    /// and subscription is Ready (at most 120 s).
    pub async fn up(self) -> Stack {
        let images = tokio::task::spawn_blocking(images)
            .await
            .expect("images")
            .clone();
        let stack = Stack::create(self, &images);
        let started = Instant::now();
        let out = stack
            .compose(&["up", "-d", "--no-build"], Duration::from_secs(180))
            .await;
        assert!(
            out.status.success(),
            "{}: docker-compose up failed:\n{}",
            stack.project,
            String::from_utf8_lossy(&out.stderr)
        );
        let up = started.elapsed();
        let ready = stack.wait_ready(Duration::from_secs(120)).await;
        announce(&format!(
            "{}: up in {:.1} s, every resource Ready {:.1} s later",
            stack.project,
            up.as_secs_f64(),
            ready.as_secs_f64()
        ));
        stack
    }
}

/// A running compose project, taken down (with its volumes) on drop.
#[derive(Debug)]
pub struct Stack {
    pub project: String,
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    pub ports: Ports,
    pub client: HttpClient,
}

impl Stack {
    fn create(setup: Setup, images: &Images) -> Stack {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        // The containers run as uid 65532: the manifests must be readable.
        let readable = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        readable(dir.path(), 0o755);
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("mkdir");
        readable(&manifests, 0o755);
        let examples = root().join("deploy/examples/compose");
        for entry in std::fs::read_dir(&examples).expect("deploy/examples/compose") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let mut text = std::fs::read_to_string(&path).expect("manifest");
            for (file, from, to) in &setup.edits {
                if *file == name {
                    assert!(text.contains(from.as_str()), "{name} has no {from:?}");
                    text = text.replace(from.as_str(), to);
                }
            }
            std::fs::write(manifests.join(&name), text).expect("write manifest");
            readable(&manifests.join(&name), 0o644);
        }
        let mut files = vec![
            root().join("deploy/docker-compose.yaml"),
            root().join("tests/compose/images.yaml"),
        ];
        let own = format!(
            "# Written by tests/src/compose.rs for this test only.\n\
             services:\n\
             \x20 provisioner:\n\
             \x20   volumes: [\"{}:/etc/knative/manifests:ro\"]\n\
             \x20 event-display:\n\
             \x20   environment: {{EVENT_DISPLAY_JSON: \"true\"}}\n\
             \x20 dead-letters:\n\
             \x20   environment: {{EVENT_DISPLAY_JSON: \"true\"}}\n",
            manifests.display()
        );
        let file = dir.path().join("override.yaml");
        std::fs::write(&file, own).expect("write override");
        files.push(file);
        files.extend(setup.overrides.iter().map(|f| root().join(f)));
        let ports = Ports {
            inmemory: crate::free_port(),
            kafka: crate::free_port(),
            nats: crate::free_port(),
            status: crate::free_port(),
        };
        // Compose v1 keeps `-`, `_`, lowercase letters and digits.
        let project: String = format!("knrs-{}-{}", setup.name, std::process::id())
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let env = vec![
            (
                "KN_COMPOSE_INMEMORY_PORT".into(),
                ports.inmemory.to_string(),
            ),
            ("KN_COMPOSE_KAFKA_PORT".into(), ports.kafka.to_string()),
            ("KN_COMPOSE_NATS_PORT".into(), ports.nats.to_string()),
            ("KN_COMPOSE_STATUS_PORT".into(), ports.status.to_string()),
            ("KN_TEST_IMAGE_TAG".into(), images.tag.clone()),
            ("KN_TEST_NATS_TAG".into(), images.nats.clone()),
            ("KN_TEST_TANSU_TAG".into(), images.tansu.clone()),
        ];
        Stack {
            project,
            dir,
            files,
            env,
            ports,
            client: HttpClient::new(),
        }
    }

    fn compose_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker-compose");
        cmd.arg("--no-ansi").args(["-p", &self.project]);
        for f in &self.files {
            cmd.arg("-f").arg(f);
        }
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Run `docker-compose <args>` on this project.
    pub async fn compose(&self, args: &[&str], timeout: Duration) -> Output {
        run(self.compose_command(args), timeout).await
    }

    /// Run `docker <args>`.
    pub async fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        run(cmd, COMMAND_TIMEOUT).await
    }

    /// Run `docker <args>` and fail the test if it fails.
    pub async fn docker_ok(&self, args: &[&str]) -> Output {
        let out = self.docker(args).await;
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Run `docker-compose <args>` and fail the test if it fails.
    pub async fn compose_ok(&self, args: &[&str]) -> Output {
        let out = self.compose(args, COMMAND_TIMEOUT).await;
        assert!(
            out.status.success(),
            "docker-compose {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The container of a service (compose v1 names it `<project>_<service>_1`).
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// A network of this project (`<project>_<name>`).
    pub fn network(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    /// The host URL of a path on the ingress of `backend` (`inmemory`,
    /// `kafka`, `nats`).
    pub fn url(&self, backend: &str, path: &str) -> String {
        let port = match backend {
            "inmemory" => self.ports.inmemory,
            "kafka" => self.ports.kafka,
            "nats" => self.ports.nats,
            other => panic!("no backend {other}"),
        };
        format!("http://127.0.0.1:{port}{path}")
    }

    /// The folder mounted as the provisioner's manifests.
    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Replace a manifest file atomically (write beside, then rename).
    pub fn write_manifest(&self, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.dir.path().join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename manifest");
    }

    /// Remove a manifest file.
    pub fn remove_manifest(&self, name: &str) {
        std::fs::remove_file(self.manifests().join(name)).expect("remove manifest");
    }

    /// The provisioner's status document from its published port (`None`
    /// while it does not answer).
    pub async fn status(&self) -> Option<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/status", self.ports.status);
        let (code, body) = self.client.get(&url).await.ok()?;
        if code != StatusCode::OK {
            return None;
        }
        serde_json::from_slice(&body).ok()
    }

    /// `provisioner status` run inside the provisioner container.
    pub async fn status_in_container(&self, extra: &[&str]) -> Output {
        let container = self.container("provisioner");
        let mut args = vec!["exec", container.as_str(), "provisioner", "status"];
        args.extend_from_slice(extra);
        self.docker(&args).await
    }

    /// Wait until the provisioner lists at least one resource and every
    /// listed resource is Ready; how long it took. Fails after `timeout`
    /// with the status table and the provisioner's log.
    pub async fn wait_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status().await {
                if all_ready(&status) {
                    return started.elapsed();
                }
            }
            if started.elapsed() > timeout {
                let table = self.status_in_container(&[]).await;
                panic!(
                    "{}: not every resource Ready in {timeout:?}:\n{}{}\nprovisioner log:\n{}",
                    self.project,
                    String::from_utf8_lossy(&table.stdout),
                    String::from_utf8_lossy(&table.stderr),
                    self.logs_tail("provisioner", 40).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ids of the events a display service (`event-display`,
    /// `dead-letters`) printed, one per delivery, in order.
    pub async fn displayed_ids(&self, service: &str) -> Vec<String> {
        let out = self.docker(&["logs", &self.container(service)]).await;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The events a display service printed (JSON, structured mode).
    pub async fn displayed_events(&self, service: &str) -> Vec<serde_json::Value> {
        let out = self.docker(&["logs", &self.container(service)]).await;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until every id `load` got a `202` for was printed by
    /// `display` (at most `timeout`); the ledger either way.
    pub async fn ledger(
        &self,
        name: &str,
        display: &str,
        attempts: &[Attempt],
        timeout: Duration,
    ) -> Ledger {
        let deadline = Instant::now() + timeout;
        loop {
            let ledger = Ledger::new(name, attempts, &self.displayed_ids(display).await);
            if ledger.lost().is_empty() || Instant::now() > deadline {
                announce(&format!("{}: {}", self.project, ledger.summary()));
                return ledger;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Wait (at most `timeout`) until `display` printed an event of `load`
    /// that was acknowledged for a request started after `t`; how long after
    /// `t` it was seen (polled every 250 ms).
    pub async fn first_delivery_after(
        &self,
        display: &str,
        load: &Load,
        t: Instant,
        timeout: Duration,
    ) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let acked: BTreeSet<String> = load
                .attempts()
                .into_iter()
                .filter(|a| a.started > t && a.status == Some(202))
                .map(|a| a.id)
                .collect();
            if !acked.is_empty()
                && self
                    .displayed_ids(display)
                    .await
                    .iter()
                    .any(|id| acked.contains(id))
            {
                return Some(t.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `n` log lines of a service (stdout and stderr).
    pub async fn logs_tail(&self, service: &str, n: usize) -> String {
        let out = self
            .docker(&["logs", "--tail", &n.to_string(), &self.container(service)])
            .await;
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// A container's state: `running`, `exited`, `restarting`...
    pub async fn state(&self, service: &str) -> String {
        let out = self
            .docker(&[
                "inspect",
                "-f",
                "{{.State.Status}}",
                &self.container(service),
            ])
            .await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The container's address on a network of this project.
    pub async fn address(&self, service: &str, network: &str) -> String {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network(network)
        );
        let out = self
            .docker_ok(&["inspect", "-f", &format, &self.container(service)])
            .await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Print the last log lines of every service (on failure).
    fn dump_logs(&self) {
        let mut ps = self.compose_command(&["ps", "--services"]);
        let services = run_blocking(&mut ps, COMMAND_TIMEOUT)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for service in services.lines().filter(|s| !s.is_empty()) {
            let mut logs = Command::new("docker");
            logs.args(["logs", "--tail", "60", &self.container(service)]);
            if let Ok(out) = run_blocking(&mut logs, COMMAND_TIMEOUT) {
                announce(&format!(
                    "----- {} {service} (last 60 lines)\n{}{}",
                    self.project,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        let mut down = self.compose_command(&["down", "-v", "--remove-orphans", "-t", "3"]);
        match run_blocking(&mut down, COMMAND_TIMEOUT) {
            Ok(out) if out.status.success() => {}
            Ok(out) => announce(&format!(
                "{}: docker-compose down failed:\n{}",
                self.project,
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => announce(&format!("{}: docker-compose down: {e}", self.project)),
        }
    }
}

/// Whether a provisioner status document lists resources, all Ready.
pub fn all_ready(status: &serde_json::Value) -> bool {
    status["resources"]
        .as_array()
        .is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["ready"] == "True"))
}

/// Whether the status document lists `kind` `name` as Ready.
pub fn is_ready(status: &serde_json::Value, kind: &str, name: &str) -> bool {
    status["resources"].as_array().is_some_and(|r| {
        r.iter()
            .any(|r| r["kind"] == kind && r["name"] == name && r["ready"] == "True")
    })
}

/// One POST of a [`Load`]: its event id, when it started and ended, and the
/// status (`None`: no answer — refused, reset or timed out — and `error`
/// says which).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub started: Instant,
    pub finished: Instant,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// POST the test event `id` in binary mode: the status, or why none came.
async fn post_event(client: &HttpClient, url: &str, id: &str) -> Result<u16, String> {
    let mut req = http::Request::post(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let body = channel_core::event::encode_binary(&crate::event(id), req.headers_mut());
    *req.body_mut() = http_body_util::Full::new(body);
    client.send(req).await.map(|(status, _, _)| status.as_u16())
}

/// Events sent by a few concurrent senders until stopped, each event with a
/// unique id `<prefix>-<sender>-<n>`. Bounded: every sender stops after
/// 180 s or 20,000 events.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    log: Arc<Mutex<Vec<Attempt>>>,
}

impl Load {
    /// `senders` concurrent senders to `url`, each pausing `pause` between
    /// requests (and 50 ms after a request nothing answered).
    pub fn start(url: &str, prefix: &str, senders: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let tasks = (0..senders)
            .map(|s| {
                let (stop, log, url) = (stop.clone(), log.clone(), url.to_owned());
                let prefix = format!("{prefix}-{s}");
                tokio::spawn(async move {
                    let client = HttpClient::new();
                    let deadline = Instant::now() + Duration::from_secs(180);
                    for n in 0..20_000u32 {
                        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                            break;
                        }
                        let id = format!("{prefix}-{n}");
                        let started = Instant::now();
                        let answer = post_event(&client, &url, &id).await;
                        let status = answer.as_ref().ok().copied();
                        log.lock().expect("lock").push(Attempt {
                            id,
                            started,
                            finished: Instant::now(),
                            status,
                            error: answer.err(),
                        });
                        let pause = if status.is_some() {
                            pause
                        } else {
                            pause.max(Duration::from_millis(50))
                        };
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { stop, tasks, log }
    }

    /// The attempts so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.log.lock().expect("lock").clone()
    }

    /// Whether a request started after `t` was answered `202`.
    pub fn accepted_since(&self, t: Instant) -> bool {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .any(|a| a.started > t && a.status == Some(202))
    }

    /// Wait (at most `timeout`) until a request started after `t` is
    /// answered `202`; how long after `t` that answer came.
    pub async fn wait_accepted_since(&self, t: Instant, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            let first = self
                .log
                .lock()
                .expect("lock")
                .iter()
                .filter(|a| a.started > t && a.status == Some(202))
                .map(|a| a.finished)
                .min();
            if let Some(at) = first {
                return Some(at.saturating_duration_since(t));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop every sender (each finishes its request in flight); every attempt.
    pub async fn stop(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        let log = self.log.lock().expect("lock").clone();
        log
    }
}

/// What was sent, acknowledged and delivered for one load.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub name: String,
    /// Requests made.
    pub sent: usize,
    /// Ids answered `202`.
    pub acked: BTreeSet<String>,
    /// Requests not answered `202`, by status (or why no answer came).
    pub refused: BTreeMap<String, usize>,
    /// Deliveries per id, for the ids this load sent.
    pub delivered: BTreeMap<String, usize>,
}

impl Ledger {
    /// Compare `attempts` with `displayed` (ids printed by event-display).
    pub fn new(name: &str, attempts: &[Attempt], displayed: &[String]) -> Ledger {
        let sent_ids: BTreeSet<&str> = attempts.iter().map(|a| a.id.as_str()).collect();
        let mut refused = BTreeMap::new();
        let mut acked = BTreeSet::new();
        for a in attempts {
            match a.status {
                Some(202) => {
                    acked.insert(a.id.clone());
                }
                Some(code) => *refused.entry(code.to_string()).or_default() += 1,
                None => {
                    let why = a.error.as_deref().unwrap_or("no answer");
                    let why = if why.contains("timed out") {
                        "no answer (timed out)"
                    } else {
                        "no answer (connection failed)"
                    };
                    *refused.entry(why.to_owned()).or_default() += 1
                }
            }
        }
        let mut delivered = BTreeMap::new();
        for id in displayed.iter().filter(|id| sent_ids.contains(id.as_str())) {
            *delivered.entry(id.clone()).or_default() += 1;
        }
        Ledger {
            name: name.to_owned(),
            sent: attempts.len(),
            acked,
            refused,
            delivered,
        }
    }

    /// Acknowledged ids never delivered.
    pub fn lost(&self) -> Vec<&String> {
        self.acked
            .iter()
            .filter(|id| !self.delivered.contains_key(*id))
            .collect()
    }

    /// Deliveries beyond the first of each id.
    pub fn duplicates(&self) -> usize {
        self.delivered.values().map(|n| n - 1).sum()
    }

    /// Ids delivered although their request got no `202` (the answer was
    /// lost or came after the event was stored: allowed, at least once).
    pub fn delivered_unacked(&self) -> usize {
        self.delivered
            .keys()
            .filter(|id| !self.acked.contains(*id))
            .count()
    }

    /// One line: sent, acked, refused, delivered, duplicates, lost.
    pub fn summary(&self) -> String {
        format!(
            "LEDGER {}: sent {}, acked {}, not acked {:?}, delivered {} distinct ({} of them not acked), duplicates {}, lost {}{}",
            self.name,
            self.sent,
            self.acked.len(),
            self.refused,
            self.delivered.len(),
            self.delivered_unacked(),
            self.duplicates(),
            self.lost().len(),
            if self.lost().is_empty() {
                String::new()
            } else {
                format!(" e.g. {:?}", self.lost().iter().take(5).collect::<Vec<_>>())
            }
        )
    }

    /// Fail naming the lost ids, if any.
    pub fn assert_nothing_lost(&self) {
        assert!(self.lost().is_empty(), "{}", self.summary());
    }
}
