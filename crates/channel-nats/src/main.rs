//! `nats-dispatcher`: the channel data plane on NATS JetStream.
//!
//! Every event is stored in the channel's JetStream stream before ingress
//! answers `202`, and delivered to each subscription at least once, across
//! dispatcher and server restarts.

use channel_nats::cli::NatsArgs;
use channel_nats::NatsBackend;
use clap::Parser;
use dispatcher::config::DispatcherArgs;
use std::sync::Arc;

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

    #[command(flatten)]
    nats: NatsArgs,

    /// Wait for the server to confirm every final ack (a round trip per
    /// event). Off: acks are sent plainly; one lost in a crash or a
    /// disconnection is a redelivery, which at-least-once delivery allows.
    #[arg(long, env = "KN_CHANNEL_NATS_CONFIRM_ACKS")]
    nats_confirm_acks: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.dispatcher.log_format, "nats-dispatcher");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = channel_nats::NatsOptions {
        confirm_acks: cli.nats_confirm_acks,
        ..cli.nats.options("nats-dispatcher")
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
        assert_eq!(cli.nats.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(
            cli.nats.nats_request_timeout,
            std::time::Duration::from_secs(5)
        );
        assert!(!cli.nats_confirm_acks, "acks are plain unless asked");
        let cli = Cli::try_parse_from([
            "nats-dispatcher",
            "--manifests",
            "m.yaml",
            "--nats-confirm-acks",
        ])
        .unwrap();
        assert!(cli.nats_confirm_acks);
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
