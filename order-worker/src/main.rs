use std::process::ExitCode;

use clap::Parser;
use order_worker::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    order_runtime::startup::run_main("order-worker", &cli.config, order_worker::run).await
}
