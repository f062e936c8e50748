//! Command-line and environment configuration shared by every dispatcher.
//!
//! Each backend binary flattens [`DispatcherArgs`] into its own clap parser
//! and adds its backend flags. Every flag is also an environment variable
//! named `KN_CHANNEL_<FLAG>`.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Where the dispatcher's data-plane configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Knative YAML manifests, compiled in-process (embedded mode).
    Manifests(Vec<PathBuf>),
    /// A contract file written by the provisioner.
    Contract(PathBuf),
}

impl Source {
    /// The files and directories the configuration is read from.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            Source::Manifests(paths) => paths.clone(),
            Source::Contract(path) => vec![path.clone()],
        }
    }
}

/// Flags common to all dispatchers.
#[derive(Debug, Clone, Args)]
pub struct DispatcherArgs {
    /// Knative YAML manifests to serve (file or directory; repeatable). They
    /// are watched: a change is applied within a second, by difference.
    #[arg(
        long = "manifests",
        env = "KN_CHANNEL_MANIFESTS",
        value_delimiter = ',',
        conflicts_with = "contract",
        required_unless_present = "contract"
    )]
    pub manifests: Vec<PathBuf>,

    /// Data-plane contract file written by the provisioner (JSON). Watched,
    /// including the atomic rename and symlink swap of mounted ConfigMaps.
    #[arg(long, env = "KN_CHANNEL_CONTRACT")]
    pub contract: Option<PathBuf>,

    /// Address of the ingress (where producers POST events).
    #[arg(long, env = "KN_CHANNEL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin server (/healthz, /readyz, /metrics, /status).
    #[arg(long, env = "KN_CHANNEL_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Largest accepted event body in bytes; larger requests get 413.
    #[arg(long, env = "KN_CHANNEL_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// On SIGTERM, how long in-flight deliveries may take to finish before
    /// they are abandoned (and redelivered by the backend later).
    #[arg(long, env = "KN_CHANNEL_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Largest reply body read from a subscriber, in bytes.
    #[arg(long, env = "KN_CHANNEL_MAX_REPLY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_reply_bytes: usize,

    /// How often watched files are checked for changes.
    #[arg(long, env = "KN_CHANNEL_WATCH_INTERVAL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,

    /// Log format.
    #[arg(long, env = "KN_CHANNEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Protect `/metrics` and `/status` on the admin server with this
    /// token (`Authorization: Bearer <token>`); `/healthz` and `/readyz`
    /// stay open for probes. The provisioner sends the same
    /// `KN_ADMIN_TOKEN`.
    #[arg(long, env = "KN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// HTTPS on the ingress.
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// The OIDC issuer whose tokens senders present where the contract
    /// turns `authentication-oidc` on (the `iss` claim, exactly).
    #[arg(long, env = "KN_CHANNEL_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// The issuer's signing keys: a JWKS file or an http(s) URL. Without
    /// it they are discovered from `<issuer>/.well-known/openid-configuration`.
    #[arg(long, env = "KN_CHANNEL_OIDC_JWKS", requires = "oidc_issuer")]
    pub oidc_jwks: Option<String>,

    /// The identity this dispatcher presents to destinations with an
    /// OIDC audience.
    #[command(flatten)]
    pub identity: crate::auth::identity::IdentityArgs,

    /// What a client may make the ingress hold.
    #[command(flatten)]
    pub limits: crate::server::ServerLimits,
}

impl DispatcherArgs {
    /// The configured source of the data-plane configuration.
    pub fn source(&self) -> Source {
        match &self.contract {
            Some(path) => Source::Contract(path.clone()),
            None => Source::Manifests(self.manifests.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DispatcherArgs,
    }

    #[test]
    fn defaults_and_sources() {
        let cli = Cli::try_parse_from(["x", "--manifests", "a.yaml", "--manifests", "dir"])
            .expect("parses");
        assert_eq!(
            cli.args.source(),
            Source::Manifests(vec!["a.yaml".into(), "dir".into()])
        );
        assert_eq!(cli.args.listen.port(), 8080);
        assert_eq!(cli.args.admin_listen.port(), 9090);
        assert_eq!(cli.args.drain_timeout, Duration::from_secs(30));
        let cli = Cli::try_parse_from(["x", "--contract", "c.json"]).expect("parses");
        assert_eq!(cli.args.source(), Source::Contract("c.json".into()));
    }

    #[test]
    fn requires_exactly_one_source() {
        assert!(Cli::try_parse_from(["x"]).is_err());
        assert!(Cli::try_parse_from(["x", "--manifests", "a", "--contract", "b"]).is_err());
    }
}
