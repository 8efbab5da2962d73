use std::process::ExitCode;

use clap::Parser;
use order_api::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    order_runtime::startup::run_main("order-api", &cli.config, |settings, shutdown| {
        order_api::run(command, settings, shutdown)
    })
    .await
}
