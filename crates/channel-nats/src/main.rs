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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.dispatcher.log_format, "nats-dispatcher");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = cli.nats.options("nats-dispatcher");
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
