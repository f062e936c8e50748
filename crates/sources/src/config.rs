//! The source adapter's flags; each is also an environment variable
//! `KN_SOURCE_<FLAG>`.

use channel_core::contract::parse_backend_url;
use clap::Args;
use dispatcher::config::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the adapter's sources come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Knative YAML, compiled in-process (PingSource, CronJobSource,
    /// ApiServerSource, ContainerSource documents among any others).
    Manifests(Vec<PathBuf>),
    /// A sources contract written by the provisioner (JSON).
    Contract(PathBuf),
}

#[derive(Debug, Clone, Args)]
pub struct AdapterArgs {
    /// Knative YAML manifests (file or directory; repeatable), watched: a
    /// change is applied by difference within a second.
    #[arg(
        long = "manifests",
        env = "KN_SOURCE_MANIFESTS",
        value_delimiter = ',',
        conflicts_with = "contract",
        required_unless_present = "contract"
    )]
    pub manifests: Vec<PathBuf>,

    /// Sources contract written by the provisioner (JSON), watched.
    #[arg(long, env = "KN_SOURCE_CONTRACT")]
    pub contract: Option<PathBuf>,

    /// Admin server: /healthz, /readyz, /metrics, /status.
    #[arg(long, env = "KN_SOURCE_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    pub admin_listen: SocketAddr,

    /// The kubeconfig ApiServerSources watch through (default: KUBECONFIG,
    /// else ~/.kube/config, else the in-cluster service account).
    #[arg(long, env = "KN_SOURCE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// With --manifests outside Kubernetes: the URL of the dispatcher
    /// serving a backend's channels and brokers (`BACKEND=URL`,
    /// repeatable), so sinks naming them reach it instead of their cluster
    /// host names.
    #[arg(long = "dispatcher-url", env = "KN_SOURCE_DISPATCHER_URL", value_delimiter = ',', value_parser = parse_backend_url)]
    pub dispatcher_url: Vec<(channel_core::BackendKind, url::Url)>,

    /// How many adapters share the sources. Each source is run by exactly
    /// one of them, chosen from its uid, so two adapters never send the
    /// same tick twice.
    #[arg(long, env = "KN_SOURCE_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: u32,

    /// This adapter's index among `--replicas` (0-based). In a StatefulSet,
    /// `--replica-index-from-hostname` takes it from the pod's ordinal.
    #[arg(long, env = "KN_SOURCE_REPLICA_INDEX", default_value_t = 0)]
    pub replica_index: u32,

    /// Take the replica index from the host name's trailing `-<n>`.
    #[arg(long, env = "KN_SOURCE_REPLICA_INDEX_FROM_HOSTNAME")]
    pub replica_index_from_hostname: bool,

    /// Events a source may have waiting for delivery; a PingSource tick
    /// beyond it is dropped (counted and logged), an ApiServerSource's
    /// watch waits.
    #[arg(long, env = "KN_SOURCE_QUEUE_CAPACITY", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub queue_capacity: u64,

    /// How often watched files are checked for changes.
    #[arg(long, env = "KN_SOURCE_WATCH_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,

    /// On SIGTERM, how long deliveries in flight may take to finish.
    #[arg(long, env = "KN_SOURCE_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Largest reply body read from a sink (replies are not forwarded).
    #[arg(long, env = "KN_SOURCE_MAX_REPLY_BYTES", default_value_t = 64 * 1024)]
    pub max_reply_bytes: usize,

    /// Webhook listener of GitHubSources and GitLabSources: each is served
    /// at `/<namespace>/<name>`.
    #[arg(long, env = "KN_SOURCE_WEBHOOK_LISTEN", default_value = "0.0.0.0:8088")]
    pub webhook_listen: SocketAddr,

    /// Largest webhook payload accepted (GitHub caps its own at 25 MB);
    /// larger ones are refused with 413.
    #[arg(long, env = "KN_SOURCE_MAX_WEBHOOK_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_webhook_bytes: usize,

    /// How long a webhook delivery's answer waits for the sink's final
    /// outcome (GitHub gives up after 10 s); after it, 202.
    #[arg(long, env = "KN_SOURCE_WEBHOOK_RESPONSE_TIMEOUT", default_value = "9s", value_parser = humantime::parse_duration)]
    pub webhook_response_timeout: Duration,

    /// With --manifests: register the GitHub and GitLab webhooks of the
    /// sources (the provisioner does it otherwise) at this public base
    /// URL of the webhook listener (`<base>/<namespace>/<name>`).
    #[arg(long, env = "KN_SOURCE_WEBHOOK_BASE_URL")]
    pub webhook_base_url: Option<url::Url>,

    /// Where `secretKeyRef`s are read outside Kubernetes:
    /// `<dir>/<namespace>/<secret>/<key>`, as Secrets are mounted.
    #[arg(long, env = "KN_SOURCE_SECRETS_DIR", default_value = "secrets")]
    pub secrets_dir: PathBuf,

    /// KafkaSource consumers join their groups as static members with ids
    /// derived from this one (stable per adapter, unique among replicas):
    /// a restarted adapter gets its partitions back at once.
    #[arg(long, env = "KN_SOURCE_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// PEM certificates HTTPS sinks are verified against, beside the
    /// system's roots.
    #[arg(long, env = "KN_SOURCE_DELIVERY_CA_CERTS")]
    pub delivery_ca_certs: Option<PathBuf>,

    /// The identity the sources present to sinks with an OIDC audience
    /// (`<name>-oidc-sources.knative.dev-<kind>`), signed with this key.
    #[command(flatten)]
    pub identity: dispatcher::auth::identity::IdentityArgs,

    /// Protect `/metrics` and `/status` with this token (`Authorization:
    /// Bearer <token>`); `/healthz` and `/readyz` stay open.
    #[arg(long, env = "KN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    #[arg(long, env = "KN_SOURCE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl AdapterArgs {
    pub fn origin(&self) -> Origin {
        match &self.contract {
            Some(path) => Origin::Contract(path.clone()),
            None => Origin::Manifests(self.manifests.clone()),
        }
    }

    /// This adapter's index, checked against `--replicas`.
    pub fn index(&self) -> anyhow::Result<u32> {
        let index = if self.replica_index_from_hostname {
            let host = std::env::var("HOSTNAME").unwrap_or_default();
            host.rsplit_once('-')
                .and_then(|(_, n)| n.parse::<u32>().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--replica-index-from-hostname: host name {host:?} does not end in -<n>"
                    )
                })?
        } else {
            self.replica_index
        };
        anyhow::ensure!(
            index < self.replicas,
            "replica index {index} is not below --replicas {}",
            self.replicas
        );
        Ok(index)
    }
}

