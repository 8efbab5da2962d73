use std::process::ExitCode;

use clap::Parser;
use order_compensator::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    order_core::startup::run_main("order-compensator", &cli.config, order_compensator::run).await
}
