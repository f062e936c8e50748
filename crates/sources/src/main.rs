//! `source-adapter`: runs Knative event sources (see the crate docs).

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "source-adapter",
    version,
    about = "Runs Knative event sources: PingSource, CronJobSource, ApiServerSource, ContainerSource"
)]
struct Cli {
    #[command(flatten)]
    args: sources::config::AdapterArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dispatcher::telemetry::init(cli.args.log_format, "source-adapter");
    let result = sources::run(cli.args).await;
    dispatcher::telemetry::shutdown();
    result
}
