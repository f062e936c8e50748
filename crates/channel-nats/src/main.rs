//! `nats-dispatcher`: the channel data plane on NATS JetStream.
//!
//! Every event is stored in the channel's JetStream stream before ingress
//! answers `202`, and delivered to each subscription at least once, across
//! dispatcher and server restarts.

use channel_nats::config::{split_urls, ConnectionSettings};
use channel_nats::{NatsBackend, NatsOptions};
use clap::Parser;
use dispatcher::config::DispatcherArgs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Knative channel dispatcher, NATS JetStream backend.
///
/// Serves the channels of the nats backend described by Knative YAML
/// manifests (--manifests, compiled in-process) or by a contract file written
/// by the provisioner (--contract). The --nats-* flags are the connection of
/// classes that set no `url` parameter. Every flag can also be set through
/// the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "nats-dispatcher", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    dispatcher: DispatcherArgs,

    /// NATS server URLs, comma-separated.
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,

    /// NATS credentials file (JWT and nkey seed).
    #[arg(long, env = "KN_CHANNEL_NATS_CREDENTIALS_FILE")]
    nats_credentials_file: Option<PathBuf>,

    /// NATS auth token.
    #[arg(long, env = "KN_CHANNEL_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,

    /// NATS user (with --nats-password).
    #[arg(long, env = "KN_CHANNEL_NATS_USER", requires = "nats_password")]
    nats_user: Option<String>,

    /// NATS password (with --nats-user).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    nats_password: Option<String>,

    /// CA certificates (PEM) to verify the NATS server; implies TLS.
    #[arg(long, env = "KN_CHANNEL_NATS_TLS_CA_FILE")]
    nats_tls_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key-file).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_TLS_CERT_FILE",
        requires = "nats_tls_key_file"
    )]
    nats_tls_cert_file: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS (with --nats-tls-cert-file).
    #[arg(
        long,
        env = "KN_CHANNEL_NATS_TLS_KEY_FILE",
        requires = "nats_tls_cert_file"
    )]
    nats_tls_key_file: Option<PathBuf>,

    /// Timeout of JetStream requests: publish acks (ingress answers 503
    /// after it), stream and consumer management, ack confirmations.
    #[arg(long, env = "KN_CHANNEL_NATS_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    nats_request_timeout: Duration,

    /// Longest pause between reconnection attempts (backoff from 100ms).
    #[arg(long, env = "KN_CHANNEL_NATS_MAX_RECONNECT_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    nats_max_reconnect_delay: Duration,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.dispatcher.log_format, "nats-dispatcher");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = NatsOptions {
        default_connection: ConnectionSettings {
            urls: split_urls(&cli.nats_url),
            credentials_file: cli.nats_credentials_file,
            token: cli.nats_token,
            user: cli.nats_user,
            password: cli.nats_password,
            tls_ca_file: cli.nats_tls_ca_file,
            tls_cert_file: cli.nats_tls_cert_file,
            tls_key_file: cli.nats_tls_key_file,
        },
        request_timeout: cli.nats_request_timeout,
        max_reconnect_delay: cli.nats_max_reconnect_delay,
        ..NatsOptions::default()
    };
    runtime.block_on(async move {
        let backend = Arc::new(NatsBackend::connect(options).await?);
        dispatcher::run(cli.dispatcher, backend).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["nats-dispatcher", "--manifests", "m.yaml"]).unwrap();
        assert_eq!(cli.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(cli.nats_request_timeout, Duration::from_secs(5));
        assert!(Cli::try_parse_from([
            "nats-dispatcher",
            "--manifests",
            "m.yaml",
            "--nats-user",
            "u"
        ])
        .is_err());
    }
}
