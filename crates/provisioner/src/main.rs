//! `provisioner`: the Knative channel control plane.

use clap::{Parser, Subcommand};
use dispatcher::config::LogFormat;
use provisioner::standalone::StandaloneArgs;
use provisioner::table::StatusArgs;
use tokio_util::sync::CancellationToken;

/// Knative channel provisioner.
///
/// Picks each Channel's backend (in-memory, Kafka, NATS JetStream) through
/// its ClusterChannelProvisioner class, provisions the topic or stream,
/// writes the data-plane contract of each backend's dispatcher and reports
/// every resource's status. Every flag can also be set through the
/// environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about, long_about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "KN_CHANNEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// The token dispatchers and source adapters protect `/metrics` and
    /// `/status` with (their `--admin-token`), sent when polling them.
    #[arg(long, env = "KN_ADMIN_TOKEN", hide_env_values = true, global = true)]
    admin_token: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane on a directory of manifests, writing contract
    /// files (no Kubernetes).
    Standalone(Box<StandaloneArgs>),
    /// Print the status of every channel and subscription, from a running
    /// provisioner.
    Status(StatusArgs),
    /// Print the event registry (EventTypes: which events can be
    /// subscribed to from which broker or channel), from a running
    /// provisioner.
    Eventtypes(StatusArgs),
    /// Run the control plane as a Kubernetes controller (in a cluster, or
    /// against the cluster of KUBECONFIG).
    Controller(Box<provisioner::kubernetes::run::ControllerArgs>),
    /// Print the CustomResourceDefinitions (YAML) of every resource the
    /// channel layer serves, for `kubectl apply -f -`.
    Crds,
    /// Run a program with a SinkBinding's environment (K_SINK,
    /// K_CE_OVERRIDES) as the standalone provisioner resolved it:
    /// `provisioner exec --contracts-dir D --binding NS/NAME -- PROGRAM ARGS`.
    Exec(provisioner::bindings::ExecArgs),
}

/// Run `task` with a token cancelled on SIGTERM or SIGINT.
async fn until_signal<F, Fut>(task: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        dispatcher::wait_for_signal().await;
        signal.cancel();
    });
    task(shutdown).await
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(token) = cli.admin_token.clone() {
        let _ = provisioner::cycle::ADMIN_TOKEN.set(token);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Standalone(args) => {
            dispatcher::telemetry::init(cli.log_format, "provisioner");
            runtime.block_on(until_signal(|shutdown| {
                provisioner::standalone::run(*args, shutdown)
            }))
        }
        Command::Controller(args) => {
            dispatcher::telemetry::init(cli.log_format, "provisioner");
            runtime.block_on(until_signal(|shutdown| {
                provisioner::kubernetes::run::run(*args, shutdown)
            }))
        }
        Command::Status(args) => runtime.block_on(provisioner::table::run(args)),
        Command::Eventtypes(args) => runtime.block_on(provisioner::table::run_event_types(args)),
        Command::Crds => {
            print!("{}", provisioner::kubernetes::crd::crds_yaml()?);
            Ok(())
        }
        Command::Exec(args) => provisioner::bindings::exec(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_needs_manifests_and_a_contracts_dir() {
        let cli = Cli::try_parse_from([
            "provisioner",
            "standalone",
            "--manifests",
            "m/",
            "--contracts-dir",
            "c/",
            "--dispatcher-admin",
            "kafka=http://127.0.0.1:9091",
        ])
        .unwrap();
        match cli.command {
            Command::Standalone(a) => {
                assert_eq!(a.manifests.len(), 1);
                assert_eq!(a.dispatcher_admin.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["provisioner", "standalone", "--manifests", "m/"]).is_err());
        assert!(Cli::try_parse_from([
            "provisioner",
            "standalone",
            "--manifests",
            "m/",
            "--contracts-dir",
            "c",
            "--dispatcher-admin",
            "bogus"
        ])
        .is_err());
    }
}
