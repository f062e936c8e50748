//! `kafka-dispatcher`: the channel data plane on Apache Kafka.
//!
//! Every event is stored in the channel's topic (`acks=all`) before ingress
//! answers `202`; each subscription consumes with its own consumer group and
//! commits only what reached a final outcome.

use channel_kafka::config::Defaults;
use channel_kafka::KafkaBackend;
use clap::Parser;
use dispatcher::config::DispatcherArgs;
use std::sync::Arc;

/// Knative channel dispatcher, Kafka backend.
///
/// Serves the channels of the kafka backend described by Knative YAML
/// manifests (--manifests, compiled in-process) or by a contract file written
/// by the provisioner (--contract). Every flag can also be set through the
/// environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "kafka-dispatcher", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    dispatcher: DispatcherArgs,

    /// Kafka bootstrap servers (host:port, comma-separated) for channels
    /// whose class sets no `bootstrapServers` parameter.
    #[arg(long, env = "KN_CHANNEL_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,

    /// This dispatcher's stable identity in its consumer groups (Kafka
    /// static membership, `group.instance.id`): restarted under the same
    /// id, it gets its partitions back at once instead of after the session
    /// timeout. Stable across restarts, unique per replica (pod name,
    /// compose service). Unset: dynamic membership.
    #[arg(long, env = "KN_CHANNEL_KAFKA_GROUP_INSTANCE_ID")]
    group_instance_id: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.dispatcher.log_format, "kafka-dispatcher");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let backend = Arc::new(
        KafkaBackend::new(Defaults {
            bootstrap_servers: cli
                .bootstrap_servers
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        })
        .with_group_instance_id(cli.group_instance_id),
    );
    runtime.block_on(dispatcher::run(cli.dispatcher, backend))
}