/// Whether the adapter `index` of `replicas` runs the source `uid`: a
/// stable hash (FNV-1a) of the uid, modulo the replicas.
pub fn owns(uid: &str, replicas: u32, index: u32) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % u64::from(replicas.max(1)) == u64::from(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: AdapterArgs,
    }

    #[test]
    fn every_source_has_exactly_one_owner() {
        for replicas in 1..5 {
            for n in 0..200 {
                let uid = format!("uid-{n}");
                let owners = (0..replicas).filter(|i| owns(&uid, replicas, *i)).count();
                assert_eq!(owners, 1, "{uid} of {replicas}");
            }
        }
        // Spread over the replicas.
        let first = (0..1000).filter(|n| owns(&format!("u{n}"), 2, 0)).count();
        assert!((350..650).contains(&first), "{first}");
    }

    #[test]
    fn flags_and_their_checks() {
        let cli = Cli::try_parse_from(["x", "--manifests", "d"]).expect("parses");
        assert_eq!(cli.args.origin(), Origin::Manifests(vec!["d".into()]));
        assert_eq!(cli.args.index().expect("index"), 0);
        let cli = Cli::try_parse_from([
            "x",
            "--contract",
            "c.json",
            "--replicas",
            "2",
            "--replica-index",
            "2",
        ])
        .expect("parses");
        assert!(cli.args.index().is_err());
        assert!(Cli::try_parse_from(["x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--contract", "c", "--replicas", "0"]).is_err());
    }
}
