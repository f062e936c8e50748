//! `inmemory-dispatcher`: the channel data plane on the bounded in-memory backend.
//!
//! Events are kept in memory only: they are lost when the process stops,
//! as with Knative's InMemoryChannel.

use channel_inmemory::{InMemoryBackend, Limits};
use clap::Parser;
use dispatcher::config::DispatcherArgs;
use std::sync::Arc;

/// Knative channel dispatcher, in-memory backend.
///
/// Serves the channels of the in-memory backend described by Knative YAML
/// manifests (--manifests, compiled in-process) or by a contract file written
/// by the provisioner (--contract). Every flag can also be set through the
/// environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "inmemory-dispatcher", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    dispatcher: DispatcherArgs,

    /// Default bound on the events buffered per channel (for subscribers
    /// that have not yet taken them); the `maxEvents` parameter overrides it.
    #[arg(long, env = "KN_CHANNEL_BUFFER_EVENTS", default_value_t = Limits::default().max_events)]
    buffer_events: usize,

    /// Default bound on the bytes buffered per channel; the `maxBytes`
    /// parameter overrides it.
    #[arg(long, env = "KN_CHANNEL_BUFFER_BYTES", default_value_t = Limits::default().max_bytes)]
    buffer_bytes: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.dispatcher.log_format, "inmemory-dispatcher");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let backend = Arc::new(InMemoryBackend::new(Limits {
        max_events: cli.buffer_events.max(1),
        max_bytes: cli.buffer_bytes.max(1),
    }));
    runtime.block_on(dispatcher::run(cli.dispatcher, backend))
}
